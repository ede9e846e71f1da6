#!/usr/bin/env bash
# CPU seconds (user + sys) to package the 60 s 720p30 B-frame stream:
# `liveslice package` (HLS over CMAF + HLS over TS + DASH in one run; and each
# format alone, `--formats ts` against ffmpeg's TS, `--formats cmaf` — HLS
# fMP4 + DASH — against ffmpeg's fMP4) against
# ffmpeg's own muxers on the same stream in MP4 (`-c copy -f hls`, TS and
# fMP4 flavours). Runs each ROUNDS times, interleaved, and prints medians.
# Needs a release build (`cargo build --release -p liveslice`) and the input
# from make-bench-stream.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
in=target/bench/720p30_bframes
[ -s $in.h264 ] || bench/make-bench-stream.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. bench/lib.sh
for _ in $(seq "$rounds"); do
  measure liveslice target/release/liveslice package $in.h264 --out "$tmp/out"
  measure liveslice_ts target/release/liveslice package $in.h264 --out "$tmp/out" --formats ts
  measure liveslice_cmaf target/release/liveslice package $in.h264 --out "$tmp/out" --formats cmaf
  measure ffmpeg_hls_ts ffmpeg -nostdin -v error -i $in.mp4 -c copy -f hls -hls_time 2 -hls_list_size 0 \
    -hls_segment_filename "$tmp/out/seg-%d.ts" "$tmp/out/index.m3u8"
  measure ffmpeg_hls_fmp4 ffmpeg -nostdin -v error -i $in.mp4 -c copy -f hls -hls_time 2 -hls_list_size 0 \
    -hls_segment_type fmp4 -hls_segment_filename "$tmp/out/seg-%d.m4s" "$tmp/out/index.m3u8"
done
echo "name cpu_s(median) wall_s(median) maxrss_kb(median)"
for name in liveslice liveslice_ts liveslice_cmaf ffmpeg_hls_ts ffmpeg_hls_fmp4; do
  grep "^$name " "$tmp/results" | awk '{print $2, $3, $4}' | sort -n | awk -v n="$name" \
    '{c[NR]=$1; w[NR]=$2; m[NR]=$3} END {i=int((NR+1)/2); print n, c[i], w[i], m[i]}'
done

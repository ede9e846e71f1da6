#!/usr/bin/env bash
# Memory and CPU to package a large MP4 file: the 60 s 720p30 B-frame stream
# (make-bench-stream.sh) and the same looped 45 times (about 1 GB, 45 min, made
# here with `ffmpeg -stream_loop 44 -c copy`), with `liveslice package
# --formats ts` (a release build) against `ffmpeg -c copy -f hls` (TS) on the
# same files, one after the other, ROUNDS times; prints each run's CPU
# seconds (user + sys), wall seconds and max RSS (KiB).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
small=target/bench/720p30_bframes.mp4
large=target/bench/720p30_45min.mp4
[ -s $small ] || bench/make-bench-stream.sh
[ -s $large ] || ffmpeg -hide_banner -loglevel error -y -stream_loop 44 -i $small -c copy $large
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. bench/lib.sh
ls -l $small $large
for _ in $(seq "$rounds"); do
  for f in $small $large; do
    n=$(basename $f .mp4)
    measure "liveslice_$n" target/release/liveslice package $f --out "$tmp/out" --formats ts
    measure "ffmpeg_$n" ffmpeg -nostdin -v error -i $f -c copy -f hls -hls_time 2 -hls_list_size 0 \
      -hls_segment_filename "$tmp/out/seg-%d.ts" "$tmp/out/index.m3u8"
  done
done
echo "name cpu_s wall_s maxrss_kib (each run)"
cat "$tmp/results"

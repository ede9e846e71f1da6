#!/usr/bin/env bash
# Memory and CPU to package a large file: the 60 s 720p30 B-frame stream
# (make-bench-stream.sh) as MP4, the same looped 45 times (about 1 GB, 45 min,
# made here with `ffmpeg -stream_loop 44 -c copy`), and that as MPEG-TS
# (`-c copy -f mpegts`), with `liveslice package
# --formats ts` (a release build) against `ffmpeg -c copy -f hls` (TS) on the
# same files, one after the other, ROUNDS times; prints each run's CPU
# seconds (user + sys), wall seconds and max RSS (KiB); then the same for
# `liveslice publish` of the large MP4 (the client's) to a release server. BENCH_TMP: where the
# trees are written (default /dev/shm).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
small=target/bench/720p30_bframes.mp4
large=target/bench/720p30_45min.mp4
large_ts=target/bench/720p30_45min.ts
[ -s $small ] || bench/make-bench-stream.sh
[ -s $large ] || ffmpeg -hide_banner -loglevel error -y -stream_loop 44 -i $small -c copy $large
[ -s $large_ts ] || ffmpeg -hide_banner -loglevel error -y -i $large -c copy -f mpegts $large_ts
# Output to memory (tmpfs) by default: the figures are then the packagers'
# own, not the disk's writeback, which lands on whichever run comes next.
tmp=$(mktemp -d -p "${BENCH_TMP:-/dev/shm}")
trap 'rm -rf "$tmp"' EXIT
. bench/lib.sh
ls -l $small $large $large_ts
for _ in $(seq "$rounds"); do
  for f in $small $large $large_ts; do
    n=$(basename $f)
    measure "liveslice_$n" target/release/liveslice package $f --out "$tmp/out" --formats ts
    measure "ffmpeg_$n" ffmpeg -nostdin -v error -i $f -c copy -f hls -hls_time 2 -hls_list_size 0 \
      -hls_segment_filename "$tmp/out/seg-%d.ts" "$tmp/out/index.m3u8"
  done
done
echo "name cpu_s wall_s maxrss_kib (each run)"
cat "$tmp/results"
# And `liveslice publish` of the large MP4 to a release server on loopback,
# as fast as the server takes it: the client's max RSS and CPU.
start_server "$tmp/server.log" 127.0.0.1:50981 127.0.0.1:18981
timed target/release/liveslice publish --server 127.0.0.1:50981 --session big $large
stop_server
echo "publish_720p30_45min.mp4 (client) $cpu_s $wall_s $maxrss_kib"

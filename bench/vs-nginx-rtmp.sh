#!/usr/bin/env bash
# The live reference for issue 14: the server's CPU per frame (one frame in,
# the same frame out to one subscriber) for liveslice and for nginx-rtmp, the
# classic live server, with the same number of real-time sessions of the same
# stream, in one run on 127.0.0.1.
#
#   bench/vs-nginx-rtmp.sh [SESSIONS=20] [SECS=20]
#
# WARMUP=40 bench/vs-nginx-rtmp.sh …: both servers carry the load 40 s
# before their SECS are measured (liveslice's window fills during a
# session's first ~35 s: `liveslice-loadtest --warmup`).
#
# nginx-rtmp (Debian's `nginx-light` + `libnginx-mod-rtmp`, `live on`, one
# worker process as its docs advise: a live stream lives in the worker its
# publisher reached, and a player on another worker does not find it): SESSIONS `ffmpeg -re -stream_loop -1 … -c copy -f
# flv` publishers and SESSIONS `ffmpeg -i rtmp://… -c copy -f null`
# subscribers; frames = what the subscribers report (`-progress`) over the
# measured window, CPU = nginx's master and workers over the same window.
# liveslice: the release server and `liveslice-loadtest --sessions SESSIONS
# --subscribers 1` (its own CPU per frame over the run). The stream is
# testdata/high_bframes_30.h264 (320x180, 30 fps, B-frames, ~1.1 KB a
# frame); nginx gets it remuxed to MP4 (`-c copy`, the same frames).
#
# Needs: ffmpeg, nginx-light, libnginx-mod-rtmp, release builds
# (`cargo build --release -p liveslice-server -p liveslice-loadtest`).
# Output: one line per server, then the ratio; files in target/vs-nginx-rtmp/.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
sessions=${1:-20}
secs=${2:-20}
warmup=${WARMUP:-0}
out=$PWD/target/vs-nginx-rtmp
rm -rf "$out"
mkdir -p "$out/nginx/logs" "$out/progress"
module=/usr/lib/nginx/modules/ngx_rtmp_module.so
command -v nginx >/dev/null || { echo "nginx is missing: apt-get install nginx-light libnginx-mod-rtmp" >&2; exit 1; }
[ -f $module ] || { echo "$module is missing: apt-get install libnginx-mod-rtmp" >&2; exit 1; }
command -v ffmpeg >/dev/null || { echo "ffmpeg is missing: apt-get install ffmpeg" >&2; exit 1; }
hz=$(getconf CLK_TCK)
ticks() { # total user+system ticks of the given pids
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo $t
}
frames_seen() { # sum of the last frame= of every subscriber's progress file
  local sum=0 f n
  for f in "$out"/progress/*.txt; do
    n=$(grep -E '^frame=' "$f" | tail -1 | cut -d= -f2 || true)
    sum=$((sum + ${n:-0}))
  done
  echo $sum
}

# --- nginx-rtmp ---
ffmpeg -hide_banner -loglevel error -fflags +genpts -r 30 -i testdata/high_bframes_30.h264 \
  -c copy -y "$out/stream.mp4"
port=19356
cat >"$out/nginx/nginx.conf" <<EOF
load_module $module;
daemon off;
worker_processes 1;
pid $out/nginx/nginx.pid;
error_log $out/nginx/logs/error.log warn;
events { worker_connections 4096; }
rtmp {
  server {
    listen 127.0.0.1:$port;
    application live { live on; }
  }
}
EOF
nginx -p "$out/nginx" -c "$out/nginx/nginx.conf" &
nginx_pid=$!
children=()
cleanup() {
  for c in "${children[@]}"; do kill "$c" 2>/dev/null || true; done
  kill "$nginx_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
sleep 1
for i in $(seq 1 "$sessions"); do
  ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$out/stream.mp4" -c copy \
    -f flv "rtmp://127.0.0.1:$port/live/s$i" &
  children+=($!)
done
sleep 2
for i in $(seq 1 "$sessions"); do
  ffmpeg -hide_banner -loglevel error -nostdin -i "rtmp://127.0.0.1:$port/live/s$i" -c copy \
    -f null - -progress "$out/progress/s$i.txt" &
  children+=($!)
done
sleep $((4 + warmup))
workers=$(pgrep -P "$nginx_pid" | tr '\n' ' ')
# shellcheck disable=SC2086
t0=$(ticks $nginx_pid $workers)
f0=$(frames_seen)
sleep "$secs"
# shellcheck disable=SC2086
t1=$(ticks $nginx_pid $workers)
f1=$(frames_seen)
cleanup
children=()
trap - EXIT
nginx_frames=$((f1 - f0))
nginx_cpu=$(echo "scale=3; ($t1 - $t0) / $hz" | bc)
[ "$nginx_frames" -gt 0 ] || { echo "nginx-rtmp: no frames reached the subscribers (see $out/nginx/logs)" >&2; exit 1; }
nginx_us=$(echo "scale=1; $nginx_cpu * 1000000 / $nginx_frames" | bc)
echo "nginx-rtmp: $sessions sessions × 1 subscriber, $nginx_frames frames out in ${secs} s, nginx CPU ${nginx_cpu} s: ${nginx_us} µs/frame"

# --- liveslice ---
grpc=127.0.0.1:50086
start_server "$out/liveslice-server.log" $grpc 127.0.0.1:8096
target/release/liveslice-loadtest --server "http://$grpc" --server-pid $server \
  --sessions "$sessions" --subscribers 1 --warmup "${warmup}s" --duration "${secs}s" --json \
  >"$out/liveslice.json" || true
stop_server
python3 - "$out/liveslice.json" "$sessions" "$nginx_us" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
c, l = v["cpu"], v["latency"]["percentiles_ms"]
us, nginx = c["server_us_per_frame"], float(sys.argv[3])
print(f'liveslice: {sys.argv[2]} sessions × 1 subscriber, {c["frames_received"]} frames out, '
      f'server {us:.1f} µs/frame (p50 {l["p50"]:.2f} ms, p99 {l["p99"]:.2f} ms, drops {v["drops"]["any"]})')
print(f'liveslice / nginx-rtmp CPU per frame: {us / nginx:.2f}')
PY

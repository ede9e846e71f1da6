#!/usr/bin/env bash
# The transcode ladder (--ladder): one 60 s 720p30 B-frame source published
# in real time (`liveslice publish --realtime`, with capture times) into a
# release server running `--ladder 480p:1200k,360p:600k`, then
#
# - the ladder's CPU per source frame: the ffmpeg child's user + system
#   time (the server's /proc/PID/stat cutime + cstime once ffmpeg has
#   exited and been reaped) over the source's frames, next to the same
#   ffmpeg command run alone on the file (the reference: same decoder, same
#   encodes, output to files) in the same run; and the server's own CPU
#   per frame with and without the ladder;
# - the latency the ladder adds (a third run, as polling costs the server
#   CPU): each media playlist of the source and of the 480p rung is
#   polled every 10 ms (bench/ladder_latency.py) and the first time each
#   segment and each part is listed is compared, part (msn, index) by part.
#
#   bench/ladder.sh
#
# Settings (environment): LADDER (480p:1200k,360p:600k), THREADS (1),
# GRPC_PORT / HTTP_PORT (50391 / 8391), INPUT (the 720p30 stream; made by
# make-bench-stream.sh when missing), CARGO_TARGET_DIR. Traffic stays on
# 127.0.0.1; every run is bounded by the 60 s input and `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
out=$root/target/bench
mkdir -p "$out"
ladder=${LADDER:-480p:1200k,360p:600k}
threads=${THREADS:-1}
grpc=${GRPC_PORT:-50391}
http=${HTTP_PORT:-8391}
input=${INPUT:-$out/720p30_bframes.h264}
[ -s "$input" ] || bench/make-bench-stream.sh "$out"
cargo build --release -q -p liveslice-server --bin liveslice-server
cargo build --release -q -p liveslice --bin liveslice
export SERVER_BIN=$target/release/liveslice-server
. bench/lib.sh
tmp=$(mktemp -d)
trap 'stop_server 2>/dev/null || true; rm -rf "$tmp"' EXIT
hz=$(getconf CLK_TCK)
frames=$(ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets \
  -of csv=p=0 "$input")

# cpu PID FIELD…: the sum of /proc/PID/stat fields (1-based, after the
# command name) in seconds.
cpu() {
  local pid=$1
  shift
  local stat
  stat=$(sed 's/^.*) //' "/proc/$pid/stat")
  local sum=0
  for f in "$@"; do
    sum=$((sum + $(echo "$stat" | cut -d' ' -f$((f - 2)))))
  done
  echo "scale=3; $sum / $hz" | bc
}

# run LABEL [SERVER FLAGS…]: one server, the source published in real time;
# sets $server_cpu and $child_cpu (seconds). LABEL latency also polls the
# playlists (bench/ladder_latency.py).
run() {
  local label=$1
  shift
  start_server "$tmp/$label.log" "127.0.0.1:$grpc" "127.0.0.1:$http" "$@"
  local poll=""
  if [ "$label" = latency ]; then
    python3 bench/ladder_latency.py "http://127.0.0.1:$http/live/lad" "${ladder%%:*}" ${DUMP:+dump} \
      >"$tmp/latency.txt" 2>&1 &
    poll=$!
  fi
  timeout 120 "$target/release/liveslice" publish "$input" --server "127.0.0.1:$grpc" \
    --session lad --realtime >"$tmp/$label.publish.txt" 2>&1
  # ffmpeg flushes and exits (and is reaped: its CPU is then the
  # server's cutime) once the source has ended.
  for _ in $(seq 150); do pgrep -P "$server" >/dev/null || break; sleep 0.1; done
  [ -z "$poll" ] || wait "$poll" || true
  server_cpu=$(cpu "$server" 14 15)
  child_cpu=$(cpu "$server" 16 17)
  stop_server
}

run plain
plain_cpu=$server_cpu
run ladder --ladder "$ladder" --ladder-threads "$threads"
ladder_server_cpu=$server_cpu
ladder_child_cpu=$child_cpu
# The latency on its own run: polling costs the server CPU.
run latency --ladder "$ladder" --ladder-threads "$threads"

# The reference: the same ffmpeg command the ladder runs (see
# server/src/ladder.rs), alone, from the file to files.
args=(-hide_banner -loglevel error -y -f h264 -threads "$threads" -framerate 30/1 -i "$input")
IFS=, read -ra rungs <<<"$ladder"
for r in "${rungs[@]}"; do
  h=${r%%p:*}
  k=${r##*:}
  k=${k%k}
  args+=(-map 0:v:0 -vf "scale=-2:$h" -c:v libx264 -preset veryfast -tune zerolatency
    -b:v "${k}k" -maxrate "${k}k" -bufsize "$((k * 2))k" -force_key_frames source -sc_threshold 0
    -x264-params keyint=infinite:scenecut=0:aud=1:repeat-headers=1 -threads "$threads"
    -fps_mode passthrough -flush_packets 1 -f h264 "$tmp/ref_$h.h264")
done
timed ffmpeg "${args[@]}"
ref_cpu=$cpu_s
# …and paced at the frame rate as the ladder is fed (-re).
timed ffmpeg -re "${args[@]}"
ref_re_cpu=$cpu_s

per_frame() { echo "scale=2; $1 * 1000000 / $frames / 1000" | bc; }
echo "source: $input ($frames frames); ladder $ladder, --ladder-threads $threads"
echo "ladder ffmpeg CPU: ${ladder_child_cpu} s = $(per_frame "$ladder_child_cpu") ms per source frame"
echo "same ffmpeg alone, flat out: ${ref_cpu} s = $(per_frame "$ref_cpu") ms per source frame (ladder/this $(echo "scale=2; $ladder_child_cpu / $ref_cpu" | bc))"
echo "same ffmpeg alone, -re: ${ref_re_cpu} s = $(per_frame "$ref_re_cpu") ms per source frame (ladder/this $(echo "scale=2; $ladder_child_cpu / $ref_re_cpu" | bc))"
echo "server CPU with the ladder: ${ladder_server_cpu} s = $(per_frame "$ladder_server_cpu") ms per source frame; without: ${plain_cpu} s = $(per_frame "$plain_cpu") ms"
cat "$tmp/latency.txt"
grep -h "WARN\|ERROR" "$tmp/ladder.log" "$tmp/latency.log" | head -5 || true

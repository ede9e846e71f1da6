#!/usr/bin/env bash
# Fan-out and memory benchmark (issue 12): one real-time 720p30 session to
# 1,000 and 10,000 gRPC subscribers multiplexed over a few HTTP/2
# connections, what an idle session costs the server, and a session with a
# full window against the media bytes it holds. Builds release once, starts a
# fresh server on 127.0.0.1 for every measurement (ended sessions linger and
# freed memory is not always given back, so runs must not share a server),
# and prints the figures; every report is kept in $out/fanout-*.txt.
#
#   bench/fanout.sh                   # everything (about 5 minutes)
#   FANOUT_COUNTS="1000 2000" bench/fanout.sh fanout
#   bench/fanout.sh idle window       # memory measures only
#   bench/fanout.sh small             # the fan-out counts with the small
#                                     # embedded 320x180 stream (~1.1 KB/frame)
#
# Settings (environment): FANOUT_COUNTS (subscribers, default "1000 10000"),
# CONNECTIONS (shared subscriber connections, 8), DURATION (each fan-out run,
# 20s), IDLE_SESSIONS (1000), WINDOW_SESSIONS (20), WINDOW_DURATION (30s),
# GRPC_PORT / HTTP_PORT (50191 / 8191), INPUT (the 720p30 stream; made by
# make-bench-stream.sh when missing), CARGO_TARGET_DIR.
# Traffic goes only to 127.0.0.1; every run is bounded by --duration and by
# `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/release
out=$root/target/bench
mkdir -p "$out"
counts=${FANOUT_COUNTS:-"1000 10000"}
connections=${CONNECTIONS:-8}
duration=${DURATION:-20s}
idle_sessions=${IDLE_SESSIONS:-1000}
window_sessions=${WINDOW_SESSIONS:-20}
window_duration=${WINDOW_DURATION:-30s}
grpc_port=${GRPC_PORT:-50191}
http_port=${HTTP_PORT:-8191}
input=${INPUT:-$out/720p30_bframes.h264}
what=${*:-fanout idle window}

# Subscribers and the server's streams share descriptors with nothing else;
# 16384 covers 10,000 subscribers even on their own connections.
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -p liveslice-server -p liveslice-loadtest
[ -s "$input" ] || bench/make-bench-stream.sh "$out"

server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT

start_server() {
  stop_server
  RUST_LOG=warn "$bin/liveslice-server" \
    --grpc-addr "127.0.0.1:$grpc_port" --http-addr "127.0.0.1:$http_port" \
    --max-subscribers 10000 --max-sessions 5000 --linger 1s \
    --shutdown-timeout 1s --shutdown-grace 0s &
  server_pid=$!
  for _ in $(seq 100); do
    # Ours, not another process already on the port.
    kill -0 "$server_pid" 2>/dev/null || break
    curl -fs "http://127.0.0.1:$http_port/metrics" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the server did not start" >&2
  exit 1
}

loadtest() { # name args...
  local name=$1; shift
  echo
  echo "== $name: liveslice-loadtest $*"
  echo "load average before (other users of the machine): $(cut -d' ' -f1-3 /proc/loadavg)" \
    | tee "$out/fanout-$name.load"
  timeout 600 "$bin/liveslice-loadtest" --server "http://127.0.0.1:$grpc_port" \
    --http "http://127.0.0.1:$http_port" --server-pid "$server_pid" "$@" \
    | tee "$out/fanout-$name.txt"
}

for w in $what; do
  case $w in
    fanout)
      for n in $counts; do
        start_server
        loadtest "subs$n" --input "$input" --sessions 1 --subscribers "$n" \
          --connections "$connections" --duration "$duration"
      done
      ;;
    small)
      for n in $counts; do
        start_server
        loadtest "small$n" --sessions 1 --subscribers "$n" \
          --connections "$connections" --duration "$duration"
      done
      ;;
    idle)
      start_server
      loadtest idle --idle --sessions "$idle_sessions" --subscribers 0 --duration 10s
      ;;
    window)
      start_server
      loadtest window --input "$input" --sessions "$window_sessions" --subscribers 0 \
        --duration "$window_duration"
      ;;
    *)
      echo "unknown measure $w (fanout, small, idle, window)" >&2
      exit 2
      ;;
  esac
done
stop_server

echo
echo "== Summary ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
for w in $what; do
  case $w in
    fanout) for n in $counts; do echo "$out/fanout-subs$n.txt"; done ;;
    small) for n in $counts; do echo "$out/fanout-small$n.txt"; done ;;
    *) echo "$out/fanout-$w.txt" ;;
  esac
done | while read -r f; do
  echo "-- $(basename "$f" .txt)"
  cat "${f%.txt}.load" 2>/dev/null || true
  grep -E '^(Waited|CPU per|Fan-out|Per subscriber|Per session|CPU over|Drops|Errors|Subscribers|Server memory)' "$f" || true
done

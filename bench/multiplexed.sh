#!/usr/bin/env bash
# Server CPU per frame and latency with one HTTP/2 connection per stream
# against many streams multiplexed on a few connections, in one run on one
# fresh release server per case: SESSIONS real-time sessions × 1
# subscriber for SECS seconds on 127.0.0.1.
#
#   bench/multiplexed.sh [SESSIONS=100] [SECS=20] [K=16]
#
# Needs release builds (`cargo build --release -p liveslice-server -p
# liveslice-loadtest`) and python3; uses ports 127.0.0.1:50081 and 8098;
# takes about 2 × (SECS + 3) seconds. Prints one line per case: sessions,
# connections, frames, server and load-generator CPU per frame (µs),
# p50/p99 latency (ms), whether any frame was dropped, errors; the JSON
# reports go to target/multiplexed/CASE.json (the next run replaces them).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
sessions=${1:-100}
secs=${2:-20}
k=${3:-16}
out=target/multiplexed
mkdir -p "$out"
ulimit -n 65536 2>/dev/null || true
run() { # name, extra loadtest flags...
  local name=$1; shift
  local grpc=127.0.0.1:50081
  start_server "$out/$name.server.log" $grpc 127.0.0.1:8098 --max-sessions 10000
  target/release/liveslice-loadtest --server "http://$grpc" --server-pid $server \
    --sessions "$sessions" --subscribers 1 --duration "${secs}s" --json "$@" >"$out/$name.json" || true
  stop_server
  python3 - "$out/$name.json" "$name" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
c, l = v["cpu"], v["latency"]["percentiles_ms"]
print(f'{sys.argv[2]:>24}: {v["config"]["sessions"]} sessions, publishers {v["config"]["publisher_connections"]}, '
      f'subscribers {v["config"]["subscriber_connections"]}; {c["frames_received"]} frames; server '
      f'{c["server_us_per_frame"]:.1f} µs/frame ({c["server_cores"]:.2f} core), load generator '
      f'{c["load_generator_us_per_frame"]:.1f} µs/frame; p50 {l["p50"]:.2f} ms, p99 {l["p99"]:.2f} ms; '
      f'any drops: {v["drops"]["any"]}, errors {v["errors"]}')
PY
}
run connection-per-stream
run "multiplexed-$k" --publisher-connections "$k" --connections "$k"

#!/usr/bin/env bash
# What an edge costs per viewer, against its origin, in one run: a real
# nats-server with JetStream, an origin and an edge (release builds), one
# session published in real time to the origin (the load generator's embedded
# 320x180 30 fps stream, 2 s segments, 500 ms parts), then VIEWERS low-latency HLS players
# (`liveslice-loadtest --ll-viewers`: a blocking reload for each next part,
# then the part, on K HTTP/2 connections) for SECS seconds on the origin,
# then the same on the edge. Each node's CPU with no viewers over SECS is
# measured first and taken off, so "per viewer" is what the viewers add.
#
#   bench/edge-viewers.sh [VIEWERS=200] [SECS=20] [K=4]
#
# Needs release builds (`cargo build --release -p liveslice-server -p
# liveslice-loadtest`), nats-server (Debian's package) and python3; uses
# ports 127.0.0.1:4233 (NATS), 50082/8099 (origin), 50083/8100 (edge);
# takes about 4 × SECS + 15 seconds. Reports go to target/edge-viewers/.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
viewers=${1:-200}
secs=${2:-20}
k=${3:-4}
out=target/edge-viewers
rm -rf "$out" && mkdir -p "$out/nats"
ulimit -n 65536 2>/dev/null || true
nats-server -js -a 127.0.0.1 -p 4233 -sd "$out/nats" >"$out/nats.log" 2>&1 &
nats=$!
pids=("$nats")
# The servers and the publisher first, NATS last (a server that outlives
# NATS only logs that it is unreachable).
cleanup() {
  kill "${pids[@]:1}" 2>/dev/null || true
  wait "${pids[@]:1}" 2>/dev/null || true
  kill "$nats" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
sleep 1
start_server "$out/origin.log" 127.0.0.1:50082 127.0.0.1:8099 \
  --cluster nats://127.0.0.1:4233 --node-id bench-origin
origin=$server
pids+=("$origin")
start_server "$out/edge.log" 127.0.0.1:50083 127.0.0.1:8100 \
  --cluster nats://127.0.0.1:4233 --node-id bench-edge --role edge
edge=$server
pids+=("$edge")
# One session, in real time, for the whole run.
total=$((4 * secs + 15))
target/release/liveslice-loadtest --server http://127.0.0.1:50082 --sessions 1 \
  --subscribers 0 --duration "${total}s" --session-prefix bench >"$out/publisher.txt" 2>&1 &
publisher=$!
pids+=("$publisher")
session="bench-$publisher-0"
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:8100/live/$session/index.m3u8" | grep -q EXTINF && break
  sleep 0.2
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
idle() { # pid → CPU seconds over SECS with no viewers
  local a b
  a=$(cpu "$1"); sleep "$secs"; b=$(cpu "$1")
  python3 -c "print(($b - $a) / $hz)"
}
measure() { # name pid http
  local name=$1 pid=$2 http=$3 base
  base=$(idle "$pid")
  target/release/liveslice-loadtest --ll-viewers "$viewers" --held-session "$session" \
    --held-connections "$k" --duration "${secs}s" --http "$http" --server-pid "$pid" \
    >"$out/$name.txt" 2>&1 || { cat "$out/$name.txt"; exit 1; }
  python3 - "$out/$name.txt" "$name" "$base" "$secs" "$viewers" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
name, base, secs, viewers = sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
cpu = float(re.search(r"server CPU: ([0-9.]+) s", text).group(1))
parts = int(re.search(r"parts fetched: (\d+)", text).group(1))
errors = int(re.search(r"errors (\d+)", text).group(1))
reloads = int(re.search(r"playlist reloads (\d+)", text).group(1))
added = max(cpu - base, 0.0)
print(f"{name:>6}: {viewers} viewers, {parts} parts ({parts / secs:.0f}/s), {reloads} reloads, errors {errors}; "
      f"CPU {cpu / secs * 100:.1f} % of a core with viewers, {base / secs * 100:.1f} % without; "
      f"added {added / secs * 100 / viewers:.3f} % of a core per viewer, "
      f"{added / max(parts, 1) * 1e6:.1f} us per part served")
PY
}
measure origin "$origin" http://127.0.0.1:8099
measure edge "$edge" http://127.0.0.1:8100

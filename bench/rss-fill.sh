#!/usr/bin/env bash
# The server's memory while the windows of SESSIONS real-time sessions × 1
# subscriber fill: VmRSS every 5 s for SECS seconds, then the media bytes
# the server counts (`liveslice_media_memory_bytes`, held for the ended
# sessions' linger) to compare with.
#
#   bench/rss-fill.sh [SESSIONS=100] [SECS=50]
#   SERVER_BIN=/tmp/old-server bench/rss-fill.sh   # another build
#
# Needs release builds (`cargo build --release -p liveslice-server -p liveslice-loadtest`).
# It uses ports 50095/8095 and target/rss-fill/: one run at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
sessions=${1:-100}
secs=${2:-50}
out=target/rss-fill
mkdir -p "$out"
load=
trap 'kill $load 2>/dev/null || true; stop_server' EXIT
start_server "$out/server.log" 127.0.0.1:50095 127.0.0.1:8095 --max-sessions 10000
target/release/liveslice-loadtest --server http://127.0.0.1:50095 --server-pid "$server" \
  --sessions "$sessions" --subscribers 1 --duration "${secs}s" --json >"$out/loadtest.json" 2>/dev/null &
load=$!
for i in $(seq 1 $((secs / 5))); do
  sleep 5
  echo "t=$((i * 5)) s: $(grep -E 'VmRSS' "/proc/$server/status" | tr -s ' \t' ' ')"
done
wait "$load" || true
curl -s http://127.0.0.1:8095/metrics | grep -E '^liveslice_media_memory_bytes' || true

#!/usr/bin/env bash
# What the server does per frame at steady state: `perf stat` of the
# release server for MEASURE seconds, starting after WARMUP seconds of
# SESSIONS real-time sessions × 1 subscriber (the window full, so the
# allocator no longer grows): task clock, context switches, page faults
# (and migrations) and system calls, each divided by the frames published meanwhile
# (SESSIONS × 30 fps × MEASURE).
#
#   bench/steady-counters.sh [SESSIONS=100] [WARMUP=45] [MEASURE=10]
#   SERVER_BIN=/tmp/old-server bench/steady-counters.sh   # another build
#
# With WARMUP=2 it shows the warm-up instead (mprotect and page faults
# per frame while the window fills). Needs Debian's `linux-perf`, perf
# events readable (perf_event_paranoid ≤ 1, or root) and release builds
# (`cargo build --release -p liveslice-server -p liveslice-loadtest`). It uses
# ports 50093/8093 and target/steady/: one run at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
sessions=${1:-100}
warmup=${2:-45}
measure=${3:-10}
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
out=target/steady
mkdir -p "$out"
load=
trap 'kill $load 2>/dev/null || true; stop_server' EXIT
start_server "$out/server.log" 127.0.0.1:50093 127.0.0.1:8093 --max-sessions 10000
target/release/liveslice-loadtest --server http://127.0.0.1:50093 --server-pid "$server" \
  --sessions "$sessions" --subscribers 1 --duration "$((warmup + measure + 5))s" --json \
  >"$out/loadtest.json" 2>/dev/null &
load=$!
sleep "$warmup"
events=task-clock,context-switches,cpu-migrations,page-faults
for s in futex epoll_wait mprotect writev recvfrom; do events+=",syscalls:sys_enter_$s"; done
# perf's own complaints (events not permitted, …) go to the terminal.
perf stat -e "$events" -p "$server" -x, -o "$out/perf.csv" -- sleep "$measure"
wait "$load" || true
python3 - "$out/perf.csv" "$((sessions * 30 * measure))" <<'PY'
import sys
path, frames = sys.argv[1], int(sys.argv[2])
for line in open(path):
    p = line.strip().split(",")
    if len(p) > 3 and p[0][:1].isdigit():
        v = float(p[0]) / frames
        # task-clock is in ms: shown in µs.
        unit = "µs" if p[2] == "task-clock" else ""
        print(f"{p[2]:36s} {v * 1000 if unit else v:9.3f} {unit + ' ' if unit else ''}per frame")
PY

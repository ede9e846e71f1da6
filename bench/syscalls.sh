#!/usr/bin/env bash
# System calls the server makes per frame: `strace -c -f` on the release
# server for 5 s while the load generator runs SESSIONS real-time sessions
# × 1 subscriber, divided by the frames published in those 5 s (30 per
# session per second).
#
#   bench/syscalls.sh [SESSIONS=100] [LOADTEST FLAGS…]
#   bench/syscalls.sh 100 --publisher-connections 16 --connections 16
#
# Needs strace and release builds. strace slows the server: the counts are
# the figure, not its times.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
sessions=${1:-100}
shift $(($# < 1 ? $# : 1))
command -v strace >/dev/null || { echo "strace is missing: apt-get install strace" >&2; exit 1; }
out=target/syscalls
mkdir -p "$out"
grpc=127.0.0.1:50089
trap stop_server EXIT
start_server "$out/server.log" $grpc 127.0.0.1:8089
target/release/liveslice-loadtest --server "http://$grpc" --sessions "$sessions" --subscribers 1 \
  --duration 12s "$@" >"$out/loadtest.txt" 2>&1 &
load=$!
sleep 3
timeout 5 strace -c -f -p $server -o "$out/strace.txt" >/dev/null 2>&1 || true
wait $load
frames=$((sessions * 30 * 5))
echo "per frame (≈ $frames frames in the 5 s traced):"
# strace's table: % time, seconds, usecs/call, calls, [errors,] syscall.
awk -v f=$frames '$4 ~ /^[0-9]+$/ && $NF != "total" { printf "  %-14s %.2f\n", $NF, $4 / f }' \
  "$out/strace.txt"

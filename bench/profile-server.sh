#!/usr/bin/env bash
# Where the server's CPU goes under load: `perf record` (call graphs) of the
# release server while the load generator runs SESSIONS real-time sessions
# × 1 subscriber for SECS seconds on 127.0.0.1, then the top symbols by
# self time and by inclusive time, and the server's CPU per frame.
#
#   bench/profile-server.sh [SESSIONS=100] [SECS=20] [LOADTEST FLAGS…]
#
# e.g. publishers and subscribers multiplexed on 16 connections each:
#   bench/profile-server.sh 600 20 --publisher-connections 16 --connections 16
#
# WARMUP=40 bench/profile-server.sh 100 20: the sessions publish 40 s first
# and the profile, the CPU and the latency cover the steady state after it
# (a session's window fills during its first ~35 s: figures taken then
# include the allocator growing).
#
# Needs Debian's `linux-perf` and release builds
# (`cargo build --release -p liveslice-server -p liveslice-loadtest`).
# Writes target/profile/{perf.data,self.txt,children.txt,loadtest.txt}; with
# `inferno-flamegraph` on PATH (`cargo install inferno`) also flame.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
sessions=${1:-100}
secs=${2:-20}
shift $(($# < 2 ? $# : 2))
out=target/profile
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
grpc=127.0.0.1:50071
trap stop_server EXIT
start_server "$out/server.log" $grpc 127.0.0.1:8097
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks $server)
warmup=${WARMUP:-0}
target/release/liveslice-loadtest --server "http://$grpc" --server-pid $server \
  --sessions "$sessions" --subscribers 1 --warmup "${warmup}s" --duration "${secs}s" "$@" \
  >"$out/loadtest.txt" 2>&1 &
load=$!
sleep $((warmup + 2))
before=$(ticks $server)
perf record -F 499 -g -p $server -o "$out/perf.data" -- sleep $((secs - 4)) 2>/dev/null
wait $load
after=$(ticks $server)
# "In:   59943 frames (2997.0/s), …": frames published over the run.
frames=$(grep -E '^ *In: ' "$out/loadtest.txt" | grep -Eo '[0-9]+ frames' | head -1 | grep -Eo '[0-9]+' || true)
perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
  | grep -E '^ +[0-9]' | head -40 >"$out/self.txt" || true
perf report -i "$out/perf.data" --children --sort symbol --stdio 2>/dev/null \
  | grep -E '^ +[0-9]' | head -60 >"$out/children.txt" || true
if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
  perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$out/flame.svg"
fi
cpu_s=$(echo "scale=3; ($after - $before) / $hz" | bc)
echo "server CPU: ${cpu_s} s over the ${secs} s run; $(grep -E '^ *(In|99 %)' "$out/loadtest.txt" | tr -s ' ' | tr '\n' ';')"
if [ "$warmup" -gt 0 ]; then
  # The load generator's figure covers the measured seconds only.
  grep -E 'CPU per frame received' "$out/loadtest.txt" || true
elif [ -n "$frames" ] && [ "$frames" -gt 0 ]; then
  echo "server CPU per frame (in + 1 subscriber out): $(echo "scale=2; $cpu_s * 1000000 / $frames" | bc) µs"
fi
echo "top self time:"; head -25 "$out/self.txt"

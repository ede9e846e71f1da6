#!/usr/bin/env bash
# Two server builds side by side under the same load, interleaved round by
# round so that machine noise falls on both: server CPU per frame, the load
# generator's CPU per frame and p50/p99 publish→receive latency, medians over
# ROUNDS rounds, then each round's figures (with p99.9 and the server's RSS
# under load). Add `-- --warmup 45s` for steady-state figures.
#
#   bench/ab-server.sh OLD_BINARY NEW_BINARY [ROUNDS=5] [SESSIONS=100] [SECS=15] [-- LOADTEST FLAGS…]
#
# e.g. keep the previous build's binary before rebuilding:
#   cp target/release/liveslice-server /tmp/ls-prev
#   cargo build --release -p liveslice-server
#   bench/ab-server.sh /tmp/ls-prev target/release/liveslice-server 5 100 15 -- --publisher-connections 16 --connections 16
#
# One binary with and without a flag: give each side a two-line wrapper, e.g.
#   printf '#!/bin/sh\nexec %s --grpc-runtimes 2 "$@"\n' "$PWD/target/release/liveslice-server" >/tmp/ls-rt2
#   chmod +x /tmp/ls-rt2
#   bench/ab-server.sh target/release/liveslice-server /tmp/ls-rt2 5 100 15
#
# Needs a release `liveslice-loadtest`. Each run starts a fresh server on
# 127.0.0.1 (SESSIONS real-time sessions × 1 subscriber for SECS seconds).
# The JSON reports go to target/ab/.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
old=${1:?old server binary}
new=${2:?new server binary}
rounds=${3:-5}
sessions=${4:-100}
secs=${5:-15}
shift $(($# < 5 ? $# : 5))
[ "${1:-}" = "--" ] && shift
extra=("$@")
out=target/ab
mkdir -p "$out"
rm -f "$out"/*.json
ulimit -n 65536 2>/dev/null || true
one() { # label, binary, round
  local grpc=127.0.0.1:50091
  SERVER_BIN=$2 start_server "$out/$1.$3.server.log" $grpc 127.0.0.1:8099 --max-sessions 10000
  target/release/liveslice-loadtest --server "http://$grpc" --server-pid $server \
    --sessions "$sessions" --subscribers 1 --duration "${secs}s" --json "${extra[@]}" >"$out/$1.$3.json" || true
  stop_server
}
for r in $(seq 1 "$rounds"); do
  # Alternate which build goes first.
  if [ $((r % 2)) -eq 1 ]; then one old "$old" "$r"; one new "$new" "$r"
  else one new "$new" "$r"; one old "$old" "$r"; fi
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys, glob
out, rounds = sys.argv[1], int(sys.argv[2])
med = {}
for label in ("old", "new"):
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{label}.*.json"))]
    if len(runs) != rounds:
        sys.exit(f"{label}: {len(runs)} of {rounds} runs have a report (see {out}/*.server.log)")
    def m(f):
        return statistics.median(f(v) for v in runs)
    med[label] = {
        "server": m(lambda v: v["cpu"]["server_us_per_frame"]),
        "loadgen": m(lambda v: v["cpu"]["load_generator_us_per_frame"]),
        "p50": m(lambda v: v["latency"]["percentiles_ms"]["p50"]),
        "p99": m(lambda v: v["latency"]["percentiles_ms"]["p99"]),
        "frames": m(lambda v: v["cpu"]["frames_received"]),
        "drops": sum(1 for v in runs if v["drops"]["any"]),
        "errors": sum(v["errors"] for v in runs),
        "all": [round(v["cpu"]["server_us_per_frame"], 1) for v in runs],
        "runs": [
            f'{v["cpu"]["server_us_per_frame"]:.1f} µs/frame, load generator '
            f'{v["cpu"]["load_generator_us_per_frame"]:.1f}, p50 '
            f'{v["latency"]["percentiles_ms"]["p50"]:.2f} ms, p99 '
            f'{v["latency"]["percentiles_ms"]["p99"]:.2f} ms, p99.9 '
            f'{v["latency"]["percentiles_ms"]["p99.9"]:.2f} ms, RSS '
            f'{(v["server_rss_kib"] or 0) / 1024:.0f} MiB'
            for v in runs
        ],
    }
for label, v in med.items():
    print(f'{label}: server {v["server"]:.1f} µs/frame (runs {v["all"]}), load generator '
          f'{v["loadgen"]:.1f} µs/frame, p50 {v["p50"]:.2f} ms, p99 {v["p99"]:.2f} ms, '
          f'{v["frames"]:.0f} frames; runs with drops {v["drops"]}, errors {v["errors"]}')
    for i, r in enumerate(v["runs"], 1):
        print(f'  round {i}: {r}')
o, n = med["old"], med["new"]
print(f'new/old: server CPU per frame {n["server"] / o["server"]:.2f}, p99 {n["p99"] / o["p99"]:.2f}')
PY

#!/usr/bin/env bash
# The floor under the server's CPU per frame (issue 14): the same live load
# (SESSIONS real-time sessions at 30 fps, ~1.1 KB frames, one subscriber
# each) through
#   floor      `liveslice-relay-floor relay`: tokio and TCP alone, one task
#              per session copying whole frames from the publisher's socket
#              to the subscriber's (one read, one write per frame);
#   floor+hop  the same with one task hand-off (a bounded channel) between
#              the read and the write;
#   floor-1t   the first on one thread (tokio's current-thread runtime);
#   liveslice  the release server under `liveslice-loadtest` (gRPC over
#              HTTP/2, the engine, the session's media log).
# Interleaved for ROUNDS rounds; prints each one's medians: relay/server CPU
# per frame, the load side's, p50/p99 send→receive latency.
#
#   bench/relay-floor.sh [ROUNDS=3] [SECS=15] [SESSIONS…=100 1000]
#
# WARMUP=40 bench/relay-floor.sh …: liveslice's runs publish 40 s before
# their SECS are measured (`liveslice-loadtest --warmup`: the server's
# window fills during a session's first ~35 s). The floors hold nothing
# and reuse each session's buffer: they have no warm-up to leave out.
#
# Needs release builds: cargo build --release -p liveslice-server -p liveslice-loadtest
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3}
secs=${2:-15}
shift $(($# < 2 ? $# : 2))
counts=("${@:-100}")
warmup=${WARMUP:-0}
[ $# -gt 0 ] || counts=(100 1000)
out=target/relay-floor
mkdir -p "$out"
rm -f "$out"/*.json
ulimit -n 65536 2>/dev/null || true
floor() { # label, sessions, round, relay flags…
  local label=$1 n=$2 r=$3
  shift 3
  target/release/liveslice-relay-floor relay --listen 127.0.0.1:50098 "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep 0.5
  target/release/liveslice-relay-floor load --relay 127.0.0.1:50098 --relay-pid $pid \
    --sessions "$n" --duration "${secs}s" >"$out/$label.$n.$r.json" || true
  kill $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
}
server_run() { # sessions, round
  local grpc=127.0.0.1:50091
  start_server "$out/liveslice.$1.$2.log" $grpc 127.0.0.1:8099 --max-sessions 10000
  target/release/liveslice-loadtest --server "http://$grpc" --server-pid $server \
    --sessions "$1" --subscribers 1 --warmup "${warmup}s" --duration "${secs}s" --json \
    >"$out/liveslice.$1.$2.raw" || true
  stop_server
  python3 - "$out/liveslice.$1.$2.raw" "$out/liveslice.$1.$2.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
json.dump({
    "relay_us_per_frame": v["cpu"]["server_us_per_frame"],
    "load_us_per_frame": v["cpu"]["load_generator_us_per_frame"],
    "p50_ms": v["latency"]["percentiles_ms"]["p50"],
    "p99_ms": v["latency"]["percentiles_ms"]["p99"],
    "frames": v["cpu"]["frames_received"],
}, open(sys.argv[2], "w"))
PY
}
for n in "${counts[@]}"; do
  for r in $(seq 1 "$rounds"); do
    floor floor "$n" "$r"
    floor floor-hop "$n" "$r" --hop
    floor floor-1t "$n" "$r" --one-thread
    server_run "$n" "$r"
  done
done
python3 - "$out" "${counts[@]}" <<'PY'
import json, statistics, sys, glob
out, counts = sys.argv[1], sys.argv[2:]
for n in counts:
    med = {}
    for label in ("floor", "floor-hop", "floor-1t", "liveslice"):
        runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{label}.{n}.*.json"))]
        if not runs:
            sys.exit(f"{label} at {n}: no report (see {out})")
        m = lambda k: statistics.median(r[k] for r in runs)
        med[label] = m("relay_us_per_frame")
        print(f'{n} sessions, {label}: {med[label]:.1f} µs/frame '
              f'(runs {[round(r["relay_us_per_frame"], 1) for r in runs]}), load side '
              f'{m("load_us_per_frame"):.1f} µs/frame, p50 {m("p50_ms"):.3f} ms, '
              f'p99 {m("p99_ms"):.3f} ms, {m("frames"):.0f} frames')
    print(f'{n} sessions: liveslice / floor {med["liveslice"] / med["floor"]:.2f}, '
          f'liveslice / floor+hop {med["liveslice"] / med["floor-hop"]:.2f}')
PY

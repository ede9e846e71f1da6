#!/usr/bin/env bash
# Recording throughput (--record): many sessions published into a release
# server that records every segment (CMAF and MPEG-TS) to a store, then what
# was written, how fast, and what was lost, from GET /api/record. Stores:
# `s3` (moto_server on loopback: a real S3 API, but a Python one, so it is
# the bound), `file` (a local directory), and `none` (no recording: the
# server CPU to compare with). Every run starts a fresh server
# (and moto) on 127.0.0.1 and is bounded by --duration and `timeout`.
#
#   bench/record.sh                  # s3 and file, real-time and flat-out
#   bench/record.sh file             # one store
#
# Settings (environment): SESSIONS (real-time sessions, 50), DURATION (20s),
# MAX_SESSIONS (flat-out sessions, 2), FLAT_DURATION (5s: flat-out writes
# a few GB), INPUT (the 720p30 stream; made by
# make-bench-stream.sh when missing), GRPC_PORT / HTTP_PORT / MOTO_PORT
# (50291 / 8291 / 5291), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/release
out=$root/target/bench
mkdir -p "$out"
sessions=${SESSIONS:-50}
max_sessions=${MAX_SESSIONS:-2}
duration=${DURATION:-20s}
flat_duration=${FLAT_DURATION:-5s}
grpc=${GRPC_PORT:-50291}
http=${HTTP_PORT:-8291}
moto_port=${MOTO_PORT:-5291}
input=${INPUT:-$out/720p30_bframes.h264}
[ -s "$input" ] || bench/make-bench-stream.sh "$out"
cargo build --release -q -p liveslice-server --bin liveslice-server
cargo build --release -q -p liveslice-loadtest

stores=${*:-"s3 file none"}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# One run: $1 store, $2 label, the rest loadtest flags.
run() {
  local store=$1 label=$2
  shift 2
  local flags=() dir=""
  case $store in
    s3)
      moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
      local moto=$!
      pids+=("$moto")
      for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$moto_port/" && break; sleep 0.1; done
      curl -s -X PUT "http://127.0.0.1:$moto_port/bench" >/dev/null
      flags=(--record s3://bench/rec --record-endpoint "http://127.0.0.1:$moto_port" --record-region us-east-1)
      export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
      ;;
    file)
      dir=$(mktemp -d "$out/record-XXXX")
      flags=(--record "file://$dir")
      ;;
    none) ;;
  esac
  RUST_LOG=warn "$bin/liveslice-server" --grpc-addr "127.0.0.1:$grpc" --http-addr "127.0.0.1:$http" \
    "${flags[@]}" --linger 600s --max-sessions 10000 &
  local server=$!
  pids+=("$server")
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$http/healthz" && break; sleep 0.1; done
  local start=$SECONDS
  timeout 900 "$bin/liveslice-loadtest" --server "http://127.0.0.1:$grpc" --input "$input" \
    --server-pid "$server" --subscribers 0 "$@" > "$out/record-$store-$label.loadtest.txt"
  # The writes still queued when publishing stopped.
  for _ in $(seq 600); do
    [ "$store" = none ] && break
    q=$(curl -s "http://127.0.0.1:$http/api/record" | python3 -c 'import json,sys; print(json.load(sys.stdin)["queued_bytes"])')
    [ "$q" = 0 ] && break
    sleep 0.1
  done
  local took=$((SECONDS - start))
  curl -s "http://127.0.0.1:$http/api/record" > "$out/record-$store-$label.json"
  [ "$store" = none ] || python3 - "$out/record-$store-$label.json" "$store" "$label" "$took" <<'EOF'
import json, sys
st = json.load(open(sys.argv[1]))
took = max(int(sys.argv[4]), 1)
lost = st["segments_lost_queue_full"] + st["segments_lost_write_failed"]
print(f"{sys.argv[2]:5} {sys.argv[3]:9} objects {st['writes']:6}  {st['bytes']/1e6:8.1f} MB  "
      f"{st['bytes']/1e6/took:6.1f} MB/s over {took} s (publish + drain)  "
      f"{st['writes']/took:6.1f} objects/s  lost {lost} (queue full {st['segments_lost_queue_full']}, "
      f"failed {st['segments_lost_write_failed']}), retries {st['retries']}")
EOF
  echo "$store $label: $(grep -E "^  In:" "$out/record-$store-$label.loadtest.txt")"
  grep -E "^CPU" "$out/record-$store-$label.loadtest.txt" || true
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [ "$store" = s3 ]; then kill "$moto" 2>/dev/null || true; wait "$moto" 2>/dev/null || true; fi
  [ -n "$dir" ] && rm -rf "$dir"
  return 0
}

for store in $stores; do
  run "$store" realtime --sessions "$sessions" --duration "$duration"
  run "$store" flat-out --sessions "$max_sessions" --rate max --duration "$flat_duration"
done

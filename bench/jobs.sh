#!/usr/bin/env bash
# Packaging jobs (issue 18): files packaged per minute per worker, and the
# speed-up from 1 to 2 workers, on this machine. JOBS jobs (default 12) of
# the 60 s 720p30 B-frame stream (make-bench-stream.sh), file:// in and
# out (both formats), submitted at once over HTTP to a cluster of a real
# `nats-server -js` and W release `liveslice-server --worker` processes;
# timed from the first submit until every job's record says done. The
# reference, in the same run: the same files packaged by `liveslice package`
# directly (no queue), one after another and two at a time.
# Needs: nats-server, curl, python3, a release build
# (`cargo build --release -p liveslice-server -p liveslice`).
# Traffic stays on 127.0.0.1; ports 14322 (NATS) and 50491+ / 8491+.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-12}
in=target/bench/720p30_bframes
[ -s $in.h264 ] || bench/make-bench-stream.sh
# Outputs in memory (/dev/shm): the disk's write-back would otherwise
# decide the figures (each job writes ~45 MB).
tmp=$(mktemp -d -p "${BENCH_TMP:-/dev/shm}")
rounds=${ROUNDS:-3}
nats=""
workers=()
cleanup() {
  for w in "${workers[@]}"; do kill "$w" 2>/dev/null || true; done
  [ -n "$nats" ] && kill "$nats" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/files"
cp $in.h264 "$tmp/files/in.h264"
# A long file for the sliced figures: the 60 s stream LAPS times over.
laps=${LAPS:-5}
slice=${SLICE:-60}
for _ in $(seq "$laps"); do cat $in.h264; done >"$tmp/files/long.h264"
nats-server -js -a 127.0.0.1 -p 14322 -sd "$tmp/nats" >"$tmp/nats.log" 2>&1 &
nats=$!
sleep 1

now() { date +%s.%N; }

# start_workers W: W release workers on ports 50491+ / 8491+.
start_workers() {
  local i
  workers=()
  for i in $(seq "$1"); do
    RUST_LOG=warn target/release/liveslice-server --grpc-addr 127.0.0.1:$((50490 + i)) \
      --http-addr 127.0.0.1:$((8490 + i)) --cluster nats://127.0.0.1:14322 --node-id "w$i" \
      --worker --job-files "$tmp/files" >"$tmp/w$i.log" 2>&1 &
    workers+=($!)
  done
  sleep 2
}

# run_workers W: W workers, JOBS jobs, prints the wall seconds.
run_workers() {
  local n=$1 i start ids id state done_count
  start_workers "$n"
  rm -rf "$tmp/files/out"
  # One process submits every job and polls them all (20 ms), so the
  # harness costs the 2 cores little; prints the wall seconds.
  python3 - "$jobs" "$tmp/files" "$n" "$tmp/by-worker-$n" <<'PY'
import json, sys, time, urllib.request
jobs, files, n, by_worker = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
api = "http://127.0.0.1:8491/api/jobs"
start = time.monotonic()
ids = []
for i in range(jobs):
    body = json.dumps({"source": f"file://{files}/in.h264", "output": f"file://{files}/out/{n}-{i}"})
    req = urllib.request.Request(api, data=body.encode(), method="POST")
    ids.append(json.load(urllib.request.urlopen(req))["id"])
done = {}
while len(done) < jobs:
    for id in ids:
        if id in done:
            continue
        r = json.load(urllib.request.urlopen(f"{api}/{id}"))
        if r["state"] in ("failed", "cancelled"):
            sys.exit(f"job {id} {r['state']}: {r.get('error')}")
        if r["state"] == "done":
            done[id] = r["worker"]
    time.sleep(0.02)
print(f"{time.monotonic() - start:.3f}")
with open(by_worker, "w") as f:
    f.write("\n".join(done.values()) + "\n")
PY
  for w in "${workers[@]}"; do kill "$w"; wait "$w" 2>/dev/null || true; done
  workers=()
}

# one_job W SLICE_SECONDS: W workers, one job of the long file (0: not
# sliced); prints the wall seconds.
one_job() {
  local n=$1 slice=$2 i
  start_workers "$n"
  rm -rf "$tmp/files/out"
  python3 - "$tmp/files" "$slice" <<'PY'
import json, sys, time, urllib.request
files, slice_seconds = sys.argv[1], int(sys.argv[2])
api = "http://127.0.0.1:8491/api/jobs"
start = time.monotonic()
body = json.dumps({"source": f"file://{files}/long.h264", "output": f"file://{files}/out/long",
                   "slice_seconds": slice_seconds})
id = json.load(urllib.request.urlopen(urllib.request.Request(api, data=body.encode(), method="POST")))["id"]
while True:
    r = json.load(urllib.request.urlopen(f"{api}/{id}"))
    if r["state"] in ("failed", "cancelled"):
        sys.exit(f"job {id} {r['state']}: {r.get('error')}")
    if r["state"] == "done":
        break
    time.sleep(0.02)
print(f"{time.monotonic() - start:.3f}")
PY
  for w in "${workers[@]}"; do kill "$w"; wait "$w" 2>/dev/null || true; done
  workers=()
}

direct() {
  local p=$1 start
  rm -rf "$tmp/direct"
  start=$(now)
  seq "$jobs" | xargs -P "$p" -I{} target/release/liveslice package "$tmp/files/in.h264" \
    --out "$tmp/direct/{}" >/dev/null
  echo "$(now) - $start" | bc
}

w1=$(run_workers 1)
w2=$(run_workers 2)
direct 1 >/dev/null # warm the page cache
med() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
: >"$tmp/r"
for _ in $(seq "$rounds"); do
  echo "w1 $(run_workers 1)" >>"$tmp/r"
  echo "w2 $(run_workers 2)" >>"$tmp/r"
  echo "d1 $(direct 1)" >>"$tmp/r"
  echo "d2 $(direct 2)" >>"$tmp/r"
  echo "l1 $(one_job 1 0)" >>"$tmp/r"
  echo "s1 $(one_job 1 "$slice")" >>"$tmp/r"
  echo "s2 $(one_job 2 "$slice")" >>"$tmp/r"
done
w1=$(grep '^w1 ' "$tmp/r" | cut -d' ' -f2 | med)
w2=$(grep '^w2 ' "$tmp/r" | cut -d' ' -f2 | med)
d1=$(grep '^d1 ' "$tmp/r" | cut -d' ' -f2 | med)
d2=$(grep '^d2 ' "$tmp/r" | cut -d' ' -f2 | med)
per_min() { echo "scale=1; $jobs * 60 / $1 / $2" | bc; }
for n in 1 2; do echo "jobs per worker with $n (last round): $(sort "$tmp/by-worker-$n" | uniq -c | tr '\n' ' ')"; done
echo "jobs=$jobs rounds=$rounds (medians) input=60 s 720p30 (both formats), $(nproc) cores"
echo "1 worker:  ${w1} s wall, $(per_min "$w1" 1) files/min per worker"
echo "2 workers: ${w2} s wall, $(per_min "$w2" 2) files/min per worker, speed-up $(echo "scale=2; $w1 / $w2" | bc)"
echo "direct liveslice package, 1 at a time: ${d1} s ($(per_min "$d1" 1) files/min); 1 worker/direct $(echo "scale=2; $w1 / $d1" | bc)"
echo "direct liveslice package, 2 at a time: ${d2} s; 2 workers/direct $(echo "scale=2; $w2 / $d2" | bc)"
l1=$(grep '^l1 ' "$tmp/r" | cut -d' ' -f2 | med)
s1=$(grep '^s1 ' "$tmp/r" | cut -d' ' -f2 | med)
s2=$(grep '^s2 ' "$tmp/r" | cut -d' ' -f2 | med)
echo "one $((laps * 60)) s file, 1 worker, whole: ${l1} s"
echo "the same sliced by ${slice} s, 1 worker: ${s1} s ($(echo "scale=2; $s1 / $l1" | bc) of whole)"
echo "the same sliced by ${slice} s, 2 workers: ${s2} s (speed-up $(echo "scale=2; $l1 / $s2" | bc) over whole on 1)"

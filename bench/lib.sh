# Shared by the bench scripts (`. bench/lib.sh`): a release server for one
# measured run.
#
# start_server LOG GRPC_ADDR HTTP_ADDR [SERVER FLAGS…]: starts
# ${SERVER_BIN:-target/release/liveslice-server} with RUST_LOG=warn (and
# the NAME=VALUE assignments in $SERVER_ENV, e.g. TOKIO_WORKER_THREADS=1),
# its output to LOG; sets $server to its pid and gives it a second to listen.
# stop_server: stops it and waits for it to exit (so the ports are free).
start_server() {
  local log=$1 grpc=$2 http=$3
  shift 3
  # shellcheck disable=SC2086
  env RUST_LOG=warn ${SERVER_ENV:-} "${SERVER_BIN:-target/release/liveslice-server}" \
    --grpc-addr "$grpc" --http-addr "$http" "$@" >"$log" 2>&1 &
  server=$!
  sleep 1
}

stop_server() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}

# timed CMD…: runs CMD (its output discarded) under /usr/bin/time; sets
# $cpu_s (user + system seconds), $wall_s and $maxrss_kib.
timed() {
  local t u s
  t=$(mktemp)
  /usr/bin/time -f "%U %S %e %M" -o "$t" "$@" >/dev/null 2>&1
  read -r u s wall_s maxrss_kib < "$t"
  rm -f "$t"
  cpu_s=$(echo "$u + $s" | bc)
}

# measure NAME CMD…: `timed` CMD with an empty "$tmp/out" to write into;
# appends "NAME CPU_S WALL_S MAXRSS_KIB" to "$tmp/results".
measure() {
  local name=$1
  shift
  rm -rf "$tmp/out"
  mkdir -p "$tmp/out"
  timed "$@"
  echo "$name $cpu_s $wall_s $maxrss_kib" >> "$tmp/results"
}

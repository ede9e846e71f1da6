#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS each (default 60), seeded
# from the committed test streams. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Crashes land in artifacts/<target>/ and fail
# the run.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
targets=(annexb_assembler pts_aligner session_pipeline slice_request)

# Seeds: the start of each test stream (parameter sets, a keyframe, a few
# frames), a few cuts at odd places, and proto messages.
for t in annexb_assembler session_pipeline; do
  mkdir -p "corpus/$t"
  for f in ../../testdata/*.h264; do
    n=$(basename "$f" .h264)
    head -c 12000 "$f" | (printf '\x03\x10\x40\x07'; cat) > "corpus/$t/$n-start"
    { printf '\x05\x01\x02\x03\x04\x05'; dd if="$f" bs=9000 skip=40000 count=1 iflag=skip_bytes status=none; } > "corpus/$t/$n-mid"
  done
done
mkdir -p corpus/pts_aligner corpus/slice_request
printf '\x1e\x00\x02\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00' > corpus/pts_aligner/ibbp
printf '\x0a\x04demo\x10\x1e' > corpus/slice_request/three-field
printf '\x0a\x04demo\x1a\x05\x00\x00\x00\x01\x67\x28\x01\x40\x01' > corpus/slice_request/publish

for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::|#[0-9]+[[:space:]]+DONE|==|SUMMARY|Done|INFO: )" | grep -vE "INFO: (Loaded|seed|-max_len|A corpus|Running)" || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz target $t found a crash: see server/fuzz/artifacts/$t" >&2
    exit 1
  fi
done

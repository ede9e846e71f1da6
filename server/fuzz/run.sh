#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS each (default 60), seeded
# from the committed test streams. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Crashes land in artifacts/<target>/ and fail
# the run.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
targets=(annexb_assembler pts_aligner session_pipeline av_pipeline slice_request
  cmaf_roundtrip ts_roundtrip manifest_edits http_parse config_load first_message)

# Seeds: the start of each test stream (parameter sets, a keyframe, a few
# frames), a few cuts at odd places, and proto messages.
for t in annexb_assembler session_pipeline; do
  mkdir -p "corpus/$t"
  for f in ../../testdata/*.h264 ../../testdata/*.h265; do
    n=$(basename "$f"); n=${n%.*}
    head -c 12000 "$f" | (printf '\x03\x10\x40\x07'; cat) > "corpus/$t/$n-start"
    { printf '\x05\x01\x02\x03\x04\x05'; dd if="$f" bs=9000 skip=40000 count=1 iflag=skip_bytes status=none; } > "corpus/$t/$n-mid"
  done
done
# The A/V target: a video chunk, then an ADTS chunk, of each A/V stream.
mkdir -p corpus/av_pipeline
for n in av_48k_stereo av_44k_mono; do
  { printf '\x10\x00'; head -c 4000 "../../testdata/$n.h264"; printf '\x01'; head -c 2000 "../../testdata/$n.aac"; } > "corpus/av_pipeline/$n"
done
# Inputs a target once failed on (kept as regression tests beside the
# code that fixed them) seed its corpus too.
for d in ../../testdata/fuzz/*/; do
  t=$(basename "$d")
  mkdir -p "corpus/$t"
  cp "$d"* "corpus/$t/"
done
mkdir -p corpus/pts_aligner corpus/slice_request
printf '\x1e\x00\x02\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00' > corpus/pts_aligner/ibbp
# Regression: a first capture interval of centuries (was learned as a rate).
printf '\x02\x00\x00\x1e\x02\x7e\x31\x51\x00\x00\x1e\x00\x00\x1e\x00\x02\x05\x00\x00\x00\x00\x00\x00\xff\xff\x00\x00\x00\x00\x00' > corpus/pts_aligner/first-interval-jump
printf '\x0a\x04demo\x10\x1e' > corpus/slice_request/three-field
printf '\x0a\x04demo\x1a\x05\x00\x00\x00\x01\x67\x28\x01\x40\x01' > corpus/slice_request/publish

# The structured targets (`arbitrary`) take any bytes; pieces of a real
# stream give them NAL-like data to start from.
for t in cmaf_roundtrip ts_roundtrip manifest_edits; do
  mkdir -p "corpus/$t"
  for f in ../../testdata/baseline_30.h264 ../../testdata/high_bframes_30.h264; do
    n=$(basename "$f" .h264)
    head -c 3000 "$f" > "corpus/$t/$n-start"
    dd if="$f" bs=2000 skip=30000 count=1 iflag=skip_bytes status=none > "corpus/$t/$n-mid"
  done
done
mkdir -p corpus/http_parse corpus/config_load corpus/first_message
printf '/live/cam%%31/index.m3u8\x00token=lsv1%%3Aplay%%3Acam1\x00bytes=0-99\x00Bearer abc' > corpus/http_parse/path-query-range
printf '%%2e%%2e/seg-12.m4s?token=a+b&x=%%zz\x00bytes=-5,7-9' > corpus/http_parse/bad
printf -- '--window\n9\x00segment-duration = "4s"\nmax_sessions = 7\n' > corpus/config_load/flags-and-file
printf '\x00window = 0\nwindw = 3\n' > corpus/config_load/bad-keys
printf -- '--segment-duration\n10ms\n--shutdown-grace\n1.5s' > corpus/config_load/durations
printf '\x00auth-token = ["play:cam%%31:secret-token"]\nauth-secret = "0123456789abcdef"\nhttp-addr = "127.0.0.1:0"\n' > corpus/config_load/auth
cp corpus/slice_request/* corpus/first_message/
printf '\x0a\x04demo\x28\x01\x32\x05\x08\xe8\x07\x10\x06' > corpus/first_message/publish-options
printf '\x0a\x06cam%%31\x10\xe8\x07\x28\x02' > corpus/first_message/subscribe-encoded

for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::|#[0-9]+[[:space:]]+DONE|==|SUMMARY|Done|INFO: )" | grep -vE "INFO: (Loaded|seed|-max_len|A corpus|Running)" || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz target $t found a crash: see server/fuzz/artifacts/$t" >&2
    exit 1
  fi
done

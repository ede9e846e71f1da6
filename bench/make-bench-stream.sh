#!/usr/bin/env bash
# Makes the benchmark input: 60 s of 1280x720 at 30 fps, High profile with
# B-frames (x264 defaults: 3 B-frames, pyramid), keyframe every 2 s, as MP4
# (for ffmpeg's own muxers, which cannot time raw Annex B with B-frames) and
# as the same bytes in Annex B (for liveslice). Not committed (about 20 MB):
# benches and BENCH.md rows say to run this first.
set -euo pipefail
out=${1:-"$(dirname "$0")/../target/bench"}
mkdir -p "$out"
if [ ! -s "$out/720p30_bframes.h264" ]; then
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" -t 60 \
    -pix_fmt yuv420p -c:v libx264 -preset veryfast -profile:v high -bf 3 \
    -g 60 -keyint_min 60 -sc_threshold 0 -b:v 3M -maxrate 3M -bufsize 6M \
    -video_track_timescale 90000 "$out/720p30_bframes.mp4"
  ffmpeg -hide_banner -loglevel error -y -i "$out/720p30_bframes.mp4" -c copy \
    -bsf:v h264_mp4toannexb -f h264 "$out/720p30_bframes.h264"
fi
ls -l "$out"/720p30_bframes.*

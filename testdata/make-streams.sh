#!/usr/bin/env bash
# Makes the committed test streams in this folder. Needs ffmpeg/ffprobe with
# libx264 (Debian: apt-get install -y ffmpeg) and python3. The outputs are
# committed, so tests never run this; rerun it only to change the streams.
#
# Each clean stream is encoded into MP4 first (90 kHz track timescale), so that
# ffprobe reports its true decode and presentation times, and then copied out
# as raw Annex B. `NAME.packets.csv` holds ffprobe's packets in decode order:
# `pts,dts,flags` (K = keyframe) in 90 kHz ticks: the expected values our
# engine must reproduce (up to a constant offset) from the raw bytes alone.
set -euo pipefail
cd "$(dirname "$0")"

SRC="testsrc2=size=320x180"
enc() { # name rate seconds ffmpeg-args...
  local name=$1 rate=$2 secs=$3; shift 3
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$SRC:rate=$rate" -t "$secs" \
    -pix_fmt yuv420p -c:v libx264 -preset veryfast "$@" \
    -video_track_timescale 90000 "$name.mp4"
  ffmpeg -hide_banner -loglevel error -y -i "$name.mp4" -c copy -bsf:v h264_mp4toannexb -f h264 "$name.h264"
  ffprobe -v error -select_streams v:0 -show_entries packet=pts,dts,flags -of csv=p=0 "$name.mp4" \
    | sed 's/,$//' > "$name.packets.csv"
  rm -f "$name.mp4"
}

if [ "${1:-all}" = all ]; then
# Baseline profile, no B-frames, no AUD, 1 s GOP, SPS/PPS before every IDR.
enc baseline_30 30 6 -profile:v baseline -g 30 -keyint_min 30 -sc_threshold 0
# High profile, 3 B-frames with pyramid, AUDs, 2 s GOP.
enc high_bframes_30 30 6 -profile:v high -bf 3 -b_strategy 0 -g 60 -keyint_min 60 -sc_threshold 0 \
  -x264-params aud=1:b-pyramid=normal
# Main profile, 4 slices per frame, 2 B-frames, no AUD, 1 s GOP.
enc main_slices4_30 30 4 -profile:v main -bf 2 -b_strategy 0 -g 30 -keyint_min 30 -sc_threshold 0 \
  -x264-params slices=4:b-pyramid=none
# 29.97 fps, High, 2 B-frames, AUDs, 2 s GOP; SPS/PPS only at the very start
# (stripped from later IDRs) so the server must put them back.
enc high_2997 30000/1001 6 -profile:v high -bf 2 -b_strategy 0 -g 60 -keyint_min 60 -sc_threshold 0 \
  -x264-params aud=1

# A resolution change mid-stream: 2 s at 320x180, then 2 s at 256x144 (new
# SPS/PPS with the same ids), High with B-frames. 120 frames.
SRC="testsrc2=size=320x180" enc res_a 30 2 -profile:v high -bf 2 -b_strategy 0 -g 30 -keyint_min 30 -sc_threshold 0
SRC="testsrc2=size=256x144" enc res_b 30 2 -profile:v high -bf 2 -b_strategy 0 -g 30 -keyint_min 30 -sc_threshold 0
cat res_a.h264 res_b.h264 > res_change.h264
rm res_a.h264 res_b.h264 res_a.packets.csv res_b.packets.csv

python3 - <<'PY'
import random, re

def nal_spans(d):
    """(start_code_pos, nal_start, nal_end) for each NAL unit."""
    starts = [m.start() for m in re.finditer(b'\x00\x00\x01', d)]
    out = []
    for i, s in enumerate(starts):
        sc = s - 1 if s > 0 and d[s - 1] == 0 else s
        end = starts[i + 1] if i + 1 < len(starts) else len(d)
        if i + 1 < len(starts) and d[end - 1] == 0:
            end -= 1
        out.append((sc, s + 3, end))
    return out

def vcl_frames(d):
    """Frame k -> list of VCL NAL spans (first_mb_in_slice == 0 starts a frame)."""
    frames = []
    for sc, a, b in nal_spans(d):
        t = d[a] & 0x1f
        if t in (1, 5):
            if d[a + 1] & 0x80:  # ue(v) first_mb_in_slice == 0 is a single 1 bit
                frames.append([])
            frames[-1].append((sc, a, b))
    return frames

# SPS/PPS only at the start of high_2997.
d = open('high_2997.h264', 'rb').read()
out, seen = bytearray(), 0
for sc, a, b in nal_spans(d):
    t = d[a] & 0x1f
    if t in (7, 8):
        seen += 1
        if seen > 2:
            continue
    out += b'\x00\x00\x00\x01' + d[a:b]
open('high_2997.h264', 'wb').write(out)

base = open('baseline_30.h264', 'rb').read()
hb = open('high_bframes_30.h264', 'rb').read()

# Garbage in front: 1000 random bytes with no start code in them.
rnd = random.Random(7)
g = bytes(rnd.choice(range(2, 256)) for _ in range(1000))
open('damaged_garbage_prefix.h264', 'wb').write(g + base)

# A reference frame cut out: baseline frame 45 (a P-frame mid-GOP).
f = vcl_frames(base)
s, e = f[45][0][0], f[46][0][0]
open('damaged_cut_ref.h264', 'wb').write(base[:s] + base[e:])

# Bytes flipped: frame 100 of high_bframes gets forbidden_zero_bit set, and
# 200 bytes in the middle of frame 130's slice data are inverted.
f = vcl_frames(hb)
b = bytearray(hb)
b[f[100][0][1]] |= 0x80
sc, a, e = f[130][0]
mid = (a + e) // 2
for i in range(mid, min(mid + 200, e - 1)):
    b[i] ^= 0xFF
open('damaged_flipped.h264', 'wb').write(bytes(b))
PY

fi

# --- H.265/HEVC (issue 16), Debian's ffmpeg with libx265. `./make-streams.sh
# hevc` makes only these. Each has NAME.packets.csv (ffprobe's packets, as
# above) and NAME.expect.toml (what the engine must make of it, checked by
# server/tests/hevc_streams.rs). hevc_mp4toannexb puts VPS/SPS/PPS in front of
# every IRAP picture.
hevc() { # name rate seconds pix_fmt x265-params ffmpeg-args...
  local name=$1 rate=$2 secs=$3 pix=$4 params=$5; shift 5
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=320x180:rate=$rate" -t "$secs" \
    -pix_fmt "$pix" -c:v libx265 -preset veryfast -crf 32 -x265-params "log-level=error:$params" "$@" \
    -tag:v hvc1 -video_track_timescale 90000 "$name.mp4"
  ffmpeg -hide_banner -loglevel error -y -i "$name.mp4" -c copy -bsf:v hevc_mp4toannexb -f hevc "$name.h265"
  ffprobe -v error -select_streams v:0 -show_entries packet=pts,dts,flags -of csv=p=0 "$name.mp4" \
    | sed 's/,$//' > "$name.packets.csv"
  rm -f "$name.mp4"
}
# Renditions of one source (rendition_*): the same 6 s of testsrc2, scaled,
# with keyframes at the same times (every 1 s, no scene cuts), one with
# B-frames and two without (different composition shifts), and one whose
# keyframes are every 1.5 s (misaligned with the others at 2 s segments).
if [ "${1:-all}" = all ] || [ "${1:-all}" = renditions ]; then
rend() { # name size ffmpeg-args...
  local name=$1 size=$2; shift 2
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=640x360:rate=30" -t 6 \
    -vf "scale=$size" -pix_fmt yuv420p -c:v libx264 -preset veryfast -sc_threshold 0 "$@" \
    -video_track_timescale 90000 "$name.mp4"
  ffmpeg -hide_banner -loglevel error -y -i "$name.mp4" -c copy -bsf:v h264_mp4toannexb -f h264 "$name.h264"
  ffprobe -v error -select_streams v:0 -show_entries packet=pts,dts,flags -of csv=p=0 "$name.mp4" \
    | sed 's/,$//' > "$name.packets.csv"
  rm -f "$name.mp4"
}
rend rendition_360p 640x360 -profile:v high -bf 2 -b_strategy 0 -g 30 -keyint_min 30 -b:v 600k
rend rendition_270p 480x270 -profile:v main -bf 0 -g 30 -keyint_min 30 -b:v 300k
rend rendition_180p 320x180 -profile:v baseline -g 30 -keyint_min 30 -b:v 150k
rend rendition_misaligned 320x180 -profile:v baseline -g 45 -keyint_min 45 -b:v 150k
fi

if [ "${1:-all}" = all ] || [ "${1:-all}" = hevc ]; then
# Closed GOP, no B-frames: IDR_N_LP every 1 s, AUDs.
hevc hevc_closed_30 30 4 yuv420p keyint=30:min-keyint=30:scenecut=0:open-gop=0:bframes=0:aud=1
# Closed GOP with 3 B-frames (b-pyramid): IDR_W_RADL every 2 s, no AUDs.
hevc hevc_bframes_30 30 6 yuv420p keyint=60:min-keyint=60:scenecut=0:open-gop=0:bframes=3:b-adapt=0:b-pyramid=1
# Open GOP: one IDR, then a CRA every 1 s, each led by RASL pictures that
# reference the previous GOP; AUDs.
hevc hevc_open_gop_30 30 6 yuv420p keyint=30:min-keyint=30:scenecut=0:open-gop=1:bframes=3:b-adapt=0:aud=1:radl=0
# Main 10 (10-bit 4:2:0), B-frames, 29.97 fps, closed 1 s GOP.
hevc hevc_main10_2997 30000/1001 4 yuv420p10le keyint=30:min-keyint=30:scenecut=0:open-gop=0:bframes=2:b-adapt=0 \
  -profile:v main10
fi
[ "${1:-all}" = hevc ] && { ls -l; exit 0; }

# --- AAC audio (issue 16), Debian's ffmpeg with its native `aac` encoder.
# `./make-streams.sh audio` makes only these. A stream with audio is two
# files, NAME.h264 (raw Annex B, as above) and NAME.aac (ADTS), encoded
# together from one source so their timelines start together; the tests
# publish both tracks of one session. NAME.expect.toml says what the engine
# must make of them (checked by server/tests/audio.rs). ffmpeg's encoder
# writes one frame of priming first (N samples make ceil(N/1024)+1
# frames), so the audio source is 1,024 samples short of the video: the
# ADTS file then ends within one frame of the video's end.
av() { # name seconds rate video-filter video-args audio-source audio-args
  local name=$1 secs=$2 rate=$3 vsrc=$4 vargs=$5 asrc=$6 aargs=$7
  asrc="$asrc,atrim=end_sample=$((secs * rate - 1024))"
  # shellcheck disable=SC2086
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$vsrc" -f lavfi -i "$asrc" -t "$secs" \
    -map 0:v -pix_fmt yuv420p -c:v libx264 -preset veryfast $vargs \
    -map 1:a -c:a aac $aargs -video_track_timescale 90000 "$name.mp4"
  ffmpeg -hide_banner -loglevel error -y -i "$name.mp4" -map 0:v -c copy -bsf:v h264_mp4toannexb -f h264 "$name.h264"
  ffmpeg -hide_banner -loglevel error -y -i "$name.mp4" -map 0:a -c copy -f adts "$name.aac"
  rm -f "$name.mp4"
}
if [ "${1:-all}" = all ] || [ "${1:-all}" = audio ]; then
# 48 kHz stereo sine (a beep every second) with High-profile video, B-frames, 1 s GOP.
av av_48k_stereo 4 48000 "testsrc2=size=320x180:rate=30" \
  "-profile:v high -bf 2 -b_strategy 0 -g 30 -keyint_min 30 -sc_threshold 0 -crf 34 -x264-params aud=1" \
  "sine=frequency=440:beep_factor=4:sample_rate=48000,pan=stereo|c0=c0|c1=c0" "-b:a 96k -ar 48000 -ac 2"
# 44.1 kHz mono noise with Baseline video at 25 fps, 2 s GOP.
av av_44k_mono 4 44100 "testsrc2=size=320x180:rate=25" \
  "-profile:v baseline -g 50 -keyint_min 50 -sc_threshold 0 -crf 34" \
  "anoisesrc=color=pink:amplitude=0.3:sample_rate=44100:seed=7" "-b:a 64k -ar 44100 -ac 1"
# The demos' tone (`liveslice demo` and the server's --demo loop it with
# high_bframes_30.h264, a 6 s loop): 48 kHz mono, 440 Hz with a beep every
# second, exactly 24 s (1,125 frames with the priming frame) so that it
# loops in step with every fourth video loop.
ffmpeg -hide_banner -loglevel error -y -f lavfi \
  -i "sine=frequency=440:beep_factor=4:sample_rate=48000,atrim=end_sample=$((24 * 48000 - 1024))" \
  -c:a aac -b:a 32k -ar 48000 -ac 1 -f adts tone_48k_mono.aac
fi
[ "${1:-all}" = audio ] && { ls -l ./*.aac av_*; exit 0; }

if [ "${1:-all}" = all ] || [ "${1:-all}" = mp4 ]; then
# MP4 files for `publish`/`package` of a container. mp4_av_48k.mp4: 4 s of
# High video (B-frames: ctts, and an edit list that presents the first frame
# at 0) with 48 kHz stereo AAC (its priming frame before 0 in the audio edit
# list), progressive with the moov at the end; mp4_av_48k_frag.mp4: the same
# packets fragmented (empty moov, a moof per keyframe, default-base-is-moof);
# mp4_hevc_44k.mp4: H.265 with B-frames as hvc1 (parameter sets only in hvcC)
# and 44.1 kHz mono AAC. NAME.expect.toml holds what ffprobe reports.
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=320x180:rate=30" \
  -f lavfi -i "sine=frequency=440:beep_factor=4:sample_rate=48000,pan=stereo|c0=c0|c1=c0" -t 4 \
  -pix_fmt yuv420p -c:v libx264 -preset veryfast -profile:v high -bf 2 -b_strategy 0 -g 30 \
  -keyint_min 30 -sc_threshold 0 -crf 34 -c:a aac -b:a 96k -ac 2 -fflags +bitexact mp4_av_48k.mp4
ffmpeg -hide_banner -loglevel error -y -i mp4_av_48k.mp4 -c copy -fflags +bitexact \
  -movflags frag_keyframe+empty_moov+default_base_moof mp4_av_48k_frag.mp4
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=320x180:rate=30" \
  -f lavfi -i "anoisesrc=color=pink:amplitude=0.3:sample_rate=44100:seed=7" -t 3 \
  -pix_fmt yuv420p -c:v libx265 -preset veryfast -x265-params "bframes=3:keyint=30:min-keyint=30:scenecut=0:log-level=error" \
  -crf 34 -tag:v hvc1 -c:a aac -b:a 64k -ac 1 -fflags +bitexact mp4_hevc_44k.mp4
fi

if [ "${1:-all}" = all ] || [ "${1:-all}" = mp4 ] || [ "${1:-all}" = mp4-packets ]; then
# NAME.packets.csv of each MP4: its video packets as ffprobe reports them
# (edit list and ctts applied), in decode order, `pts,dts,flags` in 90 kHz
# ticks (converted exactly from the track's time base), like the raw
# streams' files: what `package` must reproduce up to a constant offset.
for name in mp4_av_48k mp4_av_48k_frag mp4_hevc_44k; do
  python3 - "$name" <<'PY'
import json, subprocess, sys
from fractions import Fraction
name = sys.argv[1]
out = subprocess.run(['ffprobe', '-v', 'error', '-select_streams', 'v:0', '-show_entries',
                      'packet=pts,dts,flags:stream=time_base', '-of', 'json', name + '.mp4'],
                     capture_output=True, check=True, text=True).stdout
j = json.loads(out)
tb = Fraction(j['streams'][0]['time_base'])
def ticks(v):
    t = int(v) * tb * 90000
    assert t.denominator == 1, (name, v, tb)
    return int(t)
with open(name + '.packets.csv', 'w') as f:
    for p in j['packets']:
        f.write(f"{ticks(p['pts'])},{ticks(p['dts'])},{p['flags']}\n")
PY
done
fi

if [ "${1:-all}" = all ] || [ "${1:-all}" = mp4 ]; then
for name in mp4_av_48k mp4_av_48k_frag mp4_hevc_44k; do
  python3 - "$name" <<'PY'
import json, subprocess, sys
name = sys.argv[1]
def packets(sel):
    out = subprocess.run(['ffprobe', '-v', 'error', '-select_streams', sel, '-show_entries',
                          'packet=pts_time,flags:stream=codec_name,sample_rate', '-of', 'json',
                          name + '.mp4'], capture_output=True, check=True, text=True).stdout
    j = json.loads(out)
    return j['streams'][0], j['packets']
vs, vp = packets('v')
as_, ap = packets('a')
start = min(float(p['pts_time']) for p in vp)
half = 512 / int(as_['sample_rate'])
placed = sum(1 for p in ap if float(p['pts_time']) + half >= start)
with open(name + '.expect.toml', 'w') as f:
    f.write(f"# testdata/{name}.mp4 as ffprobe reports it (made by make-streams.sh).\n")
    f.write(f"video_codec = \"{vs['codec_name']}\"\n")
    f.write(f"video_frames = {len(vp)}\n")
    f.write(f"video_keyframes = {sum(1 for p in vp if 'K' in p['flags'])}\n")
    f.write(f"audio_frames = {len(ap)}\n")
    f.write("# audio frames presented from the first video frame on (the rest is\n")
    f.write("# the encoder's priming, before the video)\n")
    f.write(f"audio_frames_from_video_start = {placed}\n")
    f.write(f"sample_rate = {as_['sample_rate']}\n")
PY
done
fi
[ "${1:-all}" = mp4 ] && { ls -l ./*.mp4*; exit 0; }

# --- Streams from real encoders (issue 9). Each has NAME.expect.json beside
# it: what liveslice must make of it (frames, segments, independence), checked
# by server/tests/real_streams.rs. `./make-streams.sh real` makes only these.

# Open GOP: x264 open-gop, keyframe every 1 s for 24 s. Only the first
# picture is an IDR; the others are non-IDR I pictures with a recovery-point
# SEI, followed by leading B-pictures that reference the previous GOP. x264
# also marks pictures of the previous GOP unused (memory-management commands)
# after some of these keyframes: a decoder that starts there, as ffmpeg does at
# the first listed segment, logs "mmco: unref short failure" for a picture it
# never had, and decodes every frame.
enc open_gop_30 30 24 -profile:v high -bf 3 -b_strategy 0 -g 30 -keyint_min 30 -sc_threshold 0 \
  -crf 38 -x264-params open-gop=1:aud=1:b-pyramid=none
# Periodic intra refresh: one IDR, then only recovery-point SEIs with
# recovery_frame_cnt > 0 (a column of intra macroblocks sweeps each second).
enc intra_refresh_30 30 10 -profile:v main -bf 0 -g 30 -keyint_min 30 -sc_threshold 0 \
  -crf 38 -x264-params intra-refresh=1:aud=1
# A GOP longer than the 2 s segment target that changes length mid-stream:
# keyframes at 0, 3, 6, 14 (an 8 s GOP: longer than the 6 s maximum segment
# duration, so one cut falls between random access points), then every 1 s.
enc gop_varying_30 30 20 -profile:v high -bf 2 -b_strategy 0 -g 1000 -keyint_min 1000 -sc_threshold 0 \
  -crf 38 -force_key_frames 0,3,6,14,15,16,17,18,19 -x264-params aud=1
# VUI says 15 fps; the test publishes it with capture times 1/30 s apart.
enc vui15 15 8 -profile:v baseline -g 15 -keyint_min 15 -sc_threshold 0 -crf 38
# 1080p Baseline with one slice per macroblock: 8,160 slices a picture.
SRC="color=c=gray:size=1920x1080" enc slice_per_mb_1080p 30 0.1 -profile:v baseline -g 30 -crf 40 \
  -x264-params slice-max-mbs=1

python3 - <<'PY'
import random, re

def nal_spans(d):
    starts = [m.start() for m in re.finditer(b'\x00\x00\x01', d)]
    out = []
    for i, s in enumerate(starts):
        sc = s - 1 if s > 0 and d[s - 1] == 0 else s
        end = starts[i + 1] if i + 1 < len(starts) else len(d)
        if i + 1 < len(starts) and d[end - 1] == 0:
            end -= 1
        out.append((sc, s + 3, end))
    return out

# First picture a non-IDR I with leading B-pictures: the open-GOP stream from
# its second keyframe (4 s of it), with the SPS/PPS kept and that first
# recovery-point SEI removed, so only the picture itself says it is intra.
d = open('open_gop_30.h264', 'rb').read()
spans = nal_spans(d)
params = [d[a:b] for _, a, b in spans if d[a] & 0x1f in (7, 8)][:2]
aud_idx = [i for i, (_, a, _) in enumerate(spans) if d[a] & 0x1f == 9]
# Access units start at AUDs; the second I picture's AU is the 31st AU in decode order.
def au_has_i(i):
    end = aud_idx[aud_idx.index(i) + 1] if aud_idx.index(i) + 1 < len(aud_idx) else len(spans)
    return any(d[spans[j][1]] & 0x1f == 6 and b'\x06' == d[spans[j][1] + 1:spans[j][1] + 2] for j in range(i, end))
starts = [i for i in aud_idx if au_has_i(i)]
first, stop = starts[0], starts[4]
first_end = next(i for i in aud_idx if i > first)
out = bytearray()
for j in range(first, stop):
    _, a, b = spans[j]
    t = d[a] & 0x1f
    if t == 6 and d[a + 1] == 6 and j < first_end:
        continue  # the first recovery-point SEI
    out += b'\x00\x00\x00\x01' + d[a:b]
    if t == 9 and j == first:
        for p in params:
            out += b'\x00\x00\x00\x01' + p
open('start_non_idr_i.h264', 'wb').write(bytes(out))

# Random bit flips at a rate of 1e-4 per bit over a clean High stream
# (seeded: the same flips every time).
hb = bytearray(open('high_bframes_30.h264', 'rb').read())
rnd = random.Random(1_0000)
for i in range(len(hb) * 8):
    if rnd.random() < 1e-4:
        hb[i // 8] ^= 1 << (i % 8)
open('damaged_bitflip_1e4.h264', 'wb').write(bytes(hb))
PY
ls -l

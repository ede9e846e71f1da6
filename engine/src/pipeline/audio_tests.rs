//! The audio side of the pipeline over the committed A/V test streams and
//! synthetic timings.

use std::sync::Arc;

use bytes::Bytes;

use super::super::{Event, PipelineOptions, SessionPipeline};
use super::{AudioInput, Tracks, AUDIO_WAIT};
use crate::audio::adts::AdtsHeader;
use crate::filter::DropReason;
use crate::frame::{AudioFrame, Frame, PartRecord, SegmentRecord, TIMESCALE};
use crate::pipeline::frames_of;

fn testdata(name: &str) -> Bytes {
    Bytes::from(
        std::fs::read(format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("testdata/{name}: {e}")),
    )
}

/// The ADTS frames of a file, each with its header.
fn adts_frames(data: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 7 <= data.len() {
        let h = AdtsHeader::parse(&data[pos..]).unwrap().unwrap();
        out.push(data.slice(pos..pos + h.frame_len));
        pos += h.frame_len;
    }
    out
}

/// What a pipeline made.
#[derive(Default)]
struct Out {
    frames: Vec<Arc<Frame>>,
    audio: Vec<Arc<AudioFrame>>,
    parts: Vec<Arc<PartRecord>>,
    segments: Vec<SegmentRecord>,
    drops: Vec<(DropReason, String)>,
    /// Event kinds in order: 'F' frame, 'A' audio, 'P' part, 'S' segment,
    /// 'C' audio config, 'D' discontinuity.
    order: String,
}

impl Out {
    fn take(&mut self, events: &mut Vec<Event>) {
        for e in events.drain(..) {
            match e {
                Event::Frame(f) => {
                    self.order.push('F');
                    self.frames.push(f)
                }
                Event::AudioFrame(f) => {
                    self.order.push('A');
                    self.audio.push(f)
                }
                Event::Part(p) => {
                    self.order.push('P');
                    self.parts.push(p)
                }
                Event::Segment(s) => {
                    self.order.push('S');
                    self.segments.push(s.record.clone())
                }
                Event::Dropped(d) => self.drops.push((d.reason, d.detail)),
                Event::AudioConfig(_) => self.order.push('C'),
                Event::Discontinuity => self.order.push('D'),
                _ => {}
            }
        }
    }
}

/// One timed input.
enum Unit {
    Video(Bytes, u64),
    Audio(Bytes, u64),
}

/// The video's access units and the audio's ADTS frames, interleaved by
/// their media time (ns); `audio_delay_ns` sends each audio frame that much
/// later than its time (its capture time stays).
fn interleave(video: &str, audio: &str, audio_delay_ns: i64) -> (Vec<Unit>, u32) {
    let v = frames_of(testdata(video), PipelineOptions::default());
    let a = adts_frames(&testdata(audio));
    let rate = AdtsHeader::parse(&a[0]).unwrap().unwrap().sample_rate();
    let mut units: Vec<(i64, Unit)> = Vec::new();
    let shift = v[0].pts - v[0].dts;
    for f in &v {
        // Presentation time of the frame (the first presented at 0).
        let t = (f.pts - shift) as i64 * 1_000_000_000 / TIMESCALE as i64;
        let send = f.dts as i64 * 1_000_000_000 / TIMESCALE as i64;
        units.push((send, Unit::Video(f.data.clone(), t as u64)));
    }
    for (n, f) in a.iter().enumerate() {
        let t = n as i64 * 1024 * 1_000_000_000 / i64::from(rate);
        units.push((t + audio_delay_ns, Unit::Audio(f.clone(), t as u64)));
    }
    units.sort_by_key(|(t, _)| *t);
    (units.into_iter().map(|(_, u)| u).collect(), rate)
}

const BASE_NS: u64 = 1_790_000_000_000_000_000;

fn publish(units: &[Unit], capture: bool, opts: PipelineOptions) -> (Out, SessionPipeline) {
    publish_into(SessionPipeline::new(opts), units, capture)
}

/// [`publish`] into a given pipeline (a resumed one).
fn publish_into(mut p: SessionPipeline, units: &[Unit], capture: bool) -> (Out, SessionPipeline) {
    let mut events = Vec::new();
    let mut out = Out::default();
    for u in units {
        match u {
            Unit::Video(d, t) => p.push(
                d.clone(),
                capture.then_some(BASE_NS + t),
                BASE_NS + t,
                true,
                &mut events,
            ),
            Unit::Audio(d, t) => p.push_audio(
                d.clone(),
                AudioInput::Adts,
                capture.then_some(BASE_NS + t),
                BASE_NS + t,
                &mut events,
            ),
        }
        out.take(&mut events);
    }
    p.finish(BASE_NS + 10_000_000_000, &mut events);
    out.take(&mut events);
    (out, p)
}

/// Every audio frame is in exactly one part and one segment, in order; the
/// spans tile the audio track; each frame sits on the side of each cut its
/// midpoint is on.
fn check_placement(out: &Out, rate: u32, expect_audio: usize) {
    assert_eq!(out.audio.len(), expect_audio, "audio frames out");
    // Numbered on from the first (0, or where a resumed session goes on).
    let base = out.audio.first().map_or(0, |f| f.index);
    for (i, f) in out.audio.iter().enumerate() {
        assert_eq!(f.index, base + i as u64);
        if i > 0 {
            assert_eq!(f.time, out.audio[i - 1].time + 1024, "frame {i} contiguous");
        }
    }
    let shift = u64::from(out.segments[0].composition_shift);
    for spans in [
        out.parts
            .iter()
            .map(|p| (p.segment, p.start, p.duration, p.audio.clone()))
            .collect::<Vec<_>>(),
        out.segments
            .iter()
            .map(|s| (s.sequence, s.start, s.duration, s.audio.clone()))
            .collect(),
    ] {
        let mut next = base;
        for (seg, start, duration, span) in &spans {
            let span = span.clone().expect("every part has audio");
            assert_eq!(span.first_frame_index, next, "spans follow each other");
            let at = (next - base) as usize;
            let mine = &out.audio[at..at + span.frame_count as usize];
            next += u64::from(span.frame_count);
            for f in mine {
                assert_eq!(f.segment, *seg);
            }
            if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
                assert_eq!(span.start, first.time);
                assert_eq!(span.duration, last.time + 1024 - first.time);
                // Midpoints within the part's video range (presentation:
                // decode times of the cuts).
                let mid = |f: &AudioFrame| (f.time * 2 + 1024) as u128 * u128::from(TIMESCALE);
                let lo = u128::from(*start) * 2 * u128::from(rate);
                let hi = u128::from(start + duration) * 2 * u128::from(rate);
                if *start > 0 {
                    assert!(mid(first) >= lo, "{seg}: first audio frame before the cut");
                }
                if spans.last().map(|l| l.0) != Some(*seg) {
                    assert!(mid(last) < hi, "{seg}: last audio frame after the cut");
                }
            }
            let _ = shift;
        }
        assert_eq!(
            (next - base) as usize,
            out.audio.len(),
            "every frame in a span"
        );
    }
}

#[test]
fn av_streams_without_capture_times() {
    for (video, audio, frames, audio_frames) in [
        ("av_48k_stereo.h264", "av_48k_stereo.aac", 120, 188),
        ("av_44k_mono.h264", "av_44k_mono.aac", 100, 173),
    ] {
        let (units, rate) = interleave(video, audio, 0);
        let (out, p) = publish(&units, false, PipelineOptions::default());
        assert_eq!(p.tracks(), Tracks::Video);
        assert_eq!(out.frames.len(), frames);
        assert!(out.drops.is_empty(), "{:?}", out.drops);
        check_placement(&out, rate, audio_frames);
        assert_eq!(p.audio_stats().frames, audio_frames as u64);
        assert_eq!(p.audio_stats().filled, 0);
        // Audio and video end within one audio frame of each other.
        let last = out.segments.last().unwrap();
        let v_end = last.start + last.duration;
        let a = last.audio.clone().unwrap();
        let a_end = a.end() as u128 * u128::from(TIMESCALE) / u128::from(rate);
        assert!(
            (a_end as i128 - v_end as i128).unsigned_abs()
                <= u128::from(1024 * TIMESCALE / u64::from(rate)),
            "{video}: audio ends at {a_end}, video at {v_end}"
        );
        // Each part's audio comes before it.
        assert!(!out.order.contains("PA") || out.order.matches('P').count() > 0);
    }
}

#[test]
fn any_chunking_of_adts_gives_the_same_audio() {
    let (units, rate) = interleave("av_48k_stereo.h264", "av_48k_stereo.aac", 0);
    let (whole, _) = publish(&units, false, PipelineOptions::default());
    // The audio in odd chunks (a frame and a half, then 7 bytes, ...).
    let mut chunked = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let sizes = [7usize, 1300, 3, 401];
    let mut k = 0;
    for u in units {
        match u {
            Unit::Audio(d, t) => {
                carry.extend_from_slice(&d);
                while carry.len() >= sizes[k % sizes.len()] {
                    let n = sizes[k % sizes.len()];
                    k += 1;
                    chunked.push(Unit::Audio(
                        Bytes::from(carry.drain(..n).collect::<Vec<_>>()),
                        t,
                    ));
                }
            }
            v => chunked.push(v),
        }
    }
    chunked.push(Unit::Audio(Bytes::from(carry), 0));
    let (out, _) = publish(&chunked, false, PipelineOptions::default());
    check_placement(&out, rate, 188);
    let data = |o: &Out| o.audio.iter().map(|f| f.data.clone()).collect::<Vec<_>>();
    assert_eq!(data(&out), data(&whole));
}

#[test]
fn capture_times_and_late_audio() {
    // Audio sent 300 ms after the video of the same time: the cuts wait
    // for it; nothing is lost, every frame is placed by its capture time.
    let (units, rate) = interleave("av_48k_stereo.h264", "av_48k_stereo.aac", 300_000_000);
    let (out, _) = publish(&units, true, PipelineOptions::default());
    assert!(out.drops.is_empty(), "{:?}", out.drops);
    check_placement(&out, rate, 188);
    // The first audio frame is presented with the first video frame.
    assert_eq!(out.audio[0].time, 0);
    assert_eq!(
        out.audio[0].pts,
        u64::from(out.segments[0].composition_shift)
    );
}

#[test]
fn audio_that_stalls_is_replaced_by_silence_and_the_late_frames_dropped() {
    // The audio of 1.0..1.5 s comes 2 s late.
    let (mut units, rate) = interleave("av_48k_stereo.h264", "av_48k_stereo.aac", 0);
    let late: Vec<usize> = units
        .iter()
        .enumerate()
        .filter(
            |(_, u)| matches!(u, Unit::Audio(_, t) if (1_000_000_000..1_500_000_000).contains(t)),
        )
        .map(|(i, _)| i)
        .collect();
    let n_late = late.len();
    let moved: Vec<Unit> = late.iter().rev().map(|i| units.remove(*i)).collect();
    let at = units
        .iter()
        .position(|u| matches!(u, Unit::Video(_, t) if *t >= 3_500_000_000))
        .unwrap();
    for u in moved.into_iter().rev() {
        units.insert(at, u);
    }
    let opts = PipelineOptions {
        part_target_ms: 500,
        ..Default::default()
    };
    let (out, p) = publish(&units, true, opts);
    // The late frames were dropped with a reason; silence took their place.
    let s = p.audio_stats();
    assert_eq!(s.frames_dropped, n_late as u64, "{:?}", out.drops);
    assert!(s.filled >= n_late as u64 - 1, "{s:?}");
    assert!(out
        .drops
        .iter()
        .any(|(r, d)| *r == DropReason::AudioTiming && d.contains("behind the video")));
    check_placement(&out, rate, 188 - n_late + s.filled as usize);
    assert!(out.audio.iter().any(|f| f.filler));
    let _ = AUDIO_WAIT;
}

/// Feeds 44.1 kHz ADTS frames `a` alone, captured in real time from
/// `BASE_NS`, and finishes: what came out (an audio-only session).
fn push_audio_only(p: &mut SessionPipeline, a: &[Bytes]) -> Out {
    let mut events = Vec::new();
    let mut out = Out::default();
    for (n, f) in a.iter().enumerate() {
        let t = n as u64 * 1024 * 1_000_000_000 / 44_100;
        p.push_audio(
            f.clone(),
            AudioInput::Adts,
            Some(BASE_NS + t),
            BASE_NS + t,
            &mut events,
        );
        out.take(&mut events);
    }
    p.finish(BASE_NS + 9_000_000_000, &mut events);
    out.take(&mut events);
    assert_eq!(p.tracks(), Tracks::AudioOnly);
    out
}

#[test]
fn audio_only_sessions_cut_on_audio_frames() {
    let a = adts_frames(&testdata("av_44k_mono.aac"));
    let mut p = SessionPipeline::new(PipelineOptions {
        part_target_ms: 500,
        ..Default::default()
    });
    let out = push_audio_only(&mut p, &a);
    assert_eq!(out.audio.len(), 173);
    assert!(out.frames.is_empty());
    // 2 s segments on frame boundaries: 87 frames (2.0201 s) each.
    let counts: Vec<u32> = out
        .segments
        .iter()
        .map(|s| s.audio.as_ref().unwrap().frame_count)
        .collect();
    assert_eq!(counts, vec![87, 86]);
    for s in &out.segments {
        assert_eq!(s.frame_count, 0);
        let a = s.audio.as_ref().unwrap();
        assert_eq!(s.start, a.start * 90_000 / 44_100);
    }
    for w in out.parts.windows(2) {
        let (a, b) = (w[0].audio.as_ref().unwrap(), w[1].audio.as_ref().unwrap());
        assert_eq!(a.end(), b.start);
        assert_eq!(w[0].start + w[0].duration, w[1].start);
    }
    // Video sent now is refused with a reason.
    let mut events = Vec::new();
    p = SessionPipeline::new(PipelineOptions::default());
    for (n, f) in a.iter().enumerate().take(100) {
        let t = n as u64 * 1024 * 1_000_000_000 / 44_100;
        p.push_audio(f.clone(), AudioInput::Adts, None, BASE_NS + t, &mut events);
    }
    events.clear();
    p.push(
        testdata("av_44k_mono.h264"),
        None,
        BASE_NS,
        false,
        &mut events,
    );
    let mut o = Out::default();
    o.take(&mut events);
    assert_eq!(o.drops[0].0, DropReason::NoVideoTrack, "{:?}", o.drops);
}

/// An audio-only session continued on another node (publisher failover):
/// the old availability start, the next segment, part and audio frame
/// numbers after one discontinuity, and the first frame on the sample grid
/// where the wall clock is on the old timeline, or at the old end when that
/// is later.
#[test]
fn a_resumed_audio_only_session_continues_on_the_old_timeline() {
    use super::super::ResumePoint;
    let a = adts_frames(&testdata("av_44k_mono.aac"));
    let start_ms = BASE_NS / 1_000_000 - 100_000;
    let run = |min_start: u64| {
        let point = ResumePoint {
            availability_start_ms: start_ms,
            next_segment: 41,
            discontinuity_sequence: 2,
            next_part: 171,
            next_frame: 0,
            next_audio_frame: 5000,
            next_config_id: 0,
            min_start,
            next_period_id: 4,
            all_independent: true,
            ..Default::default()
        };
        let mut p = SessionPipeline::resume(
            PipelineOptions {
                part_target_ms: 500,
                ..Default::default()
            },
            point,
        );
        let out = push_audio_only(&mut p, &a);
        assert_eq!(p.availability_start_ms(), Some(start_ms));
        (p, out)
    };
    // The publisher comes 100 s after the start, the old stream ended at
    // 98 s: the first frame goes at 100 s (on the 44.1 kHz grid).
    let (p, out) = run(98 * 90_000);
    assert_eq!(out.audio[0].index, 5000);
    assert!(out.audio.windows(2).all(|w| w[1].index == w[0].index + 1));
    assert_eq!(out.audio[0].time, 100 * 44_100);
    assert_eq!(out.parts[0].number, 171);
    assert_eq!(out.parts[0].segment, 41);
    let first = &out.segments[0];
    assert_eq!(first.sequence, 41);
    assert!(first.discontinuity);
    assert_eq!(first.discontinuity_sequence, 3);
    assert_eq!(first.start, 100 * 90_000);
    assert_eq!(first.audio.as_ref().unwrap().start, 100 * 44_100);
    assert_eq!(first.program_date_time_ms, start_ms + 100_000);
    assert!(out.segments[1..].iter().all(|s| !s.discontinuity));
    let hls = p.manifests().unwrap().hls_cmaf().render();
    assert!(hls.contains("#EXT-X-MEDIA-SEQUENCE:41\n"), "{hls}");
    assert!(hls.contains("#EXT-X-DISCONTINUITY\n"), "{hls}");
    // An old end past the wall clock (101.5 s): the first frame there,
    // rounded up to a whole sample.
    let (_, out) = run(101 * 90_000 + 45_000);
    assert_eq!(out.audio[0].time, 101 * 44_100 + 22_050);
    assert_eq!(out.segments[0].start, 101 * 90_000 + 45_000);
}

#[test]
fn bad_audio_is_dropped_with_a_reason_and_the_session_goes_on() {
    let (units, rate) = interleave("av_48k_stereo.h264", "av_48k_stereo.aac", 0);
    let mut p = SessionPipeline::new(PipelineOptions::default());
    let mut events = Vec::new();
    let mut out = Out::default();
    let mut n_audio = 0;
    for u in &units {
        match u {
            Unit::Video(d, t) => p.push(d.clone(), None, BASE_NS + t, true, &mut events),
            Unit::Audio(d, t) => {
                n_audio += 1;
                p.push_audio(d.clone(), AudioInput::Adts, None, BASE_NS + t, &mut events);
                if n_audio == 100 {
                    // A frame in another format (44.1 kHz mono), then
                    // garbage.
                    let mono = AdtsHeader::write(2, 4, 1, 4).unwrap();
                    let mut f = mono.to_vec();
                    f.extend_from_slice(&[0x01, 0x18, 0x20, 0x07]);
                    p.push_audio(Bytes::from(f), AudioInput::Adts, None, BASE_NS, &mut events);
                    p.push_audio(
                        Bytes::from_static(&[1, 2, 3, 0xFF, 0xF1, 9, 9, 9]),
                        AudioInput::Adts,
                        None,
                        BASE_NS,
                        &mut events,
                    );
                    // Raw frames without a config.
                    p.push_audio(
                        Bytes::from_static(&[0x21, 0x10]),
                        AudioInput::Raw { asc: Bytes::new() },
                        None,
                        BASE_NS,
                        &mut events,
                    );
                }
            }
        }
        out.take(&mut events);
    }
    p.finish(BASE_NS + 10_000_000_000, &mut events);
    out.take(&mut events);
    let reasons: Vec<&String> = out
        .drops
        .iter()
        .filter(|(r, _)| *r == DropReason::BadAudio)
        .map(|(_, d)| d)
        .collect();
    assert!(reasons.iter().any(|d| d.contains("skipped")), "{reasons:?}");
    assert!(
        reasons.iter().any(|d| d.contains("one audio format")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|d| d.contains("AudioSpecificConfig")),
        "{reasons:?}"
    );
    check_placement(&out, rate, n_audio);
    assert_eq!(out.frames.len(), 120);
}

#[test]
fn raw_frames_with_their_config() {
    let a = adts_frames(&testdata("av_48k_stereo.aac"));
    let (units, rate) = interleave("av_48k_stereo.h264", "av_48k_stereo.aac", 0);
    let mut p = SessionPipeline::new(PipelineOptions::default());
    let mut events = Vec::new();
    let mut out = Out::default();
    let asc = Bytes::from_static(&[0x11, 0x90]);
    for u in &units {
        match u {
            Unit::Video(d, t) => p.push(d.clone(), None, BASE_NS + t, true, &mut events),
            Unit::Audio(d, t) => p.push_audio(
                d.slice(7..),
                AudioInput::Raw { asc: asc.clone() },
                None,
                BASE_NS + t,
                &mut events,
            ),
        }
        out.take(&mut events);
    }
    p.finish(BASE_NS + 10_000_000_000, &mut events);
    out.take(&mut events);
    check_placement(&out, rate, a.len());
    assert_eq!(p.audio_config().unwrap().asc, asc);
}

/// Video at a camera's 29.97 fps against a declared 30, audio at 48 kHz on
/// a clock 80 ppm fast, both with capture-time jitter, for an hour: the
/// audio presented at any capture instant is within one audio frame of the
/// video presented at it.
#[test]
fn audio_stays_within_a_frame_of_the_video_for_an_hour() {
    use crate::audio::clock::{AudioClock, Slot};
    use crate::timing::{FrameRate, PtsAligner, TimingInput, TimingOptions};
    let mut video = PtsAligner::new(FrameRate::new(30, 1), 0, TimingOptions::default());
    let mut audio = AudioClock::new(48_000, 1024, 48_000 * 10);
    let mut x: u64 = 0x1234_5678;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let start = 1_700_000_000_000_000_000u64;
    let v_period = 1e9 / 29.97;
    let a_period = 1024.0 * 1e9 / (48_000.0 * (1.0 + 80e-6));
    let (mut vi, mut ai) = (0u64, 0u64);
    let mut last_video: Option<(f64, i64)> = None; // (capture ns, pts ticks)
    let mut max_err = 0f64;
    let hour = 3600e9;
    while (vi as f64) * v_period < hour {
        let vt = vi as f64 * v_period;
        let at = ai as f64 * a_period;
        if vt <= at {
            let c = start + vt as u64 + rnd(4_000_000);
            let t = video.next(TimingInput {
                poc: (vi % 60) as i64 * 2,
                poc_resets: vi % 60 == 0,
                order_by_poc: true,
                capture_ns: Some(c),
            });
            last_video = Some((vt, t.pts as i64));
            vi += 1;
        } else {
            let c = start + at as u64 + rnd(4_000_000);
            let target = video.capture_mapping().map(|(c0, t0)| {
                let t90 = t0 + ((c as i128 - c0 as i128) * 90_000 / 1_000_000_000) as i64;
                t90 * 48_000 / 90_000
            });
            if let Slot::Place { start: s, .. } = audio.place(target, 0) {
                // Compare with the video frame presented at the same
                // capture instant (interpolated from the last one).
                if let (Some((vt, vpts)), true) = (last_video, ai > 1000) {
                    let video_at = vpts as f64 + (at - vt) * 90e-6;
                    let audio_at = s as f64 * 90_000.0 / 48_000.0;
                    max_err = max_err.max((audio_at - video_at).abs());
                }
            }
            ai += 1;
        }
    }
    let frame_ticks = 1024.0 * 90_000.0 / 48_000.0;
    assert!(
        max_err <= frame_ticks,
        "A/V off by {max_err} ticks (a frame is {frame_ticks})"
    );
    assert!(audio.repairs().drift_slips > 5);
}

/// Muxes a publish's parts (TS with both tracks, CMAF video and audio
/// chunks) as the server does; returns (TS segments, CMAF audio segments).
fn mux_parts(units: &[Unit]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, bytes::Bytes) {
    use crate::mux::cmaf_audio::audio_init_segment;
    use crate::mux::parts::{cmaf_audio_segment_pieces, concat, ts_segment_pieces, PartMuxer};
    let mut p = SessionPipeline::new(PipelineOptions::default());
    let mut events = Vec::new();
    for u in units {
        match u {
            Unit::Video(d, t) => p.push(d.clone(), None, BASE_NS + t, true, &mut events),
            Unit::Audio(d, t) => {
                p.push_audio(d.clone(), AudioInput::Adts, None, BASE_NS + t, &mut events)
            }
        }
    }
    p.finish(BASE_NS + 10_000_000_000, &mut events);
    let mut muxer = PartMuxer::default();
    let (mut frames, mut audio, mut parts) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ts, mut cmaf_audio) = (Vec::new(), Vec::new());
    let mut cfg = None;
    let acfg = p.audio_config().cloned().unwrap();
    for e in events {
        match e {
            Event::Config(c) => cfg = Some(c),
            Event::Frame(f) => frames.push(f),
            Event::AudioFrame(f) => audio.push(f),
            Event::Part(rec) => {
                let fs: Vec<&Frame> = frames
                    .iter()
                    .filter(|f| {
                        f.index >= rec.first_frame_index
                            && f.index < rec.first_frame_index + u64::from(rec.frame_count)
                    })
                    .map(|f| f.as_ref())
                    .collect();
                let span = rec.audio.clone().unwrap();
                let a: Vec<&AudioFrame> = audio
                    .iter()
                    .filter(|f| {
                        f.index >= span.first_frame_index
                            && f.index < span.first_frame_index + u64::from(span.frame_count)
                    })
                    .map(|f| f.as_ref())
                    .collect();
                parts.push(
                    muxer
                        .mux_av(rec, &fs, cfg.as_deref(), Some((&a, &acfg)))
                        .expect("mux"),
                );
            }
            Event::Segment(s) => {
                let mine: Vec<_> = parts
                    .iter()
                    .filter(|p| p.record.segment == s.record.sequence)
                    .collect();
                ts.push(concat(&ts_segment_pieces(mine.iter().copied())).to_vec());
                cmaf_audio.push(concat(&cmaf_audio_segment_pieces(mine.iter().copied())).to_vec());
            }
            _ => {}
        }
    }
    (ts, cmaf_audio, audio_init_segment(&acfg).unwrap())
}

#[test]
fn ts_carries_both_tracks_and_every_audio_frame() {
    let (units, _) = interleave("av_48k_stereo.h264", "av_48k_stereo.aac", 0);
    let (ts, cmaf_audio, init) = mux_parts(&units);
    assert_eq!(ts.len(), 2);
    let all: Vec<u8> = ts.concat();
    assert_eq!(all.len() % 188, 0);
    // Count ADTS frames in the audio PID's payload.
    let mut audio_es = Vec::new();
    for p in all.chunks(188) {
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        if pid != 0x101 {
            continue;
        }
        let afc = (p[3] >> 4) & 3;
        let mut at = 4;
        if afc & 2 != 0 {
            at += 1 + usize::from(p[4]);
        }
        let mut payload = &p[at..];
        if p[1] & 0x40 != 0 {
            let hl = 9 + usize::from(payload[8]);
            assert_eq!(payload[3], 0xC0);
            payload = &payload[hl..];
        }
        audio_es.extend_from_slice(payload);
    }
    assert_eq!(adts_frames(&Bytes::from(audio_es)).len(), 188);
    if let Ok(dir) = std::env::var("LIVESLICE_DUMP") {
        std::fs::write(format!("{dir}/av.ts"), &all).unwrap();
        let mut mp4 = init.to_vec();
        for c in &cmaf_audio {
            mp4.extend_from_slice(c);
        }
        std::fs::write(format!("{dir}/audio.mp4"), mp4).unwrap();
    }
}

/// Audio that runs on while the video has stopped is held for at most the
/// longest segment, then dropped oldest first (memory stays bounded), and
/// every frame is still accounted for.
#[test]
fn audio_without_its_video_is_bounded() {
    let (units, _) = interleave("av_48k_stereo.h264", "av_48k_stereo.aac", 0);
    let a = adts_frames(&testdata("av_48k_stereo.aac"));
    let mut p = SessionPipeline::new(PipelineOptions::default());
    let mut events = Vec::new();
    // One second of both, then only audio (the whole file, ten times).
    for u in &units {
        match u {
            Unit::Video(d, t) if *t < 1_000_000_000 => {
                p.push(d.clone(), None, BASE_NS + t, true, &mut events)
            }
            Unit::Audio(d, t) if *t < 1_000_000_000 => {
                p.push_audio(d.clone(), AudioInput::Adts, None, BASE_NS + t, &mut events)
            }
            _ => {}
        }
    }
    for _ in 0..10 {
        for f in &a {
            p.push_audio(f.clone(), AudioInput::Adts, None, BASE_NS, &mut events);
        }
    }
    assert!(p.buffered() < 6 * 48_000 / 1024 * 400, "{}", p.buffered());
    let s = p.audio_stats();
    assert!(s.frames_dropped > 0);
    p.finish(BASE_NS, &mut events);
    let s = p.audio_stats();
    assert_eq!(s.frames_in, s.frames + s.frames_dropped, "{s:?}");
}

/// The resume point of a session that reached segment 41 with audio of
/// `aac`'s format (or audio-only), 100 s into its timeline.
fn resume_with_audio(aac: &str, audio_only: bool) -> super::super::ResumePoint {
    let first = adts_frames(&testdata(aac))[0].clone();
    let header = AdtsHeader::parse(&first).unwrap().unwrap();
    super::super::ResumePoint {
        availability_start_ms: BASE_NS / 1_000_000 - 100_000,
        next_segment: 41,
        discontinuity_sequence: 2,
        next_part: 171,
        next_frame: 3000,
        next_audio_frame: 5000,
        next_config_id: 1,
        min_start: 98 * TIMESCALE,
        next_period_id: 4,
        all_independent: true,
        audio: Some(Arc::new(crate::audio::config::from_adts(&header).unwrap())),
        audio_only,
        capture_lag_ms: None,
    }
}

/// A session continued from another node's copy that had audio keeps the
/// track when the new publisher sends video alone (as a publisher
/// reconnecting to the same server does): the format is told first,
/// silence fills every segment's audio on the old timeline and frame
/// numbering, and audio of another format is refused, not a second track.
#[test]
fn a_resumed_session_keeps_its_audio_track_when_the_publisher_sends_none() {
    let (units, _) = interleave("av_48k_stereo.h264", "av_48k_stereo.aac", 0);
    let mut video: Vec<Unit> = units
        .into_iter()
        .filter(|u| matches!(u, Unit::Video(..)))
        .collect();
    // One AAC frame of another format (44.1 kHz mono) among the video.
    let other = adts_frames(&testdata("av_44k_mono.aac"))[0].clone();
    video.insert(40, Unit::Audio(other, 1_300_000_000));
    let point = resume_with_audio("av_48k_stereo.aac", false);
    let format = point.audio.clone().unwrap();
    let opts = PipelineOptions {
        part_target_ms: 500,
        ..Default::default()
    };
    let (out, p) = publish_into(SessionPipeline::resume(opts, point), &video, true);
    assert!(out.order.starts_with('C'), "{}", out.order);
    assert_eq!(p.audio_config(), Some(&format));
    assert_eq!(p.tracks(), Tracks::Video);
    assert!(!out.segments.is_empty());
    assert_eq!(out.segments[0].sequence, 41);
    for s in &out.segments {
        let a = s.audio.as_ref().expect("every segment has its audio");
        assert!(a.frame_count > 0, "{s:?}");
    }
    assert!(out.audio.iter().all(|f| f.filler), "silence only");
    assert_eq!(out.audio[0].index, 5000);
    assert!(out.audio.windows(2).all(|w| w[1].index == w[0].index + 1));
    // Silence from the first video frame to the video's end (the last
    // segment's too): the stream's 4 s at 48 kHz, 188 AAC frames.
    let silence = out.audio.len();
    assert!(
        (186..=190).contains(&silence),
        "{silence} frames of silence"
    );
    let last = out.segments.last().unwrap();
    let audio = last.audio.as_ref().unwrap();
    let video_s = last.duration as f64 / TIMESCALE as f64;
    let audio_s = audio.duration as f64 / 48_000.0;
    assert!(
        (video_s - audio_s).abs() < 0.03,
        "the last segment's silence: {audio_s} s of {video_s} s"
    );
    assert_eq!(p.audio_stats().filled, silence as u64);
    let first_video = out.frames[0].pts;
    let first_audio = out.audio[0].pts;
    assert!(
        first_audio.abs_diff(first_video) <= 2,
        "the silence starts with the video: {first_audio} / {first_video}"
    );
    assert!(
        out.drops
            .iter()
            .any(|(r, d)| *r == DropReason::BadAudio && d.contains("one audio format")),
        "{:?}",
        out.drops
    );
    // Told once, as a notice: no frame was dropped for it.
    assert!(
        out.drops
            .iter()
            .any(|(r, d)| *r == DropReason::AudioTiming && d.contains("silence in its place")),
        "{:?}",
        out.drops
    );
    let timing = DropReason::ALL
        .iter()
        .position(|r| *r == DropReason::AudioTiming)
        .unwrap();
    assert_eq!(p.stats().dropped[timing], 0);
    check_placement(&out, 48_000, silence);
}

/// A session continued from an audio-only copy stays audio-only: video the
/// new publisher sends is dropped with `NO_VIDEO_TRACK` saying why, and
/// its audio goes on on the old timeline.
#[test]
fn a_resumed_audio_only_session_stays_audio_only() {
    let point = resume_with_audio("av_44k_mono.aac", true);
    let mut p = SessionPipeline::resume(
        PipelineOptions {
            part_target_ms: 500,
            ..Default::default()
        },
        point,
    );
    let video = frames_of(testdata("av_48k_stereo.h264"), PipelineOptions::default());
    let mut events = Vec::new();
    p.push(
        video[0].data.clone(),
        Some(BASE_NS),
        BASE_NS,
        true,
        &mut events,
    );
    let mut first = Out::default();
    first.take(&mut events);
    assert!(first.order.starts_with('C'), "{}", first.order);
    assert!(
        first
            .drops
            .iter()
            .any(|(r, d)| *r == DropReason::NoVideoTrack && d.contains("moved from")),
        "{:?}",
        first.drops
    );
    let a = adts_frames(&testdata("av_44k_mono.aac"));
    let out = push_audio_only(&mut p, &a);
    assert!(out.frames.is_empty());
    assert_eq!(out.audio.len(), a.len());
    assert_eq!(out.audio[0].index, 5000);
    assert_eq!(out.segments[0].sequence, 41);
    assert!(out.segments[0].discontinuity);
}

/// A segment's place on the wall clock (availability start plus its
/// start) less its program date time, ms: what HLS and DASH must keep
/// across a reconnect.
fn dash_less_pdt_ms(p: &SessionPipeline, s: &SegmentRecord) -> i64 {
    let avail = p.availability_start_ms().expect("a timeline") as i64;
    avail + (s.start * 1000 / TIMESCALE) as i64 - s.program_date_time_ms as i64
}

/// A publisher that vanishes and comes back 3 s later (same session, same
/// node): the outage is a gap on the timeline in both tracks, as on the
/// wall clock. The new stream's first frame goes where its capture time
/// (with the old stream's capture-clock lag), or without capture times its
/// arrival, puts it — so a segment's DASH time less its program date time
/// stays what it was — and its audio starts with it, in step, not in the
/// gap. (The timeline used to run on right after the old stream's last
/// frame: after the reconnect DASH time was the outage earlier than the
/// program date time, and the MPD announced segments before they existed.)
#[test]
fn a_reconnect_after_an_outage_leaves_the_gap_in_both_tracks() {
    const OUTAGE: u64 = 3_000_000_000;
    let (units, rate) = interleave("av_48k_stereo.h264", "av_48k_stereo.aac", 0);
    let v = frames_of(testdata("av_48k_stereo.h264"), PipelineOptions::default());
    let shift = v[0].pts - v[0].dts;
    let to_ns = |ticks: u64| ticks * 1_000_000_000 / TIMESCALE;
    // The new publisher starts at the first keyframe from 2 s on.
    let k = v
        .iter()
        .position(|f| f.is_keyframe && f.dts >= 2 * TIMESCALE)
        .expect("a keyframe after 2 s");
    let tk = to_ns(v[k].pts - shift);
    let kth_video = units
        .iter()
        .enumerate()
        .filter(|(_, u)| matches!(u, Unit::Video(..)))
        .nth(k)
        .map(|(i, _)| i)
        .unwrap();
    for capture in [true, false] {
        let opts = PipelineOptions {
            part_target_ms: 500,
            ..Default::default()
        };
        let mut p = SessionPipeline::new(opts);
        let mut out = Out::default();
        let send = |p: &mut SessionPipeline, out: &mut Out, u: &Unit, later: u64| {
            let mut events = Vec::new();
            match u {
                Unit::Video(d, t) => p.push(
                    d.clone(),
                    capture.then_some(BASE_NS + t + later),
                    BASE_NS + t + later,
                    true,
                    &mut events,
                ),
                Unit::Audio(d, t) => p.push_audio(
                    d.clone(),
                    AudioInput::Adts,
                    capture.then_some(BASE_NS + t + later),
                    BASE_NS + t + later,
                    &mut events,
                ),
            }
            out.take(&mut events);
        };
        for u in &units[..kth_video] {
            send(&mut p, &mut out, u, 0);
        }
        let mut events = Vec::new();
        p.reconnect(BASE_NS + tk + OUTAGE / 2, &mut events);
        out.take(&mut events);
        // The old publisher's segment in progress is listed as it will be
        // once complete: no discontinuity before its parts.
        let m = p.manifests().expect("manifests");
        let text = m.hls_ll(crate::playlist::HlsFlavour::Cmaf, false);
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        for u in &units[kth_video..] {
            if matches!(u, Unit::Audio(_, t) if *t < tk) {
                continue; // the old publisher's lost tail
            }
            send(&mut p, &mut out, u, OUTAGE);
        }
        p.finish(BASE_NS + 20_000_000_000, &mut events);
        out.take(&mut events);

        let at = out
            .segments
            .iter()
            .position(|s| s.discontinuity)
            .expect("the new stream's segment");
        let (old, new) = (&out.segments[at - 1], &out.segments[at]);
        // Announced once, after the old publisher's last segment and
        // before the new one's first frame.
        assert_eq!(out.order.matches('D').count(), 1, "{}", out.order);
        let d = out.order.find('D').unwrap();
        let frames_before = out.order[..d].matches('F').count();
        assert_eq!(
            frames_before,
            out.frames.iter().filter(|f| f.dts < new.start).count(),
            "{}",
            out.order
        );
        assert!(
            out.order[..d].ends_with('S') || out.order[..d].ends_with('A'),
            "{}",
            out.order
        );
        let gap = new.start - (old.start + old.duration);
        let outage = OUTAGE * TIMESCALE / 1_000_000_000;
        assert!(
            gap.abs_diff(outage) <= TIMESCALE / 30,
            "capture {capture}: a gap of {gap} ticks for an outage of {outage}"
        );
        // DASH time (availability start + segment start) less program date
        // time: the same on both sides of the reconnect.
        let lag = |s: &SegmentRecord| dash_less_pdt_ms(&p, s);
        for s in &out.segments {
            assert!(
                (lag(s) - lag(&out.segments[0])).abs() <= 2,
                "capture {capture}: segment {} lag {} ms, first {} ms",
                s.sequence,
                lag(s),
                lag(&out.segments[0])
            );
        }
        // Every audio frame either publisher sent is in a segment (the old
        // one's held audio went to its last segment).
        assert_eq!(
            p.audio_stats().frames_dropped,
            0,
            "capture {capture}: {:?}",
            out.drops
        );
        // Audio: numbered on, in order; none in the gap; the new stream's
        // first audio frame is where the new video puts it (in step).
        assert!(out.audio.windows(2).all(|w| w[1].index == w[0].index + 1));
        assert!(out.audio.windows(2).all(|w| w[1].time > w[0].time));
        let secs = |f: &AudioFrame| f.time as f64 / f64::from(rate);
        let video_secs = |pts: u64| (pts - shift) as f64 / TIMESCALE as f64;
        let old_end = video_secs(old.start + old.duration + shift);
        let new_start = video_secs(new.start + shift);
        let frame = 1024.0 / f64::from(rate);
        assert!(
            out.audio
                .iter()
                .all(|f| secs(f) < old_end + frame || secs(f) + frame > new_start),
            "capture {capture}: audio in the gap {old_end}..{new_start}"
        );
        let first_new = out
            .audio
            .iter()
            .find(|f| secs(f) + frame > new_start)
            .expect("audio after the reconnect");
        let first_video = out
            .frames
            .iter()
            .find(|f| f.dts >= new.start)
            .expect("video after the reconnect");
        let first_audio_t = units
            .iter()
            .find_map(|u| match u {
                Unit::Audio(_, t) if *t >= tk => Some(*t),
                _ => None,
            })
            .unwrap();
        let want = (first_audio_t as f64 - tk as f64) / 1e9;
        let got = secs(first_new) - video_secs(first_video.pts);
        assert!(
            (got - want).abs() <= frame,
            "capture {capture}: first new audio {got:.4} s after the first new video, \
             sent {want:.4} s after"
        );
    }
}

/// An audio-only session whose publisher comes back 3 s later: its audio
/// goes on after the gap, where its capture time (or arrival) puts it, so
/// a segment's DASH time less its program date time stays what it was.
#[test]
fn an_audio_only_reconnect_after_an_outage_leaves_the_gap() {
    const OUTAGE: u64 = 3_000_000_000;
    let a = adts_frames(&testdata("av_44k_mono.aac"));
    let half = a.len() / 2;
    let at = |n: usize| n as u64 * 1024 * 1_000_000_000 / 44_100;
    for capture in [true, false] {
        // 1 s segments: the session is known to be audio-only (a
        // segment's worth of audio and no video) before the outage.
        let mut p = SessionPipeline::new(PipelineOptions {
            part_target_ms: 500,
            segment_target_ms: 1000,
            ..Default::default()
        });
        let mut events = Vec::new();
        let mut out = Out::default();
        for (n, f) in a.iter().enumerate() {
            let later = if n < half { 0 } else { OUTAGE };
            if n == half {
                p.reconnect(BASE_NS + at(n) + OUTAGE / 2, &mut events);
            }
            let t = BASE_NS + at(n) + later;
            p.push_audio(
                f.clone(),
                AudioInput::Adts,
                capture.then_some(t),
                t,
                &mut events,
            );
            out.take(&mut events);
        }
        p.finish(BASE_NS + 20_000_000_000, &mut events);
        out.take(&mut events);
        assert_eq!(p.tracks(), Tracks::AudioOnly);
        assert_eq!(out.audio.len(), a.len(), "capture {capture}");
        let (before, after) = (&out.audio[half - 1], &out.audio[half]);
        let gap = after.time - (before.time + 1024);
        let want = OUTAGE * 44_100 / 1_000_000_000;
        assert!(
            gap.abs_diff(want) <= 1024,
            "capture {capture}: a gap of {gap} samples for an outage of {want}"
        );
        let d = out
            .segments
            .iter()
            .position(|s| s.discontinuity)
            .expect("the new stream's segment");
        let (old, new) = (&out.segments[d - 1], &out.segments[d]);
        assert!(new.start > old.start + old.duration, "capture {capture}");
        let lag = |s: &SegmentRecord| dash_less_pdt_ms(&p, s);
        assert!(
            (lag(old) - lag(new)).abs() <= 2,
            "capture {capture}: {old:?} {new:?}"
        );
    }
}

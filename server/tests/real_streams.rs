//! Streams from real encoders (testdata/make-streams.sh, "real" section):
//! open GOP, intra refresh, a stream that starts on a non-IDR I picture, a
//! GOP longer than the segment target that changes length, a VUI rate the
//! capture times contradict, one slice per macroblock at 1080p, random bit
//! flips. Each `testdata/NAME.expect.toml` says what the engine must make
//! of it; every manifest version along the way must be a legal successor
//! of the one before (common/history.rs), and every access unit must end
//! as a frame or a counted drop.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use common::history::History;
use liveslice_server::engine::pipeline::{PipelineOptions, PipelineStats, SessionPipeline};
use liveslice_server::engine::{DropReason, Event, Frame, SegmentRecord};

const NOW: u64 = 1_800_000_000_000_000_000;

/// What the engine made of one stream.
struct Outcome {
    frames: Vec<Arc<Frame>>,
    segments: Vec<SegmentRecord>,
    drops: BTreeMap<&'static str, u64>,
    stats: PipelineStats,
    timing_note: Option<String>,
    history: History,
}

/// Runs the engine over `chunks` (each with an optional capture time),
/// recording every manifest version.
fn run(
    name: &str,
    chunks: impl IntoIterator<Item = (Bytes, Option<u64>)>,
    opts: PipelineOptions,
) -> Outcome {
    let mut p = SessionPipeline::new(opts);
    let mut events = Vec::new();
    let mut out = Outcome {
        frames: Vec::new(),
        segments: Vec::new(),
        drops: BTreeMap::new(),
        stats: PipelineStats::default(),
        timing_note: None,
        history: History::default(),
    };
    let mut now = NOW;
    let handle = |p: &SessionPipeline, events: &mut Vec<Event>, out: &mut Outcome, now: u64| {
        for e in events.drain(..) {
            match e {
                Event::Frame(f) => out.frames.push(f),
                Event::Segment(s) => {
                    out.segments.push(s.record.clone());
                    record(p, out, now, name);
                }
                Event::Dropped(d) => {
                    *out.drops.entry(d.reason.as_str()).or_default() += d.count as u64
                }
                Event::Ended(_) => record(p, out, now, name),
                Event::Fatal(e) => panic!("{name}: fatal {e}"),
                Event::Config(_) => {}
            }
        }
    };
    for (chunk, capture) in chunks {
        now += 1_000_000;
        p.push(chunk, capture, now, false, &mut events);
        handle(&p, &mut events, &mut out, now);
    }
    p.finish(now, &mut events);
    handle(&p, &mut events, &mut out, now);
    out.stats = p.stats();
    out.timing_note = p.timing_note().map(str::to_owned);
    // No silent loss: every access unit is a frame or a counted drop.
    assert_eq!(
        out.stats.access_units,
        out.stats.frames + out.stats.frames_dropped,
        "{name}: access units unaccounted for ({:?})",
        out.stats
    );
    out
}

fn record(p: &SessionPipeline, out: &mut Outcome, now: u64, name: &str) {
    let Some(m) = p.manifests() else { return };
    out.history.record(
        &m.hls_cmaf().render(),
        &m.hls_ts().render(),
        &m.dash(now / 1_000_000).render(),
        name,
    );
}

fn opts() -> PipelineOptions {
    PipelineOptions {
        segment_target_ms: 2000,
        window: 6,
        ..Default::default()
    }
}

/// The stream as one chunk per 4 KiB (chunking must not matter).
fn chunks(data: &[u8]) -> Vec<(Bytes, Option<u64>)> {
    data.chunks(4096)
        .map(|c| (Bytes::copy_from_slice(c), None))
        .collect()
}

/// `testdata/NAME.expect.toml`.
fn expect(name: &str) -> toml::Table {
    let text = String::from_utf8(common::testdata(&format!("{name}.expect.toml"))).unwrap();
    text.parse()
        .unwrap_or_else(|e| panic!("{name}.expect.toml: {e}"))
}

fn int(t: &toml::Table, key: &str) -> u64 {
    t.get(key)
        .and_then(toml::Value::as_integer)
        .unwrap_or_else(|| panic!("expect key {key}")) as u64
}

fn ints(t: &toml::Table, key: &str) -> Vec<u64> {
    t.get(key)
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("expect key {key}"))
        .iter()
        .map(|v| v.as_integer().expect("integer") as u64)
        .collect()
}

/// Checks an outcome against the stored expectations: frames, drops by
/// reason, segment durations (ms, rounded), SAP types and independence.
fn check(name: &str, o: &Outcome) {
    let e = expect(name);
    let segs: Vec<u64> = o.segments.iter().map(|s| (s.duration + 45) / 90).collect();
    let saps: Vec<u64> = o.segments.iter().map(|s| u64::from(s.sap_type)).collect();
    let summary = format!(
        "frames = {}\nsegment_ms = {segs:?}\nsegment_sap = {saps:?}\ndrops = {:?}",
        o.frames.len(),
        o.drops
    );
    assert_eq!(
        o.frames.len() as u64,
        int(&e, "frames"),
        "{name}\n{summary}"
    );
    assert_eq!(segs, ints(&e, "segment_ms"), "{name}\n{summary}");
    assert_eq!(saps, ints(&e, "segment_sap"), "{name}\n{summary}");
    if let Some(d) = e.get("drops").and_then(toml::Value::as_table) {
        for (reason, n) in d {
            let got = o.drops.get(reason.as_str()).copied().unwrap_or(0);
            assert_eq!(
                got,
                n.as_integer().unwrap_or(-1) as u64,
                "{name}: {reason} drops\n{summary}"
            );
        }
        for (reason, n) in &o.drops {
            assert!(
                d.contains_key(*reason),
                "{name}: unexpected {n} {reason} drops\n{summary}"
            );
        }
    }
    for s in &o.segments {
        // Independent exactly when it starts with a keyframe (SAP 1-3).
        assert_eq!(
            s.keyframe_aligned,
            (1..=3).contains(&s.sap_type),
            "{name}: {s:?}"
        );
        let first = o
            .frames
            .iter()
            .find(|f| f.index == s.first_frame_index)
            .expect("first frame");
        assert_eq!(
            first.sap_type, s.sap_type,
            "{name}: segment {} first frame",
            s.sequence
        );
        // The segmenter's maximum (3 x 2 s) is never exceeded.
        assert!(
            s.duration <= 6 * 90_000,
            "{name}: segment {} too long",
            s.sequence
        );
    }
    // The HLS target duration never moved and covers every segment.
    let td: Vec<u64> = o
        .history
        .hls_cmaf
        .iter()
        .map(|h| h.target_duration)
        .collect();
    assert!(
        td.iter().all(|t| *t == 6),
        "{name}: target durations {td:?}"
    );
}

#[test]
fn open_gop_is_cut_at_its_recovery_points() {
    let o = run(
        "open_gop_30",
        chunks(&common::testdata("open_gop_30.h264")),
        opts(),
    );
    check("open_gop_30", &o);
    // Leading pictures after each open-GOP keyframe are kept (a continuous
    // viewer decodes them) and marked.
    let leading = o.frames.iter().filter(|f| f.is_leading).count();
    assert!(leading >= 23, "{leading} leading pictures marked");
    // Every keyframe carries its parameter sets.
    for f in o.frames.iter().filter(|f| f.is_keyframe) {
        let types: Vec<u8> = f.nals.iter().map(|n| n.nal_type(&f.data)).collect();
        assert!(
            types.contains(&7) && types.contains(&8),
            "frame {}",
            f.index
        );
    }
    assert!(
        o.history.hls_cmaf.len() > 10,
        "every segment published a version"
    );
    assert!(o.history.hls_cmaf.iter().all(|h| h.independent));
}

#[test]
fn intra_refresh_is_cut_at_refresh_starts_and_not_called_independent() {
    let o = run(
        "intra_refresh_30",
        chunks(&common::testdata("intra_refresh_30.h264")),
        opts(),
    );
    check("intra_refresh_30", &o);
    let last = o.history.hls_cmaf.last().expect("versions");
    assert!(!last.independent, "no EXT-X-INDEPENDENT-SEGMENTS");
    let mpd = o.history.dash.last().expect("versions");
    // No period claims a SAP type it cannot keep.
    assert!(mpd.periods.values().all(|p| p.start_with_sap.is_none()));
}

#[test]
fn a_stream_may_start_on_a_non_idr_i_picture() {
    let o = run(
        "start_non_idr_i",
        chunks(&common::testdata("start_non_idr_i.h264")),
        opts(),
    );
    check("start_non_idr_i", &o);
    assert!(o.frames[0].is_keyframe && o.frames[0].sap_type == 3);
    // Its leading pictures reference a GOP that never came: dropped.
    assert_eq!(o.drops.get("leading_picture"), Some(&1));
}

#[test]
fn a_gop_longer_than_the_target_that_changes_length() {
    let o = run(
        "gop_varying_30",
        chunks(&common::testdata("gop_varying_30.h264")),
        opts(),
    );
    check("gop_varying_30", &o);
}

#[test]
fn one_slice_per_macroblock_at_1080p_is_legal() {
    let o = run(
        "slice_per_mb_1080p",
        chunks(&common::testdata("slice_per_mb_1080p.h264")),
        opts(),
    );
    check("slice_per_mb_1080p", &o);
    assert!(o.frames.iter().all(|f| f.nals.len() >= 8160));
}

#[test]
fn bit_flips_lose_nothing_silently() {
    let data = common::testdata("damaged_bitflip_1e4.h264");
    let o = run("damaged_bitflip_1e4", chunks(&data), opts());
    check("damaged_bitflip_1e4", &o);
    // The accounting holds whatever the chunking.
    for size in [1, 188, 65536] {
        let c: Vec<_> = data
            .chunks(size)
            .map(|c| (Bytes::copy_from_slice(c), None))
            .collect();
        let again = run("damaged_bitflip_1e4", c, opts());
        assert_eq!(again.frames.len(), o.frames.len(), "chunk size {size}");
    }
}

/// The capture clock decides media time: a camera that writes 15 fps into
/// its VUI but sends 30 frames a second, with capture times, gets 30 fps
/// timestamps (and is told once).
#[test]
fn capture_times_overrule_a_wrong_vui_rate() {
    let data = common::testdata("vui15.h264");
    let frames = liveslice_server::engine::pipeline::frames_of(Bytes::from(data), opts());
    assert_eq!(frames.len(), 120);
    let start = 1_790_000_000_000_000_000u64;
    let chunks = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (f.data.clone(), Some(start + i as u64 * 1_000_000_000 / 30)));
    let o = run("vui15", chunks, opts());
    check("vui15", &o);
    let note = o.timing_note.expect("the mismatch is reported");
    assert!(note.contains("15") && note.contains("30"), "{note}");
    // Media time follows capture time within one frame, every frame.
    for (i, f) in o.frames.iter().enumerate() {
        let capture_ticks = i as u64 * 3000;
        let media = f.pts - o.frames[0].pts;
        assert!(
            media.abs_diff(capture_ticks) <= 3000,
            "frame {i}: {media} vs {capture_ticks}"
        );
    }
}

/// A publisher reconnect and a resolution change keep the manifest
/// history legal, and each DASH period describes its own stream.
#[test]
fn reconnect_and_resolution_change_never_rewrite_history() {
    let data = common::testdata("res_change.h264");
    let mut p = SessionPipeline::new(opts());
    let mut history = History::default();
    let mut events = Vec::new();
    let mut now = NOW;
    let rec = |p: &SessionPipeline, now: u64, h: &mut History| {
        if let Some(m) = p.manifests() {
            h.record(
                &m.hls_cmaf().render(),
                &m.hls_ts().render(),
                &m.dash(now / 1_000_000).render(),
                "res_change",
            );
        }
    };
    for round in 0..3 {
        for c in data.chunks(8192) {
            now += 5_000_000;
            p.push(Bytes::copy_from_slice(c), None, now, false, &mut events);
            if events.iter().any(|e| matches!(e, Event::Segment(_))) {
                rec(&p, now, &mut history);
            }
            events.clear();
        }
        if round < 2 {
            now += 3_000_000_000;
            p.reconnect(now, &mut events);
            rec(&p, now, &mut history);
            events.clear();
        }
    }
    p.finish(now, &mut events);
    rec(&p, now, &mut history);
    let mpd = history.dash.last().unwrap();
    assert!(!mpd.dynamic);
    // 320x180 and 256x144 periods, each with its own size.
    let sizes: Vec<(String, String)> = mpd
        .periods
        .values()
        .map(|p| (p.width.clone(), p.height.clone()))
        .collect();
    assert!(sizes.contains(&("320".into(), "180".into())), "{sizes:?}");
    assert!(sizes.contains(&("256".into(), "144".into())), "{sizes:?}");
    let stats = p.stats();
    assert_eq!(stats.access_units, stats.frames + stats.frames_dropped);
}

/// Every committed clean stream, too.
#[test]
fn committed_streams_keep_a_legal_manifest_history() {
    for name in [
        "baseline_30",
        "high_bframes_30",
        "main_slices4_30",
        "high_2997",
        "damaged_cut_ref",
        "damaged_flipped",
        "damaged_garbage_prefix",
    ] {
        let mut o = opts();
        o.segment_target_ms = 1000;
        o.window = 3;
        let out = run(name, chunks(&common::testdata(&format!("{name}.h264"))), o);
        assert!(out.history.hls_cmaf.len() >= 3, "{name}");
        // Segments only ever start at random access points.
        for s in &out.segments {
            assert!(s.sap_type != 0, "{name}: segment {} forced", s.sequence);
        }
        let _ = DropReason::ALL;
    }
}

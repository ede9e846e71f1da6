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
use liveslice_server::engine::playlist::HlsFlavour;
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
    /// A part lasted longer than its frames at the frame period (frames
    /// dropped, or a damaged picture order left a hole in the timeline): it
    /// may be longer than `PART-TARGET`.
    timeline_gaps: bool,
    /// The last frame's decode time and the smallest step seen.
    last_frame: Option<(u64, u64)>,
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
        timeline_gaps: false,
        last_frame: None,
    };
    let mut now = NOW;
    let handle = |p: &SessionPipeline, events: &mut Vec<Event>, out: &mut Outcome, now: u64| {
        // Drops are reported at the end of a push, after the parts they
        // lengthened: note them first.
        for e in events.iter() {
            match e {
                Event::Dropped(d) => {
                    *out.drops.entry(d.reason.as_str()).or_default() += d.count as u64
                }
                Event::Frame(f) => {
                    // The smallest decode-time step so far: the frame period.
                    if let Some((dts, step)) = out.last_frame {
                        let d = f.dts.saturating_sub(dts);
                        let step = if d > 0 && (step == 0 || d < step) {
                            d
                        } else {
                            step
                        };
                        out.last_frame = Some((f.dts, step));
                    } else {
                        out.last_frame = Some((f.dts, 0));
                    }
                }
                // A part that lasts longer than its frames at the frame
                // period spans a gap in the timeline.
                Event::Part(p) => {
                    if let Some((_, step)) = out.last_frame.filter(|(_, s)| *s > 0) {
                        out.timeline_gaps |=
                            p.duration > u64::from(p.frame_count) * step + step / 2;
                    }
                }
                _ => {}
            }
        }
        for e in events.drain(..) {
            match e {
                Event::Frame(f) => out.frames.push(f),
                Event::Segment(s) => {
                    out.segments.push(s.record.clone());
                    record(p, out, now, name);
                }
                Event::Dropped(_) => {}
                Event::Ended(_) => record(p, out, now, name),
                Event::Fatal(e) => panic!("{name}: fatal {e}"),
                Event::Part(_) | Event::Discontinuity => record_ll(p, out, now, name),
                Event::Config(_) | Event::AudioFrame(_) | Event::AudioConfig(_) => {}
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
    record_ll(p, out, now, name);
}

/// The low-latency renderings, as the origin serves them (once a segment
/// is listed), at every part and segment.
fn record_ll(p: &SessionPipeline, out: &mut Outcome, now: u64, name: &str) {
    let Some(m) = p.manifests() else { return };
    if m.segments().next().is_none() {
        return;
    }
    let gaps = out.timeline_gaps || !out.drops.is_empty();
    out.history.record_ll(
        &m.hls_ll(HlsFlavour::Cmaf, false),
        &m.hls_ll(HlsFlavour::Ts, false),
        name,
        gaps,
    );
    out.history
        .record_dash_ll(&m.dash_ll(now / 1_000_000), name);
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

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    /// Random bit flips anywhere in a stream with access unit delimiters:
    /// every access unit ends as a frame or a counted drop (`run` asserts
    /// it), and no two pictures merge silently: each flip can hide at most
    /// one picture boundary.
    #[test]
    fn bit_flips_never_merge_pictures_silently(
        flips in proptest::collection::vec((0usize..196_000, 0u8..8), 1..200),
        chunk in 1usize..20_000,
    ) {
        let mut data = common::testdata("high_bframes_30.h264");
        for (pos, bit) in &flips {
            let i = pos % data.len();
            data[i] ^= 1 << bit;
        }
        let c: Vec<_> = data.chunks(chunk).map(|c| (Bytes::copy_from_slice(c), None)).collect();
        let o = run("flipped", c, opts());
        proptest::prop_assert!(
            o.stats.access_units + flips.len() as u64 >= 180,
            "{} access units from 180 pictures with {} flips", o.stats.access_units, flips.len()
        );
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
            if m.segments().next().is_some() {
                h.record_ll(
                    &m.hls_ll(HlsFlavour::Cmaf, false),
                    &m.hls_ll(HlsFlavour::Ts, false),
                    "res_change",
                    false,
                );
                h.record_dash_ll(&m.dash_ll(now / 1_000_000), "res_change");
            }
        }
    };
    for round in 0..3 {
        for c in data.chunks(8192) {
            now += 5_000_000;
            p.push(Bytes::copy_from_slice(c), None, now, false, &mut events);
            if events
                .iter()
                .any(|e| matches!(e, Event::Segment(_) | Event::Part(_)))
            {
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
        // The low-latency playlists changed at every part (500 ms parts of
        // 1 s segments), and listed parts.
        assert!(
            out.history.hls_ll_cmaf.len() >= 2 * out.history.hls_cmaf.len() - 2,
            "{name}: {} low-latency versions",
            out.history.hls_ll_cmaf.len()
        );
        assert!(out
            .history
            .hls_ll_ts
            .iter()
            .all(|h| h.ended || !h.parts.is_empty()));
        assert!(out.history.dash_ll.iter().any(|m| m.low_latency));
        // Segments only ever start at random access points.
        for s in &out.segments {
            assert!(s.sap_type != 0, "{name}: segment {} forced", s.sequence);
        }
        let _ = DropReason::ALL;
    }
}

// ---- Over real gRPC and HTTP -------------------------------------------

use common::{client, collect, frame_info, frames, get, publish, start, subscribe, test_config};
use liveslice_proto::v1 as pb;
use std::time::Duration;

/// Publishes `data` in 16 KiB chunks while a subscriber follows from the
/// start; returns the subscriber's responses.
async fn publish_followed(
    server: &liveslice_server::app::Running,
    id: &str,
    data: &[u8],
) -> Vec<pb::SliceResponse> {
    let mut c = client(server).await;
    let mut sub_client = client(server).await;
    let id2 = id.to_string();
    let follower = tokio::spawn(async move {
        let mut s = subscribe(&mut sub_client, &id2, true, 0)
            .await
            .expect("subscribe");
        collect(&mut s, Duration::from_secs(60)).await
    });
    // The subscriber waits for the session; give it time to be waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut p = publish(&mut c, id, Default::default())
        .await
        .expect("publish");
    p.send_chunked(data, &[16 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let _ = collect(&mut p.responses, Duration::from_secs(60)).await;
    let (responses, status) = follower.await.expect("follower");
    assert!(status.is_none(), "{id}: {status:?}");
    responses
}

/// Segment sequences an HLS playlist lists.
fn listed(playlist: &str) -> Vec<u64> {
    common::history::parse_hls(playlist)
        .segments
        .iter()
        .map(|s| s.0)
        .collect()
}

/// gRPC and HTTP agree on which frames are deliverable, and ffmpeg decodes
/// every HTTP flavour from the first listed segment with zero errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_agree_and_every_flavour_decodes_from_the_first_listed_segment() {
    let ffmpeg = common::have_ffmpeg("real streams decoded from HTTP");
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    for name in [
        "open_gop_30",
        "intra_refresh_30",
        "start_non_idr_i",
        "gop_varying_30",
        "slice_per_mb_1080p",
        "damaged_bitflip_1e4",
    ] {
        let data = common::testdata(&format!("{name}.h264"));
        let responses = publish_followed(&server, name, &data).await;
        let grpc: Vec<&pb::FrameInfo> = frames(&responses).into_iter().map(frame_info).collect();
        let want = int(&expect(name), "frames") as usize;
        assert_eq!(grpc.len(), want, "{name}: frames over gRPC");
        let (status, _, body) = get(&format!("{base}/live/{name}/index.m3u8")).await;
        assert_eq!(status, 200, "{name}");
        let playlist = String::from_utf8(body).unwrap();
        let seqs = listed(&playlist);
        // What a viewer starting at the first listed segment can show: its
        // frames, less the leading pictures of the keyframe it starts at
        // (exactly what a gRPC subscriber joining there is sent).
        let first_seq = seqs[0];
        let start_pts = grpc
            .iter()
            .find(|f| f.segment_sequence == first_seq)
            .map_or(0, |f| f.pts_90k);
        let deliverable = grpc
            .iter()
            .filter(|f| seqs.contains(&f.segment_sequence))
            .filter(|f| !(f.segment_sequence == first_seq && f.is_leading && f.pts_90k < start_pts))
            .count();
        assert!(deliverable > 0, "{name}");
        if !ffmpeg {
            continue;
        }
        for path in ["index.m3u8", "ts/index.m3u8", "manifest.mpd"] {
            let url = format!("{base}/live/{name}/{path}");
            let (decoded, errors) =
                tokio::task::spawn_blocking(move || common::ffmpeg_frames(&url))
                    .await
                    .unwrap();
            // x264's open GOP marks pictures of the previous GOP unused
            // after some keyframes (make-streams.sh): a decoder that starts
            // at one logs that it never had them. Nothing else may appear.
            // The bit-flipped stream is damaged inside entropy-coded slice
            // data, which only a decoder can see: ffmpeg conceals those
            // macroblocks. Nothing else may appear.
            let errors: Vec<&str> = errors
                .lines()
                .filter(|l| !(name == "open_gop_30" && l.ends_with("mmco: unref short failure")))
                .filter(|l| {
                    !(name.starts_with("damaged_")
                        && [
                            "error while decoding MB",
                            "cabac decode of",
                            "block unavailable for requested intra",
                        ]
                        .iter()
                        .any(|m| l.contains(m)))
                })
                .collect();
            assert!(errors.is_empty(), "{name} {path}: ffmpeg errors {errors:?}");
            // A gradual-refresh start is shown only once the refresh has
            // swept the picture: ffmpeg counts from its recovery point.
            if name != "intra_refresh_30" || seqs.first() == Some(&0) {
                assert_eq!(
                    decoded, deliverable,
                    "{name} {path}: frames over HTTP vs gRPC"
                );
            } else {
                assert!(decoded > 0 && decoded <= deliverable, "{name} {path}");
            }
        }
    }
    server.shutdown().await;
}

/// An open-GOP stream is segmented live: playlists are served while the
/// publisher is still sending, and a viewer joining mid-stream starts at
/// the newest random access point (not at frame 0), without the leading
/// pictures it cannot decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_gop_plays_live_and_late_joiners_start_near_the_live_edge() {
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    let data = common::testdata("open_gop_30.h264");
    let mut c = client(&server).await;
    // The rest of the stream goes faster than real time: a window that
    // holds all of it, so the late joiner is never passed by eviction
    // (and resumed at a later keyframe, with a second leading picture).
    let options = pb::PublishOptions {
        window_segments: 30,
        ..Default::default()
    };
    let p = publish(&mut c, "og", options).await.expect("publish");
    // The first 8 s or so (a third of the bytes), then stop sending.
    let third = data.len() / 3;
    p.send_chunked(&data[..third], &[16 * 1024]).await;
    // The third of the stream sent holds about four 2 s segments' worth.
    let mut live = None;
    for _ in 0..100 {
        let (status, _, body) = get(&format!("{base}/live/og/index.m3u8")).await;
        if status == 200 {
            let h = common::history::parse_hls(&String::from_utf8(body).unwrap());
            if h.segments.len() >= 2 {
                live = Some(h);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live = live.expect("the playlist is served while the publisher sends");
    assert!(!live.ended, "{live:?}");
    for path in ["ts/index.m3u8", "manifest.mpd"] {
        assert_eq!(
            get(&format!("{base}/live/og/{path}")).await.0,
            200,
            "{path}"
        );
    }

    // A late joiner.
    let mut c2 = client(&server).await;
    let mut s = subscribe(&mut c2, "og", true, 0).await.expect("subscribe");
    let mut first = None;
    let mut info = None;
    let mut leading_dropped = 0;
    let rest = data[third..].to_vec();
    let sender = tokio::spawn(async move {
        p.send_chunked(&rest, &[16 * 1024]).await;
        p.end().await;
        p
    });
    let (responses, _) = collect(&mut s, Duration::from_secs(30)).await;
    let _p = sender.await.unwrap();
    for r in &responses {
        match &r.event {
            Some(pb::slice_response::Event::SessionInfo(i)) if info.is_none() => {
                info = Some(i.clone())
            }
            Some(pb::slice_response::Event::Frame(f)) if first.is_none() => {
                first = Some((*f, r.is_keyframe))
            }
            Some(pb::slice_response::Event::FrameDropped(d))
                if d.reason == pb::DropReason::LeadingPicture as i32 =>
            {
                leading_dropped += d.count
            }
            _ => {}
        }
    }
    let (f, is_keyframe) = first.expect("frames");
    assert!(
        is_keyframe && f.random_access,
        "starts at a random access point"
    );
    assert!(
        f.index >= 150,
        "starts near the live edge, not at frame {}",
        f.index
    );
    assert_eq!(f.sap_type, 3, "an open-GOP keyframe");
    assert_eq!(info.expect("info").start_frame_index, f.index);
    // No frame it receives precedes its first frame in presentation.
    for r in frames(&responses) {
        assert!(
            frame_info(r).pts_90k >= f.pts_90k,
            "leading picture delivered"
        );
    }
    // Its keyframe's one leading picture was skipped, and it was told.
    assert_eq!(leading_dropped, 1, "FrameDropped LEADING_PICTURE");
    server.shutdown().await;
}

/// A camera whose VUI says 15 fps but which sends 30 frames a second with
/// capture times: SessionInfo says the VUI was overruled, and the frames
/// are 1/30 s apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_info_reports_an_overruled_vui_rate() {
    let server = start(test_config()).await;
    let frames_in = liveslice_server::engine::pipeline::frames_of(
        Bytes::from(common::testdata("vui15.h264")),
        opts(),
    );
    let mut c = client(&server).await;
    let mut p = publish(&mut c, "vui", Default::default())
        .await
        .expect("publish");
    let start_ns = liveslice_server::session::now_unix_ns();
    for (i, f) in frames_in.iter().enumerate() {
        p.tx.send(pb::SliceRequest {
            data: f.data.clone(),
            capture_time_ns: Some(start_ns + i as u64 * 1_000_000_000 / 30),
            end_of_access_unit: true,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // Once the server has made a segment of it, a subscriber joins.
    loop {
        let m = p
            .responses
            .message()
            .await
            .unwrap()
            .expect("publisher stream");
        if matches!(m.event, Some(pb::slice_response::Event::SegmentReady(_))) {
            break;
        }
    }
    let mut c2 = client(&server).await;
    let mut s = subscribe(&mut c2, "vui", true, 0).await.expect("subscribe");
    let first = s.message().await.unwrap().unwrap();
    match first.event {
        Some(pb::slice_response::Event::SessionInfo(i)) => {
            assert!(i.timing_note.contains("15 fps"), "{}", i.timing_note);
            assert_eq!((i.frame_rate_num, i.frame_rate_den), (30, 1));
        }
        other => panic!("{other:?}"),
    }
    p.end().await;
    server.shutdown().await;
}

/// After a publisher reconnects, EXT-X-PROGRAM-DATE-TIME is the capture
/// time of each segment's first frame, not media time since the start, and
/// the DASH timeline keeps the same relation to it (the outage is a gap on
/// both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_date_time_follows_capture_time_across_a_reconnect() {
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    let frames_in = liveslice_server::engine::pipeline::frames_of(
        Bytes::from(common::testdata("baseline_30.h264")),
        opts(),
    );
    let t0 = liveslice_server::session::now_unix_ns() - 20_000_000_000;
    // First publisher, through a proxy: capture times from t0; then its
    // connection breaks (a vanished peer, not an end of stream).
    let proxy = common::CutProxy::start(server.grpc_addr).await;
    let mut c = proxy.client().await;
    let p = publish(&mut c, "pdt", Default::default())
        .await
        .expect("publish");
    for (i, f) in frames_in.iter().enumerate() {
        p.send_at(f.data.clone(), t0 + i as u64 * 1_000_000_000 / 30)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // It comes back 3 s (of capture time) after its last frame.
    let t1 = t0 + 9_000_000_000;
    let mut c = client(&server).await;
    let p = publish(&mut c, "pdt", Default::default())
        .await
        .expect("reconnect");
    for (i, f) in frames_in.iter().enumerate() {
        p.send_at(f.data.clone(), t1 + i as u64 * 1_000_000_000 / 30)
            .await;
    }
    p.end().await;
    drop(p.tx);
    let mut ok = false;
    for _ in 0..50 {
        let (_, _, body) = get(&format!("{base}/live/pdt/index.m3u8")).await;
        let text = String::from_utf8(body).unwrap();
        if text.contains("#EXT-X-ENDLIST") {
            // The first segment after the discontinuity starts at t1.
            let after = text
                .split("#EXT-X-DISCONTINUITY\n")
                .nth(1)
                .expect("discontinuity");
            let pdt = after
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
                .expect("PDT");
            let want = liveslice_server::engine::playlist::iso8601_ms(t1 / 1_000_000);
            assert_eq!(pdt, want, "{text}");
            // The outage is a gap on the DASH timeline too: from the old
            // stream's last segment to the new one's first, the program
            // date times and the MPD's times advance alike.
            let (_, _, mpd) = get(&format!("{base}/live/pdt/manifest.mpd")).await;
            let mpd = String::from_utf8(mpd).unwrap();
            let (hls_ms, dash_ms) = common::history::gap_across_discontinuity_ms(&text, &mpd);
            assert!(
                (hls_ms - dash_ms).abs() <= 3,
                "HLS {hls_ms} ms, DASH {dash_ms} ms\n{text}\n{mpd}"
            );
            assert!(hls_ms > 3_000, "{text}");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the session ended");
    server.shutdown().await;
}

/// A small `--ring-bytes`: segments are cut at a third of it and the window
/// trimmed, whole segments at a time, so every segment a playlist lists is
/// served in full, and a late joiner still gets frames at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_ring_never_lists_a_segment_whose_bytes_are_gone() {
    let mut config = test_config();
    config.session.ring_max_bytes = 120_000;
    let server = start(config).await;
    let base = format!("http://{}", server.http_addr);
    let data = common::testdata("gop_varying_30.h264");
    let mut c = client(&server).await;
    let p = publish(&mut c, "ring", Default::default())
        .await
        .expect("publish");
    p.send_chunked(&data[..data.len() / 2], &[16 * 1024]).await;
    // A late joiner mid-stream gets frames, starting at a random access point.
    let mut c2 = client(&server).await;
    let mut s = subscribe(&mut c2, "ring", false, 0)
        .await
        .expect("subscribe");
    let first = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a frame at once")
        .unwrap()
        .unwrap();
    assert!(first.is_keyframe && !first.data.is_empty());
    drop(s);
    p.send_chunked(&data[data.len() / 2..], &[16 * 1024]).await;
    p.end().await;
    let mut p = p;
    let _ = collect(&mut p.responses, Duration::from_secs(30)).await;
    for (playlist, ext) in [("index.m3u8", "m4s"), ("ts/index.m3u8", "ts")] {
        let (status, _, body) = get(&format!("{base}/live/ring/{playlist}")).await;
        assert_eq!(status, 200);
        let text = String::from_utf8(body).unwrap();
        let h = common::history::parse_hls(&text);
        assert!(h.ended && !h.segments.is_empty(), "{text}");
        let mut total = 0;
        for (seq, uri, ..) in &h.segments {
            let dir = if ext == "ts" { "ts/" } else { "" };
            let (status, _, body) = get(&format!("{base}/live/ring/{dir}{uri}")).await;
            assert_eq!(status, 200, "segment {seq} is listed, so it is served");
            total += body.len();
        }
        // The listed window fits the ring.
        if ext == "m4s" {
            assert!(total <= 120_000, "{total} bytes listed");
        }
    }
    server.shutdown().await;
}

/// A publisher that reconnects mid-GOP (B-frame streams: pictures of the
/// old stream were still waiting for their decode slot) and resumes at
/// its next keyframe: the new stream's frames decode on their own grid,
/// after the old stream's last picture is presented (and the outage) — its first
/// segment lasts exactly its frames, its first picture is the composition
/// shift after its decode time, decode times keep increasing, and the old
/// stream's last segment ends with its last frame. (The new stream's
/// first decode time used to be taken from the old stream's pending
/// pictures: its first frame, and segment, one frame long.)
#[test]
fn a_reconnect_mid_gop_starts_the_new_stream_on_its_own_decode_grid() {
    use liveslice_server::engine::pipeline::frames_of;
    use liveslice_server::engine::TIMESCALE;
    for name in ["av_48k_stereo", "high_bframes_30"] {
        let v = frames_of(
            common::testdata(&format!("{name}.h264")).into(),
            PipelineOptions::default(),
        );
        let mut p = SessionPipeline::new(opts());
        let mut events = Vec::new();
        let ns = |t: u64| t * 1_000_000_000 / TIMESCALE;
        let cut = 75;
        for f in &v[..cut] {
            p.push(
                f.data.clone(),
                Some(NOW + ns(f.pts)),
                NOW + ns(f.dts),
                true,
                &mut events,
            );
        }
        let gap = 1_000_000_000;
        p.reconnect(NOW + ns(v[cut].dts) + gap / 2, &mut events);
        let k = cut
            + v[cut..]
                .iter()
                .position(|f| f.is_keyframe)
                .expect("a keyframe");
        for f in &v[k..] {
            let (c, at) = (NOW + ns(f.pts) + gap, NOW + ns(f.dts) + gap);
            p.push(f.data.clone(), Some(c), at, true, &mut events);
        }
        p.finish(NOW + 60_000_000_000, &mut events);
        let frames = common::frames_in(&events);
        let segments = common::segments_in(&events);
        let shift = u64::from(segments[0].composition_shift);
        let first_new = frames
            .iter()
            .position(|f| f.index as usize == cut)
            .expect("the new stream's first frame");
        let f = &frames[first_new];
        assert!(f.is_keyframe, "{name}");
        assert_eq!(f.pts - f.dts, shift, "{name}: pts {} dts {}", f.pts, f.dts);
        assert!(
            frames.windows(2).all(|w| w[1].dts > w[0].dts),
            "{name}: decode times increase"
        );
        let at = segments
            .iter()
            .position(|s| s.discontinuity)
            .expect("the new stream's segment");
        let (old, new) = (&segments[at - 1], &segments[at]);
        assert_eq!(new.start, f.dts, "{name}");
        let period = TIMESCALE / 30;
        // The old stream's last segment ends with its last frame; the new
        // one starts after the outage, where its capture times put it: a
        // segment's wall-clock place less its program date time is the
        // same on both sides.
        let last_old = &frames[first_new - 1];
        assert_eq!(
            old.start + old.duration,
            last_old.dts + period,
            "{name}: {old:?} {new:?}"
        );
        assert!(new.start > old.start + old.duration + period, "{name}");
        let avail = p.availability_start_ms().expect("a timeline") as i64;
        let lag = |s: &SegmentRecord| {
            avail + (s.start * 1000 / TIMESCALE) as i64 - s.program_date_time_ms as i64
        };
        assert!((lag(old) - lag(new)).abs() <= 2, "{name}: {old:?} {new:?}");
        assert_eq!(
            new.duration,
            u64::from(new.frame_count) * period,
            "{name}: {new:?}"
        );
    }
}

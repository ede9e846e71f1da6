//! Renditions of one session: a rendition joining the others goes on their
//! timeline and takes their segment numbers, so segment N of every
//! rendition starts at the same time. The engine on the committed
//! `testdata/rendition_*` streams (one source, scaled, keyframes every
//! second; `rendition_misaligned` every 1.5 s), fed frame by frame with
//! capture times on one clock, as publishers of one source would.

use std::collections::BTreeMap;

use bytes::Bytes;
use liveslice_server::engine::pipeline::{frames_of, PipelineOptions, SessionPipeline};
use liveslice_server::engine::{DropReason, Event, SegmentStart, TIMESCALE};

mod common;

/// (access unit, capture time ns) of a stream: capture times are the
/// presentation times from the first picture, on one clock from `t0`.
fn captured(name: &str, t0: u64) -> Vec<(Bytes, u64)> {
    let frames = frames_of(
        Bytes::from(common::testdata(&format!("{name}.h264"))),
        PipelineOptions::default(),
    );
    let first = frames[0].pts;
    frames
        .iter()
        .map(|f| {
            let ns = (f.pts - first) * 1_000_000_000 / TIMESCALE;
            (f.data.clone(), t0 + ns)
        })
        .collect()
}

#[derive(Default)]
struct Out {
    /// sequence → (start, discontinuity sequence)
    segments: BTreeMap<u64, (u64, u64)>,
    alignment_drops: u64,
}

fn collect(events: &mut Vec<Event>, out: &mut Out) {
    for e in events.drain(..) {
        match e {
            Event::Segment(s) => {
                let r = &s.record;
                out.segments
                    .insert(r.sequence, (r.start, r.discontinuity_sequence));
            }
            Event::Dropped(d) if d.reason == DropReason::RenditionAlignment => {
                out.alignment_drops += u64::from(d.count)
            }
            _ => {}
        }
    }
}

/// Runs the leading rendition `lead` and the `others` joining it, frame by
/// frame (one frame interval apart on the wall clock), the others first
/// when `others_first`; the others join when the leader has `join_after`
/// frames in.
fn run(lead: &str, others: &[&str], others_first: bool, join_after: usize) -> Vec<Out> {
    let t0 = 1_700_000_000_000_000_000u64;
    let streams: Vec<Vec<(Bytes, u64)>> = std::iter::once(lead)
        .chain(others.iter().copied())
        .map(|n| captured(n, t0))
        .collect();
    let mut leader = SessionPipeline::new(PipelineOptions::default());
    let mut joining: Vec<SessionPipeline> = others
        .iter()
        .map(|_| SessionPipeline::join(PipelineOptions::default(), None))
        .collect();
    let mut outs: Vec<Out> = streams.iter().map(|_| Out::default()).collect();
    let mut starts: Vec<SegmentStart> = Vec::new();
    let mut events = Vec::new();
    let n = streams.iter().map(Vec::len).max().unwrap_or(0);
    let feed_others = |joining: &mut Vec<SessionPipeline>,
                       outs: &mut Vec<Out>,
                       events: &mut Vec<Event>,
                       i: usize,
                       now: u64| {
        if i < join_after {
            return;
        }
        for (k, p) in joining.iter_mut().enumerate() {
            if let Some((data, c)) = streams[k + 1].get(i) {
                p.push(data.clone(), Some(*c), now, true, events);
                collect(events, &mut outs[k + 1]);
            }
        }
    };
    for i in 0..n {
        let now = t0 + i as u64 * 33_333_333;
        if others_first {
            feed_others(&mut joining, &mut outs, &mut events, i, now);
        }
        if let Some((data, c)) = streams[0].get(i) {
            leader.push(data.clone(), Some(*c), now, true, &mut events);
            collect(&mut events, &mut outs[0]);
        }
        if let Some(s) = leader.open_segment_start() {
            if starts.last() != Some(&s) {
                starts.push(s);
            }
        }
        if let Some(point) = leader.join_point(starts.clone()) {
            for p in joining.iter_mut().filter(|p| p.is_joining()) {
                p.update_join(point.clone());
            }
        }
        if !others_first {
            feed_others(&mut joining, &mut outs, &mut events, i, now);
        }
    }
    let end = t0 + n as u64 * 33_333_333;
    leader.finish(end, &mut events);
    collect(&mut events, &mut outs[0]);
    for (k, p) in joining.iter_mut().enumerate() {
        p.finish(end, &mut events);
        collect(&mut events, &mut outs[k + 1]);
    }
    outs
}

/// Every segment of `out` starts where the leader's of the same number
/// does (the last one may end sooner: the streams end together).
fn assert_aligned(leader: &Out, out: &Out, what: &str) {
    assert!(!out.segments.is_empty(), "{what}: no segments");
    for (seq, start) in &out.segments {
        assert_eq!(
            leader.segments.get(seq),
            Some(start),
            "{what}: segment {seq} starts at {start:?}; the leader's: {:?}",
            leader.segments
        );
    }
}

/// Renditions published together, with and without B-frames: every
/// segment of each starts where the leader's does, whichever publisher's
/// frame the server happens to take first.
#[test]
fn renditions_published_together_are_aligned() {
    for others_first in [false, true] {
        let outs = run(
            "rendition_360p",
            &["rendition_270p", "rendition_180p"],
            others_first,
            0,
        );
        assert_eq!(outs[0].segments.len(), 3, "{:?}", outs[0].segments);
        for (k, out) in outs.iter().enumerate().skip(1) {
            assert_aligned(
                &outs[0],
                out,
                &format!("rendition {k}, others first {others_first}"),
            );
            // At most the first segment waits for the leader: its first
            // frame, then the keyframe at 1 s (inside the leader's
            // segment 0); the one at 2 s starts segment 1.
            assert!(out.alignment_drops <= 31, "{}", out.alignment_drops);
        }
        if !others_first {
            // The leader's first frame came first: nothing to wait for.
            assert_eq!(outs[1].segments.len(), 3);
            assert_eq!(outs[1].alignment_drops, 0);
        }
    }
}

/// A rendition joining 1.5 s late (its publisher came later) starts at
/// the leader's next segment start, numbered like it: its keyframe at 2 s
/// (what came before it is no keyframe: dropped as before any keyframe).
#[test]
fn a_late_rendition_starts_at_the_next_segment_of_the_others() {
    let outs = run("rendition_180p", &["rendition_360p"], false, 45);
    let first = outs[1].segments.keys().next().copied();
    assert_eq!(first, Some(1), "{:?}", outs[1].segments);
    assert_aligned(&outs[0], &outs[1], "late rendition");
    assert_eq!(outs[1].alignment_drops, 0);
}

/// Keyframes at other times: the rendition cannot start at the others'
/// segment starts (2 s, 4 s) and its own segment starts differ; it never
/// claims a segment number with another start.
#[test]
fn misaligned_keyframes_start_segments_elsewhere() {
    let outs = run("rendition_180p", &["rendition_misaligned"], false, 0);
    let (lead, other) = (&outs[0], &outs[1]);
    // Its first segment (from 0) is aligned; its second starts at 3 s,
    // where the leader's segment 1 started at 2 s.
    assert_eq!(other.segments.get(&0), lead.segments.get(&0));
    let s1 = other.segments.get(&1).map(|s| s.0);
    assert_eq!(s1, Some(3 * TIMESCALE), "{:?}", other.segments);
    assert_ne!(other.segments.get(&1), lead.segments.get(&1));
}

// ---------------------------------------------------------------------
// Over gRPC and HTTP: a real server, renditions published by separate
// gRPC streams, the multivariant playlist, the MPD, SessionInfo.

use liveslice_proto::v1 as pb;

/// Opens a publisher for `session` as rendition `rendition` (given in the
/// `rendition` field, or in the id as SESSION~RENDITION when `in_id`).
async fn publish_rendition(
    server: &liveslice_server::app::Running,
    session: &str,
    rendition: &str,
    in_id: bool,
) -> common::Publisher {
    let mut c = common::client(server).await;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (session_id, rendition) = if in_id {
        (format!("{session}~{rendition}"), String::new())
    } else {
        (session.to_string(), rendition.to_string())
    };
    tx.send(pb::SliceRequest {
        session_id,
        rendition,
        role: pb::Role::Publish as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let responses = c
        .stream_slices(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("publish accepted")
        .into_inner();
    common::Publisher { tx, responses }
}

/// Publishes `streams` (rendition name, testdata stream) into `session`
/// with capture times on one clock, as encoders of one source publishing
/// live would: the first one's first frame, then (once the server has
/// started its timeline) frame by frame, round robin, a little faster than
/// real time. Returns the publishers, still open.
async fn publish_together(
    server: &liveslice_server::app::Running,
    session: &str,
    streams: &[(&str, &str)],
) -> Vec<common::Publisher> {
    let t0 = liveslice_server::session::now_unix_ns();
    let mut pubs = Vec::new();
    let mut frames = Vec::new();
    for (i, (name, file)) in streams.iter().enumerate() {
        pubs.push(publish_rendition(server, session, name, i % 2 == 0).await);
        frames.push(captured(file, t0));
    }
    // The first rendition leads: its timeline starts with its first frame.
    let (data, c) = &frames[0][0];
    pubs[0].send_at(data.clone(), *c).await;
    let mut cl = common::client(server).await;
    let mut sub = common::subscribe(&mut cl, &format!("{session}~{}", streams[0].0), true, 0)
        .await
        .unwrap();
    loop {
        let m = sub.message().await.unwrap().unwrap();
        if let Some(pb::slice_response::Event::SessionInfo(i)) = m.event {
            if !i.codec.is_empty() {
                break;
            }
        }
    }
    drop(sub);
    let n = frames.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..n {
        for (k, (p, f)) in pubs.iter().zip(&frames).enumerate() {
            if (k, i) == (0, 0) {
                continue;
            }
            if let Some((data, c)) = f.get(i) {
                p.send_at(data.clone(), *c).await;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    pubs
}

/// Ends the publishers' streams and waits for their sessions to end.
async fn end_all(pubs: Vec<common::Publisher>) {
    for p in &pubs {
        p.end().await;
    }
    for p in pubs {
        let mut r = p.responses;
        while let Ok(Some(_)) = r.message().await {}
    }
}

/// The session's renditions as `SessionInfo` shows them to a subscriber
/// of rendition `id`.
async fn renditions_info(
    server: &liveslice_server::app::Running,
    id: &str,
) -> Vec<pb::RenditionInfo> {
    let mut c = common::client(server).await;
    let mut sub = common::subscribe(&mut c, id, true, 0).await.unwrap();
    loop {
        let m = sub.message().await.unwrap().unwrap();
        if let Some(pb::slice_response::Event::SessionInfo(i)) = m.event {
            return i.renditions;
        }
    }
}

async fn text(url: &str) -> String {
    let (status, _, body) = common::get(url).await;
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{url}: {body}");
    body
}

/// The `S` elements' `t` values of each Representation, by id.
fn mpd_timelines(mpd: &str) -> BTreeMap<String, Vec<u64>> {
    let mut out = BTreeMap::new();
    for rep in mpd.split("<Representation").skip(1) {
        let id = rep
            .split("id=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        if id
            .strip_prefix('a')
            .is_some_and(|n| n.parse::<u32>().is_ok())
        {
            continue; // the audio set's
        }
        let mut ts = Vec::new();
        let mut t = 0u64;
        for s in rep.split("<S ").skip(1) {
            let attr = |n: &str| {
                s.split(&format!("{n}=\""))
                    .nth(1)
                    .map(|v| v.split('"').next().unwrap().parse::<u64>().unwrap())
            };
            if let Some(v) = attr("t") {
                t = v;
            }
            let d = attr("d").unwrap();
            for _ in 0..=attr("r").unwrap_or(0) {
                ts.push(t);
                t += d;
            }
            if s.contains("</Representation") {
                break;
            }
        }
        out.insert(id.to_string(), ts);
    }
    out
}

/// Three renditions from one source, published by three gRPC streams:
/// the multivariant playlist lists them with measured bandwidths (highest
/// first), the MPD has one Representation each with the same segment
/// starts, every rendition's playlist has the same segments and plays every
/// frame, SessionInfo lists them; a fourth rendition with keyframes
/// elsewhere is reported misaligned (SessionInfo, metric) and left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renditions_are_listed_together_and_a_misaligned_one_is_left_out() {
    if !common::have_ffmpeg("renditions_are_listed_together") {
        return;
    }
    let server = common::start(common::test_config()).await;
    let pubs = publish_together(
        &server,
        "abr",
        &[
            ("360p", "rendition_360p"),
            ("270p", "rendition_270p"),
            ("180p", "rendition_180p"),
            ("bad", "rendition_misaligned"),
        ],
    )
    .await;
    // SessionInfo, to a subscriber of any rendition, while they are live:
    // the misaligned one is found at its second segment (3 s; the others'
    // is at 2 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let info = loop {
        let info = renditions_info(&server, "abr~180p").await;
        if info.iter().any(|r| !r.aligned) || std::time::Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let names: Vec<&str> = info.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["180p", "270p", "360p", "bad"]);
    for r in &info {
        assert!(
            r.peak_bandwidth >= r.average_bandwidth && r.average_bandwidth > 0,
            "{r:?}"
        );
        assert_eq!(r.session_id, format!("abr~{}", r.name));
        if r.name == "bad" {
            assert!(!r.aligned && r.misaligned_segments >= 1, "{r:?}");
        } else {
            assert!(r.aligned && r.misaligned_segments == 0, "{r:?}");
        }
    }
    assert_eq!((info[2].width, info[2].height), (640, 360));
    // The same in the console's JSON, for any rendition's id.
    let http = format!("http://{}", server.http_addr);
    let detail: serde_json::Value =
        serde_json::from_str(&text(&format!("{http}/api/sessions/abr~270p")).await).unwrap();
    let listed: Vec<(String, bool)> = detail["renditions"]
        .as_array()
        .expect("renditions in /api/sessions/abr~270p")
        .iter()
        .map(|r| {
            (
                r["session_id"].as_str().unwrap_or_default().to_string(),
                r["aligned"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("abr~180p".to_string(), true),
            ("abr~270p".to_string(), true),
            ("abr~360p".to_string(), true),
            ("abr~bad".to_string(), false)
        ]
    );
    end_all(pubs).await;

    let master = text(&format!("{http}/live/abr/master.m3u8")).await;
    let inf: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .collect();
    assert_eq!(inf.len(), 3, "{master}");
    let uris: Vec<&str> = master
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(
        uris,
        [
            "../abr~360p/index.m3u8",
            "../abr~270p/index.m3u8",
            "../abr~180p/index.m3u8"
        ],
        "{master}"
    );
    let attr = |l: &str, n: &str| -> String {
        l.split(&format!("{n}="))
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string()
    };
    let peaks: Vec<u64> = inf
        .iter()
        .map(|l| attr(l, "BANDWIDTH").parse().unwrap())
        .collect();
    let averages: Vec<u64> = inf
        .iter()
        .map(|l| attr(l, "AVERAGE-BANDWIDTH").parse().unwrap())
        .collect();
    assert!(peaks[0] > peaks[1] && peaks[1] > peaks[2], "{master}");
    for (p, a) in peaks.iter().zip(&averages) {
        assert!(a <= p && *a > 50_000, "{master}");
    }
    let resolutions: Vec<String> = inf.iter().map(|l| attr(l, "RESOLUTION")).collect();
    assert_eq!(resolutions, ["640x360", "480x270", "320x180"]);
    assert!(
        inf.iter().all(|l| l.contains("FRAME-RATE=30.000")),
        "{master}"
    );
    // The TS flavour names the TS playlists.
    let ts = text(&format!("{http}/live/abr/ts/master.m3u8")).await;
    assert!(ts.contains("\n../../abr~180p/ts/index.m3u8\n"), "{ts}");

    // Each rendition: the same segments (numbers, durations), every frame.
    let mut listed = Vec::new();
    for r in ["360p", "270p", "180p"] {
        let url = format!("{http}/live/abr~{r}/index.m3u8");
        let pl = text(&url).await;
        let entries: Vec<String> = pl
            .lines()
            .filter(|l| l.starts_with("#EXTINF") || l.starts_with("#EXT-X-MEDIA-SEQUENCE"))
            .map(str::to_string)
            .collect();
        listed.push(entries);
        let (frames, err) = common::ffmpeg_every_frame(&url);
        assert_eq!(frames, 180, "{r}: {err}");
    }
    assert_eq!(listed[0], listed[1]);
    assert_eq!(listed[0], listed[2]);
    assert_eq!(listed[0].len(), 4, "{:?}", listed[0]);

    // The MPD: one Representation per aligned rendition, the same starts.
    let mpd = text(&format!("{http}/live/abr/manifest.mpd")).await;
    let timelines = mpd_timelines(&mpd);
    assert_eq!(
        timelines.keys().collect::<Vec<_>>(),
        ["abr~180p", "abr~270p", "abr~360p"],
        "{mpd}"
    );
    let first = timelines.values().next().unwrap();
    assert_eq!(first.len(), 3, "{mpd}");
    assert!(timelines.values().all(|t| t == first), "{timelines:?}");
    assert!(
        mpd.contains("media=\"../abr~270p/seg-$Number$.m4s\""),
        "{mpd}"
    );
    let (status, _, _) = common::get(&format!("{http}/live/abr~270p/seg-1.m4s")).await;
    assert_eq!(status, 200);

    let metrics = text(&format!("{http}/metrics")).await;
    let misaligned = metrics
        .lines()
        .find(|l| l.starts_with("liveslice_rendition_misaligned_segments_total"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(!misaligned.ends_with(" 0"), "{misaligned}");
}

/// A rendition name must be a valid one, and a rendition cannot be named
/// twice (in the id and in the field).
#[tokio::test]
async fn bad_rendition_names_are_refused_with_the_reason() {
    let server = common::start(common::test_config()).await;
    for (id, rendition, want) in [
        ("cam1", "a b", "rendition name may only contain"),
        ("cam1~x", "y", "already names a rendition"),
        ("cam1~", "", "rendition name is empty"),
    ] {
        let mut c = common::client(&server).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(pb::SliceRequest {
            session_id: id.into(),
            rendition: rendition.into(),
            role: pb::Role::Publish as i32,
            ..Default::default()
        })
        .await
        .unwrap();
        let e = match c
            .stream_slices(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Err(e) => e,
            Ok(mut r) => r.get_mut().message().await.expect_err("refused"),
        };
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(want), "{id} {rendition}: {e:?}");
    }
}

/// LL-HLS: each rendition's media playlist reports the others' last part
/// (`EXT-X-RENDITION-REPORT`, what the rendition's own playlist lists
/// last); a rendition that stops leaves the multivariant playlist and the
/// reports while the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendition_reports_and_a_rendition_that_stops() {
    let server = common::start(common::test_config()).await;
    let mut pubs = publish_together(
        &server,
        "rr",
        &[("360p", "rendition_360p"), ("180p", "rendition_180p")],
    )
    .await;
    let http = format!("http://{}", server.http_addr);
    // The last part each playlist lists: (msn, index) from its media
    // sequence, segments and parts.
    async fn last_part(url: &str) -> (u64, u32) {
        let pl = text(url).await;
        let mut msn: u64 = pl
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .unwrap()
            .parse()
            .unwrap();
        let mut index = 0u32;
        let mut last = None;
        for l in pl.lines() {
            if l.starts_with("#EXT-X-PART:") {
                last = Some((msn, index));
                index += 1;
            } else if l.starts_with("#EXTINF") {
                msn += 1;
                index = 0;
            }
        }
        last.unwrap_or_else(|| panic!("{url}: no parts\n{pl}"))
    }
    // Everything sent is taken within a moment: wait for the reports to
    // settle on the other rendition's last part.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pl = text(&format!("{http}/live/rr~360p/index.m3u8")).await;
        let (msn, part) = last_part(&format!("{http}/live/rr~180p/index.m3u8")).await;
        let want = format!(
            "#EXT-X-RENDITION-REPORT:URI=\"../rr~180p/index.m3u8\",LAST-MSN={msn},LAST-PART={part}\n"
        );
        if pl.ends_with(&want) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{pl}\nwanted {want}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ts = text(&format!("{http}/live/rr~180p/ts/index.m3u8")).await;
    assert!(
        ts.contains("#EXT-X-RENDITION-REPORT:URI=\"../../rr~360p/ts/index.m3u8\",LAST-MSN="),
        "{ts}"
    );
    // 180p stops; 360p goes on alone.
    let low = pubs.pop().unwrap();
    end_all(vec![low]).await;
    let master = text(&format!("{http}/live/rr/master.m3u8")).await;
    assert_eq!(master.matches("#EXT-X-STREAM-INF").count(), 1, "{master}");
    assert!(master.contains("\n../rr~360p/index.m3u8\n"), "{master}");
    let pl = text(&format!("{http}/live/rr~360p/index.m3u8")).await;
    assert!(!pl.contains("RENDITION-REPORT"), "{pl}");
    end_all(pubs).await;
}

/// Segment number → start (`S@t`) of each Representation of an MPD, by id.
fn mpd_numbered(mpd: &str) -> BTreeMap<String, BTreeMap<u64, u64>> {
    let mut out: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    for rep in mpd.split("<Representation").skip(1) {
        let attr = |s: &str, n: &str| -> Option<String> {
            s.split(&format!(" {n}=\""))
                .nth(1)
                .map(|v| v.split('"').next().unwrap().to_string())
        };
        let id = attr(rep, "id").unwrap();
        let Some(mut number) = attr(rep, "startNumber").map(|n| n.parse::<u64>().unwrap()) else {
            continue;
        };
        let rep = rep.split("</Representation").next().unwrap();
        let mut t = 0u64;
        for s in rep.split("<S ").skip(1) {
            let s = format!(" {s}");
            if let Some(v) = attr(&s, "t") {
                t = v.parse().unwrap();
            }
            let d: u64 = attr(&s, "d").unwrap().parse().unwrap();
            for _ in 0..=attr(&s, "r").map_or(0, |r| r.parse::<u64>().unwrap()) {
                out.entry(id.clone()).or_default().insert(number, t);
                number += 1;
                t += d;
            }
        }
    }
    out
}

/// `--ladder`: a session published live (320x180, keyframes every second,
/// capture times) gets three renditions made by ffmpeg (256x144, 200x112,
/// 160x90), published back as `SESSION~144p`, `~112p`, `~90p`: listed in the
/// multivariant playlist and the MPD with every segment starting where the
/// source's of the same number does, aligned in SessionInfo, decodable at
/// their size; when the source ends they end too (and ffmpeg with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ladder_makes_aligned_renditions_of_a_published_session() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if !common::have_ffmpeg("the ladder test") {
        return;
    }
    let mut config = common::test_config();
    config.ladder.ladder = Some("144p:120k,112p:90k,90p:60k".into());
    let server = common::start(config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = common::live::publish_live(&server, "lad", stop.clone(), true);
    let http = format!("http://{}", server.http_addr);
    let info = ladder_aligned(
        &server,
        "lad",
        &[("144p", "256x144"), ("112p", "200x112"), ("90p", "160x90")],
    )
    .await;
    let p90 = info.iter().find(|r| r.name == "90p").expect("90p");
    assert_eq!((p90.width, p90.height), (160, 90));

    // The source ends: so do its renditions.
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    for r in ["lad~144p", "lad~112p", "lad~90p"] {
        assert_eq!(
            end_reason_within(&server, r, 20).await,
            liveslice_server::session::EndReason::EndOfStream,
            "{r}"
        );
    }

    // Their final playlists (lingering) decode at their size, every frame.
    let url = format!("{http}/live/lad~90p/index.m3u8");
    let (sizes, (frames, err)) = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=width,height",
            ])
            .args(["-of", "csv=p=0", &url])
            .output()
            .unwrap();
        let sizes = String::from_utf8_lossy(&out.stdout).into_owned();
        (sizes, common::ffmpeg_every_frame(&url))
    })
    .await
    .unwrap();
    // (ffprobe names the stream once per HLS program it is in.)
    assert!(
        sizes
            .lines()
            .filter(|l| !l.is_empty())
            .all(|l| l == "160,90")
            && !sizes.trim().is_empty(),
        "{sizes}"
    );
    assert!(frames >= 60 && err.is_empty(), "{frames}: {err}");
}

/// Waits until every rung of `base`'s ladder has three segments listed,
/// then checks that the multivariant playlist lists the source and each
/// rung at its size, the MPD's segments of each number start at the same
/// time in every rendition, and `SessionInfo` has them all aligned.
async fn ladder_aligned(
    server: &liveslice_server::app::Running,
    base: &str,
    rungs: &[(&str, &str)],
) -> Vec<pb::RenditionInfo> {
    let http = format!("http://{}", server.http_addr);
    let ids: Vec<String> = rungs.iter().map(|(n, _)| format!("{base}~{n}")).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let mut ready = 0;
        for r in &ids {
            let (_, _, pl) = common::get(&format!("{http}/live/{r}/index.m3u8")).await;
            if String::from_utf8_lossy(&pl).matches("#EXTINF").count() >= 3 {
                ready += 1;
            }
        }
        if ready == ids.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ladder's renditions never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let master = text(&format!("{http}/live/{base}/master.m3u8")).await;
    assert!(
        master.contains(&format!("\n../{base}/index.m3u8\n")),
        "{master}"
    );
    for (id, (_, res)) in ids.iter().zip(rungs) {
        assert!(
            master.contains(&format!("\n../{id}/index.m3u8\n")),
            "{master}"
        );
        assert!(master.contains(&format!("RESOLUTION={res}")), "{master}");
    }
    let mpd = text(&format!("{http}/live/{base}/manifest.mpd")).await;
    let reps = mpd_numbered(&mpd);
    let source = &reps[base];
    for r in &ids {
        let numbers = &reps[r.as_str()];
        assert!(numbers.len() >= 3, "{mpd}");
        for (n, t) in numbers {
            if let Some(s) = source.get(n) {
                assert_eq!(s, t, "{r} segment {n}: {mpd}");
            }
        }
        assert!(
            numbers.keys().filter(|n| source.contains_key(n)).count() >= 3,
            "{mpd}"
        );
    }
    let info = renditions_info(server, base).await;
    let names: Vec<&str> = info.iter().map(|r| r.name.as_str()).collect();
    let mut want: Vec<&str> = std::iter::once("")
        .chain(rungs.iter().map(|(n, _)| *n))
        .collect();
    want.sort_unstable();
    assert_eq!(names, want, "listed by name");
    for r in &info {
        assert!(r.aligned && r.misaligned_segments == 0, "{r:?}");
    }
    info
}

/// How session `id` ended, waiting up to `secs` seconds for it to end.
async fn end_reason_within(
    server: &liveslice_server::app::Running,
    id: &str,
    secs: u64,
) -> liveslice_server::session::EndReason {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let s = server.registry.get(id).expect("the session");
        if let Some(reason) = s.end_reason() {
            return reason;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} did not end within {secs} s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A source without capture times (the demo publisher): the ladder's
/// renditions join by where each source picture is on the source's
/// timeline, not by when ffmpeg delivers it, and stay aligned; rungs not
/// below the source are left out; a rung's bandwidth counts the audio it
/// plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ladder_aligns_a_source_without_capture_times() {
    if !common::have_ffmpeg("the ladder test") {
        return;
    }
    let mut config = common::test_config();
    config.server.demo = Some("demo".into());
    // The demo is 320x180: a ladder only goes down, so the rungs as tall
    // or taller are left out (and ladder_aligned checks that only 90p is
    // listed).
    config.ladder.ladder = Some("360p:300k,180p:200k,90p:60k".into());
    let server = common::start(config).await;
    let info = ladder_aligned(&server, "demo", &[("90p", "160x90")]).await;
    let p90 = info.iter().find(|r| r.name == "90p").expect("90p");
    assert_eq!((p90.width, p90.height), (160, 90));
    // The rung has no audio of its own: in the CMAF master it plays the
    // source's audio group, whose bytes count in its BANDWIDTH.
    let http = format!("http://{}", server.http_addr);
    let master = text(&format!("{http}/live/demo/master.m3u8")).await;
    let lines: Vec<&str> = master.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "../demo~90p/index.m3u8")
        .expect("the rung's variant");
    let inf = lines[at - 1];
    assert!(
        inf.contains("mp4a.40.2") && inf.contains("AUDIO=\"audio\""),
        "{inf}"
    );
    let listed: u64 = inf
        .split_once("BANDWIDTH=")
        .and_then(|(_, r)| r.split(',').next())
        .and_then(|b| b.parse().ok())
        .expect("BANDWIDTH");
    let audio = renditions_info(&server, "demo").await;
    let own = audio
        .iter()
        .find(|r| r.name == "90p")
        .expect("90p")
        .peak_bandwidth;
    assert!(listed > own + 16_000, "{inf}: video alone {own}");
}

/// A ladder whose ffmpeg dies mid-stream (SIGKILL): its renditions end
/// with an error, the failure is counted, and the source goes on being
/// published, segmented and served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_that_dies_ends_its_renditions_and_the_source_goes_on() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if !common::have_ffmpeg("the ladder test") {
        return;
    }
    // ffmpeg behind a wrapper that says where it runs.
    let dir = tempfile_dir("ladder-crash");
    let pid_file = dir.join("pid");
    let wrapper = dir.join("ffmpeg");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec ffmpeg \"$@\"\n",
            pid_file.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut config = common::test_config();
    config.ladder.ladder = Some("90p:60k".into());
    config.ladder.ladder_ffmpeg = wrapper.display().to_string();
    let server = common::start(config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = common::live::publish_live(&server, "crash", stop.clone(), true);
    ladder_aligned(&server, "crash", &[("90p", "160x90")]).await;

    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(
        end_reason_within(&server, "crash~90p", 20).await,
        liveslice_server::session::EndReason::Error
    );
    let http = format!("http://{}", server.http_addr);
    let metrics = text(&format!("{http}/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("liveslice_ladder_failures_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The source: live, its playlist growing, and it leaves the group's
    // lists alone once its rung has gone.
    let source = server.registry.get("crash").expect("source session");
    let before = source.info().media_sequence + segments_listed(&http, "crash").await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(!source.is_ended());
    let after = source.info().media_sequence + segments_listed(&http, "crash").await;
    assert!(after > before, "{before} -> {after}");
    let master = text(&format!("{http}/live/crash/master.m3u8")).await;
    assert!(!master.contains("crash~90p"), "{master}");
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn segments_listed(http: &str, id: &str) -> u64 {
    let pl = text(&format!("{http}/live/{id}/index.m3u8")).await;
    pl.matches("#EXTINF").count() as u64
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An H.265 source: the ladder's H.264 renditions are listed beside it in
/// the multivariant playlist (each with its `CODECS`), and the MPD puts
/// them in an AdaptationSet of their own (players switch within one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hevc_source_and_its_h264_ladder_are_separate_adaptation_sets() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if !common::have_ffmpeg("the ladder test") {
        return;
    }
    let mut config = common::test_config();
    config.ladder.ladder = Some("90p:60k".into());
    let server = common::start(config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher =
        common::live::publish_file_live(&server, "hv", "hevc_closed_30.h265", stop.clone(), true);
    ladder_aligned(&server, "hv", &[("90p", "160x90")]).await;
    let http = format!("http://{}", server.http_addr);
    let master = text(&format!("{http}/live/hv/master.m3u8")).await;
    assert!(master.contains("CODECS=\"hvc1."), "{master}");
    assert!(master.contains("CODECS=\"avc1."), "{master}");
    let mpd = text(&format!("{http}/live/hv/manifest.mpd")).await;
    let doc = roxmltree::Document::parse(&mpd).unwrap();
    let period = doc
        .descendants()
        .rfind(|n| n.has_tag_name("Period"))
        .expect("a period");
    let sets: Vec<(String, Vec<String>)> = period
        .children()
        .filter(|n| n.has_tag_name("AdaptationSet") && n.attribute("contentType") == Some("video"))
        .map(|a| {
            let codecs = a
                .children()
                .filter(|r| r.has_tag_name("Representation"))
                .map(|r| r.attribute("codecs").unwrap_or_default()[..4].to_string())
                .collect();
            (a.attribute("id").unwrap_or_default().to_string(), codecs)
        })
        .collect();
    assert_eq!(
        sets,
        [
            ("0".to_string(), vec!["hvc1".to_string()]),
            ("2".to_string(), vec!["avc1".to_string()])
        ],
        "{mpd}"
    );
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
}

/// `--ladder` with an ffmpeg that is not there: the server does not start,
/// and says why and what to do.
#[tokio::test]
async fn a_ladder_without_ffmpeg_is_a_startup_error() {
    let mut config = common::test_config();
    config.ladder.ladder = Some("144p:120k".into());
    config.ladder.ladder_ffmpeg = "/nonexistent/ffmpeg".into();
    let e = match liveslice_server::app::start(&config).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started without ffmpeg"),
    };
    assert!(
        e.contains("--ladder") && e.contains("/nonexistent/ffmpeg"),
        "{e}"
    );
    assert!(e.contains("apt-get install ffmpeg"), "{e}");
    // One that runs but has no libx264.
    config.ladder.ladder_ffmpeg = "/bin/true".into();
    let e = match liveslice_server::app::start(&config).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started with an ffmpeg without libx264"),
    };
    assert!(e.contains("does not list libx264"), "{e}");
}

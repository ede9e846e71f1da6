//! H.265/HEVC (issue 16): the committed HEVC streams (testdata/make-streams.sh
//! `hevc`: closed GOP, B-frames, open GOP with CRA and RASL pictures, Main
//! 10) through the engine — frame counts, keyframes and timestamps equal
//! ffprobe's (`NAME.packets.csv`), segments as `NAME.expect.toml` says, every
//! manifest version a legal successor of the one before — and published over
//! gRPC into a server whose HLS (CMAF and MPEG-TS) and DASH output ffmpeg
//! decodes with zero errors and the input's frames and timestamps.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::history::History;
use common::*;
use liveslice_proto::v1 as pb;
use liveslice_server::engine::pipeline::{PipelineOptions, SessionPipeline};
use liveslice_server::engine::{Event, Frame, SegmentRecord, VideoCodec};
use pb::slice_response::Event as PbEvent;

const STREAMS: [&str; 4] = [
    "hevc_closed_30",
    "hevc_bframes_30",
    "hevc_open_gop_30",
    "hevc_main10_2997",
];

const NOW: u64 = 1_800_000_000_000_000_000;

fn stream(name: &str) -> Vec<u8> {
    testdata(&format!("{name}.h265"))
}

/// (pts, dts, keyframe) per packet in decode order, as ffprobe saw them.
fn expected_packets(name: &str) -> Vec<(i64, i64, bool)> {
    String::from_utf8(testdata(&format!("{name}.packets.csv")))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.split(',');
            (
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().starts_with('K'),
            )
        })
        .collect()
}

fn expect(name: &str) -> toml::Table {
    String::from_utf8(testdata(&format!("{name}.expect.toml")))
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{name}.expect.toml: {e}"))
}

fn ints(t: &toml::Table, key: &str) -> Vec<u64> {
    t.get(key)
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("expect key {key}"))
        .iter()
        .map(|v| v.as_integer().expect("integer") as u64)
        .collect()
}

struct Outcome {
    frames: Vec<Arc<Frame>>,
    segments: Vec<SegmentRecord>,
    drops: BTreeMap<&'static str, u64>,
    codec_strings: Vec<String>,
    history: History,
}

fn opts() -> PipelineOptions {
    PipelineOptions {
        segment_target_ms: 2000,
        window: 6,
        ..Default::default()
    }
}

/// The engine over `data` in `chunk`-byte pieces, recording every manifest
/// version.
fn run(name: &str, data: &[u8], chunk: usize) -> Outcome {
    let mut p = SessionPipeline::new(opts());
    let mut out = Outcome {
        frames: Vec::new(),
        segments: Vec::new(),
        drops: BTreeMap::new(),
        codec_strings: Vec::new(),
        history: History::default(),
    };
    let mut events = Vec::new();
    let mut now = NOW;
    let handle = |p: &SessionPipeline, events: &mut Vec<Event>, out: &mut Outcome, now: u64| {
        for e in events.drain(..) {
            match e {
                Event::Frame(f) => out.frames.push(f),
                Event::Segment(s) => out.segments.push(s.record.clone()),
                Event::Dropped(d) => {
                    *out.drops.entry(d.reason.as_str()).or_default() += d.count as u64
                }
                Event::Config(c) => out.codec_strings.push(c.codec_string()),
                Event::Fatal(e) => panic!("{name}: fatal {e}"),
                Event::Ended(_)
                | Event::Part(_)
                | Event::AudioFrame(_)
                | Event::AudioConfig(_)
                | Event::Discontinuity => {}
            }
            if let Some(m) = p.manifests() {
                out.history.record(
                    &m.hls_cmaf().render(),
                    &m.hls_ts().render(),
                    &m.dash(now / 1_000_000).render(),
                    name,
                );
            }
        }
    };
    for c in data.chunks(chunk) {
        now += 1_000_000;
        p.push(Bytes::copy_from_slice(c), None, now, false, &mut events);
        handle(&p, &mut events, &mut out, now);
    }
    p.finish(now, &mut events);
    handle(&p, &mut events, &mut out, now);
    assert_eq!(p.codec(), VideoCodec::H265, "{name}");
    let stats = p.stats();
    assert_eq!(
        stats.access_units,
        stats.frames + stats.frames_dropped,
        "{name}: {stats:?}"
    );
    out
}

#[test]
fn hevc_streams_give_ffprobes_frames_timestamps_and_expected_segments() {
    for name in STREAMS {
        let want = expected_packets(name);
        let data = stream(name);
        let o = run(name, &data, 4096);
        let e = expect(name);
        let segs: Vec<u64> = o.segments.iter().map(|s| (s.duration + 45) / 90).collect();
        let saps: Vec<u64> = o.segments.iter().map(|s| u64::from(s.sap_type)).collect();
        let summary = format!(
            "{name}: frames = {}\nsegment_ms = {segs:?}\nsegment_sap = {saps:?}\ndrops = {:?}\ncodec = {:?}",
            o.frames.len(),
            o.drops,
            o.codec_strings
        );
        assert_eq!(o.frames.len(), want.len(), "{summary}");
        assert_eq!(
            o.frames.len() as i64,
            e["frames"].as_integer().unwrap(),
            "{summary}"
        );
        assert_eq!(segs, ints(&e, "segment_ms"), "{summary}");
        assert_eq!(saps, ints(&e, "segment_sap"), "{summary}");
        assert_eq!(
            o.codec_strings,
            vec![e["codec"].as_str().unwrap().to_string()],
            "{summary}"
        );
        assert!(o.drops.is_empty(), "{summary}");
        // Timestamps relative to the first frame's DTS equal ffprobe's.
        let (p0, d0) = (o.frames[0].dts as i64, want[0].1);
        for (f, (pts, dts, key)) in o.frames.iter().zip(&want) {
            assert_eq!(
                (f.pts as i64 - p0, f.dts as i64 - p0, f.is_keyframe),
                (pts - d0, dts - d0, *key),
                "{name}: frame {}",
                f.index
            );
        }
        // Keyframes carry VPS, SPS and PPS; RASL pictures are marked leading.
        for f in &o.frames {
            let types: Vec<u8> = f.nal_units().map(|n| (n[0] >> 1) & 0x3f).collect();
            if f.is_keyframe {
                for t in [32, 33, 34] {
                    assert!(types.contains(&t), "{name}: frame {} {types:?}", f.index);
                }
            }
            assert_eq!(f.is_leading, types.iter().any(|t| *t == 8 || *t == 9));
        }
        // The HLS target duration never moved.
        assert!(o.history.hls_cmaf.iter().all(|h| h.target_duration == 6));
        // Chunking does not matter.
        for size in [1, 188, 65536] {
            let again = run(name, &data, size);
            assert_eq!(again.frames.len(), o.frames.len(), "{name} chunk {size}");
            let key = |s: &[SegmentRecord]| {
                s.iter()
                    .map(|r| (r.start, r.duration, r.frame_count, r.sap_type, r.byte_size))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                key(&again.segments),
                key(&o.segments),
                "{name} chunk {size}"
            );
        }
    }
}

#[test]
fn a_viewer_starting_at_a_cra_drops_its_rasl_pictures() {
    // The open-GOP stream from its second CRA: the first picture is a CRA
    // whose RASL picture references the GOP before it.
    let data = stream("hevc_open_gop_30");
    let full = run("hevc_open_gop_30", &data, 65536);
    let cra = full
        .frames
        .iter()
        .filter(|f| f.is_keyframe)
        .nth(1)
        .expect("a second keyframe");
    assert_eq!(cra.sap_type, 3);
    // Cut the byte stream where that picture's data starts.
    let needle = &cra.data[..cra.data.len().min(64)];
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("its bytes");
    let o = run("hevc_open_gop_from_cra", &data[at..], 4096);
    assert!(o.frames[0].is_keyframe && o.frames[0].sap_type == 3);
    assert_eq!(o.drops.get("leading_picture"), Some(&1), "{:?}", o.drops);
    assert_eq!(o.frames.len() + 1, full.frames.len() - cra.index as usize);
}

/// ffprobe's frames of a file: (pts, key_frame) in presentation order.
fn ffprobe_frames(path: &str) -> Vec<(i64, bool)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts,key_frame",
            "-of",
            "csv=p=0",
            path,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let mut f = l.split(',');
            let key = f.next()? == "1";
            let pts = f.next()?.parse().ok()?;
            Some((pts, key))
        })
        .collect()
}

/// ffprobe's codec name and tag of a file's video stream.
fn ffprobe_codec(path: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,codec_tag_string,profile,pix_fmt",
            "-of",
            "csv=p=0",
            path,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn publish_whole(
    server: &liveslice_server::app::Running,
    id: &str,
    data: &[u8],
) -> Vec<pb::SegmentReady> {
    let mut c = client(server).await;
    let mut p = publish(&mut c, id, Default::default()).await.unwrap();
    p.send_chunked(data, &[64 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let (responses, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    responses
        .into_iter()
        .filter_map(|r| match r.event {
            Some(PbEvent::SegmentReady(s)) => Some(s),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_streams_play_as_hls_cmaf_hls_ts_and_dash() {
    if !have_ffmpeg("H.265 output checked with ffmpeg") {
        return;
    }
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    for name in STREAMS {
        let want = expected_packets(name);
        let e = expect(name);
        let codec = e["codec"].as_str().unwrap().to_string();
        let engine = run(name, &stream(name), 65536);
        let segs = publish_whole(&server, name, &stream(name)).await;
        assert!(!segs.is_empty(), "{name}");
        let total: u32 = segs.iter().map(|s| s.frame_count).sum();
        assert_eq!(total as usize, want.len(), "{name}");

        // The three flavours decode with zero errors and the input's frames.
        for path in ["index.m3u8", "ts/index.m3u8", "manifest.mpd"] {
            let url = format!("{base}/live/{name}/{path}");
            let (frames, errors) = tokio::task::spawn_blocking(move || ffmpeg_frames(&url))
                .await
                .unwrap();
            assert_eq!(errors, "", "{name} {path}");
            assert_eq!(frames, want.len(), "{name} {path}");
        }
        // Manifests name the codec.
        let (_, _, hls) = get(&format!("{base}/live/{name}/index.m3u8")).await;
        let hls = String::from_utf8(hls).unwrap();
        let (_, _, mpd) = get(&format!("{base}/live/{name}/manifest.mpd")).await;
        let mpd = String::from_utf8(mpd).unwrap();
        assert!(
            mpd.contains(&format!("codecs=\"{codec}\"")),
            "{name}\n{mpd}"
        );
        for s in &segs {
            let entry = format!("<S t=\"{}\" d=\"{}\"/>", s.start_90k, s.duration_90k);
            assert!(mpd.contains(&entry), "{name}: {entry} in\n{mpd}");
        }
        let (_, _, master) = get(&format!("{base}/live/{name}/master.m3u8")).await;
        let master = String::from_utf8_lossy(&master);
        if !master.is_empty() && master.contains("CODECS") {
            assert!(master.contains(&codec), "{name}\n{master}");
        }
        assert!(hls.contains("#EXT-X-MAP"), "{name}\n{hls}");

        // Each segment by ffprobe: an hvc1 track, keyframe first, the
        // segment's frames (less the RASL pictures of a CRA it starts with,
        // which a decoder starting there skips) in presentation order.
        let dir = tempdir();
        let (status, _, init) = get(&format!("{base}/live/{name}/init-0.mp4")).await;
        assert_eq!(status, 200);
        let mut all_pts = Vec::new();
        let mut want_pts = Vec::new();
        for s in &segs {
            let (status, _, seg) = get(&format!("{base}/live/{name}/seg-{}.m4s", s.sequence)).await;
            assert_eq!(status, 200, "{name} seg {}", s.sequence);
            let path = dir.join(format!("s{}.mp4", s.sequence));
            std::fs::write(&path, [init.as_slice(), seg.as_slice()].concat()).unwrap();
            let p = path.to_str().unwrap();
            let probed = ffprobe_codec(p);
            assert!(
                probed.starts_with("hevc,") && probed.contains(",hvc1,"),
                "{name}: {probed}"
            );
            // The RASL pictures of the segment's first picture (up to the
            // next keyframe), when that is a CRA: a decoder starting at the
            // segment skips them.
            let in_seg: Vec<&Arc<Frame>> = engine
                .frames
                .iter()
                .filter(|f| f.segment == s.sequence)
                .collect();
            let starts_at_cra = s.sequence > 0 && in_seg.first().is_some_and(|f| f.sap_type == 3);
            let skipped: Vec<u64> = if starts_at_cra {
                in_seg
                    .iter()
                    .skip(1)
                    .take_while(|f| !f.is_keyframe)
                    .filter(|f| f.is_leading)
                    .map(|f| f.index)
                    .collect()
            } else {
                Vec::new()
            };
            let rasl = skipped.len();
            let frames = ffprobe_frames(p);
            let expected = s.frame_count as usize - rasl;
            assert_eq!(frames.len(), expected, "{name} seg {}", s.sequence);
            assert!(frames[0].1, "{name}: segment {} keyframe first", s.sequence);
            let pts: Vec<i64> = frames.iter().map(|f| f.0).collect();
            assert!(pts.windows(2).all(|w| w[0] < w[1]), "{name}: order");
            all_pts.extend(pts);
            let mut seg_pts: Vec<i64> = engine
                .frames
                .iter()
                .filter(|f| f.segment == s.sequence && !skipped.contains(&f.index))
                .map(|f| f.pts as i64)
                .collect();
            seg_pts.sort();
            want_pts.extend(seg_pts);

            let (status, _, ts) =
                get(&format!("{base}/live/{name}/ts/seg-{}.ts", s.sequence)).await;
            assert_eq!(status, 200);
            let tpath = dir.join(format!("s{}.ts", s.sequence));
            std::fs::write(&tpath, &ts).unwrap();
            let tp = tpath.to_str().unwrap();
            assert!(
                ffprobe_codec(tp).starts_with("hevc"),
                "{name}: {}",
                ffprobe_codec(tp)
            );
            let tframes = ffprobe_frames(tp);
            assert_eq!(tframes.len(), expected, "{name} TS seg {}", s.sequence);
            assert!(
                tframes[0].1,
                "{name}: TS segment {} keyframe first",
                s.sequence
            );
        }
        // Presentation times, relative to the first, equal the engine's
        // (which equal ffprobe's for the original, checked above).
        let rel = |v: &[i64]| v.iter().map(|p| p - v[0]).collect::<Vec<_>>();
        assert_eq!(rel(&all_pts), rel(&want_pts), "{name}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    server.shutdown().await;
}

/// Decodes an H.265 Annex B stream with ffmpeg: (frames, stderr).
fn ffmpeg_decode_hevc(data: &[u8]) -> (usize, String) {
    let dir = tempdir();
    let path = dir.join("stream.h265");
    std::fs::write(&path, data).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "hevc", "-i"])
        .arg(&path)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    let _ = std::fs::remove_dir_all(&dir);
    (frames, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_subscriber_gets_every_hevc_frame_and_the_codec_string() {
    if !have_ffmpeg("H.265 frames over gRPC decoded by ffmpeg") {
        return;
    }
    let server = start(test_config()).await;
    for name in ["hevc_open_gop_30", "hevc_main10_2997"] {
        let data = stream(name);
        let want = expected_packets(name);
        let codec = expect(name)["codec"].as_str().unwrap().to_string();
        // The subscriber waits for the session (--subscribe-wait).
        let mut c = client(&server).await;
        let session = name.to_string();
        let sub = tokio::spawn(async move {
            let mut sub = subscribe(&mut c, &session, true, 0).await.unwrap();
            collect(&mut sub, Duration::from_secs(30)).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut pc = client(&server).await;
        let p = publish(&mut pc, name, Default::default()).await.unwrap();
        p.send_chunked(&data, &[4096]).await;
        p.end().await;
        let (responses, status) = sub.await.unwrap();
        assert!(status.is_none(), "{name}: {status:?}");
        // The SessionInfo sent once the parameter sets are known (the one
        // on joining a session that has none yet names no codec).
        let info = responses
            .iter()
            .filter_map(|r| match &r.event {
                Some(PbEvent::SessionInfo(i)) if !i.codec.is_empty() => Some(i.clone()),
                _ => None,
            })
            .next_back()
            .expect("SessionInfo with a codec");
        assert_eq!(info.codec, codec, "{name}");
        assert_eq!((info.width, info.height), (320, 180), "{name}");
        let frames = frames(&responses);
        assert_eq!(frames.len(), want.len(), "{name}");
        // Keyframes carry VPS/SPS/PPS: the frames joined are a stream
        // ffmpeg decodes whole, with no error.
        let joined: Vec<u8> = frames.iter().flat_map(|r| r.data.to_vec()).collect();
        let (decoded, errors) = tokio::task::spawn_blocking(move || ffmpeg_decode_hevc(&joined))
            .await
            .unwrap();
        assert_eq!(errors, "", "{name}");
        assert_eq!(decoded, want.len(), "{name}");
        // Presentation times relative to the first equal ffprobe's.
        let p0 = frame_info(frames[0]).pts_90k as i64;
        for (r, w) in frames.iter().zip(&want) {
            assert_eq!(
                frame_info(r).pts_90k as i64 - p0,
                w.0 - want[0].0,
                "{name}: frame {}",
                frame_info(r).index
            );
        }
    }
    server.shutdown().await;
}

/// The engine over `data` with no expectations: every access unit ends as
/// a frame or a counted drop, nothing panics. Returns (frames, drops).
fn run_damaged(data: &[u8], chunk: usize) -> (u64, u64) {
    let mut p = SessionPipeline::new(opts());
    let mut events = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        p.push(Bytes::copy_from_slice(c), None, NOW, false, &mut events);
        events.clear();
    }
    p.finish(NOW, &mut events);
    let s = p.stats();
    assert_eq!(s.access_units, s.frames + s.frames_dropped, "{s:?}");
    (s.frames, s.frames_dropped)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Random bit flips anywhere in an H.265 stream: no panic, and every
    /// access unit ends as a frame or a counted drop, whatever the chunking.
    #[test]
    fn hevc_bit_flips_lose_nothing_silently(
        stream in 0usize..4,
        flips in proptest::collection::vec((0usize..200_000, 0u8..8), 1..100),
        chunk in 1usize..20_000,
    ) {
        let mut data = self::stream(STREAMS[stream]);
        for (pos, bit) in &flips {
            let i = pos % data.len();
            data[i] ^= 1 << bit;
        }
        let (frames, dropped) = run_damaged(&data, chunk);
        proptest::prop_assert!(frames + dropped > 0);
    }
}

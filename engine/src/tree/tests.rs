//! The tree of committed streams, checked without external tools: the
//! playlists name only files that exist, a segment is `styp` + its parts'
//! CMAF chunks, MPEG-TS files are whole packets whose continuity counters
//! run on across segments, and a tree rebuilt from a subscription
//! ([`Replay`]) is the packaged tree byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;

use super::*;
use crate::pipeline::{PipelineOptions, SessionPipeline};
use crate::replay::{Replay, Skipped};

const NOW_MS: u64 = 1_800_000_000_000;

fn stream(name: &str) -> Bytes {
    // H.265 streams are named hevc_*.
    let ext = if name.starts_with("hevc_") {
        "h265"
    } else {
        "h264"
    };
    let path = format!("{}/../testdata/{name}.{ext}", env!("CARGO_MANIFEST_DIR"));
    match std::fs::read(&path) {
        Ok(b) => Bytes::from(b),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// A fresh, empty directory under the system's temp dir.
fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "liveslice-tree-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_text(path: &Path) -> String {
    String::from_utf8(read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn options(window: usize) -> PipelineOptions {
    PipelineOptions {
        window,
        ..Default::default()
    }
}

/// Runs the pipeline over `data` in 64 KiB pushes, as `liveslice package`
/// does: every event to the tree, the manifests after each push. Returns
/// every event.
fn package(data: &Bytes, opts: PipelineOptions, dir: &Path) -> Vec<Event> {
    let mut pipeline = SessionPipeline::new(opts);
    let mut tree = TreeWriter::create(dir).expect("create the tree");
    let mut all = Vec::new();
    let mut events = Vec::new();
    let mut feed = |events: &mut Vec<Event>, pipeline: &SessionPipeline, tree: &mut TreeWriter| {
        for e in events.iter() {
            tree.handle(e).expect("event written");
        }
        if let Some(m) = pipeline.manifests() {
            tree.write_manifests(m, NOW_MS).expect("manifests written");
        }
        all.append(events);
    };
    for (k, chunk) in data.chunks(64 << 10).enumerate() {
        let now_ns = (NOW_MS + k as u64) * 1_000_000;
        pipeline.push(data.slice_ref(chunk), None, now_ns, false, &mut events);
        feed(&mut events, &pipeline, &mut tree);
    }
    pipeline.finish(NOW_MS * 1_000_000, &mut events);
    feed(&mut events, &pipeline, &mut tree);
    assert!(
        pipeline.manifests().is_some_and(Manifests::is_ended),
        "closed playlists"
    );
    all
}

/// What the events say each segment's files must be: `styp` + the CMAF
/// chunks of its parts, and its parts' TS packets joined, muxed by one
/// `PartMuxer` in part order.
fn expected(events: &[Event]) -> BTreeMap<u64, (Vec<Bytes>, Bytes)> {
    let mut muxer = PartMuxer::new(Formats::default());
    let mut configs = BTreeMap::new();
    let mut frames: Vec<Arc<Frame>> = Vec::new();
    let mut parts: Vec<MuxedPart> = Vec::new();
    let mut out = BTreeMap::new();
    for e in events {
        match e {
            Event::Config(c) => {
                configs.insert(c.id, c.clone());
            }
            Event::Frame(f) => frames.push(f.clone()),
            Event::Part(p) => {
                let mine: Vec<&Frame> = frames
                    .iter()
                    .filter(|f| {
                        f.index >= p.first_frame_index
                            && f.index < p.first_frame_index + u64::from(p.frame_count)
                    })
                    .map(|f| f.as_ref())
                    .collect();
                parts.push(
                    muxer
                        .mux(p.clone(), &mine, &configs[&p.config_id])
                        .expect("part muxes"),
                );
            }
            Event::Segment(s) => {
                let mine: Vec<&MuxedPart> = parts
                    .iter()
                    .filter(|p| p.record.segment == s.record.sequence)
                    .collect();
                let chunks = mine.iter().map(|p| p.cmaf.clone()).collect();
                let ts = concat(&ts_segment_pieces(mine.iter().copied()));
                out.insert(s.record.sequence, (chunks, ts));
            }
            _ => {}
        }
    }
    out
}

/// Top-level MP4 boxes: (type, whole box).
fn boxes(b: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= b.len() {
        let size = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        assert!(
            size >= 8 && at + size <= b.len(),
            "box at {at}: size {size}"
        );
        let kind = String::from_utf8_lossy(&b[at + 4..at + 8]).into_owned();
        out.push((kind, &b[at..at + size]));
        at += size;
    }
    assert_eq!(at, b.len(), "trailing bytes");
    out
}

/// The `mfhd` sequence number of a `moof`.
fn mfhd_sequence(moof: &[u8]) -> u32 {
    let inner = boxes(&moof[8..]);
    let (_, mfhd) = inner
        .iter()
        .find(|(k, _)| k == "mfhd")
        .expect("moof has an mfhd");
    u32::from_be_bytes([mfhd[12], mfhd[13], mfhd[14], mfhd[15]])
}

/// Every segment file is `styp` + its parts' chunks; the chunks' `mfhd`
/// numbers run on by one across the whole tree (part number + 1). Returns
/// how many segments were checked.
fn check_cmaf(dir: &Path, want: &BTreeMap<u64, (Vec<Bytes>, Bytes)>, from_start: bool) -> usize {
    let mut last_mfhd: Option<u32> = None;
    for (seq, (chunks, _)) in want {
        let file = read(&dir.join(format!("seg-{seq}.m4s")));
        let bx = boxes(&file);
        assert_eq!(bx[0].0, "styp", "seg-{seq}.m4s");
        assert_eq!(bx[0].1, &cmaf::styp()[..], "seg-{seq}.m4s");
        let pairs: Vec<&[(String, &[u8])]> = bx[1..].chunks(2).collect();
        assert_eq!(pairs.len(), chunks.len(), "seg-{seq}.m4s: a moof per part");
        for (pair, chunk) in pairs.iter().zip(chunks) {
            assert_eq!((pair[0].0.as_str(), pair[1].0.as_str()), ("moof", "mdat"));
            let mfhd = mfhd_sequence(pair[0].1);
            if let Some(last) = last_mfhd {
                assert_eq!(mfhd, last + 1, "seg-{seq}.m4s: chunks number on");
            } else if from_start {
                assert_eq!(mfhd, 1, "the first part is number 0");
            }
            last_mfhd = Some(mfhd);
            if from_start {
                let mut bytes = pair[0].1.to_vec();
                bytes.extend_from_slice(pair[1].1);
                assert!(bytes == chunk[..], "seg-{seq}.m4s: a part's chunk differs");
            }
        }
        if from_start {
            let mut whole = cmaf::styp().to_vec();
            for c in chunks {
                whole.extend_from_slice(c);
            }
            assert!(whole == file, "seg-{seq}.m4s is styp + its chunks");
        }
    }
    want.len()
}

/// The TS files, in order, are whole 188-byte packets whose continuity
/// counters run on per PID from file to file (a payload packet counts up
/// by one, an adaptation-only packet repeats the last count). Returns the
/// number of PES packets started on the video PID (one per frame).
fn check_ts(dir: &Path, sequences: impl IntoIterator<Item = u64>) -> usize {
    let mut cc: BTreeMap<u16, u8> = BTreeMap::new();
    let mut pes = 0;
    for seq in sequences {
        let name = format!("ts/seg-{seq}.ts");
        let file = read(&dir.join(&name));
        assert!(!file.is_empty(), "{name}");
        assert_eq!(file.len() % 188, 0, "{name}: whole packets");
        for (k, p) in file.chunks(188).enumerate() {
            assert_eq!(p[0], 0x47, "{name} packet {k}: sync byte");
            let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
            let pusi = p[1] & 0x40 != 0;
            let afc = (p[3] >> 4) & 0x3;
            let count = p[3] & 0x0f;
            if let Some(last) = cc.get(&pid) {
                let want = if afc & 1 == 1 {
                    (last + 1) & 0x0f
                } else {
                    *last
                };
                assert_eq!(count, want, "{name} packet {k}: PID {pid:#x} continuity");
            }
            cc.insert(pid, count);
            // A PES packet starts with 00 00 01; a PAT or PMT section
            // with its pointer field and table id (00 00 or 00 02).
            let payload = if afc == 3 { 5 + p[4] as usize } else { 4 };
            if pusi && afc & 1 == 1 && p.get(payload..payload + 3) == Some(&[0, 0, 1]) {
                pes += 1;
            }
        }
    }
    pes
}

/// The segment numbers an HLS playlist names (`seg-N.ext` lines), and its
/// `EXT-X-MAP` URIs.
fn hls_files(playlist: &str) -> (Vec<String>, Vec<String>) {
    let mut segs = Vec::new();
    let mut maps = Vec::new();
    for line in playlist.lines() {
        if let Some(uri) = line
            .strip_prefix("#EXT-X-MAP:URI=\"")
            .and_then(|r| r.strip_suffix('"'))
        {
            maps.push(uri.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            segs.push(line.to_string());
        }
    }
    (segs, maps)
}

/// Files the MPD names: each period's init segment and its `$Number$`
/// segments (startNumber and one more per `S`, `r` repeats included).
fn dash_files(mpd: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(mpd).expect("MPD parses");
    let mut files = Vec::new();
    for t in doc
        .descendants()
        .filter(|n| n.has_tag_name("SegmentTemplate"))
    {
        files.push(t.attribute("initialization").expect("init").to_string());
        assert_eq!(t.attribute("media"), Some("seg-$Number$.m4s"));
        let start: u64 = t
            .attribute("startNumber")
            .and_then(|s| s.parse().ok())
            .expect("startNumber");
        let count: u64 = t
            .descendants()
            .filter(|n| n.has_tag_name("S"))
            .map(|s| 1 + s.attribute("r").and_then(|r| r.parse().ok()).unwrap_or(0))
            .sum();
        files.extend((start..start + count).map(|n| format!("seg-{n}.m4s")));
    }
    files
}

/// The playlists name only files that exist, all three the same segments;
/// no temporary file is left. Returns the segments listed.
fn check_playlists(dir: &Path) -> Vec<String> {
    let hls = read_text(&dir.join("index.m3u8"));
    let hls_ts = read_text(&dir.join("ts/index.m3u8"));
    let mpd = read_text(&dir.join("manifest.mpd"));
    let (segs, maps) = hls_files(&hls);
    let (ts_segs, ts_maps) = hls_files(&hls_ts);
    assert!(!segs.is_empty(), "{hls}");
    assert!(ts_maps.is_empty(), "{hls_ts}");
    for f in segs.iter().chain(&maps).chain(&dash_files(&mpd)) {
        assert!(dir.join(f).is_file(), "{f} is named but missing");
    }
    for f in &ts_segs {
        assert!(
            dir.join("ts").join(f).is_file(),
            "ts/{f} is named but missing"
        );
    }
    let stems = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|s| s.rsplit_once('.').map_or(s.clone(), |(a, _)| a.to_string()))
            .collect()
    };
    assert_eq!(stems(&segs), stems(&ts_segs));
    assert_eq!(
        stems(&segs),
        stems(
            &dash_files(&mpd)
                .into_iter()
                .filter(|f| f.starts_with("seg-"))
                .collect::<Vec<_>>()
        )
    );
    for sub in [dir.to_path_buf(), dir.join("ts")] {
        for e in std::fs::read_dir(&sub).expect("read the tree") {
            let name = e.expect("entry").file_name();
            let name = name.to_string_lossy();
            assert!(!name.ends_with(".tmp"), "{name} left behind");
        }
    }
    assert!(hls.trim_end().ends_with("#EXT-X-ENDLIST"), "{hls}");
    assert!(mpd.contains("type=\"static\""), "{mpd}");
    segs
}

fn frame_count(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Frame(_)))
        .count()
}

#[test]
fn a_packaged_stream_is_named_whole_and_muxed_by_parts() {
    for name in [
        "high_bframes_30",
        "open_gop_30",
        "intra_refresh_30",
        "res_change",
    ] {
        let dir = tempdir(name);
        let events = package(&stream(name), options(1000), &dir);
        let want = expected(&events);
        assert!(want.len() >= 2, "{name}: {} segments", want.len());
        let listed = check_playlists(&dir);
        assert_eq!(listed.len(), want.len(), "{name}: every segment listed");
        let parts = events
            .iter()
            .filter(|e| matches!(e, Event::Part(_)))
            .count();
        assert!(parts > want.len(), "{name}: several parts per segment");
        check_cmaf(&dir, &want, true);
        for (seq, (_, ts)) in &want {
            assert!(
                read(&dir.join(format!("ts/seg-{seq}.ts"))) == ts[..],
                "{name}: ts/seg-{seq}.ts is its TS parts joined"
            );
        }
        let pes = check_ts(&dir, want.keys().copied());
        assert_eq!(pes, frame_count(&events), "{name}: a PES packet per frame");
        // One init segment per codec config, named by the playlists.
        let configs = events
            .iter()
            .filter(|e| matches!(e, Event::Config(_)))
            .count();
        let (_, maps) = hls_files(&read_text(&dir.join("index.m3u8")));
        assert_eq!(maps.len(), configs, "{name}: {maps:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn segments_that_left_the_window_are_deleted() {
    let dir = tempdir("window");
    let data = stream("gop_varying_30");
    let events = package(&data, options(2), &dir);
    let want = expected(&events);
    assert!(want.len() >= 6, "{} segments", want.len());
    let listed = check_playlists(&dir);
    assert_eq!(listed.len(), 2);
    let last = *want.keys().last().expect("segments");
    // The window's two, and the two before them (one more window), stay.
    for seq in want.keys() {
        let kept = *seq + 4 > last;
        for f in [format!("seg-{seq}.m4s"), format!("ts/seg-{seq}.ts")] {
            assert_eq!(dir.join(&f).exists(), kept, "{f}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The events as a subscriber receives them: each frame without its NAL
/// spans and config id, each segment's record after its frames.
enum Received {
    Frame(Frame),
    Record(SegmentRecord),
}

fn received(events: &[Event]) -> Vec<Received> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(Received::Frame(Frame {
                nals: Vec::new(),
                config_id: 0,
                ..Frame::clone(f)
            })),
            Event::Segment(s) => Some(Received::Record(s.record.clone())),
            _ => None,
        })
        .collect()
}

/// Replays `got` into a tree at `dir`, writing each segment it can;
/// returns the segments written and the ones skipped.
fn replay(got: Vec<Received>, part_ms: u32, dir: &Path) -> (Vec<u64>, Vec<Skipped>) {
    let mut replay = Replay::new(part_ms);
    let mut tree = TreeWriter::create(dir).expect("create the tree");
    let mut events = Vec::new();
    let (mut written, mut skipped) = (Vec::new(), Vec::new());
    for r in got {
        match r {
            Received::Frame(f) => replay.frame(f),
            Received::Record(rec) => {
                let seq = rec.sequence;
                match replay.segment(rec, &mut events) {
                    Ok(_) => {
                        for e in events.drain(..) {
                            tree.handle(&e).expect("replayed event written");
                        }
                        assert!(tree.has_segment(seq));
                        written.push(seq);
                    }
                    Err(s) => skipped.push(s),
                }
            }
        }
    }
    assert_eq!(replay.held_frames(), 0);
    (written, skipped)
}

#[test]
fn a_subscription_from_the_start_replays_into_the_packaged_tree() {
    replays_into_the_packaged_tree(&["high_bframes_30", "res_change", "open_gop_30"]);
}

#[test]
fn an_hevc_subscription_from_the_start_replays_into_the_packaged_tree() {
    replays_into_the_packaged_tree(&["hevc_open_gop_30", "hevc_main10_2997"]);
}

fn replays_into_the_packaged_tree(names: &[&str]) {
    for &name in names {
        let (a, b) = (tempdir("pkg"), tempdir("replay"));
        let events = package(&stream(name), options(1000), &a);
        let want = expected(&events);
        let part_ms = PipelineOptions::default().effective_part_target_ms();
        let (written, skipped) = replay(received(&events), part_ms, &b);
        assert!(skipped.is_empty(), "{name}: {skipped:?}");
        assert_eq!(written, want.keys().copied().collect::<Vec<_>>());
        let mut files = 0;
        for seq in want.keys() {
            for f in [format!("seg-{seq}.m4s"), format!("ts/seg-{seq}.ts")] {
                assert!(
                    read(&a.join(&f)) == read(&b.join(&f)),
                    "{name}: {f} differs"
                );
                files += 1;
            }
        }
        let (_, maps) = hls_files(&read_text(&a.join("index.m3u8")));
        for init in maps {
            assert!(
                read(&a.join(&init)) == read(&b.join(&init)),
                "{name}: {init}"
            );
            files += 1;
        }
        assert!(files > 4);
        for d in [a, b] {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

#[test]
fn a_late_joiner_writes_a_tree_of_its_own_that_is_consistent() {
    let (a, b) = (tempdir("pkg"), tempdir("late"));
    let events = package(&stream("high_bframes_30"), options(1000), &a);
    let want = expected(&events);
    // Joins mid-segment 0: segment 0 is skipped (no keyframe), later ones
    // are written, their parts numbered from 0 and their TS counters from
    // the first one.
    let got: Vec<Received> = received(&events)
        .into_iter()
        .skip_while(|r| !matches!(r, Received::Frame(f) if f.index == 10))
        .collect();
    let part_ms = PipelineOptions::default().effective_part_target_ms();
    let (written, skipped) = replay(got, part_ms, &b);
    assert_eq!(skipped, vec![Skipped::NoKeyframe { segment: 0 }]);
    assert_eq!(written, want.keys().skip(1).copied().collect::<Vec<_>>());
    let later: BTreeMap<u64, (Vec<Bytes>, Bytes)> =
        want.iter().skip(1).map(|(k, v)| (*k, v.clone())).collect();
    check_cmaf(&b, &later, false);
    check_ts(&b, written.iter().copied());
    for seq in &written {
        // The same media, but for the chunks' numbers.
        let (x, y) = (
            read(&a.join(format!("seg-{seq}.m4s"))),
            read(&b.join(format!("seg-{seq}.m4s"))),
        );
        assert_eq!(x.len(), y.len());
        let mdats = |f: &[u8]| -> Vec<Vec<u8>> {
            boxes(f)
                .into_iter()
                .filter(|(k, _)| k == "mdat")
                .map(|(_, b)| b.to_vec())
                .collect()
        };
        assert_eq!(mdats(&x), mdats(&y));
    }
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn errors_name_the_file_and_the_segment() {
    // A directory that cannot be made: a file is in the way.
    let base = tempdir("errors");
    std::fs::create_dir_all(&base).expect("temp dir");
    let blocker = base.join("file");
    std::fs::write(&blocker, b"x").expect("write");
    let Err(e) = TreeWriter::create(blocker.join("tree")) else {
        panic!("a tree under a file");
    };
    assert!(matches!(e, TreeError::CreateDir { .. }), "{e}");
    assert!(e.path().starts_with(&blocker), "{e}");

    let events = package(
        &stream("baseline_30"),
        options(1000),
        &base.join("packaged"),
    );
    // A part whose config never arrived.
    let mut tree = TreeWriter::create(base.join("t1")).expect("create");
    let mut failed = None;
    for e in events.iter().filter(|e| !matches!(e, Event::Config(_))) {
        if let Err(err) = tree.handle(e) {
            failed = Some(err);
            break;
        }
    }
    let err = failed.expect("a part with no config fails");
    assert!(
        matches!(
            err,
            TreeError::UnknownConfig {
                segment: 0,
                part: 0,
                config: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.segment(), Some(0));
    assert!(err.path().ends_with("seg-0.m4s"), "{err}");
    assert!(err.to_string().contains("seg-0.m4s"), "{err}");

    // A part whose frames never arrived: that part and its segment fail,
    // the writer goes on with the next segment.
    let mut tree = TreeWriter::create(base.join("t2")).expect("create");
    let errors: Vec<TreeError> = events
        .iter()
        .filter(|e| !matches!(e, Event::Frame(f) if f.index == 3))
        .filter_map(|e| tree.handle(e).err())
        .collect();
    assert!(
        matches!(
            errors.first(),
            Some(TreeError::Frames {
                segment: 0,
                part: 0,
                first: 0,
                got: 3,
                ..
            })
        ),
        "{errors:?}"
    );
    assert!(
        matches!(
            errors.get(1),
            Some(TreeError::Incomplete { segment: 0, .. })
        ),
        "{errors:?}"
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(!tree.has_segment(0));
    assert!(tree.has_segment(1));
    assert!(!base.join("t2/seg-0.m4s").exists());

    // Manifests naming a segment the tree does not hold are not written.
    let mut pipeline = SessionPipeline::new(options(1000));
    let mut evs = Vec::new();
    pipeline.push(
        stream("baseline_30"),
        None,
        NOW_MS * 1_000_000,
        false,
        &mut evs,
    );
    let mut tree = TreeWriter::create(base.join("t3")).expect("create");
    let m = pipeline.manifests().expect("manifests");
    let err = tree
        .write_manifests(m, NOW_MS)
        .expect_err("nothing written yet");
    assert!(
        matches!(err, TreeError::NotWritten { segment: 0, .. }),
        "{err}"
    );
    assert!(!base.join("t3/index.m3u8").exists());
    let _ = std::fs::remove_dir_all(&base);
}

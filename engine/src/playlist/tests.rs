//! Shared test helpers, output validators (m3u8-rs, roxmltree) and the
//! randomized apply-equals-snapshot test.

use bytes::Bytes;

use super::time::extinf_rounded_secs;
use super::{ManifestState, ManifestUpdate, Manifests, PlaylistOptions};
use crate::frame::{CodecConfig, SegmentRecord};

/// 2026-11-25T12:00:00Z.
const PDT_BASE: u64 = 1_795_608_000_000;

/// A High-profile 720p30 config.
pub(super) fn cfg(id: u32) -> CodecConfig {
    CodecConfig {
        codec: Default::default(),
        hevc: None,
        id,
        sps: Bytes::from_static(&[0x67, 0x64, 0x00, 0x1f]),
        pps: vec![Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80])],
        width: 1280,
        height: 720,
        profile_idc: 0x64,
        profile_compat: 0,
        level_idc: 0x1f,
        chroma_format_idc: 1,
        bit_depth_luma_minus8: 0,
        bit_depth_chroma_minus8: 0,
        frame_rate_num: 30,
        frame_rate_den: 1,
    }
}

/// An aligned segment of config 0 in discontinuity sequence 0, whose
/// program date time follows its media time from [`PDT_BASE`].
pub(super) fn rec(sequence: u64, start: u64, duration: u64) -> SegmentRecord {
    SegmentRecord {
        sequence,
        start,
        duration,
        frame_count: 60,
        first_frame_index: sequence * 60,
        keyframe_aligned: true,
        sap_type: if true { 1 } else { 0 },
        discontinuity: false,
        discontinuity_sequence: 0,
        program_date_time_ms: PDT_BASE + start / 90,
        byte_size: 500_000,
        config_id: 0,
        composition_shift: 0,
        audio: None,
    }
}

/// One period of a parsed MPD.
#[derive(Debug)]
pub(super) struct ParsedPeriod {
    pub start_number: u64,
    pub pto: u64,
    /// (t, d) of each S.
    pub timeline: Vec<(u64, u64)>,
}

/// Parses an MPD with roxmltree and checks its structure; with
/// `contiguous`, also that each period's S entries meet exactly (t + d =
/// next t) and start at or after the period's presentationTimeOffset.
pub(super) fn check_mpd(text: &str, contiguous: bool) -> Vec<ParsedPeriod> {
    let doc = roxmltree::Document::parse(text).expect("MPD is well-formed XML");
    let mpd = doc.root_element();
    assert!(mpd.has_tag_name("MPD"));
    let kind = mpd.attribute("type").unwrap();
    assert!(kind == "dynamic" || kind == "static");
    for a in [
        "availabilityStartTime",
        "publishTime",
        "minBufferTime",
        "profiles",
    ] {
        assert!(mpd.attribute(a).is_some(), "missing {a}");
    }
    if kind == "dynamic" {
        assert!(mpd.attribute("minimumUpdatePeriod").is_some());
        assert!(mpd.attribute("timeShiftBufferDepth").is_some());
    } else {
        assert!(mpd.attribute("mediaPresentationDuration").is_some());
    }
    let utc = mpd.children().rfind(|n| n.is_element()).expect("children");
    assert!(utc.has_tag_name("UTCTiming"), "UTCTiming after the periods");
    let mut out = Vec::new();
    for period in mpd.children().filter(|n| n.has_tag_name("Period")) {
        let tmpl = period
            .descendants()
            .find(|n| n.has_tag_name("SegmentTemplate"))
            .expect("SegmentTemplate");
        assert_eq!(tmpl.attribute("timescale"), Some("90000"));
        assert_eq!(tmpl.attribute("media"), Some("seg-$Number$.m4s"));
        let rep = period
            .descendants()
            .find(|n| n.has_tag_name("Representation"))
            .unwrap();
        assert!(rep.attribute("bandwidth").unwrap().parse::<u64>().unwrap() >= 1);
        let num = |name: &str| tmpl.attribute(name).unwrap().parse::<u64>().unwrap();
        let timeline: Vec<(u64, u64)> = tmpl
            .descendants()
            .filter(|n| n.has_tag_name("S"))
            .map(|s| {
                assert!(s.attribute("r").is_none());
                let v = |a| s.attribute(a).unwrap().parse::<u64>().unwrap();
                (v("t"), v("d"))
            })
            .collect();
        assert!(!timeline.is_empty(), "no empty periods");
        let p = ParsedPeriod {
            start_number: num("startNumber"),
            pto: num("presentationTimeOffset"),
            timeline,
        };
        if contiguous {
            assert!(p.timeline[0].0 >= p.pto);
            for w in p.timeline.windows(2) {
                assert_eq!(w[0].0 + w[0].1, w[1].0, "S entries meet exactly");
            }
        }
        out.push(p);
    }
    out
}

/// EXTINF values of a playlist, in microseconds (parsed without floats).
fn extinf_micros(text: &str) -> Vec<u128> {
    text.lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|v| {
            let v = v.trim_end_matches(',');
            let (s, f) = v.split_once('.').unwrap();
            assert_eq!(f.len(), 6, "six decimals");
            s.parse::<u128>().unwrap() * 1_000_000 + f.parse::<u128>().unwrap()
        })
        .collect()
}

fn header(text: &str, tag: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(tag)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{tag} missing"))
        .parse()
        .unwrap()
}

/// Checks a rendered HLS playlist against the window it came from: parses
/// with m3u8-rs and holds the RFC 8216 rules. `strict`: records are well
/// formed (contiguous sequences, consistent discontinuity numbering).
fn check_hls(text: &str, m: &Manifests, cmaf: bool, strict: bool) {
    let recs: Vec<&SegmentRecord> = m.segments().collect();
    let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("media playlist");
    assert_eq!(pl.version, Some(if cmaf { 7 } else { 3 }));
    assert_eq!(pl.segments.len(), recs.len());
    assert_eq!(pl.media_sequence, m.media_sequence());
    assert_eq!(pl.end_list, m.is_ended());
    // Stated while every segment so far was independent, never again after.
    assert_eq!(pl.independent_segments, m.independent_segments());
    if pl.independent_segments {
        assert!(recs.iter().all(|r| r.keyframe_aligned));
    }
    let target = header(text, "#EXT-X-TARGETDURATION");
    assert_eq!(pl.target_duration, target);
    for (seg, r) in pl.segments.iter().zip(&recs) {
        let ext = if cmaf { "m4s" } else { "ts" };
        assert_eq!(seg.uri, format!("seg-{}.{ext}", r.sequence));
        assert_eq!(seg.discontinuity, r.discontinuity);
        let exact = r.duration as f64 / 90_000.0;
        assert!((f64::from(seg.duration) - exact).abs() <= exact * 1e-6 + 1e-6);
        // (Past year 9999 the stamp is clamped.)
        let pdt = seg.program_date_time.expect("PROGRAM-DATE-TIME");
        let ms = u64::try_from(pdt.timestamp_millis()).unwrap();
        assert_eq!(ms, r.program_date_time_ms.min(253_402_300_799_999));
        if !cmaf {
            assert!(seg.map.is_none());
        }
    }
    if cmaf {
        assert!(pl.segments.first().is_none_or(|s| s.map.is_some()));
    }
    // Every rounded EXTINF <= target duration (on the printed text): the
    // segmenter never makes a longer segment (hostile records may be).
    for us in extinf_micros(text).into_iter().filter(|_| strict) {
        assert!(
            (us + 500_000) / 1_000_000 <= u128::from(target),
            "{us} us > {target} s"
        );
    }
    // The first segment's MAP is its own config's init segment, and a MAP
    // appears before each config change.
    if cmaf {
        let mut cur: Option<String> = None;
        let mut i = 0;
        for line in text.lines() {
            if let Some(uri) = line.strip_prefix("#EXT-X-MAP:URI=") {
                cur = Some(uri.trim_matches('"').to_owned());
            } else if line.starts_with("seg-") {
                let want = format!("init-{}.mp4", recs[i].config_id);
                assert_eq!(cur.as_deref(), Some(want.as_str()));
                i += 1;
            }
        }
    }
    if strict {
        // RFC 8216 6.2.1: a segment's discontinuity number is the header
        // value plus the DISCONTINUITY tags before it.
        let mut dseq = header(text, "#EXT-X-DISCONTINUITY-SEQUENCE");
        for (seg, r) in pl.segments.iter().zip(&recs) {
            dseq += u64::from(seg.discontinuity);
            assert_eq!(dseq, r.discontinuity_sequence);
        }
        for w in recs.windows(2) {
            assert_eq!(w[0].sequence + 1, w[1].sequence);
        }
    }
}

/// Deterministic xorshift64* generator (no rand dependency).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A client that joined at some point and keeps its copies with edits.
struct Client {
    cmaf: ManifestState,
    ts: ManifestState,
    dash: ManifestState,
}

impl Client {
    fn join(m: &Manifests, now_ms: u64) -> Self {
        Self {
            cmaf: m.hls_cmaf(),
            ts: m.hls_ts(),
            dash: m.dash(now_ms),
        }
    }
    fn apply(&mut self, u: &ManifestUpdate) {
        self.cmaf.apply(&u.hls_cmaf);
        self.ts.apply(&u.hls_ts);
        self.dash.apply(&u.dash);
    }
    /// Equal as states (same entry boundaries, so later removals line up),
    /// hence equal as text.
    fn assert_current(&self, m: &Manifests, now_ms: u64) {
        assert_eq!(self.cmaf, m.hls_cmaf());
        assert_eq!(self.ts, m.hls_ts());
        assert_eq!(self.dash, m.dash(now_ms));
        assert_eq!(self.dash.render(), m.dash(now_ms).render());
    }
}

/// A record from a well-behaved engine: contiguous sequence and media time,
/// random durations, occasional discontinuities and config changes.
struct Stream {
    seq: u64,
    start: u64,
    dseq: u64,
    config: u32,
    /// The longest segment the segmenter would make, 90 kHz.
    max_ticks: u64,
}

impl Stream {
    fn next(&mut self, rng: &mut Rng, pdt_base: u64) -> SegmentRecord {
        let duration = match rng.below(20) {
            0 => rng.below(2_000_000), // anything up to ~22 s (sparse keyframes)
            1 if rng.chance(20) => 0,
            2 => rng.below(200_000),
            _ => rng.pick(&[3003u64, 3000, 1501, 3600]) * (30 + rng.below(61)),
        }
        .min(self.max_ticks);
        let independent = !rng.chance(5);
        let discontinuity = rng.chance(8);
        if discontinuity {
            self.dseq += 1;
        }
        if rng.chance(8) {
            self.config += 1;
        }
        let r = SegmentRecord {
            sequence: self.seq,
            start: self.start,
            duration,
            frame_count: 60,
            first_frame_index: self.seq * 60,
            keyframe_aligned: independent,
            sap_type: if independent { 1 } else { 0 },
            discontinuity,
            discontinuity_sequence: self.dseq,
            program_date_time_ms: pdt_base + self.start / 90,
            byte_size: rng.below(5_000_000),
            config_id: self.config,
            composition_shift: 0,
            audio: None,
        };
        self.seq += 1;
        self.start += duration;
        r
    }
}

/// Hostile records, as garbage from the network could produce: repeated,
/// backwards and gapped sequences, extreme times and sizes.
fn hostile(rng: &mut Rng, last_seq: &mut u64) -> SegmentRecord {
    fn extreme(rng: &mut Rng) -> u64 {
        match rng.below(6) {
            0 => 0,
            1 => u64::MAX,
            2 => u64::MAX - rng.below(1000),
            _ => {
                let bits = rng.below(64);
                rng.below(1 << bits)
            }
        }
    }
    *last_seq = match rng.below(6) {
        0 => last_seq.saturating_sub(rng.below(3)),
        1 => last_seq.saturating_add(rng.below(5)),
        2 => extreme(rng),
        _ => last_seq.saturating_add(1),
    };
    SegmentRecord {
        sequence: *last_seq,
        start: extreme(rng),
        duration: extreme(rng),
        frame_count: rng.below(u64::from(u32::MAX)) as u32,
        first_frame_index: extreme(rng),
        keyframe_aligned: rng.chance(50),
        sap_type: if rng.chance(50) { 1 } else { 0 },
        discontinuity: rng.chance(30),
        discontinuity_sequence: extreme(rng),
        program_date_time_ms: extreme(rng),
        byte_size: extreme(rng),
        config_id: rng.pick(&[0, 1, 2, u32::MAX]),
        composition_shift: rng.below(u64::from(u32::MAX)) as u32,
        audio: None,
    }
}

/// Pushes `steps` segments (then ends), keeping late-joining clients and
/// checking after every update that each client's copy equals the
/// snapshot. `validate`: also parse and check every snapshot.
fn run(seed: u64, steps: usize, is_hostile: bool, validate: bool) {
    let mut rng = Rng::new(seed);
    let opts = PlaylistOptions {
        target_segment_ms: rng.pick(&[0, 1000, 2000, 2002, 2500, 6000]),
        max_segment_ms: rng.pick(&[0, 6000, 20000]),
        window: rng.below(9) as usize,
        max_window_bytes: rng.pick(&[u64::MAX, 5000, 20000]),
        utc_timing_url: rng.pick(&["/time", "https://o.example/t?a=1&b=2"]).into(),
        ..Default::default()
    };
    let window = opts.window.max(1);
    let max_ticks = u64::from(opts.max_segment_ms.max(opts.target_segment_ms).max(1000)) * 90;
    let ast = PDT_BASE - rng.below(1 << 40);
    let mut m = Manifests::new(opts, ast);
    let mut now = ast;
    let mut clients = vec![Client::join(&m, now)];
    let mut stream = Stream {
        seq: rng.below(3) * 1000,
        start: 0,
        dseq: 0,
        config: 0,
        max_ticks,
    };
    let mut last_seq = 0;
    let mut prev_target = header(&m.hls_ts().render(), "#EXT-X-TARGETDURATION");
    let mut prev_ms = m.media_sequence();
    for step in 0..=steps {
        let ending = step == steps;
        let u = if ending {
            now += rng.below(5000);
            m.end(now)
        } else {
            let r = if is_hostile {
                hostile(&mut rng, &mut last_seq)
            } else {
                stream.next(&mut rng, ast)
            };
            now = now.saturating_add(r.duration.min(1 << 40) / 90 + rng.below(300));
            let config = cfg(r.config_id);
            m.push(r, &config, now)
        };
        for c in &mut clients {
            c.apply(&u);
            c.assert_current(&m, now);
        }
        if rng.chance(15) {
            clients.push(Client::join(&m, now));
        }
        if clients.len() > 4 {
            clients.remove(1);
        }

        // Rules that hold for any input.
        assert_eq!(u.media_sequence, m.media_sequence());
        assert_eq!(u.ended, m.is_ended());
        assert_eq!(ending, u.segment_sequence.is_none());
        assert!(m.segments().count() <= window);
        assert!(
            m.media_sequence() >= prev_ms,
            "media sequence never decreases"
        );
        let text = m.hls_cmaf().render();
        let target = header(&text, "#EXT-X-TARGETDURATION");
        assert!(target >= prev_target, "target duration never decreases");
        if !is_hostile {
            for r in m.segments() {
                assert!(extinf_rounded_secs(r.duration) <= target);
            }
        }
        assert_eq!(text.contains("#EXT-X-ENDLIST"), ending);
        if !is_hostile && step > 0 {
            assert_eq!(m.media_sequence() - prev_ms, u64::from(u.removed));
        }
        if validate {
            check_hls(&text, &m, true, !is_hostile);
            check_hls(&m.hls_ts().render(), &m, false, !is_hostile);
            let periods = check_mpd(&m.dash(now).render(), !is_hostile);
            let total: usize = periods.iter().map(|p| p.timeline.len()).sum();
            assert_eq!(total, m.segments().count());
            // startNumber + index addresses the right segment file.
            let mut recs = m.segments();
            for p in &periods {
                for (i, &(t, d)) in p.timeline.iter().enumerate() {
                    let r = recs.next().unwrap();
                    assert_eq!((t, d), (r.start, r.duration));
                    assert_eq!(p.start_number + i as u64, r.sequence);
                }
            }
        }
        prev_target = target;
        prev_ms = m.media_sequence();
    }
}

#[test]
fn apply_equals_snapshot_randomized() {
    for seed in 0..300 {
        run(seed, 60, false, seed < 60);
    }
}

#[test]
fn apply_equals_snapshot_long_stream() {
    run(0xDEC0DE, 3000, false, false);
    run(0xC0FFEE, 400, false, true);
}

#[test]
fn hostile_records_never_panic_and_keep_the_invariant() {
    for seed in 0..300 {
        run(seed ^ 0xBAD, 40, true, seed < 40);
    }
}

#[test]
fn apply_tolerates_oversized_removal() {
    let mut s = ManifestState {
        head: "h".into(),
        entries: ["a".to_owned(), "b".to_owned()].into(),
        tail: "t".into(),
    };
    s.apply(&super::ManifestEdit {
        head: "H".into(),
        remove_entries: u32::MAX,
        append_entries: vec!["c".into()],
        tail: "T".into(),
    });
    assert_eq!(s.render(), "HcT");
}

#[test]
fn empty_manifests_render() {
    let m = Manifests::new(PlaylistOptions::default(), PDT_BASE);
    assert_eq!(m.media_sequence(), 0);
    let pl = m3u8_rs::parse_media_playlist_res(m.hls_cmaf().render().as_bytes()).unwrap();
    assert!(pl.segments.is_empty());
    // Fixed by the longest segment the segmenter makes (3 x 2 s).
    assert_eq!(pl.target_duration, 6);
    let text = m.dash(PDT_BASE).render();
    roxmltree::Document::parse(&text).unwrap();
}

#[test]
fn replayed_segment_is_ignored() {
    let mut m = Manifests::new(PlaylistOptions::default(), PDT_BASE);
    m.push(rec(5, 0, 180_180), &cfg(0), PDT_BASE);
    let before = (m.hls_cmaf(), m.dash(PDT_BASE));
    let u = m.push(rec(5, 0, 180_180), &cfg(0), PDT_BASE);
    assert_eq!((u.removed, u.hls_cmaf.append_entries.len()), (0, 0));
    let u = m.push(rec(4, 0, 180_180), &cfg(0), PDT_BASE);
    assert_eq!(u.dash.remove_entries, 0);
    assert_eq!((m.hls_cmaf(), m.dash(PDT_BASE)), before);
}

/// A copy that starts at a later segment ([`Manifests::continue_from`] with
/// that segment's place in the original) renders what the original does
/// once both windows hold the same segments: period ids and starts
/// included, across a config change (a new period) before and after the
/// join.
#[test]
fn a_copy_continued_from_a_segment_renders_the_same() {
    let opts = PlaylistOptions {
        window: 3,
        ..PlaylistOptions::default()
    };
    let d = 180_180;
    let recs: Vec<(SegmentRecord, u32)> = (0..12u64)
        .map(|i| {
            // Config 1 from segment 2, config 2 from segment 9.
            let config = match i {
                0..=1 => 0,
                2..=8 => 1,
                _ => 2,
            };
            let mut r = rec(i, i * d, d);
            r.config_id = config;
            (r, config)
        })
        .collect();
    let mut original = Manifests::new(opts.clone(), PDT_BASE);
    let mut copy = Manifests::new(opts.clone(), PDT_BASE);
    let mut naive = Manifests::new(opts, PDT_BASE);
    for (r, c) in &recs {
        original.push(r.clone(), &cfg(*c), PDT_BASE);
        if r.sequence == 5 {
            let place = original.place_of(5).expect("segment 5 is in the window");
            assert_eq!((place.period_id, place.period_start), (1, 2 * d));
            copy.continue_from(place);
        }
        if r.sequence >= 5 {
            copy.push(r.clone(), &cfg(*c), PDT_BASE);
            naive.push(r.clone(), &cfg(*c), PDT_BASE);
        }
        if r.sequence >= 7 {
            assert_eq!(
                copy.dash(PDT_BASE),
                original.dash(PDT_BASE),
                "at {}",
                r.sequence
            );
            assert_eq!(copy.hls_cmaf(), original.hls_cmaf(), "at {}", r.sequence);
        }
    }
    // Without it the period would be renumbered and moved.
    assert_ne!(
        naive.dash(PDT_BASE).render(),
        original.dash(PDT_BASE).render()
    );
}

/// 48 kHz stereo AAC-LC.
fn audio_cfg() -> crate::frame::AudioConfig {
    crate::audio::config::parse_asc(&[0x11, 0x90]).unwrap()
}

/// `rec` with the audio span of its media time (48 kHz, frames of 1,024
/// samples; spans meet exactly, as the engine makes them).
fn av_rec(sequence: u64, start: u64, duration: u64, audio_start: &mut u64) -> SegmentRecord {
    let mut r = rec(sequence, start, duration);
    let end = (start + duration) * 48_000 / 90_000;
    let frames = (end.saturating_sub(*audio_start) + 512) / 1024;
    r.audio = Some(crate::frame::AudioSpan {
        first_frame_index: *audio_start / 1024,
        frame_count: frames as u32,
        start: *audio_start,
        duration: frames * 1024,
        byte_size: frames * 300,
        config_id: 0,
    });
    *audio_start += frames * 1024;
    r
}

/// A session with audio: the audio playlist and the MPD (audio in the
/// tail) kept by edits equal the fresh renderings; the audio playlist, the
/// multivariant playlist and the MPD are valid and say what they carry.
#[test]
fn audio_manifests_follow_the_edit_model_and_validate() {
    let a = audio_cfg();
    let mut m = Manifests::new(
        PlaylistOptions {
            window: 4,
            ..Default::default()
        },
        PDT_BASE,
    );
    let mut audio_at = 0;
    let mut t = 0;
    let (mut hls_audio, mut dash) = (m.hls_audio(), m.dash(PDT_BASE));
    for i in 0..8u64 {
        let d = 180_180 + (i % 3) * 3003;
        let mut r = av_rec(i, t, d, &mut audio_at);
        r.config_id = u32::from(i >= 5);
        r.discontinuity = i == 5;
        t += d;
        let u = m.push_av(r, Some(&cfg(u32::from(i >= 5))), Some(&a), PDT_BASE);
        hls_audio.apply(&u.hls_audio);
        dash.apply(&u.dash);
        assert_eq!(hls_audio, m.hls_audio(), "after segment {i}");
        assert_eq!(
            dash.render(),
            m.dash(PDT_BASE).render(),
            "after segment {i}"
        );
    }
    let text = m.hls_audio().render();
    let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("audio playlist parses");
    assert_eq!(parsed.segments.len(), 4);
    assert!(text.contains("#EXT-X-MAP:URI=\"audio-init.mp4\""), "{text}");
    assert!(text.contains("audio-7.m4s"), "{text}");
    for (seg, w) in parsed.segments.iter().zip(m.segments()) {
        let span = w.audio.as_ref().unwrap();
        let want = span.duration as f64 / 48_000.0;
        assert!(
            (f64::from(seg.duration) - want).abs() < 1e-5,
            "{} vs {want}",
            seg.duration
        );
    }
    let master = m.hls_multivariant(false).unwrap();
    assert!(
        master.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\""),
        "{master}"
    );
    assert!(
        master.contains("CODECS=\"avc1.64001f,mp4a.40.2\""),
        "{master}"
    );
    assert!(
        master.contains(",AUDIO=\"audio\"\nindex.m3u8\n"),
        "{master}"
    );
    let ts_master = m.hls_multivariant(true).unwrap();
    assert!(!ts_master.contains("EXT-X-MEDIA"), "{ts_master}");
    assert!(ts_master.contains("mp4a.40.2"), "{ts_master}");
    // The MPD: two periods, each with a video and an audio set whose S
    // entries are the spans and meet exactly.
    let text = m.dash(PDT_BASE).render();
    check_mpd(&text, true);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let sets: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("AdaptationSet") && n.attribute("contentType") == Some("audio"))
        .collect();
    assert_eq!(sets.len(), 2, "{text}");
    for set in sets {
        let tmpl = set
            .descendants()
            .find(|n| n.has_tag_name("SegmentTemplate"))
            .unwrap();
        assert_eq!(tmpl.attribute("timescale"), Some("48000"));
        assert_eq!(tmpl.attribute("media"), Some("audio-$Number$.m4s"));
        let s: Vec<(u64, u64)> = tmpl
            .descendants()
            .filter(|n| n.has_tag_name("S"))
            .map(|n| {
                let v = |a| n.attribute(a).unwrap().parse::<u64>().unwrap();
                (v("t"), v("d"))
            })
            .collect();
        assert!(!s.is_empty());
        for w in s.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0);
        }
    }
    // Low latency: the audio playlist lists the parts of the audio.
    m.end(PDT_BASE);
    assert!(m.hls_audio().render().ends_with("#EXT-X-ENDLIST\n"));
}

/// An audio-only session: the MPD has one audio set whose S lines are the
/// entries; the multivariant playlist names the audio playlist.
#[test]
fn audio_only_manifests() {
    let a = audio_cfg();
    let mut m = Manifests::new(PlaylistOptions::default(), PDT_BASE);
    let mut dash = m.dash(PDT_BASE);
    let mut audio_at = 0;
    for i in 0..4u64 {
        let mut r = av_rec(i, i * 180_000, 180_000, &mut audio_at);
        r.frame_count = 0;
        r.byte_size = 0;
        let u = m.push_av(r, None, Some(&a), PDT_BASE);
        dash.apply(&u.dash);
        assert_eq!(dash, m.dash(PDT_BASE));
    }
    let text = m.dash(PDT_BASE).render();
    let doc = roxmltree::Document::parse(&text).expect("well-formed");
    assert!(!text.contains("contentType=\"video\""), "{text}");
    assert_eq!(
        doc.descendants().filter(|n| n.has_tag_name("S")).count(),
        4,
        "{text}"
    );
    let master = m.hls_multivariant(false).unwrap();
    assert!(
        master.contains("CODECS=\"mp4a.40.2\"\naudio.m3u8"),
        "{master}"
    );
    assert_eq!(m.hls_audio().entries.len(), 4);
}

//! Manifest history: records every version of a live session's manifests
//! (HLS over CMAF, HLS over MPEG-TS, DASH) and checks that each is a legal
//! successor of the one before it — what RFC 8216 §6.2.2 and ISO/IEC
//! 23009-1 §5.4 allow a live manifest to do, and nothing more:
//!
//! - HLS: `EXT-X-TARGETDURATION` and `EXT-X-VERSION` never change; the
//!   media sequence never decreases; a segment listed in two versions is
//!   listed identically (URI, duration, date-time, discontinuity); segments
//!   leave only from the front and arrive only at the back; the
//!   discontinuity sequence grows exactly by the discontinuity tags that
//!   left; `EXT-X-ENDLIST`, once there, stays; every rounded `EXTINF` fits
//!   the target duration.
//! - Low-latency HLS: `EXT-X-PART-INF` never changes; every part fits
//!   `PART-TARGET`; a complete segment's parts add up to its `EXTINF`. Parts
//!   are listed for the segment in progress and the last few complete ones:
//!   a part, once listed, stays listed identically in place until its
//!   segment is old enough to lose all of its parts at once (or leaves);
//!   the segment in progress only gains parts (at the end), and once it is
//!   complete it keeps exactly the parts it had plus those closed with it.
//!   Parts are never added to a segment listed complete before. The
//!   closed playlist (`EXT-X-ENDLIST`) may drop the low-latency tags and
//!   parts altogether: they serve live players only.
//! - DASH: `availabilityStartTime` and `maxSegmentDuration` never change; a
//!   Period present in two versions keeps its `@start`,
//!   `presentationTimeOffset`, codec string, size, frame rate and init
//!   segment; a segment number keeps its `S@t`/`@d`; the switch to `static`
//!   happens once and states `mediaPresentationDuration` = the end of the
//!   last segment.

use std::collections::BTreeMap;

/// One HLS media playlist, parsed into what the rules talk about.
#[derive(Clone, Debug, PartialEq)]
pub struct Hls {
    pub version: u64,
    pub target_duration: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub independent: bool,
    pub ended: bool,
    /// (sequence, uri, EXTINF text, PDT text, discontinuity) per segment.
    pub segments: Vec<(u64, String, String, String, bool)>,
    /// `EXT-X-PART-INF` line, if any.
    pub part_inf: Option<String>,
    /// The `EXT-X-PART` lines of each segment that lists parts, by media
    /// sequence (the segment in progress is the one after the last).
    pub parts: BTreeMap<u64, Vec<String>>,
}

impl Hls {
    /// Media sequence of the segment in progress (after the last listed).
    pub fn open_segment(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }
}

/// `DURATION=` of an `EXT-X-PART` line, seconds.
pub fn part_duration(line: &str) -> f64 {
    line.split(['=', ','])
        .skip_while(|t| !t.ends_with("DURATION"))
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::MAX)
}

pub fn parse_hls(text: &str) -> Hls {
    let mut h = Hls {
        version: 0,
        target_duration: 0,
        media_sequence: 0,
        discontinuity_sequence: 0,
        independent: false,
        ended: false,
        segments: Vec::new(),
        part_inf: None,
        parts: BTreeMap::new(),
    };
    let (mut extinf, mut pdt, mut disc) = (String::new(), String::new(), false);
    let num = |l: &str, tag: &str| -> Option<u64> { l.strip_prefix(tag)?.trim().parse().ok() };
    for l in text.lines() {
        if let Some(v) = num(l, "#EXT-X-VERSION:") {
            h.version = v;
        } else if let Some(v) = num(l, "#EXT-X-TARGETDURATION:") {
            h.target_duration = v;
        } else if let Some(v) = num(l, "#EXT-X-MEDIA-SEQUENCE:") {
            h.media_sequence = v;
        } else if let Some(v) = num(l, "#EXT-X-DISCONTINUITY-SEQUENCE:") {
            h.discontinuity_sequence = v;
        } else if l.starts_with("#EXT-X-PART-INF:") {
            h.part_inf = Some(l.to_string());
        } else if l.starts_with("#EXT-X-PART:") {
            let seq = h.media_sequence + h.segments.len() as u64;
            h.parts.entry(seq).or_default().push(l.to_string());
        } else if l == "#EXT-X-INDEPENDENT-SEGMENTS" {
            h.independent = true;
        } else if l == "#EXT-X-ENDLIST" {
            h.ended = true;
        } else if l == "#EXT-X-DISCONTINUITY" {
            disc = true;
        } else if let Some(v) = l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = v.to_string();
        } else if let Some(v) = l.strip_prefix("#EXTINF:") {
            extinf = v.trim_end_matches(',').to_string();
        } else if !l.starts_with('#') && !l.is_empty() {
            let seq = h.media_sequence + h.segments.len() as u64;
            h.segments.push((
                seq,
                l.to_string(),
                std::mem::take(&mut extinf),
                std::mem::take(&mut pdt),
                std::mem::take(&mut disc),
            ));
        }
    }
    h
}

/// Checks that `next` is a legal successor of `prev` (both parsed from the
/// same playlist URL); panics naming the broken rule and `what`.
pub fn check_hls_successor(prev: &Hls, next: &Hls, what: &str) {
    assert_eq!(next.version, prev.version, "{what}: EXT-X-VERSION changed");
    assert_eq!(
        next.target_duration, prev.target_duration,
        "{what}: EXT-X-TARGETDURATION changed"
    );
    assert!(
        next.media_sequence >= prev.media_sequence,
        "{what}: media sequence went back"
    );
    assert!(!prev.ended || next.ended, "{what}: EXT-X-ENDLIST removed");
    if prev.ended {
        assert_eq!(next, prev, "{what}: a closed playlist changed");
    }
    // The segments still listed are listed identically and in place.
    let removed = (next.media_sequence - prev.media_sequence) as usize;
    let kept = &prev.segments[removed.min(prev.segments.len())..];
    assert!(
        next.segments.len() >= kept.len(),
        "{what}: segments vanished from the middle or end"
    );
    assert_eq!(
        &next.segments[..kept.len()],
        kept,
        "{what}: a listed segment changed"
    );
    // Discontinuity sequence: grows by the tags that left the front.
    let gone = &prev.segments[..removed.min(prev.segments.len())];
    let left = gone.iter().filter(|s| s.4).count() as u64;
    if removed <= prev.segments.len() {
        assert_eq!(
            next.discontinuity_sequence,
            prev.discontinuity_sequence + left,
            "{what}: EXT-X-DISCONTINUITY-SEQUENCE"
        );
    }
    assert!(
        !next.independent || prev.independent || prev.segments.is_empty(),
        "{what}: EXT-X-INDEPENDENT-SEGMENTS came back"
    );
    check_parts_successor(prev, next, what);
    check_hls_alone(next, what);
}

/// The part rules between two versions (see the module docs).
fn check_parts_successor(prev: &Hls, next: &Hls, what: &str) {
    if next.ended && !prev.ended && next.part_inf.is_none() && next.parts.is_empty() {
        return; // closed: the regular playlist
    }
    assert_eq!(
        next.part_inf, prev.part_inf,
        "{what}: EXT-X-PART-INF changed"
    );
    let complete = |h: &Hls, seq: u64| seq >= h.media_sequence && seq < h.open_segment();
    for (seq, before) in &prev.parts {
        if *seq < next.media_sequence {
            continue; // the segment left
        }
        let now = next.parts.get(seq);
        match now {
            // Parts leave a segment all at once, and only a complete one.
            None => assert!(
                complete(next, *seq) && complete(prev, *seq),
                "{what}: the parts of segment {seq} vanished while it was in progress \
                 or as it completed"
            ),
            Some(now) => {
                assert!(
                    now.len() >= before.len() && now[..before.len()] == before[..],
                    "{what}: a listed part of segment {seq} changed or vanished"
                );
                if complete(prev, *seq) {
                    assert_eq!(
                        now, before,
                        "{what}: parts added to segment {seq}, complete before"
                    );
                }
            }
        }
    }
    for seq in next.parts.keys() {
        assert!(
            prev.parts.contains_key(seq) || !complete(prev, *seq),
            "{what}: parts added to segment {seq}, listed complete without them before"
        );
    }
}

/// The part rules of one low-latency playlist. `timeline_gaps`: frames were
/// dropped from the timeline (damaged references, up to the next keyframe),
/// so a part may span the gap and be longer than `PART-TARGET` (stated as it
/// is); otherwise every part must fit it.
pub fn check_parts_alone(h: &Hls, what: &str, timeline_gaps: bool) {
    if !h.parts.is_empty() {
        let target: f64 = h
            .part_inf
            .as_deref()
            .and_then(|l| l.strip_prefix("#EXT-X-PART-INF:PART-TARGET="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{what}: EXT-X-PART without EXT-X-PART-INF"));
        for (seq, parts) in &h.parts {
            for p in parts {
                assert!(
                    timeline_gaps || part_duration(p) <= target + 1e-9,
                    "{what}: {p} (segment {seq}) is longer than PART-TARGET {target}"
                );
            }
            if let Some(s) = h.segments.iter().find(|s| s.0 == *seq) {
                let sum: f64 = parts.iter().map(|p| part_duration(p)).sum();
                let extinf: f64 = s.2.parse().unwrap_or(f64::MAX);
                assert!(
                    (sum - extinf).abs() < 1e-5 * (parts.len() as f64 + 1.0),
                    "{what}: the parts of segment {seq} add up to {sum}, its EXTINF is {extinf}"
                );
            }
        }
    }
}

/// Rules one playlist must hold by itself.
pub fn check_hls_alone(h: &Hls, what: &str) {
    assert!(h.target_duration >= 1, "{what}: target duration");
    for s in &h.segments {
        let secs: f64 = s.2.parse().unwrap_or(f64::MAX);
        assert!(
            (secs + 0.5).floor() as u64 <= h.target_duration,
            "{what}: EXTINF {} of {} rounds above EXT-X-TARGETDURATION {}",
            s.2,
            s.1,
            h.target_duration
        );
    }
}

/// A DASH Period as the rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Period {
    pub start: String,
    pub pto: String,
    pub codecs: String,
    pub width: String,
    pub height: String,
    pub frame_rate: String,
    pub init: String,
    pub start_with_sap: Option<String>,
    /// Segment number → (t, d).
    pub segments: BTreeMap<u64, (u64, u64)>,
    /// Where the audio AdaptationSet's last segment ends, 90 kHz (a session
    /// with audio: it may run on a little past the last video frame).
    pub audio_end: Option<u64>,
    /// Low-latency: the segments listed ahead (the `S` with `r`, which only
    /// the segment in progress and the one after it are written with).
    pub predicted: Vec<u64>,
    /// The `SegmentTemplate@timescale` of `segments` and `pto` (90 kHz for
    /// video; an audio-only session's is its sampling rate).
    pub timescale: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mpd {
    pub dynamic: bool,
    pub availability_start: String,
    pub max_segment_duration: String,
    pub media_presentation_duration: Option<String>,
    pub periods: BTreeMap<String, Period>,
    /// Low-latency (`availabilityTimeComplete="false"`): the last `S` is
    /// the segment in progress, listed with a predicted duration.
    pub low_latency: bool,
}

pub fn parse_mpd(text: &str) -> Mpd {
    let doc = roxmltree::Document::parse(text).expect("MPD is XML");
    let root = doc.root_element();
    let attr = |n: roxmltree::Node, a: &str| n.attribute(a).unwrap_or("").to_string();
    let mut periods = BTreeMap::new();
    let mut low_latency = false;
    for p in root.children().filter(|n| n.has_tag_name("Period")) {
        let aset = p
            .children()
            .find(|n| n.has_tag_name("AdaptationSet"))
            .expect("AdaptationSet");
        let rep = aset
            .children()
            .find(|n| n.has_tag_name("Representation"))
            .expect("Representation");
        let tpl = rep
            .children()
            .find(|n| n.has_tag_name("SegmentTemplate"))
            .expect("SegmentTemplate");
        low_latency |= tpl.attribute("availabilityTimeComplete") == Some("false");
        let start_number: u64 = tpl
            .attribute("startNumber")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut segments = BTreeMap::new();
        let mut predicted = Vec::new();
        if let Some(tl) = tpl.children().find(|n| n.has_tag_name("SegmentTimeline")) {
            let mut number = start_number;
            let mut t = 0u64;
            for s in tl.children().filter(|n| n.has_tag_name("S")) {
                if let Some(v) = s.attribute("t") {
                    t = v.parse().expect("S@t");
                }
                let d: u64 = s.attribute("d").expect("S@d").parse().expect("S@d");
                let r: u64 = s.attribute("r").map_or(0, |v| v.parse().expect("S@r"));
                for _ in 0..=r {
                    if s.attribute("r").is_some() {
                        predicted.push(number);
                    }
                    segments.insert(number, (t, d));
                    number += 1;
                    t += d;
                }
            }
        }
        let audio_end = p
            .children()
            .filter(|n| n.has_tag_name("AdaptationSet"))
            .find(|n| n.attribute("contentType") == Some("audio"))
            .and_then(|a| a.descendants().find(|n| n.has_tag_name("SegmentTemplate")))
            .and_then(|tpl| {
                let scale: u64 = tpl.attribute("timescale")?.parse().ok()?;
                let mut t = 0u64;
                let mut end = None;
                for s in tpl.descendants().filter(|n| n.has_tag_name("S")) {
                    if let Some(v) = s.attribute("t") {
                        t = v.parse().ok()?;
                    }
                    let d: u64 = s.attribute("d")?.parse().ok()?;
                    let r: u64 = s.attribute("r").map_or(Some(0), |v| v.parse().ok())?;
                    t += d * (r + 1);
                    end = Some((t * 90_000 + scale / 2) / scale.max(1));
                }
                end
            });
        periods.insert(
            attr(p, "id"),
            Period {
                audio_end,
                start: attr(p, "start"),
                pto: attr(tpl, "presentationTimeOffset"),
                codecs: attr(rep, "codecs"),
                width: attr(rep, "width"),
                height: attr(rep, "height"),
                frame_rate: attr(rep, "frameRate"),
                init: attr(tpl, "initialization"),
                start_with_sap: aset.attribute("startWithSAP").map(str::to_string),
                segments,
                predicted,
                timescale: tpl
                    .attribute("timescale")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1)
                    .max(1),
            },
        );
    }
    Mpd {
        dynamic: root.attribute("type") == Some("dynamic"),
        availability_start: attr(root, "availabilityStartTime"),
        max_segment_duration: attr(root, "maxSegmentDuration"),
        media_presentation_duration: root
            .attribute("mediaPresentationDuration")
            .map(str::to_string),
        periods,
        low_latency,
    }
}

/// Checks that `next` is a legal successor of `prev`; panics naming the
/// broken rule and `what`.
pub fn check_mpd_successor(prev: &Mpd, next: &Mpd, what: &str) {
    assert_eq!(
        next.availability_start, prev.availability_start,
        "{what}: availabilityStartTime changed"
    );
    assert_eq!(
        next.max_segment_duration, prev.max_segment_duration,
        "{what}: maxSegmentDuration changed"
    );
    assert!(
        prev.dynamic || !next.dynamic,
        "{what}: static became dynamic"
    );
    if !prev.dynamic {
        assert_eq!(next, prev, "{what}: a static MPD changed");
    }
    // In a low-latency MPD the last two segments of the last period are the
    // segment in progress and the one after it, listed ahead with predicted
    // durations: the first's S@d (never its S@t) may change, the second's
    // S@t and S@d too, and either may leave the period (a new config
    // starts a new one) or the MPD (the session ended).
    let predicted: Vec<(String, u64)> = prev
        .periods
        .iter()
        .flat_map(|(id, p)| p.predicted.iter().map(move |n| (id.clone(), *n)))
        .collect();
    if let Some((id, n)) = predicted.first() {
        assert!(
            prev.low_latency && predicted.len() == 2 && predicted[1] == (id.clone(), n + 1),
            "{what}: segments listed ahead other than the one in progress and the next: \
             {predicted:?}"
        );
    }
    let in_progress = predicted.first().cloned();
    let ahead = predicted.get(1).cloned();
    for (id, p) in &prev.periods {
        let Some(n) = next.periods.get(id) else {
            continue; // slid out of the window
        };
        let fixed = |p: &Period| {
            (
                p.start.clone(),
                p.pto.clone(),
                p.codecs.clone(),
                p.width.clone(),
                p.height.clone(),
                p.frame_rate.clone(),
                p.init.clone(),
                p.start_with_sap.clone(),
            )
        };
        assert_eq!(fixed(n), fixed(p), "{what}: Period {id} changed");
        for (number, td) in &n.segments {
            if let Some(old) = p.segments.get(number) {
                if ahead.as_ref() == Some(&(id.clone(), *number)) {
                    continue;
                }
                if in_progress.as_ref() == Some(&(id.clone(), *number)) {
                    assert_eq!(td.0, old.0, "{what}: Period {id} segment {number} moved");
                } else {
                    assert_eq!(td, old, "{what}: Period {id} segment {number} moved");
                }
            }
        }
        // Segments leave from the front and arrive at the back.
        if let (Some(old_last), Some(new_first)) =
            (p.segments.keys().next_back(), n.segments.keys().next())
        {
            for number in *new_first..=*old_last {
                assert!(
                    !p.segments.contains_key(&number)
                        || n.segments.contains_key(&number)
                        || predicted.contains(&(id.clone(), number)),
                    "{what}: Period {id} segment {number} vanished from the middle"
                );
            }
        }
    }
    if !next.dynamic {
        // mediaPresentationDuration = the end of the last segment (S@t is
        // media time on the session timeline, which Period@start follows).
        let end_ticks = next
            .periods
            .values()
            .flat_map(|p| {
                p.segments
                    .values()
                    .map(|(t, d)| (t + d) * 90_000 / p.timescale)
                    .chain(p.audio_end)
            })
            .max()
            .expect("a static MPD lists segments");
        let stated = next
            .media_presentation_duration
            .as_deref()
            .and_then(xs_duration_secs)
            .unwrap_or_else(|| panic!("{what}: static MPD without mediaPresentationDuration"));
        assert!(
            (stated - end_ticks as f64 / 90_000.0).abs() < 0.002,
            "{what}: mediaPresentationDuration {stated} s, last segment ends at {} s",
            end_ticks as f64 / 90_000.0
        );
    }
    for (id, p) in &next.periods {
        // Period@start and presentationTimeOffset name the same instant.
        let start = xs_duration_secs(&p.start).unwrap_or(f64::NAN);
        let pto: f64 = p
            .pto
            .parse::<u64>()
            .map_or(f64::NAN, |v| v as f64 / p.timescale as f64);
        assert!(
            (start - pto).abs() < 0.002,
            "{what}: Period {id} start {start} s but presentationTimeOffset {pto} s"
        );
    }
}

/// Seconds of an `xs:duration` of the form `PT[nH][nM][n.nS]`.
pub fn xs_duration_secs(v: &str) -> Option<f64> {
    let mut rest = v.strip_prefix("PT")?;
    let mut secs = 0.0;
    for (unit, mul) in [('H', 3600.0), ('M', 60.0), ('S', 1.0)] {
        if let Some(i) = rest.find(unit) {
            secs += rest[..i].parse::<f64>().ok()? * mul;
            rest = &rest[i + 1..];
        }
    }
    rest.is_empty().then_some(secs)
}

/// Every version of one session's three manifests, checked as they come.
#[derive(Default)]
pub struct History {
    pub hls_cmaf: Vec<Hls>,
    pub hls_ts: Vec<Hls>,
    pub dash: Vec<Mpd>,
    /// The low-latency renderings (as the HTTP origin serves them).
    pub hls_ll_cmaf: Vec<Hls>,
    pub hls_ll_ts: Vec<Hls>,
    pub dash_ll: Vec<Mpd>,
}

impl History {
    /// Records one version of each manifest (text as served) and checks it
    /// against the previous one.
    pub fn record(&mut self, hls_cmaf: &str, hls_ts: &str, dash: &str, what: &str) {
        for (list, text, name) in [
            (&mut self.hls_cmaf, hls_cmaf, "HLS CMAF"),
            (&mut self.hls_ts, hls_ts, "HLS TS"),
        ] {
            let h = parse_hls(text);
            match list.last() {
                Some(prev) => check_hls_successor(prev, &h, &format!("{what} {name}")),
                None => check_hls_alone(&h, &format!("{what} {name}")),
            }
            if list.last() != Some(&h) {
                list.push(h);
            }
        }
        let m = parse_mpd(dash);
        if let Some(prev) = self.dash.last() {
            check_mpd_successor(prev, &m, &format!("{what} DASH"));
        }
        if self.dash.last() != Some(&m) {
            self.dash.push(m);
        }
    }

    /// Records one version of the low-latency HLS playlists and checks it
    /// against the previous one.
    pub fn record_ll(&mut self, hls_cmaf: &str, hls_ts: &str, what: &str, timeline_gaps: bool) {
        for (list, text, name) in [
            (&mut self.hls_ll_cmaf, hls_cmaf, "LL-HLS CMAF"),
            (&mut self.hls_ll_ts, hls_ts, "LL-HLS TS"),
        ] {
            let h = parse_hls(text);
            match list.last() {
                Some(prev) => check_hls_successor(prev, &h, &format!("{what} {name}")),
                None => check_hls_alone(&h, &format!("{what} {name}")),
            }
            check_parts_alone(&h, &format!("{what} {name}"), timeline_gaps);
            if list.last() != Some(&h) {
                list.push(h);
            }
        }
    }

    /// Records one version of the low-latency MPD and checks it against the
    /// previous one.
    pub fn record_dash_ll(&mut self, text: &str, what: &str) {
        let m = parse_mpd(text);
        if let Some(prev) = self.dash_ll.last() {
            check_mpd_successor(prev, &m, &format!("{what} LL-DASH"));
        }
        if self.dash_ll.last() != Some(&m) {
            self.dash_ll.push(m);
        }
    }
}

/// Unix ms of an `EXT-X-PROGRAM-DATE-TIME` / `xs:dateTime` in UTC
/// (`2026-12-03T13:05:31.186Z`; `+00:00` also taken).
pub fn unix_ms(date_time: &str) -> Option<i64> {
    let (date, time) = date_time.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|v| v.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z').trim_end_matches("+00:00");
    let mut t = time.splitn(3, ':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let secs: f64 = t.next()?.parse().ok()?;
    // Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    // days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) * 1000 + (secs * 1000.0).round() as i64)
}

/// Milliseconds of an `xs:duration` such as `PT17.068S` or `PT1M5S`.
pub fn duration_ms(d: &str) -> Option<i64> {
    let mut rest = d.strip_prefix("PT")?;
    let mut ms = 0.0;
    for (unit, scale) in [('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)] {
        if let Some((v, r)) = rest.split_once(unit) {
            ms += v.parse::<f64>().ok()? * scale;
            rest = r;
        }
    }
    rest.is_empty().then_some(ms.round() as i64)
}

/// Across a playlist's last `EXT-X-DISCONTINUITY` (a publisher that came
/// back): how far the program date times advance from the last segment
/// before it to the first after it, and how far the MPD's times advance
/// from the last segment of its next-to-last period to the first of its
/// last, ms: `(hls, dash)`. The two agree when HLS and DASH agree about
/// the gap.
pub fn gap_across_discontinuity_ms(m3u8: &str, mpd: &str) -> (i64, i64) {
    let h = parse_hls(m3u8);
    let at = h
        .segments
        .iter()
        .rposition(|s| s.4)
        .filter(|at| *at > 0)
        .unwrap_or_else(|| panic!("a segment before and after a discontinuity:\n{m3u8}"));
    let date = |i: usize| unix_ms(&h.segments[i].3).unwrap_or_else(|| panic!("a date: {m3u8}"));
    let dash = dash_segment_starts_ms(mpd);
    let (last, before) = match dash.as_slice() {
        [.., before, last] => (last, before),
        _ => panic!("two periods:\n{mpd}"),
    };
    let dash_ms = last.first().expect("a segment") - before.last().expect("a segment");
    (date(at) - date(at - 1), dash_ms)
}

/// `start` of each `<Period>` of an MPD, ms, in order.
pub fn period_starts_ms(mpd: &str) -> Vec<i64> {
    mpd.split("<Period")
        .skip(1)
        .filter_map(|p| {
            let tag = &p[..p.find('>')?];
            let v = tag.split("start=\"").nth(1)?.split('"').next()?;
            duration_ms(v)
        })
        .collect()
}

/// Where each segment of the first AdaptationSet of each `<Period>` starts,
/// ms after `availabilityStartTime` (period start plus `(t -
/// presentationTimeOffset) / timescale`; `r` repeats expanded).
pub fn dash_segment_starts_ms(mpd: &str) -> Vec<Vec<i64>> {
    let attr = |tag: &str, name: &str| -> Option<i64> {
        tag.split(&format!(" {name}=\""))
            .nth(1)?
            .split('"')
            .next()?
            .parse()
            .ok()
    };
    mpd.split("<Period")
        .skip(1)
        .filter_map(|p| {
            let start = duration_ms(p.split("start=\"").nth(1)?.split('"').next()?)?;
            let set = p.split("</AdaptationSet>").next()?;
            let template = set.split("<SegmentTemplate").nth(1)?;
            let template = &template[..template.find('>')?];
            let timescale = attr(template, "timescale")?.max(1);
            let pto = attr(template, "presentationTimeOffset").unwrap_or(0);
            let mut starts = Vec::new();
            let mut t = 0;
            for e in set.split("<S ").skip(1) {
                let e = format!(" {}", &e[..e.find("/>")?]);
                let e = e.as_str();
                t = attr(e, "t").unwrap_or(t);
                let d = attr(e, "d")?;
                for _ in 0..=attr(e, "r").unwrap_or(0) {
                    starts.push(start + (t - pto) * 1000 / timescale);
                    t += d;
                }
            }
            Some(starts)
        })
        .collect()
}

#[test]
fn dates_and_durations() {
    assert_eq!(unix_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(unix_ms("2026-12-03T13:05:31.186Z"), Some(1_796_303_131_186));
    assert_eq!(
        unix_ms("2000-03-01T00:00:01.5+00:00"),
        Some(951_868_801_500)
    );
    assert_eq!(duration_ms("PT17.068S"), Some(17_068));
    assert_eq!(duration_ms("PT1M5S"), Some(65_000));
    assert_eq!(
        period_starts_ms(
            "<MPD><Period id=\"0\" start=\"PT0S\"></Period><Period id=\"1\" start=\"PT1H0.5S\">"
        ),
        vec![0, 3_600_500]
    );
    let mpd = "<Period id=\"0\" start=\"PT0S\"><AdaptationSet><SegmentTemplate timescale=\"90000\" \
               presentationTimeOffset=\"0\"><SegmentTimeline><S t=\"0\" d=\"180000\" r=\"1\"/>\
               </SegmentTimeline></AdaptationSet><AdaptationSet><S t=\"9\" d=\"9\"/></AdaptationSet>\
               </Period><Period id=\"1\" start=\"PT5.988S\"><AdaptationSet><SegmentTemplate \
               timescale=\"90000\" presentationTimeOffset=\"538920\"><S t=\"538920\" d=\"90000\"/>\
               <S d=\"90000\"/></AdaptationSet></Period>";
    assert_eq!(
        dash_segment_starts_ms(mpd),
        vec![vec![0, 2000], vec![5988, 6988]]
    );
}

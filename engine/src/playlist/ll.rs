//! Low-latency HLS (draft-pantos-hls-rfc8216bis, Apple's low-latency HLS
//! rules): the media playlists of [`super::hls`] with the session's parts.
//!
//! What a low-latency rendering adds to the regular one, which it otherwise
//! repeats line for line (so players without low-latency support read it as
//! before):
//!
//! - nothing about the version: none of the low-latency tags needs one, so
//!   a full rendering keeps the regular playlist's (7 CMAF, 3 TS); a delta
//!   update, which `EXT-X-SKIP` makes version 9, states 9;
//! - `EXT-X-SERVER-CONTROL`: `CAN-BLOCK-RELOAD=YES`, `CAN-SKIP-UNTIL` = six
//!   target durations, `PART-HOLD-BACK` = three part targets, `HOLD-BACK` =
//!   three target durations;
//! - `EXT-X-PART-INF:PART-TARGET`;
//! - the `EXT-X-PART`s of the last [`PART_SEGMENTS`] complete segments (in
//!   front of their `EXTINF`) and of the segment in progress (after the
//!   last segment);
//! - `EXT-X-PRELOAD-HINT:TYPE=PART` naming the next part;
//! - with `skip`, `EXT-X-SKIP:SKIPPED-SEGMENTS=N` in place of the segments
//!   further than `CAN-SKIP-UNTIL` from the end (a delta update).
//!
//! Once the session has ended, the low-latency rendering is the regular
//! playlist (with `EXT-X-ENDLIST`): the tags only serve live players, and a
//! closed playlist is played to its end like any other (and equals the tree
//! `liveslice package` / `play --out` writes).
//!
//! The parts of a segment are rendered from their records, which never
//! change, so a part is listed identically in every version until it leaves
//! (parts leave older segments; the segment stays). A segment in progress
//! is listed as its parts, then (once complete) as the same parts followed
//! by its `EXTINF` and URI.

use std::fmt::Write;

use super::hls::{audio_ticks, Flavour};
use super::time::write_extinf_seconds;
use super::Manifests;
use crate::frame::{AudioConfig, PartRecord};

/// Complete segments whose parts are listed (besides the segment in
/// progress): about three target durations' worth at the usual one to two
/// second segments, as the draft recommends.
pub const PART_SEGMENTS: usize = 3;

/// At most this many parts are held, whatever the segmenter does (a
/// segment has at most `max segment / part target` parts, 60 at the
/// extremes the server allows; this is a safety bound).
const MAX_PARTS: usize = 1024;

/// Where the live edge is, for blocking playlist reload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LlPosition {
    /// Media sequence of the last complete segment.
    pub last_segment: Option<u64>,
    /// Media sequence of the segment in progress (the one after the last
    /// complete segment).
    pub open_segment: u64,
    /// Parts of the segment in progress listed so far.
    pub open_parts: u32,
    /// Session-wide number of the next part (the preload hint's).
    pub next_part: u64,
}

fn part_uri(out: &mut String, number: u64, flavour: Flavour) {
    let _ = match flavour {
        Flavour::Cmaf => write!(out, "part-{number}.m4s"),
        Flavour::Ts => write!(out, "part-{number}.ts"),
        Flavour::Audio => write!(out, "audio-part-{number}.m4s"),
    };
}

fn write_part(out: &mut String, p: &PartRecord, flavour: Flavour, audio: Option<&AudioConfig>) {
    out.push_str("#EXT-X-PART:DURATION=");
    let audio_span = p.audio.as_ref().filter(|a| a.frame_count > 0);
    match (flavour, audio_span, audio) {
        (Flavour::Audio, Some(a), Some(cfg)) => {
            write_extinf_seconds(out, audio_ticks(a.duration, cfg))
        }
        _ => write_extinf_seconds(out, p.duration),
    }
    out.push_str(",URI=\"");
    part_uri(out, p.number, flavour);
    out.push('"');
    if flavour == Flavour::Audio {
        // Every AAC frame is independent; a part without audio is a gap.
        if audio_span.is_some() {
            out.push_str(",INDEPENDENT=YES");
        } else {
            out.push_str(",GAP=YES");
        }
    } else if p.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    out.push('\n');
}

/// Milliseconds as decimal seconds (`1234` → `1.234`).
fn write_ms_as_secs(out: &mut String, ms: u64) {
    let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
}

impl Manifests {
    /// Whether low-latency renderings list parts (a part target is set).
    pub fn has_parts(&self) -> bool {
        self.opts.part_target_ms > 0
    }

    /// `PART-TARGET`, ms: the part target plus the longest frame interval
    /// expected. A part closes at the first frame boundary at or after its
    /// target, so it lasts up to the target plus one frame interval (less one
    /// tick); announcing the bare target would make most parts longer than
    /// `PART-TARGET`, which the draft forbids. (A publisher that stalls, or a
    /// frame rate that drops below the one the session started with, makes a
    /// longer part: its `DURATION` is stated as it is.)
    pub fn part_target_ms(&self) -> u64 {
        u64::from(self.opts.part_target_ms) + u64::from(self.opts.frame_interval_ms)
    }

    /// `EXT-X-TARGETDURATION`, seconds (fixed for the session).
    pub fn target_duration_secs(&self) -> u64 {
        self.target_duration
    }

    /// `CAN-SKIP-UNTIL`, ms: six target durations.
    pub fn skip_until_ms(&self) -> u64 {
        self.target_duration.saturating_mul(6_000)
    }

    /// A part closed (called before the segment it ends, if it ends one).
    /// Parts of segments that are already complete, and anything after the
    /// end, are ignored.
    pub fn push_part(&mut self, part: &PartRecord) {
        if self.ended || !self.has_parts() {
            return;
        }
        let last = self.window.back().map(|s| s.rec.sequence);
        if last.is_some_and(|l| part.segment <= l)
            || self.parts.back().is_some_and(|p| p.number >= part.number)
        {
            return;
        }
        if self.away_from.is_some_and(|s| part.segment > s) {
            self.away_from = None;
        }
        self.parts.push_back(part.clone());
        self.trim_parts();
    }

    /// The next segment follows a discontinuity (a publisher reconnect).
    pub fn mark_discontinuity(&mut self) {
        self.open_discontinuity = true;
    }

    /// The publisher vanished (it may reconnect within its grace period,
    /// after a gap): the low-latency MPD stops listing the segment in
    /// progress and the next one ahead (their predicted times would be
    /// wrong) until a part of a later segment than the one in progress is
    /// listed (the new publisher's: its start is known then).
    pub fn publisher_away(&mut self) {
        self.away_from = Some(self.ll_position().open_segment);
    }

    /// Drops the parts of segments older than the last [`PART_SEGMENTS`]
    /// complete ones (and any beyond [`MAX_PARTS`]).
    pub(super) fn trim_parts(&mut self) {
        let keep_from = self
            .window
            .iter()
            .rev()
            .nth(PART_SEGMENTS.saturating_sub(1))
            .map(|s| s.rec.sequence);
        while let Some(p) = self.parts.front() {
            let old = keep_from.is_some_and(|k| p.segment < k);
            if !old && self.parts.len() <= MAX_PARTS {
                break;
            }
            self.parts.pop_front();
        }
    }

    /// The live edge as low-latency renderings list it.
    pub fn ll_position(&self) -> LlPosition {
        let last_segment = self.window.back().map(|s| s.rec.sequence);
        let open_segment = last_segment.map_or(0, |l| l.saturating_add(1));
        let open_parts = self
            .parts
            .iter()
            .rev()
            .take_while(|p| p.segment >= open_segment)
            .filter(|p| p.segment == open_segment)
            .count();
        LlPosition {
            last_segment,
            open_segment,
            open_parts: u32::try_from(open_parts).unwrap_or(u32::MAX),
            next_part: self.parts.back().map_or(0, |p| p.number.saturating_add(1)),
        }
    }

    /// Whether the low-latency playlists list segment `msn` complete, or
    /// (with `part`) part `part` of it or anything later: what a blocking
    /// reload of `_HLS_msn=msn[&_HLS_part=part]` waits for.
    pub fn lists(&self, msn: u64, part: Option<u32>) -> bool {
        let pos = self.ll_position();
        if pos.last_segment.is_some_and(|l| l >= msn) {
            return true;
        }
        match part {
            Some(p) => msn == pos.open_segment && pos.open_parts > p,
            None => false,
        }
    }

    /// The low-latency HLS media playlist; with `skip`, a delta update
    /// (`_HLS_skip=YES`). Without a part target, and once ended, it is the
    /// regular playlist.
    pub fn hls_ll(&self, flavour: Flavour, skip: bool) -> String {
        if !self.has_parts() || self.ended {
            return self.hls_state(flavour).render();
        }
        let skipped = if skip { self.skippable() } else { 0 };
        let first_kept = self.window.get(skipped).map(|w| w.rec.config_id);
        let version = match (skip, flavour) {
            (true, _) => 9,
            (false, Flavour::Cmaf | Flavour::Audio) => 7,
            (false, Flavour::Ts) => 3,
        };
        let mut s = String::with_capacity(1024 + self.window.len() * 160 + self.parts.len() * 64);
        self.write_hls_head(&mut s, flavour, version, first_kept, true, None);
        if skip {
            let _ = writeln!(s, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        for w in self.window.iter().skip(skipped) {
            let entry = match flavour {
                Flavour::Cmaf => &w.hls_cmaf,
                Flavour::Ts => &w.hls_ts,
                Flavour::Audio => &w.hls_audio,
            };
            let mut parts = self
                .parts
                .iter()
                .filter(|p| p.segment == w.rec.sequence)
                .peekable();
            match (parts.peek(), entry.find("#EXTINF:")) {
                (Some(_), Some(at)) => {
                    s.push_str(&entry[..at]);
                    for p in parts {
                        write_part(&mut s, p, flavour, self.audio.as_ref());
                    }
                    s.push_str(&entry[at..]);
                }
                _ => s.push_str(entry),
            }
        }
        if !self.ended {
            let pos = self.ll_position();
            let last = self.window.back().map(|w| &w.rec);
            let mut open = self
                .parts
                .iter()
                .filter(|p| p.segment == pos.open_segment)
                .peekable();
            if let Some(first) = open.peek() {
                if self.open_discontinuity {
                    s.push_str("#EXT-X-DISCONTINUITY\n");
                }
                if flavour == Flavour::Cmaf && last.is_some_and(|l| l.config_id != first.config_id)
                {
                    let _ = writeln!(s, "#EXT-X-MAP:URI=\"init-{}.mp4\"", first.config_id);
                }
            }
            for p in open {
                write_part(&mut s, p, flavour, self.audio.as_ref());
            }
            s.push_str("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"");
            part_uri(&mut s, pos.next_part, flavour);
            s.push_str("\"\n");
        }
        s.push_str(&self.hls_tail());
        s
    }

    /// Segments a delta update leaves out: the oldest ones that end at
    /// least `CAN-SKIP-UNTIL` before the end of the playlist (the draft
    /// forbids skipping anything closer).
    fn skippable(&self) -> usize {
        let limit = self.skip_until_ms().saturating_mul(90);
        let mut after: u64 = 0; // ticks from a segment's end to the playlist's
        let mut close = 0usize;
        for w in self.window.iter().rev() {
            if after >= limit {
                break;
            }
            after = after.saturating_add(w.rec.duration);
            close += 1;
        }
        self.window.len() - close
    }

    /// `EXT-X-SERVER-CONTROL` and `EXT-X-PART-INF`.
    pub(super) fn write_ll_control(&self, s: &mut String) {
        let td_ms = self.target_duration.saturating_mul(1000);
        let pt = self.part_target_ms();
        s.push_str("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=");
        write_ms_as_secs(s, td_ms.saturating_mul(6));
        s.push_str(",PART-HOLD-BACK=");
        write_ms_as_secs(s, pt.saturating_mul(3));
        s.push_str(",HOLD-BACK=");
        write_ms_as_secs(s, td_ms.saturating_mul(3));
        s.push_str("\n#EXT-X-PART-INF:PART-TARGET=");
        write_ms_as_secs(s, pt);
        s.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cfg, rec};
    use super::super::{Manifests, PlaylistOptions};
    use super::*;

    /// 1 s segments (at most 3 s: target duration 3), 200 ms parts, 30 fps.
    fn ll(window: usize) -> Manifests {
        Manifests::new(
            PlaylistOptions {
                target_segment_ms: 1000,
                max_segment_ms: 3000,
                window,
                part_target_ms: 200,
                frame_interval_ms: 34,
                ..Default::default()
            },
            0,
        )
    }

    /// Part `i` of segment `seg` (five 200 ms parts a segment, numbered
    /// session-wide), starting at a keyframe when `i` is 0.
    fn part(seg: u64, i: u32) -> PartRecord {
        PartRecord {
            number: seg * 5 + u64::from(i),
            segment: seg,
            index: i,
            start: seg * 90_000 + u64::from(i) * 18_000,
            duration: 18_000,
            first_frame_index: seg * 30 + u64::from(i) * 6,
            frame_count: 6,
            independent: i == 0,
            byte_size: 1000,
            config_id: 0,
            composition_shift: 0,
            audio: None,
        }
    }

    /// Pushes segment `seg`'s parts, then the segment.
    fn segment(m: &mut Manifests, seg: u64) {
        for i in 0..5 {
            m.push_part(&part(seg, i));
        }
        m.push(rec(seg, seg * 90_000, 90_000), &cfg(0), 0);
    }

    #[test]
    fn exact_low_latency_playlist() {
        let mut m = ll(6);
        segment(&mut m, 0);
        m.push_part(&part(1, 0));
        m.push_part(&part(1, 1));
        assert_eq!(
            m.hls_ll(Flavour::Cmaf, false),
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=18.000,\
             PART-HOLD-BACK=0.702,HOLD-BACK=9.000\n\
             #EXT-X-PART-INF:PART-TARGET=0.234\n\
             #EXT-X-MAP:URI=\"init-0.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T12:00:00.000Z\n\
             #EXT-X-PART:DURATION=0.200000,URI=\"part-0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.200000,URI=\"part-1.m4s\"\n\
             #EXT-X-PART:DURATION=0.200000,URI=\"part-2.m4s\"\n\
             #EXT-X-PART:DURATION=0.200000,URI=\"part-3.m4s\"\n\
             #EXT-X-PART:DURATION=0.200000,URI=\"part-4.m4s\"\n\
             #EXTINF:1.000000,\nseg-0.m4s\n\
             #EXT-X-PART:DURATION=0.200000,URI=\"part-5.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.200000,URI=\"part-6.m4s\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-7.m4s\"\n"
        );
        // TS: the same, part URIs relative to ts/index.m3u8, no MAP.
        let ts = m.hls_ll(Flavour::Ts, false);
        assert!(ts.contains("#EXT-X-VERSION:3\n"));
        // A delta update states version 9 (EXT-X-SKIP needs it).
        assert!(m.hls_ll(Flavour::Ts, true).contains("#EXT-X-VERSION:9\n"));
        assert!(ts.contains("#EXT-X-PART:DURATION=0.200000,URI=\"part-6.ts\"\n"));
        assert!(ts.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-7.ts\"\n"));
        assert!(!ts.contains("EXT-X-MAP"));
        // The regular renderings (gRPC, trees) are unchanged.
        assert!(!m.hls_cmaf().render().contains("EXT-X-PART"));
        // Ended: the regular playlist.
        m.end(0);
        let text = m.hls_ll(Flavour::Cmaf, false);
        assert!(text.ends_with("seg-0.m4s\n#EXT-X-ENDLIST\n"), "{text}");
        assert_eq!(text, m.hls_cmaf().render());
        assert_eq!(m.hls_ll(Flavour::Ts, true), m.hls_ts().render());
    }

    #[test]
    fn numbers_follow_the_targets() {
        let m = ll(6);
        // A part lasts up to its target plus one frame interval.
        assert_eq!(m.part_target_ms(), 234);
        assert_eq!(m.skip_until_ms(), 18_000);
        // No part target: the regular playlist.
        let mut plain = Manifests::new(PlaylistOptions::default(), 0);
        plain.push_part(&part(0, 0));
        plain.push(rec(0, 0, 180_000), &cfg(0), 0);
        assert_eq!(
            plain.hls_ll(Flavour::Cmaf, false),
            plain.hls_cmaf().render()
        );
    }

    #[test]
    fn parts_of_the_last_segments_only_and_never_changed() {
        let mut m = ll(6);
        let mut prev: Option<String> = None;
        for seg in 0..6 {
            for i in 0..5 {
                m.push_part(&part(seg, i));
                let text = m.hls_ll(Flavour::Cmaf, false);
                // Every part line listed before is listed now, or its
                // segment is older than the last PART_SEGMENTS.
                if let Some(p) = &prev {
                    for l in p.lines().filter(|l| l.starts_with("#EXT-X-PART:")) {
                        let n: u64 = l
                            .split("part-")
                            .nth(1)
                            .and_then(|r| r.split('.').next())
                            .and_then(|n| n.parse().ok())
                            .expect("part number");
                        if n / 5 + PART_SEGMENTS as u64 >= seg {
                            assert!(text.contains(l), "{l} vanished");
                        }
                    }
                }
                prev = Some(text);
            }
            m.push(rec(seg, seg * 90_000, 90_000), &cfg(0), 0);
        }
        let text = m.hls_ll(Flavour::Cmaf, false);
        // Segments 3, 4, 5 keep their parts; 0..=2 are listed without.
        assert!(!text.contains("\"part-14.m4s\""));
        assert!(text.contains("\"part-15.m4s\""));
        assert_eq!(text.matches("#EXT-X-PART:").count(), 15);
        assert!(text.contains("seg-0.m4s"));
        assert_eq!(
            m.ll_position(),
            LlPosition {
                last_segment: Some(5),
                open_segment: 6,
                open_parts: 0,
                next_part: 30
            }
        );
    }

    #[test]
    fn blocking_reload_condition() {
        let mut m = ll(6);
        segment(&mut m, 0);
        m.push_part(&part(1, 0));
        assert!(m.lists(0, None) && m.lists(0, Some(9)));
        assert!(m.lists(1, Some(0)));
        assert!(!m.lists(1, Some(1)));
        assert!(!m.lists(1, None));
        assert!(!m.lists(2, Some(0)));
        m.push_part(&part(1, 1));
        assert!(m.lists(1, Some(1)));
        for i in 2..5 {
            m.push_part(&part(1, i));
        }
        m.push(rec(1, 90_000, 90_000), &cfg(0), 0);
        assert!(m.lists(1, None) && m.lists(1, Some(7)));
        assert!(!m.lists(2, Some(0)));
    }

    #[test]
    fn delta_update_skips_what_is_far_enough_back() {
        let mut m = ll(30);
        for seg in 0..30 {
            segment(&mut m, seg);
        }
        let full = m.hls_ll(Flavour::Cmaf, false);
        let delta = m.hls_ll(Flavour::Cmaf, true);
        // 18 s may not be skipped: 30 one-second segments leave 12.
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=12\n"),
            "{delta}"
        );
        assert!(!delta.contains("seg-11.m4s") && delta.contains("seg-12.m4s"));
        // Applied to the full playlist (its first 12 segments in place of
        // the tag), the delta gives the full playlist back.
        let skip_at = delta.find("#EXT-X-SKIP").expect("skip");
        let rest = &delta[delta.find("SEGMENTS=12\n").expect("n") + 12..];
        let seg12 = full
            .find("#EXT-X-PROGRAM-DATE-TIME:2026-11-25T12:00:12")
            .expect("12");
        let first_seg = full.find("#EXT-X-PROGRAM-DATE-TIME").expect("first");
        assert_eq!(
            delta[..skip_at].replace("VERSION:9", "VERSION:7"),
            full[..first_seg]
        );
        assert_eq!(rest, &full[seg12..]);
        // A short window has nothing to skip.
        let mut m = ll(6);
        for seg in 0..8 {
            segment(&mut m, seg);
        }
        assert!(m
            .hls_ll(Flavour::Ts, true)
            .contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=0\n"));
    }

    #[test]
    fn open_segment_after_a_reconnect_and_a_new_config() {
        let mut m = ll(6);
        segment(&mut m, 0);
        m.mark_discontinuity();
        let mut p = part(1, 0);
        p.config_id = 1;
        m.push_part(&p);
        let text = m.hls_ll(Flavour::Cmaf, false);
        assert!(text.ends_with(
            "seg-0.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n\
             #EXT-X-PART:DURATION=0.200000,URI=\"part-5.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-6.m4s\"\n"
        ));
        // Once complete, the segment's entry carries the same tags before
        // the same parts.
        let mut r = rec(1, 90_000, 90_000);
        r.discontinuity = true;
        r.discontinuity_sequence = 1;
        r.config_id = 1;
        m.push(r, &cfg(1), 0);
        let text = m.hls_ll(Flavour::Cmaf, false);
        assert!(
            text.contains(
                "seg-0.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T12:00:01.000Z\n\
             #EXT-X-PART:DURATION=0.200000,URI=\"part-5.m4s\",INDEPENDENT=YES\n#EXTINF"
            ),
            "{text}"
        );
    }

    /// A publisher vanishes mid-segment and comes back after a gap: from
    /// its going until the new publisher's first part is listed, the MPD
    /// predicts nothing (the old segment in progress ends short, at its
    /// last frame, and the next starts after the gap); then it predicts
    /// from the new segment's real start.
    #[test]
    fn nothing_is_predicted_while_the_publisher_is_away() {
        let mut m = ll(6);
        segment(&mut m, 0);
        assert_eq!(m.dash_ll(0).matches("<S ").count(), 2, "predicted");
        m.publisher_away();
        assert_eq!(m.dash_ll(0).matches("<S ").count(), 1, "away: none");
        // The old publisher's segment in progress gets its last part (it
        // closes when the new publisher's first frame comes), then ends.
        m.push_part(&part(1, 0));
        assert_eq!(m.dash_ll(0).matches("<S ").count(), 1);
        m.push(rec(1, 90_000, 18_000), &cfg(0), 0);
        assert_eq!(m.dash_ll(0).matches("<S ").count(), 2, "complete ones only");
        assert!(!m.dash_ll(0).contains(" r=\"1\""));
        // The new publisher's first part, after a gap: predicted from it.
        let mut p = part(2, 0);
        p.start = 400_000;
        m.push_part(&p);
        assert!(
            m.dash_ll(0)
                .contains("<S t=\"400000\" d=\"18000\" r=\"1\"/>"),
            "{}",
            m.dash_ll(0)
        );
    }

    #[test]
    fn low_latency_mpd() {
        let mut m = ll(6);
        segment(&mut m, 0);
        let regular = m.dash(0).render();
        // No part of segment 1 yet: the regular MPD plus the attributes,
        // and segment 1 (it started where segment 0 ended) and 2 listed
        // ahead with segment 0's duration.
        let text = m.dash_ll(0);
        assert!(text.contains(
            "<ServiceDescription id=\"0\">\n    <Latency referenceId=\"0\" target=\"702\" \
             min=\"468\" max=\"2106\"/>\n    <PlaybackRate min=\"0.96\" max=\"1.04\"/>\n  \
             </ServiceDescription>\n  <Period"
        ));
        assert!(text.contains(
            " availabilityTimeOffset=\"0.800\" availabilityTimeComplete=\"false\" \
             media=\"seg-$Number$.m4s\""
        ));
        let ahead = "<S t=\"0\" d=\"90000\"/>\n            <S t=\"90000\" d=\"90000\" r=\"1\"/>\n          \
             </SegmentTimeline>";
        assert!(text.contains(ahead), "{text}");
        assert!(!regular.contains("availabilityTimeOffset"));
        assert!(!regular.contains(" r="));
        // Its first part is out: the same.
        m.push_part(&part(1, 0));
        assert!(m.dash_ll(0).contains(ahead));
        // After a discontinuity nothing is listed ahead (the next segment
        // opens a new period).
        let mut d = ll(6);
        segment(&mut d, 0);
        d.mark_discontinuity();
        assert_eq!(d.dash_ll(0).matches("<S ").count(), 1);
        // Nor when the segment in progress turns out to use a new config
        // (it opens a new period).
        let mut c = ll(6);
        segment(&mut c, 0);
        let mut p = part(1, 0);
        p.config_id = 1;
        c.push_part(&p);
        assert_eq!(c.dash_ll(0).matches("<S ").count(), 1);
        // A complete segment that lasted longer than predicted: its real
        // duration, and the next two follow from its end.
        segment(&mut m, 1);
        let mut p = part(2, 0);
        p.start = 180_000;
        m.push_part(&p);
        let mut r = rec(2, 180_000, 99_000);
        r.config_id = 0;
        m.push(r, &cfg(0), 0);
        assert!(m.dash_ll(0).contains(
            "<S t=\"180000\" d=\"99000\"/>\n            <S t=\"279000\" d=\"99000\" r=\"1\"/>"
        ));
        // Ended: the regular static MPD.
        m.end(0);
        assert_eq!(m.dash_ll(0), m.dash(0).render());
    }

    /// The audio playlist's low-latency rendering: each part with the
    /// duration of its audio span (`audio-part-N.m4s`, every AAC frame
    /// independent), a part without audio as a gap, the preload hint for
    /// the next audio part.
    #[test]
    fn audio_parts_are_listed_with_their_audio_durations() {
        let a = crate::audio::config::parse_asc(&[0x11, 0x90]).unwrap();
        let mut m = ll(6);
        let mut at = 0u64;
        let audio_part = |p: &mut PartRecord, at: &mut u64, frames: u32| {
            p.audio = Some(crate::frame::AudioSpan {
                first_frame_index: *at / 1024,
                frame_count: frames,
                start: *at,
                duration: u64::from(frames) * 1024,
                byte_size: 100,
                config_id: 0,
            });
            *at += u64::from(frames) * 1024;
        };
        for i in 0..5 {
            let mut p = part(0, i);
            audio_part(&mut p, &mut at, if i == 4 { 10 } else { 9 });
            m.push_part(&p);
        }
        let mut r = rec(0, 0, 90_000);
        r.audio = Some(crate::frame::AudioSpan {
            first_frame_index: 0,
            frame_count: 46,
            start: 0,
            duration: 46 * 1024,
            byte_size: 4600,
            config_id: 0,
        });
        m.push_av(r, Some(&cfg(0)), Some(&a), 0);
        let mut p = part(1, 0);
        audio_part(&mut p, &mut at, 9);
        m.push_part(&p);
        m.push_part(&part(1, 1)); // no audio (yet)
        let text = m.hls_ll(Flavour::Audio, false);
        assert!(
            text.contains("#EXT-X-MAP:URI=\"audio-init.mp4\"\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "#EXT-X-PART:DURATION=0.192000,URI=\"audio-part-0.m4s\",INDEPENDENT=YES\n"
            ),
            "{text}"
        );
        assert!(text.contains("#EXTINF:0.981333,\naudio-0.m4s\n"), "{text}");
        assert!(
            text.contains("URI=\"audio-part-6.m4s\",GAP=YES\n"),
            "{text}"
        );
        assert!(
            text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"audio-part-7.m4s\"\n"),
            "{text}"
        );
    }
}

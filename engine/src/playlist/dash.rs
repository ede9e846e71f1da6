//! The DASH MPD (ISO/IEC 23009-1, DASH-IF live profile) over the same CMAF
//! segments as the HLS CMAF playlist.
//!
//! Edit model: entries are the `<S t d/>` lines of the LAST period only.
//! Head: the MPD element, every earlier period complete, and the last
//! period's opening tags through `<SegmentTimeline>`. Tail: the last
//! period's closing tags, `<UTCTiming>` and `</MPD>`.
//!
//! Timing: media times are on the session timeline (90 kHz, 0 at
//! `availabilityStartTime`). A period starts at its first segment's media
//! time (`Period@start` = that time, `presentationTimeOffset` = the same in
//! 90 kHz) and keeps that start after the segment leaves the window, so a
//! segment is available at `availabilityStartTime + (t + d) / 90000`, and
//! S@t is the record's own start: nothing is re-based, live or when the MPD
//! turns static at the end.
//!
//! `startWithSAP` is not stated: a period's attributes are fixed when it
//! starts, and whether every later segment will begin with a keyframe is
//! not known then (open GOP is SAP type 3, intra refresh has none, a GOP
//! longer than the maximum segment duration forces a cut between random
//! access points). HLS says it per session (`EXT-X-INDEPENDENT-SEGMENTS`),
//! CMAF per sample (sync and leading flags).

use std::fmt::Write;

use super::time::{
    write_iso8601_ms, write_xs_duration_micros, write_xs_duration_ms, write_xs_duration_ticks,
};
use super::{ManifestState, Manifests, Period, WindowSegment};
use crate::frame::{SegmentRecord, TIMESCALE};

const PROFILES: &str = "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019";

/// Indentation of the S lines (inside MPD/Period/AdaptationSet/
/// Representation/SegmentTemplate/SegmentTimeline).
const S_INDENT: &str = "            ";

/// One SegmentTimeline entry. Always an explicit `t` and no `r`, so every
/// entry stands alone and can be dropped from the front or appended.
pub(super) fn s_entry(rec: &SegmentRecord) -> String {
    let mut s = String::with_capacity(48);
    let _ = writeln!(
        s,
        "{S_INDENT}<S t=\"{}\" d=\"{}\"/>",
        rec.start, rec.duration
    );
    s
}

/// One `S` of the audio AdaptationSet: the segment's audio span, in
/// samples (empty for a segment without audio frames).
pub(super) fn audio_s_entry(rec: &SegmentRecord) -> String {
    match rec.audio.as_ref().filter(|a| a.frame_count > 0) {
        Some(a) => format!("{S_INDENT}<S t=\"{}\" d=\"{}\"/>\n", a.start, a.duration),
        None => String::new(),
    }
}

/// Appends ` name="value"` with the value XML-escaped.
pub(super) fn write_attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(super) fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Average bit rate of some segments, rounded up and at least 1 (the
/// attribute is required and must be positive). A zero total duration (a
/// malformed record) counts as one tick rather than dividing by zero.
fn bandwidth<'a>(segs: impl Iterator<Item = &'a WindowSegment>) -> u64 {
    let (bytes, ticks) = segs.fold((0u128, 0u128), |(b, t), s| {
        (
            b + u128::from(s.rec.byte_size),
            t + u128::from(s.rec.duration),
        )
    });
    let bits_per_sec = (bytes * 8 * u128::from(TIMESCALE)).div_ceil(ticks.max(1));
    u64::try_from(bits_per_sec).unwrap_or(u64::MAX).max(1)
}

impl Manifests {
    /// The window segments of a period (they are contiguous in the window).
    fn period_segments<'a>(&'a self, p: &Period) -> impl Iterator<Item = &'a WindowSegment> + 'a {
        let id = p.id;
        self.window.iter().filter(move |s| s.period == id)
    }

    /// The `MPD` element's opening tag (with the XML declaration).
    pub(super) fn dash_mpd_open(&self, now_ms: u64) -> String {
        let mut s = String::with_capacity(1024 + 64 * self.window.len());
        s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MPD");
        write_attr(&mut s, "xmlns", "urn:mpeg:dash:schema:mpd:2011");
        write_attr(&mut s, "profiles", PROFILES);
        write_attr(
            &mut s,
            "type",
            if self.ended { "static" } else { "dynamic" },
        );
        s.push_str(" availabilityStartTime=\"");
        write_iso8601_ms(&mut s, self.availability_start_ms);
        s.push_str("\" publishTime=\"");
        write_iso8601_ms(&mut s, now_ms);
        s.push('"');
        let target_ms = u64::from(self.opts.target_segment_ms);
        if self.ended {
            // The end of the last segment: periods keep the starts they had
            // while live, so nothing a viewer was shown moves.
            let end = self.window.back().map_or(0, |w| {
                let video = w.rec.start.saturating_add(w.rec.duration);
                // The audio may run on a little past the last video frame.
                let audio = w
                    .rec
                    .audio
                    .as_ref()
                    .zip(self.audio.as_ref())
                    .map_or(0, |(a, cfg)| super::hls::audio_ticks(a.end(), cfg));
                video.max(audio)
            });
            s.push_str(" mediaPresentationDuration=\"");
            write_xs_duration_ticks(&mut s, end);
            s.push('"');
        } else {
            s.push_str(" minimumUpdatePeriod=\"");
            write_xs_duration_ms(&mut s, target_ms);
            // What the origin still serves: the window's segments.
            let window_ticks: u128 = self.window.iter().map(|w| u128::from(w.rec.duration)).sum();
            s.push_str("\" timeShiftBufferDepth=\"");
            if window_ticks > 0 {
                write_xs_duration_micros(&mut s, (window_ticks * 200 + 9) / 18);
            } else {
                let depth = target_ms.saturating_mul(self.window_len() as u64);
                write_xs_duration_ms(&mut s, depth);
            }
            // Only meaningful for dynamic MPDs (23009-1 5.3.1.2).
            s.push_str("\" suggestedPresentationDelay=\"");
            write_xs_duration_ms(&mut s, target_ms.saturating_mul(3));
            s.push('"');
        }
        s.push_str(" minBufferTime=\"");
        write_xs_duration_ms(&mut s, target_ms);
        s.push_str("\" maxSegmentDuration=\"");
        write_xs_duration_ms(&mut s, self.max_segment_ms);
        s.push_str("\">\n");
        s
    }

    pub(super) fn dash_head(&self, now_ms: u64) -> String {
        let mut s = self.dash_mpd_open(now_ms);
        let last = self.periods.len().saturating_sub(1);
        for (i, p) in self.periods.iter().enumerate() {
            self.write_period_open(&mut s, p);
            if i == last {
                break;
            }
            let video = self.period_has_video(p);
            for seg in self.period_segments(p) {
                s.push_str(if video {
                    &seg.dash_s
                } else {
                    &seg.dash_audio_s
                });
            }
            s.push_str(AS_CLOSE);
            if video {
                self.write_audio_set(&mut s, p, true);
            }
            s.push_str(PERIOD_END);
        }
        s
    }

    /// Whether a period has video (a session's periods all do, but an
    /// audio-only session's).
    fn period_has_video(&self, p: &Period) -> bool {
        self.configs.contains_key(&p.config_id)
    }

    /// The audio AdaptationSet of a period: opening through
    /// `<SegmentTimeline>`, then (`whole`) its `S` lines and closing tags.
    /// Nothing when the period has no audio frames.
    fn write_audio_set(&self, s: &mut String, p: &Period, whole: bool) {
        self.write_audio_set_at(s, p, whole, "");
    }

    /// [`write_audio_set`](Self::write_audio_set) with its files under
    /// `base` (a relative URL ending in `/`, or empty).
    pub(super) fn write_audio_set_at(&self, s: &mut String, p: &Period, whole: bool, base: &str) {
        let Some(cfg) = self.audio.as_ref() else {
            return;
        };
        let mut with_audio = self
            .period_segments(p)
            .filter(|w| !w.dash_audio_s.is_empty())
            .peekable();
        // As the primary set (an audio-only period, `whole` false) the set
        // is always written: its segments all have audio.
        let first = if whole {
            with_audio.peek().map(|w| w.rec.sequence)
        } else {
            self.period_segments(p).next().map(|w| w.rec.sequence)
        };
        let Some(start_number) = first.or((!whole).then_some(0)) else {
            return;
        };
        let (bytes, samples) = self.period_segments(p).fold((0u128, 0u128), |(b, t), w| {
            let a = w.rec.audio.as_ref();
            (
                b + u128::from(a.map_or(0, |a| a.byte_size)),
                t + u128::from(a.map_or(0, |a| a.duration)),
            )
        });
        let bandwidth =
            u64::try_from((bytes * 8 * u128::from(cfg.sample_rate)).div_ceil(samples.max(1)))
                .unwrap_or(u64::MAX)
                .max(1);
        let pto = u128::from(p.start) * u128::from(cfg.sample_rate) / u128::from(TIMESCALE);
        s.push_str(
            "    <AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\" lang=\"und\" \
             segmentAlignment=\"true\">\n      <AudioChannelConfiguration \
             schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\"",
        );
        let _ = write!(
            s,
            " value=\"{}\"/>\n      <Representation id=\"a{}\"",
            cfg.channels(),
            cfg.id
        );
        write_attr(s, "codecs", &cfg.codec_string());
        let _ = write!(
            s,
            " audioSamplingRate=\"{}\" bandwidth=\"{bandwidth}\">\n        <SegmentTemplate \
             timescale=\"{}\" presentationTimeOffset=\"{pto}\"",
            cfg.sample_rate, cfg.sample_rate
        );
        write_attr(
            s,
            "initialization",
            &format!("{base}{}", super::hls::AUDIO_INIT),
        );
        write_attr(s, "media", &format!("{base}audio-$Number$.m4s"));
        let _ = write!(
            s,
            " startNumber=\"{start_number}\">\n          <SegmentTimeline>\n"
        );
        if whole {
            for w in with_audio {
                s.push_str(&w.dash_audio_s);
            }
            s.push_str(AS_CLOSE);
        }
    }

    fn write_period_open(&self, s: &mut String, p: &Period) {
        // Period@start and presentationTimeOffset are the period's first
        // media time, live and after the switch to static alike.
        let (start, pto) = (p.start, p.start);
        let start_number = self.period_segments(p).next().map_or(0, |w| w.rec.sequence);
        let _ = write!(s, "  <Period id=\"{}\" start=\"", p.id);
        write_xs_duration_ticks(s, start);
        s.push_str("\">\n");
        if !self.period_has_video(p) {
            self.write_audio_set(s, p, false);
            return;
        }
        s.push_str(
            "    <AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" \
             segmentAlignment=\"true\">\n      <Representation",
        );
        write_attr(s, "id", &format!("v{}", p.config_id));
        if let Some(cfg) = self.configs.get(&p.config_id) {
            write_attr(s, "codecs", &cfg.codec_string());
            let _ = write!(s, " width=\"{}\" height=\"{}\"", cfg.width, cfg.height);
            // A frame rate of 0 or x/0 is not a rate: leave it out.
            if cfg.frame_rate_num != 0 && cfg.frame_rate_den != 0 {
                let g = gcd(cfg.frame_rate_num, cfg.frame_rate_den);
                let (num, den) = (cfg.frame_rate_num / g, cfg.frame_rate_den / g);
                if den == 1 {
                    let _ = write!(s, " frameRate=\"{num}\"");
                } else {
                    let _ = write!(s, " frameRate=\"{num}/{den}\"");
                }
            }
        }
        let _ = write!(
            s,
            " bandwidth=\"{}\">\n        <SegmentTemplate timescale=\"{TIMESCALE}\" \
             presentationTimeOffset=\"{pto}\"",
            bandwidth(self.period_segments(p)),
        );
        write_attr(s, "initialization", &super::init_name(p.config_id));
        let _ = write!(
            s,
            " media=\"seg-$Number$.m4s\" startNumber=\"{start_number}\">\n          <SegmentTimeline>\n"
        );
    }

    pub(super) fn dash_tail(&self) -> String {
        let mut s = String::with_capacity(256);
        if let Some(p) = self.periods.back() {
            s.push_str(AS_CLOSE);
            if self.period_has_video(p) {
                self.write_audio_set(&mut s, p, true);
            }
            s.push_str(PERIOD_END);
        }
        s.push_str("  <UTCTiming");
        write_attr(&mut s, "schemeIdUri", "urn:mpeg:dash:utc:http-iso:2014");
        write_attr(&mut s, "value", &self.opts.utc_timing_url);
        s.push_str("/>\n</MPD>\n");
        s
    }

    /// The low-latency MPD (DASH-IF low-latency guidance), as the HTTP
    /// origin serves it: the regular MPD plus
    ///
    /// - `ServiceDescription`: a latency target of three part targets (the
    ///   HLS `PART-HOLD-BACK`: both players aim at the same distance), min
    ///   two part targets, max three times the target, playback rates
    ///   0.96–1.04 to get there;
    /// - on every `SegmentTemplate`, `availabilityTimeOffset` = segment
    ///   target − part target and `availabilityTimeComplete="false"`: a
    ///   segment is served (chunked, each part as it closes) while it is
    ///   made;
    /// - after the last complete segment, one `S` with `r="1"`: the segment
    ///   in progress and the one after it, both with the duration of the
    ///   last complete segment (the GOP, as a prediction). dash.js reloads
    ///   an MPD at most once a second and only asks for segments its
    ///   timeline lists, so a timeline that ended at the segment in
    ///   progress left it up to a second behind at every segment boundary;
    ///   listing the next one ahead lets it ask for it as soon as it is
    ///   available (`availabilityTimeOffset`; the origin holds an early
    ///   request until the segment starts). Both entries are predictions:
    ///   once a segment completes, its `S` states its real duration and the
    ///   one after it moves to where it really starts (the entries that may
    ///   change, see `server/tests/common/history.rs`). Not listed after a
    ///   discontinuity, nor while the publisher is away
    ///   ([`Manifests::publisher_away`]), nor when the segment in progress
    ///   starts a new period (a new config); a config change the origin cannot see yet
    ///   (between a segment's first frame and its first part) makes the
    ///   prediction wrong until the next MPD.
    pub fn dash_ll(&self, now_ms: u64) -> String {
        let mut text = self.dash_state(now_ms).render();
        if !self.has_parts() || self.ended {
            return text;
        }
        let seg = u64::from(self.opts.target_segment_ms);
        let part = u64::from(self.opts.part_target_ms);
        let ato = seg.saturating_sub(part);
        let target = 3 * self.part_target_ms();
        let sd = format!(
            "  <ServiceDescription id=\"0\">\n    <Latency referenceId=\"0\" target=\"{target}\" \
             min=\"{}\" max=\"{}\"/>\n    <PlaybackRate min=\"0.96\" max=\"1.04\"/>\n  \
             </ServiceDescription>\n",
            (2 * self.part_target_ms()).min(target),
            target.saturating_mul(3),
        );
        if let Some(at) = text.find("  <Period") {
            text.insert_str(at, &sd);
        }
        for media in ["seg-$Number$.m4s", "audio-$Number$.m4s"] {
            text = text.replace(
                &format!(" media=\"{media}\""),
                &format!(
                    " availabilityTimeOffset=\"{}.{:03}\" availabilityTimeComplete=\"false\" \
                     media=\"{media}\"",
                    ato / 1000,
                    ato % 1000
                ),
            );
        }
        // The segment in progress and the one after it, in the last period.
        let pos = self.ll_position();
        let Some(last) = self.window.back() else {
            return text;
        };
        let first = self.parts.iter().find(|p| p.segment == pos.open_segment);
        if self.open_discontinuity
            || self.away_from.is_some()
            || first.is_some_and(|f| f.config_id != last.rec.config_id)
        {
            return text;
        }
        // Before its first part is out, the segment in progress starts
        // where the last one ended.
        let video_start = first.map_or(last.rec.start.saturating_add(last.rec.duration), |f| {
            f.start
        });
        // The S of each set in the last period, in the order the sets are
        // written: video (when there is video), then audio.
        let video = self
            .periods
            .back()
            .is_some_and(|p| self.period_has_video(p));
        let mut entries = Vec::new();
        if video {
            entries.push(Some(format!(
                "{S_INDENT}<S t=\"{video_start}\" d=\"{}\" r=\"1\"/>\n",
                last.rec.duration
            )));
        }
        let audio = last
            .rec
            .audio
            .as_ref()
            .filter(|l| l.frame_count > 0 && !last.dash_audio_s.is_empty())
            .and_then(|l| {
                match first {
                    Some(f) => f
                        .audio
                        .as_ref()
                        .filter(|a| a.frame_count > 0)
                        .map(|a| a.start),
                    None => Some(l.start.saturating_add(l.duration)),
                }
                .map(|t| (t, l.duration))
            })
            .map(|(t, d)| format!("{S_INDENT}<S t=\"{t}\" d=\"{d}\" r=\"1\"/>\n"));
        entries.push(audio);
        let Some(period_at) = text.rfind("  <Period") else {
            return text;
        };
        let close = "          </SegmentTimeline>";
        let mut at = period_at;
        let mut out = text.clone();
        let mut shift = 0;
        for e in entries {
            let Some(rel) = text[at..].find(close) else {
                break;
            };
            let pos = at + rel;
            if let Some(e) = e {
                out.insert_str(pos + shift, &e);
                shift += e.len();
            }
            at = pos + close.len();
        }
        out
    }

    pub(super) fn dash_state(&self, now_ms: u64) -> ManifestState {
        let last = self.periods.back();
        let video = last.is_some_and(|p| self.period_has_video(p));
        let last = last.map(|p| p.id);
        ManifestState {
            head: self.dash_head(now_ms),
            entries: self
                .window
                .iter()
                .filter(|w| Some(w.period) == last)
                .map(|w| {
                    if video {
                        w.dash_s.clone()
                    } else {
                        w.dash_audio_s.clone()
                    }
                })
                .collect(),
            tail: self.dash_tail(),
        }
    }
}

/// Closes an AdaptationSet opened through `<SegmentTimeline>`.
pub(super) const AS_CLOSE: &str =
    "          </SegmentTimeline>\n        </SegmentTemplate>\n      \
                        </Representation>\n    </AdaptationSet>\n";
pub(super) const PERIOD_END: &str = "  </Period>\n";

#[cfg(test)]
mod tests {
    use super::super::tests::{cfg, check_mpd, rec};
    use super::super::{Manifests, PlaylistOptions};

    fn opts(window: usize, url: &str) -> PlaylistOptions {
        PlaylistOptions {
            target_segment_ms: 2000,
            max_segment_ms: 0,
            max_window_bytes: u64::MAX,
            window,
            utc_timing_url: url.into(),
            ..Default::default()
        }
    }

    const AST: u64 = 1_795_608_000_000; // 2026-11-25T12:00:00Z

    #[test]
    fn exact_mpd_text() {
        let mut m = Manifests::new(opts(6, "/time"), AST);
        let mut c = cfg(0);
        c.frame_rate_num = 30_000;
        c.frame_rate_den = 1001;
        let mut r = rec(0, 0, 180_180);
        r.byte_size = 250_250; // 1 Mbit/s over 2.002 s
        m.push(r, &c, AST + 2500);
        let text = m.dash(AST + 2500).render();
        assert_eq!(
            text,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019" type="dynamic" availabilityStartTime="2026-11-25T12:00:00.000Z" publishTime="2026-11-25T12:00:02.500Z" minimumUpdatePeriod="PT2S" timeShiftBufferDepth="PT2.002S" suggestedPresentationDelay="PT6S" minBufferTime="PT2S" maxSegmentDuration="PT2S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true">
      <Representation id="v0" codecs="avc1.64001f" width="1280" height="720" frameRate="30000/1001" bandwidth="1000000">
        <SegmentTemplate timescale="90000" presentationTimeOffset="0" initialization="init-0.mp4" media="seg-$Number$.m4s" startNumber="0">
          <SegmentTimeline>
            <S t="0" d="180180"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="/time"/>
</MPD>
"#
        );
        check_mpd(&text, true);
    }

    #[test]
    fn periods_split_on_config_change_and_discontinuity_and_slide_out() {
        let mut m = Manifests::new(opts(4, "/time"), AST);
        let mut t = 0;
        let mut push = |m: &mut Manifests, seq: u64, config: u32, disc: bool| {
            let mut r = rec(seq, t, 180_180);
            r.config_id = config;
            r.discontinuity = disc;
            t += 180_180;
            m.push(r, &cfg(config), AST)
        };
        push(&mut m, 0, 0, false);
        push(&mut m, 1, 0, false);
        // Config change: the old period's 2 entries go into the head.
        let u = push(&mut m, 2, 1, false);
        assert_eq!((u.dash.remove_entries, u.dash.append_entries.len()), (2, 1));
        // Discontinuity with the same config: another period.
        let u = push(&mut m, 3, 1, true);
        assert_eq!(u.dash.remove_entries, 1);
        let text = m.dash(AST).render();
        assert_eq!(text.matches("<Period ").count(), 3);
        assert!(text.contains(r#"<Period id="2" start="PT6.006S">"#));
        assert!(text.contains(r#"presentationTimeOffset="540540""#));
        assert!(text.contains(r#"initialization="init-1.mp4""#));
        check_mpd(&text, true);
        // Segment 0 slides out of period 0 (not the last period): only the
        // head changes.
        let u = push(&mut m, 4, 1, false);
        assert_eq!((u.removed, u.dash.remove_entries), (1, 0));
        let text = m.dash(AST).render();
        assert!(text.contains(r#"startNumber="1""#));
        // The period keeps its start after its first segment left.
        assert!(text.contains(r#"<Period id="0" start="PT0S">"#));
        // Segment 1 leaves: period 0 disappears; config 0 is no longer kept.
        push(&mut m, 5, 1, false);
        let text = m.dash(AST).render();
        assert!(!text.contains(r#"<Period id="0""#));
        assert!(!text.contains("init-0.mp4"));
        assert_eq!(text.matches("<Period ").count(), 2);
        // Window 4 = [2, 3, 4, 5]; 3 is the first of the last period, so
        // pushing 6 and 7 removes from the last period's entries.
        push(&mut m, 6, 1, false);
        let u = push(&mut m, 7, 1, false);
        assert_eq!((u.removed, u.dash.remove_entries), (1, 1));
        check_mpd(&m.dash(AST).render(), true);
    }

    #[test]
    fn static_after_end() {
        let mut m = Manifests::new(opts(3, "/time"), AST);
        for i in 0..5u64 {
            let mut r = rec(i, i * 180_180, 180_180);
            let config = u32::from(i >= 3);
            r.config_id = config;
            m.push(r, &cfg(config), AST);
        }
        let u = m.end(AST + 10_000);
        assert!(u.ended);
        assert_eq!((u.dash.remove_entries, u.dash.append_entries.len()), (0, 0));
        let text = m.dash(AST + 10_000).render();
        assert!(text.contains(r#"type="static""#));
        assert!(!text.contains("minimumUpdatePeriod"));
        assert!(!text.contains("timeShiftBufferDepth"));
        // The end of the last segment (5 x 2.002 s): nothing is re-based,
        // periods keep the starts and offsets they had while live.
        assert!(text.contains(r#"mediaPresentationDuration="PT10.01S""#));
        assert!(text.contains(r#"<Period id="0" start="PT0S">"#));
        assert!(text.contains(r#"presentationTimeOffset="0""#));
        assert!(text.contains(r#"<Period id="1" start="PT6.006S">"#));
        assert!(text.contains(r#"presentationTimeOffset="540540""#));
        check_mpd(&text, true);
    }

    #[test]
    fn attribute_values_are_escaped() {
        let mut m = Manifests::new(opts(2, "/time?a=1&b=\"<x>'"), AST);
        m.push(rec(0, 0, 180_180), &cfg(0), AST);
        let text = m.dash(AST).render();
        assert!(text.contains(r#"value="/time?a=1&amp;b=&quot;&lt;x&gt;&apos;""#));
        let doc = roxmltree::Document::parse(&text).unwrap();
        let utc = doc
            .descendants()
            .find(|n| n.has_tag_name("UTCTiming"))
            .unwrap();
        assert_eq!(utc.attribute("value"), Some("/time?a=1&b=\"<x>'"));
    }

    #[test]
    fn frame_rate_bandwidth_and_degenerate_values() {
        let mut m = Manifests::new(opts(0, "/time"), AST);
        let mut c = cfg(0);
        c.frame_rate_num = 60;
        c.frame_rate_den = 2;
        let mut r = rec(0, 0, 0); // zero duration: no division by zero
        r.byte_size = 0;
        m.push(r, &c, AST);
        let text = m.dash(AST).render();
        assert!(text.contains(r#"frameRate="30""#));
        assert!(text.contains(r#"bandwidth="1""#));
        assert!(text.contains(r#"timeShiftBufferDepth="PT2S""#), "{text}");
        // (A new config: a period's attributes never change once stated.)
        let mut c = cfg(1);
        c.frame_rate_num = 60;
        c.frame_rate_den = 0;
        let mut r = rec(1, 0, 90_000);
        r.byte_size = 1000;
        r.config_id = 1;
        m.push(r, &c, AST);
        let text = m.dash(AST).render();
        assert!(!text.contains("frameRate"));
        assert!(text.contains(r#"bandwidth="8000""#));
        assert_eq!(m.segments().count(), 1, "window 0 acts as 1");
    }
}

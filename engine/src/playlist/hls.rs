//! HLS media playlists (RFC 8216), CMAF and MPEG-TS flavours.
//!
//! Head: `#EXTM3U` .. `#EXT-X-MAP` (everything that changes as the window
//! slides). Entries: one per segment, its tags and URI. Tail:
//! `#EXT-X-ENDLIST` once ended.
//!
//! `EXT-X-TARGETDURATION` is the ceiling of the longest segment the
//! segmenter may make (`--max-segment-duration`), fixed for the session:
//! RFC 8216 §6.2.2 allows a live playlist to change only by appending,
//! removing from the front and `EXT-X-ENDLIST`, and the segmenter never
//! makes a segment longer, so every rounded EXTINF fits under it.
//! `EXT-X-INDEPENDENT-SEGMENTS` is stated while every segment of the session
//! has started with a keyframe, and dropped for good once one did not.

use std::fmt::Write;

use super::time::{write_extinf_seconds, write_iso8601_ms};
use super::{ManifestState, Manifests};
use crate::frame::{AudioConfig, SegmentRecord, TIMESCALE};

/// `#EXT-X-PLAYLIST-TYPE` (RFC 8216 4.3.3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaylistType {
    /// Segments are only ever appended; `#EXT-X-ENDLIST` may follow.
    Event,
    /// The playlist never changes (it has `#EXT-X-ENDLIST`).
    Vod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// fMP4 segments (`seg-N.m4s`) with `EXT-X-MAP` init segments; version 7.
    Cmaf,
    /// MPEG-TS segments (`seg-N.ts`), self-initializing; version 3 (decimal
    /// EXTINF).
    Ts,
    /// The CMAF audio track (`audio-N.m4s`, `EXT-X-MAP` `audio-init.mp4`):
    /// the `EXT-X-MEDIA TYPE=AUDIO` rendition; version 7.
    Audio,
}

/// The audio track's init segment, as the origin serves it.
pub const AUDIO_INIT: &str = "audio-init.mp4";

/// `samples` of `cfg`'s rate in 90 kHz ticks (rounded).
pub(super) fn audio_ticks(samples: u64, cfg: &AudioConfig) -> u64 {
    let rate = u128::from(cfg.sample_rate.max(1));
    ((u128::from(samples) * u128::from(TIMESCALE) + rate / 2) / rate) as u64
}

/// One segment's lines in the audio playlist: its audio span's duration
/// and wall-clock time; a segment with no audio (before the audio
/// started) is an `EXT-X-GAP` of the video's duration, so the audio
/// playlist's media sequence numbers stay the video's.
pub(super) fn audio_entry(rec: &SegmentRecord, audio: Option<&AudioConfig>) -> String {
    let mut s = String::with_capacity(112);
    if rec.discontinuity {
        s.push_str("#EXT-X-DISCONTINUITY\n");
    }
    let span = rec.audio.as_ref().filter(|a| a.frame_count > 0);
    match (span, audio) {
        (Some(a), Some(cfg)) => {
            // The video's wall clock moved by the audio's offset from it.
            let a_ms = audio_ticks(a.start, cfg) as i128 / 90;
            let v_ms = if rec.frame_count == 0 {
                a_ms
            } else {
                i128::from(rec.start / 90)
            };
            let pdt = (i128::from(rec.program_date_time_ms) + a_ms - v_ms).max(0) as u64;
            s.push_str("#EXT-X-PROGRAM-DATE-TIME:");
            write_iso8601_ms(&mut s, pdt);
            s.push_str("\n#EXTINF:");
            write_extinf_seconds(&mut s, audio_ticks(a.duration, cfg));
        }
        _ => {
            s.push_str("#EXT-X-PROGRAM-DATE-TIME:");
            write_iso8601_ms(&mut s, rec.program_date_time_ms);
            s.push_str("\n#EXTINF:");
            write_extinf_seconds(&mut s, rec.duration);
            s.push_str(",\n#EXT-X-GAP");
        }
    }
    let _ = write!(
        s,
        ",\n{}\n",
        super::segment_name(rec.sequence, Flavour::Audio)
    );
    if s.contains(",\n#EXT-X-GAP,") {
        s = s.replace(",\n#EXT-X-GAP,", ",\n#EXT-X-GAP");
    }
    s
}

/// URI of the init segment of a config; the CMAF muxer serves this name.
fn write_map(out: &mut String, config_id: u32) {
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", super::init_name(config_id));
}

/// One segment's lines. `config_changed`: its config differs from the
/// previous segment's, so (CMAF only) a new `EXT-X-MAP` precedes it. The
/// entry is rendered once and never changes, so when this segment becomes
/// the first in the window its MAP repeats the head's: harmless, the URI is
/// the same.
pub(super) fn entry(rec: &SegmentRecord, flavour: Flavour, config_changed: bool) -> String {
    let mut s = String::with_capacity(112);
    if rec.discontinuity {
        s.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if flavour == Flavour::Cmaf && config_changed {
        write_map(&mut s, rec.config_id);
    }
    s.push_str("#EXT-X-PROGRAM-DATE-TIME:");
    write_iso8601_ms(&mut s, rec.program_date_time_ms);
    s.push_str("\n#EXTINF:");
    write_extinf_seconds(&mut s, rec.duration);
    let _ = write!(s, ",\n{}\n", super::segment_name(rec.sequence, flavour));
    s
}

impl Manifests {
    /// The HLS multivariant playlist (RFC 8216 4.3.4): the video playlist
    /// (`index.m3u8`) with the codecs, resolution and frame rate of the
    /// newest segment and the peak bit rate of the window, and, when the
    /// session has audio, an `EXT-X-MEDIA TYPE=AUDIO` rendition
    /// (`audio.m3u8`, CMAF) it names as its `AUDIO` group. For MPEG-TS
    /// (`ts` true) the audio is muxed into the video's segments: one
    /// variant whose `CODECS` name both. An audio-only session's variant is
    /// the audio playlist (CMAF) or `index.m3u8` (TS). `None` before the
    /// first segment.
    pub fn hls_multivariant(&self, ts: bool) -> Option<String> {
        self.hls_multivariant_naming(ts, "index.m3u8", "audio.m3u8")
    }

    /// [`hls_multivariant`](Self::hls_multivariant) naming other media
    /// playlists (a recording's VOD ones: `vod.m3u8`, `audio-vod.m3u8`).
    pub fn hls_multivariant_naming(
        &self,
        ts: bool,
        video_uri: &str,
        audio_uri: &str,
    ) -> Option<String> {
        let last = self.window.back()?;
        let video = self.configs.get(&last.rec.config_id);
        let audio = self.audio.as_ref();
        let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:");
        s.push_str(if ts { "3\n" } else { "7\n" });
        if self.all_independent {
            s.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        let (bytes, ticks) = self.window.iter().fold((0u128, 0u128), |(b, t), w| {
            let a = w.rec.audio.as_ref().map_or(0, |a| a.byte_size);
            (
                b.max(
                    u128::from(w.rec.byte_size + a) * u128::from(TIMESCALE)
                        / u128::from(w.rec.duration.max(1)),
                ),
                t,
            )
        });
        let _ = ticks;
        // Bytes per second of the busiest segment, as bits, with the
        // containers' overhead (about 10 %).
        let bandwidth = (bytes * 8 * 11 / 10).max(1);
        let mut codecs: Vec<String> = Vec::new();
        if let Some(v) = video {
            codecs.push(v.codec_string());
        }
        if let Some(a) = audio {
            codecs.push(a.codec_string());
        }
        let group = audio.is_some() && video.is_some() && !ts;
        if group {
            if let Some(a) = audio {
                let _ = writeln!(
                    s,
                    "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,\
                     AUTOSELECT=YES,CHANNELS=\"{}\",URI=\"{audio_uri}\"",
                    a.channels()
                );
            }
        }
        let _ = write!(
            s,
            "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{}\"",
            codecs.join(",")
        );
        if let Some(v) = video {
            let _ = write!(s, ",RESOLUTION={}x{}", v.width, v.height);
            if v.frame_rate_num > 0 && v.frame_rate_den > 0 {
                let _ = write!(
                    s,
                    ",FRAME-RATE={:.3}",
                    f64::from(v.frame_rate_num) / f64::from(v.frame_rate_den)
                );
            }
        }
        if group {
            s.push_str(",AUDIO=\"audio\"");
        }
        s.push('\n');
        let _ = writeln!(
            s,
            "{}",
            if video.is_none() && audio.is_some() && !ts {
                audio_uri
            } else {
                video_uri
            }
        );
        Some(s)
    }

    /// The HLS audio media playlist (empty entries before any audio).
    pub fn hls_audio(&self) -> ManifestState {
        self.hls_state(Flavour::Audio)
    }

    /// Whether the session has audio (its manifests list an audio track).
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }
}

impl Manifests {
    pub(super) fn hls_head(&self, flavour: Flavour) -> String {
        let mut s = String::with_capacity(224);
        let version = match flavour {
            Flavour::Cmaf | Flavour::Audio => 7,
            Flavour::Ts => 3,
        };
        let first = self.window.front().map(|w| w.rec.config_id);
        self.write_hls_head(&mut s, flavour, version, first, false, None);
        s
    }

    /// The whole playlist with `#EXT-X-PLAYLIST-TYPE` (RFC 8216 4.3.3.5):
    /// for a recording, whose playlist lists every segment of the session
    /// (a window as long as the session). `Event` while the session goes
    /// on (segments are only appended; `#EXT-X-ENDLIST` once it ended),
    /// `Vod` once it ended (then with `#EXT-X-ENDLIST`).
    pub fn hls_typed(&self, flavour: Flavour, playlist_type: PlaylistType) -> String {
        let version = match flavour {
            Flavour::Cmaf | Flavour::Audio => 7,
            Flavour::Ts => 3,
        };
        let first = self.window.front().map(|w| w.rec.config_id);
        let mut state = self.hls_state(flavour);
        state.head.clear();
        self.write_hls_head(
            &mut state.head,
            flavour,
            version,
            first,
            false,
            Some(playlist_type),
        );
        if playlist_type == PlaylistType::Vod && state.tail.is_empty() {
            state.tail = "#EXT-X-ENDLIST\n".to_owned();
        }
        state.render()
    }

    /// The head: `map` is the config whose `EXT-X-MAP` (CMAF) the first
    /// listed segment needs; `ll` adds the low-latency server control.
    pub(super) fn write_hls_head(
        &self,
        s: &mut String,
        flavour: Flavour,
        version: u32,
        map: Option<u32>,
        ll: bool,
        playlist_type: Option<PlaylistType>,
    ) {
        let first = self.window.front().map(|w| &w.rec);
        // RFC 8216 numbers a segment's discontinuity as this value plus the
        // EXT-X-DISCONTINUITY tags before it in the playlist. The record of a
        // discontinuity segment already carries the new sequence, and its
        // (cached) entry still has the tag while it is first in the window,
        // so subtract it: the value then grows exactly when a discontinuity
        // segment leaves the window, as the RFC requires.
        let discontinuity_sequence = first.map_or(0, |r| {
            r.discontinuity_sequence
                .saturating_sub(u64::from(r.discontinuity))
        });
        let _ = write!(
            s,
            "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{}\n\
             #EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}\n",
            self.target_duration,
            self.media_sequence(),
        );
        match playlist_type {
            Some(PlaylistType::Event) => s.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
            Some(PlaylistType::Vod) => s.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
            None => {}
        }
        if self.all_independent {
            s.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        if ll {
            self.write_ll_control(s);
        }
        match (flavour, map) {
            (Flavour::Cmaf, Some(config_id)) => write_map(s, config_id),
            (Flavour::Audio, _) => {
                let _ = writeln!(s, "#EXT-X-MAP:URI=\"{AUDIO_INIT}\"");
            }
            _ => {}
        }
    }

    pub(super) fn hls_tail(&self) -> String {
        if self.ended {
            "#EXT-X-ENDLIST\n".to_owned()
        } else {
            String::new()
        }
    }

    pub(super) fn hls_state(&self, flavour: Flavour) -> ManifestState {
        ManifestState {
            head: self.hls_head(flavour),
            entries: self
                .window
                .iter()
                .map(|w| match flavour {
                    Flavour::Cmaf => w.hls_cmaf.clone(),
                    Flavour::Ts => w.hls_ts.clone(),
                    Flavour::Audio => w.hls_audio.clone(),
                })
                .collect(),
            tail: self.hls_tail(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cfg, rec};
    use super::super::{Manifests, PlaylistOptions};

    fn opts(target_ms: u32, window: usize) -> PlaylistOptions {
        PlaylistOptions {
            target_segment_ms: target_ms,
            max_segment_ms: 0,
            max_window_bytes: u64::MAX,
            window,
            utc_timing_url: "/time".into(),
            ..Default::default()
        }
    }

    fn header_value(text: &str, tag: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(tag)?.strip_prefix(':'))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn exact_playlist_text() {
        let mut m = Manifests::new(opts(2000, 3), 0);
        let c = cfg(0);
        m.push(rec(0, 0, 180_180), &c, 0);
        m.push(rec(1, 180_180, 180_180), &c, 0);
        assert_eq!(
            m.hls_cmaf().render(),
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"init-0.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T12:00:00.000Z\n#EXTINF:2.002000,\nseg-0.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T12:00:02.002Z\n#EXTINF:2.002000,\nseg-1.m4s\n"
        );
        m.end(0);
        assert_eq!(
            m.hls_ts().render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T12:00:00.000Z\n#EXTINF:2.002000,\nseg-0.ts\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T12:00:02.002Z\n#EXTINF:2.002000,\nseg-1.ts\n\
             #EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn target_duration_is_fixed_by_the_longest_segment_allowed() {
        let mut o = opts(2000, 2);
        o.max_segment_ms = 6000;
        let mut m = Manifests::new(o, 0);
        let c = cfg(0);
        let mut t = 0;
        let mut seen = Vec::new();
        seen.push(header_value(&m.hls_ts().render(), "#EXT-X-TARGETDURATION").unwrap());
        // Whatever the GOP does (up to the maximum), the value never moves.
        for (i, d) in [180_180u64, 224_999, 225_000, 540_000, 90_000]
            .into_iter()
            .enumerate()
        {
            m.push(rec(i as u64, t, d), &c, 0);
            t += d;
            seen.push(header_value(&m.hls_ts().render(), "#EXT-X-TARGETDURATION").unwrap());
        }
        assert_eq!(seen, [6, 6, 6, 6, 6, 6]);
        // A maximum of 2.5 s rounds up to 3; none (0) means the target.
        let mut o = opts(2000, 2);
        o.max_segment_ms = 2500;
        let m = Manifests::new(o, 0);
        assert_eq!(
            header_value(&m.hls_ts().render(), "#EXT-X-TARGETDURATION"),
            Some(3)
        );
        let m = Manifests::new(opts(2000, 2), 0);
        assert_eq!(
            header_value(&m.hls_ts().render(), "#EXT-X-TARGETDURATION"),
            Some(2)
        );
        // A zero target must still be a usable value.
        let m = Manifests::new(opts(0, 2), 0);
        assert_eq!(
            header_value(&m.hls_ts().render(), "#EXT-X-TARGETDURATION"),
            Some(1)
        );
    }

    #[test]
    fn media_sequence_window_and_discontinuity_sequence() {
        let mut m = Manifests::new(opts(2000, 3), 0);
        let c = cfg(0);
        // Segment 2 follows a reconnect: discontinuity, sequence 1.
        let mut dseq = 0;
        let mut expect_ms = Vec::new();
        let mut expect_ds = Vec::new();
        for i in 0..8u64 {
            let mut r = rec(i, i * 180_180, 180_180);
            if i == 2 || i == 6 {
                r.discontinuity = true;
                dseq += 1;
            }
            r.discontinuity_sequence = dseq;
            let u = m.push(r, &c, 0);
            assert!(m.segments().count() <= 3);
            assert_eq!(u.removed, u32::from(i >= 3));
            let text = m.hls_cmaf().render();
            expect_ms.push(header_value(&text, "#EXT-X-MEDIA-SEQUENCE").unwrap());
            expect_ds.push(header_value(&text, "#EXT-X-DISCONTINUITY-SEQUENCE").unwrap());
            assert_eq!(u.media_sequence, m.media_sequence());
        }
        assert_eq!(expect_ms, [0, 0, 0, 1, 2, 3, 4, 5]);
        // Window after each push: [0..=i] clipped to 3. The value grows when
        // segment 2 (after pushing 5) and segment 6 (never) leave the window.
        assert_eq!(expect_ds, [0, 0, 0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn endlist_only_after_end() {
        let mut m = Manifests::new(opts(2000, 3), 0);
        let c = cfg(0);
        for i in 0..4 {
            m.push(rec(i, i * 180_180, 180_180), &c, 0);
            assert!(!m.hls_cmaf().render().contains("#EXT-X-ENDLIST"));
            assert!(!m.hls_ts().render().contains("#EXT-X-ENDLIST"));
        }
        let u = m.end(0);
        assert!(u.ended && m.is_ended());
        assert_eq!(u.hls_cmaf.tail, "#EXT-X-ENDLIST\n");
        assert!(m
            .hls_cmaf()
            .render()
            .ends_with("seg-3.m4s\n#EXT-X-ENDLIST\n"));
        assert!(m.hls_ts().render().ends_with("seg-3.ts\n#EXT-X-ENDLIST\n"));
        // Pushing after the end changes nothing.
        let before = m.hls_cmaf();
        let u = m.push(rec(4, 4 * 180_180, 180_180), &c, 0);
        assert_eq!((u.removed, u.ended), (0, true));
        assert_eq!(m.hls_cmaf(), before);
    }

    #[test]
    fn independent_segments_until_the_first_that_is_not() {
        let mut m = Manifests::new(opts(2000, 2), 0);
        let c = cfg(0);
        let tag = "#EXT-X-INDEPENDENT-SEGMENTS\n";
        m.push(rec(0, 0, 180_180), &c, 0);
        assert!(m.hls_cmaf().render().contains(tag));
        let mut r = rec(1, 180_180, 180_180);
        r.keyframe_aligned = false;
        r.sap_type = 0;
        m.push(r, &c, 0);
        assert!(!m.hls_cmaf().render().contains(tag));
        // Never stated again, even once the unaligned segment left: the tag
        // is a promise about every segment of the playlist's life.
        for i in 2..5 {
            m.push(rec(i, i * 180_180, 180_180), &c, 0);
            assert!(!m.hls_ts().render().contains(tag));
        }
    }

    #[test]
    fn ext_x_map_on_config_change() {
        let mut m = Manifests::new(opts(2000, 3), 0);
        m.push(rec(0, 0, 180_180), &cfg(0), 0);
        let mut r = rec(1, 180_180, 180_180);
        r.config_id = 1;
        m.push(r, &cfg(1), 0);
        let mut r = rec(2, 360_360, 180_180);
        r.config_id = 1;
        m.push(r, &cfg(1), 0);
        let text = m.hls_cmaf().render();
        let lines: Vec<&str> = text.lines().collect();
        let map0 = lines
            .iter()
            .position(|l| *l == "#EXT-X-MAP:URI=\"init-0.mp4\"");
        let map1 = lines
            .iter()
            .position(|l| *l == "#EXT-X-MAP:URI=\"init-1.mp4\"");
        let seg0 = lines.iter().position(|l| *l == "seg-0.m4s");
        let seg1 = lines.iter().position(|l| *l == "seg-1.m4s");
        let (map0, map1, seg0, seg1) = (map0.unwrap(), map1.unwrap(), seg0.unwrap(), seg1.unwrap());
        assert!(map0 < seg0 && seg0 < map1 && map1 < seg1);
        assert_eq!(
            text.matches("#EXT-X-MAP").count(),
            2,
            "no MAP for segment 2"
        );
        assert!(!m.hls_ts().render().contains("#EXT-X-MAP"));
        // Config 0 leaves the window: the head names init-1 (and the first
        // entry repeats it, which is valid).
        let mut r = rec(3, 540_540, 180_180);
        r.config_id = 1;
        m.push(r, &cfg(1), 0);
        let text = m.hls_cmaf().render();
        assert!(!text.contains("init-0.mp4"));
        let head = m.hls_cmaf().head;
        assert!(head.ends_with("#EXT-X-MAP:URI=\"init-1.mp4\"\n"));
    }

    /// A recording's playlist: every segment (no window), the type tag
    /// after the version, EVENT growing only at its end and gaining
    /// `#EXT-X-ENDLIST` at the end; VOD always closed.
    #[test]
    fn whole_session_typed_playlists() {
        use super::PlaylistType;
        use crate::playlist::HlsFlavour;
        let live = Manifests::new(opts(2000, 2), 0);
        let mut m = live.whole_session();
        let c = cfg(0);
        let mut prev = String::new();
        for i in 0..10u64 {
            let mut r = rec(i, i * 180_180, 180_180);
            if i == 5 {
                r.discontinuity = true;
                r.discontinuity_sequence = 1;
            } else if i > 5 {
                r.discontinuity_sequence = 1;
            }
            m.push(r, &c, 0);
            let event = m.hls_typed(HlsFlavour::Cmaf, PlaylistType::Event);
            assert!(event.starts_with(
                "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
                 #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:EVENT\n"
            ));
            assert!(event.starts_with(&prev), "an EVENT playlist only grows");
            assert!(!event.contains("#EXT-X-ENDLIST"));
            prev = event;
        }
        assert_eq!(m.segments().count(), 10, "no segment leaves the window");
        let vod = m.hls_typed(HlsFlavour::Ts, PlaylistType::Vod);
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(vod.ends_with("seg-9.ts\n#EXT-X-ENDLIST\n"));
        assert_eq!(vod.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        m.end(0);
        let event = m.hls_typed(HlsFlavour::Cmaf, PlaylistType::Event);
        assert_eq!(event, format!("{prev}#EXT-X-ENDLIST\n"));
    }
}

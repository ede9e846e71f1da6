//! Live manifests: HLS media playlists (CMAF and MPEG-TS flavours) and a
//! DASH MPD, all rendered from the same window of [`SegmentRecord`]s, plus
//! the edit (delta) model that lets a client keep its own copy current.
//!
//! A manifest is modelled as `head + entries + tail`
//! ([`ManifestState`]). Entries are the per-segment parts that only ever
//! leave at the front and arrive at the back; everything that changes in
//! place (media sequence, target duration, publish time, ...) lives in the
//! head or tail, which every [`ManifestEdit`] replaces whole. Entries are
//! rendered once, when their segment arrives, and cached; each update
//! re-renders only the head and tail.
//!
//! The invariant (tested below over randomized streams): a copy taken from
//! [`Manifests::hls_cmaf`] (etc.) at any point, with each later update's edit
//! applied, equals the freshly rendered manifest, entry for entry.
//!
//! Everything here is pure and synchronous: no I/O and no clock reads, the
//! caller passes wall-clock times in.

mod dash;
pub mod group;
mod hls;
mod ll;
mod time;

use std::collections::{BTreeMap, VecDeque};

use crate::frame::{AudioConfig, CodecConfig, PartRecord, SegmentRecord};

pub use hls::PlaylistType;
pub use hls::{Flavour as HlsFlavour, AUDIO_INIT};
pub use ll::{LlPosition, PART_SEGMENTS};

pub use time::iso8601_ms;

/// The name of the CMAF init segment of codec config `config_id`, as the
/// playlists, the MPD, the HTTP origin and recordings name it.
/// Slack (90 kHz ticks) when placing a rendition's segment in a period
/// of another rendition: their frame grids agree to rounding.
pub(crate) const ALIGN_SLACK: u64 = 45;

pub fn init_name(config_id: u32) -> String {
    format!("init-{config_id}.mp4")
}

/// The name of media segment `sequence` in `flavour` (the MPEG-TS ones
/// live under `ts/`, beside their playlist), as the playlists, the HTTP
/// origin and recordings name it.
pub fn segment_name(sequence: u64, flavour: HlsFlavour) -> String {
    match flavour {
        HlsFlavour::Cmaf => format!("seg-{sequence}.m4s"),
        HlsFlavour::Ts => format!("seg-{sequence}.ts"),
        HlsFlavour::Audio => format!("audio-{sequence}.m4s"),
    }
}

/// What the manifests are configured with (per session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaylistOptions {
    /// Configured segment target, e.g. 2000.
    pub target_segment_ms: u32,
    /// Longest segment the segmenter makes, ms (e.g. 6000); 0 means the
    /// target. Fixes `EXT-X-TARGETDURATION` (its ceiling in seconds) and
    /// DASH `maxSegmentDuration` for the whole session, so neither ever
    /// changes (RFC 8216 §6.2.2), whatever the stream's GOP does.
    pub max_segment_ms: u32,
    /// Segments kept in the live window, e.g. 6. 0 is treated as 1.
    pub window: usize,
    /// Bytes the window's segments may hold together; older segments leave
    /// the window (whole) to stay within it. At least one segment stays.
    pub max_window_bytes: u64,
    /// URL of the origin's clock for DASH `<UTCTiming>`, e.g. `/time`.
    pub utc_timing_url: String,
    /// Part target, ms (0: no parts, no low-latency tags). Low-latency
    /// renderings ([`Manifests::hls_ll`]) list parts given to
    /// [`Manifests::push_part`].
    pub part_target_ms: u32,
    /// The longest frame interval expected, ms (one frame period at the
    /// stream's rate, rounded up): a part closes at the first frame boundary
    /// at or after the part target, so it can last up to the target plus
    /// one frame interval, and `PART-TARGET` announces that.
    pub frame_interval_ms: u32,
}

impl Default for PlaylistOptions {
    /// The server defaults (2 s segments, 6 in the window).
    fn default() -> Self {
        Self {
            target_segment_ms: 2000,
            max_segment_ms: 6000,
            window: 6,
            max_window_bytes: u64::MAX,
            utc_timing_url: "/time".to_owned(),
            part_target_ms: 0,
            frame_interval_ms: 0,
        }
    }
}

/// A manifest as `head + entries + tail`; [`render`](Self::render)
/// concatenates them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestState {
    pub head: String,
    pub entries: VecDeque<String>,
    pub tail: String,
}

impl ManifestState {
    /// Applies an edit: drop the first `remove_entries` entries (all of them
    /// if there are fewer: an edit from the network must not panic), append
    /// `append_entries`, replace head and tail.
    pub fn apply(&mut self, edit: &ManifestEdit) {
        let remove = usize::try_from(edit.remove_entries)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        self.entries.drain(..remove);
        self.entries.extend(edit.append_entries.iter().cloned());
        self.head.clone_from(&edit.head);
        self.tail.clone_from(&edit.tail);
    }

    /// The manifest text.
    pub fn render(&self) -> String {
        let len =
            self.head.len() + self.entries.iter().map(String::len).sum::<usize>() + self.tail.len();
        let mut out = String::with_capacity(len);
        out.push_str(&self.head);
        for e in &self.entries {
            out.push_str(e);
        }
        out.push_str(&self.tail);
        out
    }
}

/// How to turn the previous manifest into the next one (mirrors the proto's
/// `ManifestEdit`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestEdit {
    pub head: String,
    pub remove_entries: u32,
    pub append_entries: Vec<String>,
    pub tail: String,
}

/// One change to all three manifests (mirrors the proto's `ManifestDelta`,
/// which carries one HLS flavour; the gRPC layer picks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestUpdate {
    /// Sequence of the first segment now in the window.
    pub media_sequence: u64,
    /// Segments that slid out of the window with this update.
    pub removed: u32,
    /// The segment that caused the update (`None` for [`Manifests::end`]).
    pub segment_sequence: Option<u64>,
    pub ended: bool,
    pub hls_cmaf: ManifestEdit,
    pub hls_ts: ManifestEdit,
    pub dash: ManifestEdit,
    /// The HLS audio media playlist (sessions with audio; an empty edit
    /// otherwise).
    pub hls_audio: ManifestEdit,
}

/// A segment in the live window with its cached, rendered entries.
#[derive(Clone, Debug)]
struct WindowSegment {
    rec: SegmentRecord,
    /// Id of the DASH period it belongs to.
    period: u64,
    hls_cmaf: String,
    hls_ts: String,
    dash_s: String,
    /// Its entry in the audio playlist.
    hls_audio: String,
    /// Its `S` in the audio AdaptationSet (empty without audio frames).
    dash_audio_s: String,
}

/// A DASH period: a run of segments with one codec config and no
/// discontinuity inside.
#[derive(Clone, Debug)]
struct Period {
    id: u64,
    /// Media time (90 kHz) of its first segment, even after that segment
    /// left the window: a dynamic MPD's period must not move.
    start: u64,
    config_id: u32,
}

/// The live window of segment records and everything rendered from it.
#[derive(Clone, Debug)]
pub struct Manifests {
    opts: PlaylistOptions,
    availability_start_ms: u64,
    window: VecDeque<WindowSegment>,
    /// The periods that still have segments in the window, in order.
    periods: VecDeque<Period>,
    /// The configs referenced by the window (by `SegmentRecord::config_id`).
    configs: BTreeMap<u32, CodecConfig>,
    /// The session's audio format, once it has audio.
    audio: Option<AudioConfig>,
    next_period_id: u64,
    /// `EXT-X-TARGETDURATION`, seconds; fixed for the session.
    target_duration: u64,
    /// DASH `maxSegmentDuration`, ms; fixed for the session.
    max_segment_ms: u64,
    /// Sum of the window's segment sizes, bytes.
    window_bytes: u64,
    /// Every segment so far was independent (`EXT-X-INDEPENDENT-SEGMENTS`
    /// is stated while this holds, and never again once it does not).
    all_independent: bool,
    ended: bool,
    /// Parts of the last [`PART_SEGMENTS`] segments of the window and of
    /// the open segment, oldest first (low-latency renderings only).
    parts: VecDeque<PartRecord>,
    /// The open segment follows a discontinuity (a publisher reconnect):
    /// its parts are listed after `EXT-X-DISCONTINUITY`, as its entry will
    /// be once it is complete.
    open_discontinuity: bool,
    /// The publisher is gone (it may come back, after a gap) since the
    /// segment in progress was this one: nothing is predicted in the
    /// low-latency MPD until a later segment has a part.
    away_from: Option<u64>,
    /// The DASH period (id, start) the first segment pushed belongs to,
    /// when these manifests continue another copy's (see
    /// [`Manifests::continue_from`]).
    first_period: Option<(u64, u64)>,
}

/// Where a segment stands in the manifests of the copy that made them, for
/// another copy that starts at it ([`Manifests::continue_from`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentPlace {
    /// Id of the DASH period it belongs to.
    pub period_id: u64,
    /// Media time (90 kHz) of that period's first segment.
    pub period_start: u64,
    /// `EXT-X-INDEPENDENT-SEGMENTS` held with it pushed (every segment so
    /// far was independent).
    pub all_independent: bool,
}

impl Manifests {
    pub fn new(opts: PlaylistOptions, availability_start_ms: u64) -> Self {
        // ceil(longest segment / 1 s), and at least 1: a zero target
        // duration would make every segment violate the EXTINF rule.
        let max_segment_ms = u64::from(opts.max_segment_ms.max(opts.target_segment_ms));
        let target_duration = max_segment_ms.div_ceil(1000).max(1);
        let cap = opts.window.clamp(1, 64) + 1;
        Self {
            opts,
            availability_start_ms,
            window: VecDeque::with_capacity(cap),
            periods: VecDeque::new(),
            configs: BTreeMap::new(),
            audio: None,
            next_period_id: 0,
            target_duration,
            max_segment_ms,
            window_bytes: 0,
            all_independent: true,
            ended: false,
            parts: VecDeque::new(),
            open_discontinuity: false,
            away_from: None,
            first_period: None,
        }
    }

    /// Where segment `sequence` (in the window) stands: its DASH period and
    /// whether every segment up to it was independent.
    pub fn place_of(&self, sequence: u64) -> Option<SegmentPlace> {
        let seg = self
            .window
            .iter()
            .rev()
            .find(|s| s.rec.sequence == sequence)?;
        let period = self.periods.iter().find(|p| p.id == seg.period)?;
        Some(SegmentPlace {
            period_id: period.id,
            period_start: period.start,
            all_independent: self.all_independent,
        })
    }

    /// Makes these (empty) manifests continue another copy's whose
    /// segments before the next one pushed are not available here (a
    /// replica that joins a live session): that segment is put in the DASH
    /// period `place` names, period ids go on from there, and
    /// `EXT-X-INDEPENDENT-SEGMENTS` is as the other copy says, so both
    /// render the same text once their windows hold the same segments.
    /// Ignored once a segment was pushed.
    pub fn continue_from(&mut self, place: SegmentPlace) {
        if self.window.is_empty() && self.periods.is_empty() {
            self.first_period = Some((place.period_id, place.period_start));
            self.all_independent = place.all_independent;
        }
    }

    /// These manifests continue another copy's stream after a discontinuity
    /// (a session continued on another node): the first segment pushed
    /// opens DASH period `next_period_id`, and `EXT-X-INDEPENDENT-SEGMENTS`
    /// holds only if it held for the other copy (`all_independent`). Only
    /// before the first segment.
    pub fn resume_after(&mut self, next_period_id: u64, all_independent: bool) {
        if self.window.is_empty() && self.periods.is_empty() {
            self.next_period_id = next_period_id;
            self.all_independent = all_independent;
            self.first_period = None;
            self.open_discontinuity = true;
        }
    }

    /// Window length actually used: a window of 0 would leave nothing to
    /// play (and no previous segment to compare configs with), so it is 1.
    fn window_len(&self) -> usize {
        self.opts.window.max(1)
    }

    /// Adds a completed segment; `cfg` is the config its frames use (stored
    /// under `rec.config_id`, which is what the URIs name). Returns the edits
    /// that bring every manifest up to date.
    ///
    /// Records that cannot extend the stream are ignored and get an update
    /// that changes nothing but the DASH publish time: one whose sequence
    /// is not above the last one (a replay; HLS forbids the media sequence
    /// going back), and anything after [`end`](Self::end).
    pub fn push(&mut self, rec: SegmentRecord, cfg: &CodecConfig, now_ms: u64) -> ManifestUpdate {
        self.push_av(rec, Some(cfg), None, now_ms)
    }

    /// [`push`](Self::push) for a session with audio: `video` is the
    /// segment's video config (`None` in an audio-only session), `audio`
    /// the session's audio format (`None` until it has audio).
    pub fn push_av(
        &mut self,
        rec: SegmentRecord,
        video: Option<&CodecConfig>,
        audio: Option<&AudioConfig>,
        now_ms: u64,
    ) -> ManifestUpdate {
        if let Some(a) = audio {
            self.audio.get_or_insert_with(|| a.clone());
        }
        let segment_sequence = Some(rec.sequence);
        let prev = self
            .window
            .back()
            .map(|s| (s.rec.sequence, s.rec.config_id));
        if self.ended || prev.is_some_and(|(seq, _)| rec.sequence <= seq) {
            return self.unchanged_update(segment_sequence, now_ms);
        }

        let old_last_period = self.periods.back().map(|p| p.id);
        let old_last_entries = self.entries_in_last_period();

        // A new DASH period at the first segment, at a config change (new
        // init segment and Representation) and at a discontinuity (timing
        // may restart). A gap in the sequence numbers also starts one, since
        // `$Number$` addressing counts up from startNumber without gaps.
        let independent = rec.keyframe_aligned && (1..=3).contains(&rec.sap_type);
        self.all_independent &= independent;
        let new_period = match prev {
            None => true,
            Some((seq, config_id)) => {
                rec.discontinuity
                    || rec.config_id != config_id
                    || seq.checked_add(1) != Some(rec.sequence)
            }
        };
        if new_period {
            let (id, start) = match self.first_period.take() {
                Some(p) if prev.is_none() => p,
                _ => (self.next_period_id, rec.start),
            };
            self.periods.push_back(Period {
                id,
                start,
                config_id: rec.config_id,
            });
            self.next_period_id = id.wrapping_add(1);
        }
        let period = self.periods.back().map_or(0, |p| p.id);

        let config_changed = prev.is_some_and(|(_, c)| c != rec.config_id);
        let seg = WindowSegment {
            hls_cmaf: hls::entry(&rec, hls::Flavour::Cmaf, config_changed),
            hls_ts: hls::entry(&rec, hls::Flavour::Ts, config_changed),
            dash_s: dash::s_entry(&rec),
            hls_audio: hls::audio_entry(&rec, self.audio.as_ref()),
            dash_audio_s: dash::audio_s_entry(&rec),
            period,
            rec,
        };
        let seg_bytes = seg.rec.byte_size + seg.rec.audio.as_ref().map_or(0, |a| a.byte_size);
        self.window_bytes = self.window_bytes.saturating_add(seg_bytes);
        // A period's codec string, size and frame rate are fixed when it
        // starts: the first record of a config decides them.
        if let Some(cfg) = video {
            self.configs
                .entry(seg.rec.config_id)
                .or_insert_with(|| cfg.clone());
        }
        let appended_hls_cmaf = seg.hls_cmaf.clone();
        let appended_hls_ts = seg.hls_ts.clone();
        let appended_dash = if video.is_none() {
            seg.dash_audio_s.clone()
        } else {
            seg.dash_s.clone()
        };
        let appended_hls_audio = seg.hls_audio.clone();
        self.window.push_back(seg);
        self.open_discontinuity = false;
        self.trim_parts();

        let mut removed: u32 = 0;
        let mut removed_from_old_last: u32 = 0;
        while self.window.len() > self.window_len()
            || (self.window_bytes > self.opts.max_window_bytes && self.window.len() > 1)
        {
            if let Some(gone) = self.window.pop_front() {
                let gone_bytes =
                    gone.rec.byte_size + gone.rec.audio.as_ref().map_or(0, |a| a.byte_size);
                self.window_bytes = self.window_bytes.saturating_sub(gone_bytes);
                removed = removed.saturating_add(1);
                if Some(gone.period) == old_last_period {
                    removed_from_old_last = removed_from_old_last.saturating_add(1);
                }
            }
        }
        // Periods whose segments all slid out disappear from the MPD.
        while let (Some(p), Some(first)) = (self.periods.front(), self.window.front()) {
            if p.id == first.period {
                break;
            }
            self.periods.pop_front();
        }
        let window = &self.window;
        self.configs
            .retain(|id, _| window.iter().any(|s| s.rec.config_id == *id));

        // DASH entries are the S lines of the last period only. When a new
        // period starts, the old last period (whatever is left of it) moves
        // into the head, so all of the client's entries go; otherwise only
        // the ones that slid out of the (still) last period do.
        let dash_remove = if new_period {
            old_last_entries
        } else {
            removed_from_old_last
        };

        ManifestUpdate {
            media_sequence: self.media_sequence(),
            removed,
            segment_sequence,
            ended: false,
            hls_cmaf: ManifestEdit {
                head: self.hls_head(hls::Flavour::Cmaf),
                remove_entries: removed,
                append_entries: vec![appended_hls_cmaf],
                tail: self.hls_tail(),
            },
            hls_ts: ManifestEdit {
                head: self.hls_head(hls::Flavour::Ts),
                remove_entries: removed,
                append_entries: vec![appended_hls_ts],
                tail: self.hls_tail(),
            },
            dash: ManifestEdit {
                head: self.dash_head(now_ms),
                remove_entries: dash_remove,
                append_entries: vec![appended_dash],
                tail: self.dash_tail(),
            },
            hls_audio: ManifestEdit {
                head: self.hls_head(hls::Flavour::Audio),
                remove_entries: removed,
                append_entries: vec![appended_hls_audio],
                tail: self.hls_tail(),
            },
        }
    }

    /// The stream ended: HLS gets `#EXT-X-ENDLIST`, the MPD becomes static.
    /// Idempotent.
    pub fn end(&mut self, now_ms: u64) -> ManifestUpdate {
        self.ended = true;
        self.unchanged_update(None, now_ms)
    }

    /// An update that keeps every entry and re-renders heads and tails.
    fn unchanged_update(&self, segment_sequence: Option<u64>, now_ms: u64) -> ManifestUpdate {
        let rewrap = |head: String, tail: String| ManifestEdit {
            head,
            remove_entries: 0,
            append_entries: Vec::new(),
            tail,
        };
        ManifestUpdate {
            media_sequence: self.media_sequence(),
            removed: 0,
            segment_sequence,
            ended: self.ended,
            hls_cmaf: rewrap(self.hls_head(hls::Flavour::Cmaf), self.hls_tail()),
            hls_ts: rewrap(self.hls_head(hls::Flavour::Ts), self.hls_tail()),
            dash: rewrap(self.dash_head(now_ms), self.dash_tail()),
            hls_audio: rewrap(self.hls_head(hls::Flavour::Audio), self.hls_tail()),
        }
    }

    /// How many window segments belong to the last period (the DASH
    /// entries).
    fn entries_in_last_period(&self) -> u32 {
        let Some(last) = self.periods.back() else {
            return 0;
        };
        let n = self
            .window
            .iter()
            .rev()
            .take_while(|s| s.period == last.id)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The CMAF (fMP4) HLS media playlist.
    pub fn hls_cmaf(&self) -> ManifestState {
        self.hls_state(hls::Flavour::Cmaf)
    }

    /// The MPEG-TS HLS media playlist.
    pub fn hls_ts(&self) -> ManifestState {
        self.hls_state(hls::Flavour::Ts)
    }

    /// The DASH MPD, with `publishTime` = `now_ms`.
    pub fn dash(&self, now_ms: u64) -> ManifestState {
        self.dash_state(now_ms)
    }

    /// The options the manifests were made with (a replica of the session
    /// makes its own from them, so it renders the same text).
    pub fn options(&self) -> &PlaylistOptions {
        &self.opts
    }

    /// Wall clock (Unix ms) of timeline time 0: DASH
    /// `MPD@availabilityStartTime`.
    pub fn availability_start_ms(&self) -> u64 {
        self.availability_start_ms
    }

    /// Sequence of the first segment in the window (0 before the first).
    pub fn media_sequence(&self) -> u64 {
        self.window.front().map_or(0, |s| s.rec.sequence)
    }

    /// The segments in the window, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &SegmentRecord> {
        self.window.iter().map(|s| &s.rec)
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The codec config the manifests describe config `id` with (the
    /// frame rate the timestamps are on), while a segment of it is in the
    /// window.
    pub fn config(&self, id: u32) -> Option<&CodecConfig> {
        self.configs.get(&id)
    }

    /// Empty manifests configured as these, with a window as long as the
    /// session (no segment ever leaves it, whatever the bytes): a
    /// recording's, which lists every segment with
    /// [`hls_typed`](Self::hls_typed) and a static MPD once ended. No
    /// parts (`part_target_ms` 0).
    pub fn whole_session(&self) -> Manifests {
        Manifests::new(
            PlaylistOptions {
                window: usize::MAX,
                max_window_bytes: u64::MAX,
                part_target_ms: 0,
                ..self.opts.clone()
            },
            self.availability_start_ms,
        )
    }

    /// Whether the HLS playlists state `EXT-X-INDEPENDENT-SEGMENTS`: every
    /// segment of the session so far started with a keyframe.
    pub fn independent_segments(&self) -> bool {
        self.all_independent
    }
}

#[cfg(test)]
mod tests;

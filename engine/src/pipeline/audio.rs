//! The audio side of a [`SessionPipeline`]: AAC in, timed audio frames
//! placed in the video's parts and segments out.
//!
//! A session has one video track and optionally one audio track; which it
//! has is decided by what arrives first: audio waits (bounded) for the
//! first video frame, and a session whose first segment target of audio
//! came with no video byte at all is audio-only.
//!
//! **Timing.** Each audio frame is placed by an [`AudioClock`]: the sample
//! count (1,024 samples a frame) anchored to the publisher's capture time
//! through the video's own capture-clock mapping
//! ([`PtsAligner::capture_mapping`](crate::timing::PtsAligner::capture_mapping)),
//! so audio and video captured together are presented together; jitter is
//! snapped, gaps skip frame slots (filled with silence), clock jumps are
//! re-anchored, drift is taken back a frame at a time. Without capture
//! times the audio's first frame is presented with the video frame that is
//! newest when it arrives (with the first one if it came first) and the
//! sample count does the rest. Times are kept in samples on the PTS scale
//! (the video's 90 kHz PTS, in samples): an [`AudioFrame`]'s `time` is that
//! less the composition shift (the presentation timeline the CMAF tracks
//! share: 0 is the first presented video frame), its `pts` the same in
//! 90 kHz (what MPEG-TS and gRPC carry).
//!
//! **Placement.** Segments and parts are still cut by the video; every
//! audio frame goes to the part whose video range holds it, split at the
//! AAC frame boundary nearest each cut: a frame belongs before a cut at
//! video decode time `T` when its midpoint is before `T` plus the
//! composition shift (its presentation on the same scale). To know that,
//! a cut waits until the audio has come up to it, so the video's events
//! after a cut are held (in order) until then — a frame or so of audio
//! latency — but at most [`AUDIO_WAIT`] of video media time: audio later
//! than that is taken as stalled, the cut is closed with silence in its
//! place (so every segment has its audio and A/V stay in step), and the
//! late frames, when they come, are dropped with a reason. Audio ahead of
//! the video waits for it. Audio-only sessions are cut by the audio: parts
//! and segments close at the first AAC frame boundary at or after their
//! targets.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::{Event, SessionPipeline};
use crate::audio::adts::{AdtsItem, AdtsParser};
use crate::audio::clock::{AudioClock, Slot};
use crate::audio::config;
use crate::filter::DropReason;
use crate::frame::{
    AudioConfig, AudioFrame, AudioSpan, CodecConfig, Frame, PartRecord, SegmentRecord,
    AAC_FRAME_SAMPLES, TIMESCALE,
};
use crate::segment::FramePlacement;

/// How a publisher sends audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioInput {
    /// ADTS frames, in any chunking.
    Adts,
    /// Exactly one raw AAC frame (`raw_data_block`) per push, coded as the
    /// AudioSpecificConfig `asc` says.
    Raw { asc: Bytes },
}

/// The longest a cut waits for audio that lags the video, in video media
/// time (90 kHz): past it the cut closes with silence in the audio's place.
pub const AUDIO_WAIT: u64 = TIMESCALE;

/// Audio after the last video frame kept at the end of a stream (90 kHz).
const END_TOLERANCE: u64 = TIMESCALE;

/// The longest gap (frames) filled with silence at once.
const MAX_FILL: u32 = 1_000;

/// Capture-time marks kept for ADTS bytes not yet parsed.
const MAX_MARKS: usize = 4096;

/// Which tracks the session has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tracks {
    /// Nothing timed yet.
    #[default]
    Undecided,
    /// Video (and audio, if any arrives).
    Video,
    /// Audio only: the first segment target of audio came with no video.
    AudioOnly,
}

/// An output of the video side, held (in order) while a cut waits for
/// audio.
#[derive(Debug)]
pub(super) enum Queued {
    Frame(Arc<Frame>),
    Part(PartRecord),
    /// A segment and the video config it uses.
    Segment(SegmentRecord, Option<Arc<CodecConfig>>),
    Event(Event),
}

/// A frame parsed but not yet given a time (before the timeline exists).
#[derive(Debug)]
struct Untimed {
    data: Bytes,
    capture: Option<u64>,
    ingest_ns: u64,
}

/// Builds the [`AudioSpan`] of an open part or segment.
#[derive(Clone, Debug, Default)]
struct SpanBuilder {
    first: u64,
    count: u32,
    start: u64,
    end: u64,
    bytes: u64,
}

impl SpanBuilder {
    fn add(&mut self, f: &AudioFrame) {
        if self.count == 0 {
            self.first = f.index;
            self.start = f.time;
        }
        self.count += 1;
        self.end = f.time + u64::from(f.duration);
        self.bytes += f.data.len() as u64;
    }

    /// The span so far (an empty one at `next_index`/`at`), and a fresh
    /// builder.
    fn take(&mut self, next_index: u64, at: u64, config_id: u32) -> AudioSpan {
        let b = std::mem::take(self);
        if b.count == 0 {
            return AudioSpan {
                first_frame_index: next_index,
                start: at,
                config_id,
                ..AudioSpan::default()
            };
        }
        AudioSpan {
            first_frame_index: b.first,
            frame_count: b.count,
            start: b.start,
            duration: b.end - b.start,
            byte_size: b.bytes,
            config_id,
        }
    }
}

/// Audio counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AudioStats {
    pub bytes_in: u64,
    /// AAC frames received (parsed from ADTS, or raw).
    pub frames_in: u64,
    /// Frames accepted (received frames only, not silence).
    pub frames: u64,
    /// Frames dropped (each also counted by reason). Always
    /// `frames_in == frames + frames_dropped`.
    pub frames_dropped: u64,
    /// Frames of silence put in gaps.
    pub filled: u64,
}

/// The audio state of a pipeline; see the module docs.
#[derive(Debug, Default)]
pub(super) struct AudioSide {
    pub(super) tracks: Tracks,
    parser: Option<AdtsParser>,
    raw_offset: u64,
    marks: VecDeque<(u64, u64)>,
    pub(super) config: Option<Arc<AudioConfig>>,
    silent: Option<Bytes>,
    clock: Option<AudioClock>,
    untimed: VecDeque<Untimed>,
    pending: VecDeque<AudioFrame>,
    part: SpanBuilder,
    segment: SpanBuilder,
    /// End (samples, PTS scale) of the last frame given a time.
    frontier: Option<i64>,
    /// The audio fell behind by more than [`AUDIO_WAIT`]: cuts close with
    /// silence at once until a frame comes.
    stalled: bool,
    /// The number the next audio frame sent out gets (numbered on across
    /// publishers, from a resume point's).
    pub(super) next_index: u64,
    /// Where the audio assigned so far ends (samples, presentation).
    assigned_end: u64,
    /// Audio-only: capture time `c0` is at `t0` (90 kHz).
    own_mapping: Option<(u64, i64)>,
    /// The composition shift (90 kHz), once the first video frame set it.
    shift: u64,
    /// The newest video frame's decode time (queued or released).
    newest_video_dts: Option<u64>,
    /// The last video frame released, and its segment.
    released: Option<(u64, u64)>,
    pub(super) queue: VecDeque<Queued>,
    pub(super) stats: AudioStats,
    /// A resumed session's audio format, kept from the old copy, not yet
    /// told as [`Event::AudioConfig`].
    announce: Option<Arc<AudioConfig>>,
    /// The audio track is kept from a resumed session's old copy: its
    /// timeline is anchored at the first video frame (silence until the
    /// publisher's audio comes).
    kept: bool,
    /// The session continues an audio-only copy: it stays audio-only.
    pub(super) resumed_audio_only: bool,
    /// After a reconnect: the new publisher's audio waits for its first
    /// video frame, which may start after a gap (the outage), and goes no
    /// earlier (at most the longest segment's worth waits).
    await_video: bool,
    /// Where the newest publisher's video starts after a reconnect (90 kHz,
    /// PTS scale): its audio goes no earlier, also when it is the
    /// session's first; audio still pending from before it has no segment
    /// left to go to (its publisher's last one closed).
    video_floor_ticks: u64,
}

impl AudioSide {
    pub(super) fn buffered(&self) -> usize {
        self.parser.as_ref().map_or(0, AdtsParser::buffered)
            + self.untimed.iter().map(|u| u.data.len()).sum::<usize>()
            + self.pending.iter().map(|f| f.data.len()).sum::<usize>()
    }

    fn frame_samples(&self) -> i64 {
        i64::from(AAC_FRAME_SAMPLES)
    }

    fn rate(&self) -> u32 {
        self.config
            .as_ref()
            .map_or(48_000, |c| c.sample_rate.max(1))
    }

    /// 90 kHz ticks → samples (rounded down).
    fn to_samples(&self, ticks: i64) -> i64 {
        (i128::from(ticks) * i128::from(self.rate()) / i128::from(TIMESCALE as u32))
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Whether a frame starting at `start` (samples, PTS scale) has its
    /// midpoint before `at` (90 kHz, PTS scale).
    fn mid_before(&self, start: i64, at: u64) -> bool {
        let mid2 = i128::from(start) * 2 + i128::from(self.frame_samples());
        mid2 * i128::from(TIMESCALE) < i128::from(at) * 2 * i128::from(self.rate())
    }

    /// Whether a frame of presentation `time` has its midpoint before `at`
    /// (90 kHz, PTS scale).
    fn frame_mid_before(&self, f: &AudioFrame, at: u64) -> bool {
        let shift = self.to_samples(self.shift as i64);
        self.mid_before(f.time as i64 + shift, at)
    }
}

impl SessionPipeline {
    /// Feeds audio: ADTS bytes in any chunking, or one raw AAC frame (see
    /// [`AudioInput`]). `capture_ns` is the capture time of the first frame
    /// that starts in `chunk`, on the clock of the video's capture times.
    pub fn push_audio(
        &mut self,
        chunk: Bytes,
        input: AudioInput,
        capture_ns: Option<u64>,
        now_ns: u64,
        out: &mut Vec<Event>,
    ) {
        if self.fatal || self.ended {
            return;
        }
        self.announce_audio(out);
        self.audio.stats.bytes_in += chunk.len() as u64;
        match input {
            AudioInput::Adts => {
                let parser = self.audio.parser.get_or_insert_with(AdtsParser::new);
                if let Some(c) = capture_ns {
                    if self.audio.marks.len() == MAX_MARKS {
                        self.audio.marks.pop_front();
                    }
                    self.audio.marks.push_back((parser.stream_offset(), c));
                }
                let mut items = Vec::new();
                parser.push(chunk, &mut items);
                self.adts_items(items, now_ns, out);
            }
            AudioInput::Raw { asc } => {
                let offset = self.audio.raw_offset;
                self.audio.raw_offset += chunk.len() as u64;
                self.audio.stats.frames_in += 1;
                if asc.is_empty() {
                    self.audio_frame_drop(
                        DropReason::BadAudio,
                        offset,
                        "a raw AAC frame without its AudioSpecificConfig (send \
                         audio_specific_config, or ADTS frames)"
                            .into(),
                    );
                } else {
                    let cfg = match self.audio.config.as_deref() {
                        Some(c) if c.asc == asc => Ok(c.clone()),
                        _ => config::parse_asc(&asc),
                    };
                    match cfg {
                        Ok(cfg) => self.audio_frame(cfg, chunk, capture_ns, now_ns, offset, out),
                        Err(e) => self.audio_frame_drop(
                            DropReason::BadAudio,
                            offset,
                            format!("raw AAC frame at audio byte {offset}: {e}"),
                        ),
                    }
                }
            }
        }
        self.after_audio(now_ns, out);
        self.flush_drops(out);
    }

    fn adts_items(&mut self, items: Vec<AdtsItem>, now_ns: u64, out: &mut Vec<Event>) {
        for item in items {
            match item {
                AdtsItem::Frame(f) => {
                    self.audio.stats.frames_in += 1;
                    let mut capture = None;
                    while let Some(&(off, c)) = self.audio.marks.front() {
                        if off > f.offset {
                            break;
                        }
                        capture = Some(c);
                        self.audio.marks.pop_front();
                    }
                    match config::from_adts(&f.header) {
                        Ok(cfg) => self.audio_frame(cfg, f.payload, capture, now_ns, f.offset, out),
                        Err(e) => self.audio_frame_drop(
                            DropReason::BadAudio,
                            f.offset,
                            format!("ADTS frame at audio byte {}: {e}", f.offset),
                        ),
                    }
                }
                AdtsItem::Skipped {
                    offset,
                    len,
                    reason,
                } => self.note_drop(
                    DropReason::BadAudio,
                    offset,
                    format!("{len} audio bytes at audio byte {offset} skipped: {reason}"),
                ),
            }
        }
    }

    fn audio_frame_drop(&mut self, reason: DropReason, offset: u64, detail: String) {
        self.audio.stats.frames_dropped += 1;
        self.note_drop(reason, offset, detail);
    }

    /// A received AAC frame of format `cfg`.
    fn audio_frame(
        &mut self,
        cfg: AudioConfig,
        data: Bytes,
        capture: Option<u64>,
        now_ns: u64,
        offset: u64,
        out: &mut Vec<Event>,
    ) {
        if data.is_empty() {
            self.audio_frame_drop(
                DropReason::BadAudio,
                offset,
                format!("an empty AAC frame at audio byte {offset}"),
            );
            return;
        }
        match self.audio.config.as_deref() {
            None => {
                let cfg = Arc::new(cfg);
                self.install_audio_config(cfg.clone());
                out.push(Event::AudioConfig(cfg));
            }
            Some(c) if !config::same_format(c, &cfg) => {
                let detail = format!(
                    "an AAC frame at audio byte {offset} is {} at {} Hz with {} channels, but the \
                     session's audio is {} at {} Hz with {} channels: a session carries one audio \
                     format",
                    cfg.codec_string(),
                    cfg.sample_rate,
                    cfg.channels(),
                    c.codec_string(),
                    c.sample_rate,
                    c.channels()
                );
                self.audio_frame_drop(DropReason::BadAudio, offset, detail);
                return;
            }
            Some(_) => {}
        }
        self.audio.untimed.push_back(Untimed {
            data,
            capture,
            ingest_ns: now_ns,
        });
        if self.audio.tracks == Tracks::Undecided {
            // Held for the first video frame: at most the longest segment.
            let max = u64::from(self.opts.effective_max_segment_ms())
                * u64::from(self.audio.rate())
                / 1000
                / u64::from(AAC_FRAME_SAMPLES);
            while self.audio.untimed.len() as u64 > max.max(1) {
                self.audio.untimed.pop_front();
                self.audio_frame_drop(
                    DropReason::AudioTiming,
                    offset,
                    "audio before the session's first video frame (held for the longest \
                     segment, then dropped oldest first)"
                        .into(),
                );
            }
        }
    }

    /// The session's audio format: its clock and silence are set up.
    fn install_audio_config(&mut self, cfg: Arc<AudioConfig>) {
        let rate = cfg.sample_rate;
        let gap_limit = i64::try_from(
            u128::from(self.opts.timing.gap_limit) * u128::from(rate) / u128::from(TIMESCALE),
        )
        .unwrap_or(i64::MAX);
        self.audio.silent = config::silent_frame(&cfg).map(Bytes::from_static);
        self.audio.clock = Some(AudioClock::new(rate, AAC_FRAME_SAMPLES, gap_limit));
        self.audio.config = Some(cfg);
    }

    /// A resumed session keeps the old copy's audio track (see
    /// [`ResumePoint::audio`](super::ResumePoint::audio)).
    pub(super) fn keep_audio_track(&mut self, cfg: Arc<AudioConfig>) {
        self.install_audio_config(cfg.clone());
        self.audio.announce = Some(cfg);
        self.audio.kept = true;
    }

    /// Tells a kept audio format, once, before anything else.
    pub(super) fn announce_audio(&mut self, out: &mut Vec<Event>) {
        if let Some(cfg) = self.audio.announce.take() {
            out.push(Event::AudioConfig(cfg));
        }
    }

    /// After audio arrived: decide whether the session is audio-only, time
    /// what can be timed, release what is ready.
    fn after_audio(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        if self.audio.tracks == Tracks::Undecided && self.audio.resumed_audio_only {
            self.start_audio_only();
        } else if self.audio.tracks == Tracks::Undecided && self.stats.bytes_in == 0 {
            let held = self.audio.untimed.len() as u64 * u64::from(AAC_FRAME_SAMPLES) * 1000
                / u64::from(self.audio.rate());
            if held >= u64::from(self.opts.segment_target_ms.max(100)) {
                self.start_audio_only();
            }
        }
        self.time_untimed(now_ns);
        self.release(false, now_ns, out);
        if self.audio.tracks == Tracks::Video {
            // Audio waits for the video it goes with, for at most the
            // longest segment: past that the video has stopped, and the
            // oldest audio is dropped (memory stays bounded).
            let max = u64::from(self.opts.effective_max_segment_ms())
                * u64::from(self.audio.rate())
                / 1000
                / u64::from(AAC_FRAME_SAMPLES);
            while self.audio.pending.len() as u64 > max.max(1) {
                let Some(f) = self.audio.pending.pop_front() else {
                    break;
                };
                // It was counted as accepted (or as silence): now dropped.
                if f.filler {
                    self.audio.stats.filled -= 1;
                    continue;
                }
                self.audio.stats.frames -= 1;
                self.audio_frame_drop(
                    DropReason::AudioTiming,
                    0,
                    "audio ahead of the video by more than the longest segment (the video \
                     stopped): dropped oldest first"
                        .into(),
                );
            }
        }
    }

    /// The session is audio-only: its timeline starts at its first audio
    /// frame.
    /// A resumed session (see [`ResumePoint`](super::ResumePoint)) keeps the old timeline: its
    /// availability start, and the first audio frame where the wall clock is
    /// on it (or after the old stream's end), on the sample grid.
    pub(super) fn start_audio_only(&mut self) {
        self.audio.tracks = Tracks::AudioOnly;
        let mut start_ms = self
            .audio
            .untimed
            .front()
            .map_or(0, |u| u.ingest_ns / 1_000_000);
        if let Some(r) = &self.resume {
            let capture = self.audio.untimed.front().and_then(|u| u.capture);
            let first = r.first_time(start_ms, capture);
            start_ms = r.availability_start_ms;
            let rate = u128::from(self.audio.rate().max(1));
            // Up, to a whole sample: never before the old end.
            let samples = (u128::from(first) * rate).div_ceil(u128::from(TIMESCALE));
            let samples = i64::try_from(samples)
                .unwrap_or(i64::MAX / 4)
                .min(i64::MAX / 4);
            if let Some(clock) = self.audio.clock.as_mut() {
                clock.start_at(samples);
            }
        }
        let frame_ms = (u64::from(AAC_FRAME_SAMPLES) * 1000).div_ceil(u64::from(self.audio.rate()));
        self.start_timeline(start_ms, u32::try_from(frame_ms).unwrap_or(u32::MAX));
        tracing::info!("no video in the session's first segment of audio: audio-only");
    }

    /// Gives the held frames their times, once the timeline exists.
    fn time_untimed(&mut self, _now_ns: u64) {
        if self.audio.tracks == Tracks::Undecided {
            return;
        }
        if self.audio.await_video {
            let held = self.audio.untimed.len() as u64 * u64::from(AAC_FRAME_SAMPLES) * 1000
                / u64::from(self.audio.rate());
            if held < u64::from(self.opts.effective_max_segment_ms()) {
                return;
            }
            // No video from the new publisher: the audio goes on where it
            // was.
            self.audio.await_video = false;
        }
        while let Some(u) = self.audio.untimed.pop_front() {
            self.time_frame(u);
        }
    }

    /// Where a capture time puts a frame (samples, PTS scale).
    fn capture_target(&mut self, capture_ns: u64) -> Option<i64> {
        let mapping = match self.audio.tracks {
            Tracks::Video => self.aligner.as_ref().and_then(|a| a.capture_mapping()),
            Tracks::AudioOnly => {
                if self.audio.own_mapping.is_none() {
                    let at = self
                        .audio
                        .clock
                        .as_ref()
                        .and_then(AudioClock::next_start)
                        .unwrap_or(0);
                    let ticks =
                        i128::from(at) * i128::from(TIMESCALE) / i128::from(self.audio.rate());
                    self.audio.own_mapping = Some((capture_ns, ticks as i64));
                }
                self.audio.own_mapping
            }
            Tracks::Undecided => None,
        };
        let (c0, t0) = mapping?;
        let delta = ((i128::from(capture_ns) - i128::from(c0)) * i128::from(TIMESCALE))
            .saturating_add(500_000_000)
            .div_euclid(1_000_000_000);
        let t = (i128::from(t0) + delta).clamp(i64::MIN as i128 / 4, i64::MAX as i128 / 4) as i64;
        Some(self.audio.to_samples(t))
    }

    fn time_frame(&mut self, u: Untimed) {
        if self.audio.tracks == Tracks::AudioOnly {
            if let Some(lag) = self.restart_lag.take() {
                // An audio-only session's new publisher after a reconnect:
                // its first frame goes where the wall clock (or the old
                // capture-clock mapping) puts it, as video does.
                if let Some(avail) = self.availability_start_ms {
                    let at = super::wall_place(avail, lag, u.ingest_ns / 1_000_000, u.capture);
                    let at = self
                        .audio
                        .to_samples(i64::try_from(at).unwrap_or(i64::MAX / 4));
                    if let Some(clock) = self.audio.clock.as_mut() {
                        clock.not_before(at);
                    }
                }
            }
        }
        let target = u.capture.and_then(|c| self.capture_target(c));
        // A first frame without a capture time plays with the newest video
        // frame (the first one if it came first).
        let first = match self.audio.tracks {
            Tracks::Video => self.audio.to_samples(
                (self.audio.released.map_or(0, |r| r.0) + self.audio.shift)
                    .max(self.audio.video_floor_ticks) as i64,
            ),
            _ => 0,
        };
        let Some(clock) = self.audio.clock.as_mut() else {
            return;
        };
        let rate = clock.rate();
        match clock.place(target, first) {
            Slot::Late => self.audio_frame_drop(
                DropReason::AudioTiming,
                0,
                "an audio frame came after its time was given to silence (it was more than \
                 1 s behind the video)"
                    .into(),
            ),
            Slot::Drift => self.audio_frame_drop(
                DropReason::AudioTiming,
                0,
                format!(
                    "an audio frame dropped to keep the audio in step with the capture clock \
                     (the audio clock runs fast against it; {rate} Hz declared)"
                ),
            ),
            Slot::Place { start, skipped } => {
                let f = i64::from(AAC_FRAME_SAMPLES);
                if skipped > 0 && skipped <= MAX_FILL {
                    if let Some(silent) = self.audio.silent.clone() {
                        for k in (1..=i64::from(skipped)).rev() {
                            self.accept_audio(
                                start - k * f,
                                silent.clone(),
                                None,
                                u.ingest_ns,
                                true,
                            );
                        }
                    }
                }
                self.audio.stalled = false;
                self.accept_audio(start, u.data, u.capture, u.ingest_ns, false);
            }
        }
    }

    /// A frame with its start (samples, PTS scale) goes to the pending
    /// frames, or is dropped if it is before the first presented video
    /// frame.
    fn accept_audio(
        &mut self,
        start: i64,
        data: Bytes,
        capture: Option<u64>,
        ingest_ns: u64,
        filler: bool,
    ) {
        let a = &mut self.audio;
        let shift = a.to_samples(a.shift as i64);
        let f = i64::from(AAC_FRAME_SAMPLES);
        a.frontier = Some(a.frontier.map_or(start + f, |e| e.max(start + f)));
        if start < shift {
            if !filler {
                self.audio_frame_drop(
                    DropReason::AudioTiming,
                    0,
                    "audio from before the session's first video frame".into(),
                );
            }
            return;
        }
        let Some(cfg) = a.config.clone() else {
            return;
        };
        let time = (start - shift) as u64;
        let pts = cfg.ticks(start as u64);
        if filler {
            a.stats.filled += 1;
        } else {
            a.stats.frames += 1;
        }
        a.pending.push_back(AudioFrame {
            // Numbered when it goes out (`emit_audio`): a frame dropped
            // while pending takes no number.
            index: 0,
            data,
            time,
            pts,
            duration: AAC_FRAME_SAMPLES,
            segment: 0,
            config_id: cfg.id,
            filler,
            capture_time_ns: capture,
            ingest_time_ns: ingest_ns,
        });
    }

    /// Silence up to the cut at `at` (90 kHz, PTS scale): the audio fell
    /// behind.
    fn fill_to(&mut self, at: u64) {
        let Some(silent) = self.audio.silent.clone() else {
            return;
        };
        for _ in 0..MAX_FILL {
            let Some(frontier) = self.audio.frontier else {
                return;
            };
            if !self.audio.mid_before(frontier, at) {
                return;
            }
            let Some(clock) = self.audio.clock.as_mut() else {
                return;
            };
            let start = clock.fill(frontier);
            self.accept_audio(start, silent.clone(), None, 0, true);
        }
    }

    /// Whether a cut at `at` (90 kHz, PTS scale) can close: the audio is
    /// there up to it, or there is none, or it is late past [`AUDIO_WAIT`]
    /// (then silence fills up to the cut). `flush`: the stream is ending.
    fn cut_ready(&mut self, at: u64, flush: bool) -> bool {
        if self.audio.config.is_none() {
            return true;
        }
        if flush {
            // The stream ends while silence stands in for the audio: the
            // parts still held get their silence too.
            if self.audio.stalled {
                self.fill_to(at);
            }
            return true;
        }
        let Some(frontier) = self.audio.frontier else {
            return true;
        };
        // Every frame still to come starts at or after the frontier, so
        // its midpoint is at least half a frame past it.
        if !self.audio.mid_before(frontier, at) {
            return true;
        }
        let newest = self.audio.newest_video_dts.unwrap_or(0) + self.audio.shift;
        if !self.audio.stalled && newest < at.saturating_add(AUDIO_WAIT) {
            return false;
        }
        if !self.audio.stalled {
            self.audio.stalled = true;
            self.note_notice(
                DropReason::AudioTiming,
                0,
                format!(
                    "no audio for the last {} ms of video (late or stopped): silence in its \
                     place until audio comes again",
                    AUDIO_WAIT * 1000 / TIMESCALE
                ),
            );
        }
        self.fill_to(at);
        true
    }

    /// Moves pending audio whose midpoint is before `at` (90 kHz, PTS
    /// scale) into the open part of `segment`.
    fn assign_before(&mut self, at: u64, segment: u64, out: &mut Vec<Event>) {
        while let Some(f) = self.audio.pending.front() {
            if !self.audio.frame_mid_before(f, at) {
                break;
            }
            let Some(mut f) = self.audio.pending.pop_front() else {
                break;
            };
            if self
                .audio
                .frame_mid_before(&f, self.audio.video_floor_ticks)
            {
                // Timed before a reconnect's new video and too late for
                // the old publisher's last segment (it had none open).
                if f.filler {
                    self.audio.stats.filled -= 1;
                } else {
                    self.audio.stats.frames -= 1;
                    self.audio_frame_drop(
                        DropReason::AudioTiming,
                        0,
                        "audio of a publisher that reconnected, from before the new publisher's \
                         first video frame"
                            .into(),
                    );
                }
                continue;
            }
            f.segment = segment;
            self.emit_audio(f, out);
        }
    }

    /// Sends a frame out with the session's next audio frame number, so
    /// the numbers run on without a gap whatever was dropped before.
    fn emit_audio(&mut self, mut f: AudioFrame, out: &mut Vec<Event>) {
        f.index = self.audio.next_index;
        self.audio.next_index = self.audio.next_index.saturating_add(1);
        self.audio.part.add(&f);
        self.audio.segment.add(&f);
        self.audio.assigned_end = f.time + u64::from(f.duration);
        out.push(Event::AudioFrame(Arc::new(f)));
    }

    /// The audio span of the part (or segment) closing now; `None` when the
    /// session has no audio (yet).
    pub(super) fn take_span(&mut self, segment: bool) -> Option<AudioSpan> {
        let cfg = self.audio.config.as_ref()?.id;
        let (next, at) = (self.audio.next_index, self.audio.assigned_end);
        let b = if segment {
            &mut self.audio.segment
        } else {
            &mut self.audio.part
        };
        if b.count == 0 && next == 0 {
            // Not started yet: no audio in this part or segment.
            return None;
        }
        Some(b.take(next, at, cfg))
    }

    /// A video frame was placed (in segment `segment` at decode time `dts`):
    /// the video track exists, the timeline with it.
    pub(super) fn on_video_frame(&mut self, dts: u64) {
        if self.audio.tracks == Tracks::Undecided {
            self.audio.tracks = Tracks::Video;
            self.audio.shift = self
                .segmenter
                .as_ref()
                .and_then(|s| s.composition_shift())
                .map_or(0, u64::from);
            if self.audio.kept && self.audio.frontier.is_none() {
                // The kept track starts with the video (rounded up to a
                // whole sample): audio that does not come is late from
                // here, and silence fills it.
                let at = u128::from(dts + self.audio.shift) * u128::from(self.audio.rate());
                let start =
                    i64::try_from(at.div_ceil(u128::from(TIMESCALE))).unwrap_or(i64::MAX / 4);
                if let Some(clock) = self.audio.clock.as_mut() {
                    clock.start_at(start);
                }
                self.audio.frontier = Some(start);
            }
        }
        if std::mem::take(&mut self.audio.await_video) {
            // The new publisher's first video frame: its audio starts no
            // earlier (the outage is a gap in both tracks).
            let at = self.audio.to_samples((dts + self.audio.shift) as i64);
            self.audio.video_floor_ticks = dts + self.audio.shift;
            if let Some(clock) = self.audio.clock.as_mut() {
                clock.not_before(at);
            }
        }
        self.audio.newest_video_dts = Some(dts);
    }

    /// Queues a video-side output (released in order by [`Self::release`]).
    pub(super) fn queue(&mut self, q: Queued) {
        self.audio.queue.push_back(q);
    }

    /// Releases the held outputs whose cuts the audio has reached (all of
    /// them with `flush`), with the audio frames that go before each.
    pub(super) fn release(&mut self, flush: bool, now_ns: u64, out: &mut Vec<Event>) {
        if self.audio.tracks != Tracks::Undecided {
            self.time_untimed(now_ns);
        }
        let now_ms = now_ns / 1_000_000;
        if self.audio.tracks == Tracks::AudioOnly {
            while let Some(q) = self.audio.queue.pop_front() {
                if let Queued::Event(e) = q {
                    out.push(e);
                }
            }
            self.place_audio_only(now_ms, out);
            return;
        }
        while let Some(front) = self.audio.queue.front() {
            match front {
                Queued::Frame(f) => {
                    let (at, seg) = (f.dts + self.audio.shift, f.segment);
                    self.assign_before(at, seg, out);
                    if let Some(Queued::Frame(f)) = self.audio.queue.pop_front() {
                        self.audio.released = Some((f.dts, f.segment));
                        out.push(Event::Frame(f));
                    }
                }
                Queued::Part(p) => {
                    let at = p.start + p.duration + self.audio.shift;
                    let seg = p.segment;
                    if !self.cut_ready(at, flush) {
                        break;
                    }
                    self.assign_before(at, seg, out);
                    if let Some(Queued::Part(mut p)) = self.audio.queue.pop_front() {
                        p.audio = self.take_span(false);
                        if let Some(m) = self.manifests.as_mut() {
                            m.push_part(&p);
                        }
                        out.push(Event::Part(Arc::new(p)));
                    }
                }
                Queued::Segment(..) => {
                    if let Some(Queued::Segment(mut rec, cfg)) = self.audio.queue.pop_front() {
                        rec.audio = self.take_span(true);
                        self.emit_segment_now(rec, cfg, now_ms, out);
                    }
                }
                Queued::Event(_) => {
                    if let Some(Queued::Event(e)) = self.audio.queue.pop_front() {
                        if matches!(e, Event::Discontinuity) {
                            if let Some(m) = self.manifests.as_mut() {
                                m.mark_discontinuity();
                            }
                        }
                        out.push(e);
                    }
                }
            }
        }
        if self.audio.queue.is_empty() {
            if let Some((dts, seg)) = self.audio.released {
                self.assign_before(dts + self.audio.shift, seg, out);
            }
        }
    }

    /// Audio-only: the segmenter places each pending frame.
    fn place_audio_only(&mut self, now_ms: u64, out: &mut Vec<Event>) {
        let Some(cfg) = self.audio.config.clone() else {
            return;
        };
        while let Some(mut f) = self.audio.pending.pop_front() {
            let Some(segmenter) = self.segmenter.as_mut() else {
                // Not reached: audio-only sessions have their segmenter
                // before any frame is pending. Kept, not lost.
                self.audio.pending.push_front(f);
                return;
            };
            let pts = cfg.ticks(f.time);
            let end = cfg.ticks(f.time + u64::from(f.duration));
            let placed = segmenter.place(FramePlacement {
                index: self.audio.next_index,
                pts,
                dts: pts,
                duration: u32::try_from(end - pts).unwrap_or(u32::MAX),
                is_keyframe: true,
                random_access: true,
                sap_type: 1,
                config_id: 0,
                bytes: f.data.len() as u64,
                capture_ns: f.capture_time_ns,
            });
            if let Some(mut p) = placed.closed_part {
                p.audio = self.take_span(false);
                audio_only_record_part(&mut p);
                if let Some(m) = self.manifests.as_mut() {
                    m.push_part(&p);
                }
                out.push(Event::Part(Arc::new(p)));
            }
            if let Some(mut rec) = placed.closed_segment {
                rec.audio = self.take_span(true);
                audio_only_record(&mut rec);
                self.emit_segment_now(rec, None, now_ms, out);
            }
            if placed.opened
                && std::mem::take(&mut self.discontinuity_due)
                && placed.opened_discontinuity
            {
                if let Some(m) = self.manifests.as_mut() {
                    m.mark_discontinuity();
                }
                out.push(Event::Discontinuity);
            }
            f.segment = placed.segment;
            self.emit_audio(f, out);
        }
    }

    /// The stream ends: the ADTS parser's last bytes, and the decision
    /// for a session that had audio and never a video frame (audio-only).
    pub(super) fn finish_audio_input(&mut self, out: &mut Vec<Event>) {
        // No more video is coming: held audio is timed where it is.
        self.audio.await_video = false;
        if let Some(p) = self.audio.parser.as_mut() {
            let mut items = Vec::new();
            p.finish(&mut items);
            self.adts_items(items, 0, out);
        }
        if self.audio.tracks == Tracks::Undecided
            && !self.audio.untimed.is_empty()
            && self.stats.frames == 0
        {
            self.start_audio_only();
        }
        self.time_untimed(0);
    }

    /// The stream ends and its last part ends at `end` (90 kHz decode
    /// time): the audio still held goes to it, up to a second past the
    /// video's end; what is later is dropped.
    pub(super) fn assign_tail(&mut self, end: u64, out: &mut Vec<Event>) {
        if self.audio.tracks != Tracks::Video {
            return;
        }
        let Some((_, seg)) = self.audio.released else {
            return;
        };
        if self.audio.stalled {
            // The stream ends while silence stands in for the audio: the
            // last part gets its silence too.
            self.fill_to(end + self.audio.shift);
        }
        let limit = end + self.audio.shift + END_TOLERANCE;
        self.assign_before(limit, seg, out);
        while let Some(f) = self.audio.pending.pop_front() {
            if f.filler {
                self.audio.stats.filled -= 1;
                continue;
            }
            self.audio.stats.frames -= 1;
            self.audio_frame_drop(
                DropReason::AudioTiming,
                0,
                "audio more than a second after the last video frame, at the end of the stream"
                    .into(),
            );
        }
    }

    /// A new publisher: the audio's capture clock is learned afresh and
    /// its bytes start a new ADTS stream.
    pub(super) fn reconnect_audio(&mut self, out: &mut Vec<Event>) {
        if let Some(p) = self.audio.parser.as_mut() {
            let mut items = Vec::new();
            p.finish(&mut items);
            self.adts_items(items, 0, out);
        }
        // The old publisher's audio is all in: what still waited for its
        // video (it reconnected too and sent none) is timed on its clock.
        self.audio.await_video = false;
        self.time_untimed(0);
        self.audio.parser = None;
        self.audio.marks.clear();
        self.audio.raw_offset = 0;
        self.audio.own_mapping = None;
        if let Some(c) = self.audio.clock.as_mut() {
            c.restart();
        }
        self.audio.await_video = self.audio.tracks == Tracks::Video;
    }

    /// Audio counters so far.
    pub fn audio_stats(&self) -> AudioStats {
        self.audio.stats
    }

    /// The session's audio format, once audio arrived.
    pub fn audio_config(&self) -> Option<&Arc<AudioConfig>> {
        self.audio.config.as_ref()
    }

    /// Which tracks the session has (decided by what arrives first).
    pub fn tracks(&self) -> Tracks {
        self.audio.tracks
    }
}

/// An audio-only part record: the segmenter counted audio frames as its
/// frames; the video fields say there is no video.
pub(super) fn audio_only_record_part(p: &mut PartRecord) {
    p.first_frame_index = 0;
    p.frame_count = 0;
    p.byte_size = 0;
    p.config_id = 0;
}

pub(super) fn audio_only_record(r: &mut SegmentRecord) {
    r.first_frame_index = 0;
    r.frame_count = 0;
    r.byte_size = 0;
    r.config_id = 0;
}

#[cfg(test)]
#[path = "audio_tests.rs"]
mod tests;

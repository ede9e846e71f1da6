//! `SessionPipeline`: one publisher's bytes in, events out.
//!
//! Wires the engine stages in data-flow order — Annex B splitter, access-unit
//! assembler, frame filter, picture order count, `PtsAligner`, `Segmenter`,
//! manifests — and owns nothing else: no clock (the caller passes `now`), no
//! I/O, no tasks. The session layer stores and fans out the events.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use h264_reader::nal::sps::{PicOrderCntType, SeqParameterSet};

mod audio;
mod av_check;
mod join;

pub use audio::{AudioInput, AudioStats, Tracks, AUDIO_WAIT};
use audio::{AudioSide, Queued};
#[doc(hidden)]
pub use av_check::check_av_input;
pub use join::{JoinPoint, SegmentStart, ALIGN_TOLERANCE, MAX_SEGMENT_STARTS};

use super::access_unit::{
    annexb_of, AccessUnit, AccessUnitAssembler, AssemblerLimits, AssemblerNote,
};
use super::annexb::{AnnexBSplitter, Split, SplitIssue};
use super::filter::{DropReason, FrameFilter, Verdict};
use super::frame::{
    AudioConfig, AudioFrame, CodecConfig, Frame, PartRecord, SegmentRecord, VideoCodec, TIMESCALE,
};
use super::hevc::{self, HevcAssembler, HevcAu, HevcError, HevcFilter, HevcPoc};
pub use super::mux::parts::Formats;
use super::params::{sps_frame_rate, sps_reorder_frames};
use super::playlist::{ManifestUpdate, Manifests, PlaylistOptions};
use super::poc::PocState;
use super::segment::{FramePlacement, Segmenter, SegmenterOptions};
use super::timing::{FrameRate, PtsAligner, TimingInput, TimingOptions};

/// Session options the engine needs.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Frame rate when the SPS has no timing info and the publisher gave none.
    pub default_rate: FrameRate,
    /// The publisher's `target_fps`, if it gave one.
    pub target_rate: Option<FrameRate>,
    pub segment_target_ms: u32,
    /// Part target duration, ms (100–2,000, at most the segment target; 0:
    /// a part is a whole segment). Parts close at the first frame boundary
    /// at or after it and at every segment boundary.
    pub part_target_ms: u32,
    /// Longest segment, ms: with no random access point by then, a segment
    /// is cut anyway (and marked not independent). 0: three times the
    /// target. It fixes `EXT-X-TARGETDURATION` and DASH `maxSegmentDuration`
    /// for the session.
    pub max_segment_ms: u32,
    /// Bytes of media the session may hold (the ring): the live window is
    /// trimmed to two thirds of it, whole segments at a time, and a segment
    /// is cut when it reaches the remaining third.
    pub max_window_bytes: usize,
    pub window: usize,
    pub max_nal_bytes: usize,
    pub max_au_bytes: usize,
    pub timing: TimingOptions,
    /// For DASH `<UTCTiming>`.
    pub utc_timing_url: String,
    /// The output formats each part is muxed in (CMAF for HLS fMP4 and
    /// DASH, MPEG-TS for HLS TS).
    pub formats: Formats,
    /// A DVR time-shift window, ms (0: none): the playlists list about this
    /// much (`ceil(dvr_window_ms / segment_target_ms)` segments, at least
    /// `window`), not trimmed to `max_window_bytes`: whoever runs the
    /// pipeline keeps only the newest `window` segments in memory and
    /// serves the older ones from elsewhere (the server: its recording).
    pub dvr_window_ms: u64,
    /// The manifests list every segment: `window` and `max_window_bytes`
    /// do not trim them (packaging a file, whose segments are written out
    /// as they close; the byte budget still cuts an open segment that has
    /// no random access point). Never for a live session: its window is
    /// what it holds in memory.
    pub list_every_segment: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            default_rate: FrameRate::new(DEFAULT_FPS, 1),
            target_rate: None,
            segment_target_ms: DEFAULT_SEGMENT_TARGET_MS,
            part_target_ms: DEFAULT_PART_TARGET_MS,
            max_segment_ms: 0,
            max_window_bytes: DEFAULT_MAX_WINDOW_BYTES,
            window: DEFAULT_WINDOW,
            max_nal_bytes: DEFAULT_MAX_NAL_BYTES,
            max_au_bytes: DEFAULT_MAX_NAL_BYTES * 2,
            timing: TimingOptions::default(),
            utc_timing_url: "/time".into(),
            formats: Formats::default(),
            dvr_window_ms: 0,
            list_every_segment: false,
        }
    }
}

// The defaults of [`PipelineOptions`]; the server's flags of the same
// meaning take their defaults from these.

/// The default frame rate of a stream with no timing (`--default-fps`).
pub const DEFAULT_FPS: u32 = 30;
/// The default segment target, ms (`--segment-duration`).
pub const DEFAULT_SEGMENT_TARGET_MS: u32 = 2000;
/// The default part target, ms (`--part-duration`).
pub const DEFAULT_PART_TARGET_MS: u32 = 500;
/// The default live window, in segments (`--window`).
pub const DEFAULT_WINDOW: usize = 6;
/// The default bytes of media a session holds (`--ring-bytes`).
pub const DEFAULT_MAX_WINDOW_BYTES: usize = 64 << 20;
/// The default largest NAL unit, bytes (`--max-nal-bytes`); an access unit
/// may be twice that.
pub const DEFAULT_MAX_NAL_BYTES: usize = 8 << 20;

/// Fatal stream errors: the publisher's stream is rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
}

/// Frames dropped for one reason during one `push`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropReport {
    pub reason: DropReason,
    /// Frames (for `NotH264`: runs of bytes) dropped in this report; 0: a
    /// notice that drops nothing (e.g. silence standing in for audio that
    /// stopped).
    pub count: u32,
    /// Since the session started.
    pub total: u64,
    /// The first occurrence, in words.
    pub detail: String,
    /// Stream offset of the first occurrence.
    pub offset: u64,
}

/// A closed segment and the manifest update it caused.
#[derive(Clone, Debug)]
pub struct SegmentEvent {
    pub record: SegmentRecord,
    pub manifest: ManifestUpdate,
}

#[derive(Clone, Debug)]
pub enum Event {
    /// An accepted, timed frame.
    Frame(Arc<Frame>),
    /// First or changed parameter sets (a new init segment).
    Config(Arc<CodecConfig>),
    /// An audio frame, timed and placed (it precedes the `Part` it belongs
    /// to).
    AudioFrame(Arc<AudioFrame>),
    /// The session's audio format (once, before its first audio frame).
    AudioConfig(Arc<AudioConfig>),
    /// A part is complete (before the segment it ends, if it ends one).
    Part(Arc<PartRecord>),
    /// A segment is complete (after its last part).
    Segment(Arc<SegmentEvent>),
    Dropped(DropReport),
    /// A publisher reconnected: the segment that opens next is its first,
    /// after a discontinuity (`EXT-X-DISCONTINUITY`, a new DASH period).
    /// Emitted when that segment opens — after the old publisher's last
    /// part and segment, before the new one's first frame — which is when
    /// the manifests mark it; a replica marks its manifests at the same
    /// point of the stream.
    Discontinuity,
    /// The stream ended; the manifests are final.
    Ended(Arc<ManifestUpdate>),
    /// The stream cannot be processed; nothing more will be accepted.
    Fatal(EngineError),
}

/// Frames and bytes counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub bytes_in: u64,
    /// Access units detected (pictures, whole or damaged).
    pub access_units: u64,
    /// Access units dropped (each also counted in `dropped` by reason).
    /// Always `access_units == frames + frames_dropped`.
    pub frames_dropped: u64,
    pub frames: u64,
    pub segments: u64,
    pub dropped: [u64; DropReason::ALL.len()],
}

/// The whole engine for one session; see the module docs.
pub struct SessionPipeline {
    opts: PipelineOptions,
    splitter: AnnexBSplitter,
    assembler: AccessUnitAssembler,
    filter: FrameFilter,
    poc: PocState,
    aligner: Option<PtsAligner>,
    segmenter: Option<Segmenter>,
    manifests: Option<Manifests>,
    config: Option<Arc<CodecConfig>>,
    /// The config before `config`: the segment open when the parameter
    /// sets changed still uses it.
    prev_config: Option<Arc<CodecConfig>>,
    next_config_id: u32,
    /// Capture times waiting for the access unit that starts at or after
    /// their message's first byte: (stream offset, ns).
    capture_marks: VecDeque<(u64, u64)>,
    /// After resyncing at a recovery point: pictures shown before it (lower
    /// POC) reference pictures we never had.
    leading_floor: Option<i64>,
    /// POC of the last SAP-3 keyframe in the current POC epoch: later
    /// pictures below it are its leading pictures.
    open_gop_poc: Option<i64>,
    /// The stream's timing was overruled (VUI rate vs capture times).
    timing_note: Option<String>,
    stats: PipelineStats,
    pending_drops: Vec<DropReport>,
    fatal: bool,
    ended: bool,
    availability_start_ms: Option<u64>,
    /// After a reconnect, until the new stream's first frame is timed:
    /// the old stream's capture-clock lag (ms; as
    /// [`ResumePoint::capture_lag_ms`]), `None` inside when it had no
    /// capture times.
    restart_lag: Option<Option<i64>>,
    /// After a reconnect, until the new publisher's first segment opens:
    /// it is announced then ([`Event::Discontinuity`]).
    discontinuity_due: bool,
    /// The session's codec, decided at the first parameter sets (H.264
    /// until then). A session is one codec.
    codec: Option<VideoCodec>,
    /// The H.265 stages, once the stream turned out to be H.265.
    hevc: Option<Box<HevcStages>>,
    /// The audio track, and the video outputs held while a cut waits for
    /// the audio to reach it.
    audio: AudioSide,
    // Scratch buffers reused across pushes.
    splits: Vec<Split>,
    aus: Vec<AccessUnit>,
    notes: Vec<AssemblerNote>,
    /// Where this session continues another node's (see
    /// [`SessionPipeline::resume`]), until its timeline starts.
    resume: Option<ResumePoint>,
    /// Index of the first frame (0, or where a resumed session goes on).
    first_frame_index: u64,
    /// A rendition joining its session's other renditions (see
    /// [`SessionPipeline::join`]), until its first segment starts.
    join: Option<JoinPoint>,
    /// Joining: until the first segment starts (the leading rendition's
    /// timeline may not be known yet: `join` is `None` until it is).
    joining: bool,
    /// A joining rendition's last random access point (decode time) that
    /// started nothing.
    join_last_rap: Option<u64>,
    /// The segmenter options and availability start of a joining
    /// rendition's segmenter, made when its first segment starts.
    deferred_segmenter: Option<(SegmenterOptions, u64)>,
    /// Capture time of the access unit being processed.
    au_capture: Option<u64>,
}

/// Where a session continued on another node picks up (a publisher that
/// failed over to another origin of a cluster): the numbering, timeline
/// and manifest state the old owner's copy reached, so every segment,
/// part and frame number goes on from there after one discontinuity (RFC
/// 8216 4.4.3.3; a new DASH period, ISO/IEC 23009-1 5.3.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResumePoint {
    /// Wall clock (Unix ms) of timeline time 0: the session's, kept.
    pub availability_start_ms: u64,
    /// Media sequence number of the first segment.
    pub next_segment: u64,
    /// Discontinuity sequence of the old copy's last segment (the first
    /// new segment is in the next one).
    pub discontinuity_sequence: u64,
    /// Number of the first part.
    pub next_part: u64,
    /// Index of the first frame.
    pub next_frame: u64,
    /// Index of the first audio frame (the old copy's audio frames and
    /// silence were numbered below it).
    pub next_audio_frame: u64,
    /// Id of the first codec config: above every id the old copy used, so
    /// an init segment's name never stands for two configs.
    pub next_config_id: u32,
    /// Earliest decode time of the first frame, 90 kHz: the old stream's
    /// end. The first frame goes at the later of this and the wall clock's
    /// place on the timeline, so the timeline stays on the wall clock (the
    /// outage is a gap after the discontinuity, not a shift of everything
    /// after it); at most an hour past the wall clock's place.
    pub min_start: u64,
    /// Id of the DASH period the first segment opens.
    pub next_period_id: u64,
    /// Every segment of the old copy was independent
    /// (`EXT-X-INDEPENDENT-SEGMENTS` may still be stated).
    pub all_independent: bool,
    /// The old copy's audio format, when it had audio. The new copy keeps
    /// the track, as a publisher reconnecting to the same session does:
    /// while the new publisher sends no audio, silence takes its place
    /// (after [`AUDIO_WAIT`](audio::AUDIO_WAIT)); audio of another format
    /// is dropped (`BAD_AUDIO`, one format per session).
    pub audio: Option<Arc<AudioConfig>>,
    /// The old copy was audio-only: so is the new one (video is dropped
    /// with `NO_VIDEO_TRACK`), whatever the new publisher sends first.
    pub audio_only: bool,
    /// How far the old copy's timeline ran after its publisher's capture
    /// clock, ms: a segment's place on the wall clock (availability start
    /// plus its start) less its program date time (0 when the old copy had
    /// no capture times). A first frame with a capture time goes where
    /// this mapping puts it, so `EXT-X-PROGRAM-DATE-TIME` and the DASH
    /// timeline keep the relation they had before the move; `None`: by
    /// the wall clock at its arrival.
    pub capture_lag_ms: Option<i64>,
}

/// How far from its arrival a first frame's capture time (with the old
/// copy's lag) may put it and still be followed, ms: further is a clock
/// that is not the server's, and the arrival time is used.
const CAPTURE_TRUST_MS: u64 = 60_000;

impl ResumePoint {
    /// Where the first frame of the new copy goes (90 kHz, on the old
    /// timeline) when it arrives at wall clock `now_ms` (Unix ms) with
    /// capture time `capture_ns` (Unix ns, if any): where the old copy's
    /// capture-clock mapping puts it ([`capture_lag_ms`](Self::capture_lag_ms);
    /// within a minute of its arrival), else the wall clock's place; or
    /// the old end if that is later, but never more than an hour past the
    /// wall clock (a skewed clock or a damaged record is not followed
    /// further).
    pub fn first_time(&self, now_ms: u64, capture_ns: Option<u64>) -> u64 {
        let wall = wall_place(
            self.availability_start_ms,
            self.capture_lag_ms,
            now_ms,
            capture_ns,
        );
        let old_end = self.min_start.min(wall.saturating_add(3600 * TIMESCALE));
        wall.max(old_end)
    }
}

/// Where a new publisher's first frame goes on a timeline whose time 0 is
/// wall clock `availability_start_ms` (Unix ms), 90 kHz: where its capture
/// time `capture_ns` (Unix ns) puts it with the old stream's
/// `capture_lag_ms` (within [`CAPTURE_TRUST_MS`] of its arrival), else
/// where its arrival `now_ms` (Unix ms) is. Used after a move to another
/// node ([`ResumePoint::first_time`]) and after a reconnect, so
/// `EXT-X-PROGRAM-DATE-TIME` and the DASH timeline keep their relation
/// across the outage.
pub fn wall_place(
    availability_start_ms: u64,
    capture_lag_ms: Option<i64>,
    now_ms: u64,
    capture_ns: Option<u64>,
) -> u64 {
    let at_ms = capture_ns
        .zip(capture_lag_ms)
        .and_then(|(c, lag)| u64::try_from(i64::try_from(c / 1_000_000).ok()? + lag).ok())
        .filter(|t| t.abs_diff(now_ms) <= CAPTURE_TRUST_MS)
        .unwrap_or(now_ms);
    at_ms
        .saturating_sub(availability_start_ms)
        .saturating_mul(TIMESCALE / 1000)
}

const MAX_CAPTURE_MARKS: usize = 4096;

impl SessionPipeline {
    pub fn new(opts: PipelineOptions) -> Self {
        Self {
            splitter: AnnexBSplitter::new(opts.max_nal_bytes),
            assembler: AccessUnitAssembler::new(assembler_limits(&opts)),
            filter: FrameFilter::new(),
            poc: PocState::new(),
            aligner: None,
            segmenter: None,
            manifests: None,
            config: None,
            prev_config: None,
            next_config_id: 0,
            capture_marks: VecDeque::new(),
            leading_floor: None,
            open_gop_poc: None,
            timing_note: None,
            stats: PipelineStats::default(),
            pending_drops: Vec::new(),
            fatal: false,
            ended: false,
            availability_start_ms: None,
            restart_lag: None,
            discontinuity_due: false,
            codec: None,
            hevc: None,
            audio: AudioSide::default(),
            splits: Vec::new(),
            aus: Vec::new(),
            notes: Vec::new(),
            resume: None,
            first_frame_index: 0,
            join: None,
            joining: false,
            join_last_rap: None,
            deferred_segmenter: None,
            au_capture: None,
            opts,
        }
    }

    /// A pipeline for a rendition that joins its session's other
    /// renditions (see [`JoinPoint`]): its timeline is the leading
    /// rendition's (same availability start, its first frame where its
    /// capture or arrival time falls on the leading rendition's frame grid),
    /// and it starts at a random access point where a segment of the leading
    /// rendition starts, with that segment's number; frames before it are
    /// dropped ([`DropReason::RenditionAlignment`]). Keep the segment starts
    /// current with [`SessionPipeline::update_join`] while
    /// [`SessionPipeline::is_joining`]. `point` is `None` while the
    /// leading rendition has no timeline yet: access units are dropped
    /// until an update brings one.
    pub fn join(opts: PipelineOptions, point: Option<JoinPoint>) -> Self {
        let mut p = Self::new(opts);
        p.join = point;
        p.joining = true;
        p
    }

    /// Still waiting for a random access point aligned with the leading
    /// rendition (see [`SessionPipeline::join`]).
    pub fn is_joining(&self) -> bool {
        self.joining
    }

    /// The leading rendition's state now: before this rendition's timeline
    /// started, all of it; after, its segment starts.
    pub fn update_join(&mut self, point: JoinPoint) {
        if !self.joining {
            return;
        }
        match self.join.as_mut() {
            Some(j) if self.aligner.is_some() => j.set_segment_starts(point.segment_starts),
            _ => self.join = Some(point),
        }
    }

    /// Gives up joining (there is nobody to join): the rendition starts a
    /// timeline of its own. Only before its timeline started.
    pub fn stop_joining(&mut self) {
        if self.aligner.is_none() {
            self.joining = false;
            self.join = None;
        }
    }

    /// Where this session's open segment starts (what renditions joining
    /// it align on).
    pub fn open_segment_start(&self) -> Option<SegmentStart> {
        self.segmenter.as_ref()?.open_start()
    }

    /// What a rendition joining this one needs (see [`JoinPoint`]), with
    /// `segment_starts` this session's recent segment starts, oldest first;
    /// `None` before this session's first segment began.
    pub fn join_point(&self, segment_starts: Vec<SegmentStart>) -> Option<JoinPoint> {
        let aligner = self.aligner.as_ref()?;
        let segmenter = self.segmenter.as_ref()?;
        let mut p = JoinPoint {
            availability_start_ms: self.availability_start_ms?,
            capture_mapping: aligner.capture_mapping(),
            rate: aligner.rate(),
            composition_shift: segmenter.composition_shift()?,
            target: segmenter.target(),
            segment_starts: Vec::new(),
        };
        p.set_segment_starts(segment_starts);
        Some(p)
    }

    /// A pipeline that continues a session another node ran (see
    /// [`ResumePoint`]): its first segment, part and frame take the next
    /// numbers, follow a discontinuity, and sit on the old timeline (same
    /// availability start); an audio track goes on on the same timeline,
    /// its frames numbered on; an audio-only session's first audio frame
    /// goes where a video frame would.
    pub fn resume(opts: PipelineOptions, point: ResumePoint) -> Self {
        let mut p = Self::new(opts);
        p.first_frame_index = point.next_frame;
        p.next_config_id = point.next_config_id;
        p.audio.next_index = point.next_audio_frame;
        p.audio.resumed_audio_only = point.audio_only;
        if let Some(cfg) = &point.audio {
            p.keep_audio_track(cfg.clone());
        }
        p.resume = Some(point);
        p
    }

    pub fn options(&self) -> &PipelineOptions {
        &self.opts
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    pub fn config(&self) -> Option<&Arc<CodecConfig>> {
        self.config.as_ref()
    }

    pub fn manifests(&self) -> Option<&Manifests> {
        self.manifests.as_ref()
    }

    /// The frame rate timestamps are on (once the first keyframe arrived).
    pub fn frame_rate(&self) -> Option<FrameRate> {
        self.aligner.as_ref().map(PtsAligner::rate)
    }

    /// Why the stream's own timing was overruled, if it was (for example an
    /// SPS VUI frame rate that the capture times contradict).
    pub fn timing_note(&self) -> Option<&str> {
        self.timing_note.as_deref()
    }

    /// Wall clock (Unix ms) of timeline time 0, once known.
    pub fn availability_start_ms(&self) -> Option<u64> {
        self.availability_start_ms
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Bytes held for incomplete NAL and access units.
    pub fn buffered(&self) -> usize {
        self.splitter.buffered()
            + self.assembler.buffered()
            + self.hevc.as_ref().map_or(0, |h| h.assembler.buffered())
            + self.audio.buffered()
    }

    /// The session's video codec (H.264 until parameter sets say otherwise).
    pub fn codec(&self) -> VideoCodec {
        self.codec.unwrap_or_default()
    }

    /// Feeds publisher bytes. `capture_ns` is the capture time of the first
    /// access unit starting in `chunk`; `now_ns` the wall clock (Unix ns);
    /// `end_of_access_unit` that `chunk` ends exactly at an access unit
    /// boundary, so it can be emitted now.
    pub fn push(
        &mut self,
        chunk: Bytes,
        capture_ns: Option<u64>,
        now_ns: u64,
        end_of_access_unit: bool,
        out: &mut Vec<Event>,
    ) {
        if self.fatal || self.ended {
            return;
        }
        self.announce_audio(out);
        if self.audio.tracks == Tracks::AudioOnly || self.audio.resumed_audio_only {
            let offset = self.stats.bytes_in;
            self.stats.bytes_in += chunk.len() as u64;
            let why = if self.audio.resumed_audio_only {
                "it was audio-only on the server its publisher moved from"
            } else {
                "its first segment of audio came with no video"
            };
            self.note_drop(
                DropReason::NoVideoTrack,
                offset,
                format!(
                    "{} bytes of video at byte {offset}: the session is audio-only ({why})",
                    chunk.len()
                ),
            );
            self.flush_drops(out);
            return;
        }
        self.stats.bytes_in += chunk.len() as u64;
        if let Some(c) = capture_ns {
            if self.capture_marks.len() == MAX_CAPTURE_MARKS {
                self.capture_marks.pop_front();
            }
            self.capture_marks
                .push_back((self.splitter.stream_offset(), c));
        }
        let mut splits = std::mem::take(&mut self.splits);
        self.splitter.push(chunk, &mut splits);
        if end_of_access_unit {
            self.splitter.finish(&mut splits);
        }
        self.consume_splits(&mut splits, out);
        self.splits = splits;
        if end_of_access_unit {
            if let Some(h) = self.hevc.as_mut() {
                h.assembler.flush(&mut h.aus, false);
            } else {
                let mut aus = std::mem::take(&mut self.aus);
                self.assembler.flush(&mut aus, false, true);
                self.aus = aus;
            }
        }
        self.process_aus(now_ns);
        self.release(false, now_ns, out);
        self.flush_drops(out);
    }

    /// The publisher's stream ended cleanly: flush the last frame and
    /// segment, and close the manifests.
    pub fn finish(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        if self.ended {
            return;
        }
        self.flush_pending(now_ns, out);
        self.finish_audio_input(out);
        self.release(true, now_ns, out);
        self.ended = true;
        let now_ms = now_ns / 1_000_000;
        if let Some(s) = self.segmenter.as_mut() {
            let (part, segment) = s.finish_parts();
            let audio_only = self.audio.tracks == Tracks::AudioOnly;
            if let Some(p) = &part {
                self.assign_tail(p.start + p.duration, out);
            }
            if let Some(mut p) = part {
                p.audio = self.take_span(false);
                if audio_only {
                    audio::audio_only_record_part(&mut p);
                }
                if let Some(m) = self.manifests.as_mut() {
                    m.push_part(&p);
                }
                out.push(Event::Part(Arc::new(p)));
            }
            if let Some(mut rec) = segment {
                rec.audio = self.take_span(true);
                let cfg = if audio_only {
                    audio::audio_only_record(&mut rec);
                    None
                } else {
                    self.segment_config(&rec)
                };
                self.emit_segment_now(rec, cfg, now_ms, out);
            }
        }
        self.flush_drops(out);
        if let Some(m) = self.manifests.as_mut() {
            out.push(Event::Ended(Arc::new(m.end(now_ms))));
        }
    }

    /// A new publisher continues this session (after the previous one
    /// vanished): what the old stream left pending is flushed as its end,
    /// the new bytes start a fresh stream, which must begin with a keyframe,
    /// and the timeline continues with a discontinuity.
    pub fn reconnect(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        self.flush_pending(now_ns, out);
        self.reconnect_audio(out);
        // The old publisher's audio ends with its stream: what it sent is
        // placed now (no cut waits for more of it), and what is held goes
        // to the old stream's last segment, as at the end of a stream —
        // the new stream may start after a gap.
        self.release(true, now_ns, out);
        if let Some(end) = self.segmenter.as_ref().and_then(Segmenter::open_end) {
            self.assign_tail(end, out);
        }
        self.splitter = AnnexBSplitter::new(self.opts.max_nal_bytes);
        self.assembler = AccessUnitAssembler::new(assembler_limits(&self.opts));
        if self.hevc.is_some() {
            self.hevc = Some(Box::new(HevcStages::new(&self.opts)));
        }
        self.filter.restart();
        self.poc = PocState::new();
        self.capture_marks.clear();
        self.leading_floor = None;
        self.open_gop_poc = None;
        if let Some(a) = self.aligner.as_mut() {
            a.restart();
        }
        if self.aligner.is_some() || self.audio.tracks == Tracks::AudioOnly {
            // The new stream's first frame goes where the wall clock (or
            // the old capture-clock mapping) puts it after the outage, not
            // right after the old stream's last frame: the DASH timeline
            // keeps to the wall clock and to the program date times.
            let avail = self.availability_start_ms.unwrap_or(0);
            self.restart_lag = Some(
                self.segmenter
                    .as_ref()
                    .and_then(Segmenter::open_capture)
                    .and_then(|(start, capture)| {
                        let place = avail.saturating_add(start.saturating_mul(1000) / TIMESCALE);
                        let pdt = crate::segment::program_date_time_ms(avail, start, capture);
                        Some(i64::try_from(place).ok()? - i64::try_from(pdt).ok()?)
                    }),
            );
        }
        if let Some(s) = self.segmenter.as_mut() {
            s.mark_discontinuity();
        }
        // The manifests mark it when the new publisher's first segment
        // opens (`Event::Discontinuity`): the old publisher's segment in
        // progress is still to be listed without it.
        self.discontinuity_due = true;
        self.fatal = false;
    }

    /// The new stream's first frame after a reconnect is about to be timed
    /// (captured at `capture`, Unix ns, arriving at `now_ns`): it goes no
    /// earlier than [`wall_place`] puts it.
    fn place_restart(&mut self, capture: Option<u64>, now_ns: u64) {
        let Some(lag) = self.restart_lag.take() else {
            return;
        };
        let (Some(avail), Some(a)) = (self.availability_start_ms, self.aligner.as_mut()) else {
            return;
        };
        a.restart_not_before(wall_place(avail, lag, now_ns / 1_000_000, capture));
    }

    /// The publisher vanished (it may reconnect, after a gap): the
    /// low-latency MPD stops predicting segments
    /// ([`Manifests::publisher_away`]).
    pub fn publisher_away(&mut self) {
        if let Some(m) = self.manifests.as_mut() {
            m.publisher_away();
        }
    }

    /// Emits what the stream left pending (its last NAL unit and access
    /// unit), judged as at the end of a stream.
    fn flush_pending(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        if self.fatal || self.ended {
            return;
        }
        let mut splits = std::mem::take(&mut self.splits);
        self.splitter.finish(&mut splits);
        self.consume_splits(&mut splits, out);
        self.splits = splits;
        if let Some(h) = self.hevc.as_mut() {
            h.assembler.flush(&mut h.aus, true);
        } else {
            let mut aus = std::mem::take(&mut self.aus);
            self.assembler.flush(&mut aus, true, false);
            self.aus = aus;
        }
        self.process_aus(now_ns);
        self.release(false, now_ns, out);
        self.flush_drops(out);
    }

    fn consume_splits(&mut self, splits: &mut Vec<Split>, out: &mut Vec<Event>) {
        let mut aus = std::mem::take(&mut self.aus);
        let mut notes = std::mem::take(&mut self.notes);
        for s in splits.drain(..) {
            match s {
                Split::Nal(n) => {
                    if self.codec.is_none() {
                        if hevc::looks_like_hevc_parameter_set(&n.data) {
                            self.codec = Some(VideoCodec::H265);
                            self.hevc = Some(Box::new(HevcStages::new(&self.opts)));
                        } else if n.nal_type() == 7 && !n.forbidden_bit() {
                            self.codec = Some(VideoCodec::H264);
                        }
                    }
                    match self.hevc.as_mut() {
                        Some(h) => {
                            // An H.264 SPS (a reserved type in H.265) in an
                            // H.265 session: the publisher changed codec.
                            if n.nal_type() == 7 && hevc::nal_type(&n.data) >= 48 {
                                if !self.fatal {
                                    self.fatal = true;
                                    out.push(Event::Fatal(EngineError::UnsupportedCodec(format!(
                                        "an H.264 SPS at byte {} in an H.265 session: a session is one codec",
                                        n.offset
                                    ))));
                                }
                                continue;
                            }
                            h.assembler.push(n, &mut h.aus, &mut h.rejected);
                        }
                        None => self.assembler.push(n, &mut aus, &mut notes),
                    }
                }
                Split::Issue(SplitIssue::Garbage { offset, len }) => self.note_drop(
                    DropReason::NotH264,
                    offset,
                    format!(
                        "{len} bytes at byte {offset} are not {} NAL units",
                        self.codec.unwrap_or_default().name()
                    ),
                ),
                Split::Issue(SplitIssue::TooLarge { offset, limit }) => self.note_drop(
                    DropReason::TooLarge,
                    offset,
                    format!("NAL unit at byte {offset} is larger than {limit} bytes"),
                ),
            }
        }
        for n in notes.drain(..) {
            match n {
                AssemblerNote::LooksLikeHevc { offset } => {
                    self.fatal = true;
                    let what = if self.codec == Some(VideoCodec::H264) {
                        "in an H.264 session: a session is one codec"
                    } else {
                        "but sends no H.265 VPS/SPS first"
                    };
                    out.push(Event::Fatal(EngineError::UnsupportedCodec(format!(
                        "the stream looks like H.265/HEVC (NAL headers at byte {offset}) {what}"
                    ))));
                }
                AssemblerNote::ParamSetRejected(e) => {
                    tracing::warn!(error = %e, "parameter set rejected");
                }
            }
        }
        if let Some(h) = self.hevc.as_mut() {
            for e in h.rejected.drain(..) {
                tracing::warn!(error = %e, "H.265 parameter set rejected");
            }
        }
        self.aus = aus;
        self.notes = notes;
    }

    fn process_aus(&mut self, now_ns: u64) {
        if let Some(mut hevc_aus) = self.hevc.as_mut().map(|h| std::mem::take(&mut h.aus)) {
            for au in hevc_aus.drain(..) {
                if self.fatal {
                    break;
                }
                let capture = self.take_capture(au.offset);
                self.au_capture = capture;
                self.stats.access_units += 1;
                let offset = au.offset;
                if self.waits_for_leading_rendition(offset) {
                    continue;
                }
                if let Err((reason, detail)) = self.accept_hevc_au(au, capture, now_ns) {
                    self.note_frame_drop(reason, offset, detail);
                }
            }
            if let Some(h) = self.hevc.as_mut() {
                h.aus = hevc_aus;
            }
            return;
        }
        let mut aus = std::mem::take(&mut self.aus);
        for au in aus.drain(..) {
            if self.fatal {
                break;
            }
            let capture = self.take_capture(au.offset);
            self.au_capture = capture;
            self.process_au(au, capture, now_ns);
        }
        self.aus = aus;
    }

    /// A joining rendition before the leading rendition has a timeline:
    /// the access unit at `offset` is dropped (true).
    fn waits_for_leading_rendition(&mut self, offset: u64) -> bool {
        if !self.joining || self.join.is_some() {
            return false;
        }
        self.note_frame_drop(
            DropReason::RenditionAlignment,
            offset,
            format!(
                "picture at byte {offset}: the session's first rendition has not started its \
                 first segment yet; this rendition starts at a random access point where one \
                 of its segments starts"
            ),
        );
        true
    }

    fn take_capture(&mut self, au_offset: u64) -> Option<u64> {
        let mut found = None;
        while let Some(&(off, c)) = self.capture_marks.front() {
            if off > au_offset {
                break;
            }
            found = Some(c);
            self.capture_marks.pop_front();
        }
        found
    }

    fn process_au(&mut self, au: AccessUnit, capture: Option<u64>, now_ns: u64) {
        self.stats.access_units += 1;
        let offset = au.offset;
        if self.waits_for_leading_rendition(offset) {
            return;
        }
        if let Err((reason, detail)) = self.accept_au(au, capture, now_ns) {
            self.note_frame_drop(reason, offset, detail);
        }
    }

    /// Turns one access unit into a frame, or says why it was dropped. Every
    /// access unit ends as exactly one of the two, so `stats` always holds
    /// `access_units == frames + frames_dropped`.
    fn accept_au(
        &mut self,
        au: AccessUnit,
        capture: Option<u64>,
        now_ns: u64,
    ) -> Result<(), (DropReason, String)> {
        let sps = au.sps.clone();
        let verdict = self.filter.judge(&au, sps.as_deref());
        let resync = match verdict {
            Verdict::Drop(reason, detail) => {
                // A dropped picture keeps its place on the timeline, and so
                // do pictures a frame_num gap shows were lost upstream.
                let missing = self.filter.take_missing();
                if au.slices > 0 || au.has_aud {
                    if let Some(a) = self.aligner.as_mut() {
                        a.note_dropped(1 + missing);
                    }
                }
                return Err((reason, detail));
            }
            Verdict::Accept {
                resync_at_recovery_point,
            } => resync_at_recovery_point,
        };
        let (Some(slice), Some(sps)) = (au.slice.as_ref(), sps.as_ref()) else {
            // The filter never accepts these.
            return Err((
                DropReason::UnknownParameterSet,
                format!("picture at byte {} has no usable SPS", au.offset),
            ));
        };
        // Random access (ISO/IEC 14496-12 Annex I): an IDR is SAP type 1; a
        // non-IDR intra picture with a recovery point of 0 frames (open GOP),
        // or the intra picture decoding restarts at, is SAP type 3; any other
        // recovery point starts a gradual decoding refresh (SAP type 4).
        let idr = slice.idr;
        let open_gop = !idr && au.intra && (au.recovery_point == Some(0) || resync);
        let gdr = !idr && !open_gop && (au.recovery_point.is_some() || resync);
        let keyframe = idr || open_gop;
        let random_access = keyframe || gdr;
        let sap_type = if idr {
            1
        } else if open_gop {
            3
        } else if gdr {
            4
        } else {
            0
        };

        // New parameter sets take effect where decoding can start.
        if random_access || self.config.is_none() {
            let Some(cfg) = au.config.clone() else {
                return Err((
                    DropReason::UnknownParameterSet,
                    format!("keyframe at byte {} has no usable SPS/PPS", au.offset),
                ));
            };
            self.adopt_config(cfg, now_ns, |c| {
                let reorder = sps_reorder_frames(sps).unwrap_or_else(|| default_reorder(c, sps));
                (sps_frame_rate(sps), reorder)
            });
        }
        let Some(config) = self.config.clone() else {
            return Err((
                DropReason::UnknownParameterSet,
                format!("picture at byte {} has no usable SPS/PPS", au.offset),
            ));
        };

        let poc = self.poc.next(sps, slice);
        if poc.resets {
            self.leading_floor = None;
            self.open_gop_poc = None;
        }
        if resync {
            self.leading_floor = Some(poc.value);
        } else if let Some(floor) = self.leading_floor {
            if poc.value < floor {
                if let Some(a) = self.aligner.as_mut() {
                    a.note_dropped(1);
                }
                return Err((
                    DropReason::LeadingPicture,
                    format!(
                        "picture at byte {} precedes the recovery point decoding started at (open-GOP leading picture)",
                        au.offset
                    ),
                ));
            }
        }
        if random_access {
            self.open_gop_poc = open_gop.then_some(poc.value);
        }
        let is_leading = !random_access && self.open_gop_poc.is_some_and(|p| poc.value < p);
        self.place_restart(capture, now_ns);
        let Some(aligner) = self.aligner.as_mut() else {
            return Err((
                DropReason::UnknownParameterSet,
                format!("picture at byte {} came before any timing", au.offset),
            ));
        };
        let times = aligner.next(TimingInput {
            poc: poc.value,
            poc_resets: poc.resets,
            order_by_poc: !matches!(sps.pic_order_cnt, PicOrderCntType::TypeTwo),
            capture_ns: capture,
        });
        if let Some(note) = aligner.take_rate_note() {
            tracing::warn!(note = %note, "stream timing overruled");
            self.timing_note = Some(note);
        }

        // Parameter sets go in front of every picture decoding can start at.
        let prefix: Vec<Bytes> = if random_access && !(au.has_sps && au.has_pps) {
            let mut p = Vec::with_capacity(1 + config.pps.len());
            p.push(config.sps.clone());
            p.extend(config.pps.iter().cloned());
            p
        } else {
            Vec::new()
        };
        let (data, nals) = au.annexb(&prefix);
        self.place_frame(
            Frame {
                index: self.first_frame_index.saturating_add(self.stats.frames),
                data,
                nals,
                pts: times.pts,
                dts: times.dts,
                duration: times.duration,
                is_keyframe: keyframe,
                random_access,
                sap_type,
                is_leading,
                is_reference: slice.nal_ref_idc != 0,
                segment: 0,
                config_id: config.id,
                capture_time_ns: capture,
                ingest_time_ns: now_ns,
            },
            au.offset,
        )
    }

    /// [`Self::accept_au`] for an H.265 access unit: decoding starts at
    /// IRAP pictures (IDR and BLA without leading pictures: SAP type 1; CRA
    /// and BLA_W_LP: SAP type 3), RASL pictures of an IRAP decoding starts
    /// at are dropped as leading pictures, timing comes from the POC.
    fn accept_hevc_au(
        &mut self,
        au: HevcAu,
        capture: Option<u64>,
        now_ns: u64,
    ) -> Result<(), (DropReason, String)> {
        let no_stages = || {
            (
                DropReason::UnknownParameterSet,
                "no H.265 state".to_string(),
            )
        };
        let judged = self.hevc.as_mut().ok_or_else(no_stages)?.filter.judge(&au);
        let accepted = match judged {
            Ok(a) => a,
            Err(e) => {
                if au.slices > 0 || au.has_aud {
                    if let Some(a) = self.aligner.as_mut() {
                        a.note_dropped(1);
                    }
                }
                return Err(e);
            }
        };
        let (Some(slice), Some(sps)) = (au.slice.as_ref(), au.sps.clone()) else {
            return Err((
                DropReason::UnknownParameterSet,
                format!("picture at byte {} has no usable SPS", au.offset),
            ));
        };
        let t = slice.nal_type;
        let keyframe = hevc::is_irap(t);
        let sap_type = if hevc::is_idr(t) || t == hevc::nal::BLA_W_RADL || t == hevc::nal::BLA_N_LP
        {
            1
        } else if keyframe {
            3
        } else {
            0
        };
        if keyframe || self.config.is_none() {
            let Some(cfg) = au.config.clone() else {
                return Err((
                    DropReason::UnknownParameterSet,
                    format!("keyframe at byte {} has no usable VPS/SPS/PPS", au.offset),
                ));
            };
            let first = self.aligner.is_none();
            let (rate, reorder) = (sps.frame_rate(), sps.max_num_reorder_pics);
            if self.adopt_config(cfg, now_ns, |_| (rate, reorder)) && first {
                if let Some(a) = self.aligner.as_mut() {
                    a.set_poc_step_hint(1);
                }
            }
        }
        let Some(config) = self.config.clone() else {
            return Err((
                DropReason::UnknownParameterSet,
                format!("picture at byte {} has no usable VPS/SPS/PPS", au.offset),
            ));
        };
        let poc = self.hevc.as_mut().ok_or_else(no_stages)?.poc.next(
            &sps,
            slice,
            accepted.no_rasl_output,
        );
        self.place_restart(capture, now_ns);
        let Some(aligner) = self.aligner.as_mut() else {
            return Err((
                DropReason::UnknownParameterSet,
                format!("picture at byte {} came before any timing", au.offset),
            ));
        };
        let times = aligner.next(TimingInput {
            poc,
            poc_resets: accepted.no_rasl_output,
            order_by_poc: true,
            capture_ns: capture,
        });
        if let Some(note) = aligner.take_rate_note() {
            tracing::warn!(note = %note, "stream timing overruled");
            self.timing_note = Some(note);
        }
        // VPS, SPS and PPS go in front of every IRAP picture.
        let prefix: Vec<Bytes> = if keyframe && !(au.has_vps && au.has_sps && au.has_pps) {
            let mut p: Vec<Bytes> = config
                .hevc
                .as_ref()
                .map(|h| h.vps.clone())
                .unwrap_or_default();
            p.push(config.sps.clone());
            p.extend(config.pps.iter().cloned());
            p
        } else {
            Vec::new()
        };
        let (data, nals) = annexb_of(&au.nals, &prefix, |n| {
            hevc::nal_type(&n.data) == hevc::nal::AUD
        });
        self.place_frame(
            Frame {
                index: self.first_frame_index.saturating_add(self.stats.frames),
                data,
                nals,
                pts: times.pts,
                dts: times.dts,
                duration: times.duration,
                is_keyframe: keyframe,
                random_access: keyframe,
                sap_type,
                is_leading: hevc::is_rasl(t),
                is_reference: !hevc::is_sub_layer_non_ref(t),
                segment: 0,
                config_id: config.id,
                capture_time_ns: capture,
                ingest_time_ns: now_ns,
            },
            au.offset,
        )
    }

    /// Places an accepted frame (H.264 or H.265) in a segment and part,
    /// queues the part and segment it closes, then the frame with its
    /// segment number. `offset`: the access unit's byte position, for the
    /// error when no segment has begun.
    fn place_frame(&mut self, mut frame: Frame, offset: u64) -> Result<(), (DropReason, String)> {
        if self.joining {
            self.start_joined_segment(&frame, offset)?;
        }
        let Some(segmenter) = self.segmenter.as_mut() else {
            return Err((
                DropReason::UnknownParameterSet,
                format!("picture at byte {offset} came before any segment"),
            ));
        };
        let placed = segmenter.place(FramePlacement {
            index: frame.index,
            pts: frame.pts,
            dts: frame.dts,
            duration: frame.duration,
            is_keyframe: frame.is_keyframe,
            random_access: frame.random_access,
            sap_type: frame.sap_type,
            config_id: frame.config_id,
            bytes: frame.data.len() as u64,
            capture_ns: frame.capture_time_ns,
        });
        frame.segment = placed.segment;
        self.on_video_frame(frame.dts);
        if let Some(p) = placed.closed_part {
            self.queue(Queued::Part(p));
        }
        if let Some(rec) = placed.closed_segment {
            self.queue_segment(rec);
        }
        // The new publisher's first segment (the session's very first
        // one starts no discontinuity).
        if placed.opened
            && std::mem::take(&mut self.discontinuity_due)
            && placed.opened_discontinuity
        {
            self.queue(Queued::Event(Event::Discontinuity));
        }
        self.stats.frames += 1;
        self.queue(Queued::Frame(Arc::new(frame)));
        Ok(())
    }

    /// First or changed parameter sets: `rate` from the SPS timing (if it
    /// has any), `reorder` the reorder depth to start the aligner with.
    /// Makes `cfg` the session's codec configuration unless it is the one
    /// in effect: a new id, timing set up for it (`timing` gives its frame
    /// rate and reorder depth) and an `Event::Config`. Returns whether it
    /// changed. One path for H.264 and H.265.
    fn adopt_config(
        &mut self,
        mut cfg: CodecConfig,
        now_ns: u64,
        timing: impl FnOnce(&CodecConfig) -> (Option<(u32, u32)>, u32),
    ) -> bool {
        cfg.id = self.next_config_id;
        if self
            .config
            .as_deref()
            .is_some_and(|cur| same_config(cur, &cfg))
        {
            return false;
        }
        self.next_config_id = self.next_config_id.saturating_add(1);
        let (rate, reorder) = timing(&cfg);
        self.on_new_config(rate, reorder, now_ns);
        let cfg = Arc::new(cfg);
        self.prev_config = self.config.replace(cfg.clone());
        self.queue(Queued::Event(Event::Config(cfg)));
        true
    }

    fn on_new_config(&mut self, rate: Option<(u32, u32)>, reorder: u32, now_ns: u64) {
        let rate = rate
            .map(|(n, d)| FrameRate::new(n, d))
            .or(self.opts.target_rate)
            .unwrap_or(self.opts.default_rate);
        match self.aligner.as_mut() {
            Some(a) => a.set_rate(rate),
            None => {
                let mut aligner = PtsAligner::new(rate, reorder, self.opts.timing);
                // Timeline time 0 is the first frame's decode time, now
                // (a resumed session's: its old start; the first frame goes
                // where the wall clock is on that timeline, or after the old
                // stream's end).
                let mut start_ms = now_ns / 1_000_000;
                if let Some(r) = &self.resume {
                    aligner.start_at(r.first_time(start_ms, self.au_capture));
                    start_ms = r.availability_start_ms;
                }
                // A joining rendition: on the leading rendition's timeline.
                if let Some(j) = &self.join {
                    aligner.start_at(j.first_decode_time(self.au_capture, start_ms));
                    start_ms = j.availability_start_ms;
                }
                self.aligner = Some(aligner);
                // One frame period at the starting rate, rounded up.
                let frame_ms = (1000 * u64::from(rate.den)).div_ceil(u64::from(rate.num.max(1)));
                self.start_timeline(start_ms, u32::try_from(frame_ms).unwrap_or(u32::MAX));
            }
        }
    }

    /// The session timeline starts: time 0 is wall-clock `start_ms`;
    /// segments and manifests are set up (`frame_interval_ms`: the longest
    /// frame interval expected, for `PART-TARGET`).
    fn start_timeline(&mut self, start_ms: u64, frame_interval_ms: u32) {
        self.availability_start_ms = Some(start_ms);
        let max_segment_ms = self.opts.effective_max_segment_ms();
        let mut seg_opts = SegmenterOptions::with_target_ms(self.opts.segment_target_ms);
        seg_opts.max_duration = u64::from(max_segment_ms) * TIMESCALE / 1000;
        seg_opts.max_bytes = self.opts.segment_bytes_limit() as u64;
        seg_opts.part_target = u64::from(self.opts.effective_part_target_ms()) * TIMESCALE / 1000;
        self.segmenter = match self.resume.take() {
            Some(r) => Some({
                let s = Segmenter::resume(
                    seg_opts,
                    start_ms,
                    r.next_segment,
                    r.discontinuity_sequence,
                    r.next_part,
                );
                self.resume = Some(r);
                s
            }),
            None if self.joining => {
                // Made at the first random access point aligned with the
                // leading rendition (`place_frame`).
                self.deferred_segmenter = Some((seg_opts, start_ms));
                None
            }
            None => Some(Segmenter::new(seg_opts, start_ms)),
        }
        .or(self.segmenter.take());
        self.manifests = Some(Manifests::new(
            PlaylistOptions {
                target_segment_ms: self.opts.segment_target_ms,
                max_segment_ms,
                window: self.opts.listed_window(),
                max_window_bytes: if self.opts.dvr_window_ms > 0 || self.opts.list_every_segment {
                    u64::MAX
                } else {
                    self.opts.window_bytes_limit() as u64
                },
                utc_timing_url: self.opts.utc_timing_url.clone(),
                part_target_ms: self.opts.effective_part_target_ms(),
                frame_interval_ms,
            },
            start_ms,
        ));
        if let (Some(r), Some(m)) = (self.resume.take(), self.manifests.as_mut()) {
            m.resume_after(r.next_period_id, r.all_independent);
        }
    }

    /// A joining rendition's frame: the first random access point at a
    /// segment start of the leading rendition starts its first segment,
    /// numbered like that one; anything before it is dropped.
    fn start_joined_segment(
        &mut self,
        frame: &Frame,
        offset: u64,
    ) -> Result<(), (DropReason, String)> {
        let aligned = self
            .join
            .as_ref()
            .filter(|_| frame.random_access)
            .and_then(|j| j.segment_at(frame.dts, self.join_last_rap));
        let (Some(at), Some((opts, start_ms))) = (aligned, self.deferred_segmenter) else {
            if frame.random_access {
                self.join_last_rap = Some(frame.dts);
            }
            let why = if frame.random_access {
                "is a random access point at no segment start of the other renditions"
            } else {
                "is no random access point"
            };
            return Err((
                DropReason::RenditionAlignment,
                format!(
                    "picture at byte {offset} (decode time {} on the session's timeline) {why}: \
                     a rendition starts where the others start a segment, so it waits for the \
                     next one (if it waits longer than a segment, its keyframes are not at the \
                     others' times: publish renditions with keyframes at the same times, capture \
                     times on one clock)",
                    frame.dts
                ),
            ));
        };
        let mut s = Segmenter::resume(opts, start_ms, at.sequence, at.discontinuity_sequence, 0);
        s.join_without_discontinuity();
        self.segmenter = Some(s);
        self.deferred_segmenter = None;
        self.join = None;
        self.joining = false;
        Ok(())
    }

    /// The video config a closed segment uses: when it closed because new
    /// parameter sets arrived, `config` is already the next segment's.
    fn segment_config(&self, rec: &SegmentRecord) -> Option<Arc<CodecConfig>> {
        [self.config.as_ref(), self.prev_config.as_ref()]
            .into_iter()
            .flatten()
            .find(|c| c.id == rec.config_id)
            .or(self.config.as_ref())
            .cloned()
    }

    /// Queues a closed video segment with its config (released after the
    /// audio reached its end).
    fn queue_segment(&mut self, rec: SegmentRecord) {
        let cfg = self.segment_config(&rec);
        self.queue(Queued::Segment(rec, cfg));
    }

    /// Adds a closed segment to the manifests and emits it. `cfg` is its
    /// video config (`None` in an audio-only session).
    fn emit_segment_now(
        &mut self,
        rec: SegmentRecord,
        cfg: Option<Arc<CodecConfig>>,
        now_ms: u64,
        out: &mut Vec<Event>,
    ) {
        let audio = self.audio.config.clone();
        let Some(m) = self.manifests.as_mut() else {
            return;
        };
        if cfg.is_none() && audio.is_none() {
            return;
        }
        // Manifests state the frame rate timestamps are really on.
        let rate = self.aligner.as_ref().map(PtsAligner::rate);
        let cfg = cfg.map(|cfg| match rate {
            Some(r) if (r.num, r.den) != (cfg.frame_rate_num, cfg.frame_rate_den) => {
                let mut c = CodecConfig::clone(&cfg);
                (c.frame_rate_num, c.frame_rate_den) = (r.num, r.den);
                c
            }
            _ => CodecConfig::clone(&cfg),
        });
        self.stats.segments += 1;
        let manifest = m.push_av(rec.clone(), cfg.as_ref(), audio.as_deref(), now_ms);
        out.push(Event::Segment(Arc::new(SegmentEvent {
            record: rec,
            manifest,
        })));
    }

    /// An access unit was dropped.
    fn note_frame_drop(&mut self, reason: DropReason, offset: u64, detail: String) {
        self.stats.frames_dropped += 1;
        self.note_drop(reason, offset, detail);
    }

    fn note_drop(&mut self, reason: DropReason, offset: u64, detail: String) {
        let i = reason_index(reason);
        self.stats.dropped[i] += 1;
        match self.pending_drops.iter_mut().find(|d| d.reason == reason) {
            Some(d) => d.count += 1,
            None => self.pending_drops.push(DropReport {
                reason,
                count: 1,
                total: 0,
                detail,
                offset,
            }),
        }
    }

    /// A notice under `reason` that drops nothing (a report with count 0,
    /// not counted in the totals): something the publisher should know,
    /// such as silence standing in for audio that stopped.
    fn note_notice(&mut self, reason: DropReason, offset: u64, detail: String) {
        if !self.pending_drops.iter().any(|d| d.reason == reason) {
            self.pending_drops.push(DropReport {
                reason,
                count: 0,
                total: 0,
                detail,
                offset,
            });
        }
    }

    fn flush_drops(&mut self, out: &mut Vec<Event>) {
        for mut d in self.pending_drops.drain(..) {
            d.total = self.stats.dropped[reason_index(d.reason)];
            out.push(Event::Dropped(d));
        }
    }
}

impl PipelineOptions {
    /// The longest segment, ms: `max_segment_ms`, or three times the target
    /// when it is 0; never below the target.
    pub fn effective_max_segment_ms(&self) -> u32 {
        let target = self.segment_target_ms.max(100);
        match self.max_segment_ms {
            0 => target.saturating_mul(3),
            m => m.max(target),
        }
    }

    /// The part target, ms: `part_target_ms` within 100 ms and the segment
    /// target, or 0 (whole segments) when it is 0.
    pub fn effective_part_target_ms(&self) -> u32 {
        match self.part_target_ms {
            0 => 0,
            p => p.clamp(100, self.segment_target_ms.max(100)),
        }
    }

    /// Segments the playlists list: `window`, or with a DVR window
    /// (`dvr_window_ms`) the segments of about that long if more.
    pub fn listed_window(&self) -> usize {
        if self.list_every_segment {
            return usize::MAX;
        }
        let window = self.window.max(1);
        if self.dvr_window_ms == 0 {
            return window;
        }
        let target = u64::from(self.segment_target_ms.max(100));
        let dvr = usize::try_from(self.dvr_window_ms.div_ceil(target)).unwrap_or(usize::MAX);
        window.max(dvr)
    }

    /// Bytes at which an open segment is cut even without a random access
    /// point: a third of the session's media budget.
    pub fn segment_bytes_limit(&self) -> usize {
        (self.max_window_bytes / 3).max(1)
    }

    /// Bytes the closed segments of the live window may hold: the rest of
    /// the budget, so window plus open segment stay within it.
    pub fn window_bytes_limit(&self) -> usize {
        self.max_window_bytes
            .saturating_sub(self.segment_bytes_limit())
            .max(1)
    }
}

fn assembler_limits(opts: &PipelineOptions) -> AssemblerLimits {
    AssemblerLimits {
        max_au_bytes: opts.max_au_bytes,
        max_au_nals: 1024,
    }
}

fn reason_index(r: DropReason) -> usize {
    DropReason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

fn same_config(a: &CodecConfig, b: &CodecConfig) -> bool {
    a.sps == b.sps
        && a.pps == b.pps
        && a.hevc.as_ref().map(|h| &h.vps) == b.hevc.as_ref().map(|h| &h.vps)
}

/// The H.265 stages of a session: assembler, filter, POC.
struct HevcStages {
    assembler: HevcAssembler,
    filter: HevcFilter,
    poc: HevcPoc,
    aus: Vec<HevcAu>,
    rejected: Vec<HevcError>,
}

impl HevcStages {
    fn new(opts: &PipelineOptions) -> Self {
        let limits = assembler_limits(opts);
        Self {
            // Up to one slice segment per CTB of a 64x64-CTB 8K picture.
            assembler: HevcAssembler::new(limits.max_au_bytes, 16_384),
            filter: HevcFilter::new(),
            poc: HevcPoc::default(),
            aus: Vec::new(),
            rejected: Vec::new(),
        }
    }
}

/// Reorder depth when the VUI does not say: none for Baseline (no B-frames)
/// or POC type 2 (display order is decode order), else 2, which covers
/// x264's B-pyramid and most hardware encoders; deeper reordering is
/// detected and repaired by the aligner.
fn default_reorder(cfg: &CodecConfig, sps: &SeqParameterSet) -> u32 {
    if cfg.profile_idc == 66 || matches!(sps.pic_order_cnt, PicOrderCntType::TypeTwo) {
        0
    } else {
        2
    }
}

/// Nanoseconds on the session timeline for 90 kHz `ticks`.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    (ticks as u128 * 1_000_000_000 / TIMESCALE as u128) as u64
}

/// Runs the engine over a whole Annex B stream offline and returns its
/// accepted frames in decode order: the access units a real-time publisher
/// (demo, tests, load generators) sends one per message, with their times.
pub fn frames_of(data: Bytes, opts: PipelineOptions) -> Vec<Arc<Frame>> {
    let mut p = SessionPipeline::new(opts);
    let mut events = Vec::new();
    p.push(data, None, 0, false, &mut events);
    p.finish(0, &mut events);
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod resume_tests {
    use super::{ResumePoint, TIMESCALE};

    /// Where a continued session's first frame goes: by its capture time
    /// through the old copy's lag when it has one (within a minute of its
    /// arrival), else by its arrival; never before the old end.
    #[test]
    fn the_first_frame_keeps_the_old_capture_clock_mapping() {
        let start_ms = 1_790_000_000_000;
        let point = ResumePoint {
            availability_start_ms: start_ms,
            min_start: 10 * TIMESCALE,
            capture_lag_ms: Some(-10),
            ..Default::default()
        };
        let ms = |s: u64| s * TIMESCALE / 1000;
        let arrival = start_ms + 17_068;
        let captured = Some((start_ms + 17_000) * 1_000_000);
        // Captured at 17.000 s, the old copy 10 ms behind its capture clock.
        assert_eq!(point.first_time(arrival, captured), ms(16_990));
        // No capture time, or no mapping: where it arrived.
        assert_eq!(point.first_time(arrival, None), ms(17_068));
        let no_lag = ResumePoint {
            capture_lag_ms: None,
            ..point.clone()
        };
        assert_eq!(no_lag.first_time(arrival, captured), ms(17_068));
        // A capture clock two minutes off is not followed.
        let off = Some((start_ms + 137_000) * 1_000_000);
        assert_eq!(point.first_time(arrival, off), ms(17_068));
        // Before the old end: at the old end.
        let early = Some((start_ms + 5_000) * 1_000_000);
        assert_eq!(point.first_time(start_ms + 5_050, early), 10 * TIMESCALE);
    }
}

//! Replication seen from a session: what an origin's session hands to a
//! replicator as it happens ([`ReplicaItem`] through a [`ReplicaTx`]), and
//! the [`Mirror`] that stands in for the engine in a session filled from a
//! replica (an edge's, `--role edge`).
//!
//! The items are the engine's own events (frames with their exact times,
//! part and segment records, parameter sets) plus the session's start (its
//! timeline origin and manifest options). A mirror session moves them
//! through the same ring, item log and part store as the origin's (the
//! parts are muxed by the same muxer from the same frames), and its
//! [`Manifests`] are made with the origin's options and fed the origin's
//! records, so every number and every playlist line is the origin's. The
//! session layer knows nothing of the transport (`crate::cluster`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::engine::frame::{AudioConfig, AudioFrame};
use crate::engine::pipeline::{Event, Formats, PipelineStats, SegmentEvent};
use crate::engine::playlist::{Manifests, PlaylistOptions, SegmentPlace};
use crate::engine::{CodecConfig, Frame, PartRecord, PipelineOptions, SegmentRecord};

use super::SessionOptions;

/// One thing an origin's session did, in the engine's order.
#[derive(Clone, Debug)]
pub enum ReplicaItem {
    /// The session's timeline and manifest options became known (at its
    /// first parameter sets).
    Start(Arc<SessionStart>),
    /// First or changed parameter sets.
    Config(Arc<CodecConfig>),
    Frame(Arc<Frame>),
    /// The audio format: first, changed, or repeated before a segment (for
    /// a replica that joins there; a mirror ignores a repeat).
    AudioConfig(Arc<AudioConfig>),
    AudioFrame(Arc<AudioFrame>),
    /// A part closed (after its frames).
    Part(Arc<PartRecord>),
    /// A segment closed.
    Segment(Arc<ReplicaSegment>),
    /// A publisher took over: the next segment follows a discontinuity.
    Discontinuity,
    /// The origin's publisher vanished (it may reconnect within its grace
    /// period, after a gap): the low-latency MPD stops predicting segments
    /// until the next publisher's first part is listed, as on the origin
    /// ([`crate::engine::playlist::Manifests::publisher_away`]).
    PublisherAway,
    /// The MPEG-TS continuity counters (PAT, PMT, video) after part
    /// `after_part`, the last of its segment, was muxed: a replica that
    /// starts muxing at the next segment continues them (and writes the
    /// origin's bytes).
    TsContinuity {
        after_part: u64,
        counters: [u8; 4],
    },
    /// The stream ended: the manifests are final.
    End,
}

/// A closed segment as a replica needs it.
#[derive(Clone, Debug)]
pub struct ReplicaSegment {
    pub record: SegmentRecord,
    /// The config its manifest entries were made with (at the frame rate
    /// the timestamps are on); none for an audio-only segment.
    pub config: Option<Arc<CodecConfig>>,
    /// Where it stands in the origin's manifests (a replica that starts at
    /// it continues from there).
    pub place: Option<SegmentPlace>,
}

/// What a replica needs to render a session's manifests as its origin
/// does: the timeline origin and the options the origin's
/// [`Manifests`] were made with.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionStart {
    /// Wall clock (Unix ms) of timeline time 0 (DASH
    /// `MPD@availabilityStartTime`).
    pub availability_start_ms: u64,
    /// Segment target, ms.
    pub segment_target_ms: u32,
    /// Longest segment, ms (fixes `EXT-X-TARGETDURATION`).
    pub max_segment_ms: u32,
    /// Part target in effect, ms (0: no parts).
    pub part_target_ms: u32,
    /// Segments in the live window.
    pub window: u32,
    /// Bytes the window's segments may hold together.
    pub max_window_bytes: u64,
    /// DASH `<UTCTiming>` URL.
    pub utc_timing_url: String,
    /// One frame period at the starting rate, ms, rounded up.
    pub frame_interval_ms: u32,
    /// The outputs each part is muxed in.
    pub cmaf: bool,
    pub ts: bool,
    /// The frame rate the timestamps are on (num, den; 0/1 without video).
    pub frame_rate: (u32, u32),
    /// The session has no video track (its playlists are the audio ones).
    #[serde(default)]
    pub audio_only: bool,
}

impl SessionStart {
    /// The start of the session whose manifests are `m`.
    pub fn of(m: &Manifests, formats: Formats, frame_rate: (u32, u32)) -> Self {
        let o = m.options();
        Self {
            availability_start_ms: m.availability_start_ms(),
            segment_target_ms: o.target_segment_ms,
            max_segment_ms: o.max_segment_ms,
            part_target_ms: o.part_target_ms,
            window: u32::try_from(o.window).unwrap_or(u32::MAX),
            max_window_bytes: o.max_window_bytes,
            utc_timing_url: o.utc_timing_url.clone(),
            frame_interval_ms: o.frame_interval_ms,
            cmaf: formats.cmaf,
            ts: formats.ts,
            frame_rate,
            audio_only: false,
        }
    }

    /// The manifest options the origin used.
    pub fn playlist_options(&self) -> PlaylistOptions {
        PlaylistOptions {
            target_segment_ms: self.segment_target_ms,
            max_segment_ms: self.max_segment_ms,
            window: self.window as usize,
            max_window_bytes: self.max_window_bytes,
            utc_timing_url: self.utc_timing_url.clone(),
            part_target_ms: self.part_target_ms,
            frame_interval_ms: self.frame_interval_ms,
        }
    }

    /// Options for a mirror session (what its snapshot and muxer read).
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            pipeline: PipelineOptions {
                segment_target_ms: self.segment_target_ms,
                part_target_ms: self.part_target_ms,
                max_segment_ms: self.max_segment_ms,
                window: self.window as usize,
                utc_timing_url: self.utc_timing_url.clone(),
                formats: Formats {
                    cmaf: self.cmaf,
                    ts: self.ts,
                },
                ..PipelineOptions::default()
            },
            echo_frames: false,
        }
    }
}

/// A session's side of its replication: a bounded queue to the task that
/// publishes its items. Sending never waits: when the queue is full the
/// item is dropped and counted (the live path is never held up by the
/// replica); every item carries its number, so a reader sees the gap.
#[derive(Clone, Debug)]
pub struct ReplicaTx {
    tx: mpsc::Sender<(u64, ReplicaItem)>,
    next: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl ReplicaTx {
    /// A queue of `capacity` items (at least 1) and its receiving end.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<(u64, ReplicaItem)>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                next: Arc::new(AtomicU64::new(0)),
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Queues `item` (numbered in sending order), or drops and counts it.
    pub fn send(&self, item: ReplicaItem) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send((n, item)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            ::metrics::counter!(crate::metrics::CLUSTER_DROPPED).increment(1);
        }
    }

    /// Items dropped so far (the queue was full).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Makes the replication queue of each new session an origin creates.
pub trait Replicator: Send + Sync {
    /// The queue for a session being created (`None`: not replicated);
    /// `resumed`: it goes on from the [`takeover`](Self::takeover) just
    /// found (otherwise whatever that found is forgotten: the session
    /// existed here by then, or it starts over).
    fn attach(&self, session_id: &str, resumed: bool) -> Option<ReplicaTx>;

    /// Before a session that does not exist here is created for a
    /// publisher: whether it is live on another node that this one takes
    /// over (the publisher failed over), and where the new copy goes on
    /// from. `None`: a new session. The session is then created (and
    /// [`attach`](Self::attach) called) promptly.
    fn takeover(&self, _session_id: &str) -> TakeoverFuture {
        Box::pin(std::future::ready(None))
    }
}

/// What [`Replicator::takeover`] returns.
pub type TakeoverFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<TakenOver>> + Send>>;

/// A session of another node this one continues (publisher failover).
#[derive(Clone, Debug)]
pub struct TakenOver {
    /// Where the new copy goes on.
    pub point: crate::engine::ResumePoint,
    /// The segment the old copy had open, closed here from the parts it
    /// replicated (told to the publisher: its frames were accepted
    /// there); `None` when none was open.
    pub closed_segment: Option<SegmentRecord>,
    /// The old copy's audio sampling rate (Hz), for the closed segment's
    /// audio span.
    pub audio_rate: Option<u32>,
}

/// Stands in for the engine in a session filled from a replica: turns the
/// origin's items back into the engine's events and keeps the manifests
/// from the origin's records. Pure: items and times in, events out.
pub struct Mirror {
    start: Arc<SessionStart>,
    manifests: Manifests,
    config: Option<Arc<CodecConfig>>,
    /// The origin's audio format, once received.
    audio: Option<Arc<AudioConfig>>,
    stats: PipelineStats,
}

impl Mirror {
    pub fn new(start: Arc<SessionStart>) -> Self {
        Self {
            manifests: Manifests::new(start.playlist_options(), start.availability_start_ms),
            start,
            config: None,
            audio: None,
            stats: PipelineStats::default(),
        }
    }

    /// Takes one of the origin's items; appends the events it stands for.
    /// `now_ms`: wall clock (DASH `publishTime` of the update).
    pub fn apply(&mut self, item: ReplicaItem, now_ms: u64, out: &mut Vec<Event>) {
        match item {
            ReplicaItem::Start(_) => {}
            ReplicaItem::Config(c) => {
                self.config = Some(c.clone());
                out.push(Event::Config(c));
            }
            ReplicaItem::Frame(f) => {
                self.stats.frames += 1;
                out.push(Event::Frame(f));
            }
            ReplicaItem::AudioConfig(c) => {
                if self.audio.as_deref() != Some(c.as_ref()) {
                    self.audio = Some(c.clone());
                    out.push(Event::AudioConfig(c));
                }
            }
            ReplicaItem::AudioFrame(f) => out.push(Event::AudioFrame(f)),
            ReplicaItem::Part(mut p) => {
                if self.audio.is_none() && p.audio.is_some() {
                    Arc::make_mut(&mut p).audio = None;
                }
                self.manifests.push_part(&p);
                out.push(Event::Part(p));
            }
            ReplicaItem::Segment(seg) => {
                let record = seg.record.clone();
                self.stats.segments = record.sequence.saturating_add(1);
                // The first segment of a replica that joined mid-stream
                // goes where the origin has it (its DASH period).
                if let Some(place) = seg.place {
                    self.manifests.continue_from(place);
                }
                // A replica that joined after the audio format was last sent
                // lists video only until it has it.
                let mut record = record;
                if self.audio.is_none() {
                    record.audio = None;
                }
                let manifest = self.manifests.push_av(
                    record.clone(),
                    seg.config.as_deref(),
                    self.audio.as_deref(),
                    now_ms,
                );
                out.push(Event::Segment(Arc::new(SegmentEvent { record, manifest })));
            }
            ReplicaItem::Discontinuity => self.manifests.mark_discontinuity(),
            ReplicaItem::PublisherAway => self.manifests.publisher_away(),
            // The session's muxer takes it (see `Session::apply_replica`).
            ReplicaItem::TsContinuity { .. } => {}
            ReplicaItem::End => self.finish(now_ms, out),
        }
    }

    /// The manifests become final (idempotent).
    pub fn finish(&mut self, now_ms: u64, out: &mut Vec<Event>) {
        if !self.manifests.is_ended() {
            out.push(Event::Ended(Arc::new(self.manifests.end(now_ms))));
        }
    }

    pub fn manifests(&self) -> &Manifests {
        &self.manifests
    }

    pub fn config(&self) -> Option<&Arc<CodecConfig>> {
        self.config.as_ref()
    }

    /// The audio format, once the origin's was received.
    pub fn audio_config(&self) -> Option<&Arc<AudioConfig>> {
        self.audio.as_ref()
    }

    pub fn start(&self) -> &SessionStart {
        &self.start
    }

    /// Frames and segments received (the segment count is the next
    /// segment's number, as the origin counts).
    pub fn stats(&self) -> PipelineStats {
        self.stats
    }
}

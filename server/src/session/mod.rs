//! Sessions: one engine pipeline per `session_id`, its ring buffer of recent
//! frames and segments, and the fan-out to subscribers.
//!
//! The publisher's task drives the pipeline under the session lock and
//! appends every event to the session's item [`log`] while still holding
//! it, so a subscriber that joins (also under the lock) gets a snapshot and
//! a cursor with nothing missing and nothing twice. A subscriber is a cursor
//! into the log plus a wake-up (a `watch` of the log's end): the publisher
//! never waits for a subscriber, a slow subscriber reads every item the
//! window still holds, and one that eviction passes resumes at the newest
//! random access point (see [`subscriber`]).
//!
//! Parts are muxed once, as they close, by the task that pushed the bytes
//! that closed them, with no lock held: a push takes the session lock to
//! run the engine and take the parts' frames (`Arc` clones), lets go of it
//! to mux, and takes it again to store the bytes and release the log items
//! that came after the first closed part (so a subscriber never sees a
//! segment whose bytes are not stored yet). Writers (push, reconnect, end)
//! are serialized by a gate that, of the readers, only a joining subscriber
//! takes (so its snapshot and its cursor agree).

pub mod log;
pub mod parts;
pub mod registry;
pub mod renditions;
pub mod replica;
pub mod ring;
pub mod subscriber;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

use crate::engine::mux::parts::{MuxedPart, PartMuxer};
use crate::engine::pipeline::{AudioInput, DropReport, EngineError, Event, SegmentEvent, Tracks};
use crate::engine::playlist::{HlsFlavour, ManifestState, ManifestUpdate, Manifests};
use crate::engine::{
    AudioConfig, AudioFrame, CodecConfig, Frame, PartRecord, PipelineOptions, SessionPipeline,
};
pub use parts::{Format, MuxError};
use replica::{Mirror, ReplicaItem, ReplicaTx, SessionStart};
use ring::Ring;

pub use registry::{Registry, RegistryError, SessionDefaults};

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    EndOfStream,
    PublisherGone,
    ServerShutdown,
    Error,
}

/// The last word on a session.
#[derive(Clone, Debug)]
pub struct SessionEnd {
    pub reason: EndReason,
    pub frames: u64,
    pub segments: u64,
    pub detail: String,
    /// When it ended (Unix ms): lingering sessions are evicted oldest first.
    pub ended_at_ms: u64,
}

/// What the session broadcasts to its subscribers.
#[derive(Clone, Debug)]
pub enum SessionItem {
    Frame(Arc<Frame>),
    Config(Arc<CodecConfig>),
    /// An audio frame of the session's audio track.
    AudioFrame(Arc<AudioFrame>),
    /// The session's audio format (once, when its audio starts).
    AudioConfig(Arc<AudioConfig>),
    /// A part closed; its bytes are stored (it is logged only then).
    Part(Arc<PartRecord>),
    Segment(Arc<SegmentEvent>),
    Dropped(Arc<DropReport>),
    /// The manifests became final.
    Final(Arc<ManifestUpdate>),
    Ended(Arc<SessionEnd>),
}

/// Per-session options chosen by the publisher's first message.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub pipeline: PipelineOptions,
    pub echo_frames: bool,
}

/// What a joining subscriber starts from.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub config: Option<Arc<CodecConfig>>,
    /// The audio track's format, once the session has audio.
    pub audio: Option<Arc<AudioConfig>>,
    /// The session has audio and no video.
    pub audio_only: bool,
    /// The HLS audio media playlist (empty without audio).
    pub hls_audio: ManifestState,
    pub frame_rate: Option<(u32, u32)>,
    pub hls_cmaf: ManifestState,
    pub hls_ts: ManifestState,
    pub dash: ManifestState,
    pub media_sequence: u64,
    pub availability_start_ms: u64,
    pub segment_target_ms: u32,
    /// The part target in effect, ms.
    pub part_target_ms: u32,
    pub window: u32,
    /// Index of the frame a joining subscriber starts at (the newest random
    /// access point), when it starts with frames.
    pub start_frame: Option<u64>,
    pub ended: Option<Arc<SessionEnd>>,
    /// Why the stream's own timing was overruled, if it was.
    pub timing_note: Option<String>,
    /// The session's renditions, when it has several (filled by the
    /// edges that have the registry).
    pub renditions: Vec<renditions::RenditionView>,
}

/// Who publishes into the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Publisher {
    Active(u64),
    /// Vanished; may come back within the grace period.
    Gone(u64),
    None,
}

/// What makes a session's events: the engine, from a publisher's bytes (an
/// origin), or a [`Mirror`] of the origin's, from its replicated items (an
/// edge).
enum Source {
    Engine(Box<SessionPipeline>),
    Mirror(Box<Mirror>),
}

impl Source {
    fn manifests(&self) -> Option<&Manifests> {
        match self {
            Source::Engine(p) => p.manifests(),
            Source::Mirror(m) => Some(m.manifests()),
        }
    }

    fn config(&self) -> Option<&Arc<CodecConfig>> {
        match self {
            Source::Engine(p) => p.config(),
            Source::Mirror(m) => m.config(),
        }
    }

    fn frame_rate(&self) -> Option<(u32, u32)> {
        match self {
            Source::Engine(p) => p.frame_rate().map(|r| (r.num, r.den)),
            // An audio-only session's start has no frame rate (0/1).
            Source::Mirror(m) => Some(m.start().frame_rate).filter(|r| r.0 > 0),
        }
    }

    /// The audio format (a mirror's: the origin's, once received).
    fn audio_config(&self) -> Option<&Arc<AudioConfig>> {
        match self {
            Source::Engine(p) => p.audio_config(),
            Source::Mirror(m) => m.audio_config(),
        }
    }

    fn tracks(&self) -> Tracks {
        match self {
            Source::Engine(p) => p.tracks(),
            Source::Mirror(m) if m.start().audio_only => Tracks::AudioOnly,
            Source::Mirror(_) => Tracks::Video,
        }
    }

    fn availability_start_ms(&self) -> Option<u64> {
        match self {
            Source::Engine(p) => p.availability_start_ms(),
            Source::Mirror(m) => Some(m.start().availability_start_ms),
        }
    }

    fn timing_note(&self) -> Option<&str> {
        match self {
            Source::Engine(p) => p.timing_note(),
            Source::Mirror(_) => None,
        }
    }

    fn stats(&self) -> crate::engine::pipeline::PipelineStats {
        match self {
            Source::Engine(p) => p.stats(),
            Source::Mirror(m) => m.stats(),
        }
    }

    fn buffered(&self) -> usize {
        match self {
            Source::Engine(p) => p.buffered(),
            Source::Mirror(_) => 0,
        }
    }

    fn finish(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        match self {
            Source::Engine(p) => p.finish(now_ns, out),
            Source::Mirror(m) => m.finish(now_ns / 1_000_000, out),
        }
    }
}

struct SessionState {
    pipeline: Source,
    ring: Ring,
    publisher: Publisher,
    generation: u64,
    /// A mirror: the origin said its publisher is away, and no segment
    /// has closed since.
    replica_away: bool,
    ended: Option<Arc<SessionEnd>>,
    events: Vec<Event>,
    /// Parameter-set generations still referenced, by id (for muxing).
    configs: std::collections::BTreeMap<u32, Arc<CodecConfig>>,
    /// The audio format (for muxing).
    audio_config: Option<Arc<AudioConfig>>,
    /// The playlists' media sequence (first listed segment).
    first_listed: u64,
    log: log::ItemLog,
    /// Muxed parts, init segments, complete segments.
    parts: parts::PartStore,
    /// The MPEG-TS continuity counters, taken out while a push muxes.
    part_muxer: Option<PartMuxer>,
    /// `--record`: hands each complete segment to the server's recorder.
    recorder: Option<crate::record::SessionRecorder>,
    /// The session's start was handed to the replica.
    replica_started: bool,
    /// A mirror's muxer has muxed a part (its TS counters are its own).
    muxed_any: bool,
    /// For a mirror that has not muxed yet, or after a discontinuity: the
    /// origin's TS counters after a part, to continue at the part after it.
    ts_resume: Option<(u64, [u8; 4])>,
    /// A mirror applied a discontinuity: the next TS counters it is sent
    /// are taken (see `apply_replica`).
    ts_restart: bool,
    /// The last segment start told to the rendition group.
    told_start: Option<crate::engine::SegmentStart>,
}

thread_local! {
    /// Session locks this thread holds (for the debug check that nothing is
    /// muxed under one).
    static STATE_LOCKS: Cell<u32> = const { Cell::new(0) };
}

/// The session lock, counted per thread while held.
struct StateGuard<'a>(MutexGuard<'a, SessionState>);

impl std::ops::Deref for StateGuard<'_> {
    type Target = SessionState;
    fn deref(&self) -> &SessionState {
        &self.0
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut SessionState {
        &mut self.0
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        STATE_LOCKS.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// Whether this thread holds a session lock.
fn holds_session_lock() -> bool {
    STATE_LOCKS.with(Cell::get) > 0
}

/// A closed part to mux: its record, video frames and config (`None`
/// without video), audio frames and format (`None` without audio); `Arc`
/// clones.
struct PartToMux {
    record: Arc<PartRecord>,
    frames: Vec<Arc<Frame>>,
    config: Option<Arc<CodecConfig>>,
    audio: Vec<Arc<AudioFrame>>,
    audio_config: Option<Arc<AudioConfig>>,
}

/// What a push leaves to do after the session lock is let go: parts and
/// init segments to mux, then segments to mark complete and log items to
/// release, in order, once the bytes are stored.
#[derive(Default)]
struct MuxWork {
    parts: Vec<PartToMux>,
    inits: Vec<Arc<CodecConfig>>,
    audio_init: Option<Arc<AudioConfig>>,
    segments: Vec<(u64, u32)>,
    deferred: Vec<SessionItem>,
    /// Segments to hand to the recorder once their bytes are stored.
    recorded: Vec<Arc<SegmentEvent>>,
}

impl MuxWork {
    /// Nothing to mux and no segment to mark complete (a mirror session
    /// may be handed a segment's record apart from its last part).
    fn is_empty(&self) -> bool {
        self.parts.is_empty()
            && self.inits.is_empty()
            && self.segments.is_empty()
            && self.audio_init.is_none()
    }
}

/// Muxes a push's closed parts and new init segments. Never called with a
/// session lock held (checked in debug builds).
fn mux_work(
    session_id: &str,
    muxer: &mut PartMuxer,
    work: &MuxWork,
) -> (Vec<MuxedPart>, Vec<(u32, Bytes)>, Option<Bytes>) {
    debug_assert!(!holds_session_lock(), "muxing with the session lock held");
    let mut muxed = Vec::with_capacity(work.parts.len());
    for p in &work.parts {
        let refs: Vec<&Frame> = p.frames.iter().map(|f| f.as_ref()).collect();
        let audio: Vec<&AudioFrame> = p.audio.iter().map(|f| f.as_ref()).collect();
        let audio = p.audio_config.as_deref().map(|c| (audio.as_slice(), c));
        match muxer.mux_av(p.record.clone(), &refs, p.config.as_deref(), audio) {
            Ok(m) => muxed.push(m),
            Err(e) => tracing::error!(session_id, error = %e, "part not muxed"),
        }
    }
    let audio_init = work
        .audio_init
        .as_ref()
        .and_then(|c| match parts::mux_audio_init(c) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(session_id, error = %e, "audio init segment not muxed");
                None
            }
        });
    let mut inits = Vec::with_capacity(work.inits.len());
    for cfg in &work.inits {
        match parts::mux_init(cfg) {
            Ok(b) => inits.push((cfg.id, b)),
            Err(e) => tracing::error!(session_id, error = %e, "init segment not muxed"),
        }
    }
    (muxed, inits, audio_init)
}

/// One live session.
pub struct Session {
    pub id: String,
    pub options: SessionOptions,
    state: Mutex<SessionState>,
    /// Serializes the writers (push, reconnect, end) across a push's three
    /// steps; no reader takes it.
    gate: Mutex<()>,
    /// The next segment whose bytes will be stored (for readers that wait
    /// for a segment the playlists already list).
    segments_stored: watch::Sender<u64>,
    /// The next part whose bytes will be stored (for blocking playlist
    /// reloads and preload-hint requests that wait for a part).
    parts_stored: watch::Sender<u64>,
    /// The item log's end position: wakes subscribers that take frames.
    log_end: watch::Sender<u64>,
    /// Where the log's newest event ends: wakes subscribers that take no
    /// frames (a publisher's own response stream, `no_frames` viewers), so
    /// a frame costs them no wake-up (issue 14: a wake-up is a task poll
    /// and, often, a thread unparked).
    events_end: watch::Sender<u64>,
    /// Items a subscriber may fall behind the newest before it is moved on
    /// (0: as far as the log holds).
    max_lag_items: u64,
    subscribers: AtomicUsize,
    /// Flips to true when the session ends, for tasks that must stop then.
    ended_tx: watch::Sender<bool>,
    /// The HLS playlists last rendered for HTTP, by what they were rendered
    /// from: the many requests a part releases at once share one rendering.
    hls_cache: Mutex<Vec<HlsCached>>,
    /// Where an origin's session replicates what happens (`--cluster`).
    replica: Option<ReplicaTx>,
    /// A mirror session whose replica cannot be read right now (an edge cut
    /// off from the cluster): it is not served, rather than served stale.
    unreadable: AtomicBool,
    /// The session's renditions (see [`renditions`]) and this one's name
    /// in them ("" for the session's own stream); `None` for a mirror.
    group: Option<(Arc<renditions::RenditionGroup>, String)>,
    /// A transcode ladder runs for the session (`--ladder`).
    ladder: AtomicBool,
    /// `liveslice_bytes_in_total` and `liveslice_frames_in_total`, looked up
    /// once: `counter!` hashes its key into the registry on every call, and
    /// these count every push (issue 14).
    bytes_in: ::metrics::Counter,
    frames_in: ::metrics::Counter,
}

/// A rendered HLS playlist and what it was rendered from.
struct HlsCached {
    kind: ManifestKind,
    skip: bool,
    /// (parts stored, segments stored, ended) when it was rendered.
    at: (u64, u64, bool),
    text: Bytes,
}

/// Why a push was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Fatal(EngineError),
    #[error("this stream is no longer the session's publisher")]
    NotPublisher,
    #[error("the session has ended")]
    Ended,
}

pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What a new session is connected to besides its own window: recording,
/// replication, the point another origin left off at, its rendition group.
pub(crate) struct Links {
    pub recorder: Option<crate::record::SessionRecorder>,
    pub replica: Option<ReplicaTx>,
    /// Continue another node's copy of the session from here.
    pub resume: Option<crate::engine::ResumePoint>,
    /// The renditions this session is one of.
    pub group: Option<Arc<renditions::RenditionGroup>>,
}

impl Session {
    #[cfg(test)]
    fn new(
        id: String,
        options: SessionOptions,
        max_lag_items: usize,
        ring_max_bytes: usize,
        recorder: Option<crate::record::SessionRecorder>,
        replica: Option<ReplicaTx>,
    ) -> Self {
        Self::resumed(
            id,
            options,
            max_lag_items,
            ring_max_bytes,
            Links {
                recorder,
                replica,
                resume: None,
                group: None,
            },
        )
    }

    /// [`new`](Self::new), continuing another node's copy of the session
    /// from `resume` when given (a publisher that failed over to this
    /// origin; see [`crate::engine::ResumePoint`]).
    fn resumed(
        id: String,
        mut options: SessionOptions,
        max_lag_items: usize,
        ring_max_bytes: usize,
        links: Links,
    ) -> Self {
        let Links {
            recorder,
            replica,
            resume,
            group,
        } = links;
        // The engine keeps the window within the ring's budget, so the ring
        // evicts only whole segments the playlists no longer list.
        options.pipeline.max_window_bytes = ring_max_bytes;
        let name = crate::ids::rendition_of(&id).unwrap_or("").to_string();
        let joins = group.as_ref().is_some_and(|g| g.enter(&name));
        let pipeline = match (resume, &group) {
            (Some(point), _) => SessionPipeline::resume(options.pipeline.clone(), point),
            (None, Some(g)) if joins => {
                let point = match g.join_point(&name) {
                    renditions::Joining::Follow(p) => Some(p),
                    _ => None,
                };
                SessionPipeline::join(options.pipeline.clone(), point)
            }
            _ => SessionPipeline::new(options.pipeline.clone()),
        };
        let source = Source::Engine(Box::new(pipeline));
        let mut s = Self::with_source(id, options, max_lag_items, source, recorder, replica);
        s.group = group.map(|g| (g, name));
        s
    }

    /// A session filled from a replica of the origin's (see
    /// [`replica::Mirror`]); it takes no publisher.
    fn mirror(id: String, start: Arc<SessionStart>, max_lag_items: usize) -> Self {
        let options = start.session_options();
        let source = Source::Mirror(Box::new(Mirror::new(start)));
        Self::with_source(id, options, max_lag_items, source, None, None)
    }

    fn with_source(
        id: String,
        options: SessionOptions,
        max_lag_items: usize,
        source: Source,
        recorder: Option<crate::record::SessionRecorder>,
        replica: Option<ReplicaTx>,
    ) -> Self {
        Self {
            state: Mutex::new(SessionState {
                pipeline: source,
                ring: Ring::new(),
                publisher: Publisher::None,
                generation: 0,
                replica_away: false,
                ended: None,
                events: Vec::new(),
                configs: Default::default(),
                audio_config: None,
                first_listed: 0,
                log: log::ItemLog::default(),
                parts: parts::PartStore::default(),
                part_muxer: Some(PartMuxer::new(options.pipeline.formats)),
                recorder,
                replica_started: false,
                muxed_any: false,
                ts_resume: None,
                ts_restart: false,
                told_start: None,
            }),
            gate: Mutex::new(()),
            segments_stored: watch::channel(0).0,
            parts_stored: watch::channel(0).0,
            id,
            options,
            log_end: watch::channel(0).0,
            events_end: watch::channel(0).0,
            max_lag_items: max_lag_items as u64,
            subscribers: AtomicUsize::new(0),
            ended_tx: watch::channel(false).0,
            hls_cache: Mutex::new(Vec::with_capacity(4)),
            replica,
            unreadable: AtomicBool::new(false),
            group: None,
            ladder: AtomicBool::new(false),
            bytes_in: ::metrics::counter!(crate::metrics::BYTES_IN),
            frames_in: ::metrics::counter!(crate::metrics::FRAMES_IN),
        }
    }

    /// Whether this session is a mirror of another node's (an edge's).
    pub fn is_mirror(&self) -> bool {
        matches!(self.lock().pipeline, Source::Mirror(_))
    }

    /// Marks a mirror session readable or not (its replica can be read).
    pub fn set_readable(&self, readable: bool) {
        self.unreadable.store(!readable, Ordering::Relaxed);
    }

    /// False while a mirror session's replica cannot be read: its numbering
    /// may be behind the origin's, so it must not be served.
    pub fn is_readable(&self) -> bool {
        !self.unreadable.load(Ordering::Relaxed)
    }

    /// Items its replication queue dropped (full queue), if it replicates.
    pub fn replica_dropped(&self) -> Option<u64> {
        self.replica.as_ref().map(ReplicaTx::dropped)
    }

    /// Feeds a mirror session the origin's items, in order, and fans out
    /// what they stand for (as a push does). Ignored by an engine session.
    pub fn apply_replica(&self, items: Vec<ReplicaItem>) {
        let _gate = self.gate();
        let st = self.lock();
        if st.ended.is_some() {
            return;
        }
        let now_ms = now_unix_ns() / 1_000_000;
        let mut st = st;
        // The origin's TS counters after a part: the next part muxed here
        // continues them. Only the first after the join point (the parts
        // after it are muxed here from then on) and the first after a
        // discontinuity (a new owner after a takeover starts its own).
        st.ts_restart |= items
            .iter()
            .any(|item| matches!(item, ReplicaItem::Discontinuity));
        // A new publisher (a reconnect or a takeover) makes a new
        // generation, as on the origin (`LlState::publisher_generation`: a
        // request held for a segment predicted before it is refused). A
        // reconnect shows here as the segment in progress closing while the
        // publisher is away: counted then, in the same apply, before a
        // request waiting for that segment to close can look.
        let mut new_publisher = false;
        for item in &items {
            match item {
                ReplicaItem::PublisherAway => st.replica_away = true,
                ReplicaItem::Segment(_) | ReplicaItem::Discontinuity if st.replica_away => {
                    st.replica_away = false;
                    new_publisher = true;
                }
                ReplicaItem::Discontinuity => new_publisher = true,
                _ => {}
            }
        }
        if new_publisher {
            st.generation += 1;
        }
        if (!st.muxed_any && st.ts_resume.is_none()) || st.ts_restart {
            let resume = items.iter().find_map(|item| match item {
                ReplicaItem::TsContinuity {
                    after_part,
                    counters,
                } => Some((*after_part, *counters)),
                _ => None,
            });
            if resume.is_some() {
                st.ts_resume = resume;
                st.ts_restart = false;
            }
        }
        let _ = self.run_engine(st, |source, out| {
            if let Source::Mirror(m) = source {
                for item in items {
                    m.apply(item, now_ms, out);
                }
            }
        });
    }

    /// Resolves once the session has ended.
    pub async fn wait_ended(&self) {
        let mut rx = self.ended_tx.subscribe();
        let _ = rx.wait_for(|ended| *ended).await;
    }

    fn lock(&self) -> StateGuard<'_> {
        // A panic while holding the lock would be a bug; the state is still
        // consistent enough to end the session, so poisoning is ignored.
        let g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        STATE_LOCKS.with(|c| c.set(c.get() + 1));
        StateGuard(g)
    }

    fn gate(&self) -> MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_ended(&self) -> bool {
        self.lock().ended.is_some()
    }

    /// Whether a publisher is attached right now.
    pub fn has_publisher(&self) -> bool {
        matches!(self.lock().publisher, Publisher::Active(_))
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Items the session's log holds: the furthest a subscriber's cursor can
    /// be behind the live edge before eviction passes it (it is then told
    /// `Lagged` and resumes at the newest random access point). What a
    /// subscriber that never reads can cost, whatever the publisher pushes.
    pub fn held_items(&self) -> usize {
        self.lock().log.len()
    }

    /// Bytes the session holds (ring and incomplete units), for limits and
    /// metrics.
    pub fn buffered_bytes(&self) -> usize {
        let st = self.lock();
        st.ring.bytes() + st.pipeline.buffered()
    }

    /// Bytes of media the session holds: its ring, incomplete units and
    /// muxed segments (what the server-wide `--memory-limit` counts).
    pub fn memory_bytes(&self) -> usize {
        let st = self.lock();
        st.ring.bytes() + st.pipeline.buffered() + st.parts.bytes()
    }

    /// Why the session ended, if it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.lock().ended.as_ref().map(|e| e.reason)
    }

    /// When the session ended (Unix ms), if it has.
    pub fn ended_at_ms(&self) -> Option<u64> {
        self.lock().ended.as_ref().map(|e| e.ended_at_ms)
    }

    /// Frames accepted so far.
    pub fn frames(&self) -> u64 {
        self.lock().pipeline.stats().frames
    }

    /// The engine's counters so far (read-only; the web console's JSON).
    pub fn stats(&self) -> crate::engine::pipeline::PipelineStats {
        self.lock().pipeline.stats()
    }

    /// The records of the segments the ring holds, oldest first (read-only;
    /// the web console's JSON).
    pub fn segment_records(&self) -> Vec<crate::engine::SegmentRecord> {
        self.lock()
            .ring
            .segments()
            .map(|s| s.record.clone())
            .collect()
    }

    /// Attaches a publisher: a fresh one, or one continuing after the
    /// previous vanished (then `Ok(true)`).
    fn attach_publisher(&self) -> Result<(u64, bool), RegistryError> {
        let _gate = self.gate();
        let mut st = self.lock();
        if st.ended.is_some() {
            return Err(RegistryError::Ended);
        }
        let resumed = match st.publisher {
            Publisher::Active(_) => return Err(RegistryError::AlreadyPublishing),
            Publisher::Gone(_) => {
                let (again, _) = self.run_engine(st, |s, out| {
                    if let Source::Engine(p) = s {
                        p.reconnect(now_unix_ns(), out);
                    }
                });
                st = again;
                true
            }
            Publisher::None => false,
        };
        st.generation += 1;
        let gen = st.generation;
        st.publisher = Publisher::Active(gen);
        Ok((gen, resumed))
    }

    /// Feeds publisher bytes and fans out what the engine made of them.
    pub fn push(
        &self,
        generation: u64,
        data: Bytes,
        capture_ns: Option<u64>,
        end_of_access_unit: bool,
    ) -> Result<(), PushError> {
        self.push_placed(generation, data, capture_ns, None, end_of_access_unit)
    }

    /// [`push`](Self::push) for a rendition made from another one (the
    /// transcode ladder): while it joins its renditions' timeline without
    /// a capture time, the bytes are placed as if they arrived at
    /// `source_arrival_ns` (Unix ns: when the picture they encode is on the
    /// source's timeline), not when the transcoder delivered them.
    pub fn push_placed(
        &self,
        generation: u64,
        data: Bytes,
        capture_ns: Option<u64>,
        source_arrival_ns: Option<u64>,
        end_of_access_unit: bool,
    ) -> Result<(), PushError> {
        let _gate = self.gate();
        let st = self.lock();
        if st.ended.is_some() {
            return Err(PushError::Ended);
        }
        if st.publisher != Publisher::Active(generation) {
            return Err(PushError::NotPublisher);
        }
        self.bytes_in.increment(data.len() as u64);
        let group = self.group.as_ref();
        let (mut st, fatal) = self.run_engine(st, |s, out| {
            if let Source::Engine(p) = s {
                if let (true, Some((g, name))) = (p.is_joining(), group) {
                    match g.join_point(name) {
                        renditions::Joining::Follow(point) => p.update_join(point),
                        renditions::Joining::Wait => {}
                        renditions::Joining::Alone => p.stop_joining(),
                    }
                }
                let now = match source_arrival_ns {
                    Some(t) if p.is_joining() => t,
                    _ => now_unix_ns(),
                };
                p.push(data, capture_ns, now, end_of_access_unit, out);
            }
        });
        self.tell_group(&mut st);
        match fatal {
            Some(e) => Err(PushError::Fatal(e)),
            None => Ok(()),
        }
    }

    /// Tells the rendition group where a new segment started (once per
    /// segment), and reports what it found misaligned.
    fn tell_group(&self, st: &mut SessionState) {
        let (Some((g, name)), Source::Engine(p)) = (&self.group, &st.pipeline) else {
            return;
        };
        let Some(start) = p.open_segment_start() else {
            return;
        };
        if st.told_start == Some(start) {
            return;
        }
        st.told_start = Some(start);
        let anchor = p.join_point(Vec::new());
        if let Some(m) = g.segment_started(name, start, anchor) {
            ::metrics::counter!(crate::metrics::RENDITION_MISALIGNED).increment(1);
            tracing::warn!(
                session_id = %g.session,
                rendition = %m.rendition,
                segment = m.sequence,
                start_90k = m.start,
                leader_start_90k = m.leader_start,
                "rendition misaligned: its segment starts elsewhere than the first rendition's \
                 (keyframes at other times); left out of the multivariant playlist and the MPD"
            );
        }
    }

    /// Claims the session's transcode ladder: true the first time (a
    /// publisher back within its grace period finds it running).
    pub fn claim_ladder(&self) -> bool {
        !self.ladder.swap(true, Ordering::Relaxed)
    }

    /// The session's rendition group and this session's name in it.
    pub fn rendition_group(&self) -> Option<(&Arc<renditions::RenditionGroup>, &str)> {
        self.group.as_ref().map(|(g, n)| (g, n.as_str()))
    }

    /// Feeds publisher audio (ADTS bytes, or one raw AAC frame: see
    /// [`AudioInput`]) and fans out what the engine made of it.
    pub fn push_audio(
        &self,
        generation: u64,
        data: Bytes,
        input: AudioInput,
        capture_ns: Option<u64>,
    ) -> Result<(), PushError> {
        let _gate = self.gate();
        let st = self.lock();
        if st.ended.is_some() {
            return Err(PushError::Ended);
        }
        if st.publisher != Publisher::Active(generation) {
            return Err(PushError::NotPublisher);
        }
        self.bytes_in.increment(data.len() as u64);
        let (_, fatal) = self.run_engine(st, |s, out| {
            if let Source::Engine(p) = s {
                p.push_audio(data, input, capture_ns, now_unix_ns(), out);
            }
        });
        match fatal {
            Some(e) => Err(PushError::Fatal(e)),
            None => Ok(()),
        }
    }

    /// Ends the session: flushes the last frames into a final segment,
    /// closes the manifests and tells every subscriber. Returns false if it
    /// had already ended.
    pub fn end(&self, reason: EndReason, detail: String) -> bool {
        let _gate = self.gate();
        let st = self.lock();
        if st.ended.is_some() {
            return false;
        }
        let (mut st, _) = self.run_engine(st, |s, out| s.finish(now_unix_ns(), out));
        let stats = st.pipeline.stats();
        let end = Arc::new(SessionEnd {
            reason,
            frames: stats.frames,
            segments: stats.segments,
            detail,
            ended_at_ms: now_unix_ns() / 1_000_000,
        });
        st.ended = Some(end.clone());
        st.publisher = Publisher::None;
        if let Some(r) = st.recorder.as_mut() {
            r.end();
        }
        st.log.push(SessionItem::Ended(end));
        self.wake_subscribers(&st.log);
        self.ended_tx.send_replace(true);
        if let Some((g, name)) = &self.group {
            g.leave(name);
        }
        tracing::info!(session_id = %self.id, ?reason, frames = stats.frames, segments = stats.segments, "session ended");
        true
    }

    /// The publisher's stream broke. Returns true if it was the current
    /// publisher (so a grace timer should start).
    pub fn publisher_vanished(&self, generation: u64) -> bool {
        let mut st = self.lock();
        if st.ended.is_none() && st.publisher == Publisher::Active(generation) {
            st.publisher = Publisher::Gone(generation);
            if let Source::Engine(p) = &mut st.pipeline {
                p.publisher_away();
            }
            // Edges stop predicting too (and take the reconnect's
            // discontinuity as a new publisher: see `apply_replica`).
            if let (Some(r), true) = (&self.replica, st.replica_started) {
                r.send(ReplicaItem::PublisherAway);
            }
            true
        } else {
            false
        }
    }

    /// The grace period after `generation` vanished is over: end the session
    /// unless a publisher came back.
    pub fn grace_expired(&self, generation: u64) -> bool {
        let gone = self.lock().publisher == Publisher::Gone(generation);
        gone && self.end(
            EndReason::PublisherGone,
            "the publisher disconnected and did not come back within the grace period".into(),
        )
    }

    /// Joins as a subscriber: the snapshot to start from and a cursor for
    /// everything after it. `with_frames`: the cursor starts at the newest
    /// random access point the log holds (a late joiner sees video at
    /// once); otherwise at the end (events from now on).
    pub fn join(self: &Arc<Self>, with_frames: bool) -> (Snapshot, Subscription, SubscriberGuard) {
        self.join_from(with_frames, false)
    }

    /// [`join`](Self::join); with `oldest`, the frames start at the oldest
    /// random access point the session still holds instead of the newest
    /// (a subscriber that waited for the session to start gets it from its
    /// first frame, however many frames came before it ran). Audio-only
    /// sessions start at the newest segment either way.
    pub fn join_from(
        self: &Arc<Self>,
        with_frames: bool,
        oldest: bool,
    ) -> (Snapshot, Subscription, SubscriberGuard) {
        self.join_inner(with_frames, oldest, with_frames)
    }

    /// Joins at the log's end (events from now on, no replay of the
    /// window), as a publisher hears its own session: woken by frames only
    /// when `frames` (it echoes them), otherwise by events alone.
    pub fn join_live(self: &Arc<Self>, frames: bool) -> (Snapshot, Subscription, SubscriberGuard) {
        self.join_inner(false, false, frames)
    }

    fn join_inner(
        self: &Arc<Self>,
        with_frames: bool,
        oldest: bool,
        wake_on_frames: bool,
    ) -> (Snapshot, Subscription, SubscriberGuard) {
        // Not in the middle of a push: its manifests (in the snapshot) and
        // the log items it holds back until its parts are stored (after the
        // cursor) must not both show the same segment.
        let _gate = self.gate();
        let st = self.lock();
        let mut snapshot = self.snapshot(&st);
        let end = st.log.end();
        let start = if with_frames {
            oldest
                .then(|| st.log.oldest_random_access())
                .flatten()
                .or_else(|| st.log.newest_random_access())
                .unwrap_or(end)
        } else {
            end
        };
        snapshot.start_frame = with_frames
            .then(|| st.log.frame_index_at_or_after(start))
            .flatten();
        let wake = if wake_on_frames {
            self.log_end.subscribe()
        } else {
            self.events_end.subscribe()
        };
        drop(st);
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        (
            snapshot,
            Subscription {
                cursor: log::Cursor {
                    pos: start,
                    events_from: end,
                },
                wake,
                frames: wake_on_frames,
            },
            SubscriberGuard {
                session: self.clone(),
            },
        )
    }

    /// Reads up to `max` items at `sub`'s cursor into `out` (see
    /// [`log::ItemLog::read`]). Clones `Arc`s only: no media is copied.
    pub fn read(
        &self,
        sub: &mut Subscription,
        out: &mut Vec<SessionItem>,
        max: usize,
    ) -> log::Read {
        // Seen before reading: an append after this read wakes the next wait.
        sub.wake.borrow_and_update();
        let st = self.lock();
        // One that takes no frames reads in bursts, an event's worth of
        // frames behind: only frames make a reader lag.
        let max_behind = if sub.frames { self.max_lag_items } else { 0 };
        st.log
            .read(&mut sub.cursor, out, max, max_behind, sub.frames)
    }

    /// Wakes the subscribers that have something new to read: those that
    /// take frames when the log grew, the others when an event was
    /// appended. Nobody is woken by a push that appended nothing.
    fn wake_subscribers(&self, log: &log::ItemLog) {
        let bump = |tx: &watch::Sender<u64>, to: u64| {
            tx.send_if_modified(|v| {
                let grew = *v != to;
                *v = to;
                grew
            });
        };
        bump(&self.log_end, log.end());
        bump(&self.events_end, log.events_end());
    }

    /// The session's current description and manifests (no frames).
    pub fn info(&self) -> Snapshot {
        let st = self.lock();
        self.snapshot(&st)
    }

    fn snapshot(&self, st: &SessionState) -> Snapshot {
        let now_ms = now_unix_ns() / 1_000_000;
        let (hls_cmaf, hls_ts, dash, media_sequence, hls_audio) = match st.pipeline.manifests() {
            Some(m) => (
                m.hls_cmaf(),
                m.hls_ts(),
                m.dash(now_ms),
                m.media_sequence(),
                m.hls_audio(),
            ),
            None => Default::default(),
        };
        Snapshot {
            config: st.pipeline.config().cloned(),
            audio: st.pipeline.audio_config().cloned(),
            audio_only: st.pipeline.tracks() == Tracks::AudioOnly,
            hls_audio,
            frame_rate: st.pipeline.frame_rate(),
            hls_cmaf,
            hls_ts,
            dash,
            media_sequence,
            availability_start_ms: st.pipeline.availability_start_ms().unwrap_or(0),
            segment_target_ms: self.options.pipeline.segment_target_ms,
            part_target_ms: self.options.pipeline.effective_part_target_ms(),
            window: self.options.pipeline.window as u32,
            start_frame: None,
            ended: st.ended.clone(),
            timing_note: st.pipeline.timing_note().map(str::to_owned),
            renditions: Vec::new(),
        }
    }

    /// Runs the engine (`f`) under the session lock `st`, then muxes the
    /// parts it closed with no lock held, then stores them and releases the
    /// log items held back for them. Returns the lock (taken again) and a
    /// fatal error if the engine reported one. Call with the gate held.
    fn run_engine<'a>(
        &'a self,
        mut st: StateGuard<'a>,
        f: impl FnOnce(&mut Source, &mut Vec<Event>),
    ) -> (StateGuard<'a>, Option<EngineError>) {
        let mut events = std::mem::take(&mut st.events);
        f(&mut st.pipeline, &mut events);
        let mut work = MuxWork::default();
        let fatal = self.distribute(&mut st, &mut events, &mut work);
        st.events = events;
        if work.is_empty() {
            self.wake_subscribers(&st.log);
            return (st, fatal);
        }
        let mut muxer = st
            .part_muxer
            .take()
            .unwrap_or_else(|| PartMuxer::new(self.options.pipeline.formats));
        // A mirror continues the origin's TS counters from the part before
        // the next it muxes (when it joined mid-stream, and after a
        // takeover: elsewhere they are its own already).
        if let Some(first) = work.parts.first().map(|p| &p.record) {
            if let Some((after, counters)) = st.ts_resume.take() {
                if after.checked_add(1) == Some(first.number) {
                    muxer.set_ts_continuity(counters);
                }
            }
        }
        drop(st);
        let (muxed, inits, audio_init) = mux_work(&self.id, &mut muxer, &work);
        let next_part = muxed.last().map(|p| p.record.number.saturating_add(1));
        // The counters after a segment's last part, for replicas that start
        // at the next segment.
        let continuity = muxed.last().and_then(|p| {
            let ends_segment = work
                .segments
                .iter()
                .any(|(seq, _)| *seq == p.record.segment);
            ends_segment.then(|| ReplicaItem::TsContinuity {
                after_part: p.record.number,
                counters: muxer.ts_continuity(),
            })
        });
        let mut st = self.lock();
        st.muxed_any |= !muxed.is_empty();
        st.part_muxer = Some(muxer);
        if let (Some(r), Some(item)) = (&self.replica, continuity) {
            r.send(item);
        }
        for (id, b) in inits {
            st.parts.store_init(id, b);
        }
        if let Some(b) = audio_init {
            st.parts.store_audio_init(b);
        }
        for p in muxed {
            st.parts.store_part(p);
        }
        for (seq, config_id) in work.segments {
            st.parts.store_segment(seq, config_id);
        }
        if !work.recorded.is_empty() {
            self.record(&mut st, &work.recorded);
        }
        // Removed segments stay a window longer (RFC 8216 6.2.2). With a
        // DVR window, segments that left the ring are served from the
        // recording.
        let keep_from = if self.memory().is_some() {
            st.ring.first_segment().unwrap_or(0)
        } else {
            st.first_listed
                .saturating_sub(self.options.pipeline.window as u64)
        };
        st.parts.evict_before(keep_from);
        for item in work.deferred {
            st.log.push(item);
        }
        self.segments_stored.send_replace(st.parts.next_segment());
        if let Some(n) = next_part {
            self.parts_stored.send_replace(n);
        }
        self.wake_subscribers(&st.log);
        (st, fatal)
    }

    /// With a DVR window (`--dvr`), what memory keeps: the newest `window`
    /// segments within the window's byte budget.
    fn memory(&self) -> Option<ring::Memory> {
        let p = &self.options.pipeline;
        (p.dvr_window_ms > 0).then(|| ring::Memory {
            segments: p.window.max(1),
            bytes: p.window_bytes_limit() as u64,
        })
    }

    /// Whether segment `sequence` is listed in the playlists now (with a
    /// DVR window, maybe no longer in memory).
    pub fn lists_segment(&self, sequence: u64) -> bool {
        let st = self.lock();
        st.pipeline
            .manifests()
            .is_some_and(|m| m.segments().any(|r| r.sequence == sequence))
    }

    /// Hands complete segments (stored) to the recorder: their pieces
    /// (shared `Bytes`) and records. Never waits (a channel send each).
    fn record(&self, st: &mut SessionState, segments: &[Arc<SegmentEvent>]) {
        let f = self.options.pipeline.formats;
        let (Some(recorder), Some(live)) = (st.recorder.as_mut(), st.pipeline.manifests()) else {
            return;
        };
        for s in segments {
            let rec = &s.record;
            let cmaf = f
                .cmaf
                .then(|| st.parts.segment(rec.sequence, Format::Cmaf).ok())
                .flatten();
            let ts =
                f.ts.then(|| st.parts.segment(rec.sequence, Format::Ts).ok())
                    .flatten();
            let init = st.parts.init(rec.config_id);
            // The CMAF audio track (its own init and segment objects).
            let audio = match (st.pipeline.audio_config(), &rec.audio, f.cmaf) {
                (Some(cfg), Some(_), true) => Some(crate::record::AudioPieces {
                    config: cfg.as_ref().clone(),
                    init: st.parts.audio_init(),
                    segment: st.parts.segment(rec.sequence, Format::AudioCmaf).ok(),
                }),
                _ => None,
            };
            recorder.segment(live, rec, f, init, cmaf, ts, audio);
        }
    }

    /// Moves engine events into the ring and the log, and collects what is
    /// to be muxed: once a part closed, the items after it wait in `work`
    /// until its bytes are stored. Returns a fatal error if the engine
    /// reported one.
    fn distribute(
        &self,
        st: &mut SessionState,
        events: &mut Vec<Event>,
        work: &mut MuxWork,
    ) -> Option<EngineError> {
        let mut fatal = None;
        let mut frames = 0u64;
        let mut segments = false;
        for e in events.drain(..) {
            if self.replica.is_some() {
                self.replicate(st, &e);
            }
            let item = match e {
                Event::Frame(f) => {
                    frames += 1;
                    st.ring.push_frame(f.clone());
                    SessionItem::Frame(f)
                }
                Event::Segment(s) => {
                    segments = true;
                    work.segments.push((s.record.sequence, s.record.config_id));
                    if st.recorder.is_some() {
                        work.recorded.push(s.clone());
                    }
                    st.ring.push_segment(s.clone(), self.memory());
                    st.first_listed = s.manifest.media_sequence;
                    crate::metrics::segment(s.record.duration);
                    tracing::debug!(session_id = %self.id, sequence = s.record.sequence,
                        frames = s.record.frame_count, duration = s.record.duration, "segment");
                    SessionItem::Segment(s)
                }
                Event::Config(c) => {
                    st.configs.insert(c.id, c.clone());
                    while st.configs.len() > parts::MAX_CONFIGS {
                        st.configs.pop_first();
                    }
                    work.inits.push(c.clone());
                    SessionItem::Config(c)
                }
                Event::Dropped(d) => {
                    crate::metrics::dropped(d.reason, d.count as u64);
                    tracing::debug!(session_id = %self.id, reason = d.reason.as_str(), count = d.count, detail = %d.detail, "frames dropped");
                    SessionItem::Dropped(Arc::new(d))
                }
                Event::Ended(u) => SessionItem::Final(u),
                Event::Part(p) => {
                    let frames = st.ring.frames_from(p.first_frame_index, p.frame_count);
                    let config = st.configs.get(&p.config_id).cloned();
                    let audio = match &p.audio {
                        Some(a) => st.ring.audio_from(a.first_frame_index, a.frame_count),
                        None => Some(Vec::new()),
                    };
                    let audio_config = st.audio_config.clone().filter(|_| p.audio.is_some());
                    match (frames, audio) {
                        (Some(frames), Some(audio)) if config.is_some() || frames.is_empty() => {
                            work.parts.push(PartToMux {
                                record: p.clone(),
                                frames,
                                config,
                                audio,
                                audio_config,
                            });
                            work.deferred.push(SessionItem::Part(p));
                        }
                        _ => tracing::error!(session_id = %self.id, part = p.number,
                            "a closed part's frames or parameter sets are not held"),
                    }
                    continue;
                }
                Event::AudioFrame(f) => {
                    st.ring.push_audio(f.clone());
                    SessionItem::AudioFrame(f)
                }
                Event::AudioConfig(c) => {
                    st.audio_config = Some(c.clone());
                    work.audio_init = Some(c.clone());
                    SessionItem::AudioConfig(c)
                }
                Event::Fatal(e) => {
                    fatal = Some(e);
                    continue;
                }
                // The manifests have marked it (replicated above).
                Event::Discontinuity => continue,
            };
            if work.parts.is_empty() {
                st.log.push(item);
            } else {
                work.deferred.push(item);
            }
        }
        if segments {
            // The log lets go of what the ring let go of.
            let (video, audio) = (st.ring.first_frame_index(), st.ring.first_audio_index());
            if video.is_some() || audio.is_some() {
                st.log.evict_before(video, audio);
            }
        }
        if frames > 0 {
            self.frames_in.increment(frames);
        }
        fatal
    }
}

impl Session {
    /// Hands an engine event to the replica (an origin's session in a
    /// cluster): the start first, at the first parameter sets.
    fn replicate(&self, st: &mut SessionState, e: &Event) {
        let Some(r) = &self.replica else {
            return;
        };
        let item = match e {
            Event::Frame(f) => ReplicaItem::Frame(f.clone()),
            Event::Config(c) => {
                if !st.replica_started {
                    if let Some(m) = st.pipeline.manifests() {
                        let rate = st
                            .pipeline
                            .frame_rate()
                            .unwrap_or((c.frame_rate_num, c.frame_rate_den));
                        let start = SessionStart::of(m, self.options.pipeline.formats, rate);
                        r.send(ReplicaItem::Start(Arc::new(start)));
                        st.replica_started = true;
                    }
                }
                ReplicaItem::Config(c.clone())
            }
            Event::Part(p) => ReplicaItem::Part(p.clone()),
            Event::Segment(s) => {
                // The config its manifest entry was made with: the one its
                // frames use, at the rate the timestamps are on (none for
                // an audio-only segment).
                let cfg = if s.record.is_audio_only() {
                    None
                } else {
                    let Some(cfg) = st.configs.get(&s.record.config_id).or(st.pipeline.config())
                    else {
                        return;
                    };
                    Some(match st.pipeline.frame_rate() {
                        Some(rate) if rate != (cfg.frame_rate_num, cfg.frame_rate_den) => {
                            let mut c = CodecConfig::clone(cfg);
                            (c.frame_rate_num, c.frame_rate_den) = rate;
                            Arc::new(c)
                        }
                        _ => cfg.clone(),
                    })
                };
                ReplicaItem::Segment(Arc::new(replica::ReplicaSegment {
                    record: s.record.clone(),
                    config: cfg,
                    place: st
                        .pipeline
                        .manifests()
                        .and_then(|m| m.place_of(s.record.sequence)),
                }))
            }
            Event::Ended(_) => ReplicaItem::End,
            Event::AudioFrame(f) => ReplicaItem::AudioFrame(f.clone()),
            Event::AudioConfig(c) => ReplicaItem::AudioConfig(c.clone()),
            // At the point of the stream where the origin's manifests
            // mark it: after the old publisher's last segment, before the
            // new one's first frame.
            Event::Discontinuity => ReplicaItem::Discontinuity,
            Event::Dropped(_) | Event::Fatal(_) => return,
        };
        // An audio-only session's start: at its first audio item once its
        // manifests exist (a session with video starts at its first
        // parameter sets, above).
        if !st.replica_started
            && matches!(
                item,
                ReplicaItem::AudioConfig(_) | ReplicaItem::AudioFrame(_)
            )
            && st.pipeline.tracks() == Tracks::AudioOnly
        {
            if let Some(m) = st.pipeline.manifests() {
                let rate = st.pipeline.frame_rate().unwrap_or((0, 1));
                let mut start = SessionStart::of(m, self.options.pipeline.formats, rate);
                start.audio_only = true;
                r.send(ReplicaItem::Start(Arc::new(start)));
                st.replica_started = true;
            }
        }
        r.send(item);
    }
}

/// Which rendering of the manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    HlsCmaf,
    HlsTs,
    Dash,
    /// The HLS audio media playlist (CMAF audio track).
    HlsAudio,
    /// The HLS multivariant playlist, CMAF (`ts` false) or MPEG-TS.
    HlsMultivariant {
        ts: bool,
    },
}

impl Session {
    /// The manifest as of now, as the HTTP origin serves it (HLS: the
    /// low-latency rendering, with `skip` a delta update); `None` before the
    /// first segment (a playlist must list at least one segment, an MPD one
    /// period).
    pub fn manifest(&self, kind: ManifestKind) -> Option<String> {
        self.manifest_with(kind, false)
    }

    /// [`manifest`](Self::manifest), with `skip`: an HLS delta update.
    pub fn manifest_with(&self, kind: ManifestKind, skip: bool) -> Option<String> {
        let st = self.lock();
        let m = st.pipeline.manifests()?;
        m.segments().next()?;
        let audio_only = st.pipeline.tracks() == Tracks::AudioOnly;
        Some(match kind {
            // An audio-only session's index.m3u8 is its audio playlist.
            ManifestKind::HlsCmaf if audio_only => m.hls_ll(HlsFlavour::Audio, skip),
            ManifestKind::HlsCmaf => m.hls_ll(HlsFlavour::Cmaf, skip),
            ManifestKind::HlsTs => m.hls_ll(HlsFlavour::Ts, skip),
            ManifestKind::Dash => m.dash_ll(now_unix_ns() / 1_000_000),
            ManifestKind::HlsAudio if m.has_audio() => m.hls_ll(HlsFlavour::Audio, skip),
            ManifestKind::HlsAudio => return None,
            ManifestKind::HlsMultivariant { ts } => m.hls_multivariant(ts)?,
        })
    }

    /// A copy of the session's manifests (what its playlists render
    /// from), once it has a complete segment: for the manifests of its
    /// renditions together.
    pub fn manifests_snapshot(&self) -> Option<crate::engine::playlist::Manifests> {
        let st = self.lock();
        let m = st.pipeline.manifests()?;
        m.segments().next()?;
        Some(m.clone())
    }

    /// Whether the session muxes `format` (`--formats`).
    pub fn muxes(&self, format: Format) -> bool {
        let f = self.options.pipeline.formats;
        match format {
            Format::Cmaf | Format::AudioCmaf => f.cmaf,
            Format::Ts => f.ts,
        }
    }

    /// [`manifest_with`](Self::manifest_with) as bytes, HLS renderings
    /// shared: rendered once per change of the parts or segments stored (a
    /// rendering made then lists at least those), so a thousand requests
    /// released by one part cost one rendering.
    pub fn manifest_bytes(&self, kind: ManifestKind, skip: bool) -> Option<Bytes> {
        if matches!(
            kind,
            ManifestKind::Dash | ManifestKind::HlsMultivariant { .. }
        ) {
            return self.manifest_with(kind, skip).map(Bytes::from);
        }
        // Read before rendering: the text is at least as new as the key.
        let at = (
            *self.parts_stored.borrow(),
            *self.segments_stored.borrow(),
            *self.ended_tx.borrow(),
        );
        {
            let cache = self.hls_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache
                .iter()
                .find(|c| c.kind == kind && c.skip == skip && c.at == at)
            {
                return Some(c.text.clone());
            }
        }
        let text = Bytes::from(self.manifest_with(kind, skip)?);
        let mut cache = self.hls_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|c| !(c.kind == kind && c.skip == skip) && c.at == at);
        cache.push(HlsCached {
            kind,
            skip,
            at,
            text: text.clone(),
        });
        Some(text)
    }

    /// The low-latency live edge, `PART-TARGET` (ms) and
    /// `EXT-X-TARGETDURATION` (s), whether the session ended; `None` before
    /// the first segment or without parts.
    pub fn ll_state(&self) -> Option<LlState> {
        let st = self.lock();
        let m = st.pipeline.manifests()?;
        m.segments().next()?;
        m.has_parts().then(|| LlState {
            position: m.ll_position(),
            part_target_ms: m.part_target_ms(),
            target_duration_s: m.target_duration_secs(),
            ended: st.ended.is_some(),
            publisher_generation: st.generation,
        })
    }

    /// Waits (up to `limit`) until the playlists list segment `msn`
    /// complete, or part `part` of it (or anything later), with its bytes
    /// stored, or the session ends. Returns whether that happened.
    pub async fn wait_listed(
        &self,
        msn: u64,
        part: Option<u32>,
        limit: std::time::Duration,
    ) -> bool {
        let mut parts = self.parts_stored.subscribe();
        let mut ended = self.ended_tx.subscribe();
        let ready = |s: &Self| {
            let st = s.lock();
            st.ended.is_some()
                || st.pipeline.manifests().is_some_and(|m| {
                    m.lists(msn, part) && m.ll_position().next_part <= *s.parts_stored.borrow()
                })
        };
        let wait = async {
            loop {
                parts.borrow_and_update();
                if ready(self) {
                    return;
                }
                tokio::select! {
                    r = parts.changed() => if r.is_err() { return },
                    r = ended.changed() => if r.is_err() { return },
                }
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Whether segment `sequence` is the one in progress (the next to
    /// complete) of a live session: a request for it may be served as its
    /// parts land.
    pub fn segment_in_progress(&self, sequence: u64) -> bool {
        let st = self.lock();
        st.ended.is_none()
            && st.parts.next_segment() == sequence
            && st.pipeline.manifests().is_some()
    }

    /// The CMAF chunks of segment `sequence` stored after the first `skip`,
    /// and whether the segment is complete (or the session ended: nothing
    /// more will come).
    pub fn segment_progress(&self, sequence: u64, skip: usize, audio: bool) -> (Vec<Bytes>, bool) {
        let st = self.lock();
        let done = st.ended.is_some() || st.parts.segment_config(sequence).is_some();
        (st.parts.cmaf_chunks_of(sequence, skip, audio), done)
    }

    /// Resolves when another part is stored or the session ends (or after
    /// `limit`).
    pub async fn wait_next_part(&self, seen: u64, limit: std::time::Duration) {
        let mut parts = self.parts_stored.subscribe();
        let mut ended = self.ended_tx.subscribe();
        let wait = async {
            loop {
                if *parts.borrow_and_update() > seen || *ended.borrow_and_update() {
                    return;
                }
                tokio::select! {
                    r = parts.changed() => if r.is_err() { return },
                    r = ended.changed() => if r.is_err() { return },
                }
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// The next part number to be stored.
    pub fn next_part_stored(&self) -> u64 {
        *self.parts_stored.borrow()
    }

    /// Whether part `number` is stored, still to come (the next few parts),
    /// or neither (gone, or too far ahead).
    pub fn part_status(&self, number: u64) -> PartStatus {
        let next = *self.parts_stored.borrow();
        if number < next {
            PartStatus::Stored
        } else if self.lock().ended.is_none() && number <= next.saturating_add(PARTS_AHEAD) {
            PartStatus::Coming
        } else {
            PartStatus::Unknown
        }
    }

    /// Waits (up to `limit`) for part `number` to be stored or the session
    /// to end; returns whether it was stored.
    pub async fn wait_part_stored(&self, number: u64, limit: std::time::Duration) -> bool {
        let mut parts = self.parts_stored.subscribe();
        let mut ended = self.ended_tx.subscribe();
        let wait = async {
            loop {
                if *parts.borrow_and_update() > number {
                    return true;
                }
                if *ended.borrow_and_update() {
                    return false;
                }
                tokio::select! {
                    r = parts.changed() => if r.is_err() { return false },
                    r = ended.changed() => if r.is_err() { return false },
                }
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }

    /// A complete segment's bytes as shared pieces (concatenated, they are
    /// the segment): nothing is muxed or copied here.
    pub fn segment_pieces(&self, sequence: u64, format: Format) -> Result<Vec<Bytes>, MuxError> {
        if !self.muxes(format) {
            return Err(MuxError::FormatOff(format));
        }
        self.lock().parts.segment(sequence, format)
    }

    /// Waits (up to `limit`) for a segment the engine has closed but whose
    /// last part is still being muxed by the publisher's task (a matter of
    /// microseconds). Returns at once for any other segment.
    pub async fn wait_segment_stored(&self, sequence: u64, limit: std::time::Duration) {
        let pending = {
            let st = self.lock();
            st.parts.next_segment() <= sequence && sequence < st.pipeline.stats().segments
        };
        if !pending {
            return;
        }
        let mut rx = self.segments_stored.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|next| *next > sequence)).await;
    }

    /// Low latency: when `sequence` is the segment after the one in
    /// progress (the low-latency MPD lists it ahead, predicted; see
    /// `Manifests::dash_ll`), resolves once it is in progress, the session
    /// ends, or after `limit`; at once otherwise.
    pub async fn wait_segment_opened(&self, sequence: u64, limit: std::time::Duration) {
        let pending = {
            let st = self.lock();
            st.ended.is_none()
                && st.pipeline.manifests().is_some_and(|m| m.has_parts())
                && st.parts.next_segment().checked_add(1) == Some(sequence)
        };
        if !pending {
            return;
        }
        let mut rx = self.segments_stored.subscribe();
        let mut ended = self.ended_tx.subscribe();
        let wait = async {
            tokio::select! {
                _ = rx.wait_for(|next| *next >= sequence) => {}
                _ = ended.wait_for(|e| *e) => {}
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// One part's bytes (session-wide part number) and its config id.
    pub fn part_bytes(&self, number: u64, format: Format) -> Result<(Bytes, u32), MuxError> {
        if !self.muxes(format) {
            return Err(MuxError::FormatOff(format));
        }
        self.lock().parts.part(number, format)
    }

    /// The records of the parts held, oldest first.
    /// The last part stored: (its segment, its index in the segment), what
    /// a rendition report names (`LAST-MSN`, `LAST-PART`).
    pub fn last_part(&self) -> Option<(u64, u32)> {
        let st = self.lock();
        let p = st.parts.part_records().last()?;
        Some((p.segment, p.index))
    }

    pub fn part_records(&self) -> Vec<Arc<PartRecord>> {
        self.lock().parts.part_records().cloned().collect()
    }

    /// The CMAF init segment for parameter-set generation `config_id`
    /// (muxed once, when the parameter sets arrived).
    pub fn init_segment(&self, config_id: u32) -> Result<Bytes, MuxError> {
        if !self.muxes(Format::Cmaf) {
            return Err(MuxError::FormatOff(Format::Cmaf));
        }
        self.lock()
            .parts
            .init(config_id)
            .ok_or(MuxError::NoConfig(config_id))
    }

    /// The CMAF audio track's init segment.
    pub fn audio_init_segment(&self) -> Result<Bytes, MuxError> {
        if !self.muxes(Format::Cmaf) {
            return Err(MuxError::FormatOff(Format::Cmaf));
        }
        self.lock().parts.audio_init().ok_or(MuxError::NoConfig(0))
    }

    /// The session's audio format and whether it is audio-only.
    pub fn audio(&self) -> (Option<Arc<AudioConfig>>, bool) {
        let st = self.lock();
        (
            st.pipeline.audio_config().cloned(),
            st.pipeline.tracks() == Tracks::AudioOnly,
        )
    }

    /// The CMAF audio segment `sequence` in one buffer.
    pub fn cmaf_audio_segment(&self, sequence: u64) -> Result<Bytes, MuxError> {
        let pieces = self.segment_pieces(sequence, Format::AudioCmaf)?;
        Ok(crate::engine::mux::parts::concat(&pieces))
    }

    /// The CMAF media segment `sequence` in one buffer (its pieces joined:
    /// for consumers that need contiguous bytes).
    pub fn cmaf_segment(&self, sequence: u64) -> Result<Bytes, MuxError> {
        let pieces = self.segment_pieces(sequence, Format::Cmaf)?;
        Ok(crate::engine::mux::parts::concat(&pieces))
    }

    /// The MPEG-TS segment `sequence` in one buffer.
    pub fn ts_segment(&self, sequence: u64) -> Result<Bytes, MuxError> {
        let pieces = self.segment_pieces(sequence, Format::Ts)?;
        Ok(crate::engine::mux::parts::concat(&pieces))
    }

    /// The codec configuration generation a segment uses.
    pub fn segment_config(&self, sequence: u64) -> Option<u32> {
        self.lock().parts.segment_config(sequence)
    }
}

/// How far ahead of the parts stored a request for a part may be held
/// (the preload hint names the next one; the muxer may be one behind).
const PARTS_AHEAD: u64 = 2;

/// Where a part stands, for a request that names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartStatus {
    Stored,
    /// Among the next parts: a request for it may wait.
    Coming,
    Unknown,
}

/// The low-latency live edge of a session (see [`Session::ll_state`]).
#[derive(Clone, Copy, Debug)]
pub struct LlState {
    pub position: crate::engine::playlist::LlPosition,
    pub part_target_ms: u64,
    pub target_duration_s: u64,
    pub ended: bool,
    /// Counts publishers attached so far (a reconnect adds one).
    pub publisher_generation: u64,
}

/// A subscriber's cursor into the session's item log and its wake-up.
pub struct Subscription {
    pub cursor: log::Cursor,
    /// Changes when items this subscriber reads are appended: any item
    /// (the log's end position) when it takes frames, otherwise events only.
    pub wake: watch::Receiver<u64>,
    /// Whether it takes frames (and so is woken by them).
    frames: bool,
}

/// Counts a subscriber for as long as it lives.
pub struct SubscriberGuard {
    session: Arc<Session>,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.session.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Bytes {
        Bytes::from(
            std::fs::read(format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR")))
                .unwrap_or_default(),
        )
    }

    fn session(part_ms: u32) -> Arc<Session> {
        Arc::new(Session::new(
            "m".into(),
            SessionOptions {
                pipeline: PipelineOptions {
                    part_target_ms: part_ms,
                    ..Default::default()
                },
                echo_frames: false,
            },
            0,
            64 << 20,
            None,
            None,
        ))
    }

    /// Every segment's bytes are its parts' bytes, byte for byte (CMAF:
    /// `styp` + the chunks; TS: the packets joined), and the parts tile the
    /// segment's record.
    #[test]
    fn segments_are_the_concatenation_of_their_parts() {
        let data = testdata("high_bframes_30.h264");
        assert!(!data.is_empty(), "testdata/high_bframes_30.h264");
        for part_ms in [0, 200, 500] {
            let session = session(part_ms);
            let (generation, _) = session.attach_publisher().expect("publisher");
            for chunk in data.chunks(7_001) {
                session
                    .push(generation, Bytes::copy_from_slice(chunk), None, false)
                    .expect("push");
            }
            assert!(session.end(EndReason::EndOfStream, String::new()));
            let records = session.segment_records();
            assert!(records.len() >= 2);
            let parts = session.part_records();
            for rec in &records {
                let mine: Vec<_> = parts.iter().filter(|p| p.segment == rec.sequence).collect();
                assert!(!mine.is_empty());
                if part_ms == 0 {
                    assert_eq!(mine.len(), 1);
                }
                assert_eq!(mine[0].start, rec.start);
                let total: u64 = mine.iter().map(|p| p.duration).sum();
                assert_eq!(total, rec.duration);
                let mut cmaf = crate::engine::mux::cmaf::styp().to_vec();
                let mut ts = Vec::new();
                for p in &mine {
                    cmaf.extend_from_slice(
                        &session.part_bytes(p.number, Format::Cmaf).expect("part").0,
                    );
                    ts.extend_from_slice(
                        &session.part_bytes(p.number, Format::Ts).expect("part").0,
                    );
                }
                assert_eq!(session.cmaf_segment(rec.sequence).expect("cmaf"), cmaf);
                assert_eq!(session.ts_segment(rec.sequence).expect("ts"), ts);
            }
            assert!(session.init_segment(records[0].config_id).is_ok());
        }
    }

    /// The debug check that muxing never runs under the session lock fires
    /// when it would.
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "muxing with the session lock held")]
    fn muxing_under_the_session_lock_is_caught() {
        let session = session(500);
        let _st = session.lock();
        let _ = mux_work("m", &mut PartMuxer::default(), &MuxWork::default());
    }

    /// A push wakes a subscriber only when it appended something that
    /// subscriber reads: one that takes frames when the log grew (not on a
    /// chunk that completed no access unit), one that takes none (a
    /// publisher's own response stream) only when an event was appended,
    /// not once per frame.
    #[test]
    fn a_push_wakes_only_the_subscribers_with_something_to_read() {
        let data = testdata("high_bframes_30.h264");
        assert!(!data.is_empty());
        // Parts of 500 ms: an event (a part, a segment, …) every ~15 frames.
        let session = session(500);
        let (generation, _) = session.attach_publisher().expect("publisher");
        let (_, mut frames, _g1) = session.join(true);
        let (_, mut events, _g2) = session.join_live(false);
        let read_all = |sub: &mut Subscription| {
            let mut out = Vec::new();
            loop {
                let before = out.len();
                session.read(sub, &mut out, 64);
                if out.len() == before {
                    return out;
                }
            }
        };
        let is_frame = |i: &SessionItem| matches!(i, SessionItem::Frame(_));
        let (mut pushes, mut frame_wakes, mut event_wakes, mut frames_read) = (0, 0, 0, 0);
        for chunk in data.chunks(701) {
            session
                .push(generation, Bytes::copy_from_slice(chunk), None, false)
                .expect("push");
            pushes += 1;
            let woke = frames.wake.has_changed().expect("session");
            let got = read_all(&mut frames);
            assert_eq!(
                woke,
                !got.is_empty(),
                "push {pushes}: frame reader woken {woke}, read {}",
                got.len()
            );
            frame_wakes += usize::from(woke);
            frames_read += got.iter().filter(|i| is_frame(i)).count();
            let woke = events.wake.has_changed().expect("session");
            let got = read_all(&mut events);
            let has_event = got.iter().any(|i| !is_frame(i));
            assert_eq!(
                woke, has_event,
                "push {pushes}: event reader woken {woke}, read {} items, an event among them: {has_event}",
                got.len()
            );
            event_wakes += usize::from(woke);
        }
        assert!(frames_read > 100, "{frames_read} frames read");
        assert!(
            frame_wakes < pushes,
            "{frame_wakes} wakes for {pushes} pushes"
        );
        assert!(
            event_wakes * 5 < frames_read,
            "{event_wakes} event wake-ups for {frames_read} frames"
        );
    }

    /// A subscriber that joins while a push is muxing gets a snapshot and a
    /// cursor that agree: the first segment event it reads follows the last
    /// segment its snapshot's playlist lists, never repeats it.
    #[test]
    fn a_join_during_a_push_sees_each_segment_once() {
        let data = testdata("high_bframes_30.h264");
        assert!(!data.is_empty());
        let session = session(100);
        let (generation, _) = session.attach_publisher().expect("publisher");
        let pusher = {
            let session = session.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    for chunk in data.chunks(701) {
                        let _ =
                            session.push(generation, Bytes::copy_from_slice(chunk), None, false);
                    }
                }
            })
        };
        let mut checked = 0;
        while !pusher.is_finished() || checked == 0 {
            let (snap, mut sub, _guard) = session.join(false);
            let listed = snap.hls_cmaf.entries.len() as u64;
            let mut out = Vec::new();
            // Read until the next segment event (or give up after a while).
            for _ in 0..2000 {
                session.read(&mut sub, &mut out, 64);
                if out.iter().any(|i| matches!(i, SessionItem::Segment(_))) {
                    break;
                }
                std::thread::yield_now();
            }
            if let Some(seq) = out.iter().find_map(|i| match i {
                SessionItem::Segment(s) => Some(s.record.sequence),
                _ => None,
            }) {
                if listed > 0 {
                    assert_eq!(
                        seq,
                        snap.media_sequence + listed,
                        "the snapshot lists up to {}",
                        snap.media_sequence + listed - 1
                    );
                }
                checked += 1;
            }
            if checked > 200 {
                break;
            }
        }
        pusher.join().expect("pusher");
        assert!(checked > 0);
    }

    fn without_publish_time(text: &str) -> String {
        text.lines()
            .map(|l| match l.find(" publishTime=\"") {
                Some(i) => {
                    let rest = &l[i + 14..];
                    let end = rest.find('"').map_or(rest.len(), |e| e + 1);
                    format!("{}{}", &l[..i], &rest[end..])
                }
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A mirror session fed an origin's replica items from a segment on
    /// (as an edge that joins mid-stream, after the stream's start has
    /// expired) renders the origin's playlists and MPD and muxes its
    /// segments' bytes (CMAF, and MPEG-TS with the origin's continuity
    /// counters), once its window holds the same segments: across a
    /// publisher reconnect (a discontinuity, a new DASH period) too.
    #[test]
    fn a_mirror_joining_mid_stream_renders_the_origins_bytes() {
        let data = testdata("baseline_30.h264");
        assert!(!data.is_empty());
        let options = SessionOptions {
            pipeline: PipelineOptions {
                segment_target_ms: 1000,
                part_target_ms: 250,
                window: 3,
                ..Default::default()
            },
            echo_frames: false,
        };
        let (tx, mut rx) = ReplicaTx::channel(1 << 16);
        let origin = Arc::new(Session::new(
            "m".into(),
            options,
            0,
            64 << 20,
            None,
            Some(tx),
        ));
        for pass in 0..2 {
            let (generation, _) = origin.attach_publisher().expect("publisher");
            for chunk in data.chunks(5_000) {
                origin
                    .push(generation, Bytes::copy_from_slice(chunk), None, false)
                    .expect("push");
            }
            if pass == 0 {
                assert!(origin.publisher_vanished(generation));
            }
        }
        let mut items = Vec::new();
        while let Ok((_, item)) = rx.try_recv() {
            items.push(item);
        }
        let Some(ReplicaItem::Start(start)) = items.first().cloned() else {
            panic!("the start comes first");
        };
        let segments = origin.segment_records();
        let last = segments.last().map(|r| r.sequence).expect("segments");
        assert!(last >= 10, "{last} segments");
        // 6 segments a pass: joins before the discontinuity and after it
        // (where the origin's DASH period started before the join).
        for join in [0, 2, 4, 7] {
            // An edge joins where a segment's first frame is, with the
            // config in effect (the Sync it joins at carries it).
            let at = items
                .iter()
                .position(|i| matches!(i, ReplicaItem::Frame(f) if f.segment == join))
                .expect("the segment's first frame");
            let config = items[..at]
                .iter()
                .rev()
                .find_map(|i| match i {
                    ReplicaItem::Config(c) => Some(c.clone()),
                    _ => None,
                })
                .expect("a config before it");
            let mirror = Arc::new(Session::mirror("m".into(), start.clone(), 0));
            let mut feed = vec![ReplicaItem::Config(config)];
            feed.extend(items[at..].iter().cloned());
            mirror.apply_replica(feed);
            for kind in [ManifestKind::HlsCmaf, ManifestKind::HlsTs] {
                assert_eq!(
                    mirror.manifest(kind),
                    origin.manifest(kind),
                    "{kind:?}, joined at {join}"
                );
            }
            assert_eq!(
                mirror
                    .manifest(ManifestKind::Dash)
                    .map(|t| without_publish_time(&t)),
                origin
                    .manifest(ManifestKind::Dash)
                    .map(|t| without_publish_time(&t)),
                "MPD, joined at {join}"
            );
            for rec in &segments[segments.len() - 3..] {
                assert_eq!(
                    mirror
                        .cmaf_segment(rec.sequence)
                        .expect("cmaf at the mirror"),
                    origin
                        .cmaf_segment(rec.sequence)
                        .expect("cmaf at the origin"),
                    "segment {}, joined at {join}",
                    rec.sequence
                );
                // TS too: the mirror continued the origin's counters.
                assert_eq!(
                    mirror.ts_segment(rec.sequence).expect("ts at the mirror"),
                    origin.ts_segment(rec.sequence).expect("ts at the origin"),
                    "TS segment {}, joined at {join}",
                    rec.sequence
                );
            }
        }
    }

    #[test]
    fn the_lock_count_follows_the_guard() {
        let session = session(500);
        assert!(!holds_session_lock());
        let st = session.lock();
        assert!(holds_session_lock());
        drop(st);
        assert!(!holds_session_lock());
    }
}

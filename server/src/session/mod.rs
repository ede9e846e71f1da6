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

pub mod log;
pub mod mux_cache;
pub mod registry;
pub mod ring;
pub mod subscriber;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

use crate::engine::pipeline::{DropReport, EngineError, Event, SegmentEvent};
use crate::engine::playlist::{ManifestState, ManifestUpdate};
use crate::engine::{CodecConfig, Frame, PipelineOptions, SessionPipeline};
use mux_cache::{MuxCache, MuxError};
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
    pub frame_rate: Option<(u32, u32)>,
    pub hls_cmaf: ManifestState,
    pub hls_ts: ManifestState,
    pub dash: ManifestState,
    pub media_sequence: u64,
    pub availability_start_ms: u64,
    pub segment_target_ms: u32,
    pub window: u32,
    /// Index of the frame a joining subscriber starts at (the newest random
    /// access point), when it starts with frames.
    pub start_frame: Option<u64>,
    pub ended: Option<Arc<SessionEnd>>,
    /// Why the stream's own timing was overruled, if it was.
    pub timing_note: Option<String>,
}

/// Who publishes into the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Publisher {
    Active(u64),
    /// Vanished; may come back within the grace period.
    Gone(u64),
    None,
}

struct SessionState {
    pipeline: SessionPipeline,
    ring: Ring,
    publisher: Publisher,
    generation: u64,
    ended: Option<Arc<SessionEnd>>,
    events: Vec<Event>,
    /// Parameter-set generations still referenced, by id (for muxing).
    configs: std::collections::BTreeMap<u32, Arc<CodecConfig>>,
    /// The playlists' media sequence (first listed segment).
    first_listed: u64,
    log: log::ItemLog,
}

/// One live session.
pub struct Session {
    pub id: String,
    pub options: SessionOptions,
    state: Mutex<SessionState>,
    /// Muxed segment bytes, behind their own lock (see [`mux_cache`]).
    mux: Mutex<MuxCache>,
    /// The item log's end position, for subscribers' wake-ups.
    log_end: watch::Sender<u64>,
    /// Items a subscriber may fall behind the newest before it is moved on
    /// (0: as far as the log holds).
    max_lag_items: u64,
    subscribers: AtomicUsize,
    /// Flips to true when the session ends, for tasks that must stop then.
    ended_tx: watch::Sender<bool>,
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

impl Session {
    fn new(
        id: String,
        mut options: SessionOptions,
        max_lag_items: usize,
        ring_max_bytes: usize,
    ) -> Self {
        // The engine keeps the window within the ring's budget, so the ring
        // evicts only whole segments the playlists no longer list.
        options.pipeline.max_window_bytes = ring_max_bytes;
        let window = options.pipeline.window;
        Self {
            state: Mutex::new(SessionState {
                pipeline: SessionPipeline::new(options.pipeline.clone()),
                ring: Ring::new(),
                publisher: Publisher::None,
                generation: 0,
                ended: None,
                events: Vec::new(),
                configs: Default::default(),
                first_listed: 0,
                log: log::ItemLog::default(),
            }),
            mux: Mutex::new(MuxCache::new(window)),
            id,
            options,
            log_end: watch::channel(0).0,
            max_lag_items: max_lag_items as u64,
            subscribers: AtomicUsize::new(0),
            ended_tx: watch::channel(false).0,
        }
    }

    /// Resolves once the session has ended.
    pub async fn wait_ended(&self) {
        let mut rx = self.ended_tx.subscribe();
        let _ = rx.wait_for(|ended| *ended).await;
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        // A panic while holding the lock would be a bug; the state is still
        // consistent enough to end the session, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
        let held = {
            let st = self.lock();
            st.ring.bytes() + st.pipeline.buffered()
        };
        held + self.mux_lock().bytes()
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
        let mut st = self.lock();
        if st.ended.is_some() {
            return Err(RegistryError::Ended);
        }
        let resumed = match st.publisher {
            Publisher::Active(_) => return Err(RegistryError::AlreadyPublishing),
            Publisher::Gone(_) => {
                let mut events = std::mem::take(&mut st.events);
                st.pipeline.reconnect(now_unix_ns(), &mut events);
                let _ = self.distribute(&mut st, &mut events);
                st.events = events;
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
        let mut st = self.lock();
        if st.ended.is_some() {
            return Err(PushError::Ended);
        }
        if st.publisher != Publisher::Active(generation) {
            return Err(PushError::NotPublisher);
        }
        let mut events = std::mem::take(&mut st.events);
        ::metrics::counter!(crate::metrics::BYTES_IN).increment(data.len() as u64);
        st.pipeline.push(
            data,
            capture_ns,
            now_unix_ns(),
            end_of_access_unit,
            &mut events,
        );
        let fatal = self.distribute(&mut st, &mut events);
        st.events = events;
        match fatal {
            Some(e) => Err(PushError::Fatal(e)),
            None => Ok(()),
        }
    }

    /// Ends the session: flushes the last frames into a final segment,
    /// closes the manifests and tells every subscriber. Returns false if it
    /// had already ended.
    pub fn end(&self, reason: EndReason, detail: String) -> bool {
        let mut st = self.lock();
        if st.ended.is_some() {
            return false;
        }
        let mut events = std::mem::take(&mut st.events);
        st.pipeline.finish(now_unix_ns(), &mut events);
        let _ = self.distribute(&mut st, &mut events);
        st.events = events;
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
        st.log.push(SessionItem::Ended(end));
        self.log_end.send_replace(st.log.end());
        self.ended_tx.send_replace(true);
        tracing::info!(session_id = %self.id, ?reason, frames = stats.frames, segments = stats.segments, "session ended");
        true
    }

    /// The publisher's stream broke. Returns true if it was the current
    /// publisher (so a grace timer should start).
    pub fn publisher_vanished(&self, generation: u64) -> bool {
        let mut st = self.lock();
        if st.ended.is_none() && st.publisher == Publisher::Active(generation) {
            st.publisher = Publisher::Gone(generation);
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
        let st = self.lock();
        let mut snapshot = self.snapshot(&st);
        let end = st.log.end();
        let start = if with_frames {
            st.log.newest_random_access().unwrap_or(end)
        } else {
            end
        };
        snapshot.start_frame = with_frames
            .then(|| st.log.frame_index_at_or_after(start))
            .flatten();
        let wake = self.log_end.subscribe();
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
        st.log.read(&mut sub.cursor, out, max, self.max_lag_items)
    }

    /// The session's current description and manifests (no frames).
    pub fn info(&self) -> Snapshot {
        let st = self.lock();
        self.snapshot(&st)
    }

    fn snapshot(&self, st: &SessionState) -> Snapshot {
        let now_ms = now_unix_ns() / 1_000_000;
        let (hls_cmaf, hls_ts, dash, media_sequence) = match st.pipeline.manifests() {
            Some(m) => (m.hls_cmaf(), m.hls_ts(), m.dash(now_ms), m.media_sequence()),
            None => Default::default(),
        };
        Snapshot {
            config: st.pipeline.config().cloned(),
            frame_rate: st.pipeline.frame_rate().map(|r| (r.num, r.den)),
            hls_cmaf,
            hls_ts,
            dash,
            media_sequence,
            availability_start_ms: st.pipeline.availability_start_ms().unwrap_or(0),
            segment_target_ms: self.options.pipeline.segment_target_ms,
            window: self.options.pipeline.window as u32,
            start_frame: None,
            ended: st.ended.clone(),
            timing_note: st.pipeline.timing_note().map(str::to_owned),
        }
    }

    /// Moves engine events into the ring and out to subscribers; returns a
    /// fatal error if the engine reported one.
    fn distribute(&self, st: &mut SessionState, events: &mut Vec<Event>) -> Option<EngineError> {
        let mut fatal = None;
        let mut frames = 0u64;
        let mut segments = false;
        for e in events.drain(..) {
            let item = match e {
                Event::Frame(f) => {
                    frames += 1;
                    st.ring.push_frame(f.clone());
                    SessionItem::Frame(f)
                }
                Event::Segment(s) => {
                    segments = true;
                    st.ring.push_segment(s.clone());
                    st.first_listed = s.manifest.media_sequence;
                    crate::metrics::segment(s.record.duration);
                    tracing::debug!(session_id = %self.id, sequence = s.record.sequence,
                        frames = s.record.frame_count, duration = s.record.duration, "segment");
                    SessionItem::Segment(s)
                }
                Event::Config(c) => {
                    st.configs.insert(c.id, c.clone());
                    while st.configs.len() > mux_cache::MAX_CONFIGS {
                        st.configs.pop_first();
                    }
                    SessionItem::Config(c)
                }
                Event::Dropped(d) => {
                    crate::metrics::dropped(d.reason, d.count as u64);
                    tracing::debug!(session_id = %self.id, reason = d.reason.as_str(), count = d.count, detail = %d.detail, "frames dropped");
                    SessionItem::Dropped(Arc::new(d))
                }
                Event::Ended(u) => SessionItem::Final(u),
                Event::Part(_) => continue,
                Event::Fatal(e) => {
                    fatal = Some(e);
                    continue;
                }
            };
            st.log.push(item);
        }
        if segments {
            // The log lets go of what the ring let go of.
            if let Some(first) = st.ring.first_frame_index() {
                st.log.evict_before_frame(first);
            }
        }
        self.log_end.send_replace(st.log.end());
        if frames > 0 {
            ::metrics::counter!(crate::metrics::FRAMES_IN).increment(frames);
        }
        fatal
    }
}

/// Which rendering of the manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    HlsCmaf,
    HlsTs,
    Dash,
}

impl Session {
    /// The manifest as of now; `None` before the first segment (a playlist
    /// must list at least one segment, an MPD one period).
    pub fn manifest(&self, kind: ManifestKind) -> Option<String> {
        let st = self.lock();
        let m = st.pipeline.manifests()?;
        m.segments().next()?;
        Some(match kind {
            ManifestKind::HlsCmaf => m.hls_cmaf().render(),
            ManifestKind::HlsTs => m.hls_ts().render(),
            ManifestKind::Dash => m.dash(now_unix_ns() / 1_000_000).render(),
        })
    }

    fn mux_lock(&self) -> MutexGuard<'_, MuxCache> {
        self.mux.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A segment's record, frames and parameter sets, if all its frames are
    /// still held: `Arc` clones under the session lock, nothing muxed.
    fn segment_source(&self, seq: u64) -> Option<mux_cache::SegmentSource> {
        let st = self.lock();
        let record = st
            .ring
            .segments()
            .find(|s| s.record.sequence == seq)?
            .record
            .clone();
        let frames = st.ring.segment_frames(seq)?;
        let config = st.configs.get(&record.config_id)?.clone();
        Some(mux_cache::SegmentSource {
            record,
            frames,
            config,
        })
    }

    /// The CMAF init segment for parameter-set generation `config_id`,
    /// muxed once, with no lock held.
    pub fn init_segment(&self, config_id: u32) -> Result<Bytes, MuxError> {
        if let Some(b) = self.mux_lock().cached_init(config_id) {
            return Ok(b);
        }
        let cfg = self
            .lock()
            .configs
            .get(&config_id)
            .cloned()
            .ok_or(MuxError::NoConfig(config_id))?;
        let b = mux_cache::mux_init(&cfg)?;
        self.mux_lock().insert_init(config_id, b.clone());
        Ok(b)
    }

    /// The CMAF media segment `sequence`, muxed on first request with no
    /// lock held (the publisher's push never waits for it).
    pub fn cmaf_segment(&self, sequence: u64) -> Result<Bytes, MuxError> {
        if let Some(b) = self.mux_lock().cached_cmaf(sequence) {
            return Ok(b);
        }
        let src = self
            .segment_source(sequence)
            .ok_or(MuxError::NotAvailable(sequence))?;
        let b = mux_cache::mux_cmaf(&src)?;
        let first_listed = self.lock().first_listed;
        let mut mux = self.mux_lock();
        mux.insert_cmaf(sequence, b.clone());
        mux.prune(first_listed);
        Ok(b)
    }

    /// The MPEG-TS segment `sequence`, muxed on first request (in order, so
    /// continuity counters run on across segments) under the mux cache's
    /// lock only: the session lock is taken just to clone frames.
    pub fn ts_segment(&self, sequence: u64) -> Result<Bytes, MuxError> {
        let first_listed = self.lock().first_listed;
        let mut mux = self.mux_lock();
        let b = mux.ts(sequence, |s| self.segment_source(s))?;
        mux.prune(first_listed);
        Ok(b)
    }

    /// The codec configuration generation a segment uses.
    pub fn segment_config(&self, sequence: u64) -> Option<u32> {
        let st = self.lock();
        let cfg = st
            .ring
            .segments()
            .find(|s| s.record.sequence == sequence)
            .map(|s| s.record.config_id);
        cfg
    }
}

/// A subscriber's cursor into the session's item log and its wake-up.
pub struct Subscription {
    pub cursor: log::Cursor,
    /// Changes whenever items are appended (the log's end position).
    pub wake: watch::Receiver<u64>,
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

    /// The publisher's push never waits for muxing: with the mux cache
    /// locked (as it is while a TS segment is muxed) and a CMAF segment
    /// muxed on another thread, pushes go through.
    #[test]
    fn muxing_never_holds_the_lock_the_publisher_takes() {
        let session = Arc::new(Session::new(
            "m".into(),
            SessionOptions {
                pipeline: PipelineOptions::default(),
                echo_frames: false,
            },
            0,
            64 << 20,
        ));
        let (generation, _) = session.attach_publisher().expect("publisher");
        let data = testdata("high_bframes_30.h264");
        assert!(!data.is_empty());
        let (first, rest) = data.split_at(data.len() / 2);
        session
            .push(generation, Bytes::copy_from_slice(first), None, false)
            .expect("push");
        let mux = session.mux_lock();
        let s2 = session.clone();
        let cmaf = std::thread::spawn(move || s2.cmaf_segment(0));
        // (On a thread, so a regression fails here instead of hanging.)
        let (tx, rx) = std::sync::mpsc::channel();
        let s3 = session.clone();
        let rest = Bytes::copy_from_slice(rest);
        std::thread::spawn(move || {
            let _ = tx.send(s3.push(generation, rest, None, false));
        });
        let pushed = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert!(
            matches!(pushed, Ok(Ok(()))),
            "a push while the mux cache is locked: {pushed:?}"
        );
        drop(mux);
        assert!(cmaf.join().expect("thread").is_ok_and(|b| !b.is_empty()));
        assert!(session.ts_segment(0).is_ok_and(|b| !b.is_empty()));
    }
}

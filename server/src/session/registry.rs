//! The session registry: one publisher per `session_id`, bounded numbers of
//! sessions and subscribers, subscribers that wait for a session to appear,
//! grace periods for vanished publishers, and a linger time during which an
//! ended session's last window is still served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::ConfigError;

use super::replica::{Replicator, SessionStart};
use super::{EndReason, Session, SessionOptions};

/// Defaults and limits the registry enforces, and the policy for
/// publishers and subscribers of every session: the session's part of the
/// configuration. Each field's key (in a `--config` file, and as a flag) is
/// named beside it; the defaults are [`Default`]'s.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionDefaults {
    /// `max-sessions`: live sessions at once.
    #[serde(rename = "max-sessions")]
    pub max_sessions: usize,
    /// `max-subscribers`: subscribers per session (the gRPC subscriber
    /// streams; not the publisher's own stream, not HTTP players).
    #[serde(rename = "max-subscribers")]
    pub max_subscribers_per_session: usize,
    /// `subscriber-buffer`: items a subscriber may fall behind the newest
    /// before it is moved to the newest random access point; 0: as far as
    /// the window holds.
    #[serde(rename = "subscriber-buffer")]
    pub max_lag_items: usize,
    /// `ring-bytes`: bytes of frames a session's ring may hold.
    #[serde(rename = "ring-bytes")]
    pub ring_max_bytes: usize,
    /// `publisher-grace`: how long a vanished publisher may take to come
    /// back.
    #[serde(rename = "publisher-grace", with = "crate::config::duration")]
    pub publisher_grace: Duration,
    /// `idle-timeout`: a publisher silent this long is treated as gone.
    #[serde(rename = "idle-timeout", with = "crate::config::duration")]
    pub publisher_idle_timeout: Duration,
    /// `subscribe-wait`: how long a subscriber waits for a session that does
    /// not exist yet (unless it asks for another wait).
    #[serde(rename = "subscribe-wait", with = "crate::config::duration")]
    pub subscribe_wait: Duration,
    /// `linger`: how long an ended session's last window stays served.
    #[serde(rename = "linger", with = "crate::config::duration")]
    pub linger: Duration,
    /// `memory-limit`: bytes of media all sessions together may hold, live
    /// and lingering: beyond it lingering sessions are evicted, oldest
    /// first, and then new sessions are refused. Default: a quarter of
    /// physical memory, at most 2 GiB.
    #[serde(rename = "memory-limit")]
    pub memory_limit: usize,
}

impl Default for SessionDefaults {
    fn default() -> Self {
        Self {
            max_sessions: 1000,
            max_subscribers_per_session: 1000,
            max_lag_items: 0,
            ring_max_bytes: crate::engine::pipeline::DEFAULT_MAX_WINDOW_BYTES,
            publisher_grace: Duration::from_secs(10),
            publisher_idle_timeout: Duration::from_secs(30),
            subscribe_wait: Duration::from_secs(10),
            linger: Duration::from_secs(60),
            memory_limit: default_memory_limit(),
        }
    }
}

impl SessionDefaults {
    /// Checks ranges and names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions == 0 {
            return Err(ConfigError::new("max-sessions", "must be at least 1"));
        }
        if self.max_subscribers_per_session == 0 {
            return Err(ConfigError::new("max-subscribers", "must be at least 1"));
        }
        if self.max_lag_items != 0 && self.max_lag_items < 16 {
            return Err(ConfigError::new(
                "subscriber-buffer",
                "must be 0 (the window) or at least 16",
            ));
        }
        if self.memory_limit < 1 << 20 {
            return Err(ConfigError::new(
                "memory-limit",
                "must be at least 1048576 bytes (1 MiB)",
            ));
        }
        Ok(())
    }
}

/// A quarter of physical memory, at most 2 GiB (2 GiB when physical memory
/// cannot be read).
pub fn default_memory_limit() -> usize {
    let quarter = physical_memory_bytes().map_or(usize::MAX, |m| m / 4);
    quarter.min(2 << 30)
}

/// Physical memory (Linux `/proc/meminfo` `MemTotal`), if it can be read.
fn physical_memory_bytes() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("session already has a publisher")]
    AlreadyPublishing,
    #[error("too many sessions (limit {0})")]
    TooManySessions(usize),
    #[error("too many subscribers for this session (limit {0})")]
    TooManySubscribers(usize),
    #[error("session is not live")]
    NotFound,
    #[error("session has ended")]
    Ended,
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("this server is an edge (--role edge): it serves sessions from the cluster and takes no publishers; publish to an origin")]
    EdgeNode,
    #[error(
        "the server's media memory limit is reached ({held} of {limit} bytes held by live sessions; \
         raise --memory-limit or lower --ring-bytes)"
    )]
    MemoryLimit { limit: usize, held: usize },
}

/// A publisher's claim on a session.
pub struct PublishGrant {
    pub session: Arc<Session>,
    pub generation: u64,
    /// Continues a session whose publisher vanished within the grace period.
    pub resumed: bool,
    /// The session was created here continuing another node's copy (the
    /// `resume` given to [`Registry::publish_resumed`] was used).
    pub took_over: bool,
}

pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Woken whenever a session is created, so waiting subscribers re-check.
    changed: Notify,
    defaults: SessionDefaults,
    shutting_down: AtomicBool,
    /// `--record`: every new session is recorded.
    recorder: Option<crate::record::Recorder>,
    /// Replicates new sessions (an origin in a cluster).
    replicator: OnceLock<Arc<dyn Replicator>>,
    /// An edge: sessions come from the cluster, never from publishers.
    edge: AtomicBool,
    /// The connection to the cluster: 0 none (a single node), 1 up, 2 down.
    cluster: AtomicU8,
}

impl Registry {
    pub fn new(defaults: SessionDefaults) -> Arc<Self> {
        Self::with_recorder(defaults, None)
    }

    /// A registry whose sessions are recorded by `recorder`.
    pub fn with_recorder(
        defaults: SessionDefaults,
        recorder: Option<crate::record::Recorder>,
    ) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            defaults,
            shutting_down: AtomicBool::new(false),
            recorder,
            replicator: OnceLock::new(),
            edge: AtomicBool::new(false),
            cluster: AtomicU8::new(0),
        })
    }

    /// The recorder (`--record`), if recording is on.
    pub fn recorder(&self) -> Option<&crate::record::Recorder> {
        self.recorder.as_ref()
    }

    /// Records whether the connection to the cluster is up (for health).
    pub fn set_cluster_up(&self, up: bool) {
        self.cluster
            .store(if up { 1 } else { 2 }, Ordering::Relaxed);
    }

    /// Whether the connection to the cluster is up; `None` for a single
    /// node.
    pub fn cluster_up(&self) -> Option<bool> {
        match self.cluster.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n == 1),
        }
    }

    /// Every session created from now on is replicated by `r` (an origin in
    /// a cluster). Set once; later calls are ignored.
    pub fn set_replicator(&self, r: Arc<dyn Replicator>) {
        let _ = self.replicator.set(r);
    }

    /// The replicator (an origin in a cluster), if any.
    pub fn replicator(&self) -> Option<Arc<dyn Replicator>> {
        self.replicator.get().cloned()
    }

    /// Makes this registry an edge's: publishers are refused
    /// ([`RegistryError::EdgeNode`]), sessions are mirrors
    /// ([`mirror`](Self::mirror)).
    pub fn set_edge(&self) {
        self.edge.store(true, Ordering::Relaxed);
    }

    pub fn is_edge(&self) -> bool {
        self.edge.load(Ordering::Relaxed)
    }

    /// Creates a session filled from a replica of another node's (an
    /// edge's), replacing an ended one of the same id.
    pub fn mirror(
        &self,
        id: &str,
        start: Arc<SessionStart>,
    ) -> Result<Arc<Session>, RegistryError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(RegistryError::ShuttingDown);
        }
        let mut map = self.map();
        if map.get(id).is_some_and(|s| !s.is_ended()) {
            return Err(RegistryError::AlreadyPublishing);
        }
        let live = map.values().filter(|s| !s.is_ended()).count();
        if live >= self.defaults.max_sessions {
            return Err(RegistryError::TooManySessions(self.defaults.max_sessions));
        }
        let held = self.enforce_memory(&mut map);
        if held >= self.defaults.memory_limit {
            return Err(RegistryError::MemoryLimit {
                limit: self.defaults.memory_limit,
                held,
            });
        }
        let session = Arc::new(Session::mirror(
            id.to_string(),
            start,
            self.defaults.max_lag_items,
        ));
        map.insert(id.to_string(), session.clone());
        drop(map);
        self.changed.notify_waiters();
        tracing::info!(session_id = %id, "mirror session created");
        Ok(session)
    }

    pub fn defaults(&self) -> &SessionDefaults {
        &self.defaults
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `id` for a publisher, creating the session or continuing one
    /// whose publisher vanished.
    pub fn publish(
        &self,
        id: &str,
        options: SessionOptions,
    ) -> Result<PublishGrant, RegistryError> {
        self.publish_resumed(id, options, None)
    }

    /// [`publish`](Self::publish); a session created here continues
    /// another node's copy from `resume` (cluster failover; the replicator's
    /// [`Replicator::takeover`] found it). Ignored when the session exists
    /// here.
    pub fn publish_resumed(
        &self,
        id: &str,
        options: SessionOptions,
        resume: Option<crate::engine::ResumePoint>,
    ) -> Result<PublishGrant, RegistryError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(RegistryError::ShuttingDown);
        }
        if self.is_edge() {
            return Err(RegistryError::EdgeNode);
        }
        let mut map = self.map();
        if let Some(existing) = map.get(id) {
            if !existing.is_ended() {
                let (generation, resumed) = existing.attach_publisher()?;
                return Ok(PublishGrant {
                    session: existing.clone(),
                    generation,
                    resumed,
                    took_over: false,
                });
            }
        }
        let live = map.values().filter(|s| !s.is_ended()).count();
        if live >= self.defaults.max_sessions {
            return Err(RegistryError::TooManySessions(self.defaults.max_sessions));
        }
        let held = self.enforce_memory(&mut map);
        if held >= self.defaults.memory_limit {
            return Err(RegistryError::MemoryLimit {
                limit: self.defaults.memory_limit,
                held,
            });
        }
        // The session's renditions share one group (held by their
        // sessions: it goes when the last of them is removed).
        let base = crate::ids::session_of(id);
        let group = map
            .iter()
            .filter(|(k, _)| crate::ids::session_of(k) == base)
            .find_map(|(_, s)| s.rendition_group().map(|(g, _)| g.clone()))
            .unwrap_or_else(|| super::renditions::RenditionGroup::new(base));
        let took_over = resume.is_some();
        let session = Arc::new(Session::resumed(
            id.to_string(),
            options,
            self.defaults.max_lag_items,
            self.defaults.ring_max_bytes,
            super::Links {
                recorder: self.recorder.as_ref().map(|r| r.session(id)),
                replica: self
                    .replicator
                    .get()
                    .and_then(|r| r.attach(id, resume.is_some())),
                resume,
                group: Some(group),
            },
        ));
        let (generation, resumed) = session.attach_publisher()?;
        // An ended session of the same id is replaced: its window stops being
        // served, the new stream starts over.
        map.insert(id.to_string(), session.clone());
        drop(map);
        self.changed.notify_waiters();
        tracing::info!(session_id = %id, "session created");
        Ok(PublishGrant {
            session,
            generation,
            resumed,
            took_over,
        })
    }

    /// The live session `id`, waiting up to `wait` for it to appear.
    pub async fn wait_for(&self, id: &str, wait: Duration) -> Result<Arc<Session>, RegistryError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shutting_down.load(Ordering::Relaxed) {
                return Err(RegistryError::ShuttingDown);
            }
            if let Some(s) = self.live(id) {
                if s.subscriber_count() >= self.defaults.max_subscribers_per_session {
                    return Err(RegistryError::TooManySubscribers(
                        self.defaults.max_subscribers_per_session,
                    ));
                }
                return Ok(s);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // A session that ended (and lingers) is not "not found".
                return Err(if self.get(id).is_some() {
                    RegistryError::Ended
                } else {
                    RegistryError::NotFound
                });
            }
        }
    }

    /// The session `id` if it is live.
    pub fn live(&self, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).filter(|s| !s.is_ended()).cloned()
    }

    /// The session `id`, live or ended but still lingering.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).cloned()
    }

    /// The sessions of session id `session` and of its renditions
    /// (`session~NAME`), by id; empty unless one of them is a rendition.
    pub fn renditions(&self, session: &str) -> Vec<Arc<Session>> {
        let map = self.map();
        let mut out: Vec<Arc<Session>> = map
            .iter()
            .filter(|(k, _)| crate::ids::session_of(k) == session)
            .map(|(_, s)| s.clone())
            .collect();
        drop(map);
        if !out
            .iter()
            .any(|s| crate::ids::rendition_of(&s.id).is_some())
        {
            return Vec::new();
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub fn sessions(&self) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self.map().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Bytes of media all sessions hold (live and lingering).
    pub fn memory_bytes(&self) -> usize {
        self.map().values().map(|s| s.memory_bytes()).sum()
    }

    /// Keeps the sessions within `--memory-limit`: while they hold more,
    /// lingering (ended) sessions are evicted, oldest first. Returns the
    /// bytes held afterwards (live sessions are never evicted).
    fn enforce_memory(&self, map: &mut HashMap<String, Arc<Session>>) -> usize {
        let limit = self.defaults.memory_limit;
        let mut held: usize = map.values().map(|s| s.memory_bytes()).sum();
        if held < limit {
            return held;
        }
        let mut ended: Vec<(u64, String)> = map
            .values()
            .filter_map(|s| Some((s.ended_at_ms()?, s.id.clone())))
            .collect();
        ended.sort();
        for (_, id) in ended {
            if held < limit {
                break;
            }
            if let Some(s) = map.remove(&id) {
                let bytes = s.memory_bytes();
                held = held.saturating_sub(bytes);
                tracing::info!(session_id = %id, bytes, held, limit, "lingering session evicted: memory limit reached");
            }
        }
        held
    }

    /// Ends `session` and removes it once its linger time is over (or
    /// sooner, when the memory limit needs its bytes).
    pub fn end(self: &Arc<Self>, session: &Arc<Session>, reason: EndReason, detail: String) {
        if session.end(reason, detail) {
            self.enforce_memory(&mut self.map());
            self.schedule_removal(session);
        }
    }

    /// The publisher `generation` of `session` vanished: give it the grace
    /// period to come back, then end the session.
    pub fn publisher_vanished(self: &Arc<Self>, session: &Arc<Session>, generation: u64) {
        if !session.publisher_vanished(generation) {
            return;
        }
        tracing::info!(session_id = %session.id, grace = ?self.defaults.publisher_grace, "publisher vanished; waiting for it to come back");
        let reg = self.clone();
        // Weak: a timer must not keep an evicted session's media alive.
        let session = Arc::downgrade(session);
        let grace = self.defaults.publisher_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let Some(session) = session.upgrade() else {
                return;
            };
            if session.grace_expired(generation) {
                reg.enforce_memory(&mut reg.map());
                reg.schedule_removal(&session);
            }
        });
    }

    fn schedule_removal(self: &Arc<Self>, session: &Arc<Session>) {
        // Weak: the linger timer must not keep a session the memory limit
        // evicted (or a newer one replaced) alive until it fires.
        let reg = Arc::downgrade(self);
        let weak = Arc::downgrade(session);
        let id = session.id.clone();
        let linger = self.defaults.linger;
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            let (Some(reg), Some(session)) = (reg.upgrade(), weak.upgrade()) else {
                return;
            };
            let mut map = reg.map();
            if map.get(&id).is_some_and(|s| Arc::ptr_eq(s, &session)) {
                map.remove(&id);
            }
        });
    }

    /// Ends every session (server shutdown): playlists are closed and
    /// subscribers told.
    pub fn shutdown(self: &Arc<Self>) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.changed.notify_waiters();
        for s in self.sessions() {
            s.end(
                EndReason::ServerShutdown,
                "the server is shutting down".into(),
            );
        }
    }
}

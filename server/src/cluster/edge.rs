//! The edge's side: sessions found in the lease bucket, each read from its
//! subject into a mirror session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::wire::{self, Decoded, Decoder, Received};
use super::{session_of_token, session_token, Lease, LEASE_RENEW, STREAM};
use crate::session::replica::ReplicaItem;
use crate::session::{EndReason, Registry, Session};

/// Serves the cluster's sessions on this node (see the module docs).
pub struct Edge {
    js: jetstream::Context,
    kv: jetstream::kv::Store,
    registry: Arc<Registry>,
    /// Largest item (a frame in fragments) accepted, bytes.
    max_item_bytes: usize,
    followers: Mutex<HashMap<String, Follower>>,
    /// The connection to the cluster is up.
    up: AtomicBool,
}

/// A session being read.
struct Follower {
    subject: String,
    /// Tells its task to go on with another subject (a takeover: the
    /// subject, and the last message of the old one to read first).
    switch: tokio::sync::mpsc::Sender<(String, u64)>,
    session: Arc<Session>,
    task: JoinHandle<()>,
    /// Its items cannot be trusted any more (a gap): not served.
    broken: Arc<AtomicBool>,
}

impl Edge {
    /// `max_item_bytes`: the largest item (a frame, in fragments) read,
    /// bytes; a larger one breaks the session off (its origin would not
    /// have taken it with the same `--max-nal-bytes`).
    pub fn new(
        js: jetstream::Context,
        kv: jetstream::kv::Store,
        registry: Arc<Registry>,
        max_item_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            js,
            kv,
            registry,
            max_item_bytes,
            followers: Mutex::new(HashMap::new()),
            up: AtomicBool::new(true),
        })
    }

    fn followers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Follower>> {
        self.followers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches the leases (and re-watches after an outage) and checks the
    /// sessions followed, until aborted.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let sweeper = {
            let edge = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(LEASE_RENEW);
                loop {
                    tick.tick().await;
                    edge.sweep().await;
                }
            })
        };
        let edge = self.clone();
        tokio::spawn(async move {
            let _sweeper = AbortOnDrop(sweeper);
            loop {
                match edge.kv.watch_all().await {
                    Ok(mut watch) => {
                        while let Some(entry) = watch.next().await {
                            match entry {
                                Ok(e) => edge.lease(e),
                                Err(e) => {
                                    tracing::warn!(error = %e, "cluster lease watch failed");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch the cluster's leases"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// The connection to the cluster went up or down: sessions are served
    /// only while it is up (and their items are whole).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        for f in self.followers().values() {
            f.session
                .set_readable(up && !f.broken.load(Ordering::Relaxed));
        }
    }

    /// A lease was put: follow a session not followed yet.
    fn lease(&self, e: jetstream::kv::Entry) {
        if e.operation != jetstream::kv::Operation::Put {
            return;
        }
        let Some(id) = session_of_token(&e.key) else {
            return;
        };
        let lease: Lease = match serde_json::from_slice(&e.value) {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(session_id = %id, error = %err, "unreadable lease ignored");
                return;
            }
        };
        let mut followers = self.followers();
        if let Some(f) = followers.get_mut(&id) {
            if f.subject == lease.subject {
                return;
            }
            // Another origin took the session over (its publisher failed
            // over): the same session goes on from the new subject, after
            // the old one is read up to where the new owner went on.
            if let (Some(old), Some(after)) = (&lease.continues, lease.resume_after) {
                if *old == f.subject && !lease.ended && !f.task.is_finished() {
                    tracing::info!(session_id = %id, owner = %lease.owner, subject = %lease.subject, "the session moved to another origin: following it there");
                    if f.switch.try_send((lease.subject.clone(), after)).is_ok() {
                        f.subject = lease.subject;
                        return;
                    }
                }
            }
            // Another instance of the session (a new publisher on some
            // origin): the old one is over.
            f.task.abort();
            self.registry.end(
                &f.session,
                EndReason::PublisherGone,
                "the session restarted on another origin".into(),
            );
            followers.remove(&id);
        }
        if lease.ended {
            return;
        }
        let session = match self.registry.mirror(&id, Arc::new(lease.start.clone())) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(session_id = %id, error = %err, "cluster session not served");
                return;
            }
        };
        session.set_readable(self.up.load(Ordering::Relaxed));
        let broken = Arc::new(AtomicBool::new(false));
        let (switch, switches) = tokio::sync::mpsc::channel(4);
        let task = tokio::spawn(tracing::Instrument::instrument(
            follow(
                self.max_item_bytes,
                self.js.clone(),
                self.registry.clone(),
                session.clone(),
                lease.subject.clone(),
                broken.clone(),
                switches,
            ),
            tracing::info_span!("follow", session_id = %id),
        ));
        tracing::info!(session_id = %id, owner = %lease.owner, subject = %lease.subject, "following a cluster session");
        followers.insert(
            id,
            Follower {
                subject: lease.subject,
                switch,
                session,
                task,
                broken,
            },
        );
    }

    /// Ends the sessions whose lease expired (their origin is gone) and
    /// forgets those that ended.
    async fn sweep(&self) {
        let ids: Vec<(String, String)> = self
            .followers()
            .iter()
            .map(|(id, f)| (id.clone(), f.subject.clone()))
            .collect();
        for (id, subject) in ids {
            let ended = self
                .followers()
                .get(&id)
                .is_some_and(|f| f.session.is_ended() && f.task.is_finished());
            if ended {
                self.followers().remove(&id);
                continue;
            }
            if !self.up.load(Ordering::Relaxed) {
                continue;
            }
            // Only a definite answer counts: an error is not an expiry.
            let Ok(entry) = self.kv.get(session_token(&id)).await else {
                continue;
            };
            // A lease that continues this subject (a takeover the watch
            // has not delivered yet) is not an expiry.
            let expired = match entry {
                None => true,
                Some(v) => serde_json::from_slice::<Lease>(&v)
                    .map(|l| l.subject != subject && l.continues.as_deref() != Some(&subject))
                    .unwrap_or(false),
            };
            if expired {
                let mut followers = self.followers();
                if let Some(f) = followers.get(&id).filter(|f| f.subject == subject) {
                    tracing::warn!(session_id = %id, "the session's lease expired: its origin is gone");
                    f.task.abort();
                    self.registry.end(
                        &f.session,
                        EndReason::PublisherGone,
                        "the origin stopped renewing the session's lease".into(),
                    );
                    followers.remove(&id);
                }
            }
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads a session's subject from the start of what the stream holds,
/// joins at the first segment start, and feeds the mirror session. A
/// switch `(subject, after)` (a takeover) makes it read the current subject
/// up to stream sequence `after`, then the new one from its start, into
/// the same session.
async fn follow(
    max_item_bytes: usize,
    js: jetstream::Context,
    registry: Arc<Registry>,
    session: Arc<Session>,
    mut subject: String,
    broken: Arc<AtomicBool>,
    mut switches: tokio::sync::mpsc::Receiver<(String, u64)>,
) {
    let break_off = |why: &str| {
        tracing::error!(session_id = %session.id, why, "cluster session not served any more");
        broken.store(true, Ordering::Relaxed);
        session.set_readable(false);
    };
    let mut decoder = Decoder::default();
    let mut joined = false;
    // A segment's last part, until the segment's record (the next message)
    // comes: both are applied at once.
    let mut held: Option<ReplicaItem> = None;
    // The stream sequence of the last message read: after an outage the
    // consumer is made again from the one after it (the server may have
    // lost the old consumer), so nothing is skipped or read twice.
    let mut last_read: Option<u64> = None;
    let mut backoff = Duration::from_millis(100);
    let mut pending_switch: Option<(String, u64)> = None;
    let mut switches_open = true;
    'subjects: loop {
        let start = match last_read {
            None => jetstream::consumer::DeliverPolicy::All,
            Some(n) => jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: n.saturating_add(1),
            },
        };
        let messages = async {
            let stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy: start,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        };
        let mut messages = match messages.await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(session_id = %session.id, error = %e, "cannot read the session's items yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            if let Some((_, after)) = &pending_switch {
                if last_read.is_some_and(|n| n >= *after) {
                    if let Some((next, _)) = pending_switch.take() {
                        // (A last part whose record never came: the new
                        // owner closes its segment from the parts.)
                        if let Some(part) = held.take() {
                            session.apply_replica(vec![part]);
                        }
                        tracing::info!(session_id = %session.id, subject = %next, "the old owner's items read: going on with the new owner's");
                        subject = next;
                        last_read = None;
                        decoder = Decoder::default();
                        continue 'subjects;
                    }
                }
            }
            let m = tokio::select! {
                m = messages.next() => m,
                s = switches.recv(), if pending_switch.is_none() && switches_open => {
                    switches_open = s.is_some();
                    pending_switch = s;
                    continue;
                }
            };
            let Some(m) = m else { break };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(session_id = %session.id, error = %e, "reading the session's items; reading again");
                    break;
                }
            };
            if let Ok(info) = m.info() {
                last_read = Some(info.stream_sequence);
            }
            let reader = Reader {
                registry: &registry,
                session: &session,
                max_item_bytes,
            };
            match reader.read(&mut decoder, &mut joined, &mut held, &m.payload) {
                Flow::Go => {}
                Flow::Stop => return,
                Flow::Broken(why) => {
                    break_off(&why);
                    return;
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// What reading a message leads to.
enum Flow {
    Go,
    /// The session ended.
    Stop,
    /// Its items cannot be trusted any more.
    Broken(String),
}

/// Reads a session's messages into its mirror session.
struct Reader<'a> {
    registry: &'a Arc<Registry>,
    session: &'a Arc<Session>,
    max_item_bytes: usize,
}

impl Reader<'_> {
    /// Reads one message of the session's subject; `held`: a segment's
    /// last part waiting for the segment's record.
    fn read(
        &self,
        decoder: &mut Decoder,
        joined: &mut bool,
        held: &mut Option<ReplicaItem>,
        payload: &[u8],
    ) -> Flow {
        let (registry, session) = (self.registry, self.session);
        ::metrics::counter!(crate::metrics::CLUSTER_RECEIVED).increment(1);
        let joined_now = *joined;
        let body = match decoder.decode(payload, self.max_item_bytes) {
            Ok(Decoded::Body(b)) => b,
            Ok(Decoded::Partial) | Ok(Decoded::Unknown) => return Flow::Go,
            Ok(Decoded::Missing { expected, got }) if joined_now => {
                return Flow::Broken(format!("item {expected} is missing (got {got})"));
            }
            Err(e) if joined_now => return Flow::Broken(e.to_string()),
            // Before joining, whatever came first may be cut off.
            Ok(Decoded::Missing { .. }) | Err(_) => {
                *decoder = Decoder::default();
                return Flow::Go;
            }
        };
        match wire::received(*body) {
            Ok(Received::Sync(config)) => {
                if !joined_now {
                    *joined = true;
                    session.apply_replica(vec![ReplicaItem::Config(config)]);
                }
                Flow::Go
            }
            Ok(Received::AudioSync(config)) => {
                if !joined_now {
                    *joined = true;
                    session.apply_replica(vec![ReplicaItem::AudioConfig(config)]);
                }
                Flow::Go
            }
            Ok(Received::Gap(lost)) if joined_now => {
                Flow::Broken(format!("the origin lost {lost} items"))
            }
            Ok(Received::Gap(_)) => Flow::Go,
            Ok(Received::Item(_) | Received::ClosingPart(_)) if !joined_now => Flow::Go,
            Ok(Received::ClosingPart(part)) => {
                if let Some(earlier) = held.replace(ReplicaItem::Part(part)) {
                    session.apply_replica(vec![earlier]);
                }
                Flow::Go
            }
            Ok(Received::Item(item)) => {
                let end = matches!(item, ReplicaItem::End);
                let items = match held.take() {
                    Some(part) => vec![part, item],
                    None => vec![item],
                };
                session.apply_replica(items);
                if end {
                    registry.end(
                        session,
                        EndReason::EndOfStream,
                        "the session ended on its origin".into(),
                    );
                    return Flow::Stop;
                }
                Flow::Go
            }
            Err(e) if joined_now => Flow::Broken(e.to_string()),
            Err(_) => Flow::Go,
        }
    }
}

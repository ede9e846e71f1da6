//! The origin's side: each session's items, published to JetStream by a
//! task of their own, and the session's lease, renewed while it lives.
//!
//! Messages are published one at a time, each acknowledged before the next
//! (so the stream holds them in order, whatever happens to the connection),
//! with a message id (`<subject>-<number>`): a message whose
//! acknowledgement was lost is published again and JetStream's duplicate
//! window drops the second copy. While NATS is unreachable the task retries
//! and the session's queue takes the backlog, so a short outage is caught
//! up without a gap; an outage longer than the queue lasts, or than
//! [`RETRY_FOR`], loses items, which the numbering shows to every edge.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::takeover::Tail;
use super::wire::{self, Body, Decoded, Decoder, Encoder};
use super::{session_token, Lease, LEASE_RENEW, MAX_PAYLOAD, STREAM, SUBJECT_PREFIX};
use crate::engine::frame::AudioConfig;
use crate::engine::mux::parts::{Formats, PartMuxer};
use crate::engine::CodecConfig;
use crate::session::now_unix_ns;
use crate::session::replica::{
    ReplicaItem, ReplicaSegment, ReplicaTx, Replicator, TakenOver, TakeoverFuture,
};

/// How long one message is retried before it is given up (JetStream's
/// default duplicate window, within which a retry is never stored twice).
pub const RETRY_FOR: Duration = Duration::from_secs(120);
/// The wait for one acknowledgement.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// The longest a takeover reads the old owner's items before giving up
/// (and starting the session over).
const TAKEOVER_READ: Duration = Duration::from_secs(10);
/// The longest a new session's publisher waits for its lease to be read.
const LEASE_READ: Duration = Duration::from_secs(2);

/// Replicates an origin's sessions (see the module docs).
pub struct Origin {
    js: jetstream::Context,
    kv: jetstream::kv::Store,
    node_id: String,
    queue: usize,
    /// Largest item (a frame, in fragments) read in a takeover, bytes.
    max_item_bytes: usize,
    runtime: tokio::runtime::Handle,
    /// Takeovers found, waiting for their session's [`Replicator::attach`].
    takeovers: Arc<Mutex<HashMap<String, Takeover>>>,
}

/// What a new owner carries from a takeover into its session's lease.
#[derive(Debug)]
struct Takeover {
    /// The old copy's subject and the last message of it gone on from.
    continues: String,
    resume_after: u64,
    /// The lease's revision when read (the takeover is a compare-and-set
    /// on it).
    revision: u64,
    /// The old copy's open segment, closed: the new subject's first item.
    orphan: Option<ReplicaSegment>,
    /// The number of this copy's first part.
    next_part: u64,
}

impl Origin {
    /// `max_item_bytes`: the largest item (a frame, in fragments) read
    /// from another origin's subject in a takeover, bytes.
    pub fn new(
        js: jetstream::Context,
        kv: jetstream::kv::Store,
        node_id: String,
        queue: usize,
        max_item_bytes: usize,
    ) -> Self {
        Self {
            js,
            kv,
            node_id,
            queue,
            max_item_bytes,
            runtime: tokio::runtime::Handle::current(),
            takeovers: Arc::default(),
        }
    }
}

/// Finds whether `session_id` is live on another origin and, if so, reads
/// its items up to the last one the stream holds into a [`Tail`]. `None`:
/// nothing to continue (no lease, an ended session, nothing retained, or
/// the reading failed: the session starts over, as without a cluster).
async fn find_takeover(
    js: jetstream::Context,
    kv: jetstream::kv::Store,
    node_id: String,
    max_item_bytes: usize,
    session_id: String,
) -> Option<(TakenOver, Takeover)> {
    let key = session_token(&session_id);
    // A cluster that does not answer soon is not waited for: the publisher
    // is waiting, and the session starts over as without a cluster.
    let entry = tokio::time::timeout(LEASE_READ, kv.entry(&key))
        .await
        .ok()?
        .ok()??;
    if entry.operation != jetstream::kv::Operation::Put {
        return None;
    }
    let lease: Lease = serde_json::from_slice(&entry.value).ok()?;
    if lease.ended {
        return None;
    }
    let stream = tokio::time::timeout(LEASE_READ, js.get_stream(STREAM))
        .await
        .ok()?
        .ok()?;
    let last = tokio::time::timeout(
        LEASE_READ,
        stream.get_last_raw_message_by_subject(&lease.subject),
    )
    .await
    .ok()?
    .ok()?
    .sequence;
    let read = read_tail(&stream, &lease.subject, last, max_item_bytes);
    let tail = match tokio::time::timeout(TAKEOVER_READ, read).await {
        Ok(Ok(tail)) => tail,
        Ok(Err(e)) => {
            tracing::warn!(session_id = %session_id, error = %e, "cannot read the session's items from the cluster: it starts over");
            return None;
        }
        Err(_) => {
            tracing::warn!(session_id = %session_id, "reading the session's items from the cluster took over {TAKEOVER_READ:?}: it starts over");
            return None;
        }
    };
    let Some((point, orphan)) = tail.resume(&lease.start) else {
        tracing::info!(session_id = %session_id, owner = %lease.owner, "the session on another origin cannot be continued here (audio-only, ended, or nothing listed yet): it starts over");
        return None;
    };
    ::metrics::counter!(crate::metrics::CLUSTER_TAKEOVERS).increment(1);
    tracing::info!(
        session_id = %session_id,
        from = %lease.owner,
        to = %node_id,
        next_segment = point.next_segment,
        next_part = point.next_part,
        items = tail.items(),
        "taking over the session from another origin"
    );
    let next_part = point.next_part;
    let taken = TakenOver {
        point,
        closed_segment: orphan.as_ref().map(|o| o.record.clone()),
        audio_rate: tail.audio_rate(),
    };
    Some((
        taken,
        Takeover {
            continues: lease.subject,
            resume_after: last,
            revision: entry.revision,
            orphan,
            next_part,
        },
    ))
}

/// Reads `subject` from the start of what the stream holds up to stream
/// sequence `last`, into a [`Tail`].
async fn read_tail(
    stream: &jetstream::stream::Stream,
    subject: &str,
    last: u64,
    max_item_bytes: usize,
) -> Result<Tail, String> {
    use futures_util::StreamExt;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: subject.to_string(),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut tail = Tail::default();
    let mut decoder = Decoder::default();
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| e.to_string())?;
        let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
        match decoder.decode(&m.payload, max_item_bytes) {
            Ok(Decoded::Body(body)) => {
                if let Ok(r) = wire::received(*body) {
                    tail.receive(r);
                }
            }
            Ok(Decoded::Partial) | Ok(Decoded::Unknown) => {}
            // The first messages held may be the end of a cut-off item;
            // a message lost later leaves numbers nobody can trust.
            Ok(Decoded::Missing { expected, got }) => {
                if tail.items() > 0 {
                    return Err(format!("item {expected} is missing (got {got})"));
                }
                decoder = Decoder::default();
            }
            Err(e) if tail.items() > 0 => return Err(e.to_string()),
            Err(_) => decoder = Decoder::default(),
        }
        if seq >= last {
            return Ok(tail);
        }
    }
    Err("the stream ended early".into())
}

impl Replicator for Origin {
    fn takeover(&self, session_id: &str) -> TakeoverFuture {
        let (js, kv) = (self.js.clone(), self.kv.clone());
        let (node, max) = (self.node_id.clone(), self.max_item_bytes);
        let takeovers = self.takeovers.clone();
        let id = session_id.to_string();
        Box::pin(async move {
            let (point, t) = find_takeover(js, kv, node, max, id.clone()).await?;
            let mut map = takeovers.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: one per session being created (attach takes it).
            if map.len() >= 1024 {
                map.clear();
            }
            map.insert(id, t);
            Some(point)
        })
    }

    fn attach(&self, session_id: &str, resumed: bool) -> Option<ReplicaTx> {
        let (tx, rx) = ReplicaTx::channel(self.queue);
        // A new subject per session instance: a later session of the same
        // id never mixes with this one's items.
        let subject = format!(
            "{SUBJECT_PREFIX}.{}.{}",
            session_token(session_id),
            now_unix_ns()
        );
        let takeover = self
            .takeovers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session_id)
            .filter(|_| resumed);
        let task = Publisher {
            takeover,
            revision: None,
            lost: false,
            js: self.js.clone(),
            kv: self.kv.clone(),
            key: session_token(session_id),
            session_id: session_id.to_string(),
            owner: self.node_id.clone(),
            subject,
            lease: None,
            encoder: Encoder::default(),
            configs: BTreeMap::new(),
            audio: None,
            last_frame_segment: None,
            last_audio_segment: None,
            next_item: 0,
            down: false,
        };
        let span = tracing::info_span!("replicate", session_id = %session_id);
        self.runtime
            .spawn(tracing::Instrument::instrument(task.run(rx), span));
        Some(tx)
    }
}

/// One session's publishing task.
struct Publisher {
    /// The session continues another origin's (until its lease is put).
    takeover: Option<Takeover>,
    /// The lease's revision as last written (renewals are a
    /// compare-and-set on it, so a node that lost the session to another
    /// never writes over its lease).
    revision: Option<u64>,
    /// Another origin took the session over: nothing more is published.
    lost: bool,
    js: jetstream::Context,
    kv: jetstream::kv::Store,
    key: String,
    session_id: String,
    owner: String,
    subject: String,
    lease: Option<Lease>,
    encoder: Encoder,
    /// Parameter sets by id, for the `Sync` in front of each segment.
    configs: BTreeMap<u32, Arc<CodecConfig>>,
    /// The audio format, sent again after each `Sync`.
    audio: Option<Arc<AudioConfig>>,
    last_frame_segment: Option<u64>,
    /// The segment of the last audio frame (an audio-only session's
    /// `AudioSync` goes before the first of each segment).
    last_audio_segment: Option<u64>,
    /// The next item number expected from the queue (a jump: items were
    /// dropped).
    next_item: u64,
    /// Publishing is failing (logged once per outage).
    down: bool,
}

impl Publisher {
    async fn run(mut self, mut rx: mpsc::Receiver<(u64, ReplicaItem)>) {
        let mut renew = tokio::time::interval(LEASE_RENEW);
        loop {
            tokio::select! {
                item = rx.recv() => {
                    let Some((n, item)) = item else { break };
                    // A part and the record of the segment it ends are
                    // queued together: marked, an edge applies them at once.
                    let next = match &item {
                        ReplicaItem::Part(_) => rx.try_recv().ok(),
                        _ => None,
                    };
                    let closes = matches!(
                        (&item, &next),
                        (ReplicaItem::Part(p), Some((_, ReplicaItem::Segment(s))))
                            if s.record.sequence == p.segment
                    );
                    let mut end = false;
                    for (n, item) in std::iter::once((n, item)).chain(next) {
                        end |= matches!(item, ReplicaItem::End);
                        let closing = closes && matches!(item, ReplicaItem::Part(_));
                        self.item(n, item, closing).await;
                    }
                    if end {
                        break;
                    }
                }
                _ = renew.tick() => self.renew().await,
            }
        }
        if let Some(l) = self.lease.as_mut() {
            l.ended = true;
        }
        self.renew().await;
        tracing::debug!(session_id = %self.session_id, "replication finished");
    }

    /// Publishes one item; `closes_segment`: it is a part and the next
    /// item is the record of the segment it ends.
    async fn item(&mut self, n: u64, item: ReplicaItem, closes_segment: bool) {
        if self.lost {
            return;
        }
        if n != self.next_item {
            let lost = n.saturating_sub(self.next_item);
            tracing::warn!(session_id = %self.session_id, lost, "replication queue overflowed: items lost; edges stop serving this session");
            self.publish(Body::Gap(lost)).await;
        }
        self.next_item = n.wrapping_add(1);
        match &item {
            ReplicaItem::Start(start) => {
                let takeover = self.takeover.take();
                self.revision = takeover.as_ref().map(|t| t.revision);
                self.lease = Some(Lease {
                    owner: self.owner.clone(),
                    subject: self.subject.clone(),
                    start: start.as_ref().clone(),
                    last_segment: None,
                    last_part: None,
                    discontinuity_sequence: 0,
                    ended: false,
                    renewed_ms: 0,
                    continues: takeover.as_ref().map(|t| t.continues.clone()),
                    resume_after: takeover.as_ref().map(|t| t.resume_after),
                });
                // The old copy's open segment, closed, then the
                // discontinuity: what edges apply between the old subject
                // and this one's first segment.
                if let Some(t) = takeover {
                    if let Some(orphan) = t.orphan {
                        let body = wire::body_of(&ReplicaItem::Segment(Arc::new(orphan)));
                        if let Some(body) = body {
                            self.publish(body).await;
                        }
                    }
                    self.publish(Body::Discontinuity(true)).await;
                    // This copy's MPEG-TS counters start afresh (a
                    // discontinuity allows it): edges continue them from its
                    // first part, so its TS bytes are theirs.
                    let fresh = PartMuxer::new(Formats::default()).ts_continuity();
                    let item = ReplicaItem::TsContinuity {
                        after_part: t.next_part.saturating_sub(1),
                        counters: fresh,
                    };
                    if let Some(body) = wire::body_of(&item) {
                        self.publish(body).await;
                    }
                }
                self.renew().await;
                return;
            }
            ReplicaItem::Config(c) => {
                self.configs.insert(c.id, c.clone());
                while self.configs.len() > 8 {
                    self.configs.pop_first();
                }
            }
            ReplicaItem::Frame(f) => {
                if self.last_frame_segment != Some(f.segment) {
                    self.last_frame_segment = Some(f.segment);
                    if let Some(c) = self.configs.get(&f.config_id) {
                        let sync = Body::Sync(c.as_ref().into());
                        self.publish(sync).await;
                        if let Some(a) = &self.audio {
                            let again = Body::AudioConfig(a.as_ref().into());
                            self.publish(again).await;
                        }
                    }
                }
            }
            ReplicaItem::Part(p) => {
                if let Some(l) = self.lease.as_mut() {
                    l.last_part = Some(p.number);
                }
            }
            ReplicaItem::Segment(s) => {
                if let Some(l) = self.lease.as_mut() {
                    l.last_segment = Some(s.record.sequence);
                    l.discontinuity_sequence = s.record.discontinuity_sequence;
                }
            }
            ReplicaItem::AudioConfig(a) => self.audio = Some(a.clone()),
            // An audio-only session (no video parameter sets, no video
            // frame): a join point before each segment's first audio frame.
            ReplicaItem::AudioFrame(f)
                if self.configs.is_empty()
                    && self.last_frame_segment.is_none()
                    && self.last_audio_segment != Some(f.segment) =>
            {
                self.last_audio_segment = Some(f.segment);
                if let Some(a) = &self.audio {
                    let sync = Body::AudioSync(a.as_ref().into());
                    self.publish(sync).await;
                }
            }
            ReplicaItem::AudioFrame(_)
            | ReplicaItem::Discontinuity
            | ReplicaItem::PublisherAway
            | ReplicaItem::End
            | ReplicaItem::TsContinuity { .. } => {}
        }
        if let Some(mut body) = wire::body_of(&item) {
            if let Body::Part(p) = &mut body {
                p.closes_segment = closes_segment;
            }
            self.publish(body).await;
        }
    }

    /// Publishes one body (its fragments).
    async fn publish(&mut self, body: Body) {
        for (seq, payload) in self.encoder.encode(body, MAX_PAYLOAD) {
            self.send(seq, payload).await;
        }
    }

    /// Publishes one message and waits for its acknowledgement, retrying
    /// (same message id) with back-off for up to [`RETRY_FOR`].
    async fn send(&mut self, seq: u64, payload: Bytes) {
        let id = format!("{}-{seq}", self.subject);
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                let msg = jetstream::message::PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(&id);
                let ack = self
                    .js
                    .send_publish(self.subject.clone(), msg)
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())
            };
            let error = match tokio::time::timeout(ACK_WAIT, attempt).await {
                Ok(Ok(_)) => {
                    ::metrics::counter!(crate::metrics::CLUSTER_PUBLISHED).increment(1);
                    if self.down {
                        self.down = false;
                        tracing::info!(session_id = %self.session_id, "replication resumed");
                    }
                    return;
                }
                Ok(Err(e)) => e,
                Err(_) => "no acknowledgement".to_string(),
            };
            self.failed(&error);
            if started.elapsed() >= RETRY_FOR {
                ::metrics::counter!(crate::metrics::CLUSTER_DROPPED).increment(1);
                tracing::warn!(session_id = %self.session_id, seq, "a message given up after {RETRY_FOR:?}; edges stop serving this session");
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Publishing failed (logged once per outage).
    fn failed(&mut self, error: &str) {
        if !self.down {
            self.down = true;
            tracing::warn!(session_id = %self.session_id, error, "publishing to the cluster failed; the session is served locally");
        }
    }

    /// Writes the lease (its renewal): a compare-and-set on the revision
    /// last written, so a session another origin took over is never taken
    /// back by this one's renewal (this one stops publishing it instead).
    async fn renew(&mut self) {
        if self.lost {
            return;
        }
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        lease.renewed_ms = now_unix_ns() / 1_000_000;
        let Ok(value) = serde_json::to_vec(lease) else {
            return;
        };
        let value = Bytes::from(value);
        let write = async {
            match self.revision {
                Some(rev) => self
                    .kv
                    .update(&self.key, value.clone(), rev)
                    .await
                    .map_err(|e| {
                        let wrong = e.kind() == jetstream::kv::UpdateErrorKind::WrongLastRevision;
                        (wrong, e.to_string())
                    }),
                None => self
                    .kv
                    .put(&self.key, value.clone())
                    .await
                    .map_err(|e| (false, e.to_string())),
            }
        };
        match tokio::time::timeout(LEASE_RENEW, write).await {
            Ok(Ok(rev)) => self.revision = Some(rev),
            Ok(Err((true, _))) => self.lease_moved().await,
            Ok(Err((false, e))) => self.failed(&e),
            Err(_) => self.failed("the lease renewal timed out"),
        }
    }

    /// The lease is not as this node last wrote it: another origin took the
    /// session over (this one stops publishing it), or it expired during an
    /// outage (it is written afresh at the next renewal).
    async fn lease_moved(&mut self) {
        let Ok(entry) = self.kv.entry(&self.key).await else {
            return;
        };
        let current = entry
            .as_ref()
            .filter(|e| e.operation == jetstream::kv::Operation::Put)
            .and_then(|e| serde_json::from_slice::<Lease>(&e.value).ok());
        match current {
            Some(l) if l.subject != self.subject => {
                self.lost = true;
                ::metrics::counter!(crate::metrics::CLUSTER_TAKEN_OVER).increment(1);
                tracing::warn!(session_id = %self.session_id, owner = %l.owner, "another origin took the session over: no longer replicated from here (its publisher is now there)");
            }
            Some(_) => self.revision = entry.map(|e| e.revision),
            None => self.revision = None,
        }
    }
}

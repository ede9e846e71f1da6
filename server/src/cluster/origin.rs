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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::wire::{self, Body, Encoder};
use super::{session_token, Lease, LEASE_RENEW, MAX_PAYLOAD, SUBJECT_PREFIX};
use crate::engine::frame::AudioConfig;
use crate::engine::CodecConfig;
use crate::session::now_unix_ns;
use crate::session::replica::{ReplicaItem, ReplicaTx, Replicator};

/// How long one message is retried before it is given up (JetStream's
/// default duplicate window, within which a retry is never stored twice).
pub const RETRY_FOR: Duration = Duration::from_secs(120);
/// The wait for one acknowledgement.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Replicates an origin's sessions (see the module docs).
pub struct Origin {
    js: jetstream::Context,
    kv: jetstream::kv::Store,
    node_id: String,
    queue: usize,
    runtime: tokio::runtime::Handle,
}

impl Origin {
    pub fn new(
        js: jetstream::Context,
        kv: jetstream::kv::Store,
        node_id: String,
        queue: usize,
    ) -> Self {
        Self {
            js,
            kv,
            node_id,
            queue,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl Replicator for Origin {
    fn attach(&self, session_id: &str) -> Option<ReplicaTx> {
        let (tx, rx) = ReplicaTx::channel(self.queue);
        // A new subject per session instance: a later session of the same
        // id never mixes with this one's items.
        let subject = format!(
            "{SUBJECT_PREFIX}.{}.{}",
            session_token(session_id),
            now_unix_ns()
        );
        let task = Publisher {
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
                    let end = matches!(item, ReplicaItem::End);
                    self.item(n, item).await;
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

    async fn item(&mut self, n: u64, item: ReplicaItem) {
        if n != self.next_item {
            let lost = n.saturating_sub(self.next_item);
            tracing::warn!(session_id = %self.session_id, lost, "replication queue overflowed: items lost; edges stop serving this session");
            self.publish(Body::Gap(lost)).await;
        }
        self.next_item = n.wrapping_add(1);
        match &item {
            ReplicaItem::Start(start) => {
                self.lease = Some(Lease {
                    owner: self.owner.clone(),
                    subject: self.subject.clone(),
                    start: start.as_ref().clone(),
                    last_segment: None,
                    last_part: None,
                    discontinuity_sequence: 0,
                    ended: false,
                    renewed_ms: 0,
                });
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
            | ReplicaItem::End
            | ReplicaItem::TsContinuity { .. } => {}
        }
        if let Some(body) = wire::body_of(&item) {
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

    /// Puts the lease (its renewal).
    async fn renew(&mut self) {
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        lease.renewed_ms = now_unix_ns() / 1_000_000;
        let Ok(value) = serde_json::to_vec(lease) else {
            return;
        };
        let put = self.kv.put(&self.key, Bytes::from(value));
        match tokio::time::timeout(LEASE_RENEW, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.failed(&e.to_string()),
            Err(_) => self.failed("the lease renewal timed out"),
        }
    }
}

//! `SliceService.StreamSlices`: proto in, session calls, proto out.
//!
//! The first message decides the role. A publisher's messages are pushed
//! into its session by a task that owns the request stream; its responses
//! (an ack, then the session's events, and frames if it asked for an echo)
//! come from a subscriber task like any viewer's. A subscriber's task reads
//! the session's broadcast and writes into a small bounded channel that
//! tonic drains as the client reads, so a slow client makes only its own
//! task wait, and then lag.

pub mod convert;
pub mod jobs;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use liveslice_proto::v1 as pb;
use pb::slice_service_server::SliceService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{Access, Auth, AuthError};
use crate::engine::pipeline::AudioInput;
use crate::engine::timing::FrameRate;
use crate::engine::PipelineOptions;
use crate::session::log::Read;
use crate::session::subscriber::{Delivery, SubscriberFilter, SubscriberOptions};
use crate::session::{
    EndReason, PushError, Registry, RegistryError, Session, SessionItem, SessionOptions, Snapshot,
    SubscriberGuard, Subscription,
};

/// Limits and defaults of the gRPC side. Publisher and subscriber policy
/// (idle publishers, how long a subscriber waits for a session, lag,
/// subscriber limits) is the sessions': [`Registry::defaults`].
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub pipeline: PipelineOptions,
    pub first_message_timeout: Duration,
    /// Responses buffered per stream before the stream's task waits.
    pub response_buffer: usize,
    /// `--ladder`: run for every session published (not for renditions).
    pub ladder: Option<Arc<crate::ladder::Ladder>>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            pipeline: PipelineOptions::default(),
            first_message_timeout: Duration::from_secs(10),
            response_buffer: 32,
            ladder: None,
        }
    }
}

pub use crate::ids::{parse_session_id, validate_session_id, MAX_SESSION_ID_LEN};
pub const MAX_TARGET_FPS: i32 = 1000;

fn validate_fps(fps: i32) -> Result<Option<u32>, Status> {
    match fps {
        0 => Ok(None),
        1..=MAX_TARGET_FPS => Ok(Some(fps as u32)),
        _ => Err(Status::invalid_argument(format!(
            "target_fps must be between 0 (default) and {MAX_TARGET_FPS}, got {fps}"
        ))),
    }
}

/// What the service reads from a stream's first message before it touches
/// a session: the decoded session id, the validated `target_fps`, and the
/// role (given, or inferred: a first message with data, publish options or
/// `end_of_stream` publishes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstMessage {
    pub session_id: String,
    pub fps: Option<u32>,
    pub publish: bool,
}

/// The checks on a first message, without a network: the id decodes to a
/// valid one, `target_fps` is in range, the role is known. Pure, so it is
/// fuzzed on its own.
pub fn first_message(first: &pb::SliceRequest) -> Result<FirstMessage, Status> {
    let session_id = parse_session_id(&first.session_id).map_err(Status::invalid_argument)?;
    // A rendition of the session: its own id, SESSION~RENDITION.
    let session_id = crate::ids::rendition_id(&session_id, &first.rendition)
        .map_err(|e| Status::invalid_argument(format!("rendition {:?}: {e}", first.rendition)))?;
    let fps = validate_fps(first.target_fps)?;
    let role = pb::Role::try_from(first.role).unwrap_or(pb::Role::Unspecified);
    let publish = match role {
        pb::Role::Publish => true,
        pb::Role::Subscribe => false,
        pb::Role::Unspecified => {
            !first.data.is_empty() || first.publish.is_some() || first.end_of_stream
        }
    };
    Ok(FirstMessage {
        session_id,
        fps,
        publish,
    })
}

/// A publisher's pipeline options: the server's `base` with the first
/// message's publish options (0 keeps the default) and `target_fps` applied,
/// or `INVALID_ARGUMENT` naming the field out of range.
pub fn publish_pipeline(
    base: &PipelineOptions,
    p: &pb::PublishOptions,
    fps: Option<u32>,
) -> Result<PipelineOptions, Status> {
    let mut pipeline = base.clone();
    if p.segment_duration_ms != 0 {
        if !(100..=60_000).contains(&p.segment_duration_ms) {
            return Err(Status::invalid_argument(format!(
                "publish.segment_duration_ms must be 100..=60000, got {}",
                p.segment_duration_ms
            )));
        }
        pipeline.segment_target_ms = p.segment_duration_ms;
    }
    if p.window_segments != 0 {
        if !(1..=1000).contains(&p.window_segments) {
            return Err(Status::invalid_argument(format!(
                "publish.window_segments must be 1..=1000, got {}",
                p.window_segments
            )));
        }
        pipeline.window = p.window_segments as usize;
    }
    pipeline.target_rate = fps.map(|f| FrameRate::new(f, 1));
    Ok(pipeline)
}

fn registry_status(e: RegistryError, id: &str) -> Status {
    match e {
        RegistryError::AlreadyPublishing => {
            Status::already_exists(format!("session {id:?} already has a publisher"))
        }
        RegistryError::TooManySessions(_)
        | RegistryError::TooManySubscribers(_)
        | RegistryError::MemoryLimit { .. } => Status::resource_exhausted(e.to_string()),
        RegistryError::NotFound => Status::not_found(format!(
            "session {id:?} is not live (no publisher appeared within the wait time)"
        )),
        RegistryError::Ended => Status::not_found(format!(
            "session {id:?} has ended (its final playlists stay served over HTTP for --linger; \
             a new publisher may start it again)"
        )),
        RegistryError::ShuttingDown => Status::unavailable(e.to_string()),
        RegistryError::EdgeNode => Status::failed_precondition(e.to_string()),
    }
}

pub struct SliceServiceImpl {
    registry: Arc<Registry>,
    config: ServiceConfig,
    auth: Option<Arc<Auth>>,
}

impl SliceServiceImpl {
    pub fn new(registry: Arc<Registry>, config: ServiceConfig, auth: Option<Arc<Auth>>) -> Self {
        Self {
            registry,
            config,
            auth,
        }
    }
}

pub(crate) fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Forbidden => Status::permission_denied(e.to_string()),
        _ => Status::unauthenticated(format!(
            "{e} (send `authorization: Bearer <token>` metadata)"
        )),
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::SliceResponse, Status>> + Send>>;
type Out = mpsc::Sender<Result<pb::SliceResponse, Status>>;

#[tonic::async_trait]
impl SliceService for SliceServiceImpl {
    type StreamSlicesStream = ResponseStream;

    async fn stream_slices(
        &self,
        request: Request<Streaming<pb::SliceRequest>>,
    ) -> Result<Response<Self::StreamSlicesStream>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer)
            .map(str::to_string);
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(self.config.first_message_timeout, inbound.message())
            .await
        {
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "no first message arrived on the request stream",
                ))
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(Status::invalid_argument(
                    "the request stream ended before its first message",
                ))
            }
            Ok(Ok(Some(m))) => m,
        };
        let rejected = |s: Status| {
            crate::metrics::grpc_call("unknown", s.code());
            s
        };
        // From here on the session is the decoded id: `cam%31` is `cam1`.
        let checked = first_message(&first).map_err(rejected)?;
        let mut first = first;
        first.session_id = checked.session_id;
        let (fps, publish) = (checked.fps, checked.publish);
        let role = if publish { "publish" } else { "subscribe" };
        if let Some(auth) = &self.auth {
            let access = if publish {
                Access::Publish
            } else {
                Access::Play
            };
            let now = crate::session::now_unix_ns() / 1_000_000_000;
            if let Err(e) = auth.check(token.as_deref(), &first.session_id, access, now) {
                let status = auth_status(e);
                crate::metrics::grpc_call(role, status.code());
                return Err(status);
            }
        }
        let span = tracing::info_span!("stream", session_id = %first.session_id, role);
        let result = if publish {
            self.publish(first, fps, inbound).instrument(span).await
        } else {
            self.subscribe(first, fps, inbound).instrument(span).await
        };
        match result {
            Ok(response) => Ok(response.map(|stream| {
                Box::pin(CountedCall {
                    stream,
                    role,
                    counted: false,
                }) as ResponseStream
            })),
            Err(status) => {
                crate::metrics::grpc_call(role, status.code());
                Err(status)
            }
        }
    }
}

/// An accepted call's response stream, counted in
/// `liveslice_grpc_calls_total` once, with its final status: the error
/// that ends it, `OK` when it ends cleanly, `CANCELLED` when it is dropped
/// before either (the client went away).
struct CountedCall {
    stream: ResponseStream,
    role: &'static str,
    counted: bool,
}

impl CountedCall {
    fn count(&mut self, code: tonic::Code) {
        if !self.counted {
            self.counted = true;
            crate::metrics::grpc_call(self.role, code);
        }
    }
}

impl Stream for CountedCall {
    type Item = Result<pb::SliceResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let next = self.stream.as_mut().poll_next(cx);
        match &next {
            std::task::Poll::Ready(None) => self.count(tonic::Code::Ok),
            std::task::Poll::Ready(Some(Err(status))) => self.count(status.code()),
            _ => {}
        }
        next
    }
}

impl Drop for CountedCall {
    fn drop(&mut self) {
        self.count(tonic::Code::Cancelled);
    }
}

impl SliceServiceImpl {
    async fn publish(
        &self,
        first: pb::SliceRequest,
        fps: Option<u32>,
        inbound: Streaming<pb::SliceRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let id = first.session_id.clone();
        let p = first.publish.unwrap_or_default();
        let pipeline = publish_pipeline(&self.config.pipeline, &p, fps)?;
        let options = SessionOptions {
            pipeline,
            echo_frames: p.echo_frames,
        };
        // A session live on another origin of the cluster (its publisher
        // failed over to this one) continues here where that copy stopped.
        // (Not while the cluster is known to be unreachable: the session
        // is served locally, as any other then.)
        let resume = match self.registry.replicator() {
            Some(r)
                if self.registry.live(&id).is_none()
                    && self.registry.cluster_up() != Some(false) =>
            {
                r.takeover(&id).await
            }
            _ => None,
        };
        let (resume, closed_segment) = match resume {
            Some(t) => (
                Some(t.point),
                t.closed_segment
                    .map(|r| convert::segment_ready_event(&r, t.audio_rate)),
            ),
            None => (None, None),
        };
        let grant = self
            .registry
            .publish_resumed(&id, options, resume)
            .map_err(|e| registry_status(e, &id))?;
        let session = grant.session.clone();
        tracing::info!(resumed = grant.resumed, "publisher attached");
        if let Some(ladder) = &self.config.ladder {
            if crate::ids::rendition_of(&id).is_none() && session.claim_ladder() {
                ladder.start(self.registry.clone(), session.clone());
            }
        }

        let (tx, rx) = mpsc::channel(self.config.response_buffer);
        let opts = &session.options;
        let ack = convert::publish_ack(
            &id,
            grant.resumed,
            opts.pipeline.segment_target_ms,
            opts.pipeline.window as u32,
            closed_segment.filter(|_| grant.took_over),
        );
        let _ = tx.try_send(Ok(ack));
        // The publisher hears the session's events (and frames if echoed)
        // from now on, without a replay of the window.
        let (snapshot, sub, guard) = session.join_live(opts.echo_frames);
        // The publisher's own event stream is not a viewer: it does not
        // count against --max-subscribers (nor in the subscribers gauge).
        drop(guard);
        let sub_opts = SubscriberOptions {
            frames: opts.echo_frames,
            events: true,
            max_fps: None,
            segments_cmaf: false,
            segments_ts: false,
            parts: false,
            audio: false,
        };
        tokio::spawn(
            forward(
                subscriber_stream(
                    session.clone(),
                    snapshot,
                    sub,
                    None,
                    None,
                    sub_opts,
                    false,
                    tracing::Span::current(),
                ),
                tx.clone(),
            )
            .in_current_span(),
        );
        let registry = self.registry.clone();
        tokio::spawn(
            run_publisher(
                registry,
                grant.session,
                grant.generation,
                first,
                inbound,
                tx,
                self.registry.defaults().publisher_idle_timeout,
            )
            .in_current_span(),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn subscribe(
        &self,
        first: pb::SliceRequest,
        fps: Option<u32>,
        inbound: Streaming<pb::SliceRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let id = first.session_id.clone();
        let sub = first.subscribe.unwrap_or_default();
        let wait = if sub.wait_ms == 0 {
            self.registry.defaults().subscribe_wait
        } else {
            Duration::from_millis(sub.wait_ms as u64).min(Duration::from_secs(3600))
        };
        // One that has to wait for the session gets it from its start.
        let waited = self.registry.live(&id).is_none();
        let session = self
            .registry
            .wait_for(&id, wait)
            .await
            .map_err(|e| registry_status(e, &id))?;
        if !session.is_readable() {
            return Err(Status::unavailable(format!(
                "session {id:?} cannot be read from the cluster right now (this edge lost NATS); retry"
            )));
        }
        let (mut snapshot, log_sub, guard) = session.join_from(!sub.no_frames, waited);
        snapshot.renditions = crate::session::renditions::views(
            &self.registry.renditions(crate::ids::session_of(&id)),
        );
        tracing::info!(start_frame = snapshot.start_frame, "subscriber joined");
        let opts = SubscriberOptions {
            frames: !sub.no_frames,
            events: sub.events || sub.segments_cmaf || sub.segments_ts || sub.parts,
            max_fps: fps,
            segments_cmaf: sub.segments_cmaf,
            segments_ts: sub.segments_ts,
            parts: sub.parts,
            audio: sub.audio,
        };
        Ok(Response::new(Box::pin(subscriber_stream(
            session,
            snapshot,
            log_sub,
            Some(guard),
            Some(inbound),
            opts,
            true,
            tracing::Span::current(),
        ))))
    }
}

/// Reads a publisher's request stream into its session until end of
/// stream, error or a fatal problem with the data.
async fn run_publisher(
    registry: Arc<Registry>,
    session: Arc<Session>,
    generation: u64,
    first: pb::SliceRequest,
    mut inbound: Streaming<pb::SliceRequest>,
    tx: Out,
    idle_timeout: Duration,
) {
    let id = session.id.clone();
    let mut msg = first;
    loop {
        // Later messages may name the session (`cam1`) of the rendition
        // (`cam1~360p`) or the rendition itself.
        let named = |m: &str| m == id || m == crate::ids::session_of(&id);
        if !msg.session_id.is_empty()
            && !named(&msg.session_id)
            && !parse_session_id(&msg.session_id).is_ok_and(|m| named(&m))
        {
            let _ = tx
                .send(Err(Status::invalid_argument(format!(
                    "session_id changed from {id:?} to {:?} mid-stream",
                    msg.session_id
                ))))
                .await;
            registry.publisher_vanished(&session, generation);
            return;
        }
        let eos = msg.end_of_stream;
        let audio = msg.track == pb::Track::Audio as i32;
        if msg.track != pb::Track::Video as i32 && !audio {
            let _ = tx
                .send(Err(Status::invalid_argument(format!(
                    "track {} is not a track (0 video, 1 audio)",
                    msg.track
                ))))
                .await;
            registry.publisher_vanished(&session, generation);
            return;
        }
        let pushed = if audio && !msg.data.is_empty() {
            let input = if msg.audio_specific_config.is_empty() {
                AudioInput::Adts
            } else {
                AudioInput::Raw {
                    asc: msg.audio_specific_config,
                }
            };
            Some(session.push_audio(generation, msg.data, input, msg.capture_time_ns))
        } else if !audio && (!msg.data.is_empty() || msg.end_of_access_unit) {
            Some(session.push(
                generation,
                msg.data,
                msg.capture_time_ns,
                msg.end_of_access_unit,
            ))
        } else {
            None
        };
        if let Some(pushed) = pushed {
            match pushed {
                Ok(()) => {}
                Err(PushError::Fatal(e)) => {
                    tracing::warn!(error = %e, "publisher stream rejected");
                    let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                    registry.end(&session, EndReason::Error, e.to_string());
                    return;
                }
                // The server closed the session to shut down: the stream
                // ends OK once its events (SessionEnded) are out.
                Err(PushError::Ended)
                    if session.end_reason() == Some(EndReason::ServerShutdown) =>
                {
                    return;
                }
                Err(PushError::NotPublisher) | Err(PushError::Ended) => {
                    let _ = tx
                        .send(Err(Status::aborted(
                            "this stream no longer publishes the session (it ended or another publisher took over)",
                        )))
                        .await;
                    return;
                }
            }
        }
        if eos {
            registry.end(&session, EndReason::EndOfStream, "end_of_stream".into());
            return;
        }
        let next = tokio::select! {
            m = tokio::time::timeout(idle_timeout, inbound.message()) => match m {
                Ok(m) => m,
                Err(_) => {
                    let _ = tx
                        .send(Err(Status::deadline_exceeded(format!(
                            "the publisher sent nothing for {idle_timeout:?}"
                        ))))
                        .await;
                    tracing::info!(?idle_timeout, "publisher idle");
                    registry.publisher_vanished(&session, generation);
                    return;
                }
            },
            // Ended elsewhere (server shutdown): stop reading.
            _ = session.wait_ended() => return,
        };
        msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => {
                // A clean half-close (grpcurl at the end of its input).
                registry.end(
                    &session,
                    EndReason::EndOfStream,
                    "request stream closed".into(),
                );
                return;
            }
            Err(status) => {
                tracing::info!(%status, "publisher stream broke");
                // A message the server refused to decode (too large,
                // malformed) is named to the publisher; after a lost
                // connection nobody hears it, which is harmless.
                let _ = tx.try_send(Err(explain_inbound_error(status)));
                registry.publisher_vanished(&session, generation);
                return;
            }
        };
    }
}

/// A subscriber's responses: session info, the snapshot's frames, then
/// live items, skipping forward when the client falls behind. A stream the
/// response body polls itself: no task or channel per subscriber, and a
/// client that goes away drops it (and its place among the subscribers)
/// at once.
#[allow(clippy::too_many_arguments)]
fn subscriber_stream(
    session: Arc<Session>,
    snapshot: Snapshot,
    sub: Subscription,
    guard: Option<SubscriberGuard>,
    inbound: Option<Streaming<pb::SliceRequest>>,
    opts: SubscriberOptions,
    send_info: bool,
    span: tracing::Span,
) -> impl Stream<Item = Result<pb::SliceResponse, Status>> + Send {
    let mut st = SubscriberState {
        filter: SubscriberFilter::new(opts),
        responses: std::collections::VecDeque::new(),
        out: Vec::new(),
        items: Vec::with_capacity(READ_BATCH),
        last_init: (None, false),
        done: false,
        opts,
        sub,
        _guard: guard,
        _inbound: inbound,
        span,
        frames_out: ::metrics::counter!(crate::metrics::FRAMES_OUT),
        bytes_out: ::metrics::counter!(crate::metrics::BYTES_OUT),
        latency: ::metrics::histogram!(crate::metrics::PUBLISH_TO_SEND),
        lag_skips: ::metrics::counter!(crate::metrics::LAG_SKIPS),
        last_snapshot: Snapshot::default(),
        session,
    };
    if send_info && opts.events {
        st.responses
            .push_back(convert::session_info(&st.session.id, &snapshot, false));
    }
    if let Some(end) = &snapshot.ended {
        st.filter
            .on_item(SessionItem::Ended(end.clone()), &mut st.out);
    }
    st.last_snapshot = snapshot;
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(r) = st.responses.pop_front() {
                return Some((Ok(r), st));
            }
            if st.done {
                return None;
            }
            if !st.out.is_empty() {
                st.convert();
                continue;
            }
            // Read from the cursor; when caught up, wait for the session to
            // append.
            if let Read::Lagged { skipped } =
                st.session.read(&mut st.sub, &mut st.items, READ_BATCH)
            {
                st.lag_skips.increment(1);
                let _e = st.span.enter();
                tracing::debug!(
                    skipped,
                    "subscriber passed by eviction; resuming at the newest random access point"
                );
                st.filter.lagged(skipped);
                continue;
            }
            if st.items.is_empty() {
                if st.sub.wake.changed().await.is_err() {
                    return None; // the session is gone
                }
                continue;
            }
            let mut items = std::mem::take(&mut st.items);
            for item in items.drain(..) {
                st.filter.on_item(item, &mut st.out);
            }
            st.items = items;
        }
    })
}

/// A subscriber stream's state between polls.
struct SubscriberState {
    session: Arc<Session>,
    sub: Subscription,
    _guard: Option<SubscriberGuard>,
    /// A subscriber's request stream stays open until its response stream
    /// is done; it has nothing more to say.
    _inbound: Option<Streaming<pb::SliceRequest>>,
    filter: SubscriberFilter,
    opts: SubscriberOptions,
    /// Deliveries decided, not yet turned into responses.
    out: Vec<Delivery>,
    items: Vec<SessionItem>,
    responses: std::collections::VecDeque<pb::SliceResponse>,
    last_snapshot: Snapshot,
    /// The last video init segment sent, and whether the audio one was.
    last_init: (Option<u32>, bool),
    done: bool,
    span: tracing::Span,
    frames_out: ::metrics::Counter,
    bytes_out: ::metrics::Counter,
    latency: ::metrics::Histogram,
    lag_skips: ::metrics::Counter,
}

impl SubscriberState {
    /// Turns the decided deliveries into responses (stopping after the end).
    fn convert(&mut self) {
        let _e = self.span.enter();
        let mut responses = Vec::with_capacity(2);
        for d in std::mem::take(&mut self.out) {
            if self.done {
                break;
            }
            let done = matches!(d, Delivery::End(_));
            let ingest = match &d {
                Delivery::Frame(f) => Some((f.ingest_time_ns, f.data.len())),
                _ => None,
            };
            deliveries(
                &self.session,
                d,
                &mut self.last_snapshot,
                self.opts,
                &mut self.last_init,
                &mut responses,
            );
            self.responses.extend(responses.drain(..));
            if let Some((ingest_ns, len)) = ingest {
                self.frames_out.increment(1);
                self.bytes_out.increment(len as u64);
                let now = crate::session::now_unix_ns();
                self.latency
                    .record(now.saturating_sub(ingest_ns) as f64 / 1e9);
            }
            self.done |= done;
        }
    }
}

/// Feeds a subscriber stream into a channel that another task also writes
/// to (the publisher's own response stream: its events and its errors).
async fn forward(stream: impl Stream<Item = Result<pb::SliceResponse, Status>> + Send, tx: Out) {
    use futures_util::StreamExt;
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(r) => {
                    if tx.send(r).await.is_err() {
                        return; // the client went away
                    }
                }
                None => return,
            },
            _ = tx.closed() => return,
        }
    }
}

/// Items a subscriber takes from the log per lock.
const READ_BATCH: usize = 64;

fn deliveries(
    session: &Session,
    d: Delivery,
    snapshot: &mut Snapshot,
    opts: SubscriberOptions,
    last_init: &mut (Option<u32>, bool),
    out: &mut Vec<pb::SliceResponse>,
) {
    match d {
        Delivery::Frame(f) => out.push(convert::frame(&f)),
        Delivery::Audio(f) => {
            if snapshot.audio.is_none() {
                snapshot.audio = session.audio().0;
            }
            if let Some(cfg) = &snapshot.audio {
                out.push(convert::audio_frame(&f, cfg));
            }
        }
        Delivery::Lagged {
            skipped,
            resume_index,
        } => out.push(convert::lagged(skipped, resume_index)),
        Delivery::End(e) => {
            if opts.events {
                out.push(convert::ended(&e));
            }
        }
        Delivery::Event(item) => match item {
            SessionItem::Segment(s) => {
                if snapshot.audio.is_none() && s.record.audio.is_some() {
                    snapshot.audio = session.audio().0;
                }
                let rate = snapshot.audio.as_ref().map(|a| a.sample_rate);
                let [mut ready, delta] = convert::segment(&s, rate);
                if opts.segments_cmaf || opts.segments_ts {
                    attach_segment_bytes(session, &s.record, &mut ready, opts, last_init);
                }
                out.push(ready);
                out.push(delta);
            }
            SessionItem::Final(u) => out.push(convert::manifest_delta(&u)),
            SessionItem::Dropped(d) => out.push(convert::dropped(&d)),
            SessionItem::Config(c) => {
                // Parameter sets arrived or changed: tell the subscriber what
                // it now plays. No manifests: the session's current ones may
                // already hold segments whose deltas this subscriber has yet
                // to receive; it keeps its copy current from the deltas.
                let changed = snapshot.config.is_some();
                let now = session.info();
                snapshot.config = Some(c);
                snapshot.frame_rate = now.frame_rate;
                snapshot.availability_start_ms = now.availability_start_ms;
                let announce = Snapshot {
                    config: snapshot.config.clone(),
                    frame_rate: snapshot.frame_rate,
                    availability_start_ms: snapshot.availability_start_ms,
                    segment_target_ms: snapshot.segment_target_ms,
                    part_target_ms: snapshot.part_target_ms,
                    window: snapshot.window,
                    ..Default::default()
                };
                out.push(convert::session_info(&session.id, &announce, changed));
            }
            SessionItem::Part(p) => {
                if snapshot.audio.is_none() && p.audio.is_some() {
                    snapshot.audio = session.audio().0;
                }
                let rate = snapshot.audio.as_ref().map(|a| a.sample_rate);
                let mut ready = convert::part_ready(&p, rate);
                if let Some(pb::slice_response::Event::PartReady(r)) = ready.event.as_mut() {
                    if opts.segments_cmaf && p.frame_count > 0 {
                        match session.part_bytes(p.number, crate::session::Format::Cmaf) {
                            Ok((b, _)) => r.cmaf = b,
                            Err(e) => tracing::warn!(error = %e, "CMAF part for a subscriber"),
                        }
                    }
                    if opts.segments_cmaf && p.audio.as_ref().is_some_and(|a| a.frame_count > 0) {
                        match session.part_bytes(p.number, crate::session::Format::AudioCmaf) {
                            Ok((b, _)) => r.audio_cmaf = b,
                            Err(e) => {
                                tracing::warn!(error = %e, "CMAF audio part for a subscriber")
                            }
                        }
                    }
                    if opts.segments_ts {
                        match session.part_bytes(p.number, crate::session::Format::Ts) {
                            Ok((b, _)) => r.ts = b,
                            Err(e) => tracing::warn!(error = %e, "TS part for a subscriber"),
                        }
                    }
                }
                out.push(ready);
            }
            SessionItem::AudioConfig(c) => {
                // The audio track started: say so (its format, and whether
                // the session is audio-only).
                let now = session.info();
                snapshot.audio = Some(c);
                snapshot.audio_only = now.audio_only;
                let announce = Snapshot {
                    config: snapshot.config.clone(),
                    audio: snapshot.audio.clone(),
                    audio_only: now.audio_only,
                    frame_rate: snapshot.frame_rate,
                    availability_start_ms: now.availability_start_ms,
                    segment_target_ms: snapshot.segment_target_ms,
                    part_target_ms: snapshot.part_target_ms,
                    window: snapshot.window,
                    ..Default::default()
                };
                out.push(convert::session_info(&session.id, &announce, true));
            }
            SessionItem::Frame(_) | SessionItem::AudioFrame(_) | SessionItem::Ended(_) => {}
        },
    }
}

/// Puts the segment's bytes (and the init segment when it changed) into a
/// SegmentReady. A segment that cannot be muxed (it left the ring before
/// this subscriber got to it) goes out without bytes, and says so in the log.
fn attach_segment_bytes(
    session: &Session,
    record: &crate::engine::SegmentRecord,
    ready: &mut pb::SliceResponse,
    opts: SubscriberOptions,
    last_init: &mut (Option<u32>, bool),
) {
    let Some(pb::slice_response::Event::SegmentReady(r)) = ready.event.as_mut() else {
        return;
    };
    // An audio-only session's segments have no video track.
    let video = record.frame_count > 0;
    if opts.segments_cmaf && video {
        if last_init.0 != Some(record.config_id) {
            match session.init_segment(record.config_id) {
                Ok(b) => {
                    r.cmaf_init = b;
                    last_init.0 = Some(record.config_id);
                }
                Err(e) => tracing::warn!(error = %e, "init segment for a subscriber"),
            }
        }
        match session.cmaf_segment(record.sequence) {
            Ok(b) => r.cmaf = b,
            Err(e) => tracing::warn!(error = %e, "CMAF segment for a subscriber"),
        }
    }
    if opts.segments_cmaf && record.audio.as_ref().is_some_and(|a| a.frame_count > 0) {
        if !last_init.1 {
            if let Ok(b) = session.audio_init_segment() {
                r.audio_cmaf_init = b;
                last_init.1 = true;
            }
        }
        match session.cmaf_audio_segment(record.sequence) {
            Ok(b) => r.audio_cmaf = b,
            Err(e) => tracing::warn!(error = %e, "CMAF audio segment for a subscriber"),
        }
    }
    if opts.segments_ts {
        match session.ts_segment(record.sequence) {
            Ok(b) => r.ts = b,
            Err(e) => tracing::warn!(error = %e, "TS segment for a subscriber"),
        }
    }
}

/// tonic reports an over-limit message as OUT_OF_RANGE; gRPC's convention
/// (and what a publisher should look for) is RESOURCE_EXHAUSTED, naming the
/// limit to change.
fn explain_inbound_error(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        Status::resource_exhausted(format!(
            "a message is larger than the server accepts (--max-message-bytes); send smaller chunks: {}",
            status.message()
        ))
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call's final status is counted once: the error that ends it, OK at
    /// its end, CANCELLED when dropped before either.
    #[tokio::test]
    async fn calls_are_counted_once_with_their_final_status() {
        use futures_util::StreamExt;
        let Some(handle) = crate::metrics::install() else {
            panic!("the metrics recorder is installed")
        };
        let count = |code: &str| -> f64 {
            let series = format!("liveslice_grpc_calls_total{{role=\"unit\",code=\"{code}\"}} ");
            handle
                .render()
                .lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .map_or(0.0, |v| v.trim().parse().unwrap_or(f64::NAN))
        };
        let call = |items: Vec<Result<pb::SliceResponse, Status>>, pending: bool| {
            let items = futures_util::stream::iter(items);
            let stream: ResponseStream = if pending {
                Box::pin(items.chain(futures_util::stream::pending()))
            } else {
                Box::pin(items)
            };
            CountedCall {
                stream,
                role: "unit",
                counted: false,
            }
        };
        async fn run(mut c: CountedCall) {
            while c.next().await.is_some() {}
        }
        // Ends cleanly after a response: OK, once (not again at drop).
        run(call(vec![Ok(pb::SliceResponse::default())], false)).await;
        assert_eq!(count("OK"), 1.0);
        assert_eq!(count("CANCELLED"), 0.0);
        // Ended by an error: its code.
        run(call(vec![Err(Status::aborted("taken over"))], false)).await;
        assert_eq!(count("ABORTED"), 1.0);
        // Dropped mid-stream (the client went away): CANCELLED.
        let mut c = call(vec![Ok(pb::SliceResponse::default())], true);
        let first = c.next().await;
        assert!(matches!(first, Some(Ok(_))));
        drop(c);
        assert_eq!(count("CANCELLED"), 1.0);
        assert_eq!(count("OK"), 1.0);
    }

    fn req(id: &str) -> pb::SliceRequest {
        pb::SliceRequest {
            session_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn first_message_checks() {
        let m = first_message(&req("cam%31")).unwrap();
        assert_eq!(m.session_id, "cam1");
        assert_eq!((m.fps, m.publish), (None, false));
        for bad in ["", "%2e%2e", "a/b"] {
            let e = first_message(&req(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        for (fps, ok) in [
            (-1, false),
            (0, true),
            (1, true),
            (1000, true),
            (1001, false),
        ] {
            let r = pb::SliceRequest {
                target_fps: fps,
                ..req("a")
            };
            assert_eq!(first_message(&r).is_ok(), ok, "{fps}");
        }
        // Role: given, or inferred from what the first message carries.
        let publishes = |r: pb::SliceRequest| first_message(&r).unwrap().publish;
        assert!(publishes(pb::SliceRequest {
            data: bytes::Bytes::from_static(b"\0\0\x01\x09"),
            ..req("a")
        }));
        assert!(publishes(pb::SliceRequest {
            publish: Some(Default::default()),
            ..req("a")
        }));
        assert!(publishes(pb::SliceRequest {
            end_of_stream: true,
            ..req("a")
        }));
        assert!(!publishes(pb::SliceRequest {
            role: pb::Role::Subscribe as i32,
            data: bytes::Bytes::from_static(b"x"),
            ..req("a")
        }));
        assert!(publishes(pb::SliceRequest {
            role: pb::Role::Publish as i32,
            ..req("a")
        }));
        assert!(!publishes(pb::SliceRequest {
            role: 99,
            ..req("a")
        }));
    }

    #[test]
    fn publish_options_in_range() {
        let base = PipelineOptions::default();
        let opts = |segment_duration_ms, window_segments| pb::PublishOptions {
            segment_duration_ms,
            window_segments,
            echo_frames: false,
        };
        let p = publish_pipeline(&base, &opts(0, 0), Some(25)).unwrap();
        assert_eq!(p.segment_target_ms, base.segment_target_ms);
        assert_eq!(p.window, base.window);
        assert!(p.target_rate.is_some());
        let p = publish_pipeline(&base, &opts(1000, 3), None).unwrap();
        assert_eq!((p.segment_target_ms, p.window), (1000, 3));
        for (s, w) in [(99, 0), (60_001, 0), (0, 1001)] {
            let e = publish_pipeline(&base, &opts(s, w), None).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
    }
}

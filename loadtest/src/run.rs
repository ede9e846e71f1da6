//! Opens the sessions, paces the publishers, reads the subscribers, and
//! stops everything: at the end of `--duration`, at the end of a ramp, or on
//! Ctrl-C.
//!
//! Per session: one publisher stream and M subscriber streams, each driven
//! by one task. Every publisher has its own HTTP/2 connection (like N
//! cameras), or with `--publisher-connections K` shares K connections (a
//! contribution gateway multiplexing many sessions: thousands of sessions
//! without thousands of connections); subscribers have one each too (N×M
//! viewers), or with `--connections K` share K connections, many streams
//! on each (the fan-out mode: thousands of subscribers of one session).
//! The publishers
//! first open their sessions (and wait for their PublishAck), then the
//! subscribers join, a bounded number at a time (each waits for its
//! SessionInfo), and only then do the publishers send frames, so no
//! subscriber starts with a backlog of old frames and setting up
//! connections and streams never counts as latency or lag. The server's
//! memory is sampled between these phases.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event as PbEvent;
use pb::slice_service_client::SliceServiceClient;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::probe::Metrics;
use crate::stats::{
    new_histogram, now_unix_ns, status_delta, Counters, CpuMark, CpuUse, Latencies, Rss, Snapshot,
    Statuses, SubCounts, SubStats,
};
use crate::stream::TestStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Rate {
    /// One access unit per message at its decode time, looping.
    Realtime,
    /// Access units back to back, as fast as the server accepts them.
    Max,
}

#[derive(Clone, Debug)]
pub struct RampPlan {
    pub step: u32,
    pub step_duration: Duration,
    pub max_p99: Duration,
    pub max_sessions: u32,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub server: String,
    pub endpoint: Endpoint,
    pub sessions: u32,
    pub subscribers: u32,
    pub rate: Rate,
    pub idle: bool,
    pub duration: Duration,
    /// Published before the measured `duration` (with a ramp: before each
    /// step's measured `step_duration`, after its new sessions started).
    pub warmup: Duration,
    pub ramp: Option<RampPlan>,
    pub prefix: String,
    pub server_pid: Option<u32>,
    /// Connections all subscribers share; 0: one per subscriber.
    pub connections: u32,
    /// Connections all publishers share (many sessions multiplexed as
    /// HTTP/2 streams on each); 0: one per publisher.
    pub publisher_connections: u32,
    /// The server's HTTP origin, to read the media bytes it holds.
    pub metrics: Option<Metrics>,
}

/// How long a publisher may take to get its PublishAck, and subscribers
/// their SessionInfo.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long streams get to end cleanly after the stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being set up at once.
const CONNECT_CONCURRENCY: usize = 32;
/// Subscribers joining at once (from their request to their SessionInfo),
/// so that thousands of them on a few connections join gradually.
const JOIN_CONCURRENCY: usize = 64;
/// On top of SETUP_TIMEOUT, how long each subscriber may add to the time
/// all of a step's subscribers take to join (10,000: 20 s more).
const JOIN_ALLOWANCE: Duration = Duration::from_millis(2);
/// HTTP/2 connection window of a shared subscriber connection: many
/// streams draw on it at once (the stream window stays hyper's default).
const SHARED_CONNECTION_WINDOW: u32 = 16 << 20;
/// Requests queued per publisher before its task waits (HTTP/2 flow
/// control holds the rest).
const PUBLISH_QUEUE: usize = 8;
/// An idle publisher sends an empty message this often so the server's
/// idle timeout (30 s by default) does not end its session.
const IDLE_KEEPALIVE: Duration = Duration::from_secs(10);
const MAX_MESSAGE_BYTES: usize = 64 << 20;

struct Shared {
    stream: Arc<TestStream>,
    endpoint: Endpoint,
    rate: Rate,
    idle: bool,
    c: Counters,
    lat: Latencies,
    statuses: Statuses,
    /// One entry per subscriber started.
    sub_stats: Mutex<Vec<Arc<SubStats>>>,
    /// With `--connections`: the connections subscribers share (those that
    /// could be opened). `None`: one connection per subscriber.
    shared: Option<Vec<Channel>>,
    /// With `--publisher-connections`: the connections publishers share.
    /// `None`: one connection per publisher.
    publisher_shared: Option<Vec<Channel>>,
    connect_permits: Semaphore,
    join_permits: Semaphore,
    stop: watch::Receiver<bool>,
}

/// One measured window: the whole run, or a ramp step.
pub struct Figures {
    pub sessions: u64,
    pub subscribers: u64,
    pub elapsed: Duration,
    pub counts: Snapshot,
    pub latency: Histogram<u64>,
    pub statuses: std::collections::BTreeMap<String, u64>,
    pub rss_kib: Option<u64>,
}

pub struct RssFigures {
    /// Before the first session was opened.
    pub start_kib: u64,
    /// With the first step's sessions open (publishers acknowledged), before
    /// any subscriber joined.
    pub before_subscribers_kib: Option<u64>,
    /// Once the first step's subscribers joined, before any frame was sent.
    pub joined_kib: Option<u64>,
    pub peak_kib: u64,
    /// Just before the stop, with every session live.
    pub loaded_kib: Option<u64>,
    /// After the streams ended (ended sessions linger on the server).
    pub end_kib: Option<u64>,
}

pub struct RampStep {
    pub figures: Figures,
    pub held: bool,
    pub why: String,
}

pub struct Outcome {
    pub stream_name: String,
    pub stream_fps: f64,
    pub stream_frames: usize,
    pub stream_kbps: f64,
    pub whole: Figures,
    /// Per subscriber: frames received and Lagged events.
    pub subscribers: Vec<SubCounts>,
    /// Subscriber connections opened (0: one per subscriber).
    pub shared_connections: usize,
    /// Publisher connections opened (0: one per publisher).
    pub publisher_connections: usize,
    /// `liveslice_media_memory_bytes` at the start and just before the stop.
    pub media_start: Option<u64>,
    pub media_loaded: Option<u64>,
    pub media_error: Option<String>,
    /// CPU while frames flowed (the whole run for a ramp).
    pub cpu: CpuUse,
    /// Frames subscribers received while `cpu` was measured.
    pub cpu_frames: u64,
    pub unfinished: u64,
    pub first_error: Option<String>,
    pub interrupted: bool,
    pub rss: Option<RssFigures>,
    pub rss_error: Option<String>,
    pub ramp: Option<(Vec<RampStep>, Option<usize>)>,
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn is_stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

fn client(ch: Channel) -> SliceServiceClient<Channel> {
    SliceServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Opens the `k` connections subscribers (or publishers: `what`) share,
/// one after the other.
async fn shared_connections(
    endpoint: &Endpoint,
    k: usize,
    what: &str,
    c: &Counters,
    statuses: &Statuses,
) -> Vec<Channel> {
    let endpoint = endpoint
        .clone()
        .initial_connection_window_size(SHARED_CONNECTION_WINDOW);
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        match endpoint.connect().await {
            Ok(ch) => out.push(ch),
            Err(e) => {
                c.connect_failures.fetch_add(1, Relaxed);
                statuses.other(
                    "ConnectFailed",
                    format!("shared {what} connection: cannot connect: {}", chain(&e)),
                );
            }
        }
    }
    out
}

impl Shared {
    /// Subscriber `index`'s client: its own connection, or a stream on one
    /// of the shared ones.
    async fn subscriber_client(&self, index: usize) -> Option<SliceServiceClient<Channel>> {
        match &self.shared {
            None => self.connect("subscriber").await,
            Some(chs) if chs.is_empty() => None,
            Some(chs) => Some(client(chs[index % chs.len()].clone())),
        }
    }

    /// Publisher `index`'s client: its own connection, or a stream on one
    /// of the shared ones.
    async fn publisher_client(&self, index: u64) -> Option<SliceServiceClient<Channel>> {
        match &self.publisher_shared {
            None => self.connect("publisher").await,
            Some(chs) if chs.is_empty() => None,
            Some(chs) => Some(client(chs[(index % chs.len() as u64) as usize].clone())),
        }
    }

    async fn connect(&self, what: &str) -> Option<SliceServiceClient<Channel>> {
        let _permit = self.connect_permits.acquire().await.ok()?;
        match self.endpoint.clone().connect().await {
            Ok(ch) => Some(client(ch)),
            Err(e) => {
                self.c.connect_failures.fetch_add(1, Relaxed);
                self.statuses.other(
                    "ConnectFailed",
                    format!("{what}: cannot connect: {}", chain(&e)),
                );
                None
            }
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// A session whose publisher was acknowledged.
struct Opened {
    tx: mpsc::Sender<pb::SliceRequest>,
    tasks: Vec<JoinHandle<()>>,
}

async fn open_publisher(sh: Arc<Shared>, index: u64, id: String) -> Option<Opened> {
    let mut client = sh.publisher_client(index).await?;
    let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
    let first = pb::SliceRequest {
        session_id: id.clone(),
        role: pb::Role::Publish as i32,
        publish: Some(pb::PublishOptions::default()),
        ..Default::default()
    };
    tx.send(first).await.ok()?;
    let mut responses = match client.stream_slices(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            sh.statuses.error(&s, "publisher");
            return None;
        }
    };
    match timeout(SETUP_TIMEOUT, responses.message()).await {
        Ok(Ok(Some(pb::SliceResponse {
            event: Some(PbEvent::PublishAck(_)),
            ..
        }))) => {}
        Ok(Ok(other)) => {
            sh.statuses.other(
                "Unexpected",
                format!("publisher: expected a PublishAck, got {other:?}"),
            );
            return None;
        }
        Ok(Err(s)) => {
            sh.statuses.error(&s, "publisher");
            return None;
        }
        Err(_) => {
            sh.statuses.other(
                "SetupTimeout",
                format!("publisher: no PublishAck within {SETUP_TIMEOUT:?}"),
            );
            return None;
        }
    }
    let tasks = vec![tokio::spawn(publisher_responses(sh.clone(), responses))];
    Some(Opened { tx, tasks })
}

/// Reads what the server tells a publisher: drops of its frames, and the
/// session's end.
async fn publisher_responses(sh: Arc<Shared>, mut responses: tonic::Streaming<pb::SliceResponse>) {
    loop {
        match responses.message().await {
            Ok(Some(r)) => match r.event {
                Some(PbEvent::FrameDropped(d)) => {
                    sh.c.frames_dropped.fetch_add(u64::from(d.count), Relaxed);
                }
                Some(PbEvent::SessionEnded(e)) => {
                    sh.c.server_frames.fetch_add(e.frames, Relaxed);
                }
                _ => {}
            },
            Ok(None) => return sh.statuses.ok(),
            Err(s) => return sh.statuses.error(&s, "publisher"),
        }
    }
}

async fn subscriber(sh: Arc<Shared>, id: String, index: usize, joined: oneshot::Sender<()>) {
    let mine = Arc::new(SubStats::default());
    sh.sub_stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(mine.clone());
    // Held from the request to the SessionInfo: joins are paced.
    let mut permit = sh.join_permits.acquire().await.ok();
    let Some(mut client) = sh.subscriber_client(index).await else {
        return;
    };
    let (tx, rx) = mpsc::channel(1);
    let req = pb::SliceRequest {
        session_id: id,
        role: pb::Role::Subscribe as i32,
        subscribe: Some(pb::SubscribeOptions {
            events: true,
            wait_ms: SETUP_TIMEOUT.as_millis() as u32,
            ..Default::default()
        }),
        ..Default::default()
    };
    if tx.send(req).await.is_err() {
        return;
    }
    let mut responses = match client.stream_slices(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return sh.statuses.error(&s, "subscriber"),
    };
    let mut joined = Some(joined);
    let mut next_index: Option<u64> = None;
    loop {
        let r = match responses.message().await {
            Ok(Some(r)) => r,
            Ok(None) => break sh.statuses.ok(),
            Err(s) => break sh.statuses.error(&s, "subscriber"),
        };
        match r.event {
            Some(PbEvent::Frame(f)) => {
                let now = now_unix_ns();
                if let Some(c) = f.capture_time_ns {
                    sh.lat.record(index, now.saturating_sub(c) / 1000);
                }
                if let Some(want) = next_index {
                    if f.index > want {
                        sh.c.index_gaps.fetch_add(f.index - want, Relaxed);
                    }
                }
                next_index = Some(f.index + 1);
                mine.frames.fetch_add(1, Relaxed);
                sh.c.frames_received.fetch_add(1, Relaxed);
                sh.c.bytes_received.fetch_add(r.data.len() as u64, Relaxed);
            }
            Some(PbEvent::SessionInfo(_)) => {
                permit = None;
                if let Some(j) = joined.take() {
                    let _ = j.send(());
                }
            }
            Some(PbEvent::FrameDropped(d)) => {
                sh.c.subscriber_drop_reports
                    .fetch_add(u64::from(d.count), Relaxed);
            }
            Some(PbEvent::Lagged(l)) => {
                mine.lagged.fetch_add(1, Relaxed);
                sh.c.lagged_events.fetch_add(1, Relaxed);
                sh.c.lagged_skipped.fetch_add(l.skipped_frames, Relaxed);
                // The skipped frames are counted by Lagged; the jump in
                // index that follows is not a further loss.
                next_index = None;
            }
            _ => {}
        }
    }
    drop(permit);
    drop(tx);
}

/// Sends the stream into an opened session from `start` until the stop,
/// then ends the session cleanly.
async fn feed(sh: Arc<Shared>, tx: mpsc::Sender<pb::SliceRequest>, start: Instant) {
    let mut stop = sh.stop.clone();
    if sh.idle {
        // One keyframe (the stream's first access unit: the engine starts
        // at a random access point), so the session has a picture, its
        // parameters and a window, then nothing.
        if let Some(au) = sh.stream.aus.first() {
            let req = pb::SliceRequest {
                data: au.data.clone(),
                capture_time_ns: Some(now_unix_ns()),
                end_of_access_unit: true,
                ..Default::default()
            };
            if tx.send(req).await.is_err() {
                return;
            }
            sh.c.frames_sent.fetch_add(1, Relaxed);
            sh.c.bytes_sent.fetch_add(au.data.len() as u64, Relaxed);
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(IDLE_KEEPALIVE) => {}
                _ = stopped(&mut stop) => break,
            }
            if tx.send(pb::SliceRequest::default()).await.is_err() {
                return;
            }
        }
    } else {
        let _ = send_frames(&sh, &tx, start, &mut stop).await;
    }
    let end = pb::SliceRequest {
        end_of_stream: true,
        ..Default::default()
    };
    let _ = timeout(Duration::from_secs(2), tx.send(end)).await;
}

/// Returns `None` when the stop came or the stream closed.
async fn send_frames(
    sh: &Shared,
    tx: &mpsc::Sender<pb::SliceRequest>,
    start: Instant,
    stop: &mut watch::Receiver<bool>,
) -> Option<()> {
    let s = &*sh.stream;
    let period = Duration::from_nanos(s.frame_period_ns());
    let realtime = sh.rate == Rate::Realtime;
    for lap in 0u64.. {
        for au in &s.aus {
            if realtime {
                let at = start + Duration::from_nanos(lap * s.lap_ns + au.at_ns);
                tokio::select! {
                    _ = sleep_until(at) => {}
                    _ = stopped(stop) => return None,
                }
                let late = Instant::now().saturating_duration_since(at);
                if late > period {
                    sh.c.late_sends.fetch_add(1, Relaxed);
                }
                sh.c.max_late_us.fetch_max(late.as_micros() as u64, Relaxed);
            } else if is_stopped(stop) {
                return None;
            }
            let req = pb::SliceRequest {
                data: au.data.clone(),
                capture_time_ns: Some(now_unix_ns()),
                end_of_access_unit: true,
                ..Default::default()
            };
            tokio::select! {
                r = tx.send(req) => r.ok()?,
                _ = stopped(stop) => return None,
            }
            sh.c.frames_sent.fetch_add(1, Relaxed);
            sh.c.bytes_sent.fetch_add(au.data.len() as u64, Relaxed);
        }
    }
    Some(())
}

/// The run: set up, publish, stop, drain, collect.
pub async fn run(plan: &Plan, stream: Arc<TestStream>) -> Outcome {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping (Ctrl-C again to abort without a summary)");
                let _ = stop_tx.send(true);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    let (rss, rss_error) = match plan.server_pid.map(Rss::start) {
        None => (None, None),
        Some(Ok(r)) => (Some(r), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let mut media_error = None;
    let mut media = |r: anyhow::Result<u64>| match r {
        Ok(b) => Some(b),
        Err(e) => {
            media_error.get_or_insert(format!("{e:#}"));
            None
        }
    };
    let media_start = match &plan.metrics {
        Some(m) => media(m.media_bytes().await),
        None => None,
    };
    let c = Counters::default();
    let statuses = Statuses::default();
    let most_sessions = plan
        .ramp
        .as_ref()
        .map_or(plan.sessions, |r| r.max_sessions.max(plan.sessions));
    let shared = if plan.connections > 0 && plan.subscribers > 0 {
        let all = u64::from(most_sessions) * u64::from(plan.subscribers);
        let k = u64::from(plan.connections).min(all) as usize;
        Some(shared_connections(&plan.endpoint, k, "subscriber", &c, &statuses).await)
    } else {
        None
    };
    let publisher_shared = if plan.publisher_connections > 0 {
        let k = plan.publisher_connections.min(most_sessions) as usize;
        Some(shared_connections(&plan.endpoint, k, "publisher", &c, &statuses).await)
    } else {
        None
    };
    let sh = Arc::new(Shared {
        stream: stream.clone(),
        endpoint: plan.endpoint.clone(),
        rate: plan.rate,
        idle: plan.idle,
        c,
        lat: Latencies::default(),
        statuses,
        sub_stats: Mutex::new(Vec::new()),
        shared,
        publisher_shared,
        connect_permits: Semaphore::new(CONNECT_CONCURRENCY),
        join_permits: Semaphore::new(JOIN_CONCURRENCY),
        stop: stop_rx.clone(),
    });
    let mut fleet = Fleet {
        sh: sh.clone(),
        plan,
        rss: rss.as_ref(),
        tasks: Vec::new(),
        live: 0,
        first_marks: None,
    };
    let mut stop = stop_rx.clone();
    let t0 = Instant::now();
    let cpu_t0 = CpuMark::now(plan.server_pid);
    let mut total_latency = new_histogram();
    let (elapsed, ramp, cpu_from, frames_before) = match &plan.ramp {
        None => {
            fleet.grow(plan.sessions).await;
            // Counts and rates cover the whole run, warm-up included.
            let started = Instant::now();
            let opened = sh.c.sessions_opened.load(Relaxed) > 0;
            if opened && !plan.warmup.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(plan.warmup) => {}
                    _ = stopped(&mut stop) => {}
                }
                // The warm-up's latencies are not the figure.
                drop(sh.lat.take());
            }
            let frames_before = sh.c.frames_received.load(Relaxed);
            let cpu_from = CpuMark::now(plan.server_pid);
            if opened {
                tokio::select! {
                    _ = tokio::time::sleep(plan.duration) => {}
                    _ = stopped(&mut stop) => {}
                }
            }
            (started.elapsed(), None, cpu_from, frames_before)
        }
        Some(r) => {
            let (steps, best) = fleet.ramp(r, &mut total_latency).await;
            (t0.elapsed(), Some((steps, best)), cpu_t0, 0)
        }
    };
    let interrupted = is_stopped(&stop_rx);
    let loaded_kib = rss.as_ref().and_then(Rss::sample);
    let cpu = CpuMark::now(plan.server_pid).since(&cpu_from);
    // Frames received while `cpu` was measured (none flows before the
    // fleet is up; with a warm-up, those before `cpu_from` are left out).
    let cpu_frames = sh.c.frames_received.load(Relaxed) - frames_before;
    let media_loaded = match &plan.metrics {
        Some(m) => media(m.media_bytes().await),
        None => None,
    };
    let _ = stop_tx.send(true);
    // Drain: publishers end their sessions, subscribers read to the end.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut unfinished = 0;
    for mut t in fleet.tasks.drain(..) {
        if timeout_at(deadline, &mut t).await.is_err() {
            t.abort();
            unfinished += 1;
        }
    }
    let end_kib = rss.as_ref().and_then(Rss::sample);
    let _ = total_latency.add(sh.lat.take());
    let (statuses, first_error) = sh.statuses.snapshot();
    let subscribers = sh
        .sub_stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|s| s.counts())
        .collect();
    let counts = sh.c.snapshot();
    let marks = fleet.first_marks.unwrap_or_default();
    Outcome {
        stream_name: stream.name.clone(),
        stream_fps: stream.fps(),
        stream_frames: stream.aus.len(),
        stream_kbps: stream.lap_bytes as f64 * 8.0 / (stream.lap_ns as f64 / 1e9) / 1000.0,
        whole: Figures {
            sessions: fleet.live,
            subscribers: fleet.live * u64::from(plan.subscribers),
            elapsed,
            counts,
            latency: total_latency,
            statuses,
            rss_kib: loaded_kib,
        },
        subscribers,
        shared_connections: sh.shared.as_ref().map_or(0, Vec::len),
        publisher_connections: sh.publisher_shared.as_ref().map_or(0, Vec::len),
        media_start,
        media_loaded,
        media_error,
        cpu,
        cpu_frames,
        unfinished,
        first_error,
        interrupted,
        rss: rss.as_ref().map(|r| RssFigures {
            start_kib: r.start_kib,
            before_subscribers_kib: marks.before_subscribers_kib,
            joined_kib: marks.joined_kib,
            peak_kib: r.peak(),
            loaded_kib,
            end_kib,
        }),
        rss_error,
        ramp,
    }
}

/// Server RSS around the first step's subscribers joining.
#[derive(Clone, Copy, Default)]
struct JoinMarks {
    before_subscribers_kib: Option<u64>,
    joined_kib: Option<u64>,
}

/// Session `n`'s start offset within one frame period: the golden-ratio
/// sequence, so that the first k sessions are spread evenly over the
/// period for every k (a ramp adds sessions without knowing how many
/// will follow), and N cameras do not all send at the same instant.
fn stagger(n: u64, period_ns: u64) -> u64 {
    const PHI_FRAC: f64 = 0.618_033_988_749_894_9;
    let x = (n as f64 * PHI_FRAC).fract();
    ((x * period_ns as f64) as u64).min(period_ns.saturating_sub(1))
}

/// The sessions started so far.
struct Fleet<'a> {
    sh: Arc<Shared>,
    plan: &'a Plan,
    rss: Option<&'a Rss>,
    tasks: Vec<JoinHandle<()>>,
    /// Sessions asked for (opened or not).
    live: u64,
    first_marks: Option<JoinMarks>,
}

impl Fleet<'_> {
    /// Opens sessions up to `target`: their publishers first, then their
    /// subscribers (a bounded number joining at once), then starts the
    /// publishers' frames.
    async fn grow(&mut self, target: u32) {
        let first = self.live;
        let mut opening = Vec::new();
        for n in first..u64::from(target) {
            let id = format!("{}-{}-{n}", self.plan.prefix, std::process::id());
            opening.push((
                n,
                id.clone(),
                tokio::spawn(open_publisher(self.sh.clone(), n, id)),
            ));
        }
        self.live = u64::from(target).max(first);
        let mut opened = Vec::new();
        for (n, id, h) in opening {
            match h.await {
                Ok(Some(o)) => {
                    self.sh.c.sessions_opened.fetch_add(1, Relaxed);
                    opened.push((n, id, o));
                }
                _ => {
                    self.sh.c.sessions_failed.fetch_add(1, Relaxed);
                }
            }
        }
        let before_subscribers_kib = self.rss.and_then(Rss::sample);
        let subs = self.plan.subscribers;
        let mut joined = Vec::new();
        for (n, id, o) in &mut opened {
            let first_sub = (*n * u64::from(subs)) as usize;
            for j in 0..subs {
                let (jtx, jrx) = oneshot::channel();
                o.tasks.push(tokio::spawn(subscriber(
                    self.sh.clone(),
                    id.clone(),
                    first_sub + j as usize,
                    jtx,
                )));
                joined.push(jrx);
            }
        }
        let deadline = Instant::now() + SETUP_TIMEOUT + JOIN_ALLOWANCE * joined.len() as u32;
        for j in joined {
            // A subscriber that failed says so itself (its sender is dropped).
            let _ = timeout_at(deadline, j).await;
        }
        let joined_kib = self.rss.and_then(Rss::sample);
        self.first_marks.get_or_insert(JoinMarks {
            before_subscribers_kib,
            joined_kib,
        });
        let t0 = Instant::now() + Duration::from_millis(20);
        let period = self.sh.stream.frame_period_ns();
        for (n, _, o) in opened {
            let offset = if self.plan.rate == Rate::Realtime {
                stagger(n, period)
            } else {
                0
            };
            self.tasks.extend(o.tasks);
            self.tasks.push(tokio::spawn(feed(
                self.sh.clone(),
                o.tx,
                t0 + Duration::from_nanos(offset),
            )));
        }
    }

    /// Grows step by step until a step fails its bounds or the cap; returns
    /// every step and the index of the last one that held.
    async fn ramp(
        &mut self,
        r: &RampPlan,
        total: &mut Histogram<u64>,
    ) -> (Vec<RampStep>, Option<usize>) {
        let mut stop = self.sh.stop.clone();
        let mut steps: Vec<RampStep> = Vec::new();
        let mut best = None;
        let mut target = self.plan.sessions.min(r.max_sessions);
        loop {
            let before_grow = self.sh.c.snapshot();
            self.grow(target).await;
            if is_stopped(&stop) {
                break;
            }
            // The step's window starts once its sessions are all running
            // (and, with a warm-up, have published that long: its
            // latencies are not the step's figure, its drops are).
            if !self.plan.warmup.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(self.plan.warmup) => {}
                    _ = stopped(&mut stop) => {}
                }
                drop(self.sh.lat.take());
            }
            let _ = total.add(self.sh.lat.take());
            let before = self.sh.c.snapshot();
            let (statuses_before, _) = self.sh.statuses.snapshot();
            let started = Instant::now();
            let interrupted = tokio::select! {
                _ = tokio::time::sleep(r.step_duration) => false,
                _ = stopped(&mut stop) => true,
            };
            let latency = self.sh.lat.take();
            let _ = total.add(&latency);
            let now = self.sh.c.snapshot();
            let mut counts = now.since(&before);
            // Setting up this step's sessions, and any loss during its
            // warm-up, count against it.
            let setup = now.since(&before_grow);
            counts.sessions_opened = setup.sessions_opened;
            counts.sessions_failed = setup.sessions_failed;
            counts.connect_failures = setup.connect_failures;
            counts.frames_dropped = setup.frames_dropped;
            counts.subscriber_drop_reports = setup.subscriber_drop_reports;
            counts.lagged_events = setup.lagged_events;
            counts.lagged_skipped = setup.lagged_skipped;
            counts.index_gaps = setup.index_gaps;
            let (statuses_now, _) = self.sh.statuses.snapshot();
            let statuses = status_delta(&statuses_now, &statuses_before);
            let rss_kib = self.plan.server_pid.and_then(crate::stats::read_rss_kib);
            let figures = Figures {
                sessions: self.live,
                subscribers: self.live * u64::from(self.plan.subscribers),
                elapsed: started.elapsed(),
                counts,
                latency,
                statuses,
                rss_kib,
            };
            let (held, why) = judge(&figures, r, interrupted);
            eprintln!(
                "ramp: {} sessions: p99 {:.2} ms, {} frames, {}",
                figures.sessions,
                figures.latency.value_at_quantile(0.99) as f64 / 1000.0,
                figures.counts.frames_received,
                why
            );
            steps.push(RampStep { figures, held, why });
            if !held {
                break;
            }
            best = Some(steps.len() - 1);
            if target >= r.max_sessions {
                break;
            }
            target = target.saturating_add(r.step).min(r.max_sessions);
        }
        (steps, best)
    }
}

/// Whether a ramp step held, and why not.
fn judge(f: &Figures, r: &RampPlan, interrupted: bool) -> (bool, String) {
    let c = &f.counts;
    let p99_us = f.latency.value_at_quantile(0.99);
    let errors = crate::stats::error_count(&f.statuses);
    if interrupted {
        return (false, "interrupted".into());
    }
    if c.sessions_failed > 0 || c.connect_failures > 0 {
        return (
            false,
            format!(
                "{} sessions failed to open, {} connect failures",
                c.sessions_failed, c.connect_failures
            ),
        );
    }
    if errors > 0 {
        return (false, format!("{errors} stream errors"));
    }
    if c.any_drop() {
        return (
            false,
            format!(
                "drops: {} dropped, {} lagged ({} skipped), {} missing",
                c.frames_dropped + c.subscriber_drop_reports,
                c.lagged_events,
                c.lagged_skipped,
                c.index_gaps
            ),
        );
    }
    if f.latency.is_empty() {
        return (false, "no frames received".into());
    }
    if p99_us as u128 > r.max_p99.as_micros() {
        return (
            false,
            format!(
                "p99 {:.2} ms > {:.2} ms",
                p99_us as f64 / 1000.0,
                r.max_p99.as_secs_f64() * 1000.0
            ),
        );
    }
    (true, "held".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_spread_over_the_frame_period_for_any_count() {
        let period = 33_333_333;
        for k in [2u64, 10, 100, 1000] {
            let mut offsets: Vec<u64> = (0..k).map(|n| stagger(n, period)).collect();
            offsets.sort_unstable();
            assert!(offsets.iter().all(|o| *o < period));
            let widest = offsets
                .windows(2)
                .map(|w| w[1] - w[0])
                .chain([period - offsets[k as usize - 1] + offsets[0]])
                .max()
                .unwrap();
            // No gap wider than three even slots.
            assert!(widest <= 3 * period / k, "{k}: widest gap {widest}");
        }
    }
}

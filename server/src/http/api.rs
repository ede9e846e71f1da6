//! `/api/sessions` and `/api/sessions/{id}`: what the web console shows, as
//! JSON for scripts too (see the README's "Web console" section).
//!
//! Everything is computed at request time from the session's counters and
//! the segment records its ring holds; the only state kept here is the
//! estimate of HTTP viewers ([`HttpViewers`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;

use super::SessionId;
use crate::engine::{DropReason, SegmentRecord, TIMESCALE};
use crate::session::{now_unix_ns, EndReason, Registry, Session};

/// A client counts as an HTTP viewer of a session for this long after it
/// last fetched one of the session's manifests (players refetch a live
/// manifest about once a segment).
pub const HTTP_VIEWER_WINDOW: Duration = Duration::from_secs(10);
/// Clients remembered per session at most (an estimate need not grow
/// without bound under a flood of distinct clients).
const MAX_CLIENTS_PER_SESSION: usize = 10_000;
/// Sessions tracked before quiet ones are forgotten on the next new one.
const PRUNE_AT: usize = 256;

/// The peer address of a connection, put on each request by the listener.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// HTTP viewers per session: distinct clients (peer IP address and
/// `User-Agent`) that fetched one of its manifests within
/// [`HTTP_VIEWER_WINDOW`].
#[derive(Default)]
pub struct HttpViewers {
    seen: Mutex<HashMap<String, HashMap<u64, Instant>>>,
}

impl HttpViewers {
    /// Records a manifest fetch of `session` by the client `ip` + `agent`.
    pub fn saw(&self, session: &str, ip: Option<IpAddr>, agent: Option<&str>) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ip.hash(&mut h);
        agent.hash(&mut h);
        let key = h.finish();
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.contains_key(session) && seen.len() >= PRUNE_AT {
            // Sessions nobody fetched lately (ended ones among them) go,
            // so the map stays as large as the sessions being watched.
            seen.retain(|_, clients| {
                clients.retain(|_, t| now.duration_since(*t) < HTTP_VIEWER_WINDOW);
                !clients.is_empty()
            });
        }
        let clients = seen.entry(session.to_string()).or_default();
        if clients.len() >= MAX_CLIENTS_PER_SESSION && !clients.contains_key(&key) {
            clients.retain(|_, t| now.duration_since(*t) < HTTP_VIEWER_WINDOW);
            if clients.len() >= MAX_CLIENTS_PER_SESSION {
                return;
            }
        }
        clients.insert(key, now);
    }

    /// Viewers of `session` now; forgets clients (and sessions) that went
    /// quiet.
    pub fn count(&self, session: &str) -> usize {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let Some(clients) = seen.get_mut(session) else {
            return 0;
        };
        clients.retain(|_, t| now.duration_since(*t) < HTTP_VIEWER_WINDOW);
        let n = clients.len();
        if n == 0 {
            seen.remove(session);
        }
        n
    }

    /// Forgets sessions no longer held.
    fn prune(&self, registry: &Registry) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|id, _| registry.get(id).is_some());
    }
}

#[derive(Serialize)]
pub struct Viewers {
    /// gRPC subscriber streams (the publisher's own stream is not one).
    grpc: usize,
    /// Distinct HTTP clients (address and User-Agent) that fetched a
    /// manifest of the session in the last 10 s.
    http: usize,
}

#[derive(Serialize)]
pub struct SessionSummary {
    id: String,
    /// `live` (a publisher is attached), `publisher-gone` (it vanished and
    /// may come back within the grace period) or `lingering` (ended; its
    /// last window is still served).
    state: &'static str,
    /// Why a lingering session ended.
    end_reason: Option<&'static str>,
    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    codec: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    /// The audio track's RFC 6381 codec string (`mp4a.40.2`); `null`
    /// without audio.
    audio_codec: Option<String>,
    /// Its sampling rate (Hz) and channel count.
    audio_sample_rate: Option<u32>,
    audio_channels: Option<u32>,
    /// The session has no video track.
    audio_only: bool,
    /// The stream's frame rate (frames per second) as the engine times it.
    frame_rate: Option<f64>,
    /// Frames per second over the segments in the live window.
    measured_frame_rate: Option<f64>,
    /// Bits per second over the segments in the live window (Annex B bytes).
    bitrate_bps: Option<f64>,
    viewers: Viewers,
    /// Now minus the wall-clock time of the live edge (the end of the newest
    /// segment, from its program date time); `null` once ended or before
    /// the first segment.
    latency_ms: Option<f64>,
    /// Frames dropped so far, by reason (every reason listed).
    drops: BTreeMap<&'static str, u64>,
    drops_total: u64,
    /// Seconds since the first frame (to the end, once ended).
    uptime_s: Option<f64>,
    /// Unix ms of the first frame.
    started_at_ms: Option<u64>,
    frames: u64,
    segments: u64,
    /// Segments the live playlists list now.
    window_segments: usize,
    bytes_in: u64,
}

#[derive(Serialize)]
pub struct SegmentRow {
    sequence: u64,
    /// Seconds.
    duration: f64,
    bytes: u64,
    frames: u32,
    /// Bits per second over this segment.
    bitrate_bps: f64,
    /// Frames per second over this segment.
    frame_rate: f64,
    /// `EXT-X-DISCONTINUITY` before it (publisher reconnect, timing jump,
    /// parameter change).
    discontinuity: bool,
    /// Starts with a random access point a player can start decoding at.
    independent: bool,
    /// Unix ms of its first frame.
    program_date_time_ms: u64,
    /// Listed in the live playlists now (older ones are still served for a
    /// while).
    listed: bool,
}

#[derive(Serialize)]
pub struct SessionDetail {
    #[serde(flatten)]
    summary: SessionSummary,
    /// Milliseconds.
    segment_target_ms: u32,
    window: u32,
    /// The segments the session holds, oldest first.
    segment_list: Vec<SegmentRow>,
    /// The renditions of the session this one is part of (itself among
    /// them), when it has several; absent otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    renditions: Vec<crate::session::renditions::RenditionView>,
    server_time_ms: u64,
}

#[derive(Serialize)]
pub struct SessionList {
    server_time_ms: u64,
    sessions: Vec<SessionSummary>,
}

fn secs(ticks: u64) -> f64 {
    ticks as f64 / TIMESCALE as f64
}

fn end_reason(r: EndReason) -> &'static str {
    match r {
        EndReason::EndOfStream => "end-of-stream",
        EndReason::PublisherGone => "publisher-gone",
        EndReason::ServerShutdown => "server-shutdown",
        EndReason::Error => "error",
    }
}

/// Rates over `records` (frames/s, bits/s); `None` for no duration.
fn rates<'a>(records: impl Iterator<Item = &'a SegmentRecord>) -> Option<(f64, f64)> {
    let (mut ticks, mut frames, mut bytes) = (0u64, 0u64, 0u64);
    for r in records {
        ticks += r.duration;
        frames += u64::from(r.frame_count);
        bytes += r.byte_size;
    }
    let d = secs(ticks);
    (d > 0.0).then(|| (frames as f64 / d, bytes as f64 * 8.0 / d))
}

fn summarize(
    s: &Session,
    viewers: &HttpViewers,
    now_ms: u64,
) -> (SessionSummary, Vec<SegmentRecord>, u64, u32, u32) {
    let info = s.info();
    let stats = s.stats();
    let records = s.segment_records();
    let listed_from = info.media_sequence;
    let listed = || records.iter().filter(|r| r.sequence >= listed_from);
    let measured = rates(listed());
    let ended = info.ended.as_deref();
    let state = if ended.is_some() {
        "lingering"
    } else if s.has_publisher() {
        "live"
    } else {
        "publisher-gone"
    };
    let started = Some(info.availability_start_ms).filter(|&t| t > 0);
    let end_ms = ended.map_or(now_ms, |e| e.ended_at_ms);
    let latency_ms = match (ended, records.last()) {
        (None, Some(r)) => {
            let edge = r.program_date_time_ms as f64 + secs(r.duration) * 1000.0;
            Some((now_ms as f64 - edge).max(0.0))
        }
        _ => None,
    };
    let mut drops = BTreeMap::new();
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        drops.insert(reason.as_str(), stats.dropped.get(i).copied().unwrap_or(0));
    }
    let summary = SessionSummary {
        id: s.id.clone(),
        state,
        end_reason: ended.map(|e| end_reason(e.reason)),
        codec: info.config.as_ref().map(|c| c.codec_string()),
        width: info.config.as_ref().map(|c| c.width),
        height: info.config.as_ref().map(|c| c.height),
        audio_codec: info.audio.as_ref().map(|a| a.codec_string()),
        audio_sample_rate: info.audio.as_ref().map(|a| a.sample_rate),
        audio_channels: info.audio.as_ref().map(|a| a.channels()),
        audio_only: info.audio_only,
        frame_rate: info
            .frame_rate
            .filter(|&(_, den)| den > 0)
            .map(|(num, den)| f64::from(num) / f64::from(den)),
        measured_frame_rate: measured.map(|m| m.0),
        bitrate_bps: measured.map(|m| m.1),
        viewers: Viewers {
            grpc: s.subscriber_count(),
            http: viewers.count(&s.id),
        },
        latency_ms,
        drops,
        drops_total: stats.frames_dropped,
        uptime_s: started.map(|t| end_ms.saturating_sub(t) as f64 / 1000.0),
        started_at_ms: started,
        frames: stats.frames,
        segments: stats.segments,
        window_segments: listed().count(),
        bytes_in: stats.bytes_in,
    };
    (
        summary,
        records,
        listed_from,
        info.segment_target_ms,
        info.window,
    )
}

fn json<T: Serialize>(v: T) -> Response {
    let mut r = Json(v).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Every session held (live, publisher gone, lingering), by id.
pub fn list(registry: &Registry, viewers: &HttpViewers) -> SessionList {
    viewers.prune(registry);
    let now_ms = now_unix_ns() / 1_000_000;
    SessionList {
        server_time_ms: now_ms,
        sessions: registry
            .sessions()
            .iter()
            .map(|s| summarize(s, viewers, now_ms).0)
            .collect(),
    }
}

/// `GET /api/sessions`.
pub async fn sessions(
    State(registry): State<Arc<Registry>>,
    Extension(viewers): Extension<Arc<HttpViewers>>,
) -> Response {
    json(list(&registry, &viewers))
}

/// `GET /api/record`: the recorder's counters (`--record`): objects and
/// bytes written, retries, failures, the segments not recorded and why,
/// by session, the queue and the last error; 404 when recording is off.
pub async fn record(State(registry): State<Arc<Registry>>) -> Response {
    match registry.recorder() {
        Some(r) => json(r.status()),
        None => (
            StatusCode::NOT_FOUND,
            "recording is off on this server (see --record)\n",
        )
            .into_response(),
    }
}

/// `GET /api/sessions/{id}`: the summary, the segments held and the
/// session's segment settings; 404 for a session not held.
pub async fn session(
    State(registry): State<Arc<Registry>>,
    Extension(viewers): Extension<Arc<HttpViewers>>,
    Extension(SessionId(id)): Extension<SessionId>,
) -> Response {
    let Some(s) = registry.get(&id) else {
        return super::no_session(&id);
    };
    let now_ms = now_unix_ns() / 1_000_000;
    let (summary, records, listed_from, segment_target_ms, window) =
        summarize(&s, &viewers, now_ms);
    let segment_list = records
        .iter()
        .map(|r| {
            let d = secs(r.duration);
            let per_s = |x: f64| if d > 0.0 { x / d } else { 0.0 };
            SegmentRow {
                sequence: r.sequence,
                duration: d,
                bytes: r.byte_size,
                frames: r.frame_count,
                bitrate_bps: per_s(r.byte_size as f64 * 8.0),
                frame_rate: per_s(f64::from(r.frame_count)),
                discontinuity: r.discontinuity,
                independent: r.keyframe_aligned,
                program_date_time_ms: r.program_date_time_ms,
                listed: r.sequence >= listed_from,
            }
        })
        .collect();
    let members = registry.renditions(crate::ids::session_of(&id));
    let renditions = if members.len() > 1 {
        crate::session::renditions::views(&members)
    } else {
        Vec::new()
    };
    json(SessionDetail {
        summary,
        segment_target_ms,
        window,
        segment_list,
        renditions,
        server_time_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::HttpViewers;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn viewers_are_distinct_clients_per_session() {
        let v = HttpViewers::default();
        let a = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        let b = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        v.saw("s", a, Some("hls.js"));
        v.saw("s", a, Some("hls.js"));
        v.saw("s", a, Some("VLC"));
        v.saw("s", b, Some("hls.js"));
        v.saw("t", None, None);
        assert_eq!(v.count("s"), 3);
        assert_eq!(v.count("t"), 1);
        assert_eq!(v.count("u"), 0);
        // Past the prune threshold, quiet sessions are forgotten, not these.
        for i in 0..super::PRUNE_AT + 10 {
            v.saw(&format!("x{i}"), a, None);
        }
        assert_eq!(v.count("s"), 3);
    }
}

//! The HTTP origin: HLS (over CMAF and over MPEG-TS) and DASH for every
//! session, the segments they name, a session list with a built-in player
//! page, and `/time` for DASH clock sync. Everything served is rendered by
//! the engine from the session's segment records; this module only looks
//! sessions up and sets headers.

mod api;
mod jobs;
pub mod ll;
mod pages;
pub mod serve;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use bytes::Bytes;
use tower_http::cors::CorsLayer;

use crate::auth::{bearer, Access, Auth, AuthError};
use crate::engine::playlist::iso8601_ms;
use crate::ids::parse_session_id;
use crate::session::{now_unix_ns, ManifestKind, Registry, Session};
use crate::session::{Format, MuxError, PartStatus};

const HLS: &str = "application/vnd.apple.mpegurl";
const DASH: &str = "application/dash+xml";
const MP4: &str = "video/mp4";
const M4S: &str = "video/iso.segment";
/// The CMAF audio track's init segment and segments.
const AUDIO_MP4: &str = "audio/mp4";
const AUDIO_M4S: &str = "audio/iso.segment";
const TS: &str = "video/mp2t";
/// Manifests change every segment: players must refetch them.
const MANIFEST_CACHE: &str = "no-cache, max-age=0";
/// A segment never changes once listed; one minute covers its life in the
/// window without outliving a session that reuses the id.
const SEGMENT_CACHE: &str = "public, max-age=60, immutable";

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub registry: Arc<Registry>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

pub fn router(
    registry: Arc<Registry>,
    auth: Option<Arc<Auth>>,
    limits: &serve::HttpLimits,
    jobs_api: Option<Arc<crate::jobs::Jobs>>,
) -> Router {
    let held = Arc::new(ll::HeldRequests::new(limits));
    let state = HttpState {
        registry: registry.clone(),
        metrics: crate::metrics::install(),
    };
    let metrics_route = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    let viewers = Arc::new(api::HttpViewers::default());
    Router::new()
        .route("/", get(pages::index))
        .route("/api/sessions", get(api::sessions))
        .route("/api/sessions/{session}", get(api::session))
        .route("/api/record", get(api::record))
        .route("/player/{session}", get(pages::player))
        .route("/favicon.ico", get(pages::favicon))
        .route("/favicon.svg", get(pages::favicon))
        .route("/assets/hls.min.js", get(pages::hls_js))
        .route("/assets/dash.mediaplayer.min.js", get(pages::dash_js))
        .route("/time", get(time))
        .route("/healthz", get(healthz))
        .route("/live/{session}/index.m3u8", get(hls_cmaf))
        .route("/live/{session}/master.m3u8", get(hls_master))
        .route("/live/{session}/audio.m3u8", get(hls_audio))
        .route("/live/{session}/ts/master.m3u8", get(hls_ts_master))
        .route("/live/{session}/manifest.mpd", get(dash))
        .route("/live/{session}/ts/index.m3u8", get(hls_ts))
        .route("/live/{session}/ts/{file}", get(ts_file))
        .route("/live/{session}/{file}", get(cmaf_file))
        .with_state(registry)
        .merge(metrics_route)
        .merge(jobs::routes(jobs_api, auth.clone()))
        .layer(Extension(viewers))
        .layer(Extension(held))
        .layer(axum::middleware::from_fn_with_state(auth, authorize))
        .layer(axum::middleware::from_fn(session_from_path))
        .layer(axum::middleware::from_fn(count_requests))
        .layer(CorsLayer::permissive())
}

/// The session a request's path names (`/live/{session}/…`,
/// `/player/{session}`, `/api/sessions/{session}`), decoded and validated once by
/// [`parse_session_id`]; authorization and every handler use this, never
/// the raw path.
#[derive(Clone, Debug)]
pub(crate) struct SessionId(pub(crate) String);

/// The raw (still percent-encoded) session segment of a path, if the path
/// names a session.
#[doc(hidden)] // pub for the fuzz targets
pub fn raw_session_segment(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/live/")
        .or_else(|| path.strip_prefix("/player/"))
        .or_else(|| path.strip_prefix("/api/sessions/"))?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Reads the session out of the path for everything after it. An id that
/// does not decode to a valid one names no session: 404, whatever the
/// token (the answer says nothing about which sessions exist).
async fn session_from_path(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(raw) = raw_session_segment(req.uri().path()) {
        match parse_session_id(raw) {
            Ok(id) => {
                req.extensions_mut().insert(SessionId(id));
            }
            Err(e) => return not_found(format!("no such session: {e}\n")),
        }
    }
    next.run(req).await
}

/// The token a request came with in its query string: manifests served to
/// it name their segments with the same token, so players that only know
/// the playlist URL (ffplay, VLC, Safari) fetch the segments too.
#[derive(Clone)]
struct QueryToken(String);

/// With auth on, everything that names a session needs a play token for
/// it, and the session list (`/`, `/api/sessions`) and the recorder's
/// state (`/api/record`, which names sessions) one for every session
/// (`*`); the player assets, the favicon, `/time`, `/healthz` and
/// `/metrics` stay open.
async fn authorize(
    State(auth): State<Option<Arc<Auth>>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(auth) = auth else {
        return next.run(req).await;
    };
    let session = if matches!(req.uri().path(), "/" | "/api/sessions" | "/api/record") {
        Some("*".to_string())
    } else {
        req.extensions().get::<SessionId>().map(|s| s.0.clone())
    };
    let Some(session) = session else {
        return next.run(req).await;
    };
    let query_token = req
        .uri()
        .query()
        .and_then(|q| url_params(q).find(|(k, _)| k == "token").map(|(_, v)| v));
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::to_string);
    let token = header_token.or_else(|| query_token.clone());
    let now = now_unix_ns() / 1_000_000_000;
    match auth.check(token.as_deref(), &session, Access::Play, now) {
        Ok(()) => {
            if let Some(t) = query_token {
                req.extensions_mut().insert(QueryToken(t));
            }
            next.run(req).await
        }
        Err(AuthError::Forbidden) => {
            (StatusCode::FORBIDDEN, "this token does not allow that\n").into_response()
        }
        Err(e) => {
            let mut r = (StatusCode::UNAUTHORIZED, format!("{e}\n")).into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// `k=v` pairs of a query string, percent-decoded.
#[doc(hidden)] // pub for the fuzz targets
pub fn url_params(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        Some((percent_decode(k)?, percent_decode(v)?))
    })
}

#[doc(hidden)] // pub for the fuzz targets
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[doc(hidden)] // pub for the fuzz targets
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'*') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Appends `?token=…` to every URI a manifest names.
fn with_token(kind: ManifestKind, text: &str, token: &str) -> String {
    let q = format!("?token={}", percent_encode(token));
    match kind {
        ManifestKind::Dash => text
            .replace(".mp4\"", &format!(".mp4{q}\""))
            .replace(".m4s\"", &format!(".m4s{q}\"")),
        ManifestKind::HlsCmaf
        | ManifestKind::HlsTs
        | ManifestKind::HlsAudio
        | ManifestKind::HlsMultivariant { .. } => {
            let mut out = String::with_capacity(text.len() + 64 * q.len());
            for line in text.lines() {
                if line.is_empty() {
                } else if !line.starts_with('#') {
                    out.push_str(line);
                    out.push_str(&q);
                } else if let Some((before, rest)) = line.split_once("URI=\"") {
                    // EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT.
                    let (uri, after) = rest.split_once('"').unwrap_or((rest, ""));
                    out.push_str(&format!("{before}URI=\"{uri}{q}\"{after}"));
                } else {
                    out.push_str(line);
                }
                out.push('\n');
            }
            out
        }
    }
}

async fn count_requests(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    let kind = if path.ends_with(".m3u8") || path.ends_with(".mpd") {
        "manifest"
    } else if path.ends_with(".m4s") || path.ends_with(".ts") || path.ends_with(".mp4") {
        "segment"
    } else {
        "other"
    };
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    ::metrics::histogram!(crate::metrics::HTTP_DURATION, "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    ::metrics::counter!(
        crate::metrics::HTTP_REQUESTS,
        "kind" => kind,
        "status" => resp.status().as_u16().to_string()
    )
    .increment(1);
    resp
}

/// Prometheus text format.
async fn metrics(State(s): State<HttpState>) -> Response {
    match &s.metrics {
        Some(h) => body(
            "text/plain; version=0.0.4; charset=utf-8",
            "no-store",
            crate::metrics::render(h, &s.registry),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

/// Liveness, and the cluster's state in a cluster: an origin without NATS
/// still serves (200, saying replication is paused); an edge without it
/// cannot (503, so a load balancer sends players elsewhere).
async fn healthz(State(r): State<Arc<Registry>>) -> Response {
    match r.cluster_up() {
        None => "ok\n".into_response(),
        Some(true) => "ok\ncluster: connected\n".into_response(),
        Some(false) if r.is_edge() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster: unreachable (this edge serves nothing until NATS is back)\n",
        )
            .into_response(),
        Some(false) => "ok\ncluster: unreachable (serving locally; replication to edges paused)\n"
            .into_response(),
    }
}

fn not_found(what: impl Into<String>) -> Response {
    (StatusCode::NOT_FOUND, what.into()).into_response()
}

fn body(content_type: &'static str, cache: &'static str, bytes: impl Into<Bytes>) -> Response {
    let mut r = bytes.into().into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

/// The session (live, or ended and lingering) for a URL's (decoded) id, or
/// the response saying why it is not served: 404 when there is none, 503
/// while an edge cannot read it from the cluster (its numbering may be
/// behind the origin's; it is never served stale).
fn session(registry: &Registry, id: &str) -> Result<Arc<Session>, Box<Response>> {
    let s = registry.get(id).ok_or_else(|| Box::new(no_session(id)))?;
    if !s.is_readable() {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("session {id:?} cannot be read from the cluster right now\n"),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(Box::new(r));
    }
    Ok(s)
}

fn no_session(id: &str) -> Response {
    not_found(format!("no session {id:?}\n"))
}

/// Who fetched a manifest: counted as an HTTP viewer of its session.
struct Viewer {
    viewers: Arc<api::HttpViewers>,
    ip: Option<std::net::IpAddr>,
    agent: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Viewer {
            viewers: parts
                .extensions
                .get::<Arc<api::HttpViewers>>()
                .cloned()
                .unwrap_or_default(),
            ip: parts.extensions.get::<api::PeerAddr>().map(|p| p.0.ip()),
            agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        })
    }
}

/// A manifest request: the session, what it asks, the token it came with.
struct ManifestAsk {
    kind: ManifestKind,
    ct: &'static str,
    query: Option<String>,
    token: Option<axum::Extension<QueryToken>>,
}

async fn manifest(
    registry: &Registry,
    id: &str,
    ask: ManifestAsk,
    viewer: Viewer,
    held: &Arc<ll::HeldRequests>,
) -> Response {
    if let ManifestKind::Dash | ManifestKind::HlsMultivariant { .. } = ask.kind {
        let members = registry.renditions(id);
        if !members.is_empty() && crate::ids::rendition_of(id).is_none() {
            return group_manifest(id, &members, ask, viewer);
        }
    }
    let s = match session(registry, id) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let format = match ask.kind {
        ManifestKind::HlsTs | ManifestKind::HlsMultivariant { ts: true } => Format::Ts,
        ManifestKind::HlsCmaf
        | ManifestKind::Dash
        | ManifestKind::HlsAudio
        | ManifestKind::HlsMultivariant { ts: false } => Format::Cmaf,
    };
    if !s.muxes(format) {
        return not_found(format!("{}\n", MuxError::FormatOff(format)));
    }
    viewer.viewers.saw(id, viewer.ip, viewer.agent.as_deref());
    let hls = !matches!(
        ask.kind,
        ManifestKind::Dash | ManifestKind::HlsMultivariant { .. }
    );
    let q = if hls {
        match ll::parse_query(ask.query.as_deref()) {
            Ok(q) => q,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        }
    } else {
        ll::HlsQuery::default()
    };
    let mut cache = MANIFEST_CACHE;
    if let (Some(msn), Some(state)) = (q.msn, s.ll_state()) {
        // Blocking playlist reload: held until the playlist lists segment
        // `msn` (part `part` of it), the session ends, or three target
        // durations pass.
        if let Err(e) = ll::check_blocking(&state, msn, q.part) {
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
        if !state.ended {
            let Some(_guard) = held.acquire(id) else {
                return held_busy();
            };
            if !s.wait_listed(msn, q.part, ll::hold_limit(&state)).await {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the part asked for did not come within three target durations\n",
                )
                    .into_response();
            }
        }
        // The answer to a given _HLS_msn/_HLS_part never changes: cacheable
        // (the query is part of the cache key).
        cache = BLOCKING_CACHE;
    }
    let text = s.manifest_bytes(ask.kind, q.skip).map(|text| {
        match rendition_reports(registry, &s, ask.kind) {
            Some(reports) => {
                let mut t = Vec::with_capacity(text.len() + reports.len());
                t.extend_from_slice(&text);
                t.extend_from_slice(reports.as_bytes());
                Bytes::from(t)
            }
            None => text,
        }
    });
    match text {
        Some(text) => match ask.token {
            Some(axum::Extension(QueryToken(t))) => body(
                ask.ct,
                cache,
                with_token(ask.kind, &String::from_utf8_lossy(&text), &t),
            ),
            None => body(ask.ct, cache, text),
        },
        None => not_found(format!("session {id:?} has no complete segment yet\n")),
    }
}

/// LL-HLS rendition reports (RFC 8216bis 4.4.5.4) for a low-latency media
/// playlist of a session with renditions: one `EXT-X-RENDITION-REPORT`
/// per other aligned rendition that is live, with its last part
/// (`LAST-MSN`, `LAST-PART`), so a player switching to it can ask for the
/// next part at once. `None` when there is none to report.
fn rendition_reports(registry: &Registry, s: &Session, kind: ManifestKind) -> Option<String> {
    let ts = match kind {
        ManifestKind::HlsCmaf => false,
        ManifestKind::HlsTs => true,
        _ => return None,
    };
    s.ll_state()?;
    let (g, name) = s.rendition_group()?;
    let mut out = String::new();
    for (other, aligned) in g.others(name) {
        if !aligned {
            continue;
        }
        let id = match crate::ids::rendition_id(&g.session, &other) {
            Ok(id) => id,
            Err(_) => continue,
        };
        let Some((msn, part)) = registry.live(&id).and_then(|o| o.last_part()) else {
            continue;
        };
        let uri = if ts {
            format!("../../{id}/ts/index.m3u8")
        } else {
            format!("../{id}/index.m3u8")
        };
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "#EXT-X-RENDITION-REPORT:URI=\"{uri}\",LAST-MSN={msn},LAST-PART={part}"
        );
    }
    (!out.is_empty()).then_some(out)
}

/// The multivariant playlist or MPD of a session with renditions
/// (`members`: its sessions, by id): every rendition that is aligned and
/// has a segment, the leading one first (its timeline is the MPD's).
fn group_manifest(
    id: &str,
    members: &[Arc<Session>],
    ask: ManifestAsk,
    viewer: Viewer,
) -> Response {
    use crate::engine::playlist::group::{self, Variant};
    let ts = matches!(ask.kind, ManifestKind::HlsMultivariant { ts: true });
    let format = if ts { Format::Ts } else { Format::Cmaf };
    let leader = members
        .iter()
        .find_map(|s| s.rendition_group().and_then(|(g, _)| g.leader()));
    // A rendition that stopped leaves the list while others go on (when
    // all have ended, the list is what they were).
    let any_live = members.iter().any(|s| !s.is_ended());
    let mut listed: Vec<(String, String, crate::engine::playlist::Manifests)> = Vec::new();
    for s in members {
        if !s.is_readable() || !s.muxes(format) || (any_live && s.is_ended()) {
            continue;
        }
        let aligned = s
            .rendition_group()
            .is_none_or(|(g, name)| g.alignment(name).aligned);
        if !aligned {
            continue;
        }
        let Some(m) = s.manifests_snapshot() else {
            continue;
        };
        let base = if ts {
            format!("../../{}/", s.id)
        } else {
            format!("../{}/", s.id)
        };
        let name = crate::ids::rendition_of(&s.id).unwrap_or("");
        let entry = (s.id.clone(), base, m);
        if leader.as_deref() == Some(name) {
            listed.insert(0, entry);
        } else {
            listed.push(entry);
        }
    }
    let variants: Vec<Variant<'_>> = listed
        .iter()
        .map(|(id, base, m)| Variant {
            id,
            base,
            manifests: m,
        })
        .collect();
    viewer.viewers.saw(id, viewer.ip, viewer.agent.as_deref());
    let text = match ask.kind {
        ManifestKind::Dash => group::dash_mpd(&variants, now_unix_ns() / 1_000_000),
        _ => group::hls_multivariant(&variants, ts),
    };
    let Some(text) = text else {
        return not_found(format!(
            "session {id:?} has no rendition with a complete segment yet\n"
        ));
    };
    match ask.token {
        Some(axum::Extension(QueryToken(t))) => {
            body(ask.ct, MANIFEST_CACHE, with_token(ask.kind, &text, &t))
        }
        None => body(ask.ct, MANIFEST_CACHE, Bytes::from(text)),
    }
}

/// A blocking reload's answer: the same for every request with the same
/// query, so a CDN may keep it (briefly: the session may end, and the id be
/// reused).
const BLOCKING_CACHE: &str = "public, max-age=6";

fn held_busy() -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        "too many held requests; retry later\n",
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

async fn hls_cmaf(
    State(r): State<Arc<Registry>>,
    Extension(SessionId(id)): Extension<SessionId>,
    Extension(held): Extension<Arc<ll::HeldRequests>>,
    RawQuery(query): RawQuery,
    token: Option<axum::Extension<QueryToken>>,
    viewer: Viewer,
) -> Response {
    let ask = ManifestAsk {
        kind: ManifestKind::HlsCmaf,
        ct: HLS,
        query,
        token,
    };
    manifest(&r, &id, ask, viewer, &held).await
}

async fn hls_ts(
    State(r): State<Arc<Registry>>,
    Extension(SessionId(id)): Extension<SessionId>,
    Extension(held): Extension<Arc<ll::HeldRequests>>,
    RawQuery(query): RawQuery,
    token: Option<axum::Extension<QueryToken>>,
    viewer: Viewer,
) -> Response {
    let ask = ManifestAsk {
        kind: ManifestKind::HlsTs,
        ct: HLS,
        query,
        token,
    };
    manifest(&r, &id, ask, viewer, &held).await
}

/// The multivariant playlist (`master.m3u8`): the video playlist with the
/// audio rendition, for players that want the audio too.
async fn hls_master(
    State(r): State<Arc<Registry>>,
    Extension(SessionId(id)): Extension<SessionId>,
    Extension(held): Extension<Arc<ll::HeldRequests>>,
    token: Option<axum::Extension<QueryToken>>,
    viewer: Viewer,
) -> Response {
    let ask = ManifestAsk {
        kind: ManifestKind::HlsMultivariant { ts: false },
        ct: HLS,
        query: None,
        token,
    };
    manifest(&r, &id, ask, viewer, &held).await
}

/// The MPEG-TS multivariant playlist (`ts/master.m3u8`): one variant whose
/// segments carry both tracks.
async fn hls_ts_master(
    State(r): State<Arc<Registry>>,
    Extension(SessionId(id)): Extension<SessionId>,
    Extension(held): Extension<Arc<ll::HeldRequests>>,
    token: Option<axum::Extension<QueryToken>>,
    viewer: Viewer,
) -> Response {
    let ask = ManifestAsk {
        kind: ManifestKind::HlsMultivariant { ts: true },
        ct: HLS,
        query: None,
        token,
    };
    manifest(&r, &id, ask, viewer, &held).await
}

/// The audio media playlist (`audio.m3u8`, CMAF audio track).
async fn hls_audio(
    State(r): State<Arc<Registry>>,
    Extension(SessionId(id)): Extension<SessionId>,
    Extension(held): Extension<Arc<ll::HeldRequests>>,
    RawQuery(query): RawQuery,
    token: Option<axum::Extension<QueryToken>>,
    viewer: Viewer,
) -> Response {
    let ask = ManifestAsk {
        kind: ManifestKind::HlsAudio,
        ct: HLS,
        query,
        token,
    };
    manifest(&r, &id, ask, viewer, &held).await
}

async fn dash(
    State(r): State<Arc<Registry>>,
    Extension(SessionId(id)): Extension<SessionId>,
    Extension(held): Extension<Arc<ll::HeldRequests>>,
    token: Option<axum::Extension<QueryToken>>,
    viewer: Viewer,
) -> Response {
    let ask = ManifestAsk {
        kind: ManifestKind::Dash,
        ct: DASH,
        query: None,
        token,
    };
    manifest(&r, &id, ask, viewer, &held).await
}

/// Low-latency DASH lists the segment after the one in progress ahead of
/// time (predicted, so a player never waits a whole MPD refresh for it):
/// a request for it that comes before it starts is held until it starts
/// (bounded like any held request), then served as the segment in
/// progress — unless it opened a new period (`404`: the publisher
/// reconnected and its time is not the predicted one).
async fn wait_predicted(
    s: &Session,
    id: &str,
    seq: u64,
    held: &Arc<ll::HeldRequests>,
) -> Result<(), Response> {
    let Some(st) = s.ll_state() else {
        return Ok(());
    };
    if st.ended || st.position.open_segment.checked_add(1) != Some(seq) {
        return Ok(());
    }
    let Some(_guard) = held.acquire(id) else {
        return Err(held_busy());
    };
    s.wait_segment_opened(seq, ll::hold_limit(&st)).await;
    // Predicted before a publisher reconnected, it opened a new period
    // after a gap: not the segment the player asked for.
    if s.ll_state()
        .is_some_and(|now| now.publisher_generation != st.publisher_generation)
    {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "segment {seq} was predicted in the MPD, but the publisher reconnected and it \
                 opens a new period: reload the MPD"
            ),
        )
            .into_response());
    }
    Ok(())
}

/// The CMAF segment in progress (low-latency DASH), with chunked transfer
/// encoding (HTTP/1.1; an HTTP/2 stream's DATA frames): `styp`, then each
/// part's chunk as it is stored, until the segment is complete. Counted as
/// a held request; aborted (no last chunk, an HTTP/2 reset: the client sees
/// an error, not a short segment) if no part comes within three target
/// durations.
fn segment_in_progress(
    s: Arc<Session>,
    id: &str,
    seq: u64,
    audio: bool,
    held: &Arc<ll::HeldRequests>,
) -> Response {
    let Some(guard) = held.acquire(id) else {
        return held_busy();
    };
    let limit = s
        .ll_state()
        .map_or(std::time::Duration::from_secs(6), |st| ll::hold_limit(&st));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let _guard = guard;
        let styp = if audio {
            crate::engine::mux::cmaf_audio::audio_styp()
        } else {
            crate::engine::mux::cmaf::styp()
        };
        if tx.send(Ok(styp)).await.is_err() {
            return;
        }
        let mut sent = 0usize;
        loop {
            let seen = s.next_part_stored();
            let (chunks, done) = s.segment_progress(seq, sent, audio);
            for c in chunks {
                sent += 1;
                // A part without audio has no audio chunk.
                if c.is_empty() {
                    continue;
                }
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
            if done {
                return;
            }
            let before = std::time::Instant::now();
            s.wait_next_part(seen, limit).await;
            if before.elapsed() >= limit {
                // Not complete: the response is aborted (no last chunk; an
                // HTTP/2 reset), so no client takes what it got for the
                // whole segment.
                let _ = tx
                    .send(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("segment {seq}: no part within {limit:?} (publisher away)"),
                    )))
                    .await;
                return;
            }
        }
    });
    let mut r = Response::new(axum::body::Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(M4S));
    // Complete, the segment is the same bytes: cacheable once it is.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A part by number: at once if stored; held (bounded) if it is one of the
/// next parts (a preload hint names the next one before it exists).
async fn part_response(
    s: &Session,
    id: &str,
    n: u64,
    format: Format,
    ct: &'static str,
    headers: &HeaderMap,
    held: &Arc<ll::HeldRequests>,
) -> Response {
    if s.part_status(n) == PartStatus::Coming {
        let Some(_guard) = held.acquire(id) else {
            return held_busy();
        };
        let limit = s
            .ll_state()
            .map_or(std::time::Duration::from_secs(6), |st| ll::hold_limit(&st));
        let stored = s.wait_part_stored(n, limit).await || s.part_status(n) == PartStatus::Stored;
        // A session that ended without it: 404 below.
        if !stored && !s.is_ended() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the part did not come in time\n",
            )
                .into_response();
        }
    }
    mux_response(s.part_bytes(n, format).map(|(b, _)| vec![b]), ct, headers)
}

fn mux_response(
    result: Result<Vec<Bytes>, MuxError>,
    ct: &'static str,
    headers: &HeaderMap,
) -> Response {
    match result {
        Ok(b) => ranged(headers, ct, SEGMENT_CACHE, b),
        Err(
            e @ (MuxError::NotAvailable(_)
            | MuxError::PartNotAvailable(_)
            | MuxError::NoConfig(_)
            | MuxError::FormatOff(_)),
        ) => not_found(format!("{e}\n")),
        Err(e) => {
            tracing::error!(error = %e, "muxing failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

/// A single byte range of a body of known length, inclusive.
#[doc(hidden)] // pub for the fuzz targets
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No usable `Range`: serve the whole body.
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// Reads `Range: bytes=…` (RFC 9110 §14) for a body of `len` bytes. Single
/// ranges only (`a-b`, `a-`, `-n`); several ranges, other units, malformed
/// values and `If-Range` (these bodies carry no validator to match) get the
/// whole body.
#[doc(hidden)] // pub for the fuzz targets
pub fn range_ask(headers: &HeaderMap, len: u64) -> RangeAsk {
    if headers.contains_key(header::IF_RANGE) {
        return RangeAsk::Whole;
    }
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAsk::Whole;
    };
    let Some((unit, spec)) = v.trim().split_once('=') else {
        return RangeAsk::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match num(last) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if len == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(len.saturating_sub(n), len - 1),
            None => RangeAsk::Whole,
        },
        // `a-`: from a to the end.
        (false, true) => match num(first) {
            Some(a) if a < len => RangeAsk::Part(a, len - 1),
            Some(_) => RangeAsk::Unsatisfiable,
            None => RangeAsk::Whole,
        },
        // `a-b`.
        (false, false) => match (num(first), num(last)) {
            (Some(a), Some(b)) if a > b => RangeAsk::Whole,
            (Some(a), Some(_)) if a >= len => RangeAsk::Unsatisfiable,
            (Some(a), Some(b)) => RangeAsk::Part(a, b.min(len - 1)),
            _ => RangeAsk::Whole,
        },
        (true, true) => RangeAsk::Whole,
    }
}

/// A body sent as its shared pieces, one after another (no copy), with its
/// `Content-Length`.
fn pieces_body(ct: &'static str, cache: &'static str, pieces: Vec<Bytes>) -> Response {
    if let [one] = pieces.as_slice() {
        return body(ct, cache, one.clone());
    }
    let len: usize = pieces.iter().map(Bytes::len).sum();
    let stream = tokio_stream::iter(pieces.into_iter().map(Ok::<_, std::convert::Infallible>));
    let mut r = axum::body::Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// Bytes `first..=last` of the concatenation of `pieces`, as shared slices.
#[doc(hidden)] // pub for the fuzz targets
pub fn slice_pieces(pieces: &[Bytes], first: u64, last: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for p in pieces {
        let (start, end) = (at, at + p.len() as u64); // [start, end)
        at = end;
        if end <= first || start > last {
            continue;
        }
        let from = first.saturating_sub(start) as usize;
        let to = (last + 1).min(end).saturating_sub(start) as usize;
        out.push(p.slice(from..to));
    }
    out
}

/// A segment body, or the part of it a `Range` asks for (`206`), or `416`.
fn ranged(
    headers: &HeaderMap,
    ct: &'static str,
    cache: &'static str,
    pieces: Vec<Bytes>,
) -> Response {
    let len = pieces.iter().map(|p| p.len() as u64).sum();
    let mut r = match range_ask(headers, len) {
        RangeAsk::Whole => pieces_body(ct, cache, pieces),
        RangeAsk::Part(first, last) => {
            let part = slice_pieces(&pieces, first, last);
            let mut r = pieces_body(ct, cache, part);
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
        RangeAsk::Unsatisfiable => {
            let mut r =
                (StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
    };
    r.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r
}

/// `{prefix}{number}{suffix}` → number.
#[doc(hidden)] // pub for the fuzz targets
pub fn numbered(file: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let n = file.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if n.is_empty() || n.len() > 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

async fn cmaf_file(
    State(r): State<Arc<Registry>>,
    Extension(SessionId(id)): Extension<SessionId>,
    Extension(held): Extension<Arc<ll::HeldRequests>>,
    Path((_, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = match session(&r, &id) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Some(seq) = numbered(&file, "seg-", ".m4s") {
        s.wait_segment_stored(seq, SEGMENT_STORE_WAIT).await;
        if let Err(busy) = wait_predicted(&s, &id, seq, &held).await {
            return busy;
        }
        if s.segment_in_progress(seq) {
            return segment_in_progress(s, &id, seq, false, &held);
        }
        let pieces = s.segment_pieces(seq, Format::Cmaf);
        let pieces = dvr(&r, &s, &id, &file, Some(seq), pieces).await;
        return mux_or(pieces, M4S, &headers);
    }
    if let Some(seq) = numbered(&file, "audio-", ".m4s") {
        s.wait_segment_stored(seq, SEGMENT_STORE_WAIT).await;
        if let Err(busy) = wait_predicted(&s, &id, seq, &held).await {
            return busy;
        }
        if s.segment_in_progress(seq) {
            return segment_in_progress(s, &id, seq, true, &held);
        }
        let pieces = s.segment_pieces(seq, Format::AudioCmaf);
        let pieces = dvr(&r, &s, &id, &file, Some(seq), pieces).await;
        return mux_or(pieces, AUDIO_M4S, &headers);
    }
    if let Some(n) = numbered(&file, "audio-part-", ".m4s") {
        return part_response(&s, &id, n, Format::AudioCmaf, AUDIO_M4S, &headers, &held).await;
    }
    if file == crate::engine::playlist::AUDIO_INIT {
        let init = s.audio_init_segment().map(|b| vec![b]);
        return mux_response(init, AUDIO_MP4, &headers);
    }
    if let Some(n) = numbered(&file, "part-", ".m4s") {
        return part_response(&s, &id, n, Format::Cmaf, M4S, &headers, &held).await;
    }
    if let Some(config) = numbered(&file, "init-", ".mp4").and_then(|n| u32::try_from(n).ok()) {
        let init = s.init_segment(config).map(|b| vec![b]);
        let init = dvr(&r, &s, &id, &file, None, init).await;
        return mux_or(init, MP4, &headers);
    }
    not_found("no such file\n")
}

/// With `--dvr`: a segment the playlists list (or an init segment) that
/// left memory, read from the recording; `Err` a response saying why not.
async fn dvr(
    r: &Registry,
    s: &Session,
    id: &str,
    name: &str,
    sequence: Option<u64>,
    held: Result<Vec<Bytes>, MuxError>,
) -> Result<Result<Vec<Bytes>, MuxError>, Response> {
    let gone = matches!(held, Err(MuxError::NotAvailable(_) | MuxError::NoConfig(_)));
    let recorder = r
        .recorder()
        .filter(|_| s.options.pipeline.dvr_window_ms > 0);
    let (true, Some(recorder)) = (gone, recorder) else {
        return Ok(held);
    };
    if sequence.is_some_and(|seq| !s.lists_segment(seq)) {
        return Ok(held);
    }
    let file = match name.strip_suffix(".ts") {
        Some(_) => format!("ts/{name}"),
        None => name.to_owned(),
    };
    match recorder.read(id, &file).await {
        Ok(Some(b)) => Ok(Ok(vec![b])),
        Ok(None) => Err(not_found(format!(
            "{name} left memory and is not in the recording (see /api/record)\n"
        ))),
        Err(e) => {
            tracing::warn!(session_id = id, file, error = %e, "DVR: reading the recording failed");
            Err((
                StatusCode::BAD_GATEWAY,
                format!("{name}: reading the recording failed\n"),
            )
                .into_response())
        }
    }
}

/// [`mux_response`] of what [`dvr`] found, or its response.
fn mux_or(
    found: Result<Result<Vec<Bytes>, MuxError>, Response>,
    ct: &'static str,
    headers: &HeaderMap,
) -> Response {
    match found {
        Ok(result) => mux_response(result, ct, headers),
        Err(r) => r,
    }
}

async fn ts_file(
    State(r): State<Arc<Registry>>,
    Extension(SessionId(id)): Extension<SessionId>,
    Extension(held): Extension<Arc<ll::HeldRequests>>,
    Path((_, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = match session(&r, &id) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Some(n) = numbered(&file, "part-", ".ts") {
        return part_response(&s, &id, n, Format::Ts, TS, &headers, &held).await;
    }
    let Some(seq) = numbered(&file, "seg-", ".ts") else {
        return not_found("no such file\n");
    };
    s.wait_segment_stored(seq, SEGMENT_STORE_WAIT).await;
    let pieces = s.segment_pieces(seq, Format::Ts);
    let pieces = dvr(&r, &s, &id, &file, Some(seq), pieces).await;
    mux_or(pieces, TS, &headers)
}

/// How long a segment request waits for a segment the playlists list but
/// whose last part the publisher's task is still muxing (microseconds).
const SEGMENT_STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// DASH `<UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014">`.
async fn time() -> Response {
    body(
        "text/plain; charset=utf-8",
        "no-store",
        iso8601_ms(now_unix_ns() / 1_000_000),
    )
}

#[cfg(test)]
mod tests {
    use super::{numbered, range_ask, RangeAsk};
    use axum::http::{header, HeaderMap, HeaderValue};

    fn ask(range: &str, len: u64) -> RangeAsk {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        range_ask(&h, len)
    }

    #[test]
    fn ranges() {
        use RangeAsk::*;
        assert_eq!(range_ask(&HeaderMap::new(), 10), Whole);
        assert_eq!(ask("bytes=0-3", 10), Part(0, 3));
        assert_eq!(ask("bytes=2-", 10), Part(2, 9));
        assert_eq!(ask("bytes=-3", 10), Part(7, 9));
        assert_eq!(ask("bytes=-30", 10), Part(0, 9));
        assert_eq!(ask("bytes=5-99", 10), Part(5, 9));
        assert_eq!(ask("BYTES = 9-9", 10), Part(9, 9));
        assert_eq!(ask("bytes=10-", 10), Unsatisfiable);
        assert_eq!(ask("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(ask("bytes=-0", 10), Unsatisfiable);
        assert_eq!(ask("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(ask("bytes=-5", 0), Unsatisfiable);
        for whole in [
            "bytes=3-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes 0-1",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(ask(whole, 10), Whole, "{whole}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"x\""));
        assert_eq!(range_ask(&h, 10), Whole);
    }

    #[test]
    fn slices_of_pieces() {
        use super::slice_pieces;
        use bytes::Bytes;
        let pieces = vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b""),
            Bytes::from_static(b"defg"),
            Bytes::from_static(b"h"),
        ];
        let joined = |v: Vec<Bytes>| v.concat();
        let all = b"abcdefgh";
        for first in 0..8u64 {
            for last in first..8u64 {
                assert_eq!(
                    joined(slice_pieces(&pieces, first, last)),
                    all[first as usize..=last as usize],
                    "{first}-{last}"
                );
            }
        }
    }

    #[test]
    fn segment_names() {
        assert_eq!(numbered("seg-12.m4s", "seg-", ".m4s"), Some(12));
        assert_eq!(numbered("seg-.m4s", "seg-", ".m4s"), None);
        assert_eq!(numbered("seg--1.m4s", "seg-", ".m4s"), None);
        assert_eq!(numbered("seg-1.m4s.m4s", "seg-", ".m4s"), None);
        assert_eq!(
            numbered("seg-99999999999999999999999.m4s", "seg-", ".m4s"),
            None
        );
        assert_eq!(numbered("init-0.mp4", "init-", ".mp4"), Some(0));
    }
}

//! The web console: the session list at `/` (polls `/api/sessions`), the
//! per-session page with the player (hls.js and dash.js served from this
//! server, no CDN) and plain inline SVG plots, a 404 page for sessions that
//! do not appear, and the favicon.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;

use super::api::{self, HttpViewers};
use super::SessionId;
use crate::session::Registry;

/// How long `/player/{id}` waits for a session that does not exist yet
/// before answering 404 (a publisher about to start still gets the player).
pub const PLAYER_WAIT: Duration = Duration::from_secs(2);

static HLS_JS: &[u8] = include_bytes!("../../assets/vendor/hls.min.js");
static DASH_JS: &[u8] = include_bytes!("../../assets/vendor/dash.mediaplayer.min.js");

fn js(bytes: &'static [u8]) -> Response {
    let mut r = bytes.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    r
}

pub async fn hls_js() -> Response {
    js(HLS_JS)
}

pub async fn dash_js() -> Response {
    js(DASH_JS)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

static FAVICON: &str = include_str!("console/favicon.svg");
static CSS: &str = include_str!("console/console.css");
static INDEX: &str = include_str!("console/index.html");
static PLAYER: &str = include_str!("console/player.html");
static NOT_FOUND: &str = include_str!("console/not-found.html");

pub async fn favicon() -> Response {
    let mut r = FAVICON.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    r
}

fn page(template: &str) -> String {
    template.replace("{{CSS}}", CSS)
}

/// `/`: the session list. The first rows come embedded (the JSON of
/// `/api/sessions`); the page then polls `/api/sessions` every second.
#[derive(serde::Deserialize, Default)]
pub struct IndexQuery {
    token: Option<String>,
}

pub async fn index(
    State(registry): State<Arc<Registry>>,
    Extension(viewers): Extension<Arc<HttpViewers>>,
    Query(q): Query<IndexQuery>,
) -> Response {
    // Without JavaScript: a plain list of player links (with auth on, they
    // carry the token the list was opened with).
    let qs = q
        .token
        .as_deref()
        .map(|t| format!("?token={}", escape(&super::percent_encode(t))))
        .unwrap_or_default();
    let mut plain = String::new();
    for s in registry.sessions() {
        let id = escape(&s.id);
        plain.push_str(&format!("<li><a href=\"/player/{id}{qs}\">{id}</a></li>"));
    }
    let list = api::list(&registry, &viewers);
    // Inside <script>: no "</" may close it early.
    let data = serde_json::to_string(&list)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c");
    let mut r = Html(
        page(INDEX)
            .replace("{{PLAIN}}", &plain)
            .replace("{{DATA}}", &data),
    )
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(serde::Deserialize, Default)]
pub struct PlayerQuery {
    mode: Option<String>,
}

/// `/player/{id}`: the player and the session's plots; for a session that
/// is not held and does not appear within [`PLAYER_WAIT`], a 404 page.
pub async fn player(
    State(registry): State<Arc<Registry>>,
    Extension(SessionId(id)): Extension<SessionId>,
    Query(q): Query<PlayerQuery>,
) -> Response {
    let mode = match q.mode.as_deref() {
        Some("dash") => "dash",
        Some("native") => "native",
        _ => "hls",
    };
    let exists = registry.get(&id).is_some()
        || matches!(
            registry.wait_for(&id, PLAYER_WAIT).await,
            Ok(_) | Err(crate::session::RegistryError::TooManySubscribers(_))
        );
    let id = escape(&id);
    if !exists {
        let body = page(NOT_FOUND)
            .replace("{{SESSION}}", &id)
            .replace("{{WAIT}}", &PLAYER_WAIT.as_secs().to_string());
        let mut r = (StatusCode::NOT_FOUND, Html(body)).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    Html(
        page(PLAYER)
            .replace("{{SESSION}}", &id)
            .replace("{{MODE}}", mode),
    )
    .into_response()
}

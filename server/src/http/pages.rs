//! The session list and the built-in player page (hls.js and dash.js served
//! from this server, no CDN).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;

use super::SessionId;
use crate::session::Registry;

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

#[derive(serde::Deserialize, Default)]
pub struct IndexQuery {
    token: Option<String>,
}

pub async fn index(
    State(registry): State<Arc<Registry>>,
    Query(q): Query<IndexQuery>,
) -> Html<String> {
    // With auth on, links carry the token the list was opened with.
    let (amp, qs) = match &q.token {
        Some(t) => {
            let t = escape(&super::percent_encode(t));
            (format!("&amp;token={t}"), format!("?token={t}"))
        }
        None => (String::new(), String::new()),
    };
    let mut rows = String::new();
    for s in registry.sessions() {
        let info = s.info();
        let id = escape(&s.id);
        let (codec, size) = match &info.config {
            Some(c) => (c.codec_string(), format!("{}x{}", c.width, c.height)),
            None => ("-".into(), "-".into()),
        };
        let state = if info.ended.is_some() {
            "ended"
        } else {
            "live"
        };
        let _ = writeln!(
            rows,
            "<tr><td>{id}</td><td>{state}</td><td>{codec}</td><td>{size}</td><td>{frames}</td>\
             <td><a href=\"/player/{id}?mode=hls{amp}\">HLS player</a> · <a href=\"/player/{id}?mode=dash{amp}\">DASH player</a></td>\
             <td><a href=\"/live/{id}/index.m3u8{qs}\">index.m3u8</a> · <a href=\"/live/{id}/ts/index.m3u8{qs}\">ts/index.m3u8</a> · \
             <a href=\"/live/{id}/manifest.mpd{qs}\">manifest.mpd</a></td></tr>",
            frames = s.frames(),
        );
    }
    if rows.is_empty() {
        rows = "<tr><td colspan=7>No sessions yet. Publish one over gRPC \
                (liveslice.v1.SliceService/StreamSlices), or start the server with --demo demo.</td></tr>"
            .into();
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>liveslice</title>\
         <meta http-equiv=refresh content=5>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.3em .8em;text-align:left}}</style></head>\
         <body><h1>liveslice</h1><table><tr><th>session</th><th>state</th><th>codec</th><th>size</th>\
         <th>frames</th><th>play</th><th>manifests</th></tr>\n{rows}</table></body></html>"
    ))
}

#[derive(serde::Deserialize, Default)]
pub struct PlayerQuery {
    mode: Option<String>,
}

pub async fn player(
    Extension(SessionId(id)): Extension<SessionId>,
    Query(q): Query<PlayerQuery>,
) -> Response {
    let mode = match q.mode.as_deref() {
        Some("dash") => "dash",
        Some("native") => "native",
        _ => "hls",
    };
    Html(
        PLAYER
            .replace("{{SESSION}}", &escape(&id))
            .replace("{{MODE}}", mode),
    )
    .into_response()
}

/// The player: waits for the first segment, then plays with hls.js (or
/// natively where the browser plays HLS) or dash.js. `window.liveslice`
/// exposes its state for automated checks.
const PLAYER: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>liveslice · {{SESSION}}</title>
<style>body{font-family:sans-serif;margin:1em;background:#111;color:#eee}video{width:100%;max-width:960px;background:#000}a{color:#9cf}</style>
<script src="/assets/hls.min.js"></script>
<script src="/assets/dash.mediaplayer.min.js"></script>
</head><body>
<h2>{{SESSION}} <small>(<a class="mode" data-mode="hls" href="?mode=hls">HLS</a> · <a class="mode" data-mode="dash" href="?mode=dash">DASH</a> · <a class="mode" data-mode="native" href="?mode=native">native HLS</a> · <a href="/">all sessions</a>)</small></h2>
<video id="v" controls autoplay muted playsinline></video>
<pre id="status">waiting for the first segment…</pre>
<script>
const session = "{{SESSION}}", mode = "{{MODE}}";
const base = "/live/" + encodeURIComponent(session);
// With auth on, the page's own ?token= goes to the manifests (which then
// name their segments with it) and to the other modes' links.
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
for (const a of document.querySelectorAll("a.mode")) {
  const u = new URL(location.href);
  u.searchParams.set("mode", a.dataset.mode);
  a.href = u.toString();
}
const video = document.getElementById("v");
const state = window.liveslice = { mode, errors: [], started: false };
function fail(what) { state.errors.push(String(what)); console.error(what); }
// Waits until `url` is served and, for a live HLS playlist, lists at least
// `minSegments` segments.
async function ready(url, minSegments = 0) {
  for (;;) {
    try {
      const r = await fetch(url, { cache: "no-store" });
      if (r.ok) {
        const text = await r.text();
        if (text.includes('#EXT-X-ENDLIST') || text.split('#EXTINF').length - 1 >= minSegments) return text;
      }
    } catch (e) {}
    await new Promise(r => setTimeout(r, 500));
  }
}
async function start() {
  if (mode === "dash") {
    const url = base + "/manifest.mpd" + q;
    await ready(url);
    const p = dashjs.MediaPlayer().create();
    p.on(dashjs.MediaPlayer.events.ERROR, e => fail("dash.js: " + JSON.stringify(e.error || e)));
    p.on(dashjs.MediaPlayer.events.PLAYBACK_NOT_ALLOWED, () => fail("dash.js: playback not allowed"));
    // dash.js starts playback itself (autoplay) once it listens to the video:
    // it refreshes a live MPD only after it has seen the video's "play"
    // event, so a play() of ours before that would stall it at the end of
    // the segments the first MPD lists.
    p.initialize(video, url, true);
    state.player = p;
  } else {
    const url = base + "/index.m3u8" + q;
    const useHlsJs = mode === "hls" && window.Hls && Hls.isSupported();
    // Chromium's built-in HLS player fails (DEMUXER_ERROR_COULD_NOT_PARSE,
    // "Segment queue never had any data") when it starts on a live playlist
    // of fewer than three segments, as a fresh session has.
    const text = await ready(url, useHlsJs ? 0 : 3);
    if (useHlsJs) {
      // Three segments behind live. EXT-X-TARGETDURATION is the longest a
      // segment may ever be (fixed for the session), so hls.js's default
      // of three target durations would sit further back than needed.
      const durations = [...text.matchAll(/#EXTINF:([0-9.]+)/g)].map(m => parseFloat(m[1]));
      const typical = durations.length ? durations.reduce((a, b) => a + b, 0) / durations.length : 2;
      const h = new Hls({ liveSyncDuration: 3 * typical, liveMaxLatencyDuration: 6 * typical });
      h.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) fail("hls.js: " + d.type + " " + d.details); });
      h.loadSource(url);
      h.attachMedia(video);
      state.player = h;
    } else {
      video.src = url;
    }
    video.play().catch(e => fail("play: " + e));
  }
  state.started = true;
}
video.addEventListener("error", () => fail("video: " + (video.error && video.error.message)));
setInterval(() => {
  const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
  state.currentTime = video.currentTime;
  state.decodedFrames = q.totalVideoFrames || 0;
  document.getElementById("status").textContent =
    "mode " + mode + " · t=" + video.currentTime.toFixed(2) + "s · frames " + state.decodedFrames +
    (state.errors.length ? " · errors: " + state.errors.join("; ") : "");
}, 500);
start().catch(fail);
</script></body></html>
"#;

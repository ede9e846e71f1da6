//! The web console's JSON (`/api/sessions`, `/api/sessions/{id}`) against a
//! real server: what a session reports while live and after it ends, HTTP
//! viewers, the auth rule of the session list, the player page's short wait
//! and its 404 page, the favicon. (The pages in a browser: `browser.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

async fn json(addr: std::net::SocketAddr, path: &str) -> Value {
    let (status, _, body) = raw_get(addr, path, &[]).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Polls `/api/sessions/{id}` until `done` holds (10 s at most).
async fn until(
    addr: std::net::SocketAddr,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = json(addr, &format!("/api/sessions/{id}")).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_sessions_report_what_the_session_does() {
    let server = start(test_config()).await;
    let addr = server.http_addr;
    let empty = json(addr, "/api/sessions").await;
    assert_eq!(empty["sessions"], Value::Array(vec![]), "{empty}");

    let mut c = client(&server).await;
    let p = publish(&mut c, "c1", Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, "c1", true, 0).await.unwrap();
    let reader = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    // 165 frames, 14 of them dropped for a lost reference (see metrics.rs).
    p.send_chunked(&testdata("damaged_cut_ref.h264"), &[20_000])
        .await;

    let live = until(addr, "c1", "drops and a segment", |v| {
        v["drops"]["reference_lost"] == 14 && v["segments"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(live["id"], "c1");
    assert_eq!(live["state"], "live");
    assert!(
        live["codec"].as_str().unwrap().starts_with("avc1."),
        "{live}"
    );
    assert!(live["width"].as_u64() > Some(0) && live["height"].as_u64() > Some(0));
    assert_eq!(live["frame_rate"], 30.0);
    assert_eq!(live["viewers"]["grpc"], 1, "the subscriber");
    assert_eq!(live["viewers"]["http"], 0);
    assert_eq!(live["drops_total"], 14);
    let bitrate = live["bitrate_bps"].as_f64().unwrap();
    assert!(bitrate > 10_000.0, "{live}");
    assert!(live["measured_frame_rate"].as_f64().unwrap() > 0.0);
    assert!(live["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(live["uptime_s"].as_f64().unwrap() >= 0.0);

    // The segment list: what the bars are drawn from.
    let segs = live["segment_list"].as_array().unwrap();
    assert_eq!(segs.len() as u64, live["segments"].as_u64().unwrap());
    let mut bytes = 0;
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s["sequence"], i as u64, "{s}");
        assert!(s["duration"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["bytes"].as_u64().unwrap() > 0, "{s}");
        assert!(
            s["discontinuity"].is_boolean() && s["independent"].is_boolean(),
            "{s}"
        );
        assert_eq!(s["listed"], true);
        bytes += s["bytes"].as_u64().unwrap();
    }
    assert_eq!(segs[0]["independent"], true);
    assert!(bytes <= live["bytes_in"].as_u64().unwrap());

    // HTTP viewers: distinct clients fetching a manifest.
    for agent in ["player-a", "player-b", "player-a"] {
        let (status, _, _) = raw_get(addr, "/live/c1/index.m3u8", &[("User-Agent", agent)]).await;
        assert_eq!(status, 200);
    }
    let list = json(addr, "/api/sessions").await;
    let row = &list["sessions"][0];
    assert_eq!(row["id"], "c1");
    assert_eq!(row["viewers"]["http"], 2, "{row}");
    assert!(
        row.get("segment_list").is_none(),
        "the list carries no segments"
    );

    p.end().await;
    let ended = until(addr, "c1", "the end", |v| v["state"] == "lingering").await;
    assert_eq!(ended["end_reason"], "end-of-stream");
    assert_eq!(
        ended["frames"], 165,
        "as liveslice_frames_in_total counts them"
    );
    assert_eq!(ended["latency_ms"], Value::Null);
    let _ = reader.await.unwrap();

    for missing in ["/api/sessions/nope", "/api/sessions/%2e%2e"] {
        let (status, _, _) = raw_get(addr, missing, &[]).await;
        assert_eq!(status, 404, "{missing}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_favicon_and_the_404_player() {
    let server = start(test_config()).await;
    let addr = server.http_addr;

    let (status, headers, body) = raw_get(addr, "/", &[]).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        body.contains("/api/sessions") && body.contains("rel=\"icon\""),
        "{body}"
    );
    assert!(body.contains("prefers-color-scheme:dark"));

    for path in ["/favicon.ico", "/favicon.svg"] {
        let (status, headers, body) = raw_get(addr, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "content-type"), Some("image/svg+xml"));
        assert!(body.starts_with(b"<svg"));
    }

    // A session that never comes: 404 after the short wait, a link back.
    let t0 = Instant::now();
    let (status, _, body) = raw_get(addr, "/player/typo", &[]).await;
    let waited = t0.elapsed();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 404, "{body}");
    assert!(
        waited >= Duration::from_millis(1900),
        "answered after {waited:?}"
    );
    assert!(
        body.contains("no session") && body.contains("typo"),
        "{body}"
    );
    assert!(body.contains("href=\"/\""), "{body}");
    assert!(!body.contains("<video"));

    // A publisher that starts just after the page is asked for: the player.
    let page = tokio::spawn(async move { raw_get(addr, "/player/late", &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = client(&server).await;
    let p = publish(&mut c, "late", Default::default()).await.unwrap();
    let (status, _, body) = page.await.unwrap();
    assert_eq!(status, 200);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("<video") && body.contains("window.liveslice"),
        "{body}"
    );
    // An existing session answers at once.
    let t0 = Instant::now();
    let (status, _, _) = raw_get(addr, "/player/late?mode=dash", &[]).await;
    assert_eq!(status, 200);
    assert!(t0.elapsed() < Duration::from_secs(1));
    p.end().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_the_session_lists_auth_rule() {
    let mut config = test_config();
    config.auth.tokens = vec![
        "play:*:every-session-token".into(),
        "play:c2:c2-only-token".into(),
        "publish:*:publisher-token".into(),
    ];
    let server = start(config).await;
    let addr = server.http_addr;
    let get = |path: &'static str, token: Option<&'static str>| async move {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("Authorization", b)])
            .unwrap_or_default();
        raw_get(addr, path, &headers).await.0
    };
    // The list, like `/`: a play token for every session.
    for path in ["/", "/api/sessions"] {
        assert_eq!(get(path, None).await, 401, "{path}");
        assert_eq!(get(path, Some("c2-only-token")).await, 403, "{path}");
        assert_eq!(get(path, Some("publisher-token")).await, 403, "{path}");
        assert_eq!(get(path, Some("every-session-token")).await, 200, "{path}");
    }
    assert_eq!(
        get("/api/sessions?token=every-session-token", None).await,
        200
    );
    // One session: a play token for it (the answer does not say whether it exists).
    assert_eq!(get("/api/sessions/c2", None).await, 401);
    assert_eq!(get("/api/sessions/c3", Some("c2-only-token")).await, 403);
    assert_eq!(get("/api/sessions/c2", Some("c2-only-token")).await, 404);
    assert_eq!(
        get("/api/sessions/c2", Some("every-session-token")).await,
        404
    );
    // The favicon stays open.
    assert_eq!(get("/favicon.svg", None).await, 200);
    assert_eq!(get("/favicon.ico", None).await, 200);
    server.shutdown().await;
}

//! Access control over real gRPC and HTTP: static and signed tokens, the
//! statuses for missing, wrong and expired ones, and no hint of whether a
//! session exists.

mod common;

use std::time::Duration;

use common::*;
use liveslice_proto::v1 as pb;
use liveslice_server::auth::{sign, Access};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

const SECRET: &str = "test-secret-0123456789";

fn request(
    msg: pb::SliceRequest,
    token: Option<&str>,
) -> (
    tonic::Request<ReceiverStream<pb::SliceRequest>>,
    tokio::sync::mpsc::Sender<pb::SliceRequest>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.try_send(msg).unwrap();
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {t}")).unwrap(),
        );
    }
    (req, tx)
}

fn publish_msg(session: &str) -> pb::SliceRequest {
    pb::SliceRequest {
        session_id: session.into(),
        role: pb::Role::Publish as i32,
        ..Default::default()
    }
}

fn subscribe_msg(session: &str) -> pb::SliceRequest {
    pb::SliceRequest {
        session_id: session.into(),
        subscribe: Some(pb::SubscribeOptions {
            wait_ms: 300,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_status(addr: std::net::SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let buf = String::from_utf8_lossy(&raw).into_owned();
    let status = buf.split(' ').nth(1).unwrap().parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_publishing_and_playing() {
    let mut config = test_config();
    config.auth.tokens = vec![
        "publish:cam1:cam1-publish-key".into(),
        "play:*:viewer-key-1".into(),
    ];
    config.auth.secret = Some(SECRET.into());
    let server = start(config).await;
    let mut c = client(&server).await;

    // Publishing: no token, a wrong token, a play token, another session's key.
    let (req, _tx) = request(publish_msg("cam1"), None);
    assert_eq!(
        c.stream_slices(req).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let (req, _tx) = request(publish_msg("cam1"), Some("wrong-token-1"));
    assert_eq!(
        c.stream_slices(req).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let (req, _tx) = request(publish_msg("cam1"), Some("viewer-key-1"));
    assert_eq!(
        c.stream_slices(req).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let (req, _tx) = request(publish_msg("cam2"), Some("cam1-publish-key"));
    assert_eq!(
        c.stream_slices(req).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let expired = sign(SECRET, Access::Publish, "cam1", 1);
    let (req, _tx) = request(publish_msg("cam1"), Some(&expired));
    let err = c.stream_slices(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());

    // The right key publishes.
    let (req, tx) = request(publish_msg("cam1"), Some("cam1-publish-key"));
    let mut pub_stream = c.stream_slices(req).await.unwrap().into_inner();
    let data = testdata("baseline_30.h264");
    tx.send(pb::SliceRequest {
        data: bytes::Bytes::from(data),
        ..Default::default()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Playing, over gRPC: the same answers for a live session and for one
    // that does not exist, so a refusal reveals nothing.
    for session in ["cam1", "no-such-session"] {
        let (req, _t) = request(subscribe_msg(session), None);
        assert_eq!(
            c.stream_slices(req).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let (req, _t) = request(subscribe_msg(session), Some("cam1-publish-key"));
        assert_eq!(
            c.stream_slices(req).await.unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
    let signed_play = sign(SECRET, Access::Play, "cam1", u64::MAX / 2);
    let (req, _t) = request(subscribe_msg("cam1"), Some(&signed_play));
    let mut sub = c.stream_slices(req).await.unwrap().into_inner();
    let first = sub.message().await.unwrap().unwrap();
    assert!(
        !first.data.is_empty(),
        "frames flow to an authorized subscriber"
    );
    let (req, _t) = request(subscribe_msg("cam2"), Some(&signed_play));
    assert_eq!(
        c.stream_slices(req).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );

    // Over HTTP: header or query token; 401 without, 403 for the wrong one,
    // the same for sessions that do not exist.
    let addr = server.http_addr;
    for path in [
        "/live/cam1/index.m3u8",
        "/live/nobody/index.m3u8",
        "/",
        "/player/cam1",
    ] {
        let r = tokio::task::spawn_blocking(move || http_status(addr, path, None))
            .await
            .unwrap();
        assert_eq!(r.0, 401, "{path}");
    }
    let t = signed_play.clone();
    let r =
        tokio::task::spawn_blocking(move || http_status(addr, "/live/cam1/index.m3u8", Some(&t)))
            .await
            .unwrap();
    assert_eq!(r.0, 200);
    let r = tokio::task::spawn_blocking(move || {
        http_status(addr, "/live/cam2/index.m3u8", Some("cam1-publish-key"))
    })
    .await
    .unwrap();
    assert_eq!(r.0, 403);
    // With the token in the query, the playlist names its segments with it,
    // so a player that only has the playlist URL can fetch them.
    let q = format!(
        "/live/cam1/index.m3u8?token={}",
        signed_play.replace('*', "%2A")
    );
    let (status, text) = tokio::task::spawn_blocking(move || http_status(addr, &q, None))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let seg_line = text
        .lines()
        .find(|l| l.starts_with("seg-"))
        .unwrap()
        .to_string();
    assert!(seg_line.contains("?token=lsv1:play:cam1:"), "{text}");
    assert!(text.contains("init-0.mp4?token="), "{text}");
    let seg_path = format!("/live/cam1/{seg_line}");
    let (status, _) = tokio::task::spawn_blocking(move || http_status(addr, &seg_path, None))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let seg_no_token = format!("/live/cam1/{}", seg_line.split('?').next().unwrap());
    let (status, _) = tokio::task::spawn_blocking(move || http_status(addr, &seg_no_token, None))
        .await
        .unwrap();
    assert_eq!(status, 401);
    // Open paths stay open.
    for path in ["/time", "/healthz", "/metrics", "/assets/hls.min.js"] {
        let (status, _) = tokio::task::spawn_blocking(move || http_status(addr, path, None))
            .await
            .unwrap();
        assert_eq!(status, 200, "{path}");
    }
    drop(tx);
    let _ = collect(&mut pub_stream, Duration::from_secs(10)).await;
    server.shutdown().await;
}

/// The README's mint example, run as written (with the secret `openssl rand
/// -hex 32` would give), and secrets and tokens that are too short, refused
/// naming their own key.
#[test]
fn readme_mint_example_works_and_short_secrets_name_their_key() {
    let bin = env!("CARGO_BIN_EXE_liveslice-server");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("liveslice-server --mint-token "))
        .expect("the README's mint example");
    let args: Vec<&str> = line.split('#').next().unwrap().split_whitespace().collect();
    assert!(
        readme.contains("export LIVESLICE_AUTH_SECRET=$(openssl rand -hex 32)"),
        "the README sets the secret it mints with"
    );
    let run = |args: &[&str], secret: Option<&str>| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LIVESLICE_") {
                cmd.env_remove(k);
            }
        }
        if let Some(s) = secret {
            cmd.env("LIVESLICE_AUTH_SECRET", s);
        }
        cmd.output().unwrap()
    };
    let hex64 = "3f".repeat(32);
    let out = run(&args[1..], Some(&hex64));
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("lsv1:play:cam1:"));

    let out = run(&args[1..], Some("fifteen-chars!!"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("auth-secret") && err.contains("at least 16") && !err.contains("auth-token"),
        "{err}"
    );
    let out = run(&["--auth-token", "play:cam1:short", "--print-config"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("auth-token") && err.contains("at least 8"),
        "{err}"
    );
}

#[test]
fn minted_tokens_verify() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveslice-server"))
        .args(["--auth-secret", SECRET, "--mint-token", "play:cam9:1h"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("lsv1:play:cam9:"));
    let auth = liveslice_server::auth::Auth::new(&[], Some(SECRET))
        .unwrap()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(auth.check(Some(&token), "cam9", Access::Play, now), Ok(()));
    assert!(auth
        .check(Some(&token), "cam9", Access::Play, now + 7200)
        .is_err());
}

//! One session-id decoder: over HTTP (paths and authorization), gRPC,
//! static tokens and `--mint-token`, an encoded id is the id it decodes to,
//! or it is refused; it is never one id to the auth check and another to
//! the handler.

mod common;

use std::time::Duration;

use common::*;
use liveslice_proto::v1 as pb;
use liveslice_server::auth::{sign, Access};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

const SECRET: &str = "test-secret-0123456789";

/// A live publisher of the test stream in `session` (as given, encoded or
/// not), authorized with `token`.
struct Live {
    ack_id: String,
    tx: tokio::sync::mpsc::Sender<pb::SliceRequest>,
    responses: tonic::Streaming<pb::SliceResponse>,
}

async fn start_publishing(
    server: &liveslice_server::app::Running,
    session: &str,
    token: Option<&str>,
) -> Live {
    let mut c = client(server).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::SliceRequest {
        session_id: session.into(),
        role: pb::Role::Publish as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {t}")).unwrap(),
        );
    }
    let mut responses = c.stream_slices(req).await.expect("publish").into_inner();
    let ack_id = match responses.message().await.unwrap().unwrap().event {
        Some(pb::slice_response::Event::PublishAck(a)) => a.session_id,
        other => panic!("expected a PublishAck, got {other:?}"),
    };
    tx.send(pb::SliceRequest {
        data: testdata("baseline_30.h264").into(),
        // Repeating the id (in another spelling of the same id) is fine.
        session_id: session.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    Live {
        ack_id,
        tx,
        responses,
    }
}

impl Live {
    async fn end(mut self) {
        self.tx
            .send(pb::SliceRequest {
                end_of_stream: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let (_, status) = collect(&mut self.responses, Duration::from_secs(20)).await;
        assert!(status.is_none(), "publisher ended with {status:?}");
    }
}

/// Publishes the whole test stream and ends the session; returns the id
/// the server acknowledged.
async fn publish_all(
    server: &liveslice_server::app::Running,
    session: &str,
    token: Option<&str>,
) -> String {
    let live = start_publishing(server, session, token).await;
    let id = live.ack_id.clone();
    live.end().await;
    id
}

async fn status(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> u16 {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    raw_get(addr, path, &headers).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_ids_over_http_are_authorized_as_what_they_decode_to() {
    let mut config = test_config();
    config.auth.tokens = vec![
        // A static entry's session is read like any id: this one is cam1.
        "publish:cam%31:cam1-publish-key".into(),
        "play:cam1:cam1-viewer-key".into(),
        "play:cam2:cam2-viewer-key".into(),
    ];
    config.auth.secret = Some(SECRET.into());
    let server = start(config).await;
    // Published as `cam%31`, it is session cam1.
    assert_eq!(
        publish_all(&server, "cam%31", Some("cam1-publish-key")).await,
        "cam1"
    );
    let addr = server.http_addr;

    let reference = raw_get(
        addr,
        "/live/cam1/index.m3u8",
        &[("Authorization", "Bearer cam1-viewer-key")],
    )
    .await;
    assert_eq!(reference.0, 200);
    // Every spelling of cam1 is cam1: to the token check and to the handler.
    for path in [
        "/live/cam%31/index.m3u8",
        "/live/%63%61%6D%31/index.m3u8",
        "/live/%63%61%6d%31/index.m3u8",
        "/live/CAM1/index.m3u8",
    ] {
        let (s, _, body) =
            raw_get(addr, path, &[("Authorization", "Bearer cam1-viewer-key")]).await;
        if path.contains("CAM1") {
            // Ids are case-sensitive: another session, which does not exist,
            // and the cam1 token is not for it.
            assert_eq!(s, 403, "{path}");
            continue;
        }
        assert_eq!(s, 200, "{path}");
        assert_eq!(body, reference.2, "{path} serves cam1's playlist");
        // Another session's token is refused on an encoded cam1 path.
        assert_eq!(
            status(addr, path, Some("cam2-viewer-key")).await,
            403,
            "{path}"
        );
        assert_eq!(status(addr, path, None).await, 401, "{path}");
    }
    let seg = String::from_utf8(reference.2)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("seg-"))
        .unwrap()
        .to_string();
    assert_eq!(
        status(
            addr,
            &format!("/live/cam%31/{seg}"),
            Some("cam1-viewer-key")
        )
        .await,
        200
    );
    assert_eq!(
        status(addr, "/player/cam%31", Some("cam1-viewer-key")).await,
        200
    );

    // A signed token is read the same way: one made for `cam%31` is for
    // cam1; one for an id that can never be valid is no token at all.
    let for_cam31 = sign(SECRET, Access::Play, "cam%31", u64::MAX / 2);
    assert_eq!(
        status(addr, "/live/cam1/index.m3u8", Some(&for_cam31)).await,
        200
    );
    assert_eq!(
        status(addr, "/live/cam2/index.m3u8", Some(&for_cam31)).await,
        403
    );
    let for_dotdot = sign(SECRET, Access::Play, "%2e%2e", u64::MAX / 2);
    assert_eq!(
        status(addr, "/live/cam1/index.m3u8", Some(&for_dotdot)).await,
        401
    );

    // Ids that decode to nothing valid name no session, token or not:
    // traversal (any case), double encoding, an encoded slash, bad escapes.
    for path in [
        "/live/%2e%2e/index.m3u8",
        "/live/%2E%2e/index.m3u8",
        "/live/..%2Fetc/index.m3u8",
        "/live/cam%2531/index.m3u8",
        "/live/cam%2F1/index.m3u8",
        "/live/cam%zz/index.m3u8",
        "/live/cam%/index.m3u8",
        "/player/%2e%2e",
        "/live/%2e%2e/seg-0.m4s",
        "/live/%2e%2e/ts/index.m3u8",
    ] {
        for token in [None, Some("cam1-viewer-key")] {
            assert_eq!(status(addr, path, token).await, 404, "{path} {token:?}");
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_ids_over_grpc_are_the_ids_they_decode_to() {
    let server = start(test_config()).await;
    let live = start_publishing(&server, "%63am%31", None).await;
    assert_eq!(live.ack_id, "cam1");
    let mut c = client(&server).await;
    // Mixed-case escapes, and the plain id: all the live session cam1.
    for id in ["cam1", "cam%31", "%63%61%6D%31", "%63%61%6d%31"] {
        let mut sub = subscribe(&mut c, id, true, 0).await.expect(id);
        let first = tokio::time::timeout(Duration::from_secs(10), sub.message())
            .await
            .expect("a first response")
            .expect("no error")
            .expect("a message");
        match first.event {
            Some(pb::slice_response::Event::SessionInfo(i)) => assert_eq!(i.session_id, "cam1"),
            other => panic!("{id}: expected SessionInfo, got {other:?}"),
        }
    }
    // Never valid once decoded: refused before anything else.
    for id in [
        "%2e%2e",
        "%2E%2E%2Fx",
        "cam%2531",
        "cam%2F1",
        "cam%zz",
        "cam%",
    ] {
        let err = subscribe(&mut c, id, true, 0).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{id}");
        assert!(
            err.message().contains("session_id"),
            "{id}: {}",
            err.message()
        );
        let err = common::publish(&mut c, id, Default::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("{id} published"));
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{id}");
    }
    live.end().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_tokens_check_the_decoded_id() {
    let mut config = test_config();
    config.auth.tokens = vec![
        "publish:cam1:cam1-publish-key".into(),
        "play:cam1:cam1-viewer-key".into(),
    ];
    let server = start(config).await;
    // The cam1 key publishes `cam%31`, which is cam1...
    assert_eq!(
        publish_all(&server, "cam%31", Some("cam1-publish-key")).await,
        "cam1"
    );
    // ...and does not publish `cam%32`, which is cam2.
    let mut c = client(&server).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SliceRequest {
        session_id: "cam%32".into(),
        role: pb::Role::Publish as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        "authorization",
        MetadataValue::from_static("Bearer cam1-publish-key"),
    );
    assert_eq!(
        c.stream_slices(req).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_ids_in_tokens_and_flags_are_refused_at_start() {
    for entry in [
        "play:../x:viewer-key",
        "play:%2e%2e:viewer-key",
        "any:a%2531:viewer-key",
    ] {
        let mut config = test_config();
        config.auth.tokens = vec![entry.into()];
        let err = liveslice_server::app::start(&config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{entry} accepted"))
            .to_string();
        assert!(
            err.contains("auth-token") && err.contains("invalid session"),
            "{entry}: {err}"
        );
    }
    let mut config = test_config();
    config.server.demo = Some("%2e%2e".into());
    let err = liveslice_server::app::start(&config)
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("demo")),
        "{err:?}"
    );
}

#[test]
fn minting_for_an_invalid_id_fails_clearly() {
    let mint = |spec: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_liveslice-server"))
            .args(["--auth-secret", SECRET, "--mint-token", spec])
            .output()
            .unwrap()
    };
    for spec in [
        "play:../x:1h",
        "play:%2e%2e:1h",
        "publish:a%2531:1h",
        "play::1h",
    ] {
        let out = mint(spec);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {stderr}");
        assert!(out.stdout.is_empty(), "{spec}");
        assert!(
            stderr.contains("--mint-token") && stderr.contains("invalid session"),
            "{spec}: {stderr}"
        );
    }
    // An encoded id mints a token for the id it decodes to.
    let out = mint("play:cam%31:1h");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(token.starts_with("lsv1:play:cam1:"), "{token}");
}

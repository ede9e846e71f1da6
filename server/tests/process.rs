//! The real binary: SIGTERM while sessions are live ends them cleanly
//! (closed playlists, SessionEnded to subscribers) and exits in bounded time.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_and_exits() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_liveslice-server"))
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--demo",
            "demo",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    // "liveslice-server: gRPC on 127.0.0.1:P, HTTP on http://127.0.0.1:Q/"
    let grpc = first
        .split("gRPC on ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    std::thread::spawn(move || for _ in lines {});

    let mut c = pb::slice_service_client::SliceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut sub = subscribe(&mut c, "demo", true, 0).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    // Let a segment or two go by.
    tokio::time::sleep(Duration::from_millis(4500)).await;

    let t0 = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "did not exit within 8 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    let (responses, err) = task.await.unwrap();
    assert!(err.is_none(), "{err:?}");
    match responses.last().and_then(|r| r.event.as_ref()) {
        Some(Event::SessionEnded(e)) => {
            assert_eq!(e.reason, pb::session_ended::Reason::ServerShutdown as i32)
        }
        other => panic!("{other:?}"),
    }
    let final_delta = responses
        .iter()
        .rev()
        .find_map(|r| match &r.event {
            Some(Event::ManifestDelta(d)) => Some(d.clone()),
            _ => None,
        })
        .expect("manifest deltas");
    assert!(final_delta.ended);
    assert_eq!(final_delta.hls.unwrap().tail, "#EXT-X-ENDLIST\n");
    assert!(!frames(&responses).is_empty());
}

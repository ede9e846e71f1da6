//! `--memory-limit` bounds the media all sessions hold, live and lingering:
//! publishing and ending sessions quickly (each lingering with its window)
//! evicts the oldest lingering sessions instead of growing without bound,
//! and a new publisher is still served. Scaled from the 100 × 16 MB
//! under 256 MB to 100 × 4 MB under 64 MB (the same ratio), so the suite
//! stays quick in a debug build.

mod common;

use std::time::Duration;

use common::*;
use liveslice_proto::v1 as pb;

const SESSIONS: usize = 100;
const PER_SESSION: usize = 4 << 20;
const LIMIT: usize = 64 << 20;
/// What the process may hold beyond the budget: the test binary, tokio,
/// gRPC buffers and the allocator's slack.
const OVERHEAD: usize = 160 << 20;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .expect("VmRSS")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS value");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_sessions_are_evicted_within_the_memory_limit() {
    let mut config = test_config();
    config.session.memory_limit = LIMIT;
    config.session.ring_max_bytes = 8 << 20;
    config.engine.window = 100;
    config.session.linger = Duration::from_secs(600);
    let server = start(config).await;
    // One stream repeated to 4 MB: its frames all stay in the window.
    let one = testdata("high_bframes_30.h264");
    let mut data = Vec::with_capacity(PER_SESSION + one.len());
    while data.len() < PER_SESSION {
        data.extend_from_slice(&one);
    }
    let mut c = client(&server).await;
    let mut peak = 0;
    for i in 0..SESSIONS {
        let id = format!("mem{i}");
        let mut p = publish(&mut c, &id, Default::default())
            .await
            .unwrap_or_else(|e| panic!("session {i}: {e}"));
        p.send_chunked(&data, &[64 * 1024]).await;
        p.end().await;
        drop(p.tx);
        let (_, status) = collect(&mut p.responses, Duration::from_secs(60)).await;
        assert!(status.is_none(), "session {i}: {status:?}");
        let held = server.registry.memory_bytes();
        assert!(
            held <= LIMIT,
            "after session {i}: {held} bytes held, limit {LIMIT}"
        );
        peak = peak.max(rss_bytes());
    }
    // Without the limit, 100 lingering sessions would hold 400 MB.
    assert!(
        peak <= LIMIT + OVERHEAD,
        "peak RSS {} MB over the {} MB budget + {} MB overhead",
        peak >> 20,
        LIMIT >> 20,
        OVERHEAD >> 20
    );
    let lingering = server.registry.sessions().len();
    assert!(lingering < SESSIONS / 2, "{lingering} sessions still held");
    // The newest lingering sessions are the ones kept.
    assert!(server
        .registry
        .get(&format!("mem{}", SESSIONS - 1))
        .is_some());
    assert!(server.registry.get("mem0").is_none());

    // A new publisher is served, and /metrics shows the bytes held.
    let mut p = publish(&mut c, "after", Default::default())
        .await
        .expect("served");
    p.send_chunked(&one, &[64 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let (responses, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    assert!(responses
        .iter()
        .any(|r| matches!(r.event, Some(pb::slice_response::Event::SegmentReady(_)))));
    let (code, _, body) = get(&format!("http://{}/metrics", server.http_addr)).await;
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    let held: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("liveslice_media_memory_bytes "))
        .expect("liveslice_media_memory_bytes")
        .parse()
        .unwrap();
    assert!(held > 0.0 && held <= LIMIT as f64, "{held}");
    assert!(text.contains(&format!("liveslice_media_memory_limit_bytes {LIMIT}")));
    server.shutdown().await;
}

/// When live sessions alone hold the budget, a new publisher is refused
/// with RESOURCE_EXHAUSTED naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_over_the_limit_refuse_new_publishers() {
    let mut config = test_config();
    config.session.ring_max_bytes = 4 << 20;
    config.session.memory_limit = 1 << 20;
    config.engine.window = 100;
    let server = start(config).await;
    let one = testdata("high_bframes_30.h264");
    let mut c = client(&server).await;
    let live = publish(&mut c, "big", Default::default())
        .await
        .expect("first");
    // Keep it live (no end) with about 1 MB held.
    for _ in 0..6 {
        live.send_chunked(&one, &[64 * 1024]).await;
    }
    let mut refused = None;
    for _ in 0..50 {
        match publish(&mut c, "second", Default::default()).await {
            Err(s) => {
                refused = Some(s);
                break;
            }
            Ok(mut p) => {
                // Admission may race the first session's pushes; a refusal
                // can also come as the stream's status.
                p.end().await;
                drop(p.tx);
                let (_, status) = collect(&mut p.responses, Duration::from_secs(10)).await;
                if let Some(s) = status {
                    refused = Some(s);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let s = refused.expect("a publisher over the limit is refused");
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("--memory-limit"), "{}", s.message());
    server.shutdown().await;
}

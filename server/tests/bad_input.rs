//! The bad-input matrix over real gRPC: each case gets a clear status or
//! error event, and the session and server keep working.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use liveslice_proto::v1 as pb;
use liveslice_server::app::Running;
use pb::slice_response::Event;

fn drops(responses: &[pb::SliceResponse], reason: pb::DropReason) -> Vec<&pb::FrameDropped> {
    responses
        .iter()
        .filter_map(|r| match &r.event {
            Some(Event::FrameDropped(d)) if d.reason == reason as i32 => Some(d),
            _ => None,
        })
        .collect()
}

fn dropped_count(responses: &[pb::SliceResponse], reason: pb::DropReason) -> u32 {
    drops(responses, reason).iter().map(|d| d.count).sum()
}

/// A fresh session publishes and plays: the server is still serving.
async fn assert_serving(server: &Running) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!("check-{}", N.fetch_add(1, Ordering::Relaxed));
    let mut c = client(server).await;
    let p = publish(&mut c, &id, Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, &id, false, 0).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    p.send_chunked(&testdata("baseline_30.h264"), &[50_000])
        .await;
    p.end().await;
    let (frames, status) = task.await.unwrap();
    assert!(status.is_none());
    assert_eq!(
        frames.len(),
        180,
        "the server still serves a healthy session"
    );
}

/// Publishes `chunks` into `id`, ends cleanly, returns the publisher's events.
async fn publish_events(
    server: &Running,
    id: &str,
    chunks: Vec<Bytes>,
) -> (Vec<pb::SliceResponse>, Option<tonic::Status>) {
    let mut c = client(server).await;
    let mut p = publish(&mut c, id, Default::default()).await.unwrap();
    for ch in chunks {
        if p.tx
            .send(pb::SliceRequest {
                data: ch,
                ..Default::default()
            })
            .await
            .is_err()
        {
            break;
        }
    }
    p.end().await;
    drop(p.tx);
    collect(&mut p.responses, Duration::from_secs(20)).await
}

fn xorshift_bytes(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_then_a_real_stream_in_the_same_session() {
    let server = start(test_config()).await;
    let mut chunks: Vec<Bytes> = (0..20)
        .map(|i| Bytes::from(xorshift_bytes(10_000, i + 1)))
        .collect();
    chunks.push(Bytes::new()); // zero-length chunks are fine
    let stream = testdata("baseline_30.h264");
    chunks.extend(stream.chunks(7_000).map(Bytes::copy_from_slice));
    let (events, status) = publish_events(&server, "garbage", chunks).await;
    assert!(status.is_none(), "{status:?}");
    assert!(
        !drops(&events, pb::DropReason::NotH264).is_empty(),
        "garbage is reported"
    );
    let d = drops(&events, pb::DropReason::NotH264)[0];
    assert!(d.detail.contains("not H.264"), "{}", d.detail);
    match events.last().and_then(|r| r.event.as_ref()) {
        Some(Event::SessionEnded(e)) => {
            assert_eq!(e.frames, 180, "the real stream after the garbage is whole")
        }
        other => panic!("{other:?}"),
    }
    assert_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_no_start_code_stays_bounded() {
    let server = start(test_config()).await;
    let mut c = client(&server).await;
    let mut p = publish(&mut c, "nostart", Default::default())
        .await
        .unwrap();
    let chunk = Bytes::from(vec![0xabu8; 256 * 1024]);
    for _ in 0..40 {
        p.send(chunk.clone()).await; // 10 MiB without a start code
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let session = server.registry.get("nostart").unwrap();
    assert!(
        session.buffered_bytes() < 1024,
        "nothing is kept: {}",
        session.buffered_bytes()
    );
    p.end().await;
    drop(p.tx);
    let (events, _) = collect(&mut p.responses, Duration::from_secs(10)).await;
    assert!(dropped_count(&events, pb::DropReason::NotH264) >= 1);
    assert_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_nal_unit_is_dropped_and_the_stream_recovers() {
    let mut config = test_config();
    config.engine.max_nal_bytes = 16 * 1024;
    let server = start(config).await;
    // A 100 KiB bogus slice in the middle of a clean stream.
    let data = testdata("baseline_30.h264");
    let mut big = b"\x00\x00\x00\x01\x41".to_vec();
    big.extend(xorshift_bytes(100 * 1024, 9).into_iter().map(|b| b | 0x04));
    let half = data.len() / 2;
    let mut stream = data[..half].to_vec();
    // Cut at a start code so the bogus NAL stands alone.
    let cut = stream.windows(4).rposition(|w| w == [0, 0, 0, 1]).unwrap();
    stream.truncate(cut);
    stream.extend_from_slice(&big);
    stream.extend_from_slice(&data[cut..]);
    let (events, status) = publish_events(
        &server,
        "big",
        stream.chunks(8192).map(Bytes::copy_from_slice).collect(),
    )
    .await;
    assert!(status.is_none(), "{status:?}");
    let d = drops(&events, pb::DropReason::TooLarge);
    assert_eq!(d.len(), 1, "{events:?}");
    assert!(d[0].detail.contains("16384"), "{}", d[0].detail);
    match events.last().and_then(|r| r.event.as_ref()) {
        Some(Event::SessionEnded(e)) => assert!(e.frames >= 150, "{}", e.frames),
        other => panic!("{other:?}"),
    }
    assert_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_gets_resource_exhausted() {
    let mut config = test_config();
    config.server.max_message_bytes = 64 * 1024;
    let server = start(config).await;
    let mut c = client(&server).await;
    let mut p = publish(&mut c, "huge", Default::default()).await.unwrap();
    p.send(Bytes::from(vec![0u8; 200 * 1024])).await;
    let mut status = None;
    while let Ok(Some(_)) | Err(_) = p.responses.message().await.map_err(|s| status = Some(s)) {
        if status.is_some() {
            break;
        }
    }
    let status = status.expect("an error status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-message-bytes"),
        "{}",
        status.message()
    );
    assert_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_stream_in_the_middle_of_an_access_unit() {
    let server = start(test_config()).await;
    // Four-slice pictures; stop after two slices of picture 20.
    let data = testdata("main_slices4_30.h264");
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(p) = data[i..].windows(3).position(|w| w == [0, 0, 1]) {
        starts.push(i + p + 3);
        i += p + 3;
    }
    let slices: Vec<usize> = starts
        .iter()
        .copied()
        .filter(|&s| matches!(data[s] & 0x1f, 1 | 5))
        .collect();
    let cut = slices[20 * 4 + 2] - 4;
    let (events, status) =
        publish_events(&server, "cut", vec![Bytes::copy_from_slice(&data[..cut])]).await;
    assert!(status.is_none());
    assert_eq!(
        dropped_count(&events, pb::DropReason::Truncated),
        1,
        "{events:?}"
    );
    match events.last().and_then(|r| r.event.as_ref()) {
        Some(Event::SessionEnded(e)) => assert_eq!(e.frames, 20),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sps_the_parser_rejects_drops_frames_until_a_good_one() {
    let server = start(test_config()).await;
    let data = testdata("baseline_30.h264");
    // Break the first SPS (keep its id so it replaces nothing usable): the
    // first GOP cannot decode; the second GOP's SPS is fine.
    let mut bad = data.clone();
    let sps = bad
        .windows(5)
        .position(|w| w == [0, 0, 0, 1, 0x67])
        .unwrap()
        + 5;
    for b in &mut bad[sps + 3..sps + 8] {
        *b = 0xff;
    }
    let (events, status) = publish_events(&server, "badsps", vec![Bytes::from(bad)]).await;
    assert!(status.is_none());
    let lost = dropped_count(&events, pb::DropReason::UnknownParameterSet)
        + dropped_count(&events, pb::DropReason::BeforeKeyframe);
    assert_eq!(lost, 30, "the first GOP: {events:?}");
    let d = drops(&events, pb::DropReason::UnknownParameterSet);
    assert!(
        d[0].detail.contains("SPS") || d[0].detail.contains("PPS"),
        "{}",
        d[0].detail
    );
    match events.last().and_then(|r| r.event.as_ref()) {
        Some(Event::SessionEnded(e)) => assert_eq!(e.frames, 150),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_times_that_go_back_jump_ahead_or_wrap_keep_timestamps_sane() {
    let server = start(test_config()).await;
    let mut c = client(&server).await;
    let p = publish(&mut c, "clock", Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, "clock", false, 0).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // One access unit per message; capture times misbehave on purpose.
    let aus = split_access_units(&testdata("baseline_30.h264"));
    let base: u64 = u64::MAX - 3 * 1_000_000_000; // wraps past u64::MAX
    for (i, au) in aus.iter().enumerate() {
        let t = match i {
            0..=29 => base + i as u64 * 33_333_333,
            30..=59 => base - 60_000_000_000 + i as u64 * 33_333_333, // a minute back
            60..=89 => base.wrapping_add(3 * 3_600_000_000_000 + i as u64 * 33_333_333), // hours ahead, wrapped
            _ => 5 + i as u64 * 33_333_333,
        };
        p.tx.send(pb::SliceRequest {
            data: au.clone(),
            capture_time_ns: Some(t),
            end_of_access_unit: true,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    p.end().await;
    let (frames, _) = task.await.unwrap();
    assert_eq!(frames.len(), 180);
    for w in frames.windows(2) {
        assert!(
            w[1].timestamp_ns > w[0].timestamp_ns,
            "presentation times increase"
        );
        let d = w[1].timestamp_ns - w[0].timestamp_ns;
        assert!(d <= 2_000_000_000, "no jump of hours: {d}");
    }
    server.shutdown().await;
}

fn split_access_units(data: &[u8]) -> Vec<Bytes> {
    use liveslice_server::engine::{pipeline::frames_of, PipelineOptions};
    frames_of(Bytes::copy_from_slice(data), PipelineOptions::default())
        .iter()
        .map(|f| f.data.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sessions_or_subscribers_get_resource_exhausted() {
    let mut config = test_config();
    config.session.max_sessions = 2;
    config.session.max_subscribers_per_session = 2;
    let server = start(config).await;
    let mut c = client(&server).await;
    let _a = publish(&mut c, "a", Default::default()).await.unwrap();
    let _b = publish(&mut c, "b", Default::default()).await.unwrap();
    let err = match publish(&mut c, "c", Default::default()).await {
        Err(s) => s,
        Ok(mut p) => p.responses.message().await.unwrap_err(),
    };
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // Two viewers of "a" (its publisher's own stream does not count), not three.
    let _s1 = subscribe(&mut c, "a", false, 0).await.unwrap();
    let _s2 = subscribe(&mut c, "a", false, 0).await.unwrap();
    let err = subscribe(&mut c, "a", false, 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_publisher_times_out_and_the_session_ends_after_grace() {
    let mut config = test_config();
    config.session.publisher_idle_timeout = Duration::from_millis(300);
    let server = start(config).await;
    let mut c = client(&server).await;
    let mut p = publish(&mut c, "idle", Default::default()).await.unwrap();
    p.send(Bytes::copy_from_slice(
        &testdata("baseline_30.h264")[..50_000],
    ))
    .await;
    let (_, status) = collect(&mut p.responses, Duration::from_secs(10)).await;
    let status = status.expect("a status");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    tokio::time::sleep(Duration::from_millis(800)).await; // grace is 500 ms
    assert!(server.registry.get("idle").unwrap().is_ended());
    server.shutdown().await;
}

// A subscriber that never reads: tests/slow_subscriber.rs (its own process,
// to measure the resident set).

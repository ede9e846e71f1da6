//! Subscribers are cursors into the session's item log, not queues of
//! copies: a slow subscriber of a publisher that pushes faster than real
//! time receives every frame the window still holds; one that eviction
//! passes is told (`Lagged`) and resumes at the newest random access point.

mod common;

use std::time::Duration;

use common::*;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event;

/// 720 frames (24 s, open GOP) pushed as fast as the server takes them; a
/// subscriber that reads one message every 2 ms still gets every one of
/// them, in order, with no `Lagged`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_of_a_fast_publisher_receives_every_frame_in_the_window() {
    let mut config = test_config();
    config.engine.window = 20; // 40 s: the whole stream stays in the window
    let server = start(config).await;
    let data = testdata("open_gop_30.h264");
    let mut c = client(&server).await;
    let mut p = publish(&mut c, "slow", Default::default())
        .await
        .expect("publish");
    let mut c2 = client(&server).await;
    let mut s = subscribe(&mut c2, "slow", true, 0)
        .await
        .expect("subscribe");
    let sender = tokio::spawn(async move {
        p.send_chunked(&data, &[16 * 1024]).await;
        p.end().await;
        drop(p.tx);
        let _ = collect(&mut p.responses, Duration::from_secs(60)).await;
    });
    let mut indices = Vec::new();
    let mut lagged = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), s.message())
            .await
            .expect("the stream goes on")
            .expect("no error");
        let Some(m) = m else { break };
        match m.event {
            Some(Event::Frame(f)) => indices.push(f.index),
            Some(Event::Lagged(_)) => lagged += 1,
            Some(Event::SessionEnded(_)) => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sender.await.unwrap();
    assert_eq!(lagged, 0, "never skipped");
    assert_eq!(
        indices,
        (0..720).collect::<Vec<u64>>(),
        "every frame, in order"
    );
    server.shutdown().await;
}

/// A subscriber that stops reading while the window slides past it gets
/// `Lagged` and resumes at a random access point, then follows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_subscriber_resumes_at_the_newest_random_access_point() {
    let mut config = test_config();
    config.engine.window = 1;
    let server = start(config).await;
    // 12 × 24 s: far more than the transport's buffers hold for a client
    // that does not read.
    let one = testdata("open_gop_30.h264");
    let data: Vec<u8> = std::iter::repeat_n(&one[..], 12)
        .flatten()
        .copied()
        .collect();
    let mut c = client(&server).await;
    let mut p = publish(&mut c, "evict", Default::default())
        .await
        .expect("publish");
    p.send_chunked(&data[..data.len() / 6], &[16 * 1024]).await;
    let mut c2 = client(&server).await;
    let mut s = subscribe(&mut c2, "evict", true, 0)
        .await
        .expect("subscribe");
    // Read the SessionInfo and one frame, then stop reading while the rest
    // of the stream (many windows of 1 segment) goes by.
    let mut first_index = None;
    while first_index.is_none() {
        if let Some(Event::Frame(f)) = s.message().await.unwrap().unwrap().event {
            first_index = Some(f.index);
        }
    }
    p.send_chunked(&data[data.len() / 6..], &[16 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let _ = collect(&mut p.responses, Duration::from_secs(60)).await;
    let (responses, status) = collect(&mut s, Duration::from_secs(60)).await;
    assert!(status.is_none(), "{status:?}");
    let lag = responses
        .iter()
        .position(|r| matches!(r.event, Some(Event::Lagged(_))))
        .expect("told it lagged");
    let Some(Event::Lagged(l)) = &responses[lag].event else {
        unreachable!()
    };
    assert!(l.skipped_frames > 0);
    // The next frame is the random access point it names.
    let next = responses[lag + 1..]
        .iter()
        .find_map(|r| match &r.event {
            Some(Event::Frame(f)) => Some((*f, r.is_keyframe)),
            _ => None,
        })
        .expect("frames after the lag");
    assert_eq!(next.0.index, l.resume_frame_index);
    assert!(next.0.random_access && next.1);
    // Frames before the lag, then the resume point: nothing in between.
    assert!(l.resume_frame_index > first_index.unwrap_or(0));
    assert!(matches!(
        responses.last().map(|r| &r.event),
        Some(Some(Event::SessionEnded(_)))
    ));
    server.shutdown().await;
}

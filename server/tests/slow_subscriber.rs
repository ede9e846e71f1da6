//! A subscriber that never reads: how far behind it can be (the items the
//! session's log holds for its cursor) and the server's memory stay
//! bounded however far the publisher pushes,
//! a reading subscriber misses nothing, and the stuck one, read at last,
//! was skipped forward to a keyframe and told so.
//!
//! Its own test binary: the resident set measured here is this process's,
//! so no other test may run beside it.

mod common;

use std::time::Duration;

use common::*;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event;

/// This process's resident set (`VmRSS` of /proc/self/status), bytes.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_skipped_and_costs_nothing() {
    const ROUNDS: usize = 200;
    // The log keeps the window (6 segments of 2 s at 30 fps, and their
    // events) or its 1,024-item tail, whichever is more: far below the
    // 36,000 frames pushed.
    const HELD_BOUND: usize = 2048;
    let server = start(test_config()).await;
    let mut c = client(&server).await;
    let p = publish(&mut c, "slow", Default::default()).await.unwrap();
    // One subscriber never reads; another reads everything (and keeps
    // nothing, so the resident set is the server's).
    let mut stuck = subscribe(&mut c, "slow", true, 0).await.unwrap();
    let mut c2 = client(&server).await;
    let mut fast = subscribe(&mut c2, "slow", true, 0).await.unwrap();
    let fast_task = tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), fast.message()).await {
                Ok(Ok(Some(r))) => n += usize::from(matches!(r.event, Some(Event::Frame(_)))),
                Ok(Ok(None)) => return Ok(n),
                Ok(Err(s)) => return Err(s),
                Err(_) => panic!("the reading subscriber stalled"),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let session = server.registry.get("slow").unwrap();
    let data = testdata("high_bframes_30.h264");
    let pushed = ROUNDS * data.len();
    let frames_pushed = ROUNDS * 180;
    // Warm up one round (allocator pools, connection buffers), then measure.
    p.send_chunked(&data, &[64 * 1024]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_start = rss_bytes();
    let (mut peak_backlog, mut peak_media, mut peak_rss) = (0, 0, 0);
    for _ in 1..ROUNDS {
        // 200 × 6 s of video in bursts, much faster than real time (a
        // reader that keeps reading keeps up), 36,000 frames: far past
        // what the window holds.
        p.send_chunked(&data, &[64 * 1024]).await;
        peak_backlog = peak_backlog.max(session.held_items());
        peak_media = peak_media.max(server.registry.memory_bytes());
        peak_rss = peak_rss.max(rss_bytes());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth = peak_rss.saturating_sub(rss_start);
    eprintln!(
        "pushed {pushed} bytes ({frames_pushed} frames); peak items held {peak_backlog}, \
         media held {peak_media} bytes, RSS {rss_start} → {peak_rss} (+{growth}) bytes"
    );
    // The stuck subscriber can be behind by what the log holds (the
    // window), never by what was pushed.
    assert!(
        peak_backlog <= HELD_BOUND,
        "the log held {peak_backlog} items for the stuck cursor"
    );
    assert!(peak_backlog > 0);
    // Media held is the playlist window (12 s, twice `data`), not what was
    // pushed: its frames, its parts muxed as CMAF and as MPEG-TS, and those
    // parts for one more window after they leave the playlists (RFC 8216
    // 6.2.2) — about 12 times `data`, against 200 times pushed.
    assert!(
        peak_media < 20 * data.len(),
        "media held {peak_media} bytes"
    );
    // The process did not keep what the stuck subscriber did not read:
    // well under half of what was pushed (keeping it would be all of it).
    assert!(
        growth < pushed / 2,
        "RSS grew {growth} bytes while {pushed} were pushed"
    );
    p.end().await;
    let fast_frames = fast_task.await.unwrap().expect("the reader ends OK");
    assert_eq!(
        fast_frames, frames_pushed,
        "the reading subscriber misses nothing"
    );
    // The stuck one, read now, was skipped forward and told so, and resumed
    // on a keyframe.
    let (stuck_responses, _) = collect(&mut stuck, Duration::from_secs(20)).await;
    let lag: Vec<_> = stuck_responses
        .iter()
        .filter_map(|r| match &r.event {
            Some(Event::Lagged(l)) => Some(*l),
            _ => None,
        })
        .collect();
    assert!(!lag.is_empty(), "a Lagged event");
    let f = frames(&stuck_responses);
    assert!(f.len() < frames_pushed);
    let resume = lag[0].resume_frame_index;
    let at = f
        .iter()
        .position(|r| frame_info(r).index == resume)
        .unwrap();
    assert!(f[at].is_keyframe);
    server.shutdown().await;
}

//! Soak: hundreds of sessions join and leave in random order (publishers
//! ending cleanly, going idle, subscribers coming and going); afterwards no
//! session or task is left behind and memory does not grow from one round
//! to the next. Bounded: `LIVESLICE_SOAK_SECS` (default 6) per round,
//! `LIVESLICE_SOAK_ROUNDS` (default 3) rounds.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use liveslice_server::app::Running;

/// Counts live heap bytes, so leaks show exactly (RSS is blurred by the
/// allocator keeping freed memory).
struct Counting;

static LIVE: AtomicU64 = AtomicU64::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(p, l) };
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

async fn round(server: Arc<Running>, secs: u64, seed: u64) -> u64 {
    let data = Bytes::from(testdata("baseline_30.h264"));
    // The first two GOPs: 60 frames.
    let two_gops = data.slice(..data.len() / 3);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for w in 0..24u64 {
        let server = server.clone();
        let two_gops = two_gops.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let mut x = seed ^ (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut n = 0;
            // Idle publishers' streams, held open until the round ends.
            let mut held = Vec::new();
            while tokio::time::Instant::now() < deadline {
                n += 1;
                let id = format!("soak-{seed}-{w}-{n}");
                let mut c = client(&server).await;
                let Ok(p) = publish(&mut c, &id, Default::default()).await else {
                    continue;
                };
                let mut subs = Vec::new();
                for _ in 0..next() % 3 {
                    if let Ok(mut s) = subscribe(&mut c, &id, next() % 2 == 0, 0).await {
                        // Some read everything, some leave early.
                        let leave_early = next() % 3 == 0;
                        subs.push(tokio::spawn(async move {
                            if leave_early {
                                let _ = s.message().await;
                            } else {
                                while let Ok(Some(_)) = s.message().await {}
                            }
                        }));
                    }
                }
                let chunk = 4096 + (next() % 16384) as usize;
                for piece in two_gops.chunks(chunk) {
                    // A loaded machine may time a slow publisher out: that
                    // is one of the ways sessions end here.
                    let msg = liveslice_proto::v1::SliceRequest {
                        data: Bytes::copy_from_slice(piece),
                        ..Default::default()
                    };
                    if p.tx.send(msg).await.is_err() {
                        break;
                    }
                }
                match next() % 4 {
                    // Goes idle and is timed out, then the grace runs out.
                    0 => held.push(p),
                    _ => p.end().await,
                }
                for s in subs {
                    let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            // Long enough for the idle timeout to end them server-side.
            tokio::time::sleep(Duration::from_millis(600)).await;
            drop(held);
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    done.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_come_and_go_and_leave_nothing_behind() {
    let secs: u64 = std::env::var("LIVESLICE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut config = test_config();
    config.session.publisher_idle_timeout = Duration::from_millis(500);
    config.session.publisher_grace = Duration::from_millis(200);
    config.session.linger = Duration::from_millis(200);
    let server = Arc::new(start(config).await);
    let metrics = tokio::runtime::Handle::current().metrics();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tasks_before = metrics.num_alive_tasks();
    let heap_before = LIVE.load(Ordering::Relaxed);
    let mut heap = Vec::new();

    let mut rss = Vec::new();
    let mut total = 0;
    let rounds: u64 = std::env::var("LIVESLICE_SOAK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(3);
    for r in 0..rounds {
        total += round(server.clone(), secs, r + 1).await;
        // Idle publishers time out, grace and linger run out.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(server.registry.len(), 0, "no session left after round {r}");
        rss.push(rss_bytes());
        heap.push(LIVE.load(Ordering::Relaxed));
    }
    assert!(total >= 100, "only {total} sessions in {secs} s rounds");
    let tasks_after = metrics.num_alive_tasks();
    assert!(
        tasks_after <= tasks_before + 2,
        "tasks before {tasks_before}, after {tasks_after}"
    );
    // Live heap returns to where it started (give or take the metrics
    // registry and connection caches), and does not grow round to round.
    let n = heap.len();
    eprintln!(
        "soak: {total} sessions; live heap before {heap_before}, after rounds {heap:?}; RSS after rounds {rss:?}"
    );
    let kept = heap[n - 1].saturating_sub(heap_before);
    assert!(
        kept < 1 << 20,
        "{kept} bytes still allocated after all sessions ended"
    );
    let growth = heap[n - 1].saturating_sub(heap[n - 2]);
    assert!(
        growth < 1 << 20,
        "heap grew by {growth} bytes between rounds: {heap:?}"
    );
    // RSS includes freed memory the allocator keeps; only a gross leak
    // would show here.
    assert!(rss[n - 1] < rss[0] + (64 << 20), "RSS {rss:?}");
    match Arc::try_unwrap(server) {
        Ok(s) => s.shutdown().await,
        Err(_) => panic!("server still shared"),
    }
}

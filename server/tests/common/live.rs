//! A publisher in real time with capture times, for the low-latency tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use liveslice_server::engine::pipeline::{frames_of, PipelineOptions};

use super::publish;

/// Publishes `baseline_30` (1 s GOP, 30 fps) in real time with capture
/// times, looping, until `stop` (then ends the stream if `end`).
pub fn publish_live(
    server: &liveslice_server::app::Running,
    session: &'static str,
    stop: Arc<AtomicBool>,
    end: bool,
) -> tokio::task::JoinHandle<()> {
    publish_file_live(server, session, "baseline_30.h264", stop, end)
}

/// [`publish_live`] of another committed stream (`file` in `testdata/`,
/// 30 fps, no B-frames: capture times go in decode order).
pub fn publish_file_live(
    server: &liveslice_server::app::Running,
    session: &'static str,
    file: &str,
    stop: Arc<AtomicBool>,
    end: bool,
) -> tokio::task::JoinHandle<()> {
    publish_file_live_to(server.grpc_addr, session, file, stop, end)
}

/// [`publish_file_live`] to the gRPC server at `grpc` (a proxy, for one
/// whose connection is then cut).
pub fn publish_file_live_to(
    grpc: std::net::SocketAddr,
    session: &'static str,
    file: &str,
    stop: Arc<AtomicBool>,
    end: bool,
) -> tokio::task::JoinHandle<()> {
    let frames = frames_of(
        Bytes::from(super::testdata(file)),
        PipelineOptions::default(),
    );
    tokio::spawn(async move {
        let mut c = liveslice_proto::v1::slice_service_client::SliceServiceClient::connect(
            format!("http://{grpc}"),
        )
        .await
        .expect("connect");
        let p = publish(&mut c, session, Default::default())
            .await
            .expect("publish");
        let start = Instant::now();
        let t0 = liveslice_server::session::now_unix_ns();
        let mut i: u64 = 0;
        'outer: loop {
            for f in &frames {
                if stop.load(Ordering::Relaxed) {
                    break 'outer;
                }
                let due = Duration::from_nanos(i * 1_000_000_000 / 30);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                p.send_at(f.data.clone(), t0 + due.as_nanos() as u64).await;
                i += 1;
            }
        }
        if end {
            p.end().await;
            // Keep the stream open until the server has ended the session.
            tokio::time::sleep(Duration::from_millis(500)).await;
        } else {
            // Vanish without a word: the session waits out its grace.
            std::future::pending::<()>().await;
        }
        drop(p);
    })
}

/// Publishes the committed renditions of one source (`(name, stream)`,
/// for example `("360p", "rendition_360p")`) into `session` in real time,
/// looping, each over its own gRPC stream as `SESSION~NAME`, with capture
/// times on one clock (each picture's presentation time from the first
/// one), until `stop`. The first rendition's first frame goes first and
/// the others follow once the server has taken it, so the first rendition
/// leads.
pub fn publish_renditions_live(
    server: &liveslice_server::app::Running,
    session: &'static str,
    renditions: &'static [(&'static str, &'static str)],
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let grpc = server.grpc_addr;
    tokio::spawn(async move {
        let streams: Vec<Vec<(Bytes, u64)>> = renditions
            .iter()
            .map(|(_, file)| {
                let frames = frames_of(
                    Bytes::from(super::testdata(&format!("{file}.h264"))),
                    PipelineOptions::default(),
                );
                let first = frames[0].pts;
                frames
                    .iter()
                    .map(|f| (f.data.clone(), (f.pts - first) * 1_000_000_000 / 90_000))
                    .collect()
            })
            .collect();
        let lap_ns = streams[0].len() as u64 * 1_000_000_000 / 30;
        let mut pubs = Vec::new();
        for (name, _) in renditions {
            let mut c = liveslice_proto::v1::slice_service_client::SliceServiceClient::connect(
                format!("http://{grpc}"),
            )
            .await
            .expect("connect");
            pubs.push(
                publish(&mut c, &format!("{session}~{name}"), Default::default())
                    .await
                    .expect("publish"),
            );
        }
        let start = Instant::now();
        let t0 = liveslice_server::session::now_unix_ns();
        let mut lap = 0u64;
        'outer: loop {
            for i in 0..streams[0].len() {
                let due = Duration::from_nanos(lap * lap_ns + i as u64 * 1_000_000_000 / 30);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                for (k, (p, s)) in pubs.iter().zip(&streams).enumerate() {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    let Some((data, c)) = s.get(i) else {
                        continue;
                    };
                    p.send_at(data.clone(), t0 + lap * lap_ns + c).await;
                    if (lap, i, k) == (0, 0, 0) {
                        // The first rendition leads: let the server take its
                        // first frame before the others come.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            lap += 1;
        }
        for p in &pubs {
            p.end().await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(pubs);
    })
}

/// The segments an MPD lists ahead (predicted), every period's.
pub fn predicted(mpd: &str) -> Vec<u64> {
    super::history::parse_mpd(mpd)
        .periods
        .values()
        .flat_map(|p| p.predicted.clone())
        .collect()
}

async fn text(url: &str) -> String {
    let (_, _, body) = super::get(url).await;
    String::from_utf8_lossy(&body).into_owned()
}

/// Waits until the low-latency MPD at `base` (`…/live/ID`) predicts the
/// segment in progress and the next one early in the segment in progress
/// (at most two of its parts listed); returns the segment in progress.
pub async fn wait_predicting_early(base: &str) -> u64 {
    for _ in 0..400 {
        let mpd = text(&format!("{base}/manifest.mpd")).await;
        let h = super::history::parse_hls(&text(&format!("{base}/index.m3u8")).await);
        let open = h.open_segment();
        if predicted(&mpd) == [open, open + 1] && h.parts.get(&open).map_or(0, Vec::len) <= 2 {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{base}: no MPD predicting the next segment early in the one in progress");
}

/// Waits (up to 2 s) until the MPD at `base` predicts nothing; whether it did.
pub async fn wait_predicting_nothing(base: &str) -> bool {
    for _ in 0..100 {
        if predicted(&text(&format!("{base}/manifest.mpd")).await).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// After an outage of 1.5 s, publishes `session` again to `grpc` (ending
/// the stream when its returned flag is set) and checks that `ahead`, a
/// request held at `base` (`…/live/ID`) for the predicted segment `seq`,
/// is refused with `404` because that segment opens the new publisher's
/// period. Returns the new publisher's stop flag and task.
pub async fn reconnect_and_expect_new_period(
    grpc: std::net::SocketAddr,
    session: &'static str,
    base: &str,
    seq: u64,
    ahead: tokio::task::JoinHandle<super::Answer>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let second = publish_file_live_to(grpc, session, "baseline_30.h264", stop.clone(), true);
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(15), ahead)
        .await
        .expect("the held request is answered")
        .expect("the held request's task");
    let body = String::from_utf8_lossy(&body);
    if status != 404 {
        let m3u8 = text(&format!("{base}/index.m3u8")).await;
        panic!("status {status} for predicted segment {seq}: {body:.200}\n{m3u8}");
    }
    assert!(body.contains("opens a new period"), "{body}");
    (stop, second)
}

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
    let grpc = server.grpc_addr;
    let frames = frames_of(
        Bytes::from(super::testdata("baseline_30.h264")),
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

//! A stream piped into `liveslice publish -` slowly, as a live encoder
//! writes it, reaches subscribers frame by frame, not in bursts. (Alone in
//! its file: nothing else runs beside it to disturb the timing.)

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event;
use pb::slice_service_client::SliceServiceClient;
use tokio_stream::wrappers::ReceiverStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pipe_reaches_subscribers_frame_by_frame() {
    let server = start().await;
    let grpc = grpc_url(&server);

    // A subscriber that notes when each frame arrives. Its call is
    // answered once the session exists, so it runs on its own task.
    let mut client = SliceServiceClient::connect(grpc.clone()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SliceRequest {
        session_id: "pipe".into(),
        role: pb::Role::Subscribe as i32,
        subscribe: Some(pb::SubscribeOptions {
            events: true,
            wait_ms: 10_000,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let viewer = tokio::spawn(async move {
        let _tx = tx;
        let mut stream = client
            .stream_slices(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut arrivals = Vec::new();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("the session ends within 30 s")
                .expect("stream ok")
                .expect("stream open");
            match msg.event {
                Some(Event::Frame(_)) => arrivals.push(Instant::now()),
                Some(Event::SessionEnded(_)) => return arrivals,
                _ => {}
            }
        }
    });

    // The publisher reads stdin, written one access unit every 33 ms, as a
    // live encoder would (about 44 kB/s: a 64 KiB chunk would take 1.5 s
    // to fill).
    let mut publisher = spawn_with(
        &["publish", "--server", &grpc, "--session", "pipe", "-"],
        &[],
        Stdio::piped(),
    );
    let mut stdin = publisher.child.stdin.take().unwrap();
    let units = engine_frames(&testdata("baseline_30.h264"));
    assert_eq!(units.len(), 180);
    let writer = std::thread::spawn(move || {
        let start = Instant::now();
        for (i, unit) in units.iter().enumerate() {
            let at = start + Duration::from_millis(33 * i as u64);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            stdin.write_all(unit).unwrap();
            stdin.flush().unwrap();
        }
        // Dropping stdin ends the input.
    });
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap()
        .unwrap();
    let (status, stdout, stderr) = publisher.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{}\n{stderr}", text(&stdout));
    let said = text(&stdout);
    assert!(said.contains("the server accepted 180 frames"), "{said}");

    let arrivals = viewer.await.unwrap();
    assert_eq!(arrivals.len(), 180);
    // The last access units go out together at the end of the input; the
    // ones before, one by one as they complete.
    let max_gap = arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!("largest gap between frames: {max_gap:?}");
    assert!(
        max_gap < Duration::from_millis(300),
        "largest gap between frames {max_gap:?}"
    );
    server.shutdown().await;
}

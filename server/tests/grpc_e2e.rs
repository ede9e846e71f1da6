//! End to end over real gRPC: a server on 127.0.0.1:0, publishers and
//! subscribers as separate clients.

mod common;

use std::time::Duration;

use common::*;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event;

/// A client's copy of a manifest, kept current from ManifestDelta edits.
#[derive(Default, Debug, Clone, PartialEq)]
struct Manifest {
    head: String,
    entries: std::collections::VecDeque<String>,
    tail: String,
}

impl Manifest {
    fn apply(&mut self, e: &pb::ManifestEdit) {
        for _ in 0..e.remove_entries {
            self.entries.pop_front();
        }
        self.entries.extend(e.append_entries.iter().cloned());
        self.head = e.head.clone();
        self.tail = e.tail.clone();
    }
    fn render(&self) -> String {
        let mut s = self.head.clone();
        for e in &self.entries {
            s.push_str(e);
        }
        s.push_str(&self.tail);
        s
    }
}

/// Replays SessionInfo + ManifestDeltas: (hls, hls_ts, dash) at the end.
fn replay_manifests(responses: &[pb::SliceResponse]) -> (String, String, String) {
    let (mut hls, mut ts, mut dash) = (
        Manifest::default(),
        Manifest::default(),
        Manifest::default(),
    );
    let mut seen_info = false;
    for r in responses {
        match &r.event {
            Some(Event::SessionInfo(i)) if !seen_info => {
                seen_info = true;
                hls.apply(i.hls_state.as_ref().unwrap());
                ts.apply(i.hls_ts_state.as_ref().unwrap());
                dash.apply(i.dash_state.as_ref().unwrap());
                assert_eq!(hls.render(), i.hls_playlist);
            }
            Some(Event::ManifestDelta(d)) => {
                hls.apply(d.hls.as_ref().unwrap());
                ts.apply(d.hls_ts.as_ref().unwrap());
                dash.apply(d.dash.as_ref().unwrap());
            }
            _ => {}
        }
    }
    (hls.render(), ts.render(), dash.render())
}

fn annexb(frames: &[&pb::SliceResponse]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.data.iter().copied()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_two_subscribers_one_late() {
    let server = start(test_config()).await;
    let mut c = client(&server).await;
    let p = publish(
        &mut c,
        "e2e",
        pb::PublishOptions {
            segment_duration_ms: 2000,
            window_segments: 4,
            echo_frames: false,
        },
    )
    .await
    .unwrap();
    let mut early = subscribe(&mut c, "e2e", true, 0).await.unwrap();
    let early_task =
        tokio::spawn(async move { collect(&mut early, Duration::from_secs(60)).await });

    let one = testdata("high_bframes_30.h264");
    let data: Vec<u8> = one.iter().chain(one.iter()).copied().collect(); // 360 frames, 12 s
    let split = data.len() * 45 / 100;
    p.send_chunked(&data[..split], &[1000, 17, 4096, 333, 65536])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = subscribe(&mut c, "e2e", true, 0).await.unwrap();
    let late_task = tokio::spawn(async move { collect(&mut late, Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.send_chunked(&data[split..], &[7777, 1, 50_000]).await;
    p.end().await;

    let (early, early_status) = early_task.await.unwrap();
    let (late, late_status) = late_task.await.unwrap();
    assert!(early_status.is_none(), "early: {early_status:?}");
    assert!(late_status.is_none(), "late: {late_status:?}");

    // Everyone gets a SessionInfo first and a SessionEnded last.
    for r in [&early, &late] {
        assert!(matches!(
            r.first().and_then(|r| r.event.as_ref()),
            Some(Event::SessionInfo(_))
        ));
        match r.last().and_then(|r| r.event.as_ref()) {
            Some(Event::SessionEnded(e)) => {
                assert_eq!(e.reason, pb::session_ended::Reason::EndOfStream as i32);
                assert_eq!(e.frames, 360);
                assert_eq!(e.segments, 6);
            }
            other => panic!("last response: {other:?}"),
        }
    }

    let ef = frames(&early);
    let lf = frames(&late);
    assert_eq!(ef.len(), 360);
    assert!(
        !lf.is_empty() && lf.len() < 360,
        "late joiner got {}",
        lf.len()
    );
    // The late joiner starts on a keyframe and then gets exactly what the
    // early one got from that point.
    assert!(lf[0].is_keyframe);
    let start = frame_info(lf[0]).index as usize;
    assert_eq!(ef.len() - start, lf.len());
    for (a, b) in ef[start..].iter().zip(&lf) {
        assert_eq!(a.data, b.data);
        assert_eq!(a.timestamp_ns, b.timestamp_ns);
        assert_eq!(frame_info(a), frame_info(b));
    }
    // Frame indices are contiguous and times sane.
    for (i, f) in ef.iter().enumerate() {
        let info = frame_info(f);
        assert_eq!(info.index, i as u64);
        assert!(info.pts_90k >= info.dts_90k);
        assert_eq!(f.timestamp_ns, info.pts_90k * 100_000 / 9);
    }

    // Segment events: 6 segments of 60 frames, 2 s each, in order.
    let segs: Vec<&pb::SegmentReady> = early
        .iter()
        .filter_map(|r| match &r.event {
            Some(Event::SegmentReady(s)) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(segs.len(), 6);
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.sequence, i as u64);
        assert_eq!(s.frame_count, 60);
        assert_eq!(s.duration_90k, 180_000);
        assert!(s.keyframe_aligned);
        assert_eq!(s.uri_cmaf, format!("seg-{i}.m4s"));
    }

    // Manifest deltas replayed from either join point give the same final
    // manifests, and they are final.
    let (eh, ets, ed) = replay_manifests(&early);
    let (lh, lts, ld) = replay_manifests(&late);
    assert_eq!(eh, lh);
    assert_eq!(ets, lts);
    assert_eq!(ed, ld);
    assert!(eh.ends_with("#EXT-X-ENDLIST\n"), "{eh}");
    assert_eq!(
        eh.matches("#EXTINF:2.000000,").count(),
        4,
        "window of 4:\n{eh}"
    );
    assert!(eh.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{eh}");
    assert!(ed.contains("type=\"static\""), "{ed}");

    // The frames decode, from the start and from the late join point.
    if have_ffmpeg("decoding subscriber output") {
        let (n, errors) = ffmpeg_decode_annexb(&annexb(&ef));
        assert_eq!((n, errors.as_str()), (360, ""));
        let (n, errors) = ffmpeg_decode_annexb(&annexb(&lf));
        assert_eq!((n, errors.as_str()), (lf.len(), ""));
    }

    // The publisher heard an ack and every segment.
    let mut p = p;
    drop(p.tx);
    let (pub_responses, status) = collect(&mut p.responses, Duration::from_secs(10)).await;
    assert!(status.is_none(), "{status:?}");
    assert!(matches!(pub_responses[0].event, Some(Event::PublishAck(_))));
    let pub_segs = pub_responses
        .iter()
        .filter(|r| matches!(r.event, Some(Event::SegmentReady(_))))
        .count();
    assert_eq!(pub_segs, 6);
    assert!(frames(&pub_responses).is_empty(), "no echo was asked for");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_field_clients_get_exactly_one_response_per_frame() {
    let server = start(test_config()).await;
    let mut c = client(&server).await;
    let p = publish(&mut c, "legacy", Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, "legacy", false, 30).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.send_chunked(&testdata("baseline_30.h264"), &[5000]).await;
    p.end().await;
    let (responses, status) = task.await.unwrap();
    assert!(status.is_none());
    assert_eq!(responses.len(), 180);
    let mut last = None;
    for (i, r) in responses.iter().enumerate() {
        assert!(!r.data.is_empty());
        assert_eq!(r.is_keyframe, i % 30 == 0, "frame {i}");
        assert_eq!(r.timestamp_ns, i as u64 * 1_000_000_000 / 30);
        if let Some(l) = last {
            assert!(r.timestamp_ns > l);
        }
        last = Some(r.timestamp_ns);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_statuses_and_the_server_keeps_serving() {
    let server = start(test_config()).await;
    let mut c = client(&server).await;

    let p = publish(&mut c, "taken", Default::default()).await.unwrap();
    let second = publish(&mut c, "taken", Default::default()).await;
    let err = match second {
        Err(s) => s,
        Ok(mut p2) => p2.responses.message().await.unwrap_err(),
    };
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    for (id, code) in [
        ("", tonic::Code::InvalidArgument),
        ("../etc/passwd", tonic::Code::InvalidArgument),
        ("a\nb", tonic::Code::InvalidArgument),
        (&"x".repeat(200), tonic::Code::InvalidArgument),
    ] {
        let err = subscribe(&mut c, id, true, 0).await.unwrap_err();
        assert_eq!(err.code(), code, "{id:?}: {err:?}");
        assert!(err.message().contains("session_id"), "{}", err.message());
    }
    for fps in [-1, 1_000_000] {
        let err = subscribe(&mut c, "taken", true, fps).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("target_fps"), "{}", err.message());
    }

    // A subscriber to a session that never appears gets NOT_FOUND after
    // its wait.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SliceRequest {
        session_id: "nobody".into(),
        subscribe: Some(pb::SubscribeOptions {
            wait_ms: 200,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = c
        .stream_slices(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // H.264 after H.265 in one session: a clear unsupported-codec error (a
    // session is one codec); the server goes on.
    let hevc = publish(&mut c, "hevc", Default::default()).await.unwrap();
    hevc.send(bytes::Bytes::from(
        [
            testdata("hevc_closed_30.h265"),
            testdata("baseline_30.h264"),
        ]
        .concat(),
    ))
    .await;
    let mut hevc = hevc;
    let (_, status) = collect(&mut hevc.responses, Duration::from_secs(10)).await;
    let status = status.expect("an error status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("unsupported codec"),
        "{}",
        status.message()
    );

    // Health still says serving, and the first publisher still works.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "liveslice.v1.SliceService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut sub = subscribe(&mut c, "taken", false, 0).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.send_chunked(&testdata("baseline_30.h264"), &[10_000])
        .await;
    p.end().await;
    let (responses, _) = task.await.unwrap();
    assert_eq!(responses.len(), 180);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_reconnect_within_grace_continues_the_session() {
    let mut config = test_config();
    config.session.publisher_grace = Duration::from_secs(5);
    let server = start(config).await;
    let mut c = client(&server).await;
    let data = testdata("baseline_30.h264");

    let proxy = CutProxy::start(server.grpc_addr).await;
    let mut pc = proxy.client().await;
    let p1 = publish(&mut pc, "flaky", Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, "flaky", true, 0).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    p1.send_chunked(&data, &[4000]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The publisher's network goes away (no clean half-close).
    proxy.cut();
    drop(p1);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut c2 = client(&server).await;
    let p2 = publish(&mut c2, "flaky", Default::default()).await.unwrap();
    let mut p2 = p2;
    let ack = p2.responses.message().await.unwrap().unwrap();
    match ack.event {
        Some(Event::PublishAck(a)) => assert!(a.resumed, "reconnect continues the session"),
        other => panic!("{other:?}"),
    }
    p2.send_chunked(&data, &[4000]).await;
    p2.end().await;
    let (responses, status) = task.await.unwrap();
    assert!(status.is_none(), "{status:?}");
    let f = frames(&responses);
    assert_eq!(f.len(), 360, "both publishers' frames reach the subscriber");
    // Times keep increasing across the reconnect.
    for w in f.windows(2) {
        assert!(frame_info(w[1]).dts_90k > frame_info(w[0]).dts_90k);
    }
    let disc: Vec<bool> = responses
        .iter()
        .filter_map(|r| match &r.event {
            Some(Event::SegmentReady(s)) => Some(s.discontinuity),
            _ => None,
        })
        .collect();
    assert_eq!(disc.iter().filter(|d| **d).count(), 1, "{disc:?}");
    let (hls, _, _) = replay_manifests(&responses);
    assert!(hls.contains("#EXT-X-DISCONTINUITY\n"), "{hls}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_publisher_ends_the_session_after_the_grace_period() {
    let server = start(test_config()).await; // 500 ms grace
    let mut c = client(&server).await;
    let proxy = CutProxy::start(server.grpc_addr).await;
    let mut pc = proxy.client().await;
    let p = publish(&mut pc, "gone", Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, "gone", true, 0).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.send_chunked(&testdata("baseline_30.h264"), &[4000]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.cut();
    let (responses, status) = task.await.unwrap();
    drop(p);
    assert!(status.is_none());
    match responses.last().and_then(|r| r.event.as_ref()) {
        Some(Event::SessionEnded(e)) => {
            assert_eq!(e.reason, pb::session_ended::Reason::PublisherGone as i32)
        }
        other => panic!("{other:?}"),
    }
    // The last frame was flushed into the final segment.
    assert_eq!(frames(&responses).len(), 180);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_target_fps_thins_without_breaking_decoding() {
    let server = start(test_config()).await;
    let mut c = client(&server).await;
    let p = publish(&mut c, "thin", Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, "thin", false, 15).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let data = testdata("high_bframes_30.h264");
    p.send_chunked(&data, &[8000]).await;
    p.end().await;
    let (responses, _) = task.await.unwrap();
    let f = frames(&responses);
    assert!(f.len() < 180 && f.len() >= 90, "{}", f.len());
    let refs = f.iter().filter(|r| frame_info(r).is_reference).count();
    // Every reference frame of the input is kept.
    let mut all = SessionCount::default();
    all.count(&data);
    assert_eq!(refs, all.references);
    if have_ffmpeg("decoding a thinned stream") {
        let (n, errors) = ffmpeg_decode_annexb(&annexb(&f));
        assert_eq!((n, errors.as_str()), (f.len(), ""));
    }
    server.shutdown().await;
}

/// Counts reference pictures in a stream by running the engine over it.
#[derive(Default)]
struct SessionCount {
    references: usize,
}

impl SessionCount {
    fn count(&mut self, data: &[u8]) {
        use liveslice_server::engine::{pipeline::frames_of, PipelineOptions};
        self.references = frames_of(
            bytes::Bytes::copy_from_slice(data),
            PipelineOptions::default(),
        )
        .iter()
        .filter(|f| f.is_reference)
        .count();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_sessions_and_completes_streams() {
    let server = start(test_config()).await;
    let mut c = client(&server).await;
    let p = publish(&mut c, "live", Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, "live", true, 0).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.send_chunked(&testdata("baseline_30.h264"), &[4000]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    server.shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(6));
    let (responses, status) = task.await.unwrap();
    assert!(status.is_none(), "{status:?}");
    match responses.last().and_then(|r| r.event.as_ref()) {
        Some(Event::SessionEnded(e)) => {
            assert_eq!(e.reason, pb::session_ended::Reason::ServerShutdown as i32)
        }
        other => panic!("{other:?}"),
    }
    let (hls, _, _) = replay_manifests(&responses);
    assert!(hls.ends_with("#EXT-X-ENDLIST\n"));
    drop(p);
}

/// `grpc-runtimes 2`: connections alternate between two single-threaded
/// runtimes; a publisher on one and subscribers on both get every frame,
/// `/metrics` counts the connections per runtime, and shutdown ends both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_grpc_runtimes_deliver_every_frame() {
    let mut config = test_config();
    config.server.grpc_runtimes = 2;
    let server = start(config).await;
    // Four clients, four connections: runtimes 0, 1, 0, 1.
    let mut pc = client(&server).await;
    let mut subscribers = Vec::new();
    let p = publish(
        &mut pc,
        "runtimes",
        pb::PublishOptions {
            segment_duration_ms: 2000,
            window_segments: 4,
            echo_frames: false,
        },
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let mut c = client(&server).await;
        let mut s = subscribe(&mut c, "runtimes", true, 0).await.unwrap();
        subscribers.push(tokio::spawn(async move {
            let _c = c;
            collect(&mut s, Duration::from_secs(60)).await
        }));
    }
    let data = testdata("high_bframes_30.h264");
    p.send_chunked(&data, &[4096, 333, 65536]).await;
    p.end().await;
    for task in subscribers {
        let (responses, status) = task.await.unwrap();
        assert!(status.is_none(), "{status:?}");
        assert_eq!(frames(&responses).len(), 180);
        assert_eq!(
            annexb(&frames(&responses)).len(),
            data.len(),
            "every byte of every frame"
        );
    }
    let (status, _, body) = get(&format!("http://{}/metrics", server.http_addr)).await;
    assert_eq!(status, 200);
    let body = String::from_utf8_lossy(&body);
    for runtime in ["0", "1"] {
        let line = format!("liveslice_grpc_connections_total{{runtime=\"{runtime}\"}} 2");
        assert!(body.contains(&line), "{line} in\n{body}");
    }
    // Both runtimes finish: the publisher's and subscribers' streams ended.
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("shutdown with gRPC runtimes returns");
}

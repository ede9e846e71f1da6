//! `--max-subscribers N` admits N viewers: the publisher's own stream (its
//! acks and events) is not one of them.

mod common;

use std::time::Duration;

use common::*;
use liveslice_proto::v1 as pb;

async fn first_event(sub: &mut tonic::Streaming<pb::SliceResponse>) -> pb::SliceResponse {
    tokio::time::timeout(Duration::from_secs(10), sub.message())
        .await
        .expect("a first response")
        .expect("no error")
        .expect("a message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_subscribers_admits_exactly_that_many_viewers() {
    for max in [1usize, 3] {
        let mut config = test_config();
        config.session.max_subscribers_per_session = max;
        let server = start(config).await;
        let mut c = client(&server).await;
        // A publisher that listens to its events (echoing frames too).
        let p = publish(
            &mut c,
            "cam",
            pb::PublishOptions {
                echo_frames: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut viewers = Vec::new();
        for i in 0..max {
            let mut sub = subscribe(&mut c, "cam", true, 0)
                .await
                .unwrap_or_else(|s| panic!("viewer {} of {max} refused: {s}", i + 1));
            assert!(matches!(
                first_event(&mut sub).await.event,
                Some(pb::slice_response::Event::SessionInfo(_))
            ));
            viewers.push(sub);
        }
        let err = subscribe(&mut c, "cam", true, 0).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
        assert!(err.message().contains(&format!("limit {max}")), "{err}");
        // The publisher's own stream is not counted in the gauge either.
        let (st, _, metrics) = raw_get(server.http_addr, "/metrics", &[]).await;
        assert_eq!(st, 200);
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        let gauge = metrics
            .lines()
            .find(|l| l.starts_with("liveslice_subscribers "))
            .unwrap_or_else(|| panic!("no subscribers gauge in {metrics}"));
        assert_eq!(gauge, format!("liveslice_subscribers {max}"));
        p.end().await;
        server.shutdown().await;
    }
}

//! `/metrics`: a scrape in Prometheus text format whose counts move with
//! traffic. (Its own test binary: the recorder is process-wide.)

mod common;

use std::time::Duration;

use common::*;

fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    assert!(
        buf.contains("content-type: text/plain; version=0.0.4"),
        "{buf}"
    );
    buf
}

/// The value of the sample line `name{labels} value` (labels as written).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_move_with_traffic() {
    let server = start(test_config()).await;
    let before = scrape(server.http_addr);
    assert!(before.contains("liveslice_sessions"), "{before}");

    let mut c = client(&server).await;
    let p = publish(&mut c, "m", Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, "m", true, 0).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = scrape(server.http_addr);
    assert_eq!(value(&during, "liveslice_sessions{state=\"live\"}"), 1.0);
    assert_eq!(value(&during, "liveslice_publishers"), 1.0);
    assert_eq!(
        value(&during, "liveslice_subscribers"),
        1.0,
        "the viewer (the publisher's own stream is not a subscriber)"
    );
    // Calls are counted with their final status, when they end.
    for role in ["publish", "subscribe"] {
        let series = format!("liveslice_grpc_calls_total{{role=\"{role}\",code=\"OK\"}}");
        assert_eq!(
            value(&during, &series) - value(&before, &series),
            0.0,
            "{series} while the call is live"
        );
    }

    p.send_chunked(&testdata("damaged_cut_ref.h264"), &[20_000])
        .await;
    p.end().await;
    let _ = task.await.unwrap();
    // The publisher's own response stream ends too.
    let mut p = p;
    let (_, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    // An HTTP fetch or two, for the request counter.
    let _ = scrape(server.http_addr);
    let after = scrape(server.http_addr);

    let d = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(d("liveslice_frames_in_total"), 165.0);
    assert_eq!(d("liveslice_frames_out_total"), 165.0);
    assert!(d("liveslice_bytes_in_total") >= 261_976.0);
    assert!(d("liveslice_bytes_out_total") > 200_000.0);
    assert_eq!(
        d("liveslice_frames_dropped_total{reason=\"reference_lost\"}"),
        14.0
    );
    assert_eq!(d("liveslice_segments_total"), 3.0);
    assert_eq!(d("liveslice_segment_duration_seconds_count"), 3.0);
    assert_eq!(d("liveslice_publish_to_send_seconds_count"), 165.0);
    assert_eq!(
        d("liveslice_grpc_calls_total{role=\"publish\",code=\"OK\"}"),
        1.0
    );
    assert_eq!(
        d("liveslice_grpc_calls_total{role=\"subscribe\",code=\"OK\"}"),
        1.0
    );
    assert!(d("liveslice_http_requests_total{kind=\"other\",status=\"200\"}") >= 2.0);
    assert_eq!(value(&after, "liveslice_sessions{state=\"live\"}"), 0.0);
    assert_eq!(value(&after, "liveslice_sessions{state=\"ended\"}"), 1.0);

    // A rejected call is counted by its code.
    let err = subscribe(&mut c, "bad id", true, 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let last = scrape(server.http_addr);
    assert_eq!(
        value(
            &last,
            "liveslice_grpc_calls_total{role=\"unknown\",code=\"INVALID_ARGUMENT\"}"
        ),
        1.0
    );
    server.shutdown().await;
}

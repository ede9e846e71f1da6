//! `liveslice publish --server A,B` in a cluster: origin A (a process of
//! its own) is killed with SIGKILL mid-segment, the publisher goes on on
//! origin B, which closes A's open segment and continues the session.

mod common;

mod cluster;

use std::time::{Duration, Instant};

use cluster::nats::Nats;
use cluster::OriginProcess;
use common::*;

/// Not a check: the origin process of the test below (this binary run
/// again by [`OriginProcess::start`]).
#[test]
#[ignore = "the origin process the tests of this file start"]
fn origin_child() {
    cluster::origin_child_main();
}

/// The publisher's account of a failed-over session matches what the
/// cluster lists: its summary counts every segment and frame the edge's
/// playlist holds — A's, the segment A had open (which B closed and named
/// in its ack), and B's — and its running count of accepted frames goes
/// on across the failover instead of starting again on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_counts_every_segment_across_an_origin_failover() {
    let Some(nats) = Nats::start("publish across a cluster failover") else {
        return;
    };
    let url = nats.url();
    let ll = [
        "--segment-duration",
        "1s",
        "--part-duration",
        "200ms",
        "--window",
        "60",
    ];
    let mut args = vec![
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--node-id",
        "cli-origin-a",
        "--cluster",
        &url,
    ];
    args.extend(ll);
    let mut a = OriginProcess::start(&args);
    let cluster_config = |node: &str| {
        let mut c = test_config();
        c.cluster.cluster = Some(nats.url());
        c.cluster.node_id = Some(node.into());
        c.engine.segment_duration = Duration::from_secs(1);
        c.engine.part_duration = Duration::from_millis(200);
        c.engine.window = 60;
        c
    };
    let b = liveslice_server::app::start(&cluster_config("cli-origin-b"))
        .await
        .expect("origin B starts");
    let mut edge_config = cluster_config("cli-edge");
    edge_config.cluster.role = liveslice_server::cluster::Role::Edge;
    let edge = liveslice_server::app::start(&edge_config)
        .await
        .expect("the edge starts");
    let servers = format!("{},{}", a.grpc_url, grpc_url(&b));
    // 6 s at 30 fps, a keyframe every second.
    let input = testdata_path("baseline_30.h264");
    let client = spawn(&[
        "publish",
        "--server",
        &servers,
        "--session",
        "cfo",
        "--realtime",
        input.to_str().unwrap(),
    ]);
    // A dies once it lists two parts of a segment after its first one:
    // mid-segment, with parts of the open segment replicated.
    let a_list = format!("{}/live/cfo/index.m3u8", a.http_url);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(&a_list).await;
        let list = text(&body);
        if list.contains("#EXTINF") && open_parts(&list) >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never listed parts of an open segment: {list}\n{}",
            client.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    let (status, stdout, stderr) = client.wait(Duration::from_secs(40)).await;
    let stdout = text(&stdout);
    assert!(status.success(), "{stderr}\n{stdout}");
    assert!(stderr.contains("continuing the session on"), "{stderr}");
    assert!(
        stdout.contains("the session moved to another server 1 time"),
        "{stdout}"
    );

    // The edge's whole playlist, ended: A's segments, the closed one, B's.
    let e_list = format!("http://{}/live/cfo/index.m3u8", edge.http_addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let (_, body) = get(&e_list).await;
        let list = text(&body);
        if list.contains("#EXT-X-ENDLIST") {
            break list;
        }
        assert!(Instant::now() < deadline, "the edge never ended: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(listed.contains("#EXT-X-MEDIA-SEQUENCE:0\n"), "{listed}");
    let durations: Vec<f64> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse().expect("EXTINF"))
        .collect();
    let frames: u64 = durations.iter().map(|d| (d * 30.0).round() as u64).sum();

    // B named the segment it closed for A, as the one before its first.
    let closed_line = stdout
        .lines()
        .find(|l| l.contains("closed by"))
        .unwrap_or_else(|| panic!("no closed segment reported:\n{stdout}"));
    let closed: u64 = closed_line
        .strip_prefix("segment ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{closed_line}"));
    let cut = listed
        .lines()
        .position(|l| l == "#EXT-X-DISCONTINUITY")
        .expect("a discontinuity where B starts");
    let first_on_b = listed.lines().skip(cut).find(|l| l.starts_with("seg-"));
    assert_eq!(
        first_on_b,
        Some(format!("seg-{}.m4s", closed + 1).as_str()),
        "{listed}"
    );

    // The summary: every listed segment and frame.
    let done = stdout
        .lines()
        .find(|l| l.starts_with("done: "))
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    assert!(
        done.contains(&format!(
            "the server accepted {frames} frames in {} segments",
            durations.len()
        )),
        "{done}\n{listed}\n{stdout}"
    );
    // The running count only grows, and after the failover it goes on
    // from what A accepted.
    let so_far: Vec<u64> = stdout
        .lines()
        .filter_map(|l| {
            l.rsplit_once(" (")?
                .1
                .strip_suffix(" frames accepted so far)")
        })
        .map(|n| n.parse().expect("a count"))
        .collect();
    assert!(
        so_far.len() == durations.len() && so_far.windows(2).all(|w| w[0] < w[1]),
        "{so_far:?}\n{stdout}"
    );
    assert_eq!(so_far.last(), Some(&frames), "{stdout}");
    edge.shutdown().await;
    b.shutdown().await;
}

/// Parts listed after the last whole segment of a low-latency playlist.
fn open_parts(list: &str) -> usize {
    let lines: Vec<&str> = list.lines().collect();
    let last_segment = lines
        .iter()
        .rposition(|l| l.starts_with("seg-"))
        .unwrap_or(0);
    lines[last_segment..]
        .iter()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .count()
}

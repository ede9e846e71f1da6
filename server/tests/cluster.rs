//! Session replication over a real NATS JetStream (`nats-server -js`, which
//! these tests need): an origin publishes, edges serve the same playlists
//! and segments, byte for byte.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::failover::{
    live_audio_stream, live_stream, origin_process, publish_with_failover,
    publish_with_failover_then,
};
use common::nats::Nats;
use common::*;
use liveslice_proto::v1 as pb;
use liveslice_server::cluster::Role;
use liveslice_server::config::Config;

fn origin_config(nats: &Nats, node: &str) -> Config {
    let mut c = test_config();
    c.cluster.cluster = Some(nats.url());
    c.cluster.node_id = Some(node.into());
    // The whole test stream stays listed: players decode all of it.
    c.engine.window = 60;
    c
}

fn edge_config(nats: &Nats, node: &str) -> Config {
    let mut c = origin_config(nats, node);
    c.cluster.role = Role::Edge;
    c
}

/// Nodes that start together on a fresh NATS (a Compose or Kubernetes
/// rollout) all join: origins, edges and workers make the session stream,
/// the lease bucket and the job queue at once. (A new-user trial once saw
/// an edge fail here with "subjects overlap with an existing stream"; the
/// race is rare: the next test forces its outcome.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_all_join() {
    let Some(nats) = Nats::start("cluster start") else {
        return;
    };
    let starts: Vec<_> = (0..6)
        .map(|i| {
            let node = format!("together-{i}");
            let mut c = if i % 2 == 0 {
                origin_config(&nats, &node)
            } else {
                edge_config(&nats, &node)
            };
            c.jobs.worker = i < 2;
            tokio::spawn(async move { liveslice_server::app::start(&c).await })
        })
        .collect();
    let mut servers = Vec::new();
    for (i, s) in starts.into_iter().enumerate() {
        match s.await.expect("start task") {
            Ok(server) => servers.push(server),
            Err(e) => panic!("node {i} did not start: {e}"),
        }
    }
    for server in servers {
        server.shutdown().await;
    }
}

/// A node that loses the race to make a stream (another node made it
/// between its look and its creation, which NATS may answer with "stream
/// name already in use" or "subjects overlap") finds it made and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_the_race_to_make_a_stream_goes_on() {
    use async_nats::jetstream::stream::Config as StreamConfig;
    let Some(nats) = Nats::start("cluster start") else {
        return;
    };
    let client = async_nats::connect(nats.url().trim_start_matches("nats://"))
        .await
        .expect("NATS");
    let js = async_nats::jetstream::new(client);
    let config = |max_age: u64| StreamConfig {
        name: "RACED".into(),
        subjects: vec!["raced.>".into()],
        max_age: Duration::from_secs(max_age),
        ..Default::default()
    };
    // The other node's stream, made first (with its own retention).
    js.get_or_create_stream(config(60)).await.expect("made");
    assert!(
        js.create_stream(config(61)).await.is_err(),
        "NATS refuses the second creation"
    );
    liveslice_server::cluster::create_stream(&js, config(61))
        .await
        .expect("the loser finds the stream made");
}

/// `publishTime` is the moment the MPD is rendered: the one attribute two
/// nodes never share.
fn without_publish_time(mpd: &str) -> String {
    let mut out = String::with_capacity(mpd.len());
    let mut rest = mpd;
    while let Some(i) = rest.find("publishTime=\"") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "publishTime=\"".len()..];
        let end = after.find('"').unwrap_or(after.len());
        rest = &after[(end + 1).min(after.len())..];
    }
    out.push_str(rest);
    out
}

async fn text(url: &str) -> (u16, String) {
    let (status, _, body) = get(url).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until `url` answers 200 with a body containing `needle`.
async fn wait_for_text(url: &str, needle: &str, limit: Duration) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, body) = text(url).await;
        if status == 200 && body.contains(needle) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} did not show {needle:?} within {limit:?} (status {status}):\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the edge's `path` equals the origin's (between two reads of
/// the origin's, which moves on as parts close).
async fn wait_until_equal(o: &str, e: &str, path: &str, limit: Duration) {
    wait_until_same(o, e, path, limit, |t| t.to_string()).await
}

/// Waits until the edge's `path` ends as the origin's does (its last
/// lines: an origin that took a session over lists only its own segments,
/// the edge the old owner's too).
async fn wait_until_tails_equal(o: &str, e: &str, path: &str, limit: Duration) {
    wait_until_same(o, e, path, limit, tail).await
}

async fn wait_until_same(
    o: &str,
    e: &str,
    path: &str,
    limit: Duration,
    part: impl Fn(&str) -> String,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (_, before) = text(&format!("{o}/{path}")).await;
        let (es, at_edge) = text(&format!("{e}/{path}")).await;
        let (_, after) = text(&format!("{o}/{path}")).await;
        let at_edge_part = part(&at_edge);
        if es == 200 && (at_edge_part == part(&before) || at_edge_part == part(&after)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge's {path} never matched the origin's within {limit:?} (edge: {es}):\n{}\n--- origin:\n{}",
            tail(&at_edge),
            tail(&after)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A playlist's last lines (where two differ).
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(6)..].join("\n")
}

/// The URIs a playlist names: segments, parts and init segments.
fn uris(playlist: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in playlist.lines() {
        if !line.starts_with('#') && !line.is_empty() {
            out.push(line.to_string());
        }
        for piece in line.split(',') {
            if let Some(v) = piece
                .split_once("URI=\"")
                .and_then(|(_, v)| v.split('"').next())
            {
                out.push(v.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_serves_the_origins_playlists_and_segments_byte_for_byte() {
    let Some(nats) = Nats::start("cluster replication") else {
        return;
    };
    let origin = start(origin_config(&nats, "origin-1")).await;
    let edge = start(edge_config(&nats, "edge-1")).await;
    let edge2 = start(edge_config(&nats, "edge-2")).await;
    let o = format!("http://{}", origin.http_addr);
    let e = format!("http://{}", edge.http_addr);
    let e2 = format!("http://{}", edge2.http_addr);

    // An edge takes no publishers, and says why.
    let mut ec = client(&edge).await;
    let refused = match publish(&mut ec, "nope", Default::default()).await {
        Err(s) => s,
        Ok(mut p) => {
            let (_, status) = collect(&mut p.responses, Duration::from_secs(10)).await;
            status.expect("the edge refuses the publisher")
        }
    };
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("edge"), "{refused:?}");

    let data = testdata("high_bframes_30.h264");
    let mut c = client(&origin).await;
    let mut p = publish(&mut c, "cam", Default::default()).await.unwrap();
    p.send_chunked(&data, &[64 * 1024, 1000, 7]).await;
    p.end().await;
    drop(p.tx);
    let (_, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");

    // The edge catches up to the end of the session.
    let origin_hls = wait_for_text(
        &format!("{o}/live/cam/index.m3u8"),
        "#EXT-X-ENDLIST",
        Duration::from_secs(5),
    )
    .await;
    let edge_hls = wait_for_text(
        &format!("{e}/live/cam/index.m3u8"),
        "#EXT-X-ENDLIST",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(edge_hls, origin_hls, "HLS (CMAF) playlists differ");
    let edge2_hls = wait_for_text(
        &format!("{e2}/live/cam/index.m3u8"),
        "#EXT-X-ENDLIST",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(edge2_hls, origin_hls, "the second edge's playlist differs");
    assert!(origin_hls.matches("#EXTINF").count() > 2, "{origin_hls}");

    let (_, origin_ts) = text(&format!("{o}/live/cam/ts/index.m3u8")).await;
    let (_, edge_ts) = text(&format!("{e}/live/cam/ts/index.m3u8")).await;
    assert_eq!(edge_ts, origin_ts, "HLS (TS) playlists differ");

    let (_, origin_mpd) = text(&format!("{o}/live/cam/manifest.mpd")).await;
    let (_, edge_mpd) = text(&format!("{e}/live/cam/manifest.mpd")).await;
    assert!(origin_mpd.contains("<S "), "{origin_mpd}");
    assert_eq!(
        without_publish_time(&edge_mpd),
        without_publish_time(&origin_mpd),
        "MPDs differ"
    );

    // Every segment, part and init segment: the same bytes.
    let mut checked = 0;
    for (dir, playlist) in [("", &origin_hls), ("ts/", &origin_ts)] {
        for uri in uris(playlist) {
            let (os, _, ob) = get(&format!("{o}/live/cam/{dir}{uri}")).await;
            let (es, _, eb) = get(&format!("{e}/live/cam/{dir}{uri}")).await;
            let (_, _, e2b) = get(&format!("{e2}/live/cam/{dir}{uri}")).await;
            assert!(e2b == ob, "{dir}{uri} on the second edge");
            assert_eq!(
                (os, es),
                (200, 200),
                "{dir}{uri}: {}",
                String::from_utf8_lossy(&eb)
            );
            assert!(!ob.is_empty(), "{dir}{uri}");
            assert!(ob == eb, "{dir}{uri}: {} vs {} bytes", ob.len(), eb.len());
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} files");
    // And every part (the ended playlists no longer list them).
    let mut parts = 0;
    for n in 0.. {
        let (os, _, ob) = get(&format!("{o}/live/cam/part-{n}.m4s")).await;
        if os != 200 {
            break;
        }
        let (es, _, eb) = get(&format!("{e}/live/cam/part-{n}.m4s")).await;
        assert_eq!(es, 200, "part {n}");
        assert!(ob == eb, "part-{n}.m4s differs");
        let (_, _, ot) = get(&format!("{o}/live/cam/ts/part-{n}.ts")).await;
        let (_, _, et) = get(&format!("{e}/live/cam/ts/part-{n}.ts")).await;
        assert!(!ot.is_empty() && ot == et, "part-{n}.ts differs");
        parts += 1;
    }
    assert!(parts > 10, "only {parts} parts");

    // Players decode the same frames from both.
    if have_ffmpeg("cluster output decoded by ffmpeg") {
        let want = liveslice_server::engine::pipeline::frames_of(
            bytes::Bytes::from(data),
            Default::default(),
        )
        .len();
        for base in [&o, &e] {
            for path in ["index.m3u8", "ts/index.m3u8", "manifest.mpd"] {
                let url = format!("{base}/live/cam/{path}");
                let (frames, errors) = tokio::task::spawn_blocking(move || ffmpeg_frames(&url))
                    .await
                    .unwrap();
                assert_eq!(errors, "", "{base} {path}");
                assert_eq!(frames, want, "{base} {path}");
            }
        }
    }
    edge2.shutdown().await;
    edge.shutdown().await;
    origin.shutdown().await;
}

/// A session with audio: the edge serves the origin's multivariant and
/// audio playlists, MPD (with its audio sets) and every audio and video
/// file (CMAF audio track, MPEG-TS with the audio PID) byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_audio_is_the_same_bytes_on_the_edge() {
    edge_serves_the_origins_av_bytes("av", common::av::messages("av_48k_stereo", true, true)).await;
}

/// An audio-only session (no video track) is replicated too: the edge joins
/// at its first audio segment start and serves the origin's playlists
/// (index.m3u8 is the audio playlist), MPD and files byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_only_session_is_the_same_bytes_on_the_edge() {
    edge_serves_the_origins_av_bytes("radio", common::av::messages("av_44k_mono", true, false))
        .await;
}

/// Publishes `msgs` (video and/or audio) on an origin and compares every
/// playlist, the MPD and every file the playlists name with an edge's.
async fn edge_serves_the_origins_av_bytes(id: &str, msgs: Vec<(pb::Track, bytes::Bytes, u64)>) {
    let Some(nats) = Nats::start("cluster replication of audio") else {
        return;
    };
    let origin = start(origin_config(&nats, &format!("origin-{id}"))).await;
    let edge = start(edge_config(&nats, &format!("edge-{id}"))).await;
    let o = format!("http://{}", origin.http_addr);
    let e = format!("http://{}", edge.http_addr);
    common::av::publish_av(&origin, id, msgs).await;
    let mut lists = Vec::new();
    for path in ["index.m3u8", "audio.m3u8", "ts/index.m3u8"] {
        let at_origin = wait_for_text(
            &format!("{o}/live/{id}/{path}"),
            "#EXT-X-ENDLIST",
            Duration::from_secs(5),
        )
        .await;
        let at_edge = wait_for_text(
            &format!("{e}/live/{id}/{path}"),
            "#EXT-X-ENDLIST",
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(at_edge, at_origin, "{path} differs");
        lists.push((path, at_origin));
    }
    assert!(lists[1].1.contains("audio-init.mp4"), "{}", lists[1].1);
    for path in ["master.m3u8", "ts/master.m3u8"] {
        let (os, om) = text(&format!("{o}/live/{id}/{path}")).await;
        let (es, em) = text(&format!("{e}/live/{id}/{path}")).await;
        assert_eq!((os, es), (200, 200), "{path}");
        assert!(om.contains("mp4a.40.2"), "{path}: {om}");
        assert_eq!(em, om, "{path} differs");
    }
    let (_, origin_mpd) = text(&format!("{o}/live/{id}/manifest.mpd")).await;
    let (_, edge_mpd) = text(&format!("{e}/live/{id}/manifest.mpd")).await;
    assert!(origin_mpd.contains("contentType=\"audio\""), "{origin_mpd}");
    assert_eq!(
        without_publish_time(&edge_mpd),
        without_publish_time(&origin_mpd),
        "MPDs differ"
    );
    let mut checked = 0;
    for (path, playlist) in &lists {
        let dir = if path.starts_with("ts/") { "ts/" } else { "" };
        for uri in uris(playlist) {
            let (os, _, ob) = get(&format!("{o}/live/{id}/{dir}{uri}")).await;
            let (es, _, eb) = get(&format!("{e}/live/{id}/{dir}{uri}")).await;
            assert_eq!((os, es), (200, 200), "{dir}{uri}");
            assert!(
                !ob.is_empty() && ob == eb,
                "{dir}{uri}: {} vs {} bytes",
                ob.len(),
                eb.len()
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} files");
    edge.shutdown().await;
    origin.shutdown().await;
}

/// H.265 goes over the cluster the same way (its VPS and profile in the
/// replicated parameter sets): the edge's playlists, MPD and files are the
/// origin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h265_session_is_the_same_bytes_on_the_edge() {
    let Some(nats) = Nats::start("cluster replication") else {
        return;
    };
    let origin = start(origin_config(&nats, "origin-1")).await;
    let edge = start(edge_config(&nats, "edge-1")).await;
    let o = format!("http://{}", origin.http_addr);
    let e = format!("http://{}", edge.http_addr);
    let data = testdata("hevc_bframes_30.h265");
    let mut c = client(&origin).await;
    let mut p = publish(&mut c, "hevc", Default::default()).await.unwrap();
    p.send_chunked(&data, &[64 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let (_, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    let origin_hls = wait_for_text(
        &format!("{o}/live/hevc/index.m3u8"),
        "#EXT-X-ENDLIST",
        Duration::from_secs(5),
    )
    .await;
    let edge_hls = wait_for_text(
        &format!("{e}/live/hevc/index.m3u8"),
        "#EXT-X-ENDLIST",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(edge_hls, origin_hls);
    let (_, mpd) = text(&format!("{o}/live/hevc/manifest.mpd")).await;
    assert!(mpd.contains("codecs=\"hvc1."), "{mpd}");
    let (_, edge_mpd) = text(&format!("{e}/live/hevc/manifest.mpd")).await;
    assert_eq!(without_publish_time(&edge_mpd), without_publish_time(&mpd));
    let (_, origin_ts) = text(&format!("{o}/live/hevc/ts/index.m3u8")).await;
    let (_, edge_ts) = text(&format!("{e}/live/hevc/ts/index.m3u8")).await;
    assert_eq!(edge_ts, origin_ts);
    for (dir, playlist) in [("", &origin_hls), ("ts/", &origin_ts)] {
        for uri in uris(playlist) {
            let (_, _, a) = get(&format!("{o}/live/hevc/{dir}{uri}")).await;
            let (_, _, b) = get(&format!("{e}/live/hevc/{dir}{uri}")).await;
            assert!(!a.is_empty() && a == b, "{dir}{uri}");
        }
    }
    edge.shutdown().await;
    origin.shutdown().await;
}

/// A publisher that reconnects within the grace period continues the
/// session with a discontinuity on the origin; the edge's playlists show
/// the same discontinuity, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_reconnect_is_the_same_discontinuity_on_the_edge() {
    let Some(nats) = Nats::start("cluster replication") else {
        return;
    };
    let mut oc = origin_config(&nats, "origin-1");
    oc.session.publisher_grace = Duration::from_secs(5);
    let origin = start(oc).await;
    let edge = start(edge_config(&nats, "edge-1")).await;
    let o = format!("http://{}", origin.http_addr);
    let e = format!("http://{}", edge.http_addr);
    let data = testdata("baseline_30.h264");

    let proxy = CutProxy::start(origin.grpc_addr).await;
    let mut pc = proxy.client().await;
    let p1 = publish(&mut pc, "flaky", Default::default()).await.unwrap();
    p1.send_chunked(&data, &[4000]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The publisher's network goes away (no clean half-close).
    proxy.cut();
    drop(p1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c2 = client(&origin).await;
    let mut p2 = publish(&mut c2, "flaky", Default::default()).await.unwrap();
    p2.send_chunked(&data, &[4000]).await;
    p2.end().await;
    drop(p2.tx);
    let (_, status) = collect(&mut p2.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");

    let origin_hls = wait_for_text(
        &format!("{o}/live/flaky/index.m3u8"),
        "#EXT-X-ENDLIST",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        origin_hls.contains("#EXT-X-DISCONTINUITY\n"),
        "{origin_hls}"
    );
    let edge_hls = wait_for_text(
        &format!("{e}/live/flaky/index.m3u8"),
        "#EXT-X-ENDLIST",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(edge_hls, origin_hls);
    for path in ["ts/index.m3u8", "manifest.mpd"] {
        let (_, a) = text(&format!("{o}/live/flaky/{path}")).await;
        let (_, b) = text(&format!("{e}/live/flaky/{path}")).await;
        assert_eq!(without_publish_time(&b), without_publish_time(&a), "{path}");
    }
    for uri in uris(&origin_hls) {
        let (_, _, a) = get(&format!("{o}/live/flaky/{uri}")).await;
        let (_, _, b) = get(&format!("{e}/live/flaky/{uri}")).await;
        assert!(!a.is_empty() && a == b, "{uri}");
    }
    edge.shutdown().await;
    origin.shutdown().await;
}

/// The origin's publisher vanishes mid-segment (its connection cut) and
/// comes back 1.5 s later: the edge's low-latency MPD stops predicting
/// while it is away, as the origin's does (the segment in progress and the
/// next would not be where it said), and a request held on the edge for
/// the predicted next segment is refused (`404`, saying why) when that
/// segment opens a new period. The edge lists the one discontinuity where
/// the origin does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_stops_predicting_while_the_publisher_is_away() {
    use common::live::{
        publish_file_live_to, reconnect_and_expect_new_period, wait_predicting_early,
        wait_predicting_nothing,
    };
    let Some(nats) = Nats::start("cluster replication") else {
        return;
    };
    let ll = |mut c: Config| {
        c.engine.segment_duration = Duration::from_secs(1);
        c.engine.part_duration = Duration::from_millis(200);
        c.session.publisher_grace = Duration::from_secs(30);
        c
    };
    let origin = start(ll(origin_config(&nats, "origin-1"))).await;
    let edge = start(ll(edge_config(&nats, "edge-1"))).await;
    let o = format!("http://{}/live/away", origin.http_addr);
    let e = format!("http://{}/live/away", edge.http_addr);
    let proxy = CutProxy::start(origin.grpc_addr).await;
    let stop = Arc::new(AtomicBool::new(false));
    let first = publish_file_live_to(proxy.addr, "away", "baseline_30.h264", stop, false);
    wait_for_text(
        &format!("{e}/index.m3u8"),
        "#EXT-X-PART:",
        Duration::from_secs(20),
    )
    .await;
    let open = wait_predicting_early(&e).await;
    let addr = edge.http_addr;
    let ahead = tokio::spawn(async move {
        raw_get(addr, &format!("/live/away/seg-{}.m4s", open + 1), &[]).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.cut();
    first.abort();
    assert!(
        wait_predicting_nothing(&o).await,
        "the origin's MPD stops predicting"
    );
    assert!(
        wait_predicting_nothing(&e).await,
        "the edge's MPD stops predicting while the publisher is away"
    );
    let (stop2, second) =
        reconnect_and_expect_new_period(origin.grpc_addr, "away", &e, open + 1, ahead).await;
    // Both list the one discontinuity, at the new publisher's first segment.
    let listed = format!("seg-{}.m4s", open + 3);
    wait_for_text(&format!("{o}/index.m3u8"), &listed, Duration::from_secs(20)).await;
    stop2.store(true, Ordering::Relaxed);
    second.await.unwrap();
    let origin_hls = wait_for_text(
        &format!("{o}/index.m3u8"),
        "#EXT-X-ENDLIST",
        Duration::from_secs(10),
    )
    .await;
    let edge_hls = wait_for_text(
        &format!("{e}/index.m3u8"),
        "#EXT-X-ENDLIST",
        Duration::from_secs(20),
    )
    .await;
    let h = common::history::parse_hls(&edge_hls);
    let at: Vec<u64> = h.segments.iter().filter(|s| s.4).map(|s| s.0).collect();
    assert_eq!(at, [open + 1], "{edge_hls}");
    assert_eq!(edge_hls, origin_hls);
    edge.shutdown().await;
    origin.shutdown().await;
}

/// Publisher failover across origins: origin A (its own process) is killed
/// with SIGKILL mid-stream; the publisher goes on to origin B, which takes
/// the session over and continues its numbering after one discontinuity
/// (segments, parts, frames, the DASH period), closing A's open segment
/// from the parts A published. Two edges follow the session from A's
/// subject to B's into the same session: every version of the first one's
/// playlists (LL-HLS over CMAF and TS, LL-DASH) is a legal successor of the
/// one before (nothing listed is taken back or renumbered), both end with
/// the same playlists, B's segments are the same bytes on the edge, and
/// ffmpeg plays the whole session from the edge across the discontinuity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_failing_over_to_another_origin_continues_the_session_on_the_edge() {
    failover("fo", Kind::Video).await;
}

/// The same with an AAC track: the audio goes on too (its frames numbered
/// on, A's open segment closed with the audio of its parts), and the
/// edge's audio playlist and master playlist play with both tracks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_continues_a_session_with_audio() {
    failover("fo-av", Kind::Av).await;
}

/// An audio-only session (radio) fails over the same way: its first audio
/// frame on B goes where the wall clock is on A's timeline, its segment,
/// part and audio frame numbers go on, A's open segment is closed from
/// its parts; the edges' audio playlists (`index.m3u8` is the audio one)
/// list A's segments, then B's, and ffmpeg decodes every audio frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_only_session_fails_over_and_goes_on() {
    failover("fo-radio", Kind::AudioOnly).await;
}

/// A publisher that comes back without its audio (video only on B): the
/// session keeps its audio track (as on a reconnect to the same origin),
/// silence in its place from B's first frame on, so the edge's master
/// playlist and audio playlist go on and players get both tracks all the
/// way through instead of the tracks changing at the discontinuity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_audio_when_the_publisher_comes_back_without() {
    failover("fo-mute", Kind::AvThenVideoOnly).await;
}

/// The tracks of a session in the failover tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Video,
    /// Video and AAC.
    Av,
    /// Video and AAC on A, video alone on B.
    AvThenVideoOnly,
    /// AAC alone.
    AudioOnly,
}

async fn failover(id: &'static str, kind: Kind) {
    use common::history::{parse_hls, History};
    let av = matches!(kind, Kind::Av | Kind::AvThenVideoOnly);
    // The CMAF segments' names (an audio-only session's are its audio's).
    let prefix = if kind == Kind::AudioOnly {
        "audio-"
    } else {
        "seg-"
    };
    let Some(nats) = Nats::start("cluster failover") else {
        return;
    };
    if !have_ffmpeg("cluster failover") {
        return;
    }
    let (mut a, a_grpc, a_http) = origin_process(
        &nats,
        &format!("origin-a-{id}"),
        &["--window", "60", "--publisher-grace", "5s"],
    );
    let b = start(origin_config(&nats, &format!("origin-b-{id}"))).await;
    let edge = start(edge_config(&nats, &format!("edge-1-{id}"))).await;
    let edge2 = start(edge_config(&nats, &format!("edge-2-{id}"))).await;
    let bu = format!("http://{}", b.http_addr);
    let e = format!("http://{}", edge.http_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let stream = match kind {
        Kind::AudioOnly => live_audio_stream(),
        _ => live_stream(av),
    };
    let publisher = publish_with_failover_then(
        vec![a_grpc, b.grpc_addr],
        id,
        stream,
        stop.clone(),
        kind != Kind::AvThenVideoOnly,
    );
    let path = |p: &str| format!("live/{id}/{p}");

    wait_for_text(
        &format!("{a_http}/{}", path("index.m3u8")),
        "#EXTINF",
        Duration::from_secs(20),
    )
    .await;
    wait_until_equal(&a_http, &e, &path("index.m3u8"), Duration::from_secs(20)).await;

    // Every version of the edge's manifests, from now on, checked against
    // the one before.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (e, watching) = (e.clone(), watching.clone());
        async move {
            let mut history = History::default();
            while watching.load(Ordering::Relaxed) {
                let (_, c) = text(&format!("{e}/live/{id}/index.m3u8")).await;
                let (_, t) = text(&format!("{e}/live/{id}/ts/index.m3u8")).await;
                let (_, d) = text(&format!("{e}/live/{id}/manifest.mpd")).await;
                history.record_ll(&c, &t, "edge", true);
                history.record_dash_ll(&d, "edge");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            history
        }
    });
    // A few seconds into the session (mid-segment), A dies.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let (_, before) = text(&format!("{e}/{}", path("index.m3u8"))).await;
    let before = parse_hls(&before);
    a.kill().expect("SIGKILL");
    let _ = a.wait();

    // B takes over: its first segment follows A's last, one discontinuity on.
    let b_hls = wait_for_text(
        &format!("{bu}/{}", path("index.m3u8")),
        "#EXTINF",
        Duration::from_secs(20),
    )
    .await;
    let b_first = parse_hls(&b_hls);
    assert!(
        b_first.media_sequence >= before.open_segment(),
        "B's numbering goes on from A's:\n{b_hls}"
    );
    assert_eq!(
        b_first.discontinuity_sequence,
        before.discontinuity_sequence
    );
    assert!(
        b_first.segments[0].4,
        "B's first segment follows a discontinuity:\n{b_hls}"
    );
    // A few segments on B, then the stream ends.
    wait_for_text(
        &format!("{bu}/{}", path("index.m3u8")),
        &format!("{prefix}{}", b_first.media_sequence + 2),
        Duration::from_secs(20),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let failovers = publisher.await.unwrap();
    assert_eq!(failovers.count, 1, "one failover");
    let b_final = wait_for_text(
        &format!("{bu}/{}", path("index.m3u8")),
        "#EXT-X-ENDLIST",
        Duration::from_secs(10),
    )
    .await;
    let e_final = wait_for_text(
        &format!("{e}/{}", path("index.m3u8")),
        "#EXT-X-ENDLIST",
        Duration::from_secs(20),
    )
    .await;
    // A second edge says the same, byte for byte.
    let e2 = format!("http://{}", edge2.http_addr);
    let mut playlists = vec!["index.m3u8", "ts/index.m3u8"];
    if av {
        playlists.extend(["audio.m3u8", "master.m3u8"]);
    }
    for p in &playlists {
        let (_, one) = text(&format!("{e}/{}", path(p))).await;
        let two = wait_for_text(
            &format!("{e2}/{}", path(p)),
            "#EXT",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(two, one, "{p}");
    }
    watching.store(false, Ordering::Relaxed);
    let history = watcher
        .await
        .expect("every edge manifest version a legal successor");
    assert!(
        history.hls_ll_cmaf.len() > 10,
        "{} versions seen",
        history.hls_ll_cmaf.len()
    );

    // The edge: A's segments, A's open segment closed, one discontinuity,
    // B's segments, numbered without a gap.
    let eh = parse_hls(&e_final);
    let bh = parse_hls(&b_final);
    for seg in &eh.segments {
        assert!(
            seg.1.starts_with(&format!("{prefix}{}.", seg.0)),
            "{e_final}"
        );
    }
    let cuts: Vec<u64> = eh.segments.iter().filter(|s| s.4).map(|s| s.0).collect();
    assert_eq!(
        cuts,
        vec![bh.media_sequence],
        "one discontinuity, where B starts:\n{e_final}"
    );
    // HLS and DASH keep the relation they had across the move: from A's
    // last segment to B's first, the program date times and the DASH
    // timeline advance alike (B keeps A's capture-clock mapping).
    let (_, e_mpd) = text(&format!("{e}/{}", path("manifest.mpd"))).await;
    let dash = common::history::dash_segment_starts_ms(&e_mpd);
    let at = eh
        .segments
        .iter()
        .position(|s| s.4)
        .expect("B's first segment");
    let pdt = |s: &(u64, String, String, String, bool)| {
        common::history::unix_ms(&s.3).unwrap_or_else(|| panic!("a date: {s:?}"))
    };
    assert_eq!(eh.media_sequence, 0, "{e_final}");
    assert_eq!(
        dash.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![at, eh.segments.len() - at],
        "{e_mpd}"
    );
    let hls_ms = pdt(&eh.segments[at]) - pdt(&eh.segments[at - 1]);
    let dash_ms = dash[1][0] - dash[0][at - 1];
    assert!(
        (hls_ms - dash_ms).abs() <= 3,
        "from A's last segment to B's first: HLS {hls_ms} ms, DASH {dash_ms} ms\n{e_final}\n{e_mpd}"
    );
    // A had parts of a segment listed when it died: B closed that segment
    // and told the publisher in its ack (sequence, length and frames as
    // the edge lists it).
    if before.parts.contains_key(&before.open_segment()) {
        let closed = match failovers.closed_segments.as_slice() {
            [c] => c,
            other => panic!("B's ack names the segment it closed for A: {other:?}"),
        };
        assert_eq!(closed.sequence, bh.media_sequence - 1, "{e_final}");
        let listed = eh
            .segments
            .iter()
            .find(|s| s.0 == closed.sequence)
            .unwrap_or_else(|| panic!("segment {} on the edge:\n{e_final}", closed.sequence));
        let extinf: f64 = listed.2.trim_end_matches(',').parse().unwrap();
        let seconds = closed.duration_90k as f64 / 90_000.0;
        assert!((extinf - seconds).abs() < 0.001, "{closed:?}\n{e_final}");
        match kind {
            Kind::AudioOnly => {
                let audio = closed
                    .audio
                    .as_ref()
                    .expect("the audio of the closed segment");
                assert!(
                    audio.frame_count > 0 && audio.timescale == 44_100,
                    "{closed:?}"
                );
            }
            _ => assert_eq!(
                u64::from(closed.frame_count),
                (seconds * 30.0).round() as u64,
                "{closed:?}"
            ),
        }
    }
    assert!(
        eh.media_sequence < before.media_sequence + before.segments.len() as u64,
        "A's segments stay listed"
    );
    // B's segments are listed alike on both, and are the same bytes (CMAF
    // and MPEG-TS: the edge continues B's TS counters).
    let b_tail = &eh.segments[eh.segments.len() - bh.segments.len()..];
    assert_eq!(b_tail, &bh.segments[..], "B's entries on the edge");
    for seg in &bh.segments {
        let ts = format!("ts/seg-{}.ts", seg.0);
        for uri in [seg.1.clone(), ts] {
            let (_, _, x) = get(&format!("{bu}/{}", path(&uri))).await;
            let (_, _, y) = get(&format!("{e}/{}", path(&uri))).await;
            assert!(!x.is_empty() && x == y, "{uri}");
        }
    }
    // Every segment the edge lists is served, and ffmpeg plays them all.
    for p in &playlists {
        let (_, list) = text(&format!("{e}/{}", path(p))).await;
        let dir = p
            .rsplit_once('/')
            .map_or(String::new(), |(d, _)| format!("{d}/"));
        for uri in uris(&list) {
            if uri.ends_with(".m3u8") {
                continue;
            }
            let (status, _, body) = get(&format!("{e}/{}", path(&format!("{dir}{uri}")))).await;
            assert!(status == 200 && !body.is_empty(), "{uri}: {status}");
        }
    }
    let listed: f64 = eh
        .segments
        .iter()
        .map(|s| s.2.trim_end_matches(',').parse::<f64>().unwrap())
        .sum();
    // Every frame the segments hold decodes, in every playlist, across the
    // discontinuity (B-frame streams list a little less time than their
    // frames at a stream start: decoding ramps up).
    for p in &playlists[..] {
        if p.starts_with("master") {
            continue;
        }
        let url = format!("{e}/{}", path(p));
        let packets: u64 = av::probe_async(url.clone()).await.iter().map(|s| s.2).sum();
        let (frames, errors) = tokio::task::spawn_blocking(move || ffmpeg_every_frame(&url))
            .await
            .unwrap();
        assert!(errors.is_empty(), "{p}: {errors}");
        assert_eq!(
            frames as u64, packets,
            "{p}: frames decoded, of those listed"
        );
        if *p == "index.m3u8" {
            // 30 fps video, or 44.1 kHz AAC (1,024 samples a frame).
            let rate = match kind {
                Kind::AudioOnly => 44_100.0 / 1024.0,
                _ => 30.0,
            };
            assert!(
                frames as f64 > listed * rate * 0.95,
                "ffmpeg decoded {frames} frames, {listed} s listed"
            );
        }
    }
    if av {
        // Both tracks, all the way through, across the discontinuity.
        let streams = av::probe_async(format!("{e}/{}", path("master.m3u8"))).await;
        let audio = streams.iter().find(|s| s.0 == "audio");
        let video = streams.iter().find(|s| s.0 == "video");
        let (Some(audio), Some(video)) = (audio, video) else {
            panic!("{streams:?}");
        };
        assert!(
            audio.3 > listed - 1.5 && video.3 > listed - 1.5,
            "{streams:?} of {listed} s"
        );
        let url = format!("{e}/{}", path("master.m3u8"));
        let (_, errors) = tokio::task::spawn_blocking(move || ffmpeg_every_frame(&url))
            .await
            .unwrap();
        assert!(errors.is_empty(), "{errors}");
    }

    // (Metrics are the process's: other tests' origins count here too.)
    let (_, metrics) = text(&format!("{bu}/metrics")).await;
    let takeovers = metrics.lines().find_map(|l| {
        l.strip_prefix("liveslice_cluster_takeovers_total ")?
            .parse::<u64>()
            .ok()
    });
    assert!(takeovers.is_some_and(|n| n >= 1), "{metrics}");
    edge2.shutdown().await;
    edge.shutdown().await;
    b.shutdown().await;
}

/// Follows `base`'s low-latency playlist of `id` as a player does for
/// `secs` seconds (a blocking reload for each next part): (parts seen,
/// reloads answered without the part asked for because its segment ended
/// before it).
async fn follow_parts(base: &str, id: &str, secs: u64) -> (u32, u32) {
    use common::history::parse_hls;
    let url = format!("{base}/live/{id}/index.m3u8");
    let h = parse_hls(&wait_for_text(&url, "#EXT-X-PART:", Duration::from_secs(10)).await);
    let mut msn = h.open_segment();
    let mut part = h.parts.get(&msn).map_or(0, Vec::len);
    let (mut parts, mut wasted) = (0, 0);
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < until {
        let (status, body) = text(&format!("{url}?_HLS_msn={msn}&_HLS_part={part}")).await;
        assert_eq!(status, 200, "{body}");
        let h = parse_hls(&body);
        if h.parts.get(&msn).is_some_and(|p| p.len() > part) {
            parts += 1;
            part += 1;
        } else {
            wasted += 1;
        }
        // A segment listed complete: the next one's parts.
        if msn < h.open_segment() && part >= h.parts.get(&msn).map_or(0, Vec::len) {
            (msn, part) = (msn + 1, 0);
        }
    }
    (parts, wasted)
}

/// An edge lists a segment complete in the same playlist version as its
/// last part, as the origin does: a player that follows part by part never
/// asks for a part after the last one (its origin marks a segment's last
/// part; the edge applies it with the segment's record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_lists_a_segment_complete_with_its_last_part() {
    let Some(nats) = Nats::start("cluster replication") else {
        return;
    };
    let mut oc = origin_config(&nats, "origin-parts");
    oc.engine.segment_duration = Duration::from_secs(1);
    oc.engine.part_duration = Duration::from_millis(200);
    let origin = start(oc).await;
    let edge = start(edge_config(&nats, "edge-parts")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = common::live::publish_live(&origin, "parts", stop.clone(), true);
    let (o, e) = (
        format!("http://{}", origin.http_addr),
        format!("http://{}", edge.http_addr),
    );
    let ((op, ow), (ep, ew)) =
        tokio::join!(follow_parts(&o, "parts", 5), follow_parts(&e, "parts", 5));
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    assert!(
        op >= 15 && ep >= 15,
        "parts followed: origin {op}, edge {ep}"
    );
    assert_eq!(ow, 0, "the origin answered {ow} reloads without their part");
    assert_eq!(
        ew, 0,
        "the edge answered {ew} reloads without their part (of {ep} parts)"
    );
    edge.shutdown().await;
    origin.shutdown().await;
}

/// Two publishers of one session on two origins (the first origin is still
/// alive, its publisher too): the newer one takes the session over, and the
/// old origin's lease renewal (a compare-and-set) finds the lease moved and
/// stops replicating, rather than taking the session back: the edge stays
/// on the new owner's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_lost_a_session_to_another_does_not_take_it_back() {
    let Some(nats) = Nats::start("cluster takeover") else {
        return;
    };
    let a = start(origin_config(&nats, "origin-a")).await;
    let b = start(origin_config(&nats, "origin-b")).await;
    let edge = start(edge_config(&nats, "edge-1")).await;
    let (au, bu) = (
        format!("http://{}", a.http_addr),
        format!("http://{}", b.http_addr),
    );
    let e = format!("http://{}", edge.http_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let p1 = common::live::publish_live(&a, "twice", stop.clone(), true);
    wait_for_text(
        &format!("{au}/live/twice/index.m3u8"),
        "#EXTINF",
        Duration::from_secs(20),
    )
    .await;
    wait_until_equal(&au, &e, "live/twice/index.m3u8", Duration::from_secs(20)).await;

    let p2 = common::live::publish_live(&b, "twice", stop.clone(), true);
    wait_for_text(
        &format!("{bu}/live/twice/index.m3u8"),
        "#EXTINF",
        Duration::from_secs(20),
    )
    .await;
    wait_until_tails_equal(&bu, &e, "live/twice/index.m3u8", Duration::from_secs(20)).await;
    // Past two of A's renewals: the edge is still on B's copy.
    tokio::time::sleep(super_renewals()).await;
    wait_until_tails_equal(&bu, &e, "live/twice/index.m3u8", Duration::from_secs(2)).await;
    // Still the session that went on from A's copy to B's (a copy of A's
    // made afresh would have no discontinuity).
    let (_, at_edge) = text(&format!("{e}/live/twice/index.m3u8")).await;
    assert_eq!(
        at_edge.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "{at_edge}"
    );
    let (_, metrics) = text(&format!("{au}/metrics")).await;
    let counted = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        counted("liveslice_cluster_taken_over_total ") >= 1,
        "{metrics}"
    );
    stop.store(true, Ordering::Relaxed);
    p1.await.unwrap();
    p2.await.unwrap();
    edge.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

/// Longer than two lease renewals.
fn super_renewals() -> Duration {
    liveslice_server::cluster::LEASE_RENEW * 2 + Duration::from_millis(500)
}

/// An origin killed (SIGKILL: no end message, no final lease) stops
/// renewing its leases; once they expire the edges end its sessions, with
/// final playlists, instead of serving them as live forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_ends_the_sessions_of_a_killed_origin_when_their_lease_expires() {
    let Some(nats) = Nats::start("cluster replication") else {
        return;
    };
    let (mut child, _, o) = origin_process(&nats, "origin-doomed", &["--demo", "demo"]);
    let edge = start(edge_config(&nats, "edge-1")).await;
    let e = format!("http://{}", edge.http_addr);
    wait_for_text(
        &format!("{o}/live/demo/index.m3u8"),
        "#EXTINF",
        Duration::from_secs(20),
    )
    .await;
    wait_until_equal(&o, &e, "live/demo/index.m3u8", Duration::from_secs(20)).await;

    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (s, live) = text(&format!("{e}/live/demo/index.m3u8")).await;
    assert_eq!(s, 200);
    assert!(!live.contains("#EXT-X-ENDLIST"), "{live}");
    // The lease lives 10 s after its last renewal; the edge checks every 2 s.
    let ended = wait_for_text(
        &format!("{e}/live/demo/index.m3u8"),
        "#EXT-X-ENDLIST",
        Duration::from_secs(25),
    )
    .await;
    // What it listed stays, closed: nothing is renumbered.
    let first_listed = |p: &str| p.lines().find(|l| l.starts_with("seg-")).map(str::to_owned);
    assert!(first_listed(&ended).is_some(), "{ended}");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_edge_joins_live_and_losing_nats_is_reported_not_served_stale() {
    let Some(mut nats) = Nats::start("cluster replication") else {
        return;
    };
    let origin = start(origin_config(&nats, "origin-1")).await;
    let o = format!("http://{}", origin.http_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = live::publish_live(&origin, "live", stop.clone(), true);
    wait_for_text(
        &format!("{o}/live/live/index.m3u8"),
        "#EXTINF",
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // An edge started mid-stream serves the live window, the origin's
    // numbering and all.
    let edge = start(edge_config(&nats, "edge-late")).await;
    let e = format!("http://{}", edge.http_addr);
    wait_until_equal(&o, &e, "live/live/index.m3u8", Duration::from_secs(20)).await;
    wait_until_equal(&o, &e, "live/live/ts/index.m3u8", Duration::from_secs(5)).await;

    // gRPC subscribers on the edge get frames, from a keyframe.
    let mut ec = client(&edge).await;
    let mut sub = subscribe(&mut ec, "live", true, 0)
        .await
        .expect("subscribe");
    let mut frames = Vec::new();
    while frames.len() < 10 {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.message())
            .await
            .expect("frames within 10 s")
            .expect("stream ok")
            .expect("stream open");
        if let Some(pb::slice_response::Event::Frame(f)) = &m.event {
            frames.push((f.random_access, m.is_keyframe));
        }
    }
    assert_eq!(frames[0], (true, true), "a subscriber starts at a keyframe");
    drop(sub);

    // NATS goes away: the origin keeps serving and says so; the edge
    // answers 503 rather than a playlist that has stopped.
    let (s, health) = text(&format!("{e}/healthz")).await;
    assert_eq!((s, health.as_str()), (200, "ok\ncluster: connected\n"));
    nats.stop();
    let (_, first) = text(&format!("{o}/live/live/index.m3u8")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (s, _) = text(&format!("{e}/live/live/index.m3u8")).await;
        if s == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge still serves {s} without NATS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The origin still serves, and says the cluster is unreachable.
    let health = wait_for_text(
        &format!("{o}/healthz"),
        "cluster: unreachable",
        Duration::from_secs(10),
    )
    .await;
    assert!(health.starts_with("ok\n"), "{health}");
    let (s, health) = text(&format!("{e}/healthz")).await;
    assert_eq!(s, 503, "an edge without NATS is unhealthy: {health}");
    let mut ec = client(&edge).await;
    let refused = subscribe(&mut ec, "live", true, 0)
        .await
        .expect_err("no subscriber on an edge cut off from NATS");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let (_, metrics) = text(&format!("{o}/metrics")).await;
    assert!(
        metrics.contains("liveslice_cluster_connected 0"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (s, later) = text(&format!("{o}/live/live/index.m3u8")).await;
    assert_eq!(s, 200);
    assert_ne!(later, first, "the origin's playlist moves on without NATS");
    // A new publisher while NATS is away is taken at once (the origin does
    // not wait on the cluster to find whether the session lives elsewhere).
    let mut oc = client(&origin).await;
    let during = tokio::time::timeout(
        Duration::from_secs(3),
        publish(&mut oc, "during", Default::default()),
    )
    .await
    .expect("a publisher taken within 3 s without NATS")
    .expect("publish");
    drop(during);

    // NATS is back: the origin publishes its backlog (nothing was lost:
    // the outage was shorter than its queue) and the edge serves the
    // session again, caught up, the origin's playlist line for line.
    nats.restart();
    wait_until_equal(&o, &e, "live/live/index.m3u8", Duration::from_secs(30)).await;
    let (s, _) = text(&format!("{e}/live/live/seg-0.m4s")).await;
    assert_eq!(s, 200);

    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), publisher).await;
    edge.shutdown().await;
    origin.shutdown().await;
}

/// BENCH.md's figure: how much later a part is servable on an edge than on
/// its origin (part closed on the origin → part servable on the edge), p50
/// and p99 over a live stream with 100 ms parts. Run with
/// `cargo test -p liveslice-server --test cluster -- --ignored --nocapture edge_latency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCH.md (30 s), not a check"]
async fn edge_latency() {
    let Some(nats) = Nats::start("edge latency") else {
        return;
    };
    let mut oc = origin_config(&nats, "origin-1");
    oc.engine.part_duration = Duration::from_millis(100);
    oc.engine.segment_duration = Duration::from_secs(1);
    let origin = start(oc).await;
    let mut ec = edge_config(&nats, "edge-1");
    ec.engine.part_duration = Duration::from_millis(100);
    let edge = start(ec).await;
    let o = format!("http://{}", origin.http_addr);
    let e = format!("http://{}", edge.http_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = live::publish_live(&origin, "lat", stop.clone(), true);
    let hls = wait_for_text(
        &format!("{e}/live/lat/index.m3u8"),
        "PRELOAD-HINT",
        Duration::from_secs(20),
    )
    .await;
    let hint = |pl: &str| -> u64 {
        pl.split("URI=\"part-")
            .last()
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse().ok())
            .expect("a preload hint")
    };
    let first = hint(&hls) + 2;
    let mut added = Vec::new();
    for n in first..first + 300 {
        let t0 = std::time::Instant::now();
        let at_origin = async {
            let (s, _, _) = get(&format!("{o}/live/lat/part-{n}.m4s")).await;
            assert_eq!(s, 200, "origin part {n}");
            t0.elapsed()
        };
        let at_edge = async {
            loop {
                let (s, _, _) = get(&format!("{e}/live/lat/part-{n}.m4s")).await;
                if s == 200 {
                    return t0.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let (o_t, e_t) = tokio::join!(at_origin, at_edge);
        added.push(e_t.saturating_sub(o_t));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), publisher).await;
    added.sort();
    let pct = |p: usize| added[(added.len() * p / 100).min(added.len() - 1)];
    println!(
        "edge latency over {} parts of 100 ms: p50 {:?}, p99 {:?}, max {:?}",
        added.len(),
        pct(50),
        pct(99),
        added[added.len() - 1]
    );
    edge.shutdown().await;
    origin.shutdown().await;
}

/// BENCH.md's figure: how many items (frames, part and segment records) per
/// second one origin publishes to JetStream, with 100 sessions each pushing
/// a whole stream as fast as the server takes it. Run with
/// `cargo test -p liveslice-server --test cluster -- --ignored --nocapture origin_publish_rate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCH.md, not a check"]
async fn origin_publish_rate() {
    let Some(nats) = Nats::start("origin publish rate") else {
        return;
    };
    let origin = start(origin_config(&nats, "origin-1")).await;
    let o = format!("http://{}", origin.http_addr);
    let published = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("liveslice_cluster_published_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = published(&text(&format!("{o}/metrics")).await.1);
    let data = bytes::Bytes::from(testdata("high_bframes_30.h264"));
    let sessions = 100;
    let t0 = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let data = data.clone();
        let mut c = client(&origin).await;
        tasks.push(tokio::spawn(async move {
            let mut p = publish(&mut c, &format!("rate{i}"), Default::default())
                .await
                .expect("publish");
            p.send_chunked(&data, &[64 * 1024]).await;
            p.end().await;
            drop(p.tx);
            let _ = collect(&mut p.responses, Duration::from_secs(60)).await;
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    let ingest = t0.elapsed();
    // Until the count stops moving: every item acknowledged.
    let (mut last, mut last_change) = (before, t0.elapsed());
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = published(&text(&format!("{o}/metrics")).await.1);
        if now != last {
            (last, last_change) = (now, t0.elapsed());
        } else if t0.elapsed() - last_change > Duration::from_secs(2) {
            break;
        }
    }
    let items = last - before;
    let frames: u64 = origin.registry.sessions().iter().map(|s| s.frames()).sum();
    println!(
        "{sessions} sessions, {frames} frames, {items} items published in {last_change:?} \
         (ingest done at {ingest:?}): {:.0} items/s, {:.0} frames/s",
        items as f64 / last_change.as_secs_f64(),
        frames as f64 / last_change.as_secs_f64()
    );
    origin.shutdown().await;
}

/// BENCH.md's figure: what a viewer of an edge loses when the session's
/// origin dies and its publisher fails over (`RUNS` times, default 5): from
/// the SIGKILL to the new owner's first part servable on the edge (the
/// publisher noticing, connecting to the second origin, its takeover, the
/// next keyframe, the first part), and the hole it leaves in the timeline
/// (the new owner's first segment's wall-clock time minus the end of the
/// segment closed for the dead origin). 1 s GOP, 500 ms parts, killed at a
/// different point of the GOP each run. Run with
/// `cargo test -p liveslice-server --test cluster -- --ignored --nocapture failover_gap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCH.md, not a check"]
async fn failover_gap() {
    use common::history::parse_hls;
    let Some(nats) = Nats::start("cluster failover") else {
        return;
    };
    let runs: u64 = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let edge = start(edge_config(&nats, "edge-gap")).await;
    let e = format!("http://{}", edge.http_addr);
    let (mut to_part, mut holes) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let id: &'static str = Box::leak(format!("gap{run}").into_boxed_str());
        let (mut a, a_grpc, _) =
            origin_process(&nats, &format!("gap-a-{run}"), &["--window", "60"]);
        let b = start(origin_config(&nats, &format!("gap-b-{run}"))).await;
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = publish_with_failover(
            vec![a_grpc, b.grpc_addr],
            id,
            live_stream(false),
            stop.clone(),
        );
        let url = format!("{e}/live/{id}/index.m3u8");
        wait_for_text(&url, "#EXTINF", Duration::from_secs(20)).await;
        // Somewhere else in the GOP each run.
        tokio::time::sleep(Duration::from_millis(2000 + 230 * run)).await;
        a.kill().expect("SIGKILL");
        let killed = std::time::Instant::now();
        let _ = a.wait();
        // The new owner's first part on the edge: listed after the
        // discontinuity.
        loop {
            let (_, text) = text(&url).await;
            if let Some((_, after)) = text.split_once("#EXT-X-DISCONTINUITY\n") {
                if after.contains("#EXT-X-PART:") {
                    break;
                }
            }
            assert!(
                killed.elapsed() < Duration::from_secs(20),
                "no part after the failover:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        to_part.push(killed.elapsed());
        let text = wait_for_text(
            &url,
            "#EXT-X-DISCONTINUITY\n#EXT-X-MAP",
            Duration::from_secs(10),
        )
        .await;
        let text = wait_for_text(
            &url,
            &format!("seg-{}", parse_hls(&text).segments.len() + 1),
            Duration::from_secs(10),
        )
        .await;
        let h = parse_hls(&text);
        let cut = h
            .segments
            .iter()
            .position(|s| s.4)
            .expect("a discontinuity");
        let ms = |pdt: &str| {
            // 2026-12-02T14:04:13.654Z: seconds of the day with ms.
            let t = pdt
                .split('T')
                .nth(1)
                .unwrap_or_default()
                .trim_end_matches('Z');
            let mut f = t.split(':').map(|v| v.parse::<f64>().unwrap_or(0.0));
            let (hh, mm, ss) = (
                f.next().unwrap_or(0.0),
                f.next().unwrap_or(0.0),
                f.next().unwrap_or(0.0),
            );
            ((hh * 3600.0 + mm * 60.0 + ss) * 1000.0).round() as i64
        };
        let before = &h.segments[cut - 1];
        let end = ms(&before.3) + (before.2.parse::<f64>().unwrap_or(0.0) * 1000.0).round() as i64;
        holes.push(ms(&h.segments[cut].3) - end);
        stop.store(true, Ordering::Relaxed);
        let _ = publisher.await;
        b.shutdown().await;
    }
    edge.shutdown().await;
    to_part.sort();
    holes.sort();
    println!(
        "failover over {runs} runs: SIGKILL to the new owner's first part on the edge {:?} (sorted); \
         hole in the timeline (ms) {:?}",
        to_part, holes
    );
}

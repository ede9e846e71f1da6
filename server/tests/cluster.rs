//! Session replication over a real NATS JetStream (`nats-server -js`, which
//! these tests need): an origin publishes, edges serve the same playlists
//! and segments, byte for byte.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (_, before) = text(&format!("{o}/{path}")).await;
        let (es, at_edge) = text(&format!("{e}/{path}")).await;
        let (_, after) = text(&format!("{o}/{path}")).await;
        if es == 200 && (at_edge == before || at_edge == after) {
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

/// An origin killed (SIGKILL: no end message, no final lease) stops
/// renewing its leases; once they expire the edges end its sessions, with
/// final playlists, instead of serving them as live forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_ends_the_sessions_of_a_killed_origin_when_their_lease_expires() {
    let Some(nats) = Nats::start("cluster replication") else {
        return;
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_liveslice-server"))
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--demo",
            "demo",
            "--node-id",
            "origin-doomed",
            "--cluster",
        ])
        .arg(nats.url())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("liveslice-server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    // "liveslice-server: gRPC on 127.0.0.1:P, HTTP on http://127.0.0.1:Q/"
    let first = lines.next().expect("a first line").expect("text");
    let o = first
        .split("HTTP on ")
        .nth(1)
        .expect("the HTTP address")
        .trim_end_matches('/')
        .to_string();
    std::thread::spawn(move || for _ in lines {});
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

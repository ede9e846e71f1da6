//! Low-latency HLS over real HTTP: a session published in real time with
//! capture times (1 s GOP, 1 s segments, 200 ms parts) and each answer of
//! the origin: the playlist's low-latency tags and parts, blocking playlist
//! reload held then satisfied, its `400` cases and `503` timeout, a
//! preload-hint part request held until the part lands, delta updates,
//! held requests bounded and released with the final playlist when the
//! session ends, cache headers; low-latency DASH, and what both say while
//! a publisher is away and after it reconnects.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::history::{parse_hls, History};
use common::live::{
    predicted, publish_file_live_to, publish_live, reconnect_and_expect_new_period,
    wait_predicting_early, wait_predicting_nothing,
};
use common::{get, header, start, test_config};
use liveslice_server::config::Config;

fn ll_config() -> Config {
    let mut c = test_config();
    c.engine.segment_duration = Duration::from_secs(1);
    c.engine.part_duration = Duration::from_millis(200);
    c
}

async fn playlist(url: &str) -> (u16, Vec<(String, String)>, String) {
    let (status, h, body) = get(url).await;
    (status, h, String::from_utf8(body).expect("utf-8"))
}

/// Waits until the session's playlist lists at least `n` segments.
async fn wait_segments(url: &str, n: usize) -> String {
    for _ in 0..200 {
        let (status, _, text) = playlist(url).await;
        if status == 200 && parse_hls(&text).segments.len() >= n {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url}: never listed {n} segments");
}

fn tag_value<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(tag))
}

fn preload_hint(text: &str) -> String {
    tag_value(text, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"")
        .expect("preload hint")
        .trim_end_matches('"')
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_latency_playlists_parts_and_blocking_reload() {
    let server = start(ll_config()).await;
    let base = format!("http://{}/live/ll", server.http_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_live(&server, "ll", stop.clone(), true);
    let url = format!("{base}/index.m3u8");
    let text = wait_segments(&url, 2).await;

    // The tags and their numbers: 1 s segments (at most 3 s: target
    // duration 3), 200 ms parts at 30 fps (PART-TARGET 0.234).
    assert!(text.contains("#EXT-X-VERSION:7\n"), "{text}");
    assert!(text.contains("#EXT-X-TARGETDURATION:3\n"));
    assert!(text.contains(
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=18.000,\
         PART-HOLD-BACK=0.702,HOLD-BACK=9.000\n"
    ));
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.234\n"));
    let h = parse_hls(&text);
    assert!(!h.parts.is_empty());
    // A segment's first part starts at its keyframe.
    for parts in h.parts.values() {
        assert!(parts[0].ends_with(",INDEPENDENT=YES"), "{parts:?}");
    }
    // Parts are served, immutable.
    let first_part = h.parts.values().next().unwrap()[0].clone();
    let uri = first_part
        .split("URI=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let (status, headers, body) = get(&format!("{base}/{uri}")).await;
    assert_eq!(status, 200, "{uri}");
    assert!(&body[4..8] == b"moof", "a CMAF chunk");
    assert!(header(&headers, "cache-control")
        .unwrap()
        .contains("immutable"));
    // The playlist itself: never cached without a blocking query.
    let (_, headers, _) = playlist(&url).await;
    assert!(header(&headers, "cache-control")
        .unwrap()
        .contains("no-cache"));
    // The TS flavour names its parts relative to ts/index.m3u8.
    let (_, _, ts) = playlist(&format!("{base}/ts/index.m3u8")).await;
    let ts_hint = preload_hint(&ts);
    assert!(
        ts_hint.starts_with("part-") && ts_hint.ends_with(".ts"),
        "{ts}"
    );

    // Blocking reload for the next part: held, then answered with a
    // playlist that lists it.
    let (_, _, text) = playlist(&url).await;
    let h = parse_hls(&text);
    let open = h.open_segment();
    let next_part = h.parts.get(&open).map_or(0, Vec::len);
    let asked = Instant::now();
    let (status, headers, blocked) =
        playlist(&format!("{url}?_HLS_msn={open}&_HLS_part={next_part}")).await;
    let held = asked.elapsed();
    assert_eq!(status, 200);
    let b = parse_hls(&blocked);
    let listed = b.parts.get(&open).map_or(0, Vec::len) > next_part || b.open_segment() > open;
    assert!(
        listed,
        "the answer lists part {next_part} of {open}:\n{blocked}"
    );
    assert!(held < Duration::from_secs(2), "held {held:?}");
    assert!(header(&headers, "cache-control")
        .unwrap()
        .contains("max-age"));
    // Held until the part exists: the next part comes ~200 ms later, so a
    // request for the part after it must wait a while.
    let (_, _, text) = playlist(&url).await;
    let h = parse_hls(&text);
    // Two parts on (five 200 ms parts a segment).
    let k = h.parts.get(&h.open_segment()).map_or(0, Vec::len) + 1;
    let (msn, part) = (h.open_segment() + k as u64 / 5, k % 5);
    let asked = Instant::now();
    let (status, _, blocked) = playlist(&format!("{url}?_HLS_msn={msn}&_HLS_part={part}")).await;
    assert_eq!(status, 200);
    let held = asked.elapsed();
    assert!(held >= Duration::from_millis(100), "not held: {held:?}");
    let b = parse_hls(&blocked);
    assert!(b.parts.get(&msn).map_or(0, Vec::len) > part || b.open_segment() > msn);
    // A past segment: at once.
    let asked = Instant::now();
    let (status, _, _) = playlist(&format!("{url}?_HLS_msn=0")).await;
    assert_eq!(status, 200);
    assert!(asked.elapsed() < Duration::from_millis(200));

    // A preload hint: the GET is held until the part lands, then sent.
    let (_, _, text) = playlist(&url).await;
    let hint = preload_hint(&text);
    let asked = Instant::now();
    let (status, _, body) = get(&format!("{base}/{hint}")).await;
    assert_eq!(status, 200, "{hint}");
    assert!(&body[4..8] == b"moof");
    assert!(asked.elapsed() < Duration::from_secs(1));
    // Too far ahead for a hint: not held.
    let n: u64 = hint[5..hint.len() - 4].parse().unwrap();
    let (status, _, _) = get(&format!("{base}/part-{}.m4s", n + 1000)).await;
    assert_eq!(status, 404);

    // 400s: part without msn, msn more than two past the last segment,
    // part beyond the advance limit, not a number.
    let (_, _, text) = playlist(&url).await;
    let h = parse_hls(&text);
    let last = h.open_segment() - 1;
    for q in [
        "_HLS_part=1".to_string(),
        format!("_HLS_msn={}", last + 3),
        format!("_HLS_msn={}&_HLS_part=40", last + 1),
        "_HLS_msn=x".to_string(),
    ] {
        let (status, _, body) = playlist(&format!("{url}?{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
    }
    let (status, _, _) = playlist(&format!("{url}?_HLS_msn={}", last + 2)).await;
    assert_eq!(status, 200, "two past the last segment is allowed");

    // Delta update: the window (6 one-second segments) is shorter than
    // CAN-SKIP-UNTIL, so nothing is skipped, but the tag says so.
    let (status, _, delta) = playlist(&format!("{url}?_HLS_skip=YES")).await;
    assert_eq!(status, 200);
    assert!(
        delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=0\n"),
        "{delta}"
    );

    // Every version a player sees is a legal successor of the one before.
    let mut history = History::default();
    for _ in 0..12 {
        let (_, _, c) = playlist(&url).await;
        let (_, _, t) = playlist(&format!("{base}/ts/index.m3u8")).await;
        history.record_ll(&c, &t, "live", false);
        tokio::time::sleep(Duration::from_millis(90)).await;
    }

    // A request held when the session ends gets the final playlist.
    let (_, _, text) = playlist(&url).await;
    let h = parse_hls(&text);
    let far = h.open_segment() + 1;
    let waiter = tokio::spawn({
        let url = url.clone();
        async move { playlist(&format!("{url}?_HLS_msn={far}&_HLS_part=0")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let (status, _, text) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("released at the end")
        .unwrap();
    assert_eq!(status, 200);
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    // The final playlist is the regular one.
    assert!(!text.contains("PRELOAD-HINT") && !text.contains("EXT-X-PART"));
    let (_, _, t) = playlist(&format!("{base}/ts/index.m3u8")).await;
    history.record_ll(&text, &t, "ended", false);
    publisher.await.unwrap();
    server.shutdown().await;
}

/// A part that does not come within three target durations: `503`; and
/// held requests beyond the per-session bound: `503` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reload_times_out_and_is_bounded() {
    let mut config = ll_config();
    config.http.max_held_per_session = 2;
    config.session.publisher_grace = Duration::from_secs(30);
    let server = start(config).await;
    let base = format!("http://{}/live/st", server.http_addr);
    let url = format!("{base}/index.m3u8");
    let stop = Arc::new(AtomicBool::new(false));
    let _publisher = publish_live(&server, "st", stop.clone(), false);
    let text = wait_segments(&url, 1).await;
    // The publisher stalls (its stream stays open).
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, text2) = playlist(&url).await;
    let h = parse_hls(&text2);
    assert!(parse_hls(&text).segments.len() <= h.segments.len());
    let open = h.open_segment();
    let next = h.parts.get(&open).map_or(0, Vec::len) + 1;
    let q = format!("{url}?_HLS_msn={open}&_HLS_part={next}");
    let held: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let asked = Instant::now();
                let (status, _, _) = playlist(&q).await;
                (status, asked.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third is over the per-session bound.
    let (status, headers, _) = playlist(&q).await;
    assert_eq!(status, 503);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    for h in held {
        let (status, waited) = h.await.unwrap();
        assert_eq!(status, 503);
        // Three target durations (3 s each).
        assert!(
            waited >= Duration::from_secs(8) && waited < Duration::from_secs(12),
            "{waited:?}"
        );
    }
    server.shutdown().await;
}

/// Low-latency DASH: the MPD's low-latency attributes, the segment in
/// progress listed last, and served with chunked transfer encoding, each
/// part as it closes; once complete, the same bytes as the segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_latency_dash_serves_the_segment_in_progress_chunked() {
    let server = start(ll_config()).await;
    let base = format!("http://{}/live/ld", server.http_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_live(&server, "ld", stop.clone(), true);
    wait_segments(&format!("{base}/index.m3u8"), 2).await;

    // Wait for an MPD whose timeline lists, after the complete segments,
    // the segment in progress and the one after it (ahead, predicted): the
    // same segment the HLS playlist has in progress.
    let mut found = None;
    for _ in 0..100 {
        let (_, _, mpd) = playlist(&format!("{base}/manifest.mpd")).await;
        let (_, _, m3u8) = playlist(&format!("{base}/index.m3u8")).await;
        let h = parse_hls(&m3u8);
        if predicted(&mpd) == [h.open_segment(), h.open_segment() + 1] {
            found = Some((mpd, h.open_segment()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (mpd, open) = found.expect("the MPD lists the segment in progress and the next");
    assert!(
        mpd.contains(" availabilityTimeOffset=\"0.800\" availabilityTimeComplete=\"false\""),
        "{mpd}"
    );
    assert!(mpd.contains(
        "<ServiceDescription id=\"0\">\n    <Latency referenceId=\"0\" target=\"702\" \
         min=\"468\" max=\"2106\"/>\n    <PlaybackRate min=\"0.96\" max=\"1.04\"/>"
    ));
    assert!(mpd.contains("<UTCTiming"));

    // The next one, asked for before it starts: held until it starts, then
    // streamed as the segment in progress.
    let addr = server.http_addr;
    let ahead = tokio::spawn(async move {
        let asked = Instant::now();
        let got = common::raw_get(addr, &format!("/live/ld/seg-{}.m4s", open + 1), &[]).await;
        (got, asked.elapsed())
    });
    // Further ahead: not listed, not held.
    let (status, _, _) = get(&format!("{base}/seg-{}.m4s", open + 5)).await;
    assert_eq!(status, 404);
    // The segment in progress: chunked, streamed as its parts close.
    let asked = Instant::now();
    let (status, headers, raw) =
        common::raw_get(server.http_addr, &format!("/live/ld/seg-{open}.m4s"), &[]).await;
    let took = asked.elapsed();
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"));
    let body = common::dechunk(&raw);
    assert_eq!(&body[4..8], b"styp");
    let moofs = body.windows(4).filter(|w| w == b"moof").count();
    assert_eq!(moofs, 5, "five 200 ms parts");
    // Its first part was out when asked: the rest came as they closed.
    assert!(took >= Duration::from_millis(300), "{took:?}");
    // Complete now: the same bytes as the segment.
    let (status, _, whole) = get(&format!("{base}/seg-{open}.m4s")).await;
    assert_eq!(status, 200);
    assert_eq!(whole, body);
    let ((status, headers, raw), took_ahead) = ahead.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"));
    let body = common::dechunk(&raw);
    assert_eq!(body.windows(4).filter(|w| w == b"moof").count(), 5);
    // It ended with its segment, a whole segment after the one before.
    assert!(
        took_ahead >= took + Duration::from_millis(700),
        "{took_ahead:?} {took:?}"
    );
    let (status, _, whole) = get(&format!("{base}/seg-{}.m4s", open + 1)).await;
    assert_eq!(status, 200);
    assert_eq!(whole, body);

    // Every MPD version a player sees is a legal successor of the one
    // before (the segment in progress may only get its real duration).
    let mut history = History::default();
    for _ in 0..15 {
        let (_, _, m) = playlist(&format!("{base}/manifest.mpd")).await;
        history.record_dash_ll(&m, "live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    let (_, _, m) = playlist(&format!("{base}/manifest.mpd")).await;
    history.record_dash_ll(&m, "ended");
    assert!(m.contains("type=\"static\""));
    server.shutdown().await;
}

/// A load measurement (BENCH.md): 1,000 blocking playlist requests held
/// at once on one session (HTTP/1.1, one connection each, the clients in
/// this process and runtime), what they cost in memory and how long after
/// the part they wait for they are all answered. The goal is under
/// 10 MB and within 50 ms; the asserts here are only that every request is
/// held and answered. Needs 1,000+ file descriptors:
/// `cargo test -p liveslice-server --test ll_hls -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load measurement; run with --ignored"]
async fn a_thousand_held_requests() {
    const N: usize = 1000;
    let server = start(ll_config()).await;
    let url = format!("http://{}/live/k/index.m3u8", server.http_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_live(&server, "k", stop.clone(), true);
    wait_segments(&url, 2).await;
    // Right after a part lands, ask for the one after the next (~400 ms on).
    let (_, _, text) = playlist(&url).await;
    let h = parse_hls(&text);
    let k = h.parts.get(&h.open_segment()).map_or(0, Vec::len) + 1;
    let (msn, part) = (h.open_segment() + k as u64 / 5, k % 5);
    let path = format!("/live/k/index.m3u8?_HLS_msn={msn}&_HLS_part={part}");
    let rss_before = rss_kib();
    let addr = server.http_addr;
    let asked = Instant::now();
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move {
                let (status, _, body) = common::raw_get(addr, &path, &[]).await;
                (status, asked.elapsed(), body.len())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let rss_held = rss_kib();
    let mut answers = Vec::with_capacity(N);
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(answers.iter().all(|a| a.0 == 200 && a.2 > 0));
    let first = answers.iter().map(|a| a.1).min().unwrap();
    let last = answers.iter().map(|a| a.1).max().unwrap();
    let spread = last - first;
    let grown_kib = rss_held.saturating_sub(rss_before);
    println!(
        "{N} held requests: RSS +{grown_kib} KiB while held (server and clients, one process); \
         answered {first:?}..{last:?} after asking: spread {spread:?}"
    );
    assert!(first >= Duration::from_millis(100), "held: {first:?}");
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    server.shutdown().await;
}

/// This process's resident set, KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A publisher whose connection breaks mid-segment and that comes back
/// 1.5 s later: while it is away the MPD predicts nothing (the segment in
/// progress and the next would not be where it said), the LL-HLS playlist
/// lists no discontinuity before the old publisher's segment in progress,
/// and a request held for the predicted next segment is refused (`404`,
/// saying why) when that segment turns out to open a new period. After
/// the reconnect there is one discontinuity, and DASH and the program
/// date times agree about the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_vanishes_stops_the_predictions() {
    let mut config = ll_config();
    config.session.publisher_grace = Duration::from_secs(30);
    let server = start(config).await;
    let base = format!("http://{}/live/gone", server.http_addr);
    let proxy = common::CutProxy::start(server.grpc_addr).await;
    let stop = Arc::new(AtomicBool::new(false));
    let first = publish_file_live_to(proxy.addr, "gone", "baseline_30.h264", stop.clone(), false);
    wait_segments(&format!("{base}/index.m3u8"), 2).await;
    // An MPD that predicts the segment in progress and the next, early in
    // the segment in progress (at most two of its five parts out).
    let open = wait_predicting_early(&base).await;
    let addr = server.http_addr;
    let ahead = tokio::spawn(async move {
        common::raw_get(addr, &format!("/live/gone/seg-{}.m4s", open + 1), &[]).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.cut();
    first.abort();
    // Away: nothing predicted, and no discontinuity before the segment in
    // progress (the old publisher's).
    assert!(
        wait_predicting_nothing(&base).await,
        "the MPD stops predicting while the publisher is away"
    );
    let (_, _, m3u8) = playlist(&format!("{base}/index.m3u8")).await;
    assert!(!m3u8.contains("#EXT-X-DISCONTINUITY\n"), "{m3u8}");
    let (stop2, second) =
        reconnect_and_expect_new_period(server.grpc_addr, "gone", &base, open + 1, ahead).await;
    wait_segments(&format!("{base}/index.m3u8"), open as usize + 3).await;
    stop2.store(true, Ordering::Relaxed);
    second.await.unwrap();
    let (_, _, m3u8) = playlist(&format!("{base}/index.m3u8")).await;
    let h = parse_hls(&m3u8);
    let at = h
        .segments
        .iter()
        .position(|s| s.4)
        .expect("the discontinuity");
    assert_eq!(h.segments.iter().filter(|s| s.4).count(), 1, "{m3u8}");
    assert_eq!(h.segments[at].0, open + 1, "{m3u8}");
    let (_, _, mpd) = playlist(&format!("{base}/manifest.mpd")).await;
    let (hls_ms, dash_ms) = common::history::gap_across_discontinuity_ms(&m3u8, &mpd);
    assert!(
        (hls_ms - dash_ms).abs() <= 3,
        "HLS {hls_ms} DASH {dash_ms}\n{m3u8}\n{mpd}"
    );
    assert!(hls_ms >= 1_500, "the outage is a gap: {hls_ms} ms\n{m3u8}");
    server.shutdown().await;
}

/// The DASH segment in progress whose publisher stops sending (its stream
/// stays open): after three target durations without a part the chunked
/// response is aborted — no last chunk — so no client takes the parts it
/// got for the whole segment (it was ended cleanly, a short `200`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_in_progress_that_stops_growing_is_aborted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = ll_config();
    config.session.publisher_grace = Duration::from_secs(30);
    let server = start(config).await;
    let base = format!("http://{}/live/stall", server.http_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let _publisher = publish_live(&server, "stall", stop.clone(), false);
    wait_segments(&format!("{base}/index.m3u8"), 2).await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, m3u8) = playlist(&format!("{base}/index.m3u8")).await;
    let open = parse_hls(&m3u8).open_segment();
    let mut s = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    let req =
        format!("GET /live/stall/seg-{open}.m4s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let asked = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Until the server closes (a reset counts as closed).
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let waited = asked.elapsed();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.contains("styp"), "the parts it had were sent");
    assert!(!raw.ends_with(b"0\r\n\r\n"), "aborted, not ended: {text}");
    // Three target durations (3 s each) without a part.
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    server.shutdown().await;
}

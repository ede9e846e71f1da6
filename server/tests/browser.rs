//! The built-in player pages play a live session in a real browser: headless
//! Chromium (Debian's `chromium`) driven by `browser/check-player.mjs`
//! (playwright-core) opens `/player/demo?mode=hls`, `?mode=dash` and
//! `?mode=native` of an in-process server with the demo publisher and must
//! see playback advance (currentTime > 3 s, decoded frames > 0) with no
//! player error. Screenshots go to `$LIVESLICE_SCREENSHOT_DIR` (default
//! `target/tmp/browser-screenshots`).
//!
//! The web console too (`browser/check-console.mjs`): the session list's
//! numbers move while the demo session is live, the player page draws its
//! plots and shows the manifests (in hls.js and dash.js mode, reading how far
//! behind live each sits), and an unknown session gets the 404 page.
//!
//! And real players through a cluster failover: hls.js and dash.js play a
//! session from an edge while its origin process is killed and the
//! publisher fails over to a second origin (needs `nats-server` too).
//!
//! Needs `apt-get install -y chromium` and `npm ci --prefix browser`; fails
//! without them (skips with `LIVESLICE_ALLOW_SKIP=1`). The two tests take
//! turns (one Chromium at a time).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{start, test_config};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser check (the modes run side by side, 30 s each at most).
const LIMIT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What is missing for the browser test, if anything.
fn missing_prerequisites(browser_dir: &Path) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push("Chromium (apt-get install -y --no-install-recommends chromium)");
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        missing.push("Node.js 20 or later (node)");
    }
    if !browser_dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push("playwright-core (npm ci --prefix browser)");
    }
    missing
}

/// One browser test at a time: two Chromiums playing side by side on a
/// small machine would make each other late.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether the browser tests' tools are there (a missing one fails the
/// test, or is a reported skip with `LIVESLICE_ALLOW_SKIP=1`).
fn browser_ready(browser_dir: &Path) -> bool {
    let missing = missing_prerequisites(browser_dir);
    common::require_tool(
        "the browser test",
        &missing.join(", "),
        missing.is_empty(),
        "the commands in parentheses (.ci/run runs them)",
    )
}

/// Reads a child's pipe to the end on a thread.
fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Runs `node browser/SCRIPT BASE demo SHOTS` against a fresh server with
/// the demo publisher: (exit status or None on timeout, JSON result lines,
/// all output).
async fn run_script(
    script: &str,
) -> Option<(Option<std::process::ExitStatus>, Vec<String>, String)> {
    let root = repo_root();
    let browser_dir = root.join("browser");
    if !browser_ready(&browser_dir) {
        return None;
    }
    let _turn = ONE_AT_A_TIME.lock().await;

    let mut config = test_config();
    config.server.demo = Some("demo".into());
    let server = start(config).await;
    let base = format!("http://{}", server.http_addr);
    let shots = std::env::var_os("LIVESLICE_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots"));

    let path = browser_dir.join(script);
    let run = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut node = Command::new("node");
        // The demo session has sound: hls.js, dash.js and Chromium's own
        // HLS player (master.m3u8) must decode it.
        node.env("LIVESLICE_AUDIO_MODES", "hls,dash,native")
            .arg(&path)
            .arg(&base)
            .arg("demo")
            .arg(&shots)
            .current_dir(&root);
        let (status, out, err) = run_node(node, LIMIT);
        (status, out, err, started.elapsed())
    });
    let (status, stdout, stderr, took) = run.await.expect("browser script task");
    server.shutdown().await;

    println!("{script} ({took:.1?}):\n{stdout}");
    if !stderr.is_empty() {
        println!("{script} stderr:\n{stderr}");
    }
    let lines = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_string)
        .collect();
    Some((status, lines, stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_pages_play_in_chromium() {
    let Some((status, lines, _)) = run_script("check-player.mjs").await else {
        return;
    };
    let status = status.unwrap_or_else(|| panic!("check-player did not finish within {LIMIT:?}"));
    for mode in ["hls", "dash", "native"] {
        let tag = format!("\"mode\":\"{mode}\"");
        let line = lines
            .iter()
            .find(|l| l.contains(&tag))
            .unwrap_or_else(|| panic!("no result for mode {mode}"));
        assert!(line.contains("\"ok\":true"), "{mode} did not play: {line}");
    }
    assert!(status.success(), "check-player failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_console_in_chromium() {
    let Some((status, lines, _)) = run_script("check-console.mjs").await else {
        return;
    };
    let status = status.unwrap_or_else(|| panic!("check-console did not finish within {LIMIT:?}"));
    for check in ["console", "plots-hls", "plots-dash", "not-found"] {
        let line = lines
            .iter()
            .find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["check"] == check).then_some(v)
            })
            .unwrap_or_else(|| panic!("no result for {check}"));
        assert_eq!(line["ok"], true, "{check}: {line}");
        if check == "console" {
            let (a, b) = (&line["first"]["frames"], &line["second"]["frames"]);
            assert!(
                b.as_u64() > a.as_u64(),
                "the console's frame count did not move: {a} then {b}"
            );
        }
        if check.starts_with("plots-") {
            println!(
                "{check}: {}s behind live (player's latency), {}s behind the seekable end",
                line["latencyS"], line["behindEdgeS"]
            );
        }
    }
    assert!(status.success(), "check-console failed: {status}");
}

/// Runs `node browser/check-latency.mjs BASE SESSION SECONDS` with
/// `LIVESLICE_LATENCY_MODES=modes`, killed after `limit`: (exit status or
/// None on timeout, stdout, stderr).
fn check_latency(
    root: &Path,
    base: &str,
    session: &str,
    seconds: u64,
    modes: &str,
    limit: Duration,
) -> (Option<std::process::ExitStatus>, String, String) {
    let mut node = Command::new("node");
    node.arg(root.join("browser/check-latency.mjs"))
        .arg(base)
        .arg(session)
        .arg(seconds.to_string())
        .env("LIVESLICE_LATENCY_MODES", modes)
        .current_dir(root);
    run_node(node, limit)
}

/// Runs a node script, killed after `limit`: (exit status or None on
/// timeout, stdout, stderr).
fn run_node(
    mut node: Command,
    limit: Duration,
) -> (Option<std::process::ExitStatus>, String, String) {
    let mut child = node
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Low latency in real players: a session published in real time with
/// capture times (1 s GOP, 1 s segments, 200 ms parts), played side by side
/// by hls.js with `lowLatencyMode` and without it (the same URL) and by
/// dash.js (which must switch to its low-latency mode from the MPD by
/// itself), each reporting its live latency (wall clock minus
/// `hls.playingDate`; dash.js `getCurrentLiveLatency()`) over
/// `LIVESLICE_LATENCY_SECONDS` (default 30) of playback
/// (`browser/check-latency.mjs`). Both low-latency players must sit under 2.5 s
/// (loose for CI noise; BENCH.md has the figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_latency_players_in_chromium() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let root = repo_root();
    let browser_dir = root.join("browser");
    if !browser_ready(&browser_dir) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let seconds: u64 = std::env::var("LIVESLICE_LATENCY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut config = test_config();
    config.engine.segment_duration = Duration::from_secs(1);
    config.engine.part_duration = Duration::from_millis(200);
    let server = start(config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = common::live::publish_live(&server, "ll", stop.clone(), true);
    let base = format!("http://{}", server.http_addr);
    // Players open a stream that is live: a playlist that lists a segment
    // (hls.js gives up on a playlist that is not there yet).
    let mut live = false;
    for _ in 0..100 {
        let (status, _, body) = common::get(&format!("{base}/live/ll/index.m3u8")).await;
        if status == 200 && String::from_utf8_lossy(&body).contains("#EXTINF") {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(live, "the session lists no segment after 10 s");
    let limit = Duration::from_secs(seconds + 60);
    let modes =
        std::env::var("LIVESLICE_LATENCY_MODES").unwrap_or_else(|_| "hls-ll,hls,dash-ll".into());
    let run = tokio::task::spawn_blocking(move || {
        check_latency(&root, &base, "ll", seconds, &modes, limit)
    });
    let (status, stdout, stderr) = run.await.expect("browser script task");
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.await;
    server.shutdown().await;
    println!("check-latency:\n{stdout}");
    if !stderr.is_empty() {
        println!("check-latency stderr:\n{stderr}");
    }
    let result = |mode: &str| -> serde_json::Value {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["mode"] == mode)
            .unwrap_or_else(|| panic!("no result for {mode}"))
    };
    let ll = result("hls-ll");
    let plain = result("hls");
    let dash = result("dash-ll");
    assert_eq!(ll["ok"], true, "hls.js low-latency: {ll}");
    assert_eq!(plain["ok"], true, "hls.js: {plain}");
    assert_eq!(dash["ok"], true, "dash.js low-latency: {dash}");
    assert_eq!(
        dash["lowLatencyMode"], true,
        "dash.js switched to its low-latency mode by itself: {dash}"
    );
    let p50_dash = dash["p50"].as_f64().unwrap_or(f64::MAX);
    let (p50_ll, p50) = (
        ll["p50"].as_f64().unwrap_or(f64::MAX),
        plain["p50"].as_f64().unwrap_or(f64::MAX),
    );
    println!(
        "live latency p50 over {seconds} s: hls.js low-latency {p50_ll:.3} s, \
         hls.js regular {p50:.3} s (ratio {:.2}), dash.js low-latency {p50_dash:.3} s",
        p50_ll / p50
    );
    assert!(
        p50_ll < 2.5,
        "low-latency hls.js sits {p50_ll} s behind live"
    );
    assert!(
        p50_dash < 2.5,
        "low-latency dash.js sits {p50_dash} s behind live"
    );
    let status = status.unwrap_or_else(|| panic!("check-latency did not finish within {limit:?}"));
    assert!(status.success(), "check-latency failed: {status}");
}

/// Real players through a publisher failover: hls.js (low-latency) and
/// dash.js play a session from a cluster edge, and hls.js from a second
/// edge, while the session's origin (a process of its own) is killed with
/// SIGKILL and the publisher fails over to a second origin, which
/// continues the session after one discontinuity. Every player keeps
/// playing across it: no fatal error, and never more than 8 s behind live
/// (a player that stopped at the failover would fall 20 s behind by the
/// end); both edges end with the same playlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_on_an_edge_play_through_an_origin_failover() {
    use common::failover::{live_stream, origin_process, publish_with_failover};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let root = repo_root();
    if !browser_ready(&root.join("browser")) {
        return;
    }
    let Some(nats) = common::nats::Nats::start("the browser failover test") else {
        return;
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    // The whole session stays listed (the playlist is checked at the end).
    let ll = [
        "--segment-duration",
        "1s",
        "--part-duration",
        "200ms",
        "--window",
        "60",
    ];
    let (mut a, a_grpc, _) = origin_process(&nats, "browser-origin-a", &ll);
    let cluster = |node: &str| {
        let mut c = test_config();
        c.cluster.cluster = Some(nats.url());
        c.cluster.node_id = Some(node.into());
        c.engine.segment_duration = Duration::from_secs(1);
        c.engine.part_duration = Duration::from_millis(200);
        c.engine.window = 60;
        c
    };
    let b = start(cluster("browser-origin-b")).await;
    let edge_of = |node: &str| {
        let mut c = cluster(node);
        c.cluster.role = liveslice_server::cluster::Role::Edge;
        c
    };
    let edge = start(edge_of("browser-edge")).await;
    let edge2 = start(edge_of("browser-edge-2")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_with_failover(
        vec![a_grpc, b.grpc_addr],
        "fo",
        live_stream(false),
        stop.clone(),
    );
    let base = format!("http://{}", edge.http_addr);
    let url = format!("{base}/live/fo/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !common::http::get(&url)
        .await
        .2
        .windows(7)
        .any(|w| w == b"#EXTINF")
    {
        assert!(Instant::now() < deadline, "the edge never listed a segment");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // hls.js and dash.js on the first edge, hls.js on the second too.
    let base2 = format!("http://{}", edge2.http_addr);
    let modes = format!("hls-ll,dash-ll,hls-ll@{base2}");
    let seconds = 25;
    let limit = Duration::from_secs(seconds + 60);
    let run = tokio::task::spawn_blocking({
        let base = base.clone();
        move || check_latency(&root, &base, "fo", seconds, &modes, limit)
    });
    // The players start (a few seconds), play, and then the origin dies.
    tokio::time::sleep(Duration::from_secs(12)).await;
    a.kill().expect("SIGKILL");
    let _ = a.wait();
    let (status, stdout, stderr) = run.await.expect("browser script task");
    stop.store(true, Ordering::Relaxed);
    let failovers = publisher.await.expect("publisher");
    let (_, _, playlist) = common::http::get(&url).await;
    let (_, _, playlist2) = common::http::get(&format!("{base2}/live/fo/index.m3u8")).await;
    edge.shutdown().await;
    edge2.shutdown().await;
    b.shutdown().await;
    println!("check-latency:\n{stdout}");
    if !stderr.is_empty() {
        println!("check-latency stderr:\n{stderr}");
    }
    assert_eq!(failovers.count, 1, "the publisher failed over once");
    let playlist = String::from_utf8_lossy(&playlist);
    assert_eq!(
        playlist.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "{playlist}"
    );
    // The second edge lists the same (the session ended on both by now).
    assert_eq!(String::from_utf8_lossy(&playlist2), playlist);
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for (mode, on) in [
        ("hls-ll", None),
        ("dash-ll", None),
        ("hls-ll", Some(base2.as_str())),
    ] {
        let r = results
            .iter()
            .find(|v| v["mode"] == mode && v["base"].as_str() == on)
            .unwrap_or_else(|| panic!("no result for {mode} on {on:?}"));
        assert_eq!(r["ok"], true, "{mode}: {r}");
        let max = r["max"].as_f64().unwrap_or(f64::MAX);
        assert!(max < 8.0, "{mode} fell {max} s behind live: {r}");
    }
    let status = status.unwrap_or_else(|| panic!("check-latency did not finish within {limit:?}"));
    assert!(status.success(), "check-latency failed: {status}");
}

/// Renditions in real players: three renditions of one source (640x360,
/// 480x270, 320x180, keyframes aligned) published live, played by hls.js
/// from `master.m3u8` and by dash.js from `manifest.mpd`; each player is
/// told to switch to the lowest, the highest, then the middle rendition
/// (`hls.currentLevel`, dash.js `setRepresentationForTypeByIndex` with
/// automatic switching off), reports each switch, shows frames of that
/// rendition's size and keeps playing (`browser/check-renditions.mjs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_switch_renditions_in_chromium() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let root = repo_root();
    if !browser_ready(&root.join("browser")) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = start(test_config()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = common::live::publish_renditions_live(
        &server,
        "abr",
        &[
            ("360p", "rendition_360p"),
            ("270p", "rendition_270p"),
            ("180p", "rendition_180p"),
        ],
        stop.clone(),
    );
    let base = format!("http://{}", server.http_addr);
    // Until the multivariant playlist lists all three, with two segments.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, master) = common::http::get(&format!("{base}/live/abr/master.m3u8")).await;
        let (_, _, low) = common::http::get(&format!("{base}/live/abr~180p/index.m3u8")).await;
        let listed = String::from_utf8_lossy(&master)
            .matches("#EXT-X-STREAM-INF")
            .count();
        let segments = String::from_utf8_lossy(&low).matches("#EXTINF").count();
        if listed == 3 && segments >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "renditions never listed: {}",
            String::from_utf8_lossy(&master)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let limit = Duration::from_secs(150);
    let run = tokio::task::spawn_blocking({
        let (root, base) = (root.clone(), base.clone());
        move || {
            let mut node = Command::new("node");
            node.arg(root.join("browser/check-renditions.mjs"))
                .arg(&base)
                .arg("abr")
                .current_dir(&root);
            run_node(node, limit)
        }
    });
    let (status, stdout, stderr) = run.await.expect("browser script task");
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");
    server.shutdown().await;
    println!("check-renditions:\n{stdout}");
    if !stderr.is_empty() {
        println!("check-renditions stderr:\n{stderr}");
    }
    for mode in ["hls", "dash"] {
        let r = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["mode"] == mode)
            .unwrap_or_else(|| panic!("no result for {mode}: {stdout}"));
        assert_eq!(r["ok"], true, "{mode}: {r}");
        assert_eq!(
            r["renditions"].as_array().map(Vec::len),
            Some(3),
            "{mode}: {r}"
        );
        assert_eq!(
            r["switches"].as_array().map(Vec::len),
            Some(3),
            "{mode}: {r}"
        );
    }
    let status =
        status.unwrap_or_else(|| panic!("check-renditions did not finish within {limit:?}"));
    assert!(status.success(), "check-renditions failed: {status}");
}

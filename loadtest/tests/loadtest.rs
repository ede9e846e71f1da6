//! Runs the built `liveslice-loadtest` against a real server started in
//! this process on 127.0.0.1:0, and checks its JSON report.

use std::time::{Duration, Instant};

use liveslice_server::app::{self, Running};
use liveslice_server::config::Config;
use serde_json::Value;

async fn server() -> Running {
    let mut config = Config::default();
    config.server.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.server.http_addr = "127.0.0.1:0".parse().unwrap();
    app::start(&config).await.expect("server starts")
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

async fn loadtest(args: &[&str], limit: Duration) -> Run {
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_liveslice-loadtest"))
        .args(args)
        .env_remove("LIVESLICE_SERVER")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(limit, child)
        .await
        .unwrap_or_else(|_| panic!("liveslice-loadtest {args:?} did not finish within {limit:?}"))
        .expect("run liveslice-loadtest");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

fn json(run: &Run) -> Value {
    assert_eq!(
        run.code,
        Some(0),
        "stderr: {}\nstdout: {}",
        run.stderr,
        run.stdout
    );
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", run.stdout, run.stderr))
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} is not a count in {v:#}"))
}

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_subscribers_get_every_frame_in_real_time() {
    let s = server().await;
    let url = format!("http://{}", s.grpc_addr);
    let pid = std::process::id().to_string();
    let (sessions, subs, secs) = (4u64, 2u64, 3u64);
    let run = loadtest(
        &[
            "--server",
            &url,
            "--sessions",
            "4",
            "--subscribers",
            "2",
            "--duration",
            "3s",
            "--json",
            "--server-pid",
            &pid,
        ],
        Duration::from_secs(60),
    )
    .await;
    let v = json(&run);
    // Frames published at about 30 fps for the duration...
    let sent = u(&v, "/in/frames");
    let about = sessions * 30 * secs;
    assert!(
        (about * 85 / 100..=about * 110 / 100).contains(&sent),
        "sent {sent} frames, expected about {about}: {v:#}"
    );
    assert_eq!(u(&v, "/server_frames_accepted"), sent, "{v:#}");
    // ...and every one of them reached every subscriber of its session,
    // exactly: subscribers join before the first frame, the publishers end
    // their sessions cleanly, nothing lags or drops.
    let got = u(&v, "/out/frames");
    assert_eq!(
        got,
        sent * subs,
        "frames out = frames in x subscribers: {v:#}"
    );
    assert_eq!(u(&v, "/errors"), 0, "{v:#}");
    assert_eq!(u(&v, "/connect_failures"), 0);
    assert_eq!(u(&v, "/sessions_opened"), sessions);
    assert_eq!(u(&v, "/status_codes/OK"), sessions * (1 + subs), "{v:#}");
    assert_eq!(v["drops"]["any"], Value::Bool(false), "{v:#}");
    assert_eq!(u(&v, "/unfinished_streams"), 0);
    let p50 = f(&v, "/latency/percentiles_ms/p50");
    assert!(p50 > 0.0 && p50 < 1000.0, "p50 {p50} ms");
    assert_eq!(u(&v, "/latency/count"), got, "one sample per frame");
    assert_eq!(u(&v, "/subscriber_frames/count"), sessions * subs);
    assert_eq!(u(&v, "/subscriber_frames/with_frames"), sessions * subs);
    assert!(u(&v, "/subscriber_frames/min") as f64 > 0.8 * 30.0 * secs as f64);
    // This process is the server: its memory was sampled.
    assert!(u(&v, "/server_rss/start_kib") > 0);
    assert!(u(&v, "/server_rss/peak_kib") >= u(&v, "/server_rss/start_kib"));
    s.shutdown().await;
}

/// `--warmup`: sessions publish before the measurement; the latency and
/// CPU per frame cover only the measured `--duration`, the counts the
/// whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_is_left_out_of_the_latency_and_cpu_figures() {
    let s = server().await;
    let url = format!("http://{}", s.grpc_addr);
    let pid = std::process::id().to_string();
    let run = loadtest(
        &[
            "--server",
            &url,
            "--sessions",
            "2",
            "--warmup",
            "3s",
            "--duration",
            "1s",
            "--json",
            "--server-pid",
            &pid,
        ],
        Duration::from_secs(60),
    )
    .await;
    let v = json(&run);
    assert_eq!(f(&v, "/config/warmup_s"), 3.0, "{v:#}");
    let out = u(&v, "/out/frames");
    // 2 sessions × 30 fps × 4 s in all, of which 1 s measured.
    assert!((200..=270).contains(&out), "{out} frames out in all: {v:#}");
    let measured = u(&v, "/cpu/frames_received");
    assert!(
        (40..=80).contains(&measured),
        "{measured} frames measured of {out}: {v:#}"
    );
    // Latency samples: the measured second and the drain after it, none
    // of the warm-up.
    let samples = u(&v, "/latency/count");
    assert!(
        samples >= measured && samples < out / 2,
        "{samples} latency samples, {measured} measured, {out} out: {v:#}"
    );
    assert_eq!(u(&v, "/errors"), 0, "{v:#}");
    // A run is bounded, warm-up included: refused before anything starts.
    let run = loadtest(
        &["--server", &url, "--warmup", "9m", "--duration", "2m"],
        Duration::from_secs(10),
    )
    .await;
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("--warmup and --duration together must be at most 10m"),
        "{}",
        run.stderr
    );

    // A ramp warms each step up before measuring it: a step's frames are
    // its measured second's, the run takes every step's warm-up too.
    let run = loadtest(
        &[
            "--server",
            &url,
            "--ramp",
            "--sessions",
            "2",
            "--step",
            "2",
            "--max-sessions",
            "4",
            "--warmup",
            "2s",
            "--step-duration",
            "1s",
            "--max-p99",
            "20s",
            "--json",
        ],
        Duration::from_secs(60),
    )
    .await;
    let v = json(&run);
    let steps = v["ramp"]["steps"].as_array().expect("ramp steps");
    assert_eq!(steps.len(), 2, "{v:#}");
    for step in steps {
        let n = u(step, "/sessions");
        let frames = u(step, "/out/frames");
        // n sessions × 30 fps × the measured 1 s, not the 3 s published.
        assert!(
            (n * 20..=n * 45).contains(&frames),
            "{frames} frames in a step of {n} sessions: {step:#}"
        );
    }
    assert!(run.took >= Duration::from_secs(6), "took {:?}", run.took);
    // The ramp's bound counts the warm-ups.
    let run = loadtest(
        &[
            "--server",
            &url,
            "--ramp",
            "--sessions",
            "1",
            "--step",
            "1",
            "--max-sessions",
            "20",
            "--warmup",
            "40s",
            "--step-duration",
            "5s",
        ],
        Duration::from_secs(10),
    )
    .await;
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stderr.contains("the ramp could take 20 steps x 45s"),
        "{}",
        run.stderr
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_steps_up_and_reports_the_largest_count_that_held() {
    let s = server().await;
    let url = format!("http://{}", s.grpc_addr);
    let run = loadtest(
        &[
            "--server",
            &url,
            "--ramp",
            "--sessions",
            "2",
            "--step",
            "2",
            "--step-duration",
            "1s",
            "--max-sessions",
            "6",
            // A bound loose enough that a loaded test machine holds it:
            // this checks the ramp, not the server's speed.
            "--max-p99",
            "20s",
            "--json",
        ],
        Duration::from_secs(60),
    )
    .await;
    let v = json(&run);
    let steps = v["ramp"]["steps"].as_array().expect("ramp steps");
    // The load rises across steps: at least two, each with more sessions
    // than the one before, each having opened exactly the added sessions,
    // and frames flowing through each.
    assert!((2..=3).contains(&steps.len()), "{v:#}");
    let sessions: Vec<u64> = steps.iter().map(|s| u(s, "/sessions")).collect();
    assert_eq!(sessions, [2, 4, 6][..steps.len()].to_vec());
    assert!(sessions.windows(2).all(|w| w[1] > w[0]), "{sessions:?}");
    let mut before = 0;
    for (step, &n) in steps.iter().zip(&sessions) {
        assert_eq!(u(step, "/sessions_opened"), n - before, "{step:#}");
        assert!(u(step, "/out/frames") > 0, "{step:#}");
        before = n;
    }
    let held: Vec<bool> = steps
        .iter()
        .map(|s| s["held"] == Value::Bool(true))
        .collect();
    // Steps hold until one does not, and the answer is the last that held.
    let last_held = held.iter().rposition(|h| *h);
    assert!(held.iter().take_while(|h| **h).count() >= last_held.map_or(0, |i| i + 1));
    match last_held {
        Some(i) => assert_eq!(u(&v, "/ramp/largest_sessions_held"), sessions[i], "{v:#}"),
        None => assert!(v["ramp"]["largest_sessions_held"].is_null()),
    }
    if held.iter().all(|h| *h) {
        assert_eq!(steps.len(), 3, "stops at --max-sessions");
        let best = &v["ramp"]["best_step"];
        assert!(u(best, "/out/frames") > 6 * 20, "{best:#}");
    }
    assert!(run.took < Duration::from_secs(30), "took {:?}", run.took);

    // A bound nothing can meet: the first step fails and nothing held.
    let run = loadtest(
        &[
            "--server",
            &url,
            "--ramp",
            "--sessions",
            "1",
            "--step",
            "1",
            "--step-duration",
            "1s",
            "--max-sessions",
            "3",
            "--max-p99",
            "0.001ms",
            "--json",
        ],
        Duration::from_secs(60),
    )
    .await;
    let v = json(&run);
    assert_eq!(
        v["ramp"]["steps"].as_array().map(Vec::len),
        Some(1),
        "{v:#}"
    );
    assert!(v["ramp"]["largest_sessions_held"].is_null());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_out_and_idle_sessions() {
    let s = server().await;
    let url = format!("http://{}", s.grpc_addr);
    let run = loadtest(
        &[
            "--server",
            &url,
            "--rate",
            "max",
            "--sessions",
            "1",
            "--subscribers",
            "1",
            "--duration",
            "1s",
            "--json",
        ],
        Duration::from_secs(60),
    )
    .await;
    let v = json(&run);
    // Faster than real time (30 fps), and the server took all of it.
    assert!(u(&v, "/in/frames") > 60, "{v:#}");
    assert_eq!(u(&v, "/server_frames_accepted"), u(&v, "/in/frames"));
    assert_eq!(u(&v, "/errors"), 0, "{v:#}");

    let http = format!("http://{}", s.http_addr);
    let pid = std::process::id().to_string();
    let run = loadtest(
        &[
            "--server",
            &url,
            "--idle",
            "--sessions",
            "3",
            "--subscribers",
            "0",
            "--duration",
            "1s",
            "--json",
            "--server-pid",
            &pid,
            "--http",
            &http,
        ],
        Duration::from_secs(60),
    )
    .await;
    let v = json(&run);
    assert_eq!(u(&v, "/sessions_opened"), 3);
    // One keyframe per session, then nothing.
    assert_eq!(u(&v, "/in/frames"), 3, "{v:#}");
    assert_eq!(u(&v, "/errors"), 0, "{v:#}");
    // Memory per idle session, and the media each holds (its keyframe).
    // This process is the server, so the figures are not asserted, only
    // that they are there.
    assert_eq!(u(&v, "/memory/sessions"), 3, "{v:#}");
    f(&v, "/memory/per_session_kib");
    assert!(f(&v, "/memory/media_per_session_kib") > 0.0, "{v:#}");
    s.shutdown().await;
}

#[tokio::test]
async fn non_loopback_servers_are_refused() {
    for server in [
        "http://192.0.2.1:50051",
        "http://[2001:db8::1]:50051",
        "http://example.com:50051",
        "http://0.0.0.0:50051",
    ] {
        let run = loadtest(
            &["--server", server, "--duration", "1s"],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(run.code, Some(2), "{server}: {}", run.stderr);
        assert!(run.stderr.contains("refusing"), "{server}: {}", run.stderr);
        assert!(run.stdout.is_empty());
        assert!(
            run.took < Duration::from_secs(5),
            "{server}: no connection attempt"
        );
    }
}

#[tokio::test]
async fn a_missing_server_is_reported() {
    // Nothing listens on this port (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = loadtest(
        &[
            "--server",
            &url,
            "--sessions",
            "2",
            "--duration",
            "10s",
            "--json",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).expect("a report all the same");
    assert_eq!(u(&v, "/connect_failures"), 2);
    assert!(
        run.took < Duration::from_secs(8),
        "does not wait out --duration"
    );
}

/// The fan-out mode at small scale: one session, 50 subscribers as streams
/// on 2 shared HTTP/2 connections. Every subscriber gets every frame,
/// nothing lags, and the report has the per-subscriber memory figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_over_shared_connections_reaches_every_subscriber() {
    let s = server().await;
    let url = format!("http://{}", s.grpc_addr);
    let http = format!("http://{}", s.http_addr);
    let pid = std::process::id().to_string();
    let subs = 50u64;
    let run = loadtest(
        &[
            "--server",
            &url,
            "--http",
            &http,
            "--sessions",
            "1",
            "--subscribers",
            "50",
            "--connections",
            "2",
            "--duration",
            "3s",
            "--json",
            "--server-pid",
            &pid,
        ],
        Duration::from_secs(60),
    )
    .await;
    let v = json(&run);
    assert_eq!(u(&v, "/errors"), 0, "{v:#}");
    assert_eq!(u(&v, "/connect_failures"), 0, "{v:#}");
    assert_eq!(u(&v, "/status_codes/OK"), 1 + subs, "{v:#}");
    assert_eq!(u(&v, "/fanout/subscribers"), subs, "{v:#}");
    assert_eq!(u(&v, "/fanout/connections"), 2, "{v:#}");
    // Every subscriber received frames, every frame the server accepted.
    assert_eq!(u(&v, "/subscriber_frames/with_frames"), subs, "{v:#}");
    let sent = u(&v, "/in/frames");
    assert!(sent > 30, "{v:#}");
    assert_eq!(u(&v, "/server_frames_accepted"), sent, "{v:#}");
    assert_eq!(u(&v, "/subscriber_frames/min"), sent, "{v:#}");
    assert_eq!(u(&v, "/out/frames"), sent * subs, "{v:#}");
    assert_eq!(u(&v, "/fanout/frames_expected"), sent * subs, "{v:#}");
    assert_eq!(u(&v, "/fanout/frames_missing"), 0, "{v:#}");
    // Nothing lagged.
    assert_eq!(u(&v, "/fanout/lagged_events"), 0, "{v:#}");
    assert_eq!(u(&v, "/fanout/subscribers_lagged"), 0, "{v:#}");
    assert_eq!(v["drops"]["any"], Value::Bool(false), "{v:#}");
    assert_eq!(u(&v, "/latency/count"), sent * subs, "one sample per frame");
    f(&v, "/fanout/latency_ms/p99");
    // Memory: the server's RSS around the join, per subscriber; the media
    // the session held at the stop; the load generator's own CPU.
    assert_eq!(u(&v, "/memory/subscribers"), subs, "{v:#}");
    assert!(u(&v, "/server_rss/before_subscribers_kib") > 0, "{v:#}");
    assert!(u(&v, "/server_rss/joined_kib") > 0, "{v:#}");
    f(&v, "/memory/per_subscriber_joined_kib");
    f(&v, "/memory/per_subscriber_loaded_kib");
    assert!(u(&v, "/memory/media_loaded_bytes") > 0, "{v:#}");
    assert!(f(&v, "/cpu/load_generator_s") >= 0.0, "{v:#}");

    // The text report says the same in its fan-out and memory lines.
    let run = loadtest(
        &[
            "--server",
            &url,
            "--http",
            &http,
            "--sessions",
            "1",
            "--subscribers",
            "10",
            "--connections",
            "2",
            "--duration",
            "1s",
            "--server-pid",
            &pid,
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("Fan-out: 10 subscribers on 2 shared connections"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Lagged: 0 events in 0 subscribers"),
        "{}",
        run.stdout
    );
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("Per subscriber: "))
        .unwrap_or_else(|| panic!("no per-subscriber memory line: {}", run.stdout));
    assert!(line.contains("KiB of server RSS once joined"), "{line}");
    assert!(run.stdout.contains("CPU over "), "{}", run.stdout);
    s.shutdown().await;
}

/// A server with 1 s segments and 200 ms parts and a session `id`
/// published on it in process (the test pushes its frames): the server,
/// the publisher's grant, and `baseline_30`'s frames (6 s, a keyframe
/// every second).
async fn low_latency_session(
    id: &str,
) -> (
    Running,
    liveslice_server::session::registry::PublishGrant,
    Vec<std::sync::Arc<liveslice_server::engine::Frame>>,
) {
    use liveslice_server::session::SessionOptions;
    let mut config = Config::default();
    config.server.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.server.http_addr = "127.0.0.1:0".parse().unwrap();
    config.engine.segment_duration = Duration::from_secs(1);
    config.engine.part_duration = Duration::from_millis(200);
    let s = app::start(&config).await.expect("server starts");
    let mut pipeline = config.pipeline();
    pipeline.segment_target_ms = 1000;
    pipeline.part_target_ms = 200;
    let grant = s
        .registry
        .publish(
            id,
            SessionOptions {
                pipeline,
                echo_frames: false,
            },
        )
        .expect("publish");
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/baseline_30.h264"
    ))
    .expect("testdata");
    let frames = liveslice_server::engine::pipeline::frames_of(
        bytes::Bytes::from(data),
        liveslice_server::engine::PipelineOptions::default(),
    );
    (s, grant, frames)
}

/// `--held-playlists`: blocking playlist reloads held on a live session are
/// all answered with the segment they wait for once it lands, and the
/// report says so (and the server's memory, given its pid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_playlists_are_all_answered_when_the_segment_lands() {
    let (s, grant, frames) = low_latency_session("held").await;
    // baseline_30: 6 s, a keyframe every second. Push the first 2.5 s:
    // segments 0 and 1 complete, segment 2 in progress.
    let push = |range: std::ops::Range<usize>| {
        for f in &frames[range] {
            grant
                .session
                .push(grant.generation, f.data.clone(), None, true)
                .expect("push");
        }
    };
    push(0..75);
    // Over HTTP/1.1 (a connection each), then as streams on 4 HTTP/2
    // connections: segment 2, then segment 3, is waited for.
    for (msn, more, connections) in [(2, 75..100, "0"), (3, 100..130, "4")] {
        let http = format!("http://{}", s.http_addr);
        let pid = std::process::id().to_string();
        let run = tokio::spawn(async move {
            loadtest(
                &[
                    "--held-playlists",
                    "50",
                    "--held-session",
                    "held",
                    "--held-connections",
                    connections,
                    "--http",
                    &http,
                    "--server-pid",
                    &pid,
                ],
                Duration::from_secs(30),
            )
            .await
        });
        // Every request is held until the segment in progress completes
        // (the server holds one up to three target durations, 9 s here):
        // 3 s for the load generator to start and ask, on a loaded machine.
        tokio::time::sleep(Duration::from_secs(3)).await;
        push(more);
        let run = run.await.unwrap();
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains(&format!("(_HLS_msn={msn})"))
                && run.stdout.contains("answered with the segment: 50\n"),
            "{}",
            run.stdout
        );
        if connections != "0" {
            assert!(
                run.stdout.contains("4 HTTP/2 (h2c) connections"),
                "{}",
                run.stdout
            );
        }
        assert!(run.stdout.contains("server VmRSS:"), "{}", run.stdout);
        // Held, not answered at once: the first answer came after the push.
        let first_ms: f64 = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("first answer "))
            .and_then(|l| l.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{}", run.stdout));
        assert!(
            first_ms > 500.0,
            "answered before the segment landed: {}",
            run.stdout
        );
    }
    s.shutdown().await;
}

/// `--ll-viewers`: low-latency HLS players on a live session (a blocking
/// reload for each next part, then the part) get every part as it comes,
/// and the server's CPU per viewer is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_viewers_follow_the_live_parts() {
    let (s, grant, frames) = low_latency_session("viewed").await;
    // 30 frames a second, in real time (baseline_30 is 6 s: 8 s of it).
    let publisher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for f in frames.iter().chain(frames.iter()).take(240) {
            tick.tick().await;
            let _ = grant
                .session
                .push(grant.generation, f.data.clone(), None, true);
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let http = format!("http://{}", s.http_addr);
    let pid = std::process::id().to_string();
    let run = loadtest(
        &[
            "--ll-viewers",
            "20",
            "--held-session",
            "viewed",
            "--held-connections",
            "2",
            "--duration",
            "3s",
            "--http",
            &http,
            "--server-pid",
            &pid,
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let parts: u64 = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("parts fetched: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", run.stdout));
    // 3 s of 200 ms parts: about 15 each; allow for a loaded machine.
    assert!(parts >= 20 * 8, "{}", run.stdout);
    assert!(run.stdout.contains(", errors 0\n"), "{}", run.stdout);
    assert!(run.stdout.contains("per viewer"), "{}", run.stdout);
    publisher.abort();
    s.shutdown().await;
}

/// Established TCP connections whose local end is `port` (the server's
/// side), from /proc/net/tcp and /proc/net/tcp6.
fn server_connections(port: u16) -> usize {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| {
            t.lines()
                .skip(1)
                .filter(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "01"
                })
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_multiplexed_over_shared_connections_deliver_every_frame() {
    let s = server().await;
    let url = format!("http://{}", s.grpc_addr);
    let port = s.grpc_addr.port();
    let pid = std::process::id().to_string();
    let (sessions, secs) = (6u64, 3u64);
    let run = {
        let url = url.clone();
        tokio::spawn(async move {
            loadtest(
                &[
                    "--server",
                    &url,
                    "--sessions",
                    "6",
                    "--subscribers",
                    "1",
                    "--publisher-connections",
                    "2",
                    "--connections",
                    "2",
                    "--duration",
                    "3s",
                    "--json",
                    "--server-pid",
                    &pid,
                ],
                Duration::from_secs(60),
            )
            .await
        })
    };
    // While frames flow: 6 publishers and 6 subscribers on 2 + 2
    // connections, not 12.
    let mut seen = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = seen.max(server_connections(port));
        if seen >= 4 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    seen = seen.max(server_connections(port));
    assert_eq!(seen, 4, "connections to the server while the run was on");
    let v = json(&run.await.unwrap());
    assert_eq!(
        v["config"]["publisher_connections"],
        Value::from(2),
        "{v:#}"
    );
    assert_eq!(
        v["config"]["subscriber_connections"],
        Value::from(2),
        "{v:#}"
    );
    let sent = u(&v, "/in/frames");
    let about = sessions * 30 * secs;
    assert!(
        (about * 85 / 100..=about * 110 / 100).contains(&sent),
        "sent {sent} frames, expected about {about}: {v:#}"
    );
    assert_eq!(u(&v, "/server_frames_accepted"), sent, "{v:#}");
    assert_eq!(
        u(&v, "/out/frames"),
        sent,
        "every frame reached its subscriber: {v:#}"
    );
    assert_eq!(u(&v, "/errors"), 0, "{v:#}");
    assert_eq!(u(&v, "/sessions_opened"), sessions);
    assert_eq!(u(&v, "/status_codes/OK"), sessions * 2, "{v:#}");
    assert_eq!(v["drops"]["any"], Value::Bool(false), "{v:#}");
    // The load generator's CPU per frame is reported beside the server's.
    assert!(f(&v, "/cpu/load_generator_us_per_frame") > 0.0, "{v:#}");
    assert!(f(&v, "/cpu/server_us_per_frame") > 0.0, "{v:#}");

    // The text summary says how the streams were carried.
    let run = loadtest(
        &[
            "--server",
            &url,
            "--sessions",
            "3",
            "--publisher-connections",
            "1",
            "--duration",
            "1s",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "Connections: publishers on 1 shared connections, subscribers on a connection each"
        ),
        "{}",
        run.stdout
    );
    s.shutdown().await;
}

/// `liveslice-relay-floor`: its relay pairs each session's publisher with
/// its subscriber and copies every frame; its load side counts them all
/// and reports the relay's CPU per frame and the latency (both ways: a
/// worker per core, and one thread with a task hand-off).
#[test]
fn the_relay_floor_delivers_every_frame_and_reports_its_cost() {
    let bin = env!("CARGO_BIN_EXE_liveslice-relay-floor");
    for flags in [&[][..], &["--hop", "--one-thread"][..]] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut relay = std::process::Command::new(bin)
            .args(["relay", "--listen", &addr])
            .args(flags)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the relay starts");
        std::thread::sleep(Duration::from_millis(300));
        let out = std::process::Command::new(bin)
            .args([
                "load",
                "--relay",
                &addr,
                "--sessions",
                "5",
                "--duration",
                "2s",
            ])
            .arg("--relay-pid")
            .arg(relay.id().to_string())
            .output()
            .expect("the load runs");
        let _ = relay.kill();
        let _ = relay.wait();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        let (frames, expected) = (u(&v, "/frames"), f(&v, "/expected_frames"));
        // 5 sessions × 30 fps × 2 s, give or take the frames in flight at
        // the window's edges.
        assert!(
            (frames as f64 - expected).abs() <= 10.0 && frames > 250,
            "{flags:?}: {v}"
        );
        // (CPU time is read in 10 ms ticks: a short run may show none.)
        assert!(f(&v, "/relay_us_per_frame") >= 0.0, "{v}");
        assert!(f(&v, "/p99_ms") > 0.0 && f(&v, "/p99_ms") < 1000.0, "{v}");
    }
}

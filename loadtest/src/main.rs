//! `liveslice-loadtest`: N publishing sessions × M subscribers against a
//! liveslice server on this machine, for a bounded time; reports
//! publish-to-receipt latency, throughput, drops, errors and the server's
//! memory. See `loadtest/README.md`.

mod held;
mod probe;
mod report;
mod run;
mod stats;
mod stream;
mod target;
mod viewers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use tonic::transport::Endpoint;

use run::{Plan, RampPlan, Rate};

/// Hard cap on any run (and on a whole ramp).
const MAX_RUN: Duration = Duration::from_secs(600);
/// Streams (publishers + subscribers) at most.
const MAX_STREAMS: u64 = 20_000;
/// Connections (one per publisher, plus one per subscriber or
/// `--connections`) at most: each is a file descriptor on both sides.
const MAX_CONNECTIONS: u64 = 10_001;

/// Load generator for liveslice: N publishers (one session each) pushing a
/// test stream, M subscribers per session; measures publish-to-receipt
/// latency per frame. Loopback servers only.
#[derive(Parser, Debug)]
#[command(name = "liveslice-loadtest", version)]
struct Args {
    /// The server's gRPC address; only loopback (127.0.0.0/8, ::1, localhost).
    #[arg(
        long,
        env = "LIVESLICE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// Publishing sessions (with --ramp: the first step).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=5000))]
    sessions: u32,
    /// Subscribers per session (the server admits `--max-subscribers` per
    /// session, 1000 by default).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    subscribers: u32,
    /// Connections all subscribers share, many HTTP/2 streams on each
    /// (fan-out: `--sessions 1 --subscribers 10000 --connections 8`); 0: one
    /// connection per subscriber.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    connections: u32,
    /// Connections all publishers share, many sessions multiplexed as
    /// HTTP/2 streams on each (thousands of sessions from one load
    /// generator: `--sessions 3000 --publisher-connections 16
    /// --connections 16`); 0: one connection per publisher.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    publisher_connections: u32,
    /// H.264 Annex B file to publish (default: the embedded
    /// testdata/high_bframes_30.h264, 30 fps with B-frames).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// `realtime`: one access unit per message at its decode time, looping;
    /// `max`: back to back, as fast as the server takes them.
    #[arg(long, value_enum, default_value = "realtime")]
    rate: Rate,
    /// How long to publish (at most 10m). Ignored with --ramp.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Publish this long before measuring (with --duration at most 10m;
    /// with --ramp, before each step's --step-duration): latency and CPU
    /// per frame then cover only the --duration after it (a ramp step's
    /// latency only its --step-duration; its drops the whole step). A session's window fills during its first
    /// ~35 s, and figures taken then include the server's allocator growing.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Open the sessions, send one keyframe and then nothing (an empty
    /// keep-alive every 10 s): for measuring what an idle session costs the
    /// server.
    #[arg(long)]
    idle: bool,
    /// Print one JSON object with every figure instead of the text summary.
    #[arg(long)]
    json: bool,
    /// The server's process id, to sample its VmRSS from /proc/PID/status
    /// (and its CPU time from /proc/PID/stat).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// The server's HTTP origin (loopback only, e.g. http://127.0.0.1:8080),
    /// to read the media bytes it holds (`liveslice_media_memory_bytes` on
    /// /metrics) at the start and before the stop.
    #[arg(long, value_name = "URL")]
    http: Option<String>,
    /// Ramp: start with --sessions, add --step sessions every
    /// --step-duration until a step's p99 exceeds --max-p99, any frame is
    /// dropped or lagged, or --max-sessions is reached.
    #[arg(long)]
    ramp: bool,
    /// Sessions added per ramp step.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=5000))]
    step: u32,
    /// How long each ramp step is measured.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    step_duration: Duration,
    /// The p99 latency a ramp step may not exceed.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    max_p99: Duration,
    /// The ramp's last step.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5000))]
    max_sessions: u32,
    /// Instead of publishing: hold N low-latency HLS blocking playlist
    /// reloads at once on the live session --held-session of the origin
    /// at --http, one HTTP/1.1 connection each, and report the server's
    /// memory while they are held (--server-pid) and how closely together
    /// they are answered.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=5000), requires_all = ["http", "held_session"])]
    held_playlists: Option<u32>,
    /// The session --held-playlists and --ll-viewers ask about (publish it
    /// in real time with low-latency parts first).
    #[arg(long, value_name = "ID")]
    held_session: Option<String>,
    /// --held-playlists as streams on K prior-knowledge HTTP/2 (h2c)
    /// connections; 0: one HTTP/1.1 connection per request.
    #[arg(long, value_name = "K", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    held_connections: u32,
    /// Instead of publishing: N low-latency HLS players on the live
    /// session --held-session of the origin (or edge) at --http for
    /// --duration, each holding a blocking reload for the next part and
    /// then fetching it, on --held-connections HTTP/2 (h2c) connections
    /// (at least 1); with --server-pid, the server's CPU per viewer and per
    /// part served.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000), requires_all = ["http", "held_session"], conflicts_with = "held_playlists")]
    ll_viewers: Option<u32>,
    /// Session ids are PREFIX-<pid>-<n>.
    #[arg(long, default_value = "loadtest", value_name = "PREFIX")]
    session_prefix: String,
}

async fn plan(a: &Args) -> Result<Plan> {
    let uri = target::loopback_uri(&a.server).await?;
    if a.duration < Duration::from_millis(100) || a.duration > MAX_RUN {
        bail!("--duration must be between 100ms and 10m");
    }
    if a.warmup + a.duration > MAX_RUN {
        bail!("--warmup and --duration together must be at most 10m");
    }
    if a.session_prefix.is_empty()
        || a.session_prefix.len() > 64
        || a.session_prefix.starts_with('.')
        || !a
            .session_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        bail!("--session-prefix: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.'");
    }
    let most_sessions = if a.ramp {
        a.max_sessions.max(a.sessions)
    } else {
        a.sessions
    };
    let streams = u64::from(most_sessions) * (1 + u64::from(a.subscribers));
    if streams > MAX_STREAMS {
        bail!("{most_sessions} sessions x (1 + {} subscribers) = {streams} streams; at most {MAX_STREAMS}", a.subscribers);
    }
    let subscriber_streams = u64::from(most_sessions) * u64::from(a.subscribers);
    let connections = if a.publisher_connections == 0 {
        u64::from(most_sessions)
    } else {
        u64::from(most_sessions).min(u64::from(a.publisher_connections))
    } + if a.connections == 0 {
        subscriber_streams
    } else {
        subscriber_streams.min(u64::from(a.connections))
    };
    if connections > MAX_CONNECTIONS {
        bail!(
            "{connections} connections ({} for the publishers, {} for the subscribers); at most {MAX_CONNECTIONS}: share connections with --publisher-connections and --connections",
            if a.publisher_connections == 0 { "one each" } else { "--publisher-connections" },
            if a.connections == 0 { "one each" } else { "--connections" }
        );
    }
    let metrics = match &a.http {
        None => None,
        Some(url) => {
            let uri = target::loopback_uri_for("--http", url).await?;
            Some(probe::Metrics::new(&uri).await?)
        }
    };
    let ramp = if a.ramp {
        if a.subscribers == 0 || a.idle || a.rate != Rate::Realtime {
            bail!("--ramp measures real-time latency: it needs --subscribers >= 1, --rate realtime and no --idle");
        }
        if a.max_sessions < a.sessions {
            bail!(
                "--max-sessions ({}) is below --sessions ({})",
                a.max_sessions,
                a.sessions
            );
        }
        if a.step_duration < Duration::from_millis(500) {
            bail!("--step-duration must be at least 500ms");
        }
        let steps = (a.max_sessions - a.sessions).div_ceil(a.step) + 1;
        if (a.warmup + a.step_duration) * steps > MAX_RUN {
            bail!(
                "the ramp could take {steps} steps x {:?} > 10 minutes; raise --step or lower --max-sessions",
                a.warmup + a.step_duration
            );
        }
        Some(RampPlan {
            step: a.step,
            step_duration: a.step_duration,
            max_p99: a.max_p99,
            max_sessions: a.max_sessions,
        })
    } else {
        None
    };
    let endpoint = Endpoint::from(uri)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    Ok(Plan {
        server: a.server.clone(),
        endpoint,
        sessions: a.sessions,
        subscribers: a.subscribers,
        rate: a.rate,
        idle: a.idle,
        duration: a.duration,
        warmup: a.warmup,
        ramp,
        prefix: a.session_prefix.clone(),
        server_pid: a.server_pid,
        connections: a.connections,
        publisher_connections: a.publisher_connections,
        metrics,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let (Some(n), Some(http), Some(session)) =
        (args.held_playlists, &args.http, &args.held_session)
    {
        let run = async {
            let uri = target::loopback_uri_for("--http", http).await?;
            let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            held::run(
                &authority,
                session,
                n as usize,
                args.held_connections as usize,
                args.server_pid,
            )
            .await
        };
        return match run.await {
            Ok(r) => {
                print!("{}", r.text());
                if r.answered == r.requests {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("liveslice-loadtest: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let (Some(n), Some(http), Some(session)) = (args.ll_viewers, &args.http, &args.held_session)
    {
        let run = async {
            let uri = target::loopback_uri_for("--http", http).await?;
            let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            if args.duration > MAX_RUN {
                bail!("--duration must be at most 10m");
            }
            viewers::run(
                &authority,
                session,
                n as usize,
                args.held_connections as usize,
                args.duration,
                args.server_pid,
            )
            .await
        };
        return match run.await {
            Ok(r) => {
                print!("{}", r.text());
                if r.parts > 0 {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("liveslice-loadtest: no part was served");
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("liveslice-loadtest: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let plan = match plan(&args).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("liveslice-loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    let stream = match stream::TestStream::load(args.input.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("liveslice-loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    let outcome = run::run(&plan, stream).await;
    if args.json {
        println!("{}", report::json(&plan, &outcome));
    } else {
        print!("{}", report::text(&plan, &outcome));
    }
    if outcome.whole.counts.sessions_opened == 0 {
        eprintln!(
            "liveslice-loadtest: no session could be opened{}",
            outcome
                .first_error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({e})"))
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

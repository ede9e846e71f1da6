//! `liveslice-server`: see `--help`.

/// mimalloc instead of glibc's malloc (issue 14, BENCH.md "The steady
/// state and the allocator"): at steady state a session's window is full
/// and every segment cut frees the oldest segment's frames and parts, most
/// of them allocated on another runtime thread than the one freeing them.
/// glibc then takes the owning arena's lock (threads parked on it in
/// `futex`, the latency tail); mimalloc hands such frees back without a
/// lock. Measured on 2 cores at steady state, 500 sessions on 16 + 16
/// connections: p99 62–117 → 5–24 ms, server CPU 35–44 → 31–38 µs per
/// frame (0.83× in two runs); a ramp with a warm-up held 900 sessions
/// instead of 500. A well-kept crate, not our
/// code: nothing here depends on which allocator runs.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use liveslice_server::app;
use liveslice_server::config::{Config, LoadError, LogFormat};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::load(std::env::args_os()) {
        Ok(c) => c,
        // Prints usage, --help or --version with the right exit code.
        Err(LoadError::Flags(e)) => e.exit(),
        Err(LoadError::Invalid(e)) => {
            eprintln!("liveslice-server: {e}");
            std::process::exit(2);
        }
    };
    if let Some(spec) = &config.mint_token {
        match mint(&config, spec) {
            Ok(t) => {
                println!("{t}");
                return Ok(());
            }
            Err(e) => {
                eprintln!("liveslice-server: --mint-token: {e}");
                std::process::exit(2);
            }
        }
    }
    if config.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let json = config.server.log_format == LogFormat::Json;
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(filter)
            .init();
    } else {
        // Colour only for a terminal: a log file gets plain text.
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_ansi(std::io::stdout().is_terminal())
            .with_env_filter(filter)
            .init();
    }
    let (grpc_addr, http_addr) = (config.server.grpc_addr, config.server.http_addr);
    let exposed = !grpc_addr.ip().is_loopback() || !http_addr.ip().is_loopback();
    let auth_off = config.auth.tokens.is_empty() && config.auth.secret.is_none();
    if exposed && auth_off {
        tracing::warn!(
            grpc = %grpc_addr,
            http = %http_addr,
            "LISTENING ON A NON-LOOPBACK ADDRESS WITHOUT AUTHENTICATION: anyone who can reach it can publish and play; set --auth-token or --auth-secret"
        );
        eprintln!(
            "WARNING: liveslice-server listens beyond loopback without authentication (--auth-token / --auth-secret)"
        );
    }
    // A startup error is one line (no backtrace, whatever RUST_BACKTRACE).
    let running = match app::start(&config).await {
        Ok(r) => r,
        Err(e) => {
            // The error says it all (its source is already in its text).
            eprintln!("liveslice-server: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let banner = banner(&config, &running);
    if json {
        // One structured line among the JSON logs, not free text.
        tracing::info!(grpc = %running.grpc_addr, http = %running.http_addr, urls = %banner.join(" | "), "serving");
    } else {
        for line in &banner {
            println!("{line}");
        }
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.drain().await;
    Ok(())
}

/// What to tell the operator at start: addresses and copy-paste commands,
/// with `https://` and TLS grpcurl flags when TLS is on.
fn banner(config: &Config, running: &app::Running) -> Vec<String> {
    let tls = config.tls.cert.is_some();
    let scheme = if tls { "https" } else { "http" };
    let grpcurl = if tls {
        "grpcurl -cacert CA.pem".to_string()
    } else {
        "grpcurl -plaintext".to_string()
    };
    let (grpc, http) = (running.grpc_addr, running.http_addr);
    let mut out = vec![
        format!(
            "liveslice-server: gRPC on {grpc}{}, HTTP on {scheme}://{http}/",
            if tls { " (TLS)" } else { "" }
        ),
        format!("  sessions and players: {scheme}://{http}/"),
    ];
    if let Some(id) = &config.server.demo {
        out.push(format!(
            "  demo session {id:?} (a looping test stream with a tone):"
        ));
        out.push(format!(
            "    play in a browser: {scheme}://{http}/player/{id}"
        ));
        out.push(format!(
            "    HLS (CMAF):        {scheme}://{http}/live/{id}/master.m3u8 (video + audio; index.m3u8: video only)"
        ));
        out.push(format!(
            "    HLS (MPEG-TS):     {scheme}://{http}/live/{id}/ts/index.m3u8"
        ));
        out.push(format!(
            "    DASH:              {scheme}://{http}/live/{id}/manifest.mpd"
        ));
        out.push(format!(
            "    ffplay:            ffplay {scheme}://{http}/live/{id}/master.m3u8"
        ));
        out.push(format!(
            "    gRPC:              {grpcurl} -d '{{\"session_id\":\"{id}\",\"target_fps\":30}}' {grpc} liveslice.v1.SliceService/StreamSlices"
        ));
    }
    out.push(format!(
        "  health:  {grpcurl} {grpc} grpc.health.v1.Health/Check"
    ));
    out.push(format!("  metrics: {scheme}://{http}/metrics"));
    out
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--mint-token ROLE:SESSION:TTL` with `--auth-secret`.
fn mint(config: &Config, spec: &str) -> Result<String, String> {
    use liveslice_server::auth::{sign, Access};
    let secret = config
        .auth
        .secret
        .as_deref()
        .ok_or("needs --auth-secret (or LIVESLICE_AUTH_SECRET)")?;
    let mut p = spec.splitn(3, ':');
    let (Some(role), Some(session), Some(ttl)) = (p.next(), p.next(), p.next()) else {
        return Err(format!("{spec:?} is not ROLE:SESSION:TTL"));
    };
    let access = match role {
        "publish" => Access::Publish,
        "play" => Access::Play,
        other => return Err(format!("role {other:?} is not publish or play")),
    };
    // The session is read as the server reads every id, so the token names
    // the session it will be checked against; `*` is every session.
    let session = if session == "*" {
        session.to_string()
    } else {
        liveslice_server::ids::parse_session_id(session)
            .map_err(|e| format!("invalid session {session:?}: {e}"))?
    };
    let ttl = liveslice_server::config::parse_duration(ttl)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    Ok(sign(secret, access, &session, (now + ttl).as_secs()))
}

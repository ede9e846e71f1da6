//! `liveslice-server`: see `--help`.

use anyhow::Context;
use liveslice_server::app;
use liveslice_server::config::{Config, LoadError};

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
    if config.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let exposed = !config.grpc_addr.ip().is_loopback() || !config.http_addr.ip().is_loopback();
    let auth_off = config.auth_tokens.is_empty() && config.auth_secret.is_none();
    if exposed && auth_off {
        tracing::warn!(
            grpc = %config.grpc_addr,
            http = %config.http_addr,
            "LISTENING ON A NON-LOOPBACK ADDRESS WITHOUT AUTHENTICATION: anyone who can reach it can publish and play; set --auth-token or --auth-secret"
        );
        eprintln!(
            "WARNING: liveslice-server listens beyond loopback without authentication (--auth-token / --auth-secret)"
        );
    }
    let running = app::start(&config)
        .await
        .context("starting liveslice-server")?;
    let http = running.http_addr;
    println!(
        "liveslice-server: gRPC on {}, HTTP on http://{http}/",
        running.grpc_addr
    );
    println!("  sessions and players: http://{http}/");
    if let Some(id) = &config.demo {
        println!("  demo session {id:?} (a looping test stream):");
        println!("    play in a browser: http://{http}/player/{id}");
        println!("    HLS (CMAF):        http://{http}/live/{id}/index.m3u8");
        println!("    HLS (MPEG-TS):     http://{http}/live/{id}/ts/index.m3u8");
        println!("    DASH:              http://{http}/live/{id}/manifest.mpd");
        println!("    ffplay:            ffplay http://{http}/live/{id}/index.m3u8");
        println!(
            "    gRPC:              grpcurl -plaintext -d '{{\"session_id\":\"{id}\",\"target_fps\":30}}' {} liveslice.v1.SliceService/StreamSlices",
            running.grpc_addr
        );
    }
    println!(
        "  health:  grpcurl -plaintext {} grpc.health.v1.Health/Check",
        running.grpc_addr
    );
    println!("  metrics: http://{http}/metrics");
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.drain().await;
    Ok(())
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
        .auth_secret
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

//! `liveslice-server`: see `--help`.

use anyhow::Context;
use clap::Parser;
use liveslice_server::{app, config::Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let running = app::start(&config)
        .await
        .context("starting liveslice-server")?;
    println!("liveslice-server: gRPC on {}", running.grpc_addr);
    println!("  publish:   any client of liveslice.v1.SliceService/StreamSlices (see README)");
    println!(
        "  check:     grpcurl -plaintext {} grpc.health.v1.Health/Check",
        running.grpc_addr
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
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

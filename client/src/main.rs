//! `liveslice`: the sample client of liveslice-server.
//!
//! - `publish` pushes an H.264 Annex B file (or stdin) into a session, as fast
//!   as the server accepts or paced like a camera (`--realtime`);
//! - `play` subscribes to a session and writes its frames as Annex B (for
//!   `ffplay -`) or a playable HLS + DASH tree;
//! - `package` runs the server's engine offline and writes the same tree;
//! - `job` submits, follows and cancels packaging jobs on a cluster's
//!   workers;
//! - `demo` is the one-command tour: server, publisher and viewer in one
//!   process.
//!
//! Human output goes to stdout for `publish` and `package`; `play` and
//! `demo` keep stdout free (`play --annexb -` writes video there) and report
//! on stderr.

mod demo;
mod input;
mod job;
mod live;
mod package;
mod play;
mod publish;
mod rpc;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "liveslice", version, about = "liveslice sample client: publish, play, package, demo", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Push an H.264/H.265 Annex B file, an MPEG-TS or MP4/MOV file (with its AAC), or `-` (stdin) into a session; `--server A,B` continues on B if A goes away.
    Publish(publish::Args),
    /// Subscribe to a session: write its frames as Annex B, or an HLS + DASH tree.
    Play(play::Args),
    /// Run the engine offline over a file and write the HLS + DASH tree the
    /// server would serve (no server needed).
    Package(package::Args),
    /// Start a server (or use a running one), publish a test stream into it
    /// in real time and watch it: the quickest way to see liveslice work.
    Demo(demo::Args),
    /// Packaging jobs on a cluster's workers: submit (--watch for a
    /// progress bar), get, watch, cancel.
    Job(job::Args),
}

/// Resolves once `stop` is set; never if its sender is gone (nobody can
/// ask to stop any more).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Two workers are plenty for one gRPC stream each way (and the in-process
    // server of `demo`); the client must not compete with the server it
    // talks to when both run on a small machine.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("liveslice: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Publish(a) => publish::run(a).await,
            Command::Play(a) => play::run(a).await,
            Command::Package(a) => package::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Job(a) => job::run(a).await,
        }
    });
    // Tasks still blocked on stdin (a publisher stopped with Ctrl-C) must not
    // keep the process alive.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("liveslice: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

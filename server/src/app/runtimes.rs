//! gRPC on a runtime per core (`grpc-runtimes N`): N single-threaded tokio
//! runtimes, each on a thread of its own, each serving the connections the
//! accept loop hands it, round-robin.
//!
//! Why: on the shared multi-threaded runtime a frame's three task wake-ups
//! (the publisher's connection, the handler, the subscriber's stream and its
//! connection) often cross threads, and each crossing is a `futex` and a
//! context switch; single-threaded runtimes keep a connection's work on one
//! thread (BENCH.md, issue 14: at 500 sessions on shared connections 0.90×
//! the server's CPU per frame and a third of the p99; no change at 100
//! sessions with a connection each). A publisher and its subscribers on different runtimes still wake
//! each other across threads, through the session.
//!
//! Shutdown: the stop signal ends the accept loop and asks every runtime's
//! server to finish gracefully; the returned task ends when they have. If
//! that task is aborted (the shutdown timeout), each runtime stops at once
//! and is dropped with its connections.

use std::net::TcpStream as StdTcpStream;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::server::Router;

/// Accepted connections a runtime has not taken yet; beyond, the accept loop
/// waits for it (and the kernel's backlog holds new connections).
const PENDING: usize = 64;

/// Starts one runtime thread per router and the accept loop; the task
/// returned ends when every runtime's server has finished after `stop`.
/// Errors: a runtime or its thread could not be created.
pub(super) fn serve(
    routers: Vec<Router>,
    listener: TcpListener,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
    let (graceful_tx, graceful_rx) = watch::channel(false);
    let (force_tx, force_rx) = watch::channel(());
    let mut handoff = Vec::with_capacity(routers.len());
    let mut finished = Vec::with_capacity(routers.len());
    for (i, router) in routers.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel::<StdTcpStream>(PENDING);
        let (done_tx, done_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut graceful = graceful_rx.clone();
        let mut force = force_rx.clone();
        std::thread::Builder::new()
            .name(format!("liveslice-grpc-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    // Registered with this runtime's I/O driver here, on
                    // its own thread.
                    let incoming = ReceiverStream::new(rx).map(tokio::net::TcpStream::from_std);
                    let server = router.serve_with_incoming_shutdown(incoming, async move {
                        let _ = graceful.wait_for(|stop| *stop).await;
                    });
                    tokio::select! {
                        r = server => {
                            let _ = done_tx.send(r);
                        }
                        // The task below is gone (aborted): stop now.
                        _ = force.changed() => {}
                    }
                });
                // Dropping the runtime closes what it still serves.
            })?;
        handoff.push((
            tx,
            ::metrics::counter!(crate::metrics::GRPC_CONNECTIONS, "runtime" => i.to_string()),
        ));
        finished.push(done_rx);
    }
    Ok(tokio::spawn(async move {
        // Dropped when this task ends or is aborted: the runtimes' cue.
        let _force = force_tx;
        let accept = async {
            let incoming = super::incoming_with_backoff(listener);
            tokio::pin!(incoming);
            let mut next = 0usize;
            while let Some(accepted) = incoming.next().await {
                // Failed accepts were logged and paused for by the stream.
                let Ok(tcp) = accepted else { continue };
                let tcp = match tcp.into_std() {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC: cannot hand a connection to its runtime");
                        continue;
                    }
                };
                let (tx, accepted) = &handoff[next % handoff.len()];
                next = next.wrapping_add(1);
                if tx.send(tcp).await.is_ok() {
                    accepted.increment(1);
                } else {
                    tracing::warn!("gRPC: a runtime has stopped; connection closed");
                }
            }
        };
        tokio::select! {
            () = accept => {}
            _ = stop => {}
        }
        let _ = graceful_tx.send(true);
        drop(handoff);
        let mut result = Ok(());
        for done in finished {
            if let Ok(Err(e)) = done.await {
                result = Err(e);
            }
        }
        result
    }))
}

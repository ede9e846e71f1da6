//! `liveslice-relay-floor`: what relaying a live frame costs on this
//! machine with nothing but TCP and tokio, as the floor under the server's
//! CPU per frame (BENCH.md, issue 14).
//!
//! ```text
//! liveslice-relay-floor relay [--listen 127.0.0.1:50098] [--hop] [--one-thread]
//! liveslice-relay-floor load --relay 127.0.0.1:50098 --relay-pid PID \
//!     [--sessions 100] [--duration 20s] [--fps 30] [--frame-bytes 1100]
//! ```
//!
//! `relay`: a tokio multi-thread runtime (as the server's) that pairs each
//! session's publisher connection with its subscriber connection and copies
//! every length-prefixed frame from one to the other: one task per
//! session, one read per readiness and one write per batch of whole frames
//! (nothing parsed, timed or encoded). `--hop` puts one task hand-off
//! between them (the publisher's task reads, a bounded channel, the
//! subscriber's task writes), as a server that does work between its input
//! and its output has at least; `--one-thread` runs it all on one thread.
//!
//! `load`: SESSIONS publisher connections sending FRAME_BYTES frames at FPS
//! (starts spread over one frame period) and as many subscriber
//! connections; after a second of warm-up it measures for DURATION the
//! relay's CPU (from `/proc/PID/stat`), its own, the frames received and
//! the send→receive latency, and prints one JSON line.
//!
//! Wire: a connection opens with `P` or `S` and the session number (u64,
//! big-endian); a frame is its length (u32, big-endian) then the sender's
//! clock (u64 ns since the load's start) and padding.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[allow(dead_code)]
#[path = "stats.rs"]
mod stats;

#[derive(Parser)]
#[command(about = "The cost of relaying live frames over TCP with tokio alone")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pairs publishers with subscribers and copies their frames.
    Relay {
        #[arg(long, default_value = "127.0.0.1:50098")]
        listen: std::net::SocketAddr,
        /// One task hand-off (a bounded channel) between the publisher's
        /// read and the subscriber's write.
        #[arg(long)]
        hop: bool,
        /// One thread (tokio's current-thread runtime) instead of a
        /// worker per core.
        #[arg(long)]
        one_thread: bool,
    },
    /// Publishes and receives through a relay; prints one JSON line.
    Load {
        #[arg(long, default_value = "127.0.0.1:50098")]
        relay: std::net::SocketAddr,
        /// The relay's process id (its CPU time is read from /proc).
        #[arg(long)]
        relay_pid: u32,
        #[arg(long, default_value_t = 100)]
        sessions: u64,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
        duration: Duration,
        #[arg(long, default_value_t = 30)]
        fps: u32,
        #[arg(long, default_value_t = 1100)]
        frame_bytes: usize,
    },
}

fn main() -> Result<()> {
    let one_thread = matches!(
        Cli::parse().command,
        Command::Relay {
            one_thread: true,
            ..
        }
    );
    let runtime = if one_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        match Cli::parse().command {
            Command::Relay { listen, hop, .. } => relay(listen, hop).await,
            Command::Load {
                relay,
                relay_pid,
                sessions,
                duration,
                fps,
                frame_bytes,
            } => load(relay, relay_pid, sessions, duration, fps, frame_bytes).await,
        }
    })
}

/// The open half of each session's pair, by session number.
type Waiting = Arc<Mutex<HashMap<u64, (u8, TcpStream)>>>;

async fn relay(listen: std::net::SocketAddr, hop: bool) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("relay on {}", listener.local_addr()?);
    let waiting: Waiting = Arc::default();
    loop {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let waiting = waiting.clone();
        tokio::spawn(async move {
            let mut hello = [0u8; 9];
            if socket.read_exact(&mut hello).await.is_err() {
                return;
            }
            let role = hello[0];
            let session = u64::from_be_bytes(hello[1..].try_into().unwrap_or_default());
            let other = {
                let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
                match w.remove(&session) {
                    Some((r, s)) if r != role => Some(s),
                    _ => {
                        w.insert(session, (role, socket));
                        return;
                    }
                }
            };
            let Some(other) = other else { return };
            let (publisher, subscriber) = if role == b'P' {
                (socket, other)
            } else {
                (other, socket)
            };
            if hop {
                copy_with_hop(publisher, subscriber).await;
            } else {
                copy_frames(publisher, subscriber).await;
            }
        });
    }
}

/// Whole frames at the front of `buf`: their byte length.
fn whole_frames(buf: &[u8]) -> usize {
    let mut at = 0;
    while buf.len() - at >= 4 {
        let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if buf.len() - at - 4 < len {
            break;
        }
        at += 4 + len;
    }
    at
}

/// The whole frames read next (one read per readiness; `None` once the
/// connection ends).
async fn next_frames(from: &mut TcpStream, buf: &mut BytesMut) -> Option<BytesMut> {
    loop {
        match from.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let n = whole_frames(buf);
        if n > 0 {
            return Some(buf.split_to(n));
        }
    }
}

/// One task: read what is there, write the whole frames in it.
async fn copy_frames(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(frames) = next_frames(&mut from, &mut buf).await {
        if to.write_all(&frames).await.is_err() {
            return;
        }
    }
}

/// Two tasks and a bounded channel between them.
async fn copy_with_hop(mut from: TcpStream, mut to: TcpStream) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    tokio::spawn(async move {
        while let Some(frames) = rx.recv().await {
            if to.write_all(&frames).await.is_err() {
                return;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(frames) = next_frames(&mut from, &mut buf).await {
        if tx.send(frames.freeze()).await.is_err() {
            return;
        }
    }
}

async fn connect(relay: std::net::SocketAddr, role: u8, session: u64) -> Result<TcpStream> {
    let mut s = TcpStream::connect(relay)
        .await
        .with_context(|| format!("cannot connect to the relay at {relay}"))?;
    s.set_nodelay(true)?;
    let mut hello = [0u8; 9];
    hello[0] = role;
    hello[1..].copy_from_slice(&session.to_be_bytes());
    s.write_all(&hello).await?;
    Ok(s)
}

async fn load(
    relay: std::net::SocketAddr,
    relay_pid: u32,
    sessions: u64,
    duration: Duration,
    fps: u32,
    frame_bytes: usize,
) -> Result<()> {
    if frame_bytes < 8 || fps == 0 {
        bail!("--frame-bytes must be at least 8 and --fps above 0");
    }
    let t0 = Instant::now();
    let period = Duration::from_secs(1) / fps;
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(
        1,
        60_000_000_000,
        3,
    )?));
    let mut tasks = Vec::new();
    for n in 0..sessions {
        let subscriber = connect(relay, b'S', n).await?;
        let publisher = connect(relay, b'P', n).await?;
        let offset = period.mul_f64(n as f64 / sessions as f64);
        tasks.push(tokio::spawn(publish(
            publisher,
            t0,
            period,
            offset,
            frame_bytes,
            stop.clone(),
        )));
        tasks.push(tokio::spawn(receive(
            subscriber,
            t0,
            measuring.clone(),
            received.clone(),
            latencies.clone(),
        )));
    }
    let pid = relay_pid.to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (relay_cpu0, own_cpu0) = (stats::cpu_seconds(&pid), stats::cpu_seconds("self"));
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let (relay_cpu1, own_cpu1) = (stats::cpu_seconds(&pid), stats::cpu_seconds("self"));
    stop.store(true, Ordering::Relaxed);
    let frames = received.load(Ordering::Relaxed);
    let h = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let per_frame = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if frames > 0 => serde_json::json!((b - a) * 1e6 / frames as f64),
        _ => serde_json::Value::Null,
    };
    let report = serde_json::json!({
        "sessions": sessions,
        "fps": fps,
        "frame_bytes": frame_bytes,
        "seconds": seconds,
        "frames": frames,
        "expected_frames": (sessions as f64 * f64::from(fps) * seconds).round(),
        "relay_us_per_frame": per_frame(relay_cpu0, relay_cpu1),
        "load_us_per_frame": per_frame(own_cpu0, own_cpu1),
        "p50_ms": h.value_at_quantile(0.5) as f64 / 1e6,
        "p99_ms": h.value_at_quantile(0.99) as f64 / 1e6,
        "max_ms": h.max() as f64 / 1e6,
    });
    println!("{report}");
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Sends a frame every `period` from `offset` on, stamped with its send
/// time (ns since `t0`).
async fn publish(
    mut s: TcpStream,
    t0: Instant,
    period: Duration,
    offset: Duration,
    frame_bytes: usize,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut frame = vec![0u8; 4 + frame_bytes];
    frame[..4].copy_from_slice(&(frame_bytes as u32).to_be_bytes());
    let mut next = tokio::time::Instant::now() + offset;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        next += period;
        let now = t0.elapsed().as_nanos() as u64;
        frame[4..12].copy_from_slice(&now.to_be_bytes());
        s.write_all(&frame).await?;
    }
    Ok(())
}

/// Reads frames; while `measuring`, counts them and records their latency.
async fn receive(
    mut s: TcpStream,
    t0: Instant,
    measuring: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    latencies: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
) -> Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let now = t0.elapsed().as_nanos() as u64;
        let n = whole_frames(&buf);
        let mut frames = buf.split_to(n);
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        let mut h = latencies.lock().unwrap_or_else(|p| p.into_inner());
        while frames.remaining() >= 12 {
            let len = frames.get_u32() as usize;
            let sent = frames.get_u64();
            frames.advance(len.saturating_sub(8).min(frames.remaining()));
            received.fetch_add(1, Ordering::Relaxed);
            let _ = h.record(now.saturating_sub(sent).max(1));
        }
    }
}

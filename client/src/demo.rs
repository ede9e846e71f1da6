//! `liveslice demo`: the one-command tour. Starts a server in this process
//! (or uses a running one), publishes the committed test stream into it over
//! gRPC in a real-time loop with capture times, as a camera would, watches
//! the session as a gRPC viewer, and prints where to play it. Ctrl-C ends
//! the session cleanly and stops the server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use liveslice_server::app::{self, StartError};
use liveslice_server::config::Config;
use tokio::sync::watch;

use crate::input::Input;
use crate::rpc::{url_host, AccessArgs, Server};
use crate::{play, publish};

/// High profile with B-frames, 320x180, 30 fps, 6 s (the server's `--demo`
/// stream).
static STREAM: &[u8] = include_bytes!("../../testdata/high_bframes_30.h264");
/// The demo's sound: 24 s of a 440 Hz tone with a beep every second (48 kHz
/// mono AAC), four laps of the video, so the two loop in step.
static TONE: &[u8] = include_bytes!("../../testdata/tone_48k_mono.aac");

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Publish into a running server at this gRPC address (host:port,
    /// http:// or https:// URL) instead of starting one here.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// With --server: the token and CA to use (ignored for the server
    /// started here, which has auth and TLS off).
    #[command(flatten)]
    pub access: AccessArgs,
    /// gRPC listen address of the server started here.
    #[arg(long, default_value = "127.0.0.1:50051", conflicts_with = "server")]
    pub grpc_addr: SocketAddr,
    /// HTTP listen address of the server started here.
    #[arg(long, default_value = "127.0.0.1:8080", conflicts_with = "server")]
    pub http_addr: SocketAddr,
    /// With --server: its HTTP origin, for the URLs printed (default: the
    /// gRPC host on port 8080).
    #[arg(long, value_name = "URL", requires = "server")]
    pub http_url: Option<String>,
    /// Session to publish the demo stream into.
    #[arg(long, default_value = "demo")]
    pub session: String,
}

pub async fn run(a: Args) -> Result<()> {
    let (server, grpc_url, http_url) = match &a.server {
        None => {
            let mut config = Config::default();
            config.server.grpc_addr = a.grpc_addr;
            config.server.http_addr = a.http_addr;
            let running = app::start(&config).await.map_err(|e| match e {
                StartError::Bind { addr, source, .. } => anyhow!(
                    "cannot listen on {addr}: {source}. Is a liveslice-server already running \
                     there? Then use `liveslice demo --server {}`, or choose other \
                     addresses with --grpc-addr/--http-addr (port 0 picks a free one).",
                    a.grpc_addr
                ),
                other => anyhow!("cannot start the server: {other}"),
            })?;
            let grpc = Server::plain(&format!("http://{}", running.grpc_addr));
            let http = format!("http://{}", running.http_addr);
            (Some(running), grpc, http)
        }
        Some(url) => {
            let grpc = Server::new(url, &a.access)?;
            let http = a
                .http_url
                .clone()
                .unwrap_or_else(|| default_http_url(&grpc.url));
            (None, grpc, http)
        }
    };
    let result = tour(&a.session, &grpc_url, &http_url, server.is_some()).await;
    if let Some(server) = server {
        eprintln!("stopping the server");
        server.shutdown().await;
    }
    result
}

/// The HTTP origin of a server whose gRPC URL is `grpc`: same host and
/// scheme (TLS covers both ports), the default HTTP port.
fn default_http_url(grpc: &str) -> String {
    let scheme = if grpc.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}:8080", url_host(grpc))
}

async fn tour(session: &str, grpc: &Server, http: &str, own_server: bool) -> Result<()> {
    println!(
        "liveslice demo: {} publishing a test stream (H.264 High with B-frames, 320x180, \
         30 fps, and an AAC tone) into session {session} in real time, looping.\n\
         \n  player page    {http}/player/{session}   (?mode=dash for dash.js)\
         \n  HLS (CMAF)     {http}/live/{session}/master.m3u8   (video + audio; index.m3u8: video only)\
         \n  HLS (MPEG-TS)  {http}/live/{session}/ts/index.m3u8\
         \n  DASH           {http}/live/{session}/manifest.mpd\
         \n  ffplay         ffplay {http}/live/{session}/master.m3u8\
         \n  over gRPC      liveslice play --server {grpc} --session {session} --annexb - | ffplay -\
         \n\nThe playlists appear once the first segment is complete (about 2 s). Ctrl-C stops.{}\n",
        if own_server {
            format!("started a server (gRPC {grpc}, HTTP {http}) and is")
        } else {
            format!("is using the server at {grpc} and")
        },
        if grpc.token().is_some() {
            "\nWith auth on, add ?token=TOKEN (a play token) to the URLs, and --token to `liveslice play`."
        } else {
            ""
        }
    );

    let (stop_tx, stop) = watch::channel(false);
    let ctrl_c_stop = stop_tx.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = ctrl_c_stop.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });

    let plan = publish::Plan {
        fallbacks: Vec::new(),
        server: grpc.clone(),
        session: session.to_string(),
        rendition: String::new(),
        start_at_ms: None,
        input: Input::Embedded("the demo stream", STREAM),
        fps: None,
        realtime: true,
        looping: true,
        chunk_size: 64 * 1024,
        segment_duration_ms: 0,
        window: 0,
        verbose: false,
        audio: Some(publish::AudioTrack::from_adts(bytes::Bytes::from_static(
            TONE,
        ))?),
    };
    let mut publisher = tokio::spawn(async move { publish::publish(&plan, stop).await });

    // The viewer stops on its own when the session ends; this stops it if
    // the publisher fails and the session never ends.
    let (viewer_stop_tx, viewer_stop) = watch::channel(false);
    let viewer_plan = play::Plan {
        server: grpc.clone(),
        session: session.to_string(),
        rendition: String::new(),
        fps: None,
        out: None,
        part_target_ms: liveslice_engine::pipeline::DEFAULT_PART_TARGET_MS,
        annexb: None,
        wait: Some(Duration::from_secs(10)),
        label: format!("viewer of {session}"),
    };
    let mut viewer = tokio::spawn(async move { play::play(&viewer_plan, viewer_stop).await });

    let mut viewed = None;
    let published = tokio::select! {
        r = &mut publisher => r,
        r = &mut viewer => {
            // The viewer ended first: the session ended (and the publisher
            // is finishing too), or the viewer failed. Stop publishing
            // either way.
            viewed = Some(r);
            let _ = stop_tx.send(true);
            match tokio::time::timeout(Duration::from_secs(10), &mut publisher).await {
                Ok(r) => r,
                Err(_) => {
                    publisher.abort();
                    return Err(anyhow!("the publisher did not stop within 10 s"));
                }
            }
        }
    }
    .context("internal: publisher task failed")?;
    let viewed = match viewed {
        Some(v) => v,
        None => {
            // The publisher ended (Ctrl-C, or an error): the viewer hears the
            // session end, or is stopped (at once if publishing failed: it
            // may be watching someone else's session).
            if published.is_err() {
                let _ = viewer_stop_tx.send(true);
            }
            match tokio::time::timeout(Duration::from_secs(5), &mut viewer).await {
                Ok(v) => v,
                Err(_) => {
                    let _ = viewer_stop_tx.send(true);
                    viewer.await
                }
            }
        }
    }
    .context("internal: viewer task failed")?;
    let summary = published?;
    viewed.context("the viewer failed")?;
    eprintln!(
        "published {} access units in {:.1} s; the server accepted {} frames in {} segments",
        summary.frames_sent,
        summary.elapsed.as_secs_f64(),
        summary.frames(),
        summary
            .ended
            .as_ref()
            .map_or(summary.segments, |e| e.segments),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_url_from_grpc_url() {
        assert_eq!(
            default_http_url("http://127.0.0.1:50051"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(default_http_url("http://host/"), "http://host:8080");
        assert_eq!(
            default_http_url("https://example.net:443"),
            "https://example.net:8080"
        );
        assert_eq!(default_http_url("http://[::1]:50051"), "http://[::1]:8080");
    }
}

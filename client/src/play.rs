//! `liveslice play`: subscribes to a session (events on) and writes its
//! frames as Annex B (`--annexb`, `-` for stdout, for `ffplay -`) and/or a
//! playable HLS + DASH tree (`--out`), with a live status line on stderr.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use liveslice_proto::v1 as pb;
use pb::slice_response::Event as PbEvent;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::input::{parse_fps, parse_part_duration, parse_wait};
use crate::live::LiveTree;
use crate::rpc::{
    self, call_error, drop_reason_name, dropped_count, end_reason_name, status_error, Server,
    ServerArgs,
};
use crate::status::StatusLine;
use crate::stopped;

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("output").required(true).multiple(true).args(["out", "annexb"]))]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Session to play.
    #[arg(long)]
    pub session: String,
    /// The session's rendition to play (`360p`: the same as
    /// `--session SESSION~360p`); default: the session's own stream.
    #[arg(long, value_name = "NAME")]
    pub rendition: Option<String>,
    /// Highest frame rate to receive (the server thins by dropping
    /// non-reference frames).
    #[arg(long, value_name = "N", value_parser = parse_fps)]
    pub fps: Option<u32>,
    /// Write a playable HLS (CMAF and MPEG-TS) + DASH tree into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Part target for `--out` when the server does not say its own in
    /// `SessionInfo` (servers that do are followed): `--out` muxes segments
    /// by the server's parts, for the server's bytes.
    #[arg(long, value_name = "D", default_value = "500ms", value_parser = parse_part_duration, requires = "out")]
    pub part_duration: Duration,
    /// Write the frames as an H.264 Annex B stream to FILE (`-`: stdout,
    /// e.g. `liveslice play --session S --annexb - | ffplay -`).
    #[arg(long, value_name = "FILE|-")]
    pub annexb: Option<String>,
    /// How long to wait for a session that does not exist yet (default:
    /// the server's, 10s).
    #[arg(long, value_name = "D", value_parser = parse_wait)]
    pub wait: Option<Duration>,
}

/// What to subscribe to and where the output goes.
pub struct Plan {
    pub server: Server,
    pub session: String,
    /// The rendition ("" for the session's own stream).
    pub rendition: String,
    pub fps: Option<u32>,
    pub out: Option<PathBuf>,
    /// The server's part target (ms), for `out`.
    pub part_target_ms: u32,
    pub annexb: Option<String>,
    pub wait: Option<Duration>,
    /// Status line prefix.
    pub label: String,
}

/// What was received.
#[derive(Debug, Default)]
pub struct Played {
    pub frames: u64,
    pub bytes: u64,
    pub segments_written: u64,
    pub ended: Option<pb::SessionEnded>,
}

pub async fn run(a: Args) -> Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let plan = Plan {
        label: match &a.rendition {
            Some(r) => format!("{}~{r}", a.session),
            None => a.session.clone(),
        },
        server: Server::new(&a.server.server, &a.server.access)?,
        session: a.session,
        rendition: a.rendition.unwrap_or_default(),
        fps: a.fps,
        out: a.out,
        part_target_ms: u32::try_from(a.part_duration.as_millis()).unwrap_or(2_000),
        annexb: a.annexb,
        wait: a.wait,
    };
    let played = play(&plan, stop).await?;
    if let Some(dir) = &plan.out {
        let dir = dir.display();
        eprintln!(
            "{} segments in {dir}: ffplay {dir}/index.m3u8 (or ts/index.m3u8, manifest.mpd)",
            played.segments_written
        );
    }
    Ok(())
}

type Sink = BufWriter<std::pin::Pin<Box<dyn AsyncWrite + Send>>>;

async fn open_sink(target: &str) -> Result<Sink> {
    let w: std::pin::Pin<Box<dyn AsyncWrite + Send>> = if target == "-" {
        Box::pin(tokio::io::stdout())
    } else {
        Box::pin(
            tokio::fs::File::create(target)
                .await
                .with_context(|| format!("cannot create {target}"))?,
        )
    };
    Ok(BufWriter::with_capacity(1 << 20, w))
}

/// Subscribes and writes until the session ends or `stop` is set.
pub async fn play(plan: &Plan, mut stop: watch::Receiver<bool>) -> Result<Played> {
    let mut sink = match &plan.annexb {
        Some(t) => Some(open_sink(t).await?),
        None => None,
    };
    let mut tree = match &plan.out {
        Some(dir) => Some(LiveTree::create(
            dir,
            plan.fps.is_some(),
            plan.part_target_ms,
        )?),
        None => None,
    };
    let mut client = rpc::connect(&plan.server).await?;
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::SliceRequest {
        session_id: plan.session.clone(),
        rendition: plan.rendition.clone(),
        target_fps: plan.fps.map_or(0, |f| f as i32),
        role: pb::Role::Subscribe as i32,
        subscribe: Some(pb::SubscribeOptions {
            events: true,
            no_frames: false,
            wait_ms: plan.wait.map_or(0, |w| {
                u32::try_from(w.as_millis()).unwrap_or(u32::MAX).max(1)
            }),
            // Segment bytes could be asked for here (segments_cmaf/ts); the
            // tree is rebuilt from the frames instead (see `live`), which
            // also works for a thinned (--fps) subscription.
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .context("internal: request stream closed")?;
    let mut status = StatusLine::new(&plan.label);
    // The last session line printed: the server repeats a session's info
    // (e.g. on joining and again when its publisher connects), and a line
    // that says nothing new is not printed again.
    let mut last_info = String::new();
    status.message(&format!(
        "subscribing to session {} at {} (waiting for it if it has not started)",
        if plan.rendition.is_empty() {
            plan.session.clone()
        } else {
            format!("{}~{}", plan.session, plan.rendition)
        },
        plan.server
    ));
    // The request stream stays open (`tx` lives) until we are done: closing
    // it early is allowed, but keeping it is what a viewer does.
    let mut responses = tokio::select! {
        r = client.stream_slices(ReceiverStream::new(rx)) =>
            r.map_err(|s| call_error(&s, &plan.server, &plan.session))?.into_inner(),
        _ = stopped(&mut stop) => return Ok(Played::default()),
    };

    let mut played = Played::default();
    // Why the stream broke, reported once the tree is closed.
    let mut failure = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let msg = tokio::select! {
            m = responses.message() => m,
            _ = ticker.tick() => { status.tick(); continue; }
            _ = stopped(&mut stop) => break,
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => {
                failure = Some(anyhow!(
                    "the server closed the stream without ending the session"
                ));
                break;
            }
            Err(s) => {
                failure = Some(status_error(&s, &plan.server, &plan.session));
                break;
            }
        };
        match &msg.event {
            Some(PbEvent::Frame(info)) => {
                status.frame(info, msg.data.len());
                played.frames += 1;
                played.bytes += msg.data.len() as u64;
                if let Some(w) = sink.as_mut() {
                    // Flushed per frame, so a player reading a pipe sees
                    // each frame as it arrives.
                    let r = async {
                        w.write_all(&msg.data).await?;
                        w.flush().await
                    }
                    .await;
                    match r {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                            // The player went away: a normal way to stop.
                            status.message("output closed; stopping");
                            sink = None;
                            if tree.is_none() {
                                break;
                            }
                        }
                        Err(e) => {
                            failure =
                                Some(anyhow::Error::new(e).context("cannot write the frames"));
                            break;
                        }
                    }
                }
                if let Some(t) = tree.as_mut() {
                    t.frame(&msg, info);
                }
            }
            Some(PbEvent::SessionInfo(i)) => {
                let rate = if i.frame_rate_den > 0 {
                    format!(
                        "{:.3} fps",
                        i.frame_rate_num as f64 / i.frame_rate_den as f64
                    )
                } else {
                    "unknown rate".into()
                };
                let what = if i.codec.is_empty() {
                    "waiting for its first keyframe".to_string()
                } else {
                    format!("{} {}x{} {rate}", i.codec, i.width, i.height)
                };
                // Nothing plays before the first keyframe: no "changed" yet.
                let doing = if i.codec.is_empty() {
                    ""
                } else if i.changed {
                    "stream changed: "
                } else {
                    "playing "
                };
                let line = format!("{doing}session {}: {what}", i.session_id);
                if line != last_info {
                    status.message(&line);
                    last_info = line;
                }
                if let Some(t) = tree.as_mut() {
                    t.session_info(i);
                }
            }
            Some(PbEvent::SegmentReady(s)) => {
                status.segments += 1;
                if let Some(note) = tree.as_mut().and_then(|t| t.segment_ready(s)) {
                    status.message(&note);
                }
            }
            Some(PbEvent::ManifestDelta(d)) => {
                if let Some(t) = tree.as_mut() {
                    if let Err(e) = t.manifest_delta(d) {
                        failure = Some(e);
                        break;
                    }
                }
            }
            Some(PbEvent::FrameDropped(d)) if d.count == 0 => {
                status.message(&format!(
                    "server note ({}): {}",
                    drop_reason_name(d.reason),
                    d.detail
                ));
            }
            Some(PbEvent::FrameDropped(d)) => {
                status.dropped(d);
                status.message(&format!(
                    "server dropped {} ({}): {}",
                    dropped_count(d.reason, u64::from(d.count)),
                    drop_reason_name(d.reason),
                    d.detail
                ));
            }
            Some(PbEvent::Lagged(l)) => {
                status.lagged(l);
                status.message(&format!(
                    "reading too slowly: skipped {} frames, resuming at keyframe {}",
                    l.skipped_frames, l.resume_frame_index
                ));
            }
            Some(PbEvent::SessionEnded(e)) => {
                status.message(&format!(
                    "session ended ({}{}): {} frames in {} segments",
                    end_reason_name(e.reason),
                    // A detail that only repeats the reason is left out.
                    if e.detail.is_empty()
                        || e.detail.replace('_', " ") == end_reason_name(e.reason)
                    {
                        String::new()
                    } else {
                        format!(": {}", e.detail)
                    },
                    e.frames,
                    e.segments
                ));
                played.ended = Some(e.clone());
                break;
            }
            Some(PbEvent::PublishAck(_)) | Some(PbEvent::PartReady(_)) | None => {}
        }
    }
    status.finish();
    drop(tx);
    // However it stopped (end of session, Ctrl-C, a broken stream), the
    // tree is closed so that it plays to its end.
    if let Some(t) = tree.as_mut() {
        let closed = t.finish().context("cannot close the playlists");
        if failure.is_none() {
            closed?;
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(mut w) = sink {
        // A closed pipe at the very end is not an error worth reporting.
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    }
    played.segments_written = tree.as_ref().map_or(0, LiveTree::segments_written);
    Ok(played)
}

//! `liveslice publish`: pushes Annex B into a session over `StreamSlices`,
//! either as fast as the server accepts (fixed-size chunks, flow-controlled
//! by HTTP/2) or paced like a camera (`--realtime`: one access unit per
//! message at its decode time, with capture times).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use liveslice_engine::pipeline::ticks_to_ns;
use liveslice_engine::timing::FrameRate;
use liveslice_engine::{Event, Frame, PipelineOptions, SessionPipeline, TIMESCALE};
use liveslice_proto::v1 as pb;
use pb::slice_response::Event as PbEvent;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::input::{now_unix_ns, parse_fps, parse_segment_duration, AuCutter, Cut, Input, Reader};
use crate::rpc::{
    self, call_error, drop_reason_name, dropped_count, end_reason_name, status_error, Server,
    ServerArgs,
};
use crate::stopped;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Session to publish to (A-Z a-z 0-9 . _ -).
    #[arg(long)]
    pub session: String,
    /// Publish this stream as rendition NAME of the session (for example
    /// `720p`), one of several, each from its own publisher: segment N of
    /// every rendition starts at the same time, and the session's
    /// `master.m3u8` and `manifest.mpd` list them all. Publish renditions
    /// with keyframes at the same times and, from separate processes, with
    /// one --start-at.
    #[arg(long, value_name = "NAME")]
    pub rendition: Option<String>,
    /// The stream's time 0 is this wall-clock time (Unix ms; with
    /// --realtime, a time to come is waited for): capture times count from
    /// it, so
    /// renditions published by separate processes with the same --start-at
    /// line up frame for frame.
    #[arg(long, value_name = "UNIX_MS")]
    pub start_at: Option<u64>,
    /// Frame rate for streams whose SPS carries no timing (the server's
    /// `target_fps`; with --realtime also the pace).
    #[arg(long, value_name = "N", value_parser = parse_fps)]
    pub fps: Option<u32>,
    /// Pace by frame timestamps as a camera would: one access unit per
    /// message at its decode time, with capture times.
    #[arg(long)]
    pub realtime: bool,
    /// Repeat the file until stopped (Ctrl-C). Not possible for stdin.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Bytes per message for a file without --realtime (stdin and pipes go
    /// out an access unit per message, as each one completes).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024, value_parser = parse_chunk_size)]
    pub chunk_size: usize,
    /// Segment target duration for the session (default: the server's).
    #[arg(long, value_name = "D", value_parser = parse_segment_duration)]
    pub segment_duration: Option<Duration>,
    /// Segments in the session's live playlist window (default: the server's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub window: Option<u32>,
    /// An AAC file (ADTS) to publish as the session's audio track beside
    /// the video, from the same start (looped with --loop); the two go out
    /// interleaved by time, with capture times on one clock, so they play
    /// in step. An MPEG-TS or MP4 input brings its own audio.
    #[arg(long, value_name = "FILE.aac")]
    pub audio: Option<std::path::PathBuf>,
    /// H.264/H.265 Annex B file, an MPEG-TS or MP4/MOV file (video and
    /// AAC), or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub input: String,
}

pub use liveslice_files::AudioTrack;

/// The server's default `--max-message-bytes` is 4 MiB; a chunk must fit.
const MAX_CHUNK: usize = 4 << 20;

fn parse_chunk_size(s: &str) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count"))?;
    if !(1..=MAX_CHUNK).contains(&v) {
        return Err(format!(
            "{v} is out of range (1..={MAX_CHUNK}, the server's default message limit)"
        ));
    }
    Ok(v)
}

/// What to publish and how; `publish` runs it.
#[derive(Clone, Debug)]
pub struct Plan {
    pub server: Server,
    /// Servers to continue on, in turn, when the current one is lost
    /// (`--server URL1,URL2,…`): the session goes on there (on the same
    /// server restarted within its grace period, with a discontinuity).
    pub fallbacks: Vec<Server>,
    pub session: String,
    /// The rendition to publish as ("" for the session's own stream).
    pub rendition: String,
    /// Wall clock (Unix ms) of the stream's time 0 (`--start-at`).
    pub start_at_ms: Option<u64>,
    pub input: Input,
    pub fps: Option<u32>,
    pub realtime: bool,
    pub looping: bool,
    pub chunk_size: usize,
    pub segment_duration_ms: u32,
    pub window: u32,
    /// Print server events as they come (off for `demo`, which has its own
    /// status line).
    pub verbose: bool,
    /// An audio track to send beside the video, interleaved by time.
    pub audio: Option<AudioTrack>,
}

/// What the server said about the stream.
#[derive(Debug, Default)]
pub struct Summary {
    pub ack: Option<pb::PublishAck>,
    pub segments: u64,
    pub frames_in_segments: u64,
    /// AAC frames in those segments.
    pub audio_frames_in_segments: u64,
    /// The server was lost (the connection broke, or it shut down): why.
    /// Only set when there is another server to continue on.
    pub lost: Option<String>,
    /// Times publishing moved to another server.
    pub failovers: u32,
    /// When the current run of failovers began (reset once a server took
    /// the session).
    lost_since: Option<Instant>,
    /// Per reason: (total dropped, first detail).
    pub drops: BTreeMap<i32, (u64, String)>,
    pub ended: Option<pb::SessionEnded>,
    /// What we sent.
    pub bytes_sent: u64,
    pub messages_sent: u64,
    /// Access units sent (with --realtime).
    pub frames_sent: u64,
    pub elapsed: Duration,
}

impl Summary {
    /// Frames the server accepted: its own count once the session ended.
    pub fn frames(&self) -> u64 {
        self.ended
            .as_ref()
            .map_or(self.frames_in_segments, |e| e.frames)
    }

    pub fn drops_text(&self) -> String {
        let parts: Vec<String> = self
            .drops
            .iter()
            .map(|(r, (total, detail))| {
                format!(
                    "{} {}: {detail}",
                    dropped_count(*r, *total),
                    drop_reason_name(*r)
                )
            })
            .collect();
        parts.join("; ")
    }
}

pub async fn run(a: Args) -> Result<()> {
    let mut input = Input::from_arg(&a.input);
    // A container file (MPEG-TS, MP4/MOV): its video and audio go out as
    // the session's tracks.
    let mut file_audio = None;
    let mut file_fps = None;
    if let Some(d) = input.demux(true)? {
        file_audio = d.audio;
        file_fps = d.frame_rate;
        let name = format!("the video of {input} ({})", d.container.name());
        input = Input::Demuxed(name, Arc::new(d.video));
    }
    let mut servers = a
        .server
        .server
        .split(',')
        .map(|s| Server::new(s, &a.server.access))
        .collect::<Result<Vec<_>>>()?
        .into_iter();
    let Some(server) = servers.next() else {
        bail!("--server is empty");
    };
    let plan = Plan {
        server,
        fallbacks: servers.collect(),
        session: a.session,
        rendition: a.rendition.unwrap_or_default(),
        start_at_ms: a.start_at,
        input,
        // The container's rate, for a stream whose SPS has no timing.
        fps: a.fps.or(file_fps),
        realtime: a.realtime,
        looping: a.looping,
        chunk_size: a.chunk_size,
        segment_duration_ms: a
            .segment_duration
            .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(60_000)),
        window: a.window.unwrap_or(0),
        verbose: true,
        audio: match &a.audio {
            Some(path) => {
                let data = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Some(
                    AudioTrack::from_adts(Bytes::from(data))
                        .with_context(|| path.display().to_string())?,
                )
            }
            None => file_audio,
        },
    };
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping: ending the session cleanly (Ctrl-C again to abort)");
            let _ = stop_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let s = publish(&plan, stop).await?;
    println!(
        "done: sent {} bytes in {} messages{} over {:.1} s; the server accepted {} frames{} in {} segments{}",
        s.bytes_sent,
        s.messages_sent,
        if s.frames_sent > 0 {
            format!(" ({} access units)", s.frames_sent)
        } else {
            String::new()
        },
        s.elapsed.as_secs_f64(),
        s.frames(),
        if s.audio_frames_in_segments > 0 {
            format!(" and {} audio frames", s.audio_frames_in_segments)
        } else {
            String::new()
        },
        s.ended.as_ref().map_or(s.segments, |e| e.segments),
        if s.drops.is_empty() {
            String::new()
        } else {
            format!(", dropped {}", s.drops_text())
        }
    );
    if s.failovers > 0 {
        println!(
            "the session moved to another server {} time{} (see above)",
            s.failovers,
            if s.failovers == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// Publishes until the input ends (or, looping, until `stop`), ends the
/// session cleanly and returns what the server reported. Fails when the
/// server accepted nothing.
pub async fn publish(plan: &Plan, mut stop: watch::Receiver<bool>) -> Result<Summary> {
    if plan.looping && !plan.input.rewindable() {
        bail!("--loop needs a file: stdin cannot be read twice");
    }
    let started = Instant::now();
    // Open the input first: a typo in the path should not create a session.
    // With audio, the two tracks go out interleaved by time (paced with
    // --realtime, else as fast as the server takes them).
    // A rendition goes out an access unit per message with capture times
    // too: they place it on the session's other renditions' timeline.
    let mut source = if plan.realtime
        || plan.audio.is_some()
        || !plan.rendition.is_empty()
        || plan.start_at_ms.is_some()
    {
        Feed::Paced(
            Box::new(AuSource::open(plan).await?),
            Box::new(Pacing::new(plan.start_at_ms)),
        )
    } else if plan.input.is_live() {
        // A pipe: each access unit goes out as soon as it is complete.
        Feed::Units(
            plan.input.open().await?,
            Box::new(AuCutter::new(MAX_CHUNK - READ_BYTES)),
        )
    } else {
        Feed::Chunks(plan.input.open().await?)
    };
    let servers: Vec<&Server> = std::iter::once(&plan.server)
        .chain(&plan.fallbacks)
        .collect();
    let failover = servers.len() > 1;
    let mut at = 0;
    let mut sent = Sent::default();
    // What the servers lost on the way said (their segments and drops).
    let mut before = Summary::default();
    let (tx, mut reader) = loop {
        let server = servers[at];
        let (tx, mut reader) =
            match open_stream(plan, server, failover, before.frames_in_segments).await {
                Ok(open) => open,
                Err(Open::Unreachable(e)) if failover => {
                    let why = format!("{e:#}");
                    at = fail_over(&servers, at, &why, false, &mut stop, &mut before).await?;
                    source.resync();
                    continue;
                }
                Err(Open::Unreachable(e) | Open::Refused(e)) => return Err(e),
            };
        let fed = {
            let feed = source.feed(plan, &tx, &mut stop, &mut sent);
            tokio::pin!(feed);
            tokio::select! {
                r = &mut feed => Ok(r),
                r = &mut reader => Err(r),
            }
        };
        let fed = match fed {
            Ok(r) => r,
            Err(r) => {
                // The response stream ended while we were still sending:
                // the server refused the stream or went away.
                let summary = r.context("internal: response reader failed")??;
                match summary.lost.clone() {
                    Some(why) => {
                        before.merge(summary);
                        at = fail_over(&servers, at, &why, true, &mut stop, &mut before).await?;
                        source.resync();
                        continue;
                    }
                    None => return Err(ended_early(plan, &summary)),
                }
            }
        };
        // The feed stops early (Ok) when the request stream closes under
        // it: the server went away (continue on the next) or ended the
        // stream; an error is ours.
        if fed.is_err() || (failover && tx.is_closed()) {
            if failover {
                if let Ok(Ok(Ok(summary))) =
                    tokio::time::timeout(Duration::from_secs(2), &mut reader).await
                {
                    if let Some(why) = summary.lost.clone() {
                        before.merge(summary);
                        at = fail_over(&servers, at, &why, true, &mut stop, &mut before).await?;
                        source.resync();
                        continue;
                    }
                    if fed.is_ok() {
                        return Err(ended_early(plan, &summary));
                    }
                }
            }
            if let Err(e) = fed {
                reader.abort();
                return Err(e);
            }
        }
        break (tx, reader);
    };
    // Clean end: the session closes its last segment and playlists.
    let _ = tx
        .send(pb::SliceRequest {
            end_of_stream: true,
            ..Default::default()
        })
        .await;
    drop(tx);
    let mut summary = match tokio::time::timeout(Duration::from_secs(30), &mut reader).await {
        Ok(r) => r.context("internal: response reader failed")??,
        Err(_) => {
            reader.abort();
            bail!("the server did not confirm the end of the stream within 30 s");
        }
    };
    summary.add_before(before);
    summary.bytes_sent = sent.bytes;
    summary.messages_sent = sent.messages;
    summary.frames_sent = sent.frames;
    summary.elapsed = started.elapsed();
    if summary.frames() == 0 {
        if sent.bytes == 0 {
            bail!("{} is empty: nothing was published", plan.input);
        }
        let detail = summary.drops_text();
        if summary
            .drops
            .contains_key(&(pb::DropReason::NotH264 as i32))
        {
            bail!(
                "{} is not H.264: the server accepted no frames ({detail})",
                plan.input
            );
        }
        bail!(
            "the server accepted no frames of {}{}",
            plan.input,
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        );
    }
    Ok(summary)
}

/// How long `publish --server A,B,…` keeps trying the servers in turn
/// after losing one.
const FAILOVER_FOR: Duration = Duration::from_secs(30);

/// A status that says the connection or the server went away (not that
/// the server refused).
fn is_transport(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
    )
}

/// Why a server was lost, in words first: what happened to the
/// connection, then the transport's own detail.
fn lost_because(status: &tonic::Status) -> String {
    let what = match status.code() {
        tonic::Code::Unavailable => "the server is unavailable or going away",
        tonic::Code::Cancelled => "the server cancelled the stream",
        _ => "the connection broke",
    };
    let detail = status.message().trim();
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

/// Why a publishing stream did not open.
enum Open {
    /// No answer, or the server is going away: another may take it.
    Unreachable(anyhow::Error),
    /// The server answered no (auth, options, a busy session).
    Refused(anyhow::Error),
}

/// Opens the publishing stream on `server`: the first message (the session
/// and its options, no data), then the response reader.
///
/// `accepted_before`: frames the servers lost on the way accepted (the
/// progress count goes on from there).
async fn open_stream(
    plan: &Plan,
    server: &Server,
    failover: bool,
    accepted_before: u64,
) -> Result<
    (
        mpsc::Sender<pb::SliceRequest>,
        tokio::task::JoinHandle<Result<Summary>>,
    ),
    Open,
> {
    let mut client = rpc::connect(server).await.map_err(Open::Unreachable)?;
    let (tx, rx) = mpsc::channel::<pb::SliceRequest>(8);
    // The first message opens the session and carries no data, so that a
    // refusal (busy session, bad options) comes back before any input is
    // read.
    let first = pb::SliceRequest {
        session_id: plan.session.clone(),
        rendition: plan.rendition.clone(),
        target_fps: plan.fps.map_or(0, |f| f as i32),
        role: pb::Role::Publish as i32,
        publish: Some(pb::PublishOptions {
            segment_duration_ms: plan.segment_duration_ms,
            window_segments: plan.window,
            echo_frames: false,
        }),
        ..Default::default()
    };
    tx.send(first)
        .await
        .map_err(|_| Open::Refused(anyhow::anyhow!("internal: request stream closed")))?;
    let responses = client
        .stream_slices(ReceiverStream::new(rx))
        .await
        .map_err(|s| {
            let e = call_error(&s, server, &plan.session);
            if is_transport(s.code()) {
                Open::Unreachable(e)
            } else {
                Open::Refused(e)
            }
        })?
        .into_inner();
    let reader = tokio::spawn(read_responses(
        responses,
        server.clone(),
        plan.session.clone(),
        plan.verbose,
        failover,
        accepted_before,
    ));
    Ok((tx, reader))
}

/// `servers[at]` was lost (`why`): the index of the next one to try, after
/// a back-off once every server was tried; fails after [`FAILOVER_FOR`] or
/// when stopped.
async fn fail_over(
    servers: &[&Server],
    at: usize,
    why: &str,
    reached: bool,
    stop: &mut watch::Receiver<bool>,
    before: &mut Summary,
) -> Result<usize> {
    let first_try = before.lost_since.get_or_insert_with(Instant::now);
    if first_try.elapsed() > FAILOVER_FOR {
        bail!(
            "no server took the session within {FAILOVER_FOR:?} (last: {} — {why})",
            servers[at]
        );
    }
    let next = (at + 1) % servers.len();
    if reached {
        eprintln!(
            "lost {} ({why}); continuing the session on {} from the next keyframe",
            servers[at], servers[next]
        );
        before.failovers += 1;
    } else {
        eprintln!(
            "cannot reach {} ({why}); trying {}",
            servers[at], servers[next]
        );
    }
    if next == 0 {
        // Every server was tried: wait a little before the next round.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stopped(stop) => bail!("stopped while no server took the session"),
        }
    }
    Ok(next)
}

impl Summary {
    /// Counts a segment the server reported; returns its audio frames.
    fn count_segment(&mut self, r: &pb::SegmentReady) -> u64 {
        self.segments += 1;
        self.frames_in_segments += u64::from(r.frame_count);
        let audio = r.audio.as_ref().map_or(0, |a| u64::from(a.frame_count));
        self.audio_frames_in_segments += audio;
        audio
    }

    /// Adds what a lost server reported (its segments and drops).
    fn merge(&mut self, other: Summary) {
        self.segments += other.segments;
        self.frames_in_segments += other.frames_in_segments;
        self.audio_frames_in_segments += other.audio_frames_in_segments;
        for (reason, (n, detail)) in other.drops {
            let e = self.drops.entry(reason).or_insert((0, detail));
            e.0 += n;
        }
        // A server took the session once it answered.
        if other.ack.is_some() {
            self.lost_since = None;
        }
    }

    /// The final summary gets what the lost servers reported before it.
    fn add_before(&mut self, before: Summary) {
        self.failovers += before.failovers;
        if before.segments > 0 || before.frames_in_segments > 0 {
            self.segments += before.segments;
            self.frames_in_segments += before.frames_in_segments;
            self.audio_frames_in_segments += before.audio_frames_in_segments;
            // The session's own count covers one server only.
            if let Some(e) = self.ended.as_mut() {
                e.frames += before.frames_in_segments;
                e.segments += before.segments;
            }
        }
        for (reason, (n, detail)) in before.drops {
            let e = self.drops.entry(reason).or_insert((0, detail));
            e.0 += n;
        }
    }
}

/// The response stream ended before we finished sending.
fn ended_early(plan: &Plan, s: &Summary) -> anyhow::Error {
    match &s.ended {
        Some(e) if e.reason == pb::session_ended::Reason::Error as i32 => {
            anyhow::anyhow!("the server rejected {}: {}", plan.input, e.detail)
        }
        Some(e) => anyhow::anyhow!(
            "session {} ended while publishing: {}{}",
            plan.session,
            end_reason_name(e.reason),
            if e.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.detail)
            }
        ),
        None => anyhow::anyhow!("the server closed the stream while publishing"),
    }
}

/// "segment N: F frames + A audio frames, D s, B bytes" (the parts that
/// apply) of a segment the server reported with `audio` AAC frames.
fn segment_text(r: &pb::SegmentReady, audio: u64) -> String {
    let mut t = format!("segment {}: {} frames", r.sequence, r.frame_count);
    if audio > 0 {
        t.push_str(&format!(" + {audio} audio frames"));
    }
    t.push_str(&format!(
        ", {:.3} s",
        r.duration_90k as f64 / TIMESCALE as f64
    ));
    if r.byte_size > 0 {
        t.push_str(&format!(", {} bytes", r.byte_size));
    }
    t
}

/// Reads the publisher's responses to their end, printing them if verbose.
/// `accepted_before`: frames accepted by servers lost earlier (printed
/// progress counts from there).
async fn read_responses(
    mut responses: tonic::Streaming<pb::SliceResponse>,
    server: Server,
    session: String,
    verbose: bool,
    failover: bool,
    accepted_before: u64,
) -> Result<Summary> {
    let mut s = Summary::default();
    // The lost origin's open segment this server closed (failover in a
    // cluster): (segments, frames) its end count leaves out.
    let mut closed_for_lost = (0u64, 0u64);
    loop {
        let msg = match responses.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                // Closed without saying the session ended: the server went
                // away mid-stream.
                if failover && s.ended.is_none() {
                    s.lost = Some("the server closed the stream".into());
                }
                return Ok(s);
            }
            // The connection broke, or the server is going away.
            Err(status) if failover && is_transport(status.code()) => {
                s.lost = Some(lost_because(&status));
                return Ok(s);
            }
            // The session was open: the server went away (stopped or
            // crashed), not a wrong address or protocol.
            Err(status) if s.ack.is_some() && is_transport(status.code()) => {
                bail!(
                    "the connection to {server} broke while publishing session {session} \
                     ({}: {}): the server stopped or crashed; publish again when it is back, or \
                     give several servers (--server A,B) to continue on another",
                    status.code(),
                    status.message()
                );
            }
            Err(status) => {
                let e = status_error(&status, &server, &session);
                return Err(if status.code() == tonic::Code::InvalidArgument {
                    e.context(format!("publishing to session {session}"))
                } else {
                    e
                });
            }
        };
        match msg.event {
            Some(PbEvent::PublishAck(a)) => {
                if verbose {
                    println!(
                        "publishing to session {} at {server} (segments {} ms, window {}){}",
                        a.session_id,
                        a.segment_target_ms,
                        a.window_segments,
                        if a.resumed {
                            ", resuming after a reconnect"
                        } else {
                            ""
                        }
                    );
                }
                if let Some(r) = &a.closed_segment {
                    // Accepted by the lost origin, closed and listed by
                    // this one: counted once, here.
                    closed_for_lost = (1, u64::from(r.frame_count));
                    let audio = s.count_segment(r);
                    if verbose {
                        println!(
                            "{}, closed by {server} from what the lost server had replicated ({} \
                             frames accepted so far)",
                            segment_text(r, audio),
                            accepted_before + s.frames_in_segments,
                        );
                    }
                }
                s.ack = Some(a);
            }
            Some(PbEvent::SegmentReady(r)) => {
                let audio = s.count_segment(&r);
                if verbose {
                    println!(
                        "{}{}{} ({} frames accepted so far)",
                        segment_text(&r, audio),
                        if r.discontinuity {
                            ", discontinuity"
                        } else {
                            ""
                        },
                        if r.keyframe_aligned {
                            ""
                        } else {
                            ", no keyframe (forced cut)"
                        },
                        accepted_before + s.frames_in_segments,
                    );
                }
            }
            // This stream of events fell behind (it was read too slowly
            // while the publisher sent faster than real time): the
            // session lost nothing, this report lost lines.
            Some(PbEvent::Lagged(l)) if verbose => {
                println!(
                    "the server skipped {} of its items to this publisher's responses (they were \
                     read too slowly): segment lines are missing from here; the session lost \
                     nothing (its playlists list every segment)",
                    l.skipped_frames
                );
            }
            // A notice: nothing was dropped.
            Some(PbEvent::FrameDropped(d)) if d.count == 0 && verbose => {
                println!("note ({}): {}", drop_reason_name(d.reason), d.detail)
            }
            Some(PbEvent::FrameDropped(d)) if d.count == 0 => {}
            Some(PbEvent::FrameDropped(d)) => {
                if verbose {
                    println!(
                        "dropped {} ({}): {}",
                        dropped_count(d.reason, u64::from(d.count)),
                        drop_reason_name(d.reason),
                        d.detail
                    );
                }
                let e = s.drops.entry(d.reason).or_insert((0, d.detail.clone()));
                e.0 = e.0.max(d.total);
            }
            Some(PbEvent::SessionEnded(e)) => {
                if verbose && e.reason != pb::session_ended::Reason::EndOfStream as i32 {
                    println!(
                        "session ended: {}{}",
                        end_reason_name(e.reason),
                        if e.detail.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", e.detail)
                        }
                    );
                }
                if failover && e.reason == pb::session_ended::Reason::ServerShutdown as i32 {
                    s.lost = Some("the server shut down".into());
                }
                let mut e = e;
                if s.ack.as_ref().is_some_and(|a| a.resumed) {
                    // This stream continued a session other streams
                    // published into on this server (a reconnect): the
                    // session's count holds theirs too; ours is what it
                    // reported to us.
                    e.segments = s.segments;
                    e.frames = s.frames_in_segments;
                } else {
                    // The session's own count is of the frames this server
                    // accepted; the closed segment's were accepted before.
                    e.segments += closed_for_lost.0;
                    e.frames += closed_for_lost.1;
                }
                s.ended = Some(e);
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct Sent {
    bytes: u64,
    messages: u64,
    frames: u64,
}

enum Feed {
    Chunks(Reader),
    Units(Reader, Box<AuCutter>),
    // Boxed: the engine's state is large and this enum lives on the stack.
    Paced(Box<AuSource>, Box<Pacing>),
}

impl Feed {
    /// The next server takes the session: a paced feed goes on from the
    /// next keyframe (the others from where they are; the server drops
    /// what it cannot start from).
    fn resync(&mut self) {
        if let Feed::Paced(_, pacing) = self {
            pacing.resync = true;
        }
    }

    /// Sends the input; returns when it is done, when `stop` is set, or when
    /// the request stream closed (the caller then hears why from the
    /// response reader).
    async fn feed(
        &mut self,
        plan: &Plan,
        tx: &mpsc::Sender<pb::SliceRequest>,
        stop: &mut watch::Receiver<bool>,
        sent: &mut Sent,
    ) -> Result<()> {
        match self {
            Feed::Chunks(reader) => feed_chunks(plan, reader, tx, stop, sent).await,
            Feed::Units(reader, cutter) => feed_units(plan, reader, cutter, tx, stop, sent).await,
            Feed::Paced(src, pacing) => feed_paced(plan, src, pacing, tx, stop, sent).await,
        }
    }
}

async fn feed_chunks(
    plan: &Plan,
    reader: &mut Reader,
    tx: &mpsc::Sender<pb::SliceRequest>,
    stop: &mut watch::Receiver<bool>,
    sent: &mut Sent,
) -> Result<()> {
    let mut lap_bytes = 0u64;
    loop {
        let mut buf = vec![0u8; plan.chunk_size];
        let n = tokio::select! {
            r = read_full(reader, &mut buf) => r.with_context(|| format!("cannot read {}", plan.input))?,
            _ = stopped(stop) => return Ok(()),
        };
        if n == 0 {
            if !plan.looping {
                return Ok(());
            }
            if lap_bytes == 0 {
                bail!("{} is empty: nothing to loop", plan.input);
            }
            lap_bytes = 0;
            *reader = plan.input.open().await?;
            continue;
        }
        buf.truncate(n);
        lap_bytes += n as u64;
        let req = pb::SliceRequest {
            data: Bytes::from(buf),
            ..Default::default()
        };
        // Waits while HTTP/2 flow control holds us back: "as fast as the
        // server accepts".
        tokio::select! {
            r = tx.send(req) => if r.is_err() { return Ok(()) },
            _ = stopped(stop) => return Ok(()),
        }
        sent.bytes += n as u64;
        sent.messages += 1;
    }
}

/// Sends a live input (a pipe) an access unit per message, each as soon as
/// it is complete and marked `end_of_access_unit`, so the server emits it
/// at once: `ffmpeg ... -f h264 - | liveslice publish -` plays smoothly
/// without --realtime.
async fn feed_units(
    plan: &Plan,
    reader: &mut Reader,
    cutter: &mut AuCutter,
    tx: &mpsc::Sender<pb::SliceRequest>,
    stop: &mut watch::Receiver<bool>,
    sent: &mut Sent,
) -> Result<()> {
    let mut buf = vec![0u8; READ_BYTES];
    let mut cuts = Vec::new();
    loop {
        // Whatever has arrived, not a full buffer.
        let n = tokio::select! {
            r = reader.read(&mut buf) => r.with_context(|| format!("cannot read {}", plan.input))?,
            _ = stopped(stop) => return Ok(()),
        };
        if n == 0 {
            cuts.extend(cutter.finish().map(Cut::Partial));
        } else {
            cutter.push(&buf[..n], &mut cuts);
        }
        for cut in cuts.drain(..) {
            let (data, end_of_access_unit) = match cut {
                Cut::Units(b) => (b, true),
                Cut::Partial(b) => (b, false),
            };
            let len = data.len() as u64;
            let req = pb::SliceRequest {
                data,
                end_of_access_unit,
                ..Default::default()
            };
            tokio::select! {
                r = tx.send(req) => if r.is_err() { return Ok(()) },
                _ = stopped(stop) => return Ok(()),
            }
            sent.bytes += len;
            sent.messages += 1;
            sent.frames += u64::from(end_of_access_unit);
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// Fills `buf` unless the input ends first; returns the bytes read.
async fn read_full(reader: &mut Reader, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let m = reader.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    Ok(n)
}

/// Where a paced feed stands: kept across the servers of a failover, so the
/// session goes on at the same pace and capture clock on the next one.
struct Pacing {
    start: Instant,
    start_unix: u64,
    /// Ticks added to each lap's times (the engine's timeline restarts at 0
    /// when the file is read again).
    lap_offset: u64,
    lap_end: u64,
    lap_frames: u64,
    /// A camera stamps a picture when it is captured (its presentation
    /// time); a B-frame encoder emits it once every picture it depends on
    /// was captured too. So frames go out at their decode time plus the
    /// largest PTS - DTS so far (the encoder's reorder delay), and their
    /// capture times are never ahead of the wall clock when they are sent.
    delay: u64,
    /// The audio track's next frame (index, lap).
    audio_next: usize,
    audio_lap: u64,
    /// The audio starts with the first presented video frame (ns).
    audio_base: Option<u64>,
    /// A new server takes the session: skip to the next keyframe (and the
    /// audio to it), which it can start from.
    resync: bool,
    /// Presentation time (ticks) of the first frame: capture times count
    /// from it, so the same picture of two encodings of one source (with
    /// and without B-frames) gets the same capture time.
    origin: Option<u64>,
}

impl Pacing {
    /// Time 0 is now, or `start_at_ms` (Unix ms) when given.
    fn new(start_at_ms: Option<u64>) -> Self {
        let now = now_unix_ns();
        let (start, start_unix) = match start_at_ms.map(|ms| ms.saturating_mul(1_000_000)) {
            Some(at) if at >= now => (Instant::now() + Duration::from_nanos(at - now), at),
            Some(at) => {
                let ago = Duration::from_nanos(now - at);
                match Instant::now().checked_sub(ago) {
                    Some(i) => (i, at),
                    None => (Instant::now(), now),
                }
            }
            None => (Instant::now(), now),
        };
        Self {
            start,
            start_unix,
            origin: None,
            lap_offset: 0,
            lap_end: 0,
            lap_frames: 0,
            delay: 0,
            audio_next: 0,
            audio_lap: 0,
            audio_base: None,
            resync: false,
        }
    }
}

async fn feed_paced(
    plan: &Plan,
    src: &mut AuSource,
    p: &mut Pacing,
    tx: &mpsc::Sender<pb::SliceRequest>,
    stop: &mut watch::Receiver<bool>,
    sent: &mut Sent,
) -> Result<()> {
    let (start, start_unix) = (p.start, p.start_unix);
    loop {
        let next = tokio::select! {
            r = src.next() => r?,
            _ = stopped(stop) => return Ok(()),
        };
        let Some(f) = next else {
            if p.lap_frames == 0 {
                if sent.frames == 0 {
                    bail!(
                        "{} contains no H.264 access units{}",
                        plan.input,
                        src.drops_text()
                    );
                }
                bail!("{}: a lap produced no frames", plan.input);
            }
            if !plan.looping {
                // The audio left after the last video frame goes too.
                if let (Some(track), Some(base)) = (&plan.audio, p.audio_base) {
                    for (data, t) in track.frames.iter().skip(p.audio_next) {
                        let t = base + p.audio_lap + t;
                        if plan.realtime {
                            tokio::select! {
                                _ = tokio::time::sleep_until(start + Duration::from_nanos(t)) => {}
                                _ = stopped(stop) => return Ok(()),
                            }
                        }
                        let req = pb::SliceRequest {
                            data: data.clone(),
                            capture_time_ns: Some(start_unix + t),
                            track: pb::Track::Audio as i32,
                            ..Default::default()
                        };
                        if tx.send(req).await.is_err() {
                            return Ok(());
                        }
                        sent.bytes += data.len() as u64;
                        sent.messages += 1;
                        p.audio_next += 1;
                    }
                }
                return Ok(());
            }
            p.lap_offset += p.lap_end;
            p.lap_end = 0;
            p.lap_frames = 0;
            src.rewind(plan).await?;
            continue;
        };
        p.lap_frames += 1;
        p.lap_end = p.lap_end.max(f.dts + u64::from(f.duration.max(1)));
        p.delay = p.delay.max(f.pts.saturating_sub(f.dts));
        let origin = *p.origin.get_or_insert(f.pts);
        let dts = p.lap_offset + f.dts;
        // Capture time, from the first frame's presentation.
        let pts = (p.lap_offset + f.pts).saturating_sub(origin);
        let at = start + Duration::from_nanos(ticks_to_ns(dts + p.delay));
        // After a failover the new server starts at a keyframe: what comes
        // before it is not sent (it would be dropped there), the audio
        // before it neither.
        let skip = p.resync && !f.random_access;
        let first_after_resync = p.resync && !skip;
        if !skip {
            p.resync = false;
        }
        // The audio captured up to this frame's send time goes first, each
        // frame at its own time (capture times on the video's clock).
        if let Some(track) = &plan.audio {
            let base = *p.audio_base.get_or_insert(ticks_to_ns(pts));
            let until = ticks_to_ns(pts);
            loop {
                let Some((data, t)) = track.frames.get(p.audio_next) else {
                    if !plan.looping {
                        break;
                    }
                    p.audio_next = 0;
                    p.audio_lap += track.length_ns;
                    continue;
                };
                let t = base + p.audio_lap + t;
                if t > until {
                    break;
                }
                if skip || (first_after_resync && t < until) {
                    p.audio_next += 1;
                    continue;
                }
                if plan.realtime {
                    tokio::select! {
                        _ = tokio::time::sleep_until(start + Duration::from_nanos(t)) => {}
                        _ = stopped(stop) => return Ok(()),
                    }
                }
                let req = pb::SliceRequest {
                    data: data.clone(),
                    capture_time_ns: Some(start_unix + t),
                    track: pb::Track::Audio as i32,
                    ..Default::default()
                };
                tokio::select! {
                    r = tx.send(req) => if r.is_err() { return Ok(()) },
                    _ = stopped(stop) => return Ok(()),
                }
                sent.bytes += data.len() as u64;
                sent.messages += 1;
                p.audio_next += 1;
            }
        }
        if plan.realtime {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = stopped(stop) => return Ok(()),
            }
        }
        if skip {
            continue;
        }
        let req = pb::SliceRequest {
            data: f.data.clone(),
            capture_time_ns: Some(start_unix + ticks_to_ns(pts)),
            end_of_access_unit: true,
            ..Default::default()
        };
        tokio::select! {
            r = tx.send(req) => if r.is_err() { return Ok(()) },
            _ = stopped(stop) => return Ok(()),
        }
        sent.bytes += f.data.len() as u64;
        sent.messages += 1;
        sent.frames += 1;
    }
}

/// Access units of the input with their times, found by running the
/// server's engine over it as it is read (so stdin streams work, and a
/// large file is never held whole).
pub struct AuSource {
    input: Input,
    reader: Reader,
    pipeline: SessionPipeline,
    queue: VecDeque<Arc<Frame>>,
    events: Vec<Event>,
    eof: bool,
    /// Drops of the last lap: (reason, total, first detail).
    drops: BTreeMap<liveslice_engine::DropReason, (u64, String)>,
}

const READ_BYTES: usize = 64 * 1024;

impl AuSource {
    pub async fn open(plan: &Plan) -> Result<Self> {
        Ok(Self {
            input: plan.input.clone(),
            reader: plan.input.open().await?,
            pipeline: SessionPipeline::new(pipeline_options(plan.fps)),
            queue: VecDeque::new(),
            events: Vec::new(),
            eof: false,
            drops: BTreeMap::new(),
        })
    }

    async fn rewind(&mut self, plan: &Plan) -> Result<()> {
        self.reader = plan.input.open().await?;
        self.pipeline = SessionPipeline::new(pipeline_options(plan.fps));
        self.queue.clear();
        self.eof = false;
        self.drops.clear();
        Ok(())
    }

    /// The next access unit (Annex B, SPS/PPS in front of keyframes), or
    /// `None` at the end of the input.
    pub async fn next(&mut self) -> Result<Option<Arc<Frame>>> {
        loop {
            if let Some(f) = self.queue.pop_front() {
                return Ok(Some(f));
            }
            if self.eof {
                return Ok(None);
            }
            let mut buf = vec![0u8; READ_BYTES];
            let n = self
                .reader
                .read(&mut buf)
                .await
                .with_context(|| format!("cannot read {}", self.input))?;
            // Only the engine's framing and times are used; its clock
            // inputs do not matter here.
            if n == 0 {
                self.pipeline.finish(0, &mut self.events);
                self.eof = true;
            } else {
                buf.truncate(n);
                self.pipeline
                    .push(Bytes::from(buf), None, 0, false, &mut self.events);
            }
            for e in self.events.drain(..) {
                match e {
                    Event::Frame(f) => self.queue.push_back(f),
                    Event::Dropped(d) => {
                        let e = self.drops.entry(d.reason).or_insert((0, d.detail));
                        e.0 = d.total;
                    }
                    Event::Fatal(e) => bail!("{}: {e}", self.input),
                    _ => {}
                }
            }
        }
    }

    fn drops_text(&self) -> String {
        if self.drops.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .drops
            .iter()
            .map(|(r, (n, detail))| format!("{n} {}: {detail}", r.as_str()))
            .collect();
        format!(" ({})", parts.join("; "))
    }
}

/// The engine options a server would use for this publisher: its defaults,
/// with the publisher's frame rate.
fn pipeline_options(fps: Option<u32>) -> PipelineOptions {
    let mut o = liveslice_server::config::Config::default().pipeline();
    o.target_rate = fps.map(|f| FrameRate::new(f, 1));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_server_is_said_in_words_first() {
        let s = tonic::Status::unknown("h2 protocol error: error reading a body from connection");
        assert_eq!(
            lost_because(&s),
            "the connection broke: h2 protocol error: error reading a body from connection"
        );
        assert_eq!(
            lost_because(&tonic::Status::unavailable("")),
            "the server is unavailable or going away"
        );
    }
}

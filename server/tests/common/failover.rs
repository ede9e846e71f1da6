//! Publisher failover across origins, for the cluster and browser tests: an
//! origin in its own process (to SIGKILL), and a live publisher that fails
//! over to the next origin as `liveslice publish --server A,B` does.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use liveslice_proto::v1 as pb;

use super::nats::Nats;
use super::{av, publish, testdata};

/// An origin in its own process (so a test can SIGKILL it), with `args`
/// after the cluster flags: the child, its gRPC address and its HTTP base
/// URL.
pub fn origin_process(
    nats: &Nats,
    node: &str,
    args: &[&str],
) -> (std::process::Child, std::net::SocketAddr, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_liveslice-server"))
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--node-id",
            node,
            "--cluster",
        ])
        .arg(nats.url())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("liveslice-server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    // "liveslice-server: gRPC on 127.0.0.1:P, HTTP on http://127.0.0.1:Q/"
    let first = lines.next().expect("a first line").expect("text");
    let grpc = first
        .split("gRPC on ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the gRPC address in {first:?}"));
    let http = first
        .split("HTTP on ")
        .nth(1)
        .expect("the HTTP address")
        .trim_end_matches('/')
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    (child, grpc, http)
}

/// One live message: (track, data, media time in ns within a lap, a video
/// keyframe).
pub type LiveMessage = (pb::Track, bytes::Bytes, u64, bool);

/// A stream to publish live, looping: `baseline_30` (video), or
/// `av_48k_stereo` (video and audio), and the length of one lap, ns.
pub fn live_stream(av: bool) -> (Vec<LiveMessage>, u64) {
    use liveslice_server::engine::pipeline::{frames_of, PipelineOptions};
    use liveslice_server::engine::TIMESCALE;
    let name = if av { "av_48k_stereo" } else { "baseline_30" };
    let video = frames_of(
        bytes::Bytes::from(testdata(&format!("{name}.h264"))),
        PipelineOptions::default(),
    );
    let lap = video.len() as u64 * 1_000_000_000 / 30;
    let mut out: Vec<LiveMessage> = video
        .iter()
        .map(|f| {
            let t = f.dts * 1_000_000_000 / TIMESCALE;
            (pb::Track::Video, f.data.clone(), t, f.is_keyframe)
        })
        .collect();
    if av {
        // The AAC frames that end within the lap (1,024 samples at 48 kHz).
        let frame_ns = 1024 * 1_000_000_000 / 48_000;
        let aac = av::adts_frames(&testdata(&format!("{name}.aac")));
        for (n, f) in aac.into_iter().enumerate() {
            let t = n as u64 * frame_ns;
            if t + frame_ns <= lap {
                out.push((pb::Track::Audio, f, t, false));
            }
        }
    }
    out.sort_by_key(|m| m.2);
    (out, lap)
}

/// `av_44k_mono.aac` as a real-time audio-only stream, looping (every AAC
/// frame a place a failed-over publisher may go on from): (messages, the
/// length of one lap in ns).
pub fn live_audio_stream() -> (Vec<LiveMessage>, u64) {
    let aac = av::adts_frames(&testdata("av_44k_mono.aac"));
    let at = |n: u64| n * 1024 * 1_000_000_000 / 44_100;
    let lap = at(aac.len() as u64);
    let out = aac
        .into_iter()
        .enumerate()
        .map(|(n, f)| (pb::Track::Audio, f, at(n as u64), true))
        .collect();
    (out, lap)
}

/// Publishes `stream` in real time with capture times, looping, to the
/// first of `servers` that takes it, and to the next one when its stream
/// breaks (as `liveslice publish --server A,B` does), going on at the next
/// video keyframe; until `stop`, then ends the stream. Returns what the
/// failovers showed.
pub fn publish_with_failover(
    servers: Vec<std::net::SocketAddr>,
    session: &'static str,
    stream: (Vec<LiveMessage>, u64),
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Failovers> {
    publish_with_failover_then(servers, session, stream, stop, true)
}

/// [`publish_with_failover`]; `audio_after_failover` false: the publisher
/// comes back without its audio track (video only from the next origin
/// on).
pub fn publish_with_failover_then(
    servers: Vec<std::net::SocketAddr>,
    session: &'static str,
    (stream, lap): (Vec<LiveMessage>, u64),
    stop: Arc<AtomicBool>,
    audio_after_failover: bool,
) -> tokio::task::JoinHandle<Failovers> {
    tokio::spawn(async move {
        let connect = |addr: std::net::SocketAddr| async move {
            let mut c =
                pb::slice_service_client::SliceServiceClient::connect(format!("http://{addr}"))
                    .await
                    .ok()?;
            publish(&mut c, session, Default::default()).await.ok()
        };
        let mut server = 0;
        let mut p = connect(servers[server])
            .await
            .expect("the first origin takes the publisher");
        let mut failovers = Failovers::default();
        let start = std::time::Instant::now();
        let t0 = liveslice_server::session::now_unix_ns();
        let (mut i, mut need_keyframe) = (0usize, false);
        while !stop.load(Ordering::Relaxed) {
            let (track, data, at, keyframe) = &stream[i % stream.len()];
            let due = Duration::from_nanos((i / stream.len()) as u64 * lap + at);
            i += 1;
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            if need_keyframe && !keyframe {
                continue;
            }
            if failovers.count > 0 && !audio_after_failover && *track == pb::Track::Audio {
                continue;
            }
            need_keyframe = false;
            let msg = pb::SliceRequest {
                data: data.clone(),
                track: *track as i32,
                capture_time_ns: Some(t0 + due.as_nanos() as u64),
                end_of_access_unit: *track == pb::Track::Video,
                ..Default::default()
            };
            if p.tx.send(msg).await.is_err() {
                // The origin is gone: the next one, from a keyframe.
                server += 1;
                assert!(server < servers.len(), "no origin left to fail over to");
                p = connect(servers[server])
                    .await
                    .expect("the next origin takes the publisher");
                failovers.count += 1;
                // The next origin's ack: the lost one's open segment, closed.
                match p.responses.message().await {
                    Ok(Some(pb::SliceResponse {
                        event: Some(pb::slice_response::Event::PublishAck(a)),
                        ..
                    })) => failovers.closed_segments.extend(a.closed_segment),
                    other => panic!("the next origin's first answer is its ack: {other:?}"),
                }
                need_keyframe = true;
            }
        }
        p.end().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        failovers
    })
}

/// What [`publish_with_failover`] saw.
#[derive(Debug, Default)]
pub struct Failovers {
    /// Times it moved to the next origin.
    pub count: u32,
    /// The segments the next origins' acks said they closed for the lost
    /// ones (`PublishAck.closed_segment`).
    pub closed_segments: Vec<pb::SegmentReady>,
}

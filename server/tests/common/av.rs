//! Publishing video and audio together (tests of the audio track, and of
//! its replication).

use std::time::Duration;

use bytes::Bytes;
use liveslice_proto::v1 as pb;
use liveslice_server::engine::audio::adts::AdtsHeader;
use liveslice_server::engine::pipeline::frames_of;
use liveslice_server::engine::{PipelineOptions, TIMESCALE};

use super::{client, collect, publish, testdata};

/// The ADTS frames of a file, each with its header.
pub fn adts_frames(data: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 7 <= data.len() {
        let h = AdtsHeader::parse(&data[pos..]).unwrap().unwrap();
        out.push(Bytes::copy_from_slice(&data[pos..pos + h.frame_len]));
        pos += h.frame_len;
    }
    out
}

/// One message to send: (track, data, media time in ns for ordering).
pub fn messages(name: &str, audio: bool, video: bool) -> Vec<(pb::Track, Bytes, u64)> {
    av_messages(
        &format!("{name}.h264"),
        &format!("{name}.aac"),
        audio,
        video,
    )
}

/// [`messages`] of any video file and ADTS file.
pub fn av_messages(
    video_file: &str,
    audio_file: &str,
    audio: bool,
    video: bool,
) -> Vec<(pb::Track, Bytes, u64)> {
    let mut out = Vec::new();
    if video {
        let v = frames_of(
            Bytes::from(testdata(video_file)),
            PipelineOptions::default(),
        );
        for f in v {
            out.push((
                pb::Track::Video,
                f.data.clone(),
                f.dts * 1_000_000_000 / TIMESCALE,
            ));
        }
    }
    if audio {
        let a = adts_frames(&testdata(audio_file));
        let rate = AdtsHeader::parse(&a[0]).unwrap().unwrap().sample_rate();
        for (n, f) in a.into_iter().enumerate() {
            out.push((
                pb::Track::Audio,
                f,
                n as u64 * 1024 * 1_000_000_000 / u64::from(rate),
            ));
        }
    }
    out.sort_by_key(|m| m.2);
    out
}

/// Publishes the messages (as fast as they go) and reads the publisher's
/// responses to the end.
pub async fn publish_av(
    server: &liveslice_server::app::Running,
    id: &str,
    msgs: Vec<(pb::Track, Bytes, u64)>,
) -> Vec<pb::SliceResponse> {
    let mut c = client(server).await;
    let mut p = publish(&mut c, id, Default::default()).await.unwrap();
    let tx = p.tx.clone();
    let sender = tokio::spawn(async move {
        for (track, data, _) in msgs {
            tx.send(pb::SliceRequest {
                data,
                track: track as i32,
                end_of_access_unit: track == pb::Track::Video,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        tx.send(pb::SliceRequest {
            end_of_stream: true,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    drop(p.tx);
    let (responses, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    sender.await.unwrap();
    assert!(status.is_none(), "{status:?}");
    responses
}

/// ffprobe of a URL: per stream (codec_type, codec_name, packets, duration
/// s from its first packet's PTS to its last packet's end). Packets, not
/// decoded frames: the frames each output carries (ffmpeg decodes them
/// all, checked with `decode_errors`).
pub fn probe(url: &str) -> Vec<(String, String, u64, f64)> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=index,codec_type,codec_name:packet=stream_index,pts_time,duration_time",
            "-of",
            "json",
            url,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let num = |x: &serde_json::Value| x.as_str().and_then(|n| n.parse::<f64>().ok());
    let mut streams = Vec::new();
    for st in v["streams"].as_array().cloned().unwrap_or_default() {
        let index = st["index"].as_u64().unwrap_or(0);
        let (mut n, mut first, mut end) = (0u64, f64::MAX, f64::MIN);
        for p in v["packets"].as_array().cloned().unwrap_or_default() {
            if p["stream_index"].as_u64() != Some(index) {
                continue;
            }
            n += 1;
            if let Some(t) = num(&p["pts_time"]) {
                first = first.min(t);
                end = end.max(t + num(&p["duration_time"]).unwrap_or(0.0));
            }
        }
        streams.push((
            st["codec_type"].as_str().unwrap_or("").to_string(),
            st["codec_name"].as_str().unwrap_or("").to_string(),
            n,
            if n > 0 { end - first } else { 0.0 },
        ));
    }
    streams
}

pub async fn probe_async(url: String) -> Vec<(String, String, u64, f64)> {
    tokio::task::spawn_blocking(move || probe(&url))
        .await
        .unwrap()
}

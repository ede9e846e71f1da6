//! AAC audio end to end (issue 16): the committed A/V test streams
//! (`testdata/av_*.{h264,aac}`, made by `testdata/make-streams.sh audio`,
//! expected values in `NAME.expect.toml`) published over real gRPC as one
//! session's two tracks, then checked over real HTTP with ffprobe/ffmpeg:
//! MPEG-TS (both tracks in the same segments), HLS CMAF (the multivariant
//! playlist with its audio rendition), DASH (an audio AdaptationSet). Both
//! streams are there, their durations agree within one audio frame, every
//! audio frame sent comes out, ffmpeg decodes with zero errors; gRPC frames
//! carry their track. Also: audio-only sessions, and bad audio reported
//! while the session goes on.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::av::*;
use common::*;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event as PbEvent;

const STREAMS: [&str; 2] = ["av_48k_stereo", "av_44k_mono"];

fn expect(name: &str) -> toml::Table {
    let text = std::fs::read_to_string(format!(
        "{}/../testdata/{name}.expect.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    text.parse().unwrap()
}

fn int(t: &toml::Table, k: &str) -> u64 {
    t[k].as_integer().unwrap() as u64
}

async fn decode_errors(url: String) -> String {
    tokio::task::spawn_blocking(move || ffmpeg_frames(&url).1)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn av_sessions_play_as_ts_hls_and_dash_with_every_audio_frame() {
    if !have_ffmpeg("audio output checked with ffprobe") {
        return;
    }
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    for name in STREAMS {
        let e = expect(name);
        let (video_frames, audio_frames) = (int(&e, "video_frames"), int(&e, "audio_frames"));
        let rate = int(&e, "sample_rate");
        let frame_s = 1024.0 / rate as f64;

        // A subscriber with audio frames, joined before the publisher.
        let mut c = client(&server).await;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(pb::SliceRequest {
            session_id: name.into(),
            role: pb::Role::Subscribe as i32,
            subscribe: Some(pb::SubscribeOptions {
                events: true,
                audio: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        let sub = tokio::spawn(async move {
            let mut s = c
                .stream_slices(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let got = collect(&mut s, Duration::from_secs(30)).await;
            drop(tx);
            got
        });
        tokio::time::sleep(Duration::from_millis(100)).await;

        let responses = publish_av(&server, name, messages(name, true, true)).await;
        let drops: Vec<_> = responses
            .iter()
            .filter_map(|r| match &r.event {
                Some(PbEvent::FrameDropped(d)) => Some(d.detail.clone()),
                _ => None,
            })
            .collect();
        assert!(drops.is_empty(), "{name}: {drops:?}");
        let segments: Vec<pb::SegmentReady> = responses
            .iter()
            .filter_map(|r| match &r.event {
                Some(PbEvent::SegmentReady(s)) => Some(s.clone()),
                _ => None,
            })
            .collect();
        let audio_out: u32 = segments
            .iter()
            .map(|s| s.audio.as_ref().map_or(0, |a| a.frame_count))
            .sum();
        assert_eq!(
            u64::from(audio_out),
            audio_frames,
            "{name}: audio frames in segments"
        );
        assert!(segments
            .iter()
            .all(|s| s.audio.as_ref().is_some_and(|a| a.timescale == rate as u32)));

        // gRPC: every frame with its track; SessionInfo names the audio.
        let (sub_responses, status) = sub.await.unwrap();
        assert!(status.is_none(), "{status:?}");
        let (mut v, mut a) = (0u64, 0u64);
        let mut info_audio = None;
        for r in &sub_responses {
            match &r.event {
                Some(PbEvent::Frame(f)) if f.track == pb::Track::Audio as i32 => {
                    a += 1;
                    assert_eq!(&r.data[..2], &[0xFF, 0xF1], "audio frames are ADTS");
                }
                Some(PbEvent::Frame(_)) => v += 1,
                Some(PbEvent::SessionInfo(i)) if !i.audio_codec.is_empty() => {
                    info_audio =
                        Some((i.audio_codec.clone(), i.audio_sample_rate, i.audio_channels))
                }
                _ => {}
            }
        }
        assert_eq!(
            (v, a),
            (video_frames, audio_frames),
            "{name}: gRPC frames by track"
        );
        assert_eq!(
            info_audio,
            Some((
                e["audio_codec"].as_str().unwrap().to_string(),
                rate as u32,
                int(&e, "channels") as u32
            )),
            "{name}"
        );

        // The console's JSON names the audio track; the audio init segment
        // is audio/mp4.
        let (status, _, api) = get(&format!("{base}/api/sessions/{name}")).await;
        assert_eq!(status, 200);
        let api: serde_json::Value = serde_json::from_slice(&api).unwrap();
        let summary = api.get("session").unwrap_or(&api);
        assert_eq!(
            summary["audio_codec"],
            e["audio_codec"].as_str().unwrap(),
            "{api}"
        );
        assert_eq!(summary["audio_sample_rate"], rate, "{api}");
        assert_eq!(summary["audio_only"], false, "{api}");
        let (status, h, _) = get(&format!("{base}/live/{name}/audio-init.mp4")).await;
        assert_eq!(status, 200);
        let ct = h
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str());
        assert_eq!(ct, Some("audio/mp4"));

        // HTTP: the multivariant playlist names both codecs and the audio
        // rendition; the audio playlist and the MPD exist.
        let (status, _, master) = get(&format!("{base}/live/{name}/master.m3u8")).await;
        let master = String::from_utf8(master).unwrap();
        assert_eq!(status, 200, "{master}");
        assert!(master.contains("#EXT-X-MEDIA:TYPE=AUDIO"), "{master}");
        assert!(master.contains("mp4a.40.2"), "{master}");
        let (_, _, mpd) = get(&format!("{base}/live/{name}/manifest.mpd")).await;
        let mpd = String::from_utf8(mpd).unwrap();
        assert!(mpd.contains("contentType=\"audio\""), "{mpd}");
        assert!(
            mpd.contains(&format!("audioSamplingRate=\"{rate}\"")),
            "{mpd}"
        );

        // Each output through ffprobe: both streams, every frame, the
        // durations within one audio frame; ffmpeg decodes with no error.
        for path in ["ts/index.m3u8", "master.m3u8", "manifest.mpd"] {
            let url = format!("{base}/live/{name}/{path}");
            let streams = probe_async(url.clone()).await;
            let video = streams.iter().find(|s| s.0 == "video");
            let audio = streams.iter().find(|s| s.0 == "audio");
            let (Some(video), Some(audio)) = (video, audio) else {
                panic!("{name} {path}: streams {streams:?}");
            };
            assert_eq!(audio.1, "aac", "{name} {path}");
            if path == "manifest.mpd" {
                // ffmpeg's DASH demuxer (5.1) stops one packet short at the
                // end of a static MPD with two AdaptationSets (the last
                // frame of one track or the other); the same CMAF files
                // through the multivariant playlist give every frame.
                let (v, a) = (video.2, audio.2);
                assert!(
                    v <= video_frames
                        && a <= audio_frames
                        && v + a + 1 >= video_frames + audio_frames,
                    "{name} {path}: {streams:?}"
                );
            } else {
                assert_eq!(video.2, video_frames, "{name} {path}: video frames");
                assert_eq!(
                    audio.2, audio_frames,
                    "{name} {path}: audio frames in == out"
                );
            }
            {
                assert!(
                    (video.3 - audio.3).abs() <= frame_s + 1e-3,
                    "{name} {path}: video {} s, audio {} s",
                    video.3,
                    audio.3
                );
            }
            assert_eq!(decode_errors(url).await, "", "{name} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_sessions_play_as_ts_and_hls() {
    if !have_ffmpeg("audio-only output checked with ffprobe") {
        return;
    }
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    let name = "av_44k_mono";
    let e = expect(name);
    let responses = publish_av(&server, "radio", messages(name, true, false)).await;
    let segments: Vec<pb::SegmentReady> = responses
        .iter()
        .filter_map(|r| match &r.event {
            Some(PbEvent::SegmentReady(s)) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert!(segments.len() >= 2, "{segments:?}");
    assert!(segments.iter().all(|s| s.frame_count == 0));
    let (_, _, master) = get(&format!("{base}/live/radio/master.m3u8")).await;
    let master = String::from_utf8(master).unwrap();
    assert!(master.contains("CODECS=\"mp4a.40.2\""), "{master}");
    for path in ["ts/index.m3u8", "index.m3u8", "audio.m3u8"] {
        let url = format!("{base}/live/radio/{path}");
        let streams = probe_async(url.clone()).await;
        assert_eq!(streams.len(), 1, "{path}: {streams:?}");
        assert_eq!(streams[0].0, "audio", "{path}");
        assert_eq!(
            streams[0].2,
            int(&e, "audio_frames"),
            "{path}: audio frames in == out"
        );
        assert_eq!(decode_errors(url).await, "", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_audio_is_reported_and_the_session_goes_on() {
    let server = start(test_config()).await;
    let mut msgs = messages("av_48k_stereo", true, true);
    // Garbage on the audio track, and raw frames without a config.
    msgs.insert(
        40,
        (
            pb::Track::Audio,
            Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8, 9]),
            0,
        ),
    );
    let responses = publish_av(&server, "bad", msgs).await;
    let drops: Vec<pb::FrameDropped> = responses
        .iter()
        .filter_map(|r| match &r.event {
            Some(PbEvent::FrameDropped(d)) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert!(
        drops.iter().any(
            |d| d.reason == pb::DropReason::BadAudio as i32 && d.detail.contains("audio bytes")
        ),
        "{drops:?}"
    );
    let frames: u32 = responses
        .iter()
        .filter_map(|r| match &r.event {
            Some(PbEvent::SegmentReady(s)) => Some(s.frame_count),
            _ => None,
        })
        .sum();
    assert_eq!(frames, 120, "the video went on");
    let ended = responses.iter().find_map(|r| match &r.event {
        Some(PbEvent::SessionEnded(e)) => Some(e.reason),
        _ => None,
    });
    assert_eq!(ended, Some(pb::session_ended::Reason::EndOfStream as i32));
}

/// H.265 video with AAC audio: both in the TS (stream types 0x24 and 0x0F)
/// and in HLS CMAF (`hvc1` + the audio rendition), every frame of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_with_audio() {
    if !have_ffmpeg("H.265 + AAC output checked with ffprobe") {
        return;
    }
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    let msgs = av_messages("hevc_closed_30.h265", "av_48k_stereo.aac", true, true);
    publish_av(&server, "hevcav", msgs).await;
    for path in ["ts/index.m3u8", "master.m3u8"] {
        let url = format!("{base}/live/hevcav/{path}");
        let streams = probe_async(url.clone()).await;
        let video = streams.iter().find(|s| s.0 == "video");
        let audio = streams.iter().find(|s| s.0 == "audio");
        let (Some(video), Some(audio)) = (video, audio) else {
            panic!("{path}: streams {streams:?}");
        };
        assert_eq!((video.1.as_str(), video.2), ("hevc", 120), "{path}");
        assert_eq!((audio.1.as_str(), audio.2), ("aac", 188), "{path}");
        assert!(
            (video.3 - audio.3).abs() <= 1024.0 / 48_000.0 + 1e-3,
            "{path}: {streams:?}"
        );
        assert_eq!(decode_errors(url).await, "", "{path}");
    }
}

/// A gRPC subscriber asking for segment bytes gets the CMAF audio track's
/// init segment once and each segment's audio bytes: joined, they are an
/// MP4 ffprobe reads with every audio frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_segment_bytes_carry_the_audio_track() {
    if !have_ffmpeg("CMAF audio bytes checked with ffprobe") {
        return;
    }
    let server = start(test_config()).await;
    let mut c = client(&server).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SliceRequest {
        session_id: "segbytes".into(),
        role: pb::Role::Subscribe as i32,
        subscribe: Some(pb::SubscribeOptions {
            segments_cmaf: true,
            no_frames: true,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let sub = tokio::spawn(async move {
        let mut s = c
            .stream_slices(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let got = collect(&mut s, Duration::from_secs(30)).await;
        drop(tx);
        got
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish_av(&server, "segbytes", messages("av_48k_stereo", true, true)).await;
    let (responses, _) = sub.await.unwrap();
    let mut mp4 = Vec::new();
    let mut inits = 0;
    for r in &responses {
        if let Some(PbEvent::SegmentReady(s)) = &r.event {
            if !s.audio_cmaf_init.is_empty() {
                inits += 1;
                mp4.extend_from_slice(&s.audio_cmaf_init);
            }
            assert!(!s.audio_cmaf.is_empty(), "segment {}", s.sequence);
            mp4.extend_from_slice(&s.audio_cmaf);
        }
    }
    assert_eq!(inits, 1, "the audio init segment once");
    let dir = tempdir();
    let path = dir.join("audio.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let streams = probe(path.to_str().unwrap());
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(
        (streams[0].1.as_str(), streams[0].2),
        ("aac", 188),
        "{streams:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

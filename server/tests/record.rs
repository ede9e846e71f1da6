//! `--record`: sessions published over real gRPC are written to a real S3
//! API (moto on loopback) or to local files, and play back as VOD with
//! every frame; a store that is down costs recordings, never publishing.

mod common;

use std::time::{Duration, Instant};

use common::s3::{have_moto, Moto};
use common::*;
use liveslice_proto::v1 as pb;
use liveslice_server::app::Running;
use pb::slice_response::Event;

const BUCKET: &str = "rec";

/// Credentials for moto (it accepts any); the same values in every test of
/// this binary, so setting them twice races with nothing.
fn moto_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "liveslice-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "liveslice-test");
}

fn s3_config(moto: &Moto, prefix: &str) -> liveslice_server::config::Config {
    moto_credentials();
    let mut config = test_config();
    config.record.record = Some(format!("s3://{BUCKET}/{prefix}"));
    config.record.record_endpoint = Some(moto.endpoint());
    config.record.record_region = Some("us-east-1".into());
    config
}

/// The segments the publisher was told about (SegmentReady events).
fn segments(responses: &[pb::SliceResponse]) -> Vec<pb::SegmentReady> {
    responses
        .iter()
        .filter_map(|r| match &r.event {
            Some(Event::SegmentReady(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// Publishes `data` into `id` in two halves; `between` runs after the
/// first. Returns the segments made.
async fn publish_in_halves<F: std::future::Future<Output = ()>>(
    server: &Running,
    id: &str,
    data: &[u8],
    between: impl FnOnce() -> F,
) -> Vec<pb::SegmentReady> {
    let mut c = client(server).await;
    let mut p = publish(&mut c, id, Default::default()).await.unwrap();
    let half = data.len() / 2;
    p.send_chunked(&data[..half], &[16 * 1024]).await;
    between().await;
    p.send_chunked(&data[half..], &[16 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let (responses, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    segments(&responses)
}

/// Waits (up to 20 s) until `f` gives something.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lines_with<'a>(text: &'a str, suffix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.ends_with(suffix)).collect()
}

/// Checks a finished recording read through `get` (name → bytes): every
/// segment and init segment is there, the VOD playlists list every segment
/// in order, the EVENT playlist gained ENDLIST, the MPD is static.
fn check_recording(get: &dyn Fn(&str) -> Option<Vec<u8>>, segs: &[pb::SegmentReady]) {
    let text = |name: &str| {
        String::from_utf8(get(name).unwrap_or_else(|| panic!("{name} is recorded"))).expect("UTF-8")
    };
    let vod = text("vod.m3u8");
    assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{vod}");
    assert!(vod.ends_with("#EXT-X-ENDLIST\n"), "{vod}");
    let listed = lines_with(&vod, ".m4s");
    let want: Vec<String> = segs
        .iter()
        .map(|s| format!("seg-{}.m4s", s.sequence))
        .collect();
    assert_eq!(listed, want, "the VOD playlist lists every segment");
    let ts_vod = text("ts/vod.m3u8");
    assert_eq!(lines_with(&ts_vod, ".ts").len(), segs.len());
    for s in segs {
        let m4s = get(&format!("seg-{}.m4s", s.sequence)).expect("segment recorded");
        assert!(m4s.len() > 100);
        assert!(get(&format!("ts/seg-{}.ts", s.sequence)).is_some());
    }
    assert!(get("init-0.mp4").is_some());
    let event = text("index.m3u8");
    assert!(event.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"));
    assert!(event.ends_with("#EXT-X-ENDLIST\n"));
    assert_eq!(lines_with(&event, ".m4s").len(), segs.len());
    let mpd = text("manifest.mpd");
    assert!(mpd.contains(r#"type="static""#), "{mpd}");
}

/// ffmpeg decodes `url` with no errors and `frames` frames.
async fn plays(url: String, frames: usize) {
    let shown = url.clone();
    let (got, errors) = tokio::task::spawn_blocking(move || ffmpeg_frames(&url))
        .await
        .unwrap();
    assert_eq!(errors, "", "{shown}");
    assert_eq!(got, frames, "{shown}: every frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_recorded_in_s3_plays_as_vod_with_every_frame() {
    if !have_moto("recording to S3") || !have_ffmpeg("recorded VOD checked with ffmpeg") {
        return;
    }
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let server = start(s3_config(&moto, "live/rec")).await;
    let data = testdata("high_bframes_30.h264");
    let (frames, errors) = ffmpeg_decode_annexb(&data);
    assert_eq!(errors, "");

    let segs = publish_in_halves(&server, "cam1", &data, || async {
        // During the session: an EVENT playlist with what is written so
        // far, no ENDLIST, every segment it names already there.
        let event = eventually("the EVENT playlist during the session", || {
            moto.get(BUCKET, "live/rec/cam1/index.m3u8")
        })
        .await;
        let event = String::from_utf8(event).unwrap();
        assert!(event.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"), "{event}");
        assert!(!event.contains("#EXT-X-ENDLIST"), "{event}");
        for seg in lines_with(&event, ".m4s") {
            assert!(moto.get(BUCKET, &format!("live/rec/cam1/{seg}")).is_some());
        }
        assert!(moto.get(BUCKET, "live/rec/cam1/vod.m3u8").is_none());
    })
    .await;
    assert!(segs.len() >= 3);
    let total: u32 = segs.iter().map(|s| s.frame_count).sum();
    assert_eq!(total as usize, frames);

    let recorder = server.registry.recorder().expect("recording is on");
    assert!(
        recorder.flush(Duration::from_secs(20)).await,
        "written in 20 s"
    );
    let keys = moto.list(BUCKET, "live/rec/cam1/");
    assert!(
        keys.contains(&"live/rec/cam1/vod.m3u8".to_string()),
        "{keys:?}"
    );
    check_recording(
        &|name| moto.get(BUCKET, &format!("live/rec/cam1/{name}")),
        &segs,
    );

    // Played straight from the S3 API's URLs.
    let base = format!("{}/{BUCKET}/live/rec/cam1", moto.endpoint());
    plays(format!("{base}/vod.m3u8"), frames).await;
    plays(format!("{base}/ts/vod.m3u8"), frames).await;

    // Counted: nothing lost, objects and bytes written.
    let status = recorder.status();
    assert_eq!(status.failures, 0);
    // The bucket was there at startup: the store check found no fault.
    assert_eq!(status.last_error, None);
    assert_eq!(
        status.segments_lost_queue_full + status.segments_lost_write_failed,
        0
    );
    assert!(
        status.writes as usize > 2 * segs.len(),
        "segments, init, playlists"
    );
    let (_, _, metrics) = get(&format!("http://{}/metrics", server.http_addr)).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("liveslice_record_writes_total"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_is_a_discontinuity_in_the_recording() {
    if !have_moto("recording to S3") || !have_ffmpeg("recorded VOD checked with ffmpeg") {
        return;
    }
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let mut config = s3_config(&moto, "");
    config.session.publisher_grace = Duration::from_secs(5);
    let server = start(config).await;
    let data = testdata("baseline_30.h264");

    let proxy = CutProxy::start(server.grpc_addr).await;
    let mut pc = proxy.client().await;
    let p1 = publish(&mut pc, "flaky", Default::default()).await.unwrap();
    p1.send_chunked(&data, &[4000]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    drop(p1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c2 = client(&server).await;
    let mut p2 = publish(&mut c2, "flaky", Default::default()).await.unwrap();
    p2.send_chunked(&data, &[4000]).await;
    p2.end().await;
    drop(p2.tx);
    let (responses, status) = collect(&mut p2.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    assert!(!segments(&responses).is_empty());

    let recorder = server.registry.recorder().expect("recording is on");
    assert!(recorder.flush(Duration::from_secs(20)).await);
    let vod = moto.get(BUCKET, "flaky/vod.m3u8");
    let vod =
        String::from_utf8(vod.unwrap_or_else(|| panic!("VOD: {:?}", recorder.status()))).unwrap();
    assert_eq!(vod.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{vod}");
    let listed = lines_with(&vod, ".m4s").len();
    let session = server.registry.get("flaky").expect("lingers");
    assert_eq!(
        listed as u64,
        session.stats().segments,
        "every segment listed"
    );
    plays(
        format!("{}/{BUCKET}/flaky/vod.m3u8", moto.endpoint()),
        session.frames() as usize,
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_recorded_to_files_plays_as_vod_with_every_frame() {
    if !have_ffmpeg("recorded VOD checked with ffmpeg") {
        return;
    }
    let dir = tempdir();
    let mut config = test_config();
    config.record.record = Some(format!("file://{}", dir.join("rec").display()));
    let server = start(config).await;
    let data = testdata("main_slices4_30.h264");
    let (frames, _) = ffmpeg_decode_annexb(&data);
    let root = dir.join("rec/files");
    let segs = publish_in_halves(&server, "files", &data, || async {
        let event = eventually("the EVENT playlist during the session", || {
            std::fs::read_to_string(root.join("index.m3u8")).ok()
        })
        .await;
        assert!(event.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"));
        assert!(!event.contains("#EXT-X-ENDLIST"));
    })
    .await;
    let recorder = server.registry.recorder().expect("recording is on");
    assert!(recorder.flush(Duration::from_secs(20)).await);
    check_recording(&|name| std::fs::read(root.join(name)).ok(), &segs);
    for name in ["vod.m3u8", "ts/vod.m3u8", "manifest.mpd"] {
        plays(root.join(name).display().to_string(), frames).await;
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Storage down (nothing listens at the endpoint): publishing goes on at
/// full speed and loses nothing; every segment's recording is lost, and
/// that is counted in /metrics and /api/record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_never_slows_publishing_and_losses_are_counted() {
    moto_credentials();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut config = test_config();
    config.record.record = Some(format!("s3://{BUCKET}/down"));
    config.record.record_endpoint = Some(endpoint);
    config.record.record_region = Some("us-east-1".into());
    // 0.2 + 0.4 + 0.8 + 1.6 s of back-off per segment, 8 at a time: the
    // 1 MiB queue fills whatever the machine's speed.
    config.record.record_retries = 4;
    config.record.record_queue_bytes = 1 << 20;
    let server = start(config).await;
    let data = testdata("baseline_30.h264");
    let looped: Vec<u8> = (0..6).flat_map(|_| data.iter().copied()).collect();

    let started = Instant::now();
    let mut c = client(&server).await;
    let mut p = publish(&mut c, "down", Default::default()).await.unwrap();
    p.send_chunked(&looped, &[16 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let (responses, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(status.is_none(), "{status:?}");
    let segs = segments(&responses);
    let frames: u32 = segs.iter().map(|s| s.frame_count).sum();
    assert_eq!(frames, 6 * 180, "every frame published");
    // Loose: a publisher that waited on the store would wait for retries
    // (3 s per object, 8 at a time) and queue room.
    assert!(took < Duration::from_secs(10), "publishing took {took:?}");

    let recorder = server.registry.recorder().expect("recording is on");
    assert!(
        recorder.flush(Duration::from_secs(30)).await,
        "given up in 30 s"
    );
    let st = recorder.status();
    assert_eq!(
        st.segments_lost_queue_full + st.segments_lost_write_failed,
        segs.len() as u64,
        "{st:?}"
    );
    assert!(st.failures > 0 && st.retries >= 4 * st.failures, "{st:?}");
    assert!(
        st.segments_lost_queue_full > 0,
        "the 1 MiB queue filled: {st:?}"
    );
    assert_eq!(st.lost_by_session.get("down"), Some(&(segs.len() as u64)));
    assert!(st.last_error.is_some());
    assert_eq!(st.writes, 0);

    let (_, _, metrics) = get(&format!("http://{}/metrics", server.http_addr)).await;
    let metrics = String::from_utf8(metrics).unwrap();
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line_start} in {metrics}"))
    };
    assert!(value("liveslice_record_failures_total") >= 1.0);
    assert!(value("liveslice_record_retries_total") >= 4.0);
    assert!(value("liveslice_record_segments_lost_total{reason=\"queue_full\"}") >= 1.0);
    let (status, _, api) = get(&format!("http://{}/api/record", server.http_addr)).await;
    assert_eq!(status, 200);
    let api: serde_json::Value = serde_json::from_slice(&api).unwrap();
    assert_eq!(api["lost_by_session"]["down"], segs.len() as u64);
    server.shutdown().await;
}

/// `--dvr`: the live playlists and MPD list far more than memory holds (a
/// memory window of 2 segments); segments that left memory are served by
/// the origin with the recording's bytes; no playlist rewrites what it
/// said; after the end ffmpeg plays the whole session from the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dvr_serves_segments_that_left_memory_from_the_recording() {
    if !have_moto("DVR from S3") || !have_ffmpeg("DVR playlists checked with ffmpeg") {
        return;
    }
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let mut config = s3_config(&moto, "dvr");
    config.engine.window = 2;
    config.record.dvr = Some(Duration::from_secs(600));
    let server = start(config).await;
    let base = format!("http://{}/live/tv", server.http_addr);
    let data = testdata("baseline_30.h264");
    let looped: Vec<u8> = (0..4).flat_map(|_| data.iter().copied()).collect();

    let mut c = client(&server).await;
    let mut p = publish(&mut c, "tv", Default::default()).await.unwrap();
    let mut history = common::history::History::default();
    for chunk in looped.chunks(looped.len() / 8 + 1) {
        p.send_chunked(chunk, &[16 * 1024]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, _, cmaf) = get(&format!("{base}/index.m3u8")).await;
        if status != 200 {
            continue;
        }
        let (_, _, ts) = get(&format!("{base}/ts/index.m3u8")).await;
        let (_, _, mpd) = get(&format!("{base}/manifest.mpd")).await;
        let (cmaf, ts) = (
            String::from_utf8(cmaf).unwrap(),
            String::from_utf8(ts).unwrap(),
        );
        history.record_ll(&cmaf, &ts, "live", false);
        history.record_dash_ll(&String::from_utf8(mpd).unwrap(), "live");
    }
    // Live: segment 0 left memory long ago, and is still listed.
    let session = server.registry.get("tv").expect("live");
    let listed = session.info().hls_cmaf.entries.len();
    assert!(listed >= 8, "the DVR window lists {listed} segments");
    assert!(session.segment_records().len() <= 2, "memory keeps 2");
    assert!(session.lists_segment(0));
    assert!(session
        .segment_pieces(0, liveslice_server::session::Format::Cmaf)
        .is_err());
    let (_, _, playlist) = get(&format!("{base}/index.m3u8")).await;
    let playlist = String::from_utf8(playlist).unwrap();
    assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:0\n"), "{playlist}");
    assert!(playlist.contains("\nseg-0.m4s\n"), "{playlist}");
    for (name, origin) in [
        ("seg-0.m4s", format!("{base}/seg-0.m4s")),
        ("ts/seg-0.ts", format!("{base}/ts/seg-0.ts")),
        ("init-0.mp4", format!("{base}/init-0.mp4")),
    ] {
        let stored = eventually("segment 0 recorded", || {
            moto.get(BUCKET, &format!("dvr/tv/{name}"))
        })
        .await;
        let (status, _, served) = get(&origin).await;
        assert_eq!(
            status,
            200,
            "{origin}: {}",
            String::from_utf8_lossy(&served)
        );
        assert_eq!(served, stored, "{origin}: the recording's bytes");
    }
    // A sequence never listed is still a 404.
    let (status, _, _) = get(&format!("{base}/seg-9999.m4s")).await;
    assert_eq!(status, 404);

    p.end().await;
    drop(p.tx);
    let (responses, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    let frames: u32 = segments(&responses).iter().map(|s| s.frame_count).sum();
    assert_eq!(frames, 4 * 180);
    let (_, _, cmaf) = get(&format!("{base}/index.m3u8")).await;
    let (_, _, ts) = get(&format!("{base}/ts/index.m3u8")).await;
    history.record_ll(
        &String::from_utf8(cmaf).unwrap(),
        &String::from_utf8(ts).unwrap(),
        "ended",
        false,
    );
    assert!(
        server
            .registry
            .recorder()
            .unwrap()
            .flush(Duration::from_secs(20))
            .await
    );
    for path in ["index.m3u8", "ts/index.m3u8", "manifest.mpd"] {
        plays(format!("{base}/{path}"), frames as usize).await;
    }
    server.shutdown().await;
}

/// The store goes away mid-session (moto killed): publishing goes on, what
/// was written before stays written, and the writes that fail after are
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_dies_mid_session_costs_only_the_recording() {
    if !have_moto("recording to S3") {
        return;
    }
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let mut config = s3_config(&moto, "dies");
    config.record.record_retries = 1;
    let server = start(config).await;
    let data = testdata("high_bframes_30.h264");
    let segs = publish_in_halves(&server, "cam", &data, || {
        let m = moto;
        async move {
            let before = eventually("a segment written before the store dies", || {
                Some(m.list(BUCKET, "dies/cam/")).filter(|k| k.iter().any(|k| k.ends_with(".m4s")))
            })
            .await;
            assert!(
                before.iter().any(|k| k.ends_with("index.m3u8")),
                "{before:?}"
            );
            drop(m);
        }
    })
    .await;
    let frames: u32 = segs.iter().map(|s| s.frame_count).sum();
    let (want, _) = ffmpeg_decode_annexb(&data);
    assert_eq!(frames as usize, want, "every frame published");
    let recorder = server.registry.recorder().expect("recording is on");
    assert!(recorder.flush(Duration::from_secs(20)).await);
    let st = recorder.status();
    assert!(st.writes > 0, "{st:?}");
    assert!(st.failures > 0, "{st:?}");
    assert!(st.segments_lost_write_failed > 0, "{st:?}");
    server.shutdown().await;
}

/// A session with audio, recorded to files with a DVR window longer than
/// memory (1 s segments, 1 in memory): the CMAF audio track is recorded
/// (audio-init.mp4, audio-N.m4s for every segment, audio.m3u8 and
/// audio-vod.m3u8, master.m3u8 with the audio rendition, the MPD's audio
/// set, the TS segments' audio PID); ffprobe finds every video and audio
/// frame the session made in master.m3u8, the MPD and the TS playlist; an
/// audio segment that left memory is served from the recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_audio_is_recorded_with_its_audio_track() {
    if !have_ffmpeg("recorded audio checked with ffprobe") {
        return;
    }
    let dir = tempdir();
    let mut config = test_config();
    config.record.record = Some(format!("file://{}", dir.join("rec").display()));
    config.record.dvr = Some(Duration::from_secs(600));
    config.engine.segment_duration = Duration::from_secs(1);
    config.engine.window = 1;
    let server = start(config).await;
    let root = dir.join("rec/av");
    let responses = common::av::publish_av(
        &server,
        "av",
        common::av::messages("av_48k_stereo", true, true),
    )
    .await;
    let segs = segments(&responses);
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let video: u64 = segs.iter().map(|s| u64::from(s.frame_count)).sum();
    let audio: u64 = segs
        .iter()
        .map(|s| s.audio.as_ref().map_or(0, |a| u64::from(a.frame_count)))
        .sum();
    assert!(audio > 180, "{audio} audio frames");
    let recorder = server.registry.recorder().expect("recording is on");
    assert!(recorder.flush(Duration::from_secs(20)).await);

    // Segment 0 left memory; the origin serves its audio from the recording.
    let base = format!("http://{}/live/av", server.http_addr);
    let stored = std::fs::read(root.join("audio-0.m4s")).expect("audio-0.m4s recorded");
    let (status, _, served) = get(&format!("{base}/audio-0.m4s")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&served));
    assert_eq!(served, stored, "audio-0.m4s: the recording's bytes");

    let text = |name: &str| {
        std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert!(root.join("audio-init.mp4").exists());
    for s in &segs {
        assert!(root.join(format!("audio-{}.m4s", s.sequence)).exists());
    }
    let audio_event = text("audio.m3u8");
    assert!(
        audio_event.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
        "{audio_event}"
    );
    assert!(audio_event.ends_with("#EXT-X-ENDLIST\n"), "{audio_event}");
    assert!(audio_event.contains("audio-init.mp4"), "{audio_event}");
    assert_eq!(lines_with(&audio_event, ".m4s").len(), segs.len());
    let audio_vod = text("audio-vod.m3u8");
    assert!(
        audio_vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"),
        "{audio_vod}"
    );
    let master = text("master.m3u8");
    assert!(master.contains("TYPE=AUDIO"), "{master}");
    assert!(master.contains("mp4a.40.2"), "{master}");
    let vod_master = text("vod-master.m3u8");
    assert!(
        vod_master.contains("URI=\"audio-vod.m3u8\"") && vod_master.ends_with("\nvod.m3u8\n"),
        "{vod_master}"
    );
    let mpd = text("manifest.mpd");
    assert!(
        mpd.contains(r#"contentType="audio""#) || mpd.contains("audio/mp4"),
        "{mpd}"
    );

    for name in [
        "master.m3u8",
        "vod-master.m3u8",
        "manifest.mpd",
        "ts/vod.m3u8",
    ] {
        let streams = common::av::probe_async(root.join(name).display().to_string()).await;
        let count = |kind: &str| {
            streams
                .iter()
                .filter(|s| s.0 == kind)
                .map(|s| s.2)
                .max()
                .unwrap_or(0)
        };
        let (v, a) = (count("video"), count("audio"));
        if name == "manifest.mpd" {
            // ffmpeg's DASH demuxer (5.1) stops one packet short at the end
            // of a static MPD with two AdaptationSets (tests/audio.rs).
            assert!(
                v <= video && a <= audio && v + a + 1 >= video + audio,
                "{name}: {streams:?}"
            );
        } else {
            assert_eq!(v, video, "{name}: every video frame ({streams:?})");
            assert_eq!(a, audio, "{name}: every audio frame ({streams:?})");
        }
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An audio-only session is recorded too: audio objects only (no video
/// segment or init), index.m3u8 and audio.m3u8 listing the audio segments,
/// every audio frame in them and in the TS playlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_only_session_is_recorded() {
    if !have_ffmpeg("recorded audio checked with ffprobe") {
        return;
    }
    let dir = tempdir();
    let mut config = test_config();
    config.record.record = Some(format!("file://{}", dir.join("rec").display()));
    let server = start(config).await;
    let root = dir.join("rec/tone");
    let responses = common::av::publish_av(
        &server,
        "tone",
        common::av::messages("av_44k_mono", true, false),
    )
    .await;
    let segs = segments(&responses);
    assert!(!segs.is_empty());
    let audio: u64 = segs
        .iter()
        .map(|s| s.audio.as_ref().map_or(0, |a| u64::from(a.frame_count)))
        .sum();
    assert!(audio > 150, "{audio} audio frames");
    let recorder = server.registry.recorder().expect("recording is on");
    assert!(recorder.flush(Duration::from_secs(20)).await);
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("seg-") || n.starts_with("init-")),
        "no video objects: {names:?}"
    );
    let index = std::fs::read_to_string(root.join("index.m3u8")).unwrap();
    assert_eq!(lines_with(&index, ".m4s").len(), segs.len(), "{index}");
    assert!(lines_with(&index, ".m4s")
        .iter()
        .all(|l| l.starts_with("audio-")));
    for name in [
        "index.m3u8",
        "audio-vod.m3u8",
        "ts/vod.m3u8",
        "manifest.mpd",
    ] {
        let streams = common::av::probe_async(root.join(name).display().to_string()).await;
        let got: u64 = streams.iter().filter(|s| s.0 == "audio").map(|s| s.2).sum();
        assert_eq!(got, audio, "{name}: every audio frame ({streams:?})");
        assert!(
            !streams.iter().any(|s| s.0 == "video"),
            "{name}: {streams:?}"
        );
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bucket that does not exist: retrying cannot help, so the writes fail
/// at once (no retries, no back-off), the losses are counted and the last
/// error says what to fix; publishing is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_fails_at_once_and_says_what_to_fix() {
    if !have_moto("recording to S3") {
        return;
    }
    let moto = Moto::start();
    let mut config = s3_config(&moto, "nobucket");
    config.record.record = Some("s3://no-such-bucket/x".into());
    config.record.record_retries = 5;
    let server = start(config).await;
    // Told at startup, before any segment: the store check lists the
    // prefix and finds no bucket.
    let recorder = server.registry.recorder().expect("recording is on");
    let mut told = None;
    for _ in 0..100 {
        if let Some(e) = recorder.status().last_error {
            told = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let told = told.expect("the startup check reports the missing bucket");
    assert!(
        told.starts_with("at startup") && told.contains("create the bucket"),
        "{told}"
    );
    let data = testdata("baseline_30.h264");
    let mut c = client(&server).await;
    let mut p = publish(&mut c, "cam", Default::default()).await.unwrap();
    p.send_chunked(&data, &[16 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let (responses, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    let frames: u32 = segments(&responses).iter().map(|s| s.frame_count).sum();
    assert_eq!(frames, 180, "every frame published");
    // With 5 retries each write would take 0.2 + 0.4 + … + 3.2 s = 6.2 s.
    let started = Instant::now();
    assert!(recorder.flush(Duration::from_secs(30)).await);
    let st = recorder.status();
    assert!(st.failures > 0, "{st:?}");
    assert_eq!(st.retries, 0, "{st:?}");
    assert_eq!(st.writes, 0, "{st:?}");
    assert!(st.segments_lost_write_failed > 0, "{st:?}");
    let last = st.last_error.clone().unwrap_or_default();
    assert!(
        last.contains("not retried") && last.contains("create the bucket"),
        "{last}"
    );
    // And when: an old error is told from a current one.
    let at = st.last_error_unix_ms.expect("the error's time");
    let now_ms = liveslice_server::session::now_unix_ns() / 1_000_000;
    assert!(at <= now_ms && now_ms - at < 60_000, "{at} {now_ms}");
    assert!(started.elapsed() < Duration::from_secs(5), "{st:?}");
    server.shutdown().await;
}

/// The store's endpoint from `AWS_ENDPOINT_URL` (no `--record-endpoint`),
/// over plain HTTP as a local S3 API server speaks it: allowed, so the
/// startup check lists the bucket (it failed with an opaque "builder
/// error" that no retry mends). The server runs as its own process: the
/// variable is process-wide.
#[test]
fn an_http_endpoint_from_aws_endpoint_url_is_used() {
    use std::io::BufRead;
    if !have_moto("recording to S3") {
        return;
    }
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_liveslice-server"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--record", &format!("s3://{BUCKET}/env")])
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start liveslice-server");
    // The log goes to standard output.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("recording: the store") {
                let _ = tx.send(line);
            }
        }
    });
    let verdict = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let line = verdict.expect("the startup check of the store is logged");
    assert!(line.contains("the store answers"), "{line}");
}

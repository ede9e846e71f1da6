//! The `liveslice` binary against a real server on 127.0.0.1:0: `package`
//! writes what the server serves, `publish` + `play` round-trip frames and
//! trees, errors say what is wrong, and `demo` feeds a running server.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event;
use pb::slice_service_client::SliceServiceClient;
use tokio_stream::wrappers::ReceiverStream;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// Frames ffmpeg decodes from the raw stream: the count every output of it
/// must have.
async fn input_frames(file: &Path) -> usize {
    let (frames, errors) = ffmpeg_frames(file, Some("h264")).await;
    assert_eq!(errors, "", "{}", file.display());
    frames
}

/// Every playlist of a tree decodes with no errors and `want` frames.
/// ffmpeg plays only the first period of a multi-period MPD, so those are
/// checked for errors only.
async fn assert_tree_decodes(dir: &Path, want: usize) {
    for path in ["index.m3u8", "ts/index.m3u8", "manifest.mpd"] {
        let file = dir.join(path);
        let (frames, errors) = ffmpeg_frames(&file, None).await;
        assert_eq!(errors, "", "{}", file.display());
        let periods = std::fs::read_to_string(&file)
            .unwrap()
            .matches("<Period ")
            .count();
        if periods <= 1 {
            assert_eq!(frames, want, "{}", file.display());
        } else {
            assert!(frames > 0, "{}", file.display());
        }
    }
}

/// The tree's manifests equal the server's (`exact`: byte for byte, else
/// except wall-clock times) and its init and media segments are the bytes
/// the server serves. Returns the number of segments.
async fn assert_tree_is_served(dir: &Path, base: &str, exact: bool) -> usize {
    let mut count = None;
    for (path, ext) in [
        ("index.m3u8", ".m4s"),
        ("ts/index.m3u8", ".ts"),
        ("manifest.mpd", ""),
    ] {
        let mine = std::fs::read_to_string(dir.join(path)).unwrap();
        let (status, served) = get(&format!("{base}/{path}")).await;
        assert_eq!(status, 200, "{base}/{path}");
        let served = text(&served);
        if exact && !path.ends_with(".mpd") {
            assert_eq!(mine, served, "{path}");
        } else {
            assert_eq!(
                without_wall_clock(&mine),
                without_wall_clock(&served),
                "{path}"
            );
        }
        if !ext.is_empty() {
            let segs = listed_segments(&mine, ext);
            assert!(!segs.is_empty(), "{path}: {mine}");
            assert_eq!(*count.get_or_insert(segs.len()), segs.len(), "{path}");
        }
    }
    let hls = std::fs::read_to_string(dir.join("index.m3u8")).unwrap();
    for init in listed_inits(&hls) {
        let (status, served) = get(&format!("{base}/{init}")).await;
        assert_eq!(status, 200);
        assert!(
            std::fs::read(dir.join(&init)).unwrap() == served,
            "{init} differs"
        );
    }
    // Segments are their parts (styp + the parts' CMAF chunks; the TS parts
    // joined), muxed once each by one PartMuxer from the session's start, on
    // the server as in the tree: the same bytes in any order of asking,
    // chunk numbers and continuity counters included.
    for seq in listed_segments(&hls, ".m4s") {
        for name in [format!("seg-{seq}.m4s"), format!("ts/seg-{seq}.ts")] {
            let (status, served) = get(&format!("{base}/{name}")).await;
            assert_eq!(status, 200, "{name}");
            let mine = std::fs::read(dir.join(&name)).unwrap();
            assert!(mine == served, "{name} differs from the server's");
        }
    }
    count.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_writes_the_tree_the_server_serves_for_every_clean_stream() {
    let server = start().await;
    let (grpc, http) = (grpc_url(&server), http_url(&server));
    let ffmpeg = have_ffmpeg("package output decoded by ffmpeg");
    for name in clean_streams() {
        let file = testdata_path(&format!("{name}.h264"));
        let dir = tempdir(&name);
        let out = run(&["package", s(&file), "--out", s(&dir)]).await;
        let said = ok(&out, "package");
        // The same stream published whole, as fast as the server takes it.
        // (A window that lists every segment, as `package` does by default.)
        let out = run(&[
            "publish",
            "--server",
            &grpc,
            "--session",
            &name,
            "--window",
            "100",
            s(&file),
        ])
        .await;
        let published = ok(&out, "publish");
        assert!(published.contains("segment 0: "), "{published}");

        let segments = assert_tree_is_served(&dir, &format!("{http}/live/{name}"), false).await;
        for text in [&said, &published] {
            assert!(
                text.contains(&format!(" in {segments} segments")),
                "{name}: {segments} segments listed; output:\n{text}"
            );
        }
        // Nothing else in the tree (temporary files are renamed away).
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .chain(std::fs::read_dir(dir.join("ts")).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "ts")
            .collect();
        files.sort();
        let hls = std::fs::read_to_string(dir.join("index.m3u8")).unwrap();
        let mut want: Vec<String> = ["index.m3u8", "manifest.mpd", "index.m3u8"]
            .into_iter()
            .map(String::from)
            .chain(listed_inits(&hls))
            .chain((0..segments).map(|n| format!("seg-{n}.m4s")))
            .chain((0..segments).map(|n| format!("seg-{n}.ts")))
            .collect();
        want.sort();
        assert_eq!(files, want, "{name}");

        if ffmpeg {
            let frames = input_frames(&file).await;
            assert!(frames > 0);
            assert_tree_decodes(&dir, frames).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_then_play_round_trips_frames_and_builds_the_servers_tree() {
    let server = start().await;
    let (grpc, http) = (grpc_url(&server), http_url(&server));
    let file = testdata_path("high_bframes_30.h264");
    let dir = tempdir("play");
    let annexb = dir.join("received.h264");
    let tree = dir.join("tree");
    // Two viewers: one writes a file and a tree, one writes to stdout.
    let to_file = spawn(&[
        "play",
        "--server",
        &grpc,
        "--session",
        "rt",
        "--annexb",
        s(&annexb),
        "--out",
        s(&tree),
    ]);
    let to_stdout = spawn(&[
        "play",
        "--server",
        &grpc,
        "--session",
        "rt",
        "--annexb",
        "-",
    ]);
    for p in [&to_file, &to_stdout] {
        p.wait_for_stderr("subscribing to session rt", Duration::from_secs(10))
            .await;
    }
    // They wait for the session; give their calls time to reach the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = run(&["publish", "--server", &grpc, "--session", "rt", s(&file)]).await;
    ok(&out, "publish");

    let sent: Vec<u8> = engine_frames(&testdata("high_bframes_30.h264")).concat();
    let frames = engine_frames(&sent).len();
    assert_eq!(frames, 180);
    let (status, stdout, stderr) = to_stdout.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{stderr}");
    assert!(
        stdout == sent,
        "stdout: {} bytes, sent {}",
        stdout.len(),
        sent.len()
    );
    assert!(stderr.contains("session ended (end of stream"), "{stderr}");
    assert!(stderr.contains(&format!("{frames} frames")), "{stderr}");
    // Each session line once, however often the server repeats its info.
    assert!(
        stderr
            .matches("session rt: waiting for its first keyframe")
            .count()
            <= 1,
        "{stderr}"
    );
    assert_eq!(stderr.matches("playing session rt").count(), 1, "{stderr}");

    let (status, _, stderr) = to_file.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{stderr}");
    let received = std::fs::read(&annexb).unwrap();
    assert!(
        received == sent,
        "file: {} bytes, sent {}",
        received.len(),
        sent.len()
    );

    // The rebuilt tree is the packaged one, segment for segment: the same
    // parts (rebuilt from the frames by the segmenter's rule), muxed alike.
    let packaged = dir.join("packaged");
    ok(
        &run(&["package", s(&file), "--out", s(&packaged)]).await,
        "package",
    );
    let hls = std::fs::read_to_string(tree.join("index.m3u8")).unwrap();
    let listed = listed_segments(&hls, ".m4s");
    assert_eq!(listed, vec![0, 1, 2]);
    let names = listed
        .iter()
        .flat_map(|n| [format!("seg-{n}.m4s"), format!("ts/seg-{n}.ts")])
        .chain(listed_inits(&hls));
    for name in names {
        let (mine, packaged) = (
            std::fs::read(tree.join(&name)).unwrap(),
            std::fs::read(packaged.join(&name)).unwrap(),
        );
        assert!(mine == packaged, "{name} differs from the packaged one");
    }

    // The rebuilt tree: the server's playlists exactly (they are its own,
    // kept current by the deltas) and the server's segment bytes.
    let segments = assert_tree_is_served(&tree, &format!("{http}/live/rt"), true).await;
    assert_eq!(segments, 3);
    assert!(
        stderr.contains(&format!("{segments} segments in")),
        "{stderr}"
    );
    if have_ffmpeg("play --out decoded by ffmpeg") {
        assert_tree_decodes(&tree, frames).await;
        let (n, errors) = ffmpeg_frames(&annexb, Some("h264")).await;
        assert_eq!((n, errors.as_str()), (frames, ""));
    }
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_is_wrong() {
    let file = testdata_path("baseline_30.h264");
    let dir = tempdir("errors");

    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let closed = format!("http://127.0.0.1:{port}");
    let want = format!("cannot connect to {closed}: is liveslice-server running?");
    let out = run(&["publish", "--server", &closed, "--session", "x", s(&file)]).await;
    let err = fails(&out, "publish to a closed port");
    assert!(err.contains(&want), "{err}");
    let out = run(&[
        "play",
        "--server",
        &closed,
        "--session",
        "x",
        "--annexb",
        "-",
    ])
    .await;
    let err = fails(&out, "play from a closed port");
    assert!(err.contains(&want), "{err}");

    // Not H.264, offline and to a server.
    let junk = dir.join("notes.txt");
    std::fs::write(
        &junk,
        "these are not the frames you are looking for\n".repeat(100),
    )
    .unwrap();
    let out = run(&["package", s(&junk), "--out", s(&dir.join("tree"))]).await;
    let err = fails(&out, "package of a text file");
    assert!(
        err.contains(&format!(
            "{} contains no H.264 or H.265 access units",
            junk.display()
        )),
        "{err}"
    );
    assert!(!dir.join("tree").exists(), "no empty tree left behind");
    // AAC audio alone, and an empty file: said as such.
    let aac = testdata_path("av_44k_mono.aac");
    let out = run(&["package", s(&aac), "--out", s(&dir.join("tree"))]).await;
    let err = fails(&out, "package of an AAC file");
    assert!(err.contains("is AAC audio (ADTS), not video"), "{err}");
    assert!(err.contains("liveslice publish"), "{err}");
    let empty = dir.join("empty.h264");
    std::fs::write(&empty, b"").unwrap();
    let out = run(&["package", s(&empty), "--out", s(&dir.join("tree"))]).await;
    let err = fails(&out, "package of an empty file");
    assert!(
        err.contains(&format!("{} is empty", empty.display())),
        "{err}"
    );
    assert!(!dir.join("tree").exists(), "no empty tree left behind");

    let server = start().await;
    let grpc = grpc_url(&server);
    let out = run(&["publish", "--server", &grpc, "--session", "junk", s(&junk)]).await;
    let err = fails(&out, "publish of a text file");
    assert!(
        err.contains(&format!("{} is not H.264", junk.display())),
        "{err}"
    );

    // A busy session: someone else publishes to it.
    let mut client = SliceServiceClient::connect(grpc.clone()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::SliceRequest {
        session_id: "busy".into(),
        role: pb::Role::Publish as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let _holder = client
        .stream_slices(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let out = run(&["publish", "--server", &grpc, "--session", "busy", s(&file)]).await;
    let err = fails(&out, "publish to a busy session");
    assert!(
        err.contains("session busy already has a publisher"),
        "{err}"
    );

    // Arguments that cannot work.
    let out = run(&[
        "publish",
        "--server",
        &grpc,
        "--session",
        "x",
        "--loop",
        "-",
    ])
    .await;
    let err = fails(&out, "--loop on stdin");
    assert!(err.contains("--loop needs a file"), "{err}");
    let missing = dir.join("missing.h264");
    let out = run(&["publish", "--server", &grpc, "--session", "x", s(&missing)]).await;
    let err = fails(&out, "publish of a missing file");
    assert!(err.contains("cannot open"), "{err}");
    let out = run(&["play", "--server", &grpc, "--session", "x"]).await;
    fails(&out, "play without an output");

    drop(tx);
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_publishes_into_a_running_server_until_interrupted() {
    let server = start().await;
    let (grpc, http) = (grpc_url(&server), http_url(&server));
    let demo = spawn(&[
        "demo",
        "--server",
        &grpc,
        "--http-url",
        &http,
        "--session",
        "tour",
    ]);

    // Any viewer sees the session appear and frames flow, stamped with the
    // demo's capture times.
    let mut client = SliceServiceClient::connect(grpc.clone()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SliceRequest {
        session_id: "tour".into(),
        role: pb::Role::Subscribe as i32,
        subscribe: Some(pb::SubscribeOptions {
            events: true,
            wait_ms: 10_000,
            audio: true,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .stream_slices(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // The demo has sound: audio frames flow too, with the audio codec.
    let (mut frames, mut audio) = (0, 0);
    let mut audio_codec = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while frames < 45 || audio < 20 || audio_codec.is_empty() {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("frames within 10 s")
            .unwrap()
            .expect("stream open");
        match &msg.event {
            Some(Event::Frame(f)) if f.track == pb::Track::Audio as i32 => audio += 1,
            Some(Event::Frame(f)) => {
                assert!(f.capture_time_ns.is_some(), "capture times are sent");
                frames += 1;
            }
            Some(Event::SessionInfo(i)) if !i.audio_codec.is_empty() => {
                audio_codec = i.audio_codec.clone()
            }
            _ => {}
        }
    }
    assert_eq!(audio_codec, "mp4a.40.2");
    assert!(
        server.registry.get("tour").is_some_and(|s| !s.is_ended()),
        "session tour is live"
    );

    // Ctrl-C ends the session cleanly.
    let pid = demo.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(killed, "kill -INT {pid}");
    let (status, stdout, stderr) = demo.wait(Duration::from_secs(15)).await;
    let stdout = text(&stdout);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("{http}/player/tour")), "{stdout}");
    assert!(stdout.contains(&format!("ffplay {http}/live/tour/master.m3u8")));
    assert!(stderr.contains("published "), "{stderr}");
    // The demo's viewer says each session line once (the server sends the
    // session's info again when the audio track is known).
    assert!(
        stderr.matches("waiting for its first keyframe").count() <= 1,
        "{stderr}"
    );
    let mut ended = None;
    while let Ok(Ok(Some(msg))) =
        tokio::time::timeout(Duration::from_secs(5), stream.message()).await
    {
        if let Some(Event::SessionEnded(e)) = msg.event {
            ended = Some(e);
            break;
        }
    }
    let ended = ended.expect("SessionEnded after Ctrl-C");
    assert_eq!(ended.reason, pb::session_ended::Reason::EndOfStream as i32);
    server.shutdown().await;
}

/// `package --formats`: a format left out is neither muxed nor written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_writes_only_the_formats_asked_for() {
    let file = testdata_path("high_bframes_30.h264");
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = walk(dir);
        v.sort();
        v
    };
    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if e.path().is_dir() {
                out.extend(walk(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
            } else {
                out.push(name);
            }
        }
        out
    }
    let cmaf = tempdir("formats-cmaf");
    ok(
        &run(&["package", s(&file), "--out", s(&cmaf), "--formats", "cmaf"]).await,
        "package",
    );
    let files = names(&cmaf);
    assert!(
        files.contains(&"index.m3u8".to_string()) && files.contains(&"manifest.mpd".to_string())
    );
    assert!(files.iter().any(|f| f.ends_with(".m4s")));
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("ts/") || f.ends_with(".ts")),
        "{files:?}"
    );

    let ts = tempdir("formats-ts");
    ok(
        &run(&["package", s(&file), "--out", s(&ts), "--formats", "ts"]).await,
        "package",
    );
    let files = names(&ts);
    assert!(files.contains(&"ts/index.m3u8".to_string()), "{files:?}");
    assert!(
        files.iter().all(|f| f.starts_with("ts/")),
        "only the MPEG-TS tree: {files:?}"
    );

    // Both (the default) write the same segments as each alone.
    let both = tempdir("formats-both");
    ok(
        &run(&["package", s(&file), "--out", s(&both)]).await,
        "package",
    );
    for f in names(&cmaf).iter().filter(|f| f.ends_with(".m4s")) {
        assert_eq!(
            std::fs::read(cmaf.join(f)).unwrap(),
            std::fs::read(both.join(f)).unwrap(),
            "{f}"
        );
    }
    for f in names(&ts).iter().filter(|f| f.ends_with(".ts")) {
        assert_eq!(
            std::fs::read(ts.join(f)).unwrap(),
            std::fs::read(both.join(f)).unwrap(),
            "{f}"
        );
    }
    let out = run(&["package", s(&file), "--out", s(&both), "--formats", "flv"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown output format"));
    for d in [cmaf, ts, both] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `publish FILE.ts`: an MPEG-TS file's video and AAC audio go out as the
/// session's two tracks, every frame of each (counted by ffprobe in the
/// file and by the server's segment records), and the session's MPEG-TS
/// output carries both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_of_an_mpeg_ts_file_sends_its_audio_and_video() {
    if !require_ffmpeg("publish of an MPEG-TS file with audio") {
        return;
    }
    let dir = tempdir("ts-av");
    let ts = dir.join("av.ts");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "30",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
            "-f",
            "mpegts",
        ])
        .arg(&ts)
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "ffmpeg made {}", ts.display());
    let count = |kind: &str| {
        let out = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                kind,
                "-count_packets",
                "-show_entries",
                "stream=nb_read_packets",
                "-of",
                "csv=p=0",
            ])
            .arg(&ts)
            .output()
            .unwrap();
        text(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let (video_in, audio_in) = (count("v"), count("a"));
    // Audio presented before the first video frame (the encoder's priming,
    // which ffmpeg places before the video) has no place in the session:
    // dropped with AUDIO_TIMING. Every other frame comes out.
    let pts = |kind: &str| -> Vec<f64> {
        let out = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                kind,
                "-show_entries",
                "packet=pts_time",
                "-of",
                "csv=p=0",
            ])
            .arg(&ts)
            .output()
            .unwrap();
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
            .collect()
    };
    let first_video = pts("v").into_iter().fold(f64::MAX, f64::min);
    let early = pts("a")
        .into_iter()
        .filter(|t| t + 512.0 / 48_000.0 < first_video)
        .count() as u64;

    let server = start().await;
    let out = run(&[
        "publish",
        "--server",
        &grpc_url(&server),
        "--session",
        "tsav",
        s(&ts),
    ])
    .await;
    ok(&out, "publish FILE.ts");
    let session = server.registry.get("tsav").expect("session tsav");
    let records = session.segment_records();
    let video: u64 = records.iter().map(|r| u64::from(r.frame_count)).sum();
    let audio: u64 = records
        .iter()
        .map(|r| r.audio.as_ref().map_or(0, |a| u64::from(a.frame_count)))
        .sum();
    assert_eq!(video, video_in, "video frames");
    assert_eq!(
        audio,
        audio_in - early,
        "audio frames in == out ({early} before the video)"
    );
    assert_eq!(
        session.audio().0.map(|a| a.codec_string()).as_deref(),
        Some("mp4a.40.2")
    );
    server.shutdown().await;

    // `package` of the same file (its video read from the file a PES
    // packet at a time) writes every video frame, and ffmpeg decodes them.
    let tree = dir.join("tree");
    let out = run(&["package", s(&ts), "--out", s(&tree)]).await;
    ok(&out, "package FILE.ts");
    assert!(
        text(&out.stderr).contains(&format!(
            "the AAC track of {} is not packaged",
            ts.display()
        )),
        "says the audio is left out: {}",
        text(&out.stderr)
    );
    let (frames, err) = ffmpeg_frames(&tree.join("index.m3u8"), None).await;
    assert_eq!(frames as u64, video_in, "packaged video frames\n{err}");
    assert!(err.trim().is_empty(), "decode errors: {err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A value of `testdata/NAME.expect.toml` (`key = number` lines).
fn expected(name: &str, key: &str) -> u64 {
    let path = testdata_path(&format!("{name}.expect.toml"));
    let toml = std::fs::read_to_string(&path).unwrap();
    toml.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("{key} in {}", path.display()))
}

/// `publish FILE.mp4`: a progressive MP4 (moov at the end, B-frames with
/// ctts and edit lists), the same packets fragmented, and an H.265 (hvc1)
/// file: every video frame and every AAC frame from the video's start (as
/// ffprobe counted them when the file was made, in NAME.expect.toml) end
/// in the session's segments, with the file's codecs. No ffmpeg needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_of_mp4_files_sends_every_video_and_audio_frame() {
    let server = start().await;
    for (name, codec) in [
        ("mp4_av_48k", "avc1."),
        ("mp4_av_48k_frag", "avc1."),
        ("mp4_hevc_44k", "hvc1."),
    ] {
        let file = testdata_path(&format!("{name}.mp4"));
        let session = name.replace('_', "-");
        let out = run(&[
            "publish",
            "--server",
            &grpc_url(&server),
            "--session",
            &session,
            s(&file),
        ])
        .await;
        let said = ok(&out, &format!("publish {name}.mp4"));
        let audio_want = expected(name, "audio_frames_from_video_start");
        assert!(
            said.contains(&format!(" and {audio_want} audio frames in ")),
            "the summary counts the audio: {said}"
        );
        let sess = server.registry.get(&session).expect("the session");
        let records = sess.segment_records();
        let video: u64 = records.iter().map(|r| u64::from(r.frame_count)).sum();
        let audio: u64 = records
            .iter()
            .map(|r| r.audio.as_ref().map_or(0, |a| u64::from(a.frame_count)))
            .sum();
        assert_eq!(
            video,
            expected(name, "video_frames"),
            "{name}: video frames"
        );
        assert_eq!(
            audio,
            expected(name, "audio_frames_from_video_start"),
            "{name}: audio frames"
        );
        let info = sess.audio().0.expect("an audio track");
        assert_eq!(
            u64::from(info.sample_rate),
            expected(name, "sample_rate"),
            "{name}"
        );
        let codec_string = sess
            .info()
            .config
            .map(|c| c.codec_string())
            .unwrap_or_default();
        assert!(codec_string.starts_with(codec), "{name}: {codec_string}");
    }
    server.shutdown().await;
}

/// `package FILE.mp4` writes the video of the file (every frame, ffmpeg
/// decodes the tree without an error) and says that the audio is not
/// packaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_of_an_mp4_file_writes_its_video() {
    if !require_ffmpeg("package of an MP4 file") {
        return;
    }
    let dir = tempdir("mp4-package");
    let tree = dir.join("tree");
    let out = run(&[
        "package",
        s(&testdata_path("mp4_av_48k_frag.mp4")),
        "--out",
        s(&tree),
    ])
    .await;
    let stdout = ok(&out, "package FILE.mp4");
    assert!(
        text(&out.stderr).contains("AAC track") && text(&out.stderr).contains("not packaged"),
        "says the audio is left out: {}",
        text(&out.stderr)
    );
    let (frames, err) = ffmpeg_frames(&tree.join("index.m3u8"), None).await;
    assert_eq!(
        frames as u64,
        expected("mp4_av_48k_frag", "video_frames"),
        "{stdout}\n{err}"
    );
    assert!(err.trim().is_empty(), "decode errors: {err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `(pts, dts, keyframe)` per video packet in decode order, 90 kHz: from a
/// committed `NAME.packets.csv` or from ffprobe's `pts,dts,flags` lines.
fn packets(csv: &str) -> Vec<(i64, i64, bool)> {
    csv.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.trim().split(',').collect();
            let n = |i: usize| f[i].parse::<i64>().unwrap_or_else(|e| panic!("{l}: {e}"));
            (n(0), n(1), f.get(2).is_some_and(|k| k.contains('K')))
        })
        .collect()
}

/// `package FILE.mp4` presents every video frame when the file does: the
/// written HLS stream's packets (ffprobe) have the file's presentation
/// times (B-frames from `ctts`, the edit list of the progressive file, the
/// fragmented file's `trun` offsets; `NAME.packets.csv`, ffprobe's view of
/// the file) up to one constant offset, its keyframes, and decode times
/// that increase and never pass the presentation times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_of_an_mp4_file_keeps_its_frames_and_times() {
    if !require_ffmpeg("package of an MP4 file, times against ffprobe") {
        return;
    }
    for name in ["mp4_av_48k", "mp4_av_48k_frag", "mp4_hevc_44k"] {
        let dir = tempdir("mp4-times");
        let tree = dir.join("tree");
        let out = run(&[
            "package",
            s(&testdata_path(&format!("{name}.mp4"))),
            "--out",
            s(&tree),
        ])
        .await;
        ok(&out, name);
        let want = packets(&text(&testdata(&format!("{name}.packets.csv"))));
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
            .args(["packet=pts,dts,flags", "-of", "csv=p=0"])
            .arg(tree.join("index.m3u8"))
            .output()
            .expect("ffprobe runs");
        assert!(probe.status.success(), "{name}: {}", text(&probe.stderr));
        let got = packets(&text(&probe.stdout));
        assert_eq!(got.len(), want.len(), "{name}: packets");
        let offset = got[0].0 - want[0].0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.0 - offset, w.0, "{name}: packet {i} presentation time");
            assert_eq!(g.2, w.2, "{name}: packet {i} keyframe flag");
            assert!(
                g.1 <= g.0,
                "{name}: packet {i} decoded after it is shown: {g:?}"
            );
        }
        assert!(
            got.windows(2).all(|w| w[0].1 < w[1].1),
            "{name}: decode times increase"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `publish --server A,B`: when server A goes away mid-stream (here a
/// shutdown, which ends the session there), the publisher continues the
/// session on B from the next access unit, says so on stderr, and ends
/// cleanly with the whole file sent; B holds the rest of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_continues_on_the_next_server_when_its_server_goes_away() {
    let a = start().await;
    let b = start().await;
    let servers = format!("{},{}", grpc_url(&a), grpc_url(&b));
    let input = testdata_path("baseline_30.h264");
    let client = spawn(&[
        "publish",
        "--server",
        &servers,
        "--session",
        "fo",
        "--realtime",
        s(&input),
    ]);
    // Once A has cut a segment, it goes away.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while a
        .registry
        .get("fo")
        .is_none_or(|s| s.segment_records().is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "A got no segment: {}",
            client.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let session_a = a.registry.get("fo").expect("A's session");
    a.shutdown().await;
    // What A made, its last segment (closed by the shutdown) included.
    let on_a: u64 = session_a
        .segment_records()
        .iter()
        .map(|r| u64::from(r.frame_count))
        .sum();
    client
        .wait_for_stderr("continuing the session on", Duration::from_secs(10))
        .await;
    let (status, stdout, stderr) = client.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{stderr}\n{}", text(&stdout));
    assert!(stderr.contains(&grpc_url(&b)), "{stderr}");
    let session = b.registry.get("fo").expect("B took the session");
    let on_b: u64 = session
        .segment_records()
        .iter()
        .map(|r| u64::from(r.frame_count))
        .sum();
    // B starts at the next keyframe (a keyframe every second): the
    // publisher skips what B could not decode, so B drops nothing.
    assert!(on_b >= 60, "B: {on_b} frames\n{stderr}");
    assert_eq!(
        session.stats().frames_dropped,
        0,
        "B dropped frames: {stderr}"
    );
    // Lost on the way: what was in flight when A went (a few messages)
    // and what came before B's first keyframe (under a second).
    assert!(on_a + on_b >= 180 - 40, "A {on_a} + B {on_b} of 180 frames");
    assert!(text(&stdout).contains("done: "), "{}", text(&stdout));
    assert!(
        text(&stdout).contains("the session moved to another server 1 time"),
        "{}",
        text(&stdout)
    );
    b.shutdown().await;
}

/// A second publisher process that continues a session on the same server
/// within its grace period (the first one was killed) reports what the
/// server reported to it: its summary's frames and segments are those of
/// its own segment lines, not the whole session's (which holds the first
/// process's too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_resuming_a_session_counts_its_own_segments() {
    let mut config = test_config();
    config.session.publisher_grace = Duration::from_secs(20);
    let server = liveslice_server::app::start(&config)
        .await
        .expect("server starts");
    let url = grpc_url(&server);
    let input = testdata_path("baseline_30.h264");
    let args = [
        "publish",
        "--server",
        &url,
        "--session",
        "again",
        "--realtime",
        input.to_str().unwrap(),
    ];
    let mut first = spawn(&args);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while server
        .registry
        .get("again")
        .is_none_or(|s| s.segment_records().len() < 2)
    {
        assert!(std::time::Instant::now() < deadline, "no segments");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    let out = run(&args).await;
    let stdout = ok(&out, "the second publisher");
    assert!(stdout.contains("resuming after a reconnect"), "{stdout}");
    let mine: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("segment "))
        .filter_map(|l| l.split(": ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    let frames: u64 = mine.iter().sum();
    assert!(
        stdout.contains(&format!(
            "the server accepted {frames} frames in {} segments",
            mine.len()
        )),
        "{stdout}"
    );
    let session: u64 = server
        .registry
        .get("again")
        .expect("the session")
        .segment_records()
        .iter()
        .map(|r| u64::from(r.frame_count))
        .sum();
    assert!(session > frames, "the session {session}, ours {frames}");
    server.shutdown().await;
}

//! Input that is not raw H.264 is refused in one line that names the
//! container and the ffmpeg command that extracts the video; a stream piped
//! in slowly reaches subscribers frame by frame, not in bursts.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event;
use pb::slice_service_client::SliceServiceClient;
use tokio_stream::wrappers::ReceiverStream;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// Tiny container files made from a committed stream: (file, the name the
/// refusal must give).
fn containers(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let input = testdata_path("baseline_30.h264");
    let mut made = Vec::new();
    for (ext, name) in [
        ("mp4", "MP4/MOV"),
        ("mov", "MP4/MOV"),
        ("ts", "MPEG-TS"),
        ("mkv", "Matroska/WebM"),
        ("webm", "Matroska/WebM"),
        ("flv", "FLV"),
    ] {
        let out = dir.join(format!("clip.{ext}"));
        // WebM takes VP8/VP9/AV1 only: the file is the point, not its codec.
        let codec: &[&str] = if ext == "webm" {
            &["-c:v", "libvpx", "-b:v", "100k"]
        } else {
            &["-c", "copy"]
        };
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "h264", "-i"])
            .arg(&input)
            .args(["-frames:v", "10"])
            .args(codec)
            .arg(&out)
            .status()
            .expect("run ffmpeg");
        assert!(status.success(), "ffmpeg made no {ext}");
        made.push((out, name));
    }
    made
}

/// The one error line of a refused container.
fn refusal(err: &str, what: &str) -> String {
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line, got:\n{err}");
    lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_refused_with_the_command_that_extracts_the_video() {
    if !require_ffmpeg("container files made with ffmpeg") {
        return;
    }
    let dir = tempdir("containers");
    let server = start().await;
    let grpc = grpc_url(&server);
    for (file, name) in containers(&dir) {
        let tree = dir.join("tree");
        let out = run(&["package", s(&file), "--out", s(&tree)]).await;
        let line = refusal(&fails(&out, "package of a container"), s(&file));
        let want_cmd = format!(
            "ffmpeg -i {} -c:v copy -bsf:v h264_mp4toannexb -an -f h264 {}",
            file.display(),
            file.with_extension("h264").display()
        );
        assert!(
            line.contains(&format!("in the {name} container format")),
            "{line}"
        );
        assert!(line.contains(&want_cmd), "{line}");
        assert!(!tree.exists(), "no tree for a refused file");

        let session = format!("c{}", file.extension().unwrap().to_str().unwrap());
        let out = run(&[
            "publish",
            "--server",
            &grpc,
            "--session",
            &session,
            s(&file),
        ])
        .await;
        let line = refusal(&fails(&out, "publish of a container"), s(&file));
        assert!(
            line.contains(&format!("in the {name} container format")),
            "{line}"
        );
        assert!(line.contains(&want_cmd), "{line}");
        // Refused before a session was opened.
        assert!(server.registry.get(&session).is_none(), "{session} created");

        // The same on stdin.
        let stdin = std::fs::File::open(&file).unwrap();
        let out = Command::new(BIN)
            .args(["publish", "--server", &grpc, "--session", &session, "-"])
            .env_remove("LIVESLICE_TOKEN")
            .stdin(stdin)
            .output()
            .unwrap();
        let line = refusal(&fails(&out, "publish of a container on stdin"), "stdin");
        assert!(
            line.contains(&format!("stdin is in the {name} container format")),
            "{line}"
        );
        assert!(
            line.contains("ffmpeg -i INPUT -c:v copy -bsf:v h264_mp4toannexb -an -f h264 -"),
            "{line}"
        );
    }
    // The command given works: its output packages (the MP4 one).
    let mp4 = dir.join("clip.mp4");
    let h264 = dir.join("clip.h264");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(&mp4)
        .args([
            "-c:v",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-an",
            "-f",
            "h264",
        ])
        .arg(&h264)
        .status()
        .unwrap();
    assert!(status.success());
    let out = run(&["package", s(&h264), "--out", s(&dir.join("ok"))]).await;
    let said = ok(&out, "package of the extracted stream");
    assert!(said.contains(": 10 frames in 1 segments"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pipe_reaches_subscribers_frame_by_frame() {
    let server = start().await;
    let grpc = grpc_url(&server);

    // A subscriber that notes when each frame arrives. Its call is
    // answered once the session exists, so it runs on its own task.
    let mut client = SliceServiceClient::connect(grpc.clone()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SliceRequest {
        session_id: "pipe".into(),
        role: pb::Role::Subscribe as i32,
        subscribe: Some(pb::SubscribeOptions {
            events: true,
            wait_ms: 10_000,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let viewer = tokio::spawn(async move {
        let _tx = tx;
        let mut stream = client
            .stream_slices(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut arrivals = Vec::new();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("the session ends within 30 s")
                .expect("stream ok")
                .expect("stream open");
            match msg.event {
                Some(Event::Frame(_)) => arrivals.push(Instant::now()),
                Some(Event::SessionEnded(_)) => return arrivals,
                _ => {}
            }
        }
    });

    // The publisher reads stdin, written one access unit every 33 ms, as a
    // live encoder would (about 44 kB/s: a 64 KiB chunk would take 1.5 s
    // to fill).
    let mut publisher = spawn_with(
        &["publish", "--server", &grpc, "--session", "pipe", "-"],
        &[],
        Stdio::piped(),
    );
    let mut stdin = publisher.child.stdin.take().unwrap();
    let units = engine_frames(&testdata("baseline_30.h264"));
    assert_eq!(units.len(), 180);
    let writer = std::thread::spawn(move || {
        let start = Instant::now();
        for (i, unit) in units.iter().enumerate() {
            let at = start + Duration::from_millis(33 * i as u64);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            stdin.write_all(unit).unwrap();
            stdin.flush().unwrap();
        }
        // Dropping stdin ends the input.
    });
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap()
        .unwrap();
    let (status, stdout, stderr) = publisher.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{}\n{stderr}", text(&stdout));
    let said = text(&stdout);
    assert!(said.contains("the server accepted 180 frames"), "{said}");

    let arrivals = viewer.await.unwrap();
    assert_eq!(arrivals.len(), 180);
    // The last access units go out together at the end of the input; the
    // ones before, one by one as they complete.
    let max_gap = arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        max_gap < Duration::from_millis(300),
        "largest gap between frames {max_gap:?}"
    );
    server.shutdown().await;
}

//! Input that is not raw H.264 is refused in one line that names the
//! container and the ffmpeg command that extracts the video, but for MP4/MOV
//! and MPEG-TS files, which `publish` and `package` take apart (on a pipe
//! they are refused too, saying to pass the path).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

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
        let want_cmd = format!(
            "ffmpeg -i {} -c:v copy -bsf:v h264_mp4toannexb -an -f h264 {}",
            file.display(),
            file.with_extension("h264").display()
        );
        let session = format!("c{}", file.extension().unwrap().to_str().unwrap());
        let publish = [
            "publish",
            "--server",
            &grpc,
            "--session",
            &session,
            s(&file),
        ];
        let taken_apart = matches!(name, "MP4/MOV" | "MPEG-TS");
        if taken_apart {
            // Its video is packaged and published: all 10 frames.
            let said = ok(&out, "package of an MP4/MPEG-TS file");
            assert!(said.contains(": 10 frames in 1 segments"), "{said}");
            let said = ok(&run(&publish).await, "publish of an MP4/MPEG-TS file");
            assert!(said.contains("accepted 10 frames"), "{said}");
            let _ = std::fs::remove_dir_all(&tree);
        } else {
            let line = refusal(&fails(&out, "package of a container"), s(&file));
            assert!(
                line.contains(&format!("in the {name} container format")),
                "{line}"
            );
            assert!(line.contains(&want_cmd), "{line}");
            assert!(!tree.exists(), "no tree for a refused file");
            let line = refusal(
                &fails(&run(&publish).await, "publish of a container"),
                s(&file),
            );
            assert!(
                line.contains(&format!("in the {name} container format")),
                "{line}"
            );
            assert!(line.contains(&want_cmd), "{line}");
            // Refused before a session was opened.
            assert!(server.registry.get(&session).is_none(), "{session} created");
        }

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
        if taken_apart {
            assert!(line.contains("pass the file's path"), "{line}");
        }
    }
    // The command given works: its output packages (the Matroska one).
    let mp4 = dir.join("clip.mkv");
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

/// An H.265 Matroska file is refused with the command for H.265
/// (`hevc_mp4toannexb`, `-f hevc`), and that command's output packages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h265_container_gets_the_h265_command() {
    if !require_ffmpeg("an H.265 Matroska file made with ffmpeg") {
        return;
    }
    let dir = tempdir("hevc-container");
    let mp4 = dir.join("clip.mkv");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(testdata_path("mp4_hevc_44k.mp4"))
        .args(["-map", "0:v", "-c", "copy"])
        .arg(&mp4)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg made no H.265 Matroska file");
    let out = run(&["package", s(&mp4), "--out", s(&dir.join("tree"))]).await;
    let line = refusal(&fails(&out, "package of an H.265 Matroska file"), s(&mp4));
    let h265 = dir.join("clip.h265");
    let want = format!(
        "ffmpeg -i {} -c:v copy -bsf:v hevc_mp4toannexb -an -f hevc {}",
        mp4.display(),
        h265.display()
    );
    assert!(line.contains("not raw H.265 (Annex B)"), "{line}");
    assert!(line.contains(&want), "{line}");
    assert!(!line.contains("h264_mp4toannexb"), "{line}");
    let status = Command::new("sh")
        .args([
            "-c",
            &want.replace("ffmpeg -i", "ffmpeg -nostdin -v error -y -i"),
        ])
        .status()
        .expect("run the command given");
    assert!(status.success(), "the command given works");
    let out = run(&["package", s(&h265), "--out", s(&dir.join("ok"))]).await;
    let said = ok(&out, "package of the extracted H.265 stream");
    assert!(said.contains(" frames in "), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

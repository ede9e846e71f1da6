//! `play --out` leaves a tree that plays: the MPD comes with the first
//! segment even for a viewer that joins a running session, and Ctrl-C
//! closes the playlists (`#EXT-X-ENDLIST`, a static MPD) so ffmpeg reads
//! every manifest to its end.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn interrupt(p: &ClientProcess) {
    let pid = p.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -INT {pid}");
}

async fn wait_for_file(path: &Path, timeout: Duration, what: &ClientProcess) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {} within {timeout:?}; stderr:\n{}",
            path.display(),
            what.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_a_tree_that_plays() {
    let ffmpeg = require_ffmpeg("play --out tree decoded by ffmpeg");
    let server = start().await;
    let grpc = grpc_url(&server);
    let dir = tempdir("play-out");
    let tree = dir.join("tree");
    let file = testdata_path("baseline_30.h264");

    // A live session: a camera-paced publisher with 1 s segments, looping.
    let publisher = spawn(&[
        "publish",
        "--server",
        &grpc,
        "--session",
        "live",
        "--realtime",
        "--loop",
        "--segment-duration",
        "1s",
        s(&file),
    ]);
    // The viewer joins once segments were cut without it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let playlist = format!("{}/live/live/index.m3u8", http_url(&server));
    loop {
        let (status, body) = get(&playlist).await;
        if status == 200 && listed_segments(&text(&body), ".m4s").len() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no segments; publisher:\n{}",
            publisher.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let viewer = spawn(&[
        "play",
        "--server",
        &grpc,
        "--session",
        "live",
        "--out",
        s(&tree),
    ]);
    // The MPD is written with the first segment, before the playlists.
    let hls = tree.join("index.m3u8");
    wait_for_file(&hls, Duration::from_secs(10), &viewer).await;
    assert!(
        tree.join("manifest.mpd").exists(),
        "manifest.mpd with the first segment"
    );
    let mpd = std::fs::read_to_string(tree.join("manifest.mpd")).unwrap();
    assert!(mpd.contains("type=\"dynamic\""), "{mpd}");
    // Two more segments, then Ctrl-C.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listed_segments(&std::fs::read_to_string(&hls).unwrap(), ".m4s").len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            viewer.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    interrupt(&viewer);
    let (status, _, stderr) = viewer.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{stderr}");

    for playlist in ["index.m3u8", "ts/index.m3u8"] {
        let text = std::fs::read_to_string(tree.join(playlist)).unwrap();
        assert!(
            text.trim_end().ends_with("#EXT-X-ENDLIST"),
            "{playlist}:\n{text}"
        );
    }
    let mpd = std::fs::read_to_string(tree.join("manifest.mpd")).unwrap();
    assert!(mpd.contains("type=\"static\""), "{mpd}");
    assert!(mpd.contains("mediaPresentationDuration=\"PT"), "{mpd}");
    let segments = listed_segments(&std::fs::read_to_string(&hls).unwrap(), ".m4s");
    assert!(segments.len() >= 3, "{segments:?}");
    // Joined late: the tree starts at its own first segment.
    assert!(segments[0] >= 2, "{segments:?}");

    if ffmpeg {
        let mut counts = Vec::new();
        for manifest in ["index.m3u8", "ts/index.m3u8", "manifest.mpd"] {
            let (frames, errors) = ffmpeg_frames(&tree.join(manifest), None).await;
            assert_eq!(errors, "", "{manifest}");
            assert!(frames >= 60, "{manifest}: {frames} frames");
            counts.push(frames);
        }
        assert!(
            counts.iter().all(|c| *c == counts[0]),
            "every manifest plays the same frames: {counts:?}"
        );
    }

    interrupt(&publisher);
    let (status, _, stderr) = publisher.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}

//! The HTTP origin checked with ffmpeg/ffprobe: every committed test stream
//! published over gRPC comes out as HLS (CMAF and MPEG-TS) and DASH that
//! decode with zero errors, with the input's frame count, keyframe-aligned
//! segments, honest durations and B-frames in the right presentation order.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event;

/// ffprobe's frames of a file: (pts, key_frame) in presentation order.
fn ffprobe_frames(path: &str) -> Vec<(i64, bool)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts,key_frame",
            "-of",
            "csv=p=0",
            path,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.split(',');
            let key = f.next().unwrap() == "1";
            let pts = f.next().unwrap().parse().unwrap();
            (pts, key)
        })
        .collect()
}

/// The ffprobe CSV stored beside a test stream: (pts, dts, key) per packet.
fn expected(name: &str) -> Vec<(i64, i64, bool)> {
    String::from_utf8(testdata(&format!("{name}.packets.csv")))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.split(',');
            (
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().starts_with('K'),
            )
        })
        .collect()
}

async fn publish_whole(
    server: &liveslice_server::app::Running,
    id: &str,
    data: &[u8],
) -> Vec<pb::SegmentReady> {
    let mut c = client(server).await;
    let mut p = publish(&mut c, id, Default::default()).await.unwrap();
    p.send_chunked(data, &[64 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let (responses, status) = collect(&mut p.responses, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    responses
        .into_iter()
        .filter_map(|r| match r.event {
            Some(Event::SegmentReady(s)) => Some(s),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_test_stream_plays_as_hls_cmaf_hls_ts_and_dash() {
    if !have_ffmpeg("HTTP output checked with ffmpeg") {
        return;
    }
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    for name in [
        "baseline_30",
        "high_bframes_30",
        "main_slices4_30",
        "high_2997",
    ] {
        let want = expected(name);
        let segs = publish_whole(&server, name, &testdata(&format!("{name}.h264"))).await;
        assert!(!segs.is_empty(), "{name}");
        let total: u32 = segs.iter().map(|s| s.frame_count).sum();
        assert_eq!(total as usize, want.len(), "{name}");

        // The three flavours decode with zero errors and the input's frames.
        for path in ["index.m3u8", "ts/index.m3u8", "manifest.mpd"] {
            let url = format!("{base}/live/{name}/{path}");
            let (frames, errors) = tokio::task::spawn_blocking(move || ffmpeg_frames(&url))
                .await
                .unwrap();
            assert_eq!(errors, "", "{name} {path}");
            assert_eq!(frames, want.len(), "{name} {path}");
        }

        // Playlists: EXTINF and DASH d equal the segments' real durations.
        let (_, _, hls) = get(&format!("{base}/live/{name}/index.m3u8")).await;
        let hls = String::from_utf8(hls).unwrap();
        let extinf: Vec<String> = hls
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|v| v.trim_end_matches(',').to_string())
            .collect();
        let real: Vec<String> = segs
            .iter()
            .map(|s| {
                format!(
                    "{}.{:06}",
                    s.duration_90k / 90000,
                    (s.duration_90k % 90000) * 1_000_000 / 90000
                )
            })
            .collect();
        assert_eq!(extinf, real, "{name}");
        let (_, _, mpd) = get(&format!("{base}/live/{name}/manifest.mpd")).await;
        let mpd = String::from_utf8(mpd).unwrap();
        for s in &segs {
            let entry = format!("<S t=\"{}\" d=\"{}\"/>", s.start_90k, s.duration_90k);
            assert!(mpd.contains(&entry), "{name}: {entry} in\n{mpd}");
        }

        // Each segment measured by ffprobe: starts with a keyframe, lasts
        // what the playlist says, and shows B-frames in presentation order.
        let dir = tempdir();
        let (status, _, init) = get(&format!("{base}/live/{name}/init-0.mp4")).await;
        assert_eq!(status, 200);
        let mut all_pts = Vec::new();
        for s in &segs {
            let (status, _, seg) = get(&format!("{base}/live/{name}/seg-{}.m4s", s.sequence)).await;
            assert_eq!(status, 200, "{name} seg {}", s.sequence);
            let path = dir.join(format!("s{}.mp4", s.sequence));
            std::fs::write(&path, [init.as_slice(), seg.as_slice()].concat()).unwrap();
            let frames = ffprobe_frames(path.to_str().unwrap());
            assert_eq!(
                frames.len(),
                s.frame_count as usize,
                "{name} seg {}",
                s.sequence
            );
            assert!(
                frames[0].1,
                "{name}: segment {} starts with a keyframe",
                s.sequence
            );
            let pts: Vec<i64> = frames.iter().map(|f| f.0).collect();
            assert!(
                pts.windows(2).all(|w| w[0] < w[1]),
                "{name}: presentation order"
            );
            all_pts.extend(pts);

            let (status, _, ts) =
                get(&format!("{base}/live/{name}/ts/seg-{}.ts", s.sequence)).await;
            assert_eq!(status, 200);
            let tpath = dir.join(format!("s{}.ts", s.sequence));
            std::fs::write(&tpath, &ts).unwrap();
            let tframes = ffprobe_frames(tpath.to_str().unwrap());
            assert_eq!(tframes.len(), s.frame_count as usize);
            assert!(
                tframes[0].1,
                "{name}: TS segment {} starts with a keyframe",
                s.sequence
            );
        }
        // Presentation times relative to the first equal ffprobe's for the
        // original (MP4-timed) stream, sorted into presentation order.
        let mut want_pts: Vec<i64> = want.iter().map(|w| w.0).collect();
        want_pts.sort();
        let rel = |v: &[i64]| v.iter().map(|p| p - v[0]).collect::<Vec<_>>();
        assert_eq!(rel(&all_pts), rel(&want_pts), "{name}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_semantics_content_types_caching_cors_and_404s() {
    let mut config = test_config();
    config.engine.window = 2;
    let server = start(config).await;
    let base = format!("http://{}", server.http_addr);
    // 4 segments with a window of 2.
    let data = testdata("baseline_30.h264");
    let long: Vec<u8> = data.iter().chain(data.iter()).copied().collect();
    let segs = publish_whole(&server, "h", &long).await;
    assert_eq!(segs.len(), 6);

    let (s, h, body) = get(&format!("{base}/live/h/index.m3u8")).await;
    assert_eq!(s, 200);
    assert_eq!(
        header(&h, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert!(header(&h, "cache-control").unwrap().contains("no-cache"));
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4"), "{text}");
    assert!(text.ends_with("#EXT-X-ENDLIST\n"));

    let (s, h, _) = get(&format!("{base}/live/h/manifest.mpd")).await;
    assert_eq!(s, 200);
    assert_eq!(header(&h, "content-type"), Some("application/dash+xml"));
    let (s, h, _) = get(&format!("{base}/live/h/ts/index.m3u8")).await;
    assert_eq!(
        (s, header(&h, "content-type")),
        (200, Some("application/vnd.apple.mpegurl"))
    );

    let (s, h, _) = get(&format!("{base}/live/h/seg-5.m4s")).await;
    assert_eq!(s, 200);
    assert_eq!(header(&h, "content-type"), Some("video/iso.segment"));
    assert!(header(&h, "cache-control").unwrap().contains("max-age=60"));
    let (s, h, _) = get(&format!("{base}/live/h/init-0.mp4")).await;
    assert_eq!((s, header(&h, "content-type")), (200, Some("video/mp4")));
    let (s, h, body) = get(&format!("{base}/live/h/ts/seg-5.ts")).await;
    assert_eq!((s, header(&h, "content-type")), (200, Some("video/mp2t")));
    assert_eq!(body.len() % 188, 0);
    assert_eq!(body[0], 0x47);

    // Slid out of the window (never fetched while it was in), unknown, bad.
    for path in [
        "/live/h/seg-0.m4s",
        "/live/h/seg-99.m4s",
        "/live/h/init-7.mp4",
        "/live/nobody/index.m3u8",
        "/live/h/seg-x.m4s",
        "/live/..%2F..%2Fetc/index.m3u8",
        "/live/h/ts/seg-0.ts",
    ] {
        let (s, _, _) = get(&format!("{base}{path}")).await;
        assert_eq!(s, 404, "{path}");
    }

    // The time source DASH clients sync to, the session list and the player.
    let (s, _, t) = get(&format!("{base}/time")).await;
    assert_eq!(s, 200);
    assert!(String::from_utf8(t).unwrap().ends_with('Z'));
    let (s, _, page) = get(&format!("{base}/")).await;
    assert_eq!(s, 200);
    assert!(String::from_utf8(page).unwrap().contains("/player/h"));
    let (s, _, page) = get(&format!("{base}/player/h?mode=dash")).await;
    assert_eq!(s, 200);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("/assets/dash.mediaplayer.min.js") && page.contains("\"dash\""));
    let (s, h, js) = get(&format!("{base}/assets/hls.min.js")).await;
    assert_eq!(s, 200);
    assert!(header(&h, "content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.len() > 100_000);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_is_404_until_the_first_segment_is_complete() {
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    let mut c = client(&server).await;
    let p = publish(&mut c, "early", Default::default()).await.unwrap();
    let data = testdata("baseline_30.h264");
    // 45 frames: the first segment (60 frames) is not complete yet.
    let cut = data.len() / 4;
    p.send(bytes::Bytes::copy_from_slice(&data[..cut])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _, _) = get(&format!("{base}/live/early/index.m3u8")).await;
    assert_eq!(s, 404);
    p.send(bytes::Bytes::copy_from_slice(&data[cut..])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _, body) = get(&format!("{base}/live/early/index.m3u8")).await;
    assert_eq!(s, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("seg-0.m4s") && !text.contains("#EXT-X-ENDLIST"),
        "{text}"
    );
    p.end().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_follows_the_live_playlist_while_a_publisher_pushes_in_real_time() {
    if !have_ffmpeg("live HLS followed by ffmpeg") {
        return;
    }
    let server = start(test_config()).await;
    let mut c = client(&server).await;
    let p = publish(&mut c, "rt", Default::default()).await.unwrap();
    // Access units of the B-frame stream with their decode times, pushed at
    // real-time pace, looping, one access unit per message.
    let aus = access_units(&testdata("high_bframes_30.h264"));
    let pusher = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for lap in 0..3u64 {
            for (data, dts) in &aus {
                let at = lap * 180 * 3000 + dts;
                tokio::time::sleep_until(start + Duration::from_micros(at * 100 / 9)).await;
                p.tx.send(pb::SliceRequest {
                    data: data.clone(),
                    end_of_access_unit: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }
        p.end().await;
        p
    });
    // Wait for the first segment, then follow the live playlist.
    let url = format!("http://{}/live/rt/index.m3u8", server.http_addr);
    for _ in 0..50 {
        if get(&url).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ffmpeg")
            .args(["-v", "error", "-i", &url, "-t", "6", "-f", "framemd5", "-"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert!(frames >= 170, "6 s at 30 fps decoded, got {frames}");
    let _ = pusher.await.unwrap();
    server.shutdown().await;
}

fn access_units(data: &[u8]) -> Vec<(bytes::Bytes, u64)> {
    use liveslice_server::engine::{pipeline::frames_of, PipelineOptions};
    frames_of(
        bytes::Bytes::copy_from_slice(data),
        PipelineOptions::default(),
    )
    .iter()
    .map(|f| (f.data.clone(), f.dts))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_change_gets_a_new_init_segment_and_plays_through() {
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    let segs = publish_whole(&server, "res", &testdata("res_change.h264")).await;
    assert_eq!(segs.len(), 2);
    assert_eq!((segs[0].config_id, segs[1].config_id), (0, 1));
    assert!(segs[1].discontinuity);

    let (_, _, hls) = get(&format!("{base}/live/res/index.m3u8")).await;
    let hls = String::from_utf8(hls).unwrap();
    assert!(hls.contains("#EXT-X-MAP:URI=\"init-0.mp4\""), "{hls}");
    assert!(
        hls.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\""),
        "{hls}"
    );
    let (_, _, ts) = get(&format!("{base}/live/res/ts/index.m3u8")).await;
    assert!(String::from_utf8(ts)
        .unwrap()
        .contains("#EXT-X-DISCONTINUITY\n"));
    let (_, _, mpd) = get(&format!("{base}/live/res/manifest.mpd")).await;
    let mpd = String::from_utf8(mpd).unwrap();
    assert_eq!(mpd.matches("<Period ").count(), 2, "{mpd}");
    assert!(mpd.contains("width=\"256\" height=\"144\""), "{mpd}");
    for init in ["init-0.mp4", "init-1.mp4"] {
        assert_eq!(get(&format!("{base}/live/res/{init}")).await.0, 200);
    }
    if have_ffmpeg("a resolution change decoded by ffmpeg") {
        for path in ["index.m3u8", "ts/index.m3u8"] {
            let url = format!("{base}/live/res/{path}");
            let (frames, errors) = tokio::task::spawn_blocking(move || ffmpeg_frames(&url))
                .await
                .unwrap();
            assert_eq!((frames, errors.as_str()), (120, ""), "{path}");
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_bytes_over_grpc_equal_http_and_play_from_disk() {
    let server = start(test_config()).await;
    let base = format!("http://{}", server.http_addr);
    let mut c = client(&server).await;
    let p = publish(&mut c, "bytes", Default::default()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SliceRequest {
        session_id: "bytes".into(),
        role: pb::Role::Subscribe as i32,
        subscribe: Some(pb::SubscribeOptions {
            no_frames: true,
            segments_cmaf: true,
            segments_ts: true,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sub = c
        .stream_slices(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.send_chunked(&testdata("high_bframes_30.h264"), &[30_000])
        .await;
    p.end().await;
    let (responses, status) = task.await.unwrap();
    drop(tx);
    assert!(status.is_none(), "{status:?}");
    assert!(frames(&responses).is_empty(), "no_frames");

    // Write the tree a client would: init, segments, and the playlist kept
    // from SessionInfo + ManifestDelta edits.
    let dir = tempdir();
    std::fs::create_dir_all(dir.join("ts")).unwrap();
    let (mut head, mut entries, mut tail) = (
        String::new(),
        std::collections::VecDeque::new(),
        String::new(),
    );
    let mut segs = 0;
    for r in &responses {
        match &r.event {
            Some(Event::SessionInfo(i)) => {
                let st = i.hls_state.as_ref().unwrap();
                head = st.head.clone();
                entries = st.append_entries.iter().cloned().collect();
                tail = st.tail.clone();
            }
            Some(Event::SegmentReady(s)) => {
                segs += 1;
                if s.sequence == 0 {
                    assert!(
                        !s.cmaf_init.is_empty(),
                        "the init segment comes with the first segment"
                    );
                    std::fs::write(dir.join("init-0.mp4"), &s.cmaf_init).unwrap();
                } else {
                    assert!(s.cmaf_init.is_empty(), "init only when it changes");
                }
                std::fs::write(dir.join(format!("seg-{}.m4s", s.sequence)), &s.cmaf).unwrap();
                std::fs::write(dir.join(format!("ts/seg-{}.ts", s.sequence)), &s.ts).unwrap();
                let (_, _, http_cmaf) =
                    get(&format!("{base}/live/bytes/seg-{}.m4s", s.sequence)).await;
                assert_eq!(http_cmaf, s.cmaf.to_vec());
                let (_, _, http_ts) =
                    get(&format!("{base}/live/bytes/ts/seg-{}.ts", s.sequence)).await;
                assert_eq!(http_ts, s.ts.to_vec());
            }
            Some(Event::ManifestDelta(d)) => {
                let e = d.hls.as_ref().unwrap();
                for _ in 0..e.remove_entries {
                    entries.pop_front();
                }
                entries.extend(e.append_entries.iter().cloned());
                head = e.head.clone();
                tail = e.tail.clone();
            }
            _ => {}
        }
    }
    assert_eq!(segs, 3);
    let playlist: String = head + &entries.into_iter().collect::<String>() + &tail;
    std::fs::write(dir.join("index.m3u8"), &playlist).unwrap();
    if have_ffmpeg("a tree written from gRPC segment bytes") {
        let path = dir.join("index.m3u8").to_str().unwrap().to_string();
        let (frames, errors) = ffmpeg_frames(&path);
        assert_eq!((frames, errors.as_str()), (180, ""));
    }
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}

//! Parts end to end: a session's segments are divided into parts of about
//! `--part-duration`, each muxed once as it closes. Over gRPC every part is
//! announced (`PartReady`, with its bytes when asked); over HTTP each part
//! is served on its own (`part-N.m4s`, `ts/part-N.ts`), and every segment's
//! bytes are exactly its parts' bytes: CMAF `styp` + the chunks, MPEG-TS the
//! packets joined, byte for byte.

mod common;

use std::time::Duration;

use common::http::{get, header};
use common::*;
use liveslice_proto::v1 as pb;
use pb::slice_response::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The `styp` a CMAF segment starts with (ISO/IEC 23000-19 7.3.2.2).
fn is_styp(b: &[u8]) -> bool {
    b.len() >= 8 && &b[4..8] == b"styp"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_their_parts_over_grpc_and_http() {
    let mut config = test_config();
    config.engine.part_duration = Duration::from_millis(300);
    config.engine.window = 30; // the whole stream stays listed
    let server = start(config).await;
    let http = format!("http://{}", server.http_addr);
    let data = testdata("open_gop_30.h264");
    let mut c = client(&server).await;
    let p = publish(&mut c, "parts", Default::default())
        .await
        .expect("publish");

    // A subscriber that asks for parts and their bytes (both formats).
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::SliceRequest {
        session_id: "parts".into(),
        role: pb::Role::Subscribe as i32,
        subscribe: Some(pb::SubscribeOptions {
            parts: true,
            segments_cmaf: true,
            segments_ts: true,
            no_frames: true,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("request");
    let mut c2 = client(&server).await;
    let mut sub = c2
        .stream_slices(ReceiverStream::new(rx))
        .await
        .expect("subscribe")
        .into_inner();

    p.send_chunked(&data, &[32 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let (responses, status) = collect(&mut sub, Duration::from_secs(60)).await;
    drop(tx);
    assert!(status.is_none(), "{status:?}");

    let part_target = responses
        .iter()
        .find_map(|r| match &r.event {
            Some(Event::SessionInfo(i)) => Some(i.part_target_ms),
            _ => None,
        })
        .expect("SessionInfo");
    assert_eq!(part_target, 300, "SessionInfo says the part target");

    let mut parts: Vec<pb::PartReady> = Vec::new();
    let mut segments: Vec<pb::SegmentReady> = Vec::new();
    for r in responses {
        match r.event {
            Some(Event::PartReady(p)) => {
                // A part comes before the SegmentReady of the segment it ends.
                assert!(
                    segments.last().is_none_or(|s| s.sequence < p.segment),
                    "part {} after its segment's SegmentReady",
                    p.number
                );
                parts.push(p);
            }
            Some(Event::SegmentReady(s)) => segments.push(s),
            _ => {}
        }
    }
    assert!(segments.len() >= 8, "{} segments", segments.len());
    for (n, p) in parts.iter().enumerate() {
        assert_eq!(p.number, n as u64, "parts numbered in order");
        assert!(!p.cmaf.is_empty() && !p.ts.is_empty(), "part {n} has bytes");
        assert_eq!(p.ts.len() % 188, 0);
        assert_eq!(p.uri_cmaf, format!("part-{n}.m4s"));
    }

    for seg in &segments {
        let mine: Vec<&pb::PartReady> =
            parts.iter().filter(|p| p.segment == seg.sequence).collect();
        assert!(
            mine.len() >= 2,
            "segment {}: {} parts",
            seg.sequence,
            mine.len()
        );
        // The parts tile the segment: times, frames, indexes.
        assert_eq!(mine[0].start_90k, seg.start_90k);
        assert_eq!(mine[0].first_frame_index, seg.first_frame_index);
        assert!(mine[0].independent, "a segment starts independent");
        let mut at = seg.start_90k;
        for (k, p) in mine.iter().enumerate() {
            assert_eq!(p.index as usize, k);
            assert_eq!(p.start_90k, at);
            at += p.duration_90k;
        }
        assert_eq!(
            at,
            seg.start_90k + seg.duration_90k,
            "segment {}",
            seg.sequence
        );
        let frames: u32 = mine.iter().map(|p| p.frame_count).sum();
        assert_eq!(frames, seg.frame_count);

        // gRPC: the segment's bytes are its parts' bytes.
        assert!(is_styp(&seg.cmaf));
        let cmaf_parts: Vec<u8> = mine.iter().flat_map(|p| p.cmaf.iter().copied()).collect();
        assert_eq!(
            seg.cmaf[seg.cmaf.len() - cmaf_parts.len()..],
            cmaf_parts[..]
        );
        assert_eq!(
            seg.cmaf[..seg.cmaf.len() - cmaf_parts.len()],
            body_prefix(&seg.cmaf)[..]
        );
        let ts_parts: Vec<u8> = mine.iter().flat_map(|p| p.ts.iter().copied()).collect();
        assert_eq!(seg.ts.to_vec(), ts_parts);

        // HTTP: the same bytes, the segment and each part on its own.
        let (status, _, body) = get(&format!("{http}/live/parts/seg-{}.m4s", seg.sequence)).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            seg.cmaf.to_vec(),
            "segment {} over HTTP",
            seg.sequence
        );
        let (status, _, body) = get(&format!("{http}/live/parts/ts/seg-{}.ts", seg.sequence)).await;
        assert_eq!(status, 200);
        assert_eq!(body, ts_parts);
        let mut joined = body_prefix(&seg.cmaf);
        for p in &mine {
            let (status, h, body) = get(&format!("{http}/live/parts/part-{}.m4s", p.number)).await;
            assert_eq!(status, 200);
            assert_eq!(header(&h, "content-type"), Some("video/iso.segment"));
            assert_eq!(body, p.cmaf.to_vec(), "part {} over HTTP", p.number);
            joined.extend_from_slice(&body);
            let (status, _, body) =
                get(&format!("{http}/live/parts/ts/part-{}.ts", p.number)).await;
            assert_eq!(status, 200);
            assert_eq!(body, p.ts.to_vec());
        }
        assert_eq!(
            joined,
            seg.cmaf.to_vec(),
            "styp + parts = segment {}",
            seg.sequence
        );
    }
    // A part that does not exist (yet) is a 404 naming it.
    let (status, _, body) = get(&format!("{http}/live/parts/part-{}.m4s", parts.len() + 100)).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("part"));
    server.shutdown().await;
}

/// The `styp` box at the start of a CMAF segment.
fn body_prefix(segment: &[u8]) -> Vec<u8> {
    let len = u32::from_be_bytes([segment[0], segment[1], segment[2], segment[3]]) as usize;
    segment[..len].to_vec()
}

/// A byte range across part boundaries is the same slice of the segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_cross_part_boundaries() {
    let mut config = test_config();
    config.engine.part_duration = Duration::from_millis(200);
    let server = start(config).await;
    let http = format!("http://{}", server.http_addr);
    let data = testdata("high_bframes_30.h264");
    let mut c = client(&server).await;
    let mut p = publish(&mut c, "ranges", Default::default())
        .await
        .expect("publish");
    p.send_chunked(&data, &[32 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let _ = collect(&mut p.responses, Duration::from_secs(60)).await;
    let (status, _, whole) = get(&format!("{http}/live/ranges/seg-0.m4s")).await;
    assert_eq!(status, 200);
    assert!(is_styp(&whole));
    let len = whole.len();
    for (first, last) in [
        (0, len - 1),
        (10, len / 2),
        (len / 3, len - 5),
        (len - 1, len - 1),
    ] {
        let range = format!("bytes={first}-{last}");
        let (status, h, body) = raw_get(
            server.http_addr,
            "/live/ranges/seg-0.m4s",
            &[("Range", &range)],
        )
        .await;
        assert_eq!(status, 206, "{first}-{last}");
        assert_eq!(
            header(&h, "content-length"),
            Some(&*(last - first + 1).to_string())
        );
        assert_eq!(body, whole[first..=last], "{first}-{last}");
    }
    server.shutdown().await;
}

/// `--formats cmaf`: parts are muxed as CMAF only; the MPEG-TS URLs answer
/// 404 saying why, and the session holds no TS bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_left_out_is_not_muxed_and_says_so() {
    let mut config = test_config();
    config.engine.formats = liveslice_server::config::parse_formats("cmaf").expect("formats");
    let server = start(config).await;
    let http = format!("http://{}", server.http_addr);
    let data = testdata("high_bframes_30.h264");
    let mut c = client(&server).await;
    let mut p = publish(&mut c, "cmafonly", Default::default())
        .await
        .expect("publish");
    p.send_chunked(&data, &[32 * 1024]).await;
    p.end().await;
    drop(p.tx);
    let _ = collect(&mut p.responses, Duration::from_secs(60)).await;
    let (status, _, body) = get(&format!("{http}/live/cmafonly/index.m3u8")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = get(&format!("{http}/live/cmafonly/seg-0.m4s")).await;
    assert_eq!(status, 200);
    assert!(is_styp(&body));
    for path in ["ts/index.m3u8", "ts/seg-0.ts", "ts/part-0.ts"] {
        let (status, _, body) = get(&format!("{http}/live/cmafonly/{path}")).await;
        assert_eq!(status, 404, "{path}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("MPEG-TS output is off") && text.contains("--formats"),
            "{path}: {text}"
        );
    }
    let session = server.registry.get("cmafonly").expect("lingering session");
    let cmaf = session.cmaf_segment(0).expect("cmaf").len();
    assert!(cmaf > 0);
    assert!(session.ts_segment(0).is_err());
    server.shutdown().await;
}

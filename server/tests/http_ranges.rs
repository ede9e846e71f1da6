//! HTTP `Range` on segments and init segments: `206` with `Content-Range`,
//! `Accept-Ranges: bytes`, `416` with `Content-Range: bytes */LEN` when
//! nothing of the body is asked for, the whole body for what is not a
//! single range.

mod common;

use std::time::Duration;

use common::*;

async fn publish_and_end(server: &liveslice_server::app::Running, id: &str) {
    let mut c = client(server).await;
    let mut p = publish(&mut c, id, Default::default()).await.unwrap();
    p.send(testdata("baseline_30.h264").into()).await;
    p.end().await;
    let (_, status) = collect(&mut p.responses, Duration::from_secs(20)).await;
    assert!(status.is_none(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_and_init_segments_serve_byte_ranges() {
    let server = start(test_config()).await;
    publish_and_end(&server, "r").await;
    let addr = server.http_addr;
    let (s, _, playlist) = raw_get(addr, "/live/r/index.m3u8", &[]).await;
    assert_eq!(s, 200);
    let playlist = String::from_utf8(playlist).unwrap();
    let seg = playlist
        .lines()
        .find(|l| l.starts_with("seg-"))
        .unwrap()
        .to_string();
    let ts_seg = seg.replace(".m4s", ".ts");
    for path in [
        format!("/live/r/{seg}"),
        "/live/r/init-0.mp4".to_string(),
        format!("/live/r/ts/{ts_seg}"),
    ] {
        let (s, h, full) = raw_get(addr, &path, &[]).await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(header(&h, "accept-ranges"), Some("bytes"), "{path}");
        let len = full.len();
        assert!(len > 200, "{path}: {len} bytes");
        let ct = header(&h, "content-type").map(str::to_string);

        // (Range, first byte, last byte) of the 206 it gets.
        let cases = [
            ("bytes=0-99".to_string(), 0, 99),
            ("bytes=100-".to_string(), 100, len - 1),
            ("bytes=-50".to_string(), len - 50, len - 1),
            (format!("bytes=10-{}", len + 1000), 10, len - 1),
            (format!("bytes=-{}", len + 5), 0, len - 1),
            (format!("bytes={}-{}", len - 1, len - 1), len - 1, len - 1),
        ];
        for (range, first, last) in cases {
            let (s, h, part) = raw_get(addr, &path, &[("Range", &range)]).await;
            assert_eq!(s, 206, "{path} {range}");
            assert_eq!(
                header(&h, "content-range"),
                Some(format!("bytes {first}-{last}/{len}").as_str()),
                "{path} {range}"
            );
            assert_eq!(
                header(&h, "content-length"),
                Some((last - first + 1).to_string().as_str())
            );
            assert_eq!(header(&h, "accept-ranges"), Some("bytes"));
            assert_eq!(header(&h, "content-type").map(str::to_string), ct);
            assert_eq!(part, full[first..=last], "{path} {range}");
        }

        // Nothing of the body: 416 naming its length.
        for range in [
            format!("bytes={len}-"),
            format!("bytes={}-{}", len + 1, len + 9),
            "bytes=-0".into(),
        ] {
            let (s, h, _) = raw_get(addr, &path, &[("Range", &range)]).await;
            assert_eq!(s, 416, "{path} {range}");
            assert_eq!(
                header(&h, "content-range"),
                Some(format!("bytes */{len}").as_str()),
                "{path} {range}"
            );
        }

        // Several ranges, another unit, nonsense, If-Range: the whole body.
        for (name, value) in [
            ("Range", "bytes=0-9,20-29"),
            ("Range", "items=0-9"),
            ("Range", "bytes=9-1"),
            ("Range", "bytes=x-y"),
        ] {
            let (s, _, body) = raw_get(addr, &path, &[(name, value)]).await;
            assert_eq!(s, 200, "{path} {value}");
            assert_eq!(body, full, "{path} {value}");
        }
        let (s, _, body) = raw_get(
            addr,
            &path,
            &[("Range", "bytes=0-9"), ("If-Range", "\"something\"")],
        )
        .await;
        assert_eq!((s, body.len()), (200, len), "{path} If-Range");
    }
    // A segment that does not exist is still 404, ranges or not.
    let (s, _, _) = raw_get(addr, "/live/r/seg-999.m4s", &[("Range", "bytes=0-9")]).await;
    assert_eq!(s, 404);
    server.shutdown().await;
}

//! The HTTP origin sheds what it should: silent sockets and clients that
//! trickle their headers are closed within the configured timeouts, more
//! connections than `--http-max-connections` get `503`, and meanwhile
//! playlists are served and publishers publish. All on loopback, bounded.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Makes sure this process may open `want` descriptors (the server and the
/// clients share it): raises the soft limit up to the hard one.
fn allow_fds(want: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
    }
    assert!(
        lim.rlim_cur >= want,
        "this test needs {want} file descriptors; the hard limit is {}",
        lim.rlim_max
    );
}

/// Resolves once the server has closed `s` (EOF or reset), returning
/// whatever it sent before.
async fn closed_by_server(mut s: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn publish_a_segment(server: &liveslice_server::app::Running, id: &str) -> Publisher {
    let mut c = client(server).await;
    let p = publish(&mut c, id, Default::default())
        .await
        .expect("a publisher is accepted during the flood");
    p.send(testdata("baseline_30.h264").into()).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_connections_are_closed_while_others_are_served() {
    const IDLE: usize = 2000;
    allow_fds(2 * IDLE as libc::rlim_t + 512);
    let header_timeout = Duration::from_millis(1500);
    let mut config = test_config();
    config.http.header_timeout = header_timeout;
    config.http.idle_timeout = Duration::from_secs(3);
    let server = start(config).await;
    let addr = server.http_addr;
    let opened = Instant::now();

    // 2,000 sockets that never send a byte.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let idle: Vec<_> = idle
        .into_iter()
        .map(|s| tokio::spawn(closed_by_server(s)))
        .collect();
    // One that sends its request line and then a header byte every 100 ms,
    // never finishing.
    let trickler = tokio::spawn(async move {
        // Timed from before the connect: the server's deadline runs from its
        // accept, which may come before connect() returns here.
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if s.write_all(b"GET /live/t/index.m3u8 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .is_err()
        {
            return (started.elapsed(), Vec::new());
        }
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return (started.elapsed(), got),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if s.write_all(b"a").await.is_err() {
                        return (started.elapsed(), got);
                    }
                }
            }
        }
    });

    // Meanwhile: a publisher publishes, and its playlist is served.
    let publisher = publish_a_segment(&server, "t").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, _, body) = raw_get(addr, "/live/t/index.m3u8", &[]).await;
        if s == 200 {
            assert!(String::from_utf8_lossy(&body).contains("#EXTM3U"));
            break;
        }
        assert_eq!(s, 404, "before the first segment");
        assert!(Instant::now() < deadline, "no playlist during the flood");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every idle socket is closed by the server, without a byte sent, once
    // the header timeout is over (the bound only keeps the test finite).
    let bound = header_timeout + Duration::from_secs(10);
    for h in idle {
        let got = tokio::time::timeout_at(opened + bound, h)
            .await
            .expect("an idle socket was still open long after the header timeout")
            .unwrap();
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }
    let (took, got) = tokio::time::timeout(bound, trickler)
        .await
        .expect("the slow-header client was still connected long after the header timeout")
        .unwrap();
    assert!(took >= header_timeout, "closed after {took:?}");
    // hyper answers a header timeout with nothing or a 408; never a 200.
    assert!(
        !String::from_utf8_lossy(&got).contains(" 200 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // And the server still serves.
    let (s, _, _) = raw_get(addr, "/live/t/index.m3u8", &[]).await;
    assert_eq!(s, 200);
    publisher.end().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_503_until_some_close() {
    const MAX: usize = 40;
    let mut config = test_config();
    config.http.max_connections = MAX;
    config.http.header_timeout = Duration::from_secs(4);
    config.http.idle_timeout = Duration::from_secs(4);
    let server = start(config).await;
    let addr = server.http_addr;

    // MAX kept-alive connections, each having been served once (so each is
    // surely accepted and holding its slot).
    let mut held = Vec::new();
    for _ in 0..MAX {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    // One more: refused at once with a 503 that says why.
    let (s, h, body) = raw_get(addr, "/healthz", &[]).await;
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "connection"), Some("close"));
    assert!(String::from_utf8_lossy(&body).contains("too many connections"));
    // gRPC is a separate listener and is not affected.
    let publisher = publish_a_segment(&server, "limit").await;

    // Closing some frees their slots.
    held.truncate(MAX - 5);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _, _) = raw_get(addr, "/healthz", &[]).await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 503);
        assert!(Instant::now() < deadline, "slots were never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rest are closed by the server once idle; then all slots are free.
    for s in held {
        tokio::time::timeout(Duration::from_secs(20), closed_by_server(s))
            .await
            .expect("a kept-alive idle connection is closed");
    }
    publisher.end().await;
    server.shutdown().await;
}

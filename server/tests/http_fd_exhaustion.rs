//! Out of file descriptors, the HTTP listener backs off and keeps going:
//! a connection that arrives while the process has none left is accepted
//! and served once descriptors are free again. (Its own test binary: it
//! fills this process's descriptor table.)

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn accept_errors() -> u64 {
    let Some(h) = liveslice_server::metrics::install() else {
        return 0;
    };
    h.render()
        .lines()
        .filter(|l| l.starts_with("liveslice_http_connections_shed_total"))
        .filter(|l| l.contains("reason=\"accept_error\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Lowers this process's soft descriptor limit to a little above what is
/// open (so filling it is quick whatever the system's limit), restoring it
/// when dropped.
struct LowFdLimit(libc::rlimit);

impl LowFdLimit {
    fn new(headroom: libc::rlim_t) -> Self {
        let open = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(64) as libc::rlim_t;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with valid pointers to locals.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            let low = libc::rlimit {
                rlim_cur: (open + headroom).min(lim.rlim_cur),
                rlim_max: lim.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
        }
        Self(lim)
    }
}

impl Drop for LowFdLimit {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, &self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_backs_off_when_out_of_descriptors_and_recovers() {
    let server = start(test_config()).await;
    let addr = server.http_addr;
    let before = accept_errors();

    // Take every free descriptor but one.
    let limit = LowFdLimit::new(256);
    let mut hog = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("opening /dev/null: {e}"),
        }
        assert!(hog.len() < 100_000, "no descriptor limit?");
    }
    hog.pop();
    // The client's socket takes the last one: the server cannot accept it.
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect with the last descriptor");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while accept_errors() == before {
        assert!(
            Instant::now() < deadline,
            "the server never hit EMFILE accepting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let it fail a few more times (it must neither spin nor give up).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let failures = accept_errors() - before;
    assert!(failures >= 2, "{failures} accept errors");
    drop(hog);
    drop(limit);

    // The waiting connection is accepted and served.
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("served after descriptors came back")
        .unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let (status, _, _) = raw_get(addr, "/healthz", &[]).await;
    assert_eq!(status, 200);
    let mut c = client(&server).await;
    let p = publish(&mut c, "after-emfile", Default::default())
        .await
        .expect("gRPC works too");
    p.end().await;
    server.shutdown().await;
}

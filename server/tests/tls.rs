//! TLS for gRPC and HTTP from PEM files, with a self-signed certificate made
//! in the test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use liveslice_proto::v1::slice_service_client::SliceServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_over_tls() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempdir();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut config = test_config();
    config.tls.cert = Some(cert_path);
    config.tls.key = Some(key_path);
    let server = start(config).await;

    // gRPC: publish and subscribe over TLS.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert.cert.pem()))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", server.grpc_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = SliceServiceClient::new(channel);
    let p = publish(&mut c, "secure", Default::default()).await.unwrap();
    let mut sub = subscribe(&mut c, "secure", false, 0).await.unwrap();
    let task = tokio::spawn(async move { collect(&mut sub, Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    p.send_chunked(&testdata("baseline_30.h264"), &[40_000])
        .await;
    p.end().await;
    let (frames, status) = task.await.unwrap();
    assert!(status.is_none());
    assert_eq!(frames.len(), 180);

    // Plain gRPC to the TLS port fails.
    let plain = SliceServiceClient::connect(format!("http://{}", server.grpc_addr)).await;
    if let Ok(mut plain) = plain {
        assert!(subscribe(&mut plain, "secure", false, 0).await.is_err());
    }

    // HTTP over TLS: the playlist.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(
        b"GET /live/secure/index.m3u8 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("#EXTM3U"), "{text}");

    // Plain HTTP to the TLS port gets nothing useful.
    let mut tcp = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut b = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut b)).await;
    assert!(!String::from_utf8_lossy(&b).contains("200 OK"));
    server.shutdown().await;
}

/// Starts with these PEM files and returns the error.
async fn start_error(cert: &std::path::Path, key: &std::path::Path) -> String {
    let mut config = test_config();
    config.tls.cert = Some(cert.to_path_buf());
    config.tls.key = Some(key.to_path_buf());
    match liveslice_server::app::start(&config).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started with {cert:?} and {key:?}"),
    }
}

#[tokio::test]
async fn bad_pem_files_are_named_with_the_problem() {
    let dir = tempdir();
    let good = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cert = file("cert.pem", &good.cert.pem());
    let key = file("key.pem", &good.signing_key.serialize_pem());
    let other_key = file("other-key.pem", &other.signing_key.serialize_pem());
    let junk = file("junk.pem", "not a certificate");
    let bad_der = file(
        "bad-der.pem",
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
    );
    let missing = dir.join("missing.pem");

    // (cert, key, the flag named, the file named, words of the problem)
    let cases: [(
        &std::path::Path,
        &std::path::Path,
        &str,
        &std::path::Path,
        &[&str],
    ); 7] = [
        (&missing, &key, "--tls-cert", &missing, &["cannot read"]),
        (&cert, &missing, "--tls-key", &missing, &["cannot read"]),
        (&junk, &key, "--tls-cert", &junk, &["no certificate found"]),
        (&cert, &junk, "--tls-key", &junk, &["no private key found"]),
        (&key, &cert, "--tls-cert", &key, &["swapped"]),
        (
            &bad_der,
            &key,
            "--tls-cert",
            &bad_der,
            &["certificate is not usable"],
        ),
        (
            &cert,
            &other_key,
            "--tls-key",
            &other_key,
            &["does not belong", "cert.pem"],
        ),
    ];
    for (c, k, flag, named, words) in cases {
        let err = start_error(c, k).await;
        let shown = format!("{flag} {}", named.display());
        assert!(
            err.contains(&shown),
            "{c:?} {k:?}: {err:?} does not name {shown:?}"
        );
        for w in words {
            assert!(err.contains(w), "{c:?} {k:?}: {err:?} does not say {w:?}");
        }
        assert!(!err.contains("transport error"), "{err}");
    }
    // The good pair starts.
    let mut config = test_config();
    config.tls.cert = Some(cert);
    config.tls.key = Some(key);
    liveslice_server::app::start(&config)
        .await
        .unwrap()
        .shutdown()
        .await;
}

/// A TLS client for `cert` offering `alpn`.
async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// Reads until the server closes; everything it sent.
async fn until_closed(mut s: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// One HTTP/2 frame: (type, flags, stream, payload).
async fn h2_frame(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    (head[3], head[4], stream, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_http2_connections_are_served_and_shed_when_idle() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempdir();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut config = test_config();
    config.tls.cert = Some(cert_path);
    config.tls.key = Some(key_path);
    config.http.header_timeout = Duration::from_millis(1000);
    config.http.idle_timeout = Duration::from_millis(1500);
    let server = start(config).await;
    let addr = server.http_addr;
    let bound = Duration::from_secs(10);

    // A TCP connection that never starts the handshake.
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A TLS HTTP/1.1 connection that never sends a request.
    let h1 = tls_connect(addr, &cert, b"http/1.1").await;

    // HTTP/2 over TLS (ALPN h2).
    let mut h2 = tls_connect(addr, &cert, b"h2").await;
    assert_eq!(h2_get_healthz(&mut h2).await, (true, b"ok\n".to_vec()));

    // Then all three are closed by the server: the handshake and the
    // HTTP/1.1 request at the header timeout, HTTP/2 at the idle timeout.
    let started = tokio::time::Instant::now();
    for (what, closed) in [
        ("silent TCP", tokio::spawn(until_closed(silent))),
        ("idle TLS HTTP/1.1", tokio::spawn(until_closed(h1))),
        ("idle TLS HTTP/2", tokio::spawn(until_closed(h2))),
    ] {
        tokio::time::timeout_at(started + bound, closed)
            .await
            .unwrap_or_else(|_| panic!("{what} connection still open after {bound:?}"))
            .unwrap();
    }
    server.shutdown().await;
}

/// GET /healthz over HTTP/2 with a hand-made HEADERS frame (HPACK:
/// :method GET, :scheme https, :path, :authority): (`:status` is 200, body).
async fn h2_get_healthz(
    h2: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
) -> (bool, Vec<u8>) {
    let mut hpack = vec![0x82, 0x87, 0x44, 8];
    hpack.extend_from_slice(b"/healthz");
    hpack.extend_from_slice(&[0x41, 1, b'x']);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS
    let len = hpack.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[1, 0x5, 0, 0, 0, 1]); // HEADERS, END_STREAM|END_HEADERS, stream 1
    out.extend_from_slice(&hpack);
    h2.write_all(&out).await.unwrap();
    let (mut status_200, mut body) = (false, Vec::new());
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (kind, flags, stream, payload) = h2_frame(h2).await;
            match (kind, stream) {
                // SETTINGS from the server: acknowledge.
                (4, 0) if flags & 1 == 0 => {
                    h2.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.unwrap()
                }
                // HEADERS: `:status 200` is HPACK static entry 8.
                (1, 1) => status_200 = payload.first() == Some(&0x88),
                (0, 1) => {
                    body.extend_from_slice(&payload);
                    if flags & 1 == 1 {
                        return;
                    }
                }
                _ => {}
            }
        }
    })
    .await
    .expect("an HTTP/2 response");
    (status_200, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_http2_with_prior_knowledge_is_served() {
    let server = start(test_config()).await;
    let mut c = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    assert_eq!(h2_get_healthz(&mut c).await, (true, b"ok\n".to_vec()));
    server.shutdown().await;
}

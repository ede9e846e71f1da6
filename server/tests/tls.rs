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
    config.tls_cert = Some(cert_path);
    config.tls_key = Some(key_path);
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

#[tokio::test]
async fn bad_pem_files_are_named() {
    let dir = tempdir();
    std::fs::write(dir.join("c.pem"), "not a certificate").unwrap();
    std::fs::write(dir.join("k.pem"), "not a key").unwrap();
    let mut config = test_config();
    config.tls_cert = Some(dir.join("c.pem"));
    config.tls_key = Some(dir.join("k.pem"));
    let err = match liveslice_server::app::start(&config).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started with bad PEM files"),
    };
    assert!(err.contains("TLS"), "{err}");
}

//! Shared helpers for integration tests: a real server on 127.0.0.1:0 and
//! small gRPC clients.
#![allow(dead_code)]

mod require_tool;
pub use require_tool::*;
pub mod av;
pub mod failover;
pub mod history;
pub mod http;
pub mod live;
pub mod nats;
pub mod s3;
#[allow(unused_imports)]
pub use http::{dechunk, get, header, http_get};

use std::time::Duration;

use bytes::Bytes;
use liveslice_proto::v1 as pb;
use liveslice_server::app::{self, Running};
use liveslice_server::config::Config;
use pb::slice_service_client::SliceServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("testdata/{name}: {e}"))
}

pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.server.http_addr = "127.0.0.1:0".parse().unwrap();
    config.session.publisher_grace = Duration::from_millis(500);
    config.session.subscribe_wait = Duration::from_secs(5);
    config.session.linger = Duration::from_secs(30);
    config
}

pub async fn start(config: Config) -> Running {
    app::start(&config).await.expect("server starts")
}

pub async fn client(server: &Running) -> SliceServiceClient<Channel> {
    let url = format!("http://{}", server.grpc_addr);
    SliceServiceClient::connect(url)
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
}

/// A publisher: send messages through `tx`, read responses from `rx`.
pub struct Publisher {
    pub tx: mpsc::Sender<pb::SliceRequest>,
    pub responses: tonic::Streaming<pb::SliceResponse>,
}

pub async fn publish(
    client: &mut SliceServiceClient<Channel>,
    session: &str,
    options: pb::PublishOptions,
) -> Result<Publisher, tonic::Status> {
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::SliceRequest {
        session_id: session.into(),
        role: pb::Role::Publish as i32,
        publish: Some(options),
        ..Default::default()
    })
    .await
    .unwrap();
    let responses = client
        .stream_slices(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Publisher { tx, responses })
}

impl Publisher {
    pub async fn send(&self, data: Bytes) {
        self.tx
            .send(pb::SliceRequest {
                data,
                ..Default::default()
            })
            .await
            .expect("publisher stream open");
    }

    /// Sends one access unit with its capture time (Unix ns).
    pub async fn send_at(&self, data: Bytes, capture_time_ns: u64) {
        self.tx
            .send(pb::SliceRequest {
                data,
                capture_time_ns: Some(capture_time_ns),
                end_of_access_unit: true,
                ..Default::default()
            })
            .await
            .expect("publisher stream open");
    }

    /// Sends `data` in chunks of the given sizes, cycling.
    pub async fn send_chunked(&self, data: &[u8], sizes: &[usize]) {
        let mut pos = 0;
        let mut i = 0;
        while pos < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - pos);
            self.send(Bytes::copy_from_slice(&data[pos..pos + n])).await;
            pos += n;
            i += 1;
        }
    }

    pub async fn end(&self) {
        let _ = self
            .tx
            .send(pb::SliceRequest {
                end_of_stream: true,
                ..Default::default()
            })
            .await;
    }
}

/// Subscribes (events on unless `legacy`).
pub async fn subscribe(
    client: &mut SliceServiceClient<Channel>,
    session: &str,
    events: bool,
    target_fps: i32,
) -> Result<tonic::Streaming<pb::SliceResponse>, tonic::Status> {
    let req = if events {
        pb::SliceRequest {
            session_id: session.into(),
            target_fps,
            role: pb::Role::Subscribe as i32,
            subscribe: Some(pb::SubscribeOptions {
                events: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    } else {
        // The original three-field contract: only session_id and target_fps.
        pb::SliceRequest {
            session_id: session.into(),
            target_fps,
            ..Default::default()
        }
    };
    let (tx, rx) = mpsc::channel(1);
    tx.send(req).await.unwrap();
    // Keep the request stream open as a client would, until we drop it.
    tokio::spawn(async move {
        tx.closed().await;
    });
    Ok(client
        .stream_slices(ReceiverStream::new(rx))
        .await?
        .into_inner())
}

/// Reads a response stream to its end (or `limit`).
pub async fn collect(
    stream: &mut tonic::Streaming<pb::SliceResponse>,
    timeout: Duration,
) -> (Vec<pb::SliceResponse>, Option<tonic::Status>) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => panic!(
                "stream did not end within {timeout:?} ({} responses)",
                out.len()
            ),
            Ok(Ok(Some(m))) => out.push(m),
            Ok(Ok(None)) => return (out, None),
            Ok(Err(s)) => return (out, Some(s)),
        }
    }
}

pub fn frames(responses: &[pb::SliceResponse]) -> Vec<&pb::SliceResponse> {
    responses
        .iter()
        .filter(|r| matches!(r.event, Some(pb::slice_response::Event::Frame(_))))
        .collect()
}

pub fn frame_info(r: &pb::SliceResponse) -> &pb::FrameInfo {
    match &r.event {
        Some(pb::slice_response::Event::Frame(f)) => f,
        _ => panic!("not a frame"),
    }
}

/// ffmpeg/ffprobe for `what`: a missing one fails the test (or, with
/// `LIVESLICE_ALLOW_SKIP=1`, skips `what` and returns false).
pub fn have_ffmpeg(what: &str) -> bool {
    require_tool(
        what,
        "ffmpeg/ffprobe",
        runs("ffprobe", &["-version"]) && runs("ffmpeg", &["-version"]),
        "apt-get install -y ffmpeg",
    )
}

/// Decodes an Annex B stream with ffmpeg: (frames decoded, stderr errors).
pub fn ffmpeg_decode_annexb(data: &[u8]) -> (usize, String) {
    let dir = tempdir();
    let path = dir.join("stream.h264");
    std::fs::write(&path, data).unwrap();
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "h264", "-i"])
        .arg(&path)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let frames = stdout.lines().filter(|l| !l.starts_with('#')).count();
    let _ = std::fs::remove_dir_all(&dir);
    (frames, String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "liveslice-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A TCP proxy to the server whose connections can be cut, to stand in for
/// network loss (a vanished peer, not a clean end of stream).
pub struct CutProxy {
    pub addr: std::net::SocketAddr,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                t.lock().unwrap().push(h);
            }
        });
        Self {
            addr,
            tasks,
            accept,
        }
    }

    /// Cuts every connection through the proxy.
    pub fn cut(&self) {
        for h in self.tasks.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    pub async fn client(&self) -> SliceServiceClient<Channel> {
        SliceServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect through proxy")
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// An HTTP answer: status, headers with lower-case names, body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// A raw HTTP/1.1 GET over loopback (`Connection: close`), with extra
/// request headers.
pub async fn raw_get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body)
}

/// Decodes `input` with ffmpeg: (frames, stderr).
pub fn ffmpeg_frames(input: &str) -> (usize, String) {
    ffmpeg_framemd5(input, &[])
}

/// Decodes `input` with ffmpeg, every decoded frame counted (no frame-rate
/// conversion dropping frames whose times crowd, as at a B-frame stream's
/// start): (frames of every stream, stderr).
pub fn ffmpeg_every_frame(input: &str) -> (usize, String) {
    ffmpeg_framemd5(input, &["-fps_mode", "passthrough"])
}

fn ffmpeg_framemd5(input: &str, output_args: &[&str]) -> (usize, String) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", input])
        .args(output_args)
        .args(["-f", "framemd5", "-"])
        .output()
        .unwrap();
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    (frames, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The frames among a pipeline's events, in order.
pub fn frames_in(
    events: &[liveslice_server::engine::Event],
) -> Vec<std::sync::Arc<liveslice_server::engine::Frame>> {
    events
        .iter()
        .filter_map(|e| match e {
            liveslice_server::engine::Event::Frame(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

/// The segment records among a pipeline's events, in order.
pub fn segments_in(
    events: &[liveslice_server::engine::Event],
) -> Vec<liveslice_server::engine::SegmentRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            liveslice_server::engine::Event::Segment(s) => Some(s.record.clone()),
            _ => None,
        })
        .collect()
}

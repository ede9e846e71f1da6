//! `--held-playlists N`: N low-latency HLS blocking playlist reloads held at
//! once on one live session, each on its own HTTP/1.1 connection (as N
//! players without HTTP/2 would), or as streams on K prior-knowledge HTTP/2
//! connections (`--held-connections K`, as players behind an HTTP/2 CDN
//! edge), to measure what holding them costs the server (its
//! VmRSS, with `--server-pid`) and how closely together they are answered
//! when the segment they wait for lands.
//!
//! Each request is `GET /live/SESSION/index.m3u8?_HLS_msn=M` for the
//! segment in progress when the run starts (RFC 8216bis 6.2.5.2: held until
//! the playlist holds segment M), written on a connection opened
//! beforehand, so every request is waiting before the first answer.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::read_rss_kib;

/// What the run measured.
#[derive(Debug)]
pub struct HeldReport {
    pub requests: usize,
    /// HTTP/2 connections the requests shared (0: HTTP/1.1, one each).
    pub h2_connections: usize,
    /// The media sequence number asked for.
    pub msn: u64,
    /// Answers with status 200 and a playlist that lists segment `msn`.
    pub answered: usize,
    /// Other answers (status, count).
    pub failed: Vec<(u16, usize)>,
    /// From the last request written to the first answer.
    pub first_after: Duration,
    /// Each answer's completion after the first one's, sorted.
    pub after_first: Vec<Duration>,
    /// Server VmRSS (bytes) before the connections and while all are held.
    pub rss_before: Option<u64>,
    pub rss_held: Option<u64>,
}

/// Holds `n` requests on `session` of the origin at `http` (host:port):
/// one HTTP/1.1 connection each (`h2_connections` 0), or as HTTP/2 streams
/// spread over `h2_connections` connections.
pub async fn run(
    http: &str,
    session: &str,
    n: usize,
    h2_connections: usize,
    server_pid: Option<u32>,
) -> Result<HeldReport> {
    let path = format!("/live/{session}/index.m3u8");
    let (status, first) = get(http, &path).await?;
    if status != 200 {
        bail!("GET {path}: status {status} (is session {session} live on {http}?)");
    }
    let msn = open_segment(&first)
        .with_context(|| format!("{path} is not a playlist with segments:\n{first}"))?;
    let ask = format!("{path}?_HLS_msn={msn}");
    let rss = |pid: Option<u32>| pid.and_then(read_rss_kib).map(|k| k * 1024);
    let rss_before = rss(server_pid);
    let want = format!("seg-{msn}.m4s");
    let (written, tasks) = if h2_connections == 0 {
        ask_http1(http, &ask, n).await?
    } else {
        ask_h2(http, &ask, n, h2_connections).await?
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss_held = rss(server_pid);
    let mut done = Vec::with_capacity(n);
    let mut failed: Vec<(u16, usize)> = Vec::new();
    for t in tasks {
        let (at, status, body) = t.await?;
        let body_ok = String::from_utf8_lossy(&body).lines().any(|l| l == want);
        if status == 200 && body_ok {
            done.push(at);
        } else {
            match failed.iter_mut().find(|f| f.0 == status) {
                Some(f) => f.1 += 1,
                None => failed.push((status, 1)),
            }
        }
    }
    let first = done.iter().min().copied().unwrap_or(written);
    let mut after_first: Vec<Duration> = done.iter().map(|t| *t - first).collect();
    after_first.sort();
    Ok(HeldReport {
        requests: n,
        h2_connections,
        msn,
        answered: done.len(),
        failed,
        first_after: first.saturating_duration_since(written),
        after_first,
        rss_before,
        rss_held,
    })
}

impl HeldReport {
    /// The summary.
    pub fn text(&self) -> String {
        let q = |p: f64| {
            let v = &self.after_first;
            if v.is_empty() {
                return Duration::ZERO;
            }
            v[((v.len() - 1) as f64 * p).round() as usize]
        };
        let mut s = format!(
            "{} blocking playlist reloads (_HLS_msn={}) held on one session, {}\n\
             answered with the segment: {}{}\n\
             first answer {:.1} ms after the last request was written (the segment landing)\n\
             answers after the first: p50 {:.2} ms, p99 {:.2} ms, last {:.2} ms\n",
            self.requests,
            self.msn,
            if self.h2_connections == 0 {
                "one HTTP/1.1 connection each".to_string()
            } else {
                format!(
                    "as streams on {} HTTP/2 (h2c) connections",
                    self.h2_connections
                )
            },
            self.answered,
            if self.failed.is_empty() {
                String::new()
            } else {
                format!(", other answers (status, count): {:?}", self.failed)
            },
            self.first_after.as_secs_f64() * 1e3,
            q(0.5).as_secs_f64() * 1e3,
            q(0.99).as_secs_f64() * 1e3,
            q(1.0).as_secs_f64() * 1e3,
        );
        if let (Some(b), Some(h)) = (self.rss_before, self.rss_held) {
            let grown = h.saturating_sub(b);
            s.push_str(&format!(
                "server VmRSS: {:.1} MiB before, {:.1} MiB while held: +{:.0} KiB ({:.1} KiB per held request)\n",
                b as f64 / 1048576.0,
                h as f64 / 1048576.0,
                grown as f64 / 1024.0,
                grown as f64 / 1024.0 / self.requests.max(1) as f64
            ));
        }
        s
    }
}

/// A held request's outcome: when it completed, its status, its body.
type Answer = tokio::task::JoinHandle<(Instant, u16, Vec<u8>)>;

/// Connects `n` HTTP/1.1 connections, then writes the request on each:
/// (when the last was written, the answers).
async fn ask_http1(http: &str, ask: &str, n: usize) -> Result<(Instant, Vec<Answer>)> {
    // Connect all, then write all requests: every one is held before the
    // segment lands (it takes up to a segment duration).
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let s = TcpStream::connect(http)
            .await
            .with_context(|| format!("connect to {http}"))?;
        s.set_nodelay(true)?;
        conns.push(s);
    }
    let request = format!("GET {ask} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    for c in &mut conns {
        c.write_all(request.as_bytes()).await?;
    }
    let written = Instant::now();
    let tasks = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                let r = c.read_to_end(&mut buf).await;
                let status = if r.is_ok() { status_of(&buf) } else { 0 };
                let body = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(i) => buf.split_off(i + 4),
                    None => Vec::new(),
                };
                (Instant::now(), status, body)
            })
        })
        .collect();
    Ok((written, tasks))
}

/// `k` prior-knowledge HTTP/2 (h2c) connections to `http` (host:port),
/// each driven by a task of its own.
pub async fn h2_connections(
    http: &str,
    k: usize,
) -> Result<Vec<h2::client::SendRequest<bytes::Bytes>>> {
    let mut senders = Vec::with_capacity(k);
    for _ in 0..k {
        let tcp = TcpStream::connect(http)
            .await
            .with_context(|| format!("connect to {http}"))?;
        tcp.set_nodelay(true)?;
        let (send, conn) = h2::client::Builder::new()
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .with_context(|| format!("HTTP/2 (h2c) handshake with {http}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        senders.push(send);
    }
    Ok(senders)
}

/// `n` requests as streams on `k` prior-knowledge HTTP/2 connections.
async fn ask_h2(http: &str, ask: &str, n: usize, k: usize) -> Result<(Instant, Vec<Answer>)> {
    let senders = h2_connections(http, k).await?;
    let uri = format!("http://{http}{ask}");
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let send = senders[i % k].clone();
        let mut send = send.ready().await.context("HTTP/2 connection not ready")?;
        let req = http::Request::get(uri.as_str()).body(())?;
        let (resp, _) = send
            .send_request(req, true)
            .context("HTTP/2 request (the server's stream limit?)")?;
        pending.push(resp);
    }
    let written = Instant::now();
    let tasks = pending
        .into_iter()
        .map(|resp| {
            tokio::spawn(async move {
                let Ok(resp) = resp.await else {
                    return (Instant::now(), 0, Vec::new());
                };
                let status = resp.status().as_u16();
                let mut body = resp.into_body();
                let mut buf = Vec::new();
                while let Some(chunk) = body.data().await {
                    match chunk {
                        Ok(c) => {
                            let _ = body.flow_control().release_capacity(c.len());
                            buf.extend_from_slice(&c);
                        }
                        Err(_) => return (Instant::now(), 0, buf),
                    }
                }
                (Instant::now(), status, buf)
            })
        })
        .collect();
    Ok((written, tasks))
}

/// One GET on its own connection: (status, body as text).
async fn get(http: &str, path: &str) -> Result<(u16, String)> {
    let mut c = TcpStream::connect(http)
        .await
        .with_context(|| format!("connect to {http}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf))
        .await
        .context("no answer within 10 s")??;
    let status = status_of(&buf);
    let text = String::from_utf8_lossy(&buf);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The status code of an HTTP/1.1 response (0 if unreadable).
fn status_of(resp: &[u8]) -> u16 {
    let line = resp.split(|b| *b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The segment in progress: the media sequence number after the last
/// complete segment the playlist lists.
fn open_segment(playlist: &str) -> Option<u64> {
    let first: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))?
        .trim()
        .parse()
        .ok()?;
    let complete = playlist
        .lines()
        .filter(|l| l.starts_with("#EXTINF:"))
        .count() as u64;
    (complete > 0).then_some(first + complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segment_in_progress_follows_the_last_listed() {
        let p =
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:1.0,\nseg-7.m4s\n#EXTINF:1.0,\nseg-8.m4s\n\
                 #EXT-X-PART:DURATION=0.2,URI=\"part-45.m4s\"\n";
        assert_eq!(open_segment(p), Some(9));
        assert_eq!(open_segment("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 503 Service Unavailable\r\n"), 503);
        assert_eq!(status_of(b""), 0);
    }
}

//! Reads the media bytes the server says it holds
//! (`liveslice_media_memory_bytes` on its HTTP origin's `/metrics`), so the
//! report can set the server's RSS against the media it keeps. One plain
//! HTTP/1.1 GET over loopback, bounded in time and size.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Uri;

const METRIC: &str = "liveslice_media_memory_bytes";
const TIMEOUT: Duration = Duration::from_secs(5);
/// A scrape is a few kB; anything past this is not a liveslice server.
const MAX_RESPONSE: u64 = 4 << 20;

/// Where to read `/metrics`: the HTTP origin's address (already checked to
/// be loopback by `target::loopback_uri`).
#[derive(Clone, Debug)]
pub struct Metrics {
    addr: SocketAddr,
    host: String,
}

impl Metrics {
    pub async fn new(uri: &Uri) -> Result<Self> {
        let host = uri.host().ok_or_else(|| anyhow!("--http has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((bare, port))
            .await?
            .next()
            .ok_or_else(|| anyhow!("--http {host}: no address"))?;
        Ok(Self {
            addr,
            host: format!("{host}:{port}"),
        })
    }

    /// `liveslice_media_memory_bytes` now.
    pub async fn media_bytes(&self) -> Result<u64> {
        let body = tokio::time::timeout(TIMEOUT, self.get("/metrics"))
            .await
            .map_err(|_| anyhow!("GET /metrics: no answer within {TIMEOUT:?}"))??;
        parse_gauge(&body, METRIC).ok_or_else(|| anyhow!("/metrics has no {METRIC}"))
    }

    async fn get(&self, path: &str) -> Result<String> {
        let mut s = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
            self.host
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(MAX_RESPONSE).read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("GET {path}: truncated response"))?;
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            bail!("GET {path}: {status}");
        }
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase().starts_with("transfer-encoding:")
                && l.to_ascii_lowercase().contains("chunked")
        });
        Ok(if chunked {
            dechunk(body)
        } else {
            body.to_string()
        })
    }
}

/// The body of a chunked response (sizes in hex, each chunk followed by a
/// CRLF; stops at the last chunk or at anything malformed).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        let Some(chunk) = rest.get(..n) else { break };
        out.push_str(chunk);
        s = rest.get(n..).unwrap_or_default().trim_start_matches("\r\n");
    }
    out
}

/// The value of an unlabelled gauge in a Prometheus text scrape.
fn parse_gauge(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let rest = l.strip_prefix(name)?;
            // `name value`, or `name{} value`: not a longer metric name.
            let rest = rest.strip_prefix("{}").unwrap_or(rest);
            if !rest.starts_with([' ', '\t']) {
                return None;
            }
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gauge_and_not_its_neighbours() {
        let text = "# HELP liveslice_media_memory_bytes bytes\n\
                    # TYPE liveslice_media_memory_bytes gauge\n\
                    liveslice_media_memory_limit_bytes 2147483648\n\
                    liveslice_media_memory_bytes 5242880\n";
        assert_eq!(parse_gauge(text, METRIC), Some(5_242_880));
        assert_eq!(
            parse_gauge("liveslice_media_memory_bytes 1.5e3\n", METRIC),
            Some(1500)
        );
        assert_eq!(
            parse_gauge("liveslice_media_memory_limit_bytes 7\n", METRIC),
            None
        );
        assert_eq!(
            parse_gauge("liveslice_media_memory_bytes NaN\n", METRIC),
            None
        );
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
        assert_eq!(dechunk("zz\r\nhello"), "");
        assert_eq!(dechunk("ff\r\nshort"), "");
    }
}

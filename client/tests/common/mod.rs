//! Shared helpers: a real server on 127.0.0.1:0, the built `liveslice`
//! binary, a tiny HTTP GET, ffmpeg.
#![allow(dead_code)]

// The one missing-tool rule, shared with the server's tests.
#[path = "../../../server/tests/common/http.rs"]
pub mod http;
#[path = "../../../server/tests/common/require_tool.rs"]
pub mod tools;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use liveslice_engine::{Event, PipelineOptions, SessionPipeline};
use liveslice_server::app::{self, Running};
use liveslice_server::config::Config;

pub const BIN: &str = env!("CARGO_BIN_EXE_liveslice");

pub fn testdata_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

pub fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(testdata_path(name)).unwrap_or_else(|e| panic!("testdata/{name}: {e}"))
}

/// The committed streams that are not deliberately damaged.
pub fn clean_streams() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(testdata_path(""))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".h264").map(str::to_string))
        .filter(|n| !n.starts_with("damaged_"))
        // Starts mid-stream: ffmpeg itself reports the cut-off references,
        // and liveslice drops the picture that needs them.
        .filter(|n| n != "start_non_idr_i")
        .collect();
    names.sort();
    assert!(names.len() >= 4, "test streams: {names:?}");
    names
}

pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.server.http_addr = "127.0.0.1:0".parse().unwrap();
    config.session.publisher_grace = Duration::from_millis(500);
    config.session.subscribe_wait = Duration::from_secs(10);
    config.session.linger = Duration::from_secs(60);
    config
}

pub async fn start() -> Running {
    app::start(&test_config()).await.expect("server starts")
}

pub fn grpc_url(server: &Running) -> String {
    format!("http://{}", server.grpc_addr)
}

pub fn http_url(server: &Running) -> String {
    format!("http://{}", server.http_addr)
}

/// Runs the client to completion (off the async runtime).
pub async fn run(args: &[&str]) -> Output {
    run_env(args, &[]).await
}

/// Runs the client to completion with extra environment variables.
pub async fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("LIVESLICE_TOKEN")
            .env_remove("LIVESLICE_SERVER")
            .env_remove("LIVESLICE_CA")
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .expect("run liveslice")
    })
    .await
    .unwrap()
}

/// Whether `tool` runs (`tool ARG` exits 0). A test that needs a missing
/// tool fails naming it, unless `LIVESLICE_ALLOW_SKIP=1` is set: then the
/// skip is recorded (see [`tools`], shared with the server's tests) and the
/// caller skips.
pub fn require_tool(tool: &str, arg: &str, install: &str, what: &str) -> bool {
    tools::require_tool(what, tool, tools::runs(tool, &[arg]), install)
}

/// ffmpeg and ffprobe, required (see [`require_tool`]).
pub fn require_ffmpeg(what: &str) -> bool {
    require_tool("ffmpeg", "-version", "apt-get install -y ffmpeg", what)
        && require_tool("ffprobe", "-version", "apt-get install -y ffmpeg", what)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts failure and returns stderr.
pub fn fails(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} should fail:\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// A running client whose stderr is collected line by line.
pub struct ClientProcess {
    pub child: Child,
    pub stderr: Arc<Mutex<Vec<String>>>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
}

pub fn spawn(args: &[&str]) -> ClientProcess {
    spawn_with(args, &[], Stdio::null())
}

/// [`spawn`] with extra environment variables and a given stdin.
pub fn spawn_with(args: &[&str], env: &[(&str, &str)], stdin: Stdio) -> ClientProcess {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("LIVESLICE_TOKEN")
        .env_remove("LIVESLICE_SERVER")
        .env_remove("LIVESLICE_CA")
        .envs(env.iter().copied())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn liveslice");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let lines = stderr.clone();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    // Drained as it comes, so a client writing video to stdout never blocks
    // on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let stdout = Some(std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    }));
    ClientProcess {
        child,
        stderr,
        stdout,
    }
}

impl ClientProcess {
    /// Waits until a stderr line contains `what`.
    pub async fn wait_for_stderr(&self, what: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.stderr.lock().unwrap().iter().any(|l| l.contains(what)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what:?} on stderr within {timeout:?}: {:?}",
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for the process to exit by itself.
    pub async fn wait(mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<u8>, String) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stdout = self
                    .stdout
                    .take()
                    .map(|t| t.join().unwrap_or_default())
                    .unwrap_or_default();
                // Let the stderr thread drain.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return (status, stdout, self.stderr_text());
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "liveslice did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        // A test that failed half-way must not leave a client running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET: (status, body), with the server tests' helper.
pub async fn get(url: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = http::get(url).await;
    (status, body)
}

/// The access units the server makes of a stream (what a subscriber gets).
pub fn engine_frames(data: &[u8]) -> Vec<Bytes> {
    let mut p = SessionPipeline::new(PipelineOptions::default());
    let mut events = Vec::new();
    p.push(Bytes::copy_from_slice(data), None, 0, false, &mut events);
    p.finish(0, &mut events);
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(f.data.clone()),
            _ => None,
        })
        .collect()
}

/// ffmpeg/ffprobe for `what` (see [`require_ffmpeg`]).
pub fn have_ffmpeg(what: &str) -> bool {
    require_ffmpeg(what)
}

/// Decodes with ffmpeg: (frames, stderr). `format` forces the input format
/// (`h264` for raw Annex B). Paths should be absolute: ffmpeg 5's DASH
/// demuxer resolves segment URLs of a relative MPD path twice.
pub async fn ffmpeg_frames(input: &Path, format: Option<&str>) -> (usize, String) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error"]);
    if let Some(f) = format {
        cmd.args(["-f", f]);
    }
    cmd.arg("-i").arg(input).args(["-f", "framemd5", "-"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run ffmpeg"))
        .await
        .unwrap();
    let frames = text(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    (frames, text(&out.stderr))
}

pub fn tempdir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "liveslice-client-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A manifest without what depends on the wall clock: HLS
/// PROGRAM-DATE-TIME lines, DASH availabilityStartTime and publishTime.
pub fn without_wall_clock(manifest: &str) -> String {
    let mut out = String::new();
    for line in manifest.lines() {
        if line.starts_with("#EXT-X-PROGRAM-DATE-TIME:") {
            continue;
        }
        let mut l = line.to_string();
        for attr in ["availabilityStartTime=\"", "publishTime=\""] {
            if let Some(i) = l.find(attr) {
                let start = i + attr.len();
                if let Some(len) = l[start..].find('"') {
                    l.replace_range(start..start + len, "*");
                }
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// The segment numbers a playlist lists, in order.
pub fn listed_segments(playlist: &str, ext: &str) -> Vec<u64> {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("seg-")?.strip_suffix(ext)?.parse().ok())
        .collect()
}

/// The init segments a playlist names.
pub fn listed_inits(playlist: &str) -> Vec<String> {
    let mut v: Vec<String> = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"")?.strip_suffix('"'))
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

//! Any client: `examples/python/client.py` (grpcio, stubs generated here
//! with grpcio-tools) publishes a committed stream while two Python
//! subscribers follow it, one to the end and one for five frames.
//!
//! Needs python3 with grpcio and grpcio-tools (`pip install -r
//! examples/python/requirements.txt`); fails without (skips with
//! `LIVESLICE_ALLOW_SKIP=1`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn have_python_grpc(what: &str) -> bool {
    require_tool(
        what,
        "python3 with grpcio and grpcio-tools",
        runs("python3", &["-c", "import grpc, grpc_tools.protoc"]),
        "pip install -r examples/python/requirements.txt",
    )
}

/// A running `client.py`, its stdout read line by line into a channel.
struct Py {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Py {
    fn start(stubs: &Path, args: &[&str]) -> Py {
        let mut child = Command::new("python3")
            .arg(repo().join("examples/python/client.py"))
            .args(args)
            .env("LIVESLICE_STUBS", stubs)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3 examples/python/client.py");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Py {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one starts with `prefix`.
    fn wait_for(&mut self, prefix: &str, deadline: Instant) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.starts_with(prefix);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => {
                    self.kill();
                    panic!(
                        "no {prefix:?} line in time; output:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Reads to the end of output and the exit; returns every line.
    fn finish(mut self, deadline: Instant) -> Vec<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    panic!(
                        "client.py did not finish; output:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
        let status = self.child.wait().expect("wait for client.py");
        assert!(
            status.success(),
            "client.py exited with {status}; output:\n{}",
            self.seen.join("\n")
        );
        self.seen
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `frame index=I pts_90k=P ... keyframe=K ...` lines as (I, P, K).
fn frame_lines(lines: &[String]) -> Vec<(u64, u64, bool)> {
    lines
        .iter()
        .filter(|l| l.starts_with("frame "))
        .map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or_else(|| panic!("{k} in {l:?}"))
                    .to_string()
            };
            (
                field("index=").parse().unwrap(),
                field("pts_90k=").parse().unwrap(),
                field("keyframe=") == "true",
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_publisher_and_subscribers() {
    if !have_python_grpc("python client test") {
        return;
    }
    let server = start(test_config()).await;
    let addr = server.grpc_addr.to_string();

    let result = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(25);
        // Stubs generated now, from proto/, into a temporary directory.
        let stubs = tempdir();
        let proto = repo().join("proto");
        let gen = Command::new("python3")
            .args(["-m", "grpc_tools.protoc"])
            .arg(format!("-I{}", proto.display()))
            .arg(format!("--python_out={}", stubs.display()))
            .arg(format!("--grpc_python_out={}", stubs.display()))
            .arg(proto.join("liveslice/v1/slicer.proto"))
            .output()
            .expect("run grpc_tools.protoc");
        assert!(
            gen.status.success(),
            "protoc: {}",
            String::from_utf8_lossy(&gen.stderr)
        );

        let sub_args = ["subscribe", "--server", &addr, "--session", "py"];
        let mut all = Py::start(&stubs, &sub_args);
        let mut five = Py::start(&stubs, &[&sub_args[..], &["--count", "5"]].concat());
        // Both are connected and waiting for the session to appear.
        all.wait_for("subscribing to py", deadline);
        five.wait_for("subscribing to py", deadline);
        std::thread::sleep(Duration::from_millis(200));

        let stream = repo().join("testdata/baseline_30.h264");
        let publisher = Py::start(
            &stubs,
            &[
                "publish",
                "--server",
                &addr,
                "--session",
                "py",
                "--pace",
                "60",
                stream.to_str().unwrap(),
            ],
        );
        let published = publisher.finish(deadline);
        let five = five.finish(deadline);
        let all = all.finish(deadline);
        let _ = std::fs::remove_dir_all(&stubs);
        (published, all, five)
    });
    let (published, all, five) = tokio::time::timeout(Duration::from_secs(28), result)
        .await
        .expect("the Python clients finish in time")
        .expect("python client task");

    // The publisher heard its ack, three 2 s segments and the clean end.
    let text = published.join("\n");
    assert!(
        published
            .iter()
            .any(|l| l.starts_with("ack session=py resumed=false")),
        "{text}"
    );
    assert!(
        published
            .iter()
            .any(|l| l.starts_with("info session=py codec=avc1.42")),
        "{text}"
    );
    let segments: Vec<&String> = published
        .iter()
        .filter(|l| l.starts_with("segment "))
        .collect();
    assert_eq!(segments.len(), 3, "{text}");
    assert!(segments.iter().all(|l| l.contains(" frames=60 ")), "{text}");
    assert!(
        published.last().is_some_and(
            |l| l.starts_with("ended reason=REASON_END_OF_STREAM frames=180 segments=3")
        ),
        "{text}"
    );

    // The full subscriber got every frame of the stream, keyframes every 30.
    let frames = frame_lines(&all);
    let text = all.join("\n");
    assert_eq!(frames.len(), 180, "{text}");
    for (i, &(index, pts, key)) in frames.iter().enumerate() {
        assert_eq!(index, i as u64, "{text}");
        assert_eq!(pts, i as u64 * 3000, "30 fps in 90 kHz ticks");
        assert_eq!(key, i % 30 == 0, "frame {i}");
    }
    assert!(
        all.last()
            .is_some_and(|l| l.starts_with("ended reason=REASON_END_OF_STREAM frames=180")),
        "{text}"
    );

    // --count 5 stopped after five frames.
    let frames = frame_lines(&five);
    assert_eq!(frames.len(), 5, "{}", five.join("\n"));
    assert_eq!(frames[0], (0, 0, true));
    assert!(five.last().unwrap().starts_with("frame index=4 "));

    server.shutdown().await;
}

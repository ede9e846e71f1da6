//! The server tests' NATS and S3 helpers (`nats-server -js`, moto), with
//! the names they expect from their `common` module.
#![allow(dead_code)]

use std::io::BufRead;

pub use super::common::http::dechunk;
pub use super::common::tools as require_tool;
pub use super::common::tools::{require_tool, runs};
#[path = "../../../server/tests/common/nats.rs"]
pub mod nats;
#[path = "../../../server/tests/common/s3.rs"]
pub mod s3;

/// Set in the environment of this test binary run again as an origin
/// process: the server's flags, one per line.
const ORIGIN_ARGS: &str = "LIVESLICE_TEST_ORIGIN_ARGS";

/// A server in a process of its own, for a test to SIGKILL: this test
/// binary run again with only its `origin_child` entry (which calls
/// [`origin_child_main`]), started with the server's flags `args`.
/// Killed when dropped.
pub struct OriginProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:P` of its gRPC and HTTP listeners.
    pub grpc_url: String,
    pub http_url: String,
}

impl OriginProcess {
    pub fn start(args: &[&str]) -> Self {
        let exe = std::env::current_exe().expect("this test binary");
        let mut child = std::process::Command::new(exe)
            .args(["origin_child", "--exact", "--ignored", "--nocapture"])
            .env(ORIGIN_ARGS, args.join("\n"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the test binary runs again");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        // "ORIGIN grpc=127.0.0.1:P http=127.0.0.1:Q" after the harness's own
        // lines.
        let (grpc, http) = loop {
            let line = lines
                .next()
                .expect("the origin process says where it listens")
                .expect("text");
            if let Some(rest) = line.strip_prefix("ORIGIN ") {
                let mut words = rest.split(' ');
                let mut addr = |key: &str| {
                    let w = words.next().unwrap_or_default();
                    format!("http://{}", w.strip_prefix(key).unwrap_or(w))
                };
                let grpc = addr("grpc=");
                break (grpc, addr("http="));
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            grpc_url: grpc,
            http_url: http,
        }
    }

    /// SIGKILL, and the process reaped.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for OriginProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The origin process's side of [`OriginProcess`]: with the flags in the
/// environment, starts the server library as `liveslice-server` would,
/// says where it listens and runs until killed; without them, returns.
pub fn origin_child_main() {
    let Ok(args) = std::env::var(ORIGIN_ARGS) else {
        return;
    };
    let args = std::iter::once("liveslice-server").chain(args.lines());
    let config = liveslice_server::config::Config::load(args).expect("the origin's flags");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let server = liveslice_server::app::start(&config)
            .await
            .expect("the origin starts");
        println!("ORIGIN grpc={} http={}", server.grpc_addr, server.http_addr);
        std::future::pending::<()>().await;
    });
}

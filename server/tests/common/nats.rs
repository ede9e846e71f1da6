//! A real `nats-server` with JetStream for the cluster tests: started on a
//! free loopback port with a temporary store directory, killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `nats-server -js`.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    store: std::path::PathBuf,
}

impl Nats {
    /// Starts `nats-server -js -a 127.0.0.1 -p PORT -sd TMPDIR` and waits
    /// until it accepts connections. `None` when nats-server is missing and
    /// `LIVESLICE_ALLOW_SKIP=1` (otherwise that fails the test).
    pub fn start(what: &str) -> Option<Nats> {
        if !super::require_tool(
            what,
            "nats-server",
            super::runs("nats-server", &["--version"]),
            "apt-get install nats-server (Debian's 2.9 has JetStream)",
        ) {
            return None;
        }
        let port = free_port();
        let store =
            std::env::temp_dir().join(format!("liveslice-nats-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir_all(&store).expect("nats store dir");
        let mut nats = Nats {
            child: None,
            port,
            store,
        };
        nats.spawn();
        Some(nats)
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen on {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL): the cluster becomes unreachable.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

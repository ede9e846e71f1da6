//! The sample tools against a secured server (auth tokens, TLS from a
//! private CA), host:port addresses, and the HTTP port given by mistake.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const PUBLISH_KEY: &str = "publish-key-sec";
const VIEWER_KEY: &str = "viewer-key-sec";

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// A server with TLS (a self-signed certificate for localhost and
/// 127.0.0.1, written as `ca.pem` in `dir`) and auth on.
async fn secured(dir: &Path) -> (liveslice_server::app::Running, PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (ca, key) = (dir.join("ca.pem"), dir.join("key.pem"));
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let mut config = test_config();
    config.tls.cert = Some(ca.clone());
    config.tls.key = Some(key);
    config.auth.tokens = vec![
        format!("publish:sec:{PUBLISH_KEY}"),
        format!("play:*:{VIEWER_KEY}"),
    ];
    let server = liveslice_server::app::start(&config)
        .await
        .expect("server starts");
    (server, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_ca_reach_a_server_with_auth_and_tls() {
    let dir = tempdir("secure");
    let (server, ca) = secured(&dir).await;
    let hostport = server.grpc_addr.to_string();
    let https = format!("https://{hostport}");
    let file = testdata_path("baseline_30.h264");

    // No token: refused, and told how to give one.
    let out = run(&[
        "publish",
        "--server",
        &hostport,
        "--ca",
        s(&ca),
        "--session",
        "sec",
        s(&file),
    ])
    .await;
    let err = fails(&out, "publish without a token");
    assert!(err.contains("give one with --token"), "{err}");
    // A wrong token.
    let out = run(&[
        "publish",
        "--server",
        &https,
        "--ca",
        s(&ca),
        "--token",
        "not-a-key-at-all",
        "--session",
        "sec",
        s(&file),
    ])
    .await;
    let err = fails(&out, "publish with a wrong token");
    assert!(err.contains("check --token"), "{err}");
    // TLS without trusting the server's CA (system roots only).
    let out = run(&[
        "publish",
        "--server",
        &https,
        "--token",
        PUBLISH_KEY,
        "--session",
        "sec",
        s(&file),
    ])
    .await;
    let err = fails(&out, "publish to a private-CA server without --ca");
    assert!(err.contains("cannot connect to"), "{err}");
    assert!(err.contains("--ca"), "{err}");
    // Plaintext to the TLS port.
    let out = run(&[
        "publish",
        "--server",
        &hostport,
        "--token",
        PUBLISH_KEY,
        "--session",
        "sec",
        s(&file),
    ])
    .await;
    let err = fails(&out, "plaintext publish to a TLS server");
    assert!(err.contains("if the server uses TLS"), "{err}");

    // A viewer with the play token from the environment, host:port + --ca.
    let received = dir.join("received.h264");
    let viewer = spawn_with(
        &[
            "play",
            "--server",
            &hostport,
            "--ca",
            s(&ca),
            "--session",
            "sec",
            "--annexb",
            s(&received),
        ],
        &[("LIVESLICE_TOKEN", VIEWER_KEY)],
        Stdio::null(),
    );
    viewer
        .wait_for_stderr("subscribing to session sec", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The publisher with --token and an https:// URL.
    let out = run(&[
        "publish",
        "--server",
        &https,
        "--ca",
        s(&ca),
        "--token",
        PUBLISH_KEY,
        "--session",
        "sec",
        s(&file),
    ])
    .await;
    let said = ok(&out, "publish with token and CA");
    assert!(said.contains("the server accepted 180 frames"), "{said}");
    let (status, _, stderr) = viewer.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{stderr}");
    let sent: Vec<u8> = engine_frames(&testdata("baseline_30.h264")).concat();
    assert!(std::fs::read(&received).unwrap() == sent, "{stderr}");

    // A play token cannot publish: the error says so.
    let out = run(&[
        "publish",
        "--server",
        &https,
        "--ca",
        s(&ca),
        "--token",
        VIEWER_KEY,
        "--session",
        "sec2",
        s(&file),
    ])
    .await;
    let err = fails(&out, "publish with a play token");
    assert!(err.contains("not allowed"), "{err}");

    // A --ca that is not a certificate.
    let out = run(&[
        "publish",
        "--server",
        &hostport,
        "--ca",
        s(&file),
        "--token",
        PUBLISH_KEY,
        "--session",
        "sec",
        s(&file),
    ])
    .await;
    let err = fails(&out, "--ca of a non-PEM file");
    assert!(err.contains("no PEM certificate"), "{err}");

    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_works_and_the_http_port_is_named() {
    let server = start().await;
    let hostport = server.grpc_addr.to_string();
    let http_port = server.http_addr.to_string();
    let file = testdata_path("baseline_30.h264");

    let out = run(&[
        "publish",
        "--server",
        &hostport,
        "--session",
        "hp",
        s(&file),
    ])
    .await;
    let said = ok(&out, "publish to host:port");
    assert!(said.contains("the server accepted 180 frames"), "{said}");

    // LIVESLICE_SERVER takes host:port too.
    let out = run_env(
        &["publish", "--session", "hp2", s(&file)],
        &[("LIVESLICE_SERVER", &hostport)],
    )
    .await;
    ok(&out, "publish to LIVESLICE_SERVER=host:port");

    for args in [
        vec![
            "publish",
            "--server",
            &http_port,
            "--session",
            "x",
            s(&file),
        ],
        vec![
            "play",
            "--server",
            &http_port,
            "--session",
            "x",
            "--annexb",
            "-",
        ],
    ] {
        let out = run(&args).await;
        let err = fails(&out, &format!("{} to the HTTP port", args[0]));
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("liveslice: error:"))
            .collect();
        assert_eq!(lines.len(), 1, "one error line: {err}");
        assert!(
            lines[0].contains("this looks like liveslice's HTTP port"),
            "{err}"
        );
        assert!(lines[0].contains("(default 50051)"), "{err}");
    }
    server.shutdown().await;
}

/// `examples/python/client.py` with --token and --ca against the same kind
/// of server: a subscriber and a publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_uses_token_and_ca() {
    if !common::tools::require_tool(
        "the Python example with --token and --ca",
        "python3 with grpcio and grpcio-tools",
        common::tools::runs("python3", &["-c", "import grpc, grpc_tools.protoc"]),
        "pip install -r examples/python/requirements.txt",
    ) {
        return;
    }
    let dir = tempdir("python-secure");
    let (server, ca) = secured(&dir).await;
    let hostport = server.grpc_addr.to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/client.py");
    let stubs = dir.join("stubs");
    let py = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args(args)
            .env_remove("LIVESLICE_TOKEN")
            .envs(env.iter().copied())
            .env("LIVESLICE_STUBS", &stubs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let file = testdata_path("baseline_30.h264");

    // Without a token: UNAUTHENTICATED. Waited for off the runtime: a
    // blocked worker can strand the server's task in its LIFO slot, and the
    // client then waits for an answer forever.
    let out = py(
        &[
            "publish",
            "--server",
            &hostport,
            "--ca",
            s(&ca),
            "--session",
            "sec",
            s(&file),
        ],
        &[],
    );
    let out = tokio::task::spawn_blocking(move || {
        let mut out = out;
        out.output().unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("UNAUTHENTICATED"),
        "{}",
        text(&out.stderr)
    );

    let sub = py(
        &[
            "subscribe",
            "--server",
            &hostport,
            "--ca",
            s(&ca),
            "--session",
            "sec",
            "--count",
            "5",
        ],
        &[("LIVESLICE_TOKEN", VIEWER_KEY)],
    )
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let https = format!("https://{hostport}");
    let publisher = py(
        &[
            "publish",
            "--server",
            &https,
            "--ca",
            s(&ca),
            "--token",
            PUBLISH_KEY,
            "--session",
            "sec",
            "--pace",
            "60",
            s(&file),
        ],
        &[],
    );
    let out = tokio::task::spawn_blocking(move || {
        let mut publisher = publisher;
        publisher.output().unwrap()
    })
    .await
    .unwrap();
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", text(&out.stderr));
    assert!(
        said.contains("ended reason=REASON_END_OF_STREAM frames=180"),
        "{said}"
    );
    let out = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap())
        .await
        .unwrap();
    let seen = text(&out.stdout);
    assert!(out.status.success(), "{seen}\n{}", text(&out.stderr));
    assert_eq!(
        seen.lines().filter(|l| l.starts_with("frame ")).count(),
        5,
        "{seen}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}

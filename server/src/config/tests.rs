use std::sync::Mutex;

use super::*;

/// Tests that read or set `LIVESLICE_*` variables hold this: the process's
/// environment is shared by the test threads.
static ENV: Mutex<()> = Mutex::new(());

/// Every variable a flag reads.
fn env_names() -> Vec<String> {
    flags::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// `Config::load(args)` with exactly `vars` of the `LIVESLICE_*` variables
/// set.
fn load_with_env(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, LoadError> {
    let _held = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let names = env_names();
    for n in &names {
        std::env::remove_var(n);
    }
    for (k, v) in vars {
        assert!(names.iter().any(|n| n == k), "{k} is no flag's variable");
        std::env::set_var(k, v);
    }
    let r = Config::load(args.iter().copied());
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    r
}

fn load(args: &[&str]) -> Result<Config, LoadError> {
    load_with_env(args, &[])
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "liveslice-config-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&p, text).unwrap();
    p
}

fn key_of(r: Result<Config, LoadError>) -> String {
    match r {
        Err(LoadError::Invalid(e)) => e.key.to_string(),
        Err(LoadError::Flags(e)) => e.to_string(),
        Ok(_) => "ok".into(),
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
    assert_eq!(parse_duration("0.0004s"), Ok(Duration::ZERO), "whole ms");
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("2 weeks").is_err());
    assert!(parse_duration("-1s").is_err());
}

#[test]
fn defaults_are_valid_and_bad_values_name_their_key() {
    Config::default().validate().unwrap();
    let mut c = Config::default();
    c.engine.window = 0;
    assert_eq!(c.validate().unwrap_err().key, "window");
    let c = load(&["x", "--segment-duration", "10ms"]);
    assert_eq!(key_of(c), "segment-duration");
    let c = load(&["x", "--grpc-runtimes", "257"]);
    assert_eq!(key_of(c), "grpc-runtimes");
    let c = load(&["x", "--grpc-runtimes", "2"]).unwrap();
    assert_eq!(c.server.grpc_runtimes, 2);
    let c = load_with_env(&["x"], &[("LIVESLICE_GRPC_RUNTIMES", "3")]).unwrap();
    assert_eq!(c.server.grpc_runtimes, 3);
}

/// A value out of range in a config file names the file; the same value
/// from a flag does not, and a flag that replaces it is taken.
#[test]
fn an_out_of_range_value_from_a_file_names_the_file() {
    let path = write("range", "grpc-runtimes = 1000\nwindow = 6\n");
    let shown = path.display().to_string();
    let args = ["x", "--config", shown.as_str()];
    match load(&args) {
        Err(LoadError::Invalid(e)) => {
            assert_eq!(e.key, "grpc-runtimes");
            assert!(e.reason.contains(&format!("(in {shown})")), "{}", e.reason);
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let c = load(&["x", "--config", shown.as_str(), "--grpc-runtimes", "2"]).unwrap();
    assert_eq!(c.server.grpc_runtimes, 2);
    match load(&["x", "--config", shown.as_str(), "--grpc-runtimes", "999"]) {
        Err(LoadError::Invalid(e)) => {
            assert_eq!(e.key, "grpc-runtimes");
            assert!(!e.reason.contains("(in "), "the flag's value: {}", e.reason);
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let _ = std::fs::remove_file(path);
}

/// Defaults live in one place: each part's `Default`. The whole
/// configuration's default is theirs, loading nothing gives it, the engine
/// settings agree with the engine's own defaults, and `--help` shows them.
#[test]
fn defaults_come_from_one_place() {
    let parts = Config {
        server: ServerConfig::default(),
        http: HttpLimits::default(),
        engine: EngineConfig::default(),
        session: SessionDefaults::default(),
        auth: AuthConfig::default(),
        tls: TlsFiles::default(),
        shutdown: Shutdown::default(),
        record: RecordConfig::default(),
        cluster: crate::cluster::ClusterConfig::default(),
        ladder: crate::ladder::LadderConfig::default(),
        jobs: crate::jobs::JobConfig::default(),
        config_file: None,
        print_config: false,
        mint_token: None,
    };
    assert_eq!(Config::default(), parts);
    assert_eq!(load(&["x"]).unwrap(), parts, "no flag, variable or file");
    assert_eq!(Config::from_toml("").unwrap(), parts, "an empty file");

    let ours = Config::default().pipeline();
    let engine = PipelineOptions::default();
    assert_eq!(ours.default_rate, engine.default_rate);
    assert_eq!(ours.segment_target_ms, engine.segment_target_ms);
    assert_eq!(ours.part_target_ms, engine.part_target_ms);
    assert_eq!(ours.window, engine.window);
    assert_eq!(ours.max_nal_bytes, engine.max_nal_bytes);
    assert_eq!(ours.max_au_bytes, engine.max_au_bytes);
    assert_eq!(ours.max_window_bytes, engine.max_window_bytes);
    assert_eq!(ours.utc_timing_url, engine.utc_timing_url);

    let help = flags::command().render_help().to_string();
    for shown in [
        "[default: 2s]",
        "[default: 500ms]",
        "[default: 127.0.0.1:50051]",
        "[default: 4096]",
        "[default: text]",
    ] {
        assert!(help.contains(shown), "{shown} in\n{help}");
    }
    assert_eq!(
        help.matches("[default: ").count(),
        flags::command()
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| matches!(
                l,
                "segment-duration"
                    | "part-duration"
                    | "formats"
                    | "window"
                    | "default-fps"
                    | "max-nal-bytes"
                    | "grpc-addr"
                    | "http-addr"
                    | "max-message-bytes"
                    | "grpc-runtimes"
                    | "log-format"
                    | "http-header-timeout"
                    | "http-idle-timeout"
                    | "http-max-connections"
                    | "http-max-held-requests"
                    | "http-max-held-per-session"
                    | "max-sessions"
                    | "max-subscribers"
                    | "subscriber-buffer"
                    | "ring-bytes"
                    | "publisher-grace"
                    | "idle-timeout"
                    | "subscribe-wait"
                    | "linger"
                    | "shutdown-timeout"
                    | "shutdown-grace"
                    | "record-queue-bytes"
                    | "record-retries"
                    | "record-concurrency"
                    | "record-max-segments"
                    | "role"
                    | "cluster-retention"
                    | "cluster-max-bytes"
                    | "cluster-queue"
                    | "ladder-ffmpeg"
                    | "ladder-threads"
                    | "worker"
                    | "job-attempts"
                    | "job-ack-wait"
                    | "job-retention"
                    | "job-upload-expiry"
            )))
            .count(),
        "every fixed default is shown, once:\n{help}"
    );
}

/// The file's keys are the flags' long names, each read by exactly one
/// part, and each flag is a `LIVESLICE_` variable named after it.
#[test]
fn file_keys_are_the_flags() {
    let parts = file::parts();
    let keys: Vec<&str> = parts.concat();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len(), "a key in two parts: {keys:?}");
    let cmd = flags::command();
    let mut longs: Vec<&str> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !flags::NOT_IN_FILE.contains(l) && !matches!(*l, "help" | "version"))
        .collect();
    longs.sort();
    assert_eq!(longs, unique);
    for arg in cmd.get_arguments() {
        let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue;
        };
        let expected = match long {
            "auth-token" => "LIVESLICE_AUTH_TOKENS".to_string(),
            l => format!("LIVESLICE_{}", l.to_uppercase().replace('-', "_")),
        };
        assert_eq!(env.to_string_lossy(), expected);
    }
}

/// `--record` and its settings from flags, variables and a file; a bad
/// URL names its key.
#[test]
fn record_settings() {
    let c = load(&[
        "x",
        "--record",
        "s3://bucket/some/prefix",
        "--record-endpoint",
        "http://127.0.0.1:9000",
        "--record-queue-bytes",
        "8388608",
    ])
    .unwrap();
    assert_eq!(c.record.record.as_deref(), Some("s3://bucket/some/prefix"));
    assert_eq!(
        c.record.record_endpoint.as_deref(),
        Some("http://127.0.0.1:9000")
    );
    assert_eq!(c.record.record_queue_bytes, 8 << 20);
    let c = load_with_env(&["x"], &[("LIVESLICE_RECORD", "file:///tmp/rec")]).unwrap();
    assert_eq!(c.record.record.as_deref(), Some("file:///tmp/rec"));
    let c = Config::from_toml("record = \"s3://b\"\nrecord-retries = 2\n").unwrap();
    assert_eq!(c.record.record_retries, 2);
    let printed = c.to_toml();
    assert_eq!(Config::from_toml(&printed).unwrap().record, c.record);
    assert_eq!(key_of(load(&["x", "--record", "ftp://x"])), "record");
    assert_eq!(
        key_of(load(&["x", "--record-concurrency", "0"])),
        "record-concurrency"
    );
    // --dvr: needs --record; the pipeline's time-shift window.
    assert_eq!(key_of(load(&["x", "--dvr", "2h"])), "dvr");
    let c = load(&["x", "--record", "file:///tmp/r", "--dvr", "2h"]).unwrap();
    assert_eq!(c.pipeline().dvr_window_ms, 7_200_000);
    assert_eq!(c.pipeline().listed_window(), 3600, "2 h of 2 s segments");
    assert_eq!(Config::default().pipeline().listed_window(), 6);
}

/// A file deserializes straight into the typed parts; what it does not
/// set keeps the default.
#[test]
fn file_into_typed_parts() {
    let c = Config::from_toml(
        r#"
grpc-addr = "0.0.0.0:1"
log-format = "json"
demo = "cam"
http-idle-timeout = "90s"
part-duration = "250ms"
max-segment-duration = 7
window = 3
subscriber-buffer = 64
subscribe_wait = "1.5s"
idle-timeout = 12
auth-token = ["play:*:abcdefgh", "publish:cam:ijklmnop,any:*:qrstuvwx"]
tls-cert = "/c.pem"
tls-key = "/k.pem"
shutdown-grace = "2s"
"#,
    )
    .unwrap();
    let d = Config::default();
    assert_eq!(c.server.grpc_addr, "0.0.0.0:1".parse().unwrap());
    assert_eq!(c.server.http_addr, d.server.http_addr);
    assert_eq!(c.server.log_format, LogFormat::Json);
    assert_eq!(c.server.demo.as_deref(), Some("cam"));
    assert_eq!(c.http.idle_timeout, Duration::from_secs(90));
    assert_eq!(c.http.header_timeout, d.http.header_timeout);
    assert_eq!(c.engine.part_duration, Duration::from_millis(250));
    assert_eq!(
        c.engine.max_segment_duration,
        Some(Duration::from_secs(7)),
        "a number is seconds"
    );
    assert_eq!(c.engine.window, 3);
    assert_eq!(c.engine.segment_duration, d.engine.segment_duration);
    assert_eq!(c.session.max_lag_items, 64);
    assert_eq!(c.session.subscribe_wait, Duration::from_millis(1500));
    assert_eq!(c.session.publisher_idle_timeout, Duration::from_secs(12));
    assert_eq!(c.session.max_sessions, d.session.max_sessions);
    assert_eq!(
        c.auth.tokens,
        ["play:*:abcdefgh", "publish:cam:ijklmnop", "any:*:qrstuvwx"]
    );
    assert_eq!(c.tls.cert.as_deref(), Some(std::path::Path::new("/c.pem")));
    assert_eq!(c.shutdown.grace, Duration::from_secs(2));
    assert_eq!(c.shutdown.timeout, d.shutdown.timeout);
    c.validate().unwrap();
    let one = Config::from_toml("auth-token = \"any:*:abcdefgh\"\n").unwrap();
    assert_eq!(one.auth.tokens, ["any:*:abcdefgh"], "one string");
}

/// Each part deserializes on its own too, and refuses keys it does not
/// know, by name.
#[test]
fn parts_deny_unknown_keys() {
    let h: HttpLimits = toml::from_str("http-max-connections = 5\n").unwrap();
    assert_eq!(h.max_connections, 5);
    assert_eq!(h.header_timeout, HttpLimits::default().header_timeout);
    let e = toml::from_str::<HttpLimits>("http-max-connections = 5\nwindow = 2\n").unwrap_err();
    assert!(e.message().contains("window"), "{e}");
    let e = toml::from_str::<SessionDefaults>("linger = \"soon\"\n").unwrap_err();
    assert!(e.message().contains("\"soon\" is not a duration"), "{e}");
}

#[test]
fn env_beats_file_and_flag_beats_env() {
    let p = write(
        "layers",
        "window = 9\nlinger = \"7s\"\nmax-sessions = 5\nauth-token = [\"play:*:from-file\"]\n",
    );
    let path = p.to_str().unwrap();
    let c = load_with_env(
        &["x", "--config", path],
        &[
            ("LIVESLICE_WINDOW", "4"),
            ("LIVESLICE_LINGER", "3s"),
            ("LIVESLICE_AUTH_TOKENS", "play:*:from-env1,play:*:from-env2"),
        ],
    )
    .unwrap();
    assert_eq!(c.engine.window, 4, "the variable wins over the file");
    assert_eq!(c.session.linger, Duration::from_secs(3));
    assert_eq!(c.auth.tokens, ["play:*:from-env1", "play:*:from-env2"]);
    assert_eq!(c.session.max_sessions, 5, "the file wins over the default");
    assert_eq!(c.config_file.as_deref(), Some(p.as_path()));

    let c = load_with_env(
        &[
            "x",
            "--config",
            path,
            "--window",
            "2",
            "--auth-token",
            "play:*:from-flag",
        ],
        &[("LIVESLICE_WINDOW", "4"), ("LIVESLICE_LINGER", "3s")],
    )
    .unwrap();
    assert_eq!(c.engine.window, 2, "the flag wins over the variable");
    assert_eq!(c.session.linger, Duration::from_secs(3));
    assert_eq!(c.auth.tokens, ["play:*:from-flag"]);

    // The file's path itself may come from the environment.
    let c = load_with_env(&["x"], &[("LIVESLICE_CONFIG", path)]).unwrap();
    assert_eq!(c.engine.window, 9);

    // A bad variable is refused as its flag would be.
    let e = key_of(load_with_env(
        &["x"],
        &[("LIVESLICE_SEGMENT_DURATION", "soon")],
    ));
    assert!(e.contains("--segment-duration"), "{e}");
    // A good variable and file make a bad combination: validation names it.
    let p2 = write("layers-2", "part-duration = \"2s\"\n");
    let e = key_of(load_with_env(
        &["x", "--config", p2.to_str().unwrap()],
        &[("LIVESLICE_SEGMENT_DURATION", "1s")],
    ));
    assert_eq!(e, "part-duration");
}

#[test]
fn file_then_flags() {
    let p = write(
        "a",
        "window = 9\nsegment-duration = \"4s\"\nmax_sessions = 7\n",
    );
    let c = load(&["x", "--config", p.to_str().unwrap(), "--window", "3"]).unwrap();
    assert_eq!(c.engine.window, 3, "the flag wins over the file");
    assert_eq!(c.engine.segment_duration, Duration::from_secs(4));
    assert_eq!(c.session.max_sessions, 7, "snake_case keys work too");
    // The printed configuration loads back to the same settings.
    let again = write("b", &c.to_toml());
    let c2 = load(&["x", "--config", again.to_str().unwrap()]).unwrap();
    assert_eq!(c2.to_toml(), c.to_toml());
    assert_eq!(
        c2.engine.max_segment_duration,
        Some(Duration::from_secs(12))
    );
    assert_eq!(c2.engine.window, 3);
}

#[test]
fn printed_config_hides_secrets_and_loads_back() {
    let c = load(&[
        "x",
        "--auth-token",
        "play:cam1:abcdefgh",
        "--auth-secret",
        "0123456789abcdef",
        "--tls-cert",
        "/c.pem",
        "--tls-key",
        "/k.pem",
        "--demo",
        "demo",
        "--log-format",
        "json",
        "--memory-limit",
        "1048576",
    ])
    .unwrap();
    let printed = c.to_toml();
    assert!(
        printed.contains("auth-token = [\"play:cam1:<hidden>\"]"),
        "{printed}"
    );
    assert!(printed.contains("auth-secret = \"<hidden>\""), "{printed}");
    assert!(!printed.contains("abcdefgh") && !printed.contains("0123456789"));
    assert!(
        !format!("{c:?}").contains("abcdefgh"),
        "Debug hides them too"
    );
    let back = Config::from_toml(&printed).unwrap();
    assert_eq!(back.tls, c.tls);
    assert_eq!(back.server, c.server);
    assert_eq!(back.session, c.session);
    assert_eq!(back.engine.segment_duration, c.engine.segment_duration);
    // Every line is `key = value`, as scripts read it.
    for line in printed.lines() {
        assert!(line.contains(" = "), "{line:?}");
    }
    assert!(
        printed.contains("shutdown-timeout = \"5000ms\""),
        "{printed}"
    );
}

#[test]
fn numbers_beyond_toml_are_refused() {
    let e = key_of(load(&["x", "--max-sessions", "18446744073709551615"]));
    assert!(
        e.contains("--max-sessions") && e.contains("too large"),
        "{e}"
    );
}

#[test]
fn bad_keys_and_values_are_named() {
    let key = |text: &str| key_of(load(&["x", "--config", write("k", text).to_str().unwrap()]));
    assert_eq!(key("windw = 9\n"), "windw");
    assert_eq!(key("max_sesions = 9\n"), "max_sesions", "named as written");
    assert_eq!(key("print-config = true\n"), "print-config");
    assert_eq!(key("window = 0\n"), "window");
    assert_eq!(key("window = -1\n"), "window");
    assert_eq!(key("window = \"9\"\n"), "window");
    assert_eq!(key("http-max-connections = 0\n"), "http-max-connections");
    assert_eq!(key("http-header-timeout = \"0s\"\n"), "http-header-timeout");
    assert_eq!(key("http-idle-timeout = \"0s\"\n"), "http-idle-timeout");
    assert_eq!(key("http-idle-timeout = \"5s\"\n"), "ok");
    assert_eq!(key("segment-duration = \"soon\"\n"), "segment-duration");
    assert_eq!(key("log-format = \"xml\"\n"), "log-format");
    assert_eq!(key("grpc-addr = \"nowhere\"\n"), "grpc-addr");
    assert_eq!(key("auth-token = [1]\n"), "auth-token");
    assert_eq!(key("tls-cert = \"/c.pem\"\n"), "tls-key");
    assert_eq!(key("max-sessions = 1\nmax_sessions = 2\n"), "max_sessions");
    assert_eq!(key("window = \n"), "config");
    match Config::from_toml("linger = \"soon\"\n") {
        Err(e) => assert_eq!(
            e.to_string(),
            "invalid linger: \"soon\" is not a duration (try 2s or 500ms)"
        ),
        Ok(c) => panic!("{c:?}"),
    }
    let p = write("named", "windw = 9\n");
    match load(&["x", "--config", p.to_str().unwrap()]) {
        Err(LoadError::Invalid(e)) => {
            assert!(
                e.reason.contains(p.to_str().unwrap()),
                "names the file: {e}"
            )
        }
        other => panic!("{other:?}"),
    }
    match load(&["x", "--config", "/nonexistent.toml"]) {
        Err(LoadError::Invalid(e)) => assert_eq!(e.key, "config"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn output_formats() {
    use super::parse_formats;
    assert_eq!(
        parse_formats("cmaf,ts").unwrap(),
        super::OutputFormats::default()
    );
    let cmaf = parse_formats("CMAF").unwrap();
    assert!(cmaf.0.cmaf && !cmaf.0.ts);
    assert_eq!(cmaf.to_string(), "cmaf");
    assert!(parse_formats("mp4").unwrap_err().contains("\"mp4\""));
    assert!(parse_formats("").is_err());
    // From a file, as a list or a string; printed back loadable.
    let c = Config::from_toml("formats = [\"ts\"]\n").unwrap();
    assert!(c.engine.formats.0.ts && !c.engine.formats.0.cmaf);
    let c = Config::from_toml("formats = \"cmaf\"\n").unwrap();
    assert_eq!(c.engine.formats, cmaf);
    assert!(Config::from_toml(&c.to_toml()).unwrap().engine.formats == cmaf);
    assert!(Config::from_toml("formats = \"flv\"\n").is_err());
}

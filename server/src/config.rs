//! Command-line flags (each also settable as a `LIVESLICE_*` environment
//! variable) and their validation into the service's configuration.

use std::net::SocketAddr;
use std::time::Duration;

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::engine::timing::FrameRate;
use crate::engine::PipelineOptions;
use crate::grpc::ServiceConfig;
use crate::session::SessionDefaults;

/// liveslice: a live H.264 slicing server. Publishers push Annex B over gRPC
/// (`liveslice.v1.SliceService/StreamSlices`); viewers subscribe over the same
/// RPC or play HLS/DASH over HTTP.
#[derive(Parser, Debug, Clone)]
#[command(name = "liveslice-server", version)]
pub struct Config {
    /// A TOML file of settings, keyed like the flags (`segment-duration =
    /// "2s"`, `window = 6`, ...). Flags win over environment variables,
    /// which win over the file, which wins over the defaults.
    #[arg(long, env = "LIVESLICE_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// A static bearer token, as ROLE:SESSION:TOKEN (ROLE publish, play or
    /// any; SESSION an id or `*`). Repeatable. Turns auth on.
    #[arg(
        long = "auth-token",
        env = "LIVESLICE_AUTH_TOKENS",
        value_delimiter = ',',
        value_name = "ROLE:SESSION:TOKEN"
    )]
    pub auth_tokens: Vec<String>,
    /// Secret for HMAC-signed tokens (`lsv1:ROLE:SESSION:EXPIRY:MAC`; see
    /// --mint-token). Turns auth on.
    #[arg(
        long,
        env = "LIVESLICE_AUTH_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub auth_secret: Option<String>,
    /// Print a signed token for ROLE:SESSION:TTL (e.g. play:cam1:1h) made
    /// with --auth-secret, and exit.
    #[arg(long, value_name = "ROLE:SESSION:TTL")]
    pub mint_token: Option<String>,
    /// TLS certificate chain (PEM) for gRPC and HTTP; with --tls-key.
    #[arg(
        long,
        env = "LIVESLICE_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(
        long,
        env = "LIVESLICE_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// Print the effective configuration (as TOML) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "LIVESLICE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// gRPC listen address (health and reflection are served there too).
    #[arg(long, env = "LIVESLICE_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP origin listen address (HLS, DASH, player pages, metrics).
    #[arg(long, env = "LIVESLICE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Segment target duration (segments are cut at the first keyframe at or
    /// after it), e.g. 2s, 1500ms.
    #[arg(long, env = "LIVESLICE_SEGMENT_DURATION", default_value = "2s", value_parser = parse_duration)]
    pub segment_duration: Duration,
    /// Part target duration: each segment is divided into parts (CMAF
    /// chunks, runs of MPEG-TS packets) closed at the first frame boundary
    /// at or after it and at every segment boundary; each part is muxed
    /// once, as it closes. 100ms to 2s, at most --segment-duration.
    #[arg(long, env = "LIVESLICE_PART_DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub part_duration: Duration,
    /// Longest segment: with no random access point by then a segment is cut
    /// anyway, at a frame boundary, and marked not independent. Fixes
    /// EXT-X-TARGETDURATION and DASH maxSegmentDuration for every session.
    /// Default: three times --segment-duration. A segment is also cut when it
    /// reaches a third of --ring-bytes.
    #[arg(long, env = "LIVESLICE_MAX_SEGMENT_DURATION", value_parser = parse_duration)]
    pub max_segment_duration: Option<Duration>,
    /// Segments in the live playlist window.
    #[arg(long, env = "LIVESLICE_WINDOW", default_value_t = 6)]
    pub window: usize,
    /// Frame rate for streams that carry no timing and whose publisher gives
    /// no target_fps.
    #[arg(long, env = "LIVESLICE_DEFAULT_FPS", default_value_t = 30)]
    pub default_fps: u32,
    /// Most live sessions at once (RESOURCE_EXHAUSTED beyond).
    #[arg(long, env = "LIVESLICE_MAX_SESSIONS", default_value_t = 1000)]
    pub max_sessions: usize,
    /// Most subscribers per session (RESOURCE_EXHAUSTED beyond). Every gRPC
    /// subscriber stream counts; the publisher's own stream (its acks and
    /// events) and HTTP players do not.
    #[arg(long, env = "LIVESLICE_MAX_SUBSCRIBERS", default_value_t = 1000)]
    pub max_subscribers: usize,
    /// HTTP: a request's headers must arrive within this, counted from when
    /// the server starts waiting for them (the accept of a new connection,
    /// TLS handshake included, or the end of the previous response on a
    /// kept-alive HTTP/1.1 one).
    #[arg(long, env = "LIVESLICE_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,
    /// HTTP: a connection on which no byte moves either way for this long is
    /// closed (HTTP/2 included).
    #[arg(long, env = "LIVESLICE_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,
    /// HTTP: most connections open at once; beyond, a new connection gets
    /// `503` (TLS: is closed) right away. Keep it well under the file
    /// descriptor limit (`ulimit -n`), which gRPC shares.
    #[arg(long, env = "LIVESLICE_HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,
    /// Largest gRPC message accepted, in bytes (a publisher chunk must fit).
    #[arg(long, env = "LIVESLICE_MAX_MESSAGE_BYTES", default_value_t = 4 << 20)]
    pub max_message_bytes: usize,
    /// Largest NAL unit accepted, in bytes.
    #[arg(long, env = "LIVESLICE_MAX_NAL_BYTES", default_value_t = 8 << 20)]
    pub max_nal_bytes: usize,
    /// Bytes of recent frames each session keeps for late joiners and
    /// segment requests.
    #[arg(long, env = "LIVESLICE_RING_BYTES", default_value_t = 64 << 20)]
    pub ring_bytes: usize,
    /// Bytes of media all sessions together may hold, live and lingering:
    /// beyond it lingering sessions are evicted oldest first, then new
    /// publishers get RESOURCE_EXHAUSTED. Default: a quarter of physical
    /// memory or 2 GiB, whichever is smaller.
    #[arg(long, env = "LIVESLICE_MEMORY_LIMIT")]
    pub memory_limit: Option<usize>,
    /// Items (frames and events) a subscriber may fall behind the newest
    /// before it is moved to the newest random access point (with a Lagged
    /// event). 0: as far as the live window holds, so a slow subscriber
    /// loses nothing the window still has.
    #[arg(long, env = "LIVESLICE_SUBSCRIBER_BUFFER", default_value_t = 0)]
    pub subscriber_buffer: usize,
    /// How long a vanished publisher may take to reconnect and continue.
    #[arg(long, env = "LIVESLICE_PUBLISHER_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub publisher_grace: Duration,
    /// A publisher that sends nothing for this long is treated as gone (its
    /// stream ends with DEADLINE_EXCEEDED and the grace period starts).
    #[arg(long, env = "LIVESLICE_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// How long a subscriber waits for a session that does not exist yet.
    #[arg(long, env = "LIVESLICE_SUBSCRIBE_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub subscribe_wait: Duration,
    /// How long an ended session's last window stays served over HTTP.
    #[arg(long, env = "LIVESLICE_LINGER", default_value = "60s", value_parser = parse_duration)]
    pub linger: Duration,
    /// Also publish a built-in looping test stream into this session (e.g.
    /// `--demo demo`), so there is something live to play right away.
    #[arg(long, env = "LIVESLICE_DEMO", value_name = "SESSION_ID")]
    pub demo: Option<String>,
    /// On SIGTERM or Ctrl-C every session ends at once (final segment,
    /// closed playlists, SessionEnded); gRPC streams then get this long to
    /// finish (publishers end with OK), after which they are cut. Counted
    /// from the signal, alongside --shutdown-grace.
    #[arg(long, env = "LIVESLICE_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// On SIGTERM or Ctrl-C the HTTP origin keeps serving (the closed
    /// playlists, the final MPD, segments) this long after the sessions
    /// end, so HTTP players see the end; then it stops. The process exits
    /// within the longer of this and --shutdown-timeout, plus 1 s.
    #[arg(long, env = "LIVESLICE_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self::parse_from(["liveslice-server"])
    }
}

/// Physical memory (Linux `/proc/meminfo` `MemTotal`), if it can be read.
fn physical_memory_bytes() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// "2s", "1500ms", "1.5s", "1m", or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 2s or 500ms)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Keys that make no sense in a config file.
const NOT_IN_FILE: &[&str] = &["config", "print-config", "mint-token", "help", "version"];

/// A configuration value that cannot work.

#[derive(Debug, thiserror::Error)]
#[error("invalid {key}: {reason}")]
pub struct ConfigError {
    /// The flag or config-file key (owned for a key read from a file: a
    /// leaked `&'static str` per unknown key would grow with every load).
    pub key: std::borrow::Cow<'static, str>,
    pub reason: String,
}

impl Config {
    /// Reads flags, environment variables and the `--config` file, in that
    /// order of precedence, then validates.
    pub fn load<I, T>(args: I) -> Result<Config, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let cmd = Config::command().args_override_self(true);
        let first = cmd.clone().try_get_matches_from(&args)?;
        let mut full = args.clone();
        if let Some(path) = first.get_one::<std::path::PathBuf>("config") {
            let from_file = file_args(&cmd, path)?;
            // File settings go first, so flags given on the command line
            // override them (clap keeps the last occurrence).
            full.splice(1.min(full.len())..1.min(full.len()), from_file);
        }
        let matches = cmd.try_get_matches_from(&full)?;
        let config = Config::from_arg_matches(&matches)?;
        config.validate()?;
        Ok(config)
    }

    /// The effective configuration as TOML, loadable with `--config`.
    pub fn to_toml(&self) -> String {
        let d = |d: &Duration| format!("\"{}ms\"", d.as_millis());
        let mut s = String::new();
        let mut kv = |k: &str, v: String| {
            s.push_str(k);
            s.push_str(" = ");
            s.push_str(&v);
            s.push('\n');
        };
        kv("grpc-addr", format!("\"{}\"", self.grpc_addr));
        kv("http-addr", format!("\"{}\"", self.http_addr));
        kv("segment-duration", d(&self.segment_duration));
        kv("part-duration", d(&self.part_duration));
        kv(
            "max-segment-duration",
            d(&self.effective_max_segment_duration()),
        );
        kv("window", self.window.to_string());
        kv("default-fps", self.default_fps.to_string());
        kv("max-sessions", self.max_sessions.to_string());
        kv("max-subscribers", self.max_subscribers.to_string());
        kv("http-header-timeout", d(&self.http_header_timeout));
        kv("http-idle-timeout", d(&self.http_idle_timeout));
        kv(
            "http-max-connections",
            self.http_max_connections.to_string(),
        );
        kv("max-message-bytes", self.max_message_bytes.to_string());
        kv("max-nal-bytes", self.max_nal_bytes.to_string());
        kv("ring-bytes", self.ring_bytes.to_string());
        kv("memory-limit", self.effective_memory_limit().to_string());
        kv("subscriber-buffer", self.subscriber_buffer.to_string());
        kv("publisher-grace", d(&self.publisher_grace));
        kv("subscribe-wait", d(&self.subscribe_wait));
        kv("idle-timeout", d(&self.idle_timeout));
        kv("linger", d(&self.linger));
        kv("shutdown-timeout", d(&self.shutdown_timeout));
        kv("shutdown-grace", d(&self.shutdown_grace));
        kv("log-format", format!("\"{}\"", self.log_format));
        if let Some(demo) = &self.demo {
            kv("demo", format!("\"{demo}\""));
        }
        if !self.auth_tokens.is_empty() {
            // Tokens are secrets: shown by role and session only.
            let shown: Vec<String> = self
                .auth_tokens
                .iter()
                .map(|t| {
                    let mut p = t.splitn(3, ':');
                    format!(
                        "\"{}:{}:<hidden>\"",
                        p.next().unwrap_or(""),
                        p.next().unwrap_or("")
                    )
                })
                .collect();
            kv("auth-token", format!("[{}]", shown.join(", ")));
        }
        if self.auth_secret.is_some() {
            kv("auth-secret", "\"<hidden>\"".into());
        }
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            kv("tls-cert", format!("{:?}", c.display().to_string()));
            kv("tls-key", format!("{:?}", k.display().to_string()));
        }
        s
    }

    /// Checks ranges and names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &'static str, reason: &str| {
            Err(ConfigError {
                key: key.into(),
                reason: reason.to_string(),
            })
        };
        let seg = self.segment_duration.as_millis();
        if !(100..=60_000).contains(&seg) {
            return err("segment-duration", "must be between 100ms and 60s");
        }
        let part = self.part_duration.as_millis();
        if !(100..=2_000).contains(&part) || self.part_duration > self.segment_duration {
            return err(
                "part-duration",
                "must be between 100ms and 2s, and at most --segment-duration",
            );
        }
        if let Some(max) = self.max_segment_duration {
            if max < self.segment_duration || max > Duration::from_secs(600) {
                return err(
                    "max-segment-duration",
                    "must be at least --segment-duration and at most 10m",
                );
            }
        }
        if !(1..=1000).contains(&self.window) {
            return err("window", "must be between 1 and 1000 segments");
        }
        if !(1..=1000).contains(&self.default_fps) {
            return err("default-fps", "must be between 1 and 1000");
        }
        if self.max_sessions == 0 {
            return err("max-sessions", "must be at least 1");
        }
        if self.max_subscribers == 0 {
            return err("max-subscribers", "must be at least 1");
        }
        if self.http_header_timeout.is_zero() {
            return err("http-header-timeout", "must be more than 0");
        }
        if self.http_idle_timeout.is_zero() {
            return err("http-idle-timeout", "must be more than 0");
        }
        if self.http_max_connections == 0 {
            return err("http-max-connections", "must be at least 1");
        }
        if self.max_message_bytes < 1024 {
            return err("max-message-bytes", "must be at least 1024");
        }
        if self.max_nal_bytes < 1024 {
            return err("max-nal-bytes", "must be at least 1024");
        }
        if self.memory_limit.is_some_and(|m| m < 1 << 20) {
            return err("memory-limit", "must be at least 1048576 bytes (1 MiB)");
        }
        if self.shutdown_grace > Duration::from_secs(600) {
            return err("shutdown-grace", "must be at most 10m");
        }
        if self.shutdown_timeout > Duration::from_secs(600) {
            return err("shutdown-timeout", "must be at most 10m");
        }
        if self.subscriber_buffer != 0 && self.subscriber_buffer < 16 {
            return err("subscriber-buffer", "must be 0 (the window) or at least 16");
        }
        if self
            .auth_secret
            .as_ref()
            .is_some_and(|s| s.len() < crate::auth::MIN_SECRET_LEN)
        {
            return Err(ConfigError {
                key: "auth-secret".into(),
                reason: format!(
                    "must be at least {} characters (e.g. `openssl rand -hex 32`)",
                    crate::auth::MIN_SECRET_LEN
                ),
            });
        }
        if let Err(reason) = self.auth() {
            return Err(ConfigError {
                key: "auth-token".into(),
                reason,
            });
        }
        Ok(())
    }

    /// The authorization this configuration asks for (`None`: auth off).
    pub fn auth(&self) -> Result<Option<crate::auth::Auth>, String> {
        crate::auth::Auth::new(&self.auth_tokens, self.auth_secret.as_deref())
    }

    /// `--memory-limit`, or a quarter of physical memory capped at 2 GiB.
    pub fn effective_memory_limit(&self) -> usize {
        self.memory_limit.unwrap_or_else(|| {
            let quarter = physical_memory_bytes().map_or(usize::MAX, |m| m / 4);
            quarter.min(2 << 30)
        })
    }

    /// `--max-segment-duration`, or three times the segment target.
    pub fn effective_max_segment_duration(&self) -> Duration {
        self.max_segment_duration
            .unwrap_or(self.segment_duration.saturating_mul(3))
    }

    pub fn pipeline(&self) -> PipelineOptions {
        PipelineOptions {
            default_rate: FrameRate::new(self.default_fps, 1),
            target_rate: None,
            segment_target_ms: self.segment_duration.as_millis() as u32,
            part_target_ms: self.part_duration.as_millis() as u32,
            max_segment_ms: self.effective_max_segment_duration().as_millis() as u32,
            max_window_bytes: self.ring_bytes,
            window: self.window,
            max_nal_bytes: self.max_nal_bytes,
            max_au_bytes: self.max_nal_bytes.saturating_mul(2),
            timing: Default::default(),
            utc_timing_url: "/time".into(),
        }
    }

    pub fn http_limits(&self) -> crate::http::serve::HttpLimits {
        crate::http::serve::HttpLimits {
            header_timeout: self.http_header_timeout,
            idle_timeout: self.http_idle_timeout,
            max_connections: self.http_max_connections,
        }
    }

    pub fn session_defaults(&self) -> SessionDefaults {
        SessionDefaults {
            max_sessions: self.max_sessions,
            max_subscribers_per_session: self.max_subscribers,
            max_lag_items: self.subscriber_buffer,
            ring_max_bytes: self.ring_bytes,
            memory_limit: self.effective_memory_limit(),
            publisher_grace: self.publisher_grace,
            linger: self.linger,
        }
    }

    pub fn service(&self) -> ServiceConfig {
        ServiceConfig {
            pipeline: self.pipeline(),
            subscribe_wait: self.subscribe_wait,
            idle_timeout: self.idle_timeout,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        Config::default().validate().unwrap();
        let c = Config {
            window: 0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "window");
        let c = Config::try_parse_from(["x", "--segment-duration", "10ms"]).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "segment-duration");
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad flags, or `--help`/`--version` (`exit()` prints and exits right).
    #[error(transparent)]
    Flags(#[from] clap::Error),
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// The config file's settings as `--key value` arguments, skipping keys
/// whose environment variable is set (the environment wins over the file).
fn file_args(cmd: &clap::Command, path: &std::path::Path) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        key: "config".into(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        key: "config".into(),
        reason: format!("{} is not valid TOML: {}", path.display(), e.message()),
    })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && !NOT_IN_FILE.contains(&long.as_str()))
            .ok_or_else(|| ConfigError {
                key: key.clone().into(),
                reason: format!("unknown setting in {}", path.display()),
            })?;
        if arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        let value = match value {
            toml::Value::Array(items)
                if arg.get_num_args().is_some_and(|n| n.max_values() > 1)
                    || arg.get_value_delimiter().is_some() =>
            {
                for item in items {
                    let toml::Value::String(s) = item else {
                        return Err(ConfigError {
                            key: key.into(),
                            reason: "expected a list of strings".into(),
                        });
                    };
                    out.push(format!("--{long}").into());
                    out.push(s.into());
                }
                continue;
            }
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(ConfigError {
                    key: key.into(),
                    reason: format!("expected a string, number or boolean, got {other}"),
                })
            }
        };
        out.push(format!("--{long}").into());
        out.push(value.into());
    }
    Ok(out)
}

#[cfg(test)]
mod file_tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "liveslice-config-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn file_then_flags() {
        let p = write(
            "a",
            "window = 9\nsegment-duration = \"4s\"\nmax_sessions = 7\n",
        );
        let c = Config::load(["x", "--config", p.to_str().unwrap(), "--window", "3"]).unwrap();
        assert_eq!(c.window, 3, "the flag wins over the file");
        assert_eq!(c.segment_duration, Duration::from_secs(4));
        assert_eq!(c.max_sessions, 7, "snake_case keys work too");
        // The printed configuration loads back to the same settings.
        let again = write("b", &c.to_toml());
        let c2 = Config::load(["x", "--config", again.to_str().unwrap()]).unwrap();
        assert_eq!(c2.to_toml(), c.to_toml());
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let key = |text: &str| match Config::load([
            "x",
            "--config",
            write("k", text).to_str().unwrap(),
        ]) {
            Err(LoadError::Invalid(e)) => e.key.to_string(),
            Err(LoadError::Flags(e)) => e.to_string(),
            Ok(_) => "ok".into(),
        };
        assert_eq!(key("windw = 9\n"), "windw");
        assert_eq!(key("window = 0\n"), "window");
        assert_eq!(key("http-max-connections = 0\n"), "http-max-connections");
        assert_eq!(key("http-header-timeout = \"0s\"\n"), "http-header-timeout");
        assert_eq!(key("http-idle-timeout = \"0s\"\n"), "http-idle-timeout");
        assert_eq!(key("http-idle-timeout = \"5s\"\n"), "ok");
        assert!(key("segment-duration = \"soon\"\n").contains("--segment-duration"));
        match Config::load(["x", "--config", "/nonexistent.toml"]) {
            Err(LoadError::Invalid(e)) => assert_eq!(e.key, "config"),
            other => panic!("{other:?}"),
        }
    }
}

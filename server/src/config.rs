//! The server's configuration.
//!
//! Each component owns a typed part of it, with its keys in its serde
//! attributes and its defaults in its `Default` impl (defaults live nowhere
//! else):
//!
//! | part | owner | keys |
//! |---|---|---|
//! | [`ServerConfig`] | `app` | `grpc-addr`, `http-addr`, `max-message-bytes`, `grpc-runtimes`, `log-format`, `demo` |
//! | [`HttpLimits`] | `http::serve` | `http-header-timeout`, `http-idle-timeout`, `http-max-connections`, `http-max-held-requests`, `http-max-held-per-session` |
//! | [`EngineConfig`] | here (the engine crate has no serde; its defaults are the engine's constants) | `segment-duration`, `part-duration`, `max-segment-duration`, `window`, `default-fps`, `max-nal-bytes`, `formats` |
//! | [`SessionDefaults`] | `session::registry` | `max-sessions`, `max-subscribers`, `subscriber-buffer`, `ring-bytes`, `memory-limit`, `publisher-grace`, `idle-timeout`, `subscribe-wait`, `linger` |
//! | [`AuthConfig`] | `auth` | `auth-token`, `auth-secret` |
//! | [`TlsFiles`] | `app` | `tls-cert`, `tls-key` |
//! | [`Shutdown`] | `app` | `shutdown-timeout`, `shutdown-grace` |
//! | [`RecordConfig`] | `record` | `record`, `record-endpoint`, `record-region`, `record-queue-bytes`, `record-retries`, `record-concurrency`, `record-max-segments`, `dvr` |
//! | [`ClusterConfig`] | `cluster` | `cluster`, `role`, `node-id`, `cluster-retention`, `cluster-max-bytes`, `cluster-queue` |
//! | [`LadderConfig`] | `ladder` | `ladder`, `ladder-ffmpeg`, `ladder-threads` |
//! | [`JobConfig`] | `jobs` | `worker`, `job-files`, `job-endpoint`, `job-region`, `job-attempts`, `job-ack-wait`, `job-retention`, `job-work-dir`, `job-uploads`, `job-upload-expiry` |
//!
//! [`Config`] is those parts together. It comes from three sources, in order
//! of precedence: flags and `LIVESLICE_*` environment variables (read by
//! clap into `Option`s with no defaults: the `flags` module), a `--config`
//! TOML file (one flat table keyed like the flags, each key deserialized
//! into the part that owns it: the `file` module), and the defaults. A flag
//! or variable that is given replaces the file's value; a key the file does
//! not set keeps its default.

mod file;
mod flags;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::FromArgMatches;

pub use crate::app::{LogFormat, ServerConfig, Shutdown, TlsFiles};
pub use crate::auth::AuthConfig;
pub use crate::cluster::ClusterConfig;
use crate::engine::pipeline::{
    DEFAULT_FPS, DEFAULT_MAX_NAL_BYTES, DEFAULT_PART_TARGET_MS, DEFAULT_SEGMENT_TARGET_MS,
    DEFAULT_WINDOW,
};
use crate::engine::timing::FrameRate;
use crate::engine::PipelineOptions;
use crate::grpc::ServiceConfig;
pub use crate::http::serve::HttpLimits;
pub use crate::jobs::JobConfig;
pub use crate::ladder::LadderConfig;
pub use crate::record::RecordConfig;
pub use crate::session::SessionDefaults;

/// The whole configuration: every component's part, and what only the
/// command line says (`--config`, `--print-config`, `--mint-token`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub http: HttpLimits,
    pub engine: EngineConfig,
    pub session: SessionDefaults,
    pub auth: AuthConfig,
    pub tls: TlsFiles,
    pub shutdown: Shutdown,
    pub record: RecordConfig,
    pub cluster: ClusterConfig,
    pub ladder: LadderConfig,
    pub jobs: JobConfig,
    /// `--config`: the file the settings were read from.
    pub config_file: Option<PathBuf>,
    /// `--print-config`: print [`Config::to_toml`] and exit.
    pub print_config: bool,
    /// `--mint-token ROLE:SESSION:TTL`: print a signed token and exit.
    pub mint_token: Option<String>,
}

/// The engine's settings that the server exposes: each session's
/// [`PipelineOptions`] are made from them. Keys as the fields, in
/// kebab-case; the defaults are the engine's own (`PipelineOptions::default`
/// uses the same constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineConfig {
    /// Segments are cut at the first random access point at or after it.
    #[serde(with = "duration")]
    pub segment_duration: Duration,
    /// Parts close at the first frame boundary at or after it.
    #[serde(with = "duration")]
    pub part_duration: Duration,
    /// Longest segment; `None`: three times `segment_duration`.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub max_segment_duration: Option<Duration>,
    /// Segments in the live playlist window.
    pub window: usize,
    /// Frame rate of a stream with no timing and no `target_fps`.
    pub default_fps: u32,
    /// Larger NAL units are dropped; an access unit may be twice this.
    pub max_nal_bytes: usize,
    /// The outputs each part is muxed in, as it closes: `cmaf` (HLS fMP4
    /// and DASH) and `ts` (HLS over MPEG-TS). Leaving one out saves its
    /// muxing and its memory; its URLs then answer 404 saying so.
    pub formats: OutputFormats,
}

/// Which outputs are muxed: a list of `cmaf`, `ts` (TOML: `["cmaf"]` or
/// `"cmaf,ts"`; flag: `--formats cmaf,ts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputFormats(pub crate::engine::pipeline::Formats);

/// `cmaf,ts` → formats; names the unknown one.
pub fn parse_formats(s: &str) -> Result<OutputFormats, String> {
    let mut f = crate::engine::pipeline::Formats {
        cmaf: false,
        ts: false,
    };
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name.to_ascii_lowercase().as_str() {
            "cmaf" => f.cmaf = true,
            "ts" => f.ts = true,
            _ => {
                return Err(format!(
                    "unknown output format {name:?} (use cmaf, ts or both)"
                ))
            }
        }
    }
    if !f.cmaf && !f.ts {
        return Err("at least one output format (cmaf, ts) is needed".into());
    }
    Ok(OutputFormats(f))
}

impl std::fmt::Display for OutputFormats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [(self.0.cmaf, "cmaf"), (self.0.ts, "ts")]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect();
        f.write_str(&names.join(","))
    }
}

impl serde::Serialize for OutputFormats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for OutputFormats {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Given {
            One(String),
            List(Vec<String>),
        }
        let text = match Given::deserialize(d)? {
            Given::One(s) => s,
            Given::List(v) => v.join(","),
        };
        parse_formats(&text).map_err(serde::de::Error::custom)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            segment_duration: Duration::from_millis(DEFAULT_SEGMENT_TARGET_MS as u64),
            part_duration: Duration::from_millis(DEFAULT_PART_TARGET_MS as u64),
            max_segment_duration: None,
            window: DEFAULT_WINDOW,
            default_fps: DEFAULT_FPS,
            max_nal_bytes: DEFAULT_MAX_NAL_BYTES,
            formats: OutputFormats::default(),
        }
    }
}

impl EngineConfig {
    /// Checks ranges and names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let seg = self.segment_duration.as_millis();
        if !(100..=60_000).contains(&seg) {
            return Err(ConfigError::new(
                "segment-duration",
                "must be between 100ms and 60s",
            ));
        }
        let part = self.part_duration.as_millis();
        if !(100..=2_000).contains(&part) || self.part_duration > self.segment_duration {
            return Err(ConfigError::new(
                "part-duration",
                "must be between 100ms and 2s, and at most --segment-duration",
            ));
        }
        if let Some(max) = self.max_segment_duration {
            if max < self.segment_duration || max > Duration::from_secs(600) {
                return Err(ConfigError::new(
                    "max-segment-duration",
                    "must be at least --segment-duration and at most 10m",
                ));
            }
        }
        if !(1..=1000).contains(&self.window) {
            return Err(ConfigError::new(
                "window",
                "must be between 1 and 1000 segments",
            ));
        }
        if !(1..=1000).contains(&self.default_fps) {
            return Err(ConfigError::new(
                "default-fps",
                "must be between 1 and 1000",
            ));
        }
        if self.max_nal_bytes < 1024 {
            return Err(ConfigError::new("max-nal-bytes", "must be at least 1024"));
        }
        Ok(())
    }

    /// `max-segment-duration`, or three times the segment target.
    pub fn effective_max_segment_duration(&self) -> Duration {
        self.max_segment_duration
            .unwrap_or(self.segment_duration.saturating_mul(3))
    }

    /// A session's pipeline options, with a ring of `ring_bytes`.
    pub fn pipeline(&self, ring_bytes: usize) -> PipelineOptions {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        PipelineOptions {
            default_rate: FrameRate::new(self.default_fps, 1),
            target_rate: None,
            segment_target_ms: ms(self.segment_duration),
            part_target_ms: ms(self.part_duration),
            max_segment_ms: ms(self.effective_max_segment_duration()),
            max_window_bytes: ring_bytes,
            window: self.window,
            max_nal_bytes: self.max_nal_bytes,
            max_au_bytes: self.max_nal_bytes.saturating_mul(2),
            formats: self.formats.0,
            ..PipelineOptions::default()
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid {key}: {reason}")]
pub struct ConfigError {
    /// The flag or config-file key (owned for a key read from a file: a
    /// leaked `&'static str` per unknown key would grow with every load).
    pub key: std::borrow::Cow<'static, str>,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Errors of deserializing a config file's part (the `file` module puts in
/// the key).
impl serde::de::Error for ConfigError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self::new("config", msg.to_string())
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

impl Config {
    /// Reads flags, environment variables and the `--config` file, in that
    /// order of precedence, then validates.
    pub fn load<I, T>(args: I) -> Result<Config, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = flags::command().try_get_matches_from(args)?;
        let flags = flags::Flags::from_arg_matches(&matches)?;
        let from_file = match &flags.config {
            Some(path) => Some((path.clone(), file::read(path)?)),
            None => None,
        };
        let mut config = from_file
            .as_ref()
            .map_or_else(Config::default, |(_, c)| c.clone());
        flags.apply(&mut config);
        if let Err(mut e) = config.validate() {
            // A value out of range that the file gave, no flag or variable
            // replacing it: name the file, as for a value of the wrong type.
            if let Some((path, file_config)) = &from_file {
                let from_the_file = file_config.validate().is_err_and(|f| f.key == e.key)
                    && file_config.setting(&e.key) == config.setting(&e.key);
                if from_the_file {
                    e.reason = format!("{} (in {})", e.reason, path.display());
                }
            }
            return Err(e.into());
        }
        Ok(config)
    }

    /// One key's value as [`to_toml`](Self::to_toml) prints it (`None`: no
    /// such key).
    fn setting(&self, key: &str) -> Option<toml::Value> {
        let table: toml::Table = self.to_toml().parse().ok()?;
        table.get(key).cloned()
    }

    /// The settings of a config file's text (defaults for the keys it does
    /// not set), not yet validated.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        file::parse(text)
    }

    /// The effective configuration as TOML, loadable with `--config`:
    /// every setting (derived defaults resolved), secrets hidden.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.engine.max_segment_duration = Some(self.engine.effective_max_segment_duration());
        let mut out = String::new();
        let mut put = |part: Result<String, toml::ser::Error>| match part {
            Ok(text) => out.push_str(&text),
            // Only numbers beyond TOML's range (2^63 - 1) can fail, which
            // the flags refuse.
            Err(e) => out.push_str(&format!("# not printable: {e}\n")),
        };
        put(toml::to_string(&shown.server));
        put(toml::to_string(&shown.engine));
        put(toml::to_string(&shown.session));
        put(toml::to_string(&shown.http));
        put(toml::to_string(&shown.shutdown));
        put(toml::to_string(&shown.auth));
        put(toml::to_string(&shown.tls));
        put(toml::to_string(&shown.record));
        put(toml::to_string(&shown.cluster));
        put(toml::to_string(&shown.ladder));
        put(toml::to_string(&shown.jobs));
        out
    }

    /// Checks every part's ranges and names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine.validate()?;
        self.server.validate()?;
        self.session.validate()?;
        self.http.validate()?;
        self.shutdown.validate()?;
        self.tls.validate()?;
        self.record.validate()?;
        self.cluster.validate()?;
        self.ladder.validate()?;
        self.jobs.validate()?;
        if self.jobs.worker && self.cluster.cluster.is_none() {
            return Err(ConfigError::new(
                "worker",
                "needs --cluster nats://HOST:PORT (workers take jobs from the cluster's queue)",
            ));
        }
        self.auth.validate()
    }

    /// The authorization this configuration asks for (`None`: auth off).
    pub fn auth(&self) -> Result<Option<crate::auth::Auth>, String> {
        self.auth.build()
    }

    /// Each session's pipeline options (before its publisher's own).
    pub fn pipeline(&self) -> PipelineOptions {
        let mut p = self.engine.pipeline(self.session.ring_max_bytes);
        p.dvr_window_ms = self
            .record
            .dvr
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        p
    }

    pub fn service(&self) -> ServiceConfig {
        ServiceConfig {
            pipeline: self.pipeline(),
            ..Default::default()
        }
    }
}

/// "2s", "1500ms", "1.5s", "1m", or plain seconds; to the nearest
/// millisecond.
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
    // Whole milliseconds, so that `--print-config` shows exactly what runs.
    Ok(Duration::from_millis((secs * 1000.0).round() as u64))
}

/// serde for a duration setting: read as [`parse_duration`] reads a flag
/// (or a number of seconds), written as `"<ms>ms"`.
pub mod duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Visitor)
    }

    struct Visitor;

    impl Visitor {
        fn parse<E: serde::de::Error>(text: &str) -> Result<Duration, E> {
            super::parse_duration(text).map_err(E::custom)
        }
    }

    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as \"2s\" or \"500ms\" (or a number of seconds)")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            Self::parse(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
            Self::parse(&v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
            Self::parse(&v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
            Self::parse(&v.to_string())
        }
    }
}

/// [`duration`] for an optional setting (absent: `None`).
pub mod opt_duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// Writes a path setting as a string (lossily if it is not UTF-8).
pub fn opt_path<S: serde::Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests;

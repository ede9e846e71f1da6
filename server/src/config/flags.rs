//! The command line and the `LIVESLICE_*` environment: clap reads each
//! setting into an `Option` (no defaults here: a setting neither flag nor
//! variable gives stays `None`, and the file's value or the part's default
//! stands). `--help` shows the defaults, taken from [`Config::default`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::{parse_duration, Config, LogFormat};

/// liveslice: a live H.264/H.265 + AAC slicing server. Publishers push Annex B (and ADTS) over gRPC
/// (`liveslice.v1.SliceService/StreamSlices`); viewers subscribe over the same
/// RPC or play HLS/DASH over HTTP.
#[derive(Parser, Debug, Clone)]
#[command(name = "liveslice-server", version)]
pub(super) struct Flags {
    /// A TOML file of settings, keyed like the flags (`segment-duration =
    /// "2s"`, `window = 6`, ...). Flags win over environment variables,
    /// which win over the file, which wins over the defaults.
    #[arg(long, env = "LIVESLICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A static bearer token, as ROLE:SESSION:TOKEN (ROLE publish, play or
    /// any; SESSION an id or `*`). Repeatable. Turns auth on.
    #[arg(
        long = "auth-token",
        env = "LIVESLICE_AUTH_TOKENS",
        value_delimiter = ',',
        value_name = "ROLE:SESSION:TOKEN"
    )]
    pub auth_tokens: Option<Vec<String>>,
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
    #[arg(long, env = "LIVESLICE_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, env = "LIVESLICE_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Print the effective configuration (as TOML) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "LIVESLICE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Join a cluster: NATS server URL(s) with JetStream, nats://HOST:PORT
    /// (comma-separated for several). Without it the server is a single
    /// node and needs no NATS.
    #[arg(long, env = "LIVESLICE_CLUSTER", value_name = "nats://HOST:PORT")]
    pub cluster: Option<String>,
    /// Role in the cluster: origin (takes publishers, replicates their
    /// sessions) or edge (serves the cluster's sessions, takes no
    /// publishers).
    #[arg(long, env = "LIVESLICE_ROLE")]
    pub role: Option<crate::cluster::Role>,
    /// A transcode ladder for every published session: HEIGHTp:RATE
    /// rungs, comma-separated (720p:3000k,480p:1200k,360p:600k). One ffmpeg
    /// process per session (libx264, keyframes where the source has them)
    /// publishes each rung back as rendition SESSION~HEIGHTp. Off by
    /// default.
    #[arg(long, env = "LIVESLICE_LADDER", value_name = "RUNGS")]
    pub ladder: Option<String>,
    /// The ffmpeg binary the ladder runs (with libx264).
    #[arg(long, env = "LIVESLICE_LADDER_FFMPEG", value_name = "PATH")]
    pub ladder_ffmpeg: Option<String>,
    /// Threads for the ladder's decoder and for each rung's encoder, 1 to
    /// 16 (bounds its CPU).
    #[arg(long, env = "LIVESLICE_LADDER_THREADS", value_name = "N")]
    pub ladder_threads: Option<u32>,
    /// Take packaging jobs from the cluster's queue (needs --cluster): any
    /// number of workers on any machines share it, one job each at a time.
    #[arg(long, env = "LIVESLICE_WORKER", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub worker: Option<bool>,
    /// The directory file:// job URLs must lie in (sources read, outputs
    /// written there); without it file:// job URLs are refused.
    #[arg(long, env = "LIVESLICE_JOB_FILES", value_name = "DIR")]
    pub job_files: Option<PathBuf>,
    /// The S3 API's URL for s3:// job URLs (MinIO, moto, ...; plain
    /// http:// allowed). Default: AWS_ENDPOINT, or AWS's own.
    #[arg(long, env = "LIVESLICE_JOB_ENDPOINT", value_name = "URL")]
    pub job_endpoint: Option<String>,
    /// The S3 region for s3:// job URLs (default: AWS_REGION, or us-east-1).
    #[arg(long, env = "LIVESLICE_JOB_REGION")]
    pub job_region: Option<String>,
    /// Deliveries of a job to a worker before it is failed (1 to 20).
    #[arg(long, env = "LIVESLICE_JOB_ATTEMPTS", value_name = "N")]
    pub job_attempts: Option<u32>,
    /// How long a job whose worker stopped reporting (died, lost NATS)
    /// waits before another worker takes it (2s to 10m).
    #[arg(long, env = "LIVESLICE_JOB_ACK_WAIT", value_parser = parse_duration)]
    pub job_ack_wait: Option<Duration>,
    /// How long job records and queued jobs are kept (1m to 30 days).
    #[arg(long, env = "LIVESLICE_JOB_RETENTION", value_parser = parse_duration)]
    pub job_retention: Option<Duration>,
    /// Where a worker downloads sources and builds trees (default: the
    /// system's temporary directory).
    #[arg(long, env = "LIVESLICE_JOB_WORK_DIR", value_name = "DIR")]
    pub job_work_dir: Option<PathBuf>,
    /// Where direct uploads go, s3://BUCKET/PREFIX: POST /api/uploads (and
    /// `liveslice job submit --upload`) hands out pre-signed PUT URLs
    /// there. Off by default.
    #[arg(long, env = "LIVESLICE_JOB_UPLOADS", value_name = "s3://BUCKET/PREFIX")]
    pub job_uploads: Option<String>,
    /// How long a pre-signed upload URL is valid (1m to 7 days).
    #[arg(long, env = "LIVESLICE_JOB_UPLOAD_EXPIRY", value_parser = parse_duration)]
    pub job_upload_expiry: Option<Duration>,
    /// This node's id in session leases (default: host name and process
    /// id).
    #[arg(long, env = "LIVESLICE_NODE_ID")]
    pub node_id: Option<String>,
    /// How long JetStream keeps a session's items: at least the live window
    /// plus a margin, so an edge that joins finds the whole window.
    #[arg(long, env = "LIVESLICE_CLUSTER_RETENTION", value_parser = parse_duration)]
    pub cluster_retention: Option<Duration>,
    /// Bytes the cluster's stream may hold in all (oldest items go first).
    #[arg(long, env = "LIVESLICE_CLUSTER_MAX_BYTES")]
    pub cluster_max_bytes: Option<u64>,
    /// Items per session waiting to be published to the cluster; beyond it
    /// items are dropped and counted (the live path never waits).
    #[arg(long, env = "LIVESLICE_CLUSTER_QUEUE", value_parser = count)]
    pub cluster_queue: Option<usize>,
    /// gRPC listen address (health and reflection are served there too).
    #[arg(long, env = "LIVESLICE_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP origin listen address (HLS, DASH, player pages, metrics).
    #[arg(long, env = "LIVESLICE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Segment target duration (segments are cut at the first keyframe at or
    /// after it), e.g. 2s, 1500ms.
    #[arg(long, env = "LIVESLICE_SEGMENT_DURATION", value_parser = parse_duration)]
    pub segment_duration: Option<Duration>,
    /// Part target duration: each segment is divided into parts (CMAF
    /// chunks, runs of MPEG-TS packets) closed at the first frame boundary
    /// at or after it and at every segment boundary; each part is muxed
    /// once, as it closes. 100ms to 2s, at most --segment-duration.
    #[arg(long, env = "LIVESLICE_PART_DURATION", value_parser = parse_duration)]
    pub part_duration: Option<Duration>,
    /// Longest segment: with no random access point by then a segment is cut
    /// anyway, at a frame boundary, and marked not independent. Fixes
    /// EXT-X-TARGETDURATION and DASH maxSegmentDuration for every session.
    /// Default: three times --segment-duration. A segment is also cut when it
    /// reaches a third of --ring-bytes.
    #[arg(long, env = "LIVESLICE_MAX_SEGMENT_DURATION", value_parser = parse_duration)]
    pub max_segment_duration: Option<Duration>,
    /// Output formats each part is muxed in: cmaf (HLS fMP4 and DASH), ts
    /// (HLS over MPEG-TS), or both (`cmaf,ts`). The URLs of a format left
    /// out answer 404 saying so.
    #[arg(long, env = "LIVESLICE_FORMATS", value_name = "cmaf,ts", value_parser = super::parse_formats)]
    pub formats: Option<super::OutputFormats>,
    /// Segments in the live playlist window.
    #[arg(long, env = "LIVESLICE_WINDOW", value_parser = count)]
    pub window: Option<usize>,
    /// Frame rate for streams that carry no timing and whose publisher gives
    /// no target_fps.
    #[arg(long, env = "LIVESLICE_DEFAULT_FPS")]
    pub default_fps: Option<u32>,
    /// Most live sessions at once (RESOURCE_EXHAUSTED beyond).
    #[arg(long, env = "LIVESLICE_MAX_SESSIONS", value_parser = count)]
    pub max_sessions: Option<usize>,
    /// Most subscribers per session (RESOURCE_EXHAUSTED beyond). Every gRPC
    /// subscriber stream counts; the publisher's own stream (its acks and
    /// events) and HTTP players do not.
    #[arg(long, env = "LIVESLICE_MAX_SUBSCRIBERS", value_parser = count)]
    pub max_subscribers: Option<usize>,
    /// HTTP: a request's headers must arrive within this, counted from when
    /// the server starts waiting for them (the accept of a new connection,
    /// TLS handshake included, or the end of the previous response on a
    /// kept-alive HTTP/1.1 one).
    #[arg(long, env = "LIVESLICE_HTTP_HEADER_TIMEOUT", value_parser = parse_duration)]
    pub http_header_timeout: Option<Duration>,
    /// HTTP: a connection on which no byte moves either way for this long is
    /// closed (HTTP/2 included).
    #[arg(long, env = "LIVESLICE_HTTP_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub http_idle_timeout: Option<Duration>,
    /// HTTP: most connections open at once; beyond, a new connection gets
    /// `503` (TLS: is closed) right away. Keep it well under the file
    /// descriptor limit (`ulimit -n`), which gRPC shares.
    #[arg(long, env = "LIVESLICE_HTTP_MAX_CONNECTIONS", value_parser = count)]
    pub http_max_connections: Option<usize>,
    /// HTTP: low-latency requests held at once (blocking playlist reloads,
    /// preload-hint parts, DASH segments in progress), all sessions
    /// together; beyond, `503`.
    #[arg(long, env = "LIVESLICE_HTTP_MAX_HELD_REQUESTS", value_parser = count)]
    pub http_max_held_requests: Option<usize>,
    /// HTTP: the same, per session.
    #[arg(long, env = "LIVESLICE_HTTP_MAX_HELD_PER_SESSION", value_parser = count)]
    pub http_max_held_per_session: Option<usize>,
    /// Largest gRPC message accepted, in bytes (a publisher chunk must fit).
    #[arg(long, env = "LIVESLICE_MAX_MESSAGE_BYTES", value_parser = count)]
    pub max_message_bytes: Option<usize>,
    /// gRPC connections served on this many single-threaded runtimes, a
    /// thread each, round-robin (one per core saves cross-thread wake-ups);
    /// 0: on the shared multi-threaded runtime; at most 256.
    #[arg(long, env = "LIVESLICE_GRPC_RUNTIMES", value_parser = count)]
    pub grpc_runtimes: Option<usize>,
    /// Largest NAL unit accepted, in bytes.
    #[arg(long, env = "LIVESLICE_MAX_NAL_BYTES", value_parser = count)]
    pub max_nal_bytes: Option<usize>,
    /// Bytes of recent frames each session keeps for late joiners and
    /// segment requests.
    #[arg(long, env = "LIVESLICE_RING_BYTES", value_parser = count)]
    pub ring_bytes: Option<usize>,
    /// Bytes of media all sessions together may hold, live and lingering:
    /// beyond it lingering sessions are evicted oldest first, then new
    /// publishers get RESOURCE_EXHAUSTED. Default: a quarter of physical
    /// memory or 2 GiB, whichever is smaller.
    #[arg(long, env = "LIVESLICE_MEMORY_LIMIT", value_parser = count)]
    pub memory_limit: Option<usize>,
    /// Items (frames and events) a subscriber may fall behind the newest
    /// before it is moved to the newest random access point (with a Lagged
    /// event). 0: as far as the live window holds, so a slow subscriber
    /// loses nothing the window still has.
    #[arg(long, env = "LIVESLICE_SUBSCRIBER_BUFFER", value_parser = count)]
    pub subscriber_buffer: Option<usize>,
    /// How long a vanished publisher may take to reconnect and continue.
    #[arg(long, env = "LIVESLICE_PUBLISHER_GRACE", value_parser = parse_duration)]
    pub publisher_grace: Option<Duration>,
    /// A publisher that sends nothing for this long is treated as gone (its
    /// stream ends with DEADLINE_EXCEEDED and the grace period starts).
    #[arg(long, env = "LIVESLICE_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// How long a subscriber waits for a session that does not exist yet.
    #[arg(long, env = "LIVESLICE_SUBSCRIBE_WAIT", value_parser = parse_duration)]
    pub subscribe_wait: Option<Duration>,
    /// How long an ended session's last window stays served over HTTP.
    #[arg(long, env = "LIVESLICE_LINGER", value_parser = parse_duration)]
    pub linger: Option<Duration>,
    /// Also publish a built-in looping test stream into this session (e.g.
    /// `--demo demo`), so there is something live to play right away.
    #[arg(long, env = "LIVESLICE_DEMO", value_name = "SESSION_ID")]
    pub demo: Option<String>,
    /// On SIGTERM or Ctrl-C every session ends at once (final segment,
    /// closed playlists, SessionEnded); gRPC streams then get this long to
    /// finish (publishers end with OK), after which they are cut. Counted
    /// from the signal, alongside --shutdown-grace.
    #[arg(long, env = "LIVESLICE_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// On SIGTERM or Ctrl-C the HTTP origin keeps serving (the closed
    /// playlists, the final MPD, segments) this long after the sessions
    /// end, so HTTP players see the end; then it stops. The process exits
    /// within the longer of this and --shutdown-timeout, plus 1 s.
    #[arg(long, env = "LIVESLICE_SHUTDOWN_GRACE", value_parser = parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Record every session: s3://BUCKET/PREFIX (credentials and region
    /// from the AWS_* environment) or file:///DIR. Each segment and init
    /// segment is written under PREFIX/SESSION_ID/ as it completes, with an
    /// EVENT playlist during the session and VOD playlists and a static MPD
    /// at its end. Publishing never waits for storage.
    #[arg(long, env = "LIVESLICE_RECORD", value_name = "URL")]
    pub record: Option<String>,
    /// The S3 API's URL for S3-compatible stores (MinIO, moto, ...), e.g.
    /// http://127.0.0.1:9000 (plain HTTP is allowed for it).
    #[arg(long, env = "LIVESLICE_RECORD_ENDPOINT", value_name = "URL")]
    pub record_endpoint: Option<String>,
    /// The S3 region (default: AWS_REGION, or us-east-1).
    #[arg(long, env = "LIVESLICE_RECORD_REGION", value_name = "REGION")]
    pub record_region: Option<String>,
    /// Bytes of segments waiting to be written, all sessions together;
    /// segments beyond are not recorded (counted in /metrics and
    /// /api/record) while publishing goes on.
    #[arg(long, env = "LIVESLICE_RECORD_QUEUE_BYTES", value_parser = count)]
    pub record_queue_bytes: Option<usize>,
    /// Further attempts of a failed write (exponential back-off from
    /// 200 ms, at most 10 s apart) before it is given up.
    #[arg(long, env = "LIVESLICE_RECORD_RETRIES")]
    pub record_retries: Option<u32>,
    /// Recording writes in flight at once.
    #[arg(long, env = "LIVESLICE_RECORD_CONCURRENCY", value_parser = count)]
    pub record_concurrency: Option<usize>,
    /// Segments recorded per session at most; later ones are not recorded
    /// (counted).
    #[arg(long, env = "LIVESLICE_RECORD_MAX_SEGMENTS", value_parser = count)]
    pub record_max_segments: Option<usize>,
    /// A time-shift window (e.g. 2h) the live playlists and MPD offer,
    /// longer than the memory window (--window): segments that left memory
    /// are served from the recording. Needs --record.
    #[arg(long, env = "LIVESLICE_DVR", value_parser = parse_duration, value_name = "DURATION")]
    pub dvr: Option<Duration>,
}

/// Flags that are not settings of a config file.
#[cfg(test)]
pub(super) const NOT_IN_FILE: &[&str] = &["config", "print-config", "mint-token"];

/// Defaults `--help` does not show: they depend on the machine or on
/// another setting, and the flag's help says how.
const DERIVED_DEFAULTS: &[&str] = &["memory-limit", "max-segment-duration"];

/// A count or a size: any `usize` a TOML file can hold too (at most
/// 2^63 - 1), so that `--print-config` prints every value loadably.
fn count(s: &str) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a whole number: {e}"))?;
    if i64::try_from(v).is_err() {
        return Err(format!("{v} is too large (at most {})", i64::MAX));
    }
    Ok(v)
}

/// The command: [`Flags`], a repeated flag's last value winning, with the
/// defaults of [`Config::default`] in the help.
pub(super) fn command() -> clap::Command {
    let defaults = default_values();
    Flags::command().args_override_self(true).mut_args(|arg| {
        let Some(shown) = arg
            .get_long()
            .filter(|l| !DERIVED_DEFAULTS.contains(l))
            .and_then(|l| defaults.get(l))
        else {
            return arg;
        };
        let tail = format!(" [default: {shown}]");
        let help = arg.get_help().map(|h| format!("{h}{tail}"));
        let long_help = arg
            .get_long_help()
            .map(|h| format!("{h}\n\n[default: {shown}]"));
        let arg = match help {
            Some(h) => arg.help(h),
            None => arg,
        };
        match long_help {
            Some(h) => arg.long_help(h),
            None => arg,
        }
    })
}

/// Every setting of [`Config::default`] by key, as `--help` shows it
/// (`2s` for a whole number of seconds).
fn default_values() -> std::collections::HashMap<String, String> {
    let printed = Config::default().to_toml();
    let table: toml::Table = printed.parse().unwrap_or_default();
    table
        .into_iter()
        .map(|(key, value)| {
            let shown = match value {
                toml::Value::String(s) => match s.strip_suffix("000ms") {
                    Some(secs) if !secs.is_empty() && secs.bytes().all(|b| b.is_ascii_digit()) => {
                        format!("{secs}s")
                    }
                    _ => s,
                },
                other => other.to_string(),
            };
            (key, shown)
        })
        .collect()
}

impl Flags {
    /// Puts every setting a flag or variable gives over `config`.
    pub(super) fn apply(self, c: &mut Config) {
        macro_rules! given {
            ($($flag:ident => $($field:ident).+;)*) => {
                $(if let Some(v) = self.$flag {
                    c.$($field).+ = v;
                })*
            };
        }
        given! {
            grpc_addr => server.grpc_addr;
            http_addr => server.http_addr;
            max_message_bytes => server.max_message_bytes;
            grpc_runtimes => server.grpc_runtimes;
            log_format => server.log_format;
            http_header_timeout => http.header_timeout;
            http_idle_timeout => http.idle_timeout;
            http_max_connections => http.max_connections;
            http_max_held_requests => http.max_held_requests;
            http_max_held_per_session => http.max_held_per_session;
            segment_duration => engine.segment_duration;
            part_duration => engine.part_duration;
            window => engine.window;
            formats => engine.formats;
            default_fps => engine.default_fps;
            max_nal_bytes => engine.max_nal_bytes;
            max_sessions => session.max_sessions;
            max_subscribers => session.max_subscribers_per_session;
            subscriber_buffer => session.max_lag_items;
            ring_bytes => session.ring_max_bytes;
            memory_limit => session.memory_limit;
            publisher_grace => session.publisher_grace;
            idle_timeout => session.publisher_idle_timeout;
            subscribe_wait => session.subscribe_wait;
            linger => session.linger;
            auth_tokens => auth.tokens;
            shutdown_timeout => shutdown.timeout;
            shutdown_grace => shutdown.grace;
            record_queue_bytes => record.record_queue_bytes;
            record_retries => record.record_retries;
            record_concurrency => record.record_concurrency;
            record_max_segments => record.record_max_segments;
            role => cluster.role;
            cluster_retention => cluster.cluster_retention;
            cluster_max_bytes => cluster.cluster_max_bytes;
            cluster_queue => cluster.cluster_queue;
            ladder_ffmpeg => ladder.ladder_ffmpeg;
            ladder_threads => ladder.ladder_threads;
            worker => jobs.worker;
            job_attempts => jobs.job_attempts;
            job_ack_wait => jobs.job_ack_wait;
            job_retention => jobs.job_retention;
            job_upload_expiry => jobs.job_upload_expiry;
        }
        if let Some(v) = self.job_files {
            c.jobs.job_files = Some(v);
        }
        if let Some(v) = self.job_endpoint {
            c.jobs.job_endpoint = Some(v);
        }
        if let Some(v) = self.job_region {
            c.jobs.job_region = Some(v);
        }
        if let Some(v) = self.job_uploads {
            c.jobs.job_uploads = Some(v);
        }
        if let Some(v) = self.job_work_dir {
            c.jobs.job_work_dir = Some(v);
        }
        if let Some(v) = self.ladder {
            c.ladder.ladder = Some(v);
        }
        if let Some(v) = self.record {
            c.record.record = Some(v);
        }
        if let Some(v) = self.record_endpoint {
            c.record.record_endpoint = Some(v);
        }
        if let Some(v) = self.record_region {
            c.record.record_region = Some(v);
        }
        if let Some(v) = self.dvr {
            c.record.dvr = Some(v);
        }
        if let Some(v) = self.cluster {
            c.cluster.cluster = Some(v);
        }
        if let Some(v) = self.node_id {
            c.cluster.node_id = Some(v);
        }
        if let Some(v) = self.max_segment_duration {
            c.engine.max_segment_duration = Some(v);
        }
        if let Some(v) = self.demo {
            c.server.demo = Some(v);
        }
        if let Some(v) = self.auth_secret {
            c.auth.secret = Some(v);
        }
        if let Some(v) = self.tls_cert {
            c.tls.cert = Some(v);
        }
        if let Some(v) = self.tls_key {
            c.tls.key = Some(v);
        }
        c.config_file = self.config;
        c.print_config = self.print_config;
        c.mint_token = self.mint_token;
    }
}

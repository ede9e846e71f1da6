//! `--record URL`: every session's segments, init segments and playlists
//! written to S3-compatible storage or local files as they complete.
//!
//! ```text
//! {prefix}/{session_id}/init-N.mp4      CMAF init segment of codec config N
//! {prefix}/{session_id}/seg-N.m4s       CMAF segment N (the bytes HTTP serves)
//! {prefix}/{session_id}/ts/seg-N.ts     MPEG-TS segment N (with the audio PID)
//! {prefix}/{session_id}/audio-init.mp4  with audio: the CMAF audio track's init segment
//! {prefix}/{session_id}/audio-N.m4s     with audio: its segment N
//! {prefix}/{session_id}/index.m3u8      HLS (CMAF), EXT-X-PLAYLIST-TYPE:EVENT, + ENDLIST at the end
//! {prefix}/{session_id}/audio.m3u8      with audio: the audio playlist, the same way
//! {prefix}/{session_id}/vod-master.m3u8 with audio, at the end: vod.m3u8 + audio-vod.m3u8
//! {prefix}/{session_id}/master.m3u8     with audio: video + the audio rendition (and ts/master.m3u8)
//! {prefix}/{session_id}/ts/index.m3u8   the same over MPEG-TS
//! {prefix}/{session_id}/vod.m3u8        at the end: EXT-X-PLAYLIST-TYPE:VOD (and ts/vod.m3u8)
//! {prefix}/{session_id}/manifest.mpd    at the end: the static MPD (with the audio set)
//! ```
//!
//! An audio-only session has no video objects: its playlists are the audio
//! ones (`index.m3u8` over MPEG-TS carries the audio PID alone).
//!
//! File names are the HTTP origin's and `liveslice package`'s. Playlists
//! are rendered by the engine ([`Manifests::whole_session`], a window as
//! long as the session) from the same `SegmentRecord`s the live playlists
//! are, in the writer task, and name only segments already written.
//!
//! The live path never waits for storage: a session hands each completed
//! segment (its `PartStore` pieces: shared `Bytes`, no copy) to the
//! server's one [`Recorder`] under a byte budget (`--record-queue-bytes`).
//! A segment that does not fit is not recorded; a write that fails is
//! retried with exponential back-off (`--record-retries`) and then given
//! up (at once when retrying cannot help: a missing bucket, refused
//! credentials). Either way it is counted (metrics, `/api/record`, the log) and the
//! recorded playlists mark the gap with `EXT-X-DISCONTINUITY` (the DASH MPD
//! starts a new period there). Writes run on tokio tasks, at most
//! `--record-concurrency` at once; a session's playlist is written after
//! its segments, one write at a time, newest text last.

mod writer;
pub(crate) use writer::content_type;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;

use crate::config::ConfigError;
use crate::engine::frame::AudioConfig;
use crate::engine::playlist::{init_name, segment_name, HlsFlavour, Manifests};
use crate::engine::{CodecConfig, SegmentRecord};

/// The recording part of the configuration (`record-*` keys).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RecordConfig {
    /// `record`: where sessions are recorded, `s3://BUCKET/PREFIX` or
    /// `file:///ABSOLUTE/DIR`; none: no recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// `record-endpoint`: the S3 API's URL for S3-compatible stores (MinIO,
    /// moto, ...), e.g. `http://127.0.0.1:9000`; plain `http://` is allowed
    /// for it. None: `AWS_ENDPOINT`, or AWS's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_endpoint: Option<String>,
    /// `record-region`: the S3 region; none: `AWS_REGION` /
    /// `AWS_DEFAULT_REGION`, or `us-east-1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_region: Option<String>,
    /// `record-queue-bytes`: bytes of segments waiting to be written, all
    /// sessions together; a segment beyond it is not recorded (counted).
    pub record_queue_bytes: usize,
    /// `record-retries`: further attempts of a failed write, with
    /// exponential back-off from 200 ms (at most 10 s between attempts).
    pub record_retries: u32,
    /// `record-concurrency`: writes in flight at once.
    pub record_concurrency: usize,
    /// `record-max-segments`: segments recorded per session (what its
    /// playlists list; each costs the writer a few hundred bytes until the
    /// session ends); later ones are not recorded (counted).
    pub record_max_segments: usize,
    /// `dvr`: a time-shift window the live playlists and MPD offer, longer
    /// than the memory window (`window`); the segments that left memory
    /// are served from the recording. Needs `record`.
    #[serde(
        with = "crate::config::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub dvr: Option<Duration>,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            record: None,
            record_endpoint: None,
            record_region: None,
            record_queue_bytes: 256 << 20,
            record_retries: 5,
            record_concurrency: 8,
            record_max_segments: 100_000,
            dvr: None,
        }
    }
}

/// Where recordings go, parsed from `--record`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    S3 { bucket: String, prefix: String },
    File { dir: std::path::PathBuf },
}

impl Target {
    /// `s3://BUCKET[/PREFIX]` or `file:///DIR` (parsed as job URLs are:
    /// [`crate::jobs::storage::Location`]).
    pub fn parse(url: &str) -> Result<Target, String> {
        use crate::jobs::storage::Location;
        Ok(
            match Location::parse_named(url, "PREFIX", "DIR", "--record")? {
                Location::S3 { bucket, key } => Target::S3 {
                    bucket,
                    prefix: key,
                },
                Location::File(dir) => Target::File { dir },
            },
        )
    }
}

impl RecordConfig {
    /// Checks ranges and names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.record {
            Target::parse(url).map_err(|r| ConfigError::new("record", r))?;
        }
        if self.record_queue_bytes < 1 << 20 {
            return Err(ConfigError::new(
                "record-queue-bytes",
                "must be at least 1048576 bytes (1 MiB)",
            ));
        }
        if self.record_retries > 20 {
            return Err(ConfigError::new("record-retries", "must be at most 20"));
        }
        if !(1..=256).contains(&self.record_concurrency) {
            return Err(ConfigError::new(
                "record-concurrency",
                "must be between 1 and 256",
            ));
        }
        if let Some(dvr) = self.dvr {
            if self.record.is_none() {
                return Err(ConfigError::new(
                    "dvr",
                    "needs --record (older segments are served from the recording)",
                ));
            }
            // The playlists list every segment of it, rendered whole.
            if dvr < Duration::from_secs(1) || dvr > Duration::from_secs(86_400) {
                return Err(ConfigError::new("dvr", "must be between 1s and 24h"));
            }
        }
        if self.record_max_segments == 0 {
            return Err(ConfigError::new(
                "record-max-segments",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The store `record` names (`None`: recording is off).
    pub fn store(&self) -> Result<Option<Store>, ConfigError> {
        let Some(url) = &self.record else {
            return Ok(None);
        };
        let target = Target::parse(url).map_err(|r| ConfigError::new("record", r))?;
        match target {
            Target::S3 { bucket, prefix } => {
                let store = s3_store(
                    &bucket,
                    self.record_endpoint.as_deref(),
                    self.record_region.as_deref(),
                )
                .map_err(|e| ConfigError::new("record", e))?;
                Ok(Some(Store {
                    store: Arc::new(store),
                    prefix,
                    content_types: true,
                }))
            }
            Target::File { dir } => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    ConfigError::new("record", format!("cannot create {}: {e}", dir.display()))
                })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| ConfigError::new("record", e.to_string()))?;
                Ok(Some(Store {
                    store: Arc::new(store),
                    prefix: String::new(),
                    content_types: false,
                }))
            }
        }
    }
}

/// HTTPS to object storage: reqwest's rustls with ring, the crypto the
/// TLS edge uses, as the process's provider (one already installed stays).
pub fn install_crypto_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// An S3 (or S3-compatible) bucket's client: `endpoint` for other stores
/// than AWS's (plain `http://` allowed), `region`; credentials and the
/// rest from the `AWS_*` environment. No retries of its own: its callers
/// retry with their own back-off (and count it). Recording and the job
/// workers use it.
pub fn s3_store(
    bucket: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
) -> Result<object_store::aws::AmazonS3, String> {
    let mut client = object_store::ClientOptions::new()
        .with_timeout(Duration::from_secs(30))
        .with_connect_timeout(Duration::from_secs(5));
    let retry = object_store::RetryConfig {
        max_retries: 0,
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    install_crypto_provider();
    let mut b = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry);
    if let Some(endpoint) = endpoint {
        b = b.with_endpoint(endpoint);
    }
    // A plain-HTTP endpoint (a local MinIO or moto), from the flag or from
    // AWS_ENDPOINT_URL: allowed, or every request fails with an opaque
    // "builder error" that no retry mends.
    let effective = b.get_config_value(&object_store::aws::AmazonS3ConfigKey::Endpoint);
    if effective.is_some_and(|e| e.starts_with("http://")) {
        b = b.with_allow_http(true);
        client = client.with_allow_http(true);
    }
    if let Some(region) = region {
        b = b.with_region(region);
    }
    b.with_client_options(client)
        .build()
        .map_err(|e| e.to_string())
}

/// An opened recording store.
pub struct Store {
    pub store: Arc<dyn ObjectStore>,
    /// Key prefix (`s3://BUCKET/PREFIX`'s PREFIX; none for files).
    pub prefix: String,
    /// Objects get a `Content-Type` (S3; local files have none).
    pub content_types: bool,
}

/// Counters of the recorder (also in `/metrics`); `/api/record` shows them.
#[derive(Debug, Default)]
pub struct Stats {
    /// Objects written.
    pub writes: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Attempts that failed and were tried again.
    pub retries: AtomicU64,
    /// Writes given up after the last retry.
    pub failures: AtomicU64,
    /// Segments not recorded: the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Segments not recorded: a write failed for good.
    pub lost_write_failed: AtomicU64,
    /// Segments not recorded: `--record-max-segments` reached.
    pub dropped_max_segments: AtomicU64,
    /// Bytes waiting to be written (queued or in flight).
    pub queued_bytes: AtomicUsize,
}

/// Shared between the sessions' handles and the writer task.
#[derive(Debug)]
struct Shared {
    stats: Stats,
    /// `--record-queue-bytes`.
    limit: usize,
    /// The last write error and when it happened (Unix ms), for
    /// `/api/record`.
    last_error: Mutex<Option<(String, u64)>>,
    /// Segments not recorded, by session id, oldest loss first (the last
    /// [`LOST_SESSIONS_SHOWN`] sessions that lost any).
    lost: Mutex<VecDeque<(String, u64)>>,
    /// Recordings still being written (ended or not).
    open: AtomicUsize,
}

/// Sessions whose losses `/api/record` names.
const LOST_SESSIONS_SHOWN: usize = 256;

impl Shared {
    fn lost(&self, session_id: &str) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        match lost.iter_mut().find(|(id, _)| id == session_id) {
            Some((_, n)) => *n += 1,
            None => {
                lost.push_back((session_id.to_owned(), 1));
                while lost.len() > LOST_SESSIONS_SHOWN {
                    lost.pop_front();
                }
            }
        }
    }
}

/// What the sessions send the writer.
enum Msg {
    /// A segment to record: its objects (`init-N.mp4` first when new) and
    /// what its playlists entry is rendered from (its video config, none in
    /// an audio-only session, and the session's audio format).
    Segment {
        rec: u64,
        record: Box<SegmentRecord>,
        cfg: Option<CodecConfig>,
        audio: Option<AudioConfig>,
        objects: Vec<(String, Vec<Bytes>)>,
        bytes: usize,
    },
    /// A segment that is not recorded (queue full).
    Lost { rec: u64 },
    /// The first message of a recording.
    Begin {
        rec: u64,
        session_id: String,
        manifests: Box<Manifests>,
    },
    /// The session ended: write the final playlists.
    End { rec: u64 },
}

/// The server's recorder: a handle to its writer task.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    next_rec: Arc<AtomicU64>,
    /// For reads (`--dvr`).
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

/// At startup: lists the recording prefix once, so that a missing bucket,
/// refused credentials or an unreachable store show before the first
/// segment is written (the log, and `/api/record`'s `last_error`, say what
/// to fix). The server starts either way: the store may be made ready
/// while it runs, and each write is checked again.
async fn check_store(store: Arc<dyn ObjectStore>, prefix: String, shared: Arc<Shared>) {
    let at = (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix.as_str()));
    let error =
        match tokio::time::timeout(STORE_CHECK_TIMEOUT, store.list_with_delimiter(at.as_ref()))
            .await
        {
            Ok(Ok(_)) => {
                tracing::info!(prefix = %prefix, "recording: the store answers");
                return;
            }
            Ok(Err(e)) => {
                // A listing's 404 or 403 comes as a generic error: the S3
                // error code in its body names it.
                let text = e.to_string().replace('\n', " ");
                match writer::permanent_error_hint(&e).or_else(|| s3_code_hint(&text)) {
                    Some(hint) => format!("{text} ({hint})"),
                    None => format!(
                        "{text} (the store is unreachable or failing; writes will be retried)"
                    ),
                }
            }
            Err(_) => format!(
            "no answer within {STORE_CHECK_TIMEOUT:?} (the store is unreachable or slow; writes \
             will be retried)"
        ),
        };
    tracing::error!(prefix = %prefix, error = %error,
        "recording: the store check at startup failed; segments will not be recorded until it is fixed");
    let at_ms = crate::session::now_unix_ns() / 1_000_000;
    let mut last = shared.last_error.lock().unwrap_or_else(|p| p.into_inner());
    // A write's error, if one came first, is the newer news.
    if last.is_none() {
        *last = Some((format!("at startup: {error}"), at_ms));
    }
}

/// What to fix for an S3 error code found in an error's text.
fn s3_code_hint(text: &str) -> Option<&'static str> {
    if text.contains("<Code>NoSuchBucket</Code>") {
        Some("the bucket does not exist: create the bucket or fix --record")
    } else if [
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    ]
    .iter()
    .any(|c| text.contains(&format!("<Code>{c}</Code>")))
    {
        Some(
            "the store refused the credentials: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \
             (or the instance role) and the bucket's policy",
        )
    } else {
        None
    }
}

/// How long the startup check of the recording store may take.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of a session's recorded file `name` (`seg-3.m4s`, `ts/seg-3.ts`).
fn key(prefix: &str, session_id: &str, name: &str) -> object_store::path::Path {
    if prefix.is_empty() {
        object_store::path::Path::from(format!("{session_id}/{name}"))
    } else {
        object_store::path::Path::from(format!("{prefix}/{session_id}/{name}"))
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts the writer task (on the current tokio runtime) writing to
    /// `store`.
    pub fn start(store: Store, config: &RecordConfig) -> Recorder {
        let Store {
            store,
            prefix,
            content_types,
        } = store;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            stats: Stats::default(),
            limit: config.record_queue_bytes,
            last_error: Mutex::new(None),
            lost: Mutex::new(VecDeque::new()),
            open: AtomicUsize::new(0),
        });
        crate::metrics::record_zeros();
        tokio::spawn(check_store(store.clone(), prefix.clone(), shared.clone()));
        tokio::spawn(writer::run(writer::Writer::new(
            store.clone(),
            prefix.clone(),
            content_types,
            config,
            shared.clone(),
            rx,
        )));
        Recorder {
            tx,
            shared,
            next_rec: Arc::new(AtomicU64::new(0)),
            store,
            prefix,
        }
    }

    /// A session's recorded file `name` (`seg-3.m4s`, `ts/seg-3.ts`,
    /// `init-0.mp4`): `Ok(None)` if it is not there.
    pub async fn read(
        &self,
        session_id: &str,
        name: &str,
    ) -> Result<Option<Bytes>, object_store::Error> {
        let path = key(&self.prefix, session_id, name);
        match self.store.get(&path).await {
            Ok(r) => r.bytes().await.map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A recording for a new session.
    pub fn session(&self, session_id: &str) -> SessionRecorder {
        SessionRecorder {
            recorder: self.clone(),
            rec: self.next_rec.fetch_add(1, Ordering::Relaxed),
            session_id: session_id.to_owned(),
            begun: false,
            inits_sent: BTreeSet::new(),
            audio_init_sent: false,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// What `/api/record` shows.
    pub fn status(&self) -> RecordStatus {
        let s = &self.shared.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let last_error = self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        RecordStatus {
            writes: get(&s.writes),
            bytes: get(&s.bytes),
            retries: get(&s.retries),
            failures: get(&s.failures),
            segments_lost_queue_full: get(&s.dropped_queue_full),
            segments_lost_write_failed: get(&s.lost_write_failed),
            segments_lost_max_segments: get(&s.dropped_max_segments),
            queued_bytes: s.queued_bytes.load(Ordering::Relaxed),
            queue_limit_bytes: self.shared.limit,
            recordings_open: self.shared.open.load(Ordering::Relaxed),
            last_error: last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_unix_ms: last_error.map(|(_, at)| at),
            lost_by_session: self
                .shared
                .lost
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }

    /// Waits (up to `limit`) until every recording is written (ended
    /// sessions' final playlists included); returns whether they were.
    pub async fn flush(&self, limit: Duration) -> bool {
        let done = || {
            self.shared.open.load(Ordering::Relaxed) == 0
                && self.shared.stats.queued_bytes.load(Ordering::Relaxed) == 0
        };
        let wait = async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// The recorder's state, as `/api/record` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RecordStatus {
    /// Objects written (segments, init segments, playlists).
    pub writes: u64,
    pub bytes: u64,
    /// Failed attempts tried again.
    pub retries: u64,
    /// Writes given up after the last retry.
    pub failures: u64,
    /// Segments not recorded because `--record-queue-bytes` was reached
    /// (storage too slow or down).
    pub segments_lost_queue_full: u64,
    /// Segments not recorded because a write failed after every retry.
    pub segments_lost_write_failed: u64,
    /// Segments not recorded because `--record-max-segments` was reached.
    pub segments_lost_max_segments: u64,
    pub queued_bytes: usize,
    pub queue_limit_bytes: usize,
    pub recordings_open: usize,
    pub last_error: Option<String>,
    /// When the last error happened (Unix ms): an old one may be from
    /// before the store was mended.
    pub last_error_unix_ms: Option<u64>,
    /// Segments not recorded, by session id (the last 256 sessions that
    /// lost any).
    pub lost_by_session: BTreeMap<String, u64>,
}

/// A segment's CMAF audio track, for the recording.
pub struct AudioPieces {
    /// The session's audio format.
    pub config: AudioConfig,
    /// `audio-init.mp4` (`None`: not stored).
    pub init: Option<Bytes>,
    /// `audio-N.m4s` (`None`: not stored).
    pub segment: Option<Vec<Bytes>>,
}

/// One session's recording: lives in the session's state, called under its
/// lock; every call is a channel send (never waits).
pub struct SessionRecorder {
    recorder: Recorder,
    rec: u64,
    session_id: String,
    begun: bool,
    /// Init segments handed to the writer.
    inits_sent: BTreeSet<u32>,
    /// `audio-init.mp4` handed to the writer.
    audio_init_sent: bool,
}

impl SessionRecorder {
    /// A complete segment: `record` as the live manifests got it (`live`,
    /// whose options and codec configs the recording's manifests take),
    /// its CMAF pieces and init segment and its MPEG-TS pieces, for the
    /// `formats` the server muxes, and its CMAF audio track when it has
    /// audio (one of those missing: the segment is not recorded, rather
    /// than listed without it). An audio-only segment has no video pieces.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        live: &Manifests,
        record: &SegmentRecord,
        formats: crate::engine::pipeline::Formats,
        init: Option<Bytes>,
        cmaf: Option<Vec<Bytes>>,
        ts: Option<Vec<Bytes>>,
        audio: Option<AudioPieces>,
    ) {
        let shared = &self.recorder.shared;
        if !self.begun {
            self.begun = true;
            shared.open.fetch_add(1, Ordering::Relaxed);
            let _ = self.recorder.tx.send(Msg::Begin {
                rec: self.rec,
                session_id: self.session_id.clone(),
                manifests: Box::new(live.whole_session()),
            });
        }
        let audio_only = record.is_audio_only();
        let video_cmaf = formats.cmaf && !audio_only;
        if (video_cmaf && cmaf.is_none()) || (formats.ts && ts.is_none()) {
            tracing::error!(session_id = %self.session_id, sequence = record.sequence,
                "recording: the segment's bytes are not stored");
            return self.lost();
        }
        let cfg = if audio_only {
            None
        } else {
            let Some(cfg) = live.config(record.config_id).cloned() else {
                tracing::error!(session_id = %self.session_id, sequence = record.sequence,
                    "recording: the segment's codec config is not in the manifests");
                return self.lost();
            };
            Some(cfg)
        };
        let mut objects = Vec::with_capacity(5);
        let new_init = video_cmaf && !self.inits_sent.contains(&record.config_id);
        if new_init {
            match init {
                Some(b) => objects.push((init_name(record.config_id), vec![b])),
                None => return self.lost(),
            }
        }
        let audio_config = audio.as_ref().map(|a| a.config.clone());
        let mut new_audio_init = false;
        if let Some(a) = audio {
            if !self.audio_init_sent {
                match a.init {
                    Some(b) => {
                        objects.push((crate::engine::playlist::AUDIO_INIT.to_owned(), vec![b]));
                        new_audio_init = true;
                    }
                    None => return self.lost(),
                }
            }
            match a.segment {
                Some(pieces) => {
                    objects.push((segment_name(record.sequence, HlsFlavour::Audio), pieces))
                }
                None => return self.lost(),
            }
        }
        if let Some(ts) = ts {
            let name = segment_name(record.sequence, HlsFlavour::Ts);
            objects.push((format!("ts/{name}"), ts));
        }
        if let Some(cmaf) = cmaf.filter(|_| video_cmaf) {
            objects.push((segment_name(record.sequence, HlsFlavour::Cmaf), cmaf));
        }
        let bytes: usize = objects
            .iter()
            .flat_map(|(_, p)| p.iter().map(Bytes::len))
            .sum();
        let queued = &shared.stats.queued_bytes;
        let fits = queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q.saturating_add(bytes) <= shared.limit).then_some(q + bytes)
            })
            .is_ok();
        if !fits {
            shared
                .stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            ::metrics::counter!(crate::metrics::RECORD_LOST, "reason" => "queue_full").increment(1);
            tracing::warn!(session_id = %self.session_id, sequence = record.sequence, bytes,
                limit = shared.limit, "recording: queue full (storage slow or down); segment not recorded");
            return self.lost();
        }
        if new_init {
            self.inits_sent.insert(record.config_id);
        }
        if new_audio_init {
            self.audio_init_sent = true;
        }
        let _ = self.recorder.tx.send(Msg::Segment {
            rec: self.rec,
            record: Box::new(record.clone()),
            cfg,
            audio: audio_config,
            objects,
            bytes,
        });
    }

    fn lost(&mut self) {
        self.recorder.shared.lost(&self.session_id);
        let _ = self.recorder.tx.send(Msg::Lost { rec: self.rec });
    }

    /// The session ended: the final playlists follow its last segment.
    pub fn end(&mut self) {
        if self.begun {
            let _ = self.recorder.tx.send(Msg::End { rec: self.rec });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PipelineOptions;
    use crate::session::{EndReason, Registry, SessionOptions};
    use object_store::ObjectStoreExt;

    /// Segments that found the queue full are not listed, every listed one
    /// is written, and the first listed after a gap follows an
    /// `EXT-X-DISCONTINUITY`.
    #[tokio::test]
    async fn a_segment_not_recorded_leaves_a_discontinuity() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let config = RecordConfig {
            // About one segment of the stream, both formats.
            record_queue_bytes: 150_000,
            ..Default::default()
        };
        let recorder = Recorder::start(
            Store {
                store: store.clone(),
                prefix: "p".into(),
                content_types: false,
            },
            &config,
        );
        let registry = Registry::with_recorder(Default::default(), Some(recorder.clone()));
        let grant = registry
            .publish(
                "s",
                SessionOptions {
                    pipeline: PipelineOptions::default(),
                    echo_frames: false,
                },
            )
            .expect("publish");
        let data = std::fs::read(format!(
            "{}/../testdata/high_bframes_30.h264",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("testdata");
        // The writer (this thread's runtime) runs only between the rounds:
        // within a round, the queue fills after the first segment.
        for _ in 0..3 {
            for chunk in data.chunks(7_001) {
                grant
                    .session
                    .push(grant.generation, Bytes::copy_from_slice(chunk), None, false)
                    .expect("push");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(grant.session.end(EndReason::EndOfStream, String::new()));
        assert!(recorder.flush(Duration::from_secs(10)).await);
        let st = recorder.status();
        assert!(st.segments_lost_queue_full > 0, "{st:?}");
        let read = |name: &str| {
            let store = store.clone();
            let path = object_store::path::Path::from(format!("p/s/{name}"));
            async move { store.get(&path).await.ok()?.bytes().await.ok() }
        };
        let vod = String::from_utf8(read("vod.m3u8").await.expect("VOD").to_vec()).expect("UTF-8");
        let listed: Vec<&str> = vod.lines().filter(|l| l.ends_with(".m4s")).collect();
        let total = grant.session.stats().segments;
        assert_eq!(
            listed.len() as u64 + st.segments_lost_queue_full,
            total,
            "{vod}"
        );
        for name in &listed {
            assert!(read(name).await.is_some(), "{name}");
        }
        assert!(vod.contains("#EXT-X-DISCONTINUITY\n"), "{vod}");
        assert_eq!(
            st.lost_by_session.get("s"),
            Some(&st.segments_lost_queue_full)
        );
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("s3://b/x/y/"),
            Ok(Target::S3 {
                bucket: "b".into(),
                prefix: "x/y".into()
            })
        );
        assert_eq!(
            Target::parse("s3://b"),
            Ok(Target::S3 {
                bucket: "b".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            Target::parse("file:///tmp/r"),
            Ok(Target::File {
                dir: "/tmp/r".into()
            })
        );
        for bad in ["s3://", "s3:///p", "file://rel", "http://x", "/tmp/r"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        // The errors name --record's forms, not a job URL's.
        assert_eq!(
            Target::parse("/tmp/r"),
            Err("\"/tmp/r\": use s3://BUCKET/PREFIX or file:///DIR".to_string())
        );
        assert_eq!(
            Target::parse("file://tmp/r"),
            Err("\"file://tmp/r\" is not an absolute file URL (file:///DIR)".to_string())
        );
    }
}

//! Packaging jobs on the cluster (`--cluster`): a file in object storage
//! (or in the workers' `--job-files` directory) packaged into the HLS +
//! DASH tree `liveslice package` writes, by any `liveslice-server
//! --worker` of the cluster, with the same code ([`liveslice_files`]).
//!
//! The queue is the JetStream stream [`JOBS_STREAM`] with work-queue
//! retention: one message per job (its id), taken by one worker at a time
//! through the durable pull consumer [`WORKERS`] and removed when acked.
//! A worker acks a job once it is done, failed for good or cancelled; a
//! worker that dies mid-job never acks, so the job is delivered again
//! after `--job-ack-wait` (a running worker keeps its job with progress
//! acks), and a job delivered more than `--job-attempts` times is failed.
//!
//! Each job's state is a JSON [`JobRecord`] in the key-value bucket
//! [`JOBS_BUCKET`] (key: the job id), changed only by compare-and-set on
//! its revision: submitters, workers and cancels never overwrite each
//! other. Outputs are written segments first, playlists last, so a tree
//! with playlists is complete; a job delivered again writes it all again.

pub mod storage;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;

use crate::config::ConfigError;

/// The JetStream stream jobs are queued on (work-queue retention).
pub const JOBS_STREAM: &str = "LIVESLICE_JOBS";
/// The subject of [`JOBS_STREAM`]; a message's payload is a job id.
pub const JOBS_SUBJECT: &str = "liveslice-jobs.queue";
/// The key-value bucket of job records.
pub const JOBS_BUCKET: &str = "liveslice-jobs";
/// The durable pull consumer every worker takes jobs through.
pub const WORKERS: &str = "liveslice-workers";
/// Jobs queued at once; a submit beyond it is refused (the queue is full).
pub const MAX_QUEUED: i64 = 100_000;

/// The jobs part of the configuration (`worker`, `job-*` keys).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobConfig {
    /// `worker`: take packaging jobs from the cluster's queue (needs
    /// `cluster`).
    pub worker: bool,
    /// `job-files`: the directory `file://` job URLs must lie in (sources
    /// read and outputs written there); none: `file://` URLs are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_files: Option<PathBuf>,
    /// `job-endpoint`: the S3 API's URL for `s3://` job URLs (MinIO,
    /// moto, ...); plain `http://` is allowed for it. None:
    /// `AWS_ENDPOINT`, or AWS's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_endpoint: Option<String>,
    /// `job-region`: the S3 region; none: `AWS_REGION` /
    /// `AWS_DEFAULT_REGION`, or `us-east-1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_region: Option<String>,
    /// `job-attempts`: deliveries of a job to a worker before it is failed
    /// (a worker died, or storage failed, each time).
    pub job_attempts: u32,
    /// `job-ack-wait`: how long a job taken by a worker that stopped
    /// reporting (died, lost NATS) waits before another worker gets it.
    #[serde(with = "crate::config::duration")]
    pub job_ack_wait: Duration,
    /// `job-retention`: how long job records (and queued jobs) are kept.
    #[serde(with = "crate::config::duration")]
    pub job_retention: Duration,
    /// `job-work-dir`: where a worker downloads sources and builds trees
    /// before uploading them (removed after each job); none: the system's
    /// temporary directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_work_dir: Option<PathBuf>,
    /// `job-uploads`: `s3://BUCKET/PREFIX` where direct uploads go
    /// (`POST /api/uploads` hands out pre-signed PUT URLs there, with
    /// `job-endpoint`/`job-region` and the `AWS_*` credentials); none:
    /// direct uploads are off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_uploads: Option<String>,
    /// `job-upload-expiry`: how long a pre-signed upload URL is valid.
    #[serde(with = "crate::config::duration")]
    pub job_upload_expiry: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            worker: false,
            job_files: None,
            job_endpoint: None,
            job_region: None,
            job_attempts: 3,
            job_ack_wait: Duration::from_secs(30),
            job_retention: Duration::from_secs(24 * 3600),
            job_work_dir: None,
            job_uploads: None,
            job_upload_expiry: Duration::from_secs(3600),
        }
    }
}

impl JobConfig {
    /// Checks ranges and names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=20).contains(&self.job_attempts) {
            return Err(ConfigError::new("job-attempts", "must be between 1 and 20"));
        }
        if self.job_ack_wait < Duration::from_secs(2)
            || self.job_ack_wait > Duration::from_secs(600)
        {
            return Err(ConfigError::new(
                "job-ack-wait",
                "must be between 2s and 10m",
            ));
        }
        if self.job_retention < Duration::from_secs(60)
            || self.job_retention > Duration::from_secs(30 * 86_400)
        {
            return Err(ConfigError::new(
                "job-retention",
                "must be between 1m and 30 days",
            ));
        }
        if let Some(url) = &self.job_uploads {
            match storage::Location::parse(url) {
                Ok(storage::Location::S3 { .. }) => {}
                Ok(storage::Location::File(_)) => {
                    return Err(ConfigError::new(
                        "job-uploads",
                        "must be s3://BUCKET/PREFIX (upload URLs are pre-signed S3 URLs)",
                    ))
                }
                Err(e) => return Err(ConfigError::new("job-uploads", e)),
            }
        }
        if self.job_upload_expiry < Duration::from_secs(60)
            || self.job_upload_expiry > Duration::from_secs(7 * 86_400)
        {
            return Err(ConfigError::new(
                "job-upload-expiry",
                "must be between 1m and 7 days (S3's longest)",
            ));
        }
        for (key, dir) in [
            ("job-files", &self.job_files),
            ("job-work-dir", &self.job_work_dir),
        ] {
            if let Some(d) = dir {
                if !d.is_absolute() {
                    return Err(ConfigError::new(key, "must be an absolute directory"));
                }
            }
        }
        Ok(())
    }

    /// The directory a worker works in.
    pub fn work_dir(&self) -> PathBuf {
        self.job_work_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// A job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    /// Done, failed or cancelled: it never changes again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// What to package and where to (the HTTP API's JSON body, the gRPC
/// `JobSpec`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobSpec {
    /// `s3://BUCKET/KEY` or `file:///PATH` (within `--job-files`).
    pub source: String,
    /// `s3://BUCKET/PREFIX` or `file:///DIR` (within `--job-files`).
    pub output: String,
    /// `cmaf`, `ts` (none: both).
    pub formats: Vec<String>,
    /// Segment target duration, ms (0: 2000).
    pub segment_duration_ms: u32,
    /// Part target duration, ms (0: 500).
    pub part_duration_ms: u32,
    /// Frame rate for a stream with no timing (0: none).
    pub fps: u32,
    /// Cut the file into slices of this many seconds of media, packaged
    /// by the workers in parallel and stitched into one tree (0: one job).
    pub slice_seconds: u32,
}

impl JobSpec {
    /// Fills in the defaults and checks everything a worker would refuse,
    /// naming the field.
    pub fn normalized(mut self) -> Result<JobSpec, String> {
        storage::Location::parse(&self.source).map_err(|e| format!("source: {e}"))?;
        storage::Location::parse(&self.output).map_err(|e| format!("output: {e}"))?;
        if self.formats.is_empty() {
            self.formats = vec!["cmaf".into(), "ts".into()];
        }
        crate::config::parse_formats(&self.formats.join(","))
            .map_err(|e| format!("formats: {e}"))?;
        if self.segment_duration_ms == 0 {
            self.segment_duration_ms = 2000;
        }
        if self.part_duration_ms == 0 {
            self.part_duration_ms = 500.min(self.segment_duration_ms);
        }
        if !(500..=60_000).contains(&self.segment_duration_ms) {
            return Err("segment_duration_ms: must be between 500 and 60000".into());
        }
        if !(100..=2000).contains(&self.part_duration_ms)
            || self.part_duration_ms > self.segment_duration_ms
        {
            return Err(
                "part_duration_ms: must be between 100 and 2000, at most the segment duration"
                    .into(),
            );
        }
        if self.fps > 240 {
            return Err("fps: must be at most 240".into());
        }
        if self.slice_seconds != 0
            && (!(10..=3600).contains(&self.slice_seconds)
                || u64::from(self.slice_seconds) * 1000 < u64::from(self.segment_duration_ms) * 2)
        {
            return Err(
                "slice_seconds: must be 0 (no slices) or 10 to 3600, and at least two segments"
                    .into(),
            );
        }
        Ok(self)
    }

    /// The engine's options for it: the server's defaults with this job's
    /// durations, formats and frame rate, every segment listed.
    pub fn pipeline(&self, base: crate::engine::PipelineOptions) -> crate::engine::PipelineOptions {
        let mut opts = base;
        opts.segment_target_ms = self.segment_duration_ms;
        opts.part_target_ms = self.part_duration_ms;
        opts.window = u32::MAX as usize;
        opts.list_every_segment = true;
        opts.target_rate =
            (self.fps > 0).then(|| crate::engine::timing::FrameRate::new(self.fps, 1));
        if let Ok(f) = crate::config::parse_formats(&self.formats.join(",")) {
            opts.formats = f.0;
        }
        opts
    }
}

/// What a job is to the others of a sliced job.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobRole {
    /// A job of its own (or a sliced one not yet planned).
    #[default]
    Whole,
    /// A sliced job, planned: its slices and the stitch that writes the
    /// playlists run as jobs of their own; it is done when the stitch is.
    Sliced { slices: Vec<String>, stitch: String },
    /// Slice `index` of `count` of `parent`: its segments only.
    Slice {
        parent: String,
        index: u32,
        count: u32,
    },
    /// The playlists of `parent`, once all its `slices` are done.
    Stitch { parent: String, slices: Vec<String> },
}

/// A job's record in [`JOBS_BUCKET`] (JSON), as `GET /api/jobs/{id}`
/// shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub spec: JobSpec,
    pub state: JobState,
    /// Frames packaged so far, or in all.
    pub frames: u64,
    /// Segments written so far, or in all.
    pub segments: u64,
    /// Of the input read, 0 to 100.
    pub percent: f64,
    /// Frames per second of the current or last attempt.
    pub frames_per_second: f64,
    /// Media duration packaged, 90 kHz ticks.
    pub duration_90k: u64,
    /// Done: the playlists and MPD written.
    pub outputs: Vec<String>,
    /// Failed: why; queued again after a failed attempt: that attempt's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Deliveries to a worker so far.
    pub attempts: u32,
    /// The worker running it, or that last did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub submitted_unix_ms: u64,
    pub updated_unix_ms: u64,
    /// Its place in a sliced job.
    #[serde(default)]
    pub role: JobRole,
    /// A sliced job: the file's frames (from planning), for its progress.
    #[serde(default)]
    pub frames_total: u64,
}

/// Why a jobs call failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A bad spec (HTTP 400, INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// No such job, or its record expired (404, NOT_FOUND).
    #[error("no job {0} (unknown, or older than --job-retention)")]
    NotFound(String),
    /// The cluster could not be asked (503, UNAVAILABLE).
    #[error("JetStream {what}: {detail}")]
    Nats { what: &'static str, detail: String },
    /// Not set up on this server (503, FAILED_PRECONDITION).
    #[error("{0}")]
    Unavailable(String),
    /// Object storage refused (503, UNAVAILABLE).
    #[error("storage: {0}")]
    Storage(String),
    /// The queue holds [`MAX_QUEUED`] jobs (503, RESOURCE_EXHAUSTED).
    #[error("the job queue is full ({MAX_QUEUED} jobs waiting); try again later")]
    Full,
}

fn nats(what: &'static str) -> impl Fn(String) -> JobError {
    move |detail| JobError::Nats { what, detail }
}

/// Wall clock, Unix ms.
pub fn now_ms() -> u64 {
    crate::session::now_unix_ns() / 1_000_000
}

/// A new job id: 16 hex digits of time and 16 of randomness (a key NATS
/// takes as it is).
fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::session::now_unix_ns());
    format!("{:016x}{:016x}", now_ms(), h.finish())
}

/// A direct upload's ticket: PUT the file's bytes to `url` before
/// `expires_unix_ms`, then submit a job with `source`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadTicket {
    /// The pre-signed URL (S3 SigV4 query parameters).
    pub url: String,
    /// Always `PUT`.
    pub method: String,
    /// The object as a job source: `s3://BUCKET/KEY`.
    pub source: String,
    pub expires_unix_ms: u64,
}

/// A file name as the last part of an upload key: letters, digits, `.`,
/// `_` and `-` kept, anything else `_`, at most 200 bytes; `upload` when
/// nothing is left.
fn upload_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    let clean = clean.trim_start_matches('.').to_string();
    if clean.is_empty() {
        "upload".into()
    } else {
        clean
    }
}

/// The cluster's jobs: submit, look up, watch and cancel; the workers take
/// them from here too.
pub struct Jobs {
    js: jetstream::Context,
    kv: jetstream::kv::Store,
    pub config: JobConfig,
}

impl Jobs {
    /// Makes sure the queue and the bucket exist.
    pub async fn connect(js: jetstream::Context, config: JobConfig) -> Result<Arc<Jobs>, JobError> {
        let queue = jetstream::stream::Config {
            name: JOBS_STREAM.to_string(),
            subjects: vec![JOBS_SUBJECT.to_string()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            max_age: config.job_retention,
            max_messages: MAX_QUEUED,
            discard: jetstream::stream::DiscardPolicy::New,
            storage: jetstream::stream::StorageType::File,
            description: Some("liveslice packaging jobs (job ids)".into()),
            ..Default::default()
        };
        crate::cluster::ensure_stream(&js, queue)
            .await
            .map_err(nats("job queue"))?;
        let kv = crate::cluster::key_value_bucket(
            &js,
            JOBS_BUCKET,
            "liveslice job records",
            config.job_retention,
        )
        .await
        .map_err(nats("job bucket"))?;
        Ok(Arc::new(Jobs { js, kv, config }))
    }

    /// Queues a job: its record first (queued), then its id on the queue.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobRecord, JobError> {
        let spec = spec.normalized().map_err(JobError::Invalid)?;
        let record = self.enqueue(spec, JobRole::Whole).await?;
        tracing::info!(job = %record.id, source = %record.spec.source, output = %record.spec.output, "job queued");
        Ok(record)
    }

    /// A new job record of `role` (queued), then its id on the queue.
    pub(crate) async fn enqueue(
        &self,
        spec: JobSpec,
        role: JobRole,
    ) -> Result<JobRecord, JobError> {
        let now = now_ms();
        let record = JobRecord {
            id: new_id(),
            spec,
            state: JobState::Queued,
            frames: 0,
            segments: 0,
            percent: 0.0,
            frames_per_second: 0.0,
            duration_90k: 0,
            outputs: Vec::new(),
            error: None,
            attempts: 0,
            worker: None,
            submitted_unix_ms: now,
            updated_unix_ms: now,
            role,
            frames_total: 0,
        };
        self.kv
            .create(&record.id, encode(&record))
            .await
            .map_err(|e| nats("job record")(e.to_string()))?;
        let queued = async {
            self.js
                .publish(JOBS_SUBJECT, Bytes::from(record.id.clone()))
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = queued {
            // Not queued: the record says so rather than waiting forever.
            let full = e.contains("maximum messages");
            let reason = if full {
                JobError::Full.to_string()
            } else {
                format!("could not be queued: {e}")
            };
            let _ = self
                .update(&record.id, |r| {
                    r.state = JobState::Failed;
                    r.error = Some(reason.clone());
                    true
                })
                .await;
            return Err(if full {
                JobError::Full
            } else {
                nats("job queue")(e)
            });
        }
        Ok(record)
    }

    /// A pre-signed PUT URL for a new object under `job-uploads`, named
    /// after `name` (see [`upload_name`]).
    pub async fn create_upload(&self, name: &str) -> Result<UploadTicket, JobError> {
        use object_store::signer::Signer;
        let Some(url) = &self.config.job_uploads else {
            return Err(JobError::Unavailable(
                "direct uploads are off: start the server with --job-uploads s3://BUCKET/PREFIX"
                    .into(),
            ));
        };
        let Ok(storage::Location::S3 { bucket, key }) = storage::Location::parse(url) else {
            return Err(JobError::Unavailable(format!(
                "--job-uploads {url} is not s3://BUCKET/PREFIX"
            )));
        };
        let store = crate::record::s3_store(
            &bucket,
            self.config.job_endpoint.as_deref(),
            self.config.job_region.as_deref(),
        )
        .map_err(JobError::Storage)?;
        let object = format!("{}/{}", new_id(), upload_name(name));
        let object = if key.is_empty() {
            object
        } else {
            format!("{key}/{object}")
        };
        let expiry = self.config.job_upload_expiry;
        let signed = store
            .signed_url(
                object_store::signer::Method::PUT,
                &object_store::path::Path::from(object.as_str()),
                expiry,
            )
            .await
            .map_err(|e| JobError::Storage(e.to_string()))?;
        Ok(UploadTicket {
            url: signed.to_string(),
            method: "PUT".into(),
            source: format!("s3://{bucket}/{object}"),
            expires_unix_ms: now_ms() + u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Puts a job's id on the queue again (a stitch whose slices are all
    /// done, so it need not wait for its own redelivery).
    pub(crate) async fn requeue(&self, id: &str) -> Result<(), JobError> {
        self.js
            .publish(JOBS_SUBJECT, Bytes::from(id.to_string()))
            .await
            .map_err(|e| nats("job queue")(e.to_string()))?
            .await
            .map_err(|e| nats("job queue")(e.to_string()))?;
        Ok(())
    }

    /// A job's record.
    pub async fn get(&self, id: &str) -> Result<JobRecord, JobError> {
        Ok(self.entry(id).await?.0)
    }

    async fn entry(&self, id: &str) -> Result<(JobRecord, u64), JobError> {
        if !valid_id(id) {
            return Err(JobError::NotFound(id.to_string()));
        }
        let entry = self
            .kv
            .entry(id)
            .await
            .map_err(|e| nats("job record")(e.to_string()))?
            .ok_or_else(|| JobError::NotFound(id.to_string()))?;
        let record = serde_json::from_slice(&entry.value)
            .map_err(|e| nats("job record")(format!("not a job record: {e}")))?;
        Ok((record, entry.revision))
    }

    /// Changes a job's record with `change` (which returns false to leave
    /// it as it is), compare-and-set on its revision, again on a conflict.
    /// Returns the record as it then is.
    pub async fn update(
        &self,
        id: &str,
        mut change: impl FnMut(&mut JobRecord) -> bool,
    ) -> Result<JobRecord, JobError> {
        for _ in 0..50 {
            let (mut record, revision) = self.entry(id).await?;
            if !change(&mut record) {
                return Ok(record);
            }
            record.updated_unix_ms = now_ms();
            match self.kv.update(id, encode(&record), revision).await {
                Ok(_) => return Ok(record),
                Err(e) if e.kind() == jetstream::kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(nats("job record")(e.to_string())),
            }
        }
        Err(nats("job record")("kept changing under this update".into()))
    }

    /// Cancels a queued or running job (a sliced one with its slices and
    /// stitch); a finished one is returned as it is.
    pub async fn cancel(&self, id: &str) -> Result<JobRecord, JobError> {
        let record = self
            .update(id, |r| {
                if r.state.is_final() {
                    return false;
                }
                r.state = JobState::Cancelled;
                true
            })
            .await?;
        if record.state == JobState::Cancelled {
            self.cancel_parts(&record).await;
        }
        Ok(record)
    }

    /// A sliced job's slices and stitch that have not ended, cancelled.
    pub(crate) async fn cancel_parts(&self, record: &JobRecord) {
        let JobRole::Sliced { slices, stitch } = &record.role else {
            return;
        };
        for child in slices.iter().chain(std::iter::once(stitch)) {
            let _ = self
                .update(child, |r| {
                    if r.state.is_final() {
                        return false;
                    }
                    r.state = JobState::Cancelled;
                    true
                })
                .await;
        }
    }

    /// The job's record now, then each change, until a final state.
    pub async fn watch(
        &self,
        id: &str,
    ) -> Result<impl futures_util::Stream<Item = JobRecord> + Send + 'static, JobError> {
        // Known first: an unknown id is NOT_FOUND, not an endless watch.
        self.entry(id).await?;
        let watch = self
            .kv
            .watch_with_history(id)
            .await
            .map_err(|e| nats("job watch")(e.to_string()))?;
        use futures_util::StreamExt;
        Ok(futures_util::stream::unfold(
            (watch, false),
            |(mut watch, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    let entry = watch.next().await?.ok()?;
                    if let Ok(record) = serde_json::from_slice::<JobRecord>(&entry.value) {
                        let ended = record.state.is_final();
                        return Some((record, (watch, ended)));
                    }
                }
            },
        ))
    }

    /// The durable consumer the workers share.
    pub(crate) async fn consumer(
        &self,
    ) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>, JobError> {
        let stream = self
            .js
            .get_stream(JOBS_STREAM)
            .await
            .map_err(|e| nats("job queue")(e.to_string()))?;
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(WORKERS.to_string()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.config.job_ack_wait,
            description: Some("liveslice packaging workers".into()),
            ..Default::default()
        };
        let mut consumer = stream
            .get_or_create_consumer(WORKERS, config.clone())
            .await
            .map_err(|e| nats("job consumer")(e.to_string()))?;
        // The consumer outlives the workers: one made with another ack
        // wait is updated to this worker's (`--job-ack-wait`).
        let have = consumer.cached_info().config.ack_wait;
        if have != self.config.job_ack_wait {
            match stream.create_consumer(config).await {
                Ok(updated) => {
                    tracing::info!(was = ?have, now = ?self.config.job_ack_wait, "job queue's ack wait updated");
                    consumer = updated;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    ack_wait = ?have,
                    "the job queue keeps its ack wait, not --job-ack-wait's (delete the consumer {WORKERS} to change it)"
                ),
            }
        }
        Ok(consumer)
    }
}

fn encode(record: &JobRecord) -> Bytes {
    Bytes::from(serde_json::to_vec(record).unwrap_or_default())
}

/// Ids are what [`new_id`] makes: 32 hex digits (anything else is no job,
/// and never reaches NATS as a key).
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_normalized_or_refused_naming_the_field() {
        let spec = JobSpec {
            source: "s3://b/in.mp4".into(),
            output: "s3://b/out".into(),
            ..Default::default()
        }
        .normalized()
        .unwrap();
        assert_eq!(spec.formats, ["cmaf", "ts"]);
        assert_eq!(
            (spec.segment_duration_ms, spec.part_duration_ms),
            (2000, 500)
        );
        let bad = |f: fn(&mut JobSpec)| {
            let mut s = JobSpec {
                source: "file:///in.h264".into(),
                output: "file:///out".into(),
                ..Default::default()
            };
            f(&mut s);
            s.normalized().unwrap_err()
        };
        assert!(bad(|s| s.source = "http://x/y".into()).starts_with("source:"));
        assert!(bad(|s| s.output = "file://rel".into()).starts_with("output:"));
        assert!(bad(|s| s.formats = vec!["mkv".into()]).starts_with("formats:"));
        assert!(bad(|s| s.segment_duration_ms = 100).starts_with("segment_duration_ms"));
        assert!(bad(|s| s.part_duration_ms = 3000).starts_with("part_duration_ms"));
        assert!(bad(|s| s.fps = 1000).starts_with("fps"));
    }

    #[test]
    fn upload_names_are_plain() {
        assert_eq!(upload_name("clip.mp4"), "clip.mp4");
        assert_eq!(upload_name("/home/me/My Clip (1).mp4"), "My_Clip__1_.mp4");
        assert_eq!(upload_name("..\\..\\x"), "x");
        assert_eq!(upload_name(".."), "upload");
        assert_eq!(upload_name(""), "upload");
        assert_eq!(upload_name(&"a".repeat(500)).len(), 200);
    }

    #[test]
    fn ids_are_keys() {
        let a = new_id();
        assert!(valid_id(&a), "{a}");
        assert_ne!(a, new_id());
        assert!(!valid_id("../x"));
        assert!(!valid_id("*"));
    }
}

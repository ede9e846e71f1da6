//! A job worker (`liveslice-server --worker`): takes one job at a time
//! from the cluster's queue, packages it with `liveslice package`'s code
//! ([`liveslice_files::package_file`]) into a work directory, uploads the
//! tree (segments first, playlists last) and acks it.
//!
//! While a job runs, the worker acks progress every third of
//! `--job-ack-wait` (so the queue does not hand the job to another worker)
//! and writes its progress to the job's record twice a second, where it
//! also sees a cancel. Outcomes: done (acked); failed for good (a source
//! that is not video, a URL outside `--job-files`, no such object: acked,
//! the reason in the record); failed for now (storage or NATS: nak'd, the
//! job comes back, at most `--job-attempts` deliveries in all); cancelled
//! (acked).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use liveslice_files::package::Progress;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::storage::{self, Location, Place};
use super::{now_ms, JobConfig, JobError, JobRecord, JobRole, JobSpec, JobState, Jobs};
use crate::engine::PipelineOptions;
use crate::engine::TIMESCALE;
use liveslice_files::Portion;

/// How often a running job's progress is written to its record.
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// Objects uploaded at once.
const UPLOADS_AT_ONCE: usize = 8;
/// How long a stitch whose slices are not all done waits before it is
/// delivered again (the last slice done also queues it at once).
const STITCH_WAIT: Duration = Duration::from_secs(2);
/// Attempts of one object's upload (then the job is retried whole).
const UPLOAD_TRIES: u32 = 3;

/// Starts the worker loop; it runs until the task is aborted.
pub fn spawn(jobs: Arc<Jobs>, node_id: String, base: PipelineOptions) -> JoinHandle<()> {
    tokio::spawn(async move {
        let consumer = loop {
            match jobs.consumer().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "job worker: the queue is unreachable; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        tracing::info!(%node_id, "job worker taking jobs");
        loop {
            // One job at a time: a worker never holds jobs it is not
            // running (others would wait for its ack wait).
            let batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(5))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, "job worker: fetch failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(m) = batch.next().await {
                match m {
                    Ok(msg) => handle(&jobs, &node_id, &base, msg).await,
                    Err(e) => tracing::debug!(error = %e, "job worker: fetch ended"),
                }
            }
        }
    })
}

/// How a job's attempt ended, if not done.
#[derive(Debug)]
enum Outcome {
    /// For good: the reason goes into the record.
    Failed(String),
    /// For now (storage, NATS): the job comes back.
    Retry(String),
    Cancelled,
}

/// A finished attempt.
struct Done {
    outputs: Vec<String>,
    summary: liveslice_files::Summary,
}

async fn ack(msg: &jetstream::Message) {
    if let Err(e) = msg.ack().await {
        tracing::warn!(error = %e, "job ack failed (the job may come back once)");
    }
}

async fn handle(jobs: &Jobs, node: &str, base: &PipelineOptions, msg: jetstream::Message) {
    let id = String::from_utf8_lossy(&msg.payload).into_owned();
    let delivered = msg
        .info()
        .map(|i| u32::try_from(i.delivered.max(1)).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let span = tracing::info_span!("job", job = %id, attempt = delivered);
    async move {
        let record = match jobs.get(&id).await {
            Ok(r) => r,
            Err(JobError::NotFound(_)) => {
                tracing::warn!("a queued job has no record (expired?); dropped");
                return ack(&msg).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "job record unreadable; the job comes back");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                    .await;
                return;
            }
        };
        if record.state.is_final() {
            return ack(&msg).await;
        }
        let work = match &record.role {
            // Planned before (its worker stopped before the ack): its
            // slices run as jobs of their own.
            JobRole::Sliced { .. } => return ack(&msg).await,
            JobRole::Whole if record.spec.slice_seconds > 0 => Work::Plan,
            JobRole::Whole => Work::Portion(Portion::Whole),
            JobRole::Slice { index, .. } => Work::Portion(Portion::Slice {
                index: *index,
                seconds: record.spec.slice_seconds,
            }),
            JobRole::Stitch { parent, slices } => {
                // The playlists wait for every slice, without using up
                // attempts while they wait.
                match slices_state(jobs, slices).await {
                    Ok(true) => Work::Portion(Portion::Playlists),
                    Ok(false) => {
                        let _ = msg
                            .ack_with(AckKind::Nak(Some(STITCH_WAIT)))
                            .await;
                        return;
                    }
                    Err(reason) => {
                        fail_sliced(jobs, parent, &reason).await;
                        return ack(&msg).await;
                    }
                }
            }
        };
        let attempt = match record.role {
            JobRole::Stitch { .. } => record.attempts + 1,
            _ => delivered,
        };
        let parent = match &record.role {
            JobRole::Slice { parent, .. } | JobRole::Stitch { parent, .. } => Some(parent.clone()),
            _ => None,
        };
        let attempts = jobs.config.job_attempts;
        if attempt > attempts {
            let reason = format!(
                "gave up after {attempts} {} ({})",
                if attempts == 1 { "attempt" } else { "attempts" },
                record.error.clone().unwrap_or_else(|| {
                    "each time the worker running it stopped: it died or lost NATS".into()
                })
            );
            fail(jobs, &id, parent.as_deref(), &reason).await;
            return ack(&msg).await;
        }
        let running = jobs
            .update(&id, |r| {
                if r.state.is_final() {
                    return false;
                }
                r.state = JobState::Running;
                r.attempts = attempt;
                r.worker = Some(node.to_string());
                r.frames = 0;
                r.segments = 0;
                r.percent = 0.0;
                true
            })
            .await;
        match running {
            Ok(r) if r.state == JobState::Running => {}
            Ok(_) => return ack(&msg).await,
            Err(e) => {
                tracing::warn!(error = %e, "job record not updated; the job comes back");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                    .await;
                return;
            }
        }
        tracing::info!(source = %record.spec.source, output = %record.spec.output, ?work, "job running");
        let started = Instant::now();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let cancel = Arc::new(AtomicBool::new(false));
        let running = run(
            jobs.config.clone(),
            record.id.clone(),
            record.spec.clone(),
            attempt,
            work,
            base.clone(),
            progress.clone(),
            cancel.clone(),
        );
        tokio::pin!(running);
        let mut heartbeat = tokio::time::interval(jobs.config.job_ack_wait / 3);
        let mut report = tokio::time::interval(REPORT_EVERY);
        let fps = |frames: u64| frames as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let outcome = loop {
            tokio::select! {
                out = &mut running => break out,
                _ = heartbeat.tick() => {
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "job progress ack failed");
                    }
                }
                _ = report.tick() => {
                    let p = progress.lock().map(|g| *g).unwrap_or_default();
                    let updated = jobs.update(&id, |r| {
                        if r.state != JobState::Running {
                            return false;
                        }
                        r.frames = p.frames;
                        r.segments = p.segments;
                        r.percent = (p.fraction * 1000.0).round() / 10.0;
                        r.frames_per_second = fps(p.frames);
                        true
                    }).await;
                    if matches!(updated, Ok(r) if r.state == JobState::Cancelled) {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
        };
        let counted = match &outcome {
            Ok(Finished::Planned(_)) => "planned",
            Ok(Finished::Done(d)) => {
                ::metrics::counter!(crate::metrics::JOB_FRAMES).increment(d.summary.frames);
                "done"
            }
            Err(Outcome::Failed(_)) => "failed",
            Err(Outcome::Retry(_)) => "retried",
            Err(Outcome::Cancelled) => "cancelled",
        };
        ::metrics::counter!(crate::metrics::JOB_ATTEMPTS, "outcome" => counted).increment(1);
        match outcome {
            Ok(Finished::Planned(plan)) => {
                let seconds = u64::from(record.spec.slice_seconds.max(1)) * TIMESCALE;
                let count = u32::try_from(plan.media_ticks.div_ceil(seconds).max(1))
                    .unwrap_or(u32::MAX);
                match spawn_slices(jobs, &record, count).await {
                    Ok((slices, stitch)) => {
                        let _ = jobs
                            .update(&id, |r| {
                                r.role = JobRole::Sliced {
                                    slices: slices.clone(),
                                    stitch: stitch.clone(),
                                };
                                r.frames = 0;
                                r.segments = 0;
                                r.percent = 0.0;
                                r.frames_total = plan.frames;
                                r.duration_90k = plan.media_ticks;
                                true
                            })
                            .await;
                        tracing::info!(slices = count, frames = plan.frames, "job sliced");
                        ack(&msg).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "slices not queued; the job comes back");
                        let _ = msg
                            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                            .await;
                    }
                }
            }
            Ok(Finished::Done(done)) => {
                let s = &done.summary;
                let rate = fps(s.frames);
                let _ = jobs
                    .update(&id, |r| mark_done(r, s, &done.outputs, rate))
                    .await;
                match &record.role {
                    JobRole::Slice { parent, .. } => {
                        // The sliced job's progress: its slices' frames.
                        let updated = jobs
                            .update(parent, |r| {
                                if r.state != JobState::Running {
                                    return false;
                                }
                                r.frames += s.frames;
                                r.segments += s.segments;
                                if r.frames_total > 0 {
                                    r.percent = (r.frames as f64 * 1000.0 / r.frames_total as f64)
                                        .round()
                                        .min(999.0)
                                        / 10.0;
                                }
                                true
                            })
                            .await;
                        // The last slice done queues the stitch at once
                        // (queued at planning too, it waits for redelivery
                        // otherwise; a stitch run twice finds itself done).
                        if let Ok(JobRecord {
                            role: JobRole::Sliced { slices, stitch },
                            ..
                        }) = &updated
                        {
                            if slices_state(jobs, slices).await == Ok(true) {
                                if let Err(e) = jobs.requeue(stitch).await {
                                    tracing::debug!(error = %e, "stitch not requeued");
                                }
                            }
                        }
                    }
                    JobRole::Stitch { parent, .. } => {
                        // The sliced job's speed: from its submission.
                        let _ = jobs
                            .update(parent, |r| {
                                let secs = now_ms().saturating_sub(r.submitted_unix_ms).max(1)
                                    as f64
                                    / 1000.0;
                                mark_done(r, s, &done.outputs, s.frames as f64 / secs)
                            })
                            .await;
                    }
                    _ => {}
                }
                tracing::info!(
                    frames = s.frames,
                    segments = s.segments,
                    seconds = started.elapsed().as_secs_f64(),
                    "job done"
                );
                ack(&msg).await;
            }
            Err(Outcome::Cancelled) => {
                tracing::info!("job cancelled");
                ack(&msg).await;
            }
            Err(Outcome::Failed(reason)) => {
                fail(jobs, &id, parent.as_deref(), &reason).await;
                ack(&msg).await;
            }
            Err(Outcome::Retry(reason)) => {
                tracing::warn!(%reason, "job attempt failed; it comes back");
                let _ = jobs
                    .update(&id, |r| {
                        if r.state.is_final() {
                            return false;
                        }
                        r.state = JobState::Queued;
                        r.error = Some(reason.clone());
                        true
                    })
                    .await;
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        }
    }
    .instrument(span)
    .await
}

/// A record made done with what was packaged (`false`, unchanged, when it
/// already ended: a cancel that came too late to stop the work stands).
fn mark_done(
    r: &mut JobRecord,
    s: &liveslice_files::Summary,
    outputs: &[String],
    frames_per_second: f64,
) -> bool {
    if r.state.is_final() {
        return false;
    }
    r.state = JobState::Done;
    r.frames = s.frames;
    r.segments = s.segments;
    r.duration_90k = s.media_ticks;
    r.percent = 100.0;
    r.frames_per_second = frames_per_second;
    r.outputs = outputs.to_vec();
    r.error = (!s.drops.is_empty()).then(|| format!("dropped: {}", s.drops));
    true
}

/// Whether every slice is done (`Ok(false)`: some still queued or
/// running); `Err` names a slice that failed or was cancelled.
async fn slices_state(jobs: &Jobs, slices: &[String]) -> Result<bool, String> {
    for (k, id) in slices.iter().enumerate() {
        match jobs.get(id).await {
            Ok(r) => match r.state {
                JobState::Done => {}
                JobState::Failed => {
                    return Err(format!("slice {k} failed: {}", r.error.unwrap_or_default()))
                }
                JobState::Cancelled => return Err(format!("slice {k} was cancelled")),
                JobState::Queued | JobState::Running => return Ok(false),
            },
            Err(JobError::NotFound(_)) => return Err(format!("slice {k}'s record is gone")),
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// Fails a job for good (unless it ended meanwhile: a cancel), and the
/// sliced job it is part of.
async fn fail(jobs: &Jobs, id: &str, parent: Option<&str>, reason: &str) {
    tracing::warn!(%reason, "job failed");
    let _ = jobs
        .update(id, |r| {
            if r.state.is_final() {
                return false;
            }
            r.state = JobState::Failed;
            r.error = Some(reason.to_string());
            true
        })
        .await;
    if let Some(parent) = parent {
        fail_sliced(jobs, parent, reason).await;
    }
}

/// Fails a sliced job (`reason`) and cancels what of it has not ended.
async fn fail_sliced(jobs: &Jobs, parent: &str, reason: &str) {
    let Ok(record) = jobs
        .update(parent, |r| {
            if r.state.is_final() {
                return false;
            }
            r.state = JobState::Failed;
            r.error = Some(reason.to_string());
            true
        })
        .await
    else {
        return;
    };
    jobs.cancel_parts(&record).await;
}

/// Queues `count` slices of `parent` and the stitch after them.
async fn spawn_slices(
    jobs: &Jobs,
    parent: &JobRecord,
    count: u32,
) -> Result<(Vec<String>, String), JobError> {
    let mut slices = Vec::new();
    for index in 0..count {
        let r = jobs
            .enqueue(
                parent.spec.clone(),
                JobRole::Slice {
                    parent: parent.id.clone(),
                    index,
                    count,
                },
            )
            .await?;
        slices.push(r.id);
    }
    let stitch = jobs
        .enqueue(
            parent.spec.clone(),
            JobRole::Stitch {
                parent: parent.id.clone(),
                slices: slices.clone(),
            },
        )
        .await?;
    Ok((slices, stitch.id))
}

/// What an attempt does.
#[derive(Clone, Copy, Debug)]
enum Work {
    /// A sliced job's planning: the file read through once (no muxing)
    /// for its length, which makes the slices.
    Plan,
    /// This portion of the tree.
    Portion(Portion),
}

/// A finished attempt's result.
enum Finished {
    Done(Done),
    /// Planned: what the read through found.
    Planned(liveslice_files::Summary),
}

/// Runs a job here and now, without a queue: download, package, upload
/// (segments first, playlists last), as a worker does. `liveslice package
/// URL --out URL` (and the Kubernetes Indexed Job that runs it) uses
/// this. Returns the outputs written and what was packaged, or why not.
pub async fn run_once(
    config: &JobConfig,
    spec: JobSpec,
    base: PipelineOptions,
) -> Result<(Vec<String>, liveslice_files::Summary), String> {
    let spec = spec.normalized()?;
    let id = super::new_id();
    let progress = Arc::new(Mutex::new(Progress::default()));
    let whole = Work::Portion(Portion::Whole);
    match run(
        config.clone(),
        id,
        spec,
        1,
        whole,
        base,
        progress,
        Arc::default(),
    )
    .await
    {
        Ok(Finished::Done(done)) => Ok((done.outputs, done.summary)),
        Ok(Finished::Planned(_)) => Err("planned, not packaged".into()),
        Err(Outcome::Failed(e) | Outcome::Retry(e)) => Err(e),
        Err(Outcome::Cancelled) => Err("cancelled".into()),
    }
}

/// One attempt, in its own work directory (removed after it).
#[allow(clippy::too_many_arguments)]
async fn run(
    config: JobConfig,
    id: String,
    spec: JobSpec,
    attempt: u32,
    work_kind: Work,
    base: PipelineOptions,
    progress: Arc<Mutex<Progress>>,
    cancel: Arc<AtomicBool>,
) -> Result<Finished, Outcome> {
    let work = config
        .work_dir()
        .join(format!("liveslice-job-{id}-{attempt}"));
    let result = run_in(&work, &config, &spec, work_kind, base, progress, cancel).await;
    if let Err(e) = tokio::fs::remove_dir_all(&work).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, dir = %work.display(), "work directory not removed");
        }
    }
    result
}

async fn run_in(
    work: &Path,
    config: &JobConfig,
    spec: &JobSpec,
    work_kind: Work,
    base: PipelineOptions,
    progress: Arc<Mutex<Progress>>,
    cancel: Arc<AtomicBool>,
) -> Result<Finished, Outcome> {
    tokio::fs::create_dir_all(work).await.map_err(|e| {
        Outcome::Retry(format!(
            "cannot create the work directory {}: {e}",
            work.display()
        ))
    })?;
    let source = Location::parse(&spec.source).map_err(Outcome::Failed)?;
    let output = Location::parse(&spec.output).map_err(Outcome::Failed)?;
    // Both places are checked before any work (and before an output
    // directory is made).
    let local_source = match &source {
        Location::File(p) => Some(storage::local_path(p, config).map_err(Outcome::Failed)?),
        Location::S3 { key, .. } if key.is_empty() => {
            return Err(Outcome::Failed(format!(
                "{}: names a bucket but no object",
                spec.source
            )))
        }
        Location::S3 { .. } => None,
    };
    if let Location::File(p) = &output {
        storage::local_path(p, config).map_err(Outcome::Failed)?;
    }
    let out = storage::open(&output, config).map_err(Outcome::Failed)?;
    let input: PathBuf = match local_source {
        Some(p) => p,
        None => {
            let place = storage::open(&source, config).map_err(Outcome::Failed)?;
            let local = work.join("source");
            download(&place, &spec.source, &local).await?;
            local
        }
    };
    // A local output: the tree is built beside it and moved into place
    // file by file (renames, no copies); otherwise in the work directory,
    // then uploaded.
    let staged = match &output {
        Location::File(dir) => Some(dir.join(format!(
            ".{}",
            work.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ))),
        Location::S3 { .. } => None,
    };
    // Planning writes nothing anyone reads: its playlists go to the work
    // directory.
    let (portion, staged) = match work_kind {
        Work::Plan => (Portion::Playlists, None),
        Work::Portion(p) => (p, staged),
    };
    let tree = staged.clone().unwrap_or_else(|| work.join("out"));
    let built = tree.clone();
    let opts = spec.pipeline(base);
    let name = spec.source.clone();
    let stop = cancel.clone();
    let packaged = tokio::task::spawn_blocking(move || {
        liveslice_files::package_file_portion(&input, &name, &tree, opts, portion, &mut |p| {
            if let Ok(mut g) = progress.lock() {
                *g = p;
            }
            if stop.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
    })
    .await
    .map_err(|e| Outcome::Retry(format!("the packaging task failed: {e}")))?;
    let placed = async {
        if cancel.load(Ordering::Relaxed) {
            return Err(Outcome::Cancelled);
        }
        let summary = packaged.map_err(|e| Outcome::Failed(e.to_string()))?;
        if matches!(work_kind, Work::Plan) {
            return Ok(Err(summary));
        }
        // A cancel while the tree is placed stops it before the playlists.
        let placed = match &output {
            Location::File(dir) => move_tree(&built, dir, cancel.clone()).await,
            Location::S3 { .. } => upload(&built, &out, &cancel).await,
        }
        .map_err(Outcome::Retry)?;
        if !placed {
            return Err(Outcome::Cancelled);
        }
        Ok(Ok(summary))
    }
    .await;
    if let Some(staged) = &staged {
        let _ = tokio::fs::remove_dir_all(staged).await;
    }
    // Ok(Err(summary)): planned.
    let summary = match placed? {
        Ok(summary) => summary,
        Err(planned) => return Ok(Finished::Planned(planned)),
    };
    let base_url = spec.output.trim_end_matches('/');
    let mut outputs = Vec::new();
    // A slice writes segments only; the stitch (or a whole job) the
    // playlists.
    if matches!(portion, Portion::Slice { .. }) {
        return Ok(Finished::Done(Done { outputs, summary }));
    }
    if summary.formats.cmaf {
        outputs.push(format!("{base_url}/index.m3u8"));
        outputs.push(format!("{base_url}/manifest.mpd"));
    }
    if summary.formats.ts {
        outputs.push(format!("{base_url}/ts/index.m3u8"));
    }
    Ok(Finished::Done(Done { outputs, summary }))
}

/// The source object into a local file (streamed, never held whole).
async fn download(place: &Place, url: &str, local: &Path) -> Result<(), Outcome> {
    use tokio::io::AsyncWriteExt;
    let path = object_store::path::Path::from(place.key.as_str());
    let got = match place.store.get(&path).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Outcome::Failed(format!("{url}: no such object")))
        }
        Err(e) => return Err(Outcome::Retry(format!("{url}: cannot read: {e}"))),
    };
    let io = |e: std::io::Error| Outcome::Retry(format!("cannot write {}: {e}", local.display()));
    let mut file = tokio::fs::File::create(local).await.map_err(io)?;
    let mut chunks = got.into_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| Outcome::Retry(format!("{url}: reading failed: {e}")))?;
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(())
}

/// Every file under `dir` (relative, `/`-separated), playlists and MPDs
/// last.
fn tree_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                files.push(parts.join("/"));
            }
        }
    }
    files.sort_by_key(|f| (is_playlist(f), f.clone()));
    Ok(files)
}

fn is_playlist(name: &str) -> bool {
    name.ends_with(".m3u8") || name.ends_with(".mpd")
}

/// The tree to the output: segments and init segments at once (a few at
/// a time), then the playlists one by one. Each object is tried
/// [`UPLOAD_TRIES`] times.
/// Returns false when a cancel stopped it (the playlists unwritten).
async fn upload(dir: &Path, out: &Place, cancel: &AtomicBool) -> Result<bool, String> {
    let d = dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || tree_files(&d))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let split = files
        .iter()
        .position(|f| is_playlist(f))
        .unwrap_or(files.len());
    let (media, playlists) = files.split_at(split);
    let put = |name: &String| put_file(dir, out, name.clone());
    let mut puts =
        futures_util::stream::iter(media.iter().map(put)).buffer_unordered(UPLOADS_AT_ONCE);
    while let Some(r) = puts.next().await {
        r?;
        if cancel.load(Ordering::Relaxed) {
            return Ok(false);
        }
    }
    for name in playlists {
        if cancel.load(Ordering::Relaxed) {
            return Ok(false);
        }
        put_file(dir, out, name.clone()).await?;
    }
    Ok(true)
}

/// A tree built beside a local output moved into it, file by file:
/// segments first, playlists last (each a rename within the directory).
/// Returns false when a cancel stopped it (the playlists unmoved).
async fn move_tree(built: &Path, dir: &Path, cancel: Arc<AtomicBool>) -> Result<bool, String> {
    let from = built.to_path_buf();
    let to = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        for name in tree_files(&from).map_err(|e| format!("cannot list {}: {e}", from.display()))? {
            if cancel.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let target = to.join(&name);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            std::fs::rename(from.join(&name), &target)
                .map_err(|e| format!("cannot move {name} into {}: {e}", to.display()))?;
        }
        Ok(true)
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn put_file(dir: &Path, out: &Place, name: String) -> Result<(), String> {
    let local = dir.join(&name);
    let bytes = tokio::fs::read(&local)
        .await
        .map_err(|e| format!("cannot read {}: {e}", local.display()))?;
    let payload = PutPayload::from(bytes);
    let path = out.path(&name);
    let mut last = String::new();
    for attempt in 0..UPLOAD_TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let mut opts = PutOptions::default();
        if out.content_types {
            opts.attributes = Attributes::from_iter([(
                Attribute::ContentType,
                crate::record::content_type(&path),
            )]);
        }
        match out.store.put_opts(&path, payload.clone(), opts).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("cannot write {path}: {last}"))
}

//! `liveslice job`: packaging jobs on a cluster's workers over gRPC
//! (`liveslice.v1.JobService`): submit (and watch with a progress bar),
//! get, watch, cancel.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use liveslice_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::input::{parse_fps, parse_part_duration, parse_segment_duration};
use crate::rpc::{connect_jobs, JobClient, Server, ServerArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(clap::Subcommand, Debug)]
enum JobCommand {
    /// Queue a job: SOURCE (s3://BUCKET/KEY, or file:///PATH within the
    /// workers' --job-files) packaged into --output.
    Submit(SubmitArgs),
    /// Print a job's state.
    Get(IdArgs),
    /// Follow a job until it ends, with a progress bar.
    Watch(IdArgs),
    /// Cancel a queued or running job.
    Cancel(IdArgs),
}

#[derive(clap::Args, Debug)]
struct IdArgs {
    /// The job's id (as `submit` printed it).
    id: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args, Debug)]
struct SubmitArgs {
    /// The file to package: s3://BUCKET/KEY or file:///PATH (or give
    /// --upload FILE instead).
    #[arg(value_name = "SOURCE")]
    source: Option<String>,
    /// Upload this local file first, straight to the server's
    /// --job-uploads bucket (a pre-signed URL from the server), and
    /// package that.
    #[arg(long, value_name = "FILE", conflicts_with = "source")]
    upload: Option<std::path::PathBuf>,
    /// Where the tree goes: s3://BUCKET/PREFIX or file:///DIR.
    #[arg(long, value_name = "URL")]
    output: String,
    /// Output formats: cmaf (HLS fMP4 + DASH), ts (HLS over MPEG-TS) or both.
    #[arg(long, value_name = "cmaf,ts", default_value = "cmaf,ts")]
    formats: String,
    /// Segment target duration.
    #[arg(long, value_name = "D", default_value = "2s", value_parser = parse_segment_duration)]
    segment_duration: Duration,
    /// Part target duration.
    #[arg(long, value_name = "D", default_value = "500ms", value_parser = parse_part_duration)]
    part_duration: Duration,
    /// Frame rate for a stream whose SPS and container carry no timing.
    #[arg(long, value_name = "N", value_parser = parse_fps)]
    fps: Option<u32>,
    /// Cut the file into slices of this many seconds of media, packaged by
    /// the workers in parallel and stitched into one tree.
    #[arg(long, value_name = "SECONDS")]
    slice_seconds: Option<u32>,
    /// Follow the job until it ends (progress bar on stderr; exit status
    /// 1 if it fails or is cancelled).
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn run(a: Args) -> Result<()> {
    let server_args = match &a.command {
        JobCommand::Submit(s) => &s.server,
        JobCommand::Get(i) | JobCommand::Watch(i) | JobCommand::Cancel(i) => &i.server,
    };
    if let JobCommand::Submit(SubmitArgs {
        source: None,
        upload: None,
        ..
    }) = &a.command
    {
        bail!("give SOURCE (s3://BUCKET/KEY or file:///PATH) or --upload FILE");
    }
    let server = Server::new(&server_args.server, &server_args.access)?;
    let mut client = connect_jobs(&server).await?;
    match a.command {
        JobCommand::Submit(s) => {
            let source = match (&s.upload, s.source) {
                (Some(file), _) => upload(&mut client, &server, file).await?,
                (None, Some(source)) => source,
                (None, None) => {
                    bail!("give SOURCE (s3://BUCKET/KEY or file:///PATH) or --upload FILE")
                }
            };
            let spec = pb::JobSpec {
                source,
                output: s.output,
                formats: s
                    .formats
                    .split(',')
                    .map(|f| f.trim().to_string())
                    .filter(|f| !f.is_empty())
                    .collect(),
                segment_duration_ms: u32::try_from(s.segment_duration.as_millis())
                    .unwrap_or(u32::MAX),
                part_duration_ms: u32::try_from(s.part_duration.as_millis()).unwrap_or(u32::MAX),
                fps: s.fps.unwrap_or(0),
                slice_seconds: s.slice_seconds.unwrap_or(0),
            };
            let job = client
                .submit(spec)
                .await
                .map_err(|e| job_error(&e, &server))?
                .into_inner();
            println!("job {} queued", job.id);
            if s.watch {
                watch(&mut client, &server, &job.id).await?;
            }
        }
        JobCommand::Get(IdArgs { id, .. }) => {
            let job = client
                .get(pb::JobId { id })
                .await
                .map_err(|e| job_error(&e, &server))?
                .into_inner();
            print_job(&job);
        }
        JobCommand::Watch(IdArgs { id, .. }) => watch(&mut client, &server, &id).await?,
        JobCommand::Cancel(IdArgs { id, .. }) => {
            let job = client
                .cancel(pb::JobId { id })
                .await
                .map_err(|e| job_error(&e, &server))?
                .into_inner();
            print_job(&job);
        }
    }
    Ok(())
}

/// Uploads `file` to a pre-signed URL the server hands out; returns the
/// object as a job source.
async fn upload(client: &mut JobClient, server: &Server, file: &std::path::Path) -> Result<String> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let size = f
        .metadata()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
        .len();
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ticket = client
        .create_upload(pb::UploadRequest { name })
        .await
        .map_err(|e| job_error(&e, server))?
        .into_inner();
    liveslice_server::record::install_crypto_provider();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot make an HTTP client: {e}"))?;
    eprintln!("uploading {} ({size} bytes) ...", file.display());
    let reply = http
        .put(&ticket.url)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::from(f))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("upload of {} failed: {e}", file.display()))?;
    if !reply.status().is_success() {
        let status = reply.status();
        let text = reply.text().await.unwrap_or_default();
        bail!(
            "upload of {} refused by the storage ({status}): {}",
            file.display(),
            text.chars().take(300).collect::<String>()
        );
    }
    eprintln!("uploaded as {}", ticket.source);
    Ok(ticket.source)
}

fn job_error(status: &tonic::Status, server: &Server) -> anyhow::Error {
    let msg = status.message();
    match status.code() {
        // The server's own words say what is wrong and what to do.
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::ResourceExhausted => anyhow::anyhow!("{msg}"),
        // An HTTP server answered: most likely liveslice's HTTP port.
        _ if msg.contains("grpc-status header missing") => {
            crate::rpc::status_error(status, server, "jobs")
        }
        Code::Unimplemented => {
            anyhow::anyhow!("{server} has no JobService (an older liveslice-server?): {msg}")
        }
        _ => crate::rpc::status_error(status, server, "jobs"),
    }
}

fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Queued) => "queued",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Done) => "done",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn print_job(job: &pb::Job) {
    println!("job {}: {}", job.id, state_name(job.state));
    if let Some(spec) = &job.spec {
        println!("  {} -> {}", spec.source, spec.output);
    }
    println!(
        "  {} frames, {} segments, {:.1} %, {} attempt(s){}",
        job.frames,
        job.segments,
        job.percent,
        job.attempts,
        if job.worker.is_empty() {
            String::new()
        } else {
            format!(", worker {}", job.worker)
        }
    );
    if !job.slices.is_empty() {
        let n = job.slices.len() - 1;
        println!(
            "  sliced: {n} slice{} and a stitch (jobs {})",
            if n == 1 { "" } else { "s" },
            job.slices.join(", ")
        );
    }
    if !job.parent.is_empty() {
        println!("  part of sliced job {}", job.parent);
    }
    for o in &job.outputs {
        println!("  wrote {o}");
    }
    if !job.error.is_empty() {
        println!("  {}", job.error);
    }
}

/// Follows a job with a progress bar on stderr; an error if it fails or
/// is cancelled.
async fn watch(client: &mut JobClient, server: &Server, id: &str) -> Result<()> {
    let mut updates = client
        .watch(pb::JobId { id: id.to_string() })
        .await
        .map_err(|e| job_error(&e, server))?
        .into_inner();
    let mut last = None;
    while let Some(job) = updates.next().await {
        let job = job.map_err(|e| job_error(&e, server))?;
        let filled = ((job.percent / 5.0).round() as usize).min(20);
        eprint!(
            "\r[{}{}] {:5.1} % {:>8} frames {:>8.0} fps  {:<9}",
            "#".repeat(filled),
            " ".repeat(20 - filled),
            job.percent,
            job.frames,
            job.frames_per_second,
            state_name(job.state)
        );
        let _ = std::io::stderr().flush();
        last = Some(job);
    }
    eprintln!();
    let Some(job) = last else {
        bail!("the watch of job {id} ended without news");
    };
    print_job(&job);
    match pb::JobState::try_from(job.state) {
        Ok(pb::JobState::Done) => Ok(()),
        Ok(pb::JobState::Failed) => bail!("job {id} failed: {}", job.error),
        Ok(pb::JobState::Cancelled) => bail!("job {id} was cancelled"),
        _ => bail!("the watch of job {id} ended before the job did (server shut down?)"),
    }
}

//! `liveslice.v1.JobService`: packaging jobs over gRPC, a thin edge over
//! [`crate::jobs::Jobs`] (the HTTP API's `/api/jobs` is the other).

use std::pin::Pin;
use std::sync::Arc;

use liveslice_proto::v1 as pb;
use pb::job_service_server::JobService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::{Access, Auth};
use crate::jobs::{JobError, JobRecord, JobRole, JobSpec, JobState, Jobs};

/// The service; `jobs` is `None` on a server without `--cluster`.
pub struct JobServiceImpl {
    jobs: Option<Arc<Jobs>>,
    auth: Option<Arc<Auth>>,
}

impl JobServiceImpl {
    pub fn new(jobs: Option<Arc<Jobs>>, auth: Option<Arc<Auth>>) -> Self {
        Self { jobs, auth }
    }

    /// The jobs, for a caller allowed to use them: with auth on, a publish
    /// token for every session.
    fn jobs<T>(&self, request: &Request<T>) -> Result<&Jobs, Status> {
        if let Some(auth) = &self.auth {
            let token = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::auth::bearer);
            let now = crate::session::now_unix_ns() / 1_000_000_000;
            auth.check(token, "*", Access::Publish, now)
                .map_err(super::auth_status)?;
        }
        self.jobs.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "jobs need a cluster: start the server with --cluster nats://HOST:PORT (and \
                 workers with --worker)",
            )
        })
    }
}

/// The status a jobs error answers with.
pub fn job_status(e: JobError) -> Status {
    match e {
        JobError::Invalid(m) => Status::invalid_argument(m),
        JobError::NotFound(_) => Status::not_found(e.to_string()),
        JobError::Full => Status::resource_exhausted(e.to_string()),
        JobError::Nats { .. } | JobError::Storage(_) => Status::unavailable(e.to_string()),
        JobError::Unavailable(m) => Status::failed_precondition(m),
    }
}

fn spec_of(s: pb::JobSpec) -> JobSpec {
    JobSpec {
        source: s.source,
        output: s.output,
        formats: s.formats,
        segment_duration_ms: s.segment_duration_ms,
        part_duration_ms: s.part_duration_ms,
        fps: s.fps,
        slice_seconds: s.slice_seconds,
    }
}

/// A job record as the API's `Job`.
pub fn job_of(r: JobRecord) -> pb::Job {
    let (slices, parent, slice_index) = match &r.role {
        JobRole::Whole => (Vec::new(), String::new(), 0),
        JobRole::Sliced { slices, stitch } => {
            let mut all = slices.clone();
            all.push(stitch.clone());
            (all, String::new(), 0)
        }
        JobRole::Slice { parent, index, .. } => (Vec::new(), parent.clone(), *index),
        JobRole::Stitch { parent, .. } => (Vec::new(), parent.clone(), 0),
    };
    let state = match r.state {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Done => pb::JobState::Done,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    };
    pb::Job {
        id: r.id,
        spec: Some(pb::JobSpec {
            source: r.spec.source,
            output: r.spec.output,
            formats: r.spec.formats,
            segment_duration_ms: r.spec.segment_duration_ms,
            part_duration_ms: r.spec.part_duration_ms,
            fps: r.spec.fps,
            slice_seconds: r.spec.slice_seconds,
        }),
        state: state as i32,
        frames: r.frames,
        segments: r.segments,
        percent: r.percent,
        frames_per_second: r.frames_per_second,
        outputs: r.outputs,
        error: r.error.unwrap_or_default(),
        attempts: r.attempts,
        worker: r.worker.unwrap_or_default(),
        submitted_unix_ms: r.submitted_unix_ms,
        updated_unix_ms: r.updated_unix_ms,
        duration_90k: r.duration_90k,
        slices,
        parent,
        slice_index,
    }
}

type JobStream = Pin<Box<dyn Stream<Item = Result<pb::Job, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for JobServiceImpl {
    async fn submit(&self, request: Request<pb::JobSpec>) -> Result<Response<pb::Job>, Status> {
        let jobs = self.jobs(&request)?;
        let record = jobs
            .submit(spec_of(request.into_inner()))
            .await
            .map_err(job_status)?;
        Ok(Response::new(job_of(record)))
    }

    async fn get(&self, request: Request<pb::JobId>) -> Result<Response<pb::Job>, Status> {
        let jobs = self.jobs(&request)?;
        let record = jobs.get(&request.get_ref().id).await.map_err(job_status)?;
        Ok(Response::new(job_of(record)))
    }

    type WatchStream = JobStream;

    async fn watch(&self, request: Request<pb::JobId>) -> Result<Response<JobStream>, Status> {
        let jobs = self.jobs(&request)?;
        let records = jobs
            .watch(&request.get_ref().id)
            .await
            .map_err(job_status)?;
        let stream = tokio_stream::StreamExt::map(records, |r| Ok(job_of(r)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_upload(
        &self,
        request: Request<pb::UploadRequest>,
    ) -> Result<Response<pb::Upload>, Status> {
        let jobs = self.jobs(&request)?;
        let t = jobs
            .create_upload(&request.get_ref().name)
            .await
            .map_err(job_status)?;
        Ok(Response::new(pb::Upload {
            url: t.url,
            method: t.method,
            source: t.source,
            expires_unix_ms: t.expires_unix_ms,
        }))
    }

    async fn cancel(&self, request: Request<pb::JobId>) -> Result<Response<pb::Job>, Status> {
        let jobs = self.jobs(&request)?;
        let record = jobs
            .cancel(&request.get_ref().id)
            .await
            .map_err(job_status)?;
        Ok(Response::new(job_of(record)))
    }
}

//! `/api/jobs`: packaging jobs over HTTP, a thin edge over
//! [`crate::jobs::Jobs`] (gRPC `JobService` is the other).
//!
//! - `POST /api/jobs` with a JSON [`JobSpec`] (`{"source": URL, "output":
//!   URL, "formats": ["cmaf","ts"], "segment_duration_ms": 2000, ...}`):
//!   `201 Created` with the job's record (its `id`), `400` naming a bad
//!   field.
//! - `GET /api/jobs/{id}`: the record (`state` queued, running, done,
//!   failed or cancelled; `frames`, `percent`, `outputs`, `error`, ...);
//!   `404` for an unknown id.
//! - `DELETE /api/jobs/{id}`: cancels it; the record as it then is.
//! - `POST /api/uploads` with `{"name": "clip.mp4"}`: `201` with a
//!   pre-signed PUT URL under `--job-uploads` (`url`, `method`, `source`
//!   for the job, `expires_unix_ms`); `503` when uploads are off.
//!
//! Without `--cluster` each answers 503 saying so. With authorization on,
//! each needs a publish token for every session (`*`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::auth::{bearer, Access, Auth, AuthError};
use crate::jobs::{JobError, JobSpec, Jobs};

#[derive(Clone)]
struct JobsState {
    jobs: Option<Arc<Jobs>>,
    auth: Option<Arc<Auth>>,
}

/// The `/api/jobs` routes.
pub fn routes(jobs: Option<Arc<Jobs>>, auth: Option<Arc<Auth>>) -> Router {
    Router::new()
        .route("/api/jobs", post(submit))
        .route("/api/jobs/{id}", get(status).delete(cancel))
        .route("/api/uploads", post(upload))
        .with_state(JobsState { jobs, auth })
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn job_error(e: JobError) -> Response {
    let status = match e {
        JobError::Invalid(_) => StatusCode::BAD_REQUEST,
        JobError::NotFound(_) => StatusCode::NOT_FOUND,
        JobError::Full
        | JobError::Nats { .. }
        | JobError::Storage(_)
        | JobError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// The jobs, for a caller allowed to use them.
fn allowed<'a>(state: &'a JobsState, headers: &HeaderMap) -> Result<&'a Jobs, Box<Response>> {
    if let Some(auth) = &state.auth {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        let now = crate::session::now_unix_ns() / 1_000_000_000;
        match auth.check(token, "*", Access::Publish, now) {
            Ok(()) => {}
            Err(AuthError::Forbidden) => {
                return Err(Box::new(error(
                    StatusCode::FORBIDDEN,
                    "jobs need a publish token for every session (publish:*:TOKEN)".into(),
                )))
            }
            Err(e) => {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    format!("{e} (send `Authorization: Bearer <publish token for *>`)"),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return Err(Box::new(r));
            }
        }
    }
    state.jobs.as_deref().ok_or_else(|| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "jobs need a cluster: start the server with --cluster nats://HOST:PORT (and workers \
             with --worker)"
                .into(),
        ))
    })
}

async fn submit(
    State(state): State<JobsState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let jobs = match allowed(&state, &headers) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let spec: JobSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a job: {e} (JSON: {{\"source\": \"s3://BUCKET/KEY\", \
                     \"output\": \"s3://BUCKET/PREFIX\"}}, optional formats, \
                     segment_duration_ms, part_duration_ms, fps, slice_seconds)"
                ),
            )
        }
    };
    match jobs.submit(spec).await {
        Ok(record) => (StatusCode::CREATED, Json(record)).into_response(),
        Err(e) => job_error(e),
    }
}

/// `POST /api/uploads` `{"name": "clip.mp4"}`: a pre-signed PUT URL.
async fn upload(
    State(state): State<JobsState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct UploadRequest {
        #[serde(default)]
        name: String,
    }
    let jobs = match allowed(&state, &headers) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let request: UploadRequest = if body.is_empty() {
        UploadRequest {
            name: String::new(),
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body is not an upload request: {e} (JSON: {{\"name\": \"clip.mp4\"}})"
                    ),
                )
            }
        }
    };
    match jobs.create_upload(&request.name).await {
        Ok(ticket) => (StatusCode::CREATED, Json(ticket)).into_response(),
        Err(e) => job_error(e),
    }
}

async fn status(
    State(state): State<JobsState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let jobs = match allowed(&state, &headers) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    reply(jobs.get(&id).await)
}

/// A record as JSON, or the error's status.
fn reply(record: Result<crate::jobs::JobRecord, JobError>) -> Response {
    match record {
        Ok(record) => Json(record).into_response(),
        Err(e) => job_error(e),
    }
}

async fn cancel(
    State(state): State<JobsState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let jobs = match allowed(&state, &headers) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    reply(jobs.cancel(&id).await)
}

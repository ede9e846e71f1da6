//! Prometheus metrics, rendered at `/metrics` on the HTTP port.
//!
//! `metrics` records; `metrics-exporter-prometheus` (without its own HTTP
//! listener) renders. Counters on the per-frame path are fetched once per
//! batch, not per frame. Gauges for sessions and subscribers are read from
//! the registry at scrape time rather than kept in step by hand.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::engine::DropReason;
use crate::session::Registry;

pub const FRAMES_IN: &str = "liveslice_frames_in_total";
pub const BYTES_IN: &str = "liveslice_bytes_in_total";
pub const FRAMES_OUT: &str = "liveslice_frames_out_total";
pub const BYTES_OUT: &str = "liveslice_bytes_out_total";
pub const FRAMES_DROPPED: &str = "liveslice_frames_dropped_total";
pub const SEGMENTS: &str = "liveslice_segments_total";
pub const SEGMENT_DURATION: &str = "liveslice_segment_duration_seconds";
pub const PUBLISH_TO_SEND: &str = "liveslice_publish_to_send_seconds";
pub const LAG_SKIPS: &str = "liveslice_subscriber_lag_skips_total";
pub const GRPC_CALLS: &str = "liveslice_grpc_calls_total";
pub const HTTP_REQUESTS: &str = "liveslice_http_requests_total";
/// gRPC connections accepted, by the runtime that serves them (`shared`, or
/// `0`…`N-1` with `grpc-runtimes N`).
pub const GRPC_CONNECTIONS: &str = "liveslice_grpc_connections_total";
/// Time from a request's arrival to its response headers, by kind.
pub const HTTP_DURATION: &str = "liveslice_http_request_duration_seconds";
/// HTTP connections refused or not accepted, by reason (`limit`,
/// `accept_error`).
pub const HTTP_CONNECTIONS_SHED: &str = "liveslice_http_connections_shed_total";
pub const SESSIONS: &str = "liveslice_sessions";
pub const PUBLISHERS: &str = "liveslice_publishers";
pub const SUBSCRIBERS: &str = "liveslice_subscribers";
pub const MEMORY: &str = "liveslice_media_memory_bytes";
pub const MEMORY_LIMIT: &str = "liveslice_media_memory_limit_bytes";
/// `--record`: objects written (segments, init segments, playlists).
pub const RECORD_WRITES: &str = "liveslice_record_writes_total";
pub const RECORD_BYTES: &str = "liveslice_record_bytes_total";
/// Failed write attempts tried again (after a back-off).
pub const RECORD_RETRIES: &str = "liveslice_record_retries_total";
/// Writes given up after the last retry.
pub const RECORD_FAILURES: &str = "liveslice_record_failures_total";
/// Segments not recorded, by reason (`queue_full`, `write_failed`,
/// `max_segments`).
pub const RECORD_LOST: &str = "liveslice_record_segments_lost_total";
/// Bytes waiting to be written (queued or in flight).
pub const RECORD_QUEUE: &str = "liveslice_record_queue_bytes";
pub const CLUSTER_PUBLISHED: &str = "liveslice_cluster_published_total";
pub const CLUSTER_DROPPED: &str = "liveslice_cluster_dropped_total";
pub const CLUSTER_RECEIVED: &str = "liveslice_cluster_received_total";
pub const CLUSTER_CONNECTED: &str = "liveslice_cluster_connected";
/// Sessions this origin took over from another (a publisher failed over).
pub const CLUSTER_TAKEOVERS: &str = "liveslice_cluster_takeovers_total";
/// Sessions another origin took over from this one.
pub const CLUSTER_TAKEN_OVER: &str = "liveslice_cluster_taken_over_total";
/// Segments of a rendition found to start elsewhere than the first
/// rendition's of the same number.
pub const RENDITION_MISALIGNED: &str = "liveslice_rendition_misaligned_segments_total";
/// Transcode ladders (`--ladder`) that failed (ffmpeg missing, crashed or
/// too slow); their sources went on.
pub const LADDER_FAILURES: &str = "liveslice_ladder_failures_total";
/// Packaging job attempts this worker ended, by `outcome`: `done`,
/// `failed`, `retried` (storage or NATS: the job comes back), `cancelled`,
/// `planned` (a sliced job's slices queued).
pub const JOB_ATTEMPTS: &str = "liveslice_job_attempts_total";
/// Frames this worker packaged in jobs.
pub const JOB_FRAMES: &str = "liveslice_job_frames_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls share it). `None`
/// if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(SEGMENT_DURATION.into()),
                    &[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0, 30.0],
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_DURATION.into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0,
                    ],
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full(PUBLISH_TO_SEND.into()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                        1.0,
                    ],
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            zeros();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(FRAMES_IN, "Frames accepted from publishers");
    describe_counter!(
        JOB_ATTEMPTS,
        "Packaging job attempts this worker ended, by outcome"
    );
    describe_counter!(JOB_FRAMES, "Frames this worker packaged in jobs");
    describe_counter!(
        LADDER_FAILURES,
        "Transcode ladders that failed (their sources went on)"
    );
    describe_counter!(
        RENDITION_MISALIGNED,
        "Segments of a rendition that start elsewhere than the first rendition's of the same number"
    );
    describe_counter!(
        GRPC_CONNECTIONS,
        "gRPC connections accepted, by the runtime serving them"
    );
    describe_counter!(BYTES_IN, Unit::Bytes, "Bytes received from publishers");
    describe_counter!(FRAMES_OUT, "Frames sent to subscribers");
    describe_counter!(BYTES_OUT, Unit::Bytes, "Frame bytes sent to subscribers");
    describe_counter!(FRAMES_DROPPED, "Frames dropped, by reason");
    describe_counter!(SEGMENTS, "Segments cut");
    describe_histogram!(SEGMENT_DURATION, Unit::Seconds, "Segment durations");
    describe_histogram!(
        PUBLISH_TO_SEND,
        Unit::Seconds,
        "Time from a frame's arrival to its hand-off to a subscriber's stream"
    );
    describe_counter!(LAG_SKIPS, "Times a slow subscriber was skipped forward");
    describe_counter!(GRPC_CALLS, "StreamSlices calls, by role and final status");
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by kind and status");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from an HTTP request's arrival to its response headers, by kind"
    );
    describe_counter!(
        HTTP_CONNECTIONS_SHED,
        "HTTP connections refused over --http-max-connections, or accept errors, by reason"
    );
    describe_gauge!(SESSIONS, "Sessions held (live and lingering), by state");
    describe_gauge!(PUBLISHERS, "Sessions with an attached publisher");
    describe_gauge!(
        MEMORY,
        Unit::Bytes,
        "Bytes of media held by all sessions, live and lingering"
    );
    describe_gauge!(
        MEMORY_LIMIT,
        Unit::Bytes,
        "The media memory budget (--memory-limit)"
    );
    describe_counter!(
        RECORD_WRITES,
        "Objects written to the recording store (segments, init segments, playlists)"
    );
    describe_counter!(
        RECORD_BYTES,
        Unit::Bytes,
        "Bytes written to the recording store"
    );
    describe_counter!(
        RECORD_RETRIES,
        "Recording writes that failed and were tried again"
    );
    describe_counter!(
        RECORD_FAILURES,
        "Recording writes given up after the last retry"
    );
    describe_counter!(RECORD_LOST, "Segments not recorded, by reason");
    describe_gauge!(
        RECORD_QUEUE,
        Unit::Bytes,
        "Bytes waiting to be written to the recording store"
    );
    describe_counter!(
        CLUSTER_PUBLISHED,
        "Session items published to the cluster (JetStream), acknowledged"
    );
    describe_counter!(
        CLUSTER_DROPPED,
        "Session items not replicated: the queue to the cluster was full or JetStream did not acknowledge them"
    );
    describe_counter!(
        CLUSTER_RECEIVED,
        "Session items an edge read from the cluster"
    );
    describe_counter!(
        CLUSTER_TAKEOVERS,
        "Sessions this origin took over from another origin of the cluster (their publisher failed over here), numbering continued"
    );
    describe_counter!(
        CLUSTER_TAKEN_OVER,
        "Sessions another origin took over from this one (no longer replicated from here)"
    );
    describe_gauge!(
        CLUSTER_CONNECTED,
        "1 while the connection to the cluster (--cluster) is up, 0 while it is down"
    );
    describe_gauge!(
        SUBSCRIBERS,
        "Attached gRPC subscribers (a publisher's own event stream is not one)"
    );
}

/// Counters that may stay at zero for a long time (or forever) are in the
/// scrape from the start, so dashboards and `rate()` see 0 rather than no
/// series.
fn zeros() {
    for c in [
        FRAMES_IN,
        BYTES_IN,
        FRAMES_OUT,
        BYTES_OUT,
        SEGMENTS,
        LAG_SKIPS,
        CLUSTER_PUBLISHED,
        CLUSTER_DROPPED,
        CLUSTER_RECEIVED,
        CLUSTER_TAKEOVERS,
        CLUSTER_TAKEN_OVER,
    ] {
        counter!(c).increment(0);
    }
    for reason in DropReason::ALL {
        counter!(FRAMES_DROPPED, "reason" => reason.as_str()).increment(0);
    }
    for reason in ["limit", "accept_error"] {
        counter!(HTTP_CONNECTIONS_SHED, "reason" => reason).increment(0);
    }
}

/// Renders the scrape, refreshing the gauges from the registry first.
pub fn render(handle: &PrometheusHandle, registry: &Registry) -> String {
    let sessions = registry.sessions();
    let live = sessions.iter().filter(|s| !s.is_ended()).count();
    gauge!(SESSIONS, "state" => "live").set(live as f64);
    gauge!(SESSIONS, "state" => "ended").set((sessions.len() - live) as f64);
    let publishers = sessions.iter().filter(|s| s.has_publisher()).count();
    gauge!(PUBLISHERS).set(publishers as f64);
    let subscribers: usize = sessions.iter().map(|s| s.subscriber_count()).sum();
    gauge!(SUBSCRIBERS).set(subscribers as f64);
    let memory: usize = sessions.iter().map(|s| s.memory_bytes()).sum();
    gauge!(MEMORY).set(memory as f64);
    gauge!(MEMORY_LIMIT).set(registry.defaults().memory_limit as f64);
    if let Some(r) = registry.recorder() {
        let queued = r
            .stats()
            .queued_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        gauge!(RECORD_QUEUE).set(queued as f64);
    }
    handle.run_upkeep();
    handle.render()
}

/// The recording series, at zero from the start (when `--record` is on).
pub fn record_zeros() {
    for c in [RECORD_WRITES, RECORD_BYTES, RECORD_RETRIES, RECORD_FAILURES] {
        counter!(c).increment(0);
    }
    for reason in ["queue_full", "write_failed", "max_segments"] {
        counter!(RECORD_LOST, "reason" => reason).increment(0);
    }
    gauge!(RECORD_QUEUE).set(0.0);
}

pub fn dropped(reason: DropReason, n: u64) {
    counter!(FRAMES_DROPPED, "reason" => reason.as_str()).increment(n);
}

pub fn segment(duration_ticks: u64) {
    counter!(SEGMENTS).increment(1);
    histogram!(SEGMENT_DURATION).record(duration_ticks as f64 / 90_000.0);
}

pub fn grpc_call(role: &'static str, code: tonic::Code) {
    counter!(GRPC_CALLS, "role" => role, "code" => code_name(code)).increment(1);
}

fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

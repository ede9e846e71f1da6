//! Packaging jobs on a real NATS JetStream work queue (`nats-server -js`)
//! with real storage (moto's S3 API on loopback, and local files): workers
//! are `liveslice-server --worker` processes, jobs are submitted over HTTP
//! (`/api/jobs`) and gRPC (`JobService`), and what they write is checked
//! with ffmpeg.

mod common;

use std::time::{Duration, Instant};

use common::failover::origin_process;
use common::http::http_request;
use common::nats::Nats;
use common::s3::{have_moto, Moto};
use common::*;
use liveslice_proto::v1 as pb;
use pb::job_service_client::JobServiceClient;

const BUCKET: &str = "media";

/// Credentials for moto (it accepts any), inherited by the workers.
fn moto_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "liveslice-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "liveslice-test");
    std::env::set_var("AWS_REGION", "us-east-1");
}

/// A worker process (`--worker`) with `args`; killed on drop.
struct Worker {
    child: std::process::Child,
    grpc: std::net::SocketAddr,
    http: String,
}

impl Worker {
    fn start(nats: &Nats, node: &str, args: &[&str]) -> Worker {
        let mut all = vec!["--worker"];
        all.extend_from_slice(args);
        let (child, grpc, http) = origin_process(nats, node, &all);
        Worker { child, grpc, http }
    }

    async fn jobs(&self) -> JobServiceClient<tonic::transport::Channel> {
        JobServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("gRPC connects")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /api/jobs/{id}` as JSON.
fn job_json(http: &str, id: &str) -> serde_json::Value {
    let (status, _, body) = http_get(&format!("{http}/api/jobs/{id}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("a job record")
}

/// Polls the job over HTTP until `done(state)`, failing after `limit`.
fn wait_http(
    http: &str,
    id: &str,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let j = job_json(http, id);
        if done(j["state"].as_str().unwrap_or("")) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {j} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Segment names an HLS playlist lists, and the sum of its EXTINF
/// durations (s).
fn playlist(text: &str) -> (Vec<String>, f64) {
    let mut segments = Vec::new();
    let mut total = 0.0;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            total += d
                .trim_end_matches(',')
                .split(',')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap();
        } else if !line.starts_with('#') && !line.is_empty() {
            segments.push(line.to_string());
        }
    }
    (segments, total)
}

/// Copies the objects under `prefix` into a local directory (for ffmpeg).
fn download_tree(moto: &Moto, prefix: &str) -> std::path::PathBuf {
    let dir = tempdir();
    for key in moto.list(BUCKET, prefix) {
        let rel = key.strip_prefix(prefix).unwrap().trim_start_matches('/');
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, moto.get(BUCKET, &key).unwrap()).unwrap();
    }
    dir
}

/// A job submitted over HTTP packages an MP4 in S3 into S3: the record
/// goes queued → done with the frame count, the outputs it lists are
/// there, every segment the playlists name exists, and ffmpeg decodes
/// every frame of both HLS flavours and the MPD. Bad requests get 400 /
/// 404 naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_job_packages_an_s3_file_into_s3() {
    let what = "jobs: S3 in, S3 out";
    let Some(nats) = Nats::start(what) else {
        return;
    };
    if !have_moto(what) || !have_ffmpeg(what) {
        return;
    }
    moto_credentials();
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    moto.put(BUCKET, "in/clip.mp4", &testdata("mp4_av_48k.mp4"));
    let endpoint = moto.endpoint();
    let uploads = format!("s3://{BUCKET}/uploads");
    let worker = Worker::start(
        &nats,
        "w1",
        &["--job-endpoint", &endpoint, "--job-uploads", &uploads],
    );
    let http = worker.http.clone();
    let check = tokio::task::spawn_blocking(move || {
        let body = format!(
            r#"{{"source": "s3://{BUCKET}/in/clip.mp4", "output": "s3://{BUCKET}/out/clip"}}"#
        );
        let (status, _, reply) = http_request(
            "POST",
            &format!("{http}/api/jobs"),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
        let job: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(job["state"], "queued", "{job}");
        let id = job["id"].as_str().unwrap().to_string();
        let done = wait_http(&http, &id, Duration::from_secs(60), |s| {
            matches!(s, "done" | "failed" | "cancelled")
        });
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(done["frames"], 120, "{done}");
        assert_eq!(done["segments"], 2, "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
        assert_eq!(done["worker"], "w1", "{done}");
        assert_eq!(done["percent"], 100.0, "{done}");
        assert_eq!(
            done["outputs"],
            serde_json::json!([
                format!("s3://{BUCKET}/out/clip/index.m3u8"),
                format!("s3://{BUCKET}/out/clip/manifest.mpd"),
                format!("s3://{BUCKET}/out/clip/ts/index.m3u8"),
            ])
        );

        // Bad requests, named.
        let post = |body: &str| {
            let (s, _, b) = http_request("POST", &format!("{http}/api/jobs"), &[], body.as_bytes());
            (s, String::from_utf8_lossy(&b).into_owned())
        };
        let (s, b) = post("{\"source\": \"ftp://x/y\", \"output\": \"s3://b/o\"}");
        assert_eq!(s, 400, "{b}");
        assert!(b.contains("source:"), "{b}");
        let (s, b) = post("not json");
        assert_eq!(s, 400, "{b}");
        assert!(b.contains("not a job"), "{b}");
        let (s, b) = post("{\"source\": \"s3://b/k\", \"output\": \"s3://b/o\", \"colour\": 1}");
        assert_eq!(s, 400, "unknown field: {b}");
        let (s, _, b) = http_get(&format!("{http}/api/jobs/00000000000000000000000000000000"));
        assert_eq!(s, 404, "{}", String::from_utf8_lossy(&b));

        // A direct upload: a pre-signed PUT URL, the file PUT there by
        // plain HTTP (no credentials), then a job of it.
        let (s, _, b) = http_request(
            "POST",
            &format!("{http}/api/uploads"),
            &[],
            br#"{"name": "my clip.h264"}"#,
        );
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
        let ticket: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(ticket["method"], "PUT");
        let url = ticket["url"].as_str().unwrap();
        assert!(url.contains("X-Amz-Signature="), "{url}");
        let source = ticket["source"].as_str().unwrap().to_string();
        assert!(
            source.starts_with(&format!("s3://{BUCKET}/uploads/"))
                && source.ends_with("/my_clip.h264"),
            "{source}"
        );
        let (s, _, b) = http_request("PUT", url, &[], &testdata("high_bframes_30.h264"));
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let body = format!(
            r#"{{"source": "{source}", "output": "s3://{BUCKET}/out/up", "formats": ["ts"]}}"#
        );
        let (s, _, b) = http_request("POST", &format!("{http}/api/jobs"), &[], body.as_bytes());
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
        let id = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let done = wait_http(&http, &id, Duration::from_secs(60), |s| {
            matches!(s, "done" | "failed" | "cancelled")
        });
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(done["frames"], 180, "{done}");
        assert_eq!(
            done["outputs"],
            serde_json::json!([format!("s3://{BUCKET}/out/up/ts/index.m3u8")])
        );
    });
    check.await.unwrap();

    // What it wrote: the listed segments exist, ffmpeg decodes them all.
    let tree = download_tree(&moto, "out/clip");
    for pl in ["index.m3u8", "ts/index.m3u8"] {
        let text = std::fs::read_to_string(tree.join(pl)).unwrap();
        assert!(text.contains("#EXT-X-ENDLIST"), "{pl}:\n{text}");
        let (segments, total) = playlist(&text);
        assert_eq!(segments.len(), 2, "{pl}:\n{text}");
        assert!((total - 4.0).abs() < 0.01, "{pl}: {total} s");
        let dir = tree.join(pl).parent().unwrap().to_path_buf();
        for s in &segments {
            assert!(dir.join(s).exists(), "{pl} names {s}, not written");
        }
        let (frames, err) = ffmpeg_every_frame(tree.join(pl).to_str().unwrap());
        assert_eq!(frames, 120, "{pl}: {err}");
    }
    let (frames, err) = ffmpeg_every_frame(tree.join("manifest.mpd").to_str().unwrap());
    assert_eq!(frames, 120, "manifest.mpd: {err}");
}

async fn watch_to_end(
    jobs: &mut JobServiceClient<tonic::transport::Channel>,
    id: &str,
) -> Vec<pb::Job> {
    let mut updates = jobs
        .watch(pb::JobId { id: id.into() })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    let watched = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(j) = updates.message().await.expect("a job update") {
            seen.push(j);
        }
    })
    .await;
    assert!(watched.is_ok(), "job {id} did not end: {seen:?}");
    seen
}

/// Over gRPC: a corrupt source fails with a reason and the queue moves on
/// to the next job; a job cancelled while queued is never run; unknown
/// ids, bad specs and a server without a cluster answer with the status
/// that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_jobs_fail_corrupt_sources_and_the_queue_moves_on() {
    let what = "jobs over gRPC";
    let Some(nats) = Nats::start(what) else {
        return;
    };
    let files = tempdir();
    std::fs::write(files.join("good.h264"), testdata("baseline_30.h264")).unwrap();
    // Not video: bytes with no start code.
    let junk: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    std::fs::write(files.join("junk.mp4"), junk).unwrap();
    let url = |name: &str| format!("file://{}", files.join(name).display());

    // A node of the cluster that takes jobs but runs none.
    let mut front = test_config();
    front.cluster.cluster = Some(nats.url());
    front.cluster.node_id = Some("front".into());
    let front = start(front).await;
    let mut jobs = JobServiceClient::connect(format!("http://{}", front.grpc_addr))
        .await
        .unwrap();
    let spec = |source: &str, out: &str| pb::JobSpec {
        source: url(source),
        output: url(out),
        formats: vec!["ts".into()],
        ..Default::default()
    };
    let early = jobs
        .submit(spec("good.h264", "early"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(early.state, pb::JobState::Queued as i32);
    let cancelled = jobs
        .cancel(pb::JobId {
            id: early.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);

    let files_arg = files.display().to_string();
    let worker = Worker::start(&nats, "w1", &["--job-files", &files_arg]);
    let mut wjobs = worker.jobs().await;
    let bad = wjobs
        .submit(spec("junk.mp4", "junk"))
        .await
        .unwrap()
        .into_inner();
    let good = wjobs
        .submit(spec("good.h264", "good"))
        .await
        .unwrap()
        .into_inner();

    let seen = watch_to_end(&mut wjobs, &bad.id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state, pb::JobState::Failed as i32, "{last:?}");
    assert!(
        last.error.contains("junk.mp4") && last.error.contains("no H.264"),
        "{}",
        last.error
    );
    assert_eq!(
        last.attempts, 1,
        "a corrupt source is not retried: {last:?}"
    );

    let seen = watch_to_end(&mut wjobs, &good.id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32, "{last:?}");
    assert_eq!((last.frames, last.segments), (180, 3), "{last:?}");
    assert_eq!(last.duration_90k, 540_000);
    let percents: Vec<f64> = seen.iter().map(|j| j.percent).collect();
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "progress goes forward: {percents:?}"
    );
    let out = files.join("good/ts/index.m3u8");
    // Built beside the output and moved in: nothing staged is left.
    let left: Vec<_> = std::fs::read_dir(files.join("good"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["ts"], "only the tree in the output");
    let (segments, total) = playlist(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(segments.len(), 3);
    assert!((total - 6.0).abs() < 0.01, "{total}");
    if have_ffmpeg(what) {
        let (frames, err) = ffmpeg_every_frame(out.to_str().unwrap());
        assert_eq!(frames, 180, "{err}");
    }
    // The cancelled job stayed cancelled; the worker never ran it.
    let early = wjobs
        .get(pb::JobId { id: early.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(early.state, pb::JobState::Cancelled as i32, "{early:?}");
    assert_eq!(early.attempts, 0, "{early:?}");
    assert!(!files.join("early").exists());
    // A finished job is not cancelled.
    let again = wjobs
        .cancel(pb::JobId { id: good.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state, pb::JobState::Done as i32);

    // Statuses that say what is wrong.
    let e = wjobs
        .get(pb::JobId { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = wjobs
        .submit(pb::JobSpec {
            source: "s3://b/k".into(),
            output: "s3://b/o".into(),
            segment_duration_ms: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("segment_duration_ms"), "{e:?}");
    // Outside --job-files: failed, naming the directory.
    let outside = wjobs
        .submit(pb::JobSpec {
            source: "file:///etc/hostname".into(),
            output: url("x"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let seen = watch_to_end(&mut wjobs, &outside.id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state, pb::JobState::Failed as i32);
    assert!(last.error.contains("--job-files"), "{}", last.error);
    front.shutdown().await;

    // The worker counts what it did.
    let (status, _, body) = get(&format!("{}/metrics", worker.http)).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body);
    for (outcome, at_least) in [("done", 1.0), ("failed", 2.0)] {
        let n: f64 = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "liveslice_job_attempts_total{{outcome=\"{outcome}\"}} "
                ))
            })
            .unwrap_or_else(|| panic!("no {outcome} count in\n{metrics}"))
            .parse()
            .unwrap();
        assert!(n >= at_least, "{outcome}: {n}");
    }
    assert!(
        metrics.contains("liveslice_job_frames_total 180"),
        "{metrics}"
    );

    // Uploads are off without --job-uploads: 503 saying so.
    let (status, _, body) = tokio::task::spawn_blocking({
        let http = worker.http.clone();
        move || http_request("POST", &format!("{http}/api/uploads"), &[], b"{}")
    })
    .await
    .unwrap();
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("--job-uploads"));

    // No cluster: jobs say what they need.
    let single = start(test_config()).await;
    let mut jobs = JobServiceClient::connect(format!("http://{}", single.grpc_addr))
        .await
        .unwrap();
    let e = jobs.get(pb::JobId { id: "x".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("--cluster"), "{e:?}");
    let (status, _, body) = get(&format!("http://{}/api/jobs/x", single.http_addr)).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    single.shutdown().await;
}

/// The job's record once a worker runs it (failing if it is done first:
/// too fast to be killed mid-job).
async fn wait_running(jobs: &mut JobServiceClient<tonic::transport::Channel>, id: &str) -> pb::Job {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = jobs
            .get(pb::JobId { id: id.into() })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(
            j.state,
            pb::JobState::Done as i32,
            "done before it could be killed: {j:?}"
        );
        if j.state == pb::JobState::Running as i32 {
            return j;
        }
        assert!(Instant::now() < deadline, "never running: {j:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker SIGKILLed mid-job (a 10-minute source, S3 to S3) leaves the
/// job to the other worker once the ack wait has passed: it is done on
/// the second attempt, by the other worker, and its playlists list every
/// segment of the 600 s with each one written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_dies_is_finished_by_another() {
    let what = "jobs: worker killed mid-job";
    let Some(nats) = Nats::start(what) else {
        return;
    };
    if !have_moto(what) {
        return;
    }
    moto_credentials();
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    // 10 minutes: the 6 s stream a hundred times over.
    let lap = testdata("baseline_30.h264");
    let long: Vec<u8> = lap.iter().copied().cycle().take(lap.len() * 100).collect();
    moto.put(BUCKET, "in/long.h264", &long);
    let endpoint = moto.endpoint();
    let args = ["--job-endpoint", endpoint.as_str(), "--job-ack-wait", "3s"];
    let mut workers = [
        Worker::start(&nats, "w1", &args),
        Worker::start(&nats, "w2", &args),
    ];
    let mut jobs = workers[0].jobs().await;
    let job = jobs
        .submit(pb::JobSpec {
            source: format!("s3://{BUCKET}/in/long.h264"),
            output: format!("s3://{BUCKET}/out/long"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Running: kill the worker that runs it.
    let running = wait_running(&mut jobs, &job.id).await;
    let (dead, alive) = if running.worker == "w1" {
        (0, "w2")
    } else {
        (1, "w1")
    };
    workers[dead].kill();
    let mut jobs = workers[1 - dead].jobs().await;
    let seen = watch_to_end(&mut jobs, &job.id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32, "{last:?}");
    assert_eq!(last.attempts, 2, "{last:?}");
    assert_eq!(last.worker, alive, "{last:?}");
    assert_eq!((last.frames, last.segments), (18_000, 300), "{last:?}");
    for (pl, ext) in [("index.m3u8", ".m4s"), ("ts/index.m3u8", ".ts")] {
        let text = String::from_utf8(moto.get(BUCKET, &format!("out/long/{pl}")).unwrap()).unwrap();
        let (segments, total) = playlist(&text);
        assert_eq!(segments.len(), 300, "{pl}");
        assert!((total - 600.0).abs() < 0.01, "{pl}: {total} s");
        let dir = pl.trim_end_matches("index.m3u8");
        let keys = moto.list(BUCKET, &format!("out/long/{dir}"));
        let written = keys.iter().filter(|k| k.ends_with(ext)).count();
        assert!(written >= 300, "{pl}: {written} {ext} objects of 300");
        // ListObjects pages at 1000 keys: check the segments by name.
        for s in segments.iter().step_by(37).chain(segments.last()) {
            assert!(
                moto.get(BUCKET, &format!("out/long/{dir}{s}")).is_some(),
                "{pl} names {s}"
            );
        }
    }

    // With --job-attempts 1 a job whose worker dies is failed, not
    // delivered again: saying why.
    let alive_idx = 1 - dead;
    workers[alive_idx].kill();
    let args = [
        "--job-endpoint",
        endpoint.as_str(),
        "--job-ack-wait",
        "2s",
        "--job-attempts",
        "1",
    ];
    let mut more = [
        Worker::start(&nats, "w3", &args),
        Worker::start(&nats, "w4", &args),
    ];
    let mut jobs = more[0].jobs().await;
    let job = jobs
        .submit(pb::JobSpec {
            source: format!("s3://{BUCKET}/in/long.h264"),
            output: format!("s3://{BUCKET}/out/once"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let running = wait_running(&mut jobs, &job.id).await;
    let dead = usize::from(running.worker == "w4");
    more[dead].kill();
    let mut jobs = more[1 - dead].jobs().await;
    let last = watch_to_end(&mut jobs, &job.id).await.pop().unwrap();
    assert_eq!(last.state, pb::JobState::Failed as i32, "{last:?}");
    assert!(
        last.error.contains("gave up after 1 attempt ("),
        "{}",
        last.error
    );
    assert!(
        moto.get(BUCKET, "out/once/index.m3u8").is_none(),
        "no playlists of a failed job"
    );
}

/// The tree minus what differs between runs by design: wall-clock times
/// (HLS program date-times, the MPD's availability and publish times).
fn without_wall_clock(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("#EXT-X-PROGRAM-DATE-TIME") {
            continue;
        }
        let mut line = line.to_string();
        for attr in ["availabilityStartTime", "publishTime"] {
            while let Some(at) = line.find(&format!("{attr}=\"")) {
                let start = at + attr.len() + 2;
                let end = start + line[start..].find('"').unwrap();
                line.replace_range(at..=end, "");
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A job sliced by time (`slice_seconds`) on two workers gives the tree
/// one job gives: a 10-minute file cut into 10 slices, packaged by both
/// workers in parallel and stitched. The playlists and the MPD are the
/// same (but for wall-clock times: one numbering, no discontinuity), every
/// CMAF segment and init segment is the same bytes, and ffmpeg decodes the
/// same frames from both MPEG-TS playlists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliced_job_on_two_workers_equals_the_whole_job() {
    let what = "jobs: sliced on two workers";
    let Some(nats) = Nats::start(what) else {
        return;
    };
    if !have_ffmpeg(what) {
        return;
    }
    let files = tempdir();
    let lap = testdata("baseline_30.h264");
    let long: Vec<u8> = lap.iter().copied().cycle().take(lap.len() * 100).collect();
    std::fs::write(files.join("long.h264"), long).unwrap();
    let url = |name: &str| format!("file://{}", files.join(name).display());
    let files_arg = files.display().to_string();
    let workers = [
        Worker::start(&nats, "w1", &["--job-files", &files_arg]),
        Worker::start(&nats, "w2", &["--job-files", &files_arg]),
    ];
    let mut jobs = workers[0].jobs().await;
    let whole = jobs
        .submit(pb::JobSpec {
            source: url("long.h264"),
            output: url("whole"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let last = watch_to_end(&mut jobs, &whole.id).await.pop().unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32, "{last:?}");
    let sliced = jobs
        .submit(pb::JobSpec {
            source: url("long.h264"),
            output: url("sliced"),
            slice_seconds: 60,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let seen = watch_to_end(&mut jobs, &sliced.id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32, "{last:?}");
    assert_eq!((last.frames, last.segments), (18_000, 300), "{last:?}");
    assert_eq!(last.duration_90k, 600 * 90_000);
    assert_eq!(last.slices.len(), 11, "10 slices and the stitch: {last:?}");
    let mut by = std::collections::BTreeSet::new();
    let mut frames = 0;
    for (k, id) in last.slices.iter().enumerate() {
        let s = jobs
            .get(pb::JobId { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.state, pb::JobState::Done as i32, "{s:?}");
        assert_eq!(s.parent, sliced.id);
        if k < 10 {
            assert_eq!(s.slice_index, k as u32);
            assert_eq!(s.segments, 30, "slice {k}: 60 s of 2 s segments: {s:?}");
            frames += s.frames;
            by.insert(s.worker.clone());
        }
    }
    assert_eq!(frames, 18_000, "the slices' frames add up");
    assert_eq!(by.len(), 2, "both workers ran slices: {by:?}");

    let read = |tree: &str, name: &str| std::fs::read(files.join(tree).join(name)).unwrap();
    for pl in ["index.m3u8", "ts/index.m3u8", "manifest.mpd"] {
        let a = String::from_utf8(read("whole", pl)).unwrap();
        let b = String::from_utf8(read("sliced", pl)).unwrap();
        let (a, b) = (without_wall_clock(&a), without_wall_clock(&b));
        let first = a.lines().zip(b.lines()).position(|(x, y)| x != y);
        assert!(
            a == b,
            "{pl} differs at line {first:?}: {:?} / {:?}",
            first.map(|i| a.lines().nth(i)),
            first.map(|i| b.lines().nth(i))
        );
        // One numbering: no discontinuity where the slices meet (the
        // source has none either).
        assert!(!b.lines().any(|l| l == "#EXT-X-DISCONTINUITY"), "{pl}");
    }
    let (segments, total) = playlist(&String::from_utf8(read("sliced", "index.m3u8")).unwrap());
    assert_eq!(segments.len(), 300);
    assert!((total - 600.0).abs() < 0.01, "{total}");
    let mut names: Vec<String> = std::fs::read_dir(files.join("whole"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".m4s") || n.ends_with(".mp4"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 301, "300 segments and the init segment");
    for n in &names {
        assert!(read("whole", n) == read("sliced", n), "{n} differs");
    }
    let ts = |tree: &str| {
        std::fs::read_dir(files.join(tree).join("ts"))
            .unwrap()
            .count()
    };
    assert_eq!(ts("whole"), ts("sliced"));
    // MPEG-TS: the slices' continuity counters start afresh; the frames
    // are the same.
    let md5 = |tree: &str| {
        let out = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(files.join(tree).join("ts/index.m3u8"))
            .args(["-fps_mode", "passthrough", "-f", "framemd5", "-"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let frames: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.to_string())
            .collect();
        (frames, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (a, err_a) = md5("whole");
    let (b, err_b) = md5("sliced");
    assert_eq!(a.len(), 18_000, "{err_a}");
    assert!(a == b, "the frames differ: {err_b}");
}

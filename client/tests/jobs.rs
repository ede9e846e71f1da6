//! `liveslice job` against a real cluster: NATS JetStream
//! (`nats-server -js`), moto's S3 API on loopback, and a server that is a
//! worker with direct uploads on.

mod common;

mod cluster;

use cluster::nats::Nats;
use cluster::s3::{have_moto, Moto};
use common::*;

/// `job submit --upload FILE --watch` uploads the file through a
/// pre-signed URL, queues the job, shows its progress and ends with the
/// outputs; `job get` prints it; a failing job makes the command fail
/// with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_submit_uploads_watches_and_reports() {
    let what = "liveslice job";
    let Some(nats) = Nats::start(what) else {
        return;
    };
    if !have_moto(what) {
        return;
    }
    std::env::set_var("AWS_ACCESS_KEY_ID", "liveslice-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "liveslice-test");
    std::env::set_var("AWS_REGION", "us-east-1");
    let moto = Moto::start();
    moto.create_bucket("media");
    let mut config = test_config();
    config.cluster.cluster = Some(nats.url());
    config.jobs.worker = true;
    config.jobs.job_endpoint = Some(moto.endpoint());
    config.jobs.job_uploads = Some("s3://media/uploads".into());
    let server = liveslice_server::app::start(&config)
        .await
        .expect("server starts");
    let url = grpc_url(&server);
    let file = testdata_path("mp4_av_48k.mp4");
    let out = run(&[
        "job",
        "submit",
        "--upload",
        file.to_str().unwrap(),
        "--output",
        "s3://media/out/cli",
        "--formats",
        "cmaf",
        "--server",
        &url,
        "--watch",
    ])
    .await;
    let stdout = ok(&out, "job submit --upload --watch");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("uploaded as s3://media/uploads/"),
        "{stderr}"
    );
    assert!(stderr.contains("100.0 %"), "a progress bar: {stderr}");
    assert!(stdout.contains(": done"), "{stdout}");
    assert!(stdout.contains("120 frames, 2 segments"), "{stdout}");
    assert!(
        stdout.contains("wrote s3://media/out/cli/index.m3u8"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("ts/index.m3u8"),
        "only cmaf asked for: {stdout}"
    );
    let uploaded = moto.list("media", "uploads/");
    assert!(
        uploaded.len() == 1 && uploaded[0].ends_with("/mp4_av_48k.mp4"),
        "{uploaded:?}"
    );
    assert_eq!(
        moto.get("media", &uploaded[0]).unwrap(),
        testdata("mp4_av_48k.mp4"),
        "the upload is the file"
    );
    let playlist = String::from_utf8(moto.get("media", "out/cli/index.m3u8").unwrap()).unwrap();
    assert_eq!(playlist.matches("#EXTINF").count(), 2, "{playlist}");
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("job ")?.strip_suffix(" queued"))
        .expect("the job id")
        .to_string();
    let out = run(&["job", "get", &id, "--server", &url]).await;
    let got = ok(&out, "job get");
    assert!(got.contains(&format!("job {id}: done")), "{got}");

    // A source that is not there: the command fails with the reason.
    let out = run(&[
        "job",
        "submit",
        "s3://media/uploads/none.mp4",
        "--output",
        "s3://media/out/none",
        "--server",
        &url,
        "--watch",
    ])
    .await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no such object"), "{stderr}");
    // Neither a source nor --upload: clap says so.
    let out = run(&[
        "job",
        "submit",
        "--output",
        "s3://media/x",
        "--server",
        &url,
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--upload"),
        "{}",
        text(&out.stderr)
    );
    server.shutdown().await;
}

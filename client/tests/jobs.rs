//! `liveslice job` against a real cluster: NATS JetStream
//! (`nats-server -js`), moto's S3 API on loopback, and a server that is a
//! worker with direct uploads on.

mod common;

mod cluster;

use cluster::nats::Nats;
use cluster::s3::{have_moto, Moto};
use common::tools;
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

/// The batch Indexed Job's script (deploy/kubernetes/batch/
/// package-job.yaml), run by sh as each pod would run it: pod N packages
/// line N+1 of the list into $OUTPUT/<name>/ with the real `liveslice
/// package` of S3 URLs (moto), segments and playlists in the bucket; an
/// index past the list fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_jobs_script_packages_each_listed_file() {
    let what = "the Kubernetes batch Job's script";
    if !have_moto(what)
        || !tools::require_tool(
            what,
            "python3 with PyYAML",
            tools::runs("python3", &["-c", "import yaml"]),
            "pip install pyyaml",
        )
    {
        return;
    }
    // The script and where the list is mounted, from the manifest.
    let manifest = testdata_path("../deploy/kubernetes/batch/package-job.yaml");
    let read = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, yaml\n\
             d = yaml.safe_load(open(sys.argv[1]))\n\
             s = d['spec']['template']['spec']\n\
             c = s['containers'][0]\n\
             cm = [v['name'] for v in s['volumes'] if 'configMap' in v][0]\n\
             print([m['mountPath'] for m in c['volumeMounts'] if m['name'] == cm][0])\n\
             print(c['args'][0], end='')",
        ])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", text(&read.stderr));
    let read = text(&read.stdout);
    let (mount, script) = read.split_once('\n').unwrap();
    std::env::set_var("AWS_ACCESS_KEY_ID", "liveslice-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "liveslice-test");
    let moto = Moto::start();
    moto.create_bucket("media");
    moto.put("media", "in/a.mp4", &testdata("mp4_av_48k.mp4"));
    moto.put("media", "in/b.h264", &testdata("baseline_30.h264"));
    let dir = std::env::temp_dir().join(format!("liveslice-batch-{}", std::process::id()));
    let list = dir.join("batch");
    let work = dir.join("work");
    std::fs::create_dir_all(&list).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        list.join("files.txt"),
        "s3://media/in/a.mp4\ns3://media/in/b.h264\n",
    )
    .unwrap();
    let script = script.replace(mount, list.to_str().unwrap());
    let bin_dir = std::path::Path::new(BIN).parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pod = |index: usize| {
        std::process::Command::new("sh")
            .args(["-c", &script])
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("OUTPUT", "s3://media/packaged")
            .env("LIVESLICE_S3_ENDPOINT", moto.endpoint())
            .env("LIVESLICE_S3_REGION", "us-east-1")
            .env("TMPDIR", &work)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    for (index, name, frames) in [(0, "a", 120), (1, "b", 180)] {
        let out = pod(index);
        let stdout = ok(&out, &format!("pod {index}"));
        assert!(stdout.contains(&format!("{frames} frames")), "{stdout}");
        for pl in ["index.m3u8", "ts/index.m3u8", "manifest.mpd"] {
            let key = format!("packaged/{name}/{pl}");
            let text = String::from_utf8(moto.get("media", &key).expect(&key)).unwrap();
            if pl.ends_with(".m3u8") {
                assert!(text.contains("#EXT-X-ENDLIST"), "{key}");
                let dir = key.trim_end_matches("index.m3u8");
                for seg in text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                {
                    assert!(
                        moto.get("media", &format!("{dir}{seg}")).is_some(),
                        "{key} names {seg}"
                    );
                }
            }
        }
    }
    assert_eq!(
        std::fs::read_dir(&work).unwrap().count(),
        0,
        "work directories removed"
    );
    let out = pod(2);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no line 3"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

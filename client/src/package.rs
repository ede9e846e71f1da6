//! `liveslice package`: the server's engine run offline over a file, writing
//! the HLS + DASH tree the server would serve for the same stream: the
//! `liveslice-files` crate's [`Packager`] (the job workers' too), fed from
//! a file or a pipe.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use liveslice_engine::timing::FrameRate;
use liveslice_engine::PipelineOptions;
use liveslice_files::demux::VideoSource;
use liveslice_files::package::{feed, FileVideo, Packager};
use tokio::io::AsyncReadExt;

use crate::input::{parse_fps, parse_part_duration, parse_segment_duration, Input};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// H.264/H.265 Annex B file, an MPEG-TS or MP4/MOV file (its video),
    /// `-` for stdin, or an object: s3://BUCKET/KEY (downloaded first).
    #[arg(value_name = "FILE|-|s3://BUCKET/KEY")]
    pub input: String,
    /// Directory to write the tree into (created if missing), or
    /// s3://BUCKET/PREFIX (segments uploaded first, playlists last).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub out: PathBuf,
    /// The S3 API's URL for s3:// inputs and outputs (MinIO, moto, ...;
    /// plain http:// allowed). Default: AWS_ENDPOINT, or AWS's own.
    /// Credentials come from the AWS_* environment.
    #[arg(long, env = "LIVESLICE_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The S3 region (default: AWS_REGION, or us-east-1).
    #[arg(long, env = "LIVESLICE_S3_REGION")]
    pub s3_region: Option<String>,
    /// Frame rate for streams whose SPS carries no timing.
    #[arg(long, value_name = "N", value_parser = parse_fps)]
    pub fps: Option<u32>,
    /// Segment target duration (cut at the first keyframe at or after it).
    #[arg(long, value_name = "D", default_value = "2s", value_parser = parse_segment_duration)]
    pub segment_duration: Duration,
    /// Part target duration (each segment is muxed as parts closed at the
    /// first frame at or after it): the server's `--part-duration`, for its
    /// bytes. 100ms to 2s; at most the segment duration.
    #[arg(long, value_name = "D", default_value = "500ms", value_parser = parse_part_duration)]
    pub part_duration: Duration,
    /// Segments the playlists list (like the server's live window; older
    /// segments are deleted a window later, as the server stops serving
    /// them); 0 lists every segment, which is what a file usually wants.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub window: usize,
    /// Output formats to write: cmaf (HLS fMP4 + DASH), ts (HLS over
    /// MPEG-TS) or both; a format left out is neither muxed nor written.
    #[arg(long, value_name = "cmaf,ts", default_value = "cmaf,ts", value_parser = liveslice_server::config::parse_formats)]
    pub formats: liveslice_server::config::OutputFormats,
}

/// Read size from a pipe: large, since nothing waits on us.
const READ_BYTES: usize = 1 << 20;

/// A URL `package` reads or writes through object storage.
fn is_url(s: &str) -> bool {
    s.starts_with("s3://") || s.starts_with("file://")
}

/// A local path as a `file://` URL (absolute).
fn file_url(path: &std::path::Path) -> Result<String> {
    let abs =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(format!("file://{}", abs.display()))
}

/// `package` with an s3:// input or output: the job workers' code run
/// here (download, package, upload with playlists last).
async fn run_urls(a: Args) -> Result<()> {
    if a.input == "-" {
        anyhow::bail!("stdin (-) cannot be packaged to or from s3://: give a file");
    }
    if a.window != 0 {
        anyhow::bail!("--window is for directory trees; an s3:// package lists every segment");
    }
    let out = a.out.to_string_lossy().into_owned();
    let source = if is_url(&a.input) {
        a.input.clone()
    } else {
        file_url(std::path::Path::new(&a.input))?
    };
    let output = if is_url(&out) { out } else { file_url(&a.out)? };
    let spec = liveslice_server::jobs::JobSpec {
        source: source.clone(),
        output,
        formats: [("cmaf", a.formats.0.cmaf), ("ts", a.formats.0.ts)]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(f, _)| f.to_string())
            .collect(),
        segment_duration_ms: u32::try_from(a.segment_duration.as_millis()).unwrap_or(u32::MAX),
        part_duration_ms: u32::try_from(a.part_duration.as_millis()).unwrap_or(u32::MAX),
        fps: a.fps.unwrap_or(0),
        slice_seconds: 0,
    };
    // A local run reads and writes what its user may: every file:// path.
    let config = liveslice_server::jobs::JobConfig {
        job_files: Some("/".into()),
        job_endpoint: a.s3_endpoint,
        job_region: a.s3_region,
        ..Default::default()
    };
    let base = liveslice_server::config::Config::default().pipeline();
    let (outputs, summary) = liveslice_server::jobs::worker::run_once(&config, spec, base)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let drops = if summary.drops.is_empty() {
        String::new()
    } else {
        format!(", dropped {}", summary.drops)
    };
    println!(
        "{source}: {} frames in {} segments ({:.3} s){drops}",
        summary.frames,
        summary.segments,
        summary.seconds(),
    );
    println!("wrote {}", outputs.join(", "));
    Ok(())
}

pub async fn run(a: Args) -> Result<()> {
    if is_url(&a.input) || is_url(&a.out.to_string_lossy()) {
        return run_urls(a).await;
    }
    let mut input = Input::from_arg(&a.input);
    // A container file (MPEG-TS, MP4/MOV): its video, taken apart in
    // memory. Opened (and any other container refused) before anything is
    // written.
    let mut file_fps = None;
    // A container file's video, read from the file an access unit (MP4)
    // or PES packet (MPEG-TS) at a time: a file of any size is never
    // copied whole.
    let mut video = None;
    let source = input.to_string();
    let audio_note = || {
        eprintln!(
            "note: the AAC track of {source} is not packaged: `package` writes the video \
             (`publish` sends both tracks to a server, which serves both)"
        )
    };
    if let Some(d) = input.demux(false)? {
        file_fps = d.frame_rate;
        if d.audio.is_some() || d.audio_left_out {
            audio_note();
        }
        let name = format!("the video of {input} ({})", d.container.name());
        input = Input::Memory(name, bytes::Bytes::new());
        video = Some(FileVideo::Container(d.video));
    }
    // Otherwise: a regular file's memory map, or a reader (a pipe).
    if video.is_none() {
        video = input.map()?.map(FileVideo::AnnexB);
    }
    let mut reader = match &video {
        None => Some(input.open().await?),
        Some(_) => None,
    };
    // The server's own pipeline options (limits, DASH time URL), with this
    // command's segment and part durations, window and frame rate, as a
    // publisher's options would set them.
    let mut opts: PipelineOptions = liveslice_server::config::Config::default().pipeline();
    opts.segment_target_ms = u32::try_from(a.segment_duration.as_millis()).unwrap_or(60_000);
    opts.part_target_ms = u32::try_from(a.part_duration.as_millis()).unwrap_or(2_000);
    opts.window = if a.window == 0 {
        u32::MAX as usize
    } else {
        a.window
    };
    // Every segment is written out as it closes: the playlists list them
    // all, however many bytes they add up to.
    opts.list_every_segment = a.window == 0;
    // The container's rate, for a stream whose SPS has no timing.
    opts.target_rate = a.fps.or(file_fps).map(|f| FrameRate::new(f, 1));
    opts.formats = a.formats.0;
    let mut packager = Packager::new(opts, &a.out, input.is_live(), &input.to_string())?;

    if let Some(video) = &video {
        feed(video, &mut packager, &mut |_| ControlFlow::Continue(()))?;
        if let FileVideo::Container(VideoSource::Ts(v)) = video {
            if v.payloads_saw_audio() {
                audio_note();
            }
        }
    } else if let Some(reader) = reader.as_mut() {
        let mut buf = vec![0u8; READ_BYTES];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .with_context(|| format!("cannot read {input}"))?;
            if n == 0 {
                break;
            }
            packager.push(Bytes::copy_from_slice(&buf[..n]), false)?;
        }
    }
    let dir = packager.dir().display().to_string();
    let path = match &input {
        Input::File(p) => Some(p.clone()),
        _ => None,
    };
    let summary = packager.finish(path.as_deref())?;
    let drops = if summary.drops.is_empty() {
        String::new()
    } else {
        format!(", dropped {}", summary.drops)
    };
    println!(
        "{input}: {} frames in {} segments ({:.3} s){drops}",
        summary.frames,
        summary.segments,
        summary.seconds(),
    );
    let mut wrote = Vec::new();
    if a.formats.0.cmaf {
        wrote.push(format!("{dir}/index.m3u8 (HLS, CMAF)"));
    }
    if a.formats.0.ts {
        wrote.push(format!("{dir}/ts/index.m3u8 (HLS, MPEG-TS)"));
    }
    if a.formats.0.cmaf {
        wrote.push(format!("{dir}/manifest.mpd (DASH)"));
    }
    println!("wrote {}", wrote.join(", "));
    Ok(())
}

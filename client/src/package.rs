//! `liveslice package`: the server's engine run offline over a file, writing
//! the HLS + DASH tree the server would serve for the same stream, with the
//! engine's own tree writer ([`TreeWriter`]): the same parts, muxed by the
//! same `PartMuxer`, so the same bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use liveslice_engine::pipeline::DropReport;
use liveslice_engine::timing::FrameRate;
use liveslice_engine::tree::TreeWriter;
use liveslice_engine::{DropReason, Event, PipelineOptions, SessionPipeline, TIMESCALE};
use tokio::io::AsyncReadExt;

use crate::demux::VideoSource;
use crate::input::{now_unix_ns, parse_fps, parse_part_duration, parse_segment_duration, Input};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// H.264/H.265 Annex B file, an MPEG-TS or MP4/MOV file (its video),
    /// or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub input: String,
    /// Directory to write the tree into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
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

/// Read size: large, since nothing waits on us.
const READ_BYTES: usize = 1 << 20;

pub async fn run(a: Args) -> Result<()> {
    let mut input = Input::from_arg(&a.input);
    // A container file (MPEG-TS, MP4/MOV): its video, taken apart in
    // memory. Opened (and any other container refused) before anything is
    // written.
    let mut file_fps = None;
    // A container file's video, read from the file an access unit (MP4)
    // or PES packet (MPEG-TS) at a time: a file of any size is never
    // copied whole.
    let mut file_video = None;
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
        match d.video {
            VideoSource::AnnexB(b) => input = Input::Memory(name, b),
            video => {
                let video = std::sync::Arc::new(video);
                file_video = Some(video.clone());
                input = Input::Demuxed(name, video);
            }
        }
    }
    // Otherwise: a regular file's memory map, or a reader (a pipe).
    let mapped = match (&file_video, &input) {
        (Some(_), _) => None,
        (None, Input::Memory(_, bytes)) => Some(bytes.clone()),
        (None, _) => input.map()?,
    };
    let mut reader = match (&file_video, &mapped) {
        (None, None) => Some(input.open().await?),
        _ => None,
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
    let mut pipeline = SessionPipeline::new(opts);
    let mut packager = Packager::new(
        TreeWriter::with_formats(&a.out, a.formats.0)?,
        input.is_live(),
    );

    let mut events = Vec::new();
    if let Some(VideoSource::Mp4(v)) = file_video.as_deref() {
        // Whole access units: each is cut as soon as it is pushed.
        let mut au = BytesMut::new();
        for i in 0..v.len() {
            v.access_unit(i, &mut au)?;
            pipeline.push(au.split().freeze(), None, now_unix_ns(), true, &mut events);
            packager.handle(&mut events, &pipeline, &input)?;
        }
    } else if let Some(VideoSource::Ts(v)) = file_video.as_deref() {
        let mut payloads = v.payloads();
        while let Some(data) = payloads.next_payload()? {
            pipeline.push(Bytes::from(data), None, now_unix_ns(), false, &mut events);
            packager.handle(&mut events, &pipeline, &input)?;
        }
        if payloads.audio_seen() {
            audio_note();
        }
    } else if let Some(all) = mapped {
        // A regular file: slices of its memory map, no copies.
        let mut pos = 0;
        while pos < all.len() {
            let end = (pos + READ_BYTES).min(all.len());
            pipeline.push(all.slice(pos..end), None, now_unix_ns(), false, &mut events);
            packager.handle(&mut events, &pipeline, &input)?;
            pos = end;
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
            pipeline.push(
                Bytes::copy_from_slice(&buf[..n]),
                None,
                now_unix_ns(),
                false,
                &mut events,
            );
            packager.handle(&mut events, &pipeline, &input)?;
        }
    }
    pipeline.finish(now_unix_ns(), &mut events);
    packager.handle(&mut events, &pipeline, &input)?;

    let stats = pipeline.stats();
    if pipeline.manifests().is_none() || stats.frames == 0 {
        // Leave no empty tree behind (remove_dir only removes empty ones).
        let _ = std::fs::remove_dir(a.out.join("ts"));
        let _ = std::fs::remove_dir(&a.out);
        // Say what the input is when that explains it.
        let head = match &input {
            Input::File(p) => std::fs::File::open(p)
                .and_then(|mut f| {
                    let mut b = [0u8; 2];
                    let n = std::io::Read::read(&mut f, &mut b)?;
                    Ok(b[..n].to_vec())
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if matches!(&input, Input::File(_)) && head.is_empty() {
            bail!(
                "{input} is empty: `package` needs an H.264 or H.265 stream, or an MP4/MOV or \
                 MPEG-TS file with such video"
            );
        }
        if head.len() == 2 && head[0] == 0xff && head[1] & 0xf6 == 0xf0 {
            bail!(
                "{input} is AAC audio (ADTS), not video: `package` writes a video's tree; \
                 publish it to a server instead (`liveslice publish --session S {input}` makes \
                 an audio-only session, or `--audio {input}` beside a video)"
            );
        }
        bail!(
            "{input} contains no H.264 or H.265 access units{}",
            packager.drops_summary(" (", ")")
        );
    }
    let dir = packager.tree.dir().display();
    println!(
        "{input}: {} frames in {} segments ({:.3} s){}",
        stats.frames,
        stats.segments,
        packager.media_ticks as f64 / TIMESCALE as f64,
        packager.drops_summary(", dropped ", "")
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

/// Turns engine events into files.
struct Packager {
    tree: TreeWriter,
    /// The last report per reason (its `total` counts them all).
    drops: BTreeMap<DropReason, DropReport>,
    media_ticks: u64,
    /// The input arrives over time (a pipe): playlists are written after
    /// every segment. Otherwise at most once per [`PLAYLIST_EVERY`] and at
    /// the end: each write renders every segment listed so far, so writing
    /// them after each of a long file's thousands of segments would cost
    /// time in the square of its length.
    live: bool,
    written: Option<std::time::Instant>,
}

/// How often the playlists of a file being packaged are written while it
/// is (so a player can follow the tree as it grows).
const PLAYLIST_EVERY: Duration = Duration::from_secs(1);

impl Packager {
    fn new(tree: TreeWriter, live: bool) -> Self {
        Self {
            tree,
            drops: BTreeMap::new(),
            media_ticks: 0,
            live,
            written: None,
        }
    }

    /// One push's events to the tree, then the playlists (once its
    /// segments are on disk), so a tree fed from a live stdin plays while
    /// it grows.
    fn handle(
        &mut self,
        events: &mut Vec<Event>,
        pipeline: &SessionPipeline,
        input: &Input,
    ) -> Result<()> {
        let (mut changed, mut ended) = (false, false);
        for e in events.drain(..) {
            self.tree.handle(&e)?;
            match e {
                Event::Segment(s) => {
                    self.media_ticks += s.record.duration;
                    changed = true;
                }
                Event::Ended(_) => (changed, ended) = (true, true),
                Event::Dropped(d) => {
                    self.drops.insert(d.reason, d);
                }
                Event::Fatal(e) => bail!("{input}: {e}"),
                Event::Config(_)
                | Event::Frame(_)
                | Event::Part(_)
                | Event::AudioFrame(_)
                | Event::AudioConfig(_) => {}
            }
        }
        let due =
            self.live || ended || self.written.is_none_or(|at| at.elapsed() >= PLAYLIST_EVERY);
        if let (true, true, Some(m)) = (changed, due, pipeline.manifests()) {
            self.tree.write_manifests(m, now_unix_ns() / 1_000_000)?;
            self.written = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// "N frames (reason: first detail), ..." or "" when nothing dropped.
    fn drops_summary(&self, before: &str, after: &str) -> String {
        if self.drops.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .drops
            .values()
            .map(|d| {
                let (one, many) = if d.reason == DropReason::NotH264 {
                    ("byte run", "byte runs")
                } else {
                    ("frame", "frames")
                };
                let what = if d.total == 1 { one } else { many };
                format!("{} {what} {}: {}", d.total, d.reason.as_str(), d.detail)
            })
            .collect();
        format!("{before}{}{after}", parts.join("; "))
    }
}

//! A file packaged into the HLS + DASH tree the server would serve for the
//! same stream, with the engine's pipeline and tree writer
//! ([`TreeWriter`]): the same parts, muxed by the same `PartMuxer`, so the
//! same bytes. `liveslice package` and the job workers
//! (`liveslice-server --worker`) both run this.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use liveslice_engine::container::{detect, SNIFF_BYTES};
use liveslice_engine::pipeline::{DropReport, Formats};
use liveslice_engine::tree::TreeWriter;
use liveslice_engine::{DropReason, Event, PipelineOptions, SessionPipeline, TIMESCALE};

use crate::demux::{demux_file, VideoSource};
use crate::error::{bail, FileError, Result};

/// Bytes pushed at a time from a memory-mapped Annex B file.
const READ_BYTES: usize = 1 << 20;

/// How often the playlists of a file being packaged are written while it
/// is (so a player can follow the tree as it grows).
const PLAYLIST_EVERY: Duration = Duration::from_secs(1);

/// How a job or the CLI is doing, reported after each push that closed a
/// segment (and at the end).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    /// Frames accepted so far.
    pub frames: u64,
    /// Segments written so far.
    pub segments: u64,
    /// How much of the input was read, 0.0 to 1.0.
    pub fraction: f64,
}

/// What a finished packaging wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub frames: u64,
    pub segments: u64,
    /// Media duration, 90 kHz ticks.
    pub media_ticks: u64,
    /// "N frames (reason: first detail); ..." or "" when nothing dropped.
    pub drops: String,
    /// The formats written.
    pub formats: Formats,
}

impl Summary {
    /// Media duration, seconds.
    pub fn seconds(&self) -> f64 {
        self.media_ticks as f64 / TIMESCALE as f64
    }
}

/// The pipeline and the tree writer: bytes in, files out.
pub struct Packager {
    pipeline: SessionPipeline,
    tree: TreeWriter,
    events: Vec<Event>,
    /// The last report per reason (its `total` counts them all).
    drops: BTreeMap<DropReason, DropReport>,
    media_ticks: u64,
    segments: u64,
    formats: Formats,
    /// The input arrives over time (a pipe): playlists are written after
    /// every segment. Otherwise at most once per [`PLAYLIST_EVERY`] and at
    /// the end: each write renders every segment listed so far, so writing
    /// them after each of a long file's thousands of segments would cost
    /// time in the square of its length.
    live: bool,
    written: Option<Instant>,
    /// The input's name, for messages.
    name: String,
}

impl Packager {
    /// A packager writing into `out` (created if missing). `live`: the
    /// input arrives over time (playlists after every segment).
    pub fn new(opts: PipelineOptions, out: &Path, live: bool, name: &str) -> Result<Self> {
        let formats = opts.formats;
        Ok(Self {
            pipeline: SessionPipeline::new(opts),
            tree: TreeWriter::with_formats(out, formats).map_err(|e| FileError(e.to_string()))?,
            events: Vec::new(),
            drops: BTreeMap::new(),
            media_ticks: 0,
            segments: 0,
            formats,
            live,
            written: None,
            name: name.to_string(),
        })
    }

    /// The directory written into.
    pub fn dir(&self) -> &Path {
        self.tree.dir()
    }

    /// Annex B bytes (any chunking); `end_of_access_unit`: they end
    /// exactly at an access unit's end. Returns whether a segment closed.
    pub fn push(&mut self, data: Bytes, end_of_access_unit: bool) -> Result<bool> {
        let before = self.segments;
        self.pipeline.push(
            data,
            None,
            now_unix_ns(),
            end_of_access_unit,
            &mut self.events,
        );
        self.handle()?;
        Ok(self.segments != before)
    }

    /// How far it got.
    pub fn progress(&self, fraction: f64) -> Progress {
        Progress {
            frames: self.pipeline.stats().frames,
            segments: self.segments,
            fraction: fraction.clamp(0.0, 1.0),
        }
    }

    /// Ends the stream: the last segment and the final playlists. Fails
    /// (and removes the empty tree) when nothing was packaged, saying what
    /// the input is when that explains it. `path`: the input file, if it
    /// is one.
    pub fn finish(mut self, path: Option<&Path>) -> Result<Summary> {
        self.pipeline.finish(now_unix_ns(), &mut self.events);
        self.handle()?;
        let stats = self.pipeline.stats();
        let input = &self.name;
        if self.pipeline.manifests().is_none() || stats.frames == 0 {
            // Leave no empty tree behind (remove_dir only removes empty ones).
            let _ = std::fs::remove_dir(self.tree.dir().join("ts"));
            let _ = std::fs::remove_dir(self.tree.dir());
            let head = path
                .and_then(|p| {
                    std::fs::File::open(p)
                        .and_then(|mut f| {
                            let mut b = [0u8; 2];
                            let n = std::io::Read::read(&mut f, &mut b)?;
                            Ok(b[..n].to_vec())
                        })
                        .ok()
                })
                .unwrap_or_default();
            if path.is_some() && head.is_empty() {
                bail!(
                    "{input} is empty: `package` needs an H.264 or H.265 stream, or an MP4/MOV \
                     or MPEG-TS file with such video"
                );
            }
            if head.len() == 2 && head[0] == 0xff && head[1] & 0xf6 == 0xf0 {
                bail!(
                    "{input} is AAC audio (ADTS), not video: `package` writes a video's tree; \
                     publish it to a server instead (`liveslice publish --session S {input}` \
                     makes an audio-only session, or `--audio {input}` beside a video)"
                );
            }
            bail!(
                "{input} contains no H.264 or H.265 access units{}",
                self.drops_summary(" (", ")")
            );
        }
        Ok(Summary {
            frames: stats.frames,
            segments: stats.segments,
            media_ticks: self.media_ticks,
            drops: self.drops_summary("", ""),
            formats: self.formats,
        })
    }

    /// One push's events to the tree, then the playlists (once its
    /// segments are on disk), so a tree fed from a live stdin plays while
    /// it grows.
    fn handle(&mut self) -> Result<()> {
        let (mut changed, mut ended) = (false, false);
        let tree_err = |e: liveslice_engine::tree::TreeError| FileError(e.to_string());
        for e in self.events.drain(..) {
            self.tree.handle(&e).map_err(tree_err)?;
            match e {
                Event::Segment(s) => {
                    self.media_ticks += s.record.duration;
                    self.segments += 1;
                    changed = true;
                }
                Event::Ended(_) => (changed, ended) = (true, true),
                Event::Dropped(d) => {
                    self.drops.insert(d.reason, d);
                }
                Event::Fatal(e) => bail!("{}: {e}", self.name),
                Event::Config(_)
                | Event::Frame(_)
                | Event::Part(_)
                | Event::AudioFrame(_)
                | Event::AudioConfig(_) => {}
            }
        }
        let due =
            self.live || ended || self.written.is_none_or(|at| at.elapsed() >= PLAYLIST_EVERY);
        if let (true, true, Some(m)) = (changed, due, self.pipeline.manifests()) {
            self.tree
                .write_manifests(m, now_unix_ns() / 1_000_000)
                .map_err(tree_err)?;
            self.written = Some(Instant::now());
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

/// A file's video as the packager reads it.
pub enum FileVideo {
    /// Raw Annex B: the file's memory map.
    AnnexB(Bytes),
    /// A container's video (MP4/MOV, MPEG-TS).
    Container(VideoSource),
}

/// Pushes all of `video` into `packager`, calling `progress` after each
/// push that closed a segment; `progress` returning `Break` stops it
/// (`Ok(false)`: stopped, the tree is incomplete).
pub fn feed(
    video: &FileVideo,
    packager: &mut Packager,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<bool> {
    let mut report = |packager: &Packager, closed: bool, fraction: f64| {
        if closed {
            progress(packager.progress(fraction))
        } else {
            ControlFlow::Continue(())
        }
    };
    match video {
        FileVideo::AnnexB(all) => {
            // Slices of the memory map, no copies.
            let mut pos = 0;
            while pos < all.len() {
                let end = (pos + READ_BYTES).min(all.len());
                let closed = packager.push(all.slice(pos..end), false)?;
                pos = end;
                let fraction = pos as f64 / all.len() as f64;
                if report(packager, closed, fraction).is_break() {
                    return Ok(false);
                }
            }
        }
        FileVideo::Container(VideoSource::AnnexB(all)) => {
            let closed = packager.push(all.clone(), false)?;
            if report(packager, closed, 1.0).is_break() {
                return Ok(false);
            }
        }
        FileVideo::Container(VideoSource::Mp4(v)) => {
            // Whole access units: each is cut as soon as it is pushed.
            let mut au = BytesMut::new();
            for i in 0..v.len() {
                v.access_unit(i, &mut au)?;
                let closed = packager.push(au.split().freeze(), true)?;
                let fraction = (i + 1) as f64 / v.len() as f64;
                if report(packager, closed, fraction).is_break() {
                    return Ok(false);
                }
            }
        }
        FileVideo::Container(VideoSource::Ts(v)) => {
            let mut payloads = v.payloads();
            while let Some(data) = payloads.next_payload()? {
                let closed = packager.push(Bytes::from(data), false)?;
                let fraction = payloads.position() as f64 / v.size().max(1) as f64;
                if report(packager, closed, fraction).is_break() {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

/// A regular, non-empty file's bytes through a read-only memory map, and
/// the open file; `None` for an empty file or one that is not regular (a
/// pipe, a device).
pub fn map_file(path: &Path) -> Result<Option<(Bytes, std::sync::Arc<std::fs::File>)>> {
    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| FileError(format!("cannot open {shown}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| FileError(format!("cannot read {shown}: {e}")))?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read-only and private to this process; as with
    // any memory map, a file truncated by another process while it is read
    // would fault (SIGBUS), which is the documented trade for not copying a
    // file that can be gigabytes long.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| FileError(format!("cannot map {shown}: {e}")))?;
    Ok(Some((Bytes::from_owner(map), std::sync::Arc::new(file))))
}

/// A file's video: a container's (MP4/MOV, MPEG-TS) taken apart, or raw
/// Annex B as it is. Other containers (Matroska, FLV) are refused with the
/// ffmpeg command that remuxes them. `name`: the file as messages show it.
pub fn open_video(path: &Path, name: &str) -> Result<(FileVideo, Option<u32>)> {
    let Some((bytes, file)) = map_file(path)? else {
        bail!(
            "{name} is empty or not a regular file: packaging needs an H.264 or H.265 stream, \
             or an MP4/MOV or MPEG-TS file with such video"
        );
    };
    if let Some(d) = demux_file(&bytes, Some(file), name, false) {
        let d = d?;
        return Ok((FileVideo::Container(d.video), d.frame_rate));
    }
    if let Some(c) = detect(&bytes[..bytes.len().min(SNIFF_BYTES)]) {
        bail!(
            "{name} is in the {c} container format, which packaging does not take apart; \
             remux it to MP4 first: ffmpeg -i INPUT -c copy OUTPUT.mp4"
        );
    }
    Ok((FileVideo::AnnexB(bytes), None))
}

/// Packages the file at `path` into `out` with `opts` (its frame rate
/// from the container when `opts.target_rate` is none and the SPS has no
/// timing). `progress` as for [`feed`]; a `Break` from it ends with an
/// error saying the packaging was stopped.
pub fn package_file(
    path: &Path,
    name: &str,
    out: &Path,
    mut opts: PipelineOptions,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Summary> {
    let (video, rate) = open_video(path, name)?;
    if opts.target_rate.is_none() {
        opts.target_rate = rate.map(|f| liveslice_engine::timing::FrameRate::new(f, 1));
    }
    let mut packager = Packager::new(opts, out, false, name)?;
    if !feed(&video, &mut packager, progress)? {
        bail!("{name}: packaging was stopped");
    }
    let summary = packager.finish(Some(path))?;
    let _ = progress(Progress {
        frames: summary.frames,
        segments: summary.segments,
        fraction: 1.0,
    });
    Ok(summary)
}

/// Wall clock, ns since the Unix epoch (the frames' arrival times).
fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

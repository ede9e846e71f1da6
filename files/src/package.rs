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

/// Which part of a stream's tree a packager writes. A stream cut into
/// slices by time is packaged by several packagers at once, each running
/// the engine over the stream from its start (so every segment gets the
/// numbers, times and bytes the whole stream's packaging gives it) but
/// muxing and writing only its own segments; one more writes the
/// playlists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Portion {
    /// Every segment, then the playlists.
    Whole,
    /// The segments of slice `index`: those whose first frame (in decode
    /// order) has its decode time in `[index × seconds, (index + 1) ×
    /// seconds)`; no playlists. The engine stops once the slice is past.
    Slice { index: u32, seconds: u32 },
    /// The playlists alone, naming every segment (written by the slices).
    Playlists,
}

impl Portion {
    /// The slice a decode time (90 kHz) falls in.
    fn slice_of(seconds: u32, dts: u64) -> u64 {
        dts / (u64::from(seconds.max(1)) * TIMESCALE)
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
    portion: Portion,
    /// A slice: whether each segment seen is the slice's (decided at its
    /// first frame; entries of closed segments go).
    mine: BTreeMap<u64, bool>,
    /// A slice: a frame of a later slice was seen.
    past: bool,
    /// A slice: the slice's segment still open.
    open_mine: Option<u64>,
    /// Frames written (a slice's own).
    frames_written: u64,
}

impl Packager {
    /// A packager writing into `out` (created if missing). `live`: the
    /// input arrives over time (playlists after every segment).
    pub fn new(opts: PipelineOptions, out: &Path, live: bool, name: &str) -> Result<Self> {
        Self::portion(opts, out, live, name, Portion::Whole)
    }

    /// A packager of `portion` of the stream (see [`Portion`]).
    pub fn portion(
        opts: PipelineOptions,
        out: &Path,
        live: bool,
        name: &str,
        portion: Portion,
    ) -> Result<Self> {
        let formats = opts.formats;
        let tree = match portion {
            Portion::Playlists => TreeWriter::playlists_only(out, formats),
            _ => TreeWriter::with_formats(out, formats),
        }
        .map_err(|e| FileError(e.to_string()))?;
        Ok(Self {
            pipeline: SessionPipeline::new(opts),
            tree,
            events: Vec::new(),
            drops: BTreeMap::new(),
            media_ticks: 0,
            segments: 0,
            formats,
            live,
            written: None,
            name: name.to_string(),
            portion,
            mine: BTreeMap::new(),
            past: false,
            open_mine: None,
            frames_written: 0,
        })
    }

    /// A slice whose segments are all written: nothing more to push.
    pub fn slice_done(&self) -> bool {
        matches!(self.portion, Portion::Slice { .. }) && self.past && self.open_mine.is_none()
    }

    /// Whether an event goes to the tree (a slice's own segments only).
    fn takes(&mut self, e: &Event) -> bool {
        let Portion::Slice { index, seconds } = self.portion else {
            return true;
        };
        match e {
            Event::Frame(f) => {
                let mine = *self.mine.entry(f.segment).or_insert_with(|| {
                    let slice = Portion::slice_of(seconds, f.dts);
                    if slice > u64::from(index) {
                        self.past = true;
                    }
                    let mine = slice == u64::from(index);
                    if mine {
                        self.open_mine = Some(f.segment);
                    }
                    mine
                });
                if mine {
                    self.frames_written += 1;
                }
                mine
            }
            Event::Part(p) => self.mine.get(&p.segment).copied().unwrap_or(false),
            Event::Segment(s) => {
                let seq = s.record.sequence;
                let mine = self.mine.get(&seq).copied().unwrap_or(false);
                self.mine = self.mine.split_off(&seq);
                if self.open_mine == Some(seq) {
                    self.open_mine = None;
                }
                mine
            }
            _ => true,
        }
    }

    /// The directory written into.
    pub fn dir(&self) -> &Path {
        self.tree.dir()
    }

    /// Annex B bytes (any chunking); `end_of_access_unit`: they end
    /// exactly at an access unit's end. Returns whether a segment closed.
    pub fn push(&mut self, data: Bytes, end_of_access_unit: bool) -> Result<bool> {
        let before = self.segments;
        if self.slice_done() {
            return Ok(false);
        }
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
        let (frames, segments) = match self.portion {
            Portion::Slice { .. } => (self.frames_written, self.segments),
            _ => (stats.frames, stats.segments),
        };
        Ok(Summary {
            frames,
            segments,
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
        let mut events = std::mem::take(&mut self.events);
        for e in events.drain(..) {
            if !self.takes(&e) {
                continue;
            }
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
                | Event::AudioConfig(_)
                | Event::Discontinuity => {}
            }
        }
        self.events = events;
        let due = match self.portion {
            Portion::Whole => {
                self.live || ended || self.written.is_none_or(|at| at.elapsed() >= PLAYLIST_EVERY)
            }
            // The playlists once, at the end (each names every segment).
            Portion::Playlists => ended,
            Portion::Slice { .. } => false,
        };
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
                if packager.slice_done() {
                    return Ok(true);
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
                if packager.slice_done() {
                    return Ok(true);
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
                if packager.slice_done() {
                    return Ok(true);
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
    opts: PipelineOptions,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Summary> {
    package_file_portion(path, name, out, opts, Portion::Whole, progress)
}

/// [`package_file`] of a [`Portion`] of the file's tree.
pub fn package_file_portion(
    path: &Path,
    name: &str,
    out: &Path,
    mut opts: PipelineOptions,
    portion: Portion,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Summary> {
    let (video, rate) = open_video(path, name)?;
    if opts.target_rate.is_none() {
        opts.target_rate = rate.map(|f| liveslice_engine::timing::FrameRate::new(f, 1));
    }
    let mut packager = Packager::portion(opts, out, false, name, portion)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for sub in ["", "ts"] {
            for e in std::fs::read_dir(dir.join(sub)).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    let name = format!("{sub}/{}", e.file_name().to_string_lossy());
                    out.insert(name, std::fs::read(e.path()).unwrap());
                }
            }
        }
        out
    }

    /// Slices by time plus the playlists make the whole tree: the same
    /// segment files (CMAF byte for byte; MPEG-TS but for continuity
    /// counters, which start afresh in each slice), and the same
    /// playlists but for wall-clock times; each slice writes only its
    /// segments and no playlist.
    #[test]
    fn slices_and_playlists_make_the_whole_tree() {
        let lap = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/baseline_30.h264"),
        )
        .unwrap();
        let base = std::env::temp_dir().join(format!("liveslice-slices-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let input = base.join("in.h264");
        std::fs::write(&input, lap.repeat(4)).unwrap();
        let opts = || PipelineOptions {
            window: u32::MAX as usize,
            list_every_segment: true,
            ..Default::default()
        };
        let go = &mut |_| ControlFlow::Continue(());
        let whole = package_file(&input, "in", &base.join("whole"), opts(), go).unwrap();
        assert_eq!((whole.frames, whole.segments), (720, 12));
        let sliced = base.join("sliced");
        let mut frames = 0;
        for index in 0..3 {
            let dir = base.join(format!("slice-{index}"));
            let portion = Portion::Slice { index, seconds: 10 };
            let s = package_file_portion(&input, "in", &dir, opts(), portion, go).unwrap();
            frames += s.frames;
            let files = tree(&dir);
            assert!(
                !files
                    .keys()
                    .any(|f| f.ends_with(".m3u8") || f.ends_with(".mpd")),
                "slice {index} wrote playlists: {:?}",
                files.keys()
            );
            for (name, bytes) in files {
                let to = sliced.join(name.trim_start_matches('/'));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::write(to, bytes).unwrap();
            }
        }
        assert_eq!(frames, 720);
        let p =
            package_file_portion(&input, "in", &sliced, opts(), Portion::Playlists, go).unwrap();
        assert_eq!((p.frames, p.segments), (720, 12));
        let (a, b) = (tree(&base.join("whole")), tree(&sliced));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        let clock = |t: &[u8]| -> String {
            String::from_utf8_lossy(t)
                .lines()
                .filter(|l| !l.starts_with("#EXT-X-PROGRAM-DATE-TIME"))
                .map(|l| {
                    l.split(' ')
                        .filter(|w| {
                            !w.starts_with("availabilityStartTime=")
                                && !w.starts_with("publishTime=")
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        for (name, bytes) in &a {
            if name.ends_with(".m4s") || name.ends_with(".mp4") {
                assert!(bytes == &b[name], "{name} differs");
            } else if name.ends_with(".ts") {
                assert_eq!(bytes.len(), b[name].len(), "{name}");
            } else {
                assert_eq!(clock(bytes), clock(&b[name]), "{name}");
            }
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}

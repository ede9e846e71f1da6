//! [`TreeWriter`]: the HLS (CMAF and MPEG-TS) + DASH tree on disk, under the
//! server's file names and with the server's bytes:
//!
//! ```text
//! DIR/index.m3u8      HLS over CMAF          DIR/manifest.mpd    DASH
//! DIR/init-N.mp4      the CMAF init segment of codec config N
//! DIR/seg-N.m4s       segment N: `styp`, then the CMAF chunk of each of its parts
//! DIR/ts/index.m3u8   HLS over MPEG-TS       DIR/ts/seg-N.ts     its parts' TS packets, joined
//! ```
//!
//! It is fed the engine's events in order — from a [`SessionPipeline`]
//! (`liveslice package`), or rebuilt from a subscription by
//! [`Replay`](crate::replay::Replay) (`liveslice play --out`) — and holds
//! little: the frames of the open part, the muxed parts of the open segment
//! and the codec configs. Each part is muxed once, through a [`PartMuxer`],
//! when its `Event::Part` arrives (the CMAF chunk and the TS packets); a
//! segment's files are written when its `Event::Segment` arrives, its init
//! segment first if the tree does not have it yet. The server muxes the same
//! parts through its own `PartMuxer`, from the session's start, so a tree
//! fed a session's events from its start holds the bytes the server serves
//! (MPEG-TS continuity counters, which run on from part to part, included).
//!
//! Playlists are rendered from the [`Manifests`] passed to
//! [`write_manifests`](TreeWriter::write_manifests) — the pipeline's own,
//! after the events that made them — which refuses to name a segment the
//! tree does not hold; a subscriber that keeps the server's playlists
//! writes them as text ([`write_playlists`](TreeWriter::write_playlists),
//! [`write_dash`](TreeWriter::write_dash)). Segments that left the
//! playlists' window more than a window ago are deleted, as the server
//! stops serving them then.
//!
//! Every file is written under a temporary name beside it (`.NAME.tmp`) and
//! renamed into place, so a player reading the tree while it grows never
//! sees half a file, and segments are on disk before any playlist names
//! them. Synchronous `std::fs` only: no runtime, no threads.
//!
//! [`SessionPipeline`]: crate::SessionPipeline

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::frame::{CodecConfig, Frame, PartRecord, SegmentRecord};
use crate::mux::cmaf::{self, CmafError};
use crate::mux::parts::{
    cmaf_segment_pieces, concat, ts_segment_pieces, Formats, MuxedPart, PartMuxError, PartMuxer,
};
use crate::pipeline::Event;
use crate::playlist::{init_name, segment_name, HlsFlavour, Manifests};

/// `ts/seg-N.ts`: MPEG-TS segments live beside their playlist, under `ts/`.
fn ts_segment_file(seq: u64) -> String {
    format!("ts/{}", segment_name(seq, HlsFlavour::Ts))
}

/// Codec configs kept (a tree rarely needs more than the last two).
const MAX_CONFIGS: usize = 8;

/// Why the tree could not be written. Each names the file it was writing
/// and, where there is one, the segment and part.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        segment: Option<u64>,
        source: std::io::Error,
    },
    #[error("cannot rename {} to {}: {source}", from.display(), path.display())]
    Rename {
        from: PathBuf,
        path: PathBuf,
        segment: Option<u64>,
        source: std::io::Error,
    },
    #[error("cannot mux {} (codec config {config}, for segment {segment}): {source}", path.display())]
    Init {
        path: PathBuf,
        config: u32,
        segment: u64,
        source: CmafError,
    },
    #[error("cannot mux {}: {source}", path.display())]
    Mux {
        path: PathBuf,
        segment: u64,
        part: u64,
        source: PartMuxError,
    },
    #[error("cannot mux {}: part {part} uses codec config {config}, which never arrived", path.display())]
    UnknownConfig {
        path: PathBuf,
        segment: u64,
        part: u64,
        config: u32,
    },
    #[error(
        "cannot mux {}: part {part} is {want} frames from frame {first}, {got} of them arrived",
        path.display()
    )]
    Frames {
        path: PathBuf,
        segment: u64,
        part: u64,
        first: u64,
        want: u32,
        got: usize,
    },
    #[error(
        "cannot write {}: segment {segment} is incomplete ({parts} parts muxed, not all of its own)",
        path.display()
    )]
    Incomplete {
        path: PathBuf,
        segment: u64,
        parts: usize,
    },
    #[error("not writing {}: it would name segment {segment}, which the tree does not hold", path.display())]
    NotWritten { path: PathBuf, segment: u64 },
}

impl TreeError {
    /// The file (or directory) concerned.
    pub fn path(&self) -> &Path {
        match self {
            Self::CreateDir { path, .. }
            | Self::Write { path, .. }
            | Self::Rename { path, .. }
            | Self::Init { path, .. }
            | Self::Mux { path, .. }
            | Self::UnknownConfig { path, .. }
            | Self::Frames { path, .. }
            | Self::Incomplete { path, .. }
            | Self::NotWritten { path, .. } => path,
        }
    }

    /// The segment concerned, if any.
    pub fn segment(&self) -> Option<u64> {
        match self {
            Self::CreateDir { .. } => None,
            Self::Write { segment, .. } | Self::Rename { segment, .. } => *segment,
            Self::Init { segment, .. }
            | Self::Mux { segment, .. }
            | Self::UnknownConfig { segment, .. }
            | Self::Frames { segment, .. }
            | Self::Incomplete { segment, .. }
            | Self::NotWritten { segment, .. } => Some(*segment),
        }
    }
}

/// Writes the tree; see the module docs.
pub struct TreeWriter {
    /// Which files are written.
    formats: Formats,
    dir: PathBuf,
    muxer: PartMuxer,
    /// Codec configs by id, as announced (the last few).
    configs: BTreeMap<u32, Arc<CodecConfig>>,
    /// Init segments on disk, with the config each was made from.
    inits: BTreeMap<u32, Arc<CodecConfig>>,
    /// Frames not yet in a closed part, in decode order.
    frames: VecDeque<Arc<Frame>>,
    /// Muxed parts of the open segment.
    parts: Vec<MuxedPart>,
    /// Media segments on disk.
    segments: BTreeSet<u64>,
    written: u64,
    /// Media segments are muxed and written (false: playlists only, see
    /// [`TreeWriter::playlists_only`]).
    media: bool,
}

impl TreeWriter {
    /// Creates `dir` and `dir/ts` if needed; writes both formats.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self, TreeError> {
        Self::with_formats(dir, Formats::default())
    }

    /// Creates `dir` (and `dir/ts` for MPEG-TS); writes only `formats`: the
    /// CMAF files (init and media segments, `index.m3u8`, `manifest.mpd`)
    /// and/or the MPEG-TS ones (`ts/`).
    pub fn with_formats(dir: impl AsRef<Path>, formats: Formats) -> Result<Self, TreeError> {
        let dir = dir.as_ref().to_path_buf();
        let make = if formats.ts {
            dir.join("ts")
        } else {
            dir.clone()
        };
        std::fs::create_dir_all(&make)
            .map_err(|source| TreeError::CreateDir { path: make, source })?;
        Ok(Self {
            dir,
            formats,
            muxer: PartMuxer::new(formats),
            configs: BTreeMap::new(),
            inits: BTreeMap::new(),
            frames: VecDeque::new(),
            parts: Vec::new(),
            segments: BTreeSet::new(),
            written: 0,
            media: true,
        })
    }

    /// A writer of the playlists alone: segments are neither muxed nor
    /// written, only noted as closed, so the playlists name every segment
    /// the events announced. For a tree whose segments were written by
    /// others from the same stream (the slices of a sliced packaging job);
    /// whoever calls this vouches that they are there.
    pub fn playlists_only(dir: impl AsRef<Path>, formats: Formats) -> Result<Self, TreeError> {
        let mut w = Self::with_formats(dir, formats)?;
        w.media = false;
        Ok(w)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `seg-N` is on disk (written and not pruned).
    pub fn has_segment(&self, sequence: u64) -> bool {
        self.segments.contains(&sequence)
    }

    /// Media segments written so far (pruned ones included).
    pub fn segments_written(&self) -> u64 {
        self.written
    }

    /// Takes one engine event: `Config`, `Frame`, `Part` (muxed now) and
    /// `Segment` (its files written now) matter; `Ended` lets go of frames
    /// no part will claim; the rest are ignored. After an error the writer
    /// stays usable: the failed segment is not written, later ones are.
    pub fn handle(&mut self, event: &Event) -> Result<(), TreeError> {
        match event {
            Event::Config(c) => {
                self.config(c.clone());
                Ok(())
            }
            Event::Frame(f) => {
                self.frames.push_back(f.clone());
                Ok(())
            }
            Event::Part(p) => self.part(p.clone()),
            Event::Segment(s) => self.segment(&s.record),
            Event::Ended(_) => {
                self.frames.clear();
                self.parts.clear();
                Ok(())
            }
            // The tree carries video only (yet): audio is served by the
            // server's origin.
            Event::AudioFrame(_) | Event::AudioConfig(_) => Ok(()),
            // The manifests passed to `write_manifests` mark it.
            Event::Discontinuity | Event::Dropped(_) | Event::Fatal(_) => Ok(()),
        }
    }

    fn config(&mut self, cfg: Arc<CodecConfig>) {
        self.configs.insert(cfg.id, cfg);
        while self.configs.len() > MAX_CONFIGS {
            self.configs.pop_first();
        }
    }

    /// Muxes a closed part from the frames held.
    fn part(&mut self, part: Arc<PartRecord>) -> Result<(), TreeError> {
        if !self.media {
            let end = part
                .first_frame_index
                .saturating_add(u64::from(part.frame_count));
            while self.frames.front().is_some_and(|f| f.index < end) {
                self.frames.pop_front();
            }
            return Ok(());
        }
        let path = self.segment_path(part.segment);
        // Frames before the part belong to parts never announced (a gap).
        while self
            .frames
            .front()
            .is_some_and(|f| f.index < part.first_frame_index)
        {
            self.frames.pop_front();
        }
        let end = part
            .first_frame_index
            .saturating_add(u64::from(part.frame_count));
        let take = self
            .frames
            .iter()
            .take_while(|f| f.index < end)
            .enumerate()
            .take_while(|(k, f)| part.first_frame_index.checked_add(*k as u64) == Some(f.index))
            .count();
        let frames: Vec<Arc<Frame>> = self.frames.drain(..take).collect();
        // Parts of a segment that never ended (its `Segment` event was
        // lost) are not this one's.
        if self
            .parts
            .last()
            .is_some_and(|p| p.record.segment != part.segment)
        {
            self.parts.clear();
        }
        if frames.len() != part.frame_count as usize {
            return Err(TreeError::Frames {
                path,
                segment: part.segment,
                part: part.number,
                first: part.first_frame_index,
                want: part.frame_count,
                got: frames.len(),
            });
        }
        let Some(cfg) = self.configs.get(&part.config_id).cloned() else {
            return Err(TreeError::UnknownConfig {
                path,
                segment: part.segment,
                part: part.number,
                config: part.config_id,
            });
        };
        let refs: Vec<&Frame> = frames.iter().map(|f| f.as_ref()).collect();
        let (segment, number) = (part.segment, part.number);
        let muxed = self
            .muxer
            .mux(part, &refs, &cfg)
            .map_err(|source| TreeError::Mux {
                path,
                segment,
                part: number,
                source,
            })?;
        self.parts.push(muxed);
        Ok(())
    }

    /// Writes a closed segment's files: its init segment if new, then
    /// `ts/seg-N.ts`, then `seg-N.m4s`.
    fn segment(&mut self, record: &SegmentRecord) -> Result<(), TreeError> {
        let seq = record.sequence;
        if !self.media {
            while self.frames.front().is_some_and(|f| f.segment <= seq) {
                self.frames.pop_front();
            }
            self.segments.insert(seq);
            self.written += 1;
            return Ok(());
        }
        let parts: Vec<MuxedPart> = std::mem::take(&mut self.parts)
            .into_iter()
            .filter(|p| p.record.segment == seq)
            .collect();
        // Frames of this segment that no part claimed (none, from a
        // consistent source) go too.
        while self.frames.front().is_some_and(|f| f.segment <= seq) {
            self.frames.pop_front();
        }
        // Its parts tile it: numbered 0, 1, … within it, the last ending
        // where it ends (a part that failed to mux leaves a hole).
        let tiled = parts
            .iter()
            .enumerate()
            .all(|(k, p)| p.record.index as usize == k)
            && parts
                .last()
                .map(|p| p.record.start.saturating_add(p.record.duration))
                == Some(record.start.saturating_add(record.duration));
        if !tiled {
            return Err(TreeError::Incomplete {
                path: self.segment_path(seq),
                segment: seq,
                parts: parts.len(),
            });
        }
        if self.formats.cmaf {
            self.write_init(record.config_id, seq)?;
        }
        if self.formats.ts {
            let ts = concat(&ts_segment_pieces(&parts));
            self.write_file(&ts_segment_file(seq), &ts, Some(seq))?;
        }
        if self.formats.cmaf {
            let m4s = concat(&cmaf_segment_pieces(&parts));
            self.write_file(&segment_name(seq, HlsFlavour::Cmaf), &m4s, Some(seq))?;
        }
        self.segments.insert(seq);
        self.written += 1;
        Ok(())
    }

    /// `init-N.mp4`, unless the same one is on disk.
    fn write_init(&mut self, config: u32, segment: u64) -> Result<(), TreeError> {
        let name = init_name(config);
        let Some(cfg) = self.configs.get(&config).cloned() else {
            return Err(TreeError::UnknownConfig {
                path: self.dir.join(name),
                segment,
                part: self.parts.first().map_or(0, |p| p.record.number),
                config,
            });
        };
        let same = self
            .inits
            .get(&config)
            .is_some_and(|c| c.sps == cfg.sps && c.pps == cfg.pps);
        if same {
            return Ok(());
        }
        let bytes = cmaf::init_segment(&cfg).map_err(|source| TreeError::Init {
            path: self.dir.join(&name),
            config,
            segment,
            source,
        })?;
        self.write_file(&name, &bytes, Some(segment))?;
        self.inits.insert(config, cfg);
        while self.inits.len() > MAX_CONFIGS {
            self.inits.pop_first();
        }
        Ok(())
    }

    /// The three manifests of `manifests` (DASH with `publishTime` =
    /// `now_ms`), after checking that the tree holds every segment they
    /// name; then deletes the segments that left the window more than a
    /// window ago. Nothing is written before the first segment (the server
    /// answers 404 then).
    pub fn write_manifests(&mut self, manifests: &Manifests, now_ms: u64) -> Result<(), TreeError> {
        let mut listed: u64 = 0;
        for rec in manifests.segments() {
            if !self.has_segment(rec.sequence) {
                return Err(TreeError::NotWritten {
                    path: self.dir.join("index.m3u8"),
                    segment: rec.sequence,
                });
            }
            listed += 1;
        }
        if listed == 0 {
            return Ok(());
        }
        self.write_playlists(&manifests.hls_cmaf().render(), &manifests.hls_ts().render())?;
        if self.formats.cmaf {
            self.write_dash(&manifests.dash(now_ms).render())?;
        }
        self.prune_before(manifests.media_sequence().saturating_sub(listed));
        Ok(())
    }

    /// `ts/index.m3u8` and `index.m3u8` as given (the caller makes sure
    /// they name segments the tree holds).
    /// Formats left out (`with_formats`) are not written.
    pub fn write_playlists(&self, hls_cmaf: &str, hls_ts: &str) -> Result<(), TreeError> {
        if self.formats.ts {
            self.write_file("ts/index.m3u8", hls_ts.as_bytes(), None)?;
        }
        if self.formats.cmaf {
            self.write_file("index.m3u8", hls_cmaf.as_bytes(), None)?;
        }
        Ok(())
    }

    /// The formats this tree writes.
    pub fn formats(&self) -> Formats {
        self.formats
    }

    /// `manifest.mpd` as given.
    pub fn write_dash(&self, dash: &str) -> Result<(), TreeError> {
        if !self.formats.cmaf {
            return Ok(());
        }
        self.write_file("manifest.mpd", dash.as_bytes(), None)
    }

    /// Deletes the segments before `sequence`. Best effort: a player may
    /// hold a file open, or the user may have removed it; neither should
    /// stop the writer.
    pub fn prune_before(&mut self, sequence: u64) {
        let keep = self.segments.split_off(&sequence);
        for seq in std::mem::replace(&mut self.segments, keep) {
            let _ = std::fs::remove_file(self.segment_path(seq));
            let _ = std::fs::remove_file(self.dir.join(ts_segment_file(seq)));
        }
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(segment_name(seq, HlsFlavour::Cmaf))
    }

    /// Writes `name` (relative to the tree; `ts/` at most) atomically: a
    /// temporary file in the same directory, then a rename over the old one.
    fn write_file(&self, name: &str, bytes: &[u8], segment: Option<u64>) -> Result<(), TreeError> {
        let path = self.dir.join(name);
        let tmp = match name.rsplit_once('/') {
            Some((sub, file)) => self.dir.join(sub).join(format!(".{file}.tmp")),
            None => self.dir.join(format!(".{name}.tmp")),
        };
        if let Err(source) = std::fs::write(&tmp, bytes) {
            let _ = std::fs::remove_file(&tmp);
            return Err(TreeError::Write {
                path: tmp,
                segment,
                source,
            });
        }
        std::fs::rename(&tmp, &path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            TreeError::Rename {
                from: tmp,
                path,
                segment,
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests;

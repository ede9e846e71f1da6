//! Writes the HLS (CMAF and MPEG-TS) + DASH tree the server serves, with the
//! server's own muxers, under the server's file names:
//!
//! ```text
//! DIR/index.m3u8  DIR/manifest.mpd  DIR/init-N.mp4  DIR/seg-N.m4s
//! DIR/ts/index.m3u8  DIR/ts/seg-N.ts
//! ```
//!
//! Shared by `package` (segments from an offline engine run) and `play
//! --out` (segments rebuilt from received frames). Every file is written to
//! a temporary name and renamed into place, so a player reading the tree
//! while it grows never sees half a file; segments are written before the
//! playlists that name them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bytes::Bytes;
use liveslice_engine::mux::{cmaf, ts::TsMuxer};
use liveslice_engine::{CodecConfig, Frame, NalSpan, SegmentRecord};

pub struct TreeWriter {
    dir: PathBuf,
    ts: TsMuxer,
    /// The segment the TS muxer's continuity counters run on into. The
    /// server muxes TS segments in order from the first one asked for, so a
    /// tree muxed in order from its first segment matches it byte for byte.
    ts_next: Option<u64>,
    /// Init segments written, with the parameter sets they were made from.
    inits: BTreeMap<u32, (Bytes, Vec<Bytes>)>,
    /// Media segments on disk.
    segments: BTreeSet<u64>,
}

impl TreeWriter {
    /// Creates `dir` (and `dir/ts`) if needed.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("ts"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ts: TsMuxer::new(),
            ts_next: None,
            inits: BTreeMap::new(),
            segments: BTreeSet::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `seg-N` was written (and not pruned).
    pub fn has_segment(&self, sequence: u64) -> bool {
        self.segments.contains(&sequence)
    }

    /// `init-N.mp4` for a codec config, unless the same one is on disk.
    pub fn write_init(&mut self, cfg: &CodecConfig) -> Result<()> {
        let same = self
            .inits
            .get(&cfg.id)
            .is_some_and(|(sps, pps)| *sps == cfg.sps && *pps == cfg.pps);
        if same {
            return Ok(());
        }
        let bytes = cmaf::init_segment(cfg)
            .with_context(|| format!("cannot write the init segment of config {}", cfg.id))?;
        self.write_file(&format!("init-{}.mp4", cfg.id), &bytes)?;
        self.inits
            .insert(cfg.id, (cfg.sps.clone(), cfg.pps.clone()));
        Ok(())
    }

    /// `seg-N.m4s` and `ts/seg-N.ts` for one segment (and its init segment
    /// if new). `frames` in decode order; `cfg.id` must be the record's
    /// `config_id`.
    pub fn write_segment(
        &mut self,
        record: &SegmentRecord,
        frames: &[&Frame],
        cfg: &CodecConfig,
    ) -> Result<()> {
        self.write_init(cfg)?;
        let seq = record.sequence;
        // The server muxes CMAF with the segment's end as the last frame's
        // decode end; so do we, for identical bytes.
        let m4s = cmaf::media_segment(record, frames, record.start + record.duration)
            .with_context(|| format!("cannot mux segment {seq} as CMAF"))?;
        if self.ts_next != Some(seq) {
            // A gap (a viewer that lagged or joined late): the counters
            // start over, as the server's would.
            self.ts = TsMuxer::new();
        }
        let ts = self
            .ts
            .segment(frames, cfg)
            .with_context(|| format!("cannot mux segment {seq} as MPEG-TS"))?;
        self.ts_next = Some(seq + 1);
        self.write_file(&format!("ts/seg-{seq}.ts"), &ts)?;
        self.write_file(&format!("seg-{seq}.m4s"), &m4s)?;
        self.segments.insert(seq);
        Ok(())
    }

    /// The three manifests; `dash` may be held back (`None`) while it names
    /// segments the tree does not have.
    pub fn write_manifests(&self, hls: &str, hls_ts: &str, dash: Option<&str>) -> Result<()> {
        self.write_file("ts/index.m3u8", hls_ts.as_bytes())?;
        self.write_file("index.m3u8", hls.as_bytes())?;
        if let Some(dash) = dash {
            self.write_file("manifest.mpd", dash.as_bytes())?;
        }
        Ok(())
    }

    /// `manifest.mpd` alone.
    pub fn write_dash(&self, dash: &str) -> Result<()> {
        self.write_file("manifest.mpd", dash.as_bytes())
    }

    /// Deletes the segments before `sequence` (a live tree keeps what its
    /// playlists name plus one window, as the server does).
    pub fn prune_before(&mut self, sequence: u64) {
        let keep = self.segments.split_off(&sequence);
        for seq in std::mem::replace(&mut self.segments, keep) {
            // Best effort: a player may hold the file open, or the user may
            // have removed it; neither should stop the viewer.
            let _ = std::fs::remove_file(self.dir.join(format!("seg-{seq}.m4s")));
            let _ = std::fs::remove_file(self.dir.join(format!("ts/seg-{seq}.ts")));
        }
    }

    /// Writes `name` (relative to the tree) atomically: a temporary file in
    /// the same directory, then a rename over the old one.
    fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        let tmp = match name.rsplit_once('/') {
            Some((sub, file)) => self.dir.join(sub).join(format!(".{file}.tmp")),
            None => self.dir.join(format!(".{name}.tmp")),
        };
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    }
}

/// Where each NAL unit of an Annex B access unit lies (without start codes),
/// as the engine's [`NalSpan`]s. Zero bytes before a start code belong to
/// the start code (`trailing_zero_8bits`): a NAL unit never ends in 0x00.
pub fn nal_spans(data: &[u8]) -> Vec<NalSpan> {
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                push_span(&mut spans, data, s, i);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        push_span(&mut spans, data, s, data.len());
    }
    spans
}

fn push_span(spans: &mut Vec<NalSpan>, data: &[u8], start: usize, mut end: usize) {
    while end > start && data[end - 1] == 0 {
        end -= 1;
    }
    // Frames are bounded by the server's message limit, far below 4 GiB.
    if end > start {
        if let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) {
            spans.push(NalSpan { start, end });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_skip_start_codes_and_trailing_zeros() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 9,
        ];
        let spans = nal_spans(&data);
        let nals: Vec<&[u8]> = spans.iter().map(|s| s.bytes(&data)).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 9]]);
        assert!(nal_spans(&[1, 2, 3]).is_empty());
        assert!(nal_spans(&[]).is_empty());
    }
}

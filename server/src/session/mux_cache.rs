//! Segment bytes, muxed when first asked for and kept for the window.
//!
//! Muxing on demand means a session nobody plays over HTTP (or asks for
//! segment bytes over gRPC) costs no muxing at all. CMAF segments are
//! independent; MPEG-TS continuity counters run across segments, so TS
//! segments are muxed in order, catching up from the last one muxed.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::ring::Ring;
use crate::engine::mux::{cmaf, ts};
use crate::engine::CodecConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    #[error("segment {0} is not available (not yet complete, or out of the window)")]
    NotAvailable(u64),
    #[error("no init segment {0}")]
    NoConfig(u32),
    #[error("CMAF: {0}")]
    Cmaf(#[from] cmaf::CmafError),
    #[error("MPEG-TS: {0}")]
    Ts(#[from] ts::TsError),
}

pub struct MuxCache {
    window: usize,
    configs: BTreeMap<u32, Arc<CodecConfig>>,
    init: BTreeMap<u32, Bytes>,
    cmaf: BTreeMap<u64, Bytes>,
    ts: BTreeMap<u64, Bytes>,
    ts_muxer: ts::TsMuxer,
    /// The segment the TS muxer's counters continue into.
    ts_next: Option<u64>,
}

/// Parameter-set generations kept (a window rarely spans more than two).
const MAX_CONFIGS: usize = 8;

impl MuxCache {
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            configs: BTreeMap::new(),
            init: BTreeMap::new(),
            cmaf: BTreeMap::new(),
            ts: BTreeMap::new(),
            ts_muxer: ts::TsMuxer::new(),
            ts_next: None,
        }
    }

    /// Bytes of muxed segments and init segments held.
    pub fn bytes(&self) -> usize {
        self.init
            .values()
            .chain(self.cmaf.values())
            .chain(self.ts.values())
            .map(Bytes::len)
            .sum()
    }

    pub fn add_config(&mut self, c: Arc<CodecConfig>) {
        self.configs.insert(c.id, c);
        while self.configs.len() > MAX_CONFIGS {
            if let Some((&id, _)) = self.configs.iter().next() {
                self.configs.remove(&id);
                self.init.remove(&id);
            }
        }
    }

    /// A segment closed; `first_in_window` is the playlists' media sequence.
    /// Segments that left the window stay cached for one more window, as
    /// players may still fetch them (RFC 8216 6.2.2).
    pub fn segment_closed(&mut self, first_in_window: u64) {
        let keep_from = first_in_window.saturating_sub(self.window as u64);
        self.cmaf = self.cmaf.split_off(&keep_from);
        self.ts = self.ts.split_off(&keep_from);
    }

    pub fn init(&mut self, config_id: u32) -> Result<Bytes, MuxError> {
        if let Some(b) = self.init.get(&config_id) {
            return Ok(b.clone());
        }
        let cfg = self
            .configs
            .get(&config_id)
            .ok_or(MuxError::NoConfig(config_id))?;
        let b = cmaf::init_segment(cfg)?;
        self.init.insert(config_id, b.clone());
        Ok(b)
    }

    pub fn cmaf(&mut self, seq: u64, ring: &Ring) -> Result<Bytes, MuxError> {
        if let Some(b) = self.cmaf.get(&seq) {
            return Ok(b.clone());
        }
        let (record, frames) = segment(ring, seq)?;
        let refs: Vec<&_> = frames.iter().map(|f| f.as_ref()).collect();
        let b = cmaf::media_segment(&record, &refs, record.start + record.duration)?;
        self.cmaf.insert(seq, b.clone());
        Ok(b)
    }

    pub fn ts(&mut self, seq: u64, ring: &Ring) -> Result<Bytes, MuxError> {
        if let Some(b) = self.ts.get(&seq) {
            return Ok(b.clone());
        }
        // Catch up in order from where the muxer's counters are, when those
        // segments are still held; otherwise start the counters over here.
        let from = match self.ts_next {
            Some(n) if n <= seq && seq - n <= self.window as u64 * 2 => n,
            _ => seq,
        };
        if self.ts_next != Some(from) {
            self.ts_muxer = ts::TsMuxer::new();
        }
        let mut last = Err(MuxError::NotAvailable(seq));
        for s in from..=seq {
            let Ok((record, frames)) = segment(ring, s) else {
                continue;
            };
            let cfg = self
                .configs
                .get(&record.config_id)
                .ok_or(MuxError::NoConfig(record.config_id))?
                .clone();
            let refs: Vec<&_> = frames.iter().map(|f| f.as_ref()).collect();
            let b = self.ts_muxer.segment(&refs, &cfg)?;
            self.ts.insert(s, b.clone());
            self.ts_next = Some(s + 1);
            if s == seq {
                last = Ok(b);
            }
        }
        last
    }
}

fn segment(
    ring: &Ring,
    seq: u64,
) -> Result<(crate::engine::SegmentRecord, Vec<Arc<crate::engine::Frame>>), MuxError> {
    let record = ring
        .segments()
        .find(|s| s.record.sequence == seq)
        .map(|s| s.record.clone())
        .ok_or(MuxError::NotAvailable(seq))?;
    let frames = ring
        .segment_frames(seq)
        .ok_or(MuxError::NotAvailable(seq))?;
    Ok((record, frames))
}

//! Segment bytes, muxed when first asked for and kept for the window.
//!
//! Muxing on demand means a session nobody plays over HTTP (or asks for
//! segment bytes over gRPC) costs no muxing at all. CMAF segments are
//! independent; MPEG-TS continuity counters run across segments, so TS
//! segments are muxed in order, catching up from the last one muxed.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

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

/// What the muxers need of one segment: its record, its frames (shared,
/// never copied) and its parameter sets.
pub struct SegmentSource {
    pub record: crate::engine::SegmentRecord,
    pub frames: Vec<Arc<crate::engine::Frame>>,
    pub config: Arc<CodecConfig>,
}

/// The muxed bytes of a session's segments, behind their own lock: the
/// session state (which the publisher's push holds) is taken only to clone
/// a segment's frames, never while muxing. CMAF segments are muxed with no
/// lock held at all; MPEG-TS segments under this cache's lock only, since
/// their continuity counters run on from one segment to the next.
pub struct MuxCache {
    window: usize,
    init: BTreeMap<u32, Bytes>,
    cmaf: BTreeMap<u64, Bytes>,
    ts: BTreeMap<u64, Bytes>,
    ts_muxer: ts::TsMuxer,
    /// The segment the TS muxer's counters continue into.
    ts_next: Option<u64>,
}

impl MuxCache {
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
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

    /// Lets go of segments that left the window more than a window ago
    /// (`first_in_window` is the playlists' media sequence): players may
    /// still fetch a removed segment for a while (RFC 8216 6.2.2).
    pub fn prune(&mut self, first_in_window: u64) {
        let keep_from = first_in_window.saturating_sub(self.window as u64);
        self.cmaf = self.cmaf.split_off(&keep_from);
        self.ts = self.ts.split_off(&keep_from);
        while self.init.len() > MAX_CONFIGS {
            if let Some((&id, _)) = self.init.iter().next() {
                self.init.remove(&id);
            }
        }
    }

    pub fn cached_init(&self, config_id: u32) -> Option<Bytes> {
        self.init.get(&config_id).cloned()
    }

    pub fn insert_init(&mut self, config_id: u32, b: Bytes) {
        self.init.insert(config_id, b);
    }

    pub fn cached_cmaf(&self, seq: u64) -> Option<Bytes> {
        self.cmaf.get(&seq).cloned()
    }

    pub fn insert_cmaf(&mut self, seq: u64, b: Bytes) {
        self.cmaf.insert(seq, b);
    }

    /// The MPEG-TS segment `seq`, muxed in order from where the muxer's
    /// counters are (when those segments are still held; otherwise the
    /// counters start over here). `source` clones a segment's frames.
    pub fn ts(
        &mut self,
        seq: u64,
        source: impl Fn(u64) -> Option<SegmentSource>,
    ) -> Result<Bytes, MuxError> {
        if let Some(b) = self.ts.get(&seq) {
            return Ok(b.clone());
        }
        let from = match self.ts_next {
            Some(n) if n <= seq && seq - n <= self.window as u64 * 2 => n,
            _ => seq,
        };
        if self.ts_next != Some(from) {
            self.ts_muxer = ts::TsMuxer::new();
        }
        let mut last = Err(MuxError::NotAvailable(seq));
        for s in from..=seq {
            let Some(src) = source(s) else {
                continue;
            };
            let refs: Vec<&_> = src.frames.iter().map(|f| f.as_ref()).collect();
            let b = self.ts_muxer.segment(&refs, &src.config)?;
            self.ts.insert(s, b.clone());
            self.ts_next = Some(s + 1);
            if s == seq {
                last = Ok(b);
            }
        }
        last
    }
}

/// Muxes one CMAF media segment (no lock needed: CMAF segments are
/// independent of each other).
pub fn mux_cmaf(src: &SegmentSource) -> Result<Bytes, MuxError> {
    let refs: Vec<&_> = src.frames.iter().map(|f| f.as_ref()).collect();
    Ok(cmaf::media_segment(
        &src.record,
        &refs,
        src.record.start + src.record.duration,
    )?)
}

/// Muxes a CMAF init segment.
pub fn mux_init(cfg: &CodecConfig) -> Result<Bytes, MuxError> {
    Ok(cmaf::init_segment(cfg)?)
}

/// Parameter-set generations whose init segments are kept (a window rarely
/// spans more than two).
pub const MAX_CONFIGS: usize = 8;

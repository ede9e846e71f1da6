//! The muxed bytes of a session: every part as it closed (a CMAF chunk and
//! its MPEG-TS packets, muxed once by the publisher's task with no lock
//! held), the init segments, and which segments are complete.
//!
//! A segment's bytes are its parts' bytes — CMAF: `styp` then the chunks;
//! MPEG-TS: the packets joined — handed out as shared pieces, never copied
//! (HTTP sends the pieces one after another). The store keeps the parts of
//! the segments the playlists list, of the segment being built, and of one
//! more window of segments after they leave the playlists (RFC 8216 6.2.2:
//! a removed segment stays available for a while).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::engine::mux::parts::{self, MuxedPart};
use crate::engine::CodecConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    #[error("segment {0} is not available (not yet complete, or out of the window)")]
    NotAvailable(u64),
    #[error("part {0} is not available (not yet complete, or out of the window)")]
    PartNotAvailable(u64),
    #[error("no init segment {0}")]
    NoConfig(u32),
    #[error("{} output is off on this server (see --formats)", match .0 { Format::Cmaf | Format::AudioCmaf => "CMAF", Format::Ts => "MPEG-TS" })]
    FormatOff(Format),
    #[error("{0}")]
    Mux(String),
}

/// Which segment format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Cmaf,
    Ts,
    /// The CMAF audio track.
    AudioCmaf,
}

/// A complete segment's place in the store.
#[derive(Clone, Copy, Debug)]
struct StoredSegment {
    sequence: u64,
    config_id: u32,
}

/// See the module docs. Lives under the session lock; every method is a
/// few pointer copies (muxing happens before [`PartStore::store`]).
#[derive(Default)]
pub struct PartStore {
    /// Oldest first, in part-number order.
    parts: VecDeque<MuxedPart>,
    /// Complete segments, oldest first.
    segments: VecDeque<StoredSegment>,
    init: BTreeMap<u32, Bytes>,
    /// The audio track's init segment (one audio format per session).
    audio_init: Option<Bytes>,
    bytes: usize,
}

impl PartStore {
    /// Bytes of muxed parts and init segments held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Parts held (for tests and the console).
    pub fn part_count(&self) -> usize {
        self.parts.len()
    }

    /// The sequence the next complete segment will have.
    pub fn next_segment(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.sequence + 1)
    }

    /// Adds a muxed part (parts arrive in number order).
    pub fn store_part(&mut self, p: MuxedPart) {
        self.bytes += p.cmaf.len() + p.ts.len() + p.audio_cmaf.len();
        self.parts.push_back(p);
    }

    /// Marks a segment complete (after its last part was stored).
    pub fn store_segment(&mut self, sequence: u64, config_id: u32) {
        self.segments.push_back(StoredSegment {
            sequence,
            config_id,
        });
    }

    pub fn store_init(&mut self, config_id: u32, b: Bytes) {
        self.bytes += b.len();
        if let Some(old) = self.init.insert(config_id, b) {
            self.bytes -= old.len();
        }
        while self.init.len() > MAX_CONFIGS {
            if let Some((_, b)) = self.init.pop_first() {
                self.bytes -= b.len();
            }
        }
    }

    /// Lets go of segments (and their parts) before `keep_from`.
    pub fn evict_before(&mut self, keep_from: u64) {
        while self
            .segments
            .front()
            .is_some_and(|s| s.sequence < keep_from)
        {
            self.segments.pop_front();
        }
        while self
            .parts
            .front()
            .is_some_and(|p| p.record.segment < keep_from)
        {
            if let Some(p) = self.parts.pop_front() {
                self.bytes -= p.cmaf.len() + p.ts.len() + p.audio_cmaf.len();
            }
        }
    }

    pub fn store_audio_init(&mut self, b: Bytes) {
        self.bytes += b.len();
        if let Some(old) = self.audio_init.replace(b) {
            self.bytes -= old.len();
        }
    }

    pub fn audio_init(&self) -> Option<Bytes> {
        self.audio_init.clone()
    }

    pub fn init(&self, config_id: u32) -> Option<Bytes> {
        self.init.get(&config_id).cloned()
    }

    /// The config generation of a complete segment.
    pub fn segment_config(&self, sequence: u64) -> Option<u32> {
        self.segments
            .iter()
            .find(|s| s.sequence == sequence)
            .map(|s| s.config_id)
    }

    /// The parts of a complete segment, in order.
    fn segment_parts(&self, sequence: u64) -> Option<impl Iterator<Item = &MuxedPart> + '_> {
        self.segment_config(sequence)?;
        let from = self.parts.partition_point(|p| p.record.segment < sequence);
        Some(
            self.parts
                .range(from..)
                .take_while(move |p| p.record.segment == sequence),
        )
    }

    /// A complete segment's bytes as shared pieces (concatenated, they are
    /// the segment).
    pub fn segment(&self, sequence: u64, format: Format) -> Result<Vec<Bytes>, MuxError> {
        let parts = self
            .segment_parts(sequence)
            .ok_or(MuxError::NotAvailable(sequence))?;
        Ok(match format {
            Format::Cmaf => parts::cmaf_segment_pieces(parts),
            Format::Ts => parts::ts_segment_pieces(parts),
            Format::AudioCmaf => parts::cmaf_audio_segment_pieces(parts),
        })
    }

    /// One part's bytes, by its session-wide number.
    pub fn part(&self, number: u64, format: Format) -> Result<(Bytes, u32), MuxError> {
        let first = self
            .parts
            .front()
            .ok_or(MuxError::PartNotAvailable(number))?
            .record
            .number;
        let p = number
            .checked_sub(first)
            .and_then(|i| self.parts.get(i as usize))
            .filter(|p| p.record.number == number)
            .ok_or(MuxError::PartNotAvailable(number))?;
        Ok((
            match format {
                Format::Cmaf => p.cmaf.clone(),
                Format::Ts => p.ts.clone(),
                Format::AudioCmaf => p.audio_cmaf.clone(),
            },
            p.record.config_id,
        ))
    }

    /// The CMAF chunks of segment `sequence` stored so far, from its
    /// `skip`-th part on (a segment in progress, or a complete one).
    pub fn cmaf_chunks_of(&self, sequence: u64, skip: usize, audio: bool) -> Vec<Bytes> {
        let from = self.parts.partition_point(|p| p.record.segment < sequence);
        self.parts
            .range(from..)
            .take_while(|p| p.record.segment == sequence)
            .skip(skip)
            .map(|p| {
                if audio {
                    p.audio_cmaf.clone()
                } else {
                    p.cmaf.clone()
                }
            })
            .collect()
    }

    /// The records of the parts held, oldest first.
    pub fn part_records(&self) -> impl Iterator<Item = &Arc<crate::engine::PartRecord>> + '_ {
        self.parts.iter().map(|p| &p.record)
    }
}

/// Muxes a CMAF init segment.
pub fn mux_init(cfg: &CodecConfig) -> Result<Bytes, MuxError> {
    crate::engine::mux::cmaf::init_segment(cfg).map_err(|e| MuxError::Mux(e.to_string()))
}

/// Muxes the CMAF audio track's init segment.
pub fn mux_audio_init(cfg: &crate::engine::AudioConfig) -> Result<Bytes, MuxError> {
    crate::engine::mux::cmaf_audio::audio_init_segment(cfg)
        .map_err(|e| MuxError::Mux(e.to_string()))
}

/// Parameter-set generations whose init segments are kept (a window rarely
/// spans more than two).
pub const MAX_CONFIGS: usize = 8;

//! NAL units → access units (H.264 7.4.1.2.3 and 7.4.1.2.4).
//!
//! A picture ends where the next one begins: at an AUD, at an SPS/PPS/SEI
//! (or types 14–18) after a VCL NAL unit, or at a slice whose header differs
//! from the previous slice in a field the spec lists (or starts at macroblock
//! 0). Slices of one picture stay together. Parameter sets are parsed as they
//! arrive so later slices parse against them.
//!
//! The assembler also judges each access unit's integrity, since h264-reader
//! does not: a NAL unit with `forbidden_zero_bit`, slices whose parameter sets
//! are unknown or whose header does not parse, and pictures that are missing
//! their first slices, have slices out of order, or end mid-picture at end of
//! stream, are marked with a [`DropReason`] for the filter to act on.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use h264_reader::nal::sps::SeqParameterSet;

use super::annexb::NalUnit;
use super::filter::DropReason;
use super::frame::{CodecConfig, NalSpan};
use super::params::{sei_recovery_point, ParamError, ParamSets, SliceError, SliceInfo};

/// One coded picture and the NAL units that came with it.
#[derive(Debug, Default)]
pub struct AccessUnit {
    pub nals: Vec<NalUnit>,
    /// Stream offset of the first NAL unit's header byte.
    pub offset: u64,
    /// The first VCL slice's header, when it parsed.
    pub slice: Option<SliceInfo>,
    /// Number of VCL NAL units.
    pub slices: u32,
    /// Why it cannot be decoded, if it cannot.
    pub problem: Option<(DropReason, String)>,
    /// `nal_ref_idc` of its VCL NAL units (from the header byte, so it is
    /// known even when the slice header is not).
    pub nal_ref_idc: u8,
    /// `recovery_frame_cnt` of its recovery-point SEI, if it carries one
    /// (0: open-GOP random access point; N > 0: gradual decoding refresh).
    pub recovery_point: Option<u32>,
    /// Every slice is an I (or SI) slice.
    pub intra: bool,
    pub has_aud: bool,
    pub has_sps: bool,
    pub has_pps: bool,
    /// Total NAL unit bytes.
    pub bytes: usize,
    /// The SPS its slices were coded with, as it was when the picture
    /// ended (a later SPS with the same id does not change it).
    pub sps: Option<Arc<SeqParameterSet>>,
    /// For pictures where decoding can start (IDR, recovery point): the
    /// parameter sets in effect, with `id` 0 (the pipeline numbers them).
    pub config: Option<CodecConfig>,
}

impl AccessUnit {
    pub fn is_idr(&self) -> bool {
        self.slice.as_ref().is_some_and(|s| s.idr)
    }

    /// Decoding may start at this picture: an IDR, an intra picture, or a
    /// picture with a recovery-point SEI.
    pub fn may_start_decoding(&self) -> bool {
        self.is_idr() || self.intra || self.recovery_point.is_some()
    }

    fn flag(&mut self, reason: DropReason, detail: String) {
        if self.problem.is_none() {
            self.problem = Some((reason, detail));
        }
    }

    /// The access unit as Annex B bytes, with `prefix` NAL units (SPS, PPS)
    /// inserted after the AUD (if any) when given. A zero-copy slice of the
    /// received chunk when the NAL units were adjacent in one chunk and
    /// nothing is inserted; otherwise one copy with 4-byte start codes.
    pub fn annexb(&self, prefix: &[Bytes]) -> (Bytes, Vec<NalSpan>) {
        annexb_of(&self.nals, prefix, |n| n.nal_type() == 9)
    }
}

/// `nals` as Annex B bytes, with `prefix` NAL units (parameter sets)
/// inserted after the first NAL unit when `is_aud` says it is an access
/// unit delimiter (else in front). A zero-copy slice of the received chunk
/// when the NAL units were adjacent in one chunk and nothing is inserted;
/// otherwise one copy with 4-byte start codes for the inserted ones.
pub fn annexb_of(
    nals: &[NalUnit],
    prefix: &[Bytes],
    is_aud: impl Fn(&NalUnit) -> bool,
) -> (Bytes, Vec<NalSpan>) {
    let mut spans = Vec::with_capacity(nals.len() + prefix.len());
    if prefix.is_empty() {
        if let Some(bytes) = contiguous(nals, &mut spans) {
            return (bytes, spans);
        }
        spans.clear();
    }
    let total: usize = nals.iter().map(|n| n.data.len() + 4).sum::<usize>()
        + prefix.iter().map(|p| p.len() + 4).sum::<usize>();
    let mut out = BytesMut::with_capacity(total);
    // Start codes as they were sent (3 or 4 bytes), so the copy is
    // byte-identical to the zero-copy slice; inserted NAL units get 4.
    let mut put = |out: &mut BytesMut, nal: &[u8], prefix_len: u8| {
        let sc: &[u8] = if prefix_len == 3 {
            &[0, 0, 1]
        } else {
            &[0, 0, 0, 1]
        };
        out.extend_from_slice(sc);
        let start = out.len() as u32;
        out.extend_from_slice(nal);
        spans.push(NalSpan {
            start,
            end: out.len() as u32,
        });
    };
    let mut rest = nals;
    if let Some((first, tail)) = rest.split_first() {
        if is_aud(first) {
            put(&mut out, &first.data, first.prefix_len);
            rest = tail;
        }
    }
    for p in prefix {
        put(&mut out, p, 4);
    }
    for n in rest {
        put(&mut out, &n.data, n.prefix_len);
    }
    (out.freeze(), spans)
}

/// The NAL units as one slice of their chunk, when they arrived as one run
/// of start codes and NAL units, exactly as the copy would write them.
fn contiguous(nals: &[NalUnit], spans: &mut Vec<NalSpan>) -> Option<Bytes> {
    let first_nal = nals.first()?;
    let first = first_nal.origin.as_ref()?;
    if !first.prefix_in_chunk {
        return None;
    }
    let begin = first.start.checked_sub(first_nal.prefix_len as usize)?;
    let mut end = begin;
    for n in nals {
        let o = n.origin.as_ref()?;
        if o.chunk_seq != first.chunk_seq
            || !o.prefix_in_chunk
            || o.start.checked_sub(n.prefix_len as usize)? != end
        {
            return None;
        }
        spans.push(NalSpan {
            start: (o.start - begin) as u32,
            end: (o.end - begin) as u32,
        });
        end = o.end;
    }
    Some(first.chunk.slice(begin..end))
}

/// What the assembler noticed besides access units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssemblerNote {
    /// A parameter set that did not parse; slices using its id are dropped
    /// until a good one arrives.
    ParamSetRejected(ParamError),
    /// NAL units whose headers look like H.265 (HEVC), not H.264.
    LooksLikeHevc { offset: u64 },
}

/// Limits that keep one access unit's memory bounded.
#[derive(Clone, Copy, Debug)]
pub struct AssemblerLimits {
    /// Largest access unit, bytes of NAL units (the operator's bound).
    pub max_au_bytes: usize,
    /// NAL units an access unit may hold before its first slice tells which
    /// SPS is active. Once it does, the bound comes from the stream:
    /// [`nal_limit_for`] of that SPS.
    pub max_au_nals: usize,
}

impl Default for AssemblerLimits {
    fn default() -> Self {
        Self {
            max_au_bytes: 16 << 20,
            max_au_nals: 1024,
        }
    }
}

/// NAL units beyond the slices that one access unit may legitimately carry:
/// an AUD, SEI messages, SPS/PPS (up to 32 + 256, though real streams send a
/// few), end-of-sequence/stream and filler.
pub const NAL_ROOM_BEYOND_SLICES: usize = 512;

/// How many NAL units an access unit coded with `sps` may hold: one slice
/// per macroblock at most (a slice holds at least one; `PicSizeInMbs`,
/// H.264 7.4.3, counted for a frame so both fields of a pair fit), times two
/// for redundant pictures, plus [`NAL_ROOM_BEYOND_SLICES`].
pub fn nal_limit_for(sps: &SeqParameterSet) -> usize {
    let width_mbs = sps.pic_width_in_mbs_minus1 as usize + 1;
    let height_map_units = sps.pic_height_in_map_units_minus1 as usize + 1;
    let frame_mbs_only = matches!(
        sps.frame_mbs_flags,
        h264_reader::nal::sps::FrameMbsFlags::Frames
    );
    let pic_size_in_mbs = width_mbs * height_map_units * if frame_mbs_only { 1 } else { 2 };
    pic_size_in_mbs.saturating_mul(2) + NAL_ROOM_BEYOND_SLICES
}

/// Builds access units from NAL units; see the module docs.
pub struct AccessUnitAssembler {
    params: ParamSets,
    limits: AssemblerLimits,
    cur: AccessUnit,
    /// The last slice added to `cur`, for the new-picture comparison.
    last_slice: Option<SliceInfo>,
    /// first_mb_in_slice of the last slice added, for the order check.
    last_first_mb: Option<u32>,
    /// Slices per picture of the last complete, good picture.
    typical_slices: u32,
    hevc_like: u32,
    hevc_reported: bool,
    /// NAL units the current access unit may hold (from its SPS once its
    /// first slice parsed, else the configured bound).
    nal_limit: usize,
}

impl AccessUnitAssembler {
    pub fn new(limits: AssemblerLimits) -> Self {
        Self {
            params: ParamSets::new(),
            limits,
            cur: AccessUnit::default(),
            last_slice: None,
            last_first_mb: None,
            typical_slices: 0,
            hevc_like: 0,
            hevc_reported: false,
            nal_limit: limits.max_au_nals,
        }
    }

    pub fn params(&self) -> &ParamSets {
        &self.params
    }

    /// Bytes held for the access unit being assembled.
    pub fn buffered(&self) -> usize {
        self.cur.bytes
    }

    /// Adds one NAL unit; completed access units go to `out`.
    pub fn push(
        &mut self,
        nal: NalUnit,
        out: &mut Vec<AccessUnit>,
        notes: &mut Vec<AssemblerNote>,
    ) {
        let t = nal.nal_type();
        let has_vcl = self.cur.slices > 0;
        if !self.params.has_sps() && looks_like_hevc(&nal.data) {
            self.hevc_like += 1;
            if self.hevc_like >= 2 && !self.hevc_reported {
                self.hevc_reported = true;
                notes.push(AssemblerNote::LooksLikeHevc { offset: nal.offset });
            }
        }
        if nal.forbidden_bit() {
            // Its type bits cannot be trusted; most likely a damaged slice.
            if has_vcl {
                self.finish(out);
            }
            let detail = format!(
                "NAL unit at byte {} has forbidden_zero_bit set (header {:#04x})",
                nal.offset,
                nal.header()
            );
            self.cur.nal_ref_idc = self.cur.nal_ref_idc.max(nal.nal_ref_idc());
            self.cur.slices += 1;
            self.cur.flag(DropReason::ForbiddenBit, detail);
            self.add(nal);
            return;
        }
        match t {
            1 | 5 => self.push_slice(nal, out),
            2 => {
                if has_vcl {
                    self.finish(out);
                }
                self.cur.slices += 1;
                self.cur.nal_ref_idc = self.cur.nal_ref_idc.max(nal.nal_ref_idc());
                self.cur.flag(
                    DropReason::BadSliceHeader,
                    format!(
                        "data-partitioned slice at byte {} (Extended profile) is not supported",
                        nal.offset
                    ),
                );
                self.add(nal);
            }
            3 | 4 => self.add(nal),
            9 => {
                if has_vcl {
                    self.finish(out);
                } else if self.cur.has_aud {
                    // Two delimiters with no slice between: the picture of
                    // the first was lost (its slices damaged into other NAL
                    // types). Count it, so no picture vanishes unreported.
                    let detail = format!(
                        "access unit at byte {} has a delimiter but no slice before the next one: its picture was lost or damaged beyond recognition",
                        self.cur.offset
                    );
                    self.cur.flag(DropReason::Truncated, detail);
                    self.finish(out);
                }
                self.cur.has_aud = true;
                self.add(nal);
            }
            6..=8 | 14..=18 => {
                if has_vcl {
                    self.finish(out);
                }
                match t {
                    7 => match self.params.put_sps(&nal.data) {
                        Ok(_) => self.cur.has_sps = true,
                        Err(e) => notes.push(AssemblerNote::ParamSetRejected(e)),
                    },
                    8 => match self.params.put_pps(&nal.data) {
                        Ok(_) => self.cur.has_pps = true,
                        Err(e) => notes.push(AssemblerNote::ParamSetRejected(e)),
                    },
                    6 => {
                        if let Some(cnt) = sei_recovery_point(&nal.data) {
                            self.cur.recovery_point = Some(cnt);
                        }
                    }
                    _ => {}
                }
                self.add(nal);
            }
            // Filler data carries nothing a player needs.
            12 => {}
            _ => self.add(nal),
        }
    }

    fn push_slice(&mut self, nal: NalUnit, out: &mut Vec<AccessUnit>) {
        let has_vcl = self.cur.slices > 0;
        match self.params.parse_slice(&nal.data) {
            Ok(info) => {
                let new_picture = match &self.last_slice {
                    Some(prev) => info.starts_new_picture(prev),
                    // The current picture's slices did not parse: go by
                    // first_mb_in_slice alone.
                    None => has_vcl && info.first_mb == 0,
                };
                if new_picture && has_vcl {
                    self.finish(out);
                }
                if self.cur.slices == 0 {
                    if info.first_mb != 0 {
                        self.cur.flag(
                            DropReason::Truncated,
                            format!(
                                "picture at byte {} starts at macroblock {}: its first slices are missing",
                                nal.offset, info.first_mb
                            ),
                        );
                    }
                    self.cur.slice = Some(info.clone());
                    self.cur.intra = info.is_intra;
                    if let Some(sps) = self.params.sps(info.sps_id) {
                        self.nal_limit = nal_limit_for(sps).max(self.limits.max_au_nals);
                    }
                } else if let Some(last) = self.last_first_mb {
                    if info.first_mb <= last && info.redundant_pic_cnt == 0 {
                        self.cur.flag(
                            DropReason::Truncated,
                            format!(
                                "slice at byte {} starts at macroblock {} after one at {}: slices missing or out of order",
                                nal.offset, info.first_mb, last
                            ),
                        );
                    }
                }
                self.cur.intra &= info.is_intra;
                self.last_first_mb = Some(info.first_mb);
                self.last_slice = Some(info);
            }
            Err(e) => {
                let first_mb = peek_first_mb(&nal.data);
                if has_vcl && first_mb.is_none_or(|mb| mb == 0) {
                    self.finish(out);
                }
                let reason = match e {
                    SliceError::UnknownPps(_) | SliceError::UnknownSps(_) => {
                        DropReason::UnknownParameterSet
                    }
                    SliceError::Bad(_) => DropReason::BadSliceHeader,
                };
                self.cur.intra = false;
                self.cur
                    .flag(reason, format!("slice at byte {}: {e}", nal.offset));
                self.last_slice = None;
                self.last_first_mb = first_mb;
            }
        }
        self.cur.slices += 1;
        self.cur.nal_ref_idc = self.cur.nal_ref_idc.max(nal.nal_ref_idc());
        self.add(nal);
    }

    fn add(&mut self, nal: NalUnit) {
        if self.cur.nals.is_empty() && self.cur.bytes == 0 {
            self.cur.offset = nal.offset;
        }
        self.cur.bytes += nal.data.len();
        let too_many_bytes = self.cur.bytes > self.limits.max_au_bytes;
        if too_many_bytes || self.cur.nals.len() >= self.nal_limit {
            if self.cur.problem.as_ref().map(|p| p.0) != Some(DropReason::TooLarge) {
                let detail = if too_many_bytes {
                    format!(
                        "access unit at byte {} holds {} bytes, more than the limit of {} bytes (twice --max-nal-bytes)",
                        self.cur.offset, self.cur.bytes, self.limits.max_au_bytes
                    )
                } else {
                    format!(
                        "access unit at byte {} holds more than {} NAL units, the most its SPS allows (one slice per macroblock, twice, plus {NAL_ROOM_BEYOND_SLICES})",
                        self.cur.offset, self.nal_limit
                    )
                };
                self.cur.problem = Some((DropReason::TooLarge, detail));
            }
            // Keep counting, stop holding: it is dropped anyway.
            self.cur.nals.clear();
            return;
        }
        self.cur.nals.push(nal);
    }

    /// Completes the access unit being built, if it holds a picture.
    /// `at_end` (end of stream, or the publisher marked an access unit
    /// boundary) also checks for a picture cut short; `marked_complete` says
    /// the publisher vouched for the boundary.
    pub fn flush(
        &mut self,
        out: &mut Vec<AccessUnit>,
        at_end_of_stream: bool,
        marked_complete: bool,
    ) {
        if self.cur.slices == 0 {
            if at_end_of_stream {
                // Only an AUD or SEI announces a picture that never came.
                if self.cur.has_aud || self.cur.nals.iter().any(|n| n.nal_type() == 6) {
                    self.cur.slices = 0;
                    let detail = format!(
                        "stream ended at byte {} after an access unit delimiter or SEI but before any slice",
                        self.cur.offset
                    );
                    self.cur.flag(DropReason::Truncated, detail);
                    let au = std::mem::take(&mut self.cur);
                    out.push(au);
                }
                self.cur = AccessUnit::default();
                self.last_slice = None;
                self.last_first_mb = None;
            }
            return;
        }
        if at_end_of_stream
            && !marked_complete
            && self.typical_slices > 1
            && self.cur.slices < self.typical_slices
        {
            let detail = format!(
                "stream ended mid-picture at byte {}: {} of {} slices",
                self.cur.offset, self.cur.slices, self.typical_slices
            );
            self.cur.flag(DropReason::Truncated, detail);
        }
        self.finish(out);
    }

    fn finish(&mut self, out: &mut Vec<AccessUnit>) {
        let mut au = std::mem::take(&mut self.cur);
        // Capture the parameter sets now: the NAL unit that ended this
        // picture may be a new SPS/PPS for the next one.
        if let Some(s) = &au.slice {
            au.sps = self.params.sps_shared(s.sps_id);
            if au.may_start_decoding() {
                au.config = self.params.codec_config(s.pps_id, 0);
            }
        }
        self.nal_limit = self.limits.max_au_nals;
        self.last_slice = None;
        self.last_first_mb = None;
        if au.problem.is_none() && au.slices > 0 {
            self.typical_slices = au.slices;
        }
        out.push(au);
    }
}

/// first_mb_in_slice of a slice NAL unit, read without parameter sets.
fn peek_first_mb(nal: &[u8]) -> Option<u32> {
    use h264_reader::nal::{Nal, RefNal};
    use h264_reader::rbsp::BitRead;
    if nal.is_empty() {
        return None;
    }
    let n = RefNal::new(nal, &[], true);
    let mut r = n.rbsp_bits();
    r.read_ue("first_mb_in_slice").ok()
}

/// An H.265 VPS, SPS or PPS header (0x40, 0x42, 0x44, then 0x01). In H.264
/// these would be types 0 (unspecified), 2 and 4 (Extended-profile data
/// partitions), which live streams do not carry, so two of them before any
/// H.264 SPS mean the publisher sends the wrong codec.
fn looks_like_hevc(nal: &[u8]) -> bool {
    matches!(nal, [0x40 | 0x42 | 0x44, 0x01, ..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annexb::{AnnexBSplitter, Split};

    pub(crate) fn assemble(stream: &[u8]) -> (Vec<AccessUnit>, Vec<AssemblerNote>) {
        let mut s = AnnexBSplitter::new(1 << 22);
        let mut a = AccessUnitAssembler::new(AssemblerLimits::default());
        let mut splits = Vec::new();
        s.push(Bytes::copy_from_slice(stream), &mut splits);
        s.finish(&mut splits);
        let mut aus = Vec::new();
        let mut notes = Vec::new();
        for sp in splits {
            if let Split::Nal(n) = sp {
                a.push(n, &mut aus, &mut notes);
            }
        }
        a.flush(&mut aus, true, false);
        (aus, notes)
    }

    fn testdata(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn clean_streams_give_one_access_unit_per_frame() {
        for (name, frames, slices) in [
            ("baseline_30.h264", 180, 1),
            ("high_bframes_30.h264", 180, 1),
            ("main_slices4_30.h264", 120, 4),
            ("high_2997.h264", 180, 1),
        ] {
            let (aus, notes) = assemble(&testdata(name));
            assert!(notes.is_empty(), "{name}: {notes:?}");
            assert_eq!(aus.len(), frames, "{name}");
            for au in &aus {
                assert_eq!(au.problem, None, "{name}");
                assert_eq!(au.slices, slices, "{name}");
            }
            assert!(aus[0].is_idr());
        }
    }

    #[test]
    fn zero_copy_when_one_chunk_holds_the_access_unit() {
        let data = testdata("high_bframes_30.h264");
        let (aus, _) = assemble(&data);
        let (bytes, spans) = aus[5].annexb(&[]);
        // Same memory as the input chunk: a slice, not a copy.
        let (a, _) = assemble(&data);
        let _ = a;
        assert_eq!(spans.len(), aus[5].nals.len());
        for (span, nal) in spans.iter().zip(&aus[5].nals) {
            assert_eq!(span.bytes(&bytes), &nal.data[..]);
        }
        let o = aus[5].nals[0].origin.as_ref().unwrap();
        assert_eq!(
            bytes.as_ptr(),
            o.chunk[o.start - aus[5].nals[0].prefix_len as usize..].as_ptr()
        );
    }

    #[test]
    fn prefix_goes_after_the_aud() {
        let data = testdata("high_2997.h264");
        let (aus, _) = assemble(&data);
        let idr = aus.iter().skip(1).find(|a| a.is_idr()).unwrap();
        assert!(!idr.has_sps);
        let sps = Bytes::from_static(&[0x67, 1, 2]);
        let pps = Bytes::from_static(&[0x68, 3]);
        let (bytes, spans) = idr.annexb(&[sps, pps]);
        let types: Vec<u8> = spans.iter().map(|s| s.nal_type(&bytes)).collect();
        assert_eq!(&types[..3], &[9, 7, 8]);
    }

    #[test]
    fn hevc_is_recognised() {
        // VPS, SPS, PPS headers of an H.265 stream.
        let s = b"\x00\x00\x00\x01\x40\x01\x0c\x01\xff\xff\x00\x00\x00\x01\x42\x01\x01\x01\x60\x00\x00\x00\x01\x44\x01\xc1\x72";
        let (_, notes) = assemble(s);
        assert!(matches!(notes[..], [AssemblerNote::LooksLikeHevc { .. }]));
    }
}

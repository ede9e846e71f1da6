//! Parameter sets and slice headers, parsed with h264-reader.
//!
//! h264-reader does the bit-level parsing; this module keeps what it does not:
//! the original SPS/PPS bytes (to put in front of keyframes and into `avcC`),
//! which ids failed to parse (so slices using them are dropped with a clear
//! reason instead of being decoded against a stale set), and the compact
//! [`SliceInfo`] the assembler and POC code need.
//!
//! h264-reader is called behind `catch_unwind`: it is well fuzzed, but input
//! here comes from the network and a panic in a dependency must cost one NAL
//! unit, not a session.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use h264_reader::nal::pps::PicParameterSet;
use h264_reader::nal::slice::{
    DecRefPicMarking, FieldPic, MemoryManagementControlOperation, PicOrderCountLsb, SliceFamily,
    SliceHeader,
};
use h264_reader::nal::sps::{PicOrderCntType, SeqParameterSet};
use h264_reader::nal::{Nal, NalHeader, RefNal};
use h264_reader::Context;

use super::frame::{CodecConfig, NalSpan};

/// The fields of a slice header that access-unit assembly, keyframe
/// detection and picture order count need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    pub nal_ref_idc: u8,
    pub idr: bool,
    pub first_mb: u32,
    pub is_intra: bool,
    pub pps_id: u8,
    pub sps_id: u8,
    pub frame_num: u32,
    /// `None` for a frame, `Some(bottom)` for a field.
    pub field: Option<bool>,
    pub idr_pic_id: Option<u32>,
    pub poc_lsb: Option<u32>,
    pub delta_poc_bottom: i32,
    pub delta_poc: [i32; 2],
    pub redundant_pic_cnt: u32,
    /// `memory_management_control_operation` 5 (all references unused; POC
    /// and frame_num restart as after an IDR).
    pub mmco5: bool,
}

impl SliceInfo {
    /// H.264 7.4.1.2.4: does this slice start a new primary coded picture
    /// compared with `prev`, the previous slice of the current one?
    pub fn starts_new_picture(&self, prev: &SliceInfo) -> bool {
        if self.redundant_pic_cnt > 0 {
            return false;
        }
        self.first_mb == 0
            || self.frame_num != prev.frame_num
            || self.pps_id != prev.pps_id
            || self.field != prev.field
            || (self.nal_ref_idc == 0) != (prev.nal_ref_idc == 0)
            || self.idr != prev.idr
            || (self.idr && prev.idr && self.idr_pic_id != prev.idr_pic_id)
            || self.poc_lsb != prev.poc_lsb
            || self.delta_poc_bottom != prev.delta_poc_bottom
            || self.delta_poc != prev.delta_poc
    }
}

/// Why a slice header could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SliceError {
    #[error("slice refers to PPS {0}, which was never received or did not parse")]
    UnknownPps(u32),
    #[error("slice refers to SPS {0}, which was never received or did not parse")]
    UnknownSps(u32),
    #[error("unparseable slice header: {0}")]
    Bad(String),
}

/// Why a parameter set was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("SPS {id:?} does not parse: {reason}")]
    BadSps { id: Option<u8>, reason: String },
    #[error("PPS {id:?} does not parse: {reason}")]
    BadPps { id: Option<u8>, reason: String },
}

/// The parameter sets seen so far in a stream.
pub struct ParamSets {
    ctx: Context,
    /// The parsed SPS per id, shared with the access units that use it (an
    /// access unit keeps the SPS it was coded with even if a new one with
    /// the same id arrives right after it).
    sps_parsed: Vec<Option<Arc<SeqParameterSet>>>,
    sps_raw: Vec<Option<Bytes>>,
    pps_raw: Vec<Option<Bytes>>,
    /// Ids whose latest SPS/PPS did not parse: slices using them are dropped.
    sps_bad: [bool; 32],
    pps_bad: Vec<bool>,
}

impl Default for ParamSets {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads an unsigned Exp-Golomb value from the start of an RBSP, for the ids
/// we need even when the full parse fails.
fn leading_ue(nal: &[u8], skip_bytes: usize) -> Option<u32> {
    let nal = RefNal::new(nal, &[], true);
    let mut r = nal.rbsp_bits();
    for _ in 0..skip_bytes {
        h264_reader::rbsp::BitRead::read::<8, u8>(&mut r, "skip").ok()?;
    }
    h264_reader::rbsp::BitRead::read_ue(&mut r, "id").ok()
}

impl ParamSets {
    pub fn new() -> Self {
        Self {
            ctx: Context::new(),
            sps_parsed: vec![None; 32],
            sps_raw: vec![None; 32],
            pps_raw: vec![None; 256],
            sps_bad: [false; 32],
            pps_bad: vec![false; 256],
        }
    }

    /// Whether any SPS has parsed so far.
    pub fn has_sps(&self) -> bool {
        self.sps_raw.iter().any(Option::is_some)
    }

    /// Parses and stores an SPS NAL unit (header byte first). Returns its id.
    pub fn put_sps(&mut self, nal: &Bytes) -> Result<u8, ParamError> {
        let id = leading_ue(nal, 3)
            .and_then(|v| u8::try_from(v).ok())
            .filter(|v| *v < 32);
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            SeqParameterSet::from_bits(RefNal::new(nal, &[], true).rbsp_bits())
        }));
        let sps = match parsed {
            Ok(Ok(sps)) => sps,
            Ok(Err(e)) => {
                if let Some(id) = id {
                    self.sps_bad[id as usize] = true;
                }
                return Err(ParamError::BadSps {
                    id,
                    reason: format!("{e:?}"),
                });
            }
            Err(_) => {
                if let Some(id) = id {
                    self.sps_bad[id as usize] = true;
                }
                return Err(ParamError::BadSps {
                    id,
                    reason: "parser panicked".into(),
                });
            }
        };
        let id = sps.id().id();
        if let Err(reason) = check_sps_supported(&sps) {
            self.sps_bad[id as usize] = true;
            return Err(ParamError::BadSps {
                id: Some(id),
                reason,
            });
        }
        self.sps_parsed[id as usize] = Some(Arc::new(sps.clone()));
        self.ctx.put_seq_param_set(sps);
        self.sps_raw[id as usize] = Some(nal.clone());
        self.sps_bad[id as usize] = false;
        Ok(id)
    }

    /// Parses and stores a PPS NAL unit. Returns its id.
    pub fn put_pps(&mut self, nal: &Bytes) -> Result<u8, ParamError> {
        let id = leading_ue(nal, 0).and_then(|v| u8::try_from(v).ok());
        let ctx = &self.ctx;
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            PicParameterSet::from_bits(ctx, RefNal::new(nal, &[], true).rbsp_bits())
        }));
        match parsed {
            Ok(Ok(pps)) => {
                let id = pps.pic_parameter_set_id.id();
                self.ctx.put_pic_param_set(pps);
                self.pps_raw[id as usize] = Some(nal.clone());
                self.pps_bad[id as usize] = false;
                Ok(id)
            }
            other => {
                if let Some(id) = id {
                    self.pps_bad[id as usize] = true;
                }
                let reason = match other {
                    Ok(Err(e)) => format!("{e:?}"),
                    _ => "parser panicked".into(),
                };
                Err(ParamError::BadPps { id, reason })
            }
        }
    }

    pub fn sps(&self, id: u8) -> Option<&SeqParameterSet> {
        if self.sps_bad.get(id as usize).copied().unwrap_or(true) {
            return None;
        }
        self.ctx
            .sps_by_id(h264_reader::nal::sps::SeqParamSetId::from_u32(id as u32).ok()?)
    }

    /// The SPS `id` as a shared handle, if it is usable.
    pub fn sps_shared(&self, id: u8) -> Option<Arc<SeqParameterSet>> {
        if self.sps_bad.get(id as usize).copied().unwrap_or(true) {
            return None;
        }
        self.sps_parsed.get(id as usize)?.clone()
    }

    pub fn sps_raw(&self, id: u8) -> Option<&Bytes> {
        self.sps_raw.get(id as usize)?.as_ref()
    }

    pub fn pps_raw(&self, id: u8) -> Option<&Bytes> {
        self.pps_raw.get(id as usize)?.as_ref()
    }

    /// Parses a slice header of a VCL NAL unit (types 1 and 5).
    pub fn parse_slice(&self, nal: &[u8]) -> Result<SliceInfo, SliceError> {
        let first = *nal.first().ok_or_else(|| SliceError::Bad("empty".into()))?;
        // Ids first, so a missing parameter set is named as such.
        let pps_id = {
            let n = RefNal::new(nal, &[], true);
            let mut r = n.rbsp_bits();
            use h264_reader::rbsp::BitRead;
            let ids = (|| {
                r.read_ue("first_mb_in_slice")?;
                r.read_ue("slice_type")?;
                r.read_ue("pic_parameter_set_id")
            })();
            ids.map_err(|e| SliceError::Bad(format!("{e:?}")))?
        };
        if pps_id > 255 || self.pps_bad[pps_id as usize] {
            return Err(SliceError::UnknownPps(pps_id));
        }
        let header = NalHeader::new(first).map_err(|e| SliceError::Bad(format!("{e:?}")))?;
        let ctx = &self.ctx;
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            let n = RefNal::new(nal, &[], true);
            let mut r = n.rbsp_bits();
            SliceHeader::from_bits(ctx, &mut r, header, None).map(|(sh, sps, pps)| {
                (
                    slice_info(&sh, first),
                    sps.id().id(),
                    pps.pic_parameter_set_id.id(),
                )
            })
        }));
        match parsed {
            Ok(Ok((mut info, sps_id, pps_id))) => {
                if self.sps_bad[sps_id as usize] {
                    return Err(SliceError::UnknownSps(sps_id as u32));
                }
                info.sps_id = sps_id;
                info.pps_id = pps_id;
                Ok(info)
            }
            Ok(Err(h264_reader::nal::slice::SliceHeaderError::UndefinedPicParamSetId(id))) => {
                Err(SliceError::UnknownPps(id.id() as u32))
            }
            Ok(Err(h264_reader::nal::slice::SliceHeaderError::UndefinedSeqParamSetId(id))) => {
                Err(SliceError::UnknownSps(id.id() as u32))
            }
            Ok(Err(e)) => Err(SliceError::Bad(format!("{e:?}"))),
            Err(_) => Err(SliceError::Bad("slice header parser panicked".into())),
        }
    }

    /// Takes in the SPS and PPS one whole access unit carries (`data` in
    /// Annex B, `nals` its NAL units: a frame's `data` and `nals`) and
    /// returns the codec configuration of its first slice, with id `id`, as
    /// the assembler makes it for a picture decoding can start at; `None`
    /// when it has no slice or its parameter sets are unknown. Parameter
    /// sets that do not parse are left out, as the assembler leaves them.
    pub fn access_unit_config(
        &mut self,
        data: &Bytes,
        nals: &[NalSpan],
        id: u32,
    ) -> Option<CodecConfig> {
        let mut pps_id = None;
        for span in nals {
            let Some(nal) = data.get(span.start as usize..span.end as usize) else {
                continue;
            };
            match span.nal_type(data) {
                7 => {
                    let _ = self.put_sps(&data.slice_ref(nal));
                }
                8 => {
                    let _ = self.put_pps(&data.slice_ref(nal));
                }
                1 | 5 if pps_id.is_none() => {
                    pps_id = self.parse_slice(nal).ok().map(|s| s.pps_id);
                }
                _ => {}
            }
        }
        self.codec_config(pps_id?, id)
    }

    /// The codec configuration for pictures using `pps_id`, or `None` when
    /// its parameter sets are unknown.
    pub fn codec_config(&self, pps_id: u8, id: u32) -> Option<CodecConfig> {
        let pps_raw = self.pps_raw(pps_id)?.clone();
        let pps = self
            .ctx
            .pps_by_id(h264_reader::nal::pps::PicParamSetId::from_u32(pps_id as u32).ok()?)?;
        let sps_id = pps.seq_parameter_set_id.id();
        let sps = self.sps(sps_id)?;
        let sps_raw = self.sps_raw(sps_id)?.clone();
        let (width, height) = sps.pixel_dimensions().ok()?;
        let (frame_rate_num, frame_rate_den) = sps_frame_rate(sps).unwrap_or((0, 1));
        let chroma = &sps.chroma_info;
        // Every PPS of this SPS, so a stream alternating between PPS ids works.
        let mut pps_list = vec![pps_raw];
        for (i, raw) in self.pps_raw.iter().enumerate() {
            if i == pps_id as usize || self.pps_bad[i] {
                continue;
            }
            let Some(raw) = raw else { continue };
            let same_sps = self
                .ctx
                .pps_by_id(h264_reader::nal::pps::PicParamSetId::from_u32(i as u32).ok()?)
                .is_some_and(|p| p.seq_parameter_set_id.id() == sps_id);
            if same_sps {
                pps_list.push(raw.clone());
            }
        }
        Some(CodecConfig {
            codec: Default::default(),
            hevc: None,
            id,
            profile_idc: sps_raw.get(1).copied().unwrap_or(0),
            profile_compat: sps_raw.get(2).copied().unwrap_or(0),
            level_idc: sps_raw.get(3).copied().unwrap_or(0),
            sps: sps_raw,
            pps: pps_list,
            width,
            height,
            chroma_format_idc: chroma.chroma_format.to_u32() as u8,
            bit_depth_luma_minus8: chroma.bit_depth_luma_minus8,
            bit_depth_chroma_minus8: chroma.bit_depth_chroma_minus8,
            frame_rate_num,
            frame_rate_den,
        })
    }
}

/// Frame rate from VUI timing info, as a reduced fraction, when sane.
pub fn sps_frame_rate(sps: &SeqParameterSet) -> Option<(u32, u32)> {
    let t = sps.vui_parameters.as_ref()?.timing_info.as_ref()?;
    let num = t.time_scale as u64;
    let den = 2 * t.num_units_in_tick as u64;
    if num == 0 || den == 0 {
        return None;
    }
    let g = gcd(num, den);
    let (num, den) = (num / g, den / g);
    // Between 1 and 1000 frames per second, or the VUI is not to be trusted.
    if num < den || num > 1000 * den || num > u32::MAX as u64 || den > u32::MAX as u64 {
        return None;
    }
    Some((num as u32, den as u32))
}

/// Reorder depth the VUI declares, if any.
pub fn sps_reorder_frames(sps: &SeqParameterSet) -> Option<u32> {
    Some(
        sps.vui_parameters
            .as_ref()?
            .bitstream_restrictions
            .as_ref()?
            .max_num_reorder_frames,
    )
}

pub fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Rejects what the engine cannot time or package correctly, with a reason.
fn check_sps_supported(sps: &SeqParameterSet) -> Result<(), String> {
    if sps.pixel_dimensions().is_err() {
        return Err("picture dimensions do not compute".into());
    }
    if let PicOrderCntType::TypeOne {
        offsets_for_ref_frame,
        ..
    } = &sps.pic_order_cnt
    {
        if offsets_for_ref_frame.len() > 255 {
            return Err("too many offsets for ref frame".into());
        }
    }
    Ok(())
}

fn slice_info(sh: &SliceHeader, header: u8) -> SliceInfo {
    let (poc_lsb, delta_poc_bottom, delta_poc) = match &sh.pic_order_cnt_lsb {
        Some(PicOrderCountLsb::Frame(lsb)) => (Some(*lsb), 0, [0, 0]),
        Some(PicOrderCountLsb::FieldsAbsolute {
            pic_order_cnt_lsb,
            delta_pic_order_cnt_bottom,
        }) => (
            Some(*pic_order_cnt_lsb),
            *delta_pic_order_cnt_bottom,
            [0, 0],
        ),
        Some(PicOrderCountLsb::FieldsDelta(d)) => (None, 0, *d),
        None => (None, 0, [0, 0]),
    };
    let mmco5 = matches!(&sh.dec_ref_pic_marking, Some(DecRefPicMarking::Adaptive(ops))
        if ops.iter().any(|o| matches!(o, MemoryManagementControlOperation::AllRefPicturesUnused)));
    SliceInfo {
        nal_ref_idc: (header >> 5) & 3,
        idr: header & 0x1f == 5,
        first_mb: sh.first_mb_in_slice,
        is_intra: matches!(sh.slice_type.family, SliceFamily::I | SliceFamily::SI),
        pps_id: 0,
        sps_id: 0,
        frame_num: sh.frame_num as u32,
        field: match sh.field_pic {
            FieldPic::Frame => None,
            FieldPic::Field(h264_reader::nal::slice::Field::Top) => Some(false),
            FieldPic::Field(h264_reader::nal::slice::Field::Bottom) => Some(true),
        },
        idr_pic_id: sh.idr_pic_id,
        poc_lsb,
        delta_poc_bottom,
        delta_poc,
        redundant_pic_cnt: sh.redundant_pic_cnt.unwrap_or(0),
        mmco5,
    }
}

/// The `recovery_frame_cnt` of an SEI NAL unit's recovery-point message
/// (H.264 D.1.8 / D.2.8), if it carries one: 0 for an open-GOP random access
/// point (the picture itself is complete), N > 0 for gradual decoding
/// refresh (pictures are complete N frames later, in `frame_num`). A
/// recovery-point message whose body does not parse counts as 0.
pub fn sei_recovery_point(nal: &[u8]) -> Option<u32> {
    use h264_reader::nal::sei::recovery_point::RecoveryPoint;
    use h264_reader::nal::sei::{HeaderType, SeiReader};
    if nal.is_empty() {
        return None;
    }
    catch_unwind(AssertUnwindSafe(|| {
        let n = RefNal::new(nal, &[], true);
        let mut scratch = Vec::new();
        let mut reader = SeiReader::from_rbsp_bytes(n.rbsp_bytes(), &mut scratch);
        while let Ok(Some(msg)) = reader.next() {
            if msg.payload_type == HeaderType::RecoveryPoint {
                return Some(RecoveryPoint::read(&msg).map_or(0, |r| r.recovery_frame_cnt));
            }
        }
        None
    }))
    .unwrap_or(None)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use bytes::Bytes;

    /// The first SPS and PPS NAL units of an Annex B stream.
    pub(crate) fn first_params(stream: &[u8]) -> (Bytes, Bytes) {
        let mut s = crate::annexb::AnnexBSplitter::new(1 << 20);
        let mut out = Vec::new();
        s.push(Bytes::copy_from_slice(stream), &mut out);
        s.finish(&mut out);
        let mut sps = None;
        let mut pps = None;
        for o in out {
            if let crate::annexb::Split::Nal(n) = o {
                match n.nal_type() {
                    7 if sps.is_none() => sps = Some(n.data),
                    8 if pps.is_none() => pps = Some(n.data),
                    _ => {}
                }
            }
        }
        (sps.unwrap(), pps.unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::first_params;
    use super::*;

    #[test]
    fn parses_test_stream_parameter_sets() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/high_2997.h264"
        ))
        .unwrap();
        let (sps, pps) = first_params(&data);
        let mut p = ParamSets::new();
        assert_eq!(p.put_sps(&sps), Ok(0));
        assert_eq!(p.put_pps(&pps), Ok(0));
        let cfg = p.codec_config(0, 0).unwrap();
        assert_eq!((cfg.width, cfg.height), (320, 180));
        assert_eq!((cfg.frame_rate_num, cfg.frame_rate_den), (30000, 1001));
        assert_eq!(cfg.profile_idc, 100);
        assert!(cfg.codec_string().starts_with("avc1.64"));
    }

    #[test]
    fn broken_sps_marks_its_id_unknown() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/baseline_30.h264"
        ))
        .unwrap();
        let (sps, pps) = first_params(&data);
        let mut p = ParamSets::new();
        p.put_sps(&sps).unwrap();
        p.put_pps(&pps).unwrap();
        // Same id, truncated body.
        let bad = sps.slice(..5);
        assert!(p.put_sps(&bad).is_err());
        assert!(p.sps(0).is_none());
        assert!(p.codec_config(0, 0).is_none());
        p.put_sps(&sps).unwrap();
        assert!(p.sps(0).is_some());
    }

    #[test]
    fn garbage_never_panics() {
        let mut p = ParamSets::new();
        let mut x: u32 = 1;
        for len in 1..200usize {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let b = Bytes::from(buf);
            let _ = p.put_sps(&b);
            let _ = p.put_pps(&b);
            let _ = p.parse_slice(&b);
            let _ = sei_recovery_point(&b);
        }
    }
}

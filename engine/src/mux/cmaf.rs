//! CMAF (fragmented MP4) output: one init segment per [`CodecConfig`] and one
//! `styp`+`moof`+`mdat` media segment per [`SegmentRecord`], for HLS
//! (`EXT-X-MAP`) and DASH alike.
//!
//! The boxes are written by hand rather than with `mp4-atom` (which the tests
//! use as an independent reader of our output). A media segment is almost all
//! `mdat` payload; with `mp4-atom` that payload would be built as a `Vec<u8>`
//! for its `Mdat` and copied again on encode, the `trun` would need a
//! `Vec<TrunEntry>` per segment, and the `moof` would have to be encoded twice
//! (or measured by hand anyway) because `trun.data_offset` depends on the
//! `moof`'s own size. Its encoder also casts lengths (`sps.len() as u16`,
//! `entries.len() as u32`) where a network-fed stream needs an error. Our
//! boxes are a small, fixed set whose sizes are known up front, so we compute
//! the exact output size, allocate once, and copy each NAL unit exactly once,
//! straight from the publisher's buffer into the output.
//!
//! Choices that players care about:
//!
//! * Composition offsets are signed (`trun` version 1) and shifted by
//!   [`SegmentRecord::composition_shift`], so the first presented frame lands
//!   on the segment's decode start without an edit list. Edit lists are
//!   handled unevenly by MSE implementations, and a live stream cannot know
//!   its total duration for one anyway.
//! * Parameter sets live in `avcC` (`avc1`), and the SPS/PPS the engine puts
//!   in front of every keyframe stay in the keyframe's sample as well. A
//!   decoder that keeps its first `avcC` across an `EXT-X-MAP` change (ffmpeg's
//!   HLS demuxer does) then still switches to the new resolution at the first
//!   keyframe; MSE, AVFoundation and ffmpeg all accept in-band repeats. AUDs
//!   and filler data are dropped: in a length-prefixed container they only
//!   cost bytes. Everything else (SEI, slices) is kept as sent, with its
//!   emulation-prevention bytes.
//! * Every sample carries its own duration, size, flags and composition
//!   offset. Durations come from decode-time differences, which are exact,
//!   so the next segment's `tfdt` equals this one's plus the sum of its
//!   durations and players see no gaps or overlaps at segment joins.
//! * `styp` does not claim `msix`: that brand promises a `sidx`, which live
//!   segments do not carry.
//! * Nothing in a [`Frame`] is trusted to be consistent: bad spans, timing
//!   or sizes become a [`CmafError`], never a panic. All checks run before
//!   anything is written, so a segment is produced whole or not at all.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{
    CodecConfig, Frame, HevcConfig, PartRecord, SegmentRecord, VideoCodec, TIMESCALE,
};

/// The one track of our output.
const TRACK_ID: u32 = 1;

const TIMESCALE_U32: u32 = {
    assert!(TIMESCALE <= u32::MAX as u64);
    TIMESCALE as u32
};

/// `sample_depends_on = 2` (does not depend on others), `is_non_sync = 0`.
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// `sample_depends_on = 1`, `sample_is_non_sync_sample = 1`.
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;
/// `is_leading = 1`: a leading sample with a dependency before the
/// referenced keyframe (not decodable when decoding starts there).
const LEADING_WITH_DEPENDENCY: u32 = 0x0400_0000;

/// `tfhd` flag: offsets are relative to the enclosing `moof` (CMAF requires it).
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags: data offset, then per-sample duration, size, flags and
/// composition time offset.
const TRUN_FLAGS: u32 = 0x00_0001 | 0x00_0100 | 0x00_0200 | 0x00_0400 | 0x00_0800;
/// `tkhd` flags: track enabled, in movie, in preview.
const TKHD_FLAGS: u32 = 0x7;

/// NAL unit types left out of samples: AUD, filler data.
const fn is_dropped_nal(nal_type: u8) -> bool {
    matches!(nal_type, 9 | 12)
}

/// Whether an NAL unit (by its header) stays out of a sample: for H.264 see
/// [`is_dropped_nal`]; for H.265 AUD and filler data, and the VPS, SPS and
/// PPS too: the sample entry is `hvc1`, whose parameter sets live only in
/// `hvcC` (ISO/IEC 14496-15 8.4.1: `array_completeness` 1). `hvc1` rather
/// than `hev1` because Apple's players (Safari, AVFoundation) play only
/// `hvc1`; the cost is that a decoder which keeps its first `hvcC` across an
/// `EXT-X-MAP` change does not see new parameter sets in band.
fn is_dropped(header: u8, codec: VideoCodec) -> bool {
    match codec {
        VideoCodec::H264 => is_dropped_nal(header & 0x1f),
        VideoCodec::H265 => matches!((header >> 1) & 0x3f, 32..=35 | 38),
    }
}

/// `profile_idc` values whose `avcC` carries chroma format and bit depths
/// (ISO/IEC 14496-15 §5.3.3.1.2).
const fn has_avcc_ext(profile_idc: u8) -> bool {
    matches!(profile_idc, 100 | 110 | 122 | 144)
}

const FTYP_BRANDS: [&[u8; 4]; 4] = [b"iso6", b"cmfc", b"dash", b"avc1"];
const FTYP_BRANDS_H265: [&[u8; 4]; 4] = [b"iso6", b"cmfc", b"dash", b"hvc1"];
/// A DASH media segment (`msdh`) that is one CMAF fragment and one CMAF segment.
pub(super) const STYP_BRANDS: [&[u8; 4]; 3] = [b"msdh", b"cmfs", b"cmff"];

// Box sizes that do not depend on the input.
const FTYP_SIZE: u32 = 16 + 4 * FTYP_BRANDS.len() as u32;
const STYP_SIZE: u32 = 16 + 4 * STYP_BRANDS.len() as u32;
const MVHD_SIZE: u32 = 108;
const TKHD_SIZE: u32 = 92;
const MDHD_SIZE: u32 = 32;
const HDLR_NAME: &[u8] = b"VideoHandler\0";
const HDLR_SIZE: u32 = 32 + HDLR_NAME.len() as u32;
const VMHD_SIZE: u32 = 20;
const URL_SIZE: u32 = 12;
const DREF_SIZE: u32 = 16 + URL_SIZE;
const DINF_SIZE: u32 = 8 + DREF_SIZE;
/// `stts`, `stsc`, `stco`: full box plus a zero entry count.
const EMPTY_TABLE_SIZE: u32 = 16;
/// `stsz`: full box plus sample_size and sample_count.
const STSZ_SIZE: u32 = 20;
const TREX_SIZE: u32 = 32;
const MVEX_SIZE: u32 = 8 + TREX_SIZE;
/// `avc1` header and VisualSampleEntry fields, before `avcC`.
const AVC1_FIXED_SIZE: u32 = 86;
const MFHD_SIZE: u32 = 16;
const TFHD_SIZE: u32 = 16;
const TFDT_SIZE: u32 = 20;
/// `trun` before its samples: full box, sample_count, data_offset.
const TRUN_FIXED_SIZE: u64 = 20;
/// Per sample: duration, size, flags, composition offset.
const TRUN_ENTRY_SIZE: u64 = 16;
const MDAT_HEADER_SIZE: u64 = 8;
/// The NAL unit length prefix (`lengthSizeMinusOne` = 3).
const NAL_LENGTH_SIZE: u64 = 4;

/// Why a segment could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmafError {
    #[error("segment has no frames")]
    EmptySegment,
    #[error("frame {index}: decode time {dts} is not before the next decode time {next_dts}")]
    NonIncreasingDts { index: u64, dts: u64, next_dts: u64 },
    #[error("frame {index}: duration {duration} does not fit in 32 bits")]
    DurationTooLong { index: u64, duration: u64 },
    #[error("frame {index}: composition offset {offset} does not fit in 32 bits (signed)")]
    CompositionOffsetOutOfRange { index: u64, offset: i128 },
    #[error("frame {index}: NAL span {start}..{end} is outside its {len} bytes")]
    InvalidNalSpan {
        index: u64,
        start: u32,
        end: u32,
        len: usize,
    },
    #[error("frame {index}: no NAL units left for the sample")]
    EmptySample { index: u64 },
    #[error("frame {index}: sample of {size} bytes does not fit in 32 bits")]
    FrameTooLarge { index: u64, size: u64 },
    #[error("segment of {frames} frames and {payload} payload bytes exceeds 32-bit box sizes")]
    SegmentTooLarge { frames: usize, payload: u64 },
    #[error("segment sequence {0} + 1 does not fit in the 32-bit mfhd sequence number")]
    SequenceOutOfRange(u64),
    #[error("frame {index} uses codec config {frame} but its segment uses {segment}")]
    ConfigMismatch {
        index: u64,
        frame: u32,
        segment: u32,
    },
    #[error("codec config {id}: {reason}")]
    InvalidConfig { id: u32, reason: &'static str },
}

/// `ftyp` + `moov` for one codec configuration: track 1, timescale 90 kHz,
/// no samples, `mvex`/`trex` announcing fragments.
pub fn init_segment(cfg: &CodecConfig) -> Result<Bytes, CmafError> {
    let invalid = |reason| CmafError::InvalidConfig { id: cfg.id, reason };
    let width = u16::try_from(cfg.width)
        .ok()
        .filter(|w| *w > 0)
        .ok_or(invalid("width must be 1..=65535"))?;
    let height = u16::try_from(cfg.height)
        .ok()
        .filter(|h| *h > 0)
        .ok_or(invalid("height must be 1..=65535"))?;
    let hevc = match (cfg.codec, cfg.hevc.as_deref()) {
        (VideoCodec::H265, Some(h)) => Some(h),
        (VideoCodec::H265, None) => return Err(invalid("H.265 config without VPS")),
        _ => None,
    };
    let avcc_size = match hevc {
        Some(h) => hvcc_size(cfg, h)?,
        None => avcc_size(cfg)?,
    };

    let avc1_size = AVC1_FIXED_SIZE + avcc_size;
    let stsd_size = 16 + avc1_size;
    let stbl_size = 8 + stsd_size + 3 * EMPTY_TABLE_SIZE + STSZ_SIZE;
    let minf_size = 8 + VMHD_SIZE + DINF_SIZE + stbl_size;
    let mdia_size = 8 + MDHD_SIZE + HDLR_SIZE + minf_size;
    let trak_size = 8 + TKHD_SIZE + mdia_size;
    let moov_size = 8 + MVHD_SIZE + trak_size + MVEX_SIZE;
    let total = FTYP_SIZE + moov_size;

    let mut b = BytesMut::with_capacity(total as usize);
    match hevc {
        Some(_) => put_brands(&mut b, b"ftyp", &FTYP_BRANDS_H265),
        None => put_brands(&mut b, b"ftyp", &FTYP_BRANDS),
    }

    put_box(&mut b, moov_size, b"moov");
    put_full_box(&mut b, MVHD_SIZE, b"mvhd", 0, 0);
    b.put_u32(0); // creation_time
    b.put_u32(0); // modification_time
    b.put_u32(TIMESCALE_U32);
    b.put_u32(0); // duration: unknown, live
    b.put_u32(0x0001_0000); // rate 1.0
    b.put_u16(0x0100); // volume 1.0
    b.put_bytes(0, 10); // reserved
    put_unity_matrix(&mut b);
    b.put_bytes(0, 24); // pre_defined
    b.put_u32(TRACK_ID + 1); // next_track_ID

    put_box(&mut b, trak_size, b"trak");
    put_full_box(&mut b, TKHD_SIZE, b"tkhd", 0, TKHD_FLAGS);
    b.put_u32(0); // creation_time
    b.put_u32(0); // modification_time
    b.put_u32(TRACK_ID);
    b.put_u32(0); // reserved
    b.put_u32(0); // duration
    b.put_bytes(0, 8); // reserved
    b.put_u16(0); // layer
    b.put_u16(0); // alternate_group
    b.put_u16(0); // volume: 0 for video
    b.put_u16(0); // reserved
    put_unity_matrix(&mut b);
    b.put_u32(u32::from(width) << 16); // 16.16
    b.put_u32(u32::from(height) << 16);

    put_box(&mut b, mdia_size, b"mdia");
    put_full_box(&mut b, MDHD_SIZE, b"mdhd", 0, 0);
    b.put_u32(0); // creation_time
    b.put_u32(0); // modification_time
    b.put_u32(TIMESCALE_U32);
    b.put_u32(0); // duration
    b.put_u16(LANGUAGE_UND);
    b.put_u16(0); // pre_defined
    put_full_box(&mut b, HDLR_SIZE, b"hdlr", 0, 0);
    b.put_u32(0); // pre_defined
    b.put_slice(b"vide");
    b.put_bytes(0, 12); // reserved
    b.put_slice(HDLR_NAME);

    put_box(&mut b, minf_size, b"minf");
    put_full_box(&mut b, VMHD_SIZE, b"vmhd", 0, 1);
    b.put_u16(0); // graphicsmode: copy
    b.put_bytes(0, 6); // opcolor
    put_box(&mut b, DINF_SIZE, b"dinf");
    put_full_box(&mut b, DREF_SIZE, b"dref", 0, 0);
    b.put_u32(1); // entry_count
    put_full_box(&mut b, URL_SIZE, b"url ", 0, 1); // self-contained

    put_box(&mut b, stbl_size, b"stbl");
    put_full_box(&mut b, stsd_size, b"stsd", 0, 0);
    b.put_u32(1); // entry_count
    put_box(
        &mut b,
        avc1_size,
        if hevc.is_some() { b"hvc1" } else { b"avc1" },
    );
    b.put_bytes(0, 6); // reserved
    b.put_u16(1); // data_reference_index
    b.put_u16(0); // pre_defined
    b.put_u16(0); // reserved
    b.put_bytes(0, 12); // pre_defined
    b.put_u16(width);
    b.put_u16(height);
    b.put_u32(0x0048_0000); // horizresolution: 72 dpi
    b.put_u32(0x0048_0000); // vertresolution: 72 dpi
    b.put_u32(0); // reserved
    b.put_u16(1); // frame_count
    b.put_bytes(0, 32); // compressorname: empty
    b.put_u16(0x0018); // depth: colour, no alpha
    b.put_i16(-1); // pre_defined
    match hevc {
        Some(h) => put_hvcc(&mut b, avcc_size, cfg, h),
        None => put_avcc(&mut b, avcc_size, cfg),
    }
    for table in [b"stts", b"stsc"] {
        put_full_box(&mut b, EMPTY_TABLE_SIZE, table, 0, 0);
        b.put_u32(0); // entry_count
    }
    put_full_box(&mut b, STSZ_SIZE, b"stsz", 0, 0);
    b.put_u32(0); // sample_size
    b.put_u32(0); // sample_count
    put_full_box(&mut b, EMPTY_TABLE_SIZE, b"stco", 0, 0);
    b.put_u32(0); // entry_count

    put_box(&mut b, MVEX_SIZE, b"mvex");
    put_full_box(&mut b, TREX_SIZE, b"trex", 0, 0);
    b.put_u32(TRACK_ID);
    b.put_u32(1); // default_sample_description_index
    b.put_u32(0); // default_sample_duration
    b.put_u32(0); // default_sample_size
    b.put_u32(0); // default_sample_flags

    debug_assert_eq!(b.len(), total as usize);
    Ok(b.freeze())
}

/// `styp` + `moof` + `mdat` for one segment. `frames` are the segment's
/// frames in decode order; `end_dts` is the decode time where the segment
/// ends (the next segment's first DTS), which gives the last frame its
/// duration.
pub fn media_segment(
    record: &SegmentRecord,
    frames: &[&Frame],
    end_dts: u64,
) -> Result<Bytes, CmafError> {
    media_segment_of(record, frames, end_dts, VideoCodec::H264)
}

/// [`media_segment`] for frames of `codec`.
pub fn media_segment_of(
    record: &SegmentRecord,
    frames: &[&Frame],
    end_dts: u64,
    codec: VideoCodec,
) -> Result<Bytes, CmafError> {
    let sequence = record
        .sequence
        .checked_add(1)
        .and_then(|s| u32::try_from(s).ok())
        .ok_or(CmafError::SequenceOutOfRange(record.sequence))?;
    fragment(
        Fragment {
            sequence,
            config_id: record.config_id,
            composition_shift: record.composition_shift,
            styp: true,
            codec,
        },
        frames,
        end_dts,
    )
}

/// One CMAF chunk (`moof` + `mdat`, ISO/IEC 23000-19 7.3.2.3) for a part:
/// its `mfhd` sequence number is the part's number plus one, so the chunks
/// of a session's segments number 1, 2, 3, … across segments. A segment's
/// bytes are [`styp`] followed by its parts' chunks. `end_dts` is where the
/// part ends (the next part's first DTS).
pub fn part_chunk(part: &PartRecord, frames: &[&Frame], end_dts: u64) -> Result<Bytes, CmafError> {
    part_chunk_of(part, frames, end_dts, VideoCodec::H264)
}

/// [`part_chunk`] for frames of `codec`.
pub fn part_chunk_of(
    part: &PartRecord,
    frames: &[&Frame],
    end_dts: u64,
    codec: VideoCodec,
) -> Result<Bytes, CmafError> {
    let sequence = part
        .number
        .checked_add(1)
        .and_then(|s| u32::try_from(s).ok())
        .ok_or(CmafError::SequenceOutOfRange(part.number))?;
    fragment(
        Fragment {
            sequence,
            config_id: part.config_id,
            composition_shift: part.composition_shift,
            styp: false,
            codec,
        },
        frames,
        end_dts,
    )
}

/// The `styp` box a CMAF segment starts with (ISO/IEC 23000-19 7.3.2.2).
pub fn styp() -> Bytes {
    let mut b = BytesMut::with_capacity(STYP_SIZE as usize);
    put_brands(&mut b, b"styp", &STYP_BRANDS);
    b.freeze()
}

/// What one `moof` + `mdat` says about its frames.
struct Fragment {
    /// `mfhd` sequence number (from 1).
    sequence: u32,
    config_id: u32,
    composition_shift: u32,
    /// Put a `styp` in front.
    styp: bool,
    /// Which NAL units stay out of samples.
    codec: VideoCodec,
}

fn fragment(frag: Fragment, frames: &[&Frame], end_dts: u64) -> Result<Bytes, CmafError> {
    let first = frames.first().ok_or(CmafError::EmptySegment)?;
    let sequence = frag.sequence;

    // Check everything before writing anything, and size the output exactly.
    let mut payload: u64 = 0;
    for (i, frame) in frames.iter().enumerate() {
        if frame.config_id != frag.config_id {
            return Err(CmafError::ConfigMismatch {
                index: frame.index,
                frame: frame.config_id,
                segment: frag.config_id,
            });
        }
        sample_duration(frame, next_dts(frames, i, end_dts))?;
        composition_offset(frame, frag.composition_shift)?;
        payload += u64::from(sample_size(frame, frag.codec)?);
    }
    let too_large = || CmafError::SegmentTooLarge {
        frames: frames.len(),
        payload,
    };
    let sample_count = u32::try_from(frames.len()).map_err(|_| too_large())?;
    let trun_size = TRUN_FIXED_SIZE + TRUN_ENTRY_SIZE * u64::from(sample_count);
    let traf_size = 8 + u64::from(TFHD_SIZE + TFDT_SIZE) + trun_size;
    let moof_size = 8 + u64::from(MFHD_SIZE) + traf_size;
    let mdat_size = MDAT_HEADER_SIZE + payload;
    // The first sample's byte, counted from the start of the moof.
    let data_offset = i32::try_from(moof_size + MDAT_HEADER_SIZE).map_err(|_| too_large())?;
    let mdat_size = u32::try_from(mdat_size).map_err(|_| too_large())?;
    // moof_size < data_offset <= i32::MAX: the moof and the boxes inside it
    // fit in 32 bits.
    let (moof_size, traf_size, trun_size) = (moof_size as u32, traf_size as u32, trun_size as u32);
    let styp_size = if frag.styp { u64::from(STYP_SIZE) } else { 0 };
    let total = usize::try_from(styp_size + u64::from(moof_size) + u64::from(mdat_size))
        .map_err(|_| too_large())?;

    let mut b = BytesMut::with_capacity(total);
    if frag.styp {
        put_brands(&mut b, b"styp", &STYP_BRANDS);
    }

    put_box(&mut b, moof_size, b"moof");
    put_full_box(&mut b, MFHD_SIZE, b"mfhd", 0, 0);
    b.put_u32(sequence);
    put_box(&mut b, traf_size, b"traf");
    put_full_box(&mut b, TFHD_SIZE, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF);
    b.put_u32(TRACK_ID);
    put_full_box(&mut b, TFDT_SIZE, b"tfdt", 1, 0);
    b.put_u64(first.dts); // baseMediaDecodeTime
    put_full_box(&mut b, trun_size, b"trun", 1, TRUN_FLAGS);
    b.put_u32(sample_count);
    b.put_i32(data_offset);
    for (i, frame) in frames.iter().enumerate() {
        b.put_u32(sample_duration(frame, next_dts(frames, i, end_dts))?);
        b.put_u32(sample_size(frame, frag.codec)?);
        b.put_u32(sample_flags(frame));
        b.put_i32(composition_offset(frame, frag.composition_shift)?);
    }

    put_box(&mut b, mdat_size, b"mdat");
    for frame in frames {
        for nal in sample_nals(frame, frag.codec) {
            let nal = nal?;
            // Checked in sample_size: the whole sample fits in 32 bits.
            b.put_u32(nal.len() as u32);
            b.put_slice(nal);
        }
    }

    debug_assert_eq!(b.len(), total);
    Ok(b.freeze())
}

fn next_dts(frames: &[&Frame], i: usize, end_dts: u64) -> u64 {
    frames.get(i + 1).map_or(end_dts, |f| f.dts)
}

fn sample_duration(frame: &Frame, next_dts: u64) -> Result<u32, CmafError> {
    let duration =
        next_dts
            .checked_sub(frame.dts)
            .filter(|d| *d > 0)
            .ok_or(CmafError::NonIncreasingDts {
                index: frame.index,
                dts: frame.dts,
                next_dts,
            })?;
    u32::try_from(duration).map_err(|_| CmafError::DurationTooLong {
        index: frame.index,
        duration,
    })
}

/// `trun` sample flags (ISO/IEC 14496-12 8.8.3.1): keyframes (SAP types
/// 1-3) are sync samples; an open-GOP leading picture says `is_leading` = 1
/// (it has a dependency before the keyframe it leads); a gradual decoding
/// refresh start is not a sync sample.
fn sample_flags(frame: &Frame) -> u32 {
    let flags = if frame.is_keyframe {
        SYNC_SAMPLE_FLAGS
    } else {
        NON_SYNC_SAMPLE_FLAGS
    };
    if frame.is_leading {
        flags | LEADING_WITH_DEPENDENCY
    } else {
        flags
    }
}

fn composition_offset(frame: &Frame, shift: u32) -> Result<i32, CmafError> {
    let offset = i128::from(frame.pts) - i128::from(frame.dts) - i128::from(shift);
    i32::try_from(offset).map_err(|_| CmafError::CompositionOffsetOutOfRange {
        index: frame.index,
        offset,
    })
}

/// The NAL units that go into the frame's sample, each still to be given its
/// length prefix. Empty spans carry nothing and are skipped.
fn sample_nals(
    frame: &Frame,
    codec: VideoCodec,
) -> impl Iterator<Item = Result<&[u8], CmafError>> + '_ {
    frame.nals.iter().filter_map(move |span| {
        let Some(nal) = frame.data.get(span.start as usize..span.end as usize) else {
            return Some(Err(CmafError::InvalidNalSpan {
                index: frame.index,
                start: span.start,
                end: span.end,
                len: frame.data.len(),
            }));
        };
        match nal.first() {
            Some(header) if !is_dropped(*header, codec) => Some(Ok(nal)),
            _ => None,
        }
    })
}

/// Bytes of the frame's sample in `mdat`: its kept NAL units with their
/// length prefixes.
fn sample_size(frame: &Frame, codec: VideoCodec) -> Result<u32, CmafError> {
    let mut size: u64 = 0;
    for nal in sample_nals(frame, codec) {
        size += NAL_LENGTH_SIZE + nal?.len() as u64;
    }
    if size == 0 {
        return Err(CmafError::EmptySample { index: frame.index });
    }
    u32::try_from(size).map_err(|_| CmafError::FrameTooLarge {
        index: frame.index,
        size,
    })
}

/// Validates what goes into `avcC` and returns the box's size.
fn avcc_size(cfg: &CodecConfig) -> Result<u32, CmafError> {
    let invalid = |reason| CmafError::InvalidConfig { id: cfg.id, reason };
    if cfg.sps.first().map(|h| h & 0x1f) != Some(7) {
        return Err(invalid("SPS is empty or not NAL unit type 7"));
    }
    if cfg.sps.len() > usize::from(u16::MAX) {
        return Err(invalid("SPS longer than 65535 bytes"));
    }
    if cfg.pps.is_empty() || cfg.pps.len() > usize::from(u8::MAX) {
        return Err(invalid("need 1 to 255 PPS"));
    }
    // 8 header, 4 profile/level bytes, lengthSizeMinusOne, SPS count and
    // length, PPS count.
    let mut size = 8 + 4 + 1 + 1 + 2 + cfg.sps.len() as u32 + 1;
    for pps in &cfg.pps {
        if pps.first().map(|h| h & 0x1f) != Some(8) {
            return Err(invalid("PPS is empty or not NAL unit type 8"));
        }
        if pps.len() > usize::from(u16::MAX) {
            return Err(invalid("PPS longer than 65535 bytes"));
        }
        size += 2 + pps.len() as u32;
    }
    if has_avcc_ext(cfg.profile_idc) {
        if cfg.chroma_format_idc > 3 {
            return Err(invalid("chroma_format_idc above 3"));
        }
        if cfg.bit_depth_luma_minus8 > 7 || cfg.bit_depth_chroma_minus8 > 7 {
            return Err(invalid("bit depth above 15"));
        }
        size += 4;
    }
    Ok(size)
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1); `cfg` was
/// checked by [`avcc_size`].
fn put_avcc(b: &mut BytesMut, size: u32, cfg: &CodecConfig) {
    put_box(b, size, b"avcC");
    b.put_u8(1); // configurationVersion
    b.put_u8(cfg.profile_idc);
    b.put_u8(cfg.profile_compat);
    b.put_u8(cfg.level_idc);
    b.put_u8(0xfc | 3); // reserved, lengthSizeMinusOne = 3
    b.put_u8(0xe0 | 1); // reserved, numOfSequenceParameterSets
    b.put_u16(cfg.sps.len() as u16);
    b.put_slice(&cfg.sps);
    b.put_u8(cfg.pps.len() as u8);
    for pps in &cfg.pps {
        b.put_u16(pps.len() as u16);
        b.put_slice(pps);
    }
    if has_avcc_ext(cfg.profile_idc) {
        b.put_u8(0xfc | cfg.chroma_format_idc);
        b.put_u8(0xf8 | cfg.bit_depth_luma_minus8);
        b.put_u8(0xf8 | cfg.bit_depth_chroma_minus8);
        b.put_u8(0); // numOfSequenceParameterSetExt
    }
}

/// Validates what goes into `hvcC` and returns the box's size.
fn hvcc_size(cfg: &CodecConfig, h: &HevcConfig) -> Result<u32, CmafError> {
    let invalid = |reason| CmafError::InvalidConfig { id: cfg.id, reason };
    let nal_type = |n: &Bytes| n.first().map(|b| (b >> 1) & 0x3f);
    if h.vps.is_empty() || h.vps.iter().any(|v| nal_type(v) != Some(32)) {
        return Err(invalid("VPS missing or not NAL unit type 32"));
    }
    if nal_type(&cfg.sps) != Some(33) {
        return Err(invalid("SPS is empty or not NAL unit type 33"));
    }
    if cfg.pps.is_empty() || cfg.pps.iter().any(|p| nal_type(p) != Some(34)) {
        return Err(invalid("PPS missing or not NAL unit type 34"));
    }
    if cfg.chroma_format_idc > 3 || cfg.bit_depth_luma_minus8 > 7 || cfg.bit_depth_chroma_minus8 > 7
    {
        return Err(invalid("chroma format or bit depth out of range"));
    }
    // 8 header, 23 fixed bytes, then 3 arrays of (1 type, 2 count) and
    // (2 length + bytes) per NAL unit.
    let mut size: u64 = 8 + 23 + 3 * 3;
    let sps = std::slice::from_ref(&cfg.sps);
    for list in [&h.vps[..], sps, &cfg.pps[..]] {
        if list.len() > usize::from(u16::MAX) {
            return Err(invalid("too many parameter sets"));
        }
        for n in list {
            if n.len() > usize::from(u16::MAX) {
                return Err(invalid("parameter set longer than 65535 bytes"));
            }
            size += 2 + n.len() as u64;
        }
    }
    u32::try_from(size).map_err(|_| invalid("hvcC too large"))
}

/// HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1); checked by
/// [`hvcc_size`].
fn put_hvcc(b: &mut BytesMut, size: u32, cfg: &CodecConfig, h: &HevcConfig) {
    put_box(b, size, b"hvcC");
    b.put_u8(1); // configurationVersion
    b.put_u8((h.profile_space & 3) << 6 | u8::from(h.tier_flag) << 5 | (h.profile_idc & 0x1f));
    b.put_u32(h.profile_compat);
    b.put_u16((h.constraint_flags >> 32) as u16);
    b.put_u32(h.constraint_flags as u32);
    b.put_u8(h.level_idc);
    b.put_u16(0xf000); // reserved, min_spatial_segmentation_idc 0
    b.put_u8(0xfc); // reserved, parallelismType 0 (unknown)
    b.put_u8(0xfc | cfg.chroma_format_idc);
    b.put_u8(0xf8 | cfg.bit_depth_luma_minus8);
    b.put_u8(0xf8 | cfg.bit_depth_chroma_minus8);
    b.put_u16(0); // avgFrameRate: unspecified
                  // constantFrameRate 0, numTemporalLayers, temporalIdNested,
                  // lengthSizeMinusOne 3.
    b.put_u8((h.num_temporal_layers & 7) << 3 | u8::from(h.temporal_id_nested) << 2 | 3);
    b.put_u8(3); // numOfArrays
    let sps = std::slice::from_ref(&cfg.sps);
    for (nal_type, list) in [(32u8, &h.vps[..]), (33, sps), (34, &cfg.pps[..])] {
        b.put_u8(0x80 | nal_type); // array_completeness 1
        b.put_u16(list.len() as u16);
        for n in list {
            b.put_u16(n.len() as u16);
            b.put_slice(n);
        }
    }
}

pub(super) fn put_box(b: &mut BytesMut, size: u32, kind: &[u8; 4]) {
    b.put_u32(size);
    b.put_slice(kind);
}

pub(super) fn put_full_box(b: &mut BytesMut, size: u32, kind: &[u8; 4], version: u8, flags: u32) {
    put_box(b, size, kind);
    b.put_u32(u32::from(version) << 24 | (flags & 0x00ff_ffff));
}

/// `ftyp` or `styp`: the first brand is also the major brand.
pub(super) fn put_brands(b: &mut BytesMut, kind: &[u8; 4], brands: &[&[u8; 4]]) {
    put_box(b, 16 + 4 * brands.len() as u32, kind);
    if let Some(major) = brands.first() {
        b.put_slice(*major);
    }
    b.put_u32(0); // minor_version
    for brand in brands {
        b.put_slice(*brand);
    }
}

pub(super) fn put_unity_matrix(b: &mut BytesMut) {
    for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000u32] {
        b.put_u32(v);
    }
}

/// ISO 639-2/T `und` (undetermined).
pub(super) const LANGUAGE_UND: u16 = language_code(b"und");

/// ISO 639-2/T code packed as three 5-bit letters.
const fn language_code(code: &[u8; 3]) -> u16 {
    ((code[0] - 0x60) as u16) << 10 | ((code[1] - 0x60) as u16) << 5 | (code[2] - 0x60) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::NalSpan;
    use mp4_atom::{Codec, Decode, Ftyp, Moof, Moov, Styp, TrunEntry};

    /// SPS and PPS of `testdata/high_bframes_30.h264` (High, level 1.3, 320x180).
    const HIGH_SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60,
    ];
    const HIGH_PPS: &[u8] = &[0x68, 0xef, 0x8f, 0xcb];
    /// SPS and PPS of `testdata/baseline_30.h264` (Constrained Baseline, level 1.3).
    const BASELINE_SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x06, 0x7e, 0x7c, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00,
        0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x0a, 0xa8,
    ];
    const BASELINE_PPS: &[u8] = &[0x68, 0xce, 0x0f, 0xc8];

    const AUD: &[u8] = &[0x09, 0xf0];
    const SEI: &[u8] = &[0x06, 0x05, 0x01, 0xaa, 0x80];
    const FILLER: &[u8] = &[0x0c, 0xff, 0xff, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x02, 0x04];
    const B_SLICE: &[u8] = &[0x01, 0x9e, 0x21, 0x44, 0x12];

    fn config(sps: &[u8], pps: &[u8]) -> CodecConfig {
        CodecConfig {
            codec: Default::default(),
            hevc: None,
            id: 1,
            sps: Bytes::copy_from_slice(sps),
            pps: vec![Bytes::copy_from_slice(pps)],
            width: 320,
            height: 180,
            profile_idc: sps[1],
            profile_compat: sps[2],
            level_idc: sps[3],
            chroma_format_idc: 1,
            bit_depth_luma_minus8: 0,
            bit_depth_chroma_minus8: 0,
            frame_rate_num: 30,
            frame_rate_den: 1,
        }
    }

    fn frame(index: u64, dts: u64, pts: u64, key: bool, nals: &[&[u8]]) -> Frame {
        let mut data = Vec::new();
        let mut spans = Vec::new();
        for nal in nals {
            data.extend_from_slice(&[0, 0, 0, 1]);
            let start = data.len() as u32;
            data.extend_from_slice(nal);
            spans.push(NalSpan {
                start,
                end: data.len() as u32,
            });
        }
        Frame {
            index,
            data: Bytes::from(data),
            nals: spans,
            pts,
            dts,
            duration: 3000,
            is_keyframe: key,
            random_access: key,
            sap_type: if key { 1 } else { 0 },
            is_leading: false,
            is_reference: true,
            segment: 0,
            config_id: 1,
            capture_time_ns: None,
            ingest_time_ns: 0,
        }
    }

    fn record(sequence: u64, frames: &[Frame], end_dts: u64) -> SegmentRecord {
        SegmentRecord {
            sequence,
            start: frames[0].dts,
            duration: end_dts - frames[0].dts,
            frame_count: frames.len() as u32,
            first_frame_index: frames[0].index,
            keyframe_aligned: frames[0].is_keyframe,
            sap_type: if frames[0].is_keyframe { 1 } else { 0 },
            discontinuity: false,
            discontinuity_sequence: 0,
            program_date_time_ms: 0,
            byte_size: frames.iter().map(|f| f.data.len() as u64).sum(),
            config_id: 1,
            composition_shift: 6000,
            audio: None,
        }
    }

    /// A GOP like x264's with 3 B-frames and pyramid, shifted so the first DTS
    /// is `base`: decode order I P B b b, display order I b B b P.
    fn gop(first_index: u64, base: u64) -> Vec<Frame> {
        let t = |n: u64| base + n * 3000;
        vec![
            frame(
                first_index,
                t(0),
                t(2),
                true,
                &[AUD, SEI, HIGH_SPS, HIGH_PPS, IDR],
            ),
            frame(first_index + 1, t(1), t(6), false, &[AUD, SLICE]),
            frame(first_index + 2, t(2), t(4), false, &[AUD, B_SLICE, FILLER]),
            frame(first_index + 3, t(3), t(3), false, &[AUD, B_SLICE]),
            frame(first_index + 4, t(4), t(5), false, &[AUD, B_SLICE]),
        ]
    }

    fn segment(sequence: u64, frames: &[Frame], end_dts: u64) -> Result<Bytes, CmafError> {
        let refs: Vec<&Frame> = frames.iter().collect();
        media_segment(&record(sequence, frames, end_dts), &refs, end_dts)
    }

    /// Splits `data` into boxes, checking that they fill it exactly.
    fn boxes(data: &[u8]) -> Vec<(String, &[u8])> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            assert!(rest.len() >= 8, "truncated box header");
            let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(
                size >= 8 && size <= rest.len(),
                "box size {size} of {}",
                rest.len()
            );
            let kind = String::from_utf8(rest[4..8].to_vec()).unwrap();
            out.push((kind, &rest[8..size]));
            rest = &rest[size..];
        }
        out
    }

    fn kinds(boxes: &[(String, &[u8])]) -> Vec<String> {
        boxes.iter().map(|(k, _)| k.clone()).collect()
    }

    fn child<'a>(boxes: &[(String, &'a [u8])], kind: &str) -> &'a [u8] {
        boxes.iter().find(|(k, _)| k == kind).unwrap().1
    }

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn init_segment_box_tree() {
        let init = init_segment(&config(HIGH_SPS, HIGH_PPS)).unwrap();
        let top = boxes(&init);
        assert_eq!(kinds(&top), ["ftyp", "moov"]);
        let ftyp = child(&top, "ftyp");
        assert_eq!(&ftyp[..8], b"iso6\0\0\0\0");
        assert_eq!(&ftyp[8..], b"iso6cmfcdashavc1");

        let moov = boxes(child(&top, "moov"));
        assert_eq!(kinds(&moov), ["mvhd", "trak", "mvex"]);
        let trak = boxes(child(&moov, "trak"));
        assert_eq!(kinds(&trak), ["tkhd", "mdia"]);
        assert_eq!(be32(child(&trak, "tkhd"), 0), TKHD_FLAGS);
        let mdia = boxes(child(&trak, "mdia"));
        assert_eq!(kinds(&mdia), ["mdhd", "hdlr", "minf"]);
        let minf = boxes(child(&mdia, "minf"));
        assert_eq!(kinds(&minf), ["vmhd", "dinf", "stbl"]);
        let dinf = boxes(child(&minf, "dinf"));
        assert_eq!(kinds(&dinf), ["dref"]);
        let dref = boxes(&child(&dinf, "dref")[8..]);
        assert_eq!(kinds(&dref), ["url "]);
        assert_eq!(dref[0].1, [0, 0, 0, 1], "self-contained");
        let stbl = boxes(child(&minf, "stbl"));
        assert_eq!(kinds(&stbl), ["stsd", "stts", "stsc", "stsz", "stco"]);
        let stsd = boxes(&child(&stbl, "stsd")[8..]);
        assert_eq!(kinds(&stsd), ["avc1"]);
        let avc1 = boxes(&child(&stsd, "avc1")[78..]);
        assert_eq!(kinds(&avc1), ["avcC"]);
        let mvex = boxes(child(&moov, "mvex"));
        assert_eq!(kinds(&mvex), ["trex"]);
    }

    #[test]
    fn init_segment_fields() {
        let init = init_segment(&config(HIGH_SPS, HIGH_PPS)).unwrap();
        let mut buf = &init[..];
        let ftyp = Ftyp::decode(&mut buf).unwrap();
        assert_eq!(ftyp.major_brand, b"iso6".into());
        assert_eq!(ftyp.minor_version, 0);
        let moov = Moov::decode(&mut buf).unwrap();
        assert!(buf.is_empty());

        assert_eq!(moov.mvhd.timescale, 90_000);
        assert_eq!(moov.mvhd.duration, 0);
        assert_eq!(moov.mvhd.next_track_id, 2);
        assert_eq!(moov.trak.len(), 1);
        let trak = &moov.trak[0];
        assert!(trak.edts.is_none());
        assert_eq!(trak.tkhd.track_id, 1);
        assert!(trak.tkhd.enabled && trak.tkhd.in_movie);
        assert_eq!(trak.tkhd.width.integer(), 320);
        assert_eq!(trak.tkhd.height.integer(), 180);
        assert_eq!(trak.mdia.mdhd.timescale, 90_000);
        assert_eq!(trak.mdia.mdhd.language, "und");
        assert_eq!(trak.mdia.hdlr.handler, b"vide".into());
        assert!(trak.mdia.minf.vmhd.is_some());
        let stbl = &trak.mdia.minf.stbl;
        assert!(stbl.stts.entries.is_empty());
        assert!(stbl.stsc.entries.is_empty());
        assert_eq!(stbl.stco.as_ref().map(|s| s.entries.len()), Some(0));
        assert_eq!(stbl.stsd.codecs.len(), 1);
        let Codec::Avc1(avc1) = &stbl.stsd.codecs[0] else {
            panic!("not avc1: {:?}", stbl.stsd.codecs[0]);
        };
        assert_eq!(avc1.visual.data_reference_index, 1);
        assert_eq!((avc1.visual.width, avc1.visual.height), (320, 180));
        assert_eq!(avc1.visual.horizresolution.integer(), 72);
        assert_eq!(avc1.visual.vertresolution.integer(), 72);
        assert_eq!(avc1.visual.depth, 0x18);
        let avcc = &avc1.avcc;
        assert_eq!(avcc.configuration_version, 1);
        assert_eq!(
            (
                avcc.avc_profile_indication,
                avcc.profile_compatibility,
                avcc.avc_level_indication
            ),
            (100, 0, 13)
        );
        assert_eq!(avcc.length_size, 4);
        assert_eq!(avcc.sequence_parameter_sets, [HIGH_SPS]);
        assert_eq!(avcc.picture_parameter_sets, [HIGH_PPS]);
        let ext = avcc
            .ext
            .as_ref()
            .expect("High profile needs the avcC extension");
        assert_eq!(
            (ext.chroma_format, ext.bit_depth_luma, ext.bit_depth_chroma),
            (1, 8, 8)
        );
        assert!(ext.sequence_parameter_sets_ext.is_empty());

        let trex = &moov.mvex.as_ref().unwrap().trex;
        assert_eq!(trex.len(), 1);
        assert_eq!(trex[0].track_id, 1);
        assert_eq!(trex[0].default_sample_description_index, 1);
    }

    /// The whole avcC byte for byte, with the reserved bits set.
    #[test]
    fn avcc_bytes() {
        let avcc_of = |cfg: &CodecConfig| {
            let init = init_segment(cfg).unwrap();
            let at = init.windows(4).position(|w| w == b"avcC").unwrap();
            let size = be32(&init, at - 4) as usize;
            init[at + 4..at - 4 + size].to_vec()
        };

        let mut cfg = config(HIGH_SPS, HIGH_PPS);
        cfg.pps.push(Bytes::from_static(&[0x68, 0x01, 0x02]));
        cfg.chroma_format_idc = 2;
        cfg.bit_depth_luma_minus8 = 2;
        cfg.bit_depth_chroma_minus8 = 1;
        let mut want = vec![1, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0, 26];
        want.extend_from_slice(HIGH_SPS);
        want.extend_from_slice(&[2, 0, 4]);
        want.extend_from_slice(HIGH_PPS);
        want.extend_from_slice(&[0, 3, 0x68, 0x01, 0x02]);
        want.extend_from_slice(&[0xfe, 0xfa, 0xf9, 0]);
        assert_eq!(avcc_of(&cfg), want);

        let cfg = config(BASELINE_SPS, BASELINE_PPS);
        let mut want = vec![1, 0x42, 0xc0, 0x0d, 0xff, 0xe1, 0, 23];
        want.extend_from_slice(BASELINE_SPS);
        want.extend_from_slice(&[1, 0, 4]);
        want.extend_from_slice(BASELINE_PPS);
        assert_eq!(avcc_of(&cfg), want, "no extension outside High profiles");

        for profile in [100, 110, 122, 144] {
            let mut cfg = config(HIGH_SPS, HIGH_PPS);
            cfg.profile_idc = profile;
            let avcc = avcc_of(&cfg);
            assert_eq!(avcc[1], profile);
            assert_eq!(avcc[avcc.len() - 4..], [0xfd, 0xf8, 0xf8, 0]);
        }
    }

    #[test]
    fn media_segment_layout() {
        let frames = gop(0, 0);
        let end = 15_000;
        let seg = segment(0, &frames, end).unwrap();
        let top = boxes(&seg);
        assert_eq!(kinds(&top), ["styp", "moof", "mdat"]);
        assert_eq!(child(&top, "styp"), b"msdh\0\0\0\0msdhcmfscmff");
        let moof = boxes(child(&top, "moof"));
        assert_eq!(kinds(&moof), ["mfhd", "traf"]);
        let traf = boxes(child(&moof, "traf"));
        assert_eq!(kinds(&traf), ["tfhd", "tfdt", "trun"]);
        assert_eq!(child(&traf, "tfhd"), [0, 2, 0, 0, 0, 0, 0, 1]);
        let trun = child(&traf, "trun");
        assert_eq!(
            be32(trun, 0),
            0x0100_0f01,
            "version 1, all per-sample fields"
        );

        let mut buf = &seg[..];
        let styp = Styp::decode(&mut buf).unwrap();
        assert_eq!(styp.major_brand, b"msdh".into());
        let moof_start = seg.len() - buf.len();
        let moof = Moof::decode(&mut buf).unwrap();
        let moof_size = seg.len() - buf.len() - moof_start;
        let mdat = child(&top, "mdat");
        assert_eq!(buf.len(), 8 + mdat.len());

        assert_eq!(moof.mfhd.sequence_number, 1);
        assert_eq!(moof.traf.len(), 1);
        let traf = &moof.traf[0];
        assert_eq!(traf.tfhd.track_id, 1);
        assert!(traf.tfhd.default_base_is_moof);
        assert_eq!(traf.tfhd.base_data_offset, None);
        assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 0);
        assert_eq!(traf.trun.len(), 1);
        let trun = &traf.trun[0];
        let data_offset = trun.data_offset.unwrap() as usize;
        assert_eq!(data_offset, moof_size + 8);
        assert_eq!(
            &seg[moof_start + data_offset..],
            mdat,
            "data_offset → mdat payload"
        );

        let entries: Vec<TrunEntry> = trun.samples.iter().collect();
        assert_eq!(entries.len(), 5);
        let field = |f: fn(&TrunEntry) -> Option<i64>| -> Vec<i64> {
            entries.iter().map(|e| f(e).unwrap()).collect()
        };
        assert_eq!(field(|e| e.duration.map(i64::from)), [3000; 5]);
        assert_eq!(
            field(|e| e.flags.map(i64::from)),
            [
                0x0200_0000,
                0x0101_0000,
                0x0101_0000,
                0x0101_0000,
                0x0101_0000
            ]
        );
        // pts - dts - 6000: the keyframe is presented at the segment start.
        assert_eq!(field(|e| e.cts), [0, 9000, 0, -6000, -3000]);
        let presented: Vec<i64> = (0..5)
            .map(|i| i * 3000 + entries[i as usize].cts.unwrap())
            .collect();
        assert_eq!(presented, [0, 12_000, 6000, 3000, 9000]);

        // The mdat is the samples back to back, each NAL length-prefixed,
        // without AUD and filler data; the keyframe keeps its SPS and PPS.
        let want: [&[&[u8]]; 5] = [
            &[SEI, HIGH_SPS, HIGH_PPS, IDR],
            &[SLICE],
            &[B_SLICE],
            &[B_SLICE],
            &[B_SLICE],
        ];
        let mut rest = mdat;
        for (entry, nals) in entries.iter().zip(want) {
            let size = entry.size.unwrap() as usize;
            let (mut sample, tail) = rest.split_at(size);
            rest = tail;
            for nal in nals {
                let len = be32(sample, 0) as usize;
                assert_eq!(&sample[4..4 + len], *nal);
                sample = &sample[4 + len..];
            }
            assert!(sample.is_empty());
        }
        assert!(rest.is_empty());
        let sizes: u32 = entries.iter().map(|e| e.size.unwrap()).sum();
        assert_eq!(sizes as usize, mdat.len());
    }

    #[test]
    fn consecutive_segments_meet() {
        let mut frames = gop(0, 0);
        frames.extend(gop(5, 15_000));
        frames.extend(gop(10, 30_000));
        // A jittery DTS in the middle: durations follow DTS, not nominal values.
        frames[7].dts += 100;
        let cuts = [(0, 5), (5, 10), (10, 15)];
        let mut expected_tfdt = 0;
        for (n, (a, b)) in cuts.into_iter().enumerate() {
            let end = frames.get(b).map_or(45_000, |f| f.dts);
            let seg = segment(n as u64 + 7, &frames[a..b], end).unwrap();
            let mut buf = &seg[..];
            Styp::decode(&mut buf).unwrap();
            let moof = Moof::decode(&mut buf).unwrap();
            assert_eq!(moof.mfhd.sequence_number, n as u32 + 8);
            let traf = &moof.traf[0];
            let tfdt = traf.tfdt.as_ref().unwrap().base_media_decode_time;
            assert_eq!(tfdt, expected_tfdt);
            assert_eq!(tfdt, frames[a].dts);
            let total: u64 = traf.trun[0]
                .samples
                .iter()
                .map(|e| u64::from(e.duration.unwrap()))
                .sum();
            expected_tfdt = tfdt + total;
        }
        assert_eq!(expected_tfdt, 45_000);
    }

    #[test]
    fn large_tfdt_uses_64_bits() {
        let base = 1 << 40;
        let frames = gop(0, base);
        let seg = segment(0, &frames, base + 15_000).unwrap();
        let mut buf = &seg[..];
        Styp::decode(&mut buf).unwrap();
        let moof = Moof::decode(&mut buf).unwrap();
        assert_eq!(
            moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time,
            base
        );
    }

    #[test]
    fn init_segment_errors() {
        let check = |edit: fn(&mut CodecConfig)| {
            let mut cfg = config(HIGH_SPS, HIGH_PPS);
            edit(&mut cfg);
            assert!(
                matches!(
                    init_segment(&cfg),
                    Err(CmafError::InvalidConfig { id: 1, .. })
                ),
                "{cfg:?}"
            );
        };
        check(|c| c.width = 0);
        check(|c| c.height = 65_536);
        check(|c| c.sps = Bytes::new());
        check(|c| c.sps = Bytes::from_static(HIGH_PPS));
        check(|c| c.sps = Bytes::from(vec![0x67; 65_536]));
        check(|c| c.pps.clear());
        check(|c| c.pps = vec![Bytes::from_static(HIGH_PPS); 256]);
        check(|c| c.pps = vec![Bytes::new()]);
        check(|c| c.pps = vec![Bytes::from(vec![0x68; 65_536])]);
        check(|c| c.chroma_format_idc = 4);
        check(|c| c.bit_depth_luma_minus8 = 8);
        check(|c| c.bit_depth_chroma_minus8 = 8);
        // Limits that are fine.
        let mut cfg = config(HIGH_SPS, HIGH_PPS);
        cfg.width = 65_535;
        cfg.pps = vec![Bytes::from_static(HIGH_PPS); 255];
        assert!(init_segment(&cfg).is_ok());
        cfg.profile_idc = 77;
        cfg.chroma_format_idc = 9; // not written outside High profiles
        assert!(init_segment(&cfg).is_ok());
    }

    #[test]
    fn media_segment_errors() {
        let frames = gop(0, 0);
        let refs: Vec<&Frame> = frames.iter().collect();
        let rec = record(0, &frames, 15_000);
        assert_eq!(media_segment(&rec, &[], 0), Err(CmafError::EmptySegment));

        let mut bad = rec.clone();
        bad.sequence = u64::from(u32::MAX);
        assert_eq!(
            media_segment(&bad, &refs, 15_000),
            Err(CmafError::SequenceOutOfRange(u64::from(u32::MAX)))
        );
        bad.sequence = u64::MAX;
        assert!(matches!(
            media_segment(&bad, &refs, 15_000),
            Err(CmafError::SequenceOutOfRange(_))
        ));
        bad.sequence = u64::from(u32::MAX) - 1;
        assert!(media_segment(&bad, &refs, 15_000).is_ok());

        let mut bad = rec.clone();
        bad.config_id = 2;
        assert!(matches!(
            media_segment(&bad, &refs, 15_000),
            Err(CmafError::ConfigMismatch {
                index: 0,
                frame: 1,
                segment: 2
            })
        ));

        // The segment must end after its last frame.
        for end in [12_000, 11_999] {
            assert_eq!(
                media_segment(&rec, &refs, end),
                Err(CmafError::NonIncreasingDts {
                    index: 4,
                    dts: 12_000,
                    next_dts: end
                })
            );
        }

        let edit = |f: fn(&mut Vec<Frame>)| {
            let mut frames = gop(0, 0);
            f(&mut frames);
            segment(0, &frames, frames.last().unwrap().dts + 3000)
        };
        assert_eq!(
            edit(|f| f[2].dts = 3000),
            Err(CmafError::NonIncreasingDts {
                index: 1,
                dts: 3000,
                next_dts: 3000
            })
        );
        assert_eq!(
            edit(|f| f.swap(1, 2)),
            Err(CmafError::NonIncreasingDts {
                index: 2,
                dts: 6000,
                next_dts: 3000
            })
        );
        assert!(matches!(
            edit(|f| f[4].dts = 1 << 33),
            Err(CmafError::DurationTooLong { index: 3, .. })
        ));
        assert!(matches!(
            edit(|f| f[1].pts = 1 << 40),
            Err(CmafError::CompositionOffsetOutOfRange { index: 1, .. })
        ));
        // -9000: negative offsets are fine in trun version 1.
        assert!(edit(|f| f[1].pts = 0).is_ok());
        assert_eq!(
            edit(|f| f[3].nals[1].end = 100),
            Err(CmafError::InvalidNalSpan {
                index: 3,
                start: 10,
                end: 100,
                len: 15
            })
        );
        assert!(matches!(
            edit(|f| f[3].nals[1] = NalSpan { start: 12, end: 11 }),
            Err(CmafError::InvalidNalSpan { index: 3, .. })
        ));
        // A frame left with nothing but an AUD (or empty NAL units) has no sample.
        assert_eq!(
            edit(|f| f[2].nals = vec![f[2].nals[0], NalSpan { start: 3, end: 3 }]),
            Err(CmafError::EmptySample { index: 2 })
        );
        assert_eq!(
            edit(|f| f[2].nals.clear()),
            Err(CmafError::EmptySample { index: 2 })
        );
    }

    /// Sizes past 32 bits, built from many spans over one small buffer so the
    /// test needs no gigabytes.
    #[test]
    fn oversized_samples() {
        let big = |index: u64, dts: u64, spans: u32| {
            let mut f = frame(index, dts, dts + 6000, index == 0, &[&[0x41; 65_532]]);
            f.nals = vec![f.nals[0]; spans as usize];
            f
        };
        // 65_537 NAL units of 65_536 bytes with prefix: just over 2^32.
        let frames = [big(0, 0, 65_537)];
        assert_eq!(
            segment(0, &frames, 3000),
            Err(CmafError::FrameTooLarge {
                index: 0,
                size: 65_537 * 65_536
            })
        );
        // Three samples of 1.5 GiB each: fine alone, too much for one mdat.
        let frames = [
            big(0, 0, 24_576),
            big(1, 3000, 24_576),
            big(2, 6000, 24_576),
        ];
        assert!(matches!(
            segment(0, &frames, 9000),
            Err(CmafError::SegmentTooLarge { frames: 3, .. })
        ));
    }

    /// Arbitrary frames never panic, and whatever is written is consistent.
    #[test]
    fn arbitrary_input_does_not_panic() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut written = 0;
        for round in 0..2000 {
            let count = rand(6) as usize;
            let mut frames = Vec::new();
            let mut dts = rand(1 << 34);
            for i in 0..count {
                let len = rand(40) as usize;
                let data: Vec<u8> = (0..len).map(|_| rand(256) as u8).collect();
                let len64 = len as u64;
                let nals = (0..rand(5))
                    .map(|_| {
                        if rand(20) == 0 {
                            // Possibly out of range or reversed.
                            let start = rand(len64 + 3) as u32;
                            NalSpan {
                                start,
                                end: rand(len64 + 3) as u32,
                            }
                        } else {
                            let start = rand(len64 + 1);
                            let end = start + rand(len64 + 1 - start);
                            NalSpan {
                                start: start as u32,
                                end: end as u32,
                            }
                        }
                    })
                    .collect();
                let mut f = frame(i as u64, dts, dts + rand(20_000), rand(2) == 0, &[]);
                f.data = Bytes::from(data);
                f.nals = nals;
                f.config_id = rand(30).min(1) as u32;
                frames.push(f);
                dts = dts.wrapping_add(rand(6000)).wrapping_sub(rand(100));
            }
            let refs: Vec<&Frame> = frames.iter().collect();
            let rec = SegmentRecord {
                sequence: rand(10),
                start: 0,
                duration: 0,
                frame_count: 0,
                first_frame_index: 0,
                keyframe_aligned: false,
                sap_type: if false { 1 } else { 0 },
                discontinuity: false,
                discontinuity_sequence: 0,
                program_date_time_ms: 0,
                byte_size: 0,
                config_id: 1,
                composition_shift: rand(10_000) as u32,
                audio: None,
            };
            let end = dts.wrapping_add(rand(6000)).wrapping_sub(100);
            if let Ok(seg) = media_segment(&rec, &refs, end) {
                written += 1;
                let top = boxes(&seg);
                assert_eq!(kinds(&top), ["styp", "moof", "mdat"], "round {round}");
                let mut buf = &seg[..];
                Styp::decode(&mut buf).unwrap();
                let moof = Moof::decode(&mut buf).unwrap();
                let sizes: u64 = moof.traf[0].trun[0]
                    .samples
                    .iter()
                    .map(|e| u64::from(e.size.unwrap()))
                    .sum();
                assert_eq!(sizes as usize, child(&top, "mdat").len());
                let mut rest = child(&top, "mdat");
                while !rest.is_empty() {
                    let len = be32(rest, 0) as usize;
                    assert!(len > 0);
                    assert!(!is_dropped_nal(rest[4] & 0x1f));
                    rest = &rest[4 + len..];
                }
            }
        }
        assert!(written > 200, "only {written} segments written");
    }
}

//! MPEG-TS segments for HLS, written by hand rather than with the `mpeg2ts`
//! crate.
//!
//! Why hand-written: `mpeg2ts` models every packet as an owned struct whose
//! payload is copied into a 184-byte array, then into a stack buffer, then
//! through `io::Write`, with a fallible path per field. For an encoder that
//! runs on every segment of thousands of sessions, that is two extra copies of
//! every payload byte and a `Result` per packet. What it would still do for
//! us is small: PAT and PMT are constant for our single-program output (built
//! at compile time here, only the continuity counter changes) and the PES
//! header is 14 or 19 bytes of bit packing. The parts that need thought
//! (splitting a PES over packets, stuffing, PCR placement, continuity across
//! segments) are ours either way. The tests decode our output with
//! `mpeg2ts`'s reader as an independent check.
//!
//! Why two passes: the exact size is known before writing, so a segment is one
//! allocation and each payload byte is copied once, straight from the frame's
//! NAL units. The first pass also validates everything that comes from the
//! network (NAL spans, timestamps), so the second cannot fail half-way and
//! the continuity counters are committed only for a segment actually returned:
//! a rejected segment leaves the stream continuous.
//!
//! Why a PCR on every PES start: it costs 8 bytes per frame, keeps the PCR tied
//! to the DTS of the frame it precedes (so it is monotonic and never later
//! than that DTS), makes every segment and every frame start a clock
//! reference, and at 10 fps or more it already meets the 100 ms interval.
//! Frames further apart than that (low-rate cameras) get PCR-only packets in
//! between. At a segment's end the next DTS is not known, so that gap is left
//! to the next segment's first PCR.
//!
//! Why the PCR runs `PCR_DELAY` (100 ms) behind DTS: with a PCR at least
//! every 100 ms, all of a frame's bytes arrive before the next PCR, which is at
//! most its DTS, so a receiver never waits for bytes past their decode time.
//! [`TS_TIME_OFFSET`] is the smallest offset that keeps that PCR non-negative
//! for a timeline starting at 0.
//!
//! Why our own AUD first and SPS/PPS before keyframes: an AUD must be the
//! first NAL unit of an access unit and there must be only one, so a
//! publisher's AUD is dropped wherever it sits and ours leads; each segment
//! must decode on its own (players join at any segment and switch
//! renditions), so a keyframe without parameter sets gets the session's.

// Frames come from network input: no panicking paths outside the tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::audio::adts::AdtsHeader;
use crate::frame::{AudioConfig, AudioFrame, CodecConfig, Frame, NalSpan, VideoCodec};

/// Constant added to every PTS/DTS/PCR so that PCR (which runs ahead of DTS)
/// never goes below 0.
pub const TS_TIME_OFFSET: u64 = PCR_DELAY;

/// How far the PCR runs ahead of the DTS of the PES it starts, 90 kHz.
const PCR_DELAY: u64 = 9_000;

const _: () = assert!(TS_TIME_OFFSET >= PCR_DELAY);

const PACKET_SIZE: usize = 188;
const SYNC_BYTE: u8 = 0x47;
/// Payload room of a packet without adaptation field.
const PACKET_PAYLOAD: usize = PACKET_SIZE - 4;

const PID_PAT: u16 = 0x0000;
const PID_PMT: u16 = 0x1000;
const PID_VIDEO: u16 = 0x0100;
const PID_AUDIO: u16 = 0x0101;
/// Stream type of AAC in ADTS (ISO/IEC 13818-7) in the PMT.
const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
const STREAM_ID_AUDIO: u8 = 0xC0;
/// Audio frames in one PES: one, so every AAC frame has its own PTS
/// (players and ffprobe time grouped frames by the first one's PTS only).
const MAX_AUDIO_PER_PES: usize = 1;
/// The ADTS header written in front of each AAC frame (no CRC).
const ADTS_HEADER: usize = 7;

/// adaptation_field_control values.
const AFC_PAYLOAD: u8 = 0b01;
const AFC_ADAPTATION_ONLY: u8 = 0b10;
const AFC_ADAPTATION_AND_PAYLOAD: u8 = 0b11;

/// Adaptation field flags.
const AF_RANDOM_ACCESS: u8 = 0x40;
const AF_PCR: u8 = 0x10;
/// Adaptation field with a PCR: length byte, flags byte, 6 PCR bytes.
const AF_PCR_SIZE: usize = 8;
/// Payload room of a packet that carries a PCR.
const FIRST_PAYLOAD_MAX: usize = PACKET_PAYLOAD - AF_PCR_SIZE;

/// The longest PCR interval allowed, 90 kHz (100 ms).
const PCR_INTERVAL: u64 = 9_000;
/// At most this many PCR-only packets fill one DTS gap (10 s): a larger gap
/// is a discontinuity, not a slow stream, and must not inflate the segment.
const MAX_PCR_FILL: u64 = 100;

const TIMESTAMP_MASK: u64 = (1 << 33) - 1;

const STREAM_ID_VIDEO: u8 = 0xE0;
/// Stream type of H.264 video in the PMT.
const STREAM_TYPE_H264: u8 = 0x1B;
/// Stream type of H.265 video in the PMT.
const STREAM_TYPE_H265: u8 = 0x24;
/// PES header up to and including PES_header_data_length.
const PES_HEADER_FIXED: usize = 9;

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// Access unit delimiter, primary_pic_type 7 (any slice type).
const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];
/// H.265 access unit delimiter (type 35, layer 0, TemporalId 0),
/// pic_type 2 (any slice type).
const AUD_H265: [u8; 7] = [0, 0, 0, 1, 0x46, 0x01, 0x50];

const NAL_AUD: u8 = 9;
const NAL_AUD_H265: u8 = 35;
const NAL_VPS_H265: u8 = 32;
const NAL_SPS_H265: u8 = 33;
const NAL_PPS_H265: u8 = 34;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// PAT section without CRC: program 1 on PMT PID 0x1000.
#[rustfmt::skip]
const PAT_SECTION: [u8; 12] = [
    0x00,                               // table_id
    0xB0, 0x0D,                         // syntax indicator, reserved, section_length 13
    0x00, 0x01,                         // transport_stream_id 1
    0xC1,                               // reserved, version 0, current_next_indicator
    0x00, 0x00,                         // section_number, last_section_number
    0x00, 0x01,                         // program_number 1
    0xE0 | (PID_PMT >> 8) as u8, PID_PMT as u8, // reserved, program_map_PID
];
const PAT_CRC: u32 = crc32_mpeg2(&PAT_SECTION);

/// PMT section without CRC: PCR and one H.264 stream on the video PID.
#[rustfmt::skip]
const PMT_SECTION: [u8; 17] = [
    0x02,                               // table_id
    0xB0, 0x12,                         // syntax indicator, reserved, section_length 18
    0x00, 0x01,                         // program_number 1
    0xC1,                               // reserved, version 0, current_next_indicator
    0x00, 0x00,                         // section_number, last_section_number
    0xE0 | (PID_VIDEO >> 8) as u8, PID_VIDEO as u8, // reserved, PCR_PID
    0xF0, 0x00,                         // reserved, program_info_length 0
    STREAM_TYPE_H264,                   // stream_type
    0xE0 | (PID_VIDEO >> 8) as u8, PID_VIDEO as u8, // reserved, elementary_PID
    0xF0, 0x00,                         // reserved, ES_info_length 0
];
const PMT_CRC: u32 = crc32_mpeg2(&PMT_SECTION);
/// The PMT of an H.265 stream: the same with stream type 0x24.
const PMT_SECTION_H265: [u8; 17] = {
    let mut s = PMT_SECTION;
    s[12] = STREAM_TYPE_H265;
    s
};
const PMT_CRC_H265: u32 = crc32_mpeg2(&PMT_SECTION_H265);

/// The AUD a frame's PES starts with.
fn aud_of(codec: VideoCodec) -> &'static [u8] {
    match codec {
        VideoCodec::H264 => &AUD,
        VideoCodec::H265 => &AUD_H265,
    }
}

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, initial all ones, not reflected, no
/// final xor), as PSI sections use. Only evaluated at compile time.
const fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    let mut rest = data;
    while let [byte, tail @ ..] = rest {
        crc ^= (*byte as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
            bit += 1;
        }
        rest = tail;
    }
    crc
}

/// Why a segment could not be written. Nothing is written and the continuity
/// counters are unchanged when one is returned.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TsError {
    #[error("a segment needs at least one frame")]
    NoFrames,
    #[error("frame {index}: NAL unit span {start}..{end} is outside its {len} data bytes")]
    NalOutOfRange {
        index: u64,
        start: u32,
        end: u32,
        len: usize,
    },
    #[error("frame {index} has no NAL unit other than access unit delimiters")]
    EmptyFrame { index: u64 },
    #[error("frame {index}: PTS {pts} is before DTS {dts}")]
    PtsBeforeDts { index: u64, pts: u64, dts: u64 },
    #[error("frame {index}: DTS {dts} does not follow the previous frame's DTS {previous}")]
    DtsNotIncreasing { index: u64, dts: u64, previous: u64 },
    #[error(
        "frame {index}: keyframe without SPS/PPS, and the codec config has none for its config {config_id}"
    )]
    MissingParameterSets { index: u64, config_id: u32 },
    #[error("segment too large to address")]
    TooLarge,
    #[error("audio frame {index}: {len} bytes do not fit an ADTS frame, or its format has no ADTS header")]
    AudioFrame { index: u64, len: usize },
    #[error("audio frame {index}: PTS {pts} is before the previous audio frame's {previous}")]
    AudioNotIncreasing { index: u64, pts: u64, previous: u64 },
}

/// The PMT section (without CRC) for the tracks a part has: video (stream
/// type 0x1B or 0x24) on PID 0x100, AAC in ADTS (0x0F) on PID 0x101; the
/// PCR on the video PID, or the audio PID without video. Video alone is
/// version 0 (the bytes liveslice always wrote); with audio, version 1;
/// audio alone, version 2.
fn pmt_section(video: Option<VideoCodec>, audio: bool) -> Vec<u8> {
    let streams = usize::from(video.is_some()) + usize::from(audio);
    let section_length = 9 + 5 * streams + 4;
    let version: u8 = match (video.is_some(), audio) {
        (true, false) => 0,
        (true, true) => 1,
        _ => 2,
    };
    let pcr_pid = if video.is_some() {
        PID_VIDEO
    } else {
        PID_AUDIO
    };
    let mut s = vec![
        0x02,
        0xB0 | (section_length >> 8) as u8,
        section_length as u8,
        0x00,
        0x01,
        0xC1 | (version << 1),
        0x00,
        0x00,
        0xE0 | (pcr_pid >> 8) as u8,
        pcr_pid as u8,
        0xF0,
        0x00,
    ];
    if let Some(codec) = video {
        let st = match codec {
            VideoCodec::H264 => STREAM_TYPE_H264,
            VideoCodec::H265 => STREAM_TYPE_H265,
        };
        s.extend_from_slice(&[
            st,
            0xE0 | (PID_VIDEO >> 8) as u8,
            PID_VIDEO as u8,
            0xF0,
            0x00,
        ]);
    }
    if audio {
        s.extend_from_slice(&[
            STREAM_TYPE_AAC_ADTS,
            0xE0 | (PID_AUDIO >> 8) as u8,
            PID_AUDIO as u8,
            0xF0,
            0x00,
        ]);
    }
    s
}

/// One PES of audio frames (consecutive), planned.
struct AudioPes {
    /// Its frames: `frames[range]`.
    range: std::ops::Range<usize>,
    /// Before the video frame at this index (`usize::MAX`: after all).
    before_video: usize,
    /// PES bytes: 14 header bytes and the ADTS frames.
    pes_len: usize,
}

/// Groups a part's audio frames into PES packets placed before the first
/// video frame whose decode time is at or after their presentation time.
fn plan_audio(
    frames: &[&Frame],
    audio: &[&AudioFrame],
    acfg: &AudioConfig,
) -> Result<Vec<AudioPes>, TsError> {
    let mut out: Vec<AudioPes> = Vec::new();
    let mut v = 0usize;
    let mut previous: Option<u64> = None;
    for (i, a) in audio.iter().enumerate() {
        if AdtsHeader::write(
            acfg.core_object_type,
            acfg.sample_rate_index,
            acfg.channel_config,
            a.data.len(),
        )
        .is_none()
            || a.data.is_empty()
        {
            return Err(TsError::AudioFrame {
                index: a.index,
                len: a.data.len(),
            });
        }
        if let Some(p) = previous {
            if a.pts < p {
                return Err(TsError::AudioNotIncreasing {
                    index: a.index,
                    pts: a.pts,
                    previous: p,
                });
            }
        }
        previous = Some(a.pts);
        while frames.get(v).is_some_and(|f| f.dts < a.pts) {
            v += 1;
        }
        let before = if v < frames.len() { v } else { usize::MAX };
        let bytes = ADTS_HEADER + a.data.len();
        match out.last_mut() {
            Some(last)
                if last.before_video == before
                    && last.range.len() < MAX_AUDIO_PER_PES
                    && !frames.is_empty() =>
            {
                last.range.end = i + 1;
                last.pes_len += bytes;
            }
            _ => out.push(AudioPes {
                range: i..i + 1,
                before_video: before,
                pes_len: PES_HEADER_FIXED + 5 + bytes,
            }),
        }
    }
    for p in &out {
        // PES_packet_length counts the bytes after it (all but 6).
        if p.pes_len - 6 > usize::from(u16::MAX) {
            return Err(TsError::TooLarge);
        }
    }
    Ok(out)
}

/// TS packets of an audio PES: the first carries a PCR when `pcr`.
fn audio_packet_count(pes_len: usize, pcr: bool) -> usize {
    let first = if pcr {
        FIRST_PAYLOAD_MAX
    } else {
        PACKET_PAYLOAD
    };
    1 + pes_len.saturating_sub(first).div_ceil(PACKET_PAYLOAD)
}

/// Next continuity counter to use on each PID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    pat: u8,
    pmt: u8,
    video: u8,
    audio: u8,
}

/// One per session (stream); keeps continuity counters across segments
/// and parts.
#[derive(Clone, Debug, Default)]
pub struct TsMuxer {
    counters: Counters,
    /// Decode time of the last frame of the last part written, for PCR
    /// packets between parts of one segment.
    last_dts: Option<u64>,
}

impl TsMuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The continuity counters (ISO/IEC 13818-1 2.4.3.3, 4 bits each) the
    /// next packets of the PAT, PMT and video PIDs get.
    pub fn continuity(&self) -> [u8; 4] {
        [
            self.counters.pat,
            self.counters.pmt,
            self.counters.video,
            self.counters.audio,
        ]
    }

    /// Continues another muxer's counters (see [`continuity`](Self::continuity)),
    /// so parts muxed here from a segment's start are the bytes it would
    /// have written.
    pub fn set_continuity(&mut self, c: [u8; 4]) {
        self.counters = Counters {
            pat: c[0] & 0x0f,
            pmt: c[1] & 0x0f,
            video: c[2] & 0x0f,
            audio: c[3] & 0x0f,
        };
    }

    /// One HLS segment: PAT, PMT, then one PES per frame. `frames` in decode order.
    ///
    /// Fails, writing nothing and leaving the counters as they were, on an
    /// empty list, a NAL span outside its frame's data, a frame with nothing
    /// but AUDs, PTS before DTS, DTS not increasing within the segment, or a
    /// keyframe without SPS/PPS when `cfg` (of another `config_id`, or empty)
    /// cannot supply them.
    pub fn segment(&mut self, frames: &[&Frame], cfg: &CodecConfig) -> Result<Bytes, TsError> {
        self.part(frames, cfg, true)
    }

    /// One part of a segment: PAT, PMT (so a player can start at any part
    /// that starts at a random access point), then one PES per frame; a
    /// segment is the concatenation of its parts. A part that continues a
    /// segment (`starts_segment` false) gets the PCR-only packets that keep
    /// the PCR interval since the previous part's last frame, exactly as
    /// within a part. Fails as [`TsMuxer::segment`] does.
    pub fn part(
        &mut self,
        frames: &[&Frame],
        cfg: &CodecConfig,
        starts_segment: bool,
    ) -> Result<Bytes, TsError> {
        self.part_av(frames, Some(cfg), None, starts_segment)
    }

    /// [`part`](Self::part) with the part's audio frames (`audio`, with the
    /// session's audio format): each run of them in a PES on the audio PID
    /// (stream type 0x0F, ADTS in PES, PTS only), placed before the first
    /// video frame whose decode time is at or after it. Without video (an
    /// audio-only session, `cfg` `None`) every audio PES carries the PCR.
    pub fn part_av(
        &mut self,
        frames: &[&Frame],
        cfg: Option<&CodecConfig>,
        audio: Option<(&[&AudioFrame], &AudioConfig)>,
        starts_segment: bool,
    ) -> Result<Bytes, TsError> {
        let audio = audio.filter(|(a, _)| !a.is_empty());
        let Some(cfg) = cfg.filter(|_| !frames.is_empty()) else {
            return match audio {
                Some((a, acfg)) => self.audio_only_part(a, acfg),
                None => Err(TsError::NoFrames),
            };
        };
        let audio_pes = match audio {
            Some((a, acfg)) => plan_audio(frames, a, acfg)?,
            None => Vec::new(),
        };

        let carried_dts = if starts_segment {
            None
        } else {
            self.last_dts
                .filter(|d| frames.first().is_some_and(|f| f.dts > *d))
        };
        // Pass 1: validate and size.
        let mut packets: usize = 2; // PAT, PMT
        let mut previous_dts: Option<u64> = carried_dts;
        for frame in frames {
            let plan = FramePlan::new(frame, cfg)?;
            if let Some(previous) = previous_dts {
                if frame.dts <= previous {
                    return Err(TsError::DtsNotIncreasing {
                        index: frame.index,
                        dts: frame.dts,
                        previous,
                    });
                }
                packets = add(packets, pcr_fill_count(frame.dts - previous))?;
            }
            packets = add(packets, plan.packet_count())?;
            previous_dts = Some(frame.dts);
        }
        for p in &audio_pes {
            packets = add(packets, audio_packet_count(p.pes_len, false))?;
        }
        let size = packets.checked_mul(PACKET_SIZE).ok_or(TsError::TooLarge)?;

        // Pass 2: write. Counters go to a copy, committed on success.
        let mut out = BytesMut::with_capacity(size);
        let mut counters = self.counters;
        write_psi(&mut out, PID_PAT, &mut counters.pat, &PAT_SECTION, PAT_CRC);
        match (cfg.codec, audio.is_some()) {
            (VideoCodec::H264, false) => {
                write_psi(&mut out, PID_PMT, &mut counters.pmt, &PMT_SECTION, PMT_CRC)
            }
            (VideoCodec::H265, false) => write_psi(
                &mut out,
                PID_PMT,
                &mut counters.pmt,
                &PMT_SECTION_H265,
                PMT_CRC_H265,
            ),
            (codec, true) => {
                let section = pmt_section(Some(codec), true);
                let crc = crc32_mpeg2(&section);
                write_psi(&mut out, PID_PMT, &mut counters.pmt, &section, crc)
            }
        }
        let mut previous_dts: Option<u64> = carried_dts;
        let mut next_audio = audio_pes.iter().peekable();
        for (vi, frame) in frames.iter().enumerate() {
            while let Some(p) = next_audio.next_if(|p| p.before_video == vi) {
                if let Some((a, acfg)) = audio {
                    write_audio_pes(
                        &mut out,
                        &mut counters.audio,
                        a.get(p.range.clone()).unwrap_or(&[]),
                        acfg,
                        p.pes_len,
                        None,
                    );
                }
            }
            if let Some(previous) = previous_dts {
                let last_cc = counters.video.wrapping_sub(1) & 0x0F;
                for k in 1..=pcr_fill_count(frame.dts.wrapping_sub(previous)) {
                    let pcr = pcr_base(previous).wrapping_add(k as u64 * PCR_INTERVAL);
                    write_pcr_only(&mut out, last_cc, pcr & TIMESTAMP_MASK);
                }
            }
            let plan = FramePlan::new(frame, cfg)?;
            write_pes(&mut out, &mut counters.video, frame, cfg, &plan);
            previous_dts = Some(frame.dts);
        }
        for p in next_audio {
            if let Some((a, acfg)) = audio {
                write_audio_pes(
                    &mut out,
                    &mut counters.audio,
                    a.get(p.range.clone()).unwrap_or(&[]),
                    acfg,
                    p.pes_len,
                    None,
                );
            }
        }
        debug_assert_eq!(out.len(), size);
        self.counters = counters;
        self.last_dts = previous_dts;
        Ok(out.freeze())
    }
}

impl TsMuxer {
    /// An audio-only part: PAT, PMT (audio alone), then one PES per audio
    /// frame, each with a PCR.
    fn audio_only_part(
        &mut self,
        audio: &[&AudioFrame],
        acfg: &AudioConfig,
    ) -> Result<Bytes, TsError> {
        let mut pes = plan_audio(&[], audio, acfg)?;
        // One frame per PES: a PCR with every frame.
        let mut single = Vec::with_capacity(audio.len());
        for p in pes.drain(..) {
            for i in p.range {
                single.push(AudioPes {
                    range: i..i + 1,
                    before_video: usize::MAX,
                    pes_len: PES_HEADER_FIXED
                        + 5
                        + ADTS_HEADER
                        + audio.get(i).map_or(0, |a| a.data.len()),
                });
            }
        }
        let mut packets: usize = 2;
        for p in &single {
            packets = add(packets, audio_packet_count(p.pes_len, true))?;
        }
        let size = packets.checked_mul(PACKET_SIZE).ok_or(TsError::TooLarge)?;
        let mut out = BytesMut::with_capacity(size);
        let mut counters = self.counters;
        write_psi(&mut out, PID_PAT, &mut counters.pat, &PAT_SECTION, PAT_CRC);
        let section = pmt_section(None, true);
        let crc = crc32_mpeg2(&section);
        write_psi(&mut out, PID_PMT, &mut counters.pmt, &section, crc);
        for p in &single {
            let pcr = audio.get(p.range.start).map(|a| pcr_base(a.pts));
            write_audio_pes(
                &mut out,
                &mut counters.audio,
                audio.get(p.range.clone()).unwrap_or(&[]),
                acfg,
                p.pes_len,
                pcr,
            );
        }
        debug_assert_eq!(out.len(), size);
        self.counters = counters;
        self.last_dts = None;
        Ok(out.freeze())
    }
}

/// Writes one audio PES (its frames with ADTS headers); `pcr`: the first
/// packet carries it (audio-only output).
fn write_audio_pes(
    out: &mut BytesMut,
    cc: &mut u8,
    frames: &[&AudioFrame],
    acfg: &AudioConfig,
    pes_len: usize,
    pcr: Option<u64>,
) {
    let Some(first) = frames.first() else {
        return;
    };
    let first_room = if pcr.is_some() {
        FIRST_PAYLOAD_MAX
    } else {
        PACKET_PAYLOAD
    };
    let first_payload = pes_len.min(first_room);
    let af_len = PACKET_PAYLOAD - first_payload; // adaptation field bytes
    match (pcr, af_len) {
        (Some(pcr), _) => {
            put_header(
                out,
                PID_AUDIO,
                true,
                AFC_ADAPTATION_AND_PAYLOAD,
                next_cc(cc),
            );
            out.put_u8((af_len - 1) as u8);
            out.put_u8(AF_PCR | AF_RANDOM_ACCESS);
            put_pcr(out, pcr);
            out.put_bytes(0xFF, af_len - AF_PCR_SIZE);
        }
        (None, 0) => put_header(out, PID_AUDIO, true, AFC_PAYLOAD, next_cc(cc)),
        (None, n) => {
            put_header(
                out,
                PID_AUDIO,
                true,
                AFC_ADAPTATION_AND_PAYLOAD,
                next_cc(cc),
            );
            out.put_u8((n - 1) as u8);
            if n >= 2 {
                out.put_u8(0);
                out.put_bytes(0xFF, n - 2);
            }
        }
    }
    out.put_slice(&[0, 0, 1, STREAM_ID_AUDIO]);
    out.put_u16((pes_len - 6) as u16);
    out.put_u8(0x84); // '10', not scrambled, data_alignment_indicator
    out.put_slice(&[0x80, 5]);
    put_timestamp(out, 0b0010, timestamp(first.pts));
    let mut payload = PesPayload {
        out,
        cc,
        room: first_payload - (PES_HEADER_FIXED + 5),
        unassigned: pes_len - first_payload,
        pid: PID_AUDIO,
    };
    for a in frames {
        // Checked by the plan.
        if let Some(h) = AdtsHeader::write(
            acfg.core_object_type,
            acfg.sample_rate_index,
            acfg.channel_config,
            a.data.len(),
        ) {
            payload.put(&h);
            payload.put(&a.data);
        }
    }
    debug_assert_eq!((payload.room, payload.unassigned), (0, 0));
}

fn add(a: usize, b: usize) -> Result<usize, TsError> {
    a.checked_add(b).ok_or(TsError::TooLarge)
}

/// PCR-only packets needed between two PES starts `gap` apart (90 kHz) so
/// that no PCR interval exceeds [`PCR_INTERVAL`].
fn pcr_fill_count(gap: u64) -> usize {
    (gap.saturating_sub(1) / PCR_INTERVAL).min(MAX_PCR_FILL) as usize
}

/// 33-bit PTS/DTS of a session time.
fn timestamp(t: u64) -> u64 {
    t.wrapping_add(TS_TIME_OFFSET) & TIMESTAMP_MASK
}

/// 33-bit PCR base for the PES with decode time `dts`.
fn pcr_base(dts: u64) -> u64 {
    dts.wrapping_add(TS_TIME_OFFSET - PCR_DELAY) & TIMESTAMP_MASK
}

/// The NAL unit `span` of `frame` as it goes into the ES, or `None` for one
/// that is dropped (empty, or an AUD: ours replaces it). A span outside the
/// data is an error here, not silently empty as with [`NalSpan::bytes`]: a
/// frame that lost bytes must not be muxed as if whole.
fn es_nal<'a>(
    frame: &'a Frame,
    span: &NalSpan,
    codec: VideoCodec,
) -> Result<Option<&'a [u8]>, TsError> {
    let nal = frame
        .data
        .get(span.start as usize..span.end as usize)
        .ok_or(TsError::NalOutOfRange {
            index: frame.index,
            start: span.start,
            end: span.end,
            len: frame.data.len(),
        })?;
    match nal.first() {
        None => Ok(None),
        Some(header) if codec == VideoCodec::H264 && header & 0x1F == NAL_AUD => Ok(None),
        Some(header) if codec == VideoCodec::H265 && (header >> 1) & 0x3F == NAL_AUD_H265 => {
            Ok(None)
        }
        Some(_) => Ok(Some(nal)),
    }
}

/// What one frame's PES holds, worked out (and validated) before writing.
struct FramePlan {
    /// Put the codec config's SPS and PPS in front of the frame's NAL units.
    insert_parameter_sets: bool,
    /// 14 with PTS only, 19 with PTS and DTS.
    header_len: usize,
    /// PES header plus ES bytes.
    pes_len: usize,
}

impl FramePlan {
    fn new(frame: &Frame, cfg: &CodecConfig) -> Result<Self, TsError> {
        if frame.pts < frame.dts {
            return Err(TsError::PtsBeforeDts {
                index: frame.index,
                pts: frame.pts,
                dts: frame.dts,
            });
        }
        let codec = cfg.codec;
        let mut es_len = aud_of(codec).len();
        let (mut kept, mut has_sps, mut has_pps) = (0usize, false, false);
        // H.264 has no VPS.
        let mut has_vps = codec == VideoCodec::H264;
        for span in &frame.nals {
            if let Some(nal) = es_nal(frame, span, codec)? {
                if codec == VideoCodec::H265 {
                    let nal_type = nal.first().map_or(0, |h| (h >> 1) & 0x3F);
                    has_vps |= nal_type == NAL_VPS_H265;
                    has_sps |= nal_type == NAL_SPS_H265;
                    has_pps |= nal_type == NAL_PPS_H265;
                } else {
                    let nal_type = nal.first().map_or(0, |h| h & 0x1F);
                    has_sps |= nal_type == NAL_SPS;
                    has_pps |= nal_type == NAL_PPS;
                }
                kept += 1;
                es_len = add(es_len, START_CODE.len() + nal.len())?;
            }
        }
        if kept == 0 {
            return Err(TsError::EmptyFrame { index: frame.index });
        }
        // Both or neither: a PPS is parsed against its SPS, so when one is
        // missing the pair goes in front, before anything of the frame's.
        let insert_parameter_sets = frame.random_access && !(has_vps && has_sps && has_pps);
        if insert_parameter_sets {
            let usable = frame.config_id == cfg.id
                && !cfg.sps.is_empty()
                && !cfg.pps.is_empty()
                && cfg.pps.iter().all(|p| !p.is_empty())
                && (codec == VideoCodec::H264 || !hevc_vps(cfg).is_empty());
            if !usable {
                return Err(TsError::MissingParameterSets {
                    index: frame.index,
                    config_id: frame.config_id,
                });
            }
            for vps in hevc_vps(cfg) {
                es_len = add(es_len, START_CODE.len() + vps.len())?;
            }
            es_len = add(es_len, START_CODE.len() + cfg.sps.len())?;
            for pps in &cfg.pps {
                es_len = add(es_len, START_CODE.len() + pps.len())?;
            }
        }
        let header_len = PES_HEADER_FIXED + if frame.pts == frame.dts { 5 } else { 10 };
        Ok(Self {
            insert_parameter_sets,
            header_len,
            pes_len: add(header_len, es_len)?,
        })
    }

    /// TS packets of this PES: the first has the PCR adaptation field.
    fn packet_count(&self) -> usize {
        1 + self
            .pes_len
            .saturating_sub(FIRST_PAYLOAD_MAX)
            .div_ceil(PACKET_PAYLOAD)
    }
}

/// The VPS NAL units of an H.265 config (none for H.264).
fn hevc_vps(cfg: &CodecConfig) -> &[Bytes] {
    match (cfg.codec, cfg.hevc.as_deref()) {
        (VideoCodec::H265, Some(h)) => &h.vps,
        _ => &[],
    }
}

fn put_header(out: &mut BytesMut, pid: u16, unit_start: bool, afc: u8, cc: u8) {
    out.put_u8(SYNC_BYTE);
    out.put_u16(u16::from(unit_start) << 14 | (pid & 0x1FFF));
    out.put_u8(afc << 4 | (cc & 0x0F));
}

/// Returns the counter to use and advances it.
fn next_cc(cc: &mut u8) -> u8 {
    let now = *cc & 0x0F;
    *cc = (now + 1) & 0x0F;
    now
}

fn put_pcr(out: &mut BytesMut, base: u64) {
    // 33-bit base, 6 reserved bits, 9-bit extension (0).
    out.put_u32((base >> 1) as u32);
    out.put_u8(((base & 1) as u8) << 7 | 0x7E);
    out.put_u8(0);
}

/// A 33-bit PTS or DTS with its 4-bit prefix and marker bits.
fn put_timestamp(out: &mut BytesMut, prefix: u8, ts: u64) {
    out.put_u8(prefix << 4 | ((ts >> 29) & 0x0E) as u8 | 1);
    out.put_u16((((ts >> 14) & 0xFFFE) | 1) as u16);
    out.put_u16((((ts << 1) & 0xFFFE) | 1) as u16);
}

fn write_psi(out: &mut BytesMut, pid: u16, cc: &mut u8, section: &[u8], crc: u32) {
    put_header(out, pid, true, AFC_PAYLOAD, next_cc(cc));
    out.put_u8(0); // pointer_field
    out.put_slice(section);
    out.put_u32(crc);
    // PSI packets are filled with 0xFF after the section.
    out.put_bytes(0xFF, PACKET_PAYLOAD - 1 - section.len() - 4);
}

/// A packet with only an adaptation field carrying `pcr`; it has no payload,
/// so it repeats the previous packet's continuity counter.
fn write_pcr_only(out: &mut BytesMut, cc: u8, pcr: u64) {
    put_header(out, PID_VIDEO, false, AFC_ADAPTATION_ONLY, cc);
    out.put_u8((PACKET_PAYLOAD - 1) as u8);
    out.put_u8(AF_PCR);
    put_pcr(out, pcr);
    out.put_bytes(0xFF, PACKET_PAYLOAD - AF_PCR_SIZE);
}

fn write_pes(out: &mut BytesMut, cc: &mut u8, frame: &Frame, cfg: &CodecConfig, plan: &FramePlan) {
    // First packet: adaptation field with the PCR (stuffed when the whole PES
    // fits), then the PES header.
    let first_payload = plan.pes_len.min(FIRST_PAYLOAD_MAX);
    put_header(
        out,
        PID_VIDEO,
        true,
        AFC_ADAPTATION_AND_PAYLOAD,
        next_cc(cc),
    );
    let af_len = PACKET_PAYLOAD - 1 - first_payload;
    out.put_u8(af_len as u8);
    let random_access = if frame.is_keyframe {
        AF_RANDOM_ACCESS
    } else {
        0
    };
    out.put_u8(AF_PCR | random_access);
    put_pcr(out, pcr_base(frame.dts));
    out.put_bytes(0xFF, af_len + 1 - AF_PCR_SIZE);

    out.put_slice(&[0, 0, 1, STREAM_ID_VIDEO, 0, 0]); // PES_packet_length 0
    out.put_u8(0x84); // '10', not scrambled, data_alignment_indicator
    let (pts, dts) = (timestamp(frame.pts), timestamp(frame.dts));
    if frame.pts == frame.dts {
        out.put_slice(&[0x80, 5]);
        put_timestamp(out, 0b0010, pts);
    } else {
        out.put_slice(&[0xC0, 10]);
        put_timestamp(out, 0b0011, pts);
        put_timestamp(out, 0b0001, dts);
    }

    let mut payload = PesPayload {
        out,
        cc,
        room: first_payload - plan.header_len,
        unassigned: plan.pes_len - first_payload,
        pid: PID_VIDEO,
    };
    payload.put(aud_of(cfg.codec));
    if plan.insert_parameter_sets {
        for vps in hevc_vps(cfg) {
            payload.put(&START_CODE);
            payload.put(vps);
        }
        payload.put(&START_CODE);
        payload.put(&cfg.sps);
        for pps in &cfg.pps {
            payload.put(&START_CODE);
            payload.put(pps);
        }
    }
    for span in &frame.nals {
        // Validated by the plan: errors cannot happen here.
        if let Ok(Some(nal)) = es_nal(frame, span, cfg.codec) {
            payload.put(&START_CODE);
            payload.put(nal);
        }
    }
    debug_assert_eq!((payload.room, payload.unassigned), (0, 0));
}

/// Streams a PES's bytes into packets, starting continuation packets as the
/// current one fills; the last one is padded with adaptation-field stuffing.
struct PesPayload<'a> {
    out: &'a mut BytesMut,
    cc: &'a mut u8,
    /// Payload bytes left in the current packet.
    room: usize,
    /// PES bytes not yet given a packet.
    unassigned: usize,
    pid: u16,
}

impl PesPayload<'_> {
    fn put(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.room == 0 {
                if self.unassigned == 0 {
                    debug_assert!(false, "PES longer than planned");
                    return;
                }
                self.next_packet();
            }
            let (now, rest) = data.split_at(self.room.min(data.len()));
            self.out.put_slice(now);
            self.room -= now.len();
            data = rest;
        }
    }

    fn next_packet(&mut self) {
        let payload = self.unassigned.min(PACKET_PAYLOAD);
        self.unassigned -= payload;
        self.room = payload;
        let cc = next_cc(self.cc);
        if payload == PACKET_PAYLOAD {
            put_header(self.out, self.pid, false, AFC_PAYLOAD, cc);
            return;
        }
        put_header(self.out, self.pid, false, AFC_ADAPTATION_AND_PAYLOAD, cc);
        let af_size = PACKET_PAYLOAD - payload;
        self.out.put_u8((af_size - 1) as u8); // 0: the length byte alone
        if af_size >= 2 {
            self.out.put_u8(0); // no flags
            self.out.put_bytes(0xFF, af_size - 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS and PPS of a 320x180 High profile x264 stream.
    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60,
    ];
    const PPS: &[u8] = &[0x68, 0xef, 0x8f, 0xcb];
    const SEI: &[u8] = &[0x06, 0x05, 0x02, 0xaa, 0xbb, 0x80];
    const OWN_AUD: &[u8] = &[0x09, 0x10];

    const TYPE_AUD: u8 = 9;

    fn cfg() -> CodecConfig {
        CodecConfig {
            codec: Default::default(),
            hevc: None,
            id: 3,
            sps: Bytes::from_static(SPS),
            pps: vec![Bytes::from_static(PPS)],
            width: 320,
            height: 180,
            profile_idc: 0x64,
            profile_compat: 0,
            level_idc: 0x0d,
            chroma_format_idc: 1,
            bit_depth_luma_minus8: 0,
            bit_depth_chroma_minus8: 0,
            frame_rate_num: 30,
            frame_rate_den: 1,
        }
    }

    /// A fake slice: header byte then `len - 1` bytes of a recognisable pattern.
    fn slice(header: u8, len: usize, seed: u8) -> Vec<u8> {
        let mut v = vec![header];
        v.extend((1..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1));
        v
    }
    fn idr(len: usize) -> Vec<u8> {
        slice(0x65, len, 7)
    }
    fn non_idr(len: usize) -> Vec<u8> {
        slice(0x41, len, 11)
    }

    /// A frame from NAL units, written with alternating 4- and 3-byte start
    /// codes (as publishers do) and spans pointing past them.
    fn frame(index: u64, pts: u64, dts: u64, key: bool, nals: &[&[u8]]) -> Frame {
        let mut data = Vec::new();
        let mut spans = Vec::new();
        for (i, nal) in nals.iter().enumerate() {
            data.extend_from_slice(if i % 2 == 0 {
                &[0, 0, 0, 1]
            } else {
                &[0, 0, 1]
            });
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
            config_id: 3,
            capture_time_ns: None,
            ingest_time_ns: 0,
        }
    }

    /// A GOP in decode order with B-frames: I P B B P B B ..., 30 fps. The
    /// keyframe lacks SPS/PPS unless `with_ps`.
    fn gop(first_index: u64, start: u64, len: usize, with_ps: bool, sizes: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        for i in 0..len as u64 {
            let dts = start + i * 3000;
            // Display order: decode i shown at i+1 (P) or i-2 (B), shifted by 2 frames.
            let pts = match i {
                0 => dts + 6000,
                _ if i % 3 == 1 => dts + 9000,
                _ => dts,
            };
            let f = if i == 0 {
                let big = idr(sizes * 7 + 5);
                if with_ps {
                    frame(first_index, pts, dts, true, &[OWN_AUD, SPS, PPS, SEI, &big])
                } else {
                    frame(first_index, pts, dts, true, &[SEI, &big])
                }
            } else {
                let s = non_idr(sizes + (i as usize * 37) % 300);
                frame(first_index + i, pts, dts, false, &[OWN_AUD, &s])
            };
            frames.push(f);
        }
        frames
    }

    fn refs(frames: &[Frame]) -> Vec<&Frame> {
        frames.iter().collect()
    }

    /// The ES a frame must become, built independently of the muxer.
    fn expected_es(f: &Frame, cfg: &CodecConfig) -> Vec<u8> {
        let nals: Vec<&[u8]> = f
            .nals
            .iter()
            .map(|s| &f.data[s.start as usize..s.end as usize])
            .filter(|n| !n.is_empty() && n[0] & 0x1f != TYPE_AUD)
            .collect();
        let has = |t: u8| nals.iter().any(|n| n[0] & 0x1f == t);
        let mut es = vec![0, 0, 0, 1, 0x09, 0xF0];
        if f.random_access && !(has(7) && has(8)) {
            es.extend_from_slice(&[0, 0, 0, 1]);
            es.extend_from_slice(&cfg.sps);
            for p in &cfg.pps {
                es.extend_from_slice(&[0, 0, 0, 1]);
                es.extend_from_slice(p);
            }
        }
        for n in nals {
            es.extend_from_slice(&[0, 0, 0, 1]);
            es.extend_from_slice(n);
        }
        es
    }

    // ---- A small TS walker ----

    #[derive(Debug)]
    struct Packet<'a> {
        pid: u16,
        unit_start: bool,
        afc: u8,
        cc: u8,
        /// Adaptation field after its length byte (flags first), if any.
        af: Option<&'a [u8]>,
        payload: &'a [u8],
    }

    impl Packet<'_> {
        fn flags(&self) -> u8 {
            self.af.and_then(|a| a.first().copied()).unwrap_or(0)
        }
        fn pcr(&self) -> Option<u64> {
            let af = self.af?;
            if af.first()? & AF_PCR == 0 {
                return None;
            }
            let b = &af[1..7];
            assert_eq!(b[4] & 0x7E, 0x7E, "PCR reserved bits");
            assert_eq!((b[4] & 1, b[5]), (0, 0), "PCR extension");
            Some(
                (u64::from(b[0]) << 25)
                    | (u64::from(b[1]) << 17)
                    | (u64::from(b[2]) << 9)
                    | (u64::from(b[3]) << 1)
                    | u64::from(b[4] >> 7),
            )
        }
        fn random_access(&self) -> bool {
            self.flags() & AF_RANDOM_ACCESS != 0
        }
    }

    fn walk(ts: &[u8]) -> Vec<Packet<'_>> {
        assert_eq!(ts.len() % 188, 0, "whole packets");
        ts.chunks(188)
            .map(|p| {
                assert_eq!(p[0], 0x47, "sync byte");
                assert_eq!(p[1] & 0x80, 0, "transport_error_indicator");
                assert_eq!(p[3] >> 6, 0, "not scrambled");
                let afc = (p[3] >> 4) & 3;
                assert_ne!(afc, 0, "reserved adaptation_field_control");
                let mut rest = &p[4..];
                let mut af = None;
                if afc & 0b10 != 0 {
                    let len = rest[0] as usize;
                    assert!(len <= 183);
                    if afc == AFC_ADAPTATION_ONLY {
                        assert_eq!(len, 183, "adaptation-only packet fills the packet");
                    }
                    af = Some(&rest[1..1 + len]);
                    rest = &rest[1 + len..];
                }
                if afc & 0b01 == 0 {
                    assert!(rest.is_empty());
                }
                Packet {
                    pid: u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]),
                    unit_start: p[1] & 0x40 != 0,
                    afc,
                    cc: p[3] & 0x0F,
                    af,
                    payload: rest,
                }
            })
            .collect()
    }

    /// CRC-32/MPEG-2 computed bit by bit over the message as one polynomial,
    /// a different formulation from the muxer's.
    fn crc_reference(data: &[u8]) -> u32 {
        let mut reg: u64 = 0xFFFF_FFFF;
        for byte in data {
            for bit in (0..8).rev() {
                let top = (reg >> 31) & 1;
                let input = u64::from((byte >> bit) & 1);
                reg = (reg << 1) & 0xFFFF_FFFF;
                if top ^ input == 1 {
                    reg ^= 0x04C1_1DB7;
                }
            }
        }
        reg as u32
    }

    /// The section of a PSI packet, checked for pointer field, CRC and 0xFF fill.
    fn psi_section<'a>(p: &Packet<'a>) -> &'a [u8] {
        assert!(p.unit_start);
        assert_eq!(p.afc, AFC_PAYLOAD);
        assert_eq!(p.payload[0], 0, "pointer_field");
        let s = &p.payload[1..];
        let len = 3 + (usize::from(s[1] & 0x0F) << 8 | usize::from(s[2]));
        let (section, fill) = s.split_at(len);
        assert!(fill.iter().all(|&b| b == 0xFF), "PSI fill");
        let (body, crc) = section.split_at(len - 4);
        assert_eq!(
            crc_reference(body),
            u32::from_be_bytes(crc.try_into().unwrap()),
            "CRC"
        );
        section
    }

    #[derive(Debug)]
    struct Pes {
        /// Indices into the packet list.
        packets: Vec<usize>,
        pts: u64,
        dts: u64,
        has_dts: bool,
        es: Vec<u8>,
    }

    /// Every video PES (from its unit-start packet to the next).
    fn video_pes(packets: &[Packet]) -> Vec<Pes> {
        let mut out: Vec<(Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if p.pid != PID_VIDEO || p.afc & 0b01 == 0 {
                continue;
            }
            if p.unit_start {
                out.push((vec![i], p.payload.to_vec()));
            } else {
                let last = out.last_mut().expect("continuation after a start");
                last.0.push(i);
                last.1.extend_from_slice(p.payload);
            }
        }
        out.into_iter()
            .map(|(packets, data)| {
                assert_eq!(&data[..4], &[0, 0, 1, 0xE0], "start code, stream_id");
                assert_eq!(&data[4..6], &[0, 0], "PES_packet_length 0");
                assert_eq!(data[6], 0x84, "marker bits, data_alignment_indicator");
                let flags = data[7];
                let header_len = usize::from(data[8]);
                let ts = |b: &[u8], prefix: u8| {
                    assert_eq!(b[0] >> 4, prefix, "timestamp prefix");
                    assert_eq!((b[0] & 1, b[2] & 1, b[4] & 1), (1, 1, 1), "markers");
                    (u64::from(b[0] >> 1 & 7) << 30)
                        | (u64::from(b[1]) << 22)
                        | (u64::from(b[2] >> 1) << 15)
                        | (u64::from(b[3]) << 7)
                        | u64::from(b[4] >> 1)
                };
                let (pts, dts, has_dts) = match flags {
                    0x80 => {
                        assert_eq!(header_len, 5);
                        let pts = ts(&data[9..14], 0b0010);
                        (pts, pts, false)
                    }
                    0xC0 => {
                        assert_eq!(header_len, 10);
                        (ts(&data[9..14], 0b0011), ts(&data[14..19], 0b0001), true)
                    }
                    other => panic!("PTS_DTS_flags {other:#x}"),
                };
                Pes {
                    packets,
                    pts,
                    dts,
                    has_dts,
                    es: data[9 + header_len..].to_vec(),
                }
            })
            .collect()
    }

    /// NAL units of an ES with 4-byte start codes only, split on them.
    fn nal_types(es: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        let mut i = 0;
        while i + 4 < es.len() {
            if es[i..i + 4] == [0, 0, 0, 1] {
                types.push(es[i + 4] & 0x1f);
                i += 4;
            } else {
                i += 1;
            }
        }
        types
    }

    /// Checks CCs per PID over a sequence of packets, starting from `last`.
    fn check_continuity(packets: &[Packet], last: &mut [Option<u8>; 3]) {
        for p in packets {
            let slot = match p.pid {
                PID_PAT => 0,
                PID_PMT => 1,
                PID_VIDEO => 2,
                other => panic!("unexpected PID {other:#x}"),
            };
            let has_payload = p.afc & 0b01 != 0;
            if let Some(prev) = last[slot] {
                let want = if has_payload { (prev + 1) & 0x0F } else { prev };
                assert_eq!(p.cc, want, "CC on PID {:#x}", p.pid);
            } else {
                assert!(has_payload);
            }
            last[slot] = Some(p.cc);
        }
    }

    // ---- Tests ----

    #[test]
    fn crc_matches_the_mpeg2_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        assert_eq!(crc_reference(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn packets_are_188_bytes_with_sync_byte() {
        let frames = gop(0, 0, 12, false, 500);
        let ts = TsMuxer::new().segment(&refs(&frames), &cfg()).unwrap();
        let packets = walk(&ts);
        assert!(packets.len() > 12);
    }

    #[test]
    fn segment_starts_with_pat_then_pmt_with_valid_crcs() {
        let frames = gop(0, 0, 3, false, 100);
        let ts = TsMuxer::new().segment(&refs(&frames), &cfg()).unwrap();
        let packets = walk(&ts);

        assert_eq!(packets[0].pid, PID_PAT);
        let pat = psi_section(&packets[0]);
        // The same bytes ffmpeg writes for program 1 on PMT PID 0x1000.
        assert_eq!(
            pat,
            &[
                0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00, 0x2A, 0xB1,
                0x04, 0xB2
            ]
        );
        assert_eq!(u16::from_be_bytes([pat[8], pat[9]]), 1, "program_number");
        assert_eq!(u16::from_be_bytes([pat[10], pat[11]]) & 0x1FFF, 0x1000);

        assert_eq!(packets[1].pid, PID_PMT);
        let pmt = psi_section(&packets[1]);
        assert_eq!(pmt[0], 0x02, "table_id");
        assert_eq!(u16::from_be_bytes([pmt[3], pmt[4]]), 1, "program_number");
        assert_eq!(
            u16::from_be_bytes([pmt[8], pmt[9]]) & 0x1FFF,
            0x100,
            "PCR_PID"
        );
        assert_eq!(u16::from_be_bytes([pmt[10], pmt[11]]) & 0x0FFF, 0);
        let streams = &pmt[12..pmt.len() - 4];
        assert_eq!(streams.len(), 5, "one stream");
        assert_eq!(streams[0], 0x1B, "H.264");
        assert_eq!(u16::from_be_bytes([streams[1], streams[2]]) & 0x1FFF, 0x100);

        // Then the first video PES, starting with the keyframe.
        let first = &packets[2];
        assert_eq!((first.pid, first.unit_start), (PID_VIDEO, true));
        assert!(first.random_access());
        let pes = video_pes(&packets);
        assert_eq!(pes[0].packets[0], 2);
        assert_eq!(nal_types(&pes[0].es)[..5], [9, 7, 8, 6, 5]);
    }

    #[test]
    fn continuity_counters_continue_across_segments() {
        let mut mux = TsMuxer::new();
        let mut last = [None; 3];
        let mut index = 0;
        let mut video_packets = 0;
        for seg in 0..20u64 {
            // Different sizes so the video counter lands anywhere.
            let frames = gop(
                index,
                seg * 60_000,
                20,
                seg % 2 == 0,
                90 + seg as usize * 41,
            );
            index += 20;
            let ts = mux.segment(&refs(&frames), &cfg()).unwrap();
            let packets = walk(&ts);
            video_packets += packets.iter().filter(|p| p.pid == PID_VIDEO).count();
            check_continuity(&packets, &mut last);
        }
        // PAT and PMT wrapped past 15 as well.
        assert_eq!(last[0], Some(19 % 16));
        assert_eq!(last[1], Some(19 % 16));
        assert!(video_packets > 16);
    }

    #[test]
    fn pcr_starts_every_pes_and_never_passes_its_dts() {
        let frames = gop(0, 0, 30, false, 400);
        let ts = TsMuxer::new().segment(&refs(&frames), &cfg()).unwrap();
        let packets = walk(&ts);
        let pes = video_pes(&packets);
        assert_eq!(pes.len(), frames.len());
        let mut previous_pcr = None;
        for (p, f) in pes.iter().zip(&frames) {
            let first = &packets[p.packets[0]];
            let pcr = first.pcr().expect("PCR on every PES start");
            assert_eq!(pcr, f.dts + TS_TIME_OFFSET - PCR_DELAY);
            assert!(pcr <= p.dts, "PCR {pcr} after DTS {}", p.dts);
            assert!(previous_pcr.is_none_or(|q| q < pcr));
            previous_pcr = Some(pcr);
            assert_eq!(first.random_access(), f.is_keyframe);
            // Only the first packet of a PES has a PCR.
            for &i in &p.packets[1..] {
                assert_eq!(packets[i].pcr(), None);
                assert!(!packets[i].random_access());
            }
        }
        // The session's first frame at 0 gets a PCR of 0, not below.
        assert_eq!(packets[2].pcr(), Some(0));
    }

    #[test]
    fn slow_frames_get_pcr_only_packets_between_them() {
        // 1 fps, then a 150 ms gap, then a 100 ms one.
        let dts = [0u64, 90_000, 180_000, 193_500, 202_500];
        let frames: Vec<Frame> = dts
            .iter()
            .enumerate()
            .map(|(i, &t)| frame(i as u64, t, t, i == 0, &[SPS, PPS, &non_idr(300)]))
            .collect();
        let mut mux = TsMuxer::new();
        let ts = mux.segment(&refs(&frames), &cfg()).unwrap();
        let packets = walk(&ts);
        let mut last = [None; 3];
        check_continuity(&packets, &mut last);

        let pcrs: Vec<(usize, u64)> = packets
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.pcr().map(|pcr| (i, pcr)))
            .collect();
        assert_eq!(pcrs.len(), 5 + 9 + 9 + 1);
        for w in pcrs.windows(2) {
            assert!(w[1].1 > w[0].1 && w[1].1 - w[0].1 <= PCR_INTERVAL, "{w:?}");
        }
        let pes = video_pes(&packets);
        for (i, p) in packets.iter().enumerate() {
            if p.afc == AFC_ADAPTATION_ONLY {
                assert_eq!(p.pid, PID_VIDEO);
                assert!(!p.unit_start);
                assert_eq!(p.af.unwrap()[7..], [0xFF; 176][..], "stuffing after PCR");
                // Before the next PES's DTS.
                let next = pes.iter().find(|q| q.packets[0] > i).unwrap();
                assert!(p.pcr().unwrap() < next.dts);
            }
        }
        // A gap that is a discontinuity, not a slow stream, is not filled past 10 s.
        let frames = [
            frame(0, 0, 0, true, &[&idr(50)]),
            frame(1, 9_000_000, 9_000_000, false, &[&non_idr(50)]),
        ];
        let ts = mux.segment(&refs(&frames), &cfg()).unwrap();
        let fill = walk(&ts)
            .iter()
            .filter(|p| p.afc == AFC_ADAPTATION_ONLY)
            .count();
        assert_eq!(fill, MAX_PCR_FILL as usize);
    }

    #[test]
    fn pes_headers_carry_times_plus_offset() {
        let frames = gop(0, 123_456, 7, false, 200);
        let ts = TsMuxer::new().segment(&refs(&frames), &cfg()).unwrap();
        let pes = video_pes(&walk(&ts));
        for (p, f) in pes.iter().zip(&frames) {
            assert_eq!(p.pts, f.pts + TS_TIME_OFFSET);
            assert_eq!(p.dts, f.dts + TS_TIME_OFFSET);
            assert_eq!(p.has_dts, f.pts != f.dts, "DTS only when it differs");
        }
        assert!(pes.iter().any(|p| p.has_dts) && pes.iter().any(|p| !p.has_dts));
    }

    #[test]
    fn timestamps_wrap_at_33_bits() {
        let wrap = 1u64 << 33;
        let frames = [
            frame(0, wrap - 5000, wrap - 20_000, true, &[&idr(100)]),
            frame(1, wrap + 40_000, wrap - 17_000, false, &[&non_idr(100)]),
            frame(2, 3 * wrap + 1, 3 * wrap + 1, false, &[&non_idr(100)]),
        ];
        let ts = TsMuxer::new().segment(&refs(&frames), &cfg()).unwrap();
        let packets = walk(&ts);
        let pes = video_pes(&packets);
        let m = |t: u64| (t + TS_TIME_OFFSET) % wrap;
        for (p, f) in pes.iter().zip(&frames) {
            assert_eq!((p.pts, p.dts), (m(f.pts), m(f.dts)));
            let pcr = packets[p.packets[0]].pcr().unwrap();
            assert_eq!(pcr, (f.dts + TS_TIME_OFFSET - PCR_DELAY) % wrap);
        }
        // PTS wrapped, DTS not yet: still written modulo 2^33, as players expect.
        assert!(pes[0].pts < pes[0].dts && pes[1].pts < pes[1].dts);
    }

    #[test]
    fn exactly_one_aud_leads_each_access_unit() {
        let big = idr(900);
        let frames = [
            // Publisher's AUD after an SEI (as in the first AU of x264 output).
            frame(0, 0, 0, true, &[SEI, OWN_AUD, SPS, PPS, &big]),
            // No AUD.
            frame(1, 3000, 3000, false, &[&non_idr(200)]),
            // AUD first, as usual.
            frame(2, 6000, 6000, false, &[OWN_AUD, &non_idr(200)]),
            // Two AUDs and an empty span.
            frame(3, 9000, 9000, false, &[OWN_AUD, &[], OWN_AUD, &non_idr(10)]),
        ];
        let ts = TsMuxer::new().segment(&refs(&frames), &cfg()).unwrap();
        let pes = video_pes(&walk(&ts));
        let types: Vec<Vec<u8>> = pes.iter().map(|p| nal_types(&p.es)).collect();
        for (t, p) in types.iter().zip(&pes) {
            assert_eq!(p.es[..6], AUD, "our AUD first");
            assert_eq!(t.iter().filter(|&&t| t == TYPE_AUD).count(), 1);
        }
        assert_eq!(types[0], [9, 6, 7, 8, 5]);
        assert_eq!(types[3], [9, 1]);
    }

    #[test]
    fn parameter_sets_go_before_bare_keyframes_only() {
        let c = cfg();
        let frames = [
            frame(0, 0, 0, true, &[SEI, &idr(300)]),
            frame(1, 3000, 3000, false, &[&non_idr(50)]),
            frame(2, 6000, 6000, true, &[SPS, PPS, &idr(300)]),
            frame(3, 9000, 9000, true, &[SPS, &idr(300)]),
        ];
        let ts = TsMuxer::new().segment(&refs(&frames), &c).unwrap();
        let pes = video_pes(&walk(&ts));
        let types: Vec<Vec<u8>> = pes.iter().map(|p| nal_types(&p.es)).collect();
        assert_eq!(types[0], [9, 7, 8, 6, 5], "inserted right after the AUD");
        assert_eq!(
            pes[0].es[6..10 + SPS.len()],
            expected_es(&frames[0], &c)[6..10 + SPS.len()]
        );
        assert_eq!(types[1], [9, 1], "not before other frames");
        assert_eq!(types[2], [9, 7, 8, 5], "not duplicated when present");
        // An SPS alone is not enough: the pair goes in front.
        assert_eq!(types[3], [9, 7, 8, 7, 5]);
    }

    #[test]
    fn last_packet_of_each_pes_is_padded_with_adaptation_stuffing() {
        // ES sizes around every packet boundary the layout has: single packet
        // (payload 176 with PCR), two and three packets, remainder 183 (a
        // lone adaptation_field_length 0).
        let mut mux = TsMuxer::new();
        let mut seen_len0 = false;
        let mut seen_exact = false;
        for pes_len in (25..=560).chain(176 * 5..176 * 5 + 200) {
            // PES = 14-byte header + AUD 6 + start code 4 + NAL.
            let nal_len = pes_len - 14 - 6 - 4;
            let f = frame(pes_len as u64, 0, 0, false, &[&non_idr(nal_len)]);
            let ts = mux.segment(&[&f], &cfg()).unwrap();
            let packets = walk(&ts);
            let pes = video_pes(&packets);
            assert_eq!(pes.len(), 1);
            assert_eq!(pes[0].es, expected_es(&f, &cfg()), "PES length {pes_len}");
            let idx = &pes[0].packets;
            for (n, &i) in idx.iter().enumerate() {
                let p = &packets[i];
                let last = n + 1 == idx.len();
                if n == 0 {
                    assert_eq!(p.af.unwrap().len(), 183 - p.payload.len());
                }
                if !last {
                    let full = if n == 0 { 176 } else { 184 };
                    assert_eq!(p.payload.len(), full, "only the last packet is short");
                    continue;
                }
                if p.payload.len() == 184 {
                    seen_exact = true;
                    assert_eq!(p.afc, AFC_PAYLOAD);
                    continue;
                }
                let af = p.af.expect("short last packet has an adaptation field");
                assert_eq!(af.len() + 1 + p.payload.len(), 184);
                match af.len() {
                    0 => seen_len0 = true,
                    _ if n == 0 => assert!(af[7..].iter().all(|&b| b == 0xFF)),
                    _ => {
                        assert_eq!(af[0], 0, "stuffing only, no flags");
                        assert!(af[1..].iter().all(|&b| b == 0xFF));
                    }
                }
            }
        }
        assert!(seen_len0 && seen_exact);
    }

    #[test]
    fn payload_reassembles_to_the_expected_es() {
        let c = cfg();
        let mut mux = TsMuxer::new();
        for (seg, with_ps) in [(0u64, false), (1, true), (2, false)] {
            let frames = gop(seg * 30, seg * 90_000, 30, with_ps, 700);
            let ts = mux.segment(&refs(&frames), &c).unwrap();
            let pes = video_pes(&walk(&ts));
            assert_eq!(pes.len(), frames.len());
            for (p, f) in pes.iter().zip(&frames) {
                assert_eq!(p.es, expected_es(f, &c));
            }
        }
    }

    #[test]
    fn mpeg2ts_reader_accepts_the_output() {
        use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
        use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};

        let c = cfg();
        let mut mux = TsMuxer::new();
        let mut all = Vec::new();
        let mut frames = Vec::new();
        for seg in 0..3u64 {
            let f = gop(
                seg * 30,
                seg * 90_000,
                30,
                seg == 1,
                300 + seg as usize * 500,
            );
            all.extend_from_slice(&mux.segment(&refs(&f), &c).unwrap());
            frames.extend(f);
        }

        // Packet level: its reader checks PSI CRCs and adaptation fields.
        let mut reader = TsPacketReader::new(&all[..]);
        let mut first = true;
        while let Some(packet) = reader.read_ts_packet().unwrap() {
            if let Some(TsPayload::Pmt(pmt)) = &packet.payload {
                assert_eq!(pmt.pcr_pid.map(|p| p.as_u16()), Some(PID_VIDEO));
                assert_eq!(pmt.es_info.len(), 1);
                assert_eq!(pmt.es_info[0].elementary_pid.as_u16(), PID_VIDEO);
            }
            if let Some(TsPayload::PesStart(_)) = &packet.payload {
                let af = packet.adaptation_field.as_ref().unwrap();
                assert!(af.pcr.is_some());
                if first {
                    assert!(af.random_access_indicator);
                    first = false;
                }
            }
        }

        // PES level.
        let mut reader = PesPacketReader::new(TsPacketReader::new(&all[..]));
        let mut n = 0;
        while let Some(pes) = reader.read_pes_packet().unwrap() {
            let f = &frames[n];
            assert!(pes.header.stream_id.is_video());
            assert!(pes.header.data_alignment_indicator);
            assert_eq!(
                pes.header.pts.map(|t| t.as_u64()),
                Some(f.pts + TS_TIME_OFFSET)
            );
            let dts = pes.header.dts.map(|t| t.as_u64());
            assert_eq!(dts, (f.pts != f.dts).then_some(f.dts + TS_TIME_OFFSET));
            assert_eq!(pes.data, expected_es(f, &c));
            n += 1;
        }
        assert_eq!(n, frames.len());
    }

    #[test]
    fn errors_write_nothing_and_keep_counters() {
        let c = cfg();
        let mut mux = TsMuxer::new();
        let good = gop(0, 0, 3, false, 100);
        let ts1 = mux.segment(&refs(&good), &c).unwrap();
        let counters = mux.counters;

        let mut bad_span = frame(7, 0, 0, false, &[&non_idr(10)]);
        bad_span.nals.push(NalSpan { start: 5, end: 500 });
        let mut reversed = frame(8, 0, 0, false, &[&non_idr(10)]);
        reversed.nals[0] = NalSpan { start: 9, end: 4 };
        let mut other_config = frame(9, 0, 0, true, &[&idr(10)]);
        other_config.config_id = 4;
        let no_pps = CodecConfig {
            pps: vec![],
            ..cfg()
        };
        let cases: Vec<(Vec<Frame>, CodecConfig, TsError)> = vec![
            (vec![], c.clone(), TsError::NoFrames),
            (
                vec![bad_span],
                c.clone(),
                TsError::NalOutOfRange {
                    index: 7,
                    start: 5,
                    end: 500,
                    len: 14,
                },
            ),
            (
                vec![reversed],
                c.clone(),
                TsError::NalOutOfRange {
                    index: 8,
                    start: 9,
                    end: 4,
                    len: 14,
                },
            ),
            (
                vec![frame(1, 0, 0, false, &[OWN_AUD])],
                c.clone(),
                TsError::EmptyFrame { index: 1 },
            ),
            (
                vec![frame(2, 10, 20, false, &[&non_idr(10)])],
                c.clone(),
                TsError::PtsBeforeDts {
                    index: 2,
                    pts: 10,
                    dts: 20,
                },
            ),
            (
                vec![
                    frame(3, 0, 0, true, &[&idr(10)]),
                    frame(4, 0, 0, false, &[&non_idr(10)]),
                ],
                c.clone(),
                TsError::DtsNotIncreasing {
                    index: 4,
                    dts: 0,
                    previous: 0,
                },
            ),
            (
                vec![frame(5, 0, 0, true, &[&idr(10)])],
                no_pps,
                TsError::MissingParameterSets {
                    index: 5,
                    config_id: 3,
                },
            ),
            (
                vec![other_config],
                c.clone(),
                TsError::MissingParameterSets {
                    index: 9,
                    config_id: 4,
                },
            ),
        ];
        for (frames, cfg, want) in cases {
            assert_eq!(mux.segment(&refs(&frames), &cfg), Err(want));
            assert_eq!(mux.counters, counters);
        }
        // A later good segment continues where the last good one ended.
        let ts2 = mux.segment(&refs(&good), &c).unwrap();
        let mut last = [None; 3];
        check_continuity(&walk(&ts1), &mut last);
        check_continuity(&walk(&ts2), &mut last);
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn arbitrary_frames_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut mux = TsMuxer::new();
        let mut last = [None; 3];
        let mut ok = 0;
        for _ in 0..3000 {
            let n = rng.below(5) as usize;
            let mut time = rng.next() >> rng.below(64);
            let frames: Vec<Frame> = (0..n)
                .map(|i| {
                    let len = rng.below(700) as usize;
                    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    let nals = (0..rng.below(6))
                        .map(|_| {
                            let a = rng.below(len as u64 + 3) as u32;
                            let b = if rng.below(8) == 0 {
                                rng.next() as u32
                            } else {
                                a + rng.below((len as u64 + 3).saturating_sub(a as u64) + 1) as u32
                            };
                            NalSpan { start: a, end: b }
                        })
                        .collect();
                    time = time.wrapping_add(rng.below(200_000));
                    let dts = time;
                    let pts = dts
                        .wrapping_add(rng.below(20_000))
                        .wrapping_sub(rng.below(100));
                    Frame {
                        index: i as u64,
                        data: Bytes::from(data),
                        nals,
                        pts,
                        dts,
                        duration: rng.next() as u32,
                        is_keyframe: rng.below(3) == 0,
                        random_access: rng.below(3) == 0,
                        sap_type: 1,
                        is_leading: false,
                        is_reference: true,
                        segment: 0,
                        config_id: rng.below(2) as u32 + 2,
                        capture_time_ns: None,
                        ingest_time_ns: 0,
                    }
                })
                .collect();
            let c = if rng.below(4) == 0 {
                CodecConfig {
                    sps: Bytes::new(),
                    ..cfg()
                }
            } else {
                cfg()
            };
            if let Ok(ts) = mux.segment(&refs(&frames), &c) {
                ok += 1;
                let packets = walk(&ts);
                check_continuity(&packets, &mut last);
                let pes = video_pes(&packets);
                assert_eq!(pes.len(), frames.len());
                for (p, f) in pes.iter().zip(&frames) {
                    assert_eq!(p.es, expected_es(f, &c));
                }
            }
        }
        assert!(ok > 300, "only {ok} valid segments");
    }
}

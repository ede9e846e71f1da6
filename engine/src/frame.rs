//! The engine's output records: timed frames and segment records. Everything
//! downstream (gRPC frames, muxers, playlists) reads these and never recomputes
//! what they already say.

use bytes::Bytes;

/// The MPEG timescale every video media time in the engine uses (audio
/// times are in samples of their own rate, see [`AudioFrame`]).
pub const TIMESCALE: u64 = 90_000;

/// One NAL unit inside [`Frame::data`]: `data[start..end]` is the NAL unit
/// (header byte first, emulation-prevention bytes kept), without start code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NalSpan {
    pub start: u32,
    pub end: u32,
}

impl NalSpan {
    /// The NAL unit's bytes; empty if the span does not fit `data` (spans
    /// are made by the engine and always fit the frame they belong to).
    pub fn bytes<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        data.get(self.start as usize..self.end as usize)
            .unwrap_or(&[])
    }
    /// `nal_unit_type` (the low five bits of the header byte).
    pub fn nal_type(&self, data: &[u8]) -> u8 {
        data.get(self.start as usize).map_or(0, |h| h & 0x1f)
    }
}

/// One accepted, timed access unit (a picture), in decode order.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Index among the session's accepted frames, in decode order.
    pub index: u64,
    /// The access unit as an Annex B byte stream. Keyframes carry SPS and PPS
    /// in front, so any decoder can start at one. Usually a zero-copy slice of
    /// what the publisher sent.
    pub data: Bytes,
    /// Where each NAL unit of `data` lies, in order.
    pub nals: Vec<NalSpan>,
    /// Presentation time, 90 kHz, on the session timeline.
    pub pts: u64,
    /// Decode time, 90 kHz; strictly increasing, never above `pts`.
    pub dts: u64,
    /// Nominal time to the next frame in decode order, 90 kHz. Muxers use
    /// DTS differences instead, which are exact.
    pub duration: u32,
    /// A clean random access point (SAP type 1–3, ISO/IEC 14496-12 Annex I):
    /// an IDR picture, an I picture with a recovery-point SEI whose
    /// `recovery_frame_cnt` is 0 (open GOP), or the non-IDR I picture a
    /// stream starts on. It carries SPS and PPS in `data`; containers mark
    /// it as a sync sample.
    pub is_keyframe: bool,
    /// Decoding may start here: a keyframe, or the first picture of a
    /// gradual decoding refresh (a recovery-point SEI with
    /// `recovery_frame_cnt` > 0), from which pictures are complete once the
    /// refresh has swept the picture. Segments are cut only at these.
    pub random_access: bool,
    /// SAP type: 1 for an IDR, 3 for a non-IDR keyframe (leading pictures
    /// may follow it), 4 for a gradual-decoding-refresh start, 0 otherwise.
    pub sap_type: u8,
    /// A leading picture: it follows the last SAP-3 keyframe in decode
    /// order but precedes it in presentation, and may reference pictures
    /// before that keyframe. A viewer that starts at the keyframe skips it.
    pub is_leading: bool,
    /// `nal_ref_idc != 0`: later frames may refer to it.
    pub is_reference: bool,
    /// Media sequence number of the segment the frame belongs to.
    pub segment: u64,
    /// Which [`CodecConfig`] (SPS/PPS generation) the frame was coded with.
    pub config_id: u32,
    /// The publisher's capture time, if it sent one.
    pub capture_time_ns: Option<u64>,
    /// Wall-clock time the frame was accepted (Unix ns), passed in by the caller.
    pub ingest_time_ns: u64,
}

impl Frame {
    /// The NAL units of the frame as byte slices, in order.
    pub fn nal_units(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.nals.iter().map(|n| n.bytes(&self.data))
    }
}

/// The video codec of a session (decided at its first parameter sets; a
/// session is one codec).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    #[default]
    H264,
    H265,
}

impl VideoCodec {
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H.264",
            VideoCodec::H265 => "H.265",
        }
    }
}

/// H.265 facts from the SPS's `profile_tier_level` and the VPS that `hvcC`
/// and the codec string need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HevcConfig {
    /// The VPS NAL units (two-byte header first, as sent).
    pub vps: Vec<Bytes>,
    pub profile_space: u8,
    pub tier_flag: bool,
    pub profile_idc: u8,
    /// `general_profile_compatibility_flag[0..32]`, flag 0 in the top bit.
    pub profile_compat: u32,
    /// The 48 bits of `general_*_constraint_flag`s, first flag in bit 47.
    pub constraint_flags: u64,
    pub level_idc: u8,
    /// `sps_max_sub_layers_minus1 + 1`.
    pub num_temporal_layers: u8,
    pub temporal_id_nested: bool,
}

/// The parameter sets and derived facts a stream was coded with; one per
/// SPS/PPS generation of a session (a new one when they change mid-stream).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodecConfig {
    /// Increases by one each time the parameter sets change.
    pub id: u32,
    /// H.264 unless `hevc` is set.
    pub codec: VideoCodec,
    /// For H.265: the VPS and profile_tier_level (`sps`/`pps` then hold the
    /// H.265 SPS and PPS NAL units).
    pub hevc: Option<Box<HevcConfig>>,
    /// The SPS NAL unit (header byte first, as sent).
    pub sps: Bytes,
    /// The PPS NAL units (header byte first, as sent).
    pub pps: Vec<Bytes>,
    pub width: u32,
    pub height: u32,
    /// `profile_idc`, `constraint_set` flags and `level_idc` (SPS bytes 1-3).
    pub profile_idc: u8,
    pub profile_compat: u8,
    pub level_idc: u8,
    /// For High profiles: `chroma_format_idc`, `bit_depth_luma_minus8`,
    /// `bit_depth_chroma_minus8` (avcC needs them).
    pub chroma_format_idc: u8,
    pub bit_depth_luma_minus8: u8,
    pub bit_depth_chroma_minus8: u8,
    /// Frame rate as a fraction (frames per `frame_rate_den` seconds).
    pub frame_rate_num: u32,
    pub frame_rate_den: u32,
}

impl CodecConfig {
    /// RFC 6381 codec string, e.g. `avc1.64001f`, or for H.265 (ISO/IEC
    /// 14496-15 Annex E) e.g. `hvc1.1.6.L93.B0`.
    pub fn codec_string(&self) -> String {
        if let (VideoCodec::H265, Some(h)) = (self.codec, self.hevc.as_deref()) {
            return hevc_codec_string(h);
        }
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.profile_compat, self.level_idc
        )
    }
}

/// `hvc1.<space><profile>.<compat>.<tier><level>.<constraints>`: the
/// compatibility flags bit-reversed in hex, the constraint bytes in hex
/// with trailing zero bytes left out (at least one kept).
fn hevc_codec_string(h: &HevcConfig) -> String {
    let space = match h.profile_space {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    let tier = if h.tier_flag { 'H' } else { 'L' };
    let mut s = format!(
        "hvc1.{space}{}.{:X}.{tier}{}",
        h.profile_idc,
        h.profile_compat.reverse_bits(),
        h.level_idc
    );
    let bytes: Vec<u8> = (0..6)
        .map(|i| (h.constraint_flags >> (40 - 8 * i)) as u8)
        .collect();
    let keep = bytes.iter().rposition(|b| *b != 0).map_or(1, |p| p + 1);
    for b in bytes.iter().take(keep) {
        s.push_str(&format!(".{b:X}"));
    }
    s
}

/// One segment: the single record every manifest and muxer renders from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRecord {
    /// Media sequence number, from 0.
    pub sequence: u64,
    /// Decode time of the first frame, 90 kHz.
    pub start: u64,
    /// Exact duration, 90 kHz: the next segment's start minus this start
    /// (for the last segment, its last frame's end).
    pub duration: u64,
    pub frame_count: u32,
    pub first_frame_index: u64,
    /// Independent: starts with a keyframe (SAP type 1–3), so a player can
    /// start decoding at it. False for a segment cut at a gradual decoding
    /// refresh or forced at the maximum segment duration.
    pub keyframe_aligned: bool,
    /// SAP type of its first frame (see [`Frame::sap_type`]); 0 when the
    /// segment was cut at a frame that is no random access point.
    pub sap_type: u8,
    /// Follows a publisher reconnect or a timing discontinuity.
    pub discontinuity: bool,
    /// Discontinuity sequence this segment is in.
    pub discontinuity_sequence: u64,
    /// Wall-clock time (Unix ms) of the first frame's presentation.
    pub program_date_time_ms: u64,
    /// Total Annex B bytes of its frames.
    pub byte_size: u64,
    /// Which [`CodecConfig`] its frames use.
    pub config_id: u32,
    /// PTS - DTS of the stream's first keyframe (the reorder delay): muxers
    /// shift composition times by it so a segment's first presented frame is
    /// at its decode start.
    pub composition_shift: u32,
    /// The audio track's part of the segment, when the session has audio
    /// (`None` for a video-only session, and for segments before its audio
    /// started). In an audio-only session the video fields are empty
    /// (`frame_count` 0) and `start`/`duration` are the audio's, in 90 kHz.
    pub audio: Option<AudioSpan>,
}

impl SegmentRecord {
    /// A segment of an audio-only session: no video frames, an audio span
    /// (its video fields empty, `start`/`duration` the audio's).
    pub fn is_audio_only(&self) -> bool {
        self.frame_count == 0 && self.audio.is_some()
    }
}

/// The run of audio frames that belongs to one segment or part: every
/// audio frame belongs to exactly one part, the one whose video range
/// contains the frame (split at the AAC frame boundary nearest the video
/// cut), so the spans of consecutive parts follow each other frame for
/// frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AudioSpan {
    /// Index (among the session's audio frames) of its first frame; the
    /// index the next frame would get when `frame_count` is 0.
    pub first_frame_index: u64,
    pub frame_count: u32,
    /// Media time of its first frame in samples (the timescale is the
    /// sample rate of `config_id`), on the presentation timeline the CMAF
    /// tracks share: 0 is the session's first presented video frame.
    pub start: u64,
    /// Samples from `start` to the end of its last frame (0 when empty).
    pub duration: u64,
    /// Raw AAC bytes of its frames.
    pub byte_size: u64,
    /// Which [`AudioConfig`] its frames use.
    pub config_id: u32,
}

impl AudioSpan {
    /// Where the span ends, in samples.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.duration)
    }
}

/// One part: a run of consecutive frames (decode order) inside a segment,
/// the unit that is muxed once (a CMAF chunk, a run of MPEG-TS packets) and
/// that low-latency HLS lists as `EXT-X-PART`. A part closes at the first
/// frame boundary at or after the part target, and always where its segment
/// ends, so a segment is exactly the run of its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartRecord {
    /// Session-wide part number, from 0, one more for every part.
    pub number: u64,
    /// Media sequence number of the segment it belongs to.
    pub segment: u64,
    /// Its position in that segment, from 0.
    pub index: u32,
    /// Decode time of its first frame, 90 kHz.
    pub start: u64,
    /// Exact duration, 90 kHz: the next part's start minus this start (for
    /// the stream's last part, its last frame's end).
    pub duration: u64,
    pub first_frame_index: u64,
    pub frame_count: u32,
    /// Starts at a random access point (`EXT-X-PART:INDEPENDENT=YES`):
    /// always true for a segment's first part that starts at a keyframe.
    pub independent: bool,
    /// Total Annex B bytes of its frames.
    pub byte_size: u64,
    /// Which [`CodecConfig`] its frames use (that of its segment).
    pub config_id: u32,
    /// As [`SegmentRecord::composition_shift`].
    pub composition_shift: u32,
    /// The audio track's part of it, as [`SegmentRecord::audio`].
    pub audio: Option<AudioSpan>,
}

/// Samples per AAC frame (AAC-LC and the other 1,024-sample object types;
/// 960-sample framing is refused).
pub const AAC_FRAME_SAMPLES: u32 = 1024;

/// The audio format of a session's audio track (one per session: the
/// first audio that arrives decides it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AudioConfig {
    pub id: u32,
    /// The MPEG-4 audio object type the codec string names: 2 for AAC-LC
    /// (1 Main, 3 SSR, 4 LTP; 5 HE-AAC and 29 HE-AAC v2 when an
    /// AudioSpecificConfig signals them explicitly).
    pub object_type: u8,
    /// The AAC core's object type (1–4): what an ADTS header states.
    pub core_object_type: u8,
    /// The AAC core's sampling rate (Hz): the audio timescale. Each frame
    /// is [`AAC_FRAME_SAMPLES`] samples of it.
    pub sample_rate: u32,
    /// `sampling_frequency_index` of `sample_rate` (0–12), as ADTS states it.
    pub sample_rate_index: u8,
    /// `channel_configuration` (1–7).
    pub channel_config: u8,
    /// The AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1), as `esds` carries it.
    pub asc: Bytes,
}

impl AudioConfig {
    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// Channels the configuration plays (7 is 7.1: eight).
    pub fn channels(&self) -> u32 {
        match self.channel_config {
            7 => 8,
            c => u32::from(c),
        }
    }

    /// 90 kHz ticks of `samples` (rounded down).
    pub fn ticks(&self, samples: u64) -> u64 {
        (u128::from(samples) * u128::from(TIMESCALE) / u128::from(self.sample_rate.max(1))) as u64
    }
}

/// One accepted, timed AAC frame of the session's audio track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioFrame {
    /// Index among the session's audio frames, in order.
    pub index: u64,
    /// The raw AAC frame (`raw_data_block`, no ADTS header). Usually a
    /// zero-copy slice of what the publisher sent.
    pub data: Bytes,
    /// Presentation time in samples of its config's rate, on the timeline
    /// the CMAF tracks share (0 is the first presented video frame; see
    /// [`AudioSpan::start`]).
    pub time: u64,
    /// Presentation time, 90 kHz, on the video frames' PTS scale (what
    /// MPEG-TS and gRPC carry): `time` in 90 kHz plus the composition shift.
    pub pts: u64,
    /// Samples ([`AAC_FRAME_SAMPLES`]).
    pub duration: u32,
    /// Media sequence number of the segment it belongs to.
    pub segment: u64,
    /// Which [`AudioConfig`] it was coded with.
    pub config_id: u32,
    /// Silence the engine put where the publisher's audio had a gap, or
    /// fell behind the video it should accompany.
    pub filler: bool,
    /// The publisher's capture time, if it sent one.
    pub capture_time_ns: Option<u64>,
    /// Wall-clock time the frame was accepted (Unix ns).
    pub ingest_time_ns: u64,
}

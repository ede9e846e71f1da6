//! How session items travel through JetStream: one protobuf [`Envelope`]
//! per NATS message (prost-derived here; not part of the public gRPC API),
//! numbered per session so a reader sees any gap. An envelope larger than
//! [`super::MAX_PAYLOAD`] (a large keyframe) is sent as consecutive
//! fragment envelopes of its encoding.
//!
//! Besides the items, a `Sync` precedes the first frame of every segment:
//! the parameter sets of the frames that follow, so a reader that starts
//! mid-stream can join there; in an audio-only session an `AudioSync` (the
//! audio format) precedes the first audio frame of every segment.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::engine::annexb::nal_spans;
use crate::engine::frame::{AudioConfig, AudioFrame, AudioSpan};
use crate::engine::frame::{HevcConfig, VideoCodec};
use crate::engine::playlist::SegmentPlace;
use crate::engine::{CodecConfig, Frame, PartRecord, SegmentRecord};
use crate::session::replica::{ReplicaItem, ReplicaSegment};

/// One NATS message.
#[derive(Clone, PartialEq, Message)]
pub struct Envelope {
    /// Per-session message number, from 0, one more per message.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(
        oneof = "Body",
        tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15"
    )]
    pub body: Option<Body>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    #[prost(message, tag = "2")]
    Config(WireConfig),
    #[prost(message, tag = "3")]
    Frame(WireFrame),
    #[prost(message, tag = "4")]
    Part(WirePart),
    #[prost(message, tag = "5")]
    Segment(WireSegment),
    #[prost(bool, tag = "6")]
    Discontinuity(bool),
    #[prost(bool, tag = "7")]
    End(bool),
    /// A segment starts with the next frame; its frames use this config.
    #[prost(message, tag = "8")]
    Sync(WireConfig),
    /// Items were lost before this one (the origin's queue was full).
    #[prost(uint64, tag = "9")]
    Gap(u64),
    /// A piece of an envelope's encoding too large for one message.
    #[prost(message, tag = "10")]
    Fragment(WireFragment),
    #[prost(message, tag = "11")]
    TsContinuity(WireTsContinuity),
    /// The audio format (first, changed, and again before each segment so
    /// a replica that joins there has it).
    #[prost(message, tag = "12")]
    AudioConfig(WireAudioConfig),
    #[prost(message, tag = "13")]
    AudioFrame(WireAudioFrame),
    /// An audio-only session: a segment starts with the next audio frame,
    /// in this format (a reader that starts mid-stream joins there).
    #[prost(message, tag = "14")]
    AudioSync(WireAudioConfig),
    /// The publisher vanished (it may come back): predictions stop.
    #[prost(bool, tag = "15")]
    PublisherAway(bool),
}

/// An [`AudioConfig`] (ISO/IEC 14496-3 AudioSpecificConfig and what the
/// engine read from it).
#[derive(Clone, PartialEq, Message)]
pub struct WireAudioConfig {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(uint32, tag = "2")]
    pub object_type: u32,
    #[prost(uint32, tag = "3")]
    pub core_object_type: u32,
    #[prost(uint32, tag = "4")]
    pub sample_rate: u32,
    #[prost(uint32, tag = "5")]
    pub sample_rate_index: u32,
    #[prost(uint32, tag = "6")]
    pub channel_config: u32,
    #[prost(bytes = "bytes", tag = "7")]
    pub asc: Bytes,
}

/// An [`AudioFrame`] with its exact times (samples and 90 kHz).
#[derive(Clone, PartialEq, Message)]
pub struct WireAudioFrame {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
    #[prost(uint64, tag = "3")]
    pub time: u64,
    #[prost(uint64, tag = "4")]
    pub pts: u64,
    #[prost(uint32, tag = "5")]
    pub duration: u32,
    #[prost(uint64, tag = "6")]
    pub segment: u64,
    #[prost(uint32, tag = "7")]
    pub config_id: u32,
    #[prost(bool, tag = "8")]
    pub filler: bool,
    #[prost(uint64, optional, tag = "9")]
    pub capture_time_ns: Option<u64>,
    #[prost(uint64, tag = "10")]
    pub ingest_time_ns: u64,
}

/// A part's or segment's [`AudioSpan`].
#[derive(Clone, PartialEq, Message)]
pub struct WireAudioSpan {
    #[prost(uint64, tag = "1")]
    pub first_frame_index: u64,
    #[prost(uint32, tag = "2")]
    pub frame_count: u32,
    #[prost(uint64, tag = "3")]
    pub start: u64,
    #[prost(uint64, tag = "4")]
    pub duration: u64,
    #[prost(uint64, tag = "5")]
    pub byte_size: u64,
    #[prost(uint32, tag = "6")]
    pub config_id: u32,
}

impl From<&AudioSpan> for WireAudioSpan {
    fn from(a: &AudioSpan) -> Self {
        Self {
            first_frame_index: a.first_frame_index,
            frame_count: a.frame_count,
            start: a.start,
            duration: a.duration,
            byte_size: a.byte_size,
            config_id: a.config_id,
        }
    }
}

impl From<WireAudioSpan> for AudioSpan {
    fn from(a: WireAudioSpan) -> Self {
        Self {
            first_frame_index: a.first_frame_index,
            frame_count: a.frame_count,
            start: a.start,
            duration: a.duration,
            byte_size: a.byte_size,
            config_id: a.config_id,
        }
    }
}

impl From<&AudioConfig> for WireAudioConfig {
    fn from(c: &AudioConfig) -> Self {
        Self {
            id: c.id,
            object_type: c.object_type.into(),
            core_object_type: c.core_object_type.into(),
            sample_rate: c.sample_rate,
            sample_rate_index: c.sample_rate_index.into(),
            channel_config: c.channel_config.into(),
            asc: c.asc.clone(),
        }
    }
}

impl From<WireAudioConfig> for AudioConfig {
    fn from(c: WireAudioConfig) -> Self {
        Self {
            id: c.id,
            object_type: byte(c.object_type),
            core_object_type: byte(c.core_object_type),
            sample_rate: c.sample_rate,
            sample_rate_index: byte(c.sample_rate_index),
            channel_config: byte(c.channel_config),
            asc: c.asc,
        }
    }
}

impl From<&AudioFrame> for WireAudioFrame {
    fn from(f: &AudioFrame) -> Self {
        Self {
            index: f.index,
            data: f.data.clone(),
            time: f.time,
            pts: f.pts,
            duration: f.duration,
            segment: f.segment,
            config_id: f.config_id,
            filler: f.filler,
            capture_time_ns: f.capture_time_ns,
            ingest_time_ns: f.ingest_time_ns,
        }
    }
}

impl From<WireAudioFrame> for AudioFrame {
    fn from(f: WireAudioFrame) -> Self {
        Self {
            index: f.index,
            data: f.data,
            time: f.time,
            pts: f.pts,
            duration: f.duration,
            segment: f.segment,
            config_id: f.config_id,
            filler: f.filler,
            capture_time_ns: f.capture_time_ns,
            ingest_time_ns: f.ingest_time_ns,
        }
    }
}

/// MPEG-TS continuity counters after a part (4 bits each).
#[derive(Clone, PartialEq, Message)]
pub struct WireTsContinuity {
    #[prost(uint64, tag = "1")]
    pub after_part: u64,
    #[prost(uint32, tag = "2")]
    pub pat: u32,
    #[prost(uint32, tag = "3")]
    pub pmt: u32,
    #[prost(uint32, tag = "4")]
    pub video: u32,
    #[prost(uint32, tag = "5")]
    pub audio: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct WireFragment {
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
    /// The last piece: the pieces joined decode as an [`Envelope`].
    #[prost(bool, tag = "2")]
    pub last: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct WireHevc {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub vps: Vec<Bytes>,
    #[prost(uint32, tag = "2")]
    pub profile_space: u32,
    #[prost(bool, tag = "3")]
    pub tier_flag: bool,
    #[prost(uint32, tag = "4")]
    pub profile_idc: u32,
    #[prost(uint32, tag = "5")]
    pub profile_compat: u32,
    #[prost(uint64, tag = "6")]
    pub constraint_flags: u64,
    #[prost(uint32, tag = "7")]
    pub level_idc: u32,
    #[prost(uint32, tag = "8")]
    pub num_temporal_layers: u32,
    #[prost(bool, tag = "9")]
    pub temporal_id_nested: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct WireConfig {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(bool, tag = "2")]
    pub h265: bool,
    #[prost(message, optional, tag = "3")]
    pub hevc: Option<WireHevc>,
    #[prost(bytes = "bytes", tag = "4")]
    pub sps: Bytes,
    #[prost(bytes = "bytes", repeated, tag = "5")]
    pub pps: Vec<Bytes>,
    #[prost(uint32, tag = "6")]
    pub width: u32,
    #[prost(uint32, tag = "7")]
    pub height: u32,
    #[prost(uint32, tag = "8")]
    pub profile_idc: u32,
    #[prost(uint32, tag = "9")]
    pub profile_compat: u32,
    #[prost(uint32, tag = "10")]
    pub level_idc: u32,
    #[prost(uint32, tag = "11")]
    pub chroma_format_idc: u32,
    #[prost(uint32, tag = "12")]
    pub bit_depth_luma_minus8: u32,
    #[prost(uint32, tag = "13")]
    pub bit_depth_chroma_minus8: u32,
    #[prost(uint32, tag = "14")]
    pub frame_rate_num: u32,
    #[prost(uint32, tag = "15")]
    pub frame_rate_den: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct WireFrame {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
    #[prost(uint64, tag = "3")]
    pub pts: u64,
    #[prost(uint64, tag = "4")]
    pub dts: u64,
    #[prost(uint32, tag = "5")]
    pub duration: u32,
    #[prost(bool, tag = "6")]
    pub is_keyframe: bool,
    #[prost(bool, tag = "7")]
    pub random_access: bool,
    #[prost(uint32, tag = "8")]
    pub sap_type: u32,
    #[prost(bool, tag = "9")]
    pub is_leading: bool,
    #[prost(bool, tag = "10")]
    pub is_reference: bool,
    #[prost(uint64, tag = "11")]
    pub segment: u64,
    #[prost(uint32, tag = "12")]
    pub config_id: u32,
    #[prost(uint64, optional, tag = "13")]
    pub capture_time_ns: Option<u64>,
    #[prost(uint64, tag = "14")]
    pub ingest_time_ns: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct WirePart {
    #[prost(uint64, tag = "1")]
    pub number: u64,
    #[prost(uint64, tag = "2")]
    pub segment: u64,
    #[prost(uint32, tag = "3")]
    pub index: u32,
    #[prost(uint64, tag = "4")]
    pub start: u64,
    #[prost(uint64, tag = "5")]
    pub duration: u64,
    #[prost(uint64, tag = "6")]
    pub first_frame_index: u64,
    #[prost(uint32, tag = "7")]
    pub frame_count: u32,
    #[prost(bool, tag = "8")]
    pub independent: bool,
    #[prost(uint64, tag = "9")]
    pub byte_size: u64,
    #[prost(uint32, tag = "10")]
    pub config_id: u32,
    #[prost(uint32, tag = "11")]
    pub composition_shift: u32,
    #[prost(message, optional, tag = "12")]
    pub audio: Option<WireAudioSpan>,
    /// The next message is the record of the segment this part ends: a
    /// reader applies both at once (as the origin did), so its playlists
    /// never list a segment's last part with the segment still open.
    #[prost(bool, tag = "13")]
    pub closes_segment: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct WireSegment {
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    #[prost(uint64, tag = "2")]
    pub start: u64,
    #[prost(uint64, tag = "3")]
    pub duration: u64,
    #[prost(uint32, tag = "4")]
    pub frame_count: u32,
    #[prost(uint64, tag = "5")]
    pub first_frame_index: u64,
    #[prost(bool, tag = "6")]
    pub keyframe_aligned: bool,
    #[prost(uint32, tag = "7")]
    pub sap_type: u32,
    #[prost(bool, tag = "8")]
    pub discontinuity: bool,
    #[prost(uint64, tag = "9")]
    pub discontinuity_sequence: u64,
    #[prost(uint64, tag = "10")]
    pub program_date_time_ms: u64,
    #[prost(uint64, tag = "11")]
    pub byte_size: u64,
    #[prost(uint32, tag = "12")]
    pub config_id: u32,
    #[prost(uint32, tag = "13")]
    pub composition_shift: u32,
    /// The config its manifest entries were made with.
    #[prost(message, optional, tag = "14")]
    pub manifest_config: Option<WireConfig>,
    /// Its place in the origin's manifests: DASH period id and start, and
    /// whether every segment so far was independent.
    #[prost(uint64, optional, tag = "15")]
    pub period_id: Option<u64>,
    #[prost(uint64, tag = "16")]
    pub period_start: u64,
    #[prost(bool, tag = "17")]
    pub all_independent: bool,
    #[prost(message, optional, tag = "18")]
    pub audio: Option<WireAudioSpan>,
}

fn byte(v: u32) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

impl From<&CodecConfig> for WireConfig {
    fn from(c: &CodecConfig) -> Self {
        Self {
            id: c.id,
            h265: c.codec == VideoCodec::H265,
            hevc: c.hevc.as_deref().map(|h| WireHevc {
                vps: h.vps.clone(),
                profile_space: h.profile_space.into(),
                tier_flag: h.tier_flag,
                profile_idc: h.profile_idc.into(),
                profile_compat: h.profile_compat,
                constraint_flags: h.constraint_flags,
                level_idc: h.level_idc.into(),
                num_temporal_layers: h.num_temporal_layers.into(),
                temporal_id_nested: h.temporal_id_nested,
            }),
            sps: c.sps.clone(),
            pps: c.pps.clone(),
            width: c.width,
            height: c.height,
            profile_idc: c.profile_idc.into(),
            profile_compat: c.profile_compat.into(),
            level_idc: c.level_idc.into(),
            chroma_format_idc: c.chroma_format_idc.into(),
            bit_depth_luma_minus8: c.bit_depth_luma_minus8.into(),
            bit_depth_chroma_minus8: c.bit_depth_chroma_minus8.into(),
            frame_rate_num: c.frame_rate_num,
            frame_rate_den: c.frame_rate_den,
        }
    }
}

impl From<WireConfig> for CodecConfig {
    fn from(c: WireConfig) -> Self {
        Self {
            id: c.id,
            codec: if c.h265 {
                VideoCodec::H265
            } else {
                VideoCodec::H264
            },
            hevc: c.hevc.map(|h| {
                Box::new(HevcConfig {
                    vps: h.vps,
                    profile_space: byte(h.profile_space),
                    tier_flag: h.tier_flag,
                    profile_idc: byte(h.profile_idc),
                    profile_compat: h.profile_compat,
                    constraint_flags: h.constraint_flags,
                    level_idc: byte(h.level_idc),
                    num_temporal_layers: byte(h.num_temporal_layers),
                    temporal_id_nested: h.temporal_id_nested,
                })
            }),
            sps: c.sps,
            pps: c.pps,
            width: c.width,
            height: c.height,
            profile_idc: byte(c.profile_idc),
            profile_compat: byte(c.profile_compat),
            level_idc: byte(c.level_idc),
            chroma_format_idc: byte(c.chroma_format_idc),
            bit_depth_luma_minus8: byte(c.bit_depth_luma_minus8),
            bit_depth_chroma_minus8: byte(c.bit_depth_chroma_minus8),
            frame_rate_num: c.frame_rate_num,
            frame_rate_den: c.frame_rate_den,
        }
    }
}

impl From<&Frame> for WireFrame {
    fn from(f: &Frame) -> Self {
        Self {
            index: f.index,
            data: f.data.clone(),
            pts: f.pts,
            dts: f.dts,
            duration: f.duration,
            is_keyframe: f.is_keyframe,
            random_access: f.random_access,
            sap_type: f.sap_type.into(),
            is_leading: f.is_leading,
            is_reference: f.is_reference,
            segment: f.segment,
            config_id: f.config_id,
            capture_time_ns: f.capture_time_ns,
            ingest_time_ns: f.ingest_time_ns,
        }
    }
}

impl From<WireFrame> for Frame {
    fn from(f: WireFrame) -> Self {
        Self {
            index: f.index,
            // The engine's own scan, as the assembler made them.
            nals: nal_spans(&f.data),
            data: f.data,
            pts: f.pts,
            dts: f.dts,
            duration: f.duration,
            is_keyframe: f.is_keyframe,
            random_access: f.random_access,
            sap_type: byte(f.sap_type),
            is_leading: f.is_leading,
            is_reference: f.is_reference,
            segment: f.segment,
            config_id: f.config_id,
            capture_time_ns: f.capture_time_ns,
            ingest_time_ns: f.ingest_time_ns,
        }
    }
}

impl From<&PartRecord> for WirePart {
    fn from(p: &PartRecord) -> Self {
        Self {
            number: p.number,
            segment: p.segment,
            index: p.index,
            start: p.start,
            duration: p.duration,
            first_frame_index: p.first_frame_index,
            frame_count: p.frame_count,
            independent: p.independent,
            byte_size: p.byte_size,
            config_id: p.config_id,
            composition_shift: p.composition_shift,
            audio: p.audio.as_ref().map(Into::into),
            closes_segment: false,
        }
    }
}

impl From<WirePart> for PartRecord {
    fn from(p: WirePart) -> Self {
        Self {
            number: p.number,
            segment: p.segment,
            index: p.index,
            start: p.start,
            duration: p.duration,
            first_frame_index: p.first_frame_index,
            frame_count: p.frame_count,
            independent: p.independent,
            byte_size: p.byte_size,
            config_id: p.config_id,
            composition_shift: p.composition_shift,
            audio: p.audio.map(Into::into),
        }
    }
}

impl WireSegment {
    fn of(seg: &ReplicaSegment) -> Self {
        let r = &seg.record;
        Self {
            sequence: r.sequence,
            start: r.start,
            duration: r.duration,
            frame_count: r.frame_count,
            first_frame_index: r.first_frame_index,
            keyframe_aligned: r.keyframe_aligned,
            sap_type: r.sap_type.into(),
            discontinuity: r.discontinuity,
            discontinuity_sequence: r.discontinuity_sequence,
            program_date_time_ms: r.program_date_time_ms,
            byte_size: r.byte_size,
            config_id: r.config_id,
            composition_shift: r.composition_shift,
            manifest_config: seg.config.as_deref().map(Into::into),
            period_id: seg.place.map(|p| p.period_id),
            period_start: seg.place.map_or(0, |p| p.period_start),
            all_independent: seg.place.is_some_and(|p| p.all_independent),
            audio: r.audio.as_ref().map(Into::into),
        }
    }

    fn place(&self) -> Option<SegmentPlace> {
        self.period_id.map(|period_id| SegmentPlace {
            period_id,
            period_start: self.period_start,
            all_independent: self.all_independent,
        })
    }

    fn record(&self) -> SegmentRecord {
        SegmentRecord {
            sequence: self.sequence,
            start: self.start,
            duration: self.duration,
            frame_count: self.frame_count,
            first_frame_index: self.first_frame_index,
            keyframe_aligned: self.keyframe_aligned,
            sap_type: byte(self.sap_type),
            discontinuity: self.discontinuity,
            discontinuity_sequence: self.discontinuity_sequence,
            program_date_time_ms: self.program_date_time_ms,
            byte_size: self.byte_size,
            config_id: self.config_id,
            composition_shift: self.composition_shift,
            audio: self.audio.clone().map(Into::into),
        }
    }
}

/// The body an item is published as (`None`: not published on the stream;
/// the start goes in the lease).
pub fn body_of(item: &ReplicaItem) -> Option<Body> {
    Some(match item {
        ReplicaItem::Start(_) => return None,
        ReplicaItem::Config(c) => Body::Config(c.as_ref().into()),
        ReplicaItem::Frame(f) => Body::Frame(f.as_ref().into()),
        ReplicaItem::Part(p) => Body::Part(p.as_ref().into()),
        ReplicaItem::Segment(s) => Body::Segment(WireSegment::of(s)),
        ReplicaItem::AudioConfig(c) => Body::AudioConfig(c.as_ref().into()),
        ReplicaItem::AudioFrame(f) => Body::AudioFrame(f.as_ref().into()),
        ReplicaItem::Discontinuity => Body::Discontinuity(true),
        ReplicaItem::PublisherAway => Body::PublisherAway(true),
        ReplicaItem::End => Body::End(true),
        ReplicaItem::TsContinuity {
            after_part,
            counters,
        } => Body::TsContinuity(WireTsContinuity {
            after_part: *after_part,
            pat: counters[0].into(),
            pmt: counters[1].into(),
            video: counters[2].into(),
            audio: counters[3].into(),
        }),
    })
}

/// What a received body stands for.
#[derive(Debug)]
pub enum Received {
    Item(ReplicaItem),
    /// A part whose segment's record comes next (apply them together).
    ClosingPart(Arc<PartRecord>),
    /// A segment starts next, its frames with this config.
    Sync(Arc<CodecConfig>),
    /// An audio-only segment starts next, its frames in this format.
    AudioSync(Arc<AudioConfig>),
    /// Items were lost before this point.
    Gap(u64),
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a liveslice envelope: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("an envelope with no body")]
    Empty,
    #[error("a segment record without its manifest config")]
    NoManifestConfig,
    #[error("a fragmented envelope larger than {0} bytes")]
    TooLarge(usize),
}

/// The item a (whole, not fragment) body stands for.
pub fn received(body: Body) -> Result<Received, WireError> {
    Ok(Received::Item(match body {
        Body::Config(c) => ReplicaItem::Config(Arc::new(c.into())),
        Body::Frame(f) => ReplicaItem::Frame(Arc::new(f.into())),
        Body::Part(p) if p.closes_segment => {
            return Ok(Received::ClosingPart(Arc::new(p.into())));
        }
        Body::Part(p) => ReplicaItem::Part(Arc::new(p.into())),
        Body::Segment(s) => {
            let record = s.record();
            let place = s.place();
            // Only an audio-only segment comes without one.
            let audio_only = record.is_audio_only();
            let config = match s.manifest_config {
                Some(cfg) => Some(Arc::new(cfg.into())),
                None if audio_only => None,
                None => return Err(WireError::NoManifestConfig),
            };
            ReplicaItem::Segment(Arc::new(ReplicaSegment {
                record,
                config,
                place,
            }))
        }
        Body::AudioConfig(c) => ReplicaItem::AudioConfig(Arc::new(c.into())),
        Body::AudioFrame(f) => ReplicaItem::AudioFrame(Arc::new(f.into())),
        Body::Discontinuity(_) => ReplicaItem::Discontinuity,
        Body::PublisherAway(_) => ReplicaItem::PublisherAway,
        Body::End(_) => ReplicaItem::End,
        Body::TsContinuity(t) => ReplicaItem::TsContinuity {
            after_part: t.after_part,
            counters: [byte(t.pat), byte(t.pmt), byte(t.video), byte(t.audio)],
        },
        Body::Sync(c) => return Ok(Received::Sync(Arc::new(c.into()))),
        Body::AudioSync(c) => return Ok(Received::AudioSync(Arc::new(c.into()))),
        Body::Gap(n) => return Ok(Received::Gap(n)),
        Body::Fragment(_) => return Err(WireError::Empty),
    }))
}

/// Numbers and encodes outgoing bodies, fragmenting large ones.
#[derive(Debug, Default)]
pub struct Encoder {
    next: u64,
}

impl Encoder {
    /// The payloads of one body with their message numbers, in order (one
    /// unless fragmented).
    pub fn encode(&mut self, body: Body, max_payload: usize) -> Vec<(u64, Bytes)> {
        let seq = self.next;
        let env = Envelope {
            seq,
            body: Some(body),
        };
        self.next += 1;
        let whole = env.encode_to_vec();
        if whole.len() <= max_payload {
            return vec![(seq, Bytes::from(whole))];
        }
        // The fragments are numbered, not the envelope inside them (its
        // number is not read).
        self.next = seq;
        let whole = Bytes::from(whole);
        // Room for the fragment's own framing.
        let piece = max_payload.saturating_sub(64).max(1024);
        let count = whole.len().div_ceil(piece);
        (0..count)
            .map(|i| {
                let data = whole.slice(i * piece..((i + 1) * piece).min(whole.len()));
                let seq = self.next_seq();
                let env = Envelope {
                    seq,
                    body: Some(Body::Fragment(WireFragment {
                        data,
                        last: i + 1 == count,
                    })),
                };
                (seq, Bytes::from(env.encode_to_vec()))
            })
            .collect()
    }

    fn next_seq(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        n
    }
}

/// Checks numbering and joins fragments of incoming messages.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The next message number expected (`None`: the first not read yet).
    expected: Option<u64>,
    fragments: Vec<u8>,
}

/// What a message gave.
#[derive(Debug)]
pub enum Decoded {
    /// A whole body (its number is the envelope's).
    Body(Box<Body>),
    /// A fragment; more follow.
    Partial,
    /// A message is missing before this one.
    Missing { expected: u64, got: u64 },
    /// An item of a kind this version does not know (from a newer node of
    /// the cluster, e.g. `PublisherAway` to an edge that predates it):
    /// skipped, as protobuf skips an unknown field; the numbering goes on.
    Unknown,
}

impl Decoder {
    /// Reads one message. `max_bytes` bounds a fragmented envelope.
    pub fn decode(&mut self, payload: &[u8], max_bytes: usize) -> Result<Decoded, WireError> {
        let env = Envelope::decode(payload)?;
        if let Some(expected) = self.expected {
            if env.seq != expected {
                return Ok(Decoded::Missing {
                    expected,
                    got: env.seq,
                });
            }
        }
        self.expected = Some(env.seq.wrapping_add(1));
        let Some(body) = env.body else {
            self.fragments.clear();
            return Ok(Decoded::Unknown);
        };
        match body {
            Body::Fragment(f) => {
                if self.fragments.len() + f.data.len() > max_bytes {
                    self.fragments.clear();
                    return Err(WireError::TooLarge(max_bytes));
                }
                self.fragments.extend_from_slice(&f.data);
                if !f.last {
                    return Ok(Decoded::Partial);
                }
                let whole = std::mem::take(&mut self.fragments);
                let inner = Envelope::decode(whole.as_slice())?;
                Ok(inner
                    .body
                    .map_or(Decoded::Unknown, |b| Decoded::Body(Box::new(b))))
            }
            body => {
                self.fragments.clear();
                Ok(Decoded::Body(Box::new(body)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame too large for one message travels in fragments and comes
    /// out whole; a missing message is reported, not skipped.
    #[test]
    fn large_items_are_fragmented_and_gaps_seen() {
        let frame = Frame {
            index: 7,
            data: Bytes::from([0u8, 0, 0, 1, 0x65].repeat(100_000)),
            nals: Vec::new(),
            pts: 3003,
            dts: 0,
            duration: 3003,
            is_keyframe: true,
            random_access: true,
            sap_type: 1,
            is_leading: false,
            is_reference: true,
            segment: 2,
            config_id: 1,
            capture_time_ns: Some(5),
            ingest_time_ns: 9,
        };
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        // Numbering runs on across a fragmented item.
        let before = enc.encode(Body::Discontinuity(true), 100_000);
        assert!(matches!(
            dec.decode(&before[0].1, 1 << 20).expect("decodes"),
            Decoded::Body(_)
        ));
        let body = body_of(&ReplicaItem::Frame(Arc::new(frame.clone()))).expect("published");
        let msgs = enc.encode(body, 100_000);
        assert!(msgs.len() > 1);
        assert!(msgs.iter().all(|(_, m)| m.len() <= 100_000));
        let seqs: Vec<u64> = msgs.iter().map(|(n, _)| *n).collect();
        assert_eq!(seqs, (1..=msgs.len() as u64).collect::<Vec<_>>());
        let mut got = None;
        for (_, m) in &msgs {
            match dec.decode(m, 16 << 20).expect("decodes") {
                Decoded::Body(b) => got = Some(b),
                Decoded::Partial => {}
                Decoded::Missing { .. } | Decoded::Unknown => panic!("nothing is missing"),
            }
        }
        let Some(Ok(Received::Item(ReplicaItem::Frame(f)))) = got.map(|b| received(*b)) else {
            panic!("a frame");
        };
        assert_eq!(f.data, frame.data);
        assert_eq!(
            (f.pts, f.dts, f.segment, f.capture_time_ns),
            (3003, 0, 2, Some(5))
        );
        assert_eq!(f.nals.len(), 100_000);
        let after = enc.encode(Body::End(true), 1000);
        assert!(matches!(
            dec.decode(&after[0].1, 1 << 20).expect("decodes"),
            Decoded::Body(_)
        ));
        // An item of a kind this version does not know (a newer node's: a
        // oneof tag it has no field for) is skipped, the numbering kept.
        let mut newer = Envelope {
            seq: enc.next_seq(),
            body: None,
        }
        .encode_to_vec();
        newer.extend_from_slice(&[0xfa, 0x01, 0x00]); // field 31, empty bytes
        assert!(matches!(
            dec.decode(&newer, 1 << 20).expect("decodes"),
            Decoded::Unknown
        ));
        let away = enc.encode(Body::PublisherAway(true), 1000);
        let Decoded::Body(b) = dec.decode(&away[0].1, 1 << 20).expect("decodes") else {
            panic!("numbering kept across the unknown item");
        };
        assert!(matches!(
            received(*b),
            Ok(Received::Item(ReplicaItem::PublisherAway))
        ));
        // A message skipped: the next one says so.
        let a = enc.encode(Body::End(true), 1000);
        let b = enc.encode(Body::End(true), 1000);
        let _ = a;
        assert!(matches!(
            dec.decode(&b[0].1, 1 << 20).expect("decodes"),
            Decoded::Missing { .. }
        ));
    }
}

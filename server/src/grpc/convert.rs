//! Engine and session records → protobuf messages. Only renders; every value
//! comes from the records.

use liveslice_proto::v1 as pb;
use pb::slice_response::Event as PbEvent;

use crate::engine::audio::adts::AdtsHeader;
use crate::engine::pipeline::{ticks_to_ns, DropReport, SegmentEvent};
use crate::engine::playlist::{ManifestEdit, ManifestState, ManifestUpdate};
use crate::engine::{
    AudioConfig, AudioFrame, AudioSpan, DropReason, Frame, PartRecord, SegmentRecord,
    AAC_FRAME_SAMPLES,
};
use crate::session::{EndReason, SessionEnd, Snapshot};

fn event(e: PbEvent) -> pb::SliceResponse {
    pb::SliceResponse {
        event: Some(e),
        ..Default::default()
    }
}

pub fn frame(f: &Frame) -> pb::SliceResponse {
    pb::SliceResponse {
        data: f.data.clone(),
        timestamp_ns: ticks_to_ns(f.pts),
        is_keyframe: f.is_keyframe,
        event: Some(PbEvent::Frame(pb::FrameInfo {
            index: f.index,
            pts_90k: f.pts,
            dts_90k: f.dts,
            duration_90k: f.duration,
            dts_ns: ticks_to_ns(f.dts),
            segment_sequence: f.segment,
            random_access: f.random_access,
            sap_type: u32::from(f.sap_type),
            is_leading: f.is_leading,
            capture_time_ns: f.capture_time_ns,
            ingest_time_ns: f.ingest_time_ns,
            is_reference: f.is_reference,
            ..Default::default()
        })),
    }
}

/// An audio frame: `data` is the AAC frame behind its ADTS header.
pub fn audio_frame(f: &AudioFrame, cfg: &AudioConfig) -> pb::SliceResponse {
    let mut data = Vec::with_capacity(7 + f.data.len());
    if let Some(h) = AdtsHeader::write(
        cfg.core_object_type,
        cfg.sample_rate_index,
        cfg.channel_config,
        f.data.len(),
    ) {
        data.extend_from_slice(&h);
    }
    data.extend_from_slice(&f.data);
    pb::SliceResponse {
        data: data.into(),
        timestamp_ns: ticks_to_ns(f.pts),
        is_keyframe: true,
        event: Some(PbEvent::Frame(pb::FrameInfo {
            index: f.index,
            pts_90k: f.pts,
            dts_90k: f.pts,
            duration_90k: cfg.ticks(u64::from(AAC_FRAME_SAMPLES)) as u32,
            dts_ns: ticks_to_ns(f.pts),
            segment_sequence: f.segment,
            random_access: true,
            sap_type: 1,
            capture_time_ns: f.capture_time_ns,
            ingest_time_ns: f.ingest_time_ns,
            is_reference: true,
            track: pb::Track::Audio as i32,
            audio_time: f.time,
            audio_filler: f.filler,
            ..Default::default()
        })),
    }
}

/// An audio span; `uri` names its CMAF file.
fn audio_span(a: &AudioSpan, rate: u32, uri: String) -> pb::AudioSpan {
    pb::AudioSpan {
        first_frame_index: a.first_frame_index,
        frame_count: a.frame_count,
        start: a.start,
        duration: a.duration,
        timescale: rate,
        byte_size: a.byte_size,
        uri_cmaf: uri,
    }
}

fn edit(e: &ManifestEdit) -> pb::ManifestEdit {
    pb::ManifestEdit {
        head: e.head.clone(),
        remove_entries: e.remove_entries,
        append_entries: e.append_entries.clone(),
        tail: e.tail.clone(),
    }
}

/// A whole manifest as an edit of an empty one.
fn state(s: &ManifestState) -> pb::ManifestEdit {
    pb::ManifestEdit {
        head: s.head.clone(),
        remove_entries: 0,
        append_entries: s.entries.iter().cloned().collect(),
        tail: s.tail.clone(),
    }
}

pub fn session_info(id: &str, s: &Snapshot, changed: bool) -> pb::SliceResponse {
    let (codec, width, height) = match &s.config {
        Some(c) => (c.codec_string(), c.width, c.height),
        None => (String::new(), 0, 0),
    };
    let (num, den) = s.frame_rate.unwrap_or((0, 1));
    let renditions = s
        .renditions
        .iter()
        .map(|r| pb::RenditionInfo {
            name: r.name.clone(),
            session_id: r.session_id.clone(),
            codec: r.codec.clone(),
            width: r.width,
            height: r.height,
            peak_bandwidth: r.peak_bandwidth,
            average_bandwidth: r.average_bandwidth,
            aligned: r.aligned,
            misaligned_segments: r.misaligned_segments,
        })
        .collect();
    event(PbEvent::SessionInfo(pb::SessionInfo {
        renditions,
        session_id: id.to_string(),
        codec,
        width,
        height,
        frame_rate_num: num,
        frame_rate_den: den,
        hls_playlist: s.hls_cmaf.render(),
        dash_manifest: s.dash.render(),
        media_sequence: s.media_sequence,
        segment_target_ms: s.segment_target_ms,
        part_target_ms: s.part_target_ms,
        window_segments: s.window,
        availability_start_ms: s.availability_start_ms,
        changed,
        hls_state: Some(state(&s.hls_cmaf)),
        hls_ts_state: Some(state(&s.hls_ts)),
        dash_state: Some(state(&s.dash)),
        hls_ts_playlist: s.hls_ts.render(),
        start_frame_index: s.start_frame.unwrap_or(0),
        timing_note: s.timing_note.clone().unwrap_or_default(),
        audio_codec: s
            .audio
            .as_ref()
            .map(|a| a.codec_string())
            .unwrap_or_default(),
        audio_sample_rate: s.audio.as_ref().map_or(0, |a| a.sample_rate),
        audio_channels: s.audio.as_ref().map_or(0, |a| a.channels()),
        audio_specific_config: s.audio.as_ref().map(|a| a.asc.clone()).unwrap_or_default(),
        audio_only: s.audio_only,
        hls_audio_state: s.audio.is_some().then(|| state(&s.hls_audio)),
    }))
}

pub fn segment_uri_cmaf(sequence: u64) -> String {
    format!("seg-{sequence}.m4s")
}

pub fn segment_uri_ts(sequence: u64) -> String {
    format!("ts/seg-{sequence}.ts")
}

pub fn segment_ready(r: &SegmentRecord, audio_rate: Option<u32>) -> pb::SliceResponse {
    event(PbEvent::SegmentReady(segment_ready_event(r, audio_rate)))
}

/// The `SegmentReady` of a segment record (its audio span timed at
/// `audio_rate`, Hz).
pub fn segment_ready_event(r: &SegmentRecord, audio_rate: Option<u32>) -> pb::SegmentReady {
    pb::SegmentReady {
        sequence: r.sequence,
        start_90k: r.start,
        duration_90k: r.duration,
        frame_count: r.frame_count,
        keyframe_aligned: r.keyframe_aligned,
        sap_type: u32::from(r.sap_type),
        discontinuity: r.discontinuity,
        uri_cmaf: segment_uri_cmaf(r.sequence),
        uri_ts: segment_uri_ts(r.sequence),
        byte_size: r.byte_size,
        program_date_time_ms: r.program_date_time_ms,
        first_frame_index: r.first_frame_index,
        config_id: r.config_id,
        composition_shift_90k: r.composition_shift,
        audio: r
            .audio
            .as_ref()
            .zip(audio_rate)
            .map(|(a, rate)| audio_span(a, rate, format!("audio-{}.m4s", r.sequence))),
        ..Default::default()
    }
}

pub fn part_ready(p: &PartRecord, audio_rate: Option<u32>) -> pb::SliceResponse {
    event(PbEvent::PartReady(pb::PartReady {
        number: p.number,
        segment: p.segment,
        index: p.index,
        start_90k: p.start,
        duration_90k: p.duration,
        first_frame_index: p.first_frame_index,
        frame_count: p.frame_count,
        independent: p.independent,
        byte_size: p.byte_size,
        config_id: p.config_id,
        uri_cmaf: format!("part-{}.m4s", p.number),
        uri_ts: format!("ts/part-{}.ts", p.number),
        audio: p
            .audio
            .as_ref()
            .zip(audio_rate)
            .map(|(a, rate)| audio_span(a, rate, format!("audio-part-{}.m4s", p.number))),
        ..Default::default()
    }))
}

pub fn manifest_delta(u: &ManifestUpdate) -> pb::SliceResponse {
    event(PbEvent::ManifestDelta(pb::ManifestDelta {
        media_sequence: u.media_sequence,
        removed: u.removed,
        hls: Some(edit(&u.hls_cmaf)),
        dash: Some(edit(&u.dash)),
        segment_sequence: u.segment_sequence.unwrap_or(0),
        ended: u.ended,
        hls_ts: Some(edit(&u.hls_ts)),
        hls_audio: Some(edit(&u.hls_audio)),
    }))
}

pub fn segment(s: &SegmentEvent, audio_rate: Option<u32>) -> [pb::SliceResponse; 2] {
    [
        segment_ready(&s.record, audio_rate),
        manifest_delta(&s.manifest),
    ]
}

pub fn drop_reason(r: DropReason) -> pb::DropReason {
    match r {
        DropReason::ForbiddenBit => pb::DropReason::ForbiddenBit,
        DropReason::UnknownParameterSet => pb::DropReason::UnknownParameterSet,
        DropReason::BadSliceHeader => pb::DropReason::BadSliceHeader,
        DropReason::Truncated => pb::DropReason::Truncated,
        DropReason::BeforeKeyframe => pb::DropReason::BeforeKeyframe,
        DropReason::ReferenceLost => pb::DropReason::ReferenceLost,
        DropReason::DependsOnDropped => pb::DropReason::DependsOnDropped,
        DropReason::NotH264 => pb::DropReason::NotH264,
        DropReason::TooLarge => pb::DropReason::TooLarge,
        DropReason::LeadingPicture => pb::DropReason::LeadingPicture,
        DropReason::BadAudio => pb::DropReason::BadAudio,
        DropReason::AudioTiming => pb::DropReason::AudioTiming,
        DropReason::NoVideoTrack => pb::DropReason::NoVideoTrack,
        DropReason::RenditionAlignment => pb::DropReason::RenditionAlignment,
    }
}

pub fn dropped(d: &DropReport) -> pb::SliceResponse {
    event(PbEvent::FrameDropped(pb::FrameDropped {
        reason: drop_reason(d.reason) as i32,
        count: d.count,
        total: d.total,
        detail: d.detail.clone(),
        stream_offset: d.offset,
    }))
}

pub fn lagged(skipped: u64, resume_index: u64) -> pb::SliceResponse {
    event(PbEvent::Lagged(pb::Lagged {
        skipped_frames: skipped,
        resume_frame_index: resume_index,
    }))
}

pub fn ended(e: &SessionEnd) -> pb::SliceResponse {
    use pb::session_ended::Reason;
    let reason = match e.reason {
        EndReason::EndOfStream => Reason::EndOfStream,
        EndReason::PublisherGone => Reason::PublisherGone,
        EndReason::ServerShutdown => Reason::ServerShutdown,
        EndReason::Error => Reason::Error,
    };
    event(PbEvent::SessionEnded(pb::SessionEnded {
        reason: reason as i32,
        frames: e.frames,
        segments: e.segments,
        detail: e.detail.clone(),
    }))
}

/// `closed_segment`: the lost origin's open segment this origin closed
/// (publisher failover, [`crate::session::replica::TakenOver`]).
pub fn publish_ack(
    id: &str,
    resumed: bool,
    segment_ms: u32,
    window: u32,
    closed_segment: Option<pb::SegmentReady>,
) -> pb::SliceResponse {
    event(PbEvent::PublishAck(pb::PublishAck {
        session_id: id.to_string(),
        resumed,
        segment_target_ms: segment_ms,
        window_segments: window,
        closed_segment,
    }))
}

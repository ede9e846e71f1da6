//! Broken-frame detection: which access units reach segments and which are
//! dropped, with a reason, until decoding can safely start again.
//!
//! A frame is dropped when it is damaged itself (the assembler marks those)
//! or when it depends on something that is gone: nothing before the first
//! keyframe can decode, and after a lost reference picture (a damaged
//! reference frame, or a `frame_num` gap that shows one was cut out) every
//! frame is dropped until the next keyframe or recovery point. Dropping more
//! than strictly needed is the safe side: a player shown a frame whose
//! reference is missing shows garbage until the next keyframe anyway.

use h264_reader::nal::sps::SeqParameterSet;

use super::access_unit::AccessUnit;

/// Why a frame (or bytes) did not reach a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    ForbiddenBit,
    UnknownParameterSet,
    BadSliceHeader,
    Truncated,
    BeforeKeyframe,
    ReferenceLost,
    DependsOnDropped,
    NotH264,
    TooLarge,
    /// An open-GOP leading picture, for a receiver that starts at the
    /// keyframe it leads (it references pictures before that keyframe).
    LeadingPicture,
    /// Audio that cannot be used: bytes that are not ADTS frames, an AAC
    /// format the session does not carry (another rate or channel count
    /// than its first audio, an unsupported profile), raw AAC frames
    /// without an AudioSpecificConfig.
    BadAudio,
    /// An audio frame with no place on the timeline: before the session's
    /// first video frame, after its last, late for a time already given to
    /// silence, or dropped to keep the audio in step with the capture clock.
    AudioTiming,
    /// Video sent to a session that is audio-only (its first seconds had
    /// audio and no video).
    NoVideoTrack,
    /// A rendition joining a session's other renditions waits for a random
    /// access point where one of their segments starts (segment N of every
    /// rendition starts at the same time); what comes before it is dropped.
    RenditionAlignment,
}

impl DropReason {
    pub const ALL: [DropReason; 14] = [
        DropReason::ForbiddenBit,
        DropReason::UnknownParameterSet,
        DropReason::BadSliceHeader,
        DropReason::Truncated,
        DropReason::BeforeKeyframe,
        DropReason::ReferenceLost,
        DropReason::DependsOnDropped,
        DropReason::NotH264,
        DropReason::TooLarge,
        DropReason::LeadingPicture,
        DropReason::BadAudio,
        DropReason::AudioTiming,
        DropReason::NoVideoTrack,
        DropReason::RenditionAlignment,
    ];

    /// Stable snake_case name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::ForbiddenBit => "forbidden_bit",
            DropReason::UnknownParameterSet => "unknown_parameter_set",
            DropReason::BadSliceHeader => "bad_slice_header",
            DropReason::Truncated => "truncated",
            DropReason::BeforeKeyframe => "before_keyframe",
            DropReason::ReferenceLost => "reference_lost",
            DropReason::DependsOnDropped => "depends_on_dropped",
            DropReason::NotH264 => "not_h264",
            DropReason::TooLarge => "too_large",
            DropReason::LeadingPicture => "leading_picture",
            DropReason::BadAudio => "bad_audio",
            DropReason::AudioTiming => "audio_timing",
            DropReason::NoVideoTrack => "no_video_track",
            DropReason::RenditionAlignment => "rendition_alignment",
        }
    }
}

/// The filter's decision on one access unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Decodable. `resync_at_recovery_point`: decoding restarts here at a
    /// picture that is not an IDR (a recovery point, or the intra picture a
    /// stream starts on), so pictures that precede it in display order but
    /// follow it in decode order (open-GOP leading pictures) must be dropped
    /// too.
    Accept {
        resync_at_recovery_point: bool,
    },
    Drop(DropReason, String),
}

/// Tracks decodability across frames.
#[derive(Debug)]
pub struct FrameFilter {
    /// `Some(reason)`: dropping everything until a keyframe.
    waiting: Option<DropReason>,
    /// frame_num of the previous reference picture (PrevRefFrameNum).
    prev_ref_frame_num: Option<u32>,
    /// Reference pictures a `frame_num` gap showed missing, not yet taken.
    missing: u32,
}

impl Default for FrameFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameFilter {
    pub fn new() -> Self {
        Self {
            waiting: Some(DropReason::BeforeKeyframe),
            prev_ref_frame_num: None,
            missing: 0,
        }
    }

    /// How many pictures the last `frame_num` gap showed missing upstream
    /// (they never arrived, so they were never dropped here); resets.
    pub fn take_missing(&mut self) -> u32 {
        std::mem::take(&mut self.missing)
    }

    /// Whether the filter is dropping until the next keyframe.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// After a publisher reconnects, its stream starts over: wait for a
    /// keyframe.
    pub fn restart(&mut self) {
        self.waiting = Some(DropReason::BeforeKeyframe);
        self.prev_ref_frame_num = None;
    }

    /// Judges `au`; `sps` is the SPS its slices use (when known).
    pub fn judge(&mut self, au: &AccessUnit, sps: Option<&SeqParameterSet>) -> Verdict {
        if let Some((reason, detail)) = &au.problem {
            // A damaged reference picture takes its dependants with it.
            // (A picture whose slices all vanished says nothing about
            // references; a frame_num gap will, if it was one.)
            if au.slices > 0 && (au.nal_ref_idc != 0 || au.slice.is_none()) {
                self.waiting = Some(DropReason::DependsOnDropped);
            }
            return Verdict::Drop(*reason, detail.clone());
        }
        let (Some(s), Some(sps)) = (au.slice.as_ref(), sps) else {
            self.waiting = Some(DropReason::DependsOnDropped);
            return Verdict::Drop(
                DropReason::UnknownParameterSet,
                format!("picture at byte {} has no usable SPS", au.offset),
            );
        };
        if s.idr {
            self.waiting = None;
            self.prev_ref_frame_num = Some(if s.mmco5 { 0 } else { s.frame_num });
            return Verdict::Accept {
                resync_at_recovery_point: false,
            };
        }
        if let Some(reason) = self.waiting {
            // Decoding can restart at a recovery point (open GOP or gradual
            // decoding refresh); at the start of a stream also at any intra
            // picture, since nothing before it exists to be referenced.
            let can_start =
                au.recovery_point.is_some() || (reason == DropReason::BeforeKeyframe && au.intra);
            if !can_start {
                return Verdict::Drop(
                    reason,
                    format!(
                        "picture at byte {} waits for a keyframe ({})",
                        au.offset,
                        reason.as_str()
                    ),
                );
            }
            self.waiting = None;
            self.prev_ref_frame_num = Some(s.frame_num);
            return Verdict::Accept {
                resync_at_recovery_point: true,
            };
        }
        let max_frame_num = 1u32 << (sps.log2_max_frame_num_minus4 as u32 + 4);
        if let Some(prev) = self.prev_ref_frame_num {
            let next = (prev + 1) % max_frame_num;
            if s.frame_num != prev
                && s.frame_num != next
                && !sps.gaps_in_frame_num_value_allowed_flag
            {
                self.waiting = Some(DropReason::ReferenceLost);
                let gap = (s.frame_num + max_frame_num - next) % max_frame_num;
                self.missing = self.missing.saturating_add(gap);
                return Verdict::Drop(
                    DropReason::ReferenceLost,
                    format!(
                        "frame_num jumped from {prev} to {} at byte {}: a reference picture was lost",
                        s.frame_num, au.offset
                    ),
                );
            }
        }
        if s.nal_ref_idc != 0 {
            self.prev_ref_frame_num = Some(if s.mmco5 { 0 } else { s.frame_num });
        }
        Verdict::Accept {
            resync_at_recovery_point: false,
        }
    }
}

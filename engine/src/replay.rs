//! [`Replay`]: a session's engine events rebuilt from what a subscriber
//! receives, so it can write the server's tree ([`crate::tree::TreeWriter`])
//! without asking for segment bytes.
//!
//! A subscriber gets every frame (Annex B with SPS/PPS in front of each
//! random access point, exact 90 kHz times, the number of its segment) and a
//! record per segment (its config id and composition shift among the rest),
//! but neither the codec configs nor the parts. Both are rebuilt here with
//! the engine's own code, not a copy of it: NAL units with
//! [`nal_spans`], configs with [`ParamSets::access_unit_config`] at
//! every random access point (as the assembler makes them), parts with the
//! [`Partitioner`] the segmenter itself runs, given the same part target.
//! The segment boundaries need no rebuilding: each frame names its segment.
//!
//! The frames of a segment are held until its record arrives (the record
//! names the config id and the composition shift the frames do not carry),
//! then released as the events the server's pipeline emitted, in its order:
//! `Config` (when it changed), the frames with a `Part` after each part's
//! last frame, then `Segment`.
//!
//! How exact that is:
//!
//! - A subscriber that received every frame from the session's start gets
//!   the server's parts exactly (the same frames through the same rule,
//!   numbered from 0), so a [`TreeWriter`](crate::tree::TreeWriter) fed the
//!   events writes the bytes the server serves, CMAF and MPEG-TS.
//! - A late joiner's parts are numbered from 0 at its first segment (the
//!   server's count the parts before it, which it never saw), and a tree
//!   writer's MPEG-TS continuity counters start at its first segment: its
//!   tree plays, but `mfhd` sequence numbers and TS counters differ from the
//!   server's. So after a gap (a segment skipped, see [`Skipped`]): the
//!   numbering and counters run on from the last segment written.
//! - With frames missing (a thinned subscription, a lagged one) the parts
//!   are those of the frames received.
//! - The part target must be the server's (`--part-duration`, clamped to
//!   the session's segment target as
//!   [`PipelineOptions::effective_part_target_ms`](crate::PipelineOptions::effective_part_target_ms)
//!   does): the subscription does not carry it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::annexb::nal_spans;
use crate::frame::{CodecConfig, Frame, SegmentRecord, TIMESCALE};
use crate::hevc::{looks_like_hevc_parameter_set, HevcParams};
use crate::params::ParamSets;
use crate::pipeline::{Event, SegmentEvent};
use crate::playlist::ManifestUpdate;
use crate::segment::{PartFrame, Partitioner};

/// Why a segment's events could not be rebuilt (nothing was emitted for it;
/// the next segment is unaffected).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    #[error("segment {segment}: none of its frames were received")]
    NoFrames { segment: u64 },
    #[error("segment {segment}: its frames from the keyframe on were not received")]
    NoKeyframe { segment: u64 },
    #[error("segment {segment}: no parameter sets (SPS/PPS) were received for its frames")]
    NoConfig { segment: u64 },
}

/// The frames of a segment whose record has not arrived yet.
struct Pending {
    /// The config in effect at its first received frame.
    config: Option<CodecConfig>,
    frames: Vec<Frame>,
}

/// Rebuilds a session's events from received frames and segment records;
/// see the module docs.
pub struct Replay {
    parts: Partitioner,
    params: ParamSets,
    /// H.265 parameter sets, once a frame showed the session is H.265.
    hevc: Option<HevcParams>,
    /// The config of the last random access point received (its id is the
    /// server's, known from the record of its segment).
    current: Option<CodecConfig>,
    /// The last config emitted.
    emitted: Option<Arc<CodecConfig>>,
    pending: BTreeMap<u64, Pending>,
}

impl Replay {
    /// `part_target_ms`: the server's part target for the session (0: a
    /// part is a whole segment).
    pub fn new(part_target_ms: u32) -> Self {
        Self {
            parts: Partitioner::new(u64::from(part_target_ms) * TIMESCALE / 1000, 0),
            params: ParamSets::new(),
            hevc: None,
            current: None,
            emitted: None,
            pending: BTreeMap::new(),
        }
    }

    /// Takes a received frame. Its `nals` and `config_id` are not needed
    /// (they are rebuilt: the NAL units from `data`, the config id from the
    /// segment's record); every other field is the server's.
    pub fn frame(&mut self, mut frame: Frame) {
        frame.nals = nal_spans(&frame.data);
        // New parameter sets take effect where decoding can start, as in
        // the pipeline.
        if self.hevc.is_none()
            && self.current.is_none()
            && frame
                .nals
                .iter()
                .any(|n| looks_like_hevc_parameter_set(n.bytes(&frame.data)))
        {
            self.hevc = Some(HevcParams::new());
        }
        if frame.random_access || self.current.is_none() {
            let cfg = match self.hevc.as_mut() {
                Some(h) => h.access_unit_config(&frame.data, &frame.nals),
                None => self.params.access_unit_config(&frame.data, &frame.nals, 0),
            };
            if let Some(cfg) = cfg {
                self.current = Some(cfg);
            }
        }
        let config = &self.current;
        self.pending
            .entry(frame.segment)
            .or_insert_with(|| Pending {
                config: config.clone(),
                frames: Vec::new(),
            })
            .frames
            .push(frame);
    }

    /// Takes a segment's record: appends the segment's events to `out`
    /// (`Config` if it changed, its frames and parts, `Segment` with an
    /// empty manifest update: the subscriber has the server's manifests) and
    /// returns how many frames it has. Frames of earlier segments still
    /// held (whose record never came) are dropped.
    pub fn segment(&mut self, record: SegmentRecord, out: &mut Vec<Event>) -> Result<u32, Skipped> {
        let segment = record.sequence;
        let mine = self.pending.remove(&segment);
        self.pending = self.pending.split_off(&segment);
        let Some(Pending { config, frames }) = mine.filter(|p| !p.frames.is_empty()) else {
            return Err(Skipped::NoFrames { segment });
        };
        if record.keyframe_aligned && !frames.first().is_some_and(|f| f.is_keyframe) {
            return Err(Skipped::NoKeyframe { segment });
        }
        let Some(mut config) = config else {
            return Err(Skipped::NoConfig { segment });
        };
        config.id = record.config_id;
        let same = self.emitted.as_deref().is_some_and(|e| {
            e.id == config.id && e.sps == config.sps && e.pps == config.pps && e.hevc == config.hevc
        });
        if !same {
            let config = Arc::new(config);
            self.emitted = Some(config.clone());
            out.push(Event::Config(config));
        }
        self.parts.set_composition_shift(record.composition_shift);
        let count = u32::try_from(frames.len()).unwrap_or(u32::MAX);
        for mut f in frames {
            f.config_id = record.config_id;
            let (_, closed) = self.parts.place(PartFrame {
                segment,
                index: f.index,
                dts: f.dts,
                bytes: f.data.len() as u64,
                random_access: f.random_access,
                config_id: record.config_id,
            });
            if let Some(p) = closed {
                out.push(Event::Part(Arc::new(p)));
            }
            out.push(Event::Frame(Arc::new(f)));
        }
        // The segment's last part ends where the segment does (the next
        // segment's first decode time), as the segmenter closes it.
        if let Some(p) = self
            .parts
            .close(record.start.saturating_add(record.duration))
        {
            out.push(Event::Part(Arc::new(p)));
        }
        out.push(Event::Segment(Arc::new(SegmentEvent {
            record,
            manifest: ManifestUpdate::default(),
        })));
        Ok(count)
    }

    /// Frames held for segments whose records have not arrived.
    pub fn held_frames(&self) -> usize {
        self.pending.values().map(|p| p.frames.len()).sum()
    }
}

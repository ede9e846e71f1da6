//! Publisher failover between origins: where a session continues when its
//! publisher comes to this origin while the cluster still holds the
//! session of another (whose origin died or lost its publisher).
//!
//! The new origin reads what the old owner published (its subject, up to
//! the last message the stream holds) into a [`Tail`], which says where the
//! new copy goes on ([`ResumePoint`]: the next segment, part, frame and
//! config numbers, the discontinuity sequence, the DASH period, the old
//! timeline) and how the old copy's last segment ends. That segment was
//! open when the old owner stopped: its parts are listed in every edge's
//! low-latency playlists already, so it is closed (not dropped, which would
//! take back listed parts) from exactly its parts, by the new owner, once,
//! and published as the first item of the new subject ([`Tail::orphan`]).
//! Edges read the old subject to the same message, then the new one, into
//! the same mirror session: one discontinuity, no number reused.
//!
//! Pure: items in, numbers out (the reading is in [`super::origin`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::engine::frame::{AudioConfig, AudioSpan};
use crate::engine::segment::program_date_time_ms;
use crate::engine::{CodecConfig, PartRecord, ResumePoint, SegmentRecord};
use crate::session::replica::{ReplicaItem, ReplicaSegment, SessionStart};

use super::wire::Received;

/// Parts of one open segment kept at most.
const MAX_OPEN_PARTS: usize = 4096;

/// What a new owner learns from the old owner's items, in order.
#[derive(Debug, Default)]
pub struct Tail {
    /// Parameter sets by id (the open segment's is needed to close it).
    configs: BTreeMap<u32, Arc<CodecConfig>>,
    /// The last segment closed.
    last_segment: Option<Arc<ReplicaSegment>>,
    /// Parts closed after it (the open segment's).
    open_parts: Vec<Arc<PartRecord>>,
    /// The first frame of the segment seen last: (segment, keyframe, SAP
    /// type when it is a random access point, else 0, capture time).
    open_first_frame: Option<(u64, bool, u8, Option<u64>)>,
    /// The number of the last part closed.
    last_part: Option<u64>,
    /// Index and end (90 kHz) of the last frame.
    last_frame: Option<(u64, u64)>,
    /// A publisher reconnect after the last segment closed.
    discontinuity: bool,
    /// The index of the last audio frame (real or silence).
    last_audio_frame: Option<u64>,
    /// The first audio frame of the segment seen last: (segment, capture
    /// time); an audio-only segment's wall-clock time comes from it.
    open_first_audio: Option<(u64, Option<u64>)>,
    /// The old copy is an audio-only session.
    audio_only: bool,
    /// The old copy's audio format, once read.
    audio: Option<Arc<AudioConfig>>,
    ended: bool,
    /// Items read.
    items: u64,
}

impl Tail {
    /// Takes one received body of the old owner's subject.
    pub fn receive(&mut self, received: Received) {
        match received {
            Received::Sync(c) => self.apply(ReplicaItem::Config(c)),
            Received::ClosingPart(p) => self.apply(ReplicaItem::Part(p)),
            // Sent before each segment of an audio-only session only.
            Received::AudioSync(c) => {
                self.audio_only = true;
                self.audio = Some(c);
            }
            Received::Gap(_) => {}
            Received::Item(item) => self.apply(item),
        }
    }

    fn apply(&mut self, item: ReplicaItem) {
        self.items += 1;
        match item {
            ReplicaItem::Config(c) => {
                self.configs.insert(c.id, c);
                while self.configs.len() > 16 {
                    self.configs.pop_first();
                }
            }
            ReplicaItem::Frame(f) => {
                if self.open_first_frame.is_none_or(|(s, ..)| s != f.segment) {
                    let sap = if f.random_access { f.sap_type } else { 0 };
                    let first = (f.segment, f.is_keyframe, sap, f.capture_time_ns);
                    self.open_first_frame = Some(first);
                }
                let end = f.dts.saturating_add(u64::from(f.duration));
                self.last_frame = Some((f.index, end));
            }
            ReplicaItem::Part(p) => {
                self.last_part = Some(p.number);
                // A segment is at most a few hundred parts (three targets of
                // the shortest parts); more is not a stream to close.
                if self.open_parts.len() >= MAX_OPEN_PARTS {
                    self.open_parts.clear();
                }
                self.open_parts.push(p);
            }
            ReplicaItem::Segment(s) => {
                let sequence = s.record.sequence;
                self.open_parts.retain(|p| p.segment > sequence);
                self.discontinuity = false;
                self.last_segment = Some(s);
            }
            ReplicaItem::Discontinuity => self.discontinuity = true,
            ReplicaItem::AudioFrame(f) => {
                if self.open_first_audio.is_none_or(|(s, _)| s != f.segment) {
                    self.open_first_audio = Some((f.segment, f.capture_time_ns));
                }
                self.last_audio_frame = Some(f.index);
            }
            ReplicaItem::AudioConfig(c) => self.audio = Some(c),
            ReplicaItem::End => self.ended = true,
            // The session continues here, after a discontinuity, whether
            // or not the old copy's publisher was away before.
            ReplicaItem::Start(_)
            | ReplicaItem::TsContinuity { .. }
            | ReplicaItem::PublisherAway => {}
        }
    }

    /// Items read so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// The old copy's audio sampling rate (Hz), when it had audio.
    pub fn audio_rate(&self) -> Option<u32> {
        self.audio.as_ref().map(|c| c.sample_rate)
    }

    /// The old owner's open segment, closed from exactly the parts it
    /// published (`None`: it had none). Its record is what the old owner's
    /// segmenter would have made had the segment ended after its last
    /// part.
    pub fn orphan(&self, start: &SessionStart) -> Option<ReplicaSegment> {
        let first = self.open_parts.first()?;
        let last = self.open_parts.last()?;
        // An audio-only segment has no video config.
        let config = match self.audio_only {
            true => None,
            false => Some(self.configs.get(&first.config_id)?.clone()),
        };
        let prev = self.last_segment.as_ref().map(|s| &s.record);
        let first_audio_capture = self
            .open_first_audio
            .filter(|(s, _)| self.audio_only && *s == first.segment)
            .and_then(|(_, capture)| capture);
        let (keyframe, sap_type, capture) = match self.open_first_frame {
            Some((s, key, sap, capture)) if s == first.segment => (key, sap, capture),
            _ => (
                first.independent,
                u8::from(first.independent),
                first_audio_capture,
            ),
        };
        let config_changed = prev.is_some_and(|p| p.config_id != first.config_id);
        let discontinuity = (self.discontinuity || config_changed) && first.segment > 0;
        let prev_sequence = prev.map_or(0, |p| p.discontinuity_sequence);
        let record = SegmentRecord {
            sequence: first.segment,
            start: first.start,
            duration: last
                .start
                .saturating_add(last.duration)
                .saturating_sub(first.start)
                .max(1),
            frame_count: self
                .open_parts
                .iter()
                .fold(0u32, |n, p| n.saturating_add(p.frame_count)),
            first_frame_index: first.first_frame_index,
            keyframe_aligned: keyframe,
            sap_type,
            discontinuity,
            discontinuity_sequence: prev_sequence.saturating_add(u64::from(discontinuity)),
            program_date_time_ms: program_date_time_ms(
                start.availability_start_ms,
                first.start,
                capture,
            ),
            byte_size: self
                .open_parts
                .iter()
                .fold(0u64, |n, p| n.saturating_add(p.byte_size)),
            config_id: first.config_id,
            composition_shift: first.composition_shift,
            audio: audio_span(&self.open_parts),
        };
        // Where it goes in the manifests: the last segment's DASH period,
        // or the next one when it starts one (a discontinuity or new
        // parameter sets; see `Manifests::push_av`).
        let place = self.last_segment.as_ref().and_then(|s| s.place).map(|p| {
            let independent = keyframe && (1..=3).contains(&sap_type);
            crate::engine::playlist::SegmentPlace {
                period_id: if discontinuity || config_changed {
                    p.period_id.saturating_add(1)
                } else {
                    p.period_id
                },
                period_start: if discontinuity || config_changed {
                    record.start
                } else {
                    p.period_start
                },
                all_independent: p.all_independent && independent,
            }
        });
        Some(ReplicaSegment {
            record,
            config,
            place,
        })
    }

    /// Where the new copy goes on, with the old copy's open segment closed
    /// ([`orphan`](Self::orphan)). `None` when there is nothing to continue
    /// (no segment listed yet, the session ended). An audio-only session
    /// goes on the same way (its first audio frame where a video frame
    /// would go).
    pub fn resume(&self, start: &SessionStart) -> Option<(ResumePoint, Option<ReplicaSegment>)> {
        if self.ended {
            return None;
        }
        let orphan = self.orphan(start);
        let last = orphan
            .as_ref()
            .or(self.last_segment.as_deref())
            .filter(|s| s.place.is_some())?;
        let place = last.place?;
        let record = &last.record;
        let next_part = self.last_part?.saturating_add(1);
        let segment_end = record.start.saturating_add(record.duration);
        // The old copy's capture-clock mapping: where its last segment sits
        // on the wall clock, less its program date time.
        let place_ms = start
            .availability_start_ms
            .saturating_add(record.start.saturating_mul(1000) / crate::engine::TIMESCALE);
        let capture_lag_ms = i64::try_from(place_ms)
            .ok()
            .zip(i64::try_from(record.program_date_time_ms).ok())
            .map(|(place, pdt)| place - pdt);
        let (frame_index, frame_end) = self.last_frame.unwrap_or((
            record
                .first_frame_index
                .saturating_add(u64::from(record.frame_count).saturating_sub(1)),
            segment_end,
        ));
        Some((
            ResumePoint {
                availability_start_ms: start.availability_start_ms,
                next_segment: record.sequence.saturating_add(1),
                discontinuity_sequence: record.discontinuity_sequence,
                next_part,
                next_frame: frame_index.saturating_add(1),
                next_audio_frame: self.last_audio_frame.map_or(0, |n| n.saturating_add(1)),
                min_start: segment_end.max(frame_end),
                next_period_id: place.period_id.saturating_add(1),
                all_independent: place.all_independent,
                audio: self.audio.clone(),
                audio_only: self.audio_only,
                capture_lag_ms,
                next_config_id: self
                    .configs
                    .keys()
                    .next_back()
                    .map_or(0, |id| id.saturating_add(1)),
            },
            orphan,
        ))
    }
}

/// The audio of a run of consecutive parts: their spans joined (the
/// spans of consecutive parts follow each other frame for frame); `None`
/// when none of them has audio.
fn audio_span(parts: &[Arc<PartRecord>]) -> Option<AudioSpan> {
    let spans: Vec<&AudioSpan> = parts.iter().filter_map(|p| p.audio.as_ref()).collect();
    let first = spans.first()?;
    let last = spans.last()?;
    Some(AudioSpan {
        first_frame_index: first.first_frame_index,
        frame_count: spans
            .iter()
            .fold(0u32, |n, a| n.saturating_add(a.frame_count)),
        start: first.start,
        duration: last.end().saturating_sub(first.start),
        byte_size: spans
            .iter()
            .fold(0u64, |n, a| n.saturating_add(a.byte_size)),
        config_id: first.config_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::pipeline::{Event, Formats, PipelineOptions, SessionPipeline};

    /// What an origin's session hands its replicator for `events` of `p`
    /// (each segment with its place in the manifests), its start, and the
    /// segment records.
    fn replica_items(
        p: &SessionPipeline,
        events: Vec<Event>,
    ) -> (Vec<ReplicaItem>, SessionStart, Vec<SegmentRecord>) {
        let m = p.manifests().unwrap();
        let start = SessionStart::of(m, Formats::default(), (30, 1));
        let (mut out, mut records) = (Vec::new(), Vec::new());
        for e in events {
            out.push(match e {
                Event::Config(c) => ReplicaItem::Config(c),
                Event::Frame(f) => ReplicaItem::Frame(f),
                Event::AudioConfig(c) => ReplicaItem::AudioConfig(c),
                Event::AudioFrame(f) => ReplicaItem::AudioFrame(f),
                Event::Part(x) => ReplicaItem::Part(x),
                Event::Segment(s) => {
                    records.push(s.record.clone());
                    ReplicaItem::Segment(Arc::new(ReplicaSegment {
                        record: s.record.clone(),
                        config: p.config().cloned(),
                        place: m.place_of(s.record.sequence),
                    }))
                }
                _ => continue,
            });
        }
        (out, start, records)
    }

    /// The items an origin's session hands its replicator for
    /// `baseline_30` three times (30 fps, 1 s GOP; 2 s segments, 500 ms
    /// parts), each
    /// segment with its place in the manifests.
    fn items() -> (Vec<ReplicaItem>, SessionStart, Vec<SegmentRecord>) {
        let data = std::fs::read(format!(
            "{}/../testdata/baseline_30.h264",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap_or_else(|e| panic!("testdata: {e}"));
        let opts = PipelineOptions {
            window: 60,
            ..Default::default()
        };
        let mut p = SessionPipeline::new(opts);
        let mut events = Vec::new();
        let now = 1_700_000_000_000_000_000;
        // Looped: a few segments.
        let data = bytes::Bytes::from(data);
        for _ in 0..3 {
            p.push(data.clone(), None, now, true, &mut events);
        }
        p.finish(now, &mut events);
        replica_items(&p, events)
    }

    /// The items of `av_48k_stereo` (video and ADTS audio, with capture
    /// times, interleaved as captured), twice.
    fn items_av() -> (Vec<ReplicaItem>, SessionStart, Vec<SegmentRecord>) {
        use crate::engine::audio::adts::AdtsHeader;
        use crate::engine::frame::TIMESCALE;
        use crate::engine::pipeline::{frames_of, AudioInput};
        let read = |name: &str| {
            bytes::Bytes::from(
                std::fs::read(format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR")))
                    .unwrap_or_else(|e| panic!("testdata: {e}")),
            )
        };
        let video = frames_of(read("av_48k_stereo.h264"), PipelineOptions::default());
        let aac = read("av_48k_stereo.aac");
        let mut msgs: Vec<(u64, bool, bytes::Bytes)> = Vec::new();
        for lap in 0..2u64 {
            let off = lap * 4_000_000_000;
            for f in &video {
                msgs.push((
                    off + f.dts * 1_000_000_000 / TIMESCALE,
                    true,
                    f.data.clone(),
                ));
            }
            let (mut pos, mut n) = (0, 0u64);
            while pos + 7 <= aac.len() {
                let h = AdtsHeader::parse(&aac[pos..]).unwrap().unwrap();
                let t = off + n * 1024 * 1_000_000_000 / 48_000;
                msgs.push((t, false, aac.slice(pos..pos + h.frame_len)));
                pos += h.frame_len;
                n += 1;
            }
        }
        msgs.sort_by_key(|m| m.0);
        let opts = PipelineOptions {
            window: 60,
            ..Default::default()
        };
        let mut p = SessionPipeline::new(opts);
        let mut events = Vec::new();
        let t0 = 1_700_000_000_000_000_000u64;
        for (t, is_video, data) in msgs {
            if is_video {
                p.push(data, Some(t0 + t), t0 + t, true, &mut events);
            } else {
                p.push_audio(data, AudioInput::Adts, Some(t0 + t), t0 + t, &mut events);
            }
        }
        p.finish(t0 + 8_000_000_000, &mut events);
        replica_items(&p, events)
    }

    /// With audio: the open segment closes with the audio of its parts,
    /// as the origin closed it, and the audio frames are numbered on.
    #[test]
    fn an_open_segment_with_audio_closes_with_its_audio() {
        let (items, start, records) = items_av();
        assert!(records.len() >= 3, "{} segments", records.len());
        assert!(records.iter().all(|r| r.audio.is_some()));
        let at = items
            .iter()
            .position(|i| matches!(i, ReplicaItem::Segment(s) if s.record.sequence == 2))
            .unwrap();
        let tail = tail_of(&items[..at]);
        let (point, orphan) = tail.resume(&start).expect("a session with audio goes on");
        assert_eq!(orphan.map(|o| o.record), Some(records[2].clone()));
        let last_audio = last_audio_frame(&items[..at]);
        assert_eq!(point.next_audio_frame, last_audio + 1);
        assert_eq!(point.next_segment, 3);
        // The track is kept: the new copy knows its format.
        let format = items.iter().find_map(|i| match i {
            ReplicaItem::AudioConfig(c) => Some(c.clone()),
            _ => None,
        });
        assert!(format.is_some());
        assert_eq!(point.audio, format);
        assert!(!point.audio_only);
    }

    /// The index of the last audio frame among `items`.
    fn last_audio_frame(items: &[ReplicaItem]) -> u64 {
        items
            .iter()
            .rev()
            .find_map(|i| match i {
                ReplicaItem::AudioFrame(f) => Some(f.index),
                _ => None,
            })
            .expect("an audio frame")
    }

    fn tail_of(items: &[ReplicaItem]) -> Tail {
        let mut t = Tail::default();
        for i in items {
            t.receive(Received::Item(i.clone()));
        }
        t
    }

    /// The old owner died after the last part of segment 2, before that
    /// segment's record: the new owner closes it exactly as the old owner
    /// did, and goes on with segment 3, the next part and frame, the next
    /// DASH period, after the old end.
    #[test]
    fn an_open_segment_with_all_its_parts_closes_as_the_origin_closed_it() {
        let (items, start, records) = items();
        assert!(records.len() >= 4, "{} segments", records.len());
        let at = items
            .iter()
            .position(|i| matches!(i, ReplicaItem::Segment(s) if s.record.sequence == 2))
            .unwrap();
        let tail = tail_of(&items[..at]);
        let orphan = tail.orphan(&start).expect("segment 2 is open");
        assert_eq!(orphan.record, records[2]);
        let ReplicaItem::Segment(real) = &items[at] else {
            unreachable!()
        };
        assert_eq!(orphan.place, real.place);
        let (point, closed) = tail.resume(&start).unwrap();
        assert_eq!(closed.map(|s| s.record), Some(records[2].clone()));
        let last_part = items[..at]
            .iter()
            .rev()
            .find_map(|i| match i {
                ReplicaItem::Part(p) => Some(p.number),
                _ => None,
            })
            .unwrap();
        let end = records[2].start + records[2].duration;
        assert_eq!(
            point,
            ResumePoint {
                availability_start_ms: start.availability_start_ms,
                next_segment: 3,
                discontinuity_sequence: 0,
                next_part: last_part + 1,
                next_frame: records[2].first_frame_index + u64::from(records[2].frame_count),
                next_audio_frame: 0,
                min_start: end,
                next_period_id: 1,
                all_independent: true,
                next_config_id: 1,
                audio: None,
                audio_only: false,
                capture_lag_ms: point.capture_lag_ms,
            }
        );
        // The test stream's segments are dated by the timeline: no lag.
        assert_eq!(point.capture_lag_ms, Some(0));
    }

    /// Died mid-segment: the segment closes at its last part (the frames
    /// after it were never listed); died between segments: nothing to
    /// close, the next segment number is the one after the last record.
    #[test]
    fn a_segment_cut_short_closes_at_its_last_part() {
        let (items, start, records) = items();
        // Segment 1's first two parts, and a frame of its third.
        let mut parts = 0;
        let at = items
            .iter()
            .position(|i| {
                if let ReplicaItem::Part(p) = i {
                    if p.segment == 1 {
                        parts += 1;
                    }
                }
                parts == 2
            })
            .unwrap();
        let tail = tail_of(&items[..=at + 1]);
        let orphan = tail.orphan(&start).unwrap().record;
        assert_eq!(orphan.sequence, 1);
        assert_eq!(orphan.start, records[1].start);
        assert!(orphan.duration < records[1].duration);
        assert_eq!(orphan.frame_count, 30, "two 500 ms parts");
        assert!(!orphan.discontinuity);
        let (point, _) = tail.resume(&start).unwrap();
        assert_eq!(point.next_segment, 2);
        // The frame after the last part is not listed, but its number is
        // not given again.
        assert_eq!(point.next_frame, orphan.first_frame_index + 31);

        let at = items
            .iter()
            .position(|i| matches!(i, ReplicaItem::Segment(s) if s.record.sequence == 1))
            .unwrap();
        let tail = tail_of(&items[..=at]);
        assert!(tail.orphan(&start).is_none());
        assert_eq!(tail.resume(&start).unwrap().0.next_segment, 2);
    }

    /// A reconnect on the old owner after its last segment: the segment it
    /// left open is in the next discontinuity sequence and DASH period.
    /// Nothing to continue: no segment yet, an ended session.
    #[test]
    fn discontinuities_and_what_is_not_continued() {
        let (items, start, _) = items();
        let at = items
            .iter()
            .position(|i| matches!(i, ReplicaItem::Segment(s) if s.record.sequence == 1))
            .unwrap();
        let mut tail = tail_of(&items[..=at]);
        tail.receive(Received::Item(ReplicaItem::Discontinuity));
        for i in &items[at + 1..] {
            if matches!(i, ReplicaItem::Segment(_)) {
                break;
            }
            tail.receive(Received::Item(i.clone()));
        }
        let orphan = tail.orphan(&start).unwrap();
        assert!(orphan.record.discontinuity);
        assert_eq!(orphan.record.discontinuity_sequence, 1);
        assert_eq!(orphan.place.map(|p| p.period_id), Some(1));
        let (point, _) = tail.resume(&start).unwrap();
        assert_eq!((point.discontinuity_sequence, point.next_period_id), (1, 2));

        // Before the first segment closed: a new session.
        let first = items
            .iter()
            .position(|i| matches!(i, ReplicaItem::Segment(_)))
            .unwrap();
        assert!(tail_of(&items[..first]).resume(&start).is_none());
        let mut ended = tail_of(&items);
        ended.receive(Received::Item(ReplicaItem::End));
        assert!(ended.resume(&start).is_none());
    }

    /// The items of an audio-only session (`av_44k_mono.aac` twice, with
    /// capture times; 2 s segments, 500 ms parts), as the origin hands them
    /// to its replicator, its start and its segment records.
    fn items_audio_only() -> (Vec<ReplicaItem>, SessionStart, Vec<SegmentRecord>) {
        use crate::engine::audio::adts::AdtsHeader;
        use crate::engine::pipeline::AudioInput;
        let aac = bytes::Bytes::from(
            std::fs::read(format!(
                "{}/../testdata/av_44k_mono.aac",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap_or_else(|e| panic!("testdata: {e}")),
        );
        let mut p = SessionPipeline::new(PipelineOptions {
            window: 60,
            part_target_ms: 500,
            ..Default::default()
        });
        let mut events = Vec::new();
        let t0 = 1_700_000_000_000_000_000u64;
        let mut n = 0u64;
        for _ in 0..2 {
            let mut pos = 0;
            while pos + 7 <= aac.len() {
                let h = AdtsHeader::parse(&aac[pos..]).unwrap().unwrap();
                let t = t0 + n * 1024 * 1_000_000_000 / 44_100;
                let frame = aac.slice(pos..pos + h.frame_len);
                p.push_audio(frame, AudioInput::Adts, Some(t), t, &mut events);
                pos += h.frame_len;
                n += 1;
            }
        }
        p.finish(t0 + 9_000_000_000, &mut events);
        let (items, mut start, records) = replica_items(&p, events);
        start.audio_only = true;
        (items, start, records)
    }

    /// An audio-only session goes on too: its open segment closes as the
    /// origin closed it (no video config; its wall-clock time from its
    /// first audio frame's capture time), and the next segment, part and
    /// audio frame numbers follow.
    #[test]
    fn an_open_audio_only_segment_closes_as_the_origin_closed_it() {
        let (items, start, records) = items_audio_only();
        assert!(records.len() >= 3, "{} segments", records.len());
        assert!(records.iter().all(|r| r.is_audio_only()));
        let at = items
            .iter()
            .position(|i| matches!(i, ReplicaItem::Segment(s) if s.record.sequence == 1))
            .unwrap();
        let mut tail = Tail::default();
        tail.receive(Received::AudioSync(Arc::new(Default::default())));
        for i in &items[..at] {
            tail.receive(Received::Item(i.clone()));
        }
        let (point, orphan) = tail.resume(&start).expect("an audio-only session goes on");
        let orphan = orphan.expect("segment 1 is open");
        assert_eq!(orphan.record, records[1]);
        assert!(orphan.config.is_none());
        let ReplicaItem::Segment(real) = &items[at] else {
            unreachable!()
        };
        assert_eq!(orphan.place, real.place);
        let last_audio = last_audio_frame(&items[..at]);
        assert_eq!(point.next_audio_frame, last_audio + 1);
        assert_eq!(point.next_segment, 2);
        assert_eq!(point.min_start, records[1].start + records[1].duration);
        assert_eq!(point.availability_start_ms, start.availability_start_ms);
    }
}

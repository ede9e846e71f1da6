//! The per-session ring buffer: the frames of the live window and of the
//! segment being built, so a late joiner can start at the newest random
//! access point at once and segments can be muxed on demand.
//!
//! Eviction is in whole segments and in step with the playlists: the ring
//! keeps exactly the segments the manifests list (the engine trims that
//! window to its byte budget, and cuts the open segment at a third of it),
//! so a listed segment always has every one of its bytes here. With a DVR
//! window (`--dvr`) the playlists list more than memory holds: the ring
//! then keeps the newest `window` segments within the byte budget
//! ([`Memory`]), and the older listed ones are served from the recording.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::engine::pipeline::SegmentEvent;
use crate::engine::{AudioFrame, Frame};

#[derive(Default)]
pub struct Ring {
    frames: VecDeque<Arc<Frame>>,
    /// The audio frames of the same segments, in index order.
    audio: VecDeque<Arc<AudioFrame>>,
    segments: VecDeque<Arc<SegmentEvent>>,
    bytes: usize,
    /// Sum of the held segments' `byte_size`.
    segment_bytes: u64,
}

/// What the ring keeps when the playlists list more than memory holds (a
/// DVR window): the newest `segments` closed segments, within `bytes`
/// (at least one).
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub segments: usize,
    pub bytes: u64,
}

impl Ring {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn push_frame(&mut self, f: Arc<Frame>) {
        self.bytes += f.data.len();
        self.frames.push_back(f);
    }

    pub fn push_audio(&mut self, f: Arc<AudioFrame>) {
        self.bytes += f.data.len();
        self.audio.push_back(f);
    }

    /// `count` audio frames from audio frame `first` on, if all are held.
    pub fn audio_from(&self, first: u64, count: u32) -> Option<Vec<Arc<AudioFrame>>> {
        if count == 0 {
            return Some(Vec::new());
        }
        let oldest = self.audio.front()?.index;
        let start = usize::try_from(first.checked_sub(oldest)?).ok()?;
        let end = start.checked_add(count as usize)?;
        let out: Vec<Arc<AudioFrame>> = self
            .audio
            .range(start..end.min(self.audio.len()))
            .cloned()
            .collect();
        (out.len() == count as usize && out.first().map(|f| f.index) == Some(first)).then_some(out)
    }

    /// Index of the oldest audio frame held.
    pub fn first_audio_index(&self) -> Option<u64> {
        self.audio.front().map(|f| f.index)
    }

    /// Adds a closed segment; segments before the first one the manifests
    /// now list leave, with their frames, and with `memory` (a DVR window)
    /// those beyond it too.
    pub fn push_segment(&mut self, s: Arc<SegmentEvent>, memory: Option<Memory>) {
        let first_listed = s.manifest.media_sequence;
        self.segment_bytes += s.record.byte_size;
        self.segments.push_back(s);
        while self
            .segments
            .front()
            .is_some_and(|f| f.record.sequence < first_listed)
        {
            self.pop_segment();
        }
        if let Some(m) = memory {
            while self.segments.len() > m.segments.max(1)
                || (self.segment_bytes > m.bytes && self.segments.len() > 1)
            {
                self.pop_segment();
            }
        }
        let keep = self.segments.front().map(|first| {
            let r = &first.record;
            (
                (r.frame_count > 0).then_some(r.first_frame_index),
                r.audio.as_ref().map(|a| a.first_frame_index),
            )
        });
        if let Some((video, audio)) = keep {
            if let Some(keep_from) = video {
                while self.frames.front().is_some_and(|f| f.index < keep_from) {
                    self.pop_front();
                }
            }
            if let Some(keep_from) = audio {
                while self.audio.front().is_some_and(|f| f.index < keep_from) {
                    if let Some(f) = self.audio.pop_front() {
                        self.bytes -= f.data.len();
                    }
                }
            }
        }
    }

    fn pop_segment(&mut self) {
        if let Some(s) = self.segments.pop_front() {
            self.segment_bytes = self.segment_bytes.saturating_sub(s.record.byte_size);
        }
    }

    /// Sequence of the oldest segment held.
    pub fn first_segment(&self) -> Option<u64> {
        self.segments.front().map(|s| s.record.sequence)
    }

    fn pop_front(&mut self) {
        if let Some(f) = self.frames.pop_front() {
            self.bytes -= f.data.len();
        }
    }

    /// `count` frames from frame `first` on, if all are held.
    pub fn frames_from(&self, first: u64, count: u32) -> Option<Vec<Arc<Frame>>> {
        if count == 0 {
            return Some(Vec::new());
        }
        let oldest = self.frames.front()?.index;
        let start = usize::try_from(first.checked_sub(oldest)?).ok()?;
        let end = start.checked_add(count as usize)?;
        if end > self.frames.len() {
            return None;
        }
        let out: Vec<Arc<Frame>> = self.frames.range(start..end).cloned().collect();
        // Frame indexes are consecutive in the ring.
        (out.first().map(|f| f.index) == Some(first)).then_some(out)
    }

    /// Index of the oldest frame held.
    pub fn first_frame_index(&self) -> Option<u64> {
        self.frames.front().map(|f| f.index)
    }

    /// The frames of one segment, if all of them are still held.
    pub fn segment_frames(&self, sequence: u64) -> Option<Vec<Arc<Frame>>> {
        let seg = self
            .segments
            .iter()
            .find(|s| s.record.sequence == sequence)?;
        let first = seg.record.first_frame_index;
        let n = seg.record.frame_count as u64;
        let start = self.frames.iter().position(|f| f.index == first)?;
        let frames: Vec<_> = self
            .frames
            .range(start..)
            .take(n as usize)
            .cloned()
            .collect();
        (frames.len() as u64 == n).then_some(frames)
    }

    pub fn segments(&self) -> impl Iterator<Item = &Arc<SegmentEvent>> {
        self.segments.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::playlist::ManifestUpdate;
    use crate::engine::SegmentRecord;
    use bytes::Bytes;

    fn frame(index: u64, key: bool, size: usize) -> Arc<Frame> {
        Arc::new(Frame {
            index,
            data: Bytes::from(vec![0u8; size]),
            nals: vec![],
            pts: index * 3000,
            dts: index * 3000,
            duration: 3000,
            is_keyframe: key,
            random_access: key,
            sap_type: if key { 1 } else { 0 },
            is_leading: false,
            is_reference: true,
            segment: index / 10,
            config_id: 0,
            capture_time_ns: None,
            ingest_time_ns: 0,
        })
    }

    fn segment(seq: u64, first_listed: u64) -> Arc<SegmentEvent> {
        Arc::new(SegmentEvent {
            record: SegmentRecord {
                sequence: seq,
                start: seq * 30000,
                duration: 30000,
                frame_count: 10,
                first_frame_index: seq * 10,
                keyframe_aligned: true,
                sap_type: 1,
                discontinuity: false,
                discontinuity_sequence: 0,
                program_date_time_ms: 0,
                byte_size: 1000,
                config_id: 0,
                composition_shift: 0,
                audio: None,
            },
            manifest: ManifestUpdate {
                media_sequence: first_listed,
                ..Default::default()
            },
        })
    }

    #[test]
    fn keeps_the_listed_segments() {
        let mut r = Ring::new();
        for i in 0..55 {
            r.push_frame(frame(i, i % 10 == 0, 100));
            if i % 10 == 9 {
                // The manifests list two segments.
                r.push_segment(segment(i / 10, (i / 10).saturating_sub(1)), None);
            }
        }
        // Segments 3 and 4 listed, plus the open one (frames 50..54).
        assert_eq!(r.len(), 25);
        assert_eq!(r.bytes(), 2500);
        assert_eq!(r.first_frame_index(), Some(30));
        assert_eq!(r.segment_frames(3).unwrap().len(), 10);
        assert!(r.segment_frames(2).is_none());
    }

    /// A DVR window: the manifests list everything, the ring keeps the
    /// newest `segments` within `bytes`.
    #[test]
    fn a_dvr_window_keeps_memory_to_its_own_window() {
        let mut r = Ring::new();
        let memory = Memory {
            segments: 3,
            bytes: 10_000,
        };
        for i in 0..55 {
            r.push_frame(frame(i, i % 10 == 0, 100));
            if i % 10 == 9 {
                r.push_segment(segment(i / 10, 0), Some(memory));
            }
        }
        assert_eq!(r.first_segment(), Some(2));
        assert_eq!(r.first_frame_index(), Some(20));
        // Two segments' bytes at most: the newest two stay.
        let tight = Memory {
            segments: 3,
            bytes: 2_000,
        };
        for i in 55..60 {
            r.push_frame(frame(i, false, 100));
        }
        r.push_segment(segment(5, 0), Some(tight));
        assert_eq!(r.first_segment(), Some(4));
        assert_eq!(r.first_frame_index(), Some(40));
    }
}

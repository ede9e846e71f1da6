//! The per-session ring buffer: the frames of the live window, bounded by a
//! number of segments and by bytes, so a late joiner can start at the newest
//! keyframe at once and segments can be muxed on demand.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::engine::pipeline::SegmentEvent;
use crate::engine::Frame;

pub struct Ring {
    frames: VecDeque<Arc<Frame>>,
    segments: VecDeque<Arc<SegmentEvent>>,
    bytes: usize,
    window: usize,
    max_bytes: usize,
}

impl Ring {
    pub fn new(window: usize, max_bytes: usize) -> Self {
        Self {
            frames: VecDeque::new(),
            segments: VecDeque::new(),
            bytes: 0,
            window: window.max(1),
            max_bytes: max_bytes.max(1),
        }
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
        // The byte bound wins over the window: drop from the oldest.
        while self.bytes > self.max_bytes && self.frames.len() > 1 {
            self.pop_front();
        }
    }

    pub fn push_segment(&mut self, s: Arc<SegmentEvent>) {
        self.segments.push_back(s);
        while self.segments.len() > self.window {
            self.segments.pop_front();
        }
        // Frames older than the window's first segment are no longer needed.
        if let Some(first) = self.segments.front() {
            let keep_from = first.record.first_frame_index;
            while self.frames.front().is_some_and(|f| f.index < keep_from) {
                self.pop_front();
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some(f) = self.frames.pop_front() {
            self.bytes -= f.data.len();
        }
    }

    /// Frames from the newest keyframe on (empty if none is held).
    pub fn from_newest_keyframe(&self) -> Vec<Arc<Frame>> {
        match self.frames.iter().rposition(|f| f.is_keyframe) {
            Some(i) => self.frames.range(i..).cloned().collect(),
            None => Vec::new(),
        }
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
            is_reference: true,
            segment: index / 10,
            config_id: 0,
            capture_time_ns: None,
            ingest_time_ns: 0,
        })
    }

    fn segment(seq: u64) -> Arc<SegmentEvent> {
        Arc::new(SegmentEvent {
            record: SegmentRecord {
                sequence: seq,
                start: seq * 30000,
                duration: 30000,
                frame_count: 10,
                first_frame_index: seq * 10,
                keyframe_aligned: true,
                discontinuity: false,
                discontinuity_sequence: 0,
                program_date_time_ms: 0,
                byte_size: 1000,
                config_id: 0,
                composition_shift: 0,
            },
            manifest: ManifestUpdate::default(),
        })
    }

    #[test]
    fn keeps_the_window_and_starts_at_the_newest_keyframe() {
        let mut r = Ring::new(2, 1 << 20);
        for i in 0..55 {
            r.push_frame(frame(i, i % 10 == 0, 100));
            if i % 10 == 9 {
                r.push_segment(segment(i / 10));
            }
        }
        // Segments 3 and 4 in the window, plus the open one (frames 50..54).
        assert_eq!(r.len(), 25);
        assert_eq!(r.bytes(), 2500);
        let start = r.from_newest_keyframe();
        assert_eq!(start[0].index, 50);
        assert_eq!(start.len(), 5);
        assert_eq!(r.segment_frames(3).unwrap().len(), 10);
        assert!(r.segment_frames(1).is_none());
    }

    #[test]
    fn bytes_bound_wins() {
        let mut r = Ring::new(100, 1000);
        for i in 0..100 {
            r.push_frame(frame(i, i % 10 == 0, 300));
            assert!(r.bytes() <= 1000);
        }
        assert_eq!(r.len(), 3);
    }
}

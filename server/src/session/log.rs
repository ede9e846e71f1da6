//! The session's item log: every frame and event, in order, each at a
//! position (0, 1, 2, …). A subscriber is a cursor into it plus a wake-up,
//! not a queue of copies: it reads at its own pace and receives every item
//! while its position is still in the log. Only when eviction passes it is
//! it moved to the newest random access point (and told, `Lagged`).
//!
//! The log holds no media of its own: frames are the ring's `Arc`s, and
//! eviction follows the ring (whole segments, in step with the playlists),
//! so memory does not grow with the number of subscribers.

use std::collections::VecDeque;

use super::SessionItem;

/// Items kept at the end of the log whatever the ring holds, so events
/// (drops before any frame, a session's end) reach subscribers that are
/// only a little behind. Small: frames in it that the ring let go of are
/// memory no budget counts (`--memory-limit` counts the ring), and each
/// pins the received gRPC buffer it is a slice of. (It was 1,024 items:
/// about 33 s of a 30 fps stream held past the window, 14 % of the
/// server's RSS at 100 sessions; BENCH.md, issue 14.)
const MIN_TAIL: usize = 64;
/// Hard bound on items held (events of a stream that never makes frames).
const MAX_ITEMS: usize = 1 << 20;
/// Events of evicted items kept for readers that take no frames (about
/// 100 s of a stream's parts and segments).
const MAX_PAST_EVENTS: usize = 256;

#[derive(Default)]
pub struct ItemLog {
    items: VecDeque<SessionItem>,
    /// Position of `items[0]`.
    first: u64,
    /// Position after the newest item that is not a frame (0: none yet).
    events_end: u64,
    /// The events among evicted items, with their positions, oldest first
    /// (at most [`MAX_PAST_EVENTS`]): eviction follows the ring's frames, and
    /// a reader that takes no frames (a publisher's own response stream,
    /// reading in bursts at each event) reads on here instead of being
    /// passed and losing events.
    past_events: VecDeque<(u64, SessionItem)>,
    /// Every event at or after this position is in `past_events` or `items`.
    past_events_from: u64,
}

/// What a cursor read.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Items were appended to the output (possibly none: caught up).
    Items,
    /// Eviction passed the cursor: `skipped` items are gone and the cursor
    /// now stands at the newest random access point.
    Lagged { skipped: u64 },
}

impl ItemLog {
    /// Position after the last item.
    pub fn end(&self) -> u64 {
        self.first + self.items.len() as u64
    }

    /// Position after the newest item that is not a video or audio frame
    /// (an event): what wakes a subscriber that takes no frames.
    pub fn events_end(&self) -> u64 {
        self.events_end
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn push(&mut self, item: SessionItem) {
        let event = !matches!(item, SessionItem::Frame(_) | SessionItem::AudioFrame(_));
        self.items.push_back(item);
        if event {
            self.events_end = self.end();
        }
        if self.items.len() > MAX_ITEMS {
            self.pop_front(1);
        }
    }

    /// Drops the `n` oldest items, keeping their events in `past_events`.
    fn pop_front(&mut self, n: usize) {
        for item in self.items.drain(..n.min(self.items.len())) {
            let pos = self.first;
            self.first += 1;
            if !matches!(item, SessionItem::Frame(_) | SessionItem::AudioFrame(_)) {
                self.past_events.push_back((pos, item));
            }
        }
        while self.past_events.len() > MAX_PAST_EVENTS {
            if let Some((pos, _)) = self.past_events.pop_front() {
                self.past_events_from = pos + 1;
            }
        }
    }

    /// Drops items before the frame `keep_from` (the first frame the ring
    /// still holds), keeping at least `MIN_TAIL` items.
    pub fn evict_before_frame(&mut self, keep_from: u64) {
        self.evict_before(Some(keep_from), None);
    }

    /// Drops items before the first video frame the ring still holds
    /// (`video`) or, in a session without video, before its first audio
    /// frame (`audio`), keeping at least `MIN_TAIL` items. The events just
    /// before that frame stay (its parameter sets, the segment that closed
    /// before it): a reader standing at them has missed no frame the ring
    /// holds, and is not passed.
    pub fn evict_before(&mut self, video: Option<u64>, audio: Option<u64>) {
        let first_kept = self
            .items
            .iter()
            .position(|i| match (i, video, audio) {
                (SessionItem::Frame(f), Some(v), _) => f.index >= v,
                (SessionItem::AudioFrame(f), None, Some(a)) => f.index >= a,
                _ => false,
            })
            .unwrap_or(self.items.len());
        let is_frame =
            |i: &SessionItem| matches!(i, SessionItem::Frame(_) | SessionItem::AudioFrame(_));
        let mut keep_from = first_kept;
        while keep_from > 0 && !is_frame(&self.items[keep_from - 1]) {
            keep_from -= 1;
        }
        let n = keep_from.min(self.items.len().saturating_sub(MIN_TAIL));
        self.pop_front(n);
    }

    /// Position of the oldest random access frame the log holds, if any
    /// (for a subscriber that waited for the session: it starts at the
    /// session's start while the log still holds it).
    pub fn oldest_random_access(&self) -> Option<u64> {
        self.items
            .iter()
            .position(|i| matches!(i, SessionItem::Frame(f) if f.random_access))
            .map(|i| self.first + i as u64)
    }

    /// Position of the newest random access frame, if the log holds one;
    /// in a log with no video frame (an audio-only session), of the first
    /// audio frame of the newest segment.
    pub fn newest_random_access(&self) -> Option<u64> {
        if let Some(i) = self
            .items
            .iter()
            .rposition(|i| matches!(i, SessionItem::Frame(f) if f.random_access))
        {
            return Some(self.first + i as u64);
        }
        if self
            .items
            .iter()
            .any(|i| matches!(i, SessionItem::Frame(_)))
        {
            return None;
        }
        let mut newest: Option<(usize, u64)> = None;
        for (i, item) in self.items.iter().enumerate() {
            if let SessionItem::AudioFrame(f) = item {
                if newest.is_none_or(|(_, seg)| seg != f.segment) {
                    newest = Some((i, f.segment));
                }
            }
        }
        newest.map(|(i, _)| self.first + i as u64)
    }

    /// Index of the first frame at or after position `pos`.
    pub fn frame_index_at_or_after(&self, pos: u64) -> Option<u64> {
        let start = pos.checked_sub(self.first)? as usize;
        self.items.range(start..).find_map(|i| match i {
            SessionItem::Frame(f) => Some(f.index),
            _ => None,
        })
    }

    /// Reads up to `max` items from `cursor` on into `out`; none only when
    /// the cursor is at the end. Items before `cursor.events_from` are
    /// skipped unless they are frames (a joiner's snapshot already
    /// describes them). `max_behind` > 0 also counts a
    /// cursor that far behind the end as passed. A reader that takes no
    /// `frames` is not passed by eviction while the events it has yet to
    /// read are kept (see `past_events`).
    pub fn read(
        &self,
        cursor: &mut Cursor,
        out: &mut Vec<SessionItem>,
        max: usize,
        max_behind: u64,
        frames: bool,
    ) -> Read {
        let end = self.end();
        let too_far = max_behind > 0 && end.saturating_sub(cursor.pos) > max_behind;
        if cursor.pos < self.first && !frames && cursor.pos >= self.past_events_from && !too_far {
            let from = self.past_events.partition_point(|(p, _)| *p < cursor.pos);
            let mut read = 0;
            for (pos, item) in self.past_events.range(from..) {
                if read == max {
                    return Read::Items;
                }
                cursor.pos = pos + 1;
                if *pos >= cursor.events_from {
                    out.push(item.clone());
                    read += 1;
                }
            }
            // Caught up with the past: read on in the log (an empty read
            // means caught up, and the reader waits).
            cursor.pos = self.first;
            return self.read(cursor, out, max - read, max_behind, frames);
        }
        if cursor.pos < self.first || too_far {
            let resume = self.newest_random_access().unwrap_or(end).max(cursor.pos);
            let skipped = resume - cursor.pos;
            cursor.pos = resume;
            return Read::Lagged { skipped };
        }
        // Up to `max` items out; the skipped ones do not count, so nothing
        // read means caught up.
        let start = (cursor.pos - self.first) as usize;
        let mut read = 0;
        for item in self.items.range(start..) {
            if read == max {
                break;
            }
            let pos = cursor.pos;
            cursor.pos += 1;
            if pos < cursor.events_from && !matches!(item, SessionItem::Frame(_)) {
                continue;
            }
            out.push(item.clone());
            read += 1;
        }
        Read::Items
    }
}

/// A subscriber's place in the log.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    /// The next position to read.
    pub pos: u64,
    /// Events before this position are skipped (they happened before the
    /// subscriber joined; its snapshot already holds their result).
    pub events_from: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Frame;
    use bytes::Bytes;
    use std::sync::Arc;

    fn frame(index: u64, ra: bool) -> SessionItem {
        SessionItem::Frame(Arc::new(Frame {
            index,
            data: Bytes::new(),
            nals: vec![],
            pts: index * 3000,
            dts: index * 3000,
            duration: 3000,
            is_keyframe: ra,
            random_access: ra,
            sap_type: u8::from(ra),
            is_leading: false,
            is_reference: true,
            segment: 0,
            config_id: 0,
            capture_time_ns: None,
            ingest_time_ns: 0,
        }))
    }

    /// An event (the session's end).
    fn ended() -> SessionItem {
        SessionItem::Ended(Arc::new(super::super::SessionEnd {
            reason: super::super::EndReason::EndOfStream,
            frames: 0,
            segments: 0,
            detail: String::new(),
            ended_at_ms: 0,
        }))
    }

    fn indices(items: &[SessionItem]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                SessionItem::Frame(f) => Some(f.index),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_slow_cursor_reads_everything_still_held() {
        let mut log = ItemLog::default();
        let mut c = Cursor {
            pos: 0,
            events_from: 0,
        };
        for i in 0..5000 {
            log.push(frame(i, i % 100 == 0));
        }
        let mut out = Vec::new();
        while out.len() < 5000 {
            assert_eq!(log.read(&mut c, &mut out, 64, 0, true), Read::Items);
        }
        assert_eq!(indices(&out), (0..5000).collect::<Vec<_>>());
    }

    #[test]
    fn a_cursor_passed_by_eviction_resumes_at_the_newest_random_access_point() {
        let mut log = ItemLog::default();
        let mut c = Cursor {
            pos: 0,
            events_from: 0,
        };
        for i in 0..5000 {
            log.push(frame(i, i % 100 == 0));
        }
        log.evict_before_frame(3000);
        assert_eq!(log.first, 3000);
        let mut out = Vec::new();
        assert_eq!(
            log.read(&mut c, &mut out, 64, 0, true),
            Read::Lagged { skipped: 4900 }
        );
        log.read(&mut c, &mut out, 1000, 0, true);
        assert_eq!(indices(&out)[0], 4900);
    }

    /// Eviction follows the ring: frames before its first frame go, past a
    /// short tail, whatever the number of items the log held.
    #[test]
    fn eviction_keeps_no_more_than_a_short_tail_past_the_ring() {
        let mut log = ItemLog::default();
        for i in 0..900 {
            log.push(frame(i, i % 60 == 0));
        }
        // The ring keeps the newest 120 frames.
        log.evict_before_frame(780);
        assert_eq!(log.first, 780);
        assert_eq!(log.len(), 120);
        // A log shorter than the tail keeps it all.
        let mut log = ItemLog::default();
        for i in 0..(MIN_TAIL as u64) {
            log.push(frame(i, i == 0));
        }
        log.evict_before_frame(MIN_TAIL as u64);
        assert_eq!(log.len(), MIN_TAIL);
    }

    /// A reader standing at the events before the ring's first frame (a
    /// subscriber that joined before the first parameter sets, then fell
    /// behind) reads them and every frame: eviction keeps them.
    #[test]
    fn the_events_before_the_first_frame_held_stay() {
        let mut log = ItemLog::default();
        let mut c = Cursor {
            pos: 0,
            events_from: 0,
        };
        log.push(ended()); // 0: an event before frame 0
        for i in 0..200 {
            log.push(frame(i, i % 100 == 0));
        }
        log.push(ended()); // 201: events before frame 200
        log.push(ended());
        for i in 200..400 {
            log.push(frame(i, i % 100 == 0));
        }
        log.evict_before_frame(0);
        assert_eq!(log.first, 0, "nothing before frame 0 but its event");
        let mut out = Vec::new();
        assert_eq!(log.read(&mut c, &mut out, 1, 0, true), Read::Items);
        assert_eq!(out.len(), 1);
        // The ring lets go of frames 0..200: the two events before frame
        // 200 stay, with it.
        log.evict_before_frame(200);
        assert_eq!(log.first, 201);
        let mut c = Cursor {
            pos: 201,
            events_from: 0,
        };
        let mut out = Vec::new();
        while log.read(&mut c, &mut out, 64, 0, true) == Read::Items && c.pos < log.end() {}
        assert_eq!(out.len(), 202);
        assert_eq!(indices(&out), (200..400).collect::<Vec<_>>());
    }

    /// A reader that takes no frames and reads only at events (in bursts)
    /// is not passed when the ring lets go of frames it has not got to:
    /// it reads every event, in order, then goes on in the log; one whose
    /// events are gone too is passed.
    #[test]
    fn eviction_does_not_pass_a_reader_of_events() {
        let part = |n: u64| {
            SessionItem::Dropped(Arc::new(crate::engine::pipeline::DropReport {
                reason: crate::engine::DropReason::Truncated,
                count: 1,
                total: n,
                detail: String::new(),
                offset: 0,
            }))
        };
        let mut log = ItemLog::default();
        let mut events = Cursor {
            pos: 0,
            events_from: 0,
        };
        let mut frames = events;
        for i in 0..1000u64 {
            log.push(frame(i, i % 100 == 0));
            if i % 10 == 9 {
                log.push(part(i));
            }
        }
        log.evict_before_frame(900);
        let mut out = Vec::new();
        while events.pos < log.end() {
            assert_eq!(log.read(&mut events, &mut out, 7, 0, false), Read::Items);
        }
        let counts: Vec<u64> = out
            .iter()
            .filter_map(|i| match i {
                SessionItem::Dropped(d) => Some(d.total),
                _ => None,
            })
            .collect();
        assert_eq!(counts, (0..100).map(|k| k * 10 + 9).collect::<Vec<_>>());
        assert!(matches!(
            log.read(&mut frames, &mut Vec::new(), 64, 0, true),
            Read::Lagged { .. }
        ));
        // More evicted than the events kept: passed.
        for i in 1000..5000u64 {
            log.push(frame(i, i % 100 == 0));
            log.push(part(i));
        }
        log.evict_before_frame(4900);
        assert!(matches!(
            log.read(&mut events, &mut Vec::new(), 64, 0, false),
            Read::Lagged { .. }
        ));
    }

    #[test]
    fn the_newest_event_is_where_event_readers_wake() {
        let mut log = ItemLog::default();
        log.push(frame(0, true));
        assert_eq!(log.events_end(), 0);
        log.push(ended());
        log.push(frame(1, false));
        assert_eq!((log.events_end(), log.end()), (2, 3));
    }

    #[test]
    fn the_oldest_and_newest_random_access_points() {
        let mut log = ItemLog::default();
        assert_eq!(log.oldest_random_access(), None);
        for (i, ra) in [(0, false), (1, true), (2, false), (3, true), (4, false)] {
            log.push(frame(i, ra));
        }
        assert_eq!(log.oldest_random_access(), Some(1));
        assert_eq!(log.newest_random_access(), Some(3));
    }

    #[test]
    fn events_before_a_joiner_are_skipped_frames_are_not() {
        let mut log = ItemLog::default();
        log.push(frame(0, true));
        log.push(ended());
        log.push(frame(1, false));
        let mut c = Cursor {
            pos: 0,
            events_from: 2,
        };
        let mut out = Vec::new();
        log.read(&mut c, &mut out, 10, 0, true);
        assert_eq!(out.len(), 2);
        assert_eq!(indices(&out), vec![0, 1]);
    }
}

//! The `Segmenter`: decides where segments begin and end, and writes the one
//! [`SegmentRecord`] per segment that every playlist and muxer renders from.
//!
//! Cuts happen at random access points (keyframes of SAP type 1–3, and the
//! starts of gradual decoding refresh), at the first one at or after the
//! target duration, and always at one that brings new parameter sets (a new
//! init segment) or follows a discontinuity. A stream with no random access
//! point before a segment would outgrow `max_duration` (or `max_bytes`) is
//! cut anyway, at a frame boundary, so segments never exceed the target
//! duration the playlists announce and memory stays bounded; such a segment
//! says it is not independent (`keyframe_aligned` false, `sap_type` 0).
//!
//! Each segment is also divided into parts ([`PartRecord`]): a part closes
//! at the first frame boundary at or after the part target, and always where
//! its segment ends, so a segment is exactly the run of its parts. A part
//! (like a segment) is closed when the frame after it arrives: its duration
//! is then exact (that frame's decode time minus the part's start), and the
//! parts of a segment add up to the segment's duration tick for tick. That
//! rule is the [`Partitioner`], which the segmenter runs and which a
//! subscriber that knows the segment boundaries runs too, to find the
//! server's parts again ([`crate::replay`]).

use super::frame::{PartRecord, SegmentRecord, TIMESCALE};

#[derive(Clone, Copy, Debug)]
pub struct SegmenterOptions {
    /// Target duration, 90 kHz.
    pub target: u64,
    /// Longest segment before a forced cut, 90 kHz.
    pub max_duration: u64,
    /// Largest segment (Annex B bytes) before a forced cut.
    pub max_bytes: u64,
    /// Part target duration, 90 kHz (0: a part is a whole segment).
    pub part_target: u64,
}

impl SegmenterOptions {
    pub fn with_target_ms(ms: u32) -> Self {
        let target = (ms.max(100) as u64) * TIMESCALE / 1000;
        Self {
            target,
            max_duration: target * 3,
            max_bytes: 256 << 20,
            part_target: 0,
        }
    }
}

/// What the segmenter needs to know of a frame.
#[derive(Clone, Copy, Debug)]
pub struct FramePlacement {
    pub index: u64,
    pub pts: u64,
    pub dts: u64,
    pub duration: u32,
    pub is_keyframe: bool,
    /// Decoding may start here (a keyframe or a gradual-refresh start).
    pub random_access: bool,
    pub sap_type: u8,
    pub config_id: u32,
    pub bytes: u64,
    /// The publisher's capture time (ns), when it sent one.
    pub capture_ns: Option<u64>,
}

#[derive(Clone, Debug)]
struct OpenSegment {
    sequence: u64,
    start: u64,
    /// Presentation time of its first frame.
    start_pts: u64,
    first_index: u64,
    frames: u32,
    bytes: u64,
    keyframe_aligned: bool,
    sap_type: u8,
    /// Capture time of its first frame, if the publisher sent one.
    first_capture_ns: Option<u64>,
    discontinuity: bool,
    config_id: u32,
    last_dts: u64,
    last_duration: u32,
}

#[derive(Clone, Debug)]
struct OpenPart {
    number: u64,
    segment: u64,
    index: u32,
    start: u64,
    first_index: u64,
    frames: u32,
    bytes: u64,
    independent: bool,
    config_id: u32,
}

/// What the [`Partitioner`] needs of a frame.
#[derive(Clone, Copy, Debug)]
pub struct PartFrame {
    /// The segment the frame belongs to.
    pub segment: u64,
    pub index: u64,
    pub dts: u64,
    /// Annex B bytes.
    pub bytes: u64,
    pub random_access: bool,
    /// The config of the frame's segment.
    pub config_id: u32,
}

/// Divides segments into parts: a part closes at the first frame whose
/// decode time is at or after its start plus the part target, and where its
/// segment ends (at the first frame of another segment, or [`close`]). The
/// [`Segmenter`] runs one; so does a subscriber that knows the segment
/// boundaries (each received frame names its segment) and wants the
/// server's parts back: the rule is this one piece of code.
///
/// [`close`]: Partitioner::close
#[derive(Clone, Debug)]
pub struct Partitioner {
    /// Part target, 90 kHz (0: a part is a whole segment).
    target: u64,
    open: Option<OpenPart>,
    next_number: u64,
    /// The segment of the last part opened, and the index its next part
    /// gets.
    last_segment: Option<(u64, u32)>,
    composition_shift: u32,
}

impl Partitioner {
    /// `target` in 90 kHz ticks; parts are numbered from `first_number`.
    pub fn new(target: u64, first_number: u64) -> Self {
        Self {
            target,
            open: None,
            next_number: first_number,
            last_segment: None,
            composition_shift: 0,
        }
    }

    /// The composition shift the part records carry (see
    /// [`SegmentRecord::composition_shift`]).
    pub fn set_composition_shift(&mut self, shift: u32) {
        self.composition_shift = shift;
    }

    /// The number the next part opened gets.
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    /// Places a frame (in decode order): returns the number of its part and
    /// the part it closed, if any (which precedes the frame).
    pub fn place(&mut self, f: PartFrame) -> (u64, Option<PartRecord>) {
        let ends_open = self.open.as_ref().is_some_and(|p| {
            p.segment != f.segment
                || (self.target > 0 && f.dts.saturating_sub(p.start) >= self.target)
        });
        let closed = if ends_open { self.close(f.dts) } else { None };
        let part = match &mut self.open {
            Some(p) => p,
            None => {
                let index = match self.last_segment {
                    Some((segment, next)) if segment == f.segment => next,
                    _ => 0,
                };
                self.last_segment = Some((f.segment, index.saturating_add(1)));
                let number = self.next_number;
                self.next_number = self.next_number.saturating_add(1);
                self.open.insert(OpenPart {
                    number,
                    segment: f.segment,
                    index,
                    start: f.dts,
                    first_index: f.index,
                    frames: 0,
                    bytes: 0,
                    independent: f.random_access,
                    config_id: f.config_id,
                })
            }
        };
        part.frames += 1;
        part.bytes += f.bytes;
        (part.number, closed)
    }

    /// Closes the open part at `end`, the decode time where it ends (its
    /// segment's end, or the end of the stream).
    pub fn close(&mut self, end: u64) -> Option<PartRecord> {
        let p = self.open.take()?;
        Some(PartRecord {
            number: p.number,
            segment: p.segment,
            index: p.index,
            start: p.start,
            duration: end.saturating_sub(p.start).max(1),
            first_frame_index: p.first_index,
            frame_count: p.frames,
            independent: p.independent,
            byte_size: p.bytes,
            config_id: p.config_id,
            composition_shift: self.composition_shift,
            audio: None,
        })
    }
}

/// Where [`Segmenter::place`] put a frame, and what it closed.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// The segment the frame belongs to.
    pub segment: u64,
    /// The part the frame belongs to (session-wide number).
    pub part: u64,
    /// The part the frame closed (it precedes the frame), if any.
    pub closed_part: Option<PartRecord>,
    /// The segment the frame closed, if any (its last part is `closed_part`).
    pub closed_segment: Option<SegmentRecord>,
    /// The frame opened its segment (it is the segment's first).
    pub opened: bool,
    /// The segment the frame opened starts after a discontinuity.
    pub opened_discontinuity: bool,
}

/// A segment's wall-clock time (Unix ms, `EXT-X-PROGRAM-DATE-TIME`): its
/// first frame's capture time when that reads as Unix time (within a day
/// of the session's start), else its place on the timeline (`start`, 90
/// kHz, after `availability_start_ms`).
pub fn program_date_time_ms(
    availability_start_ms: u64,
    start: u64,
    first_capture_ns: Option<u64>,
) -> u64 {
    const DAY_MS: u64 = 86_400_000;
    first_capture_ns
        .map(|c| c / 1_000_000)
        .filter(|c| c.abs_diff(availability_start_ms) < DAY_MS)
        .unwrap_or(availability_start_ms.saturating_add(start.saturating_mul(1000) / TIMESCALE))
}

/// Where a segment starts (what renditions align on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentStart {
    /// Media sequence number.
    pub sequence: u64,
    /// Decode time of its first frame, 90 kHz.
    pub start: u64,
    /// Discontinuity sequence it is in.
    pub discontinuity_sequence: u64,
}

#[derive(Debug)]
pub struct Segmenter {
    opts: SegmenterOptions,
    next_sequence: u64,
    open: Option<OpenSegment>,
    parts: Partitioner,
    discontinuity_pending: bool,
    discontinuity_sequence: u64,
    /// Wall clock (Unix ms) of timeline time 0.
    availability_start_ms: u64,
    composition_shift: Option<u32>,
    last_config_id: Option<u32>,
}

impl Segmenter {
    pub fn new(opts: SegmenterOptions, availability_start_ms: u64) -> Self {
        Self {
            opts,
            next_sequence: 0,
            open: None,
            parts: Partitioner::new(opts.part_target, 0),
            discontinuity_pending: false,
            discontinuity_sequence: 0,
            availability_start_ms,
            composition_shift: None,
            last_config_id: None,
        }
    }

    /// A segmenter that continues another's numbering (a session continued
    /// on another node): its first segment is `next_sequence`, follows a
    /// discontinuity (its discontinuity sequence one more than
    /// `discontinuity_sequence`, the last segment's), and its parts are
    /// numbered from `next_part`.
    pub fn resume(
        opts: SegmenterOptions,
        availability_start_ms: u64,
        next_sequence: u64,
        discontinuity_sequence: u64,
        next_part: u64,
    ) -> Self {
        Self {
            next_sequence,
            parts: Partitioner::new(opts.part_target, next_part),
            discontinuity_pending: true,
            discontinuity_sequence,
            ..Self::new(opts, availability_start_ms)
        }
    }

    /// The first segment follows no discontinuity (a rendition joining
    /// its session's others at one of their segment starts, in their
    /// discontinuity sequence).
    pub fn join_without_discontinuity(&mut self) {
        self.discontinuity_pending = false;
    }

    pub fn options(&self) -> SegmenterOptions {
        self.opts
    }

    /// The composition shift, once the first frame set it.
    pub fn composition_shift(&self) -> Option<u32> {
        self.composition_shift
    }

    /// Where the open segment starts, if one is open.
    pub fn open_start(&self) -> Option<SegmentStart> {
        self.open.as_ref().map(|o| SegmentStart {
            sequence: o.sequence,
            start: o.start,
            discontinuity_sequence: self.discontinuity_sequence,
        })
    }

    /// The target duration, 90 kHz.
    pub fn target(&self) -> u64 {
        self.opts.target
    }

    /// The sequence number the next frame would get.
    pub fn current_sequence(&self) -> u64 {
        self.open
            .as_ref()
            .map_or(self.next_sequence, |o| o.sequence)
    }

    /// Where the open segment's last frame ends (90 kHz decode time), if a
    /// segment is open.
    pub fn open_end(&self) -> Option<u64> {
        self.open
            .as_ref()
            .map(|o| o.last_dts.saturating_add(u64::from(o.last_duration.max(1))))
    }

    /// The open segment's start (90 kHz decode time) and its first
    /// frame's capture time (Unix ns), if a segment is open.
    pub fn open_capture(&self) -> Option<(u64, Option<u64>)> {
        self.open.as_ref().map(|o| (o.start, o.first_capture_ns))
    }

    /// The next segment starts a discontinuity (publisher reconnected).
    pub fn mark_discontinuity(&mut self) {
        self.discontinuity_pending = true;
    }

    /// Places a frame: returns the segment and part it belongs to and the
    /// records of the part and segment it closed, if any.
    pub fn place(&mut self, f: FramePlacement) -> Placement {
        if self.composition_shift.is_none() {
            let shift = f.pts.saturating_sub(f.dts).min(u32::MAX as u64) as u32;
            self.composition_shift = Some(shift);
            self.parts.set_composition_shift(shift);
        }
        let mut closed = None;
        let mut closed_part = None;
        if let Some(open) = &self.open {
            let elapsed = f.dts.saturating_sub(open.start);
            // A keyframe with leading pictures (open GOP) is decoded ahead of
            // its presentation: judge the target by presentation time too,
            // so 1 s GOPs make 2 s segments, not 3 s ones.
            let elapsed_shown = f.pts.saturating_sub(open.start_pts).max(elapsed);
            // Where the segment would end if this frame stayed in it.
            let with_frame = elapsed.saturating_add(u64::from(f.duration));
            let cut = if f.random_access {
                elapsed_shown >= self.opts.target
                    || f.config_id != open.config_id
                    || self.discontinuity_pending
                    || with_frame > self.opts.max_duration
            } else {
                with_frame > self.opts.max_duration
                    || open.bytes.saturating_add(f.bytes) > self.opts.max_bytes
            };
            if cut {
                // Across a discontinuity the new stream may start after a
                // gap (the outage): the old segment ends with its last
                // frame, not at the new first frame.
                let end = if self.discontinuity_pending {
                    f.dts.min(
                        open.last_dts
                            .saturating_add(u64::from(open.last_duration.max(1))),
                    )
                } else {
                    f.dts
                };
                closed_part = self.parts.close(end);
                closed = self.close(end);
            }
        }
        let opened = self.open.is_none();
        let mut opened_discontinuity = false;
        let open = match &mut self.open {
            Some(o) => o,
            None => {
                // New parameter sets are a discontinuity too (RFC 8216 4.3.2.3:
                // a change of encoding parameters).
                let config_changed = self.last_config_id.is_some_and(|c| c != f.config_id);
                self.last_config_id = Some(f.config_id);
                let discontinuity = (std::mem::take(&mut self.discontinuity_pending)
                    || config_changed)
                    && self.next_sequence > 0;
                if discontinuity {
                    self.discontinuity_sequence = self.discontinuity_sequence.saturating_add(1);
                }
                opened_discontinuity = discontinuity;
                let seq = self.next_sequence;
                self.next_sequence = self.next_sequence.saturating_add(1);
                self.open.insert(OpenSegment {
                    sequence: seq,
                    start: f.dts,
                    start_pts: f.pts,
                    first_index: f.index,
                    frames: 0,
                    bytes: 0,
                    keyframe_aligned: f.is_keyframe,
                    sap_type: if f.random_access { f.sap_type } else { 0 },
                    first_capture_ns: f.capture_ns,
                    discontinuity,
                    config_id: f.config_id,
                    last_dts: f.dts,
                    last_duration: f.duration,
                })
            }
        };
        open.frames += 1;
        open.bytes += f.bytes;
        open.last_dts = f.dts;
        open.last_duration = f.duration;
        let segment = open.sequence;
        let (part, closed_by_target) = self.parts.place(PartFrame {
            segment,
            index: f.index,
            dts: f.dts,
            bytes: f.bytes,
            random_access: f.random_access,
            config_id: open.config_id,
        });
        let closed_part = closed_part.or(closed_by_target);
        Placement {
            segment,
            part,
            closed_part,
            closed_segment: closed,
            opened,
            opened_discontinuity,
        }
    }

    /// Ends the stream: closes the open part and segment at the last frame's
    /// end.
    pub fn finish_parts(&mut self) -> (Option<PartRecord>, Option<SegmentRecord>) {
        let Some(end) = self
            .open
            .as_ref()
            .map(|o| o.last_dts + o.last_duration.max(1) as u64)
        else {
            return (None, None);
        };
        (self.parts.close(end), self.close(end))
    }

    fn close(&mut self, end: u64) -> Option<SegmentRecord> {
        let o = self.open.take()?;
        let duration = end.saturating_sub(o.start).max(1);
        Some(SegmentRecord {
            sequence: o.sequence,
            start: o.start,
            duration,
            frame_count: o.frames,
            first_frame_index: o.first_index,
            keyframe_aligned: o.keyframe_aligned,
            sap_type: o.sap_type,
            discontinuity: o.discontinuity,
            discontinuity_sequence: self.discontinuity_sequence,
            program_date_time_ms: program_date_time_ms(
                self.availability_start_ms,
                o.start,
                o.first_capture_ns,
            ),
            byte_size: o.bytes,
            config_id: o.config_id,
            composition_shift: self.composition_shift.unwrap_or(0),
            audio: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64, key_every: u64) -> FramePlacement {
        FramePlacement {
            index: i,
            pts: i * 3000,
            dts: i * 3000,
            duration: 3000,
            is_keyframe: i.is_multiple_of(key_every),
            random_access: i.is_multiple_of(key_every),
            sap_type: if i.is_multiple_of(key_every) { 1 } else { 0 },
            config_id: 0,
            bytes: 100,
            capture_ns: None,
        }
    }

    #[test]
    fn cuts_at_first_keyframe_after_target() {
        let mut s = Segmenter::new(SegmenterOptions::with_target_ms(2000), 1_000_000);
        let mut recs = Vec::new();
        for i in 0..300 {
            let p = s.place(frame(i, 45)); // 1.5 s GOPs
            assert_eq!(
                p.segment,
                recs.len() as u64 + p.closed_segment.is_some() as u64
            );
            recs.extend(p.closed_segment);
        }
        recs.extend(s.finish_parts().1);
        // Keyframes every 45 frames: cuts at 90, 180, 270 (3 s each).
        let starts: Vec<u64> = recs.iter().map(|r| r.first_frame_index).collect();
        assert_eq!(starts, vec![0, 90, 180, 270]);
        assert_eq!(recs[0].duration, 90 * 3000);
        assert_eq!(recs[3].duration, 30 * 3000);
        for w in recs.windows(2) {
            assert_eq!(w[0].start + w[0].duration, w[1].start);
        }
        assert!(recs.iter().all(|r| r.keyframe_aligned));
        assert_eq!(recs[1].program_date_time_ms, 1_000_000 + 3000);
    }

    #[test]
    fn sparse_keyframes_make_long_segments_and_no_keyframe_forces_a_cut() {
        let mut opts = SegmenterOptions::with_target_ms(2000);
        opts.max_duration = 10 * TIMESCALE;
        let mut s = Segmenter::new(opts, 0);
        let mut recs = Vec::new();
        for i in 0..1000 {
            recs.extend(s.place(frame(i, 100_000)).closed_segment);
        }
        assert_eq!(recs[0].duration, 10 * TIMESCALE);
        assert!(recs[0].keyframe_aligned);
        assert!(!recs[1].keyframe_aligned);
    }

    #[test]
    fn config_change_and_discontinuity_cut_at_the_next_keyframe() {
        let mut s = Segmenter::new(SegmenterOptions::with_target_ms(2000), 0);
        let mut recs = Vec::new();
        for i in 0..40 {
            let mut f = frame(i, 10);
            if i >= 20 {
                f.config_id = 1;
            }
            recs.extend(s.place(f).closed_segment);
        }
        s.mark_discontinuity();
        for i in 40..80 {
            let mut f = frame(i, 10);
            f.config_id = 1;
            recs.extend(s.place(f).closed_segment);
        }
        recs.extend(s.finish_parts().1);
        let starts: Vec<u64> = recs.iter().map(|r| r.first_frame_index).collect();
        assert_eq!(starts, vec![0, 20, 40]);
        assert_eq!(recs[1].config_id, 1);
        assert!(recs[1].discontinuity);
        assert_eq!(recs[1].discontinuity_sequence, 1);
        assert!(recs[2].discontinuity);
        assert_eq!(recs[2].discontinuity_sequence, 2);
    }

    /// Parts close at the first frame boundary at or after the part target
    /// and at every segment cut; a segment's parts tile it exactly.
    #[test]
    fn parts_tile_their_segments() {
        let mut opts = SegmenterOptions::with_target_ms(2000);
        opts.part_target = TIMESCALE / 2; // 500 ms = 15 frames at 30 fps
        let mut s = Segmenter::new(opts, 0);
        let (mut parts, mut segs) = (Vec::new(), Vec::new());
        // Keyframes every 50 frames (1.67 s): segments of 100 frames.
        for i in 0..350 {
            let p = s.place(frame(i, 50));
            if let Some(c) = &p.closed_part {
                assert_eq!(c.number + 1, p.part, "the frame opens the next part");
            }
            parts.extend(p.closed_part);
            segs.extend(p.closed_segment);
        }
        let (lp, ls) = s.finish_parts();
        parts.extend(lp);
        segs.extend(ls);
        assert_eq!(segs.len(), 4);
        for (n, p) in parts.iter().enumerate() {
            assert_eq!(p.number, n as u64);
            assert!(p.duration <= opts.part_target || p.frame_count == 1);
        }
        for seg in &segs {
            let mine: Vec<&PartRecord> =
                parts.iter().filter(|p| p.segment == seg.sequence).collect();
            assert_eq!(mine[0].start, seg.start);
            assert_eq!(mine[0].first_frame_index, seg.first_frame_index);
            assert!(mine[0].independent);
            let total: u64 = mine.iter().map(|p| p.duration).sum();
            assert_eq!(total, seg.duration, "segment {}", seg.sequence);
            let frames: u32 = mine.iter().map(|p| p.frame_count).sum();
            assert_eq!(frames, seg.frame_count);
            for (k, w) in mine.windows(2).enumerate() {
                assert_eq!(w[0].start + w[0].duration, w[1].start);
                assert_eq!(w[1].index as usize, k + 1);
            }
        }
        // 100-frame segments: parts of 15 frames (500 ms) and a 10-frame tail.
        let first: Vec<u32> = parts
            .iter()
            .filter(|p| p.segment == 0)
            .map(|p| p.frame_count)
            .collect();
        assert_eq!(first, vec![15, 15, 15, 15, 15, 15, 10]);
        assert!(parts.iter().filter(|p| p.index > 0).all(|p| !p.independent));
    }

    /// A `Partitioner` fed each frame with the segment the segmenter put it
    /// in, and closed where each segment ends, finds the segmenter's parts
    /// (what a subscriber rebuilding parts relies on).
    #[test]
    fn a_partitioner_given_the_segments_finds_the_same_parts() {
        let mut opts = SegmenterOptions::with_target_ms(2000);
        opts.part_target = TIMESCALE * 4 / 10;
        let mut s = Segmenter::new(opts, 0);
        let (mut parts, mut segs, mut placed) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..400 {
            // Keyframes every 37 frames, a frame of 2 ticks more now and then.
            let mut f = frame(i, 37);
            f.dts += i / 7 * 2;
            f.pts = f.dts;
            let p = s.place(f);
            parts.extend(p.closed_part);
            segs.extend(p.closed_segment);
            placed.push((f, p.segment));
        }
        let (lp, ls) = s.finish_parts();
        parts.extend(lp);
        segs.extend(ls);

        let mut again = Partitioner::new(opts.part_target, 0);
        let mut found = Vec::new();
        for seg in &segs {
            for (f, _) in placed.iter().filter(|(_, n)| *n == seg.sequence) {
                let (_, closed) = again.place(PartFrame {
                    segment: seg.sequence,
                    index: f.index,
                    dts: f.dts,
                    bytes: f.bytes,
                    random_access: f.random_access,
                    config_id: seg.config_id,
                });
                found.extend(closed);
            }
            found.extend(again.close(seg.start + seg.duration));
        }
        assert!(parts.len() > segs.len() * 3);
        assert_eq!(found, parts);
    }

    #[test]
    fn without_a_part_target_a_part_is_the_whole_segment() {
        let mut s = Segmenter::new(SegmenterOptions::with_target_ms(2000), 0);
        let mut parts = Vec::new();
        let mut segs = Vec::new();
        for i in 0..200 {
            let p = s.place(frame(i, 60));
            parts.extend(p.closed_part);
            segs.extend(p.closed_segment);
        }
        let (lp, ls) = s.finish_parts();
        parts.extend(lp);
        segs.extend(ls);
        assert_eq!(parts.len(), segs.len());
        for (p, s) in parts.iter().zip(&segs) {
            assert_eq!(
                (p.segment, p.index, p.start, p.duration, p.frame_count),
                (s.sequence, 0, s.start, s.duration, s.frame_count)
            );
        }
    }
}

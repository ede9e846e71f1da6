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

use super::frame::{SegmentRecord, TIMESCALE};

#[derive(Clone, Copy, Debug)]
pub struct SegmenterOptions {
    /// Target duration, 90 kHz.
    pub target: u64,
    /// Longest segment before a forced cut, 90 kHz.
    pub max_duration: u64,
    /// Largest segment (Annex B bytes) before a forced cut.
    pub max_bytes: u64,
}

impl SegmenterOptions {
    pub fn with_target_ms(ms: u32) -> Self {
        let target = (ms.max(100) as u64) * TIMESCALE / 1000;
        Self {
            target,
            max_duration: target * 3,
            max_bytes: 256 << 20,
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

#[derive(Debug)]
pub struct Segmenter {
    opts: SegmenterOptions,
    next_sequence: u64,
    open: Option<OpenSegment>,
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
            discontinuity_pending: false,
            discontinuity_sequence: 0,
            availability_start_ms,
            composition_shift: None,
            last_config_id: None,
        }
    }

    pub fn options(&self) -> SegmenterOptions {
        self.opts
    }

    /// The sequence number the next frame would get.
    pub fn current_sequence(&self) -> u64 {
        self.open
            .as_ref()
            .map_or(self.next_sequence, |o| o.sequence)
    }

    /// The next segment starts a discontinuity (publisher reconnected).
    pub fn mark_discontinuity(&mut self) {
        self.discontinuity_pending = true;
    }

    /// Places a frame: returns the sequence of the segment it belongs to and
    /// the record of a segment it closed, if any.
    pub fn place(&mut self, f: FramePlacement) -> (u64, Option<SegmentRecord>) {
        if self.composition_shift.is_none() {
            self.composition_shift = Some(f.pts.saturating_sub(f.dts).min(u32::MAX as u64) as u32);
        }
        let mut closed = None;
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
                closed = self.close(f.dts);
            }
        }
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
                    self.discontinuity_sequence += 1;
                }
                let seq = self.next_sequence;
                self.next_sequence += 1;
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
        (open.sequence, closed)
    }

    /// Ends the stream: closes the open segment at its last frame's end.
    pub fn finish(&mut self) -> Option<SegmentRecord> {
        let end = self
            .open
            .as_ref()
            .map(|o| o.last_dts + o.last_duration.max(1) as u64)?;
        self.close(end)
    }

    /// Whether a capture time reads as Unix time (within a day of the
    /// session's start), so it can stand as the segment's wall-clock time.
    fn is_wall_clock(&self, capture_ns: u64) -> bool {
        const DAY_MS: u64 = 86_400_000;
        (capture_ns / 1_000_000).abs_diff(self.availability_start_ms) < DAY_MS
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
            program_date_time_ms: o
                .first_capture_ns
                .filter(|c| self.is_wall_clock(*c))
                .map_or(
                    self.availability_start_ms + o.start * 1000 / TIMESCALE,
                    |c| c / 1_000_000,
                ),
            byte_size: o.bytes,
            config_id: o.config_id,
            composition_shift: self.composition_shift.unwrap_or(0),
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
            let (seq, closed) = s.place(frame(i, 45)); // 1.5 s GOPs
            assert_eq!(seq, recs.len() as u64 + closed.is_some() as u64);
            recs.extend(closed);
        }
        recs.extend(s.finish());
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
            recs.extend(s.place(frame(i, 100_000)).1);
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
            recs.extend(s.place(f).1);
        }
        s.mark_discontinuity();
        for i in 40..80 {
            let mut f = frame(i, 10);
            f.config_id = 1;
            recs.extend(s.place(f).1);
        }
        recs.extend(s.finish());
        let starts: Vec<u64> = recs.iter().map(|r| r.first_frame_index).collect();
        assert_eq!(starts, vec![0, 20, 40]);
        assert_eq!(recs[1].config_id, 1);
        assert!(recs[1].discontinuity);
        assert_eq!(recs[1].discontinuity_sequence, 1);
        assert!(recs[2].discontinuity);
        assert_eq!(recs[2].discontinuity_sequence, 2);
    }
}

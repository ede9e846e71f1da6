//! Renditions of one session: a rendition that joins the others goes on
//! their timeline and takes their segment numbers, so segment N of every
//! rendition starts at the same time (what a player switching renditions
//! relies on: RFC 8216 6.2.4, "matching content"; ISO/IEC 23009-1
//! `segmentAlignment`).
//!
//! The joining rendition's first frame is placed where its capture time
//! (or, without one, its arrival time) falls on the leading rendition's
//! timeline, snapped to the leading rendition's frame grid; then it waits
//! for a random access point whose decode time is the start of one of the
//! leading rendition's segments and takes that segment's number. Pure:
//! the server hands in the leading rendition's state ([`JoinPoint`]) and
//! updates its segment starts ([`SegmentStart`]) while the join waits.

use crate::frame::TIMESCALE;
pub use crate::segment::SegmentStart;
use crate::timing::FrameRate;

/// A decode time this close (90 kHz ticks, about 0.5 ms) to a segment
/// start is that start: frame grids agree to rounding.
pub const ALIGN_TOLERANCE: u64 = 45;

/// How many segment starts of the leading rendition a join compares with.
pub const MAX_SEGMENT_STARTS: usize = 64;

/// The leading rendition's timeline, for a rendition that joins it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinPoint {
    /// Wall clock (Unix ms) of timeline time 0: the leading rendition's.
    pub availability_start_ms: u64,
    /// Its capture mapping: capture time `c0` (ns) is presented at `t0`
    /// (90 kHz); `None` when its publisher sends no capture times.
    pub capture_mapping: Option<(u64, i64)>,
    /// Its frame rate (the grid its frames sit on).
    pub rate: FrameRate,
    /// Its composition shift (PTS − DTS of its first keyframe), 90 kHz.
    pub composition_shift: u32,
    /// Its segment target duration, 90 kHz: it cuts at the first random
    /// access point this long after a segment's start.
    pub target: u64,
    /// Its recent segment starts, oldest first, the last one its open
    /// segment's (at most [`MAX_SEGMENT_STARTS`]).
    pub segment_starts: Vec<SegmentStart>,
}

impl JoinPoint {
    /// Decode time (90 kHz) for the joining rendition's first frame,
    /// captured at `capture_ns` (its publisher's clock, the same as the
    /// leading rendition's) or arriving at `now_ms` (Unix ms): the
    /// leading rendition's presentation time for that instant, on its frame
    /// grid, less its composition shift (so a keyframe of either rendition
    /// captured at one instant has one decode time, whatever each one's
    /// reorder depth).
    pub fn first_decode_time(&self, capture_ns: Option<u64>, now_ms: u64) -> u64 {
        let shift = i128::from(self.composition_shift);
        let (reference, at) = match (self.capture_mapping, capture_ns) {
            (Some((c0, t0)), Some(c)) => {
                let delta = ((i128::from(c) - i128::from(c0)) * i128::from(TIMESCALE))
                    .saturating_add(500_000_000)
                    .div_euclid(1_000_000_000);
                (i128::from(t0), i128::from(t0) + delta)
            }
            _ => {
                let elapsed = i128::from(now_ms.saturating_sub(self.availability_start_ms))
                    * i128::from(TIMESCALE / 1000);
                let reference = self
                    .segment_starts
                    .last()
                    .map_or(shift, |s| i128::from(s.start) + shift);
                (reference, elapsed + shift)
            }
        };
        // Snap to the grid: reference + k periods, k rounded.
        let (n, d) = self.rate.ticks_fraction();
        let (n, d) = (i128::from(n), i128::from(d.max(1)));
        let k = ((at - reference) * d * 2 + n).div_euclid(2 * n.max(1));
        let snapped = reference + (k * n).div_euclid(d);
        u64::try_from((snapped - shift).max(0)).unwrap_or(0)
    }

    /// The leading rendition's segment that starts at decode time `dts`
    /// (within [`ALIGN_TOLERANCE`]) of a random access point; or, past its
    /// open segment, the segment it will start there by its own rule (the
    /// first random access point a target duration after a start), when
    /// `last_rap` (the joining rendition's previous random access point)
    /// shows none came between (renditions published at the same time run
    /// neck and neck: either may be first to a keyframe).
    pub fn segment_at(&self, dts: u64, last_rap: Option<u64>) -> Option<SegmentStart> {
        if let Some(s) = self
            .segment_starts
            .iter()
            .find(|s| s.start.abs_diff(dts) <= ALIGN_TOLERANCE)
        {
            return Some(*s);
        }
        let open = self.segment_starts.last()?;
        let due = open.start.saturating_add(self.target);
        let none_between = last_rap.is_none_or(|r| r < due.saturating_sub(ALIGN_TOLERANCE));
        (dts + ALIGN_TOLERANCE >= due && none_between).then_some(SegmentStart {
            sequence: open.sequence + 1,
            start: dts,
            discontinuity_sequence: open.discontinuity_sequence,
        })
    }

    /// Replaces the segment starts (the leading rendition went on).
    pub fn set_segment_starts(&mut self, starts: Vec<SegmentStart>) {
        self.segment_starts = starts;
        let n = self.segment_starts.len();
        if n > MAX_SEGMENT_STARTS {
            self.segment_starts.drain(..n - MAX_SEGMENT_STARTS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point() -> JoinPoint {
        JoinPoint {
            availability_start_ms: 1_000_000,
            capture_mapping: Some((5_000_000_000, 6000)),
            rate: FrameRate::new(30, 1),
            composition_shift: 6000,
            target: 180_000,
            segment_starts: vec![
                SegmentStart {
                    sequence: 0,
                    start: 0,
                    discontinuity_sequence: 0,
                },
                SegmentStart {
                    sequence: 1,
                    start: 180_000,
                    discontinuity_sequence: 0,
                },
            ],
        }
    }

    /// A frame captured 2 s after the leading rendition's first one, with
    /// 7 ms of jitter, decodes where the leader's frame of that instant
    /// does: on its grid, less its composition shift.
    #[test]
    fn capture_time_lands_on_the_leading_grid() {
        let p = point();
        let c = 5_000_000_000 + 2_007_000_000;
        assert_eq!(p.first_decode_time(Some(c), 0), 180_000);
        assert_eq!(p.segment_at(180_000, None).map(|s| s.sequence), Some(1));
        // 20 ms late is the next frame (33.3 ms grid).
        let c = 5_000_000_000 + 2_020_000_000;
        assert_eq!(p.first_decode_time(Some(c), 0), 183_000);
        // Inside the open segment: no start there.
        assert_eq!(p.segment_at(183_000, None), None);
    }

    /// Past the open segment's target, the leading rendition's next
    /// segment starts at the first random access point: unless one came
    /// between, that is this one.
    #[test]
    fn the_next_segment_is_predicted_by_the_cutting_rule() {
        let p = point();
        let next = p.segment_at(360_000, None);
        assert_eq!(next.map(|s| (s.sequence, s.start)), Some((2, 360_000)));
        assert_eq!(
            p.segment_at(390_000, Some(300_000)).map(|s| s.sequence),
            Some(2)
        );
        // A random access point after the target came before: the leader
        // cut there, not here.
        assert_eq!(p.segment_at(390_000, Some(370_000)), None);
        assert_eq!(p.segment_at(300_000, None), None);
    }

    /// Without capture times, the arrival time decides, on the grid of the
    /// last segment start.
    #[test]
    fn arrival_time_without_capture_times() {
        let mut p = point();
        p.capture_mapping = None;
        assert_eq!(p.first_decode_time(None, 1_000_000 + 2_010), 180_000);
        assert_eq!(p.first_decode_time(Some(7), 1_000_000 + 2_010), 180_000);
        // Before the timeline's start: time 0.
        assert_eq!(p.first_decode_time(None, 10), 0);
    }

    /// A 29.97 fps grid (3003 ticks) is followed exactly far from its
    /// reference.
    #[test]
    fn fractional_rates_stay_on_the_grid() {
        let mut p = point();
        p.rate = FrameRate::new(30000, 1001);
        p.capture_mapping = Some((0, 0));
        p.composition_shift = 0;
        let c = 3600 * 1_000_000_000u64; // an hour in
        let t = p.first_decode_time(Some(c), 0);
        assert_eq!(t % 3003, 0, "{t}");
        assert!(t.abs_diff(3600 * 90_000) <= 1502, "{t}");
    }

    #[test]
    fn segment_starts_are_bounded() {
        let mut p = point();
        p.set_segment_starts(
            (0..200)
                .map(|i| SegmentStart {
                    sequence: i,
                    start: i * 180_000,
                    discontinuity_sequence: 0,
                })
                .collect(),
        );
        assert_eq!(p.segment_starts.len(), MAX_SEGMENT_STARTS);
        assert_eq!(
            p.segment_starts[0].sequence,
            200 - MAX_SEGMENT_STARTS as u64
        );
    }
}

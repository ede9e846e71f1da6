//! `AudioClock`: gives every AAC frame its start, in samples, on the
//! session timeline.
//!
//! An AAC frame is exactly 1,024 samples, so the sample count is the
//! audio's own clock and is exact: frame n starts 1,024·n samples after the
//! anchor. Where the timeline sits comes from the publisher's capture
//! times, mapped onto the session timeline through the same capture clock
//! mapping the video uses (`PtsAligner::capture_mapping`), so audio and
//! video captured together are presented together. Capture times are
//! repaired as for video, on the frame grid:
//!
//! - jitter (within [`GAP_FRAMES`] frames of the grid) is snapped to it;
//! - a capture time further ahead (frames lost upstream, a pause) skips
//!   that many frame slots, which the caller may fill with silence;
//! - a capture time further behind is a frame whose time was already given
//!   (the caller filled it with silence when the audio was late): dropped,
//!   for up to [`LATE_LIMIT_MS`] of audio in a row;
//! - beyond the gap limit either way, or late for longer than that, the
//!   clock jumped: re-anchored, the timeline continuing where it was;
//! - drift (an audio clock that runs at another rate than the capture
//!   clock) shows as a phase error that grows: smoothed over about 64
//!   frames, at [`SLIP_AT`] of a frame it is taken back by one frame slot
//!   (skipped ahead, or this frame dropped), so the audio never strays more
//!   than a little over half a frame from the capture clock, however long
//!   the session.
//!
//! Frames without a capture time follow the previous one.

/// A capture time within this many frames of the grid is jitter.
pub const GAP_FRAMES: i64 = 4;
/// Late frames (behind the grid) are dropped for up to this much audio in
/// a row before the clock is taken to have gone back.
pub const LATE_LIMIT_MS: i64 = 1500;
/// Phase error smoothing: the weight of each frame's error (about 64
/// frames, a second and a half at 44.1 kHz: jitter of a frame either way
/// moves the smoothed error by a twentieth of a frame).
const SMOOTHING: f64 = 1.0 / 64.0;
/// The smoothed phase error, in frames, at which a frame slot is taken
/// back. Above one half, so that the error left after a slip (this minus
/// one) is well inside the other side's threshold.
const SLIP_AT: f64 = 0.55;

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The frame starts at `start` (samples); `skipped` frame slots before
    /// it were left empty (a gap, to fill with silence or leave).
    Place {
        start: i64,
        skipped: u32,
    },
    /// The frame is dropped: its time was already given, or to take back
    /// a drift.
    Late,
    Drift,
}

/// Counts of repairs, for reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AudioRepairs {
    pub snapped: u64,
    pub gaps: u64,
    pub reanchored: u64,
    /// Frame slots skipped or frames dropped to follow a drift.
    pub drift_slips: u64,
    pub late: u64,
}

/// See the module docs. Times are in samples on the session timeline's
/// presentation scale (the video PTS scale, in samples of `rate`).
#[derive(Clone, Debug)]
pub struct AudioClock {
    rate: u32,
    frame: i64,
    /// Start of the next frame on the grid.
    next: Option<i64>,
    /// Added to capture-derived targets since the last re-anchor.
    offset: i64,
    /// Smoothed phase error (target − grid), samples.
    phase: f64,
    /// Samples of consecutive late frames dropped.
    late_run: i64,
    gap_limit: i64,
    /// The next capture time re-anchors (after a publisher reconnect).
    anchor_pending: bool,
    /// End of the last run of silence [`fill`](Self::fill) put in: a frame
    /// whose time falls in it came too late.
    silence_end: Option<i64>,
    repairs: AudioRepairs,
}

impl AudioClock {
    /// `rate` in Hz; `gap_limit` in samples (a capture time further from
    /// the grid is a clock jump).
    pub fn new(rate: u32, frame: u32, gap_limit: i64) -> Self {
        Self {
            rate,
            frame: i64::from(frame.max(1)),
            next: None,
            offset: 0,
            phase: 0.0,
            late_run: 0,
            gap_limit: gap_limit.max(i64::from(frame) * GAP_FRAMES * 2),
            anchor_pending: false,
            silence_end: None,
            repairs: AudioRepairs::default(),
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn frame(&self) -> i64 {
        self.frame
    }

    /// Where the next frame would start, once the first one was placed.
    pub fn next_start(&self) -> Option<i64> {
        self.next
    }

    /// The first frame goes at `sample` (a session continued on the old
    /// timeline); no effect once a frame was placed.
    pub fn start_at(&mut self, sample: i64) {
        if self.next.is_none() {
            self.next = Some(sample);
            self.anchor_pending = false;
        }
    }

    /// The next frame starts no earlier than `sample` (a new publisher's
    /// stream starts after a gap); no effect before the first frame.
    pub fn not_before(&mut self, sample: i64) {
        if let Some(n) = self.next.as_mut() {
            *n = (*n).max(sample);
        }
    }

    pub fn repairs(&self) -> AudioRepairs {
        self.repairs
    }

    /// A new publisher: its capture clock is learned afresh; the timeline
    /// continues where it was.
    pub fn restart(&mut self) {
        self.offset = 0;
        self.phase = 0.0;
        self.late_run = 0;
        self.anchor_pending = true;
    }

    /// Places the next frame. `target`: where its capture time puts it
    /// (samples), if it has one; `first`: where a first frame without one
    /// starts.
    pub fn place(&mut self, target: Option<i64>, first: i64) -> Slot {
        let Some(next) = self.next else {
            let start = target.unwrap_or(first);
            self.next = Some(start.saturating_add(self.frame));
            self.anchor_pending = false;
            return Slot::Place { start, skipped: 0 };
        };
        let Some(t) = target else {
            self.next = Some(next + self.frame);
            return Slot::Place {
                start: next,
                skipped: 0,
            };
        };
        if self.anchor_pending {
            // After a reconnect: the new capture clock sits where the
            // timeline continues.
            self.anchor_pending = false;
            self.offset = next - t;
        }
        let e = t.saturating_add(self.offset) - next;
        let f = self.frame;
        let late_limit = i64::from(self.rate) * LATE_LIMIT_MS / 1000;
        if let Some(end) = self.silence_end {
            let t = t.saturating_add(self.offset);
            if t + f / 2 <= end && end - t <= late_limit && self.late_run < late_limit {
                // Its slot went to silence while it was late.
                self.late_run += f;
                self.repairs.late += 1;
                return Slot::Late;
            }
            self.silence_end = None;
        }
        if e > GAP_FRAMES * f && e <= self.gap_limit {
            // Frames missing upstream: skip their slots.
            let skip = (e + f / 2) / f;
            self.repairs.gaps += 1;
            self.phase = 0.0;
            self.late_run = 0;
            let start = next + skip * f;
            self.next = Some(start + f);
            return Slot::Place {
                start,
                skipped: u32::try_from(skip).unwrap_or(u32::MAX),
            };
        }
        if e < -GAP_FRAMES * f && e >= -self.gap_limit && self.late_run < late_limit {
            // Its time was already given (to silence, or to frames that
            // came in time): drop it.
            self.late_run += f;
            self.repairs.late += 1;
            return Slot::Late;
        }
        if e.abs() > GAP_FRAMES * f {
            // A clock jump: the timeline goes on where it was.
            self.offset -= e;
            self.phase = 0.0;
            self.late_run = 0;
            self.repairs.reanchored += 1;
            self.next = Some(next + f);
            return Slot::Place {
                start: next,
                skipped: 0,
            };
        }
        self.late_run = 0;
        if e != 0 {
            self.repairs.snapped += 1;
        }
        self.phase += (e as f64 - self.phase) * SMOOTHING;
        let half = f as f64 * SLIP_AT;
        if self.phase > half {
            // The grid fell behind the capture clock: skip a slot.
            self.phase -= f as f64;
            self.repairs.drift_slips += 1;
            let start = next + f;
            self.next = Some(start + f);
            return Slot::Place { start, skipped: 1 };
        }
        if self.phase < -half {
            // The grid ran ahead of the capture clock: drop this frame.
            self.phase += f as f64;
            self.repairs.drift_slips += 1;
            return Slot::Drift;
        }
        self.next = Some(next + f);
        Slot::Place {
            start: next,
            skipped: 0,
        }
    }

    /// Takes the next slot for a frame of silence (the audio fell behind
    /// the video it goes with); its start.
    pub fn fill(&mut self, first: i64) -> i64 {
        let start = self.next.unwrap_or(first);
        self.next = Some(start + self.frame);
        self.silence_end = Some(start + self.frame);
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: i64 = 1024;

    fn start(s: Slot) -> i64 {
        match s {
            Slot::Place { start, .. } => start,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn jitter_snaps_and_frames_follow_the_sample_count() {
        let mut c = AudioClock::new(48_000, 1024, 48_000 * 10);
        let mut x: u64 = 7;
        start(c.place(Some(5_000), 0));
        for n in 1..100_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // ±1 frame of jitter.
            let j = (x % (2 * F as u64 + 1)) as i64 - F;
            let s = start(c.place(Some(5_000 + n * F + j), 0));
            assert_eq!(s, 5_000 + n * F, "frame {n}");
        }
        assert_eq!(c.repairs().drift_slips, 0);
    }

    #[test]
    fn gaps_skip_slots_and_late_frames_are_dropped() {
        let mut c = AudioClock::new(48_000, 1024, 48_000 * 10);
        for n in 0..10 {
            start(c.place(Some(n * F), 0));
        }
        // 20 frames missing upstream.
        assert_eq!(
            c.place(Some(30 * F), 0),
            Slot::Place {
                start: 30 * F,
                skipped: 20
            }
        );
        // Frames without capture times follow.
        assert_eq!(start(c.place(None, 0)), 31 * F);
        // The grid was filled up to 40 frames (silence for late audio).
        for _ in 32..40 {
            c.fill(0);
        }
        // The late frames for slots 32..40 are dropped, then it goes on.
        for n in 32..40 {
            assert_eq!(c.place(Some(n * F), 0), Slot::Late, "frame {n}");
        }
        assert_eq!(start(c.place(Some(40 * F), 0)), 40 * F);
    }

    #[test]
    fn clock_jumps_reanchor_and_the_timeline_goes_on() {
        let mut c = AudioClock::new(44_100, 1024, 44_100 * 10);
        for n in 0..10 {
            start(c.place(Some(n * F), 0));
        }
        // An hour ahead, then back a minute: re-anchored, no jump.
        assert_eq!(start(c.place(Some(3_600 * 44_100), 0)), 10 * F);
        assert_eq!(start(c.place(Some(3_600 * 44_100 + F), 0)), 11 * F);
        // Back a minute: late for 1.5 s of frames, then re-anchored.
        let back = 3_600 * 44_100 - 60 * 44_100;
        let mut placed = None;
        for k in 0..200 {
            if let Slot::Place { start, .. } = c.place(Some(back + (2 + k) * F), 0) {
                placed = Some((k, start));
                break;
            }
        }
        let (k, s) = placed.expect("re-anchored");
        assert!(k * F <= 44_100 * LATE_LIMIT_MS / 1000 + F, "{k}");
        assert_eq!(s, 12 * F);
        assert!(c.repairs().reanchored >= 2);
    }

    /// Audio clock 100 ppm fast against the capture clock for an hour, with
    /// jitter: never more than about half a frame off the capture times.
    #[test]
    fn drift_is_followed_for_an_hour() {
        for ppm in [100.0f64, -100.0, 37.0] {
            let rate = 48_000i64;
            let mut c = AudioClock::new(48_000, 1024, rate * 10);
            let frames = 3_600 * rate / F;
            let mut x: u64 = 99;
            let mut max_err = 0i64;
            let mut placed = 0i64;
            for n in 0..frames {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let j = (x % 401) as i64 - 200;
                // The n-th frame's capture time, on a clock where the
                // audio runs `ppm` fast: it covers fewer capture samples.
                let real = (n as f64 * F as f64 / (1.0 + ppm * 1e-6)) as i64;
                if let Slot::Place { start, .. } = c.place(Some(real + j), 0) {
                    placed += 1;
                    if n > 200 {
                        max_err = max_err.max((start - real).abs());
                    }
                }
            }
            assert!(
                max_err <= F * 3 / 4,
                "{ppm} ppm: max error {max_err} samples"
            );
            let expected_slips = (frames as f64 * ppm.abs() * 1e-6) as u64;
            let slips = c.repairs().drift_slips;
            assert!(
                slips.abs_diff(expected_slips) <= 2,
                "{ppm}: {slips} vs {expected_slips}"
            );
            assert!(placed > 0);
        }
    }
}

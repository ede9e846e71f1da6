//! `PtsAligner`: gives every frame a clean PTS and DTS in 90 kHz.
//!
//! Raw Annex B carries no time, so times come from three places, in order of
//! trust: picture order count for the order of pictures (and so B-frame
//! presentation), the frame rate (SPS VUI timing info when present, else the
//! publisher's `target_fps`, else a default) for the spacing, and the
//! publisher's capture times, when sent, for where the frames really sit on
//! the clock.
//!
//! Each frame gets a presentation *slot* on a frame grid: within a POC epoch
//! (from one IDR or mmco5 to the next) slot = epoch base + (POC − base POC) /
//! POC step, and a new epoch starts right after the highest slot used so far.
//! A slot maps to time exactly with integer arithmetic, `anchor + (k − anchor_k)
//! × ticks_num / ticks_den`, so 29.97 fps (3003 ticks) or 23.976 fps (3753.75
//! ticks) never drift, however long the stream.
//!
//! Capture times are repaired, not trusted: jitter within a few frames is
//! snapped to the grid; a jump ahead of several frames (frames lost upstream)
//! skips grid slots; a clock that goes back or jumps further than the gap
//! limit is re-anchored; and a steady drift between the declared and the real
//! rate moves the grid's period toward the real one, so the offset is
//! followed instead of accumulated.
//!
//! DTS is the PTS sequence sorted and delayed by the reorder depth R (the
//! `max_num_reorder_frames` the SPS declares, else a profile default): the
//! n-th DTS is the smallest PTS not yet used once n ≥ R frames have arrived.
//! That keeps DTS strictly increasing and never above PTS without holding
//! frames back, so a frame leaves the engine the moment it is complete.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::frame::TIMESCALE;

/// A frame rate as a fraction: `num / den` frames per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRate {
    pub num: u32,
    pub den: u32,
}

impl FrameRate {
    pub const fn new(num: u32, den: u32) -> Self {
        Self { num, den }
    }
    /// Ticks (90 kHz) per frame, rounded.
    pub fn ticks(self) -> u64 {
        let (n, d) = self.ticks_fraction();
        (n + d / 2) / d.max(1)
    }
    /// Ticks per frame as a fraction.
    pub fn ticks_fraction(self) -> (u64, u64) {
        (TIMESCALE * self.den.max(1) as u64, self.num.max(1) as u64)
    }
}

/// How times are repaired; limits of what is believed.
#[derive(Clone, Copy, Debug)]
pub struct TimingOptions {
    /// A capture time further than this from the grid (either way) is a clock
    /// jump, not a gap, and is re-anchored. 90 kHz ticks.
    pub gap_limit: u64,
}

impl Default for TimingOptions {
    fn default() -> Self {
        Self {
            gap_limit: 10 * TIMESCALE,
        }
    }
}

/// The times given to one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTimes {
    pub pts: u64,
    pub dts: u64,
    /// Nominal frame duration at this point.
    pub duration: u32,
}

/// What a frame brings for timing.
#[derive(Clone, Copy, Debug)]
pub struct TimingInput {
    pub poc: i64,
    /// IDR or mmco5: display order restarts.
    pub poc_resets: bool,
    /// Whether POC orders display (false for POC type 2, where display order
    /// is decode order).
    pub order_by_poc: bool,
    /// Publisher's capture time, ns on its clock.
    pub capture_ns: Option<u64>,
}

/// Counts of repairs, for reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimingRepairs {
    /// Capture times snapped because they jittered off the grid.
    pub snapped: u64,
    /// Gaps in capture time that skipped grid slots.
    pub gaps: u64,
    /// Capture clock went back or jumped: re-anchored.
    pub reanchored: u64,
    /// Grid period adjustments to follow a rate drift.
    pub drift_adjustments: u64,
    /// POC collisions or reorder deeper than declared.
    pub order_repairs: u64,
}

#[derive(Debug)]
pub struct PtsAligner {
    opts: TimingOptions,
    rate: FrameRate,
    /// Grid period as a fraction of ticks.
    period_num: u64,
    period_den: u64,
    anchor_slot: i64,
    anchor_time: i64,
    // Slot assignment.
    epoch_base_slot: i64,
    epoch_base_poc: i64,
    max_slot: i64,
    /// Frames counted into the current epoch: accepted and dropped (dropped
    /// pictures keep their time, so the timeline shows the hole).
    epoch_frames: i64,
    /// Dropped pictures not yet given a slot (decode-order timing).
    dropped_pending: i64,
    poc_gcd: i64,
    poc_offsets_seen: u32,
    /// The POC step per frame assumed until the stream shows its own: 2
    /// (H.264 encoders count fields), 1 for H.265.
    poc_step_hint: i64,
    recent_slots: VecDeque<i64>,
    // Capture mapping: capture ns `c0` sits at timeline time `t0`.
    capture_anchor: Option<(u64, i64)>,
    phase_error: f64,
    /// Recent (slot, capture time) pairs at the frontier, for the real rate.
    samples: VecDeque<(i64, i64)>,
    /// Following a drift: the period is being steered.
    tracking: bool,
    // DTS.
    reorder: usize,
    pending: BinaryHeap<Reverse<u64>>,
    last_dts: Option<u64>,
    /// Decode time of the first frame (0 unless [`PtsAligner::start_at`]
    /// moved it; after a [`restart`](PtsAligner::restart), of the new
    /// stream's first frame), 90 kHz.
    start_dts: u64,
    frames: u64,
    /// Frames since `start_dts` (the first `reorder` of them decode on the
    /// frame grid from it).
    grid_frames: u64,
    /// A new publisher's first frame sets `start_dts` afresh.
    regrid: bool,
    /// After a restart: the new stream's first frame decodes no earlier
    /// than this (90 kHz; see [`PtsAligner::restart_not_before`]).
    restart_floor: Option<u64>,
    repairs: TimingRepairs,
    /// The rate the stream declared (SPS VUI, or the configured fallback).
    declared: FrameRate,
    /// Slot of the capture anchor, for the first rate estimate.
    capture_anchor_slot: i64,
    /// The declared rate was found wrong and overruled: said once.
    rate_overruled: bool,
    rate_note: Option<String>,
    /// Measuring the real rate from capture times (see `apply_capture`).
    learning_rate: bool,
}

/// A capture-time frame rate this far from the declared one (as a fraction
/// of it) overrules the declared rate.
pub const RATE_MISMATCH: f64 = 0.10;
/// On the very first capture interval, a mismatch this large starts
/// measuring the real rate at once (jitter can make one interval look 10 %
/// off, not 25 %).
const FIRST_INTERVAL_MISMATCH: f64 = 0.25;
/// Capture intervals averaged before a measured rate replaces the declared
/// one.
const LEARN_SAMPLES: usize = 12;

/// The common rate within 1 % of `fps`, or `fps` in thousandths.
fn snap_rate(fps: f64) -> FrameRate {
    const COMMON: [(u32, u32); 14] = [
        (10, 1),
        (12, 1),
        (15, 1),
        (20, 1),
        (24000, 1001),
        (24, 1),
        (25, 1),
        (30000, 1001),
        (30, 1),
        (48, 1),
        (50, 1),
        (60000, 1001),
        (60, 1),
        (120, 1),
    ];
    COMMON
        .iter()
        .map(|&(n, d)| (n, d, n as f64 / d as f64))
        .filter(|(_, _, r)| (r - fps).abs() <= r * 0.01)
        .min_by(|a, b| (a.2 - fps).abs().total_cmp(&(b.2 - fps).abs()))
        .map_or_else(
            || FrameRate::new((fps * 1000.0).round().clamp(1.0, 1e7) as u32, 1000),
            |(n, d, _)| FrameRate::new(n, d),
        )
}

fn fmt_rate(r: FrameRate) -> String {
    if r.den <= 1 {
        r.num.to_string()
    } else {
        format!("{:.3}", r.num as f64 / r.den as f64)
    }
}

const RECENT_SLOTS: usize = 64;
const DRIFT_SAMPLES: usize = 128;

impl PtsAligner {
    /// `reorder` is the number of frames a picture may be decoded ahead of
    /// its display (R).
    pub fn new(rate: FrameRate, reorder: u32, opts: TimingOptions) -> Self {
        let (period_num, period_den) = rate.ticks_fraction();
        let reorder = reorder.min(16) as usize;
        let mut s = Self {
            opts,
            rate,
            period_num,
            period_den,
            anchor_slot: 0,
            anchor_time: 0,
            epoch_base_slot: 0,
            epoch_base_poc: 0,
            max_slot: -1,
            epoch_frames: 0,
            dropped_pending: 0,
            poc_gcd: 0,
            poc_offsets_seen: 0,
            poc_step_hint: 2,
            recent_slots: VecDeque::with_capacity(RECENT_SLOTS),
            capture_anchor: None,
            phase_error: 0.0,
            samples: VecDeque::with_capacity(DRIFT_SAMPLES),
            tracking: false,
            reorder,
            pending: BinaryHeap::with_capacity(reorder + 2),
            last_dts: None,
            start_dts: 0,
            grid_frames: 0,
            regrid: false,
            restart_floor: None,
            frames: 0,
            repairs: TimingRepairs::default(),
            declared: rate,
            capture_anchor_slot: 0,
            rate_overruled: false,
            rate_note: None,
            learning_rate: false,
        };
        // Presentation starts R frames after decoding, so the first DTS is 0.
        s.anchor_time = s.span(reorder as i64);
        s
    }

    /// Moves the timeline so the first frame's decode time is `dts` (90 kHz)
    /// instead of 0: a session continued on another node starts where the
    /// old stream ended. Only before the first frame; later it does nothing.
    pub fn start_at(&mut self, dts: u64) {
        if self.frames == 0 && self.max_slot < 0 {
            self.start_dts = dts;
            self.anchor_time = self
                .anchor_time
                .saturating_add(i64::try_from(dts).unwrap_or(i64::MAX));
        }
    }

    pub fn rate(&self) -> FrameRate {
        self.rate
    }

    pub fn reorder(&self) -> usize {
        self.reorder
    }

    /// The POC step per frame to assume until 16 frames show the stream's
    /// own (default 2, as H.264 encoders count; H.265 encoders step by 1).
    pub fn set_poc_step_hint(&mut self, step: i64) {
        self.poc_step_hint = step.max(1);
    }

    pub fn repairs(&self) -> TimingRepairs {
        self.repairs
    }

    /// Once, when the publisher's capture times contradicted the declared
    /// frame rate and the aligner switched to the rate they show: a
    /// sentence saying so, for the session's info and log.
    pub fn take_rate_note(&mut self) -> Option<String> {
        self.rate_note.take()
    }

    /// Capture times are the truth about the frame rate: when they show one
    /// that differs from the declared rate by more than
    /// [`RATE_MISMATCH`], switch to it at `slot`, whose capture-derived
    /// time is `c`, and say so once.
    fn overrule_rate(&mut self, observed_period: f64, slot: i64, c: i64) -> bool {
        let (n, d) = self.declared.ticks_fraction();
        let declared_period = n as f64 / d as f64;
        if self.rate_overruled
            || !observed_period.is_finite()
            || observed_period <= 0.0
            || (observed_period - declared_period).abs() <= declared_period * RATE_MISMATCH
        {
            return false;
        }
        let observed = snap_rate(TIMESCALE as f64 / observed_period);
        self.rate_overruled = true;
        self.rate_note = Some(format!(
            "the stream declares {} fps (SPS VUI timing) but its capture times show {} fps: \
             following the capture times",
            fmt_rate(self.declared),
            fmt_rate(observed)
        ));
        self.rate = observed;
        (self.period_num, self.period_den) = observed.ticks_fraction();
        // This slot sits where its capture time says, if that keeps time
        // moving forward.
        let floor = self.slot_time(self.max_slot).saturating_add(1);
        self.anchor_slot = slot;
        self.anchor_time = c.max(floor);
        self.reset_drift();
        true
    }

    /// Switches the nominal rate (a new SPS with other timing). Takes effect
    /// from the next slot; times already given stay.
    pub fn set_rate(&mut self, rate: FrameRate) {
        if rate == self.rate {
            return;
        }
        let next = self.max_slot + 1;
        self.anchor_time = self.slot_time(next);
        self.anchor_slot = next;
        self.rate = rate;
        self.declared = rate;
        self.rate_overruled = false;
        (self.period_num, self.period_den) = rate.ticks_fraction();
    }

    /// How capture times map onto the timeline: capture time `c0` (ns) is
    /// at timeline time `t0` (90 kHz, the PTS scale), and the timeline runs
    /// at the capture clock's speed from there. `None` until a frame brought
    /// a capture time. The grid follows this mapping (jitter snapped, gaps
    /// skipped, drift steered), so anything else captured on the same clock
    /// (the audio) is placed through it to be presented with the video.
    pub fn capture_mapping(&self) -> Option<(u64, i64)> {
        self.capture_anchor
    }

    /// Continues the timeline after a publisher reconnect: the next frame is
    /// presented right after the last one (or later, see
    /// [`restart_not_before`](Self::restart_not_before)), and the new
    /// publisher's capture clock is learned afresh.
    pub fn restart(&mut self) {
        self.capture_anchor = None;
        self.learning_rate = false;
        self.reset_drift();
        // The old stream's pictures still waiting for their decode slot
        // went with it: the new stream's first frames decode on the grid
        // before its first picture, as at a stream start (decode times
        // taken from the old stream's pictures made the new first frame a
        // frame or more long).
        self.pending.clear();
        self.regrid = true;
        self.restart_floor = None;
    }

    /// After [`restart`](Self::restart): the new stream's first frame
    /// decodes no earlier than `dts` (90 kHz), where the wall clock or the
    /// capture clock puts it after the outage; the timeline moves on by
    /// the difference (a gap, as a session continued on another node has).
    /// A `dts` at or before the old stream's end changes nothing: the new
    /// stream follows right after the old one. Only before the new
    /// stream's first frame.
    pub fn restart_not_before(&mut self, dts: u64) {
        if self.regrid {
            self.restart_floor = Some(dts);
        }
    }

    fn reset_drift(&mut self) {
        self.phase_error = 0.0;
        self.samples.clear();
        self.tracking = false;
    }

    /// Nominal frame duration in ticks.
    pub fn period(&self) -> u64 {
        let d = u128::from(self.period_den.max(1));
        // At most `period_num`: fits.
        ((u128::from(self.period_num) + d / 2) / d) as u64
    }

    /// Time of `k` slots after the anchor, exactly.
    fn span(&self, k: i64) -> i64 {
        let v = k as i128 * self.period_num as i128 / self.period_den.max(1) as i128;
        v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    fn slot_time(&self, slot: i64) -> i64 {
        self.anchor_time
            .saturating_add(self.span(slot - self.anchor_slot))
    }

    /// Gives the next frame in decode order its times.
    pub fn next(&mut self, input: TimingInput) -> FrameTimes {
        let first = self.frames == 0;
        let mut slot = self.assign_slot(&input, first);
        if let Some(floor) = self.restart_floor.take().filter(|_| self.regrid) {
            // The new stream's first frame would decode at `continued`:
            // moved on to the floor, the timeline with it (before its
            // capture time anchors the new capture clock).
            let continued = self
                .slot_time(slot)
                .saturating_sub(self.span(self.reorder as i64).max(0));
            let floor = i64::try_from(floor).unwrap_or(i64::MAX / 4);
            if floor > continued {
                self.anchor_time = self.anchor_time.saturating_add(floor - continued);
            }
        }
        let frontier = slot > self.max_slot;
        if let Some(c) = input.capture_ns {
            if frontier {
                slot = self.apply_capture(c, slot);
            }
        }
        if self.recent_slots.len() == RECENT_SLOTS {
            self.recent_slots.pop_front();
        }
        self.recent_slots.push_back(slot);
        self.max_slot = self.max_slot.max(slot);

        let mut pts = self.slot_time(slot).max(0) as u64;
        if std::mem::take(&mut self.regrid) {
            // A new publisher's first picture: its first frames decode on
            // the grid ending `reorder` frames before it, after the old
            // stream's last decode time.
            let origin = pts.saturating_sub(self.span(self.reorder as i64).max(0) as u64);
            self.start_dts = self.last_dts.map_or(origin, |l| origin.max(l + 1));
            self.grid_frames = 0;
        }
        // DTS: the smallest pending PTS once R frames are ahead.
        self.pending.push(Reverse(pts));
        let mut dts = if self.pending.len() > self.reorder {
            self.pending.pop().map_or(pts, |Reverse(v)| v)
        } else {
            // Stream start: decode on the grid from 0 (or where
            // `start_at` put the timeline, or a new publisher's start).
            self.start_dts
                .saturating_add(self.span(self.grid_frames as i64).max(0) as u64)
        };
        self.grid_frames += 1;
        if let Some(last) = self.last_dts {
            if dts <= last {
                // Reordered deeper than declared: decode one frame later
                // from now on.
                self.repairs.order_repairs += 1;
                if self.pending.len() >= self.reorder {
                    self.reorder = (self.reorder + 1).min(16);
                }
                dts = last + 1;
            }
        }
        if dts > pts {
            self.repairs.order_repairs += 1;
            pts = dts;
        }
        self.last_dts = Some(dts);
        self.frames += 1;
        FrameTimes {
            pts,
            dts,
            duration: self.period().min(u32::MAX as u64) as u32,
        }
    }

    /// `n` pictures were dropped (damaged, or missing upstream as a
    /// `frame_num` gap shows): they keep their place on the timeline.
    pub fn note_dropped(&mut self, n: u32) {
        if self.frames > 0 {
            self.epoch_frames += n as i64;
            self.dropped_pending += n as i64;
        }
    }

    fn assign_slot(&mut self, input: &TimingInput, first: bool) -> i64 {
        if first || input.poc_resets {
            // The new epoch starts after every picture of the last one,
            // including dropped pictures at its end.
            let after_epoch = if first {
                0
            } else {
                self.epoch_base_slot + self.epoch_frames
            };
            self.epoch_base_slot = (self.max_slot + 1).max(after_epoch);
            self.epoch_base_poc = input.poc;
            self.epoch_frames = 0;
            self.dropped_pending = 0;
        }
        self.epoch_frames += 1;
        let slot = if input.order_by_poc {
            let off = input.poc - self.epoch_base_poc;
            if off != 0 {
                self.poc_gcd = gcd_i64(self.poc_gcd, off.abs());
                self.poc_offsets_seen = self.poc_offsets_seen.saturating_add(1);
            }
            // Most H.264 encoders step POC by 2 per frame (H.265 ones by
            // 1: the hint); trust a larger common step only after many
            // frames, and a step of 1 at once.
            let step = match self.poc_gcd {
                0 => self.poc_step_hint,
                1 => 1,
                g if self.poc_offsets_seen >= 16 => g,
                _ => self.poc_step_hint,
            };
            self.epoch_base_slot + off.div_euclid(step)
        } else {
            (self.max_slot + 1 + std::mem::take(&mut self.dropped_pending))
                .max(self.epoch_base_slot)
        };
        if !first && self.recent_slots.contains(&slot) {
            self.repairs.order_repairs += 1;
            return self.max_slot + 1;
        }
        slot
    }

    /// Repairs the slot of a frame at the presentation frontier with its
    /// capture time; may shift later slots (gaps) or the grid (drift).
    fn apply_capture(&mut self, capture_ns: u64, slot: i64) -> i64 {
        let grid = self.slot_time(slot);
        let Some((c0, t0)) = self.capture_anchor else {
            self.capture_anchor = Some((capture_ns, grid));
            self.capture_anchor_slot = slot;
            return slot;
        };
        // Rounded to the nearest tick: 33 333 333 ns is 3000 ticks, not 2999.
        let delta_ticks = ((capture_ns as i128 - c0 as i128) * TIMESCALE as i128)
            .saturating_add(500_000_000)
            .div_euclid(1_000_000_000);
        let c = (t0 as i128 + delta_ticks).clamp(i64::MIN as i128 / 2, i64::MAX as i128 / 2) as i64;
        // Learning the real rate (the first interval was far from the
        // declared one): each frame sits at its capture time until enough
        // intervals average the jitter out; then the measured rate, snapped
        // to a common one, takes over.
        if self.learning_rate {
            let floor = self.slot_time(self.max_slot).saturating_add(1);
            self.anchor_slot = slot;
            self.anchor_time = c.max(floor);
            self.samples.push_back((slot, c));
            if self.samples.len() >= LEARN_SAMPLES {
                self.learning_rate = false;
                let real = slope(&self.samples);
                self.samples.clear();
                if let Some(real) = real {
                    if !self.overrule_rate(real, slot, c) {
                        // A false alarm (jitter): back to the declared rate.
                        (self.period_num, self.period_den) = self.rate.ticks_fraction();
                    }
                }
                self.capture_anchor = Some((capture_ns, self.slot_time(slot)));
                self.capture_anchor_slot = slot;
            }
            return slot;
        }
        // The first interval after the anchor: a rate far from the declared
        // one (beyond what jitter explains) starts learning the real rate at
        // once, before the timeline runs away from the capture clock.
        let slots = slot - self.capture_anchor_slot;
        // An interval beyond the gap limit is a clock jump (handled below),
        // not a frame rate: learning from it made a period of centuries.
        if self.samples.is_empty()
            && !self.rate_overruled
            && slots > 0
            && delta_ticks > 0
            && delta_ticks <= i128::from(self.opts.gap_limit)
        {
            let observed = delta_ticks as f64 / slots as f64;
            let (n, d) = self.rate.ticks_fraction();
            let nominal = n as f64 / d as f64;
            if (observed - nominal).abs() > nominal * FIRST_INTERVAL_MISMATCH {
                self.learning_rate = true;
                self.period_den = 1 << 16;
                self.period_num = (observed * self.period_den as f64).round().max(1.0) as u64;
                self.samples.push_back((self.capture_anchor_slot, t0));
                self.samples.push_back((slot, c));
                let floor = self.slot_time(self.max_slot).saturating_add(1);
                self.anchor_slot = slot;
                self.anchor_time = c.max(floor);
                return slot;
            }
        }
        let e = c - grid;
        let period = self.period().max(1) as i64;
        let limit = self.opts.gap_limit as i64;
        if e > 3 * period && e <= limit {
            // Frames missing upstream: skip their slots.
            let skip = (e + period / 2) / period;
            self.epoch_base_slot += skip;
            self.repairs.gaps += 1;
            self.reset_drift();
            return slot + skip;
        }
        if e.abs() > limit || e < -3 * period {
            self.capture_anchor = Some((capture_ns, grid));
            self.capture_anchor_slot = slot;
            self.repairs.reanchored += 1;
            self.reset_drift();
            return slot;
        }
        if e != 0 {
            self.repairs.snapped += 1;
        }
        if self.samples.len() == DRIFT_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((slot, c));
        // Jitter averages out of the smoothed phase error; a drift does not.
        self.phase_error += (e as f64 - self.phase_error) / 32.0;
        let quarter = period as f64 / 4.0;
        if !self.tracking && self.phase_error.abs() > quarter && self.samples.len() >= 16 {
            self.tracking = true;
        }
        if self.samples.len() >= DRIFT_SAMPLES / 4
            && self.frames.is_multiple_of(32)
            && !self.rate_overruled
        {
            // Enough steady samples: a declared rate off by more than 10 %
            // is overruled (a small drift is only followed).
            if let Some(real) = slope(&self.samples) {
                if self.overrule_rate(real, slot, c) {
                    self.capture_anchor = Some((capture_ns, self.slot_time(slot)));
                    self.capture_anchor_slot = slot;
                    return slot;
                }
            }
        }
        if self.tracking {
            if let Some(real) = slope(&self.samples) {
                let (n, d) = self.rate.ticks_fraction();
                let nominal = n as f64 / d as f64;
                // Steer: the real period, plus a pull that removes the phase
                // error over about 32 frames; settle on the real period once
                // the error is small.
                let settled = self.phase_error.abs() < quarter / 4.0;
                let wanted = if settled {
                    real
                } else {
                    real + self.phase_error / 32.0
                };
                let wanted = wanted.clamp(nominal * 0.5, nominal * 2.0);
                self.anchor_time = grid;
                self.anchor_slot = slot;
                self.period_den = 1 << 16;
                self.period_num = (wanted * self.period_den as f64).round().max(1.0) as u64;
                self.repairs.drift_adjustments += 1;
                if settled {
                    self.tracking = false;
                }
            }
        }
        slot
    }
}

/// Least-squares slope of capture time over slot: the real frame period.
fn slope(samples: &VecDeque<(i64, i64)>) -> Option<f64> {
    let n = samples.len() as f64;
    if n < 2.0 {
        return None;
    }
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x as f64, b + y as f64));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for &(x, y) in samples {
        let dx = x as f64 - mx;
        num += dx * (y as f64 - my);
        den += dx * dx;
    }
    (den > 0.0).then(|| num / den)
}

fn gcd_i64(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(poc: i64, resets: bool) -> TimingInput {
        TimingInput {
            poc,
            poc_resets: resets,
            order_by_poc: true,
            capture_ns: None,
        }
    }

    #[test]
    fn ntsc_rate_does_not_drift_over_an_hour() {
        let mut a = PtsAligner::new(FrameRate::new(30000, 1001), 0, TimingOptions::default());
        let frames = 30000 * 3600 / 1001; // ~107892
        let mut last = None;
        for i in 0..frames as i64 {
            let t = a.next(input((i % 60) * 2, i % 60 == 0));
            assert_eq!(t.pts, i as u64 * 3003);
            assert_eq!(t.dts, t.pts);
            last = Some(t);
        }
        assert_eq!(last.unwrap().pts, (frames as u64 - 1) * 3003);
    }

    #[test]
    fn fractional_period_is_exact() {
        // 23.976 fps: 3753.75 ticks per frame.
        let mut a = PtsAligner::new(FrameRate::new(24000, 1001), 0, TimingOptions::default());
        for i in 0..100_000i64 {
            let t = a.next(input(i * 2, i == 0));
            assert_eq!(t.pts as i64, i * 90000 * 1001 / 24000);
        }
    }

    #[test]
    fn b_frames_get_pts_from_poc_and_dts_in_decode_order() {
        // I0 P3 B1 B2 P6 B4 B5 (display slots), POC = 2 × slot, reorder 1.
        let mut a = PtsAligner::new(FrameRate::new(30, 1), 1, TimingOptions::default());
        let pocs = [
            (0, true),
            (6, false),
            (2, false),
            (4, false),
            (12, false),
            (8, false),
            (10, false),
        ];
        let got: Vec<_> = pocs.iter().map(|&(p, r)| a.next(input(p, r))).collect();
        let pts: Vec<u64> = got.iter().map(|t| t.pts).collect();
        let dts: Vec<u64> = got.iter().map(|t| t.dts).collect();
        assert_eq!(pts, vec![3000, 12000, 6000, 9000, 21000, 15000, 18000]);
        assert_eq!(dts, vec![0, 3000, 6000, 9000, 12000, 15000, 18000]);
        for t in &got {
            assert!(t.pts >= t.dts);
        }
    }

    #[test]
    fn idr_epochs_continue_the_timeline() {
        let mut a = PtsAligner::new(FrameRate::new(25, 1), 0, TimingOptions::default());
        let mut pts = Vec::new();
        for gop in 0..3 {
            for i in 0..5 {
                pts.push(a.next(input(i * 2, i == 0)).pts);
            }
            let _ = gop;
        }
        let want: Vec<u64> = (0..15).map(|i| i * 3600).collect();
        assert_eq!(pts, want);
    }

    #[test]
    fn dropped_pictures_keep_their_place() {
        // Decode-order timing: 3 frames, 2 dropped, then 2 more, then an IDR
        // after 5 more drops at the end of the GOP.
        let mut a = PtsAligner::new(FrameRate::new(30, 1), 0, TimingOptions::default());
        let decode_order = |poc, resets| TimingInput {
            poc,
            poc_resets: resets,
            order_by_poc: false,
            capture_ns: None,
        };
        let mut pts = vec![a.next(decode_order(0, true)).pts];
        pts.push(a.next(decode_order(2, false)).pts);
        a.note_dropped(2);
        pts.push(a.next(decode_order(8, false)).pts);
        a.note_dropped(5);
        pts.push(a.next(decode_order(0, true)).pts);
        assert_eq!(pts, vec![0, 3000, 12000, 30000]);
        // POC timing: the POCs already show the hole; drops at the end of an
        // epoch still move the next IDR.
        let mut a = PtsAligner::new(FrameRate::new(30, 1), 0, TimingOptions::default());
        let mut pts = vec![a.next(input(0, true)).pts, a.next(input(2, false)).pts];
        a.note_dropped(1);
        pts.push(a.next(input(6, false)).pts);
        a.note_dropped(3);
        pts.push(a.next(input(0, true)).pts);
        assert_eq!(pts, vec![0, 3000, 9000, 21000]);
    }

    #[test]
    fn deeper_reorder_than_declared_is_repaired() {
        let mut a = PtsAligner::new(FrameRate::new(30, 1), 0, TimingOptions::default());
        let pocs = [
            (0, true),
            (6, false),
            (2, false),
            (4, false),
            (12, false),
            (8, false),
            (10, false),
        ];
        let mut last_dts = None;
        for &(p, r) in &pocs {
            let t = a.next(input(p, r));
            assert!(t.pts >= t.dts);
            if let Some(l) = last_dts {
                assert!(t.dts > l);
            }
            last_dts = Some(t.dts);
        }
        assert!(a.repairs().order_repairs > 0);
        assert!(a.reorder() >= 1);
    }

    fn with_capture(a: &mut PtsAligner, i: i64, capture_ns: u64) -> FrameTimes {
        a.next(TimingInput {
            poc: i * 2,
            poc_resets: i == 0,
            order_by_poc: true,
            capture_ns: Some(capture_ns),
        })
    }

    #[test]
    fn jittery_capture_times_snap_to_the_grid() {
        let mut a = PtsAligner::new(FrameRate::new(30, 1), 0, TimingOptions::default());
        let mut x: u64 = 12345;
        let base = 1_700_000_000_000_000_000u64;
        for i in 0..10_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // ±10 ms of jitter around the 30 fps grid.
            let jitter = (x % 20_000_001) as i64 - 10_000_000;
            let c = (base as i64 + i * 33_333_333 + jitter) as u64;
            let t = with_capture(&mut a, i, c);
            assert_eq!(t.pts, i as u64 * 3000, "frame {i}");
        }
        assert_eq!(a.repairs().drift_adjustments, 0);
    }

    #[test]
    fn gaps_skip_slots_and_backward_clocks_are_ignored() {
        let mut a = PtsAligner::new(FrameRate::new(30, 1), 0, TimingOptions::default());
        let ns = |slot: u64| 500_000_000_000 + slot * 1_000_000_000 / 30;
        let mut pts = Vec::new();
        for i in 0..10 {
            pts.push(with_capture(&mut a, i, ns(i as u64)).pts);
        }
        // 20 frames lost upstream.
        for i in 10..15 {
            pts.push(with_capture(&mut a, i, ns(i as u64 + 20)).pts);
        }
        assert_eq!(pts[9], 9 * 3000);
        assert_eq!(pts[10], 30 * 3000);
        assert_eq!(pts[14], 34 * 3000);
        // The capture clock goes back a minute: re-anchored, no jump back.
        let t = with_capture(&mut a, 15, ns(35) - 60_000_000_000);
        assert_eq!(t.pts, 35 * 3000);
        let t = with_capture(&mut a, 16, ns(36) - 60_000_000_000);
        assert_eq!(t.pts, 36 * 3000);
        // Hours ahead: re-anchored too.
        let t = with_capture(&mut a, 17, ns(37) + 3 * 3600 * 1_000_000_000);
        assert_eq!(t.pts, 37 * 3000);
        assert!(a.repairs().reanchored >= 2);
        assert_eq!(a.repairs().gaps, 1);
    }

    #[test]
    fn capture_times_overrule_a_wrong_declared_rate_for_ten_minutes() {
        // The SPS says 15 fps; the camera sends 30 frames a second, with
        // capture times jittering by up to ±3 ms, for ten minutes.
        let mut a = PtsAligner::new(FrameRate::new(15, 1), 0, TimingOptions::default());
        let start = 1_790_000_000_000_000_000u64;
        let mut jitter: u64 = 12345;
        let mut first_pts = None;
        for i in 0..30 * 600u64 {
            jitter = jitter
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let j = (jitter >> 33) % 6_000_000;
            let capture = start + i * 1_000_000_000 / 30 + j;
            let t = with_capture(&mut a, i as i64, capture - 3_000_000);
            let pts = t.pts;
            let p0 = *first_pts.get_or_insert(pts);
            // Media time since the first frame vs capture time since it,
            // in ticks: within one frame (3000 ticks at 30 fps).
            let media = pts - p0;
            let captured = i * 3000;
            assert!(
                media.abs_diff(captured) <= 3000,
                "frame {i}: media {media} vs capture {captured}"
            );
        }
        assert_eq!(a.rate(), FrameRate::new(30, 1));
        let note = a.take_rate_note().expect("said once");
        assert!(note.contains("15") && note.contains("30"), "{note}");
        assert!(a.take_rate_note().is_none(), "only once");
    }

    #[test]
    fn rate_drift_is_followed_not_accumulated() {
        // Declared 30 fps, the camera really runs at 29.5 fps, for an hour.
        let mut a = PtsAligner::new(FrameRate::new(30, 1), 0, TimingOptions::default());
        let frames = 29.5f64 as i64 * 3600 + 1800;
        let real_period_ns = 1e9 / 29.5;
        let mut last: Option<FrameTimes> = None;
        let mut max_err = 0i64;
        for i in 0..frames {
            let c = (i as f64 * real_period_ns) as u64 + 1_000;
            let t = with_capture(&mut a, i, c);
            if let Some(l) = last {
                assert!(t.pts > l.pts);
                let d = t.pts - l.pts;
                assert!((2700..=3400).contains(&d), "frame {i}: duration {d}");
            }
            let c_ticks = (c as i128 * 90_000 / 1_000_000_000) as i64;
            if i > 600 {
                max_err = max_err.max((t.pts as i64 - c_ticks).abs());
            }
            last = Some(t);
        }
        // Within one frame of the real clock after an hour (uncorrected it
        // would be a minute off).
        assert!(max_err < 3051, "max error {max_err} ticks");
        assert!(a.repairs().drift_adjustments > 0);
    }

    /// Regression (found by the `pts_aligner` fuzz target): a first capture
    /// interval of centuries was learned as the frame period, and the period
    /// overflowed. It is a clock jump: the times stay on the declared grid.
    #[test]
    fn a_first_capture_interval_beyond_the_gap_limit_is_a_jump_not_a_rate() {
        let mut a = PtsAligner::new(FrameRate::new(2000, 1000), 0, TimingOptions::default());
        let t0 = a.next(TimingInput {
            poc: 0x021e,
            poc_resets: true,
            order_by_poc: false,
            capture_ns: Some(0x1e00_001e_0000_5131),
        });
        a.note_dropped(7);
        let t1 = a.next(TimingInput {
            poc: 0x0200,
            poc_resets: true,
            order_by_poc: true,
            capture_ns: Some(0xffff_0000_0000_0000),
        });
        assert!(t1.pts >= t1.dts && t1.dts > t0.dts);
        // 2 fps: the next slot (after 7 dropped) is 8 periods of 45,000 on.
        assert!(t1.dts - t0.dts <= 8 * 45_000, "{t0:?} {t1:?}");
        assert!(a.period() <= 45_000, "period {}", a.period());
    }
}

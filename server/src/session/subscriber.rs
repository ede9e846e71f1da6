//! What one subscriber gets: the lag policy (skip forward to the next
//! keyframe, then say so), frame-rate thinning that never breaks decoding,
//! and the choice of frames and events. Pure: items in, deliveries out.

use std::sync::Arc;

use super::{SessionEnd, SessionItem};
use crate::engine::{AudioFrame, Frame};

/// What a subscriber asked for.
#[derive(Clone, Copy, Debug)]
pub struct SubscriberOptions {
    pub frames: bool,
    pub events: bool,
    /// Deliver at most this many frames per second (None: all).
    pub max_fps: Option<u32>,
    /// Attach CMAF / MPEG-TS segment bytes to segment events.
    pub segments_cmaf: bool,
    pub segments_ts: bool,
    /// Deliver part events (with bytes as `segments_*` say).
    pub parts: bool,
    /// Deliver the audio track's frames too (with `frames`).
    pub audio: bool,
}

/// One thing to send to the subscriber.
#[derive(Clone, Debug)]
pub enum Delivery {
    Frame(Arc<Frame>),
    /// An audio frame: always decodable, so never held for a keyframe.
    Audio(Arc<AudioFrame>),
    Event(SessionItem),
    Lagged {
        skipped: u64,
        resume_index: u64,
    },
    End(Arc<SessionEnd>),
}

/// Per-subscriber delivery state.
#[derive(Debug)]
pub struct SubscriberFilter {
    opts: SubscriberOptions,
    /// Frames are withheld until a random access point (at start, and after
    /// a lag).
    need_keyframe: bool,
    /// Presentation time of the random access point this subscriber
    /// (re)started at: its leading pictures (earlier in presentation) cannot
    /// be decoded here and are skipped, until the next random access point.
    leading_floor: Option<u64>,
    /// Leading pictures skipped, not yet reported.
    leading_skipped: u32,
    /// Index of the last frame this subscriber was offered, to count the
    /// frames a lag skipped.
    last_index: Option<u64>,
    /// Skipped because of lag, not yet reported.
    skipped: u64,
    lagging: bool,
    thinner: Thinner,
}

impl SubscriberFilter {
    pub fn new(opts: SubscriberOptions) -> Self {
        Self {
            opts,
            need_keyframe: true,
            leading_floor: None,
            leading_skipped: 0,
            last_index: None,
            skipped: 0,
            lagging: false,
            thinner: Thinner::new(opts.max_fps),
        }
    }

    /// The subscriber missed items (it read too slowly and eviction passed
    /// it): resume at the next random access point and report the frames
    /// skipped. `n` counts log items, only a fallback for the report.
    pub fn lagged(&mut self, n: u64) {
        if self.last_index.is_none() {
            self.skipped += n;
        }
        self.lagging = true;
        self.need_keyframe = true;
    }

    /// Decides what to send for one session item.
    pub fn on_item(&mut self, item: SessionItem, out: &mut Vec<Delivery>) {
        match item {
            SessionItem::Frame(f) => self.on_frame(f, out),
            SessionItem::AudioFrame(f) => {
                if self.opts.frames && self.opts.audio {
                    out.push(Delivery::Audio(f));
                }
            }
            SessionItem::Ended(e) => out.push(Delivery::End(e)),
            SessionItem::Part(p) => {
                if self.opts.parts {
                    out.push(Delivery::Event(SessionItem::Part(p)));
                }
            }
            other => {
                if self.opts.events {
                    out.push(Delivery::Event(other));
                }
            }
        }
    }

    fn on_frame(&mut self, f: Arc<Frame>, out: &mut Vec<Delivery>) {
        if !self.opts.frames {
            // It takes no frames (a publisher's own response stream, a
            // `no_frames` viewer): no keyframe to wait for and no leading
            // picture skipped for it. A lag is reported at once: the
            // events among the items passed are gone (`skipped` counts
            // log items then).
            self.need_keyframe = false;
            if std::mem::take(&mut self.lagging) && self.opts.events {
                out.push(Delivery::Lagged {
                    skipped: std::mem::take(&mut self.skipped),
                    resume_index: f.index,
                });
            }
            self.skipped = 0;
            return;
        }
        if self.lagging {
            // Frames between the last one offered and this one are gone.
            if let Some(last) = self.last_index {
                self.skipped = self.skipped.max(f.index.saturating_sub(last + 1));
            }
        }
        self.last_index = Some(f.index);
        if f.random_access {
            self.leading_floor = None;
        }
        if self.need_keyframe {
            if !f.random_access {
                if self.lagging {
                    self.skipped += 1;
                }
                return;
            }
            self.need_keyframe = false;
            self.leading_floor = Some(f.pts);
            if self.lagging {
                self.lagging = false;
                if self.opts.events {
                    out.push(Delivery::Lagged {
                        skipped: std::mem::take(&mut self.skipped),
                        resume_index: f.index,
                    });
                }
                self.skipped = 0;
            }
        }
        if f.is_leading && self.leading_floor.is_some_and(|floor| f.pts < floor) {
            self.leading_skipped += 1;
            return;
        }
        if self.leading_skipped > 0 && self.opts.events {
            let n = std::mem::take(&mut self.leading_skipped);
            out.push(Delivery::Event(SessionItem::Dropped(Arc::new(
                crate::engine::pipeline::DropReport {
                    reason: crate::engine::DropReason::LeadingPicture,
                    count: n,
                    total: u64::from(n),
                    detail: format!(
                        "{n} open-GOP leading picture(s) skipped: they reference pictures before the keyframe this subscriber started at"
                    ),
                    offset: 0,
                },
            ))));
        }
        if self.thinner.admit(&f) {
            out.push(Delivery::Frame(f));
        }
    }
}

/// Thins delivery to a lower frame rate without breaking decoding: only
/// non-reference frames are dropped, unless the rate asks for less than one
/// frame per GOP, and then only whole GOPs (keyframes are the only frames
/// sent, and only some of them).
#[derive(Debug)]
struct Thinner {
    target: Option<f64>,
    credit: f64,
    /// Frames per GOP, last seen.
    gop: u64,
    since_keyframe: u64,
    /// Keyframe-only mode: sending this GOP.
    gop_open: bool,
}

impl Thinner {
    fn new(target: Option<u32>) -> Self {
        Self {
            target: target.filter(|t| *t > 0).map(f64::from),
            credit: 0.0,
            gop: 0,
            since_keyframe: 0,
            gop_open: true,
        }
    }

    fn admit(&mut self, f: &Frame) -> bool {
        let Some(target) = self.target else {
            return true;
        };
        if f.is_keyframe {
            if self.since_keyframe > 0 {
                self.gop = self.since_keyframe;
            }
            self.since_keyframe = 0;
        }
        self.since_keyframe += 1;
        let rate = 90_000.0 / f64::from(f.duration.max(1));
        let ratio = target / rate;
        if ratio >= 1.0 {
            return true;
        }
        let gop = self.gop.max(1) as f64;
        if ratio * gop < 1.0 && self.gop > 0 {
            // Fewer than one frame per GOP wanted: keyframes only, and only
            // as many as the rate allows.
            if f.is_keyframe {
                self.credit = (self.credit + ratio * gop).min(2.0);
                self.gop_open = self.credit >= 1.0;
                if self.gop_open {
                    self.credit -= 1.0;
                }
                return self.gop_open;
            }
            return false;
        }
        self.credit = (self.credit + ratio).min(2.0);
        if f.is_keyframe || f.is_reference {
            // Others depend on it: always sent, paid for later.
            self.credit = (self.credit - 1.0).max(-gop);
            return true;
        }
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(index: u64, key: bool, reference: bool) -> Arc<Frame> {
        Arc::new(Frame {
            index,
            data: Bytes::new(),
            nals: vec![],
            pts: index * 3000,
            dts: index * 3000,
            duration: 3000,
            is_keyframe: key,
            random_access: key,
            sap_type: if key { 1 } else { 0 },
            is_leading: false,
            is_reference: reference,
            segment: 0,
            config_id: 0,
            capture_time_ns: None,
            ingest_time_ns: 0,
        })
    }

    /// Frame `i` presented at `pts`, a random access point or not, a
    /// leading picture or not.
    fn picture(i: u64, pts: u64, ra: bool, leading: bool) -> Arc<Frame> {
        let mut f = (*frame(i, ra, true)).clone();
        f.pts = pts;
        f.is_leading = leading;
        Arc::new(f)
    }

    fn run(filter: &mut SubscriberFilter, frames: impl Iterator<Item = Arc<Frame>>) -> Vec<u64> {
        let mut out = Vec::new();
        for f in frames {
            filter.on_item(SessionItem::Frame(f), &mut out);
        }
        out.iter()
            .filter_map(|d| match d {
                Delivery::Frame(f) => Some(f.index),
                _ => None,
            })
            .collect()
    }

    fn opts(max_fps: Option<u32>) -> SubscriberOptions {
        SubscriberOptions {
            frames: true,
            events: true,
            max_fps,
            segments_cmaf: false,
            segments_ts: false,
            parts: false,
            audio: false,
        }
    }

    #[test]
    fn starts_at_a_keyframe() {
        let mut f = SubscriberFilter::new(opts(None));
        let got = run(&mut f, (0..10).map(|i| frame(i, i == 5, true)));
        assert_eq!(got, vec![5, 6, 7, 8, 9]);
    }

    #[test]
    fn lag_skips_to_next_keyframe_and_reports() {
        let mut f = SubscriberFilter::new(opts(None));
        let mut out = Vec::new();
        f.on_item(SessionItem::Frame(frame(0, true, true)), &mut out);
        f.lagged(7);
        for i in 8..12 {
            f.on_item(SessionItem::Frame(frame(i, i == 10, true)), &mut out);
        }
        let kinds: Vec<String> = out
            .iter()
            .map(|d| match d {
                Delivery::Frame(f) => format!("f{}", f.index),
                Delivery::Lagged {
                    skipped,
                    resume_index,
                } => format!("lag{skipped}@{resume_index}"),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(kinds, vec!["f0", "lag9@10", "f10", "f11"]);
    }

    #[test]
    fn thinning_drops_only_non_reference_frames() {
        // IbbP...: 30 fps, every 3rd frame a reference, keyframe every 30.
        let frames = || (0..300).map(|i| frame(i, i % 30 == 0, i % 3 == 0));
        let mut f = SubscriberFilter::new(opts(Some(15)));
        let got = run(&mut f, frames());
        for i in (0..300).step_by(3) {
            assert!(got.contains(&i), "reference frame {i} must be sent");
        }
        // About 15 of every 30.
        assert!((140..=160).contains(&got.len()), "{}", got.len());
    }

    #[test]
    fn below_one_frame_per_gop_sends_only_some_keyframes() {
        // All-reference frames, a keyframe every 10 frames (3 per second at
        // 30 fps); 1 fps asks for less than one frame per GOP: every third
        // keyframe and nothing else.
        let frames = || (0..600).map(|i| frame(i, i % 10 == 0, true));
        let mut f = SubscriberFilter::new(opts(Some(1)));
        // (The first GOP goes out whole: its length is not known yet.)
        let got: Vec<u64> = run(&mut f, frames())
            .into_iter()
            .filter(|i| *i >= 10)
            .collect();
        assert!(got.iter().all(|i| i % 10 == 0), "{got:?}");
        assert!((17..=20).contains(&got.len()), "{got:?}");
        // At 10 fps a frame per GOP fits: all reference frames are kept.
        let mut f = SubscriberFilter::new(opts(Some(10)));
        assert_eq!(run(&mut f, frames()).len(), 600);
    }

    /// One that takes no frames (a publisher's own response stream) is
    /// told of no leading picture (it was sent none) and of a lag at once.
    #[test]
    fn one_that_takes_no_frames_hears_of_no_leading_picture_and_of_a_lag_at_once() {
        let mut f = SubscriberFilter::new(SubscriberOptions {
            frames: false,
            ..opts(None)
        });
        let mut out = Vec::new();
        for fr in [
            picture(0, 4, true, false),
            picture(1, 2, false, true),
            picture(2, 7, false, false),
        ] {
            f.on_item(SessionItem::Frame(fr), &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        f.lagged(40);
        f.on_item(SessionItem::Frame(picture(43, 90, false, false)), &mut out);
        assert!(
            matches!(
                out.as_slice(),
                [Delivery::Lagged {
                    skipped: 40,
                    resume_index: 43
                }]
            ),
            "{out:?}"
        );
    }

    #[test]
    fn a_joiner_skips_leading_pictures_and_says_so() {
        // Open GOP in decode order: I (pts 4), B (pts 2, leading), B (pts 3,
        // leading), P (pts 7); then the next I (pts 10) whose leading B's a
        // continuous viewer keeps.
        let frames = [
            picture(0, 4, true, false),
            picture(1, 2, false, true),
            picture(2, 3, false, true),
            picture(3, 7, false, false),
            picture(4, 10, true, false),
            picture(5, 8, false, true),
        ];
        let mut f = SubscriberFilter::new(opts(None));
        let mut out = Vec::new();
        for fr in frames {
            f.on_item(SessionItem::Frame(fr), &mut out);
        }
        let kinds: Vec<String> = out
            .iter()
            .map(|d| match d {
                Delivery::Frame(f) => format!("f{}", f.index),
                Delivery::Event(SessionItem::Dropped(d)) => {
                    format!("drop{}:{}", d.reason.as_str(), d.count)
                }
                _ => "other".into(),
            })
            .collect();
        assert_eq!(kinds, vec!["f0", "dropleading_picture:2", "f3", "f4", "f5"]);
    }

    #[test]
    fn events_only_when_asked() {
        let mut f = SubscriberFilter::new(SubscriberOptions {
            frames: true,
            events: false,
            max_fps: None,
            segments_cmaf: false,
            segments_ts: false,
            parts: false,
            audio: false,
        });
        let mut out = Vec::new();
        f.on_item(
            SessionItem::Dropped(Arc::new(crate::engine::pipeline::DropReport {
                reason: crate::engine::DropReason::Truncated,
                count: 1,
                total: 1,
                detail: String::new(),
                offset: 0,
            })),
            &mut out,
        );
        assert!(out.is_empty());
    }
}

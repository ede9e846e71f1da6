//! The live status line of `play` and `demo` on stderr: frames, frame rate,
//! latency, drops and lag, redrawn at most four times a second.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use liveslice_proto::v1 as pb;

use crate::input::now_unix_ns;

/// Redraws on a terminal; elsewhere (a log, a test) a plain line now and
/// then, so the output stays readable.
const TTY_INTERVAL: Duration = Duration::from_millis(250);
const LOG_INTERVAL: Duration = Duration::from_secs(2);

pub struct StatusLine {
    label: String,
    tty: bool,
    last_draw: Option<Instant>,
    drawn: bool,
    pub frames: u64,
    pub bytes: u64,
    pub segments: u64,
    pub dropped: u64,
    pub lag_events: u64,
    pub skipped: u64,
    /// Arrival times of the frames of the last second, for the rate.
    recent: VecDeque<Instant>,
    /// Latency of the last frame, ms, and what it is measured from.
    latency: Option<(f64, &'static str)>,
}

impl StatusLine {
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            tty: std::io::stderr().is_terminal(),
            last_draw: None,
            drawn: false,
            frames: 0,
            bytes: 0,
            segments: 0,
            dropped: 0,
            lag_events: 0,
            skipped: 0,
            recent: VecDeque::new(),
            latency: None,
        }
    }

    pub fn frame(&mut self, info: &pb::FrameInfo, bytes: usize) {
        let now = Instant::now();
        self.frames += 1;
        self.bytes += bytes as u64;
        self.recent.push_back(now);
        // Latency from the publisher's capture time when it sent one (the
        // glass-to-glass part the server can see), else from ingest.
        let now_ns = now_unix_ns();
        let (from, what) = match info.capture_time_ns {
            Some(c) => (c, "capture"),
            None => (info.ingest_time_ns, "ingest"),
        };
        self.latency = Some((now_ns as f64 / 1e6 - from as f64 / 1e6, what));
    }

    pub fn dropped(&mut self, d: &pb::FrameDropped) {
        self.dropped += u64::from(d.count);
    }

    pub fn lagged(&mut self, l: &pb::Lagged) {
        self.lag_events += 1;
        self.skipped += l.skipped_frames;
    }

    fn fps(&mut self, now: Instant) -> usize {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        self.recent.len()
    }

    fn text(&mut self, now: Instant) -> String {
        let fps = self.fps(now);
        let latency = match self.latency {
            Some((ms, what)) => format!("{ms:.0} ms from {what}"),
            None => "-".into(),
        };
        let mut s = format!(
            "{}: {} frames, {} fps, {:.1} MB, {} segments, latency {}, dropped {}, lagged {}",
            self.label,
            self.frames,
            fps,
            self.bytes as f64 / 1e6,
            self.segments,
            latency,
            self.dropped,
            self.lag_events,
        );
        if self.skipped > 0 {
            s.push_str(&format!(" ({} frames skipped)", self.skipped));
        }
        s
    }

    /// Redraws if it is time to.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let interval = if self.tty { TTY_INTERVAL } else { LOG_INTERVAL };
        if self
            .last_draw
            .is_some_and(|t| now.duration_since(t) < interval)
        {
            return;
        }
        self.last_draw = Some(now);
        self.draw(now);
    }

    fn draw(&mut self, now: Instant) {
        let text = self.text(now);
        let mut err = std::io::stderr().lock();
        // Status output is best effort: a closed stderr must not stop playback.
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{text}")
        } else {
            writeln!(err, "{text}")
        };
        let _ = err.flush();
        self.drawn = true;
    }

    /// Prints a message on its own line without garbling the status line.
    pub fn message(&mut self, msg: &str) {
        let mut err = std::io::stderr().lock();
        let _ = if self.tty && self.drawn {
            writeln!(err, "\r\x1b[2K{msg}")
        } else {
            writeln!(err, "{msg}")
        };
        // Redraw the status on the next tick.
        self.last_draw = None;
        self.drawn = false;
    }

    /// Draws the final state and ends the line.
    pub fn finish(&mut self) {
        let now = Instant::now();
        let text = self.text(now);
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            writeln!(err, "\r\x1b[2K{text}")
        } else {
            writeln!(err, "{text}")
        };
    }
}

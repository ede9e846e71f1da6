//! The test stream, split once into access units with their decode times by
//! the server's own engine, and shared by every publisher.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use liveslice_engine::pipeline::ticks_to_ns;
use liveslice_engine::{Event, PipelineOptions, SessionPipeline};

/// High profile with B-frames, 320x180, 30 fps, 6 s (what `--demo` loops).
static DEFAULT_STREAM: &[u8] = include_bytes!("../../testdata/high_bframes_30.h264");
pub const DEFAULT_NAME: &str = "testdata/high_bframes_30.h264 (embedded)";

/// One access unit: Annex B bytes (a slice of the stream's one allocation)
/// and when to send it, relative to the start of a lap.
pub struct AccessUnit {
    pub data: Bytes,
    pub at_ns: u64,
}

pub struct TestStream {
    pub name: String,
    pub aus: Vec<AccessUnit>,
    /// One pass over the stream, in ns of media time: a looping publisher
    /// starts lap `k` at `k * lap_ns`.
    pub lap_ns: u64,
    /// Bytes of one lap.
    pub lap_bytes: u64,
}

impl TestStream {
    /// The embedded stream, or `input` read once into one buffer.
    pub fn load(input: Option<&Path>) -> Result<Arc<Self>> {
        let (name, bytes) = match input {
            None => (DEFAULT_NAME.to_string(), Bytes::from_static(DEFAULT_STREAM)),
            Some(p) => (
                p.display().to_string(),
                Bytes::from(
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
                ),
            ),
        };
        Self::from_bytes(name, bytes).map(Arc::new)
    }

    pub fn from_bytes(name: String, bytes: Bytes) -> Result<Self> {
        if bytes.is_empty() {
            bail!("{name} is empty");
        }
        let mut pipeline = SessionPipeline::new(PipelineOptions::default());
        let mut events = Vec::new();
        // Frames are zero-copy slices of `bytes` (keyframes that lack SPS/PPS
        // get them prepended in a new buffer).
        pipeline.push(bytes, None, 0, false, &mut events);
        pipeline.finish(0, &mut events);
        let mut aus = Vec::new();
        let mut end_ticks = 0u64;
        let mut dropped = 0u64;
        for e in events {
            match e {
                Event::Frame(f) => {
                    end_ticks = end_ticks.max(f.dts + u64::from(f.duration.max(1)));
                    aus.push(AccessUnit {
                        data: f.data.clone(),
                        at_ns: ticks_to_ns(f.dts),
                    });
                }
                Event::Dropped(d) => dropped = dropped.max(d.total),
                Event::Fatal(e) => bail!("{name}: {e}"),
                _ => {}
            }
        }
        if aus.is_empty() {
            bail!("{name} contains no H.264 access units ({dropped} dropped)");
        }
        let lap_bytes = aus.iter().map(|a| a.data.len() as u64).sum();
        Ok(Self {
            name,
            aus,
            lap_ns: ticks_to_ns(end_ticks).max(1),
            lap_bytes,
        })
    }

    /// The average time between access units.
    pub fn frame_period_ns(&self) -> u64 {
        (self.lap_ns / self.aus.len() as u64).max(1)
    }

    pub fn fps(&self) -> f64 {
        self.aus.len() as f64 * 1e9 / self.lap_ns as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_stream_splits_into_30fps_access_units() {
        let s = TestStream::load(None).unwrap();
        assert_eq!(s.aus.len(), 180);
        assert_eq!(s.lap_ns, 6_000_000_000);
        assert!((s.fps() - 30.0).abs() < 1e-9);
        // Decode times strictly increase; every unit is Annex B.
        assert!(s.aus.windows(2).all(|w| w[0].at_ns < w[1].at_ns));
        assert!(s
            .aus
            .iter()
            .all(|a| a.data.starts_with(&[0, 0, 0, 1]) || a.data.starts_with(&[0, 0, 1])));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(TestStream::from_bytes("x".into(), Bytes::from_static(&[1, 2, 3, 4])).is_err());
        assert!(TestStream::from_bytes("x".into(), Bytes::new()).is_err());
    }
}

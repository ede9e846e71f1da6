//! `--demo`: a built-in publisher that loops a committed test stream (High
//! profile with B-frames, 320x180, 30 fps) into a session at real-time
//! pace, so a fresh server has something live to play without any client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::engine::PipelineOptions;
use crate::session::{Registry, SessionOptions};

static STREAM: &[u8] = include_bytes!("../../testdata/high_bframes_30.h264");

/// The demo stream's access units (Annex B each) and their decode times in
/// 90 kHz ticks.
fn access_units() -> Vec<(Bytes, u64)> {
    crate::engine::pipeline::frames_of(Bytes::from_static(STREAM), PipelineOptions::default())
        .iter()
        .map(|f| (f.data.clone(), f.dts))
        .collect()
}

/// Publishes the demo stream into `session_id` until the server stops.
pub fn spawn(registry: Arc<Registry>, pipeline: PipelineOptions, session_id: String) {
    tokio::spawn(async move {
        let aus = access_units();
        let Some(&(_, last_dts)) = aus.last() else {
            return;
        };
        let loop_ticks = last_dts + 3000;
        let grant = match registry.publish(
            &session_id,
            SessionOptions {
                pipeline,
                echo_frames: false,
            },
        ) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "demo session not started");
                return;
            }
        };
        let start = tokio::time::Instant::now();
        for lap in 0u64.. {
            for (data, dts) in &aus {
                let at = lap * loop_ticks + dts;
                tokio::time::sleep_until(start + Duration::from_micros(at * 100 / 9)).await;
                if grant
                    .session
                    .push(grant.generation, data.clone(), None, true)
                    .is_err()
                {
                    return; // ended (server shutdown)
                }
            }
        }
    });
}

//! `--demo`: a built-in publisher that loops a committed test stream (High
//! profile with B-frames, 320x180, 30 fps) and a tone (48 kHz mono AAC, a
//! beep every second) into a session at real-time pace, so a fresh server
//! has something live to play, with sound, without any client. The tone is
//! 24 s long: four laps of the 6 s video, so they loop in step.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::engine::PipelineOptions;
use crate::session::{Registry, SessionOptions};

static STREAM: &[u8] = include_bytes!("../../testdata/high_bframes_30.h264");
static TONE: &[u8] = include_bytes!("../../testdata/tone_48k_mono.aac");

/// The tone's ADTS frames and their times in 90 kHz ticks.
fn audio_frames() -> Vec<(Bytes, u64)> {
    use crate::engine::audio::adts::{AdtsItem, AdtsParser};
    let mut items = Vec::new();
    let mut p = AdtsParser::new();
    p.push(Bytes::from_static(TONE), &mut items);
    p.finish(&mut items);
    let mut out = Vec::new();
    let mut n = 0u64;
    for i in items {
        if let AdtsItem::Frame(f) = i {
            let rate = u64::from(f.header.sample_rate().max(1));
            let start = f.offset as usize;
            let whole = Bytes::from_static(TONE).slice(start..start + f.header.frame_len);
            out.push((whole, n * 1024 * 90_000 / rate));
            n += 1;
        }
    }
    out
}

/// The demo stream's access units (Annex B each) and their decode times in
/// 90 kHz ticks.
fn access_units() -> Vec<(Bytes, u64)> {
    crate::engine::pipeline::frames_of(Bytes::from_static(STREAM), PipelineOptions::default())
        .iter()
        .map(|f| (f.data.clone(), f.dts))
        .collect()
}

/// Publishes the demo stream into `session_id` until the server stops.
pub fn spawn(
    registry: Arc<Registry>,
    pipeline: PipelineOptions,
    session_id: String,
    ladder: Option<Arc<crate::ladder::Ladder>>,
) {
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
        if let Some(l) = ladder.filter(|_| grant.session.claim_ladder()) {
            l.start(registry.clone(), grant.session.clone());
        }
        // One cycle: the video's laps over the tone's length, both tracks
        // in time order.
        let tone = audio_frames();
        let tone_ticks = tone.last().map_or(0, |(_, t)| t + 1920);
        let laps = (tone_ticks / loop_ticks).max(1);
        let mut cycle: Vec<(u64, bool, Bytes)> = Vec::new();
        for lap in 0..laps {
            for (data, dts) in &aus {
                cycle.push((lap * loop_ticks + dts, false, data.clone()));
            }
        }
        let cycle_ticks = laps * loop_ticks;
        for (data, t) in tone {
            if t < cycle_ticks {
                cycle.push((t, true, data));
            }
        }
        cycle.sort_by_key(|(t, audio, _)| (*t, *audio));
        let start = tokio::time::Instant::now();
        for round in 0u64.. {
            for (t, audio, data) in &cycle {
                let at = round * cycle_ticks + t;
                tokio::time::sleep_until(start + Duration::from_micros(at * 100 / 9)).await;
                let pushed = if *audio {
                    grant.session.push_audio(
                        grant.generation,
                        data.clone(),
                        crate::engine::pipeline::AudioInput::Adts,
                        None,
                    )
                } else {
                    grant
                        .session
                        .push(grant.generation, data.clone(), None, true)
                };
                if pushed.is_err() {
                    return; // ended (server shutdown)
                }
            }
        }
    });
}

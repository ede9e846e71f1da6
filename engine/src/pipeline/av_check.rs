//! The A/V fuzz target's input format and invariants, in one place so the
//! `av_pipeline` fuzz target and the regression test over its committed
//! crash inputs (`testdata/fuzz/av_pipeline/`) check the same things.
//!
//! Input: byte 0 sets the segment target (100 + 10·k ms) and the chunk
//! size (1 + 7·(k mod 61) bytes); each chunk is a tag byte then data. Tag
//! bit 0 clear: video (Annex B), bit 2 its timestamp flag; set: audio, raw
//! frames with a 2-byte AudioSpecificConfig in front when bit 3 is set,
//! ADTS otherwise; bit 1: the chunk carries a capture time. A tag with its
//! top four bits set is a publisher reconnect after an outage of (its low
//! four bits) × 500 ms instead. Arrival times advance by about 1 ms a
//! chunk.

use bytes::Bytes;

use super::{AudioInput, Event, PipelineOptions, SessionPipeline};

/// Feeds `input` (the format above) to a fresh pipeline and checks what
/// comes out: every audio frame received ends as a frame or a counted drop;
/// audio frames are numbered on without a gap, come out once each and in
/// order; their times increase; the audio spans of consecutive parts never
/// overlap; video decode times increase, no picture is presented before it
/// is decoded, and segments never overlap (across reconnects too). `Err`
/// names the first invariant broken.
pub fn check_av_input(input: &[u8]) -> Result<(), String> {
    let Some((&k, rest)) = input.split_first() else {
        return Ok(());
    };
    let mut p = SessionPipeline::new(PipelineOptions {
        segment_target_ms: 100 + u32::from(k) * 10,
        part_target_ms: 100,
        max_nal_bytes: 1 << 16,
        max_au_bytes: 1 << 17,
        ..Default::default()
    });
    let mut events = Vec::new();
    let mut now = 1_700_000_000_000_000_000u64;
    for (i, chunk) in rest.chunks(1 + (k as usize % 61) * 7).enumerate() {
        let Some((&tag, data)) = chunk.split_first() else {
            continue;
        };
        if tag & 0xF0 == 0xF0 {
            let outage = u64::from(tag & 0x0F) * 500_000_000;
            p.reconnect(now + outage / 2, &mut events);
            now += outage;
            continue;
        }
        let capture = (tag & 2 == 2).then_some(now.wrapping_add(u64::from(tag) * 7_000_000));
        let data = Bytes::copy_from_slice(data);
        if tag & 1 == 0 {
            p.push(data, capture, now, tag & 4 == 4, &mut events);
        } else if tag & 8 == 8 && data.len() > 2 {
            let asc = data.slice(..2);
            p.push_audio(
                data.slice(2..),
                AudioInput::Raw { asc },
                capture,
                now,
                &mut events,
            );
        } else {
            p.push_audio(data, AudioInput::Adts, capture, now, &mut events);
        }
        now += 1_000_000 + i as u64;
    }
    p.finish(now, &mut events);

    let mut next_audio = None;
    let mut last_time = None;
    let mut span_end = None;
    let mut last_dts = None;
    let mut segment_end = None;
    let mut rate = None;
    // A reconnect was announced, and the new publisher's first segment
    // not seen yet.
    let mut announced = false;
    for e in &events {
        match e {
            Event::Discontinuity => announced = true,
            Event::AudioConfig(c) => rate = Some(u64::from(c.sample_rate.max(1))),
            Event::Frame(f) => {
                if f.pts < f.dts {
                    return Err(format!("frame {} presented before it is decoded", f.index));
                }
                if let Some(l) = last_dts.filter(|l| f.dts <= *l) {
                    return Err(format!("frame {} decodes at {} after {l}", f.index, f.dts));
                }
                last_dts = Some(f.dts);
            }
            Event::Segment(s) => {
                let r = &s.record;
                if let Some(end) = segment_end.filter(|end| r.start < *end) {
                    return Err(format!(
                        "segment {} starts at {} before the last one's end {end}",
                        r.sequence, r.start
                    ));
                }
                segment_end = Some(r.start + r.duration);
                // A new publisher's first segment (after a reconnect): its
                // audio starts with its video (no audio of the old stream,
                // none in a gap).
                // (announced after the old publisher's last segment)
                let first_after_reconnect = std::mem::take(&mut announced);
                if first_after_reconnect && !r.discontinuity {
                    return Err(format!(
                        "segment {}: announced as a reconnect's, but not a discontinuity",
                        r.sequence
                    ));
                }
                let audio = r.audio.as_ref().filter(|a| a.frame_count > 0);
                if let (Some(a), Some(rate), true) = (audio, rate, first_after_reconnect) {
                    let video_start = u128::from(r.start) * u128::from(rate);
                    let audio_start = u128::from(a.start + 1024) * 90_000;
                    if audio_start < video_start {
                        return Err(format!(
                            "segment {} after a reconnect: audio from sample {} before its \
                             video at {} (90 kHz)",
                            r.sequence, a.start, r.start
                        ));
                    }
                }
            }
            Event::AudioFrame(f) => {
                if let Some(n) = next_audio.filter(|n| *n != f.index) {
                    return Err(format!("audio frame {} came where {n} was due", f.index));
                }
                next_audio = Some(f.index + 1);
                if let Some(t) = last_time.filter(|t| f.time <= *t) {
                    return Err(format!(
                        "audio frame {} at {} is not after the one before at {t}",
                        f.index, f.time
                    ));
                }
                last_time = Some(f.time);
            }
            Event::Part(part) => {
                if let Some(a) = part.audio.as_ref().filter(|a| a.frame_count > 0) {
                    if let Some(end) = span_end.filter(|end| a.start < *end) {
                        return Err(format!(
                            "part {}'s audio starts at {} before the last one's end {end}",
                            part.number, a.start
                        ));
                    }
                    span_end = Some(a.end());
                }
            }
            _ => {}
        }
    }
    let s = p.audio_stats();
    if s.frames_in != s.frames + s.frames_dropped {
        return Err(format!("audio frames in ≠ frames out + dropped: {s:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every committed input the fuzz target once failed on passes now.
    #[test]
    fn the_fuzz_regressions_pass() {
        let dir = format!(
            "{}/../testdata/fuzz/av_pipeline",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("testdata/fuzz/av_pipeline") {
            let path = entry.expect("a directory entry").path();
            let input = std::fs::read(&path).expect("a regression input");
            if let Err(e) = super::check_av_input(&input) {
                panic!("{}: {e}", path.display());
            }
            n += 1;
        }
        assert!(n > 0, "no regression inputs in {dir}");
    }
}

//! A session with audio: video and AAC bytes interleaved (arbitrary ADTS,
//! or raw frames with an arbitrary AudioSpecificConfig, with or without
//! capture times), and the invariants checked on what comes out: every
//! audio frame received ends as a frame or a counted drop, audio frames
//! come out once each and in order, their times never go back, and the
//! audio spans of consecutive parts follow each other.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use liveslice_server::engine::pipeline::AudioInput;
use liveslice_server::engine::{Event, PipelineOptions, SessionPipeline};

fuzz_target!(|input: &[u8]| {
    let Some((&k, rest)) = input.split_first() else {
        return;
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
    // Each chunk: a tag byte (track, raw or ADTS, capture time) then data.
    for (i, chunk) in rest.chunks(1 + (k as usize % 61) * 7).enumerate() {
        let Some((&tag, data)) = chunk.split_first() else {
            continue;
        };
        let capture = (tag & 2 == 2).then_some(now.wrapping_add(u64::from(tag) * 7_000_000));
        let data = Bytes::copy_from_slice(data);
        if tag & 1 == 0 {
            p.push(data, capture, now, tag & 4 == 4, &mut events);
        } else if tag & 8 == 8 && data.len() > 2 {
            let asc = data.slice(..2);
            p.push_audio(data.slice(2..), AudioInput::Raw { asc }, capture, now, &mut events);
        } else {
            p.push_audio(data, AudioInput::Adts, capture, now, &mut events);
        }
        now += 1_000_000 + i as u64;
    }
    p.finish(now, &mut events);

    let mut next_audio = 0u64;
    let mut last_time = None;
    let mut span_end = None;
    for e in &events {
        match e {
            Event::AudioFrame(f) => {
                assert_eq!(f.index, next_audio, "audio frames once each, in order");
                next_audio += 1;
                if let Some(t) = last_time {
                    assert!(f.time > t, "audio times increase");
                }
                last_time = Some(f.time);
            }
            Event::Part(part) => {
                if let Some(a) = part.audio.as_ref().filter(|a| a.frame_count > 0) {
                    if let Some(end) = span_end {
                        assert!(a.start >= end, "audio spans never overlap");
                    }
                    span_end = Some(a.end());
                }
            }
            _ => {}
        }
    }
    let s = p.audio_stats();
    assert_eq!(s.frames_in, s.frames + s.frames_dropped, "{s:?}");
});

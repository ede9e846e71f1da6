//! The whole session pipeline: bytes in (arbitrary chunks, capture times
//! and access-unit marks), and the invariants checked on what comes out:
//! decode times increase, every segment starts with a keyframe (unless a
//! forced cut says otherwise), segments hold exactly the frames that were
//! emitted and meet without gaps, the manifest deltas rebuild the
//! manifests exactly, and every access unit ends as a frame or a counted
//! drop.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use liveslice_server::engine::playlist::ManifestState;
use liveslice_server::engine::{Event, PipelineOptions, SessionPipeline};

fuzz_target!(|input: &[u8]| {
    let Some((&k, rest)) = input.split_first() else {
        return;
    };
    let opts = PipelineOptions {
        segment_target_ms: 100 + u32::from(k) * 10,
        window: 1 + (k as usize % 5),
        max_nal_bytes: 1 << 16,
        max_au_bytes: 1 << 17,
        ..Default::default()
    };
    let mut p = SessionPipeline::new(opts);
    let mut events = Vec::new();
    let mut now = 1_700_000_000_000_000_000u64;
    for (i, chunk) in rest.chunks(1 + (k as usize % 97) * 13).enumerate() {
        let capture = (k & 1 == 1).then_some(now.wrapping_add(i as u64 * 33_000_000));
        p.push(
            Bytes::copy_from_slice(chunk),
            capture,
            now,
            k & 2 == 2,
            &mut events,
        );
        now += 1_000_000;
    }
    p.finish(now, &mut events);

    let mut last_dts = None;
    let mut frames = Vec::new();
    let mut hls = ManifestState::default();
    let mut seen_segments = 0u64;
    let mut prev_end = None;
    for e in &events {
        match e {
            Event::Frame(f) => {
                assert!(f.pts >= f.dts);
                if let Some(l) = last_dts {
                    assert!(f.dts > l);
                }
                last_dts = Some(f.dts);
                frames.push(f.clone());
            }
            Event::Segment(s) => {
                let r = &s.record;
                assert_eq!(r.sequence, seen_segments);
                seen_segments += 1;
                let first = frames
                    .iter()
                    .find(|f| f.index == r.first_frame_index)
                    .expect("a segment's first frame was emitted");
                assert_eq!(first.dts, r.start);
                if r.keyframe_aligned {
                    assert!(first.is_keyframe);
                }
                let n = frames.iter().filter(|f| f.segment == r.sequence).count();
                assert_eq!(n as u32, r.frame_count);
                if let Some(end) = prev_end {
                    assert_eq!(end, r.start, "segments meet");
                }
                prev_end = Some(r.start + r.duration);
                hls.apply(&s.manifest.hls_cmaf);
                let m = p.manifests().expect("manifests exist once a segment does");
                let _ = m;
            }
            Event::Ended(u) => hls.apply(&u.hls_cmaf),
            _ => {}
        }
    }
    // No silent loss: every access unit became a frame or a counted drop.
    let st = p.stats();
    assert_eq!(st.access_units, st.frames + st.frames_dropped, "{st:?}");
    assert_eq!(st.frames, frames.len() as u64);
    if let Some(m) = p.manifests() {
        assert_eq!(
            hls.render(),
            m.hls_cmaf().render(),
            "deltas rebuild the playlist"
        );
        let text = m.hls_cmaf().render();
        assert!(text.starts_with("#EXTM3U\n"));
        assert_eq!(text.matches("#EXTINF:").count(), m.segments().count());
    }
});

//! Manifest edits applied to a snapshot: arbitrary segment records (gaps,
//! replays, discontinuities, config changes, odd sizes) are pushed into
//! `Manifests`; a client copy of each manifest taken at an arbitrary point,
//! with every later update's edit applied, must equal the freshly rendered
//! manifest, byte for byte, through `end()` too. And `ManifestState::apply`
//! with arbitrary edits (as they come off the network) never panics.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use liveslice_server::engine::playlist::{ManifestEdit, ManifestState, Manifests, PlaylistOptions};
use liveslice_server::engine::{CodecConfig, SegmentRecord};

#[derive(Arbitrary, Debug)]
struct Rec {
    /// Sequence step from the previous record (0: a replay, >1: a gap).
    seq_step: u8,
    duration: u32,
    frame_count: u16,
    keyframe_aligned: bool,
    sap_type: u8,
    discontinuity: bool,
    config_id: u8,
    byte_size: u32,
    composition_shift: u16,
    /// Take the client copies after this record.
    join_here: bool,
    now_step: u16,
}

#[derive(Arbitrary, Debug)]
struct RawEdit {
    head: String,
    remove_entries: u32,
    append_entries: Vec<String>,
    tail: String,
}

#[derive(Arbitrary, Debug)]
struct Input {
    target_segment_ms: u16,
    max_segment_ms: u16,
    window: u8,
    max_window_bytes: u32,
    start_ms: u32,
    records: Vec<Rec>,
    end: bool,
    raw: Vec<RawEdit>,
}

fn config(id: u32) -> CodecConfig {
    CodecConfig {
        codec: Default::default(),
        hevc: None,
        id,
        sps: Bytes::from_static(&[0x67, 0x64, 0x00, 0x1f]),
        pps: vec![Bytes::from_static(&[0x68, 0xef])],
        width: 320 + id,
        height: 180,
        profile_idc: 100,
        profile_compat: 0,
        level_idc: 31,
        chroma_format_idc: 1,
        bit_depth_luma_minus8: 0,
        bit_depth_chroma_minus8: 0,
        frame_rate_num: 30,
        frame_rate_den: 1,
    }
}

struct Client {
    hls_cmaf: ManifestState,
    hls_ts: ManifestState,
    dash: ManifestState,
}

fn check(m: &Manifests, c: &Client, now_ms: u64) {
    assert_eq!(c.hls_cmaf.render(), m.hls_cmaf().render(), "HLS CMAF");
    assert_eq!(c.hls_ts.render(), m.hls_ts().render(), "HLS TS");
    assert_eq!(c.dash.render(), m.dash(now_ms).render(), "DASH");
}

fuzz_target!(|input: Input| {
    let opts = PlaylistOptions {
        target_segment_ms: u32::from(input.target_segment_ms),
        max_segment_ms: u32::from(input.max_segment_ms),
        window: usize::from(input.window % 12),
        max_window_bytes: u64::from(input.max_window_bytes),
        utc_timing_url: "/time".into(),
        ..Default::default()
    };
    let mut now_ms = 1_700_000_000_000 + u64::from(input.start_ms);
    let mut m = Manifests::new(opts, now_ms);
    let mut client: Option<Client> = None;
    let (mut seq, mut start) = (0u64, 0u64);
    for (i, r) in input.records.iter().take(64).enumerate() {
        if i > 0 {
            seq += u64::from(r.seq_step % 4);
        }
        now_ms += u64::from(r.now_step);
        let rec = SegmentRecord {
            sequence: seq,
            start,
            duration: u64::from(r.duration % 2_000_000),
            frame_count: u32::from(r.frame_count),
            first_frame_index: seq * 60,
            keyframe_aligned: r.keyframe_aligned,
            sap_type: r.sap_type % 5,
            discontinuity: r.discontinuity,
            discontinuity_sequence: 0,
            program_date_time_ms: now_ms,
            byte_size: u64::from(r.byte_size),
            config_id: u32::from(r.config_id % 3),
            composition_shift: u32::from(r.composition_shift),
            audio: None,
        };
        start += rec.duration;
        let cfg = config(rec.config_id);
        let update = m.push(rec, &cfg, now_ms);
        if let Some(c) = &mut client {
            c.hls_cmaf.apply(&update.hls_cmaf);
            c.hls_ts.apply(&update.hls_ts);
            c.dash.apply(&update.dash);
            check(&m, c, now_ms);
        }
        assert!(m.segments().count() <= usize::from(input.window % 12).max(1));
        let text = m.hls_cmaf().render();
        assert_eq!(text.matches("#EXTINF:").count(), m.segments().count());
        if r.join_here && client.is_none() {
            client = Some(Client {
                hls_cmaf: m.hls_cmaf(),
                hls_ts: m.hls_ts(),
                dash: m.dash(now_ms),
            });
        }
    }
    if input.end {
        now_ms += 1;
        let update = m.end(now_ms);
        assert!(update.ended);
        if let Some(c) = &mut client {
            c.hls_cmaf.apply(&update.hls_cmaf);
            c.hls_ts.apply(&update.hls_ts);
            c.dash.apply(&update.dash);
            check(&m, c, now_ms);
        }
        if m.segments().count() > 0 {
            assert!(m.hls_cmaf().render().ends_with("#EXT-X-ENDLIST\n"));
        }
    }

    // Arbitrary edits, as a client would get them off the network.
    let mut state = m.hls_ts();
    for e in input.raw.iter().take(16) {
        let before = state.entries.len();
        let edit = ManifestEdit {
            head: e.head.clone(),
            remove_entries: e.remove_entries,
            append_entries: e.append_entries.clone(),
            tail: e.tail.clone(),
        };
        state.apply(&edit);
        let removed = (e.remove_entries as usize).min(before);
        assert_eq!(
            state.entries.len(),
            before - removed + e.append_entries.len()
        );
        let _ = state.render();
    }
});

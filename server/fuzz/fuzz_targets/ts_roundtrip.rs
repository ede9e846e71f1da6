//! MPEG-TS muxer round trip: several segments of frames built from the
//! input go through one `TsMuxer`; the output is read back with the
//! `mpeg2ts` crate (an independent reader) and compared with the frames:
//! one PES per frame, PTS/DTS, the random access indicator, the ES bytes,
//! and continuity counters that run on across segments. A refused segment
//! writes nothing and keeps the counters.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use liveslice_server::engine::mux::ts::{TsMuxer, TS_TIME_OFFSET};
use liveslice_server::engine::{CodecConfig, Frame, NalSpan};
use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};

#[derive(Arbitrary, Debug)]
struct Nal {
    header: u8,
    body: Vec<u8>,
    empty: bool,
}

#[derive(Arbitrary, Debug)]
struct FrameIn {
    /// DTS step from the previous frame (0: not increasing, refused).
    dts_step: u32,
    /// PTS - DTS.
    pts_delay: u16,
    /// PTS before DTS (refused).
    pts_early: bool,
    key: bool,
    random_access: bool,
    other_config: bool,
    nals: Vec<Nal>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    base_dts: u64,
    no_pps: bool,
    segments: Vec<Vec<FrameIn>>,
}

const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05];
const PPS: &[u8] = &[0x68, 0xce, 0x0f, 0xc8];
const MASK: u64 = (1 << 33) - 1;

fn frame(index: u64, dts: u64, f: &FrameIn) -> Frame {
    let mut data = Vec::new();
    let mut nals = Vec::new();
    for n in f.nals.iter().take(12) {
        data.extend_from_slice(&[0, 0, 1]);
        let start = data.len() as u32;
        if !n.empty {
            data.push(n.header);
            data.extend_from_slice(&n.body[..n.body.len().min(600)]);
        }
        nals.push(NalSpan {
            start,
            end: data.len() as u32,
        });
    }
    let pts = if f.pts_early {
        dts.saturating_sub(1 + u64::from(f.pts_delay))
    } else {
        dts + u64::from(f.pts_delay)
    };
    Frame {
        index,
        data: Bytes::from(data),
        nals,
        pts,
        dts,
        duration: 3000,
        is_keyframe: f.key && f.random_access,
        random_access: f.random_access,
        sap_type: 0,
        is_leading: false,
        is_reference: true,
        segment: 0,
        config_id: if f.other_config { 2 } else { 1 },
        capture_time_ns: None,
        ingest_time_ns: 0,
    }
}

/// The ES a frame must become (built without the muxer): our AUD, the
/// config's SPS/PPS in front of a random access point that lacks either,
/// then the frame's NAL units except AUDs and empty ones.
fn expected_es(f: &Frame, cfg: &CodecConfig) -> Option<Vec<u8>> {
    let nals: Vec<&[u8]> = f
        .nals
        .iter()
        .map(|s| &f.data[s.start as usize..s.end as usize])
        .filter(|n| !n.is_empty() && n[0] & 0x1f != 9)
        .collect();
    if nals.is_empty() {
        return None;
    }
    let has = |t: u8| nals.iter().any(|n| n[0] & 0x1f == t);
    let mut es = vec![0, 0, 0, 1, 0x09, 0xF0];
    if f.random_access && !(has(7) && has(8)) {
        if f.config_id != cfg.id || cfg.pps.is_empty() {
            return None;
        }
        es.extend_from_slice(&[0, 0, 0, 1]);
        es.extend_from_slice(&cfg.sps);
        for p in &cfg.pps {
            es.extend_from_slice(&[0, 0, 0, 1]);
            es.extend_from_slice(p);
        }
    }
    for n in nals {
        es.extend_from_slice(&[0, 0, 0, 1]);
        es.extend_from_slice(n);
    }
    Some(es)
}

fuzz_target!(|input: Input| {
    let cfg = CodecConfig {
        codec: Default::default(),
        hevc: None,
        id: 1,
        sps: Bytes::from_static(SPS),
        pps: if input.no_pps {
            vec![]
        } else {
            vec![Bytes::from_static(PPS)]
        },
        width: 320,
        height: 180,
        profile_idc: 66,
        profile_compat: 0xc0,
        level_idc: 13,
        chroma_format_idc: 1,
        bit_depth_luma_minus8: 0,
        bit_depth_chroma_minus8: 0,
        frame_rate_num: 30,
        frame_rate_den: 1,
    };
    let mut mux = TsMuxer::new();
    let mut out = Vec::new();
    // (frame, its ES) of every segment that was written.
    let mut muxed: Vec<(Frame, Vec<u8>)> = Vec::new();
    let mut dts = input.base_dts % (1 << 40);
    let mut index = 0;
    for seg in input.segments.iter().take(8) {
        let mut frames = Vec::new();
        for (i, f) in seg.iter().take(32).enumerate() {
            if i > 0 || index > 0 {
                dts += u64::from(f.dts_step % 2_000_000);
            }
            frames.push(frame(index, dts, f));
            index += 1;
        }
        // What the muxer must accept: frames, none empty or short of
        // parameter sets, PTS at or after DTS, DTS increasing.
        let es: Vec<Option<Vec<u8>>> = frames.iter().map(|f| expected_es(f, &cfg)).collect();
        let valid = !frames.is_empty()
            && es.iter().all(Option::is_some)
            && frames.iter().all(|f| f.pts >= f.dts)
            && frames.windows(2).all(|w| w[1].dts > w[0].dts);
        let refs: Vec<&Frame> = frames.iter().collect();
        let r = mux.segment(&refs, &cfg);
        assert_eq!(r.is_ok(), valid, "{r:?}");
        if let Ok(bytes) = r {
            assert_eq!(bytes.len() % 188, 0);
            out.extend_from_slice(&bytes);
            muxed.extend(frames.into_iter().zip(es.into_iter().flatten()));
        }
    }

    // Packets: continuity counters per PID across all segments (a packet
    // without payload repeats the last counter), a PCR and the random access
    // indicator on every PES start.
    let mut reader = TsPacketReader::new(&out[..]);
    let mut last_cc: [Option<u8>; 0x2000] = [None; 0x2000];
    let mut starts = Vec::new();
    while let Some(p) = reader.read_ts_packet().expect("a valid TS packet") {
        let pid = usize::from(p.header.pid.as_u16());
        let cc = p.header.continuity_counter.as_u8();
        let expected = match (last_cc[pid], p.payload.is_some()) {
            (None, _) => cc,
            (Some(l), true) => (l + 1) & 0x0F,
            (Some(l), false) => l,
        };
        assert_eq!(cc, expected, "continuity counter on PID {pid:#x}");
        last_cc[pid] = Some(cc);
        if let Some(TsPayload::PesStart(_)) = &p.payload {
            let af = p.adaptation_field.as_ref().expect("adaptation field");
            assert!(af.pcr.is_some(), "PCR on a PES start");
            starts.push(af.random_access_indicator);
        }
    }
    assert_eq!(starts.len(), muxed.len(), "one PES start per frame");
    for ((f, _), ra) in muxed.iter().zip(&starts) {
        assert_eq!(*ra, f.is_keyframe, "random access indicator");
    }

    // PES: count, PTS/DTS, ES bytes.
    let mut reader = PesPacketReader::new(TsPacketReader::new(&out[..]));
    let mut n = 0;
    while let Some(pes) = reader.read_pes_packet().expect("a valid PES") {
        let (f, es) = &muxed[n];
        assert_eq!(
            pes.header.pts.map(|t| t.as_u64()),
            Some((f.pts + TS_TIME_OFFSET) & MASK)
        );
        let dts = pes.header.dts.map(|t| t.as_u64());
        assert_eq!(
            dts,
            (f.pts != f.dts).then_some((f.dts + TS_TIME_OFFSET) & MASK)
        );
        assert_eq!(&pes.data, es);
        n += 1;
    }
    assert_eq!(n, muxed.len(), "PES count");
});

//! CMAF muxer round trip: frames built from the input are muxed with
//! `init_segment` and `media_segment`, the output is read back with
//! `mp4-atom` (an independent reader) and compared with the frames: sample
//! count, sizes, decode times (tfdt + durations), composition offsets, sync
//! flags and the sample bytes. Whatever the input, the muxer returns an
//! error or a segment that reads back exactly; it never panics.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use liveslice_server::engine::mux::cmaf::{init_segment, media_segment};
use liveslice_server::engine::{CodecConfig, Frame, NalSpan, SegmentRecord};
use mp4_atom::{Codec, Decode, Ftyp, Mdat, Moof, Moov, Styp};

#[derive(Arbitrary, Debug)]
struct Nal {
    /// Header byte (its low five bits are the NAL unit type).
    header: u8,
    body: Vec<u8>,
    /// An empty NAL unit (a span of length 0).
    empty: bool,
}

#[derive(Arbitrary, Debug)]
struct FrameIn {
    /// DTS step to the next frame (0 makes decode times not increase).
    dts_step: u16,
    /// PTS - DTS.
    pts_delay: u16,
    key: bool,
    leading: bool,
    nals: Vec<Nal>,
}

#[derive(Arbitrary, Debug)]
struct ConfigIn {
    sps: Vec<u8>,
    pps: Vec<Vec<u8>>,
    width: u32,
    height: u32,
    profile_idc: u8,
    chroma_format_idc: u8,
    bit_depth_luma_minus8: u8,
    bit_depth_chroma_minus8: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    base_dts: u64,
    sequence: u64,
    shift: u16,
    config: ConfigIn,
    frames: Vec<FrameIn>,
    /// Spoil one frame's NAL span: (frame, start, end).
    bad_span: Option<(u8, u32, u32)>,
}

fn frame(index: u64, dts: u64, f: &FrameIn) -> Frame {
    let mut data = Vec::new();
    let mut nals = Vec::new();
    for n in f.nals.iter().take(16) {
        data.extend_from_slice(&[0, 0, 1]);
        let start = data.len() as u32;
        if !n.empty {
            data.push(n.header);
            data.extend_from_slice(&n.body[..n.body.len().min(256)]);
        }
        nals.push(NalSpan {
            start,
            end: data.len() as u32,
        });
    }
    Frame {
        index,
        data: Bytes::from(data),
        nals,
        pts: dts + u64::from(f.pts_delay),
        dts,
        duration: u32::from(f.dts_step),
        is_keyframe: f.key,
        random_access: f.key,
        sap_type: if f.key { 1 } else { 0 },
        is_leading: f.leading,
        is_reference: true,
        segment: 0,
        config_id: 1,
        capture_time_ns: None,
        ingest_time_ns: 0,
    }
}

/// The NAL units a sample keeps: non-empty, not AUD (9) or filler (12).
fn kept(f: &Frame) -> Vec<&[u8]> {
    f.nals
        .iter()
        .filter_map(|s| f.data.get(s.start as usize..s.end as usize))
        .filter(|n| n.first().is_some_and(|h| !matches!(h & 0x1f, 9 | 12)))
        .collect()
}

fn check_init(c: &ConfigIn) {
    let cfg = CodecConfig {
        codec: Default::default(),
        hevc: None,
        id: 1,
        sps: Bytes::copy_from_slice(&c.sps),
        pps: c.pps.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
        width: c.width,
        height: c.height,
        profile_idc: c.profile_idc,
        profile_compat: 0,
        level_idc: 31,
        chroma_format_idc: c.chroma_format_idc,
        bit_depth_luma_minus8: c.bit_depth_luma_minus8,
        bit_depth_chroma_minus8: c.bit_depth_chroma_minus8,
        frame_rate_num: 30,
        frame_rate_den: 1,
    };
    let ext = matches!(c.profile_idc, 100 | 110 | 122 | 144);
    let valid = (1..=65535).contains(&c.width)
        && (1..=65535).contains(&c.height)
        && c.sps.first().is_some_and(|h| h & 0x1f == 7)
        && c.sps.len() <= 65535
        && (1..=255).contains(&c.pps.len())
        && c.pps
            .iter()
            .all(|p| p.first().is_some_and(|h| h & 0x1f == 8) && p.len() <= 65535)
        && (!ext
            || (c.chroma_format_idc <= 3
                && c.bit_depth_luma_minus8 <= 7
                && c.bit_depth_chroma_minus8 <= 7));
    let init = init_segment(&cfg);
    assert_eq!(init.is_ok(), valid, "{init:?}");
    let Ok(init) = init else { return };
    let mut buf = &init[..];
    Ftyp::decode(&mut buf).expect("ftyp");
    let moov = Moov::decode(&mut buf).expect("moov");
    assert!(buf.is_empty(), "init segment: bytes after moov");
    assert_eq!(moov.trak.len(), 1);
    let trak = &moov.trak[0];
    assert_eq!(trak.mdia.mdhd.timescale, 90_000);
    let Codec::Avc1(avc1) = &trak.mdia.minf.stbl.stsd.codecs[0] else {
        panic!("not avc1");
    };
    assert_eq!(
        (u32::from(avc1.visual.width), u32::from(avc1.visual.height)),
        (c.width, c.height)
    );
    assert_eq!(
        avc1.avcc.sequence_parameter_sets,
        std::slice::from_ref(&c.sps)
    );
    assert_eq!(avc1.avcc.picture_parameter_sets, c.pps);
}

fuzz_target!(|input: Input| {
    check_init(&input.config);

    let mut dts = input.base_dts % (1 << 48);
    let mut frames = Vec::new();
    for (i, f) in input.frames.iter().take(64).enumerate() {
        frames.push(frame(i as u64, dts, f));
        dts += u64::from(f.dts_step);
    }
    let end_dts = dts;
    let mut bad = false;
    if let Some((i, start, end)) = input.bad_span {
        if let Some(f) = frames.get_mut(usize::from(i)) {
            if !f.nals.is_empty() {
                f.nals[0] = NalSpan { start, end };
                bad = f.data.get(start as usize..end as usize).is_none();
            }
        }
    }
    let record = SegmentRecord {
        sequence: input.sequence,
        start: frames.first().map_or(0, |f| f.dts),
        duration: end_dts - frames.first().map_or(0, |f| f.dts),
        frame_count: frames.len() as u32,
        first_frame_index: 0,
        keyframe_aligned: true,
        sap_type: 1,
        discontinuity: false,
        discontinuity_sequence: 0,
        program_date_time_ms: 0,
        byte_size: 0,
        config_id: 1,
        composition_shift: u32::from(input.shift),
        audio: None,
    };
    let refs: Vec<&Frame> = frames.iter().collect();
    let out = media_segment(&record, &refs, end_dts);

    // What the muxer must refuse.
    let valid = !frames.is_empty()
        && input.sequence < u64::from(u32::MAX)
        && !bad
        && frames.iter().all(|f| f.duration > 0 && !kept(f).is_empty());
    assert_eq!(out.is_ok(), valid, "{out:?}");
    let Ok(seg) = out else { return };

    let mut buf = &seg[..];
    Styp::decode(&mut buf).expect("styp");
    let moof_start = seg.len() - buf.len();
    let moof = Moof::decode(&mut buf).expect("moof");
    let mdat_start = seg.len() - buf.len();
    let mdat = Mdat::decode(&mut buf).expect("mdat");
    assert!(buf.is_empty(), "bytes after mdat");
    assert_eq!(u64::from(moof.mfhd.sequence_number), input.sequence + 1);
    assert_eq!(moof.traf.len(), 1);
    let traf = &moof.traf[0];
    let tfdt = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
    assert_eq!(tfdt, frames[0].dts);
    assert_eq!(traf.trun.len(), 1);
    let trun = &traf.trun[0];
    assert_eq!(
        moof_start + trun.data_offset.expect("data_offset") as usize,
        mdat_start + 8,
        "data_offset points at the mdat payload"
    );
    let entries: Vec<_> = trun.samples.iter().collect();
    assert_eq!(entries.len(), frames.len(), "sample count");
    let mut t = tfdt;
    let mut rest = &mdat.data[..];
    for (e, f) in entries.iter().zip(&frames) {
        assert_eq!(t, f.dts, "decode time of frame {}", f.index);
        t += u64::from(e.duration.expect("duration"));
        let cts = e.cts.expect("cts");
        assert_eq!(
            i128::from(cts),
            i128::from(f.pts) - i128::from(f.dts) - i128::from(input.shift)
        );
        let flags = e.flags.expect("flags");
        let non_sync = flags & 0x0001_0000 != 0;
        assert_eq!(!non_sync, f.is_keyframe, "sync flag");
        assert_eq!((flags >> 26) & 3 == 1, f.is_leading, "is_leading");
        // The sample: the kept NAL units, each with a 4-byte length.
        let size = e.size.expect("size") as usize;
        assert!(size <= rest.len());
        let (mut sample, tail) = rest.split_at(size);
        rest = tail;
        for nal in kept(f) {
            let (len, after) = sample.split_at(4);
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            assert_eq!(&after[..len], nal);
            sample = &after[len..];
        }
        assert!(sample.is_empty(), "sample holds only its NAL units");
    }
    assert!(rest.is_empty(), "mdat holds only the samples");
    assert_eq!(t, end_dts, "durations add up to the segment's end");
});

//! The CMAF audio track (ISO/IEC 23000-19, AAC media profile): its own init
//! segment (`mp4a` sample entry with `esds`, timescale = the sampling rate)
//! and its own fragments (`moof` + `mdat` of raw AAC frames), one per part,
//! so HLS lists it as an `EXT-X-MEDIA TYPE=AUDIO` rendition and DASH as its
//! own AdaptationSet, beside the video track's files.
//!
//! Track 2 (the video is track 1), so a player that puts both in one
//! buffer can still tell them apart. Every AAC frame is a sync sample;
//! sample durations come from the frames' times (1,024 samples, longer
//! only where the audio has a gap the engine could not fill), and a
//! fragment's `tfdt` is its first frame's time, so the fragments of a
//! track meet exactly. Boxes are written with their sizes patched in after
//! their contents: audio fragments are a few hundred bytes a frame, and
//! nothing here is on the video's per-byte path.

use bytes::{BufMut, Bytes, BytesMut};

use super::cmaf::{
    put_brands, put_full_box, put_unity_matrix, CmafError, LANGUAGE_UND, STYP_BRANDS,
};
use crate::frame::{AudioConfig, AudioFrame};

/// The audio track's id.
pub const AUDIO_TRACK_ID: u32 = 2;

const FTYP_BRANDS: [&[u8; 4]; 4] = [b"iso6", b"cmfc", b"dash", b"caac"];
/// `sample_depends_on` = 2 (depends on no other sample): every AAC frame.
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// `tfhd`: default-base-is-moof, default-sample-flags-present.
const TFHD_FLAGS: u32 = 0x02_0000 | 0x00_0020;
/// `trun`: data offset, per-sample duration and size.
const TRUN_FLAGS: u32 = 0x00_0001 | 0x00_0100 | 0x00_0200;

/// Writes a box whose size is patched in once `f` wrote its contents.
fn boxed(b: &mut BytesMut, kind: &[u8; 4], f: impl FnOnce(&mut BytesMut)) {
    let at = b.len();
    b.put_u32(0);
    b.put_slice(kind);
    f(b);
    let size = (b.len() - at) as u32;
    b[at..at + 4].copy_from_slice(&size.to_be_bytes());
}

fn full_boxed(
    b: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    f: impl FnOnce(&mut BytesMut),
) {
    boxed(b, kind, |b| {
        b.put_u32(u32::from(version) << 24 | (flags & 0x00ff_ffff));
        f(b);
    })
}

/// An MPEG-4 descriptor (ISO/IEC 14496-1 8.3.3): tag, size, contents.
fn descriptor(b: &mut BytesMut, tag: u8, contents: &[u8]) {
    b.put_u8(tag);
    let n = contents.len();
    if n < 0x80 {
        b.put_u8(n as u8);
    } else {
        // Four-byte size form.
        b.put_slice(&[
            0x80 | ((n >> 21) & 0x7f) as u8,
            0x80 | ((n >> 14) & 0x7f) as u8,
            0x80 | ((n >> 7) & 0x7f) as u8,
            (n & 0x7f) as u8,
        ]);
    }
    b.put_slice(contents);
}

/// The `esds` box's ES_Descriptor for `cfg` (ISO/IEC 14496-14 3.1.2).
fn esds(b: &mut BytesMut, cfg: &AudioConfig) {
    full_boxed(b, b"esds", 0, 0, |b| {
        let mut dsi = BytesMut::new();
        descriptor(&mut dsi, 0x05, &cfg.asc);
        let mut dcd = BytesMut::new();
        dcd.put_u8(0x40); // objectTypeIndication: MPEG-4 Audio
        dcd.put_u8(0x15); // streamType 5 (audio), upStream 0, reserved 1
        dcd.put_slice(&[0, 0, 0]); // bufferSizeDB
        dcd.put_u32(0); // maxBitrate
        dcd.put_u32(0); // avgBitrate
        dcd.put_slice(&dsi);
        let mut es = BytesMut::new();
        es.put_u16(AUDIO_TRACK_ID as u16); // ES_ID
        es.put_u8(0); // no dependency, URL or OCR stream
        descriptor(&mut es, 0x04, &dcd);
        descriptor(&mut es, 0x06, &[0x02]); // SLConfigDescriptor: predefined MP4
        descriptor(b, 0x03, &es);
    });
}

/// `ftyp` + `moov` of the audio track: track 2, timescale = the sampling
/// rate, an `mp4a` sample entry whose `esds` carries the
/// AudioSpecificConfig.
pub fn audio_init_segment(cfg: &AudioConfig) -> Result<Bytes, CmafError> {
    let invalid = |reason| CmafError::InvalidConfig { id: cfg.id, reason };
    if cfg.sample_rate == 0 || cfg.asc.is_empty() {
        return Err(invalid(
            "audio config without a rate or AudioSpecificConfig",
        ));
    }
    let rate = cfg.sample_rate;
    let mut b = BytesMut::with_capacity(700);
    put_brands(&mut b, b"ftyp", &FTYP_BRANDS);
    boxed(&mut b, b"moov", |b| {
        full_boxed(b, b"mvhd", 0, 0, |b| {
            b.put_u32(0); // creation_time
            b.put_u32(0); // modification_time
            b.put_u32(rate);
            b.put_u32(0); // duration: live
            b.put_u32(0x0001_0000); // rate 1.0
            b.put_u16(0x0100); // volume 1.0
            b.put_bytes(0, 10);
            put_unity_matrix(b);
            b.put_bytes(0, 24);
            b.put_u32(AUDIO_TRACK_ID + 1); // next_track_ID
        });
        boxed(b, b"trak", |b| {
            full_boxed(b, b"tkhd", 0, 0x7, |b| {
                b.put_u32(0);
                b.put_u32(0);
                b.put_u32(AUDIO_TRACK_ID);
                b.put_u32(0); // reserved
                b.put_u32(0); // duration
                b.put_bytes(0, 8);
                b.put_u16(0); // layer
                b.put_u16(1); // alternate_group
                b.put_u16(0x0100); // volume 1.0
                b.put_u16(0);
                put_unity_matrix(b);
                b.put_u32(0); // width
                b.put_u32(0); // height
            });
            boxed(b, b"mdia", |b| {
                full_boxed(b, b"mdhd", 0, 0, |b| {
                    b.put_u32(0);
                    b.put_u32(0);
                    b.put_u32(rate);
                    b.put_u32(0);
                    b.put_u16(LANGUAGE_UND);
                    b.put_u16(0);
                });
                full_boxed(b, b"hdlr", 0, 0, |b| {
                    b.put_u32(0);
                    b.put_slice(b"soun");
                    b.put_bytes(0, 12);
                    b.put_slice(b"SoundHandler\0");
                });
                boxed(b, b"minf", |b| {
                    full_boxed(b, b"smhd", 0, 0, |b| {
                        b.put_u16(0); // balance
                        b.put_u16(0);
                    });
                    boxed(b, b"dinf", |b| {
                        full_boxed(b, b"dref", 0, 0, |b| {
                            b.put_u32(1);
                            put_full_box(b, 12, b"url ", 0, 1);
                        });
                    });
                    boxed(b, b"stbl", |b| {
                        full_boxed(b, b"stsd", 0, 0, |b| {
                            b.put_u32(1);
                            boxed(b, b"mp4a", |b| {
                                b.put_bytes(0, 6);
                                b.put_u16(1); // data_reference_index
                                b.put_bytes(0, 8); // reserved (version 0)
                                b.put_u16(cfg.channels() as u16);
                                b.put_u16(16); // samplesize
                                b.put_u16(0); // pre_defined
                                b.put_u16(0);
                                // 16.16; rates above 65535 Hz do not fit
                                // (the esds says the rate).
                                b.put_u32(if rate <= 0xFFFF { rate << 16 } else { 0 });
                                esds(b, cfg);
                            });
                        });
                        for table in [b"stts", b"stsc", b"stco"] {
                            full_boxed(b, table, 0, 0, |b| b.put_u32(0));
                        }
                        full_boxed(b, b"stsz", 0, 0, |b| {
                            b.put_u32(0);
                            b.put_u32(0);
                        });
                    });
                });
            });
        });
        boxed(b, b"mvex", |b| {
            full_boxed(b, b"trex", 0, 0, |b| {
                b.put_u32(AUDIO_TRACK_ID);
                b.put_u32(1);
                b.put_u32(0);
                b.put_u32(0);
                b.put_u32(0);
            });
        });
    });
    Ok(b.freeze())
}

/// One audio `moof` + `mdat` (a part's chunk), `mfhd` sequence number
/// `sequence` (the part number plus one, as the video's).
pub fn audio_fragment(sequence: u64, frames: &[&AudioFrame]) -> Result<Bytes, CmafError> {
    let first = frames.first().ok_or(CmafError::EmptySegment)?;
    let seq = sequence
        .checked_add(1)
        .and_then(|s| u32::try_from(s).ok())
        .ok_or(CmafError::SequenceOutOfRange(sequence))?;
    let mut payload: u64 = 0;
    let mut durations = Vec::with_capacity(frames.len());
    for (i, f) in frames.iter().enumerate() {
        let d = match frames.get(i + 1) {
            Some(n) => n.time.checked_sub(f.time).filter(|d| *d > 0).ok_or(
                CmafError::NonIncreasingDts {
                    index: f.index,
                    dts: f.time,
                    next_dts: n.time,
                },
            )?,
            None => u64::from(f.duration.max(1)),
        };
        durations.push(u32::try_from(d).map_err(|_| CmafError::DurationTooLong {
            index: f.index,
            duration: d,
        })?);
        if f.data.is_empty() {
            return Err(CmafError::EmptySample { index: f.index });
        }
        payload += f.data.len() as u64;
    }
    let too_large = || CmafError::SegmentTooLarge {
        frames: frames.len(),
        payload,
    };
    let count = u32::try_from(frames.len()).map_err(|_| too_large())?;
    // moof: 8 + mfhd 16 + traf (8 + tfhd 20 + tfdt 20 + trun 20 + 8n).
    let moof_size = 8 + 16 + 8 + 20 + 20 + 20 + 8 * u64::from(count);
    let data_offset = i32::try_from(moof_size + 8).map_err(|_| too_large())?;
    let mdat_size = u32::try_from(8 + payload).map_err(|_| too_large())?;
    let mut b = BytesMut::with_capacity((moof_size + 8 + payload) as usize);
    boxed(&mut b, b"moof", |b| {
        full_boxed(b, b"mfhd", 0, 0, |b| b.put_u32(seq));
        boxed(b, b"traf", |b| {
            full_boxed(b, b"tfhd", 0, TFHD_FLAGS, |b| {
                b.put_u32(AUDIO_TRACK_ID);
                b.put_u32(SYNC_SAMPLE_FLAGS);
            });
            full_boxed(b, b"tfdt", 1, 0, |b| b.put_u64(first.time));
            full_boxed(b, b"trun", 0, TRUN_FLAGS, |b| {
                b.put_u32(count);
                b.put_i32(data_offset);
                for (f, d) in frames.iter().zip(&durations) {
                    b.put_u32(*d);
                    b.put_u32(f.data.len() as u32);
                }
            });
        });
    });
    debug_assert_eq!(b.len() as u64, moof_size);
    b.put_u32(mdat_size);
    b.put_slice(b"mdat");
    for f in frames {
        b.put_slice(&f.data);
    }
    Ok(b.freeze())
}

/// The `styp` an audio segment starts with (as the video's).
pub fn audio_styp() -> Bytes {
    let mut b = BytesMut::with_capacity(28);
    put_brands(&mut b, b"styp", &STYP_BRANDS);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::config::parse_asc;
    use mp4_atom::{Decode, Moof, Moov};

    fn frame(index: u64, time: u64, len: usize) -> AudioFrame {
        AudioFrame {
            index,
            data: Bytes::from(vec![0x21; len]),
            time,
            pts: time * 90_000 / 48_000,
            duration: 1024,
            segment: 0,
            config_id: 0,
            filler: false,
            capture_time_ns: None,
            ingest_time_ns: 0,
        }
    }

    #[test]
    fn init_segment_parses() {
        let cfg = parse_asc(&[0x11, 0x90]).unwrap();
        let init = audio_init_segment(&cfg).unwrap();
        let mut buf = &init[..];
        let _ftyp = mp4_atom::Ftyp::decode(&mut buf).unwrap();
        let moov = Moov::decode(&mut buf).unwrap();
        let trak = &moov.trak[0];
        assert_eq!(trak.tkhd.track_id, AUDIO_TRACK_ID);
        assert_eq!(trak.mdia.mdhd.timescale, 48_000);
        let codec = &trak.mdia.minf.stbl.stsd.codecs[0];
        match codec {
            mp4_atom::Codec::Mp4a(m) => {
                assert_eq!(m.audio.channel_count, 2);
                assert_eq!(
                    m.esds
                        .es_desc
                        .dec_config
                        .dec_specific
                        .as_ref()
                        .unwrap()
                        .profile,
                    2
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fragment_parses_and_fragments_meet() {
        let frames: Vec<AudioFrame> = (0..10)
            .map(|i| frame(i, 5_000 + i * 1024, 200 + i as usize))
            .collect();
        let refs: Vec<&AudioFrame> = frames.iter().collect();
        let f = audio_fragment(3, &refs).unwrap();
        let mut buf = &f[..];
        let moof = Moof::decode(&mut buf).unwrap();
        assert_eq!(moof.mfhd.sequence_number, 4);
        let traf = &moof.traf[0];
        assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 5_000);
        let trun = &traf.trun[0];
        assert_eq!(trun.samples.len(), 10);
        assert!(trun.samples.iter().all(|e| e.duration == Some(1024)));
        let mdat_at = f.len() - buf.len();
        assert_eq!(&f[mdat_at + 4..mdat_at + 8], b"mdat");
        assert_eq!(
            trun.data_offset,
            Some((mdat_at + 8) as i32),
            "data offset points at the mdat payload"
        );
        assert!(audio_fragment(0, &[]).is_err());
        let back = [&frames[1], &frames[0]];
        assert!(audio_fragment(0, &back).is_err());
    }
}

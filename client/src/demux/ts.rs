//! `liveslice publish` of an MPEG-TS file: its video (H.264/H.265 PES, Annex
//! B) and its first AAC audio stream (ADTS in PES) taken apart with the
//! `mpeg2ts` crate's PES reader, so both go out as the session's two tracks,
//! the audio aligned to the video by their PTS.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
use mpeg2ts::ts::TsPacketReader;

use liveslice_engine::container::Container;

use super::{place_audio, Demuxed};
use crate::publish::AudioTrack;

/// Takes `data` (an MPEG-TS file) apart.
pub fn demux_ts(data: &[u8], name: &str) -> Result<Demuxed> {
    let mut reader = PesPacketReader::new(TsPacketReader::new(std::io::Cursor::new(data)));
    let mut video = Vec::new();
    let mut audio = Vec::new();
    let (mut video_pts, mut audio_pts): (Option<u64>, Option<u64>) = (None, None);
    let mut audio_id = None;
    loop {
        let pes = match reader.read_pes_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => bail!("{name}: not a readable MPEG-TS file: {e}"),
        };
        let id = pes.header.stream_id;
        let pts = pes.header.pts.map(|t| t.as_u64());
        if id.is_video() {
            if let Some(p) = pts {
                video_pts = Some(video_pts.map_or(p, |v| v.min(p)));
            }
            video.extend_from_slice(&pes.data);
        } else if id.is_audio() && audio_id.is_none_or(|a| a == id.as_u8()) {
            audio_id = Some(id.as_u8());
            if audio_pts.is_none() {
                audio_pts = pts;
            }
            audio.extend_from_slice(&pes.data);
        }
    }
    if video.is_empty() {
        bail!("{name}: the MPEG-TS file has no video stream");
    }
    let audio = if audio.is_empty() {
        None
    } else {
        let track = AudioTrack::from_adts(Bytes::from(audio))
            .with_context(|| format!("{name}: its audio is not AAC in ADTS"))?;
        // Where the audio starts against the video (33-bit PTS, 90 kHz).
        let offset_ticks = match (audio_pts, video_pts) {
            (Some(a), Some(v)) => {
                let d = (a.wrapping_sub(v)) & ((1 << 33) - 1);
                if d >= 1 << 32 {
                    d as i64 - (1 << 33)
                } else {
                    d as i64
                }
            }
            _ => 0,
        };
        place_audio(track, offset_ticks * 1_000_000_000 / 90_000)
    };
    Ok(Demuxed {
        video: super::VideoSource::AnnexB(Bytes::from(video)),
        audio,
        container: Container::MpegTs,
        frame_rate: None,
    })
}

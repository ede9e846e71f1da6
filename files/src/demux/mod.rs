//! Container files taken apart for `liveslice publish` and `liveslice
//! package`: an MPEG-TS file ([`ts`], with the `mpeg2ts` crate) or an
//! MP4/MOV file, progressive or fragmented ([`mp4`], boxes decoded by the
//! `mp4-atom` crate), into the video as an Annex B elementary stream and
//! the first AAC track as ADTS frames placed against the video.

pub mod mp4;
pub mod ts;

use crate::error::Result;
use bytes::Bytes;
use liveslice_engine::container::{detect, Container, SNIFF_BYTES};

use crate::AudioTrack;

/// A container's video as an Annex B elementary stream (parameter sets in
/// front of every random access point).
pub enum VideoSource {
    /// Made whole while taking the file apart (MPEG-TS: PES payloads).
    AnnexB(Bytes),
    /// Made an access unit at a time from the file (MP4/MOV samples).
    Mp4(Box<mp4::Mp4Video>),
    /// Read a PES packet at a time from the file (MPEG-TS).
    Ts(Box<ts::TsVideo>),
}

impl std::fmt::Debug for VideoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VideoSource::AnnexB(b) => write!(f, "AnnexB({} bytes)", b.len()),
            VideoSource::Mp4(v) => v.fmt(f),
            VideoSource::Ts(v) => v.fmt(f),
        }
    }
}

#[cfg(test)]
impl VideoSource {
    /// The whole stream as one buffer.
    pub fn into_bytes(self) -> Result<Bytes> {
        match self {
            VideoSource::AnnexB(b) => Ok(b),
            VideoSource::Mp4(v) => v.to_annexb(),
            VideoSource::Ts(v) => {
                let mut all = Vec::new();
                let mut p = v.payloads();
                while let Some(data) = p.next_payload()? {
                    all.extend_from_slice(&data);
                }
                Ok(Bytes::from(all))
            }
        }
    }
}

/// A demuxed container file.
pub struct Demuxed {
    /// The video elementary stream.
    pub video: VideoSource,
    /// The audio track, placed against the video: its frames' times are
    /// from the video's first presented frame.
    pub audio: Option<AudioTrack>,
    /// The container's name (for messages).
    pub container: Container,
    /// The file has an AAC track that was not read (taken apart without
    /// its audio; an MPEG-TS file's is only known once its video is read:
    /// [`ts::TsVideoPayloads::audio_seen`]).
    pub audio_left_out: bool,
    /// The video's frame rate from the container's timing (frames per
    /// second, when constant and whole): the `--fps` for a stream whose SPS
    /// carries no timing.
    pub frame_rate: Option<u32>,
}

/// Takes a regular file's bytes apart when they are a container this
/// module reads (MPEG-TS, MP4/MOV); `None` for anything else (raw Annex B,
/// or a container refused elsewhere with the command that extracts it).
/// `file`: the file `data` maps, if any; `with_audio`: read its AAC track
/// too (`package`, which writes the video only, does not).
pub fn demux_file(
    data: &Bytes,
    file: Option<std::sync::Arc<std::fs::File>>,
    name: &str,
    with_audio: bool,
) -> Option<Result<Demuxed>> {
    match detect(&data[..data.len().min(SNIFF_BYTES)])? {
        Container::MpegTs => Some(ts::demux_ts(data, file, name, with_audio)),
        Container::Mp4 => Some(mp4::demux_mp4(data, file, name, with_audio)),
        Container::Matroska | Container::Flv => None,
    }
}

/// How far before the video a frame may start and still be taken as
/// starting with it: rounding between two time scales, not a frame.
pub const ROUNDING_NS: i64 = 1_000_000;

/// Moves an audio track by `offset_ns` (its first frame's presentation
/// time minus the video's first), leaving out frames that would then
/// start before the video (the encoder's priming, usually): the session's
/// audio starts with its video. A frame within [`ROUNDING_NS`] before it
/// (time-scale rounding) starts at 0. `None` when nothing is left.
pub fn place_audio(mut track: AudioTrack, offset_ns: i64) -> Option<AudioTrack> {
    track.frames = track
        .frames
        .into_iter()
        .filter_map(|(f, t)| {
            let t = t as i64 + offset_ns;
            (t >= -ROUNDING_NS).then_some((f, t.max(0) as u64))
        })
        .collect();
    track.length_ns = (track.length_ns as i64 + offset_ns).max(0) as u64;
    (!track.frames.is_empty()).then_some(track)
}

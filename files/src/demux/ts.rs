//! `liveslice publish` and `package` of an MPEG-TS file: its video
//! (H.264/H.265 PES, Annex B) and its first AAC audio stream (ADTS in PES)
//! taken apart with the `mpeg2ts` crate's PES reader, so both go out as the
//! session's two tracks, the audio aligned to the video by their PTS. The
//! video stays in the file: it is read again, a PES packet at a time, when
//! it is sent or packaged.

use std::fs::File;
use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{bail, Context, Result};
use bytes::Bytes;
use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
use mpeg2ts::ts::TsPacketReader;

use liveslice_engine::container::Container;

use super::{place_audio, Demuxed, VideoSource};
use crate::AudioTrack;

/// Reads a file from a position of its own with positional reads
/// (`pread`): readers of one open file never move each other, and nothing
/// of the file is mapped into this process.
struct FileCursor {
    file: Arc<File>,
    pos: u64,
    /// `pos`, shared with whoever reports progress.
    shared: Arc<AtomicU64>,
}

impl Read for FileCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        self.shared.store(self.pos, Ordering::Relaxed);
        Ok(n)
    }
}

/// A file read from its start, buffered.
fn from_start(file: &Arc<File>, shared: Arc<AtomicU64>) -> BufReader<FileCursor> {
    BufReader::with_capacity(
        1 << 16,
        FileCursor {
            file: file.clone(),
            pos: 0,
            shared,
        },
    )
}

/// An MPEG-TS file's video, read from the file one PES packet at a time
/// (each time from its start): a file of any size is never held whole.
pub struct TsVideo {
    file: Arc<File>,
    name: String,
    /// A read of its payloads passed over an audio PES packet.
    audio_seen: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for TsVideo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsVideo").field("name", &self.name).finish()
    }
}

impl TsVideo {
    /// The video PES payloads (Annex B) from the file's start.
    pub fn payloads(&self) -> TsVideoPayloads {
        let position = Arc::new(AtomicU64::new(0));
        TsVideoPayloads {
            reader: PesPacketReader::new(TsPacketReader::new(from_start(
                &self.file,
                position.clone(),
            ))),
            name: self.name.clone(),
            audio_seen: self.audio_seen.clone(),
            position,
        }
    }

    /// Whether a read of its payloads passed over an audio PES packet.
    pub fn payloads_saw_audio(&self) -> bool {
        self.audio_seen.load(Ordering::Relaxed)
    }

    /// The file's size, bytes.
    pub fn size(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }
}

/// See [`TsVideo::payloads`].
pub struct TsVideoPayloads {
    reader: PesPacketReader<TsPacketReader<BufReader<FileCursor>>>,
    name: String,
    audio_seen: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes of the file read so far.
    position: Arc<AtomicU64>,
}

impl TsVideoPayloads {
    /// Bytes of the file read so far (buffered ahead of the packets
    /// handed out by at most 64 KiB).
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Relaxed)
    }

    /// The next video PES packet's payload; `None` at the end.
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            match self.reader.read_pes_packet() {
                Ok(Some(p)) if p.header.stream_id.is_video() => return Ok(Some(p.data)),
                Ok(Some(p)) => {
                    if p.header.stream_id.is_audio() {
                        self.audio_seen.store(true, Ordering::Relaxed);
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => bail!("{}: not a readable MPEG-TS file: {e}", self.name),
            }
        }
    }

    /// Whether an audio PES packet was passed over so far.
    pub fn audio_seen(&self) -> bool {
        self.audio_seen.load(Ordering::Relaxed)
    }
}

/// Takes `data` (an MPEG-TS file) apart. With `file` (the file `data`
/// maps), it is read with positional reads instead, and its video is left
/// in the file ([`TsVideo`]); only the audio is held, and without
/// `with_audio` the file is not read at all here (its video is read when
/// it is packaged).
pub fn demux_ts(
    data: &[u8],
    file: Option<Arc<File>>,
    name: &str,
    with_audio: bool,
) -> Result<Demuxed> {
    match &file {
        Some(f) if !with_audio => Ok(Demuxed {
            video: VideoSource::Ts(Box::new(TsVideo {
                file: f.clone(),
                name: name.to_string(),
                audio_seen: Arc::default(),
            })),
            audio: None,
            audio_left_out: false,
            container: Container::MpegTs,
            frame_rate: None,
        }),
        Some(f) => demux_from(from_start(f, Arc::default()), file.clone(), name),
        None => demux_from(std::io::Cursor::new(data), None, name),
    }
}

fn demux_from<R: Read>(input: R, file: Option<Arc<File>>, name: &str) -> Result<Demuxed> {
    let mut reader = PesPacketReader::new(TsPacketReader::new(input));
    let keep_video = file.is_none();
    let mut video = Vec::new();
    let mut video_bytes = 0usize;
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
            video_bytes += pes.data.len();
            if keep_video {
                video.extend_from_slice(&pes.data);
            }
        } else if id.is_audio() && audio_id.is_none_or(|a| a == id.as_u8()) {
            audio_id = Some(id.as_u8());
            if audio_pts.is_none() {
                audio_pts = pts;
            }
            audio.extend_from_slice(&pes.data);
        }
    }
    if video_bytes == 0 {
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
        video: match file {
            Some(file) => VideoSource::Ts(Box::new(TsVideo {
                file,
                name: name.to_string(),
                audio_seen: Arc::default(),
            })),
            None => VideoSource::AnnexB(Bytes::from(video)),
        },
        audio,
        audio_left_out: false,
        container: Container::MpegTs,
        frame_rate: None,
    })
}

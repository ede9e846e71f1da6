//! Muxing by part: each closed [`PartRecord`] is muxed once, as a CMAF
//! chunk and as a run of MPEG-TS packets, and a segment's bytes are its
//! parts' bytes — CMAF: [`cmaf::styp`] then the chunks; MPEG-TS: the
//! concatenation. The server (as parts close, outside any lock) and the
//! on-disk tree writer both mux through [`PartMuxer`], so their segments are
//! the same bytes.

use std::sync::Arc;

use bytes::Bytes;

use super::{cmaf, cmaf_audio, ts};
use crate::frame::{AudioConfig, AudioFrame, CodecConfig, Frame, PartRecord};

/// Why a part could not be muxed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartMuxError {
    #[error("part {part} (segment {segment}): CMAF: {source}")]
    Cmaf {
        part: u64,
        segment: u64,
        source: cmaf::CmafError,
    },
    #[error("part {part} (segment {segment}): MPEG-TS: {source}")]
    Ts {
        part: u64,
        segment: u64,
        source: ts::TsError,
    },
    #[error("part {part} (segment {segment}): CMAF audio: {source}")]
    CmafAudio {
        part: u64,
        segment: u64,
        source: cmaf::CmafError,
    },
    #[error("part {part} (segment {segment}) has {got} audio frames, its record says {want}")]
    AudioFrameCount {
        part: u64,
        segment: u64,
        got: usize,
        want: u32,
    },
    #[error("part {part} (segment {segment}) has {got} frames, its record says {want}")]
    FrameCount {
        part: u64,
        segment: u64,
        got: usize,
        want: u32,
    },
}

/// One part, muxed: shared bytes, never copied again.
#[derive(Clone, Debug)]
pub struct MuxedPart {
    pub record: Arc<PartRecord>,
    /// `moof` + `mdat` (no `styp`).
    pub cmaf: Bytes,
    /// PAT, PMT, then the frames' PES packets (video and audio).
    pub ts: Bytes,
    /// The audio track's `moof` + `mdat` (empty without audio frames).
    pub audio_cmaf: Bytes,
}

/// Which output formats to mux.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formats {
    pub cmaf: bool,
    pub ts: bool,
}

impl Default for Formats {
    fn default() -> Self {
        Self {
            cmaf: true,
            ts: true,
        }
    }
}

/// Muxes a session's parts in order. Holds the MPEG-TS continuity counters,
/// which run on from part to part; CMAF chunks are independent.
#[derive(Clone, Debug, Default)]
pub struct PartMuxer {
    ts: ts::TsMuxer,
    formats: Formats,
}

impl PartMuxer {
    pub fn new(formats: Formats) -> Self {
        Self {
            ts: ts::TsMuxer::new(),
            formats,
        }
    }

    /// The MPEG-TS continuity counters the next part starts from (see
    /// [`ts::TsMuxer::continuity`]).
    pub fn ts_continuity(&self) -> [u8; 4] {
        self.ts.continuity()
    }

    /// Continues another muxer's MPEG-TS continuity counters.
    pub fn set_ts_continuity(&mut self, c: [u8; 4]) {
        self.ts.set_continuity(c);
    }

    /// Muxes one part. `frames` are its frames in decode order (exactly
    /// `part.frame_count` of them), `config` its codec configuration.
    /// Nothing is written, and the TS counters stay, on an error.
    pub fn mux(
        &mut self,
        part: Arc<PartRecord>,
        frames: &[&Frame],
        config: &CodecConfig,
    ) -> Result<MuxedPart, PartMuxError> {
        self.mux_av(part, frames, Some(config), None)
    }

    /// [`mux`](Self::mux) with the part's audio: `audio` its audio frames
    /// (exactly those its record's `audio` span names) and the session's
    /// audio format. The MPEG-TS packets carry both tracks; the CMAF audio
    /// track is its own chunk. Without video frames (an audio-only session)
    /// `config` may be `None` and only the audio is muxed.
    pub fn mux_av(
        &mut self,
        part: Arc<PartRecord>,
        frames: &[&Frame],
        config: Option<&CodecConfig>,
        audio: Option<(&[&AudioFrame], &AudioConfig)>,
    ) -> Result<MuxedPart, PartMuxError> {
        let want_audio = part.audio.as_ref().map_or(0, |a| a.frame_count);
        let got_audio = audio.map_or(0, |(a, _)| a.len());
        if audio.is_some() && got_audio != want_audio as usize {
            return Err(PartMuxError::AudioFrameCount {
                part: part.number,
                segment: part.segment,
                got: got_audio,
                want: want_audio,
            });
        }
        let audio = audio.filter(|(a, _)| !a.is_empty());
        let config = config.filter(|_| !frames.is_empty());
        if frames.len() != part.frame_count as usize {
            return Err(PartMuxError::FrameCount {
                part: part.number,
                segment: part.segment,
                got: frames.len(),
                want: part.frame_count,
            });
        }
        let cmaf = match config {
            Some(config) if self.formats.cmaf => {
                cmaf::part_chunk_of(&part, frames, part.start + part.duration, config.codec)
                    .map_err(|source| PartMuxError::Cmaf {
                        part: part.number,
                        segment: part.segment,
                        source,
                    })?
            }
            _ => Bytes::new(),
        };
        let audio_cmaf = match audio {
            Some((a, _)) if self.formats.cmaf => cmaf_audio::audio_fragment(part.number, a)
                .map_err(|source| PartMuxError::CmafAudio {
                    part: part.number,
                    segment: part.segment,
                    source,
                })?,
            _ => Bytes::new(),
        };
        let ts = if self.formats.ts && (config.is_some() || audio.is_some()) {
            self.ts
                .part_av(frames, config, audio, part.index == 0)
                .map_err(|source| PartMuxError::Ts {
                    part: part.number,
                    segment: part.segment,
                    source,
                })?
        } else {
            Bytes::new()
        };
        Ok(MuxedPart {
            record: part,
            cmaf,
            ts,
            audio_cmaf,
        })
    }
}

/// The pieces of a CMAF segment made of `parts` (its parts, in order):
/// `styp`, then each chunk. Shared bytes; concatenated they are the segment.
pub fn cmaf_segment_pieces<'a>(parts: impl IntoIterator<Item = &'a MuxedPart>) -> Vec<Bytes> {
    std::iter::once(cmaf::styp())
        .chain(parts.into_iter().map(|p| p.cmaf.clone()))
        .collect()
}

/// The pieces of the CMAF audio segment made of `parts`: `styp`, then each
/// part's audio chunk (parts without audio have none).
pub fn cmaf_audio_segment_pieces<'a>(parts: impl IntoIterator<Item = &'a MuxedPart>) -> Vec<Bytes> {
    std::iter::once(cmaf_audio::audio_styp())
        .chain(
            parts
                .into_iter()
                .filter(|p| !p.audio_cmaf.is_empty())
                .map(|p| p.audio_cmaf.clone()),
        )
        .collect()
}

/// The pieces of an MPEG-TS segment made of `parts`: each part's packets.
pub fn ts_segment_pieces<'a>(parts: impl IntoIterator<Item = &'a MuxedPart>) -> Vec<Bytes> {
    parts.into_iter().map(|p| p.ts.clone()).collect()
}

/// Pieces joined into one buffer (for a consumer that needs contiguous
/// bytes; HTTP sends the pieces as they are).
pub fn concat(pieces: &[Bytes]) -> Bytes {
    match pieces {
        [one] => one.clone(),
        _ => {
            let mut b = Vec::with_capacity(pieces.iter().map(Bytes::len).sum());
            for p in pieces {
                b.extend_from_slice(p);
            }
            Bytes::from(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Event, PipelineOptions, SessionPipeline};

    fn stream() -> Bytes {
        Bytes::from(
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../testdata/high_bframes_30.h264"
            ))
            .unwrap_or_default(),
        )
    }

    /// A segment muxed by parts is a valid CMAF segment with one `moof` per
    /// part, and its TS bytes are the TS parts joined; with one part per
    /// segment the bytes equal the whole-segment muxers' output.
    #[test]
    fn segments_are_their_parts() {
        let data = stream();
        assert!(!data.is_empty(), "testdata/high_bframes_30.h264");
        for part_ms in [0u32, 500] {
            let mut p = SessionPipeline::new(PipelineOptions {
                part_target_ms: part_ms,
                ..Default::default()
            });
            let mut events = Vec::new();
            p.push(data.clone(), None, 1_000_000_000, false, &mut events);
            p.finish(2_000_000_000, &mut events);
            let mut frames: Vec<Arc<Frame>> = Vec::new();
            let mut config = None;
            let mut muxer = PartMuxer::new(Formats::default());
            let mut whole_ts = ts::TsMuxer::new();
            let mut parts: Vec<MuxedPart> = Vec::new();
            let mut segments = 0;
            for e in events {
                match e {
                    Event::Config(c) => config = Some(c),
                    Event::Frame(f) => frames.push(f),
                    Event::Part(rec) => {
                        let first = (rec.first_frame_index - frames[0].index) as usize;
                        let fs: Vec<&Frame> = frames[first..first + rec.frame_count as usize]
                            .iter()
                            .map(|f| f.as_ref())
                            .collect();
                        let cfg = config.as_ref().expect("config before frames");
                        parts.push(muxer.mux(rec, &fs, cfg).expect("mux"));
                    }
                    Event::Segment(s) => {
                        segments += 1;
                        let rec = &s.record;
                        let mine: Vec<&MuxedPart> = parts
                            .iter()
                            .filter(|p| p.record.segment == rec.sequence)
                            .collect();
                        let cmaf = concat(&cmaf_segment_pieces(mine.iter().copied()));
                        let ts_bytes = concat(&ts_segment_pieces(mine.iter().copied()));
                        let moofs = cmaf.windows(4).filter(|w| w == b"moof").count();
                        assert_eq!(moofs, mine.len());
                        assert_eq!(&cmaf[4..8], b"styp");
                        assert_eq!(ts_bytes.len() % 188, 0);
                        let first = (rec.first_frame_index - frames[0].index) as usize;
                        let fs: Vec<&Frame> = frames[first..first + rec.frame_count as usize]
                            .iter()
                            .map(|f| f.as_ref())
                            .collect();
                        let cfg = config.as_ref().expect("config");
                        let whole = whole_ts.segment(&fs, cfg).expect("ts");
                        if part_ms == 0 {
                            assert_eq!(mine.len(), 1);
                            let seg = cmaf::media_segment(rec, &fs, rec.start + rec.duration)
                                .expect("cmaf");
                            assert_eq!(cmaf.len(), seg.len());
                            // Same boxes but the mfhd sequence (part number
                            // vs segment number): compare the mdat.
                            assert_eq!(cmaf[cmaf.len() - 64..], seg[seg.len() - 64..]);
                            assert_eq!(ts_bytes, whole);
                        } else {
                            assert!(mine.len() > 1);
                            // Extra PAT/PMT per part; same number of frames.
                            assert!(ts_bytes.len() > whole.len());
                        }
                    }
                    _ => {}
                }
            }
            assert!(segments >= 2);
        }
    }

    #[test]
    fn a_part_with_the_wrong_frames_is_refused() {
        let mut muxer = PartMuxer::default();
        let rec = Arc::new(PartRecord {
            number: 0,
            segment: 0,
            index: 0,
            start: 0,
            duration: 3000,
            first_frame_index: 0,
            frame_count: 2,
            independent: true,
            byte_size: 0,
            config_id: 0,
            composition_shift: 0,
            audio: None,
        });
        let err = muxer.mux(rec, &[], &CodecConfig::default()).unwrap_err();
        assert!(matches!(
            err,
            PartMuxError::FrameCount {
                got: 0,
                want: 2,
                ..
            }
        ));
    }
}

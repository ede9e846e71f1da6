//! An AAC track (ADTS frames) read from a file: what `liveslice publish`
//! sends beside the video.

use bytes::Bytes;

use crate::error::{bail, Result};

/// An audio track to publish beside the video: ADTS frames and their
/// times (ns from the track's start), looped on their own length.
#[derive(Clone, Debug)]
pub struct AudioTrack {
    pub frames: Vec<(Bytes, u64)>,
    /// The track's length, ns (its last frame's end).
    pub length_ns: u64,
}

impl AudioTrack {
    /// The ADTS frames of `data` (bytes that are not ADTS frames are left
    /// out, as the server would).
    pub fn from_adts(data: Bytes) -> Result<Self> {
        use liveslice_engine::audio::adts::{AdtsItem, AdtsParser};
        let mut items = Vec::new();
        let mut p = AdtsParser::new();
        p.push(data.clone(), &mut items);
        p.finish(&mut items);
        let mut frames = Vec::new();
        let mut end = 0;
        for i in items {
            if let AdtsItem::Frame(f) = i {
                let rate = u64::from(f.header.sample_rate().max(1));
                let at = frames.len() as u64 * 1024 * 1_000_000_000 / rate;
                end = at + 1024 * 1_000_000_000 / rate;
                let start = f.offset as usize;
                frames.push((data.slice(start..start + f.header.frame_len), at));
            }
        }
        if frames.is_empty() {
            bail!("the audio file has no ADTS frames (AAC in ADTS, e.g. ffmpeg -c:a aac -f adts)");
        }
        Ok(Self {
            frames,
            length_ns: end,
        })
    }
}

//! The AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1): parsed from what a
//! publisher of raw AAC frames sends, and built from an ADTS header, so
//! every session's audio has one for `esds` (CMAF) and its fields for ADTS
//! (MPEG-TS, gRPC).
//!
//! Supported: the AAC object types with 1,024-sample frames — 1 Main,
//! 2 LC, 3 SSR, 4 LTP — and HE-AAC (5) and HE-AAC v2 (29) signalled
//! explicitly over one of them (timed on the AAC core's rate, which is
//! what an ADTS header of the same stream states), channel configurations
//! 1–7. Refused with a reason: 960-sample framing, channel configuration 0
//! (a program config element), other object types.

use bytes::Bytes;

use super::adts::{AdtsHeader, SAMPLE_RATES};
use crate::frame::AudioConfig;

/// Why an AudioSpecificConfig (or an ADTS header) cannot be carried.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AudioConfigError {
    #[error("the AudioSpecificConfig is too short")]
    Truncated,
    #[error("audio object type {0} is not AAC with 1,024-sample frames (supported: 1-4, and 5/29 over them)")]
    ObjectType(u8),
    #[error("960-sample AAC frames (frameLengthFlag 1) are not supported")]
    FrameLength960,
    #[error("channel configuration 0 (channels in a program config element) is not supported")]
    ChannelConfig0,
    #[error("channel configuration {0} is reserved")]
    ReservedChannels(u8),
    #[error("sampling frequency {0} Hz has no ADTS index")]
    SampleRate(u32),
    #[error("sampling frequency index {0} is reserved")]
    SampleRateIndex(u8),
    #[error(
        "{0} raw data blocks in one ADTS frame are not supported (one AAC frame per ADTS frame)"
    )]
    RawBlocks(u8),
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Result<u32, AudioConfigError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self
                .data
                .get(self.pos / 8)
                .ok_or(AudioConfigError::Truncated)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    fn object_type(&mut self) -> Result<u8, AudioConfigError> {
        let t = self.read(5)?;
        let t = if t == 31 { 32 + self.read(6)? } else { t };
        Ok(u8::try_from(t).unwrap_or(u8::MAX))
    }

    /// `samplingFrequencyIndex` and its rate (explicit when the index is 15).
    fn frequency(&mut self) -> Result<(u8, u32), AudioConfigError> {
        let i = self.read(4)? as u8;
        match i {
            15 => {
                let rate = self.read(24)?;
                let idx = SAMPLE_RATES
                    .iter()
                    .position(|r| *r == rate)
                    .ok_or(AudioConfigError::SampleRate(rate))?;
                Ok((idx as u8, rate))
            }
            13 | 14 => Err(AudioConfigError::SampleRateIndex(i)),
            _ => Ok((i, SAMPLE_RATES[usize::from(i)])),
        }
    }
}

fn check_channels(c: u8) -> Result<(), AudioConfigError> {
    match c {
        0 => Err(AudioConfigError::ChannelConfig0),
        1..=7 => Ok(()),
        c => Err(AudioConfigError::ReservedChannels(c)),
    }
}

/// Parses an AudioSpecificConfig into an [`AudioConfig`] (id 0).
pub fn parse_asc(asc: &[u8]) -> Result<AudioConfig, AudioConfigError> {
    let mut b = Bits { data: asc, pos: 0 };
    let object_type = b.object_type()?;
    let (mut index, mut rate) = b.frequency()?;
    let channel_config = b.read(4)? as u8;
    let mut core = object_type;
    if object_type == 5 || object_type == 29 {
        // Explicit SBR (and PS): the extension rate, then the core's type.
        // The core rate stays the timescale.
        let _extension = b.frequency()?;
        core = b.object_type()?;
    }
    if !(1..=4).contains(&core) {
        return Err(AudioConfigError::ObjectType(core));
    }
    // GASpecificConfig.
    if b.read(1)? == 1 {
        return Err(AudioConfigError::FrameLength960);
    }
    check_channels(channel_config)?;
    if index > 12 {
        // Unreachable: `frequency` maps every rate to 0..=12.
        index = 3;
        rate = 48_000;
    }
    Ok(AudioConfig {
        id: 0,
        object_type,
        core_object_type: core,
        sample_rate: rate,
        sample_rate_index: index,
        channel_config,
        asc: Bytes::copy_from_slice(asc),
    })
}

/// The [`AudioConfig`] (id 0) an ADTS header states, with its two-byte
/// AudioSpecificConfig.
pub fn from_adts(h: &AdtsHeader) -> Result<AudioConfig, AudioConfigError> {
    if h.raw_blocks != 1 {
        return Err(AudioConfigError::RawBlocks(h.raw_blocks));
    }
    check_channels(h.channel_config)?;
    let ot = h.object_type;
    let asc = [
        (ot << 3) | (h.sample_rate_index >> 1),
        ((h.sample_rate_index & 1) << 7) | (h.channel_config << 3),
    ];
    Ok(AudioConfig {
        id: 0,
        object_type: ot,
        core_object_type: ot,
        sample_rate: h.sample_rate(),
        sample_rate_index: h.sample_rate_index,
        channel_config: h.channel_config,
        asc: Bytes::copy_from_slice(&asc),
    })
}

/// Whether two configs are the same audio format (ids aside).
pub fn same_format(a: &AudioConfig, b: &AudioConfig) -> bool {
    (
        a.object_type,
        a.core_object_type,
        a.sample_rate,
        a.channel_config,
    ) == (
        b.object_type,
        b.core_object_type,
        b.sample_rate,
        b.channel_config,
    )
}

/// A silent AAC frame (`raw_data_block`) for `cfg`, when one is known:
/// AAC-LC, channel configurations 1–6, any sampling rate (the block has no
/// scale factor bands, so it does not depend on the rate). These are what
/// ffmpeg's AAC encoder writes for digital silence; `ffmpeg` decodes each
/// to zeros (checked by `server/tests/audio.rs`).
pub fn silent_frame(cfg: &AudioConfig) -> Option<&'static [u8]> {
    if cfg.core_object_type != 2 || cfg.object_type != 2 {
        return None;
    }
    Some(match cfg.channel_config {
        1 => &[0x01, 0x18, 0x20, 0x07],
        2 => &[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c],
        3 => &[0x01, 0x18, 0x20, 0x01, 0x08, 0x80, 0x23, 0x04, 0x60, 0xe0],
        4 => &[
            0x01, 0x18, 0x20, 0x01, 0x08, 0x80, 0x23, 0x04, 0x60, 0x03, 0x18, 0x20, 0x07,
        ],
        5 => &[
            0x01, 0x18, 0x20, 0x01, 0x08, 0x80, 0x23, 0x04, 0x60, 0x23, 0x10, 0x04, 0x60, 0x8c,
            0x1c,
        ],
        6 => &[
            0x01, 0x18, 0x20, 0x01, 0x08, 0x80, 0x23, 0x04, 0x60, 0x23, 0x10, 0x04, 0x60, 0x8c,
            0x0c, 0x23, 0x00, 0x00, 0xe0,
        ],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_configs() {
        // 48 kHz stereo LC: 0x11 0x90.
        let c = parse_asc(&[0x11, 0x90]).unwrap();
        assert_eq!(
            (
                c.object_type,
                c.sample_rate,
                c.sample_rate_index,
                c.channel_config
            ),
            (2, 48_000, 3, 2)
        );
        assert_eq!(c.codec_string(), "mp4a.40.2");
        // 44.1 kHz mono: 0x12 0x08.
        let c = parse_asc(&[0x12, 0x08]).unwrap();
        assert_eq!((c.sample_rate, c.channels()), (44_100, 1));
        // ADTS gives the same bytes.
        let h = AdtsHeader::parse(&AdtsHeader::write(2, 4, 1, 10).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(from_adts(&h).unwrap().asc.as_ref(), &[0x12, 0x08]);
        assert!(same_format(&from_adts(&h).unwrap(), &c));
    }

    #[test]
    fn explicit_rate_and_he_aac() {
        // LC, index 15 with 48000 explicit, stereo.
        // 00010 1111 000000001011101110000000 0010 0 0 0
        let bits = "00010".to_string() + "1111" + &format!("{:024b}", 48_000) + "0010" + "000";
        let c = parse_asc(&pack(&bits)).unwrap();
        assert_eq!((c.sample_rate, c.sample_rate_index), (48_000, 3));
        // HE-AAC: type 5, core 24 kHz (index 6), stereo, extension 48 kHz
        // (index 3), core LC.
        let bits = "00101".to_string() + "0110" + "0010" + "0011" + "00010" + "000";
        let c = parse_asc(&pack(&bits)).unwrap();
        assert_eq!(c.codec_string(), "mp4a.40.5");
        assert_eq!((c.core_object_type, c.sample_rate), (2, 24_000));
    }

    #[test]
    fn refusals() {
        // 960-sample frames.
        assert_eq!(
            parse_asc(&[0x11, 0x94]),
            Err(AudioConfigError::FrameLength960)
        );
        // Channel configuration 0.
        assert_eq!(
            parse_asc(&[0x11, 0x80]),
            Err(AudioConfigError::ChannelConfig0)
        );
        // Object type 42 (USAC).
        let bits = "11111".to_string() + "001010" + "0011" + "0010" + "000";
        assert_eq!(
            parse_asc(&pack(&bits)),
            Err(AudioConfigError::ObjectType(42))
        );
        assert_eq!(parse_asc(&[0x11]), Err(AudioConfigError::Truncated));
        assert_eq!(parse_asc(&[]), Err(AudioConfigError::Truncated));
    }

    fn pack(bits: &str) -> Vec<u8> {
        let mut out = vec![0u8; bits.len().div_ceil(8)];
        for (i, c) in bits.chars().enumerate() {
            if c == '1' {
                out[i / 8] |= 0x80 >> (i % 8);
            }
        }
        out
    }
}

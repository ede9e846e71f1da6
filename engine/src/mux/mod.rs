//! Segment muxers: CMAF (fMP4) for HLS and DASH, MPEG-TS for legacy HLS.

pub mod cmaf;
pub mod cmaf_audio;
pub mod parts;
pub mod ts;

//! The audio track: AAC in ADTS (or raw frames with their
//! AudioSpecificConfig) in, timed [`AudioFrame`](crate::frame::AudioFrame)s
//! out, placed in the video's segments and parts by the pipeline.
//!
//! - [`adts`]: the ADTS push parser (any chunking, resync with reasons);
//! - [`config`]: AudioSpecificConfig parsing and building, silent frames;
//! - [`clock`]: timestamps from the sample count, anchored to capture time.

pub mod adts;
pub mod clock;
pub mod config;

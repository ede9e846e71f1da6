//! liveslice's file input, at the edge of the pure engine: container files
//! (MP4/MOV, MPEG-TS) taken apart into their video (Annex B) and AAC
//! track ([`demux`]), and a file packaged into the HLS + DASH tree with the
//! engine ([`package`]). Synchronous code over memory maps and positional
//! file reads; no tokio, sockets or clocks beyond the frames' arrival
//! times. `liveslice publish`/`package` and the server's job workers use
//! it.

pub mod audio;
pub mod demux;
pub mod error;
pub mod package;

pub use audio::AudioTrack;
pub use error::{FileError, Result};
pub use package::{package_file, package_file_portion, Packager, Portion, Progress, Summary};

//! The pure engine: bytes and times in, events out. Nothing here reads a
//! clock, opens a socket or spawns a task; the modules follow the data flow.
//! The one module that touches the file system is [`tree`], which writes
//! the HLS + DASH tree with `std::fs` on the caller's thread when asked to.

pub mod access_unit;
pub mod annexb;
pub mod audio;
pub mod container;
pub mod filter;
pub mod frame;
pub mod hevc;
pub mod mux;
pub mod params;
pub mod pipeline;
pub mod playlist;
pub mod poc;
pub mod replay;
pub mod segment;
pub mod timing;
pub mod tree;

pub use filter::DropReason;
pub use frame::{
    AudioConfig, AudioFrame, AudioSpan, CodecConfig, Frame, HevcConfig, NalSpan, PartRecord,
    SegmentRecord, VideoCodec, AAC_FRAME_SAMPLES, TIMESCALE,
};
pub use pipeline::{Event, JoinPoint, PipelineOptions, ResumePoint, SegmentStart, SessionPipeline};

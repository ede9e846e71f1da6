//! liveslice: a live H.264/H.265 + AAC slicing server.
//!
//! [`engine`] is the pure core (Annex B bytes in; timed frames, segments and
//! manifests out), the `liveslice-engine` crate re-exported. With the
//! `service` feature (on by default), [`session`]
//! keeps each session's state and fans it out, [`grpc`] is `SliceService`,
//! [`http`] the origin, and [`app`] starts it all. The engine never imports
//! the layers around it, and builds without them.

pub use liveslice_engine as engine;
pub mod ids;

#[cfg(feature = "service")]
pub mod app;
#[cfg(feature = "service")]
pub mod auth;
#[cfg(feature = "service")]
pub mod cluster;
#[cfg(feature = "service")]
pub mod config;
#[cfg(feature = "service")]
pub mod demo;
#[cfg(feature = "service")]
pub mod grpc;
#[cfg(feature = "service")]
pub mod http;
#[cfg(feature = "service")]
pub mod jobs;
#[cfg(feature = "service")]
pub mod ladder;
#[cfg(feature = "service")]
pub mod metrics;
#[cfg(feature = "service")]
pub mod record;
#[cfg(feature = "service")]
pub mod session;

//! liveslice: a live H.264 slicing server.
//!
//! [`engine`] is the pure core (Annex B bytes in; timed frames, segments and
//! manifests out). [`session`] keeps each session's state and fans it out;
//! [`grpc`] is `SliceService`; [`app`] starts it all. The engine never
//! imports the layers around it.

pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod engine;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod session;

//! liveslice: a live H.264 slicing server.
//!
//! [`engine`] is the pure core (Annex B bytes in; timed frames, segments and
//! manifests out). The session registry, gRPC service and HTTP origin live at
//! the edges and only move what the engine produced.

pub mod engine;

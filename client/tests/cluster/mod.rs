//! The server tests' NATS and S3 helpers (`nats-server -js`, moto), with
//! the names they expect from their `common` module.
#![allow(dead_code)]

pub use super::common::http::dechunk;
pub use super::common::tools as require_tool;
pub use super::common::tools::{require_tool, runs};
#[path = "../../../server/tests/common/nats.rs"]
pub mod nats;
#[path = "../../../server/tests/common/s3.rs"]
pub mod s3;

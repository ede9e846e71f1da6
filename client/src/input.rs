//! Where Annex B bytes come from (a file, stdin or the embedded demo stream),
//! and the argument parsers the subcommands share.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::AsyncRead;

/// An input stream of H.264 Annex B bytes.
#[derive(Clone, Debug)]
pub enum Input {
    File(PathBuf),
    Stdin,
    /// Bytes compiled into the binary (the demo's test stream).
    Embedded(&'static str, &'static [u8]),
}

pub type Reader = Pin<Box<dyn AsyncRead + Send>>;

impl Input {
    /// `-` is stdin, anything else a path.
    pub fn from_arg(arg: &str) -> Self {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    /// Whether it can be read again from the start (`--loop`).
    pub fn rewindable(&self) -> bool {
        !matches!(self, Input::Stdin)
    }

    /// Opens the input from its start.
    pub async fn open(&self) -> Result<Reader> {
        Ok(match self {
            Input::File(p) => Box::pin(
                tokio::fs::File::open(p)
                    .await
                    .with_context(|| format!("cannot open {}", p.display()))?,
            ),
            Input::Stdin => Box::pin(tokio::io::stdin()),
            Input::Embedded(_, bytes) => Box::pin(*bytes),
        })
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::File(p) => write!(f, "{}", p.display()),
            Input::Stdin => f.write_str("stdin"),
            Input::Embedded(name, _) => f.write_str(name),
        }
    }
}

/// A frame rate as the server takes it (`target_fps`: 1..=1000).
pub fn parse_fps(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a frame rate (an integer, e.g. 30)"))?;
    if !(1..=1000).contains(&v) {
        return Err(format!("{v} is out of range (1..=1000)"));
    }
    Ok(v)
}

/// A segment duration as the server takes it: "2s", "1500ms", 100ms..=60s.
pub fn parse_segment_duration(s: &str) -> Result<Duration, String> {
    let d = liveslice_server::config::parse_duration(s)?;
    if !(100..=60_000).contains(&d.as_millis()) {
        return Err(format!("{s:?} is out of range (100ms..=60s)"));
    }
    Ok(d)
}

/// A wait time: "10s", "500ms".
pub fn parse_wait(s: &str) -> Result<Duration, String> {
    liveslice_server::config::parse_duration(s)
}

/// Wall-clock now, Unix nanoseconds (0 if the clock is before 1970).
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

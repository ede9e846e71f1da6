//! The gRPC side: connecting, and turning statuses into messages a user can
//! act on.

use std::time::Duration;

use anyhow::{anyhow, Result};
use liveslice_proto::v1 as pb;
use pb::slice_service_client::SliceServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

pub type Client = SliceServiceClient<Channel>;

/// The server's address when none is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Frames can be as large as the server's `--max-nal-bytes` (8 MiB) times
/// two; tonic's 4 MiB default would turn a big keyframe into an error.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Connects eagerly, so a server that is not there is reported as such
/// before anything else happens.
pub async fn connect(url: &str) -> Result<Client> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| anyhow!("invalid server URL {url:?} ({e}); expected e.g. {DEFAULT_SERVER}"))?
        .connect_timeout(Duration::from_secs(5))
        // A frame every few hundred ms is normal; a dead peer should still
        // be noticed by a viewer that only reads.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow!(
            "cannot connect to {url}: is liveslice-server running? ({})",
            source_chain(&e)
        )
    })?;
    Ok(SliceServiceClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES))
}

/// The innermost causes of a transport error, which say what actually went
/// wrong ("Connection refused") where the outer one says "transport error".
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// A status from `StreamSlices` as an error naming the session and, where
/// there is one, the fix.
pub fn status_error(status: &Status, server: &str, session: &str) -> anyhow::Error {
    let msg = status.message();
    match status.code() {
        Code::AlreadyExists => anyhow!(
            "session {session} already has a publisher (stop it, or publish under another --session)"
        ),
        Code::NotFound => anyhow!("{msg}"),
        Code::InvalidArgument => anyhow!("the server rejected the stream: {msg}"),
        Code::ResourceExhausted => anyhow!("the server is at a limit: {msg}"),
        Code::Unavailable if msg.contains("shutting down") => {
            anyhow!("the server at {server} is shutting down")
        }
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled => anyhow!(
            "lost the connection to {server} ({}: {msg}): did liveslice-server stop?",
            status.code()
        ),
        code => anyhow!("{code}: {msg}"),
    }
}

/// Friendly name of a drop reason, as the server's docs spell them.
pub fn drop_reason_name(reason: i32) -> &'static str {
    use pb::DropReason as R;
    match R::try_from(reason).unwrap_or(R::Unspecified) {
        R::Unspecified => "unspecified",
        R::ForbiddenBit => "forbidden_zero_bit",
        R::UnknownParameterSet => "unknown SPS/PPS",
        R::BadSliceHeader => "bad slice header",
        R::Truncated => "truncated",
        R::BeforeKeyframe => "before the first keyframe",
        R::ReferenceLost => "reference lost",
        R::DependsOnDropped => "depends on a dropped frame",
        R::NotH264 => "not H.264",
        R::TooLarge => "too large",
        R::LeadingPicture => "open-GOP leading picture",
    }
}

/// "3 frames", "1 byte run": what a drop report counts (the server counts
/// runs of non-H.264 bytes, not frames, for `NOT_H264`).
pub fn dropped_count(reason: i32, n: u64) -> String {
    let (one, many) = if reason == pb::DropReason::NotH264 as i32 {
        ("byte run", "byte runs")
    } else {
        ("frame", "frames")
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Why a session ended, in words.
pub fn end_reason_name(reason: i32) -> &'static str {
    use pb::session_ended::Reason as R;
    match R::try_from(reason).unwrap_or(R::Unspecified) {
        R::Unspecified => "unspecified",
        R::EndOfStream => "end of stream",
        R::PublisherGone => "the publisher went away",
        R::ServerShutdown => "the server shut down",
        R::Error => "error",
    }
}

//! Session replication over NATS JetStream (`--cluster`): the thin edge
//! between the session layer and the cluster.
//!
//! An **origin** (the default role) publishes every session's items (the
//! engine's frames with their exact times, part and segment records,
//! parameter sets, discontinuities, the end; see
//! [`crate::session::replica`]) to the JetStream stream [`STREAM`], one
//! subject per session ([`wire`] is their encoding), off the live path: a
//! bounded queue per session and a task that publishes it. The session's
//! start (timeline origin, manifest options) and ownership are a lease in
//! the key-value bucket [`BUCKET`], renewed while the session lives.
//!
//! An **edge** (`--role edge`) watches the bucket and, for each session in
//! it, reads the session's subject with an ordered consumer from the start
//! of what the stream holds, joining at the first segment start, and feeds
//! a mirror session ([`crate::session::Registry::mirror`]) the same items:
//! the same ring, log, part store and muxer as the origin's, manifests made
//! with the origin's options from the origin's records, so playlists and
//! segments are the origin's, byte for byte.

pub mod edge;
pub mod origin;
pub mod takeover;
pub mod wire;

use std::time::Duration;

use crate::config::ConfigError;

/// The JetStream stream every session's items go to.
pub const STREAM: &str = "LIVESLICE";
/// The subjects of [`STREAM`]: `liveslice.<session, hex>.<epoch>`.
pub const SUBJECT_PREFIX: &str = "liveslice";
/// The key-value bucket of session leases.
pub const BUCKET: &str = "liveslice-sessions";
/// How often a lease is renewed.
pub const LEASE_RENEW: Duration = Duration::from_secs(2);
/// How long a lease lives without renewal (the bucket's max age).
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// Largest NATS message payload sent: below the server's 1 MiB default
/// (`max_payload`), with room for headers. Larger items go in fragments.
pub const MAX_PAYLOAD: usize = 768 * 1024;

/// A node's role in a cluster.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes publishers and replicates their sessions.
    #[default]
    Origin,
    /// Serves sessions from the cluster; takes no publishers.
    Edge,
}

/// The cluster's part of the configuration. Keys as the fields, in
/// kebab-case; without `cluster` the server is a single node and needs no
/// NATS.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// NATS server URL(s) with JetStream, `nats://HOST:PORT`
    /// (comma-separated for several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// `origin` or `edge`.
    pub role: Role,
    /// This node's id in leases (default: host name and process id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// How long JetStream keeps a session's items (the stream's max age):
    /// at least the live window plus a margin, so an edge that joins finds
    /// the whole window.
    #[serde(with = "crate::config::duration")]
    pub cluster_retention: std::time::Duration,
    /// Bytes the stream may hold in all (oldest items go first beyond it).
    pub cluster_max_bytes: u64,
    /// Items per session waiting to be published; beyond it items are
    /// dropped and counted (the live path never waits for the cluster).
    pub cluster_queue: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            cluster: None,
            role: Role::Origin,
            node_id: None,
            cluster_retention: Duration::from_secs(120),
            cluster_max_bytes: 1 << 30,
            cluster_queue: 8192,
        }
    }
}

impl ClusterConfig {
    /// Checks ranges and names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.role == Role::Edge && self.cluster.is_none() {
            return Err(ConfigError::new(
                "role",
                "edge needs --cluster nats://HOST:PORT (an edge serves sessions from the cluster)",
            ));
        }
        if let Some(url) = &self.cluster {
            if url.split(',').any(|u| u.trim().is_empty()) {
                return Err(ConfigError::new("cluster", "an empty NATS URL"));
            }
        }
        if self.cluster_retention < Duration::from_secs(10) {
            return Err(ConfigError::new(
                "cluster-retention",
                "must be at least 10s",
            ));
        }
        if self.cluster_max_bytes < 1 << 20 {
            return Err(ConfigError::new(
                "cluster-max-bytes",
                "must be at least 1048576 bytes (1 MiB)",
            ));
        }
        if self.cluster_queue < 16 {
            return Err(ConfigError::new("cluster-queue", "must be at least 16"));
        }
        Ok(())
    }

    /// This node's id.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "node".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// Errors joining the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to NATS at {url} (--cluster): {detail}")]
    Connect { url: String, detail: String },
    #[error("JetStream {what}: {detail}{}", jetstream_hint(detail))]
    JetStream { what: &'static str, detail: String },
}

/// What to check for a JetStream error that says JetStream is not there.
fn jetstream_hint(detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    if ["not enabled", "no responders", "timed out", "timeout"]
        .iter()
        .any(|w| d.contains(w))
    {
        " (is nats-server running with -js?)"
    } else {
        ""
    }
}

/// The subject token of a session id: its bytes in hex (ids may hold
/// characters NATS subjects and keys do not allow).
pub fn session_token(id: &str) -> String {
    id.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The session id of a subject token or key ([`session_token`]'s inverse).
pub fn session_of_token(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// A session's lease in [`BUCKET`] (JSON): who owns it, where its items
/// are, and what a replica needs to render its manifests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The owner's node id.
    pub owner: String,
    /// The subject its items are published on.
    pub subject: String,
    pub start: crate::session::replica::SessionStart,
    /// The last segment and part published (none yet: `None`).
    pub last_segment: Option<u64>,
    pub last_part: Option<u64>,
    /// Discontinuity sequence of the last segment.
    pub discontinuity_sequence: u64,
    /// The session ended.
    pub ended: bool,
    /// The subject of the copy this one continues (a publisher that failed
    /// over from another origin): edges read that subject up to
    /// `resume_after`, then this one, into the same session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<String>,
    /// The stream sequence of the last message of `continues` the new
    /// owner went on from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<u64>,
    /// When the lease was last renewed (Unix ms).
    pub renewed_ms: u64,
}

/// Connects to the cluster and makes sure the stream and bucket exist.
pub async fn connect(
    config: &ClusterConfig,
    url: &str,
) -> Result<
    (
        async_nats::Client,
        async_nats::jetstream::Context,
        async_nats::jetstream::kv::Store,
    ),
    ClusterError,
> {
    use async_nats::jetstream;
    let addrs: Vec<&str> = url.split(',').map(str::trim).collect();
    let client = async_nats::ConnectOptions::new()
        .name(format!("liveslice-{}", config.node_id()))
        .connection_timeout(Duration::from_secs(5))
        .connect(addrs.as_slice())
        .await
        .map_err(|e| ClusterError::Connect {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
    let js = jetstream::new(client.clone());
    let stream_config = jetstream::stream::Config {
        name: STREAM.to_string(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        max_age: config.cluster_retention,
        max_bytes: i64::try_from(config.cluster_max_bytes).unwrap_or(i64::MAX),
        discard: jetstream::stream::DiscardPolicy::Old,
        storage: jetstream::stream::StorageType::File,
        description: Some("liveslice session items (frames, parts, segments)".into()),
        ..Default::default()
    };
    let js_err = |what| move |e: String| ClusterError::JetStream { what, detail: e };
    ensure_stream(&js, stream_config)
        .await
        .map_err(js_err("stream"))?;
    let kv = key_value_bucket(&js, BUCKET, "liveslice session leases", LEASE_TTL)
        .await
        .map_err(|e| js_err("key-value bucket")(e))?;
    Ok((client, js, kv))
}

/// A key-value bucket keeping one value per key for at most `max_age`,
/// made if missing. Its stream is made here as the client's
/// `create_key_value` makes it, because that call first reads the
/// account's info, which a 2.9 server (Debian's) answers in a form the
/// client does not parse.
pub async fn key_value_bucket(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> Result<async_nats::jetstream::kv::Store, String> {
    use async_nats::jetstream;
    if js.get_stream(format!("KV_{bucket}")).await.is_err() {
        create_stream(
            js,
            jetstream::stream::Config {
                name: format!("KV_{bucket}"),
                description: Some(description.into()),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age,
                storage: jetstream::stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            },
        )
        .await?;
    }
    js.get_key_value(bucket).await.map_err(|e| e.to_string())
}

/// Makes stream `config.name` as `config` says: updated if it exists, else
/// created ([`create_stream`]).
pub async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    config: async_nats::jetstream::stream::Config,
) -> Result<(), String> {
    if js.get_stream(&config.name).await.is_ok() {
        return js
            .update_stream(config)
            .await
            .map(drop)
            .map_err(|e| format!("cannot update the stream: {e}"));
    }
    create_stream(js, config).await
}

/// Creates a stream not found a moment ago. Nodes starting together race
/// to create it: when the creation fails because another node has just
/// made it (NATS then says its name is in use, or its subjects overlap),
/// the stream is there, with that node's settings, and that is success.
pub async fn create_stream(
    js: &async_nats::jetstream::Context,
    config: async_nats::jetstream::stream::Config,
) -> Result<(), String> {
    let name = config.name.clone();
    match js.create_stream(config).await {
        Ok(_) => Ok(()),
        Err(e) => {
            for _ in 0..10 {
                if js.get_stream(&name).await.is_ok() {
                    tracing::debug!(stream = %name, "made by another node at the same time");
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e.to_string())
        }
    }
}

/// Reports the connection's state (log on change, the
/// `liveslice_cluster_connected` gauge) until the client is dropped;
/// `on_change(up)` is called on each change.
pub fn watch_connection(
    client: async_nats::Client,
    on_change: impl Fn(bool) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut was_up: Option<bool> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let up = client.connection_state() == async_nats::connection::State::Connected;
            if was_up != Some(up) {
                ::metrics::gauge!(crate::metrics::CLUSTER_CONNECTED).set(if up {
                    1.0
                } else {
                    0.0
                });
                if up {
                    tracing::info!("cluster (NATS) connected");
                } else {
                    tracing::warn!(
                        "cluster (NATS) unreachable: serving locally; replication is behind"
                    );
                }
                on_change(up);
                was_up = Some(up);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_round_trip() {
        for id in ["cam1", "a.b*c>d", "ümlaut", ""] {
            let t = session_token(id);
            assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(session_of_token(&t).as_deref(), Some(id));
        }
        assert_eq!(session_of_token("abc"), None);
        assert_eq!(session_of_token("zz"), None);
    }

    #[test]
    fn an_edge_needs_a_cluster() {
        let c = ClusterConfig {
            role: Role::Edge,
            ..Default::default()
        };
        assert_eq!(c.validate().map_err(|e| e.key), Err("role".into()));
        let c = ClusterConfig {
            role: Role::Edge,
            cluster: Some("nats://127.0.0.1:4222".into()),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
    }
}

//! Starts the listeners on a configuration and stops them cleanly. Used by
//! the binary and by integration tests (which bind port 0).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use liveslice_proto::v1::slice_service_server::SliceServiceServer;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::{Config, ConfigError};
use crate::grpc::SliceServiceImpl;
use crate::session::Registry;

mod runtimes;

/// The server process's part of the configuration: where it listens, the
/// largest gRPC message, the log format and the built-in demo publisher.
/// Keys as the fields, in kebab-case (`grpc-addr`, ...); the defaults are
/// [`Default`]'s.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// gRPC: `liveslice.v1.SliceService`, health, reflection.
    pub grpc_addr: SocketAddr,
    /// The HTTP origin.
    pub http_addr: SocketAddr,
    /// Largest gRPC message accepted, bytes.
    pub max_message_bytes: usize,
    /// gRPC connections served on this many single-threaded runtimes, each
    /// on a thread of its own, handed out round-robin as they are accepted;
    /// `0`: on the process's shared multi-threaded runtime. A runtime per
    /// core saves cross-thread wake-ups of the shared runtime (BENCH.md,
    /// issue 14: 0.90× the CPU per frame and a third of the p99 at 500
    /// sessions); a connection's streams all stay on its runtime.
    pub grpc_runtimes: usize,
    pub log_format: LogFormat,
    /// A session to publish the built-in looping test stream into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50051)),
            http_addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080)),
            max_message_bytes: 4 << 20,
            grpc_runtimes: 0,
            log_format: LogFormat::Text,
            demo: None,
        }
    }
}

impl ServerConfig {
    /// Checks ranges and names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::new(
                "max-message-bytes",
                "must be at least 1024",
            ));
        }
        if self.grpc_runtimes > MAX_GRPC_RUNTIMES {
            return Err(ConfigError::new(
                "grpc-runtimes",
                format!("must be at most {MAX_GRPC_RUNTIMES} (one per core is the point)"),
            ));
        }
        Ok(())
    }
}

/// The most `grpc-runtimes` accepted.
pub const MAX_GRPC_RUNTIMES: usize = 256;

/// `log-format`: `text` for people, `json` for log pipelines.
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
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// TLS's part of the configuration: `tls-cert` and `tls-key`, PEM files,
/// both or neither (off by default).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    #[serde(
        rename = "tls-cert",
        serialize_with = "crate::config::opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub cert: Option<PathBuf>,
    #[serde(
        rename = "tls-key",
        serialize_with = "crate::config::opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Both files or neither.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert, &self.key) {
            (Some(_), None) => Err(ConfigError::new("tls-key", "is needed with --tls-cert")),
            (None, Some(_)) => Err(ConfigError::new("tls-cert", "is needed with --tls-key")),
            _ => Ok(()),
        }
    }
}

/// Shutdown's part of the configuration (see [`Running::drain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shutdown {
    /// `shutdown-timeout`: how long gRPC streams get to finish once every
    /// session has ended.
    #[serde(rename = "shutdown-timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// `shutdown-grace`: how long the HTTP origin keeps serving after the
    /// sessions end.
    #[serde(rename = "shutdown-grace", with = "crate::config::duration")]
    pub grace: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            grace: Duration::from_secs(5),
        }
    }
}

impl Shutdown {
    /// Checks ranges and names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.grace > Duration::from_secs(600) {
            return Err(ConfigError::new("shutdown-grace", "must be at most 10m"));
        }
        if self.timeout > Duration::from_secs(600) {
            return Err(ConfigError::new("shutdown-timeout", "must be at most 10m"));
        }
        Ok(())
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({flag}): {}", bind_reason(.source, flag))]
    Bind {
        addr: SocketAddr,
        /// The flag that sets the address.
        flag: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("reflection service: {0}")]
    Reflection(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot start the gRPC runtimes (--grpc-runtimes): {0}")]
    Runtime(std::io::Error),
    #[error("--ladder: {0}")]
    Ladder(String),
    #[error("jobs (--cluster): {0}")]
    Jobs(#[from] crate::jobs::JobError),
}

/// Why a bind failed, with what to do about the usual case.
fn bind_reason(e: &std::io::Error, flag: &str) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "the address is in use (another liveslice-server?); stop it or choose another with {flag}"
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied (ports below 1024 need privileges); choose another with {flag}")
        }
        _ => e.to_string(),
    }
}

/// The PEM files of `--tls-cert` and `--tls-key`, checked at start so that
/// a wrong file is named with what is wrong with it.
struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Tls {
    fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, StartError> {
        use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::{Error as RustlsError, InconsistentKeys};
        let fail = |flag: &str, p: &std::path::Path, what: String| {
            StartError::Tls(format!("--{flag} {}: {what}", p.display()))
        };
        let read = |flag: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| fail(flag, p, format!("cannot read: {e}")))
        };
        let cert_pem = read("tls-cert", cert)?;
        let key_pem = read("tls-key", key)?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail("tls-cert", cert, format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            let hint = if PrivateKeyDer::from_pem_slice(&cert_pem).is_ok() {
                " (it holds a private key: are --tls-cert and --tls-key swapped?)"
            } else {
                " (a PEM file with -----BEGIN CERTIFICATE----- is expected)"
            };
            return Err(fail(
                "tls-cert",
                cert,
                format!("no certificate found{hint}"),
            ));
        }
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let what = match e {
                pem::Error::NoItemsFound => {
                    if CertificateDer::pem_slice_iter(&key_pem).any(|c| c.is_ok()) {
                        "no private key found (it holds a certificate: are --tls-cert and --tls-key swapped?)".to_string()
                    } else {
                        "no private key found (a PEM file with -----BEGIN PRIVATE KEY----- (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY is expected)".to_string()
                    }
                }
                e => format!("not a valid PEM private key: {e}"),
            };
            fail("tls-key", key, what)
        })?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        provider
            .key_provider
            .load_private_key(key_der.clone_key())
            .map_err(|e| {
                fail(
                    "tls-key",
                    key,
                    format!("the private key is not usable: {e}"),
                )
            })?;
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StartError::Tls(format!("protocol versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| match e {
                RustlsError::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
                    StartError::Tls(format!(
                        "--tls-key {} does not belong to the certificate in --tls-cert {}",
                        key.display(),
                        cert.display()
                    ))
                }
                e => fail(
                    "tls-cert",
                    cert,
                    format!("the certificate is not usable: {e}"),
                ),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            cert_pem,
            key_pem,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// An error and its causes, one after another (tonic's own Display says
/// only "transport error").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The gRPC listener's connections. tonic retries a failed accept at once;
/// out of file descriptors (EMFILE) that would spin, so errors other than a
/// connection's own pause a moment first, as the HTTP listener does.
fn incoming_with_backoff(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).then(|r| async move {
        if let Err(e) = &r {
            if !crate::http::serve::is_per_connection(e) {
                let pause = crate::http::serve::ACCEPT_BACKOFF;
                tracing::warn!(error = %e, "gRPC accept failed; pausing {pause:?}");
                tokio::time::sleep(pause).await;
            }
        }
        // Nagle off, as on the HTTP origin: `serve_with_incoming` ignores
        // tonic's own `tcp_nodelay`, and with Nagle a connection carrying
        // several streams holds each small frame until the peer's delayed
        // ACK (tens of ms at p50 with 6 sessions on one connection).
        if let Ok(tcp) = &r {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "gRPC: TCP_NODELAY not set");
            }
        }
        r
    })
}

/// A running server.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub registry: Arc<Registry>,
    shutdown_timeout: Duration,
    shutdown_grace: Duration,
    health: tonic_health::server::HealthReporter,
    grpc_stop: Option<oneshot::Sender<()>>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    http_stop: Option<oneshot::Sender<()>>,
    http_task: JoinHandle<std::io::Result<()>>,
    upkeep: Option<JoinHandle<()>>,
    /// The cluster's tasks (`--cluster`): stopped with the server.
    cluster_tasks: Vec<JoinHandle<()>>,
}

/// Joins the cluster (`--cluster`) in the configured role: an origin's
/// registry replicates its sessions, an edge's serves the cluster's. Returns
/// the tasks to stop with the server (none for a single node).
async fn join_cluster(
    config: &Config,
    registry: &Arc<Registry>,
) -> Result<(Vec<JoinHandle<()>>, Option<Arc<crate::jobs::Jobs>>), StartError> {
    use crate::cluster::{self, Role};
    let Some(url) = &config.cluster.cluster else {
        return Ok((Vec::new(), None));
    };
    let (client, js, kv) = cluster::connect(&config.cluster, url).await?;
    // Packaging jobs: every node of the cluster takes them (HTTP, gRPC);
    // workers run them.
    let jobs = crate::jobs::Jobs::connect(js.clone(), config.jobs.clone()).await?;
    registry.set_cluster_up(true);
    let node_id = config.cluster.node_id();
    // An item is at most an access unit (twice --max-nal-bytes) and its
    // timing, in fragments.
    let max_item = config.engine.max_nal_bytes.saturating_mul(2) + (1 << 20);
    let mut tasks = match config.cluster.role {
        Role::Origin => {
            registry.set_replicator(Arc::new(cluster::origin::Origin::new(
                js,
                kv,
                node_id.clone(),
                config.cluster.cluster_queue,
                max_item,
            )));
            let registry = registry.clone();
            vec![cluster::watch_connection(client, move |up| {
                registry.set_cluster_up(up)
            })]
        }
        Role::Edge => {
            registry.set_edge();
            let edge = cluster::edge::Edge::new(js, kv, registry.clone(), max_item);
            let watcher = edge.spawn();
            let registry = registry.clone();
            let monitor = cluster::watch_connection(client, move |up| {
                registry.set_cluster_up(up);
                edge.set_up(up);
            });
            vec![watcher, monitor]
        }
    };
    if config.jobs.worker {
        tasks.push(crate::jobs::worker::spawn(
            jobs.clone(),
            node_id.clone(),
            config.pipeline(),
        ));
    }
    tracing::info!(%url, role = ?config.cluster.role, %node_id, worker = config.jobs.worker, "joined the cluster");
    Ok((tasks, Some(jobs)))
}

/// Binds the listeners and starts serving.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    config.validate()?;
    // Before any counter is made: one made earlier would count nowhere.
    crate::metrics::install();
    let recorder = config
        .record
        .store()?
        .map(|store| crate::record::Recorder::start(store, &config.record));
    if let (Some(_), Some(url)) = (&recorder, &config.record.record) {
        let dvr = config.record.dvr.map(|d| format!("{d:?}"));
        tracing::info!(%url, dvr = dvr.as_deref().unwrap_or("off"), "recording every session (see /api/record)");
    }
    let registry = Registry::with_recorder(config.session.clone(), recorder);
    let (cluster_tasks, jobs) = join_cluster(config, &registry).await?;
    let auth = config
        .auth
        .build()
        .map_err(|reason| ConfigError::new("auth-token", reason))?
        .map(Arc::new);
    let server = &config.server;

    let listener = TcpListener::bind(server.grpc_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: server.grpc_addr,
            flag: "--grpc-addr",
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: server.grpc_addr,
        flag: "--grpc-addr",
        source,
    })?;

    // The ladder's ffmpeg is checked now: a missing one is a startup
    // error, not a surprise at the first session.
    let mut service_config = config.service();
    let ladder = match config.ladder.ladder().map_err(StartError::Ladder)? {
        Some(l) => {
            l.check().map_err(|e| StartError::Ladder(e.to_string()))?;
            Some(Arc::new(l))
        }
        None => None,
    };
    service_config.ladder = ladder.clone();
    let service = SliceServiceServer::new(SliceServiceImpl::new(
        registry.clone(),
        service_config,
        auth.clone(),
    ))
    .max_decoding_message_size(server.max_message_bytes)
    .max_encoding_message_size(usize::MAX);
    let job_service = liveslice_proto::v1::job_service_server::JobServiceServer::new(
        crate::grpc::jobs::JobServiceImpl::new(jobs.clone(), auth.clone()),
    );
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SliceServiceServer<SliceServiceImpl>>()
        .await;
    // grpcurl 1.8 asks for v1alpha, newer clients for v1; health's
    // descriptors are registered too so `grpc.health.v1.Health` resolves.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(liveslice_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;

    let (grpc_stop, stop_rx) = oneshot::channel::<()>();
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
        _ => None,
    };
    let router = || -> Result<tonic::transport::server::Router, StartError> {
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        if let Some(tls) = &tls {
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                    tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
                ))
                .map_err(|e| StartError::Tls(format!("gRPC: {}", error_chain(&e))))?;
        }
        Ok(builder
            .add_service(health_service.clone())
            .add_service(reflection_v1.clone())
            .add_service(reflection_v1alpha.clone())
            .add_service(service.clone())
            .add_service(job_service.clone()))
    };
    let grpc_task = if server.grpc_runtimes == 0 {
        let counter = ::metrics::counter!(crate::metrics::GRPC_CONNECTIONS, "runtime" => "shared");
        tokio::spawn(router()?.serve_with_incoming_shutdown(
            tokio_stream::StreamExt::map(incoming_with_backoff(listener), move |r| {
                if r.is_ok() {
                    counter.increment(1);
                }
                r
            }),
            async {
                let _ = stop_rx.await;
            },
        ))
    } else {
        let routers = (0..server.grpc_runtimes)
            .map(|_| router())
            .collect::<Result<Vec<_>, _>>()?;
        runtimes::serve(routers, listener, stop_rx).map_err(StartError::Runtime)?
    };
    tracing::info!(%grpc_addr, "gRPC listening (liveslice.v1.SliceService, JobService, health, reflection)");

    let http_listener = TcpListener::bind(server.http_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: server.http_addr,
            flag: "--http-addr",
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: server.http_addr,
            flag: "--http-addr",
            source,
        })?;
    let (http_stop, http_stop_rx) = oneshot::channel::<()>();
    let router = crate::http::router(registry.clone(), auth.clone(), &config.http, jobs.clone());
    let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
    let http_task = tokio::spawn(crate::http::serve::serve(
        http_listener,
        acceptor,
        router,
        config.http,
        http_stop_rx,
    ));
    tracing::info!(%http_addr, "HTTP origin listening (HLS, DASH, player)");
    // Histogram samples pile up in the recorder until drained: drain them
    // even when nobody scrapes.
    let upkeep = crate::metrics::install().map(|h| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        })
    });
    if let Some(id) = &server.demo {
        let id =
            crate::ids::parse_session_id(id).map_err(|reason| ConfigError::new("demo", reason))?;
        crate::demo::spawn(registry.clone(), config.pipeline(), id, ladder);
    }
    Ok(Running {
        grpc_addr,
        http_addr,
        http_stop: Some(http_stop),
        http_task,
        upkeep,
        cluster_tasks,
        registry,
        shutdown_timeout: config.shutdown.timeout,
        shutdown_grace: config.shutdown.grace,
        health: health_reporter,
        grpc_stop: Some(grpc_stop),
        grpc_task,
    })
}

impl Running {
    /// Ends every session (final segments, closed playlists, SessionEnded to
    /// subscribers), then stops the listeners at once, waiting at most the
    /// shutdown timeout for gRPC streams to finish. For servers run inside
    /// another program (tests, `liveslice demo`); the binary drains with
    /// [`drain`](Self::drain).
    pub async fn shutdown(self) {
        self.stop(Duration::ZERO).await;
    }

    /// The binary's SIGTERM: [`shutdown`](Self::shutdown), but the HTTP
    /// origin keeps serving for `--shutdown-grace` after the sessions end,
    /// so HTTP players fetch the closed playlists (`#EXT-X-ENDLIST`, the
    /// static MPD) and the last segments. gRPC streams get
    /// `--shutdown-timeout` to finish, counted alongside the grace from the
    /// start; publishers' streams end with OK. Returns within the longer of
    /// the two plus 1 s.
    pub async fn drain(self) {
        let grace = self.shutdown_grace;
        self.stop(grace).await;
    }

    async fn stop(mut self, http_grace: Duration) {
        let started = tokio::time::Instant::now();
        self.registry.shutdown();
        self.health
            .set_not_serving::<SliceServiceServer<SliceServiceImpl>>()
            .await;
        if let Some(stop) = self.grpc_stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(self.shutdown_timeout, &mut self.grpc_task).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("streams did not finish within the shutdown timeout; closing them");
                self.grpc_task.abort();
            }
        }
        if !http_grace.is_zero() {
            tracing::info!(?http_grace, "HTTP keeps serving the final playlists");
        }
        tokio::time::sleep_until(started + http_grace).await;
        if let Some(r) = self.registry.recorder() {
            // The sessions just ended: their last segments and final
            // playlists are on their way to storage.
            let limit = self.shutdown_timeout.max(Duration::from_secs(1));
            if !r.flush(limit).await {
                tracing::warn!(?limit, "recordings not completely written at shutdown");
            }
        }
        if let Some(u) = self.upkeep.take() {
            u.abort();
        }
        for t in self.cluster_tasks.drain(..) {
            t.abort();
        }
        if let Some(stop) = self.http_stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(1), &mut self.http_task)
            .await
            .is_err()
        {
            self.http_task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    /// Every accepted gRPC connection has Nagle's algorithm off: with it on,
    /// a connection that carries several sessions held each frame until the
    /// peer's delayed ACK (BENCH.md, issue 14).
    #[tokio::test]
    async fn accepted_grpc_connections_have_tcp_nodelay() -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = incoming_with_backoff(listener);
        tokio::pin!(incoming);
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(tokio::net::TcpStream::connect(addr).await?);
            let accepted = incoming
                .next()
                .await
                .ok_or_else(|| std::io::Error::other("listener ended"))??;
            assert!(
                accepted.nodelay()?,
                "TCP_NODELAY is off on an accepted connection"
            );
        }
        Ok(())
    }
}

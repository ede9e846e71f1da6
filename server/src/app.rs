//! Starts the listeners on a configuration and stops them cleanly. Used by
//! the binary and by integration tests (which bind port 0).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use liveslice_proto::v1::slice_service_server::SliceServiceServer;
use std::future::IntoFuture;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Config;
use crate::grpc::SliceServiceImpl;
use crate::session::Registry;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reflection service: {0}")]
    Reflection(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// The PEM files of `--tls-cert` and `--tls-key`.
struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl Tls {
    fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, StartError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| StartError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        Ok(Self {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, StartError> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &str, e: &dyn std::fmt::Display| StartError::Tls(format!("{what}: {e}"));
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate PEM", &e))?;
        if certs.is_empty() {
            return Err(StartError::Tls("no certificate in --tls-cert".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| bad("key PEM", &e))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("protocol versions", &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate and key", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// The HTTP origin over TLS: accept, handshake, then serve HTTP/1.1 or 2.
async fn serve_https(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            // A failed handshake costs this connection only.
            let Ok(tls) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let Ok(tls) = tls else { return };
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// A running server.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub registry: Arc<Registry>,
    shutdown_timeout: Duration,
    grpc_stop: Option<oneshot::Sender<()>>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    http_stop: Option<oneshot::Sender<()>>,
    http_task: JoinHandle<std::io::Result<()>>,
    upkeep: Option<JoinHandle<()>>,
}

/// Binds the listeners and starts serving.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    config.validate()?;
    let registry = Registry::new(config.session_defaults());
    let auth = config
        .auth()
        .map_err(|reason| crate::config::ConfigError {
            key: "auth-token",
            reason,
        })?
        .map(Arc::new);

    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.grpc_addr,
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.grpc_addr,
        source,
    })?;

    let service = SliceServiceServer::new(SliceServiceImpl::new(
        registry.clone(),
        config.service(),
        auth.clone(),
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(usize::MAX);
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
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
        _ => None,
    };
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = &tls {
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
            ))
            .map_err(|e| StartError::Tls(e.to_string()))?;
    }
    let grpc_task = tokio::spawn(
        builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    tracing::info!(%grpc_addr, "gRPC listening (liveslice.v1.SliceService, health, reflection)");

    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let (http_stop, http_stop_rx) = oneshot::channel::<()>();
    let router = crate::http::router(registry.clone(), auth.clone());
    let http_task = match &tls {
        None => tokio::spawn(
            axum::serve(http_listener, router)
                .with_graceful_shutdown(async {
                    let _ = http_stop_rx.await;
                })
                .into_future(),
        ),
        Some(tls) => {
            let acceptor = tls.acceptor()?;
            tokio::spawn(serve_https(http_listener, acceptor, router, http_stop_rx))
        }
    };
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
    if let Some(id) = &config.demo {
        crate::grpc::validate_session_id(id).map_err(|reason| crate::config::ConfigError {
            key: "demo",
            reason,
        })?;
        crate::demo::spawn(registry.clone(), config.pipeline(), id.clone());
    }
    Ok(Running {
        grpc_addr,
        http_addr,
        http_stop: Some(http_stop),
        http_task,
        upkeep,
        registry,
        shutdown_timeout: config.shutdown_timeout,
        grpc_stop: Some(grpc_stop),
        grpc_task,
    })
}

impl Running {
    /// Ends every session (final segments, closed playlists, SessionEnded to
    /// subscribers), then stops the listeners, waiting at most the shutdown
    /// timeout for streams to finish.
    pub async fn shutdown(mut self) {
        self.registry.shutdown();
        if let Some(u) = self.upkeep.take() {
            u.abort();
        }
        if let Some(stop) = self.grpc_stop.take() {
            let _ = stop.send(());
        }
        if let Some(stop) = self.http_stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(self.shutdown_timeout, &mut self.grpc_task).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("streams did not finish within the shutdown timeout; closing them");
                self.grpc_task.abort();
            }
        }
        if tokio::time::timeout(Duration::from_secs(1), &mut self.http_task)
            .await
            .is_err()
        {
            self.http_task.abort();
        }
    }
}

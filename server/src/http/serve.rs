//! The HTTP listener: accepts connections (plain, or TLS with HTTP/1.1 or
//! HTTP/2 by ALPN) and sheds what a hostile or broken client would make it
//! hold: headers that never finish, connections on which nothing moves, more
//! connections than the file descriptors allow. Accept errors (EMFILE under
//! a flood) back off briefly instead of spinning or stopping.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::time::Instant;

use crate::config::ConfigError;

/// What the HTTP listener tolerates. Its part of the configuration: the
/// keys (in a `--config` file, and as flags) are `http-header-timeout`,
/// `http-idle-timeout`, `http-max-connections`, `http-max-held-requests`
/// and `http-max-held-per-session`; the defaults are
/// [`Default`]'s.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// A request's headers must arrive within this: from the accept for a
    /// new connection (a TLS handshake counts), from the end of the previous
    /// response on a kept-alive HTTP/1.1 one (so it also bounds idleness
    /// there).
    #[serde(rename = "http-header-timeout", with = "crate::config::duration")]
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    #[serde(rename = "http-idle-timeout", with = "crate::config::duration")]
    pub idle_timeout: Duration,
    /// Most connections open at once.
    #[serde(rename = "http-max-connections")]
    pub max_connections: usize,
    /// Low-latency HLS requests held at once (blocking playlist reloads and
    /// preload-hint part requests), all sessions together; beyond, `503`.
    #[serde(rename = "http-max-held-requests")]
    pub max_held_requests: usize,
    /// The same, per session.
    #[serde(rename = "http-max-held-per-session")]
    pub max_held_per_session: usize,
}

impl HttpLimits {
    /// Checks ranges and names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.header_timeout.is_zero() {
            return Err(ConfigError::new(
                "http-header-timeout",
                "must be more than 0",
            ));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::new("http-idle-timeout", "must be more than 0"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "http-max-connections",
                "must be at least 1",
            ));
        }
        if self.max_held_requests == 0 {
            return Err(ConfigError::new(
                "http-max-held-requests",
                "must be at least 1",
            ));
        }
        if self.max_held_per_session == 0 {
            return Err(ConfigError::new(
                "http-max-held-per-session",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_held_requests: 10_000,
            max_held_per_session: 2_000,
        }
    }
}

/// How long accepting pauses after an error such as EMFILE.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// After a graceful shutdown is asked of a connection, how long it may
/// take to finish what it is sending.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Sent to a connection beyond the limit (plain HTTP only), then closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 34\r\nretry-after: 1\r\nconnection: close\r\n\r\n\
too many connections; retry later\n";

/// Connections beyond the limit being told `503` at once (each for at most
/// [`BUSY_LINGER`]); beyond these, they are closed without a word.
const BUSY_REPLIES: usize = 64;
const BUSY_LINGER: Duration = Duration::from_millis(500);

/// Replies `503` to a connection over the limit and closes it. It reads
/// (and discards) what the client sent for a moment first: closing a socket
/// with unread data resets it, and the client would never see the reply.
async fn say_busy(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(BUSY_LINGER, async {
        if tcp.write_all(BUSY).await.is_err() {
            return;
        }
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 1024];
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Serves `router` on `listener` until `stop` fires (or its sender is
/// dropped); then asks every open connection to finish and returns once
/// they have (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    limits: HttpLimits,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(max));
    let busy_permits = Arc::new(Semaphore::new(BUSY_REPLIES));
    let (closing_tx, closing) = watch::channel(false);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors (or memory): accepting again
                    // at once would fail again. Pause; connections closing
                    // (timeouts) free descriptors meanwhile.
                    tracing::warn!(error = %e, "HTTP accept failed; pausing {ACCEPT_BACKOFF:?}");
                    ::metrics::counter!(crate::metrics::HTTP_CONNECTIONS_SHED, "reason" => "accept_error").increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        _ = &mut stop => break,
                    }
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            ::metrics::counter!(crate::metrics::HTTP_CONNECTIONS_SHED, "reason" => "limit")
                .increment(1);
            match busy_permits.clone().try_acquire_owned() {
                Ok(p) if tls.is_none() => {
                    tokio::spawn(async move {
                        say_busy(tcp).await;
                        drop(p);
                    });
                }
                // TLS (a plaintext reply would be noise), or too many busy
                // replies already: just close.
                _ => drop(tcp),
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let service = TowerToHyperService::new(WithPeer {
            inner: router.clone(),
            peer: super::api::PeerAddr(peer),
        });
        let closing = closing.clone();
        tokio::spawn(async move {
            let activity = Activity::new();
            let io = Tracked {
                inner: tcp,
                activity: activity.clone(),
            };
            connection(io, tls, service, limits, activity, closing).await;
            drop(permit);
        });
    }
    // Stop: ask every connection to finish, then wait until they have.
    let _ = closing_tx.send(true);
    let _ = permits.acquire_many(max as u32).await;
    Ok(())
}

/// Errors that concern one connection only (it went away before it was
/// accepted): try the next at once.
pub(crate) fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

type Service = TowerToHyperService<WithPeer>;

/// The router, with the connection's peer address on every request (the
/// console's estimate of HTTP viewers reads it).
#[derive(Clone)]
struct WithPeer {
    inner: axum::Router,
    peer: super::api::PeerAddr,
}

impl<B> tower_service::Service<axum::http::Request<B>> for WithPeer
where
    axum::Router: tower_service::Service<axum::http::Request<B>>,
{
    type Response = <axum::Router as tower_service::Service<axum::http::Request<B>>>::Response;
    type Error = <axum::Router as tower_service::Service<axum::http::Request<B>>>::Error;
    type Future = <axum::Router as tower_service::Service<axum::http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        tower_service::Service::call(&mut self.inner, req)
    }
}

async fn connection(
    io: Tracked<TcpStream>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: Service,
    limits: HttpLimits,
    activity: Activity,
    closing: watch::Receiver<bool>,
) {
    // One header deadline from the moment of accept: the time a TLS
    // handshake or the first byte took comes out of it (hyper's own timer,
    // which then also bounds later requests on the connection, starts only
    // once the connection is handed to it).
    let accepted = Instant::now();
    let Some(acceptor) = tls else {
        // Plaintext: HTTP/1.1, or HTTP/2 with prior knowledge (h2c, as a
        // gRPC client pointed at this port speaks; it gets a 404 it can
        // explain) when the connection opens with the HTTP/2 preface.
        return match sniff_h2(&io.inner, limits.header_timeout).await {
            None => {}
            Some(true) => http2(io, service, limits, activity, closing).await,
            Some(false) => http1(io, service, limits, accepted, activity, closing).await,
        };
    };
    // A handshake that stalls costs this connection only, and not for long.
    let Ok(Ok(tls)) = tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await else {
        return;
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        http2(tls, service, limits, activity, closing).await;
    } else {
        http1(tls, service, limits, accepted, activity, closing).await;
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plaintext connection opens with the HTTP/2 preface, looking
/// without consuming. `None`: the peer left or sent nothing decisive within
/// `limit` (a silent connection is closed at the header timeout, like one
/// whose headers never finish).
async fn sniff_h2(tcp: &TcpStream, limit: Duration) -> Option<bool> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 24];
    loop {
        let n = tokio::time::timeout_at(deadline, tcp.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // Part of the preface so far (peek returns at once while bytes are
        // waiting): look again shortly.
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn http2<I>(
    io: I,
    service: Service,
    limits: HttpLimits,
    activity: Activity,
    closing: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new());
    let conn = b.serve_connection(TokioIo::new(io), service);
    drive(conn, |c| c.graceful_shutdown(), limits, activity, closing).await;
}

async fn http1<I>(
    io: I,
    service: Service,
    limits: HttpLimits,
    accepted: Instant,
    activity: Activity,
    closing: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = hyper::server::conn::http1::Builder::new();
    let left = limits.header_timeout.saturating_sub(accepted.elapsed());
    b.timer(TokioTimer::new())
        .header_read_timeout(left.max(Duration::from_millis(1)));
    let conn = b.serve_connection(TokioIo::new(io), service);
    drive(conn, |c| c.graceful_shutdown(), limits, activity, closing).await;
}

/// Runs a connection to its end, closing it when nothing has moved for the
/// idle timeout, and finishing it gracefully when the server stops.
async fn drive<C, E>(
    conn: C,
    graceful: impl FnOnce(Pin<&mut C>),
    limits: HttpLimits,
    activity: Activity,
    mut closing: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    let mut graceful = Some(graceful);
    loop {
        let idle_deadline = activity.last() + limits.idle_timeout;
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(idle_deadline) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    tracing::debug!(idle = ?limits.idle_timeout, "closing an idle HTTP connection");
                    return;
                }
            }
            asked = async { closing.wait_for(|c| *c).await.is_ok() }, if graceful.is_some() => {
                if !asked {
                    return;
                }
                if let Some(g) = graceful.take() {
                    g(conn.as_mut());
                }
                let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                return;
            }
        }
    }
}

/// When bytes last moved on a connection.
#[derive(Clone)]
struct Activity {
    base: Instant,
    /// Milliseconds since `base`.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket that records when bytes last moved through it.
struct Tracked<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

//! The gRPC side: connecting, and turning statuses into messages a user can
//! act on.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use liveslice_proto::v1 as pb;
use pb::slice_service_client::SliceServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

pub type Client = SliceServiceClient<InterceptedService<Channel, Bearer>>;

/// The server's address when none is given.
pub const DEFAULT_SERVER: &str = "127.0.0.1:50051";

/// The server's default gRPC port, named when the client was pointed at
/// the HTTP port instead.
const DEFAULT_GRPC_PORT: u16 = 50051;

/// Frames can be as large as the server's `--max-nal-bytes` (8 MiB) times
/// two; tonic's 4 MiB default would turn a big keyframe into an error.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// How to reach a server: the `--server`, `--token` and `--ca` options the
/// subcommands share.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// The server's gRPC address: host:port (plaintext; TLS with --ca),
    /// http://host:port, or https://host:port (TLS, verified against the
    /// system's roots or --ca). `publish` takes a comma-separated list
    /// (A,B,…): it continues the session on the next if one goes away.
    #[arg(long, env = "LIVESLICE_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    #[command(flatten)]
    pub access: AccessArgs,
}

/// `--token` and `--ca`, for subcommands whose `--server` is optional.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AccessArgs {
    /// Bearer token for a server with auth on (sent as `authorization:
    /// Bearer TOKEN` metadata).
    #[arg(
        long,
        env = "LIVESLICE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// PEM file of the CA (or self-signed certificate) to trust for TLS,
    /// instead of the system's roots. host:port addresses then use TLS.
    #[arg(long, env = "LIVESLICE_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// A server to talk to: its URL (always with a scheme), and the token and
/// CA to use. Shows as its URL; the token is never printed.
#[derive(Clone)]
pub struct Server {
    pub url: String,
    token: Option<String>,
    ca: Option<PathBuf>,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .field("ca", &self.ca)
            .finish()
    }
}

impl Server {
    /// From the command line: `host:port` gets `http://`, or `https://`
    /// with a CA.
    pub fn new(server: &str, access: &AccessArgs) -> Result<Self> {
        let server = server.trim();
        if server.is_empty() {
            bail!("--server is empty; expected host:port, e.g. {DEFAULT_SERVER}");
        }
        let url = if server.contains("://") {
            server.to_string()
        } else if access.ca.is_some() {
            format!("https://{server}")
        } else {
            format!("http://{server}")
        };
        if let Some(t) = &access.token {
            if t.is_empty() {
                bail!("--token is empty");
            }
        }
        Ok(Self {
            url,
            token: access.token.clone(),
            ca: access.ca.clone(),
        })
    }

    /// A server with no auth and no TLS (one this process started).
    pub fn plain(url: &str) -> Self {
        Self {
            url: url.to_string(),
            token: None,
            ca: None,
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn is_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    fn tls_config(&self) -> Result<ClientTlsConfig> {
        let tls = ClientTlsConfig::new();
        Ok(match &self.ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read --ca {}", path.display()))?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    bail!(
                        "--ca {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
                        path.display()
                    );
                }
                tls.ca_certificate(Certificate::from_pem(pem))
            }
            None => tls.with_native_roots(),
        })
    }

    /// `authorization: Bearer TOKEN`, checked once.
    fn bearer(&self) -> Result<Bearer> {
        match &self.token {
            None => Ok(Bearer(None)),
            Some(t) => MetadataValue::try_from(format!("Bearer {t}"))
                .map(|v| Bearer(Some(v)))
                .map_err(|_| {
                    anyhow!("--token has characters a header cannot carry (printable ASCII only)")
                }),
        }
    }
}

/// Adds the bearer token (if any) to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Connects eagerly, so a server that is not there is reported as such
/// before anything else happens.
pub async fn connect(server: &Server) -> Result<Client> {
    let (channel, bearer) = connect_channel(server).await?;
    Ok(SliceServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES))
}

/// A `JobService` client, connected as [`connect`] does.
pub async fn connect_jobs(server: &Server) -> Result<JobClient> {
    let (channel, bearer) = connect_channel(server).await?;
    Ok(pb::job_service_client::JobServiceClient::with_interceptor(
        channel, bearer,
    ))
}

pub type JobClient = pb::job_service_client::JobServiceClient<InterceptedService<Channel, Bearer>>;

async fn connect_channel(server: &Server) -> Result<(Channel, Bearer)> {
    let url = &server.url;
    let bearer = server.bearer()?;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| {
            anyhow!(
                "invalid server address {url:?} ({e}); expected host:port, e.g. {DEFAULT_SERVER}"
            )
        })?
        .connect_timeout(Duration::from_secs(5))
        // A frame every few hundred ms is normal; a dead peer should still
        // be noticed by a viewer that only reads.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    if server.is_tls() {
        endpoint = endpoint
            .tls_config(server.tls_config()?)
            .map_err(|e| anyhow!("cannot set up TLS for {url}: {}", source_chain(&e)))?;
    } else if server.ca.is_some() {
        bail!("--ca is for TLS, but {url} is plaintext: use https://");
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| connect_error(server, &source_chain(&e)))?;
    Ok((channel, bearer))
}

/// Why a connection failed, with the fix where the cause is known.
fn connect_error(server: &Server, chain: &str) -> anyhow::Error {
    let url = &server.url;
    if server.is_tls() {
        let tls_problem = if chain.contains("no native certs") {
            Some("this system has no CA roots: install ca-certificates, or give the server's CA with --ca FILE")
        } else if chain.contains("CaUsedAsEndEntity") {
            Some("the server's certificate is itself a CA certificate, which TLS clients refuse: serve a leaf certificate signed by the CA, and give the CA with --ca FILE")
        } else if chain.contains("InvalidContentType") {
            Some("the server does not speak TLS there: use host:port or http:// without --ca")
        } else if chain.contains("certificate") || chain.contains("Certificate") {
            Some("the server's certificate is not trusted: give its CA with --ca FILE")
        } else {
            None
        };
        if let Some(fix) = tls_problem {
            return anyhow!("cannot connect to {url} over TLS ({chain}): {fix}");
        }
    }
    let hint = if server.is_tls() {
        " (is the server using TLS? then https://; if not, http:// or host:port)"
    } else if chain.contains("invalid") || chain.contains("frame") || chain.contains("reset") {
        " (a TLS server? then https://host:port, or --ca FILE)"
    } else {
        ""
    };
    anyhow!("cannot connect to {url}: is liveslice-server running? ({chain}){hint}")
}

/// The host of a URL (`host`, `1.2.3.4`, `[::1]`), without scheme or port.
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    }
}

/// The server's address with another port, in the form `--server` takes.
fn with_port(server: &Server, port: u16) -> String {
    let host = url_host(&server.url);
    if server.is_tls() {
        format!("https://{host}:{port}")
    } else {
        format!("{host}:{port}")
    }
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

/// The status of a `StreamSlices` call that failed before any answer: as
/// [`status_error`], and for a plaintext address whose connection broke
/// at once, the likely cause: a server that speaks TLS.
pub fn call_error(status: &Status, server: &Server, session: &str) -> anyhow::Error {
    let e = status_error(status, server, session);
    let broke = matches!(
        status.code(),
        Code::Cancelled | Code::Unknown | Code::Internal | Code::Unavailable
    ) && !status.message().contains("shutting down");
    if broke && !server.is_tls() && !e.to_string().contains("if the server uses TLS") {
        return anyhow!(
            "{e}; if the server uses TLS (--tls-cert), use https://{}:PORT, or --ca FILE for a \
             private CA",
            url_host(&server.url)
        );
    }
    e
}

/// A status from `StreamSlices` as an error naming the session and, where
/// there is one, the fix.
pub fn status_error(status: &Status, server: &Server, session: &str) -> anyhow::Error {
    let msg = status.message();
    if msg.contains("grpc-status header missing") {
        // An HTTP server answered (404 for the gRPC path): most likely
        // liveslice's own HTTP origin.
        return anyhow!(
            "{server} answered with plain HTTP ({msg}): this looks like liveslice's HTTP port, \
             not its gRPC port; the gRPC port is liveslice-server's --grpc-addr (default \
             {DEFAULT_GRPC_PORT}), e.g. --server {}",
            with_port(server, DEFAULT_GRPC_PORT)
        );
    }
    if !server.is_tls() && msg.contains("h2 protocol error") {
        return anyhow!(
            "{server} did not answer as plaintext gRPC ({}: {msg}): if the server uses TLS \
             (--tls-cert), use https://host:port, or --ca FILE for a private CA",
            status.code()
        );
    }
    match status.code() {
        Code::Unauthenticated => anyhow!(
            "the server wants a valid token ({msg}): {}",
            if server.token.is_some() {
                "check --token / LIVESLICE_TOKEN (unknown or expired)"
            } else {
                "give one with --token TOKEN or LIVESLICE_TOKEN"
            }
        ),
        Code::PermissionDenied => anyhow!(
            "the token is not allowed to do this for session {session} ({msg}): it is for another session or role"
        ),
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
        R::BadAudio => "bad audio",
        R::AudioTiming => "audio timing",
        R::NoVideoTrack => "video in an audio-only session",
        R::RenditionAlignment => "before a random access point aligned with the other renditions",
    }
}

/// "3 frames", "1 byte run": what a drop report counts (the server counts
/// runs of non-H.264 bytes, not frames, for `NOT_H264`).
pub fn dropped_count(reason: i32, n: u64) -> String {
    let runs = reason == pb::DropReason::NotH264 as i32;
    let (one, many) = if runs {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn access(token: Option<&str>, ca: Option<&str>) -> AccessArgs {
        AccessArgs {
            token: token.map(str::to_string),
            ca: ca.map(PathBuf::from),
        }
    }

    #[test]
    fn host_port_gets_a_scheme() {
        let plain = |s: &str| Server::new(s, &access(None, None)).map(|s| s.url);
        assert_eq!(plain("127.0.0.1:50051").unwrap(), "http://127.0.0.1:50051");
        assert_eq!(plain(" host:1 ").unwrap(), "http://host:1");
        assert_eq!(plain("http://h:2").unwrap(), "http://h:2");
        assert_eq!(plain("https://h:3").unwrap(), "https://h:3");
        assert!(plain("").is_err());
        let with_ca = Server::new("h:4", &access(None, Some("ca.pem"))).unwrap();
        assert_eq!(with_ca.url, "https://h:4");
        assert!(Server::new("h:4", &access(Some(""), None)).is_err());
    }

    #[test]
    fn tokens_become_bearer_metadata_and_stay_hidden() {
        let s = Server::new("h:1", &access(Some("s3cret"), None)).unwrap();
        let mut bearer = s.bearer().unwrap();
        let req = bearer.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        assert!(!format!("{s:?} {s}").contains("s3cret"));
        let none = Server::new("h:1", &access(None, None)).unwrap();
        let req = none.bearer().unwrap().call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        let bad = Server::new("h:1", &access(Some("new\nline"), None)).unwrap();
        assert!(bad.bearer().is_err());
    }

    #[test]
    fn the_http_port_is_named() {
        let s = Server::new("127.0.0.1:8080", &access(None, None)).unwrap();
        let status =
            Status::unimplemented("grpc-status header missing, mapped from HTTP status code 404");
        let e = status_error(&status, &s, "cam1").to_string();
        assert!(e.contains("this looks like liveslice's HTTP port"), "{e}");
        assert!(e.contains("--server 127.0.0.1:50051"), "{e}");
        let tls = Server::new("https://[::1]:8443", &access(None, None)).unwrap();
        let e = status_error(&status, &tls, "cam1").to_string();
        assert!(e.contains("--server https://[::1]:50051"), "{e}");
    }

    #[test]
    fn a_broken_plaintext_call_suggests_tls() {
        let plain = Server::new("127.0.0.1:50051", &access(None, None)).unwrap();
        for status in [
            Status::cancelled("operation was canceled"),
            Status::internal("h2 protocol error: http2 error"),
        ] {
            let e = call_error(&status, &plain, "cam1").to_string();
            assert_eq!(e.matches("if the server uses TLS").count(), 1, "{e}");
        }
        let tls = Server::new("https://h:1", &access(None, None)).unwrap();
        let e = call_error(&Status::cancelled("x"), &tls, "cam1").to_string();
        assert!(!e.contains("if the server uses TLS"), "{e}");
        let e = call_error(&Status::already_exists("x"), &plain, "cam1").to_string();
        assert!(!e.contains("TLS"), "{e}");
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(url_host("http://127.0.0.1:50051"), "127.0.0.1");
        assert_eq!(url_host("https://host/"), "host");
        assert_eq!(url_host("http://[::1]:50051"), "[::1]");
        assert_eq!(url_host("h:1"), "h");
    }
}

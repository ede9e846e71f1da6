//! The server to load: loopback only. A load generator pointed at someone
//! else's machine is an attack, so anything but 127.0.0.0/8, ::1 or a
//! `localhost` that resolves only to those is refused before connecting.

use std::net::IpAddr;

use anyhow::{bail, Result};
use tonic::transport::Uri;

/// Checks `url` (given as `--server`) and returns it parsed.
pub async fn loopback_uri(url: &str) -> Result<Uri> {
    loopback_uri_for("--server", url).await
}

/// Checks `url`, given as the option `flag`, and returns it parsed.
pub async fn loopback_uri_for(flag: &str, url: &str) -> Result<Uri> {
    let uri: Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => bail!("invalid {flag} {url:?} ({e}); expected e.g. http://127.0.0.1:50051"),
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!(
            "{flag} {url:?}: scheme {other:?} is not supported (plaintext http:// to a loopback address only)"
        ),
        None => bail!("{flag} {url:?} needs a scheme, e.g. http://127.0.0.1:50051"),
    }
    let Some(host) = uri.host() else {
        bail!("{flag} {url:?} has no host");
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !is_loopback(ip) {
            bail!(
                "refusing to load {host}: load tests only target loopback addresses (127.0.0.0/8, ::1)"
            );
        }
        return Ok(uri);
    }
    let name = host.trim_end_matches('.');
    if !name.eq_ignore_ascii_case("localhost") {
        bail!(
            "refusing to load {host}: load tests only target loopback addresses (127.0.0.0/8, ::1, localhost)"
        );
    }
    let port = uri.port_u16().unwrap_or(80);
    let addrs: Vec<_> = tokio::net::lookup_host((name, port)).await?.collect();
    if addrs.is_empty() || addrs.iter().any(|a| !is_loopback(a.ip())) {
        bail!(
            "refusing to load {host}: it does not resolve to loopback addresses only ({addrs:?})"
        );
    }
    Ok(uri)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_is_accepted() {
        for ok in [
            "http://127.0.0.1:50051",
            "http://127.1.2.3:1",
            "http://[::1]:50051",
            "http://[::ffff:127.0.0.1]:50051",
        ] {
            assert!(loopback_uri(ok).await.is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:50051",
            "http://0.0.0.0:50051",
            "http://[::]:50051",
            "http://192.168.1.1",
            "http://example.com:50051",
            "http://localhost.example.com:50051",
            "https://127.0.0.1:50051",
            "127.0.0.1:50051",
            "not a url",
        ] {
            assert!(loopback_uri(bad).await.is_err(), "{bad}");
        }
    }
}

//! The reverse-proxy path: requests for an origin this connection covers
//! (handshake certificate or a secondary certificate sent on it) go to the
//! origin's upstream over a keep-alive pool — HTTP/2 when the upstream's ALPN
//! says so, HTTP/1.1 otherwise — with `Forwarded`/`Via` added, hop-by-hop
//! fields removed, and bodies streamed both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bauta_policy::{Host, Protocol};
use dashmap::DashMap;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::UpstreamError;
use crate::body::Body;
use crate::config::origin::Origin;
use crate::upstream::dial::{Asker, Authorized, DialError, Dialer};
use crate::upstream::headers::{strip_hop_by_hop, via_value};
use crate::upstream::pool::UpstreamPool;
use crate::wire::target::Target;

/// How long to wait for the upstream TLS handshake.
const UPSTREAM_TLS_TIMEOUT: Duration = Duration::from_secs(10);

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// Upstream connections by origin: HTTP/1.1 ones parked in the same kind of
/// pool the forward path uses, one multiplexed HTTP/2 connection each.
pub struct ReversePool {
    h1: UpstreamPool,
    h2: DashMap<Target, (http2::SendRequest<Body>, SocketAddr)>,
}

// === impl ReversePool ===

impl ReversePool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> ReversePool {
        ReversePool {
            h1: UpstreamPool::new(max_idle, idle_timeout),
            h2: DashMap::new(),
        }
    }

    fn checkout(&self, key: &Target, auth: &Authorized) -> Option<(Sender, SocketAddr)> {
        if let Some(entry) = self.h2.get(key) {
            let (s, peer) = &*entry;
            if !s.is_closed() && s.is_ready() && auth.addrs.contains(&peer.ip()) {
                return Some((Sender::H2(s.clone()), *peer));
            }
        }
        self.h1
            .checkout(key, auth)
            .map(|(s, peer)| (Sender::H1(s), peer))
    }

    fn checkin(&self, key: &Target, sender: Sender, peer: SocketAddr) {
        match sender {
            Sender::H2(s) => {
                if !s.is_closed() {
                    self.h2.insert(key.clone(), (s, peer));
                }
            }
            Sender::H1(s) => self.h1.checkin(key.clone(), s, peer),
        }
    }
}

/// Policy for the reverse path: the origin's name and port, checked against
/// the addresses of its upstream (the addresses we actually connect to).
pub async fn authorize(
    dialer: &Dialer,
    policy: &bauta_policy::Policy,
    origin: &Origin,
    who: Asker<'_>,
) -> Result<Authorized, DialError> {
    let host = Host::Name(origin.host.clone());
    let addrs = match &origin.upstream.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(n) => dialer.resolve(n).await?,
    };
    dialer.decide_for(policy, Protocol::Reverse, &host, origin.port, &addrs, who)
}

/// Send one request to the origin's upstream and stream the answer back.
pub async fn send(
    pool: &ReversePool,
    dialer: &Dialer,
    auth: &Authorized,
    origin: &Origin,
    who: Asker<'_>,
    proxy_name: &str,
    req: Request<Body>,
) -> Result<Response<Body>, UpstreamError> {
    let key = Target {
        host: Host::Name(origin.host.clone()),
        port: origin.port,
    };
    let via = via_value(req.version(), proxy_name);
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    // Only the proxy speaks for the client's identity: drop every copy the
    // client sent, then add the verified one (if any).
    if let Some(name) = &origin.identity_header {
        parts.headers.remove(name);
        if let Some(v) = who.identity.and_then(|id| HeaderValue::from_str(id).ok()) {
            parts.headers.insert(name.clone(), v);
        }
    }
    parts.headers.append(header::VIA, via.clone());
    // RFC 7239: who asked, over what, for which host.
    let forwarded = format!(
        "for={};proto=https;host={}",
        forwarded_node(who.client),
        quote_if_needed(&authority_of(origin))
    );
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        parts.headers.append(header::FORWARDED, v);
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());

    let (mut sender, peer) = match pool.checkout(&key, auth) {
        Some(s) => s,
        None => connect(dialer, auth, origin).await?,
    };
    let result = match &mut sender {
        Sender::H1(s) => {
            parts.version = Version::HTTP_11;
            parts.uri = Uri::builder()
                .path_and_query(path.as_str())
                .build()
                .map_err(|_| UpstreamError::InvalidTarget("request target has an invalid path"))?;
            if let Ok(h) = HeaderValue::from_str(&authority_of(origin)) {
                parts.headers.insert(header::HOST, h);
            }
            s.send_request(Request::from_parts(parts, body)).await
        }
        Sender::H2(s) => {
            parts.version = Version::HTTP_2;
            let scheme = if origin.upstream.tls.is_some() {
                "https"
            } else {
                "http"
            };
            parts.uri = Uri::builder()
                .scheme(scheme)
                .authority(authority_of(origin))
                .path_and_query(path.as_str())
                .build()
                .map_err(|_| UpstreamError::InvalidTarget("request target has an invalid path"))?;
            s.send_request(Request::from_parts(parts, body)).await
        }
    };
    let resp = result.map_err(|e| UpstreamError::from_exchange(&e))?;
    pool.checkin(&key, sender, peer);
    let (mut parts, body) = resp.into_parts();
    // An intermediary sends its own HTTP version (RFC 9110 §6.2), not
    // the upstream's (an HTTP/1.0 upstream must not make us answer 1.0).
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.append(header::VIA, via);
    Ok(Response::from_parts(parts, crate::body::boxed(body)))
}

/// `host` or `host:port` as the origin's clients write it.
fn authority_of(origin: &Origin) -> String {
    if origin.port == 443 {
        origin.host.clone()
    } else {
        format!("{}:{}", origin.host, origin.port)
    }
}

/// RFC 7239 §6: IPv6 nodes are quoted and bracketed.
fn forwarded_node(addr: std::net::IpAddr) -> String {
    match addr {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("\"[{a}]\""),
    }
}

fn quote_if_needed(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
    {
        s.to_string()
    } else {
        format!("\"{s}\"")
    }
}

async fn connect(
    dialer: &Dialer,
    auth: &Authorized,
    origin: &Origin,
) -> Result<(Sender, SocketAddr), UpstreamError> {
    let (tcp, peer) = dialer.connect(auth, origin.upstream.port).await?;
    match &origin.upstream.tls {
        None => Ok((handshake_h1(tcp).await?, peer)),
        Some((cfg, name)) => {
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(cfg));
            let tls = tokio::time::timeout(UPSTREAM_TLS_TIMEOUT, connector.connect(name.clone(), tcp))
                .await
                .map_err(|_| UpstreamError::TlsHandshake)?
                .map_err(|e| {
                    tracing::debug!(error = %e, upstream = %origin.upstream.display, "upstream TLS failed");
                    let cert_error = matches!(
                        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
                        Some(rustls::Error::InvalidCertificate(_))
                    );
                    if cert_error {
                        UpstreamError::TlsCertificate
                    } else {
                        UpstreamError::TlsHandshake
                    }
                })?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            if h2 {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(super::UPSTREAM_H2_STREAM_WINDOW)
                    .initial_connection_window_size(super::UPSTREAM_H2_CONNECTION_WINDOW)
                    .adaptive_window(false)
                    .handshake(TokioIo::new(tls))
                    .await
                    .map_err(|_| UpstreamError::Terminated)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "upstream h2 connection ended");
                    }
                });
                Ok((Sender::H2(sender), peer))
            } else {
                Ok((handshake_h1(tls).await?, peer))
            }
        }
    }
}

async fn handshake_h1<IO>(io: IO) -> Result<Sender, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(super::UPSTREAM_READ_BUFFER)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|_| UpstreamError::Terminated)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(Sender::H1(sender))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_nodes() {
        assert_eq!(
            forwarded_node("192.0.2.1".parse().expect("addr")),
            "192.0.2.1"
        );
        assert_eq!(
            forwarded_node("2001:db8::1".parse().expect("addr")),
            "\"[2001:db8::1]\""
        );
        assert_eq!(quote_if_needed("api.example.com"), "api.example.com");
        assert_eq!(
            quote_if_needed("api.example.com:8443"),
            "\"api.example.com:8443\""
        );
    }
}

//! Plain `http://` forwarding (absolute-form over HTTP/1.1, `:scheme http`
//! over HTTP/2): header hygiene, `Via`, and a keep-alive pool of upstream
//! HTTP/1.1 connections.
//!
//! Pooled connections are keyed by target and remember the address they were
//! opened to; a request reuses one only if that address is among the addresses
//! the policy allowed for *this* request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::error::UpstreamError;
use crate::body::Body;
use crate::upstream::dial::{Authorized, Dialer};
use crate::wire::target::Target;

/// Headers that describe one hop and never travel further (RFC 9110 §7.6.1),
/// plus the de-facto `Proxy-Connection` and `Keep-Alive`.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

struct Idle {
    sender: SendRequest<Body>,
    peer: SocketAddr,
    since: Instant,
}

/// Idle upstream connections by target.
pub struct UpstreamPool {
    idle: DashMap<Target, Vec<Idle>>,
    max_idle_per_target: usize,
    idle_timeout: Duration,
}

// === impl UpstreamPool ===

impl UpstreamPool {
    pub fn new(max_idle_per_target: usize, idle_timeout: Duration) -> UpstreamPool {
        UpstreamPool {
            idle: DashMap::new(),
            max_idle_per_target,
            idle_timeout,
        }
    }

    /// A ready connection to `target` opened to one of `allowed`, if any.
    pub(crate) fn checkout(
        &self,
        target: &Target,
        allowed: &Authorized,
    ) -> Option<(SendRequest<Body>, SocketAddr)> {
        let mut entry = self.idle.get_mut(target)?;
        let now = Instant::now();
        // Drop what is dead or stale; take the first usable one.
        entry.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < self.idle_timeout);
        let pos = entry
            .iter()
            .position(|c| c.sender.is_ready() && allowed.addrs.contains(&c.peer.ip()))?;
        let c = entry.swap_remove(pos);
        Some((c.sender, c.peer))
    }

    pub(crate) fn checkin(&self, target: Target, sender: SendRequest<Body>, peer: SocketAddr) {
        if sender.is_closed() || self.max_idle_per_target == 0 {
            return;
        }
        let mut entry = self.idle.entry(target).or_default();
        if entry.len() >= self.max_idle_per_target {
            return;
        }
        entry.push(Idle {
            sender,
            peer,
            since: Instant::now(),
        });
    }

    /// Connections currently parked (for tests and diagnostics).
    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|e| e.len()).sum()
    }
}

/// Forward one request to `target` and stream the response back.
pub async fn forward(
    pool: &UpstreamPool,
    dialer: &Dialer,
    auth: &Authorized,
    target: &Target,
    proxy_name: &str,
    req: Request<Body>,
) -> Result<Response<Body>, UpstreamError> {
    let via = via_value(req.version(), proxy_name);
    let upstream_req = build_upstream_request(req, target, &via)?;

    let (mut sender, peer) = match pool.checkout(target, auth) {
        Some(c) => c,
        None => {
            let (stream, peer) = dialer.connect(auth, target.port).await?;
            let (sender, conn) = http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|_| UpstreamError::Terminated)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            (sender, peer)
        }
    };

    let resp = sender
        .send_request(upstream_req)
        .await
        .map_err(|e| classify_upstream(&e))?;
    // The connection is reusable once this response body is consumed;
    // `checkout` only hands out senders that are ready again.
    pool.checkin(target.clone(), sender, peer);

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    append_via(&mut parts.headers, &via);
    Ok(Response::from_parts(parts, crate::body::boxed(body)))
}

fn classify_upstream(e: &hyper::Error) -> UpstreamError {
    if e.is_parse() || e.is_parse_status() {
        UpstreamError::Protocol
    } else {
        UpstreamError::Terminated
    }
}

/// Origin-form, HTTP/1.1, hop-by-hop headers removed, `Host` from the target URI.
fn build_upstream_request(
    req: Request<Body>,
    target: &Target,
    via: &HeaderValue,
) -> Result<Request<Body>, UpstreamError> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    parts.uri = Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| UpstreamError::InvalidTarget("request target has an invalid path"))?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host.
    let host = if target.port == 80 {
        target.host.to_string()
    } else {
        target.to_string()
    };
    let host = HeaderValue::from_str(&host)
        .map_err(|_| UpstreamError::InvalidTarget("request target has an invalid authority"))?;
    parts.headers.insert(header::HOST, host);
    append_via(&mut parts.headers, via);
    Ok(Request::from_parts(parts, body))
}

/// Remove hop-by-hop fields, including every field the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP.iter() {
        headers.remove(n);
    }
    // Transfer-Encoding is framing of the incoming hop; hyper re-frames.
    headers.remove(header::TRANSFER_ENCODING);
}

/// `Via: 1.1 bauta` (RFC 9110 §7.6.3), with the protocol the request came in on.
pub fn via_value(version: Version, proxy_name: &str) -> HeaderValue {
    let proto = match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    HeaderValue::from_str(&format!("{proto} {proxy_name}"))
        .unwrap_or_else(|_| HeaderValue::from_static("1.1 bauta"))
}

fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    headers.append(header::VIA, via.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn via_names_the_incoming_protocol() {
        assert_eq!(via_value(Version::HTTP_11, "bauta"), "1.1 bauta");
        assert_eq!(via_value(Version::HTTP_2, "edge"), "2 edge");
        assert_eq!(via_value(Version::HTTP_10, "bauta"), "1.0 bauta");
    }
}

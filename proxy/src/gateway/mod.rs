//! Sidecar mode: a parent Bauta (`[gateway]`) carries every tunnel, UDP
//! flow and forwarded request of this one over a few multiplexed HTTP/3 or
//! HTTP/2 connections with mTLS, instead of this proxy dialling the targets.
//!
//! [`Gateway`] is what the core calls: [`Gateway::connect`] for CONNECT and
//! CONNECT-UDP (a stream on a pooled connection; the gateway's answer comes
//! back as it is), [`Gateway::forward`] for `http://` requests and
//! [`Gateway::originate`] for those sent as `https://` to an origin the
//! gateway proved. The pool (`pool.rs`) races and leases connections
//! (`conn.rs`: HTTP/2 under hyper through `h2_tap.rs`, HTTP/3 through
//! `h3/`), sends on either (`exchange.rs`) and backs off after failures
//! (`breaker.rs`).

mod breaker;
mod conn;
pub mod error;
mod exchange;
pub mod h2_tap;
pub mod h3;
mod io;
mod pool;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response};

pub use self::conn::STATES;
pub use self::error::GatewayError;
use self::exchange::TunnelRequest;
pub use self::io::{GatewayBody, GatewayIo};
use self::pool::{Lease, Pool};
use crate::body::{self, Body};
use crate::config::gateway::GatewaySpec;
use crate::ops::metrics::Metrics;
use crate::upstream::headers::{onward_request, onward_response, via_value};
use crate::wire::target::Target;

/// How long an originated request waits for a certificate that is still
/// on its way after the CONNECT that asked for it.
const PROOF_WAIT: Duration = Duration::from_millis(500);

/// The `outcome` label values of `bauta_originated_requests_total`.
pub const ORIGINATE_OUTCOMES: &[&str] = &["ok", "not_authoritative", "gateway_error"];

/// The `kind` label values of `bauta_gateway_streams_active`.
pub const STREAM_KINDS: &[&str] = &["connect", "connect-udp", "http"];

/// The parent this proxy chains to, for one `[gateway]` configuration.
pub struct Gateway {
    spec: Arc<GatewaySpec>,
    pool: Pool,
    metrics: Arc<Metrics>,
    /// The gateway's authority, for `Proxy-Status` `next-hop`.
    next_hop: Arc<str>,
}

/// The gateway's answer to a CONNECT or CONNECT-UDP.
pub enum Opened {
    /// 2xx: its head, and the tunnel's stream.
    Tunnel {
        head: http::response::Parts,
        io: GatewayIo,
    },
    /// Anything else: its head and (the start of) its body, to pass back.
    Refused {
        head: http::response::Parts,
        body: Bytes,
    },
}

impl Gateway {
    pub fn new(spec: Arc<GatewaySpec>, metrics: Arc<Metrics>) -> Gateway {
        Gateway {
            next_hop: Arc::from(spec.target.to_string()),
            pool: Pool::new(Arc::clone(&spec), Arc::clone(&metrics)),
            spec,
            metrics,
        }
    }

    pub fn spec(&self) -> &Arc<GatewaySpec> {
        &self.spec
    }

    /// The gateway's `host:port`.
    pub fn next_hop(&self) -> &Arc<str> {
        &self.next_hop
    }

    /// Open a CONNECT (`udp`: CONNECT-UDP, extended CONNECT with capsules)
    /// stream to `target` on a gateway connection and wait for its answer.
    pub async fn connect(
        &self,
        target: &Target,
        udp: bool,
        response_timeout: Duration,
    ) -> Result<Opened, GatewayError> {
        let kind = if udp { "connect-udp" } else { "connect" };
        let udp_path = udp.then(|| self.udp_path(target));
        let result = self
            .with_retry(kind, |lease| {
                let req = TunnelRequest {
                    target,
                    udp: udp_path.clone().map(|p| (&*self.next_hop, p)),
                };
                exchange::open_tunnel(lease, req, response_timeout)
            })
            .await;
        self.counted(result)
    }

    /// Forward an `http://` request through the gateway and stream its
    /// response back (the stream slot is held until the body ends).
    pub async fn forward(
        &self,
        req: Request<Body>,
        proxy_name: &str,
        response_timeout: Duration,
    ) -> Result<Response<Body>, GatewayError> {
        // A body can be sent once: a stream refused by a draining
        // connection is retried only when nothing of it was sent, so the
        // request goes as it is and is not retried.
        let lease = self.counted(self.pool.lease("http").await)?;
        let (parts, body) = req.into_parts();
        self.counted(relay_request(lease, parts, body, proxy_name, response_timeout).await)
    }

    /// Send an `http://` request for `origin`'s host as `https://` to
    /// `origin` through the gateway — only on a connection where the
    /// gateway has proven `origin` with a secondary certificate that this
    /// proxy validated (`h2_tap`). Not proven yet: a CONNECT to `origin` on
    /// the same connection first, which is when an on-connect gateway sends
    /// the certificate (before its answer, which is then dropped). Still
    /// not proven: [`GatewayError::NotAuthoritative`], and nothing of the
    /// request was sent.
    pub async fn originate(
        &self,
        req: Request<Body>,
        origin: &Target,
        proxy_name: &str,
        response_timeout: Duration,
    ) -> Result<Response<Body>, GatewayError> {
        let result = self
            .originate_inner(req, origin, proxy_name, response_timeout)
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(GatewayError::NotAuthoritative(_)) => "not_authoritative",
            Err(_) => "gateway_error",
        };
        self.metrics
            .originated_requests
            .with_label_values(&[outcome])
            .inc();
        self.counted(result)
    }

    async fn originate_inner(
        &self,
        req: Request<Body>,
        origin: &Target,
        proxy_name: &str,
        response_timeout: Duration,
    ) -> Result<Response<Body>, GatewayError> {
        let lease = self.pool.lease("http").await?;
        let conn = Arc::clone(lease.connection());
        if !conn.proves(origin, Duration::ZERO).await {
            if let Some(probe) = self.pool.lease_same(&lease, "connect") {
                let timeout = response_timeout.min(self.spec.connect_timeout);
                exchange::probe(probe, origin, timeout).await;
            }
            // HTTP/3: the certificate comes on the control stream, which is
            // not ordered with the CONNECT's answer; give it a moment.
            if !conn.proves(origin, PROOF_WAIT).await {
                return Err(GatewayError::NotAuthoritative(origin.host.to_string()));
            }
        }
        let (mut parts, body) = req.into_parts();
        let authority = if origin.port == 443 {
            origin.host.to_string()
        } else {
            origin.to_string()
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = http::Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| GatewayError::Protocol("cannot build the https:// request".into()))?;
        let mut resp = relay_request(lease, parts, body, proxy_name, response_timeout).await?;
        // The gateway's Alt-Svc offers the gateway's own HTTP/3, which the
        // application would take for the origin's.
        resp.headers_mut().remove(header::ALT_SVC);
        Ok(resp)
    }

    /// The `[[originate]]` origin an `http://` request for `target` is
    /// upgraded to: same host, and port 80 or the origin's own.
    pub fn origination_for(&self, target: &Target) -> Option<&Target> {
        self.spec
            .originate
            .iter()
            .find(|o| o.host == target.host && (target.port == 80 || target.port == o.port))
    }

    /// Lease a stream and run `f` on it; a stream the gateway refused
    /// because its connection was going away is tried once more on another.
    async fn with_retry<'a, F, Fut, T>(
        &'a self,
        kind: &'static str,
        f: F,
    ) -> Result<T, GatewayError>
    where
        F: Fn(Lease) -> Fut,
        Fut: std::future::Future<Output = Result<T, GatewayError>> + 'a,
    {
        let lease = self.pool.lease(kind).await?;
        match f(lease).await {
            Err(e) if e.may_retry() => {
                self.count_ref(&e);
                f(self.pool.lease(kind).await?).await
            }
            other => other,
        }
    }

    /// The gateway's CONNECT-UDP path for `target` (RFC 9298 §2: an IPv6
    /// literal with its colons percent-encoded).
    fn udp_path(&self, target: &Target) -> String {
        let host = match &target.host {
            bauta_policy::Host::Ip(std::net::IpAddr::V6(ip)) => ip.to_string().replace(':', "%3A"),
            other => other.to_string(),
        };
        self.spec
            .udp_template
            .replace("{target_host}", &host)
            .replace("{target_port}", &target.port.to_string())
    }

    fn counted<T>(&self, r: Result<T, GatewayError>) -> Result<T, GatewayError> {
        r.map_err(|e| self.count(e))
    }

    fn count(&self, e: GatewayError) -> GatewayError {
        self.count_ref(&e);
        e
    }

    fn count_ref(&self, e: &GatewayError) {
        self.metrics
            .gateway_errors
            .with_label_values(&[e.reason()])
            .inc();
    }
}

/// Send a request on `lease` and stream its response back (the stream slot
/// is held until the body ends), with the header hygiene of a hop both
/// ways. The gateway takes the authority from the URI (`:authority`), so
/// `Host` is not sent.
async fn relay_request(
    lease: Lease,
    mut parts: http::request::Parts,
    body: Body,
    proxy_name: &str,
    response_timeout: Duration,
) -> Result<Response<Body>, GatewayError> {
    let via = via_value(parts.version, proxy_name);
    onward_request(&mut parts, &via);
    parts.headers.remove(header::HOST);
    let resp = exchange::request(&lease, parts, body, response_timeout).await?;
    let (mut parts, body) = resp.into_parts();
    onward_response(&mut parts, &via);
    Ok(Response::from_parts(
        parts,
        body::boxed(GatewayBody::new(body, lease)),
    ))
}

//! Sidecar mode: a parent Bauta (`[gateway]`) carries every tunnel, UDP
//! flow and forwarded request of this one over a few multiplexed HTTP/2
//! connections with mTLS, instead of this proxy dialling the targets.
//!
//! [`Gateway`] is what the core calls: [`Gateway::connect`] for CONNECT and
//! CONNECT-UDP (a stream on a pooled connection; the gateway's answer comes
//! back as it is) and [`Gateway::forward`] for `http://` requests. The
//! pool (`pool.rs`) leases streams on connections (`conn.rs`), watches the
//! gateway's frames for its stream limit and GOAWAY (`h2_watch.rs`), and
//! backs off after failures (`breaker.rs`).

mod breaker;
mod conn;
pub mod error;
pub mod h3;
pub mod h2_tap;
mod io;
mod pool;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, Version};
use http_body_util::BodyExt;

pub use self::conn::STATES;
pub use self::error::GatewayError;
pub use self::io::{GatewayBody, GatewayIo};
use self::pool::{Lease, Pool};
use crate::body::{self, Body};
use crate::config::gateway::GatewaySpec;
use crate::ops::metrics::Metrics;
use crate::upstream::headers::{append_via, strip_hop_by_hop, via_value};
use crate::wire::target::Target;

/// The gateway's answer body is read at most this far to pass it back.
const MAX_REFUSAL_BODY: usize = 16 * 1024;

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
        let result = self
            .with_retry(kind, |lease| async move {
                let req = if udp {
                    self.connect_udp_request(target)?
                } else {
                    connect_request(target)?
                };
                let resp = send(&lease, req, response_timeout).await?;
                Ok((lease, resp))
            })
            .await;
        let (lease, mut resp) = self.counted(result)?;
        if !resp.status().is_success() {
            let (head, body) = resp.into_parts();
            let body = read_bounded(body).await;
            return Ok(Opened::Refused { head, body });
        }
        let upgraded = hyper::upgrade::on(&mut resp)
            .await
            .map_err(|e| self.count(GatewayError::from_hyper(&e)))?;
        let (head, _) = resp.into_parts();
        Ok(Opened::Tunnel {
            head,
            io: GatewayIo::new(upgraded, lease),
        })
    }

    /// Forward an `http://` request through the gateway and stream its
    /// response back (the stream slot is held until the body ends).
    pub async fn forward(
        &self,
        req: Request<Body>,
        proxy_name: &str,
        response_timeout: Duration,
    ) -> Result<Response<Body>, GatewayError> {
        let via = via_value(req.version(), proxy_name);
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        append_via(&mut parts.headers, &via);
        parts.version = Version::HTTP_2;
        // A body can be sent once: a stream refused by a draining
        // connection is retried only when nothing of it was sent, so the
        // request goes as it is and is not retried.
        let req = Request::from_parts(parts, body);
        let lease = self.counted(self.pool.lease("http").await)?;
        let resp = self.counted(send(&lease, req, response_timeout).await)?;
        let (mut parts, body) = resp.into_parts();
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        append_via(&mut parts.headers, &via);
        Ok(Response::from_parts(
            parts,
            body::boxed(GatewayBody::new(body, lease)),
        ))
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
        if !conn.proves(origin) {
            if let Some(probe) = self.pool.lease_same(&lease, "connect") {
                let timeout = response_timeout.min(self.spec.connect_timeout);
                // Its answer (or failure) does not matter: only whether the
                // certificate came before it.
                let _ = send(&probe, connect_request(origin)?, timeout).await;
            }
            if !conn.proves(origin) {
                return Err(GatewayError::NotAuthoritative(origin.host.to_string()));
            }
        }
        let via = via_value(req.version(), proxy_name);
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
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        append_via(&mut parts.headers, &via);
        parts.version = Version::HTTP_2;
        let resp = send(&lease, Request::from_parts(parts, body), response_timeout).await?;
        let (mut parts, body) = resp.into_parts();
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        // The gateway's Alt-Svc offers the gateway's own HTTP/3, which the
        // application would take for the origin's.
        parts.headers.remove(header::ALT_SVC);
        append_via(&mut parts.headers, &via);
        Ok(Response::from_parts(
            parts,
            body::boxed(GatewayBody::new(body, lease)),
        ))
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

    fn connect_udp_request(&self, target: &Target) -> Result<Request<Body>, GatewayError> {
        let host = match &target.host {
            bauta_policy::Host::Ip(std::net::IpAddr::V6(ip)) => ip.to_string().replace(':', "%3A"),
            other => other.to_string(),
        };
        let path = self
            .spec
            .udp_template
            .replace("{target_host}", &host)
            .replace("{target_port}", &target.port.to_string());
        let uri = format!("https://{}{}", self.next_hop, path);
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(uri)
            .version(Version::HTTP_2)
            .header("capsule-protocol", HeaderValue::from_static("?1"))
            .body(body::empty())
            .map_err(|_| GatewayError::Protocol("cannot build the CONNECT-UDP request".into()))?;
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("connect-udp"));
        Ok(req)
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

fn connect_request(target: &Target) -> Result<Request<Body>, GatewayError> {
    Request::builder()
        .method(Method::CONNECT)
        .uri(target.to_string())
        .version(Version::HTTP_2)
        .body(body::empty())
        .map_err(|_| GatewayError::Protocol("cannot build the CONNECT request".into()))
}

async fn send(
    lease: &Lease,
    req: Request<Body>,
    response_timeout: Duration,
) -> Result<Response<hyper::body::Incoming>, GatewayError> {
    let mut sender = lease.connection().sender();
    let exchange = async {
        sender
            .ready()
            .await
            .map_err(|e| GatewayError::from_hyper(&e))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| GatewayError::from_hyper(&e))
    };
    tokio::time::timeout(response_timeout, exchange)
        .await
        .unwrap_or(Err(GatewayError::ResponseTimeout))
}

/// The start of a refusal's body (enough for any error page we write).
async fn read_bounded(mut body: hyper::body::Incoming) -> Bytes {
    let mut out = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                let room = MAX_REFUSAL_BODY.saturating_sub(out.len());
                out.extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
                if out.len() >= MAX_REFUSAL_BODY {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    Bytes::from(out)
}

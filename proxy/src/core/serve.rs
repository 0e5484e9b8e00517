//! The data path, front-agnostic: a request in → validate → policy and dial →
//! tunnel or forward → count and log. HTTP/1.1 and HTTP/2 fronts both hand
//! their requests to [`handle`].

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bauta_policy::{Decision, Protocol};
use http::{header, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::metered::MeteredBody;
use crate::body::{self, Body};
use crate::core::context::Shared;
use crate::core::exchange::{dial_failure, ConnInfo, Exchange, Failure, Kind};
use crate::core::respond::ProxyError;
use crate::tunnel::tcp::{self as tcp_tunnel, End};
use crate::tunnel::udp;
use crate::upstream::forward;
use crate::wire::target::Target;

/// Serve one request. Never fails: every error becomes a response.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let kind = kind_of(&req, conn.tls);
    let target = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let ex = Exchange::new(conn, req.method().clone(), kind, target);
    let result = match validate_host_header(&req) {
        Err(e) => Err((e, None)),
        Ok(()) => match kind {
            Kind::Connect => connect(&shared, &ex, req).await,
            Kind::Forward => forward(&shared, &ex, req).await,
            Kind::Reverse => reverse(&shared, &ex, req).await,
            Kind::ConnectUdp => connect_udp(&shared, &ex, req).await,
        },
    };
    Ok(match result {
        Ok(resp) => resp,
        Err(failure) => {
            let resp = failure.0.response(&shared.config().proxy_name);
            ex.fail(&shared, &failure, resp.status().as_u16());
            resp
        }
    })
}

/// CONNECT (with `:protocol connect-udp`: CONNECT-UDP), HTTP/1.1
/// `Upgrade: connect-udp` (CONNECT-UDP), or anything else (forward).
fn kind_of(req: &Request<Incoming>, tls: bool) -> Kind {
    let protocol = req.extensions().get::<hyper::ext::Protocol>();
    if req.method() == Method::CONNECT {
        match protocol {
            Some(p) if p.as_str().eq_ignore_ascii_case("connect-udp") => Kind::ConnectUdp,
            _ => Kind::Connect,
        }
    } else if req.version() < Version::HTTP_2
        && header_has_token(req.headers(), header::UPGRADE, "connect-udp")
    {
        Kind::ConnectUdp
    } else if req.uri().scheme_str() == Some("https") || (tls && req.uri().scheme().is_none()) {
        // An https request to us: served directly if this connection covers
        // its origin, else 421.
        Kind::Reverse
    } else {
        Kind::Forward
    }
}

fn header_has_token(headers: &http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// CONNECT-UDP over HTTP/2 (extended CONNECT, RFC 8441) or HTTP/1.1 (Upgrade,
/// RFC 9298 §3.2): answer, then relay capsules on the upgraded stream.
async fn connect_udp(
    shared: &Arc<Shared>,
    ex: &Exchange,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Failure> {
    let extended = req.method() == Method::CONNECT;
    if !extended && !header_has_token(req.headers(), header::CONNECTION, "upgrade") {
        return Err((
            ProxyError::BadRequest("Upgrade: connect-udp needs Connection: Upgrade"),
            None,
        ));
    }
    let plan = udp::validate(shared, req.method(), req.uri(), req.headers(), extended)
        .map_err(|(e, _)| (e, None))?;
    let flow = udp::open(shared, plan).await?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let ex = Exchange {
        target: flow.target.to_string(),
        ..ex.clone()
    };
    ex.count(shared, "ok");
    let shared2 = Arc::clone(shared);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                udp::relay(&shared2, &ex, flow, TokioIo::new(upgraded), None).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "client went away before the flow started");
                ex.log(Some(&flow.decision), 200, "client_gone", 0, 0);
            }
        }
    });
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = if extended {
        StatusCode::OK
    } else {
        StatusCode::SWITCHING_PROTOCOLS
    };
    let h = resp.headers_mut();
    h.insert("capsule-protocol", http::HeaderValue::from_static("?1"));
    if !extended {
        h.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        h.insert(
            header::UPGRADE,
            http::HeaderValue::from_static("connect-udp"),
        );
    }
    Ok(resp)
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host field.
fn validate_host_header(req: &Request<Incoming>) -> Result<(), ProxyError> {
    if req.version() == Version::HTTP_11 {
        let hosts = req.headers().get_all(header::HOST).iter().count();
        if hosts != 1 {
            return Err(ProxyError::BadRequest(
                "an HTTP/1.1 request needs exactly one Host header",
            ));
        }
    }
    Ok(())
}

/// CONNECT: dial, answer 2xx, then relay bytes on the upgraded stream.
async fn connect(
    shared: &Arc<Shared>,
    ex: &Exchange,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Failure> {
    if req.extensions().get::<hyper::ext::Protocol>().is_some() {
        return Err((
            ProxyError::NotImplemented("extended CONNECT protocol is not supported"),
            None,
        ));
    }
    let uri = req.uri();
    if uri.scheme().is_some() || uri.path_and_query().is_some() {
        return Err((
            ProxyError::BadRequest("CONNECT needs an authority-form target (host:port)"),
            None,
        ));
    }
    let authority = uri
        .authority()
        .ok_or((ProxyError::BadRequest("CONNECT needs host:port"), None))?;
    let target = Target::parse_authority(authority.as_str(), None).map_err(|_| {
        (
            ProxyError::BadRequest("CONNECT target must be host:port with a valid host and port"),
            None,
        )
    })?;

    // on-connect: prove the origin first (HTTP/2: the frame precedes the 2xx).
    if let Some(a) = &ex.conn.advertiser {
        a.on_connect(&target);
    }
    let config = shared.config();
    let dialed = shared
        .dialer
        .dial(&config.policy, Protocol::Connect, &target)
        .await
        .map_err(dial_failure)?;

    let on_upgrade = hyper::upgrade::on(&mut req);
    let shared2 = Arc::clone(shared);
    let exchange = Exchange {
        target: target.to_string(),
        ..ex.clone()
    };
    ex.count(shared, "ok");
    tokio::spawn(async move {
        let shared = shared2;
        let ex = exchange;
        let decision = dialed.decision;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "client went away before the tunnel started");
                ex.log(Some(&decision), 200, "client_gone", 0, 0);
                return;
            }
        };
        run_tcp_tunnel(
            &shared,
            &ex,
            &decision,
            TokioIo::new(upgraded),
            dialed.stream,
        )
        .await;
    });
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

/// Absolute-form `http://` (HTTP/1.1) or `:scheme http` (HTTP/2): forward.
async fn forward(
    shared: &Arc<Shared>,
    ex: &Exchange,
    req: Request<Incoming>,
) -> Result<Response<Body>, Failure> {
    let uri = req.uri();
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err((
                ProxyError::BadRequest("https:// targets must be reached with CONNECT"),
                None,
            ))
        }
        Some(_) => {
            return Err((
                ProxyError::BadRequest("only http:// targets can be forwarded"),
                None,
            ))
        }
        None => return Err((ProxyError::NotProxyRequest, None)),
    }
    let authority = uri.authority().ok_or((
        ProxyError::BadRequest("absolute-form target needs an authority"),
        None,
    ))?;
    let target = Target::parse_authority(authority.as_str(), Some(80)).map_err(|_| {
        (
            ProxyError::BadRequest("request target has an invalid host or port"),
            None,
        )
    })?;

    let config = shared.config();
    let auth = shared
        .dialer
        .authorize(&config.policy, Protocol::Http, &target)
        .await
        .map_err(dial_failure)?;
    // Count bytes both ways; the log line is written when the response body ends.
    let up = Arc::new(AtomicU64::new(0));
    let req = req.map(|b| crate::body::boxed(MeteredBody::new(b, Arc::clone(&up), None)));
    let resp = forward::forward(
        &shared.pool,
        &shared.dialer,
        &auth,
        &target,
        &config.proxy_name,
        req,
    )
    .await
    .map_err(|e| (e, Some(auth.decision.clone())))?;
    ex.count(shared, "ok");
    Ok(log_when_done(ex, auth.decision, up, resp))
}

/// Relay an established tunnel and write its log line when it ends.
pub(crate) async fn run_tcp_tunnel<C>(
    shared: &Shared,
    ex: &Exchange,
    decision: &Decision,
    client: C,
    target: tokio::net::TcpStream,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let kind = ex.kind.as_str();
    let m = &shared.metrics;
    let gauge = m.tunnels_active.with_label_values(&[kind]);
    gauge.inc();
    let up = m.tunnel_bytes.with_label_values(&[kind, "upstream"]);
    let down = m.tunnel_bytes.with_label_values(&[kind, "downstream"]);
    let idle = shared.config().limits.idle_timeout;
    let (moved, end) = tcp_tunnel::relay(client, target, idle, up, down, shared.aborted()).await;
    gauge.dec();
    let outcome = match end {
        End::Closed => "closed",
        End::Idle => "idle_timeout",
        End::Error(_) => "reset",
        End::Aborted => "shutdown",
    };
    ex.log(
        Some(decision),
        200,
        outcome,
        moved.upstream,
        moved.downstream,
    );
}

/// An https request on this connection: reverse-proxy it to the origin's
/// upstream if the connection covers the origin, else 421 Misdirected.
async fn reverse(
    shared: &Arc<Shared>,
    ex: &Exchange,
    req: Request<Incoming>,
) -> Result<Response<Body>, Failure> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .ok_or((ProxyError::BadRequest("request has no authority"), None))?;
    let (origin, auth) = reverse_route(shared, ex, &authority).await?;
    let req = req.map(crate::body::boxed);
    reverse_send(shared, ex, &origin, auth, req).await
}

/// Which origin an https request is for, if this connection covers it, and
/// the policy's word on reaching its upstream.
pub(crate) async fn reverse_route(
    shared: &Shared,
    ex: &Exchange,
    authority: &str,
) -> Result<
    (
        Arc<crate::config::origin::Origin>,
        crate::upstream::dial::Authorized,
    ),
    Failure,
> {
    let target = Target::parse_authority(authority, Some(443))
        .map_err(|_| (ProxyError::BadRequest("request authority is invalid"), None))?;
    let config = shared.config();
    let host = match &target.host {
        bauta_policy::Host::Name(n) => n.as_str(),
        bauta_policy::Host::Ip(_) => return Err((ProxyError::Misdirected, None)),
    };
    let (index, origin) = config
        .origins
        .find(host, target.port)
        .ok_or((ProxyError::Misdirected, None))?;
    if !ex.conn.coverage.covers(index) {
        return Err((ProxyError::Misdirected, None));
    }
    let origin = Arc::clone(origin);
    let auth = crate::upstream::reverse::authorize(&shared.dialer, &config.policy, &origin)
        .await
        .map_err(dial_failure)?;
    Ok((origin, auth))
}

/// Forward to the upstream, count, and log when the response body ends.
pub(crate) async fn reverse_send(
    shared: &Shared,
    ex: &Exchange,
    origin: &crate::config::origin::Origin,
    auth: crate::upstream::dial::Authorized,
    req: Request<Body>,
) -> Result<Response<Body>, Failure> {
    let config = shared.config();
    let up = Arc::new(AtomicU64::new(0));
    let req = req.map(|b| crate::body::boxed(MeteredBody::new(b, Arc::clone(&up), None)));
    let started = std::time::Instant::now();
    let resp = crate::upstream::reverse::forward(
        &shared.reverse_pool,
        &shared.dialer,
        &auth,
        origin,
        ex.conn.client,
        &config.proxy_name,
        req,
    )
    .await
    .map_err(|e| (e, Some(auth.decision.clone())))?;
    shared
        .metrics
        .reverse_upstream_seconds
        .observe(started.elapsed().as_secs_f64());
    let status = resp.status();
    shared
        .metrics
        .reverse_requests
        .with_label_values(&[ex.conn.front.as_str(), status_class(status)])
        .inc();
    ex.count(shared, "ok");
    Ok(log_when_done(ex, auth.decision, up, resp))
}

/// Count the response body's bytes and write the access-log line (with the
/// request bytes counted in `up`) when the body ends.
fn log_when_done(
    ex: &Exchange,
    decision: Decision,
    up: Arc<AtomicU64>,
    resp: Response<Body>,
) -> Response<Body> {
    let status = resp.status().as_u16();
    let ex = ex.clone();
    let on_end = move |down: u64| {
        ex.log(
            Some(&decision),
            status,
            "ok",
            up.load(Ordering::Relaxed),
            down,
        );
    };
    resp.map(|b| {
        crate::body::boxed(MeteredBody::new(
            b,
            Arc::new(AtomicU64::new(0)),
            Some(Box::new(on_end)),
        ))
    })
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

//! The data path, one function for every front: a request head (and body)
//! in → classify and route → policy and dial → tunnel, UDP tunnel, forward
//! or reverse-proxy → count and log → a [`Reply`] back to the front.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bauta_policy::{Decision, Protocol};
use http::{HeaderValue, Request, Response, StatusCode};

use crate::auth::{self, basic};
use crate::body::metered::MeteredBody;
use crate::body::{self, Body};
use crate::config::origin::Origin;
use crate::core::chain;
use crate::core::context::Services;
use crate::core::exchange::{dial_failure, ConnInfo, Exchange, Failure};
use crate::core::limits::{Client, Exceeded, Permit};
use crate::core::overload::{Refusal, Shed};
use crate::core::reply::{Reply, Tunnel};
use crate::core::request::RequestHead;
use crate::core::respond::ProxyError;
use crate::core::route::{self, Route};
use crate::upstream::{forward, reverse, UpstreamError};
use crate::wire::target::Target;

/// Serve one request. Never fails: every error becomes a [`Reply::Refusal`].
pub async fn serve(
    services: &Arc<Services>,
    conn: &Arc<ConnInfo>,
    head: RequestHead,
    body: Body,
) -> Reply {
    let config = services.snapshot();
    let kind = route::classify(&head, conn.tls);
    let target = head.authority().unwrap_or_default().to_string();
    let mut ex = Exchange::new(Arc::clone(conn), config, head.method.clone(), kind, target);
    let routed = match check_size(&head, &ex.config.limits)
        .and_then(|()| route::route(kind, &head, &ex.config, &conn.coverage))
    {
        Ok(route) => authenticate(services, &mut ex, &route, &head)
            .await
            .map(|()| route),
        Err(e) => Err(e),
    };
    // Sidecar mode: everything this proxy would dial goes to the gateway.
    let gateway = ex.config.gateway.as_ref().and(services.gateway());
    let result = match (routed, gateway) {
        (Err(e), _) => Err((e, None)),
        (Ok(Route::Tunnel(target)), Some(gw)) => {
            ex.target = target.to_string();
            chain::tunnel(services, &mut ex, &gw, &target, false).await
        }
        (Ok(Route::UdpTunnel(target)), Some(gw)) => {
            ex.target = target.to_string();
            chain::tunnel(services, &mut ex, &gw, &target, true).await
        }
        (Ok(Route::Forward(target)), Some(gw)) => {
            chain::forward(services, &mut ex, &gw, &target, head, body).await
        }
        (Ok(Route::Tunnel(target)), None) => {
            ex.target = target.to_string();
            tunnel(services, &ex, &target).await
        }
        (Ok(Route::UdpTunnel(target)), None) => {
            ex.target = target.to_string();
            udp_tunnel(services, &ex, &target).await
        }
        (Ok(Route::Forward(target)), None) => forward(services, &ex, &target, head, body).await,
        (Ok(Route::Reverse(origin)), _) => reverse(services, &ex, &origin, head, body).await,
    };
    match result {
        Ok(reply) => reply,
        Err(failure) => refuse(services, &ex, failure),
    }
}

/// `[limits] max_headers` and `max_uri_bytes`, the same on every front
/// (HTTP/1.1's parser enforces the first itself, and the header bytes on
/// every front are the protocol library's limit).
fn check_size(head: &RequestHead, limits: &crate::config::Limits) -> Result<(), ProxyError> {
    if head.headers.len() > limits.max_headers {
        return Err(ProxyError::TooManyHeaders);
    }
    if head.target_len() > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    Ok(())
}

/// Who asks, for a proxy request from a client without a verified
/// certificate when `[auth]` is configured: the user its
/// `Proxy-Authorization: Basic` credential proves, or a 407. Requests to a
/// reverse-proxied origin are not proxy requests and pass as they are; the
/// header itself never travels upstream (a hop-by-hop field).
async fn authenticate(
    services: &Services,
    ex: &mut Exchange,
    route: &Route,
    head: &RequestHead,
) -> Result<(), ProxyError> {
    let Some(auth) = &ex.config.auth else {
        return Ok(());
    };
    if ex.identity.is_some() || matches!(route, Route::Reverse(_)) {
        return Ok(());
    }
    let checked = match basic::credential(&head.headers) {
        Err(auth::Failure::Missing) if !auth.required => return Ok(()),
        Err(failure) => Err(failure),
        Ok(credential) => auth.credentials.check(&credential).await,
    };
    match checked {
        Ok(user) => {
            ex.identity = Some(user);
            Ok(())
        }
        Err(failure) => {
            services
                .metrics
                .auth_failures
                .with_label_values(&["basic", failure.as_str()])
                .inc();
            Err(ProxyError::AuthRequired {
                failure,
                challenge: auth.challenge.clone(),
            })
        }
    }
}

/// A place for one more tunnel (`udp`: a CONNECT-UDP flow) under the
/// process-wide watermarks (else a 503), the connection's CONNECT-UDP cap
/// and the client's limits (else a 429), taken before dialling (a refused
/// tunnel costs no upstream connection).
pub(super) fn admit(services: &Services, ex: &Exchange, udp: bool) -> Result<Permit, Failure> {
    let config = &ex.config;
    let flows = udp.then_some(&ex.conn.udp_flows);
    let load = match services.overload.admit(&config.limits, flows) {
        Ok(load) => load,
        Err(Refusal::Shed(shed)) => return Err(shed_failure(services, shed)),
        Err(Refusal::ConnectionUdpFlows) => {
            return Err(limited(services, Exceeded::ConnectionUdpFlows))
        }
    };
    let limits = config
        .client_limits
        .for_client(&config.policy, ex.identity.as_deref());
    let client = match &ex.identity {
        Some(id) => Client::Identity(Arc::clone(id)),
        None => Client::Address(ex.conn.client.ip()),
    };
    services
        .limiter
        .admit(client, &limits, udp, Instant::now())
        .map(|permit| permit.with_load(load))
        .map_err(|exceeded| limited(services, exceeded))
}

fn limited(services: &Services, exceeded: Exceeded) -> Failure {
    services
        .metrics
        .limit_rejections
        .with_label_values(&[exceeded.as_str()])
        .inc();
    (ProxyError::Limited(exceeded), None)
}

fn shed_failure(services: &Services, shed: Shed) -> Failure {
    services
        .metrics
        .overload_shed
        .with_label_values(&[shed.as_str()])
        .inc();
    (ProxyError::Overloaded(shed), None)
}

/// A forwarded or reverse-proxied request starts only under the memory
/// watermark.
pub(super) fn admit_request(services: &Services) -> Result<(), Failure> {
    services
        .overload
        .check_request()
        .map_err(|shed| shed_failure(services, shed))
}

/// Count and log a refused exchange, and build the answer `respond` gives.
fn refuse(services: &Services, ex: &Exchange, failure: Failure) -> Reply {
    // One answer for the response, the count, the log line and the reset.
    let answer = failure.0.answer();
    let (head, text) = answer.head_and_body(&ex.config.proxy_name);
    ex.fail(&services.metrics, &answer, failure.1.as_ref());
    Reply::Refusal {
        head,
        text,
        h2_reset: answer.h2_reset,
        h3_reset: answer.h3_reset,
    }
}

/// CONNECT: prove the origin first if on-connect advertising applies (on
/// HTTP/2 the frame precedes the 2xx), then dial under the policy.
async fn tunnel(
    services: &Arc<Services>,
    ex: &Exchange,
    target: &Target,
) -> Result<Reply, Failure> {
    if let Some(a) = &ex.conn.advertiser {
        a.on_connect(target);
    }
    let permit = admit(services, ex, false)?;
    let dialed = services
        .dialer
        .dial(&ex.config.policy, Protocol::Connect, target, ex.asker())
        .await
        .map_err(dial_failure)?;
    ex.count(&services.metrics, "ok");
    let head = status_only(StatusCode::OK);
    let tunnel = Tunnel::tcp(
        Arc::clone(services),
        ex.clone(),
        dialed.decision,
        dialed.stream,
        permit,
    );
    Ok(Reply::Tunnel { head, tunnel })
}

/// CONNECT-UDP: policy, DNS, a connected UDP socket, then 2xx with
/// `capsule-protocol: ?1` (RFC 9297 §3.4).
async fn udp_tunnel(
    services: &Arc<Services>,
    ex: &Exchange,
    target: &Target,
) -> Result<Reply, Failure> {
    let permit = admit(services, ex, true)?;
    let auth = services
        .dialer
        .authorize(&ex.config.policy, Protocol::ConnectUdp, target, ex.asker())
        .await
        .map_err(dial_failure)?;
    let (socket, _peer) = services
        .dialer
        .connect_udp(&auth, target.port)
        .await
        .map_err(|e| (e.into(), Some(auth.decision.clone())))?;
    ex.count(&services.metrics, "ok");
    let mut head = status_only(StatusCode::OK);
    head.headers_mut()
        .insert("capsule-protocol", HeaderValue::from_static("?1"));
    let tunnel = Tunnel::udp(
        Arc::clone(services),
        ex.clone(),
        auth.decision,
        socket,
        permit,
    );
    Ok(Reply::Tunnel { head, tunnel })
}

/// Forward an `http://` request; the log line is written when the response
/// body ends.
async fn forward(
    services: &Services,
    ex: &Exchange,
    target: &Target,
    head: RequestHead,
    body: Body,
) -> Result<Reply, Failure> {
    admit_request(services)?;
    let auth = services
        .dialer
        .authorize(&ex.config.policy, Protocol::Http, target, ex.asker())
        .await
        .map_err(dial_failure)?;
    let up = Arc::new(AtomicU64::new(0));
    let req = request(head, metered(body, &up));
    let resp = forward::forward(
        &services.pool,
        &services.dialer,
        &auth,
        target,
        &ex.config.proxy_name,
        ex.config.limits.response_timeout,
        req,
    )
    .await
    .map_err(|e| (e.into(), Some(auth.decision.clone())))?;
    ex.count(&services.metrics, "ok");
    Ok(Reply::Response(log_when_done(ex, auth.decision, up, resp)))
}

/// Reverse-proxy a request for a covered origin to its upstream; the policy
/// checks the origin against the upstream's addresses.
async fn reverse(
    services: &Services,
    ex: &Exchange,
    origin: &Origin,
    head: RequestHead,
    body: Body,
) -> Result<Reply, Failure> {
    admit_request(services)?;
    let auth = reverse::authorize(&services.dialer, &ex.config.policy, origin, ex.asker())
        .await
        .map_err(dial_failure)?;
    let up = Arc::new(AtomicU64::new(0));
    let req = request(head, metered(body, &up));
    let started = std::time::Instant::now();
    // The response head in time (connecting, itself bounded, included).
    let resp = tokio::time::timeout(
        ex.config.limits.response_timeout,
        reverse::send(
            &services.reverse_pool,
            &services.dialer,
            &auth,
            origin,
            ex.asker(),
            &ex.config.proxy_name,
            req,
        ),
    )
    .await
    .unwrap_or(Err(UpstreamError::ResponseTimeout))
    .map_err(|e| (e.into(), Some(auth.decision.clone())))?;
    let m = &services.metrics;
    m.reverse_upstream_seconds
        .observe(started.elapsed().as_secs_f64());
    m.reverse_requests
        .with_label_values(&[ex.conn.front.as_str(), status_class(resp.status())])
        .inc();
    ex.count(m, "ok");
    Ok(Reply::Response(log_when_done(ex, auth.decision, up, resp)))
}

fn status_only(status: StatusCode) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = status;
    r
}

pub(super) fn request(head: RequestHead, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = head.method;
    *req.uri_mut() = head.uri;
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers;
    req
}

/// Count the request body's bytes into `up`.
pub(super) fn metered(body: Body, up: &Arc<AtomicU64>) -> Body {
    body::boxed(MeteredBody::new(body, Arc::clone(up), None))
}

/// Count the response body's bytes and write the access-log line (with the
/// request bytes counted in `up`) when the body ends.
pub(super) fn log_when_done(
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
        body::boxed(MeteredBody::new(
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

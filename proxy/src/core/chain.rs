//! Serving through the `[gateway]` (sidecar mode): the request passes this
//! proxy's own policy first — without DNS, which is the gateway's to do, so
//! rules see host names, ports and IP literals — then goes to the gateway
//! on a pooled connection. The gateway's answer is passed back as it is,
//! with this proxy's `Proxy-Status` member after the gateway's.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bauta_policy::{Decision, Protocol};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::Body;
use crate::core::context::Services;
use crate::core::exchange::{dial_failure, Exchange, Failure, Via};
use crate::core::reply::{Reply, Tunnel};
use crate::core::request::RequestHead;
use crate::core::respond::{sf_string, ProxyError};
use crate::core::serve::{admit, admit_request, log_when_done, metered, request};
use crate::gateway::{Gateway, GatewayError, Opened};
use crate::upstream::headers::strip_hop_by_hop;
use crate::wire::target::Target;

/// CONNECT (`udp`: CONNECT-UDP) through the gateway.
pub(super) async fn tunnel(
    services: &Arc<Services>,
    ex: &mut Exchange,
    gateway: &Gateway,
    target: &Target,
    udp: bool,
) -> Result<Reply, Failure> {
    if let Some(a) = &ex.conn.advertiser {
        a.on_connect(target);
    }
    let permit = admit(services, ex, udp)?;
    let protocol = if udp {
        Protocol::ConnectUdp
    } else {
        Protocol::Connect
    };
    let decision = decide(services, ex, protocol, target)?;
    ex.via = Via::Gateway;
    let timeout = ex.config.limits.response_timeout;
    match gateway.connect(target, udp, timeout).await {
        Err(error) => Err(failure(gateway, error, decision)),
        Ok(Opened::Refused { head, body }) => {
            Ok(passed_back(services, ex, gateway, head, body, &decision))
        }
        Ok(Opened::Tunnel { head, io }) => {
            ex.count(&services.metrics, "ok");
            let mut reply = Response::new(());
            *reply.status_mut() = head.status;
            if udp {
                reply
                    .headers_mut()
                    .insert("capsule-protocol", HeaderValue::from_static("?1"));
            }
            let tunnel =
                Tunnel::gateway(Arc::clone(services), ex.clone(), decision, io, udp, permit);
            Ok(Reply::Tunnel {
                head: reply,
                tunnel,
            })
        }
    }
}

/// An `http://` request through the gateway.
pub(super) async fn forward(
    services: &Services,
    ex: &mut Exchange,
    gateway: &Gateway,
    target: &Target,
    head: RequestHead,
    body: Body,
) -> Result<Reply, Failure> {
    admit_request(services)?;
    let decision = decide(services, ex, Protocol::Http, target)?;
    let up = Arc::new(AtomicU64::new(0));
    let req = request(head, metered(body, &up));
    let (name, timeout) = (&ex.config.proxy_name, ex.config.limits.response_timeout);
    let sent = match gateway.origination_for(target) {
        Some(origin) => {
            ex.via = Via::Originated;
            gateway.originate(req, origin, name, timeout).await
        }
        None => {
            ex.via = Via::Gateway;
            gateway.forward(req, name, timeout).await
        }
    };
    let resp = sent.map_err(|e| failure(gateway, e, decision.clone()))?;
    ex.count(&services.metrics, "ok");
    Ok(Reply::Response(log_when_done(ex, decision, up, resp)))
}

/// This proxy's policy, from what it knows without DNS.
fn decide(
    services: &Services,
    ex: &Exchange,
    protocol: Protocol,
    target: &Target,
) -> Result<Decision, Failure> {
    services
        .dialer
        .decide_for(
            &ex.config.policy,
            protocol,
            &target.host,
            target.port,
            &[],
            ex.asker(),
        )
        .map(|a| a.decision)
        .map_err(dial_failure)
}

fn failure(gateway: &Gateway, error: GatewayError, decision: Decision) -> Failure {
    let next_hop = Arc::clone(gateway.next_hop());
    (ProxyError::Gateway { error, next_hop }, Some(decision))
}

/// The gateway refused a tunnel: its status, `Proxy-Status` and body go
/// back to the client, with our member appended (RFC 9209 §2: the last
/// member is the intermediary closest to the client).
fn passed_back(
    services: &Services,
    ex: &Exchange,
    gateway: &Gateway,
    head: http::response::Parts,
    body: Bytes,
    decision: &Decision,
) -> Reply {
    let status = head.status;
    let mut headers = head.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    let ours = format!(
        "{}; next-hop={}; received-status={}",
        ex.config.proxy_name,
        sf_string(gateway.next_hop()),
        status.as_u16()
    );
    let theirs: Vec<String> = headers
        .get_all("proxy-status")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let value = theirs
        .into_iter()
        .chain(std::iter::once(ours))
        .collect::<Vec<_>>()
        .join(", ");
    headers.remove("proxy-status");
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert("proxy-status", v);
    }
    let mut resp = Response::new(());
    *resp.status_mut() = if status.is_informational() {
        StatusCode::BAD_GATEWAY
    } else {
        status
    };
    *resp.headers_mut() = headers;
    ex.count(&services.metrics, "gateway_refused");
    ex.log(
        Some(decision),
        resp.status().as_u16(),
        "gateway_refused",
        0,
        0,
    );
    tracing::debug!(client = %ex.conn.client, target = %ex.target, status = status.as_u16(), "gateway refused the tunnel");
    Reply::Refusal {
        head: resp,
        text: body,
        h2_reset: None,
        h3_reset: None,
    }
}

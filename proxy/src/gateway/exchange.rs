//! One request on a leased gateway stream, over whichever protocol the
//! stream's connection speaks: hyper's HTTP/2 client, or our HTTP/3 client
//! (`h3/`). Everything above this file is protocol-agnostic.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;

use super::conn::Link;
use super::error::GatewayError;
use super::h3::{self, H3Error, H3Request};
use super::io::GatewayIo;
use super::pool::Lease;
use super::Opened;
use crate::body::{self, Body};
use crate::wire::target::Target;

/// The gateway's answer body is read at most this far to pass it back.
const MAX_REFUSAL_BODY: usize = 16 * 1024;

/// How a CONNECT or CONNECT-UDP is addressed to the gateway.
pub(super) struct TunnelRequest<'a> {
    pub target: &'a Target,
    /// CONNECT-UDP: the gateway's authority and the path of its template.
    pub udp: Option<(&'a str, String)>,
}

/// Send a CONNECT (or CONNECT-UDP) on `lease` and wait for the answer.
pub(super) async fn open_tunnel(
    lease: Lease,
    req: TunnelRequest<'_>,
    timeout: Duration,
) -> Result<Opened, GatewayError> {
    match &lease.connection().link {
        Link::H2(sender) => {
            let request = match &req.udp {
                Some((authority, path)) => connect_udp_h2(authority, path)?,
                None => connect_h2(req.target)?,
            };
            let mut resp = send_h2(sender.clone(), request, timeout).await?;
            if !resp.status().is_success() {
                let (head, body) = resp.into_parts();
                let body = read_bounded(body::boxed(body)).await;
                return Ok(Opened::Refused { head, body });
            }
            let upgraded = hyper::upgrade::on(&mut resp)
                .await
                .map_err(|e| GatewayError::from_hyper(&e))?;
            let (head, _) = resp.into_parts();
            Ok(Opened::Tunnel {
                head,
                io: GatewayIo::h2(upgraded, lease),
            })
        }
        Link::H3(conn) => {
            let request = match &req.udp {
                Some((authority, path)) => {
                    let mut r = H3Request::connect_udp(*authority, path.as_str());
                    r.datagrams = true;
                    r
                }
                None => H3Request::connect(req.target.to_string()),
            };
            let (head, stream) = tokio::time::timeout(timeout, conn.open(request, false))
                .await
                .map_err(|_| GatewayError::ResponseTimeout)?
                .map_err(from_h3)?;
            if !head.status.is_success() {
                // Our half stays open while the answer is read.
                let (send, recv) = stream.into_split();
                let body = read_bounded(recv.into_body()).await;
                drop(send);
                return Ok(Opened::Refused { head, body });
            }
            Ok(Opened::Tunnel {
                head,
                io: GatewayIo::h3(stream, lease),
            })
        }
    }
}

/// Send a request (absolute URI in `parts`) on `lease`; the response body
/// streams back.
pub(super) async fn request(
    lease: &Lease,
    mut parts: http::request::Parts,
    body: Body,
    timeout: Duration,
) -> Result<Response<Body>, GatewayError> {
    match &lease.connection().link {
        Link::H2(sender) => {
            parts.version = Version::HTTP_2;
            let resp = send_h2(sender.clone(), Request::from_parts(parts, body), timeout).await?;
            Ok(resp.map(body::boxed))
        }
        Link::H3(conn) => {
            let scheme = parts.uri.scheme_str().unwrap_or("http").to_string();
            let authority = parts
                .uri
                .authority()
                .map(|a| a.to_string())
                .ok_or(GatewayError::Protocol("no authority to send".into()))?;
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let mut req = H3Request::new(parts.method.clone(), scheme, authority, path);
            req.headers = parts.headers;
            let end = hyper::body::Body::is_end_stream(&body);
            let exchange = async {
                let (mut send, pending) = conn.send_request(req, end).await.map_err(from_h3)?;
                if !end {
                    tokio::spawn(async move {
                        if let Err(e) = h3::send_body(&mut send, body).await {
                            tracing::debug!(error = %e, "request body to the gateway failed");
                        }
                    });
                }
                pending.response().await.map_err(from_h3)
            };
            let (head, recv) = tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| GatewayError::ResponseTimeout)??;
            Ok(Response::from_parts(head, recv.into_body()))
        }
    }
}

/// A CONNECT to `origin` whose answer does not matter (an on-connect
/// gateway sends the origin's certificate when it sees it).
pub(super) async fn probe(lease: Lease, origin: &Target, timeout: Duration) {
    let req = TunnelRequest {
        target: origin,
        udp: None,
    };
    let _ = open_tunnel(lease, req, timeout).await;
}

fn connect_h2(target: &Target) -> Result<Request<Body>, GatewayError> {
    Request::builder()
        .method(Method::CONNECT)
        .uri(target.to_string())
        .version(Version::HTTP_2)
        .body(body::empty())
        .map_err(|_| GatewayError::Protocol("cannot build the CONNECT request".into()))
}

fn connect_udp_h2(authority: &str, path: &str) -> Result<Request<Body>, GatewayError> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://{authority}{path}"))
        .version(Version::HTTP_2)
        .header("capsule-protocol", "?1")
        .body(body::empty())
        .map_err(|_| GatewayError::Protocol("cannot build the CONNECT-UDP request".into()))?;
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("connect-udp"));
    Ok(req)
}

async fn send_h2(
    mut sender: hyper::client::conn::http2::SendRequest<Body>,
    req: Request<Body>,
    timeout: Duration,
) -> Result<Response<hyper::body::Incoming>, GatewayError> {
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
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(GatewayError::ResponseTimeout))
}

/// The start of a refusal's body (enough for any error page we write).
async fn read_bounded(mut body: Body) -> Bytes {
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

/// An HTTP/3 failure as the gateway's.
pub(super) fn from_h3(e: H3Error) -> GatewayError {
    match e {
        H3Error::GoAway => GatewayError::GoingAway,
        H3Error::StreamReset { .. } => GatewayError::StreamReset,
        H3Error::ConnectionLost(_) => GatewayError::ConnectionLost,
        H3Error::ConnectTimeout => GatewayError::ConnectTimeout,
        H3Error::Handshake(m) => GatewayError::Tls(m),
        other => GatewayError::Protocol(other.to_string()),
    }
}

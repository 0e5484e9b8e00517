//! Plain `http://` forwarding (absolute-form over HTTP/1.1, `:scheme http`
//! over HTTP/2 and HTTP/3): the request in origin-form to the target over a
//! pooled HTTP/1.1 connection, the response streamed back.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::error::UpstreamError;
use crate::body::Body;
use crate::upstream::dial::{Authorized, Dialer};
use crate::upstream::headers::{onward_request, onward_response, via_value};
use crate::upstream::pool::UpstreamPool;
use crate::wire::target::Target;

/// Forward one request to `target` and stream the response back; a
/// response head that takes longer than `response_timeout` is an error
/// (the connection is dropped, not pooled).
pub async fn forward(
    pool: &UpstreamPool,
    dialer: &Dialer,
    auth: &Authorized,
    target: &Target,
    proxy_name: &str,
    response_timeout: Duration,
    req: Request<Body>,
) -> Result<Response<Body>, UpstreamError> {
    let via = via_value(req.version(), proxy_name);
    let upstream_req = build_upstream_request(req, target, &via)?;

    let (mut sender, peer) = match pool.checkout(target, auth) {
        Some(c) => c,
        None => {
            let (stream, peer) = dialer.connect(auth, target.port).await?;
            let (sender, conn) = http1::Builder::new()
                .max_buf_size(super::UPSTREAM_READ_BUFFER)
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

    let resp = tokio::time::timeout(response_timeout, sender.send_request(upstream_req))
        .await
        .map_err(|_| UpstreamError::ResponseTimeout)?
        .map_err(|e| UpstreamError::from_exchange(&e))?;
    // The connection is reusable once this response body is consumed;
    // `checkout` only hands out senders that are ready again.
    pool.checkin(target.clone(), sender, peer);

    let (mut parts, body) = resp.into_parts();
    onward_response(&mut parts, &via);
    Ok(Response::from_parts(parts, crate::body::boxed(body)))
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
    onward_request(&mut parts, via);
    // RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host.
    let host = if target.port == 80 {
        target.host.to_string()
    } else {
        target.to_string()
    };
    let host = HeaderValue::from_str(&host)
        .map_err(|_| UpstreamError::InvalidTarget("request target has an invalid authority"))?;
    parts.headers.insert(header::HOST, host);
    Ok(Request::from_parts(parts, body))
}

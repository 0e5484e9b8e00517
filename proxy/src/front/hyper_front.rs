//! The HTTP/1.1 and HTTP/2 front, on hyper: serves one connection, turns
//! each request into the core's [`RequestHead`] (HTTP/1.1's own rules —
//! exactly one Host, the `Upgrade: connect-udp` form of CONNECT-UDP — are
//! checked and translated here) and sends the core's [`Reply`] back in
//! this protocol's terms (a tunnel is an upgrade; a malformed request's
//! 400 is followed on HTTP/2 by RST_STREAM).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::{self, Body, BoxError};
use crate::config::Limits;
use crate::core::context::Services;
use crate::core::exchange::{ConnInfo, Front};
use crate::core::reply::Reply;
use crate::core::request::RequestHead;
use crate::core::serve::serve;
use crate::front::fields;
use crate::front::idle::{self, Activity, Busy};
use crate::front::REFUSAL_LINGER;
use crate::tunnel::udp::NoDatagrams;
use crate::wire::h2_frame::ErrorCode as H2ErrorCode;

/// Rapid reset (CVE-2023-44487): streams the client resets before we
/// accepted them; over this many at once, GOAWAY ENHANCE_YOUR_CALM.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams we had to reset because of the client's errors, per connection;
/// over this many, GOAWAY ENHANCE_YOUR_CALM.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// After the client idle timeout shut a connection down, the most it gets
/// to end by itself (a client that sent no HTTP/2 preface never will).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The HTTP/1.1 settings, on `auto`'s HTTP/1.1 builder and on hyper's own
/// alike (two types with the same methods). The request line and header
/// section: hyper answers 431 beyond `max_buf_size` (8 KiB is its floor);
/// the field count the same way.
macro_rules! http1_settings {
    ($builder:expr, $limits:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout($limits.header_read_timeout)
            .max_buf_size(($limits.max_header_list_size as usize + $limits.max_uri_bytes).max(8192))
            .max_headers($limits.max_headers)
            .preserve_header_case(false)
    };
}

/// Serve one connection. `front = None`: plaintext with both protocols
/// enabled (h2c by prior knowledge); the preface decides. `stopping`
/// resolves when the server shuts down. A connection that carries no request
/// or tunnel for `idle_timeout` (from its start, or since the last one
/// ended) is shut down as at shutdown: HTTP/2 sends GOAWAY (NO_ERROR),
/// HTTP/1.1 closes; one that still has not ended `idle_timeout` (at most
/// [`IDLE_CLOSE_GRACE`]) later with nothing in progress is dropped.
/// Returns when the connection and its tunnels have ended.
///
/// HTTP/2 memory is bounded by `limits` (`connection_buffer_bytes`): our
/// receive windows are half the budget, and the send buffer h2 reserves per
/// stream is the other half shared by `h2_max_concurrent_streams` — sized
/// from our budget, whatever window the client grants.
#[allow(clippy::too_many_arguments)]
pub async fn serve_connection<IO>(
    io: IO,
    info: ConnInfo,
    services: Arc<Services>,
    stopping: impl std::future::Future<Output = ()>,
    front: Option<Front>,
    h2_allowed: bool,
    alt_svc: Option<HeaderValue>,
    limits: &Limits,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    http1_settings!(builder.http1(), limits);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .initial_connection_window_size(limits.receive_window())
        .initial_stream_window_size(limits.receive_window())
        .adaptive_window(false)
        .max_send_buf_size(limits.h2_stream_send_buffer())
        .max_header_list_size(limits.max_header_list_size)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
        // RFC 8441: lets clients use extended CONNECT (connect-udp).
        .enable_connect_protocol();
    let builder = match front {
        Some(Front::Http2) => builder.http2_only(),
        Some(_) => builder.http1_only(),
        None if h2_allowed => builder,
        None => builder.http1_only(),
    };
    let idle_timeout = limits.client_idle_timeout;
    let client = info.client;
    let info = Arc::new(info);
    let activity = Activity::new();
    let svc = {
        let activity = Arc::clone(&activity);
        service_fn(move |req: Request<Incoming>| {
            let busy = activity.busy();
            let services = Arc::clone(&services);
            let mut info = Arc::clone(&info);
            // A sniffed plaintext connection learns its protocol per request.
            if req.version() == Version::HTTP_2 && info.front != Front::Http2 {
                info = Arc::new(info.with_front(Front::Http2));
            }
            let alt_svc = alt_svc.clone();
            // Boxed: the request's future is several KiB, and hyper moves
            // the service future into each stream's task and its stage in
            // and out of it; a box makes every such move a pointer copy.
            Box::pin(async move {
                let mut resp = handle(services, info, req, busy).await;
                if let Some(v) = alt_svc {
                    resp.headers_mut().insert(header::ALT_SVC, v);
                }
                Ok::<_, std::convert::Infallible>(resp)
            })
        })
    };
    let io = TokioIo::new(io);
    if builder.is_http1_available() && !builder.is_http2_available() {
        // hyper's own HTTP/1.1 connection, not `auto`'s: an upgraded
        // plain TCP socket then comes back as itself (`Upgraded::downcast`;
        // `auto` wraps it in a private type), and its tunnel is spliced.
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1_settings!(http1, limits);
        let conn = Box::pin(http1.serve_connection(io, svc).with_upgrades());
        let graceful = |c: std::pin::Pin<&mut _>| {
            hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(c)
        };
        drive(conn, graceful, stopping, activity, idle_timeout, client).await;
    } else {
        let conn = Box::pin(builder.serve_connection_with_upgrades(io, svc));
        let graceful = |c: std::pin::Pin<&mut _>| auto::UpgradeableConnection::graceful_shutdown(c);
        drive(conn, graceful, stopping, activity, idle_timeout, client).await;
    }
}

/// Run one connection to its end: shut it down gracefully when the server
/// stops or it idles; then wait for the tunnels it handed over. `conn` is
/// boxed so that its memory is given back before that wait: an idle HTTP/1.1
/// tunnel keeps only this small task, not hyper's connection state.
async fn drive<C, Err>(
    mut conn: std::pin::Pin<Box<C>>,
    graceful: impl Fn(std::pin::Pin<&mut C>),
    stopping: impl std::future::Future<Output = ()>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    client: std::net::SocketAddr,
) where
    C: std::future::Future<Output = Result<(), Err>>,
    Err: std::fmt::Display,
{
    tokio::pin!(stopping);
    let idle = activity.idle_for(idle_timeout);
    tokio::pin!(idle);
    let grace = idle_timeout.min(IDLE_CLOSE_GRACE);
    let mut shutting_down = false;
    // Set once the idle timeout has shut the connection down.
    let mut drop_at: Option<tokio::time::Instant> = None;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = &mut stopping, if !shutting_down => {
                shutting_down = true;
                graceful(conn.as_mut());
            }
            () = &mut idle, if !shutting_down => {
                tracing::debug!(%client, "client connection idle; closing");
                shutting_down = true;
                drop_at = Some(tokio::time::Instant::now() + grace);
                graceful(conn.as_mut());
            }
            () = sleep_until_some(drop_at) => {
                if activity.is_idle() {
                    // No HTTP/2 preface, or a client that never lets go.
                    tracing::debug!(%client, "idle client connection did not close; dropping it");
                    return;
                }
                // A request raced the GOAWAY: let it finish first.
                drop_at = Some(tokio::time::Instant::now() + grace);
            }
        }
    };
    drop(conn);
    if let Err(e) = result {
        tracing::debug!(%client, error = %e, "connection ended with an error");
    }
    // An HTTP/1.1 tunnel outlives the connection task (it took the socket
    // over): the connection still holds its place until the tunnel ends.
    activity.idle_for(Duration::ZERO).await;
}

/// Sleeps until `at`, or forever for `None`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One request: adapt, serve, answer.
async fn handle(
    services: Arc<Services>,
    info: Arc<ConnInfo>,
    mut req: Request<Incoming>,
    busy: Busy,
) -> Response<Body> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, incoming) = req.into_parts();
    let protocol = parts
        .extensions
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_ascii_lowercase().into_boxed_str());
    let mut head = RequestHead::new(parts.method, parts.uri, parts.version, parts.headers);
    head.protocol = protocol;
    let upgrade_form = head.version < Version::HTTP_2 && adapt_http1(&mut head);
    let mut content = body::boxed(incoming);
    if head.version == Version::HTTP_2 && head.method != Method::CONNECT {
        // h2 checks the body against the first content-length only, and
        // only once it has read past it.
        match fields::content_length(&head.headers) {
            Ok(Some(n)) => content = body::length::declared(content, n),
            Ok(None) => {}
            Err(why) => head.malformed = Some(why),
        }
    }
    match serve(&services, &info, head, content).await {
        Reply::Response(resp) => resp.map(|b| idle::hold(b, busy)),
        Reply::Refusal {
            head,
            text,
            h2_reset,
            ..
        } => match h2_reset {
            Some(code) if info.front == Front::Http2 => {
                reset_after(head, text, code).map(|b| idle::hold(b, busy))
            }
            _ => head.map(|()| idle::hold(body::full(text), busy)),
        },
        Reply::Tunnel { head, tunnel } => {
            tokio::spawn(async move {
                // The tunnel keeps the connection busy (HTTP/2: its stream).
                let _busy = busy;
                match on_upgrade.await {
                    Ok(upgraded) => {
                        // A plain TCP client: spliced (Linux).
                        #[cfg(target_os = "linux")]
                        let upgraded = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
                            Ok(parts) => {
                                tunnel
                                    .run_socket(parts.io.into_inner(), parts.read_buf)
                                    .await;
                                return;
                            }
                            Err(upgraded) => upgraded,
                        };
                        // Boxed: its inline copy buffers would otherwise
                        // size this task, a spliced tunnel's too.
                        Box::pin(tunnel.run(TokioIo::new(upgraded), None::<NoDatagrams>)).await;
                    }
                    Err(_) => tunnel.abandon(),
                }
            });
            let mut resp = head.map(|()| body::empty());
            if upgrade_form {
                // RFC 9298 §3.2: HTTP/1.1 answers the Upgrade with 101.
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let h = resp.headers_mut();
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(header::UPGRADE, HeaderValue::from_static("connect-udp"));
            }
            resp
        }
    }
}

/// HTTP/1.1's own rules. RFC 9112 §3.2: exactly one Host. RFC 9298 §3.2:
/// CONNECT-UDP is `GET` with `Upgrade: connect-udp` and `Connection:
/// Upgrade`, which becomes the extended CONNECT form the core knows
/// (`:protocol connect-udp`, `https://HOST/PATH`). Returns true for that form.
fn adapt_http1(head: &mut RequestHead) -> bool {
    let hosts = head.headers.get_all(header::HOST).iter().count();
    if head.version == Version::HTTP_11 && hosts != 1 {
        head.defect = Some("an HTTP/1.1 request needs exactly one Host header");
    }
    if !has_token(&head.headers, header::UPGRADE, "connect-udp") {
        return false;
    }
    if head.defect.is_none() && !has_token(&head.headers, header::CONNECTION, "upgrade") {
        head.defect = Some("Upgrade: connect-udp needs Connection: Upgrade");
    }
    if head.defect.is_none() && head.method != Method::GET {
        head.defect = Some("CONNECT-UDP over HTTP/1.1 uses GET with Upgrade: connect-udp");
    }
    let uri = head
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|host| {
            let path = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            Uri::builder()
                .scheme("https")
                .authority(host)
                .path_and_query(path)
                .build()
                .ok()
        });
    match uri {
        Some(uri) => head.uri = uri,
        None if head.defect.is_none() => {
            head.defect = Some("the Host header is not a valid authority")
        }
        None => {}
    }
    head.method = Method::CONNECT;
    head.protocol = Some("connect-udp".into());
    true
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The error response, then RST_STREAM with `code` (RFC 9113 §8.1.1: a
/// malformed request is a stream error; the response before it is a MAY).
/// hyper resets the stream with the h2 reason found in a body error.
fn reset_after(head: Response<()>, text: Bytes, code: H2ErrorCode) -> Response<Body> {
    let data = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(text))]);
    // h2 drops a stream's queued frames when it is reset: let the HEADERS
    // and DATA leave first.
    let reset = futures_util::stream::once(async move {
        tokio::time::sleep(REFUSAL_LINGER).await;
        Err::<Frame<Bytes>, BoxError>(Box::new(h2::Error::from(h2::Reason::from(code.0))))
    });
    let frames = futures_util::StreamExt::chain(data, reset);
    head.map(|()| StreamBody::new(frames).boxed())
}

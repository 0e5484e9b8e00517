//! The HTTP/3 front (RFC 9114) on quinn + h3: plain CONNECT (§4.4) into the
//! shared TCP tunnel, and CONNECT-UDP (RFC 9298, RFC 9220) into the shared
//! UDP tunnel over QUIC DATAGRAM frames or, when the client cannot take them,
//! DATAGRAM capsules on the request stream.

use std::sync::Arc;
use std::time::Duration;

use bauta_policy::Protocol;
use bytes::Bytes;
use h3::error::Code;
use h3::server::RequestStream;
use http::{Method, Request, Response, StatusCode};
use tokio::sync::watch;

use crate::config::origin::Advertise;
use crate::config::ListenerSpec;
use crate::core::context::Shared;
use crate::core::exchange::{dial_failure, ConnInfo, Exchange, Failure, Front, Kind};
use crate::core::respond::ProxyError;
use crate::front::h3_body;
use crate::front::h3_io::H3Io;
use crate::seccert::advertiser::{Advertiser, Channel};
use crate::seccert::coverage::Coverage;
use crate::seccert::h3_shim::{H3Shim, H3ShimConfig, ShimBidiStream};
use crate::seccert::{CapturingResolver, ClientHelloSlot, Exporter, HashAlg, ServerAuthenticator};
use crate::tunnel::udp;
use crate::wire::target::Target;

pub type H3Stream = RequestStream<ShimBidiStream, Bytes>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve one QUIC connection until the client or shutdown ends it.
pub async fn serve_connection(
    incoming: quinn::Incoming,
    spec: Arc<ListenerSpec>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    max_field_section: u64,
) {
    // A per-connection TLS config records the ClientHello's signature
    // schemes, which authenticators must choose from (RFC 9261 §5.2.2).
    let config = shared.config();
    let (hello, connecting) = match accept_capturing(incoming, &spec) {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "QUIC connection refused");
            return;
        }
    };
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("QUIC handshake timed out");
            return;
        }
    };
    let client = conn.remote_address();
    shared
        .metrics
        .connections
        .with_label_values(&[&spec.name, Front::Http3.as_str()])
        .inc();
    let coverage = Arc::new(Coverage::new(Arc::clone(&spec.handshake_covers)));
    let (shim, control) = H3Shim::new(
        h3_quinn::Connection::new(conn.clone()),
        conn.clone(),
        H3ShimConfig {
            codepoints: config.secondary.codepoints,
            enabled: config.secondary.advertise != Advertise::Off && !config.origins.is_empty(),
        },
    );
    // QUIC runs only SHA-256 suites here (tls::quic_server_config), and the
    // handshake is complete once `connecting` resolved (no 0-RTT).
    let authenticator = match (Exporter::from_quinn(&conn, HashAlg::Sha256), hello.get()) {
        (Ok(exporter), Some(h)) => Some(ServerAuthenticator::new(exporter, &h.signature_schemes)),
        _ => None,
    };
    let advertiser = Advertiser::for_connection(
        Channel::H3(control.clone()),
        &config,
        authenticator,
        Arc::clone(&coverage),
        Arc::clone(&shared.metrics),
    );
    let info = Arc::new(ConnInfo {
        listener: Arc::clone(&spec.name),
        client,
        front: Front::Http3,
        tls: true,
        coverage,
        advertiser: Some(advertiser),
    });
    let mut h3c: h3::server::Connection<H3Shim, Bytes> = match h3::server::builder()
        .enable_extended_connect(true)
        .enable_datagram(true)
        .send_grease(true)
        .max_field_section_size(max_field_section)
        .build(shim)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%client, error = %e, "HTTP/3 setup failed");
            return;
        }
    };
    let datagrams = udp::QuicDatagrams::spawn(conn.clone(), Arc::clone(&shared.metrics));
    // The client's SETTINGS as h3 records them (read when datagrams are sent).
    let peer = Arc::clone(&h3c.inner.shared);
    let mut draining = false;
    loop {
        tokio::select! {
            r = h3c.accept() => match r {
                Ok(Some(resolver)) => {
                    let shared = Arc::clone(&shared);
                    let info = Arc::clone(&info);
                    let datagrams = datagrams.clone();
                    let conn = conn.clone();
                    let peer = Arc::clone(&peer);
                    tokio::spawn(async move {
                        match resolver.resolve_request().await {
                            Ok((req, stream)) => {
                                let h3 = H3Conn { conn, datagrams, peer };
                                handle(shared, info, h3, req, stream).await
                            }
                            Err(e) => tracing::debug!(%client, error = %e, "bad HTTP/3 request"),
                        }
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%client, error = %e, "HTTP/3 connection ended");
                    break;
                }
            },
            r = shutdown.changed(), if !draining => {
                draining = true;
                if r.is_ok() {
                    // GOAWAY; requests in flight finish, accept() then ends.
                    let _ = h3c.shutdown(0).await;
                }
            }
        }
    }
    if let Some(v) = control.violation() {
        tracing::debug!(%client, violation = %v, "client broke the secondary-certificate rules");
        shared
            .metrics
            .secondary_cert_errors
            .with_label_values(&["h3", v.as_str()])
            .inc();
    }
}

/// Accept with a copy of the listener's QUIC TLS config that captures the
/// ClientHello into the returned slot.
fn accept_capturing(
    incoming: quinn::Incoming,
    spec: &ListenerSpec,
) -> Result<(ClientHelloSlot, quinn::Connecting), String> {
    let base = spec
        .quic_tls
        .as_ref()
        .ok_or("h3 listener without QUIC TLS")?;
    let (tls, slot) = CapturingResolver::config_for_connection(base);
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let server = crate::listen::quic::server_config_with(Arc::new(crypto));
    let connecting = incoming
        .accept_with(Arc::new(server))
        .map_err(|e| e.to_string())?;
    Ok((slot, connecting))
}

/// What a request handler needs of its QUIC connection.
struct H3Conn {
    conn: quinn::Connection,
    datagrams: udp::QuicDatagrams,
    peer: Arc<h3::SharedState>,
}

/// One request stream.
async fn handle(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    h3: H3Conn,
    req: Request<()>,
    stream: H3Stream,
) {
    let protocol = req.extensions().get::<h3::ext::Protocol>().copied();
    let kind = match (req.method() == Method::CONNECT, protocol) {
        (true, Some(p)) if p == h3::ext::Protocol::CONNECT_UDP => Kind::ConnectUdp,
        (true, _) => Kind::Connect,
        (false, _) if req.uri().scheme_str() == Some("http") => Kind::Forward,
        (false, _) => Kind::Reverse,
    };
    let target = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let ex = Exchange::new(info, req.method().clone(), kind, target);
    match (kind, protocol) {
        (Kind::Connect, Some(_)) => {
            let f = (
                ProxyError::NotImplemented("this :protocol is not supported"),
                None,
            );
            reject(&shared, &ex, stream, f, None).await
        }
        (Kind::Connect, None) => connect(&shared, &ex, &req, stream).await,
        (Kind::ConnectUdp, _) => connect_udp(&shared, &ex, &req, h3, stream).await,
        (Kind::Reverse, _) => reverse(&shared, &ex, req, stream).await,
        (Kind::Forward, _) => {
            let f = (
                ProxyError::BadRequest("this is a proxy: over HTTP/3 send CONNECT or CONNECT-UDP"),
                None,
            );
            reject(&shared, &ex, stream, f, None).await
        }
    }
}

/// Plain CONNECT (RFC 9114 §4.4): `:authority` only; `:scheme`/`:path` make it malformed.
async fn connect(shared: &Arc<Shared>, ex: &Exchange, req: &Request<()>, mut stream: H3Stream) {
    let uri = req.uri();
    if uri.scheme().is_some() || uri.path_and_query().is_some() {
        let f = (
            ProxyError::BadRequest("CONNECT must not carry :scheme or :path"),
            None,
        );
        return reject(shared, ex, stream, f, Some(Code::H3_MESSAGE_ERROR)).await;
    }
    let target = match uri
        .authority()
        .ok_or(())
        .and_then(|a| Target::parse_authority(a.as_str(), None).map_err(|_| ()))
    {
        Ok(t) => t,
        Err(()) => {
            let f = (
                ProxyError::BadRequest(
                    "CONNECT target must be host:port with a valid host and port",
                ),
                None,
            );
            return reject(shared, ex, stream, f, Some(Code::H3_MESSAGE_ERROR)).await;
        }
    };
    if let Some(a) = &ex.conn.advertiser {
        a.on_connect(&target);
    }
    let config = shared.config();
    let dialed = match shared
        .dialer
        .dial(&config.policy, Protocol::Connect, &target)
        .await
    {
        Ok(d) => d,
        Err(e) => return reject(shared, ex, stream, dial_failure(e), None).await,
    };
    let ex = Exchange {
        target: target.to_string(),
        ..ex.clone()
    };
    if let Err(e) = stream.send_response(ok_response()).await {
        tracing::debug!(error = %e, "client went away before the tunnel started");
        ex.log(Some(&dialed.decision), 200, "client_gone", 0, 0);
        return;
    }
    ex.count(shared, "ok");
    crate::core::serve::run_tcp_tunnel(
        shared,
        &ex,
        &dialed.decision,
        H3Io::new(stream),
        dialed.stream,
    )
    .await;
}

/// An https request: served from the origin's upstream when this connection
/// covers it (secondary certificate sent), else 421.
async fn reverse(shared: &Arc<Shared>, ex: &Exchange, req: Request<()>, stream: H3Stream) {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let (origin, auth) = match crate::core::serve::reverse_route(shared, ex, &authority).await {
        Ok(x) => x,
        Err(f) => return reject(shared, ex, stream, f, None).await,
    };
    let (mut send, recv) = stream.split();
    let (parts, ()) = req.into_parts();
    let body = crate::body::boxed(h3_body::H3RequestBody::new(recv));
    let req = Request::from_parts(parts, body);
    let resp = match crate::core::serve::reverse_send(shared, ex, &origin, auth, req).await {
        Ok(r) => r,
        Err(failure) => {
            let resp = failure.0.response(&shared.config().proxy_name);
            ex.fail(shared, &failure, resp.status().as_u16());
            resp
        }
    };
    if let Err(e) = h3_body::send_response(&mut send, resp).await {
        tracing::debug!(error = %e, "HTTP/3 response not delivered");
    }
}

/// CONNECT-UDP over HTTP/3 (RFC 9298 §3.4, RFC 9220).
async fn connect_udp(
    shared: &Arc<Shared>,
    ex: &Exchange,
    req: &Request<()>,
    h3: H3Conn,
    mut stream: H3Stream,
) {
    let plan = match udp::validate(shared, req.method(), req.uri(), req.headers(), true) {
        Ok(p) => p,
        Err((e, malformed)) => {
            let code = malformed.then_some(Code::H3_MESSAGE_ERROR);
            return reject(shared, ex, stream, (e, None), code).await;
        }
    };
    let flow = match udp::open(shared, plan).await {
        Ok(f) => f,
        Err(f) => return reject(shared, ex, stream, f, None).await,
    };
    let ex = Exchange {
        target: flow.target.to_string(),
        ..ex.clone()
    };
    let stream_id = stream.id().into_inner();
    // Register before answering so that no datagram right after the 200 is lost.
    let rx = h3.datagrams.register(stream_id);
    if stream.send_response(udp::ok_response()).await.is_err() {
        ex.log(Some(&flow.decision), 200, "client_gone", 0, 0);
        return;
    }
    ex.count(shared, "ok");
    let side = udp::H3Side {
        conn: &h3.conn,
        stream_id,
        rx,
        peer: h3.peer,
    };
    let mut io = H3Io::new(stream);
    let end = udp::relay(shared, &ex, flow, &mut io, Some(side)).await;
    // RFC 9297 §3.3: a capsule error makes the message malformed (RFC 9114
    // §4.1.2: stream error H3_MESSAGE_ERROR).
    if end == udp::FlowEnd::Malformed {
        io.reset(Code::H3_MESSAGE_ERROR);
    }
}

pub fn ok_response() -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = StatusCode::OK;
    r
}

/// Answer with the error's status and Proxy-Status, count and log it. With
/// `malformed`, the stream is then reset with that code (the 400 is a MAY).
pub async fn reject(
    shared: &Shared,
    ex: &Exchange,
    mut stream: H3Stream,
    failure: Failure,
    malformed: Option<Code>,
) {
    let (head, text) = failure.0.head_and_body(&shared.config().proxy_name);
    let status = head.status().as_u16();
    ex.fail(shared, &failure, status);
    if stream.send_response(head).await.is_err() {
        return;
    }
    if stream.send_data(text).await.is_err() {
        return;
    }
    match malformed {
        Some(code) => {
            stream.stop_sending(code);
            stream.stop_stream(code);
        }
        None => {
            let _ = stream.finish().await;
        }
    }
}

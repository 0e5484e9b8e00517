//! The HTTP/3 front (RFC 9114) on quinn + h3: serves one QUIC connection,
//! turns each request stream into the core's [`RequestHead`] and body, and
//! sends the core's [`Reply`] back: a response, a refusal followed by a
//! stream reset where the answer says so, or a tunnel over the request
//! stream (TCP) and QUIC datagrams or capsules (UDP, RFC 9298, RFC 9220).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use tokio::sync::watch;

use crate::body::{self};
use crate::config::{Config, ListenerSpec};
use crate::core::context::Services;
use crate::core::exchange::{ConnInfo, Front};
use crate::core::reply::{Reply, TunnelEnd};
use crate::core::request::RequestHead;
use crate::core::serve::serve;
use crate::front::fields;
use crate::front::h3_body::{self, H3RequestBody, RecvHalf, SendHalf};
use crate::front::h3_datagrams::QuicDatagrams;
use crate::front::h3_io::H3Io;
use crate::front::REFUSAL_LINGER;
use crate::seccert::advertiser::{Advertise, Advertiser, Channel};
use crate::seccert::coverage::Coverage;
use crate::seccert::h3_shim::{H3Control, H3Shim, H3ShimConfig, RequestStream, ServerConnection};
use crate::seccert::{ClientHelloSlot, Exporter, HashAlg, ServerAuthenticator};
use crate::tls::identity::client_identity;
use crate::tunnel::udp::NoDatagrams;
use crate::wire::h3_error::H3ErrorCode;
use rustls::pki_types::CertificateDer;

pub type H3Stream = RequestStream;

/// What a request handler needs of its QUIC connection.
#[derive(Clone)]
struct H3Conn {
    conn: quinn::Connection,
    datagrams: QuicDatagrams,
    /// The client's SETTINGS as h3 records them (read when datagrams are sent).
    peer: Arc<h3::SharedState>,
    /// The shim: which field sections broke the pseudo-header rules.
    control: H3Control,
}

/// Serve one established QUIC connection until the client or shutdown ends it.
pub async fn serve_connection(
    conn: quinn::Connection,
    hello: ClientHelloSlot,
    spec: ListenerSpec,
    config: Arc<Config>,
    services: Arc<Services>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = conn.remote_address();
    services
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
            max_field_section: config.limits.max_header_list_size,
        },
    );
    // QUIC runs only SHA-256 suites here (tls::quic_server_config), and the
    // handshake is complete once the connection is established (no 0-RTT).
    let authenticator = match (Exporter::from_quinn(&conn, HashAlg::Sha256), hello.get()) {
        (Ok(exporter), Some(h)) => Some(ServerAuthenticator::new(exporter, &h.signature_schemes)),
        _ => None,
    };
    let advertiser = Advertiser::new(
        Channel::H3(control.clone()),
        config.secondary.advertise,
        authenticator,
        config.origins.provable(),
        Arc::clone(&coverage),
        Arc::clone(&services.metrics),
    );
    advertiser.start();
    // Verified by the handshake (client_ca); who the certificate names.
    let identity = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| {
            chain
                .first()
                .and_then(|leaf| client_identity(leaf, &spec.identity_from))
        });
    let info = Arc::new(ConnInfo {
        listener: Arc::clone(&spec.name),
        client,
        front: Front::Http3,
        tls: true,
        identity,
        coverage,
        advertiser: Some(advertiser),
        udp_flows: Default::default(),
    });
    let mut h3c: ServerConnection = match h3::server::builder()
        .enable_extended_connect(true)
        .enable_datagram(true)
        .send_grease(true)
        .max_field_section_size(u64::from(config.limits.max_header_list_size))
        .build(shim)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%client, error = %e, "HTTP/3 setup failed");
            return;
        }
    };
    let h3 = H3Conn {
        datagrams: QuicDatagrams::spawn(conn.clone(), Arc::clone(&services.metrics)),
        peer: Arc::clone(&h3c.inner.shared),
        control: control.clone(),
        conn,
    };
    let mut draining = false;
    loop {
        tokio::select! {
            r = h3c.accept() => match r {
                Ok(Some(resolver)) => {
                    let services = Arc::clone(&services);
                    let info = Arc::clone(&info);
                    let h3 = h3.clone();
                    // Boxed, as on the HTTP/2 front: the task then moves a
                    // pointer, not the request's several-KiB future.
                    tokio::spawn(Box::pin(async move {
                        match resolver.resolve_request().await {
                            Ok((req, stream)) => handle(services, info, h3, req, stream).await,
                            Err(e) => tracing::debug!(%client, error = %e, "bad HTTP/3 request"),
                        }
                    }));
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
        services
            .metrics
            .secondary_cert_errors
            .with_label_values(&["h3", v.as_str()])
            .inc();
    }
}

/// One request stream: adapt, serve, answer.
async fn handle(
    services: Arc<Services>,
    info: Arc<ConnInfo>,
    h3: H3Conn,
    req: Request<()>,
    stream: H3Stream,
) {
    let stream_id = stream.id().into_inner();
    let (parts, ()) = req.into_parts();
    let protocol = parts
        .extensions
        .get::<h3::ext::Protocol>()
        .map(|p| p.as_str().to_ascii_lowercase().into_boxed_str());
    let mut head = RequestHead::new(parts.method, parts.uri, parts.version, parts.headers);
    head.protocol = protocol;
    // h3 keeps the last of a repeated pseudo-header; the shim saw them all.
    head.malformed = match h3.control.take_misplaced(stream_id) {
        Some(m) => Some(m.reason()),
        None => fields::h3_malformed(&head),
    };
    let (mut send, recv) = stream.split();
    // A CONNECT's stream becomes the tunnel; any other request's stream
    // carries its content, held to its content-length.
    let (request_body, recv) = if head.method == Method::CONNECT {
        (body::empty(), Some(recv))
    } else {
        let trailers = h3_body::TrailerCheck {
            control: h3.control.clone(),
            stream_id,
        };
        let content = body::boxed(H3RequestBody::new(recv, trailers));
        match fields::content_length(&head.headers) {
            Ok(Some(n)) => (body::length::declared(content, n), None),
            _ => (content, None),
        }
    };
    match serve(&services, &info, head, request_body).await {
        Reply::Response(resp) => {
            if let Err(e) = h3_body::send_response(&mut send, resp).await {
                tracing::debug!(error = %e, "HTTP/3 response not delivered");
            }
        }
        Reply::Refusal {
            head,
            text,
            h3_reset,
            ..
        } => refuse(send, recv, head, text, h3_reset).await,
        Reply::Tunnel { head, tunnel } => {
            let Some(recv) = recv else {
                // Only CONNECT is tunnelled, and CONNECT kept its stream.
                return tunnel.abandon();
            };
            // Register before answering so that no datagram right after the
            // 2xx is lost.
            let datagrams = tunnel
                .is_udp()
                .then(|| h3.datagrams.register(h3.conn.clone(), stream_id, h3.peer));
            if send.send_response(head).await.is_err() {
                return tunnel.abandon();
            }
            let mut io = H3Io::from_halves(send, recv);
            let end = match datagrams {
                Some(d) => tunnel.run(&mut io, Some(d)).await,
                None => tunnel.run(&mut io, None::<NoDatagrams>).await,
            };
            match end {
                // RFC 9297 §3.3: a capsule error makes the message malformed
                // (RFC 9114 §4.1.2: stream error H3_MESSAGE_ERROR).
                TunnelEnd::Malformed => io.reset(H3ErrorCode::MESSAGE_ERROR).await,
                // RFC 9114 §4.4: a TCP error (a reset) is a stream error
                // H3_CONNECT_ERROR, not a FIN as if the data were complete.
                TunnelEnd::TargetError => io.reset(H3ErrorCode::CONNECT_ERROR).await,
                TunnelEnd::Done => {}
            }
        }
    }
}

/// Send the refusal; then finish the stream, or — for a malformed request —
/// reset it with `reset` (RFC 9114 §4.1.2; the response before it is a MAY).
async fn refuse(
    mut send: SendHalf,
    recv: Option<RecvHalf>,
    head: Response<()>,
    text: Bytes,
    reset: Option<H3ErrorCode>,
) {
    if send.send_response(head).await.is_err() {
        return;
    }
    if send.send_data(text).await.is_err() {
        return;
    }
    match reset {
        Some(code) => {
            tokio::time::sleep(REFUSAL_LINGER).await;
            let code = h3::error::Code::from(code.0);
            if let Some(mut recv) = recv {
                recv.stop_sending(code);
            }
            send.stop_stream(code);
        }
        None => {
            let _ = send.finish().await;
        }
    }
}

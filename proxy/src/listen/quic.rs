//! QUIC listeners: a quinn endpoint on the UDP side of a listener whose
//! protocols include `h3`, same address and certificate as its TCP side.
//! Each connection is accepted with the listener's TLS config as the
//! configuration in force has it (certificates reload on SIGHUP), wrapped to
//! capture the ClientHello, then handed to the HTTP/3 front.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Limits, ListenerSpec};
use crate::core::context::Services;
use crate::front::http3;
use crate::listen::admission::Admission;
use crate::seccert::{CapturingResolver, ClientHelloSlot};

/// Per-connection queue of received QUIC datagrams (bytes).
const DATAGRAM_RECV_BUFFER: usize = 1 << 20;
/// A handshake that takes longer than this is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bind the endpoint. `addr` is the TCP side's bound address, so that port 0
/// resolves to the same number on both.
pub fn bind(
    spec: &ListenerSpec,
    addr: SocketAddr,
    limits: &Limits,
) -> std::io::Result<quinn::Endpoint> {
    let tls = spec
        .quic_tls
        .clone()
        .ok_or_else(|| std::io::Error::other("h3 listener without QUIC TLS config"))?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| std::io::Error::other(format!("QUIC TLS: {e}")))?;
    quinn::Endpoint::server(server_config(Arc::new(crypto), limits), addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind {} (udp) on {addr}: {e}", spec.name),
        )
    })
}

/// A quinn server config with our transport settings around `crypto`. The
/// QUIC idle timeout is the client idle timeout: a connection over which no
/// packet arrives for that long (no request, no tunnel traffic, no PING) is
/// closed.
fn server_config(
    crypto: Arc<quinn::crypto::rustls::QuicServerConfig>,
    limits: &Limits,
) -> quinn::ServerConfig {
    let mut server = quinn::ServerConfig::with_crypto(crypto);
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(256u32.into())
        .max_concurrent_uni_streams(16u32.into())
        // Some(..) also advertises max_datagram_frame_size (RFC 9221).
        .datagram_receive_buffer_size(Some(DATAGRAM_RECV_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_RECV_BUFFER)
        // Windows from our per-connection budget, not the peer's.
        .stream_receive_window(limits.receive_window().into())
        .receive_window(limits.receive_window().into())
        .send_window(u64::from(limits.send_budget()));
    if let Ok(idle) = quinn::IdleTimeout::try_from(limits.client_idle_timeout) {
        transport.max_idle_timeout(Some(idle));
    }
    server.transport_config(Arc::new(transport));
    server
}

/// Accept until `shutdown` flips to true. Each connection holds a place in
/// `admission`; over a cap it is refused (CONNECTION_REFUSED) before the
/// handshake.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    name: Arc<str>,
    services: Arc<Services>,
    admission: Arc<Admission>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        // The connection's snapshot, taken once: its listener (certificates
        // reload on SIGHUP) and everything else it is served under.
        let config = services.snapshot();
        let Some(spec) = config.listener(&name).cloned() else {
            incoming.refuse();
            continue;
        };
        let client = incoming.remote_address();
        let slot = match admission.admit(client.ip(), &config.limits) {
            Ok(slot) => slot,
            Err(refused) => {
                tracing::debug!(listener = %name, %client, cap = refused.as_str(), "connection cap reached; refusing");
                services
                    .metrics
                    .connections_refused
                    .with_label_values(&[&name, refused.as_str()])
                    .inc();
                incoming.refuse();
                continue;
            }
        };
        let services = Arc::clone(&services);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (hello, connecting) = match accept_capturing(incoming, &spec, &config.limits) {
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
                    if let Some(reason) = crate::tls::mtls_failure_quic(&e) {
                        services
                            .metrics
                            .auth_failures
                            .with_label_values(&["mtls", reason])
                            .inc();
                    }
                    return;
                }
                Err(_) => {
                    tracing::debug!("QUIC handshake timed out");
                    return;
                }
            };
            http3::serve_connection(conn, hello, spec, config, services, shutdown).await;
        });
    }
    // Refuse new connections; open ones got GOAWAY from their front and
    // keep their requests and tunnels until the server closes the endpoint
    // at the end of the grace period.
    endpoint.set_server_config(None);
}

/// Accept with a copy of the listener's QUIC TLS config that captures the
/// ClientHello into the returned slot (RFC 9261 §5.2.2: authenticators use a
/// signature scheme the client offered).
fn accept_capturing(
    incoming: quinn::Incoming,
    spec: &ListenerSpec,
    limits: &Limits,
) -> Result<(ClientHelloSlot, quinn::Connecting), String> {
    let base = spec
        .quic_tls
        .as_ref()
        .ok_or("h3 listener without QUIC TLS")?;
    let (tls, slot) = CapturingResolver::config_for_connection(base);
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let connecting = incoming
        .accept_with(Arc::new(server_config(Arc::new(crypto), limits)))
        .map_err(|e| e.to_string())?;
    Ok((slot, connecting))
}

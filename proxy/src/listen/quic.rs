//! QUIC listeners: a quinn endpoint on the UDP side of a listener whose
//! protocols include `h3`, same address and certificate as its TCP side.
//! Each connection attempt first passes `quic_admission` (Retry under load,
//! dropped over the handshake cap) and the connection caps; it is then
//! accepted with the listener's quinn server config as the configuration in
//! force has it (built once per snapshot: certificates reload on SIGHUP; one
//! Retry token key for the endpoint's life), with a ClientHello-capturing TLS
//! config only when secondary certificates need it, and handed to the
//! HTTP/3 front.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, Limits, ListenerSpec};
use crate::core::context::Services;
use crate::front::http3;
use crate::listen::admission::Admission;
use crate::listen::quic_admission::{self, Decision, Handshakes};
use crate::seccert::advertiser::Advertise;
use crate::seccert::{CapturingResolver, ClientHelloSlot};

/// Per-connection queue of received QUIC datagrams (bytes).
const DATAGRAM_RECV_BUFFER: usize = 1 << 20;
/// Connection attempts quinn queues for the accept loop; beyond, it drops new
/// Initials before deriving their keys (each holds its first datagram).
const MAX_INCOMING: usize = 4096;
/// Bytes quinn buffers for one queued attempt beyond its first datagram (a
/// ClientHello in two Initials), and for all of them.
const INCOMING_BUFFER: u64 = 64 * 1024;
const INCOMING_BUFFER_TOTAL: u64 = 16 * 1024 * 1024;

/// Bind the endpoint. `addr` is the TCP side's bound address, so that port 0
/// resolves to the same number on both. Also returns the endpoint's server
/// config, whose Retry token key every later config keeps (pass it to
/// [`accept_loop`]).
pub fn bind(
    spec: &ListenerSpec,
    addr: SocketAddr,
    limits: &Limits,
) -> std::io::Result<(quinn::Endpoint, quinn::ServerConfig)> {
    let tls = spec
        .quic_tls
        .clone()
        .ok_or_else(|| std::io::Error::other("h3 listener without QUIC TLS config"))?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| std::io::Error::other(format!("QUIC TLS: {e}")))?;
    let base = server_config(Arc::new(crypto), limits);
    let bind_error = |e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind {} (udp) on {addr}: {e}", spec.name),
        )
    };
    let endpoint = match spec.quic_reset_key {
        Some(key) => {
            let socket = std::net::UdpSocket::bind(addr).map_err(bind_error)?;
            let runtime = Arc::new(quinn::TokioRuntime);
            // The stateless-reset key (RFC 9000 §10.3) survives restarts: a
            // peer still talking to the previous process learns at once
            // that its connection is gone instead of waiting out its idle
            // timeout.
            let reset_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
            let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
            // Connection IDs hashed under a key of the same origin: a
            // restarted proxy recognises its predecessor's IDs as its own
            // and answers them with a stateless reset (quinn's default
            // key is random per process, so it would drop them instead).
            let cid_key = u64::from_le_bytes(
                crate::tls::hmac_sha256(&key, &[b"connection ids"])
                    .first_chunk::<8>()
                    .copied()
                    .unwrap_or_default(),
            );
            config.cid_generator(move || {
                Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
            });
            quinn::Endpoint::new(config, Some(base.clone()), socket, runtime).map_err(bind_error)?
        }
        None => quinn::Endpoint::server(base.clone(), addr).map_err(bind_error)?,
    };
    Ok((endpoint, base))
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
        .max_concurrent_bidi_streams(limits.h3_max_concurrent_streams.into())
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
        .max_incoming(MAX_INCOMING)
        .incoming_buffer_size(INCOMING_BUFFER)
        .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
    server
}

/// The listener's quinn server config for the configuration snapshot in
/// force, built once per snapshot, with the endpoint's Retry token key (a
/// token issued under one snapshot is still good under the next).
struct SharedConfig {
    /// The endpoint's config from `bind`: the token key's holder.
    base: quinn::ServerConfig,
    /// The snapshot the current config was built for, and that config.
    current: Option<(Arc<Config>, Arc<quinn::ServerConfig>)>,
}

impl SharedConfig {
    /// The config for `snapshot`'s `spec`; a new one is also given to the
    /// endpoint (Retry tokens and refusals use the endpoint's).
    fn for_snapshot(
        &mut self,
        snapshot: &Arc<Config>,
        spec: &ListenerSpec,
        endpoint: &quinn::Endpoint,
    ) -> Result<Arc<quinn::ServerConfig>, String> {
        if let Some((built_for, config)) = &self.current {
            if Arc::ptr_eq(built_for, snapshot) {
                return Ok(Arc::clone(config));
            }
        }
        let tls = spec
            .quic_tls
            .clone()
            .ok_or("h3 listener without QUIC TLS config")?;
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
        let built = server_config(Arc::new(crypto), &snapshot.limits);
        // Everything from `server_config` but the random token key it made.
        let mut config = self.base.clone();
        config.transport = built.transport;
        config.crypto = built.crypto;
        config.validation_token = built.validation_token;
        endpoint.set_server_config(Some(config.clone()));
        let config = Arc::new(config);
        self.current = Some((Arc::clone(snapshot), Arc::clone(&config)));
        Ok(config)
    }
}

/// Accept until `shutdown` flips to true. Each attempt passes
/// `quic_admission` (Retry under load, dropped over the handshake cap), then
/// holds a place in `admission`; over a cap it is refused
/// (CONNECTION_REFUSED) before the handshake.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    base: quinn::ServerConfig,
    name: Arc<str>,
    services: Arc<Services>,
    admission: Arc<Admission>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut shared = SharedConfig {
        base,
        current: None,
    };
    let metrics = Arc::clone(&services.metrics);
    let handshakes = Handshakes::new(metrics.quic_handshakes.with_label_values(&[&name]));
    let retries = metrics.quic_retries.with_label_values(&[&name]);
    let handshakes_full = metrics
        .connections_refused
        .with_label_values(&[&name, quic_admission::HANDSHAKES_FULL]);
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
        let validated = incoming.remote_address_validated();
        match quic_admission::decide(handshakes.count(), validated, &config.limits) {
            Decision::Handshake => {}
            Decision::Retry => {
                match incoming.retry() {
                    Ok(()) => retries.inc(),
                    // Only an attempt that already followed a Retry cannot
                    // get another; that one is validated.
                    Err(e) => e.into_incoming().ignore(),
                }
                continue;
            }
            Decision::Ignore => {
                handshakes_full.inc();
                incoming.ignore();
                continue;
            }
        }
        let Some(spec) = config.listener(&name) else {
            incoming.refuse();
            continue;
        };
        let client = incoming.remote_address();
        let slot = match admission.admit(client.ip(), &config.limits) {
            Ok(slot) => slot,
            Err(refused) => {
                tracing::debug!(listener = %name, %client, cap = refused.as_str(), "connection cap reached; refusing");
                metrics
                    .connections_refused
                    .with_label_values(&[&name, refused.as_str()])
                    .inc();
                incoming.refuse();
                continue;
            }
        };
        let accepted = shared
            .for_snapshot(&config, spec, &endpoint)
            .and_then(|server| accept_with(incoming, server, spec, &config));
        let (hello, connecting) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "QUIC connection refused");
                continue;
            }
        };
        let spec = spec.clone();
        let handshake_timeout = config.limits.handshake_timeout;
        let handshake = handshakes.start();
        let services = Arc::clone(&services);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let done = tokio::time::timeout(handshake_timeout, connecting).await;
            drop(handshake);
            let conn = match done {
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

/// Accept with the listener's shared `server` config, or, when secondary
/// certificates are on, with a copy whose TLS config captures the ClientHello
/// into the returned slot (RFC 9261 §5.2.2: authenticators use a signature
/// scheme the client offered). Without them the slot stays empty.
fn accept_with(
    incoming: quinn::Incoming,
    server: Arc<quinn::ServerConfig>,
    spec: &ListenerSpec,
    config: &Config,
) -> Result<(ClientHelloSlot, quinn::Connecting), String> {
    let secondary = config.secondary.advertise != Advertise::Off && !config.origins.is_empty();
    let (server, slot) = if secondary {
        let base = spec
            .quic_tls
            .as_ref()
            .ok_or("h3 listener without QUIC TLS")?;
        let (tls, slot) = CapturingResolver::config_for_connection(base);
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut capturing = (*server).clone();
        capturing.crypto = Arc::new(crypto);
        (Arc::new(capturing), slot)
    } else {
        (server, ClientHelloSlot::default())
    };
    let connecting = incoming.accept_with(server).map_err(|e| e.to_string())?;
    Ok((slot, connecting))
}

//! QUIC listeners: a quinn endpoint on the UDP side of a listener whose
//! protocols include `h3`, same address and certificate as its TCP side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ListenerSpec;
use crate::core::context::Shared;
use crate::front::http3;

/// Largest HTTP/3 request header section we accept.
const MAX_FIELD_SECTION: u64 = 64 * 1024;
/// Per-connection queue of received QUIC datagrams (bytes).
const DATAGRAM_RECV_BUFFER: usize = 1 << 20;

/// Bind the endpoint. `addr` is the TCP side's bound address, so that port 0
/// resolves to the same number on both.
pub fn bind(spec: &ListenerSpec, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let server = server_config(spec)?;
    quinn::Endpoint::server(server, addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind {} (udp) on {addr}: {e}", spec.name),
        )
    })
}

/// The quinn server config of a listener (also used to swap certificates on reload).
pub fn server_config(spec: &ListenerSpec) -> std::io::Result<quinn::ServerConfig> {
    let tls = spec
        .quic_tls
        .clone()
        .ok_or_else(|| std::io::Error::other("h3 listener without QUIC TLS config"))?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| std::io::Error::other(format!("QUIC TLS: {e}")))?;
    Ok(server_config_with(Arc::new(crypto)))
}

/// A quinn server config with our transport settings around `crypto`.
pub fn server_config_with(
    crypto: Arc<quinn::crypto::rustls::QuicServerConfig>,
) -> quinn::ServerConfig {
    let mut server = quinn::ServerConfig::with_crypto(crypto);
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(256u32.into())
        .max_concurrent_uni_streams(16u32.into())
        // Some(..) also advertises max_datagram_frame_size (RFC 9221).
        .datagram_receive_buffer_size(Some(DATAGRAM_RECV_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_RECV_BUFFER);
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(60)) {
        transport.max_idle_timeout(Some(idle));
    }
    server.transport_config(Arc::new(transport));
    server
}

pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    spec: ListenerSpec,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let spec = Arc::new(spec);
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        let spec = Arc::clone(&spec);
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            http3::serve_connection(incoming, spec, shared, shutdown, MAX_FIELD_SECTION).await;
        });
    }
    // Tell every client we are going away (H3_NO_ERROR), then let the
    // endpoint drain in the background.
    endpoint.close(0x0100u32.into(), b"shutting down");
}

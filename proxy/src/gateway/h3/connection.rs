//! The gateway connection itself: the QUIC handshake with the options'
//! TLS config, our control stream, the task that reads the gateway's
//! (`uni_streams.rs`) and the datagram router (`datagrams.rs`), then one
//! cheap, cloneable [`H3Connection`] through which any number of tasks open
//! request streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::seccert::negotiation::Codepoints;
use crate::seccert::{Exporter, ExporterError, HashAlg};
use crate::wire::h3_error::H3ErrorCode;
use crate::wire::h3_frame::{self, FrameType, SettingId, StreamType};
use crate::wire::server_certificate as sc;

use super::control::PeerSettings;
use super::datagrams::{FlowDatagrams, Router};
use super::error::H3Error;
use super::uni_streams::{self, PeerState};

/// How to reach and talk to the gateway.
#[derive(Clone, Debug)]
pub struct H3Options {
    pub addr: SocketAddr,
    /// SNI and the name the gateway's certificate must carry.
    pub server_name: String,
    /// Built by the caller: ALPN `h3`, the roots, an optional client
    /// certificate (mTLS). Its cipher suites must all hash with SHA-256
    /// (build it on `crate::tls::quic_provider()`): quinn does not report
    /// the negotiated suite and the exporter for secondary certificates
    /// needs the hash ([`H3Connection::exporter`]).
    pub tls: Arc<rustls::ClientConfig>,
    /// Secondary-certificate frame and setting codepoints.
    pub codepoints: Codepoints,
    /// QUIC PING interval while idle (zero: none).
    pub keepalive: Duration,
    /// QUIC max_idle_timeout (zero: none).
    pub idle_timeout: Duration,
    /// Handshake and the gateway's SETTINGS, together.
    pub connect_timeout: Duration,
    /// Our SETTINGS_MAX_FIELD_SECTION_SIZE: larger response sections are
    /// refused.
    pub max_field_section: usize,
}

/// A live HTTP/3 connection to the gateway. Clones share it; the QUIC
/// connection is closed (H3_NO_ERROR) when the last clone and the last
/// stream are gone.
#[derive(Clone)]
pub struct H3Connection {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) conn: quinn::Connection,
    pub(super) peer: Arc<PeerState>,
    pub(super) router: Router,
    pub(super) active: Arc<AtomicUsize>,
    pub(super) max_field_section: usize,
    /// Our control stream, kept open for the connection's life (RFC 9114
    /// §6.2.1: closing it is a connection error).
    _control: Mutex<quinn::SendStream>,
    uni_task: AbortHandle,
}

/// Held by both halves of each stream: counts active streams and keeps the
/// connection alive while one is open.
pub(crate) struct StreamGuard {
    active: Arc<AtomicUsize>,
    _conn: Arc<Inner>,
}

/// Connect to the gateway: QUIC handshake, our control stream with
/// SETTINGS, and the gateway's SETTINGS read, all within
/// `opts.connect_timeout`. Waiting for the gateway's SETTINGS (they come
/// in its first flight after the handshake) makes
/// [`H3Connection::datagrams_enabled`] and
/// [`H3Connection::peer_offers_certs`] answers, not guesses.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    opts: &H3Options,
) -> Result<H3Connection, H3Error> {
    let config = client_config(opts)?;
    let connecting = endpoint
        .connect_with(config, opts.addr, &opts.server_name)
        .map_err(|e| H3Error::Config(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + opts.connect_timeout;
    let conn = match tokio::time::timeout_at(deadline, connecting).await {
        Err(_) => return Err(H3Error::ConnectTimeout),
        Ok(Err(e)) => return Err(H3Error::Handshake(e.to_string())),
        Ok(Ok(c)) => c,
    };
    let setup = async {
        let control = open_control(&conn, opts).await?;
        let peer = Arc::new(PeerState::new());
        let uni_task = tokio::spawn(uni_streams::accept(
            conn.clone(),
            opts.codepoints,
            Arc::clone(&peer),
        ))
        .abort_handle();
        let inner = Arc::new(Inner {
            router: Router::spawn(conn.clone(), Arc::clone(&peer)),
            conn: conn.clone(),
            peer,
            active: Arc::new(AtomicUsize::new(0)),
            max_field_section: opts.max_field_section,
            _control: Mutex::new(control),
            uni_task,
        });
        let mut settings = inner.peer.settings.subscribe();
        tokio::select! {
            r = settings.wait_for(Option::is_some) => {
                r.map_err(|_| H3Error::ConnectionLost("gateway connection task ended".into()))?;
            }
            e = conn.closed() => return Err(inner.peer.lost(&e)),
        }
        Ok(H3Connection { inner })
    };
    match tokio::time::timeout_at(deadline, setup).await {
        Ok(r) => r,
        Err(_) => {
            conn.close(
                quinn::VarInt::from_u64(H3ErrorCode::NO_ERROR.0).unwrap_or_default(),
                b"no SETTINGS in time",
            );
            Err(H3Error::ConnectTimeout)
        }
    }
}

/// The quinn client config: the caller's TLS, our transport settings.
fn client_config(opts: &H3Options) -> Result<quinn::ClientConfig, H3Error> {
    if !opts.tls.alpn_protocols.iter().any(|p| p == b"h3") {
        return Err(H3Error::Config(
            "the TLS config does not offer ALPN h3".into(),
        ));
    }
    let non_sha256 = opts.tls.crypto_provider().cipher_suites.iter().any(|s| {
        s.tls13().is_some_and(|t| {
            t.common.hash_provider.algorithm() != rustls::crypto::hash::HashAlgorithm::SHA256
        })
    });
    if non_sha256 {
        return Err(H3Error::Config(
            "the TLS config offers a non-SHA-256 suite; build it on tls::quic_provider()".into(),
        ));
    }
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::clone(&opts.tls))
        .map_err(|e| H3Error::Config(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    if !opts.keepalive.is_zero() {
        transport.keep_alive_interval(Some(opts.keepalive));
    }
    let idle = if opts.idle_timeout.is_zero() {
        None
    } else {
        Some(
            quinn::IdleTimeout::try_from(opts.idle_timeout)
                .map_err(|e| H3Error::Config(format!("idle_timeout: {e}")))?,
        )
    };
    transport.max_idle_timeout(idle);
    // Some(..) advertises max_datagram_frame_size (RFC 9221): the gateway
    // may send us QUIC DATAGRAM frames.
    transport.datagram_receive_buffer_size(Some(1 << 20));
    // RFC 9114 §6.1: a server opens no bidirectional streams.
    transport.max_concurrent_bidi_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Open our control stream and send SETTINGS (RFC 9114 §6.2.1, §7.2.4).
///
/// QPACK: capacity 0 and no blocked streams, so the gateway encodes with
/// the static table and literals only; RFC 9204 §4.2 lets us skip our
/// encoder stream (we never use a table) and decoder stream (our table
/// capacity is 0), so we open neither.
async fn open_control(
    conn: &quinn::Connection,
    opts: &H3Options,
) -> Result<quinn::SendStream, H3Error> {
    let mut settings = BytesMut::new();
    let field_section = u64::try_from(opts.max_field_section).unwrap_or(u64::MAX);
    let entries = [
        (SettingId::QPACK_MAX_TABLE_CAPACITY, 0),
        (SettingId::QPACK_BLOCKED_STREAMS, 0),
        (SettingId::MAX_FIELD_SECTION_SIZE, field_section),
        // RFC 9297 §2.1.1: we take HTTP/3 datagrams.
        (SettingId::H3_DATAGRAM, 1),
    ];
    let encode = |settings: &mut BytesMut| -> Result<(), crate::wire::varint::VarIntError> {
        for (id, value) in entries {
            h3_frame::encode_setting(id, value, settings)?;
        }
        Ok(())
    };
    let bad = |e: &dyn std::fmt::Display| H3Error::Config(format!("SETTINGS: {e}"));
    encode(&mut settings).map_err(|e| bad(&e))?;
    // The secondary-certificate setting: we understand SERVER_CERTIFICATE.
    let mut cert_setting = Vec::new();
    sc::encode_h3_setting(&opts.codepoints, true, &mut cert_setting).map_err(|e| bad(&e))?;
    settings.put_slice(&cert_setting);
    let mut wire = BytesMut::new();
    StreamType::CONTROL.encode(&mut wire).map_err(|e| bad(&e))?;
    h3_frame::encode_frame(FrameType::SETTINGS, &settings, &mut wire).map_err(|e| bad(&e))?;
    let mut stream = conn.open_uni().await.map_err(|e| H3Error::lost(&e))?;
    stream
        .write_chunk(wire.freeze())
        .await
        .map_err(H3Error::from_write)?;
    Ok(stream)
}

// === impl H3Connection ===

impl H3Connection {
    /// The QUIC connection underneath (stats, RTT, peer address).
    pub fn quic(&self) -> &quinn::Connection {
        &self.inner.conn
    }

    /// What the gateway's SETTINGS said (always known after [`connect`]).
    pub fn peer_settings(&self) -> PeerSettings {
        self.inner
            .peer
            .settings
            .borrow()
            .clone()
            .unwrap_or_default()
    }

    /// QUIC DATAGRAMs may carry HTTP datagrams: we sent SETTINGS_H3_DATAGRAM
    /// = 1 (always), so did the gateway, and the QUIC peer takes DATAGRAM
    /// frames (RFC 9297 §2.1.1).
    pub fn datagrams_enabled(&self) -> bool {
        self.peer_settings().h3_datagram && self.inner.conn.max_datagram_size().is_some()
    }

    /// The gateway sent the secondary-certificate setting = 1.
    pub fn peer_offers_certs(&self) -> bool {
        self.peer_settings().offers_certs
    }

    /// Route the gateway's datagrams for `stream_id` to a new flow. Prefer
    /// `H3Request::datagrams`, which registers before the request is sent.
    pub fn register_flow(&self, stream_id: u64) -> FlowDatagrams {
        self.inner
            .router
            .flow(self.inner.conn.clone(), stream_id, self.datagrams_enabled())
    }

    /// Every SERVER_CERTIFICATE authenticator the gateway sent, in order;
    /// the receiver sees new ones as they arrive.
    pub fn certificates(&self) -> watch::Receiver<Vec<Bytes>> {
        self.inner.peer.certificates.subscribe()
    }

    /// The TLS exporter of this connection (SHA-256, see
    /// [`H3Options::tls`]), for validating the authenticators.
    pub fn exporter(&self) -> Result<Exporter, ExporterError> {
        Exporter::from_quinn(&self.inner.conn, HashAlg::Sha256)
    }

    /// Request streams open now. Opening more than the gateway's stream
    /// limit does not fail: `open` waits in quinn's `open_bi` until the
    /// gateway grants more (MAX_STREAMS), so callers bound the wait with a
    /// timeout or look here first.
    pub fn active_streams(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// New requests may go out: no GOAWAY came and the connection is up.
    pub fn is_usable(&self) -> bool {
        !self.goaway_received() && self.inner.conn.close_reason().is_none()
    }

    pub fn goaway_received(&self) -> bool {
        self.inner.peer.goaway().is_some()
    }

    /// Resolves once the gateway has sent GOAWAY.
    pub async fn goaway(&self) {
        loop {
            let seen = self.inner.peer.goaway_seen.notified();
            tokio::pin!(seen);
            seen.as_mut().enable();
            if self.goaway_received() {
                return;
            }
            seen.await;
        }
    }

    /// Resolves when the connection is closed, with why.
    pub async fn closed(&self) -> H3Error {
        self.inner.peer.lost(&self.inner.conn.closed().await)
    }

    /// Close now with an HTTP/3 error `code` (H3_NO_ERROR, 0x100, for a
    /// clean close). Open streams fail.
    pub fn close(&self, code: u64, reason: &[u8]) {
        self.inner
            .conn
            .close(quinn::VarInt::from_u64(code).unwrap_or_default(), reason);
    }

    pub(super) fn guard(&self) -> Arc<StreamGuard> {
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        Arc::new(StreamGuard {
            active: Arc::clone(&self.inner.active),
            _conn: Arc::clone(&self.inner),
        })
    }
}

impl std::fmt::Debug for H3Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Connection")
            .field("remote", &self.inner.conn.remote_address())
            .field("id", &self.inner.conn.stable_id())
            .field("active_streams", &self.active_streams())
            .field("goaway", &self.inner.peer.goaway())
            .finish()
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.uni_task.abort();
        self.conn.close(
            quinn::VarInt::from_u64(H3ErrorCode::NO_ERROR.0).unwrap_or_default(),
            b"",
        );
    }
}

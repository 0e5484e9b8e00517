//! One connection to the gateway, HTTP/3 or HTTP/2, and what is known
//! about it. HTTP/2: TCP, TLS 1.3 with ALPN `h2` (and our client
//! certificate for mTLS), hyper's HTTP/2 client over the [`Tap`], PING
//! keep-alive. HTTP/3: QUIC through [`super::h3::connect`] with the same
//! identity, QUIC keep-alive, and a task that validates the gateway's
//! SERVER_CERTIFICATE frames from its control stream. The pool leases the
//! streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bauta_policy::Host;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::error::GatewayError;
use super::h2_tap::{CertCheck, Certificates, PeerState, Tap};
use super::h3::{self, H3Connection, H3Error, H3Options};
use crate::body::Body;
use crate::config::gateway::{GatewayProtocol, GatewaySpec};
use crate::ops::metrics::Metrics;
use crate::upstream::dial::{happy_eyeballs, DialError};
use crate::wire::target::Target;

/// The `state` label values of `bauta_gateway_connections`.
pub const STATES: &[&str] = &["open", "draining"];

/// Our limit on the gateway's response field sections (HTTP/3).
const MAX_FIELD_SECTION: usize = 64 * 1024;

const OPEN: u8 = 0;
const DRAINING: u8 = 1;
const CLOSED: u8 = 2;

/// One gateway connection and what is known about it.
pub struct Connection {
    pub id: u64,
    pub link: Link,
    peer: Arc<PeerState>,
    /// Streams leased now.
    active: AtomicUsize,
    /// Our own cap (`[gateway] max_streams_per_connection`).
    max_streams: usize,
    state: AtomicU8,
    metrics: Arc<Metrics>,
}

/// The protocol client under a connection.
pub enum Link {
    H2(http2::SendRequest<Body>),
    H3(H3Connection),
}

impl Connection {
    /// Open a connection with `protocol` within `[gateway] connect_timeout_ms`.
    pub async fn open(
        spec: &GatewaySpec,
        protocol: GatewayProtocol,
        endpoints: &Endpoints,
        id: u64,
        metrics: &Arc<Metrics>,
    ) -> Result<Arc<Connection>, GatewayError> {
        let started = Instant::now();
        let opening = async {
            match protocol {
                GatewayProtocol::H2 => Self::open_h2(spec, id, metrics).await,
                GatewayProtocol::H3 => Self::open_h3(spec, endpoints, id, metrics).await,
            }
        };
        let conn = tokio::time::timeout(spec.connect_timeout, opening)
            .await
            .map_err(|_| GatewayError::ConnectTimeout)??;
        metrics
            .gateway_connect_seconds
            .observe(started.elapsed().as_secs_f64());
        conn.gauge("open").inc();
        tracing::info!(connection = id, protocol = protocol.as_str(), gateway = %spec.url, "gateway connection open");
        Ok(conn)
    }

    fn new(
        spec: &GatewaySpec,
        id: u64,
        link: Link,
        peer: Arc<PeerState>,
        metrics: &Arc<Metrics>,
    ) -> Arc<Connection> {
        Arc::new(Connection {
            id,
            link,
            peer,
            active: AtomicUsize::new(0),
            max_streams: spec.max_streams_per_connection,
            state: AtomicU8::new(OPEN),
            metrics: Arc::clone(metrics),
        })
    }

    fn cert_check(
        spec: &GatewaySpec,
        exporter: Result<crate::seccert::Exporter, crate::seccert::ExporterError>,
        metrics: &Metrics,
    ) -> Result<Option<CertCheck>, GatewayError> {
        if spec.originate.is_empty() {
            return Ok(None);
        }
        let exporter = exporter.map_err(|e| GatewayError::Tls(format!("exporter: {e}")))?;
        let offered = crate::tls::provider()
            .signature_verification_algorithms
            .supported_schemes();
        Ok(Some(CertCheck {
            validator: crate::seccert::Validator::new(exporter, &offered),
            verifier: Arc::clone(&spec.origin_verifier),
            origins: Arc::clone(&spec.originate),
            metrics: metrics.secondary_certs_validated.clone(),
        }))
    }

    async fn open_h2(
        spec: &GatewaySpec,
        id: u64,
        metrics: &Arc<Metrics>,
    ) -> Result<Arc<Connection>, GatewayError> {
        let addrs = resolve(spec).await?;
        let (tcp, _peer) =
            happy_eyeballs(&addrs, spec.connect_timeout)
                .await
                .map_err(|e| match e {
                    DialError::Timeout => GatewayError::ConnectTimeout,
                    _ => GatewayError::Refused,
                })?;
        // Small frames (each CONNECT's HEADERS, a tunnel's first bytes)
        // must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&spec.tls_h2))
            .connect(spec.server_name.clone(), tcp)
            .await
            .map_err(|e| GatewayError::Tls(e.to_string()))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(GatewayError::Tls(
                "the gateway did not choose h2 in ALPN".into(),
            ));
        }
        let exporter = crate::seccert::Exporter::from_rustls(tls.get_ref().1);
        let certs = Self::cert_check(spec, exporter, metrics)?;
        let peer = PeerState::new();
        let io = TokioIo::new(Tap::new(
            tls,
            spec.codepoints,
            Arc::clone(&peer),
            certs.map(|c| Certificates::Check(Box::new(c))),
        ));
        let (sender, driver) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(spec.keepalive)
            .keep_alive_timeout(spec.keepalive.saturating_mul(2))
            .keep_alive_while_idle(true)
            .adaptive_window(true)
            .handshake(io)
            .await
            .map_err(|e| GatewayError::Protocol(e.to_string()))?;
        let conn = Self::new(spec, id, Link::H2(sender), Arc::clone(&peer), metrics);
        // Weak: dropping the last lease and the pool's handle ends the
        // connection (hyper closes it once no sender is left). The state
        // follows the byte stream, not hyper's request handle: after a
        // GOAWAY hyper stops taking requests at once, but the connection
        // lives on (draining) until its last stream ends and the Tap is
        // dropped.
        let watched = Arc::downgrade(&conn);
        let errors = metrics
            .gateway_errors
            .with_label_values(&["connection_lost"]);
        tokio::spawn(async move {
            tokio::pin!(driver);
            let mut driving = true;
            loop {
                tokio::select! {
                    r = &mut driver, if driving => {
                        driving = false;
                        if let Err(e) = r {
                            tracing::info!(connection = id, error = %e, "gateway connection ended");
                            errors.inc();
                            break;
                        }
                        tracing::debug!(connection = id, "gateway connection takes no more requests");
                    }
                    () = peer.changed() => {
                        if peer.ended() {
                            tracing::debug!(connection = id, "gateway connection closed");
                            break;
                        }
                        if let Some(c) = watched.upgrade() {
                            c.note_goaway();
                        }
                    }
                }
            }
            if let Some(c) = watched.upgrade() {
                c.set_closed();
            }
        });
        Ok(conn)
    }

    async fn open_h3(
        spec: &GatewaySpec,
        endpoints: &Endpoints,
        id: u64,
        metrics: &Arc<Metrics>,
    ) -> Result<Arc<Connection>, GatewayError> {
        let addrs = resolve(spec).await?;
        let addr = *addrs
            .first()
            .ok_or_else(|| GatewayError::Dns("no address".into()))?;
        let endpoint = endpoints
            .for_addr(addr)
            .map_err(|e| GatewayError::Protocol(format!("UDP socket for QUIC: {e}")))?;
        let opts = H3Options {
            addr,
            server_name: server_name_str(&spec.target),
            tls: Arc::clone(&spec.tls_h3),
            codepoints: spec.codepoints,
            keepalive: spec.keepalive,
            // A crashed gateway sends nothing (a restarted one resets the
            // connection at once, see listen/quic.rs): three missed
            // keep-alives and the connection is given up.
            idle_timeout: spec.keepalive.saturating_mul(3),
            connect_timeout: spec.connect_timeout,
            max_field_section: MAX_FIELD_SECTION,
        };
        tracing::debug!(idle_timeout = ?opts.idle_timeout, keepalive = ?opts.keepalive, "opening an HTTP/3 gateway connection");
        let h3 = h3::connect(&endpoint, &opts).await.map_err(|e| match e {
            H3Error::ConnectTimeout => GatewayError::ConnectTimeout,
            H3Error::Handshake(m) => GatewayError::Tls(m),
            other => GatewayError::Protocol(other.to_string()),
        })?;
        let certs = Self::cert_check(spec, h3.exporter(), metrics)?;
        let peer = PeerState::new();
        let conn = Self::new(spec, id, Link::H3(h3.clone()), Arc::clone(&peer), metrics);
        let watched = Arc::downgrade(&conn);
        let errors = metrics
            .gateway_errors
            .with_label_values(&["connection_lost"]);
        let invalid = spec.codepoints.h3_error_invalid;
        tokio::spawn(async move {
            let mut certs_rx = h3.certificates();
            // Certificates that came before this subscription (an eager
            // gateway sends them with its SETTINGS) are checked first.
            certs_rx.mark_changed();
            let mut seen = 0usize;
            let mut check = certs;
            let mut draining = false;
            loop {
                tokio::select! {
                    () = h3.goaway(), if !draining => {
                        draining = true;
                        if let Some(c) = watched.upgrade() {
                            c.note_goaway();
                        }
                    }
                    changed = certs_rx.changed(), if check.is_some() => {
                        if changed.is_err() {
                            continue;
                        }
                        let all: Vec<bytes::Bytes> = certs_rx.borrow_and_update().clone();
                        let fresh = all.get(seen..).unwrap_or_default().to_vec();
                        seen = all.len();
                        for a in fresh {
                            let ok = h3.peer_offers_certs()
                                && check.as_mut().is_some_and(|c| c.check(&a, &peer));
                            if !ok {
                                peer.fail();
                                h3.close(invalid, b"SERVER_CERTIFICATE_INVALID");
                            }
                        }
                        peer.notify_proofs();
                    }
                    e = h3.closed() => {
                        tracing::info!(connection = id, error = %e, "gateway connection ended");
                        if !matches!(e, H3Error::GoAway) {
                            errors.inc();
                        }
                        break;
                    }
                }
            }
            if let Some(c) = watched.upgrade() {
                c.set_closed();
            }
        });
        Ok(conn)
    }

    pub fn protocol(&self) -> GatewayProtocol {
        match self.link {
            Link::H2(_) => GatewayProtocol::H2,
            Link::H3(_) => GatewayProtocol::H3,
        }
    }

    fn gauge(&self, state: &str) -> prometheus::IntGauge {
        self.metrics
            .gateway_connections
            .with_label_values(&[self.protocol().as_str(), state])
    }

    /// A new stream may start here (no GOAWAY received, not closed). Only
    /// looks: the state moves in the connection's watcher task.
    pub fn is_usable(&self) -> bool {
        self.state.load(Ordering::Relaxed) == OPEN
            && !self.goaway()
            && match &self.link {
                Link::H2(s) => !s.is_closed() && !self.peer.ended(),
                Link::H3(c) => c.is_usable(),
            }
    }

    /// The connection has ended (a draining one has not: its streams
    /// still run).
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Relaxed) == CLOSED
            || match &self.link {
                Link::H2(_) => self.peer.ended(),
                Link::H3(c) => c.quic().close_reason().is_some(),
            }
    }

    fn goaway(&self) -> bool {
        self.peer.goaway()
            || match &self.link {
                Link::H2(_) => false,
                Link::H3(c) => c.goaway_received(),
            }
    }

    /// Moves an open connection to draining once the peer's GOAWAY was seen.
    fn note_goaway(&self) {
        if self.goaway()
            && self
                .state
                .compare_exchange(OPEN, DRAINING, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(connection = self.id, "gateway sent GOAWAY; draining");
            self.gauge("open").dec();
            self.gauge("draining").inc();
        }
    }

    fn set_closed(&self) {
        match self.state.swap(CLOSED, Ordering::Relaxed) {
            OPEN => self.gauge("open").dec(),
            DRAINING => self.gauge("draining").dec(),
            _ => {}
        }
    }

    /// Streams this connection takes: our cap and, on HTTP/2, the peer's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` (on HTTP/3 quinn waits for the
    /// peer's stream credit itself).
    pub fn capacity(&self) -> usize {
        self.max_streams.min(self.peer.max_streams())
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Take one stream slot if there is room.
    pub(super) fn try_acquire(&self) -> bool {
        let cap = self.capacity();
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    pub(super) fn release(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Has the gateway proven `origin` with a secondary certificate on this
    /// connection? Waits up to `wait` for a certificate still being
    /// checked (HTTP/3's control stream is not ordered with the request
    /// streams).
    pub async fn proves(&self, origin: &Target, wait: Duration) -> bool {
        self.peer.wait_proof(origin, wait).await
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.set_closed();
    }
}

/// The QUIC client sockets, one per address family, made on first use and
/// shared by the pool's HTTP/3 connections.
#[derive(Default)]
pub struct Endpoints {
    v4: std::sync::Mutex<Option<quinn::Endpoint>>,
    v6: std::sync::Mutex<Option<quinn::Endpoint>>,
}

impl Endpoints {
    fn for_addr(&self, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
        let (slot, bind) = if addr.is_ipv4() {
            (&self.v4, SocketAddr::from(([0u8; 4], 0)))
        } else {
            (&self.v6, SocketAddr::from(([0u16; 8], 0)))
        };
        let mut slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ep) = slot.as_ref() {
            return Ok(ep.clone());
        }
        let ep = quinn::Endpoint::client(bind)?;
        *slot = Some(ep.clone());
        Ok(ep)
    }
}

/// The name the gateway's certificate must carry: a DNS name, or an IP.
fn server_name_str(target: &Target) -> String {
    match &target.host {
        Host::Name(n) => n.clone(),
        Host::Ip(ip) => ip.to_string(),
    }
}

async fn resolve(spec: &GatewaySpec) -> Result<Vec<SocketAddr>, GatewayError> {
    let port = spec.target.port;
    match &spec.target.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Name(name) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|e| GatewayError::Dns(e.to_string()))?
                .collect();
            if addrs.is_empty() {
                return Err(GatewayError::Dns(format!("{name}: no addresses")));
            }
            Ok(addrs)
        }
    }
}

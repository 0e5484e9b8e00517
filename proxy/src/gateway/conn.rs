//! One HTTP/2 connection to the gateway: TCP, TLS 1.3 with ALPN `h2` (and
//! our client certificate for mTLS), hyper's HTTP/2 client over a
//! [`Watched`] stream, PING keep-alive. The pool leases its streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bauta_policy::Host;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::error::GatewayError;
use super::h2_tap::{CertCheck, PeerState, Tap};
use crate::body::Body;
use crate::config::gateway::{GatewayProtocol, GatewaySpec};
use crate::ops::metrics::Metrics;
use crate::upstream::dial::{happy_eyeballs, DialError};

/// The `state` label values of `bauta_gateway_connections`.
pub const STATES: &[&str] = &["open", "draining"];

const OPEN: u8 = 0;
const DRAINING: u8 = 1;
const CLOSED: u8 = 2;

/// One gateway connection and what is known about it.
pub struct Connection {
    pub id: u64,
    protocol: GatewayProtocol,
    sender: http2::SendRequest<Body>,
    peer: Arc<PeerState>,
    /// Streams leased now.
    active: AtomicUsize,
    /// Our own cap (`[gateway] max_streams_per_connection`).
    max_streams: usize,
    state: AtomicU8,
    metrics: Arc<Metrics>,
}

impl Connection {
    /// Open a connection within `[gateway] connect_timeout_ms`.
    pub async fn open(
        spec: &GatewaySpec,
        id: u64,
        metrics: &Arc<Metrics>,
    ) -> Result<Arc<Connection>, GatewayError> {
        let started = Instant::now();
        let conn = tokio::time::timeout(spec.connect_timeout, Self::open_inner(spec, id, metrics))
            .await
            .map_err(|_| GatewayError::ConnectTimeout)??;
        metrics
            .gateway_connect_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(conn)
    }

    async fn open_inner(
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
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&spec.tls_h2))
            .connect(spec.server_name.clone(), tcp)
            .await
            .map_err(|e| GatewayError::Tls(e.to_string()))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(GatewayError::Tls(
                "the gateway did not choose h2 in ALPN".into(),
            ));
        }
        let certs = if spec.originate.is_empty() {
            None
        } else {
            let exporter = crate::seccert::Exporter::from_rustls(tls.get_ref().1)
                .map_err(|e| GatewayError::Tls(format!("exporter: {e}")))?;
            let offered = crate::tls::provider()
                .signature_verification_algorithms
                .supported_schemes();
            Some(CertCheck {
                validator: crate::seccert::Validator::new(exporter, &offered),
                verifier: Arc::clone(&spec.origin_verifier),
                origins: Arc::clone(&spec.originate),
                metrics: metrics.secondary_certs_validated.clone(),
            })
        };
        let peer = PeerState::new();
        let io = TokioIo::new(Tap::new(tls, spec.codepoints, Arc::clone(&peer), certs));
        let (sender, driver) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(spec.keepalive)
            .keep_alive_timeout(spec.keepalive.max(std::time::Duration::from_secs(5)))
            .keep_alive_while_idle(true)
            .adaptive_window(true)
            .handshake(io)
            .await
            .map_err(|e| GatewayError::Protocol(e.to_string()))?;
        let conn = Arc::new(Connection {
            id,
            protocol: GatewayProtocol::H2,
            sender,
            peer,
            active: AtomicUsize::new(0),
            max_streams: spec.max_streams_per_connection,
            state: AtomicU8::new(OPEN),
            metrics: Arc::clone(metrics),
        });
        conn.gauge("open").inc();
        // Weak: dropping the last lease and the pool's handle ends the
        // connection (hyper closes it once no sender is left).
        let watched = Arc::downgrade(&conn);
        let errors = metrics
            .gateway_errors
            .with_label_values(&["connection_lost"]);
        tokio::spawn(async move {
            match driver.await {
                Err(e) => {
                    tracing::info!(connection = id, error = %e, "gateway connection ended");
                    errors.inc();
                }
                Ok(()) => tracing::debug!(connection = id, "gateway connection closed"),
            }
            if let Some(c) = watched.upgrade() {
                c.set_closed();
            }
        });
        tracing::info!(connection = id, gateway = %spec.url, "gateway connection open");
        Ok(conn)
    }

    fn gauge(&self, state: &str) -> prometheus::IntGauge {
        self.metrics
            .gateway_connections
            .with_label_values(&[self.protocol.as_str(), state])
    }

    /// No new stream may start here (GOAWAY received, or closed).
    pub fn is_usable(&self) -> bool {
        self.note_goaway();
        self.state.load(Ordering::Relaxed) == OPEN && !self.sender.is_closed()
    }

    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Relaxed) == CLOSED || self.sender.is_closed()
    }

    /// Moves an open connection to draining once the peer's GOAWAY was seen.
    fn note_goaway(&self) {
        if self.peer.goaway()
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

    /// Streams this connection takes: our cap and the peer's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
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
    /// connection?
    pub fn proves(&self, origin: &crate::wire::target::Target) -> bool {
        self.peer.proves(origin)
    }

    pub(super) fn sender(&self) -> http2::SendRequest<Body> {
        self.sender.clone()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.set_closed();
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

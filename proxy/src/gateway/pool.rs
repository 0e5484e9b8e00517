//! The gateway connections and the leasing of their streams.
//!
//! A stream goes to the open connection with the fewest streams that still
//! has room (our `max_streams_per_connection` and the gateway's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`). A new connection is opened while
//! fewer than `connections` are open, or when every one is full (up to
//! `max_connections`). One attempt runs at a time; the others wait for it
//! and then take a stream on what it opened. A failed attempt opens the
//! [`Breaker`]: until its backoff expires, requests fail at once.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus::IntGauge;

use super::breaker::Breaker;
use super::conn::{Connection, Endpoints};
use super::error::GatewayError;
use crate::config::gateway::GatewayProtocol;
use crate::config::gateway::GatewaySpec;
use crate::ops::metrics::Metrics;

pub struct Pool {
    spec: Arc<GatewaySpec>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Held while a connection is being opened.
    opening: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    endpoints: Endpoints,
    /// The protocol that won the last race, and when: tried first (alone)
    /// for [`REMEMBER`].
    remembered: Mutex<Option<(GatewayProtocol, Instant)>>,
}

/// How long the winner of a protocol race is tried first.
const REMEMBER: std::time::Duration = std::time::Duration::from_secs(300);
/// How long the preferred protocol runs alone before the next one starts
/// (RFC 8305's connection attempt delay).
const HEAD_START: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Default)]
struct State {
    conns: Vec<Arc<Connection>>,
    breaker: Breaker,
}

/// One stream slot on one connection, given back when dropped.
pub struct Lease {
    conn: Arc<Connection>,
    gauge: IntGauge,
}

impl Lease {
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.release();
        self.gauge.dec();
    }
}

/// What [`Pool::try_take`] found.
enum Take {
    Leased(Lease),
    /// Open another connection; this many are usable now (all full).
    Open {
        usable: usize,
    },
}

impl Pool {
    pub fn new(spec: Arc<GatewaySpec>, metrics: Arc<Metrics>) -> Pool {
        Pool {
            spec,
            metrics,
            state: Mutex::new(State::default()),
            opening: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            endpoints: Endpoints::default(),
            remembered: Mutex::new(None),
        }
    }

    /// A stream slot for a request of `kind` (`connect`, `connect-udp`,
    /// `http`), opening a connection if needed.
    pub async fn lease(&self, kind: &'static str) -> Result<Lease, GatewayError> {
        if let Take::Leased(l) = self.try_take(kind)? {
            return Ok(l);
        }
        let _opening = self.opening.lock().await;
        // Someone else may have opened one while we waited.
        let usable = match self.try_take(kind)? {
            Take::Leased(l) => return Ok(l),
            Take::Open { usable } => usable,
        };
        if usable >= self.spec.max_connections {
            return Err(GatewayError::Saturated);
        }
        match self.open().await {
            Ok(conn) => {
                let mut st = self.lock();
                st.breaker.succeeded();
                st.conns.push(Arc::clone(&conn));
                drop(st);
                if conn.try_acquire() {
                    return Ok(self.leased(conn, kind));
                }
                Err(GatewayError::Saturated)
            }
            Err(e) => {
                tracing::warn!(gateway = %self.spec.url, error = %e, "cannot connect to the gateway");
                self.lock().breaker.failed(Instant::now(), jitter());
                Err(e)
            }
        }
    }

    /// Open a connection: with one protocol, that one; with HTTP/3 and
    /// HTTP/2, a race in the style of Happy Eyeballs (RFC 8305) — the
    /// preferred one starts, the other after [`HEAD_START`] or at once when
    /// the first fails, the first to connect wins — and the winner is
    /// remembered, so that a network that blocks UDP costs one race, not
    /// one per connection.
    async fn open(&self) -> Result<Arc<Connection>, GatewayError> {
        let mut order = self.spec.protocols.clone();
        let remembered = *self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((p, at)) = remembered {
            if at.elapsed() < REMEMBER {
                order.retain(|q| *q != p);
                order.insert(0, p);
            }
        }
        let first = order.first().copied().ok_or(GatewayError::Saturated)?;
        let open = |p: GatewayProtocol| {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            Connection::open(&self.spec, p, &self.endpoints, id, &self.metrics)
        };
        let Some(second) = order.get(1).copied() else {
            return open(first).await;
        };
        let a = open(first);
        tokio::pin!(a);
        let delay = tokio::time::sleep(HEAD_START);
        tokio::pin!(delay);
        let mut b = None;
        let mut a_err = None;
        let mut b_err = None;
        let won = loop {
            tokio::select! {
                r = &mut a, if a_err.is_none() => match r {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::info!(protocol = first.as_str(), error = %e, "gateway connection attempt failed");
                        a_err = Some(e);
                        if b.is_none() {
                            b = Some(Box::pin(open(second)));
                        }
                    }
                },
                _ = &mut delay, if b.is_none() => b = Some(Box::pin(open(second))),
                r = async { match b.as_mut() { Some(f) => f.await, None => std::future::pending().await } }, if b.is_some() && b_err.is_none() => match r {
                    Ok(c) => break c,
                    Err(e) => b_err = Some(e),
                },
            }
            if let (Some(_), Some(_)) = (&a_err, &b_err) {
                return Err(a_err.unwrap_or(GatewayError::Saturated));
            }
        };
        *self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((won.protocol(), Instant::now()));
        Ok(won)
    }

    /// Another stream on the connection of `lease`, if it has room.
    pub fn lease_same(&self, lease: &Lease, kind: &'static str) -> Option<Lease> {
        let conn = Arc::clone(lease.connection());
        (conn.is_usable() && conn.try_acquire()).then(|| self.leased(conn, kind))
    }

    fn try_take(&self, kind: &'static str) -> Result<Take, GatewayError> {
        let now = Instant::now();
        let mut st = self.lock();
        st.conns.retain(|c| !c.is_closed());
        let usable: Vec<&Arc<Connection>> = st.conns.iter().filter(|c| c.is_usable()).collect();
        let breaker_open = st.breaker.is_open(now);
        // Spread over `connections` before stacking streams on one.
        if usable.len() >= self.spec.connections || breaker_open {
            let mut by_load = usable.clone();
            by_load.sort_by_key(|c| c.active());
            for c in by_load {
                if c.try_acquire() {
                    return Ok(Take::Leased(self.leased(Arc::clone(c), kind)));
                }
            }
        }
        if breaker_open {
            return Err(GatewayError::CircuitOpen {
                retry_in: st.breaker.wait(now),
            });
        }
        Ok(Take::Open {
            usable: usable.len(),
        })
    }

    fn leased(&self, conn: Arc<Connection>, kind: &'static str) -> Lease {
        let gauge = self
            .metrics
            .gateway_streams_active
            .with_label_values(&[kind]);
        gauge.inc();
        Lease { conn, gauge }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A number in [0, 1) that differs between processes and calls.
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

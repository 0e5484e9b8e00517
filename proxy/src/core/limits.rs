//! Per-identity limits: how many tunnels one client may hold open, how many
//! of them may be CONNECT-UDP flows, and how fast it may open new ones
//! (a token bucket). A client is its verified identity, or its address when
//! anonymous.
//!
//! The counts live here, outside the configuration snapshot, so a reload
//! changes the limits without forgetting what is open. A [`Permit`] is held
//! by the tunnel it admitted and gives its place back when dropped, however
//! the tunnel ends.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::core::overload::Load;

pub use crate::config::client_limits::IdentityLimits;

/// Which limit refused a tunnel (the `limit` label of
/// `bauta_limit_rejections_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    Tunnels,
    NewPerSecond,
    UdpFlows,
    /// `[limits] max_udp_flows_per_connection` (counted by `overload`).
    ConnectionUdpFlows,
}

/// Who a limit counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    Identity(Arc<str>),
    Address(IpAddr),
}

/// The live counts of every client that has a tunnel open or a bucket
/// still refilling.
pub struct Limiter {
    clients: DashMap<Client, Arc<Counts>>,
    last_sweep: Mutex<Instant>,
}

#[derive(Debug)]
struct Counts {
    tunnels: AtomicU32,
    udp_flows: AtomicU32,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    /// Tokens per second (and the bucket's size), as last configured.
    rate: f64,
    at: Instant,
}

/// A tunnel's place in its client's counts, given back on drop. Empty when
/// no limit applies.
pub struct Permit {
    _held: Option<Held>,
    /// The tunnel's place in the process-wide counts (`core::overload`).
    _load: Option<Load>,
}

struct Held {
    limiter: Arc<Limiter>,
    client: Client,
    counts: Arc<Counts>,
    tunnel: bool,
    udp: bool,
}

/// How often entries of clients that went quiet are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

// === impl Exceeded ===

impl Exceeded {
    pub const ALL: [Exceeded; 4] = [
        Exceeded::Tunnels,
        Exceeded::NewPerSecond,
        Exceeded::UdpFlows,
        Exceeded::ConnectionUdpFlows,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Exceeded::Tunnels => "tunnels",
            Exceeded::NewPerSecond => "new_per_s",
            Exceeded::UdpFlows => "udp_flows",
            Exceeded::ConnectionUdpFlows => "udp_flows_per_connection",
        }
    }

    /// The `details` of the 429.
    pub fn details(self) -> &'static str {
        match self {
            Exceeded::Tunnels => "too many open tunnels for this client",
            Exceeded::NewPerSecond => "too many new tunnels per second for this client",
            Exceeded::UdpFlows => "too many open CONNECT-UDP flows for this client",
            Exceeded::ConnectionUdpFlows => "too many open CONNECT-UDP flows on this connection",
        }
    }
}

// === impl Permit ===

impl Permit {
    /// Also hold the tunnel's place in the process-wide counts.
    pub fn with_load(mut self, load: Load) -> Permit {
        self._load = Some(load);
        self
    }
}

// === impl Limiter ===

impl Limiter {
    pub fn new() -> Arc<Limiter> {
        Arc::new(Limiter {
            clients: DashMap::new(),
            last_sweep: Mutex::new(Instant::now()),
        })
    }

    /// Admit one more tunnel (`udp`: a CONNECT-UDP flow) for `client` under
    /// `limits`, or say which limit it would break. A refused tunnel counts
    /// nothing, except the token a rate check took.
    pub fn admit(
        self: &Arc<Self>,
        client: Client,
        limits: &IdentityLimits,
        udp: bool,
        now: Instant,
    ) -> Result<Permit, Exceeded> {
        if limits.is_unlimited() {
            return Ok(Permit {
                _held: None,
                _load: None,
            });
        }
        self.sweep(now);
        let counts = Arc::clone(
            self.clients
                .entry(client.clone())
                .or_insert_with(|| Arc::new(Counts::new(now)))
                .value(),
        );
        // Each count is taken first and given back (by `held`'s drop) if it
        // went over: two racing admissions never both get the last place.
        let mut held = Held {
            limiter: Arc::clone(self),
            client,
            counts,
            tunnel: false,
            udp: false,
        };
        held.tunnel = take(&held.counts.tunnels, limits.tunnels);
        if !held.tunnel {
            return Err(Exceeded::Tunnels);
        }
        if udp {
            held.udp = take(&held.counts.udp_flows, limits.udp_flows);
            if !held.udp {
                return Err(Exceeded::UdpFlows);
            }
        }
        if let Some(rate) = limits.new_per_s {
            if !held.counts.take_token(rate, now) {
                return Err(Exceeded::NewPerSecond);
            }
        }
        Ok(Permit {
            _held: Some(held),
            _load: None,
        })
    }

    /// Clients with an entry.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Drop the entries of clients with nothing open and a full bucket (a
    /// client whose bucket is still refilling keeps its entry, or closing
    /// its tunnels would hand it a fresh burst).
    fn sweep(&self, now: Instant) {
        {
            let mut last = self
                .last_sweep
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if now.saturating_duration_since(*last) < SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        self.clients.retain(|_, c| !c.idle(now));
    }

    fn release(&self, client: &Client, counts: &Arc<Counts>) {
        let now = Instant::now();
        self.clients
            .remove_if(client, |_, c| Arc::ptr_eq(c, counts) && c.idle(now));
    }
}

/// Add one to `count` unless that would pass `limit`.
fn take(count: &AtomicU32, limit: Option<u32>) -> bool {
    let n = count.fetch_add(1, Ordering::AcqRel);
    match limit {
        Some(limit) if n >= limit => {
            count.fetch_sub(1, Ordering::AcqRel);
            false
        }
        _ => true,
    }
}

// === impl Counts ===

impl Counts {
    fn new(now: Instant) -> Counts {
        Counts {
            tunnels: AtomicU32::new(0),
            udp_flows: AtomicU32::new(0),
            bucket: Mutex::new(Bucket {
                tokens: f64::INFINITY,
                rate: 0.0,
                at: now,
            }),
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refill at `rate` per second up to `rate` (one second of burst; a new
    /// client starts full), then take one token if there is one.
    fn take_token(&self, rate: u32, now: Instant) -> bool {
        let mut b = self.bucket();
        b.refill(f64::from(rate), now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Nothing open and nothing to remember.
    fn idle(&self, now: Instant) -> bool {
        if self.tunnels.load(Ordering::Acquire) != 0 || self.udp_flows.load(Ordering::Acquire) != 0
        {
            return false;
        }
        let mut b = self.bucket();
        let rate = b.rate;
        b.refill(rate, now);
        b.tokens >= b.rate
    }
}

impl Bucket {
    /// Time only moves forward here: a caller with an older `now` (admit
    /// and release race) neither refills nor rewinds the clock.
    fn refill(&mut self, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.rate = rate;
        self.at = self.at.max(now);
    }
}

// === impl Held ===

impl Drop for Held {
    fn drop(&mut self) {
        if self.udp {
            self.counts.udp_flows.fetch_sub(1, Ordering::AcqRel);
        }
        if self.tunnel {
            self.counts.tunnels.fetch_sub(1, Ordering::AcqRel);
        }
        self.limiter.release(&self.client, &self.counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(
        tunnels: Option<u32>,
        new_per_s: Option<u32>,
        udp_flows: Option<u32>,
    ) -> IdentityLimits {
        IdentityLimits {
            tunnels,
            new_per_s,
            udp_flows,
        }
    }

    fn alice() -> Client {
        Client::Identity("alice".into())
    }

    #[test]
    fn concurrent_tunnels_are_capped_and_given_back() {
        let l = Limiter::new();
        let lim = limits(Some(2), None, None);
        let now = Instant::now();
        let a = l.admit(alice(), &lim, false, now).expect("1st");
        let b = l.admit(alice(), &lim, false, now).expect("2nd");
        assert_eq!(
            l.admit(alice(), &lim, false, now).err(),
            Some(Exceeded::Tunnels)
        );
        // Another client has its own count.
        let bob = l
            .admit(Client::Identity("bob".into()), &lim, false, now)
            .expect("bob");
        drop(a);
        let c = l
            .admit(alice(), &lim, false, now)
            .expect("a place was given back");
        drop((b, c, bob));
        assert_eq!(l.clients(), 0, "nothing open, no rate: entries are gone");
    }

    #[test]
    fn udp_flows_count_inside_tunnels() {
        let l = Limiter::new();
        let lim = limits(Some(3), None, Some(1));
        let now = Instant::now();
        let flow = l.admit(alice(), &lim, true, now).expect("flow");
        assert_eq!(
            l.admit(alice(), &lim, true, now).err(),
            Some(Exceeded::UdpFlows)
        );
        // The refused flow gave its tunnel place back: two TCP tunnels fit.
        let t1 = l.admit(alice(), &lim, false, now).expect("tcp 1");
        let t2 = l.admit(alice(), &lim, false, now).expect("tcp 2");
        assert_eq!(
            l.admit(alice(), &lim, false, now).err(),
            Some(Exceeded::Tunnels)
        );
        drop(flow);
        let again = l.admit(alice(), &lim, true, now).expect("flow after close");
        drop((t1, t2, again));
        assert_eq!(l.clients(), 0);
    }

    #[test]
    fn the_rate_is_a_token_bucket_that_survives_closing() {
        let l = Limiter::new();
        let lim = limits(None, Some(2), None);
        let t0 = Instant::now();
        // A burst of one second's worth, then refused…
        drop(l.admit(alice(), &lim, false, t0).expect("1"));
        drop(l.admit(alice(), &lim, false, t0).expect("2"));
        assert_eq!(
            l.admit(alice(), &lim, false, t0).err(),
            Some(Exceeded::NewPerSecond)
        );
        // … although nothing is open: closing does not refill.
        assert_eq!(l.clients(), 1, "the empty bucket is remembered");
        // 0.6 s later one token (1.2) is back, not two.
        let t1 = t0 + Duration::from_millis(600);
        drop(l.admit(alice(), &lim, false, t1).expect("refilled one"));
        assert_eq!(
            l.admit(alice(), &lim, false, t1).err(),
            Some(Exceeded::NewPerSecond)
        );
        // Anonymous clients are counted by address.
        let addr = Client::Address("192.0.2.7".parse().expect("ip"));
        drop(l.admit(addr, &lim, false, t1).expect("another client"));
        // Once full again and idle, the sweep forgets them.
        l.sweep(t1 + Duration::from_secs(60));
        assert_eq!(l.clients(), 0);
    }

    #[test]
    fn unlimited_counts_nothing() {
        let l = Limiter::new();
        let permits: Vec<Permit> = (0..100)
            .map(|_| {
                l.admit(alice(), &IdentityLimits::default(), true, Instant::now())
                    .expect("ok")
            })
            .collect();
        assert_eq!(l.clients(), 0);
        drop(permits);
    }

    #[test]
    fn racing_admissions_never_pass_the_limit() {
        let l = Limiter::new();
        let lim = limits(Some(8), None, None);
        let admitted = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        if let Ok(p) = l.admit(alice(), &lim, false, Instant::now()) {
                            admitted.lock().expect("lock").push(p);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.lock().expect("lock").len(), 8);
    }
}

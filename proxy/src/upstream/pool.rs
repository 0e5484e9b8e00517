//! Keep-alive pool of upstream HTTP/1.1 connections, shared by forwarding
//! and by reverse proxying to HTTP/1.1 upstreams.
//!
//! Pooled connections are keyed by target and remember the address they were
//! opened to; a request reuses one only if that address is among the addresses
//! the policy allowed for *this* request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hyper::client::conn::http1::SendRequest;

use crate::body::Body;
use crate::upstream::dial::Authorized;
use crate::wire::target::Target;

struct Idle {
    sender: SendRequest<Body>,
    peer: SocketAddr,
    since: Instant,
}

/// Idle upstream connections by target, oldest first: a checkout takes the
/// newest (the warmest, and O(1) however many are parked), and the oldest
/// age out at the front.
pub struct UpstreamPool {
    idle: DashMap<Target, VecDeque<Idle>>,
    max_idle_per_target: usize,
    idle_timeout: Duration,
}

// === impl UpstreamPool ===

impl UpstreamPool {
    pub fn new(max_idle_per_target: usize, idle_timeout: Duration) -> UpstreamPool {
        UpstreamPool {
            idle: DashMap::new(),
            max_idle_per_target,
            idle_timeout,
        }
    }

    /// A ready connection to `target` opened to one of `allowed`, if any.
    pub(crate) fn checkout(
        &self,
        target: &Target,
        allowed: &Authorized,
    ) -> Option<(SendRequest<Body>, SocketAddr)> {
        let mut entry = self.idle.get_mut(target)?;
        let now = Instant::now();
        // Connections this request may not use (another address, busy):
        // rare, and put back as they were.
        let mut passed = Vec::new();
        let found = loop {
            let Some(c) = entry.pop_back() else {
                break None;
            };
            if now.duration_since(c.since) >= self.idle_timeout {
                // Parked in order: everything older is stale too.
                entry.clear();
                break None;
            }
            if c.sender.is_closed() {
                continue;
            }
            if c.sender.is_ready() && allowed.addrs.contains(&c.peer.ip()) {
                break Some(c);
            }
            passed.push(c);
        };
        entry.extend(passed.into_iter().rev());
        found.map(|c| (c.sender, c.peer))
    }

    pub(crate) fn checkin(&self, target: Target, sender: SendRequest<Body>, peer: SocketAddr) {
        if sender.is_closed() || self.max_idle_per_target == 0 {
            return;
        }
        let mut entry = self.idle.entry(target).or_default();
        let now = Instant::now();
        while entry.front().is_some_and(|c| {
            c.sender.is_closed() || now.duration_since(c.since) >= self.idle_timeout
        }) {
            entry.pop_front();
        }
        if entry.len() >= self.max_idle_per_target {
            return;
        }
        entry.push_back(Idle {
            sender,
            peer,
            since: now,
        });
    }

    /// Connections currently parked (for tests and diagnostics).
    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|e| e.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauta_policy::{Decision, Reason, Verdict};
    use hyper_util::rt::TokioIo;
    use std::net::IpAddr;

    /// A ready HTTP/1.1 sender over an in-memory stream; its peer end is
    /// returned so that the connection stays open.
    async fn sender() -> (SendRequest<Body>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        // Ready once the connection task has run.
        let mut sender = sender;
        std::future::poll_fn(|cx| sender.poll_ready(cx))
            .await
            .expect("ready");
        (sender, theirs)
    }

    fn target() -> Target {
        Target::parse_authority("origin.test:80", None).expect("target")
    }

    fn allowed(ips: &[&str]) -> Authorized {
        Authorized {
            addrs: ips
                .iter()
                .map(|s| s.parse::<IpAddr>().expect("ip"))
                .collect(),
            decision: Decision {
                verdict: Verdict::Allow,
                rule: None,
                reason: Reason::RuleAllow,
            },
        }
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), 80)
    }

    /// Park a connection to each of `ips`, in order; their peer ends.
    async fn park(pool: &UpstreamPool, ips: &[&str]) -> Vec<tokio::io::DuplexStream> {
        let mut ends = Vec::new();
        for ip in ips {
            let (s, end) = sender().await;
            ends.push(end);
            pool.checkin(target(), s, peer(ip));
        }
        ends
    }

    #[tokio::test]
    async fn checkout_takes_the_newest_usable_and_keeps_the_rest_in_order() {
        let pool = UpstreamPool::new(8, Duration::from_secs(60));
        let _ends = park(&pool, &["192.0.2.1", "192.0.2.2", "192.0.2.3"]).await;
        // The newest (…3) is not allowed for this request: passed over.
        let (_, got) = pool
            .checkout(&target(), &allowed(&["192.0.2.1", "192.0.2.2"]))
            .expect("a connection");
        assert_eq!(got, peer("192.0.2.2"));
        assert_eq!(pool.idle_count(), 2);
        let (_, got) = pool
            .checkout(&target(), &allowed(&["192.0.2.3"]))
            .expect("the passed-over one is still there");
        assert_eq!(got, peer("192.0.2.3"));
        let (_, got) = pool
            .checkout(&target(), &allowed(&["192.0.2.1"]))
            .expect("the oldest");
        assert_eq!(got, peer("192.0.2.1"));
        assert!(pool.checkout(&target(), &allowed(&["192.0.2.1"])).is_none());
    }

    #[tokio::test]
    async fn closed_and_stale_connections_are_never_handed_out() {
        let pool = UpstreamPool::new(8, Duration::from_millis(500));
        let (s, end) = sender().await;
        pool.checkin(target(), s, peer("192.0.2.1"));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (s, _end2) = sender().await;
        pool.checkin(target(), s, peer("192.0.2.2"));
        // Checking in aged the stale one out at the front.
        assert_eq!(pool.idle_count(), 1);
        drop(end);
        // A closed one is skipped (the peer went away).
        let (s, end3) = sender().await;
        pool.checkin(target(), s, peer("192.0.2.3"));
        drop(end3);
        let mut closed = false;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if pool
                .idle
                .get(&target())
                .is_some_and(|e| e.back().is_some_and(|c| c.sender.is_closed()))
            {
                closed = true;
                break;
            }
        }
        assert!(closed, "the dropped peer's connection closes");
        let (_, got) = pool
            .checkout(&target(), &allowed(&["192.0.2.2", "192.0.2.3"]))
            .expect("the open one");
        assert_eq!(got, peer("192.0.2.2"));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (s, _end4) = sender().await;
        pool.checkin(target(), s, peer("192.0.2.4"));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            pool.checkout(&target(), &allowed(&["192.0.2.4"])).is_none(),
            "stale: not handed out"
        );
        assert_eq!(pool.idle_count(), 0, "and everything older went with it");
    }

    #[tokio::test]
    async fn a_full_target_parks_no_more() {
        let pool = UpstreamPool::new(2, Duration::from_secs(60));
        let _ends = park(&pool, &["192.0.2.1", "192.0.2.2", "192.0.2.3"]).await;
        assert_eq!(pool.idle_count(), 2);
    }
}

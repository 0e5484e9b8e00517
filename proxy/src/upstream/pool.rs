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

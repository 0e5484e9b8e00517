//! The overload manager: process-wide limits that shed new work first.
//! A new tunnel, CONNECT-UDP flow, forwarded or reverse-proxied request is
//! refused with a 503 while the process is over a watermark; work already
//! admitted runs on. Watermarks: tunnels and UDP flows at once (`[limits]
//! max_tunnels`, `max_udp_flows`, lowered at start to the tunnels' share of
//! the open-file limit), and resident memory (`memory_watermark_mib`, by
//! default 90% of the container's cgroup memory limit), sampled by a
//! background task. The per-connection CONNECT-UDP cap
//! (`max_udp_flows_per_connection`) is counted here too.
//!
//! Like `limits`, the counts live outside the configuration snapshot: a
//! reload changes the watermarks, never what is open.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Limits;
use crate::ops::process;

/// Which watermark shed a request: the `reason` label of
/// `bauta_overload_shed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    Memory,
    Tunnels,
    UdpFlows,
}

impl Shed {
    pub const ALL: [Shed; 3] = [Shed::Memory, Shed::Tunnels, Shed::UdpFlows];

    pub fn as_str(self) -> &'static str {
        match self {
            Shed::Memory => "memory",
            Shed::Tunnels => "tunnels",
            Shed::UdpFlows => "udp_flows",
        }
    }

    /// The `details` of the 503.
    pub fn details(self) -> &'static str {
        match self {
            Shed::Memory => "overloaded: memory above the watermark; try again later",
            Shed::Tunnels => "overloaded: the proxy holds its maximum of tunnels",
            Shed::UdpFlows => "overloaded: the proxy holds its maximum of CONNECT-UDP flows",
        }
    }
}

/// A refusal from [`Overload::admit`]: the process (503) or the
/// connection's own CONNECT-UDP cap (429).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Shed(Shed),
    ConnectionUdpFlows,
}

/// How often resident memory is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The process-wide counts and the memory state.
pub struct Overload {
    tunnels: AtomicUsize,
    udp_flows: AtomicUsize,
    over_memory: AtomicBool,
    /// The tunnels' share of the open-file limit (`None`: unknown).
    fd_share: Option<usize>,
    /// The cgroup memory limit read at start (`None`: none).
    cgroup_memory: Option<u64>,
}

/// A tunnel's place in the process-wide counts (and, for a UDP flow, in its
/// connection's), given back on drop.
pub struct Load {
    overload: Arc<Overload>,
    udp: Option<Arc<AtomicUsize>>,
}

// === impl Overload ===

impl Overload {
    /// Reads the open-file and cgroup memory limits once.
    pub fn new() -> Arc<Overload> {
        Arc::new(Overload::with(
            process::open_file_limit(),
            process::cgroup_memory_limit(),
        ))
    }

    fn with(fd_limit: Option<usize>, cgroup_memory: Option<u64>) -> Overload {
        Overload {
            tunnels: AtomicUsize::new(0),
            udp_flows: AtomicUsize::new(0),
            over_memory: AtomicBool::new(false),
            fd_share: fd_limit.map(process::fd_share),
            cgroup_memory,
        }
    }

    /// `max_tunnels`, lowered to the tunnels' share of the open-file limit.
    pub fn effective_max_tunnels(&self, limits: &Limits) -> usize {
        self.fd_share
            .map_or(limits.max_tunnels, |cap| limits.max_tunnels.min(cap))
    }

    /// The resident-memory watermark in bytes: configured, else 90% of the
    /// cgroup limit, else none.
    pub fn memory_watermark(&self, limits: &Limits) -> Option<u64> {
        limits
            .memory_watermark
            .or_else(|| self.cgroup_memory.map(|m| m / 10 * 9))
    }

    /// Compare resident memory with the watermark; returns whether the
    /// process is over it now.
    pub fn sample(&self, limits: &Limits, resident: Option<u64>) -> bool {
        let over = match (self.memory_watermark(limits), resident) {
            (Some(mark), Some(rss)) => rss >= mark,
            _ => false,
        };
        self.over_memory.store(over, Ordering::Relaxed);
        over
    }

    /// May a forwarded or reverse-proxied request start now?
    pub fn check_request(&self) -> Result<(), Shed> {
        if self.over_memory.load(Ordering::Relaxed) {
            return Err(Shed::Memory);
        }
        Ok(())
    }

    /// A place for one more tunnel; `udp`: a CONNECT-UDP flow on the
    /// connection whose flows are counted in it.
    pub fn admit(
        self: &Arc<Self>,
        limits: &Limits,
        udp: Option<&Arc<AtomicUsize>>,
    ) -> Result<Load, Refusal> {
        self.check_request().map_err(Refusal::Shed)?;
        if let Some(conn) = udp {
            if !take(conn, limits.max_udp_flows_per_connection) {
                return Err(Refusal::ConnectionUdpFlows);
            }
            if !take(&self.udp_flows, limits.max_udp_flows) {
                conn.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::Shed(Shed::UdpFlows));
            }
        }
        if !take(&self.tunnels, self.effective_max_tunnels(limits)) {
            if let Some(conn) = udp {
                conn.fetch_sub(1, Ordering::AcqRel);
                self.udp_flows.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(Refusal::Shed(Shed::Tunnels));
        }
        Ok(Load {
            overload: Arc::clone(self),
            udp: udp.cloned(),
        })
    }

    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Acquire)
    }

    pub fn udp_flows(&self) -> usize {
        self.udp_flows.load(Ordering::Acquire)
    }
}

/// Add one to `n` unless it is at `max`.
fn take(n: &AtomicUsize, max: usize) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        (v < max).then_some(v + 1)
    })
    .is_ok()
}

impl Drop for Load {
    fn drop(&mut self) {
        self.overload.tunnels.fetch_sub(1, Ordering::AcqRel);
        if let Some(conn) = &self.udp {
            conn.fetch_sub(1, Ordering::AcqRel);
            self.overload.udp_flows.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(tunnels: usize, udp: usize, per_conn: usize) -> Limits {
        Limits {
            max_tunnels: tunnels,
            max_udp_flows: udp,
            max_udp_flows_per_connection: per_conn,
            ..Limits::default()
        }
    }

    #[test]
    fn tunnels_are_capped_and_places_come_back() {
        let o = Arc::new(Overload::with(None, None));
        let l = limits(2, 10, 10);
        let a = o.admit(&l, None).expect("first");
        let _b = o.admit(&l, None).expect("second");
        assert_eq!(o.admit(&l, None).err(), Some(Refusal::Shed(Shed::Tunnels)));
        drop(a);
        assert_eq!(o.tunnels(), 1);
        let _c = o.admit(&l, None).expect("a place came back");
    }

    #[test]
    fn udp_flows_are_capped_per_connection_and_in_total() {
        let o = Arc::new(Overload::with(None, None));
        let l = limits(100, 3, 2);
        let one = Arc::new(AtomicUsize::new(0));
        let two = Arc::new(AtomicUsize::new(0));
        let f1 = o.admit(&l, Some(&one)).expect("flow 1");
        let _f2 = o.admit(&l, Some(&one)).expect("flow 2");
        assert_eq!(
            o.admit(&l, Some(&one)).err(),
            Some(Refusal::ConnectionUdpFlows)
        );
        let _f3 = o.admit(&l, Some(&two)).expect("another connection");
        assert_eq!(
            o.admit(&l, Some(&two)).err(),
            Some(Refusal::Shed(Shed::UdpFlows))
        );
        // Refusals took nothing.
        assert_eq!((o.udp_flows(), o.tunnels()), (3, 3));
        assert_eq!(two.load(Ordering::Acquire), 1);
        drop(f1);
        assert_eq!(one.load(Ordering::Acquire), 1);
        let _f4 = o.admit(&l, Some(&two)).expect("a place came back");
    }

    #[test]
    fn memory_over_the_watermark_sheds_new_work() {
        let o = Arc::new(Overload::with(None, Some(1000)));
        let l = Limits::default();
        assert_eq!(o.memory_watermark(&l), Some(900), "90% of the cgroup limit");
        assert!(!o.sample(&l, Some(899)));
        let held = o.admit(&l, None).expect("under the watermark");
        assert!(o.sample(&l, Some(900)));
        assert_eq!(o.check_request(), Err(Shed::Memory));
        assert_eq!(o.admit(&l, None).err(), Some(Refusal::Shed(Shed::Memory)));
        drop(held);
        assert!(!o.sample(&l, Some(10)));
        assert_eq!(o.check_request(), Ok(()));
        let configured = Limits {
            memory_watermark: Some(5),
            ..Limits::default()
        };
        assert_eq!(o.memory_watermark(&configured), Some(5));
        let none = Overload::with(None, None);
        assert!(
            !none.sample(&l, Some(u64::MAX)),
            "no watermark, no shedding"
        );
    }

    #[test]
    fn open_file_limit_lowers_max_tunnels() {
        let o = Overload::with(Some(1024), None);
        assert_eq!(o.effective_max_tunnels(&limits(10_000, 1, 1)), 461);
        assert_eq!(o.effective_max_tunnels(&limits(100, 1, 1)), 100);
    }
}

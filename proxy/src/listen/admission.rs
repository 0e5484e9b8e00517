//! Connection caps: `[limits] max_connections` (all listeners, TCP and QUIC
//! together) and `max_connections_per_client` (one source address). A
//! connection holds a [`Slot`] for as long as it is served; over a cap the
//! listener closes (TCP) or refuses (QUIC) it at once. The total cap is kept
//! within half of what the process's open-file limit leaves after a reserve
//! (`ops::process::fd_share`; tunnels get the other half), so that the admin
//! endpoint, DNS and upstream connections still get file descriptors when
//! clients hold the data listeners full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::Limits;

/// Which cap refused a connection: the `reason` label of
/// `bauta_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerClient,
}

impl Refused {
    pub const ALL: [Refused; 2] = [Refused::Total, Refused::PerClient];

    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerClient => "per_client",
        }
    }
}

/// The connections open now; shared by every listener.
pub struct Admission {
    counts: Mutex<Counts>,
    /// The most client connections the open-file limit leaves room for
    /// (`None`: the limit is unknown).
    fd_cap: Option<usize>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One admitted connection; its place is given back on drop.
pub struct Slot {
    admission: Arc<Admission>,
    client: IpAddr,
}

// === impl Admission ===

impl Admission {
    /// Reads the open-file limit once.
    pub fn new() -> Arc<Admission> {
        Arc::new(Admission::with_fd_limit(
            crate::ops::process::open_file_limit(),
        ))
    }

    fn with_fd_limit(fd_limit: Option<usize>) -> Admission {
        Admission {
            counts: Mutex::new(Counts::default()),
            fd_cap: fd_limit.map(crate::ops::process::fd_share),
        }
    }

    /// `max_connections`, lowered to what the open-file limit allows.
    pub fn effective_max(&self, limits: &Limits) -> usize {
        match self.fd_cap {
            Some(cap) => limits.max_connections.min(cap),
            None => limits.max_connections,
        }
    }

    /// Log once (at start) when the open-file limit lowers `max_connections`.
    pub fn log_if_lowered(&self, limits: &Limits) {
        let effective = self.effective_max(limits);
        if effective < limits.max_connections {
            tracing::info!(
                max_connections = limits.max_connections,
                effective,
                "limits.max_connections is above what the open-file limit (RLIMIT_NOFILE) \
                 leaves after a reserve for admin, DNS and upstreams; using the lower cap \
                 (raise `ulimit -n` to allow more)"
            );
        }
    }

    /// Take a place for a connection from `client`, or say which cap is full.
    pub fn admit(self: &Arc<Self>, client: IpAddr, limits: &Limits) -> Result<Slot, Refused> {
        let client = canonical(client);
        let max = self.effective_max(limits);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= max {
            return Err(Refused::Total);
        }
        let mine = counts.per_client.entry(client).or_insert(0);
        if *mine >= limits.max_connections_per_client {
            return Err(Refused::PerClient);
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot {
            admission: Arc::clone(self),
            client,
        })
    }

    /// Connections holding a place now.
    pub fn count(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

/// An IPv4 client seen through an IPv4-mapped IPv6 address is the same client.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_client: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_client: per_client,
            ..Limits::default()
        }
    }

    #[test]
    fn caps_total_and_per_client_and_gives_places_back() {
        let a = Arc::new(Admission::with_fd_limit(None));
        let l = limits(3, 2);
        let one: IpAddr = [127, 0, 0, 1].into();
        let two: IpAddr = [127, 0, 0, 2].into();
        let s1 = a.admit(one, &l).expect("first");
        let _s2 = a.admit(one, &l).expect("second");
        assert_eq!(a.admit(one, &l).err(), Some(Refused::PerClient));
        let _s3 = a.admit(two, &l).expect("another client");
        assert_eq!(a.admit(two, &l).err(), Some(Refused::Total));
        drop(s1);
        assert_eq!(a.count(), 2);
        let _s4 = a.admit(one, &l).expect("a place was given back");
        assert_eq!(a.count(), 3);
    }

    #[test]
    fn mapped_ipv4_is_the_same_client() {
        let a = Arc::new(Admission::with_fd_limit(None));
        let l = limits(10, 1);
        let v4: IpAddr = [192, 0, 2, 1].into();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("address");
        let _s = a.admit(v4, &l).expect("first");
        assert_eq!(a.admit(mapped, &l).err(), Some(Refused::PerClient));
    }

    #[test]
    fn open_file_limit_lowers_the_total_cap() {
        let a = Admission::with_fd_limit(Some(1024));
        // Reserve max(64, 102) = 102; half of the other 922.
        assert_eq!(a.effective_max(&limits(10_000, 512)), 461);
        assert_eq!(a.effective_max(&limits(100, 512)), 100);
        let small = Admission::with_fd_limit(Some(100));
        assert_eq!(small.effective_max(&limits(10_000, 512)), 18);
    }
}

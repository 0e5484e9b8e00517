//! QUIC admission before the handshake, against floods of Initials (whose
//! source addresses cost nothing to forge): the handshakes in progress on a
//! listener (accepted, not yet established) are counted; from
//! `[limits] quic_retry_after_handshakes` on, a client whose address is not
//! validated gets a stateless Retry (RFC 9000 §8.1.2) and must come back
//! with its token, from `quic_max_handshakes` on every new attempt is
//! dropped unanswered (the cheapest answer). The connection caps
//! (`listen::admission`) come after, for the attempts that go on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::IntGauge;

use crate::config::Limits;

/// The `reason` label of `bauta_connections_refused_total` for an attempt
/// dropped over `limits.quic_max_handshakes`.
pub const HANDSHAKES_FULL: &str = "quic_handshakes";

/// What to do with a new QUIC connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on (connection caps, then the handshake).
    Handshake,
    /// Answer with a Retry; no state is kept.
    Retry,
    /// Drop it unanswered.
    Ignore,
}

/// The decision for an attempt when `in_progress` handshakes are under way;
/// `validated`: its address is proven (a Retry token it brought back).
pub fn decide(in_progress: usize, validated: bool, limits: &Limits) -> Decision {
    if in_progress >= limits.quic_max_handshakes {
        Decision::Ignore
    } else if !validated && in_progress >= limits.quic_retry_after_handshakes {
        Decision::Retry
    } else {
        Decision::Handshake
    }
}

/// The handshakes in progress on one listener, mirrored in
/// `bauta_quic_handshakes{listener}`.
pub struct Handshakes {
    count: AtomicUsize,
    gauge: IntGauge,
}

/// One handshake in progress; counted until dropped.
pub struct InProgress(Arc<Handshakes>);

impl Handshakes {
    pub fn new(gauge: IntGauge) -> Arc<Handshakes> {
        gauge.set(0);
        Arc::new(Handshakes {
            count: AtomicUsize::new(0),
            gauge,
        })
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Count one more until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InProgress {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        InProgress(Arc::clone(self))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(retry: usize, max: usize) -> Limits {
        Limits {
            quic_retry_after_handshakes: retry,
            quic_max_handshakes: max,
            ..Limits::default()
        }
    }

    #[test]
    fn retry_under_load_then_ignore_over_the_cap() {
        let l = limits(2, 4);
        for validated in [false, true] {
            assert_eq!(decide(0, validated, &l), Decision::Handshake);
            assert_eq!(decide(1, validated, &l), Decision::Handshake);
            assert_eq!(decide(4, validated, &l), Decision::Ignore);
            assert_eq!(decide(100, validated, &l), Decision::Ignore);
        }
        assert_eq!(decide(2, false, &l), Decision::Retry);
        assert_eq!(decide(3, false, &l), Decision::Retry);
        assert_eq!(decide(2, true, &l), Decision::Handshake);
        assert_eq!(decide(3, true, &l), Decision::Handshake);
        // 0: always Retry (until validated).
        assert_eq!(decide(0, false, &limits(0, 4)), Decision::Retry);
        assert_eq!(decide(0, true, &limits(0, 4)), Decision::Handshake);
        // Equal to the cap: never Retry.
        assert_eq!(decide(3, false, &limits(4, 4)), Decision::Handshake);
    }

    #[test]
    fn counts_while_held() {
        let gauge = IntGauge::new("h", "h").expect("gauge");
        let h = Handshakes::new(gauge.clone());
        let a = h.start();
        let b = h.start();
        assert_eq!((h.count(), gauge.get()), (2, 2));
        drop(a);
        assert_eq!((h.count(), gauge.get()), (1, 1));
        drop(b);
        assert_eq!((h.count(), gauge.get()), (0, 0));
    }
}

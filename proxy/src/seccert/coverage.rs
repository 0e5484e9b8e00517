//! Which origins one client connection may be served directly for: those
//! its handshake certificate covers, and those a SERVER_CERTIFICATE has been
//! sent for on it (spec `secondary-certs.md` §8). Origins are named by their
//! authority (`host:port`), which stays the same across reloads.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::wire::target::Target;

#[derive(Debug, Default)]
pub struct Coverage {
    /// Origins the listener's own certificate covers.
    handshake: Arc<HashSet<Target>>,
    /// Origins whose certificate was sent on this connection.
    sent: Mutex<HashSet<Target>>,
}

// === impl Coverage ===

impl Coverage {
    pub fn new(handshake: Arc<HashSet<Target>>) -> Coverage {
        Coverage {
            handshake,
            sent: Mutex::new(HashSet::new()),
        }
    }

    pub fn covers(&self, origin: &Target) -> bool {
        self.handshake.contains(origin) || self.was_sent(origin)
    }

    /// Record a sent certificate. Returns false if it had been sent before.
    pub fn mark_sent(&self, origin: &Target) -> bool {
        match self.sent.lock() {
            Ok(mut s) => s.insert(origin.clone()),
            Err(_) => false,
        }
    }

    pub fn was_sent(&self, origin: &Target) -> bool {
        self.sent
            .lock()
            .map(|s| s.contains(origin))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str) -> Target {
        Target::parse_authority(host, Some(443)).expect("authority")
    }

    #[test]
    fn handshake_and_sent_both_cover() {
        let c = Coverage::new(Arc::new([t("a.test")].into_iter().collect()));
        assert!(c.covers(&t("a.test")));
        assert!(!c.covers(&t("b.test")));
        assert!(!c.covers(&t("a.test:8443")));
        assert!(c.mark_sent(&t("b.test")));
        assert!(!c.mark_sent(&t("b.test")));
        assert!(c.covers(&t("b.test")));
        assert!(c.was_sent(&t("b.test")));
        assert!(!c.was_sent(&t("a.test")));
    }
}

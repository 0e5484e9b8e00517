//! Which configured origins one client connection may be served directly
//! for: those its handshake certificate covers, and those a
//! SERVER_CERTIFICATE has been sent for on it (spec `secondary-certs.md` §8).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct Coverage {
    /// Origins the listener's own certificate covers.
    handshake: Arc<HashSet<usize>>,
    /// Origins whose certificate was sent on this connection.
    sent: Mutex<HashSet<usize>>,
}

impl Coverage {
    pub fn new(handshake: Arc<HashSet<usize>>) -> Coverage {
        Coverage {
            handshake,
            sent: Mutex::new(HashSet::new()),
        }
    }

    pub fn covers(&self, origin: usize) -> bool {
        self.handshake.contains(&origin)
            || self
                .sent
                .lock()
                .map(|s| s.contains(&origin))
                .unwrap_or(false)
    }

    /// Record a sent certificate. Returns false if it had been sent before.
    pub fn mark_sent(&self, origin: usize) -> bool {
        match self.sent.lock() {
            Ok(mut s) => s.insert(origin),
            Err(_) => false,
        }
    }

    pub fn was_sent(&self, origin: usize) -> bool {
        self.sent
            .lock()
            .map(|s| s.contains(&origin))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_and_sent_both_cover() {
        let c = Coverage::new(Arc::new([1usize].into_iter().collect()));
        assert!(c.covers(1));
        assert!(!c.covers(2));
        assert!(c.mark_sent(2));
        assert!(!c.mark_sent(2));
        assert!(c.covers(2));
        assert!(c.was_sent(2));
        assert!(!c.was_sent(1));
    }
}

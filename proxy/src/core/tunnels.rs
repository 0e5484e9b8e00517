//! Live tunnels, owned by the core: counted by guards (TCP and UDP alike,
//! whatever the front), so shutdown can wait for them, and the signal that
//! closes the tunnels still open when the grace period is over.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// Live tunnels, and the switch that ends them.
pub struct Tunnels {
    open: AtomicUsize,
    changed: Notify,
    abort: watch::Sender<bool>,
}

/// One live tunnel; dropping it closes the count.
pub struct TunnelGuard {
    tunnels: Arc<Tunnels>,
}

// === impl Tunnels ===

impl Tunnels {
    pub fn new() -> Arc<Tunnels> {
        Arc::new(Tunnels {
            open: AtomicUsize::new(0),
            changed: Notify::new(),
            abort: watch::channel(false).0,
        })
    }

    /// Count a tunnel as live until the guard is dropped.
    pub fn open(self: &Arc<Self>) -> TunnelGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        TunnelGuard {
            tunnels: Arc::clone(self),
        }
    }

    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Wait until no tunnel is live, at most until `deadline`. Returns false
    /// when tunnels were still open at the deadline.
    pub async fn closed(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            // Created before the check: a guard dropped in between still wakes us.
            let changed = self.changed.notified();
            if self.count() == 0 {
                return true;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => return self.count() == 0,
            }
        }
    }

    /// Resolves once open tunnels must close (end of the shutdown grace period).
    pub fn aborted(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.abort.subscribe();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }

    /// Close every open tunnel now.
    pub fn abort(&self) {
        self.abort.send_replace(true);
    }
}

// === impl TunnelGuard ===

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.tunnels.open.fetch_sub(1, Ordering::AcqRel);
        self.tunnels.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn guards_count_and_closed_wakes() {
        let t = Tunnels::new();
        let a = t.open();
        let b = t.open();
        assert_eq!(t.count(), 2);
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        assert!(!t.closed(soon).await, "two tunnels are open");
        drop(a);
        let t2 = Arc::clone(&t);
        let waiter = tokio::spawn(async move {
            t2.closed(tokio::time::Instant::now() + Duration::from_secs(10))
                .await
        });
        drop(b);
        assert!(
            waiter.await.expect("join"),
            "woken when the last guard drops"
        );
        assert_eq!(t.count(), 0);
    }

    #[tokio::test]
    async fn abort_resolves_waiters() {
        let t = Tunnels::new();
        let aborted = t.aborted();
        t.abort();
        tokio::time::timeout(Duration::from_secs(5), aborted)
            .await
            .expect("aborted resolves after abort()");
    }
}

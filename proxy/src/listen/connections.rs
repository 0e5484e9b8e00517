//! Every served HTTP/1.1 and HTTP/2 connection, so shutdown can signal them
//! (HTTP/2 GOAWAY, HTTP/1.1 close after the current response) and wait for
//! them. HTTP/3 connections drain through their own GOAWAY.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};

/// Tracks every served connection so shutdown can wait for them. Clones
/// share one set of connections.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<GracefulShutdown>,
}

// === impl Connections ===

impl Connections {
    pub fn new() -> Connections {
        Connections {
            inner: Arc::new(GracefulShutdown::new()),
        }
    }

    pub fn watcher(&self) -> Watcher {
        self.inner.watcher()
    }

    /// Signal every connection and wait for them, at most `grace`. Call after
    /// the accept loops (which hold clones) have ended. Returns false when the
    /// grace period ran out first.
    pub async fn drain(self, grace: Duration) -> bool {
        match Arc::try_unwrap(self.inner) {
            Ok(g) => tokio::time::timeout(grace, g.shutdown()).await.is_ok(),
            Err(_) => false,
        }
    }
}

impl Default for Connections {
    fn default() -> Self {
        Self::new()
    }
}

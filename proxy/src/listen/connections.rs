//! Every served HTTP/1.1 and HTTP/2 connection, so shutdown can signal them
//! (HTTP/2 GOAWAY, HTTP/1.1 close after the current response) and wait for
//! them. HTTP/3 connections drain through their own GOAWAY.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Tracks every served connection so shutdown can wait for them. Clones
/// share one set of connections.
#[derive(Clone)]
pub struct Connections {
    stop: Arc<watch::Sender<bool>>,
}

/// Held by one connection while it is served: tells it when to stop, and
/// its drop tells [`Connections::drain`] it is done.
pub struct Watcher {
    stop: watch::Receiver<bool>,
}

// === impl Connections ===

impl Connections {
    pub fn new() -> Connections {
        Connections {
            stop: Arc::new(watch::Sender::new(false)),
        }
    }

    pub fn watcher(&self) -> Watcher {
        Watcher {
            stop: self.stop.subscribe(),
        }
    }

    /// Signal every connection and wait for them, at most `grace`. Call after
    /// the accept loops have ended. Returns false when the grace period ran
    /// out first.
    pub async fn drain(self, grace: Duration) -> bool {
        self.stop.send_replace(true);
        tokio::time::timeout(grace, self.stop.closed())
            .await
            .is_ok()
    }
}

impl Default for Connections {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Watcher ===

impl Watcher {
    /// Resolves when the server shuts down.
    pub async fn stopping(&mut self) {
        // An error means the server is gone: stop as well.
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

//! State shared by every connection: the current configuration snapshot,
//! metrics, the dialer and the upstream pool.

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::upstream::dial::Dialer;
use crate::upstream::forward::UpstreamPool;
use crate::upstream::reverse::ReversePool;

pub struct Shared {
    config: RwLock<Arc<Config>>,
    pub metrics: Arc<Metrics>,
    pub dialer: Dialer,
    pub pool: UpstreamPool,
    pub reverse_pool: ReversePool,
    /// Flipped to true when the shutdown grace period is over: open tunnels close.
    abort: tokio::sync::watch::Sender<bool>,
}

// === impl Shared ===

impl Shared {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> std::io::Result<Shared> {
        let dialer = Dialer::new(
            &config.dns_servers,
            config.limits.clone(),
            Arc::clone(&metrics),
        )?;
        let pool = UpstreamPool::new(
            config.limits.max_upstream_idle_per_host,
            config.limits.upstream_idle_timeout,
        );
        let reverse_pool = ReversePool::new(
            config.limits.max_upstream_idle_per_host,
            config.limits.upstream_idle_timeout,
        );
        Ok(Shared {
            config: RwLock::new(config),
            metrics,
            dialer,
            pool,
            reverse_pool,
            abort: tokio::sync::watch::channel(false).0,
        })
    }

    /// Resolves once open tunnels must close (end of the shutdown grace period).
    pub fn aborted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.abort.subscribe();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }

    /// Close every open tunnel now.
    pub fn abort_tunnels(&self) {
        self.abort.send_replace(true);
    }

    /// Make `config` the one in force; requests already running keep theirs.
    pub fn replace_config(&self, config: Arc<Config>) {
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// The configuration in force now. Requests hold their snapshot to the end.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => Arc::clone(&c),
            // A writer panicked mid-swap; the stored Arc is still whole.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

//! What every connection shares: the configuration in force (an immutable
//! snapshot, swapped whole on reload), metrics, the dialer, the upstream
//! pools, and the live-tunnel tracker.

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::core::limits::Limiter;
use crate::core::tunnels::Tunnels;
use crate::ops::metrics::Metrics;
use crate::upstream::dial::Dialer;
use crate::upstream::pool::UpstreamPool;
use crate::upstream::reverse::ReversePool;

pub struct Services {
    config: RwLock<Arc<Config>>,
    pub metrics: Arc<Metrics>,
    pub dialer: Dialer,
    pub pool: UpstreamPool,
    pub reverse_pool: ReversePool,
    pub tunnels: Arc<Tunnels>,
    /// What each client holds, against `[limits] per_identity`.
    pub limiter: Arc<Limiter>,
}

// === impl Services ===

impl Services {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> std::io::Result<Services> {
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
        Ok(Services {
            config: RwLock::new(config),
            metrics,
            dialer,
            pool,
            reverse_pool,
            tunnels: Tunnels::new(),
            limiter: Limiter::new(),
        })
    }

    /// Make `config` the one in force for new connections and requests.
    pub fn replace_config(&self, config: Arc<Config>) {
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// The snapshot in force now. A connection takes one when it starts, a
    /// request when it arrives, and keeps it to the end: one request never
    /// mixes two configurations.
    pub fn snapshot(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => Arc::clone(&c),
            // A writer panicked mid-swap; the stored Arc is still whole.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

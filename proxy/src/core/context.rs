//! What every connection shares: the configuration in force (an immutable
//! snapshot, swapped whole on reload), metrics, the dialer, the upstream
//! pools, and the live-tunnel tracker.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::core::limits::Limiter;
use crate::core::overload::Overload;
use crate::core::tunnels::Tunnels;
use crate::ops::metrics::Metrics;
use crate::upstream::dial::Dialer;
use crate::upstream::pool::UpstreamPool;
use crate::upstream::reverse::ReversePool;

pub struct Services {
    /// Swapped whole on reload; read without a lock on every request.
    config: ArcSwap<Config>,
    pub metrics: Arc<Metrics>,
    pub dialer: Dialer,
    pub pool: UpstreamPool,
    pub reverse_pool: ReversePool,
    pub tunnels: Arc<Tunnels>,
    /// What each client holds, against `[limits] per_identity`.
    pub limiter: Arc<Limiter>,
    /// Process-wide watermarks: shed new work first.
    pub overload: Arc<Overload>,
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
            config: ArcSwap::new(config),
            metrics,
            dialer,
            pool,
            reverse_pool,
            tunnels: Tunnels::new(),
            limiter: Limiter::new(),
            overload: Overload::new(),
        })
    }

    /// Make `config` the one in force for new connections and requests.
    pub fn replace_config(&self, config: Arc<Config>) {
        self.config.store(config);
    }

    /// The snapshot in force now. A connection takes one when it starts, a
    /// request when it arrives, and keeps it to the end: one request never
    /// mixes two configurations.
    pub fn snapshot(&self) -> Arc<Config> {
        self.config.load_full()
    }
}

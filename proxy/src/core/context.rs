//! What every connection shares: the configuration in force (an immutable
//! snapshot, swapped whole on reload), metrics, the dialer, the upstream
//! pools, and the live-tunnel tracker.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::Config;
use crate::core::limits::Limiter;
use crate::core::overload::Overload;
use crate::core::tunnels::Tunnels;
use crate::gateway::Gateway;
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
    /// The `[gateway]` in force and its connections; replaced only when a
    /// reload changes the section (open connections then drain).
    gateway: ArcSwapOption<Gateway>,
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
        let gateway = ArcSwapOption::new(
            config
                .gateway
                .as_ref()
                .map(|spec| Arc::new(Gateway::new(Arc::clone(spec), Arc::clone(&metrics)))),
        );
        Ok(Services {
            gateway,
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
        let current = self.gateway.load();
        let same = match (current.as_deref(), config.gateway.as_deref()) {
            (Some(gw), Some(spec)) => **gw.spec() == *spec,
            (None, None) => true,
            _ => false,
        };
        if !same {
            if let Some(spec) = &config.gateway {
                tracing::info!(gateway = %spec.url, "new [gateway]; open connections drain");
            }
            self.gateway.store(
                config
                    .gateway
                    .as_ref()
                    .map(|s| Arc::new(Gateway::new(Arc::clone(s), Arc::clone(&self.metrics)))),
            );
        }
        self.config.store(config);
    }

    /// The gateway this proxy chains to, if `[gateway]` is configured.
    pub fn gateway(&self) -> Option<Arc<Gateway>> {
        self.gateway.load_full()
    }

    /// The snapshot in force now. A connection takes one when it starts, a
    /// request when it arrives, and keeps it to the end: one request never
    /// mixes two configurations.
    pub fn snapshot(&self) -> Arc<Config> {
        self.config.load_full()
    }
}

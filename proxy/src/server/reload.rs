//! Configuration reload on SIGHUP: re-read the file, compile it, and swap it
//! in — or keep the running configuration and say why. Listener sockets stay
//! bound; certificates (listeners' and origins'), policy, origins, limits and
//! templates take effect for new connections and requests. Changing a
//! listener's address or protocols, or `[dns]`, needs a restart.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::core::context::Services;

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("listener {0:?}: {1} changed; that needs a restart")]
    NeedsRestart(String, &'static str),
}

/// Load `path` and swap it in. Both listener kinds read their listener's
/// TLS config from the snapshot in force for each new connection, so the
/// swap alone moves TCP and QUIC to the new certificates.
pub fn reload(path: &std::path::Path, services: &Services) -> Result<(), ReloadError> {
    let new = Config::load(path)?;
    let old = services.snapshot();
    for l in &old.listeners {
        let Some(n) = new.listener(&l.name) else {
            return Err(ReloadError::NeedsRestart(l.name.to_string(), "presence"));
        };
        if n.addr != l.addr {
            return Err(ReloadError::NeedsRestart(
                l.name.to_string(),
                "listen address",
            ));
        }
        if (n.http1, n.h2, n.h3, n.tls.is_some()) != (l.http1, l.h2, l.h3, l.tls.is_some()) {
            return Err(ReloadError::NeedsRestart(
                l.name.to_string(),
                "protocols or TLS",
            ));
        }
    }
    if new.listeners.len() != old.listeners.len() {
        return Err(ReloadError::NeedsRestart("(new)".into(), "listener set"));
    }
    super::prefill::prefill(&services.metrics, &new);
    services.replace_config(Arc::new(new));
    Ok(())
}

/// Reload on every SIGHUP until the process ends.
#[cfg(unix)]
pub fn spawn_on_sighup(path: PathBuf, services: Arc<Services>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload disabled");
                return;
            }
        };
        while hup.recv().await.is_some() {
            match reload(&path, &services) {
                Ok(()) => {
                    let m = &services.metrics;
                    m.config_reloads.with_label_values(&["ok"]).inc();
                    m.policy_reloads.with_label_values(&["ok"]).inc();
                    m.policy_generation.inc();
                    tracing::info!(config = %path.display(), "configuration reloaded");
                }
                Err(e) => {
                    let m = &services.metrics;
                    m.config_reloads.with_label_values(&["error"]).inc();
                    m.policy_reloads.with_label_values(&["error"]).inc();
                    tracing::error!(error = %e, "configuration not reloaded; keeping the running one");
                }
            }
        }
    });
}

#[cfg(not(unix))]
pub fn spawn_on_sighup(_: PathBuf, _: Arc<Services>) {}

//! Configuration reload (on SIGHUP, or a file change: `file_watch`): re-read
//! the file, compile it, and swap it in — or keep the running configuration
//! and say why. Listener sockets stay
//! bound; certificates (listeners' and origins'), policy, origins, limits and
//! templates take effect for new connections and requests. Changing a
//! listener's address or protocols, `[runtime]` or `[dns]`, needs a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::core::context::Services;

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("listener {0:?}: {1} changed; that needs a restart")]
    NeedsRestart(String, &'static str),
    #[error("[runtime] worker_threads changed; that needs a restart")]
    WorkersChanged,
}

/// Load `path` and swap it in. Both listener kinds read their listener's
/// TLS config from the snapshot in force for each new connection, so the
/// swap alone moves TCP and QUIC to the new certificates.
pub fn reload(path: &Path, services: &Services) -> Result<(), ReloadError> {
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
    if new.worker_threads != old.worker_threads {
        return Err(ReloadError::WorkersChanged);
    }
    super::prefill::prefill(&services.metrics, &new);
    crate::config::certificates::warn_expiring(&new, crate::config::certificates::unix_now());
    services.replace_config(Arc::new(new));
    Ok(())
}

/// What asked for a reload (the `trigger` field of its log line).
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    Sighup,
    FileChange,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Sighup => "sighup",
            Trigger::FileChange => "file_change",
        }
    }
}

/// What each file held (through symlinks) when it was last read for a
/// reload; a missing file has no digest.
type Fingerprints = BTreeMap<PathBuf, Option<[u8; 32]>>;

/// Reloads the configuration file, on SIGHUP or when one of its files
/// changes, one at a time, and remembers the content each attempt read, so
/// the file watcher does not reload again what a SIGHUP has just loaded (or
/// retry a broken file that has not changed since).
pub struct Reloader {
    path: PathBuf,
    services: Arc<Services>,
    attempted: Mutex<Fingerprints>,
}

impl Reloader {
    pub fn new(path: PathBuf, services: Arc<Services>) -> Arc<Reloader> {
        let r = Reloader {
            path,
            services,
            attempted: Mutex::new(BTreeMap::new()),
        };
        *r.attempted() = fingerprints(&r.files());
        Arc::new(r)
    }

    /// The configuration file and the files the configuration in force was
    /// read from.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = self.services.snapshot().files();
        files.push(self.path.clone());
        files.sort();
        files.dedup();
        files
    }

    /// Whether a file differs from what the last attempt read.
    pub fn changed(&self) -> bool {
        fingerprints(&self.files()) != *self.attempted()
    }

    /// Reload, count the outcome (`bauta_config_reloads_total`,
    /// `bauta_policy_reloads_total`, `bauta_policy_generation`) and log one
    /// line.
    pub fn reload(&self, trigger: Trigger) {
        let mut attempted = self.attempted();
        // Read before loading: a change made during the load is seen as
        // a change next time.
        *attempted = fingerprints(&self.files());
        let m = &self.services.metrics;
        match reload(&self.path, &self.services) {
            Ok(()) => {
                // The new configuration may name other files (a new policy
                // file) and no longer name some: keep exactly its set, or a
                // dropped file would count as "changed" on every event.
                let before = std::mem::take(&mut *attempted);
                *attempted = self
                    .files()
                    .into_iter()
                    .map(|f| {
                        let digest = before.get(&f).copied().unwrap_or_else(|| fingerprint(&f));
                        (f, digest)
                    })
                    .collect();
                m.config_reloads.with_label_values(&["ok"]).inc();
                m.policy_reloads.with_label_values(&["ok"]).inc();
                m.policy_generation.inc();
                tracing::info!(
                    config = %self.path.display(),
                    trigger = trigger.as_str(),
                    generation = m.policy_generation.get(),
                    "configuration reloaded"
                );
            }
            Err(e) => {
                m.config_reloads.with_label_values(&["error"]).inc();
                m.policy_reloads.with_label_values(&["error"]).inc();
                // One line: file, line and key are all in `e`.
                tracing::error!(
                    error = %e,
                    trigger = trigger.as_str(),
                    "configuration not reloaded; keeping the running one"
                );
            }
        }
    }

    fn attempted(&self) -> std::sync::MutexGuard<'_, Fingerprints> {
        self.attempted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn fingerprints(files: &[PathBuf]) -> Fingerprints {
    files.iter().map(|f| (f.clone(), fingerprint(f))).collect()
}

fn fingerprint(file: &Path) -> Option<[u8; 32]> {
    std::fs::read(file).ok().map(|b| Sha256::digest(&b).into())
}

/// Reload on every SIGHUP until the process ends.
#[cfg(unix)]
pub fn spawn_on_sighup(reloader: Arc<Reloader>) {
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
            // Loading reads files and compiles: off the async threads.
            let r = Arc::clone(&reloader);
            let _ = tokio::task::spawn_blocking(move || r.reload(Trigger::Sighup)).await;
        }
    });
}

#[cfg(not(unix))]
pub fn spawn_on_sighup(_: Arc<Reloader>) {}

/// The embedded default has no file to reload; SIGHUP (logrotate,
/// `systemctl reload`) must still not end the process, so it is caught and
/// answered with one log line.
#[cfg(unix)]
pub fn spawn_sighup_without_file() {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!(
                trigger = Trigger::Sighup.as_str(),
                "no configuration file (the embedded default): nothing to reload"
            );
        }
    });
}

#[cfg(not(unix))]
pub fn spawn_sighup_without_file() {}

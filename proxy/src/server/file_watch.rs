//! Reload when a file the configuration was read from changes (the file
//! itself, `[policy] file`, `[auth] basic_file`, certificates, keys and CAs),
//! without a SIGHUP.
//!
//! The watch is on each file's directory, not the file: editors and
//! `bauta passwd` replace a file by renaming a new one over it, and a
//! Kubernetes ConfigMap volume swaps a `..data` symlink to a new directory —
//! in both cases the watched inode never changes. Any event in those
//! directories starts a short quiet period (events come in bursts); then
//! the files' contents are compared with what the last reload read (a
//! SIGHUP's included), and only a real change reloads. After a reload the set of watched files is taken
//! again from the new configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::reload::{Reloader, Trigger};

/// Events closer together than this are one change.
const QUIET: Duration = Duration::from_millis(200);

/// Watch the files of the configuration in force; reload on change. Runs
/// until the process ends.
pub fn spawn_on_change(reloader: Arc<Reloader>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration files; reload on SIGHUP only");
            return;
        }
    };
    tokio::spawn(async move {
        let mut dirs = BTreeSet::new();
        watch_dirs(&mut watcher, &reloader.files(), &mut dirs);
        while rx.recv().await.is_some() {
            // Let the burst end: every further event restarts the wait.
            while let Ok(Some(())) = tokio::time::timeout(QUIET, rx.recv()).await {}
            // A file caught between its truncation and its write (a writer
            // that does not rename a complete file into place, descheduled
            // for longer than the quiet period) is empty: wait for the
            // write's own event rather than load half a change.
            if reloader.files().iter().any(|f| is_empty_file(f)) {
                tracing::debug!("a watched file is empty; waiting for it to be written");
                continue;
            }
            let r = Arc::clone(&reloader);
            let reloaded = tokio::task::spawn_blocking(move || {
                // Unchanged since the last attempt (a SIGHUP's, or ours):
                // nothing to do, not even a broken file to refuse again.
                let changed = r.changed();
                if changed {
                    r.reload(Trigger::FileChange);
                }
                changed
            })
            .await
            .unwrap_or(false);
            if reloaded {
                // The new configuration may name files elsewhere.
                watch_dirs(&mut watcher, &reloader.files(), &mut dirs);
            }
        }
        drop(watcher);
    });
}

/// A regular file with no bytes (a missing file is the reload's to report).
fn is_empty_file(f: &Path) -> bool {
    std::fs::metadata(f).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// Watch the directory of every file not yet covered.
fn watch_dirs(watcher: &mut RecommendedWatcher, files: &[PathBuf], dirs: &mut BTreeSet<PathBuf>) {
    for f in files {
        let dir = f
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if dirs.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                dirs.insert(dir);
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; changes there need a SIGHUP")
            }
        }
    }
}

//! `[runtime]`: how many threads serve connections. Fixed at start (a
//! reload that changes it is refused: it needs a restart).
//!
//! ```toml
//! [runtime]
//! worker_threads = 1   # default: one per core the process may use
//! ```
//!
//! `bauta run --worker-threads N` overrides it.

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};

/// More than this is a typo, not a machine.
pub const MAX_WORKER_THREADS: usize = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuntimeSection {
    worker_threads: Option<Spanned<i64>>,
}

/// `None`: one worker per available core (tokio's default).
pub(super) fn compile_runtime(
    r: &RuntimeSection,
    src: &Source<'_>,
) -> Result<Option<usize>, ConfigError> {
    let Some(n) = &r.worker_threads else {
        return Ok(None);
    };
    usize::try_from(*n.get_ref())
        .ok()
        .filter(|n| (1..=MAX_WORKER_THREADS).contains(n))
        .map(Some)
        .ok_or_else(|| {
            src.err(
                n.span(),
                "runtime.worker_threads",
                format!("must be between 1 and {MAX_WORKER_THREADS}"),
            )
        })
}

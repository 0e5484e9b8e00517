//! Secret files (private keys, the Basic credentials file) should be
//! readable by this process only. A file others can read still loads — a
//! refusal would take a running proxy down at the next reload — but it is
//! named in a warning at every load.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Warn (once per load) when `path` is readable by more than it needs.
pub fn warn_if_exposed(path: &Path, what: &str) {
    let Ok(meta) = std::fs::metadata(path) else {
        return; // the read that follows reports the error
    };
    if let Some(why) = exposure(meta.mode(), meta.uid(), process_uid()) {
        tracing::warn!(
            file = %path.display(),
            mode = format_args!("{:04o}", meta.mode() & 0o7777),
            "{what} is {why}; `chmod 600` it (or 640 with a group only this service is in)"
        );
    }
}

/// Why a file with permission bits `mode`, owned by `owner`, is too open
/// for a process running as `me`: readable by every user; or readable by
/// its group although this process owns it (then the group bit serves
/// nobody but others in that group). A group-readable file this process
/// does not own is the usual Kubernetes Secret mount (owner root, group
/// `fsGroup`, mode 0440) and is accepted.
pub fn exposure(mode: u32, owner: u32, me: Option<u32>) -> Option<&'static str> {
    if mode & 0o004 != 0 {
        return Some("readable by every user");
    }
    if mode & 0o040 != 0 && me == Some(owner) {
        return Some("readable by its group");
    }
    None
}

/// The effective uid: the owner of `/proc/self` on Linux (no `unsafe`
/// `geteuid` call needed). `None` where there is no procfs.
fn process_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::exposure;

    #[test]
    fn world_readable_is_always_exposed() {
        assert!(exposure(0o100644, 1000, Some(1000)).is_some());
        assert!(exposure(0o100604, 0, Some(1000)).is_some());
        assert!(exposure(0o100444, 0, None).is_some());
    }

    #[test]
    fn group_readable_only_matters_for_our_own_file() {
        assert_eq!(
            exposure(0o100640, 1000, Some(1000)),
            Some("readable by its group")
        );
        // A Kubernetes Secret: root-owned, group fsGroup, 0440.
        assert_eq!(exposure(0o100440, 0, Some(65532)), None);
    }

    #[test]
    fn owner_only_is_fine() {
        assert_eq!(exposure(0o100600, 1000, Some(1000)), None);
        assert_eq!(exposure(0o100400, 0, Some(0)), None);
    }
}

//! Facts about this process that std cannot ask the kernel for without
//! `unsafe`: read from procfs and the cgroup filesystem (Linux). Each is
//! `None` where the file is absent or says "unlimited".

/// File descriptors kept for what is neither a client connection nor a
/// tunnel's upstream socket (admin, DNS, pooled upstreams, files): at least
/// this many…
const FD_RESERVE_MIN: usize = 64;
/// …or this fraction (1/N) of the limit, whichever is more.
const FD_RESERVE_DIVISOR: usize = 10;

/// The share of an open-file limit of `limit` that client connections may
/// take, and (the other share) tunnels and UDP flows: half of what the
/// reserve leaves each. Together they cannot starve the reserve.
pub fn fd_share(limit: usize) -> usize {
    let reserve = FD_RESERVE_MIN.max(limit / FD_RESERVE_DIVISOR);
    (limit.saturating_sub(reserve) / 2).max(1)
}

/// The soft RLIMIT_NOFILE, from `/proc/self/limits`.
pub fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&text)
}

/// The soft limit on the `Max open files` line of `/proc/self/limits`.
pub fn parse_open_file_limit(text: &str) -> Option<usize> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// Resident memory in bytes (`VmRSS` of `/proc/self/status`).
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&text)
}

fn parse_vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`): what the OOM killer enforces in a container.
pub fn cgroup_memory_limit() -> Option<u64> {
    for path in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        if let Ok(text) = std::fs::read_to_string(path) {
            return parse_memory_limit(&text);
        }
    }
    None
}

fn parse_memory_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    // cgroup v1 writes "no limit" as a huge page-aligned number.
    (v < 1 << 60).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_self_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             63449                63449                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_file_limit(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_file_limit(unlimited), None);
        assert_eq!(parse_open_file_limit(""), None);
    }

    #[test]
    fn fd_share_halves_what_the_reserve_leaves() {
        assert_eq!(fd_share(1024), 461);
        assert_eq!(fd_share(100), 18);
        assert_eq!(fd_share(10), 1);
        assert_eq!(fd_share(1 << 20), 471_859);
    }

    #[test]
    fn parses_vm_rss_and_memory_limits() {
        assert_eq!(
            parse_vm_rss("Name:\tbauta\nVmRSS:\t   11736 kB\n"),
            Some(11736 * 1024)
        );
        assert_eq!(parse_vm_rss("Name:\tbauta\n"), None);
        assert_eq!(parse_memory_limit("536870912\n"), Some(536_870_912));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}

//! curl as an independent client: one bounded runner for every test that
//! drives it. curl must be installed (`tests/run.sh` installs it): the
//! tests fail, not skip, without it.

use std::process::Output;
use std::time::Duration;

/// Run curl with `args`, no proxy settings from the environment, within
/// 10 s (curl's own limit) and 15 s (ours).
pub async fn curl(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("curl");
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(["--max-time", "10", "--silent", "--show-error"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("curl {args:?} did not finish in 15 s"));
    out.unwrap_or_else(|e| panic!("cannot run curl (it is required for these tests): {e}"))
}

/// curl's output, after checking that it succeeded.
pub fn curl_body(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: curl exited {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

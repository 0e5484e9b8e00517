//! `[runtime] worker_threads` and `bauta run --worker-threads N`: the
//! runtime has that many workers (tokio's own count, logged at start), the
//! flag wins over the file, bad values are refused with file, line and key
//! (or by the command line), and a reload that changes it is refused.

use std::time::Duration;

use bauta_tests::*;

fn config(workers: Option<&str>) -> String {
    let runtime = workers
        .map(|n| format!("[runtime]\nworker_threads = {n}\n\n"))
        .unwrap_or_default();
    format!(
        "{runtime}[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
         [reload]\nwatch_files = false\n\n\
         [limits]\nshutdown_grace_s = 1\n"
    )
}

/// The worker count the process logged at start.
async fn logged_workers(p: &BautaProcess) -> usize {
    let line = p
        .wait_stderr_line("runtime started", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no `runtime started` line:\n{}", p.stderr()));
    let at = line
        .find("worker_threads=")
        .map(|i| i + "worker_threads=".len());
    at.and_then(|at| line[at..].split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no worker count in {line:?}"))
}

#[tokio::test]
async fn worker_threads_from_the_file_and_the_flag() {
    bounded_for(Duration::from_secs(60), async {
        let dir = TempDir::new("workers");
        let path = dir.write("bauta.toml", &config(Some("1")));
        let p = BautaProcess::start(&path).await;
        assert_eq!(logged_workers(&p).await, 1);
        // It serves.
        let (head, _, _) =
            raw_request(p.listener("plain"), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.status >= 400, "{head:?}");

        // A reload that changes it is refused; the process keeps serving.
        std::fs::write(&path, config(Some("2"))).expect("rewrite");
        p.signal("HUP");
        let refused = p
            .wait_stderr_line(
                "worker_threads changed; that needs a restart",
                Duration::from_secs(5),
            )
            .await
            .is_some();
        assert!(refused, "reload not refused:\n{}", p.stderr());
        let (head, _, _) =
            raw_request(p.listener("plain"), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.status >= 400, "{head:?}");
        drop(p);

        // The flag wins over the file.
        let path = dir.write("flag.toml", &config(Some("1")));
        let p = BautaProcess::start_with_args(&path, &["--worker-threads", "3"]).await;
        assert_eq!(logged_workers(&p).await, 3);
    })
    .await
}

#[test]
fn bad_worker_counts_are_refused() {
    let dir = TempDir::new("workers-bad");
    for bad in ["0", "-1", "5000"] {
        let path = dir.write("bad.toml", &config(Some(bad)));
        let out = run_with_timeout(
            std::process::Command::new(bauta_bin())
                .arg("check")
                .arg("--config")
                .arg(&path),
            Duration::from_secs(20),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains("bad.toml:2: runtime.worker_threads: must be between 1 and 1024"),
            "{bad}: {err}"
        );
    }
    let path = dir.write("ok.toml", &config(None));
    let out = run_with_timeout(
        std::process::Command::new(bauta_bin())
            .args(["run", "--worker-threads", "0", "--config"])
            .arg(&path),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2), "the flag is checked too");
}

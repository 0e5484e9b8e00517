//! Diagnostics on stderr carry no ANSI colour codes when stderr is not a
//! terminal (a pipe here, a file or a log collector in production), even
//! without `NO_COLOR`: every log event is one plain line.

use std::process::Stdio;
use std::time::Duration;

use bauta_tests::*;
use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn diagnostics_to_a_pipe_are_plain_text() {
    let bin = bauta_bin(); // built before the clock starts
    bounded(async {
        let dir = TempDir::new("log-plain");
        let config = dir.write(
            "bauta.toml",
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n",
        );
        let mut child = tokio::process::Command::new(&bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn bauta");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut seen = Vec::new();
        // Read up to the admin endpoint's start line (INFO events before it).
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
        {
            let done = line.contains("admin");
            seen.push(line);
            if done {
                break;
            }
        }
        let _ = child.kill().await;
        assert!(
            seen.iter().any(|l| l.contains("INFO")),
            "start-up lines were logged: {seen:#?}"
        );
        for l in &seen {
            assert!(!l.contains('\u{1b}'), "no colour codes in {l:?}");
        }
    })
    .await
}

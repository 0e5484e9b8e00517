//! Diagnostics on stderr carry no ANSI colour codes when stderr is not a
//! terminal (a pipe here, a file or a log collector in production), even
//! without `NO_COLOR`: every log event is one plain line.

use std::path::Path;
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
        // Up to the admin endpoint's start line (INFO events before it).
        let seen = stderr_until(&bin, &config, "admin").await;
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

/// `[log] format = "json"`: every diagnostics line on stderr is one JSON
/// object (level, message, fields), the load's own warnings included; an
/// unknown format is a configuration error at its key.
#[tokio::test]
async fn log_format_json_writes_one_json_object_per_event() {
    let bin = bauta_bin(); // built before the clock starts
    bounded(async {
        let certs = make_certs();
        // A key others can read: the load warns, in JSON too.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&certs.key_pem, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        let config = certs.dir.write(
            "json.toml",
            &format!(
                "[log]\nformat = \"json\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
                 [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\
                 tls_cert = '{}'\ntls_key = '{}'\n",
                certs.cert_pem.display(),
                certs.key_pem.display()
            ),
        );
        let events: Vec<serde_json::Value> = stderr_until(&bin, &config, "admin endpoint")
            .await
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON object: {line:?}: {e}"))
            })
            .collect();
        assert!(
            events.iter().any(|v| v["level"] == "WARN"
                && v["message"].as_str().is_some_and(|m| m.contains("readable by every user"))),
            "the key-file warning as JSON: {events:?}"
        );
        assert!(
            events.iter().any(|v| v["listener"] == "secure"),
            "fields are JSON fields: {events:?}"
        );

        let bad = certs.dir.write(
            "bad.toml",
            "[log]\nformat = \"yaml\"\n\n[[listener]]\nname = \"plain\"\n\
             listen = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n",
        );
        let out = run_with_timeout(
            std::process::Command::new(&bin).args(["check", "--config"]).arg(&bad),
            Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("bad.toml:2: log.format"), "{stderr}");
    })
    .await
}

/// Run `bauta run --config CONFIG` with stderr piped (`RUST_LOG=info`, no
/// `NO_COLOR`) and return its stderr lines up to the first that contains
/// `until` (20 s at most per line); the process is killed after.
async fn stderr_until(bin: &Path, config: &Path, until: &str) -> Vec<String> {
    let mut child = tokio::process::Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(config)
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
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        let done = line.contains(until);
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill().await;
    seen
}

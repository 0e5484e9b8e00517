//! `bauta probe` exits 3 when an authenticator is invalid (against an
//! independent pyOpenSSL server, `tests/peers/bad_seccert_server.py`), and
//! the JSON access log: one object per line on stdout with the documented
//! fields, for a closed tunnel, a forward and a denied request.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use bauta_tests::masque::python;
use bauta_tests::readme_env::BinProxy;
use bauta_tests::seccert_env::{KeyKind, Pki};
use bauta_tests::{
    bauta_bin, bounded_for, connect_h1, raw_request, read_body, EchoServer, Origin, ECHO_EOF_REPLY,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const LIMIT: Duration = Duration::from_secs(40);

// === bauta probe: exit 3 on an invalid authenticator ===

/// Start the bad server, run `bauta probe --json` against it; (exit code, report).
async fn probe_against_server(broken: bool) -> (Option<i32>, Value) {
    let pki = Pki::new();
    let origin = pki.origin("origin.test", KeyKind::EcdsaP256, "origin");
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/bad_seccert_server.py");
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(&script)
        .arg("--tls-cert")
        .arg(&pki.certs.cert_pem)
        .arg("--tls-key")
        .arg(&pki.certs.key_pem)
        .arg("--origin-chain")
        .arg(&origin.cert_pem)
        .arg("--origin-key")
        .arg(&origin.key_pem)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if broken {
        cmd.arg("--broken");
    }
    let mut server = cmd.spawn().expect("start bad_seccert_server.py");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .expect("server printed its port within 15 s")
        .expect("read server stdout")
        .expect("server printed a line");
    let port = serde_json::from_str::<Value>(&first).expect("port JSON")["port"]
        .as_u64()
        .expect("port");

    let mut probe = tokio::process::Command::new(bauta_bin());
    probe
        .args([
            "probe",
            &format!("https://127.0.0.1:{port}"),
            "--json",
            "--ca",
        ])
        .arg(&pki.certs.ca_pem)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), probe.output())
        .await
        .expect("bauta probe finished within 20 s")
        .expect("run bauta probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "bauta probe --json: {e}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let done = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("server finished")
        .expect("read server stdout")
        .expect("server summary line");
    let done: Value = serde_json::from_str(&done).expect("summary JSON");
    assert_eq!(
        done["sent"].as_u64(),
        Some(if broken { 2 } else { 1 }),
        "{done}"
    );
    let _ = server.wait().await;
    (out.status.code(), report)
}

#[tokio::test]
async fn probe_exits_3_when_an_authenticator_is_invalid() {
    bounded_for(Duration::from_secs(60), async {
        let (code, v) = probe_against_server(true).await;
        let certs = v["certificates"].as_array().expect("certificates");
        assert_eq!(certs.len(), 2, "{v:#}");
        assert_eq!(
            certs[0]["validated"],
            Value::Bool(true),
            "first is valid: {v:#}"
        );
        assert_eq!(
            certs[1]["validated"],
            Value::Bool(false),
            "the broken Finished does not validate: {v:#}"
        );
        assert!(
            certs[1]["validation_error"].is_string(),
            "the report says why: {v:#}"
        );
        assert_eq!(
            code,
            Some(3),
            "exit 3 if any authenticator is invalid: {v:#}"
        );
    })
    .await
}

/// Control: the same server sending only the valid authenticator → exit 0.
#[tokio::test]
async fn probe_exits_0_when_every_authenticator_is_valid() {
    bounded_for(Duration::from_secs(60), async {
        let (code, v) = probe_against_server(false).await;
        let certs = v["certificates"].as_array().expect("certificates");
        assert_eq!(certs.len(), 1, "{v:#}");
        assert_eq!(certs[0]["validated"], Value::Bool(true), "{v:#}");
        assert_eq!(v["setting_advertised"], Value::Bool(true), "{v:#}");
        assert_eq!(code, Some(0), "{v:#}");
    })
    .await
}

// === the access log ===

const FIELDS: [&str; 18] = [
    "timestamp",
    "level",
    "listener",
    "client",
    "identity",
    "protocol",
    "method",
    "kind",
    "target",
    "verdict",
    "rule",
    "reason",
    "status",
    "outcome",
    "bytes_up",
    "bytes_down",
    "duration_ms",
    "via",
];

fn parse_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line is not one JSON object: {l:?}: {e}"));
            assert!(v.is_object(), "{l}");
            let keys: BTreeSet<&str> = v
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let want: BTreeSet<&str> = FIELDS.into_iter().collect();
            assert_eq!(keys, want, "exactly the documented fields: {l}");
            assert_eq!(v["level"], "INFO", "{l}");
            assert!(v["duration_ms"].is_u64(), "{l}");
            v
        })
        .collect()
}

#[tokio::test]
async fn access_log_is_one_json_object_per_request_on_stdout() {
    bounded_for(LIMIT, async {
        let echo = EchoServer::start().await;
        let origin = Origin::start().await;
        let config = "[proxy]\nname = \"bauta\"\n\n\
             [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
             [policy]\ndefault = \"deny\"\n\n\
             [[policy.rule]]\nname = \"lab\"\naction = \"allow\"\ncidrs = [\"127.0.0.0/8\"]\n";
        let proxy = BinProxy::start(config, &[], &["plain"], false).await;
        let plain = proxy.listener("plain");

        // 1. A tunnel, closed: 5 bytes up, 5 + "<eof>" down.
        let target = format!("127.0.0.1:{}", echo.port());
        let (head, mut s) = connect_h1(plain, &target).await;
        assert_eq!(head.status, 200, "{head:?}");
        let client = s.local_addr().expect("local addr").to_string();
        s.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.expect("echo");
        s.shutdown().await.expect("half-close");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("read to end");
        assert_eq!(rest, ECHO_EOF_REPLY);
        let lines = proxy.wait_stdout_lines(1, Duration::from_secs(5)).await;
        let v = &parse_lines(&lines)[0];
        assert_eq!(v["listener"], "plain", "{v}");
        assert_eq!(v["client"], client.as_str(), "{v}");
        assert_eq!(v["identity"], "anonymous", "no client certificate: {v}");
        assert_eq!(v["protocol"], "http1", "{v}");
        assert_eq!(v["method"], "CONNECT", "{v}");
        assert_eq!(v["kind"], "connect", "{v}");
        assert_eq!(v["target"], target.as_str(), "{v}");
        assert_eq!(v["verdict"], "allow", "{v}");
        assert_eq!(v["rule"], "lab", "{v}");
        assert_eq!(v["status"], 200, "{v}");
        assert_eq!(v["outcome"], "closed", "{v}");
        assert_eq!(v["bytes_up"], 5, "{v}");
        assert_eq!(v["bytes_down"], 5 + ECHO_EOF_REPLY.len() as u64, "{v}");

        // 2. A forward with credentials in it; the log names none of them.
        let o = origin.addr;
        let req = format!(
            "GET http://{o}/logged HTTP/1.1\r\nHost: {o}\r\nAuthorization: Bearer s3cr3t-token\r\n\
             Proxy-Authorization: Basic cHJveHlzZWNyZXQ=\r\nCookie: session=topsecretcookie\r\n\r\n"
        );
        let (head, mut s, leftover) = raw_request(plain, req.as_bytes()).await;
        assert_eq!(head.status, 200, "{head:?}");
        let body = read_body(&mut s, &head, leftover).await;
        assert_eq!(body, b"origin: GET /logged\n");
        let lines = proxy.wait_stdout_lines(2, Duration::from_secs(5)).await;
        let v = &parse_lines(&lines)[1];
        assert_eq!(v["method"], "GET", "{v}");
        assert_eq!(v["kind"], "forward", "{v}");
        assert_eq!(v["target"], o.to_string().as_str(), "{v}");
        assert_eq!(v["verdict"], "allow", "{v}");
        assert_eq!(v["rule"], "lab", "{v}");
        assert_eq!(v["status"], 200, "{v}");
        assert_eq!(v["outcome"], "ok", "{v}");
        assert_eq!(v["bytes_up"], 0, "{v}");
        assert_eq!(v["bytes_down"], body.len() as u64, "{v}");

        // 3. Denied by the default.
        let (head, _s) = connect_h1(plain, "10.0.0.1:80").await;
        head.assert_error(403, "http_request_denied", "CONNECT 10.0.0.1:80");
        let lines = proxy.wait_stdout_lines(3, Duration::from_secs(5)).await;
        let v = &parse_lines(&lines)[2];
        assert_eq!(v["method"], "CONNECT", "{v}");
        assert_eq!(v["kind"], "connect", "{v}");
        assert_eq!(v["target"], "10.0.0.1:80", "{v}");
        assert_eq!(v["verdict"], "deny", "{v}");
        assert_eq!(v["rule"], "default", "{v}");
        assert_eq!(v["status"], 403, "{v}");
        assert_eq!(v["outcome"], "denied", "{v}");
        assert_eq!(v["bytes_up"], 0, "{v}");
        assert_eq!(v["bytes_down"], 0, "{v}");

        let all = proxy.stdout_lines();
        assert_eq!(
            all.len(),
            3,
            "one line per request or tunnel, nothing else: {all:#?}"
        );
        for secret in [
            "s3cr3t",
            "cHJveHlzZWNyZXQ",
            "topsecretcookie",
            "Authorization",
            "Cookie",
        ] {
            assert!(
                all.iter().all(|l| !l.contains(secret)),
                "{secret} leaked into the access log: {all:#?}"
            );
        }
        // Diagnostics are not on stdout: the "listening" lines went to stderr.
        assert!(
            proxy.stderr_lines().iter().any(|l| l.contains("listening")),
            "diagnostics on stderr"
        );
    })
    .await
}

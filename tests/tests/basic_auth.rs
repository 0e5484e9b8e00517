//! `Proxy-Authorization: Basic` against a credentials file (`[auth]
//! basic_file`) written by `bauta passwd`, through the real binary:
//!
//! * `bauta passwd FILE USER` takes the password from standard input (never
//!   from argv), adds and replaces entries, keeps other lines;
//! * on HTTP/1.1, HTTP/2 and HTTP/3, a missing, malformed, unknown or wrong
//!   credential gets 407 with `Proxy-Authenticate: Basic realm="…"` and
//!   `Proxy-Status`; a right one is the request's identity for the policy
//!   (alice allowed by her rule, bob refused by the default);
//! * curl (`--proxy-user`), an independent client, for CONNECT and for
//!   forwarding;
//! * the header never reaches the upstream, the credential never reaches a
//!   log, and `bauta_auth_failures_total{method,reason}` counts each kind;
//! * SIGHUP reloads the credentials file: a changed password applies.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bauta_tests::masque::{quic_client_config, udp_path, H3Client, UdpEcho};
use bauta_tests::*;
use http::{Method, Request};
use tokio::io::AsyncWriteExt;

const FAILURES: &str = "bauta_auth_failures_total";
const REALM: &str = "corp egress";

/// `bauta passwd FILE USER` with `password` on standard input.
fn passwd(file: &Path, user: &str, password: &str) -> std::process::Output {
    let mut child = Command::new(bauta_bin())
        .arg("passwd")
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bauta passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    child.wait_with_output().expect("bauta passwd")
}

fn passwd_ok(file: &Path, user: &str, password: &str) {
    let out = passwd(file, user, password);
    assert!(
        out.status.success(),
        "bauta passwd {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A proxy with Basic auth: "plain" (HTTP/1.1) and "secure" (HTTP/1.1,
/// HTTP/2, HTTP/3); alice may reach loopback, everyone else is denied.
struct Env {
    /// Holds the configuration and credentials files for the proxy's life.
    _dir: TempDir,
    users: PathBuf,
    certs: Certs,
    proxy: BautaProcess,
}

impl Env {
    async fn start() -> Env {
        let dir = TempDir::new("basic-auth");
        let users = dir.path().join("users.txt");
        passwd_ok(&users, "alice", "alice-pw");
        passwd_ok(&users, "bob", "bob-pw");
        let certs = make_certs();
        let config = format!(
            "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
             [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
             protocols = [\"http1\", \"h2\", \"h3\"]\ntls_cert = '{}'\ntls_key = '{}'\n\n\
             [limits]\nshutdown_grace_s = 1\n\n\
             [reload]\nwatch_files = false\n\n\
             [auth]\nbasic_file = \"users.txt\"\nrealm = \"{REALM}\"\n\n\
             [policy]\ndefault = \"deny\"\n\n\
             [[policy.rule]]\nname = \"alice\"\naction = \"allow\"\nidentities = [\"alice\"]\n\
             cidrs = [\"127.0.0.0/8\"]\n",
            certs.cert_pem.display(),
            certs.key_pem.display()
        );
        let path = dir.write("bauta.toml", &config);
        let proxy = BautaProcess::start(&path).await;
        Env {
            _dir: dir,
            users,
            certs,
            proxy,
        }
    }

    async fn failures(&self, reason: &str) -> f64 {
        metric_sample(
            &self.proxy.metrics().await,
            FAILURES,
            &[("method", "basic"), ("reason", reason)],
        )
        .unwrap_or(0.0)
    }

    /// HTTP/1.1 CONNECT on "plain" with these extra header lines.
    async fn h1_connect(&self, target: &str, extra: &str) -> (Head, tokio::net::TcpStream) {
        connect_h1_with(self.proxy.listener("plain"), target, extra).await
    }
}

fn assert_challenge(head: &Head, what: &str) {
    assert_eq!(head.status, 407, "{what}: {head:?}");
    assert_eq!(
        head.header("proxy-authenticate"),
        Some(format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"").as_str()),
        "{what}"
    );
    head.assert_error(407, "http_request_denied", what);
}

#[tokio::test]
async fn passwd_reads_stdin_and_adds_or_replaces() {
    bounded(async {
        let dir = TempDir::new("passwd");
        let file = dir.write("users.txt", "# the team\n");
        passwd_ok(&file, "alice", "first");
        passwd_ok(&file, "bob", "second");
        let before = std::fs::read_to_string(&file).expect("read");
        passwd_ok(&file, "alice", "third");
        let after = std::fs::read_to_string(&file).expect("read");
        let lines: Vec<&str> = after.lines().collect();
        assert_eq!(lines.len(), 3, "{after}");
        assert_eq!(lines[0], "# the team");
        assert!(lines[1].starts_with("alice:$argon2id$"), "{after}");
        assert!(lines[2].starts_with("bob:$argon2id$"), "{after}");
        assert_ne!(before.lines().nth(1), after.lines().nth(1), "alice replaced");
        assert_eq!(before.lines().nth(2), after.lines().nth(2), "bob kept");
        for pw in ["first", "second", "third"] {
            assert!(!after.contains(pw), "no password in the file");
        }
        // A password on the command line is not accepted; nor a bad user.
        let out = Command::new(bauta_bin())
            .args(["passwd"])
            .arg(&file)
            .args(["carol", "secret"])
            .stdin(Stdio::null())
            .output()
            .expect("bauta passwd");
        assert!(!out.status.success(), "a password in argv is refused");
        assert!(!passwd(&file, "car:ol", "x").status.success(), "':' in a user");
        assert!(!passwd(&file, "carol", "").status.success(), "empty password");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), after, "unchanged");
        // `bauta check` accepts a configuration naming the file.
        let cfg = dir.write(
            "bauta.toml",
            "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
             [auth]\nbasic_file = \"users.txt\"\n",
        );
        let out = Command::new(bauta_bin())
            .arg("check")
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("bauta check");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // A broken line is named by file and line.
        let broken = dir.write("broken.txt", "# ok\nalice:not-a-hash\n");
        let cfg = dir.write(
            "broken.toml",
            &format!(
                "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
                 [auth]\nbasic_file = '{}'\n",
                broken.display()
            ),
        );
        let out = Command::new(bauta_bin())
            .arg("check")
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("bauta check");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("broken.txt:2"), "{err}");
    })
    .await
}

#[tokio::test]
async fn basic_auth_on_every_front() {
    bounded_for(Duration::from_secs(90), async {
        let env = Env::start().await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());

        // HTTP/1.1: missing, malformed, unknown user, wrong password.
        let (head, _) = env.h1_connect(&target, "").await;
        assert_challenge(&head, "HTTP/1.1 without Proxy-Authorization");
        let (head, _) = env
            .h1_connect(&target, "Proxy-Authorization: Bearer abc\r\n")
            .await;
        assert_challenge(&head, "HTTP/1.1 with another scheme");
        let (head, _) = env
            .h1_connect(
                &target,
                &format!(
                    "Proxy-Authorization: {}\r\n",
                    basic_credential("mallory", "alice-pw")
                ),
            )
            .await;
        assert_challenge(&head, "HTTP/1.1 unknown user");
        let (head, _) = env
            .h1_connect(
                &target,
                &format!(
                    "Proxy-Authorization: {}\r\n",
                    basic_credential("alice", "bob-pw")
                ),
            )
            .await;
        assert_challenge(&head, "HTTP/1.1 wrong password");
        // alice: allowed by her rule; bob: authenticated, refused by the policy.
        let (head, mut tunnel) = env
            .h1_connect(
                &target,
                &format!(
                    "Proxy-Authorization: {}\r\n",
                    basic_credential("alice", "alice-pw")
                ),
            )
            .await;
        assert_eq!(head.status, 200, "HTTP/1.1 alice: {head:?}");
        assert_echo(&mut tunnel, b"alice over HTTP/1.1").await;
        drop(tunnel);
        let (head, _) = env
            .h1_connect(
                &target,
                &format!(
                    "Proxy-Authorization: {}\r\n",
                    basic_credential("bob", "bob-pw")
                ),
            )
            .await;
        assert_eq!(
            head.status, 403,
            "HTTP/1.1 bob is not in the policy: {head:?}"
        );

        // HTTP/2 over TLS.
        let tls = tls_connect(env.proxy.listener("secure"), &env.certs, &[b"h2"]).await;
        let h2 = h2_client(tls).await;
        for (cred, status) in [
            (None, 407),
            (Some(basic_credential("alice", "nope")), 407),
            (Some(basic_credential("alice", "alice-pw")), 200),
        ] {
            let mut req = Request::builder()
                .method(Method::CONNECT)
                .uri(target.as_str());
            if let Some(c) = &cred {
                req = req.header("proxy-authorization", c.as_str());
            }
            let mut client = h2.clone().ready().await.expect("h2 ready");
            let (resp, _send) = client
                .send_request(req.body(()).expect("request"), false)
                .expect("send CONNECT");
            let resp = resp.await.expect("HTTP/2 response");
            assert_eq!(resp.status().as_u16(), status, "HTTP/2 {cred:?}");
            if status == 407 {
                assert_eq!(
                    resp.headers()
                        .get("proxy-authenticate")
                        .and_then(|v| v.to_str().ok()),
                    Some(format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"").as_str()),
                    "HTTP/2 challenge"
                );
                assert!(proxy_status_of(resp.headers())
                    .is_some_and(|p| p.contains("http_request_denied")));
            }
        }

        // HTTP/3 CONNECT-UDP.
        let udp = UdpEcho::start().await;
        let path = udp_path("127.0.0.1", udp.port());
        let mut h3 =
            H3Client::connect_with(env.proxy.listener("secure"), quic_client_config(&env.certs))
                .await;
        let (resp, _s) = h3
            .extended_connect(&path, &[("capsule-protocol", "?1")])
            .await
            .expect("CONNECT-UDP");
        assert_eq!(resp.status(), 407, "HTTP/3 without a credential");
        assert!(
            resp.headers().get("proxy-authenticate").is_some(),
            "HTTP/3 challenge"
        );
        let alice = basic_credential("alice", "alice-pw");
        let (resp, _s) = h3
            .extended_connect(
                &path,
                &[
                    ("capsule-protocol", "?1"),
                    ("proxy-authorization", alice.as_str()),
                ],
            )
            .await
            .expect("CONNECT-UDP");
        assert_eq!(resp.status(), 200, "HTTP/3 alice");

        // Counted by reason (HTTP/2 and HTTP/3 added one missing, one wrong).
        for (reason, n) in [
            ("missing", 3.0),
            ("malformed", 1.0),
            ("unknown_user", 1.0),
            ("wrong_password", 2.0),
        ] {
            assert_eq!(
                env.failures(reason).await,
                n,
                "{FAILURES}{{reason={reason}}}"
            );
        }

        // The identity is in the access log; no credential is anywhere in the output.
        env.proxy
            .wait_access_log(Duration::from_secs(5), "alice's tunnel", |v| {
                v["identity"] == "alice" && v["status"] == 200
            })
            .await;
        let everything = format!("{:?}\n{}", env.proxy.access_log(), env.proxy.stderr());
        for secret in [
            "alice-pw",
            "bob-pw",
            STANDARD.encode("alice:alice-pw").as_str(),
        ] {
            assert!(
                !everything.contains(secret),
                "{secret} leaked into the output"
            );
        }
    })
    .await
}

#[tokio::test]
async fn curl_proxy_user_and_the_header_stays_here() {
    bounded_for(Duration::from_secs(90), async {
        let env = Env::start().await;
        let origin = Origin::start().await;
        let proxy_url = format!("http://{}", env.proxy.listener("plain"));
        let url = origin.url("/curl");
        let curl = move |user: Option<&str>, tunnel: bool| {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "-o", "/dev/null", "--max-time", "10", "-w"])
                .arg(if tunnel {
                    "%{http_connect} %{http_code}"
                } else {
                    "%{http_code}"
                })
                .arg("-x")
                .arg(&proxy_url);
            if tunnel {
                cmd.arg("-p");
            }
            if let Some(u) = user {
                cmd.arg("--proxy-user").arg(u);
            }
            cmd.arg(&url);
            let out = run_with_timeout(&mut cmd, Duration::from_secs(20));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let run = |user: Option<&'static str>, tunnel: bool| {
            let curl = curl.clone();
            async move {
                tokio::task::spawn_blocking(move || curl(user, tunnel))
                    .await
                    .expect("curl")
            }
        };
        assert_eq!(
            run(Some("alice:alice-pw"), true).await,
            "200 200",
            "curl -p alice"
        );
        assert_eq!(
            run(Some("alice:wrong"), true).await,
            "407 000",
            "curl -p wrong"
        );
        assert_eq!(run(None, true).await, "407 000", "curl -p without");
        assert_eq!(
            run(Some("alice:alice-pw"), false).await,
            "200",
            "curl forward alice"
        );
        assert_eq!(
            run(Some("bob:alice-pw"), false).await,
            "407",
            "curl forward wrong"
        );
        let seen = origin.seen();
        assert_eq!(seen.len(), 2, "two requests reached the origin");
        for r in &seen {
            assert!(
                r.headers.get("proxy-authorization").is_none(),
                "Proxy-Authorization never goes upstream: {:?}",
                r.headers
            );
        }
    })
    .await
}

#[tokio::test]
async fn sighup_reloads_the_credentials_file() {
    bounded_for(Duration::from_secs(90), async {
        let env = Env::start().await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let with = |pw: &str| format!("Proxy-Authorization: {}\r\n", basic_credential("alice", pw));
        let (head, _) = env.h1_connect(&target, &with("alice-pw")).await;
        assert_eq!(head.status, 200);
        // A tunnel open across the reload keeps going.
        let (head, mut held) = env.h1_connect(&target, &with("alice-pw")).await;
        assert_eq!(head.status, 200);
        passwd_ok(&env.users, "alice", "new-pw");
        env.proxy.signal("HUP");
        let ok = wait_sample(
            env.proxy.admin,
            "bauta_config_reloads_total",
            &[("outcome", "ok")],
            Duration::from_secs(5),
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(ok, Some(1.0), "reload counted");
        let (head, _) = env.h1_connect(&target, &with("alice-pw")).await;
        assert_eq!(head.status, 407, "the old password no longer works");
        let (head, _) = env.h1_connect(&target, &with("new-pw")).await;
        assert_eq!(head.status, 200, "the new one does");
        assert_echo(&mut held, b"held across the reload").await;
        held.shutdown().await.ok();
    })
    .await
}

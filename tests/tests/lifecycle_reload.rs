//! Configuration reload through a real SIGHUP to the `bauta` binary (README:
//! "SIGHUP reloads the configuration file: policy, listener and origin
//! certificates, origins, limits and templates apply to new connections and
//! requests; connections already open keep going. A file that does not
//! compile is refused and the running configuration stays
//! (`bauta_config_reloads_total`)").
//!
//! * a syntax error and an unusable certificate are refused: the proxy keeps
//!   serving with the old configuration, and `bauta_config_reloads_total`
//!   counts `outcome="error"` exactly; a good file counts `outcome="ok"`;
//! * a new listener certificate is seen by new TLS handshakes over TCP and
//!   over QUIC, while a connection opened before keeps working;
//! * a new origin certificate is sent on new HTTP/2 and HTTP/3 connections
//!   (the independent Python peers) while held ones keep being served;
//! * origins added and reordered while an HTTP/2 connection is open: that
//!   connection's origins still reach their own upstreams, new connections
//!   see the new set.

use std::path::Path;
use std::time::Duration;

use bauta_tests::masque::quic_leaf;
use bauta_tests::seccert_env::{
    assert_certificate, assert_served, certificates, config_text, run_peer, status_of, u64_at,
    HeldPeer, KeyKind, OriginCert, OriginEntry, Peer, Pki, SECCERT_LIMIT,
};
use bauta_tests::*;
use rustls_pki_types::CertificateDer;
use serde_json::Value;

const RELOADS: &str = "bauta_config_reloads_total";
const LIMIT: Duration = Duration::from_secs(40);
/// SIGHUP alone: these tests count reloads exactly, and the file watcher
/// (tested in `policy_reload`) would also reload the files they replace.
const NO_WATCH: &str = "[reload]\nwatch_files = false\n\n";

// === helpers ===

/// Admin, "plain" (HTTP/1.1), "secure" (HTTP/1.1, HTTP/2, HTTP/3) with the
/// PKI's listener certificate, then `policy` (TOML).
fn listeners_config(pki: &Pki, policy: &str) -> String {
    format!(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
         [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
         protocols = [\"http1\", \"h2\", \"h3\"]\ntls_cert = '{}'\ntls_key = '{}'\n\n\
         [limits]\nshutdown_grace_s = 1\n\n{NO_WATCH}{policy}",
        pki.certs.cert_pem.display(),
        pki.certs.key_pem.display()
    )
}

/// Replace `path` atomically with `text` (a reload must never see half a file).
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the new file");
    std::fs::rename(&tmp, path).expect("replace the file");
}

/// `bauta_config_reloads_total{outcome}`, 0 when the sample is absent (a
/// counter never incremented is not exported).
async fn reloads(proxy: &BautaProcess, outcome: &str) -> f64 {
    metric_sample(&proxy.metrics().await, RELOADS, &[("outcome", outcome)]).unwrap_or(0.0)
}

/// Send SIGHUP and wait (3 s at most) until `outcome` has been counted
/// exactly `expect` times; then check the other outcome is exactly `other`.
async fn sighup_and_expect(proxy: &BautaProcess, outcome: &str, expect: f64, other: f64) {
    proxy.signal("HUP");
    let got = wait_sample(
        proxy.admin,
        RELOADS,
        &[("outcome", outcome)],
        Duration::from_secs(3),
        |v| v >= expect,
    )
    .await;
    assert_eq!(
        got,
        Some(expect),
        "{RELOADS}{{outcome={outcome}}} after SIGHUP\nstderr:\n{}",
        proxy.stderr()
    );
    let other_outcome = if outcome == "ok" { "error" } else { "ok" };
    assert_eq!(
        reloads(proxy, other_outcome).await,
        other,
        "{RELOADS}{{outcome={other_outcome}}} after SIGHUP"
    );
}

/// CONNECT to the echo server through "plain"; the status, and an echo on 200.
async fn connect_echo(proxy: &BautaProcess, echo: &EchoServer, what: &str) -> Head {
    let (head, mut t) = connect_h1(
        proxy.listener("plain"),
        &format!("127.0.0.1:{}", echo.port()),
    )
    .await;
    if head.status == 200 {
        assert_echo(&mut t, what.as_bytes()).await;
    }
    head
}

/// The Python peers' `MODE --port PORT --ca CA EXTRA…`.
fn peer_args(mode: &str, port: u16, pki: &Pki, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        mode.to_string(),
        "--port".to_string(),
        port.to_string(),
        "--ca".to_string(),
        pki.certs.ca_pem.display().to_string(),
    ];
    v.extend(extra.iter().map(|s| (*s).to_string()));
    v
}

// === refused and accepted files ===

#[tokio::test(flavor = "multi_thread")]
async fn sighup_refuses_bad_files_keeps_serving_and_counts_each_outcome_exactly() {
    bounded_for(LIMIT, async {
        init();
        let pki = Pki::new();
        let echo = EchoServer::start().await;
        let dir = TempDir::new("reload-bad");
        let path = dir.write("bauta.toml", &listeners_config(&pki, ALLOW_LOOPBACK));
        let mut proxy = BautaProcess::start(&path).await;
        let secure = proxy.listener("secure");
        let leaf_a = pem_der(&pki.certs.cert_pem);
        assert_eq!(reloads(&proxy, "ok").await, 0.0, "no reload yet");
        assert_eq!(reloads(&proxy, "error").await, 0.0, "no reload yet");
        let h = connect_echo(&proxy, &echo, "before any reload").await;
        assert_eq!(h.status, 200, "{h:?}");

        // 1. A syntax error.
        replace_file(&path, "[proxy\nname = \"bauta\"\n");
        sighup_and_expect(&proxy, "error", 1.0, 0.0).await;
        assert!(proxy.try_exit().is_none(), "the proxy died on a bad file");
        let h = connect_echo(&proxy, &echo, "after the syntax error").await;
        assert_eq!(h.status, 200, "old policy still allows loopback: {h:?}");
        assert_eq!(
            tcp_leaf(secure, &pki.certs).await,
            leaf_a,
            "old certificate"
        );

        // 2. Valid TOML, but the listener certificate is not a certificate;
        //    and the policy would deny everything.
        let garbage = dir.write("garbage.pem", "not a certificate\n");
        let text = listeners_config(&pki, "[policy]\ndefault = \"deny\"\n").replace(
            &format!("tls_cert = '{}'", pki.certs.cert_pem.display()),
            &format!("tls_cert = '{}'", garbage.display()),
        );
        assert!(text.contains("garbage.pem"), "{text}");
        replace_file(&path, &text);
        sighup_and_expect(&proxy, "error", 2.0, 0.0).await;
        assert!(
            proxy.try_exit().is_none(),
            "the proxy died on a bad certificate"
        );
        let h = connect_echo(&proxy, &echo, "after the bad certificate").await;
        assert_eq!(
            h.status, 200,
            "the refused file's deny policy must not apply: {h:?}"
        );
        assert_eq!(
            tcp_leaf(secure, &pki.certs).await,
            leaf_a,
            "old certificate"
        );

        // 3. A good file: deny everything.
        replace_file(
            &path,
            &listeners_config(&pki, "[policy]\ndefault = \"deny\"\n"),
        );
        sighup_and_expect(&proxy, "ok", 1.0, 2.0).await;
        let h = connect_echo(&proxy, &echo, "after the good reload").await;
        h.assert_error(
            403,
            "http_request_denied",
            "CONNECT under the reloaded policy",
        );
        assert_eq!(
            echo.accepted(),
            3,
            "the denied CONNECT never reached the echo"
        );
    })
    .await
}

// === listener certificates ===

/// Put a new certificate and key (SAN `localhost`, same CA) in the listener's
/// files; returns the new leaf's DER.
fn new_listener_cert(pki: &Pki) -> CertificateDer<'static> {
    let next = pki.origin("localhost", KeyKind::EcdsaP256, "listener-next");
    let der = pem_der(&next.cert_pem);
    for (from, to) in [
        (&next.cert_pem, &pki.certs.cert_pem),
        (&next.key_pem, &pki.certs.key_pem),
    ] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).expect("copy the new certificate");
        std::fs::rename(&tmp, to).expect("replace the certificate file");
    }
    der
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_new_listener_certificate_on_tcp_while_an_open_connection_keeps_going() {
    bounded_for(LIMIT, async {
        init();
        let pki = Pki::new();
        let echo = EchoServer::start().await;
        let dir = TempDir::new("reload-tcp-cert");
        let path = dir.write("bauta.toml", &listeners_config(&pki, ALLOW_LOOPBACK));
        let proxy = BautaProcess::start(&path).await;
        let secure = proxy.listener("secure");
        let leaf_a = pem_der(&pki.certs.cert_pem);
        assert_eq!(tcp_leaf(secure, &pki.certs).await, leaf_a, "start-up leaf");
        // A TLS connection (HTTP/1.1 CONNECT tunnel) opened before the reload.
        let mut held = tls_connect(secure, &pki.certs, &[b"http/1.1"]).await;
        let h = connect_on(&mut held, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(h.status, 200, "{h:?}");
        assert_echo(&mut held, b"before the reload").await;

        let leaf_b = new_listener_cert(&pki);
        assert_ne!(leaf_a, leaf_b);
        sighup_and_expect(&proxy, "ok", 1.0, 0.0).await;

        assert_eq!(
            tcp_leaf(secure, &pki.certs).await,
            leaf_b,
            "a new TLS handshake over TCP after SIGHUP presents the new certificate"
        );
        assert_echo(&mut held, b"after the reload").await;
        assert_half_close(&mut held).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_new_listener_certificate_on_quic() {
    bounded_for(LIMIT, async {
        init();
        let pki = Pki::new();
        let dir = TempDir::new("reload-quic-cert");
        let path = dir.write("bauta.toml", &listeners_config(&pki, ALLOW_LOOPBACK));
        let proxy = BautaProcess::start(&path).await;
        let secure = proxy.listener("secure");
        let leaf_a = pem_der(&pki.certs.cert_pem);
        assert_eq!(quic_leaf(secure, &pki.certs).await, leaf_a, "start-up leaf");

        let leaf_b = new_listener_cert(&pki);
        sighup_and_expect(&proxy, "ok", 1.0, 0.0).await;
        // TCP sees it (the test above); QUIC must too.
        assert_eq!(tcp_leaf(secure, &pki.certs).await, leaf_b, "TCP leaf");
        let quic = quic_leaf(secure, &pki.certs).await;
        assert!(
            quic != leaf_a,
            "a new QUIC handshake after SIGHUP still presents the start-up certificate"
        );
        assert_eq!(
            quic, leaf_b,
            "a new QUIC handshake after SIGHUP presents the new certificate"
        );
    })
    .await
}

// === origin certificates (moved from secondary_certs.rs, now via SIGHUP) ===

#[tokio::test(flavor = "multi_thread")]
async fn sighup_new_origin_certificate_for_new_connections_old_ones_keep_going() {
    bounded_for(SECCERT_LIMIT, async {
        init();
        let pki = Pki::new();
        let first = pki.origin("origin.test", KeyKind::EcdsaP256, "origin");
        let upstream = Origin::start().await;
        let echo = EchoServer::start().await;
        let dns = FakeDns::start().await;
        let text = config_text(
            &pki,
            "eager",
            &[OriginEntry {
                cert: &first,
                upstream: format!("http://{}", upstream.addr),
            }],
            &dns.toml(),
        );
        let dir = TempDir::new("seccert-reload");
        let path = dir.write("bauta.toml", &text);
        let proxy = BautaProcess::start(&path).await;
        let port = proxy.listener("secure").port();
        let echo_port = echo.port().to_string();
        let args = |extra: &[&str]| {
            let mut all = vec!["--advertise", "eager", "--echo-port", echo_port.as_str()];
            all.extend_from_slice(extra);
            peer_args("flow", port, &pki, &all)
        };

        // Old connections, one per protocol, held open across the reload.
        let mut held = Vec::new();
        for peer in [Peer::H2, Peer::H3] {
            let mut p = HeldPeer::start(peer, &args(&["--hold"])).await;
            let v = p.next_json().await;
            let what = format!("{peer:?} before the reload");
            assert_certificate(&certificates(&v)[0], &first, &what);
            assert_served(&v, "/hello", true, &what);
            held.push((peer, p));
        }

        // New certificate and key in the same files, then SIGHUP.
        let second = pki.origin("origin.test", KeyKind::EcdsaP256, "origin-next");
        assert_ne!(first.serial_hex, second.serial_hex);
        second.install_over(&first);
        let installed = OriginCert {
            cert_pem: first.cert_pem.clone(),
            key_pem: first.key_pem.clone(),
            ..second.clone()
        };
        sighup_and_expect(&proxy, "ok", 1.0, 0.0).await;

        for peer in [Peer::H2, Peer::H3] {
            let what = format!("{peer:?} new connection after the reload");
            let v = run_peer(peer, &args(&[])).await;
            let certs = certificates(&v);
            assert_eq!(certs.len(), 1, "{what}: {v:#}");
            assert_certificate(&certs[0], &installed, &what);
            assert_served(&v, "/hello", true, &what);
        }
        for (peer, p) in held {
            let what = format!("{peer:?} old connection after the reload");
            let v = p.resume().await;
            assert_eq!(
                status_of(&v, "get_origin"),
                Some(200),
                "{what}: still served: {v:#}"
            );
            assert_eq!(
                v["get_origin"]["body"].as_str(),
                Some("origin: GET /hello\n"),
                "{what}"
            );
            assert_eq!(
                u64_at(&v, "certificates_total"),
                1,
                "{what}: nothing re-sent on the old connection: {v:#}"
            );
        }
    })
    .await;
}

// === origins added and reordered under an open connection ===

/// The names of every certificate in a flow report, in order.
fn cert_names(v: &Value) -> Vec<String> {
    certificates(v)
        .iter()
        .map(|c| {
            let names: Vec<&str> = c["names"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert_eq!(names.len(), 1, "one name per origin certificate: {c:#}");
            assert_eq!(c["valid"], true, "authenticator validates: {c:#}");
            assert_eq!(c["acceptable"], true, "chain acceptable: {c:#}");
            names[0].to_string()
        })
        .collect()
}

fn origins_config(pki: &Pki, origins: &[(&OriginCert, &NamedUpstream)]) -> String {
    let entries: Vec<OriginEntry<'_>> = origins
        .iter()
        .map(|(cert, up)| OriginEntry {
            cert,
            upstream: up.url(),
        })
        .collect();
    config_text(
        pki,
        "eager",
        &entries,
        &format!("[limits]\nshutdown_grace_s = 1\n\n{NO_WATCH}"),
    )
}

/// Assert `get_origin` in `v` came from upstream `name`.
fn assert_from(v: &Value, name: &str, what: &str) {
    assert_eq!(
        status_of(v, "get_origin"),
        Some(200),
        "{what}: GET is reverse-proxied: {v:#}"
    );
    assert_eq!(
        v["get_origin"]["body"].as_str(),
        Some(format!("upstream {name}: GET /hello\n").as_str()),
        "{what}: answered by upstream {name}: {v:#}"
    );
}

/// Origins a, b, then after SIGHUP a, b, c (appended: indices unchanged).
#[tokio::test(flavor = "multi_thread")]
async fn sighup_adding_an_origin_keeps_open_connections_on_their_upstreams() {
    origins_reload(false).await;
}

/// Origins a, b, then after SIGHUP c, a, b (added in front and reordered).
#[tokio::test(flavor = "multi_thread")]
async fn sighup_adding_and_reordering_origins_keeps_open_connections_on_their_upstreams() {
    origins_reload(true).await;
}

async fn origins_reload(reorder: bool) {
    bounded_for(Duration::from_secs(60), async {
        init();
        let pki = Pki::new();
        let a = pki.origin("a.test", KeyKind::EcdsaP256, "a");
        let b = pki.origin("b.test", KeyKind::EcdsaP256, "b");
        let c = pki.origin("c.test", KeyKind::EcdsaP256, "c");
        let (ua, ub, uc) = (
            NamedUpstream::start("a").await,
            NamedUpstream::start("b").await,
            NamedUpstream::start("c").await,
        );
        let dir = TempDir::new("reload-origins");
        let path = dir.write("bauta.toml", &origins_config(&pki, &[(&a, &ua), (&b, &ub)]));
        let proxy = BautaProcess::start(&path).await;
        let port = proxy.listener("secure").port();

        // An HTTP/2 connection that received a's and b's certificates
        // (eager) and was served b.test before the reload.
        let mut held = HeldPeer::start(
            Peer::H2,
            &peer_args(
                "flow",
                port,
                &pki,
                &[
                    "--origin",
                    "b.test",
                    "--expect-certs",
                    "2",
                    "--hold",
                    "--hold-get",
                    "a.test",
                    "--hold-get",
                    "c.test",
                ],
            ),
        )
        .await;
        let before = held.next_json().await;
        assert_eq!(
            cert_names(&before),
            ["a.test", "b.test"],
            "eager certificates before the reload: {before:#}"
        );
        assert_from(&before, "b", "b.test before the reload");
        assert_eq!(status_of(&before, "get_other"), Some(421), "{before:#}");

        // Reordered: c added in front, so a moves from index 0 to 1 and b
        // from 1 to 2. Else c is appended.
        let new_order = if reorder {
            [(&c, &uc), (&a, &ua), (&b, &ub)]
        } else {
            [(&a, &ua), (&b, &ub), (&c, &uc)]
        };
        replace_file(&path, &origins_config(&pki, &new_order));
        sighup_and_expect(&proxy, "ok", 1.0, 0.0).await;

        // The open connection: b.test and a.test (certificates sent on it
        // before the reload) still go to their own upstreams; c.test (never
        // sent on it) is not covered: 421.
        let after = held.resume().await;
        assert_from(
            &after,
            "b",
            "b.test on the connection opened before the reload",
        );
        let a_after = &after["hold_gets"]["a.test"];
        assert_eq!(
            (a_after["status"].as_u64(), a_after["body"].as_str()),
            (Some(200), Some("upstream a: GET /hello\n")),
            "a.test on the connection opened before the reload: {after:#}"
        );
        let c_after = &after["hold_gets"]["c.test"];
        assert_eq!(
            c_after["status"].as_u64(),
            Some(421),
            "c.test was never proven on the old connection: {after:#}"
        );
        assert_eq!(
            u64_at(&after, "certificates_total"),
            2,
            "nothing re-sent on the old connection: {after:#}"
        );

        // New connections see the new set, and each origin its own upstream.
        for (origin, name) in [("c.test", "c"), ("a.test", "a"), ("b.test", "b")] {
            let what = format!("new connection after the reload, {origin}");
            let v = run_peer(
                Peer::H2,
                &peer_args(
                    "flow",
                    port,
                    &pki,
                    &["--origin", origin, "--expect-certs", "3"],
                ),
            )
            .await;
            let mut names = cert_names(&v);
            names.sort();
            assert_eq!(names, ["a.test", "b.test", "c.test"], "{what}: {v:#}");
            assert_from(&v, name, &what);
            assert_eq!(status_of(&v, "get_other"), Some(421), "{what}: {v:#}");
        }
    })
    .await;
}

// === certificate files: a Kubernetes Secret swap, the expiry gauge ===

/// A Kubernetes Secret volume: `DIR/..v1/{tls.crt,tls.key}`, `..data ->
/// ..v1`, and `tls.crt -> ..data/tls.crt` (the files a config names).
/// [`swap_secret`] switches `..data` atomically, as the kubelet does.
fn secret_volume(dir: &Path, version: &str, cert: &OriginCert) {
    let v = dir.join(version);
    std::fs::create_dir_all(&v).expect("secret version dir");
    std::fs::copy(&cert.cert_pem, v.join("tls.crt")).expect("copy cert");
    std::fs::copy(&cert.key_pem, v.join("tls.key")).expect("copy key");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).expect("symlink ..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for f in ["tls.crt", "tls.key"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).expect("symlink file");
        }
    }
}

fn unix_now() -> u64 {
    u64::try_from(bauta::config::certificates::unix_now()).expect("clock after 1970")
}

#[tokio::test(flavor = "multi_thread")]
async fn listener_certificate_reloads_when_its_secret_is_swapped_over_tcp_and_quic() {
    bounded_for(LIMIT, async {
        init();
        let pki = Pki::new();
        let dir = TempDir::new("reload-secret");
        let secret = dir.path().join("secret");
        // First a certificate that expires in 5 days: a warning and the gauge.
        let soon = unix_now() + 5 * 86_400;
        let first = pki.origin_until("localhost", KeyKind::EcdsaP256, "soon", Some(soon));
        secret_volume(&secret, "..v1", &first);
        let text = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"secure\"\n\
             listen = \"127.0.0.1:0\"\nprotocols = [\"http1\", \"h2\", \"h3\"]\n\
             tls_cert = '{0}/tls.crt'\ntls_key = '{0}/tls.key'\n\n{ALLOW_LOOPBACK}",
            secret.display()
        );
        let path = dir.write("bauta.toml", &text);
        let proxy = BautaProcess::start(&path).await;
        let secure = proxy.listener("secure");
        let leaf_a = pem_der(&first.cert_pem);
        assert_eq!(
            tcp_leaf(secure, &pki.certs).await,
            leaf_a,
            "start-up leaf, TCP"
        );
        assert_eq!(
            quic_leaf(secure, &pki.certs).await,
            leaf_a,
            "start-up leaf, QUIC"
        );
        let expiry = &[("kind", "listener"), ("name", "secure")];
        const EXPIRY: &str = "bauta_certificate_expiry_timestamp_seconds";
        assert_eq!(
            metric_sample(&proxy.metrics().await, EXPIRY, expiry),
            Some(soon as f64),
            "the listener certificate's notAfter"
        );
        let stderr = proxy.stderr();
        assert!(
            stderr.contains("certificate expires in less than 14 days")
                && stderr.contains("name=secure"),
            "{stderr}"
        );

        // The kubelet's swap: no SIGHUP, the file watcher reloads.
        let second = pki.origin("localhost", KeyKind::EcdsaP256, "renewed");
        secret_volume(&secret, "..v2", &second);
        let got = wait_sample(
            proxy.admin,
            RELOADS,
            &[("outcome", "ok")],
            Duration::from_secs(10),
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(got, Some(1.0), "one reload on the swap\n{}", proxy.stderr());
        let leaf_b = pem_der(&second.cert_pem);
        assert_eq!(
            tcp_leaf(secure, &pki.certs).await,
            leaf_b,
            "renewed leaf, TCP"
        );
        assert_eq!(
            quic_leaf(secure, &pki.certs).await,
            leaf_b,
            "renewed leaf, QUIC"
        );
        let after = metric_sample(&proxy.metrics().await, EXPIRY, expiry).unwrap_or(0.0);
        assert!(
            after > (unix_now() + 365 * 86_400) as f64,
            "the gauge follows the renewed certificate: {after}"
        );
    })
    .await
}

// === SIGHUP with no configuration file ===

/// The embedded default (`bauta run` with no `--config`) binds fixed
/// loopback ports, so it runs in a network namespace of its own. SIGHUP
/// (logrotate, `systemctl reload`) used to kill it: now it logs that there
/// is nothing to reload and keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_on_the_embedded_default_is_logged_and_serving_goes_on() {
    use bauta_tests::readme_env::NetNs;
    use tokio::io::AsyncBufReadExt;
    let bin = bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let ns = NetNs::create().unwrap_or_else(|e| {
            panic!("this test needs a network namespace (ip netns add, as root): {e}")
        });
        let state = TempDir::new("embedded-default");
        let mut prefix = ns.prefix();
        let first = prefix.remove(0);
        let mut child = tokio::process::Command::new(first)
            .args(prefix)
            .arg(&bin)
            .arg("run")
            .env("BAUTA_STATE_DIR", state.path())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start bauta in the namespace");
        // `ip netns exec` execs the command: the pid is bauta's.
        let pid = child.id().expect("pid");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        });
        let mut seen = String::new();
        log_until(&mut rx, &mut seen, "admin endpoint").await;
        wait_signals_caught(pid, &[("HUP", 1)], Duration::from_secs(10)).await;
        let status = std::process::Command::new("kill")
            .args(["-s", "HUP", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        log_until(&mut rx, &mut seen, "nothing to reload").await;
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "still running"
        );
        let mut curl = ns.prefix();
        let first = curl.remove(0);
        let out = run_with_timeout(
            std::process::Command::new(first).args(curl).args([
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:9090/healthz",
            ]),
            Duration::from_secs(10),
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "healthz after SIGHUP"
        );
    })
    .await
}

/// Read log lines from `rx` into `seen` until one contains `needle` (20 s at
/// most per line).
async fn log_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut String,
    needle: &str,
) {
    while !seen.contains(needle) {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(l)) => {
                seen.push_str(&l);
                seen.push('\n');
            }
            _ => panic!("no {needle:?} in the log:\n{seen}"),
        }
    }
}

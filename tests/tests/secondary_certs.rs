//! Secondary certificates end to end (draft-ietf-httpbis-secondary-server-certs,
//! project codepoints; spec `secondary-certs.md` §3, §4, §6, §8, §9), against
//! independent peers:
//!
//! * `tests/peers/seccert_h2_client.py`: TLS 1.3 from OpenSSL (pyOpenSSL,
//!   whose exporter is used directly), HTTP/2 from the `h2` package with the
//!   setting spliced in raw and SERVER_CERTIFICATE frames split out raw;
//! * `tests/peers/seccert_h3_client.py`: aioquic, with the RFC 9261 exporter
//!   derived from aioquic's key schedule (checked by `h3_exporter_selftest`
//!   against OpenSSL, and here by validating the proxy's authenticators).
//!
//! Both validate every authenticator with `ea_peer.py`'s RFC 9261 code and
//! the certificate chain with `cryptography`, then use the same connection:
//! GET https://origin.test/… is reverse-proxied to a local HTTP/1.1 upstream,
//! CONNECT to a local echo server still tunnels, GET https://other.test/ is
//! 421. Error rules (client-sent certificates, bad setting values) close the
//! connection with the project's codes; metrics count it all (reloads: see
//! `lifecycle_reload.rs`); `advertise = "off"` and TLS 1.2 advertise
//! nothing; `bauta probe` reports what an on-connect proxy sends.

use std::time::Duration;

use bauta_tests::masque::{assert_nothing_counted, wait_metric, H3Client};
use bauta_tests::seccert_env::{
    assert_certificate, assert_served, certificates, config_text, peer_args, run_peer, status_of,
    str_at, u64_at, KeyKind, OriginCert, OriginEntry, Peer, Pki, SeccertProxy, H2_PROTOCOL_ERROR,
    H3_FRAME_UNEXPECTED, H3_SETTINGS_ERROR, SECCERT_LIMIT,
};
use bauta_tests::{bounded_for, h2_client, h2_connect, tls_connect, EchoServer, FakeDns, Origin};
use serde_json::Value;

const SENT: &str = "bauta_secondary_certs_sent_total";
const ERRORS: &str = "bauta_secondary_cert_errors_total";
const REVERSE: &str = "bauta_reverse_requests_total";

/// Everything one test needs: PKI, the upstream origin server, a TCP echo,
/// a fake DNS (origin.test → NXDOMAIN, so a CONNECT to it fails fast), and
/// the proxy.
struct Env {
    pki: Pki,
    origin: OriginCert,
    upstream: Origin,
    echo: EchoServer,
    _dns: FakeDns,
    proxy: SeccertProxy,
}

impl Env {
    async fn start(advertise: &str) -> Env {
        let pki = Pki::new();
        let origin = pki.origin("origin.test", KeyKind::EcdsaP256, "origin");
        let upstream = Origin::start().await;
        let echo = EchoServer::start().await;
        let dns = FakeDns::start().await;
        let text = config_text(
            &pki,
            advertise,
            &[OriginEntry {
                cert: &origin,
                upstream: format!("http://{}", upstream.addr),
            }],
            &dns.toml(),
        );
        let proxy = SeccertProxy::start(&text).await;
        Env {
            pki,
            origin,
            upstream,
            echo,
            _dns: dns,
            proxy,
        }
    }

    fn args(&self, mode: &str, extra: &[&str]) -> Vec<String> {
        let echo = self.echo.port().to_string();
        let mut all = vec!["--echo-port", echo.as_str()];
        all.extend_from_slice(extra);
        peer_args(mode, &self.proxy, &self.pki, &all)
    }

    async fn flow(&self, peer: Peer, advertise: &str, extra: &[&str]) -> Value {
        let mut all = vec!["--advertise", advertise];
        all.extend_from_slice(extra);
        run_peer(peer, &self.args("flow", &all)).await
    }

    async fn violation(&self, peer: Peer, violation: &str, extra: &[&str]) -> Value {
        let mut all = vec!["--violation", violation];
        all.extend_from_slice(extra);
        run_peer(peer, &self.args("violation", &all)).await
    }

    /// A new HTTP/2 connection (Rust h2 client) still gets tunnels.
    async fn h2_fresh_connection_works(&self, what: &str) {
        let tls = tls_connect(self.proxy.secure, &self.pki.certs, &[b"h2"]).await;
        let client = h2_client(tls).await;
        let (parts, tunnel) = h2_connect(&client, &format!("127.0.0.1:{}", self.echo.port())).await;
        assert_eq!(
            parts.status, 200,
            "{what}: a fresh HTTP/2 connection must still be served"
        );
        tunnel
            .expect("tunnel")
            .assert_echo(b"fresh connection")
            .await;
    }

    /// A new HTTP/3 connection (Rust quinn + h3 client, no secondary-cert
    /// setting) is served: an https origin it has no certificate for is 421.
    async fn h3_fresh_connection_works(&self, what: &str) {
        let mut client = H3Client::connect(self.proxy.secure, &self.pki.certs).await;
        let req = http::Request::builder()
            .method(http::Method::GET)
            .uri("https://origin.test/hello")
            .body(())
            .expect("request");
        let mut stream = client
            .send
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: HTTP/3 request on a fresh connection: {e:?}"));
        stream.finish().await.expect("finish request");
        let resp = stream
            .recv_response()
            .await
            .unwrap_or_else(|e| panic!("{what}: HTTP/3 response on a fresh connection: {e:?}"));
        assert_eq!(
            resp.status(),
            421,
            "{what}: fresh HTTP/3 connection without the setting: origin.test not covered"
        );
    }

    /// The one request the upstream saw: origin-form, Forwarded and Via.
    fn assert_upstream_saw(&self, n: usize, path: &str, what: &str) {
        let seen = self.upstream.seen();
        assert_eq!(seen.len(), n, "{what}: requests at the upstream: {seen:?}");
        let last = seen.last().expect("one request");
        assert_eq!(last.method, http::Method::GET, "{what}");
        assert_eq!(last.uri, path, "{what}: origin-form target upstream");
        let header = |n: &str| {
            last.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(
            header("forwarded").as_deref(),
            Some("for=127.0.0.1;proto=https;host=origin.test"),
            "{what}: Forwarded at the upstream; headers {:?}",
            last.headers
        );
        let via = header("via").unwrap_or_default();
        assert!(
            via.contains("bauta"),
            "{what}: Via names the proxy: {via:?}"
        );
        assert_eq!(
            header("host").as_deref(),
            Some("origin.test"),
            "{what}: Host at the upstream"
        );
    }
}

fn assert_setting(v: &Value, want: Option<u64>, what: &str) {
    assert_eq!(
        v.get("server_cert_auth_setting").and_then(Value::as_u64),
        want,
        "{what}: the proxy's SETTINGS_HTTP_SERVER_CERT_AUTH; its SETTINGS: {}",
        v["server_settings"]
    );
}

fn assert_connect_to_origin_failed_as_tunnel(r: &Value, what: &str) {
    // The fake DNS answers NXDOMAIN for origin.test: README "DNS failure" →
    // 502 `dns_error` with `rcode`.
    assert_eq!(
        r["status"].as_u64(),
        Some(502),
        "{what}: CONNECT origin.test:443 is still handled as a tunnel (origin.test is \
         NXDOMAIN at the fake DNS → 502 dns_error): {r:#}"
    );
    let ps = r["proxy_status"].as_str().unwrap_or_default();
    assert!(
        ps.strip_prefix("bauta; error=dns_error")
            .is_some_and(|rest| rest.starts_with(';')),
        "{what}: Proxy-Status names the DNS failure: {ps:?}"
    );
    assert!(
        ps.contains("rcode=\"NXDOMAIN\""),
        "{what}: Proxy-Status carries rcode=\"NXDOMAIN\": {ps:?}"
    );
}

// === eager ===

/// TLS 1.3 suites per client, with the exporter hash each implies (RFC 9261
/// §5.1). The proxy's QUIC side offers only SHA-256 suites (quinn does not
/// report the negotiated one), so HTTP/3 covers AES-GCM and ChaCha20 instead.
fn suites(peer: Peer) -> [(&'static str, &'static str); 2] {
    match peer {
        Peer::H2 => [
            ("TLS_AES_128_GCM_SHA256", "sha256"),
            ("TLS_AES_256_GCM_SHA384", "sha384"),
        ],
        Peer::H3 => [
            ("TLS_AES_128_GCM_SHA256", "sha256"),
            ("TLS_CHACHA20_POLY1305_SHA256", "sha256"),
        ],
    }
}

async fn eager_flow(peer: Peer) {
    let env = Env::start("eager").await;
    for (n, (suite, hash)) in suites(peer).iter().enumerate() {
        let what = format!("{peer:?} eager {suite}");
        let v = env.flow(peer, "eager", &["--suite", suite]).await;
        assert_eq!(str_at(&v, "hash"), *hash, "{what}: negotiated suite");
        assert_setting(&v, Some(1), &what);
        let certs = certificates(&v);
        assert_eq!(
            certs.len(),
            1,
            "{what}: one SERVER_CERTIFICATE per origin: {v:#}"
        );
        assert_certificate(&certs[0], &env.origin, &what);
        match peer {
            Peer::H2 => {
                assert_eq!(str_at(&v, "tls_version"), "TLSv1.3", "{what}");
                assert_eq!(
                    v["exporter_formula_matches_openssl"],
                    Value::Bool(true),
                    "{what}: RFC 8446 §7.5 formula vs OpenSSL"
                );
                assert_eq!(u64_at(&certs[0], "stream"), 0, "{what}: on stream 0");
                assert_eq!(u64_at(&certs[0], "flags"), 0, "{what}: no flags");
                assert!(v["goaway"].is_null(), "{what}: no GOAWAY: {v:#}");
                assert!(v["h2_error"].is_null(), "{what}: h2 accepted it all: {v:#}");
            }
            Peer::H3 => {
                assert_eq!(
                    certs[0]["after_settings"],
                    Value::Bool(true),
                    "{what}: after the proxy's SETTINGS on its control stream"
                );
                assert!(v["terminated"].is_null(), "{what}: not closed: {v:#}");
            }
        }
        assert_served(&v, "/hello", true, &what);
        assert_eq!(u64_at(&v, "certificates_total"), 1, "{what}: nothing else");
        env.assert_upstream_saw(n + 1, "/hello", &what);
    }
    let what = format!("{peer:?} eager");
    let p = peer.protocol();
    let sent = wait_metric(
        env.proxy.admin,
        SENT,
        &[("protocol", p), ("mode", "eager")],
        |x| x >= 2.0,
    )
    .await;
    assert_eq!(
        sent, 2.0,
        "{what}: {SENT}{{protocol={p},mode=eager}}, two connections"
    );
    let ok = env
        .proxy
        .metric(REVERSE, &[("protocol", p), ("status_class", "2xx")])
        .await;
    assert_eq!(
        ok, 2.0,
        "{what}: {REVERSE}{{protocol={p},status_class=2xx}}, one GET per connection"
    );
    assert_nothing_counted(
        &env.proxy.metrics().await,
        ERRORS,
        &[],
        &format!("{what}: no errors"),
    );
    env.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_eager_openssl_client() {
    bounded_for(SECCERT_LIMIT, eager_flow(Peer::H2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h3_eager_aioquic_client() {
    bounded_for(SECCERT_LIMIT, eager_flow(Peer::H3)).await;
}

// === on-connect ===

async fn on_connect_flow(peer: Peer) {
    let env = Env::start("on-connect").await;
    let what = format!("{peer:?} on-connect");
    let v = env
        .flow(peer, "on-connect", &["--get-before", "--connect-twice"])
        .await;
    assert_setting(&v, Some(1), &what);
    assert_eq!(
        status_of(&v, "get_origin_before"),
        Some(421),
        "{what}: before the CONNECT, origin.test is not covered: {v:#}"
    );
    assert_connect_to_origin_failed_as_tunnel(&v["connect_origin"], &what);
    assert_connect_to_origin_failed_as_tunnel(&v["connect_origin_again"], &what);
    if peer == Peer::H2 {
        assert_eq!(
            v["cert_before_connect_response"],
            Value::Bool(true),
            "{what}: HTTP/2 puts the SERVER_CERTIFICATE before the CONNECT's response: {v:#}"
        );
    }
    let certs = certificates(&v);
    assert_eq!(
        certs.len(),
        1,
        "{what}: one certificate, once per connection (two CONNECTs): {v:#}"
    );
    assert_certificate(&certs[0], &env.origin, &what);
    assert_served(&v, "/hello", true, &what);
    assert_eq!(u64_at(&v, "certificates_total"), 1, "{what}");
    env.assert_upstream_saw(1, "/hello", &what);
    let p = peer.protocol();
    let sent = wait_metric(
        env.proxy.admin,
        SENT,
        &[("protocol", p), ("mode", "on-connect")],
        |x| x >= 1.0,
    )
    .await;
    assert_eq!(sent, 1.0, "{what}: {SENT}{{protocol={p},mode=on-connect}}");
    assert_eq!(
        env.proxy
            .metric(REVERSE, &[("protocol", p), ("status_class", "2xx")])
            .await,
        1.0,
        "{what}: {REVERSE}"
    );
    env.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_on_connect_openssl_client() {
    bounded_for(SECCERT_LIMIT, on_connect_flow(Peer::H2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h3_on_connect_aioquic_client() {
    bounded_for(SECCERT_LIMIT, on_connect_flow(Peer::H3)).await;
}

// === the aioquic exporter derivation, without the proxy ===

/// (a) our RFC 8446 §7.5 formula on OpenSSL's EXPORTER_SECRET equals
/// OpenSSL's exporter (both hashes); (b) aioquic client and server contexts
/// derive the same exporter master secret, and an authenticator built on one
/// side validates on the other (a random finished key does not).
#[tokio::test(flavor = "multi_thread")]
async fn h3_exporter_selftest() {
    bounded_for(SECCERT_LIMIT, async {
        let pki = Pki::new();
        let origin = pki.origin("origin.test", KeyKind::EcdsaP256, "origin");
        let path = |p: &std::path::Path| p.display().to_string();
        let args = [
            "selftest".to_string(),
            "--proxy-cert".to_string(),
            path(&pki.certs.cert_pem),
            "--proxy-key".to_string(),
            path(&pki.certs.key_pem),
            "--origin-chain".to_string(),
            path(&origin.cert_pem),
            "--origin-key".to_string(),
            path(&origin.key_pem),
        ];
        let v = run_peer(Peer::H3, &args).await;
        for suite in ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"] {
            assert_eq!(
                v["openssl_formula"][suite],
                Value::Bool(true),
                "formula vs OpenSSL, {suite}: {v:#}"
            );
        }
        for suite in ["AES_128_GCM_SHA256", "AES_256_GCM_SHA384"] {
            for key in [
                "same_exporter_master",
                "same_keys",
                "authenticator_validates",
                "wrong_finished_key_rejected",
            ] {
                assert_eq!(
                    v["aioquic_pair"][suite][key],
                    Value::Bool(true),
                    "aioquic pair {suite} {key}: {v:#}"
                );
            }
        }
    })
    .await;
}

// === advertise = "off" ===

#[tokio::test(flavor = "multi_thread")]
async fn advertise_off_sends_nothing_and_misdirects() {
    bounded_for(SECCERT_LIMIT, async {
        let env = Env::start("off").await;
        for peer in [Peer::H2, Peer::H3] {
            let what = format!("{peer:?} advertise=off");
            let v = env.flow(peer, "off", &["--get-before"]).await;
            let setting = v.get("server_cert_auth_setting").and_then(Value::as_u64);
            assert!(
                setting.is_none() || setting == Some(0),
                "{what}: the setting is absent or 0: {}",
                v["server_settings"]
            );
            assert_eq!(
                u64_at(&v, "certificates_total"),
                0,
                "{what}: no SERVER_CERTIFICATE: {v:#}"
            );
            assert_eq!(status_of(&v, "get_origin_before"), Some(421), "{what}");
            // The CONNECT that an on-connect proxy answers after a certificate.
            assert_connect_to_origin_failed_as_tunnel(&v["connect_origin"], &what);
            if peer == Peer::H2 {
                // The checks end on a PING ACK, not on a pause (the peer's `sync`).
                assert_eq!(v["synced"], Value::Bool(true), "{what}: {v:#}");
                assert_eq!(v["synced_end"], Value::Bool(true), "{what}: {v:#}");
            }
            assert_eq!(
                status_of(&v, "get_origin"),
                Some(421),
                "{what}: GET https://origin.test/ → 421: {v:#}"
            );
            assert_eq!(
                status_of(&v, "connect_echo"),
                Some(200),
                "{what}: tunnels work: {v:#}"
            );
            assert_eq!(status_of(&v, "get_other"), Some(421), "{what}");
        }
        assert!(env.upstream.seen().is_empty(), "nothing reverse-proxied");
        assert_nothing_counted(&env.proxy.metrics().await, SENT, &[], "advertise=off");
        env.proxy.shutdown().await;
    })
    .await;
}

/// With the feature off the proxy does not negotiate it, so a client's
/// SERVER_CERTIFICATE is an unknown frame type and is ignored (spec §2
/// "Config switch", §3: the close rule applies only while enabled).
#[tokio::test(flavor = "multi_thread")]
async fn advertise_off_ignores_client_certificate_frames() {
    bounded_for(SECCERT_LIMIT, async {
        let env = Env::start("off").await;
        let cases = [
            (Peer::H2, "cert-stream0"),
            (Peer::H2, "cert-stream1"),
            (Peer::H3, "cert-control"),
        ];
        for (peer, violation) in cases {
            let what = format!("{peer:?} {violation} with advertise=off");
            // Ends on a positive sign, not a pause: HTTP/2, the PING ACK
            // after the frame; HTTP/3, the answer to a request sent in the
            // frame's own packet (the peers explain why each proves it).
            let v = env.violation(peer, violation, &[]).await;
            if peer == Peer::H2 {
                assert_eq!(v["ping_acked"], Value::Bool(true), "{what}: {v:#}");
            }
            assert!(
                v["goaway"].is_null() && v["terminated"].is_null(),
                "{what}: the frame is ignored, the connection stays: {v:#}"
            );
            assert_eq!(
                v["after"]["status"].as_u64(),
                Some(200),
                "{what}: the connection is still usable: {v:#}"
            );
        }
        env.proxy.shutdown().await;
    })
    .await;
}

/// TLS 1.2 has no RFC 9261 exporter path in this project (spec §2): even in
/// eager mode the proxy neither sends the setting nor certificates, and the
/// origin is not served directly.
#[tokio::test(flavor = "multi_thread")]
async fn h2_over_tls12_advertises_nothing() {
    bounded_for(SECCERT_LIMIT, async {
        let env = Env::start("eager").await;
        let what = "HTTP/2 over TLS 1.2, advertise=eager";
        let v = env
            .flow(Peer::H2, "eager", &["--tls12", "--expect-certs", "0"])
            .await;
        assert_eq!(str_at(&v, "tls_version"), "TLSv1.2", "{what}");
        let setting = v.get("server_cert_auth_setting").and_then(Value::as_u64);
        assert!(
            setting.is_none() || setting == Some(0),
            "{what}: the setting is absent or 0: {}",
            v["server_settings"]
        );
        assert_eq!(u64_at(&v, "certificates_total"), 0, "{what}: {v:#}");
        assert_eq!(status_of(&v, "get_origin"), Some(421), "{what}: {v:#}");
        assert_eq!(status_of(&v, "connect_echo"), Some(200), "{what}: {v:#}");
        // "Nothing came" ends on PING ACKs, not on a pause.
        assert_eq!(v["synced"], Value::Bool(true), "{what}: {v:#}");
        assert_eq!(v["synced_end"], Value::Bool(true), "{what}: {v:#}");
        assert_nothing_counted(&env.proxy.metrics().await, SENT, &[], what);
        env.proxy.shutdown().await;
    })
    .await;
}

// === error rules ===

#[tokio::test(flavor = "multi_thread")]
async fn h2_client_violations_close_with_protocol_error() {
    bounded_for(SECCERT_LIMIT, async {
        let env = Env::start("eager").await;
        // (violation, the one metric kind that counts it): a certificate on
        // stream 0 is one the client sent; on a request stream it is on the
        // wrong stream.
        let cases: [(&str, &str); 4] = [
            ("cert-stream0", "client_sent_certificate"),
            ("cert-stream1", "wrong_stream"),
            ("setting-2", "bad_setting_value"),
            ("setting-withdraw", "setting_withdrawn"),
        ];
        for (i, (violation, kind)) in cases.iter().enumerate() {
            let what = format!("HTTP/2 {violation}");
            let v = env.violation(Peer::H2, violation, &[]).await;
            if *violation == "cert-stream1" {
                assert_eq!(
                    v["connect_echo_status"].as_u64(),
                    Some(200),
                    "{what}: the request stream was open: {v:#}"
                );
            }
            let goaway = &v["goaway"];
            assert_eq!(
                goaway["error_code"].as_u64(),
                Some(H2_PROTOCOL_ERROR),
                "{what}: GOAWAY PROTOCOL_ERROR expected; got {v:#}"
            );
            assert_eq!(
                v["eof"],
                Value::Bool(true),
                "{what}: connection closed: {v:#}"
            );
            // The PING sent with the frame is never answered (the shim stops
            // reading at the violation): the ACK that, with the feature off,
            // proves the frame was read and ignored.
            assert_eq!(v["ping_acked"], Value::Bool(false), "{what}: {v:#}");
            let total = wait_metric(env.proxy.admin, ERRORS, &[("protocol", "h2")], |x| {
                x >= (i + 1) as f64
            })
            .await;
            assert_eq!(total, (i + 1) as f64, "{what}: {ERRORS}{{protocol=h2}}");
            // Each case has its own kind, so each kind's count is exactly 1.
            let by_kind = env
                .proxy
                .metric(ERRORS, &[("protocol", "h2"), ("kind", kind)])
                .await;
            assert_eq!(
                by_kind,
                1.0,
                "{what}: counted once under kind {kind}; metrics:\n{}",
                metric_lines(&env.proxy.metrics().await, ERRORS)
            );
            env.h2_fresh_connection_works(&what).await;
        }
        env.proxy.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h3_client_violations_close_connection() {
    bounded_for(SECCERT_LIMIT, async {
        let env = Env::start("eager").await;
        // (violation, close code, the one metric kind that counts it).
        let cases: [(&str, u64, &str); 3] = [
            (
                "cert-control",
                H3_FRAME_UNEXPECTED,
                "client_sent_certificate",
            ),
            ("cert-request", H3_FRAME_UNEXPECTED, "wrong_stream"),
            ("setting-2", H3_SETTINGS_ERROR, "bad_setting_value"),
        ];
        for (i, (violation, code, kind)) in cases.iter().enumerate() {
            let what = format!("HTTP/3 {violation}");
            let v = env.violation(Peer::H3, violation, &[]).await;
            if *violation == "cert-request" {
                assert_eq!(
                    v["connect_echo_status"].as_u64(),
                    Some(200),
                    "{what}: the request stream was open: {v:#}"
                );
            }
            assert_eq!(
                v["terminated"]["error_code"].as_u64(),
                Some(*code),
                "{what}: CONNECTION_CLOSE {code:#06x} expected; got {v:#}"
            );
            if *violation == "cert-control" {
                // The request in the frame's own packet is not answered: the
                // close comes first (what makes that answer, with the feature
                // off, proof that the frame was read and ignored).
                assert_ne!(
                    v["after"]["status"].as_u64(),
                    Some(200),
                    "{what}: answered before the close: {v:#}"
                );
            }
            let total = wait_metric(env.proxy.admin, ERRORS, &[("protocol", "h3")], |x| {
                x >= (i + 1) as f64
            })
            .await;
            assert_eq!(total, (i + 1) as f64, "{what}: {ERRORS}{{protocol=h3}}");
            let by_kind = env
                .proxy
                .metric(ERRORS, &[("protocol", "h3"), ("kind", kind)])
                .await;
            assert_eq!(
                by_kind,
                1.0,
                "{what}: counted once under kind {kind}; metrics:\n{}",
                metric_lines(&env.proxy.metrics().await, ERRORS)
            );
            env.h3_fresh_connection_works(&what).await;
        }
        // And a fresh connection that negotiates the feature gets the whole flow.
        let v = env.flow(Peer::H3, "eager", &[]).await;
        assert_certificate(&certificates(&v)[0], &env.origin, "H3 after the violations");
        assert_served(&v, "/hello", true, "H3 after the violations");
        env.proxy.shutdown().await;
    })
    .await;
}

fn metric_lines(text: &str, name: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with(name))
        .collect::<Vec<_>>()
        .join("\n")
}

// === several origins, several key types ===

/// An eager proxy for `origins`, all reverse-proxied to one upstream; a
/// TCP echo and a fake DNS beside it.
async fn eager_proxy(
    pki: &Pki,
    origins: &[OriginCert],
) -> (Origin, EchoServer, FakeDns, SeccertProxy) {
    let upstream = Origin::start().await;
    let echo = EchoServer::start().await;
    let dns = FakeDns::start().await;
    let entries: Vec<OriginEntry<'_>> = origins
        .iter()
        .map(|o| OriginEntry {
            cert: o,
            upstream: format!("http://{}", upstream.addr),
        })
        .collect();
    let proxy = SeccertProxy::start(&config_text(pki, "eager", &entries, &dns.toml())).await;
    (upstream, echo, dns, proxy)
}

/// One eager flow from `peer` expecting `certs` certificates, GETting `path`
/// on `host`.
async fn eager_get(
    peer: Peer,
    proxy: &SeccertProxy,
    pki: &Pki,
    echo: &EchoServer,
    certs: usize,
    host: &str,
    path: &str,
) -> Value {
    let echo_port = echo.port().to_string();
    let certs = certs.to_string();
    let args = peer_args(
        "flow",
        proxy,
        pki,
        &[
            "--advertise",
            "eager",
            "--expect-certs",
            &certs,
            "--origin",
            host,
            "--path",
            path,
            "--echo-port",
            &echo_port,
        ],
    );
    run_peer(peer, &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn eager_ecdsa_ed25519_rsa_origins() {
    bounded_for(SECCERT_LIMIT, async {
        let pki = Pki::new();
        let origins = [
            pki.origin("origin.test", KeyKind::EcdsaP256, "origin"),
            pki.origin("ed.test", KeyKind::Ed25519, "ed"),
            pki.origin("rsa.test", KeyKind::Rsa2048, "rsa"),
        ];
        let (upstream, echo, _dns, proxy) = eager_proxy(&pki, &origins).await;
        for peer in [Peer::H2, Peer::H3] {
            for target in &origins {
                let what = format!("{peer:?} eager, three origins, GET {}", target.host);
                let v = eager_get(peer, &proxy, &pki, &echo, 3, &target.host, "/multi").await;
                let certs = certificates(&v);
                assert_eq!(certs.len(), 3, "{what}: one per origin: {v:#}");
                for o in &origins {
                    let c = certs
                        .iter()
                        .find(|c| c["leaf_serial"].as_str() == Some(o.serial_hex.as_str()))
                        .unwrap_or_else(|| panic!("{what}: no certificate for {}: {v:#}", o.host));
                    assert_certificate(c, o, &format!("{what}: {}", o.host));
                }
                let get = &v["get_origin"];
                assert_eq!(get["status"].as_u64(), Some(200), "{what}: {v:#}");
                assert_eq!(get["body"].as_str(), Some("origin: GET /multi\n"), "{what}");
                assert_eq!(status_of(&v, "get_other"), Some(421), "{what}");
                assert_eq!(status_of(&v, "connect_echo"), Some(200), "{what}");
            }
        }
        let hosts: Vec<String> = upstream
            .seen()
            .iter()
            .filter_map(|r| r.headers.get("host").and_then(|h| h.to_str().ok()))
            .map(str::to_string)
            .collect();
        for o in &origins {
            assert_eq!(
                hosts.iter().filter(|h| **h == o.host).count(),
                2,
                "{}: reverse-proxied once per protocol; upstream saw hosts {hosts:?}",
                o.host
            );
        }
        assert_eq!(
            proxy
                .metric(SENT, &[("protocol", "h2"), ("mode", "eager")])
                .await,
            9.0,
            "three connections × three origins over HTTP/2"
        );
        assert_eq!(
            proxy
                .metric(SENT, &[("protocol", "h3"), ("mode", "eager")])
                .await,
            9.0,
            "three connections × three origins over HTTP/3"
        );
        proxy.shutdown().await;
    })
    .await;
}

/// Two origins named by one certificate: each connection gets one
/// SERVER_CERTIFICATE (one signature), and it makes both origins served
/// directly, over HTTP/2 and HTTP/3.
#[tokio::test(flavor = "multi_thread")]
async fn eager_one_certificate_for_two_origins() {
    bounded_for(SECCERT_LIMIT, async {
        let pki = Pki::new();
        let shared = pki.origin_with(&["a.test", "b.test"], KeyKind::EcdsaP256, "ab", None);
        let origins = [shared.clone(), shared.also_for("b.test")];
        let (upstream, echo, _dns, proxy) = eager_proxy(&pki, &origins).await;
        for peer in [Peer::H2, Peer::H3] {
            for target in &origins {
                let what = format!("{peer:?} eager, one certificate, GET {}", target.host);
                let v = eager_get(peer, &proxy, &pki, &echo, 1, &target.host, "/shared").await;
                let certs = certificates(&v);
                assert_eq!(certs.len(), 1, "{what}: one frame for both: {v:#}");
                assert_certificate(&certs[0], target, &what);
                assert_eq!(u64_at(&v, "certificates_total"), 1, "{what}: nothing else");
                let get = &v["get_origin"];
                assert_eq!(get["status"].as_u64(), Some(200), "{what}: {v:#}");
                assert_eq!(
                    get["body"].as_str(),
                    Some("origin: GET /shared\n"),
                    "{what}"
                );
                assert_eq!(status_of(&v, "get_other"), Some(421), "{what}");
            }
        }
        for p in ["h2", "h3"] {
            assert_eq!(
                proxy
                    .metric(SENT, &[("protocol", p), ("mode", "eager")])
                    .await,
                2.0,
                "{p}: two connections, one certificate each"
            );
        }
        let hosts: Vec<String> = upstream
            .seen()
            .iter()
            .filter_map(|r| r.headers.get("host").and_then(|h| h.to_str().ok()))
            .map(str::to_string)
            .collect();
        assert_eq!(
            hosts,
            ["a.test", "b.test", "a.test", "b.test"],
            "upstream hosts"
        );
        assert_nothing_counted(&proxy.metrics().await, ERRORS, &[], "no errors");
        proxy.shutdown().await;
    })
    .await;
}

// Reload (a new origin certificate via SIGHUP): see lifecycle_reload.rs.

// === `bauta probe` ===

/// Run `bauta probe URL --ca CA --connect origin.test:443 --json [--h3]`
/// against `env`; its JSON report.
async fn probe(env: &Env, h3: bool) -> Value {
    let bin = bauta_tests::bauta_bin();
    let what = format!("bauta probe (h3: {h3})");
    let url = format!("https://127.0.0.1:{}", env.proxy.port());
    let ca = env.pki.certs.ca_pem.display().to_string();
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args([
        "probe",
        &url,
        "--ca",
        &ca,
        "--connect",
        "origin.test:443",
        "--json",
    ])
    .args(h3.then_some("--h3"))
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: did not finish within 20 s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{what}:\n{stdout}");
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what} --json: {e}\n{stdout}"));
    // Exit 4: the CONNECT was answered, but not 2xx.
    let refused = v["connect_status"]
        .as_u64()
        .is_some_and(|s| !(200..300).contains(&s));
    assert_eq!(
        out.status.code(),
        Some(if refused { 4 } else { 0 }),
        "{what}: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

/// Build the binary and check it has `probe` (outside the test's time bound).
fn probe_available() {
    let help = bauta_tests::run_with_timeout(
        std::process::Command::new(bauta_tests::bauta_bin()).args(["probe", "--help"]),
        Duration::from_secs(10),
    );
    assert!(
        help.status.success(),
        "`bauta probe --help` failed: {}{}",
        String::from_utf8_lossy(&help.stdout),
        String::from_utf8_lossy(&help.stderr)
    );
}

/// `bauta probe` over HTTP/2 and HTTP/3 against an on-connect proxy with
/// `--connect origin.test:443`: the setting, one certificate, validated,
/// named origin.test, acceptable for it against `--ca`.
#[tokio::test(flavor = "multi_thread")]
async fn probe_reports_validated_certificate() {
    probe_available();
    bounded_for(SECCERT_LIMIT, async {
        let env = Env::start("on-connect").await;
        for h3 in [false, true] {
            let what = format!("bauta probe (h3: {h3})");
            let v = probe(&env, h3).await;
            let protocol = if h3 { "h3" } else { "h2" };
            assert_eq!(str_at(&v, "protocol"), protocol, "{what}: {v:#}");
            assert_eq!(v["setting_advertised"], Value::Bool(true), "{what}: {v:#}");
            let certs = v["certificates"].as_array().expect("certificates");
            assert_eq!(certs.len(), 1, "{what}: one certificate: {v:#}");
            let c = &certs[0];
            assert_eq!(c["validated"], Value::Bool(true), "{what}: {v:#}");
            let names: Vec<&str> = c["names"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert!(names.contains(&"origin.test"), "{what}: names {names:?}");
            assert_eq!(
                c["acceptable"],
                serde_json::json!([["origin.test", "ok"]]),
                "{what}: acceptable for origin.test against --ca: {v:#}"
            );
            assert_eq!(
                c["signature_scheme"].as_str(),
                Some("ECDSA_NISTP256_SHA256"),
                "{what}"
            );
        }
        env.proxy.shutdown().await;
    })
    .await;
}

/// The probe reports the CONNECT's status (origin.test does not resolve:
/// 502), its setup time and its Proxy-Status over HTTP/2 and HTTP/3 (there
/// read from the proxy's Huffman-coded QPACK field), and exits 4.
#[tokio::test(flavor = "multi_thread")]
async fn probe_reports_connect_status() {
    probe_available();
    bounded_for(SECCERT_LIMIT, async {
        let env = Env::start("on-connect").await;
        for h3 in [false, true] {
            let v = probe(&env, h3).await;
            assert_eq!(
                v["connect_status"].as_u64(),
                Some(502),
                "bauta probe (h3: {h3}): CONNECT origin.test:443 was answered 502 (NXDOMAIN), \
                 the report should say so: {v:#}"
            );
            assert!(
                v["connect_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
                "bauta probe (h3: {h3}): setup time: {v:#}"
            );
            let ps = v["proxy_status"].as_str().unwrap_or_default();
            assert!(
                ps.contains("error=dns_error") && ps.contains("NXDOMAIN"),
                "bauta probe (h3: {h3}): the 502's Proxy-Status: {v:#}"
            );
        }
        env.proxy.shutdown().await;
    })
    .await;
}

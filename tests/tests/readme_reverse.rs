//! README "Secondary certificates and reverse proxying" claims without a
//! test: reverse requests pass the policy as protocol `reverse` against the
//! upstream's addresses; an origin covered by the listener's own certificate
//! is served without any SERVER_CERTIFICATE while an uncovered https
//! authority gets 421 (same connection); an authenticator larger than the
//! client's SETTINGS_MAX_FRAME_SIZE is not sent, counted, and the origin
//! stays tunnelled.

use std::time::Duration;

use bauta_tests::masque::metric;
use bauta_tests::readme_env::{h2_to, origin_listener_certs, run_readme_h2};
use bauta_tests::seccert_env::{KeyKind, OriginCert, Pki};
use bauta_tests::{
    assert_error_parts, assert_proxy_status, bounded_for, fetch_metrics, h2_request,
    start_proxy_opts, FakeDns, Origin, ProxyOpts, ECHO_EOF_REPLY,
};
use bauta_tests::{EchoServer, TestProxy};
use http::{Method, Request, StatusCode};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(40);
const SENT: &str = "bauta_secondary_certs_sent_total";
const ERRORS: &str = "bauta_secondary_cert_errors_total";
const REVERSE: &str = "bauta_reverse_requests_total";

fn origin_table(cert: &OriginCert, host: &str, port: u16, upstream: &str) -> String {
    format!(
        "[[origin]]\nhost = \"{host}\"\nport = {port}\ncert = '{}'\nkey = '{}'\nupstream = \"{upstream}\"\n\n",
        cert.cert_pem.display(),
        cert.key_pem.display()
    )
}

// === policy: protocol `reverse`, the upstream's addresses ===

struct ReverseEnv {
    _pki: Pki,
    listener_origin: OriginCert,
    certs: bauta_tests::Certs,
    upstream: Origin,
    dns: FakeDns,
}

impl ReverseEnv {
    async fn new() -> ReverseEnv {
        let pki = Pki::new();
        let (certs, listener_origin) = origin_listener_certs(&pki, "origin.test");
        ReverseEnv {
            _pki: pki,
            listener_origin,
            certs,
            upstream: Origin::start().await,
            dns: FakeDns::start().await,
        }
    }

    /// A proxy whose TLS listener's own certificate covers `origin.test`,
    /// reverse-proxied to the HTTP upstream on 127.0.0.1, under `policy`.
    async fn proxy(&self, policy: &str) -> TestProxy {
        let extra = format!(
            "{}{}\n{policy}",
            origin_table(
                &self.listener_origin,
                "origin.test",
                443,
                &format!("http://{}", self.upstream.addr)
            ),
            self.dns.toml()
        );
        start_proxy_opts(ProxyOpts {
            certs: Some(&self.certs),
            extra,
            ..ProxyOpts::default()
        })
        .await
    }

    async fn get(&self, proxy: &TestProxy) -> (http::response::Parts, bytes::Bytes) {
        let client = h2_to(proxy.secure(), &self.certs, "origin.test").await;
        let req = Request::builder()
            .method(Method::GET)
            .uri("https://origin.test/hello")
            .body(())
            .expect("request");
        h2_request(&client, req, None).await
    }
}

#[tokio::test]
async fn reverse_policy_checks_protocol_reverse_against_the_upstream_addresses() {
    bounded_for(LIMIT, async {
        let env = ReverseEnv::new().await;

        // A rule for the origin's host without `cidrs`: the upstream is
        // loopback, so the SSRF guard refuses.
        let no_cidrs = env
            .proxy(
                "[policy]\ndefault = \"deny\"\n\n[[policy.rule]]\nname = \"rev\"\naction = \"allow\"\n\
                 protocols = [\"reverse\"]\nhosts = [\"origin.test\"]\n",
            )
            .await;
        let (parts, _) = env.get(&no_cidrs).await;
        assert_error_parts(
            &parts,
            StatusCode::BAD_GATEWAY,
            "destination_ip_prohibited",
            "reverse to a loopback upstream, rule without cidrs",
        );

        // A default allow never reaches a private upstream either.
        let default_allow = env.proxy("[policy]\ndefault = \"allow\"\n").await;
        let (parts, _) = env.get(&default_allow).await;
        assert_error_parts(
            &parts,
            StatusCode::BAD_GATEWAY,
            "destination_ip_prohibited",
            "reverse to a loopback upstream under default allow",
        );

        // A rule naming the upstream's address, but for connect/http only:
        // reverse requests are protocol `reverse`, so the default decides.
        let other_protocols = env
            .proxy(
                "[policy]\ndefault = \"deny\"\n\n[[policy.rule]]\nname = \"fwd\"\naction = \"allow\"\n\
                 protocols = [\"connect\", \"http\"]\ncidrs = [\"127.0.0.0/8\"]\n",
            )
            .await;
        let (parts, _) = env.get(&other_protocols).await;
        assert_error_parts(
            &parts,
            StatusCode::FORBIDDEN,
            "http_request_denied",
            "reverse under a connect/http-only rule",
        );

        // The host checked is the origin's (origin.test), not the upstream's.
        let other_host = env
            .proxy(
                "[policy]\ndefault = \"deny\"\n\n[[policy.rule]]\nname = \"rev\"\naction = \"allow\"\n\
                 protocols = [\"reverse\"]\nhosts = [\"127.0.0.1\"]\ncidrs = [\"127.0.0.0/8\"]\n",
            )
            .await;
        let (parts, _) = env.get(&other_host).await;
        assert_error_parts(
            &parts,
            StatusCode::FORBIDDEN,
            "http_request_denied",
            "reverse under a rule for the upstream's host instead of the origin's",
        );
        assert_eq!(
            env.upstream.connections(),
            0,
            "no refused reverse request contacted the upstream"
        );

        // With `cidrs` naming the upstream: served.
        let allowed = env
            .proxy(
                "[policy]\ndefault = \"deny\"\n\n[[policy.rule]]\nname = \"rev\"\naction = \"allow\"\n\
                 protocols = [\"reverse\"]\nhosts = [\"origin.test\"]\ncidrs = [\"127.0.0.1/32\"]\n",
            )
            .await;
        let (parts, body) = env.get(&allowed).await;
        assert_eq!(parts.status, StatusCode::OK, "{parts:?}");
        assert_eq!(body, "origin: GET /hello\n", "body from the upstream");
        assert_eq!(env.upstream.connections(), 1, "one upstream connection");
        let m = fetch_metrics(allowed.admin).await;
        assert_eq!(
            metric(
                &m,
                "bauta_policy_decisions_total",
                &[("verdict", "allow"), ("rule", "rev")]
            ),
            1.0,
            "the reverse request was decided by rule rev"
        );

        // The origin's name is never looked up: the upstream is an address.
        assert!(
            env.dns.queries().is_empty(),
            "no DNS lookup on the reverse path: {:?}",
            env.dns.queries()
        );
    })
    .await
}

// === coverage: the listener's own certificate, and nothing ===

fn seccert_config(
    listener_cert: &OriginCert,
    advertise: &str,
    origins: &str,
    extra: &str,
) -> String {
    format!(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
         protocols = [\"http1\", \"h2\"]\ntls_cert = '{}'\ntls_key = '{}'\n\n\
         [secondary_certs]\nadvertise = \"{advertise}\"\n\n{origins}{}\n{extra}",
        listener_cert.cert_pem.display(),
        listener_cert.key_pem.display(),
        bauta_tests::ALLOW_LOOPBACK,
    )
}

async fn start(text: &str) -> bauta_tests::seccert_env::SeccertProxy {
    bauta_tests::seccert_env::SeccertProxy::start(text).await
}

#[tokio::test]
async fn origin_covered_by_the_listener_certificate_is_served_without_server_certificate() {
    bounded_for(LIMIT, async {
        let pki = Pki::new();
        let upstream = Origin::start().await;
        let u = format!("http://{}", upstream.addr);
        // The listener's own certificate covers origin.test; second.test is a
        // configured origin covered by nothing on this connection.
        let own = pki.origin("origin.test", KeyKind::EcdsaP256, "own");
        let second = pki.origin("second.test", KeyKind::EcdsaP256, "second");
        let origins = format!(
            "{}{}",
            origin_table(&own, "origin.test", 443, &u),
            origin_table(&second, "second.test", 443, &u)
        );
        let proxy = start(&seccert_config(&own, "on-connect", &origins, "")).await;
        let v = run_readme_h2(
            "covered",
            proxy.port(),
            &pki.certs.ca_pem,
            &[
                "--origin".into(),
                "origin.test".into(),
                "--other".into(),
                "second.test".into(),
            ],
        )
        .await;
        assert_eq!(
            v["server_cert_auth_setting"].as_u64(),
            Some(1),
            "origins are configured: the proxy advertises the setting: {v:#}"
        );
        let get = &v["get_origin"];
        assert_eq!(
            get["status"].as_u64(),
            Some(200),
            "origin.test served: {v:#}"
        );
        assert_eq!(get["body"].as_str(), Some("origin: GET /hello\n"), "{v:#}");
        let other = &v["get_other"];
        assert_eq!(
            other["status"].as_u64(),
            Some(421),
            "second.test not covered: {v:#}"
        );
        assert_proxy_status(
            other["proxy_status"].as_str().unwrap_or_default(),
            "proxy_internal_response",
            "421 for second.test",
        );
        assert_eq!(
            v["certificates_total"].as_u64(),
            Some(0),
            "no SERVER_CERTIFICATE on the connection: {v:#}"
        );
        assert_eq!(v["goaway"], Value::Null, "{v:#}");
        assert_eq!(
            upstream.seen().len(),
            1,
            "only the covered request reached the upstream"
        );
        assert_eq!(
            proxy.metric(SENT, &[]).await,
            0.0,
            "secondary_certs_sent_total"
        );
        assert_eq!(
            proxy
                .metric(REVERSE, &[("protocol", "h2"), ("status_class", "2xx")])
                .await,
            1.0,
            "reverse_requests_total{{h2,2xx}}"
        );
        proxy.shutdown().await;
    })
    .await
}

// === an authenticator larger than SETTINGS_MAX_FRAME_SIZE ===

/// `cert`'s chain padded with `copies` of the CA certificate, written next to it.
fn padded_chain(pki: &Pki, cert: &OriginCert, copies: usize) -> OriginCert {
    let mut pem = std::fs::read_to_string(&cert.cert_pem).expect("read origin cert");
    let ca = std::fs::read_to_string(&pki.certs.ca_pem).expect("read CA");
    for _ in 0..copies {
        pem.push_str(&ca);
    }
    let path = pki.dir().join("padded-chain.pem");
    std::fs::write(&path, pem).expect("write padded chain");
    OriginCert {
        cert_pem: path,
        ..cert.clone()
    }
}

async fn toolarge_run(padded: bool) -> (Value, f64, f64, usize) {
    let pki = Pki::new();
    let dns = FakeDns::start().await;
    let echo = EchoServer::start().await;
    let upstream = Origin::start().await;
    // echo.test resolves to 127.0.0.1 at the fake DNS: the origin's
    // host:port is the echo server, so a tunnel to it works.
    let cert = pki.origin("echo.test", KeyKind::EcdsaP256, "echo-origin");
    let cert = if padded {
        // About 20 KiB of chain: more than 16384, the client's (default)
        // SETTINGS_MAX_FRAME_SIZE.
        padded_chain(&pki, &cert, 60)
    } else {
        cert
    };
    let origins = origin_table(
        &cert,
        "echo.test",
        echo.port(),
        &format!("http://{}", upstream.addr),
    );
    let listener = OriginCert {
        host: "localhost".into(),
        cert_pem: pki.certs.cert_pem.clone(),
        key_pem: pki.certs.key_pem.clone(),
        serial_hex: String::new(),
        kind: KeyKind::EcdsaP256,
    };
    let proxy = start(&seccert_config(
        &listener,
        "on-connect",
        &origins,
        &dns.toml(),
    ))
    .await;
    let v = run_readme_h2(
        "toolarge",
        proxy.port(),
        &pki.certs.ca_pem,
        &[
            "--origin".into(),
            "echo.test".into(),
            "--origin-port".into(),
            echo.port().to_string(),
        ],
    )
    .await;
    let too_large = proxy
        .metric(ERRORS, &[("protocol", "h2"), ("kind", "too_large")])
        .await;
    let sent = proxy.metric(SENT, &[("protocol", "h2")]).await;
    let upstream_requests = upstream.seen().len();
    proxy.shutdown().await;
    (v, too_large, sent, upstream_requests)
}

fn assert_tunnelled(v: &Value, what: &str) {
    let c = &v["connect_origin"];
    assert_eq!(
        c["status"].as_u64(),
        Some(200),
        "{what}: CONNECT still tunnels: {v:#}"
    );
    assert_eq!(
        c["echo"].as_str(),
        Some("hello through the h2 tunnel"),
        "{what}: echo through the tunnel: {v:#}"
    );
    assert_eq!(
        c["after_eof"].as_str(),
        std::str::from_utf8(ECHO_EOF_REPLY).ok(),
        "{what}: half-close reaches the echo server: {v:#}"
    );
}

#[tokio::test]
async fn authenticator_larger_than_max_frame_size_is_not_sent_and_origin_stays_tunnelled() {
    bounded_for(LIMIT, async {
        let (v, too_large, sent, upstream_requests) = toolarge_run(true).await;
        assert_tunnelled(&v, "oversized chain");
        assert_eq!(
            v["certificates_total"].as_u64(),
            Some(0),
            "no SERVER_CERTIFICATE frame at all: {v:#}"
        );
        let get = &v["get_origin"];
        assert_eq!(
            get["status"].as_u64(),
            Some(421),
            "the origin is not covered: an https GET for it is misdirected: {v:#}"
        );
        assert_proxy_status(
            get["proxy_status"].as_str().unwrap_or_default(),
            "proxy_internal_response",
            "421 for the uncovered origin",
        );
        assert_eq!(v["goaway"], Value::Null, "{v:#}");
        assert_eq!(
            too_large, 1.0,
            "secondary_cert_errors_total{{h2,too_large}}"
        );
        assert_eq!(sent, 0.0, "secondary_certs_sent_total{{h2}}");
        assert_eq!(upstream_requests, 0, "nothing reverse-proxied");
    })
    .await
}

/// The same flow with a small chain: the certificate is sent before the
/// CONNECT's answer and the GET is served (so the size is what made the
/// difference above).
#[tokio::test]
async fn authenticator_within_max_frame_size_is_sent_control() {
    bounded_for(LIMIT, async {
        let (v, too_large, sent, upstream_requests) = toolarge_run(false).await;
        assert_tunnelled(&v, "small chain");
        assert_eq!(
            v["certificates_before_connect_answer"].as_u64(),
            Some(1),
            "on-connect: the certificate precedes the 200: {v:#}"
        );
        assert_eq!(v["get_origin"]["status"].as_u64(), Some(200), "{v:#}");
        assert_eq!(
            too_large, 0.0,
            "secondary_cert_errors_total{{h2,too_large}}"
        );
        assert_eq!(sent, 1.0, "secondary_certs_sent_total{{h2}}");
        assert_eq!(upstream_requests, 1);
    })
    .await
}

//! Client identity from mTLS on a TLS listener (`client_ca`, `client_auth`,
//! `identity_from`): the verified identity reaches the policy's
//! `identities`, on HTTP/1.1 and HTTP/2, with a Rust client and with curl
//! (`--proxy-cert`); `required` refuses a handshake without a certificate or
//! with one from another CA; `optional` serves it as anonymous.

use std::path::PathBuf;
use std::sync::Arc;

use bauta_tests::client_pki::{mtls_h3_config, ClientCert, ClientPki};
use bauta_tests::masque::{
    quic_client_config, quic_client_config_with_cert, udp_path, wait_metric, H3Client, UdpEcho,
};
use bauta_tests::*;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn start(certs: &Certs, pki: &ClientPki, client_auth: &str) -> TestProxy {
    start_proxy(&format!(
        r#"
[[listener]]
name = "mtls"
listen = "127.0.0.1:0"
protocols = ["http1", "h2"]
tls_cert = '{cert}'
tls_key = '{key}'
client_ca = '{ca}'
client_auth = "{client_auth}"

[policy]
default = "deny"

[[policy.rule]]
name = "payments"
action = "allow"
identities = ["spiffe://corp/payments/*"]
cidrs = ["127.0.0.0/8"]

[[policy.rule]]
name = "alice"
action = "allow"
identities = ["alice"]
cidrs = ["127.0.0.0/8"]
"#,
        cert = certs.cert_pem.display(),
        key = certs.key_pem.display(),
        ca = pki.ca_pem.display(),
    ))
    .await
}

fn mtls_addr(proxy: &TestProxy) -> std::net::SocketAddr {
    proxy.listener("mtls")
}

/// A client trusting `ca` for the proxy, presenting `cert` if given.
fn client_config(
    ca: &CertificateDer<'static>,
    cert: Option<&ClientCert>,
    alpn: &[u8],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("proxy CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut cfg = match cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}

/// TLS to the mTLS listener; `Err` when the proxy refuses the handshake
/// (TLS 1.3: the client learns it at its first read).
async fn tls(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::from(addr.ip()), tcp)
        .await
}

/// HTTP/1.1 CONNECT over an established stream: the response status, or
/// `None` when the connection fails first (a refused client certificate).
async fn h1_connect_status(
    mut s: tokio_rustls::client::TlsStream<TcpStream>,
    target: &str,
) -> Option<u16> {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    read_head(&mut s).await.ok().map(|(h, _)| h.status)
}

#[tokio::test]
async fn required_client_certificates_name_the_identity_on_h1_and_h2() {
    bounded(async {
        let certs = make_certs();
        let pki = ClientPki::new("mtls-required");
        let payments = pki.issue("payments", Some("spiffe://corp/payments/api"), "api");
        let alice = pki.issue("alice", None, "alice");
        let web = pki.issue("web", Some("spiffe://corp/web"), "web");
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let proxy = start(&certs, &pki, "required").await;
        let addr = mtls_addr(&proxy);

        // HTTP/1.1: URI SAN first → payments rule.
        let s = tls(
            addr,
            client_config(&certs.ca_der, Some(&payments), b"http/1.1"),
        )
        .await
        .expect("handshake with a client certificate");
        assert_eq!(h1_connect_status(s, &target).await, Some(200));
        // No URI SAN: the CN decides → alice rule.
        let s = tls(
            addr,
            client_config(&certs.ca_der, Some(&alice), b"http/1.1"),
        )
        .await
        .expect("handshake");
        assert_eq!(h1_connect_status(s, &target).await, Some(200));
        // Verified, but no rule names it: default deny.
        let s = tls(addr, client_config(&certs.ca_der, Some(&web), b"http/1.1"))
            .await
            .expect("handshake");
        assert_eq!(h1_connect_status(s, &target).await, Some(403));

        // HTTP/2 (ALPN h2) on the same listener.
        let s = tls(addr, client_config(&certs.ca_der, Some(&payments), b"h2"))
            .await
            .expect("h2 handshake");
        let h2 = h2_client(s).await;
        let (parts, tunnel) = h2_connect(&h2, &target).await;
        assert_eq!(parts.status, 200);
        tunnel
            .expect("tunnel")
            .assert_echo(b"h2 with identity")
            .await;

        for (rule, want) in [("payments", 2.0), ("alice", 1.0)] {
            let n = wait_metric(
                proxy.admin,
                "bauta_policy_decisions_total",
                &[("verdict", "allow"), ("rule", rule)],
                |v| v >= want,
            )
            .await;
            assert_eq!(n, want, "decisions by {rule}");
        }

        // No certificate, or one from another CA: the handshake fails and
        // nothing is served.
        let other =
            ClientPki::new("mtls-other").issue("stranger", Some("spiffe://corp/payments/x"), "x");
        for (what, cert) in [("no certificate", None), ("another CA", Some(&other))] {
            let status = match tls(addr, client_config(&certs.ca_der, cert, b"http/1.1")).await {
                Err(_) => None,
                Ok(s) => h1_connect_status(s, &target).await,
            };
            assert_eq!(status, None, "{what}: refused in the handshake");
        }
        // Each refusal counted by why.
        for reason in ["no_certificate", "bad_certificate"] {
            let n = wait_metric(
                proxy.admin,
                "bauta_auth_failures_total",
                &[("method", "mtls"), ("reason", reason)],
                |v| v >= 1.0,
            )
            .await;
            assert_eq!(n, 1.0, "mtls {reason}");
        }
        assert_eq!(
            echo.accepted(),
            3,
            "only the allowed tunnels reached the target"
        );
    })
    .await
}

#[tokio::test]
async fn optional_client_certificates_serve_anonymous_clients() {
    bounded(async {
        let certs = make_certs();
        let pki = ClientPki::new("mtls-optional");
        let payments = pki.issue("payments", Some("spiffe://corp/payments/api"), "api");
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let proxy = start(&certs, &pki, "optional").await;
        let addr = mtls_addr(&proxy);

        let anonymous = tls(addr, client_config(&certs.ca_der, None, b"http/1.1"))
            .await
            .expect("optional: handshake without a certificate");
        assert_eq!(
            h1_connect_status(anonymous, &target).await,
            Some(403),
            "anonymous matches no identities rule"
        );
        let s = tls(
            addr,
            client_config(&certs.ca_der, Some(&payments), b"http/1.1"),
        )
        .await
        .expect("handshake");
        assert_eq!(h1_connect_status(s, &target).await, Some(200));
    })
    .await
}

/// HTTP/3: the QUIC handshake verifies the client certificate the same way,
/// and the identity reaches the policy (CONNECT-UDP through quinn + h3).
#[tokio::test]
async fn h3_client_certificates_name_the_identity() {
    bounded(async {
        let certs = make_certs();
        let pki = ClientPki::new("mtls-h3");
        let payments = pki.issue("payments", Some("spiffe://corp/payments/api"), "api");
        let web = pki.issue("web", Some("spiffe://corp/web"), "web");
        let udp = UdpEcho::start().await;
        let proxy = start_proxy(&mtls_h3_config(
            &certs,
            &pki,
            "payments",
            "spiffe://corp/payments/*",
        ))
        .await;
        let addr = mtls_addr(&proxy);
        let path = udp_path("127.0.0.1", udp.port());
        let config = |c: &ClientCert| {
            quic_client_config_with_cert(&certs, Some((c.chain.clone(), c.key.clone_key())))
        };

        let mut allowed = H3Client::connect_with(addr, config(&payments)).await;
        let (resp, _stream) = allowed
            .extended_connect(&path, &[("capsule-protocol", "?1")])
            .await
            .expect("CONNECT-UDP");
        assert_eq!(resp.status(), 200, "payments identity over HTTP/3");

        let mut denied = H3Client::connect_with(addr, config(&web)).await;
        let (resp, _stream) = denied
            .extended_connect(&path, &[("capsule-protocol", "?1")])
            .await
            .expect("CONNECT-UDP");
        assert_eq!(resp.status(), 403, "an identity no rule names");

        let n = wait_metric(
            proxy.admin,
            "bauta_policy_decisions_total",
            &[("verdict", "allow"), ("rule", "payments")],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(n, 1.0);

        // Without a certificate the QUIC handshake fails.
        let endpoint = quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("QUIC endpoint");
        let refused = endpoint
            .connect_with(quic_client_config(&certs), addr, "localhost")
            .expect("start QUIC")
            .await;
        let refused = match refused {
            Err(_) => true,
            // TLS 1.3: the client may finish first and learn of the refusal next.
            Ok(conn) => tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed())
                .await
                .is_ok(),
        };
        assert!(
            refused,
            "QUIC handshake without a client certificate is refused"
        );
        let n = wait_metric(
            proxy.admin,
            "bauta_auth_failures_total",
            &[("method", "mtls"), ("reason", "no_certificate")],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(n, 1.0, "QUIC refusal counted");
    })
    .await
}

/// curl, an independent TLS client, presents its certificate to the proxy
/// with `--proxy-cert` / `--proxy-key`.
#[tokio::test]
async fn curl_proxy_cert_is_the_identity() {
    bounded(async {
        let certs = make_certs();
        let pki = ClientPki::new("mtls-curl");
        let payments = pki.issue("payments", Some("spiffe://corp/payments/api"), "api");
        let origin = Origin::start().await;
        let proxy = start(&certs, &pki, "required").await;
        let addr = mtls_addr(&proxy);
        let url = origin.url("/via-mtls");
        let proxy_url = format!("https://127.0.0.1:{}", addr.port());
        let ca = certs.ca_pem.clone();
        let run = |cert: Option<(PathBuf, PathBuf)>| {
            let (url, proxy_url, ca) = (url.clone(), proxy_url.clone(), ca.clone());
            tokio::task::spawn_blocking(move || {
                let mut cmd = std::process::Command::new("curl");
                cmd.args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-p",
                    "--max-time",
                    "10",
                ])
                .arg("-x")
                .arg(proxy_url)
                .arg("--proxy-cacert")
                .arg(ca);
                if let Some((cert, key)) = cert {
                    cmd.arg("--proxy-cert")
                        .arg(cert)
                        .arg("--proxy-key")
                        .arg(key);
                }
                cmd.arg(url);
                let out = run_with_timeout(&mut cmd, std::time::Duration::from_secs(20));
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                )
            })
        };
        let with = Some((payments.cert_pem.clone(), payments.key_pem.clone()));
        let (code, body) = run(with).await.expect("curl task");
        assert_eq!(
            (code, body.as_str()),
            (Some(0), "200"),
            "curl with its certificate"
        );
        let (code, _) = run(None).await.expect("curl task");
        assert_ne!(code, Some(0), "curl without a certificate is refused");
        assert_eq!(
            origin.connections(),
            1,
            "only the identified client got through"
        );
    })
    .await
}

/// A reverse-proxied origin with `identity_header`: the verified identity
/// goes upstream in that header, and a copy forged by the client is removed
/// first (an anonymous client's forgery is removed too).
#[tokio::test]
async fn reverse_proxied_origins_get_the_verified_identity_in_their_header() {
    bounded(async {
        use bauta_tests::seccert_env::{KeyKind, Pki};
        let pki = Pki::new();
        // The listener's own certificate covers origin.test: requests for it
        // on this connection are reverse-proxied.
        let own = pki.origin("origin.test", KeyKind::EcdsaP256, "own");
        let clients = ClientPki::new("mtls-reverse");
        let payments = clients.issue("payments", Some("spiffe://corp/payments/api"), "api");
        let upstream = Origin::start().await;
        let proxy = start_proxy(&format!(
            r#"
[[listener]]
name = "mtls"
listen = "127.0.0.1:0"
protocols = ["http1"]
tls_cert = '{cert}'
tls_key = '{key}'
client_ca = '{ca}'
client_auth = "optional"

[[origin]]
host = "origin.test"
cert = '{cert}'
key = '{key}'
upstream = "http://{up}"
identity_header = "x-client-identity"

[policy]
default = "deny"

[[policy.rule]]
name = "upstreams"
action = "allow"
protocols = ["reverse"]
cidrs = ["127.0.0.0/8"]
"#,
            cert = own.cert_pem.display(),
            key = own.key_pem.display(),
            ca = clients.ca_pem.display(),
            up = upstream.addr,
        ))
        .await;
        let addr = mtls_addr(&proxy);

        let get = |cert: Option<&ClientCert>| {
            let cfg = client_config(&pki.certs.ca_der, cert, b"http/1.1");
            async move {
                let tcp = TcpStream::connect(addr).await.expect("connect");
                let name = ServerName::try_from("origin.test").expect("name");
                let mut s = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .expect("TLS");
                s.write_all(
                    b"GET /who HTTP/1.1\r\nHost: origin.test\r\n\
                      x-client-identity: spiffe://corp/admin/forged\r\n\
                      Connection: close\r\n\r\n",
                )
                .await
                .expect("request");
                read_head(&mut s).await.expect("response").0.status
            }
        };

        assert_eq!(get(Some(&payments)).await, 200, "identified client");
        assert_eq!(get(None).await, 200, "anonymous client (optional)");
        let seen = upstream.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        let values = |i: usize| -> Vec<String> {
            seen[i]
                .headers
                .get_all("x-client-identity")
                .iter()
                .map(|v| v.to_str().expect("ascii").to_string())
                .collect()
        };
        assert_eq!(
            values(0),
            ["spiffe://corp/payments/api"],
            "the verified identity only"
        );
        assert!(
            values(1).is_empty(),
            "the forged copy is removed: {:?}",
            values(1)
        );
    })
    .await
}

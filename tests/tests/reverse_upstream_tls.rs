//! Reverse proxying to an `https://` upstream (spec: `[[origin]] upstream`,
//! `upstream_ca`): the proxy dials the upstream over TLS, offers ALPN `h2`
//! then `http/1.1`, and verifies the upstream's certificate against
//! `upstream_ca`. A certificate it cannot verify answers 502 with
//! `Proxy-Status: bauta; error=tls_certificate_error`.
//!
//! The client is the independent `tests/peers/seccert_h2_client.py`
//! (pyOpenSSL + h2) in eager mode: it validates the proxy's
//! SERVER_CERTIFICATE for origin.test, then GETs https://origin.test/hello on
//! the same connection. The upstream is a local tokio-rustls + hyper server
//! whose certificate (IP SAN 127.0.0.1) comes from its own test CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bauta_tests::seccert_env::{
    assert_certificate, certificates, config_text, peer_args, run_peer, KeyKind, OriginCert,
    OriginEntry, Peer, Pki, SeccertProxy, SECCERT_LIMIT,
};
use bauta_tests::{bounded_for, init, TempDir};
use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const BODY: &str = "hello from tls upstream";

/// A test CA written to `<stem>.pem` (its key kept for signing).
struct TestCa {
    pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(dir: &TempDir, stem: &str, cn: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let pem = dir.write(&format!("{stem}.pem"), &cert.pem());
        TestCa {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server leaf for IP 127.0.0.1: (certificate DER, key DER).
    fn leaf_for_loopback(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("leaf key");
        // rcgen turns an IP-looking name into an iPAddress SAN.
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "tls upstream");
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
        (cert.der().clone(), PrivateKeyDer::Pkcs8(key_der))
    }
}

/// One request as the TLS upstream saw it.
#[derive(Clone, Debug)]
struct Seen {
    version: Version,
    forwarded: Option<String>,
    path: String,
}

/// A TLS upstream on 127.0.0.1:0 offering the given ALPN protocols; HTTP/2
/// when `h2` is negotiated, else HTTP/1.1. Answers every request with
/// [`BODY`] and `x-seen-forwarded: <the request's Forwarded>`.
struct TlsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl TlsUpstream {
    async fn start(ca: &TestCa, alpn: &[&[u8]]) -> TlsUpstream {
        let (cert, key) = ca.leaf_for_loopback();
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("upstream TLS config");
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let st = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    // A failed handshake (the wrong-CA test) just ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let svc = service_fn(move |req| handle(Arc::clone(&st), req));
                    let io = TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
        TlsUpstream { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("upstream lock").clone()
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    seen: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let forwarded = req
        .headers()
        .get(http::header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.lock().expect("upstream lock").push(Seen {
        version: req.version(),
        forwarded: forwarded.clone(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
    });
    let mut resp = Response::builder().header("x-tls-upstream", "yes");
    if let Some(f) = forwarded {
        resp = resp.header("x-seen-forwarded", f);
    }
    Ok(resp
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("response"))
}

/// PKI for the proxy and origin.test, the upstream (its certificate from
/// `upstream_issuer`), and a proxy whose origin trusts `trusted` as
/// `upstream_ca`.
struct Env {
    pki: Pki,
    origin: OriginCert,
    upstream: TlsUpstream,
    proxy: SeccertProxy,
    _dir: TempDir,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// `upstream_ca` is the CA that issued the upstream's certificate.
    IssuingCa,
    /// `upstream_ca` is an unrelated CA.
    OtherCa,
}

impl Env {
    async fn start(alpn: &[&[u8]], trust: Trust) -> Env {
        init();
        let pki = Pki::new();
        let origin = pki.origin("origin.test", KeyKind::EcdsaP256, "origin");
        let dir = TempDir::new("reverse-upstream-tls");
        let upstream_ca = TestCa::new(&dir, "upstream-ca", "Bauta Upstream Test CA");
        let other_ca = TestCa::new(&dir, "other-ca", "Bauta Unrelated Test CA");
        let upstream = TlsUpstream::start(&upstream_ca, alpn).await;
        let trusted = match trust {
            Trust::IssuingCa => &upstream_ca.pem,
            Trust::OtherCa => &other_ca.pem,
        };
        let url = format!("https://{}", upstream.addr);
        let text = config_text(
            &pki,
            "eager",
            &[OriginEntry {
                cert: &origin,
                upstream: url.clone(),
            }],
            "",
        );
        let line = format!("upstream = \"{url}\"\n");
        assert!(text.contains(&line), "config has the upstream line: {text}");
        let text = text.replacen(
            &line,
            &format!("{line}upstream_ca = '{}'\n", trusted.display()),
            1,
        );
        let proxy = SeccertProxy::start(&text).await;
        Env {
            pki,
            origin,
            upstream,
            proxy,
            _dir: dir,
        }
    }

    /// The eager flow on one HTTP/2 connection: the authenticator for
    /// origin.test, then GET https://origin.test/hello.
    async fn flow(&self, what: &str) -> Value {
        let args = peer_args(
            "flow",
            &self.proxy,
            &self.pki,
            &["--advertise", "eager", "--other", ""],
        );
        let v = run_peer(Peer::H2, &args).await;
        let certs = certificates(&v);
        assert_eq!(certs.len(), 1, "{what}: one SERVER_CERTIFICATE: {v:#}");
        assert_certificate(&certs[0], &self.origin, what);
        v
    }
}

fn assert_served_by_tls_upstream(v: &Value, what: &str) {
    let get = &v["get_origin"];
    assert_eq!(
        get["status"].as_u64(),
        Some(200),
        "{what}: GET https://origin.test/hello reverse-proxied to the https upstream: {v:#}"
    );
    assert_eq!(get["body"].as_str(), Some(BODY), "{what}: body: {get:#}");
    assert_eq!(get["ended"].as_bool(), Some(true), "{what}: ended: {get:#}");
    assert_eq!(
        get["headers"]["x-tls-upstream"].as_str(),
        Some("yes"),
        "{what}: upstream response header kept: {get:#}"
    );
    let fwd = get["headers"]["x-seen-forwarded"]
        .as_str()
        .unwrap_or_default();
    assert!(
        fwd.contains("proto=https;host=origin.test"),
        "{what}: Forwarded as the upstream saw it (echoed): {fwd:?}"
    );
}

fn assert_upstream_saw(env: &Env, version: Version, what: &str) {
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 1, "{what}: requests at the upstream: {seen:?}");
    let s = &seen[0];
    assert_eq!(s.version, version, "{what}: upstream protocol: {s:?}");
    assert_eq!(s.path, "/hello", "{what}: path at the upstream: {s:?}");
    let fwd = s.forwarded.as_deref().unwrap_or_default();
    assert!(
        fwd.contains("proto=https;host=origin.test"),
        "{what}: Forwarded at the upstream: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reverse_to_https_upstream_over_h2_with_upstream_ca() {
    bounded_for(SECCERT_LIMIT, async {
        let what = "https upstream, ALPN h2, upstream_ca = issuing CA";
        let env = Env::start(&[b"h2", b"http/1.1"], Trust::IssuingCa).await;
        let v = env.flow(what).await;
        assert_served_by_tls_upstream(&v, what);
        assert_upstream_saw(&env, Version::HTTP_2, what);
        env.proxy.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reverse_to_https_upstream_http1_only() {
    bounded_for(SECCERT_LIMIT, async {
        let what = "https upstream, ALPN http/1.1 only";
        let env = Env::start(&[b"http/1.1"], Trust::IssuingCa).await;
        let v = env.flow(what).await;
        assert_served_by_tls_upstream(&v, what);
        assert_upstream_saw(&env, Version::HTTP_11, what);
        env.proxy.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reverse_to_https_upstream_with_wrong_ca_is_502() {
    bounded_for(SECCERT_LIMIT, async {
        let what = "https upstream, upstream_ca = unrelated CA";
        let env = Env::start(&[b"h2", b"http/1.1"], Trust::OtherCa).await;
        let v = env.flow(what).await;
        let get = &v["get_origin"];
        assert_eq!(
            get["status"].as_u64(),
            Some(502),
            "{what}: an unverifiable upstream certificate is a 502: {v:#}"
        );
        let ps = get["proxy_status"].as_str().unwrap_or_default();
        assert!(
            ps.contains("error=tls_certificate_error"),
            "{what}: Proxy-Status names the certificate failure: {ps:?} in {get:#}"
        );
        assert!(
            env.upstream.seen().is_empty(),
            "{what}: no request reaches the upstream: {:?}",
            env.upstream.seen()
        );
        env.proxy.shutdown().await;
    })
    .await;
}

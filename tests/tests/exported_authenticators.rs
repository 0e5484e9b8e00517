//! RFC 9261 exported authenticators across two TLS stacks: Bauta's `seccert`
//! (rustls, aws-lc-rs) against an independent implementation on OpenSSL
//! (`tests/peers/ea_peer.py`: pyOpenSSL for TLS 1.3 and the exporter,
//! `cryptography` for signatures), over real loopback TLS connections.
//!
//! * Rust server → Python client: the Rust server captures the ClientHello
//!   with `LazyConfigAcceptor`, signs with `ServerAuthenticator`; the Python
//!   client validates with its own code and reports per authenticator.
//! * Python server → Rust client: the Python server builds authenticators
//!   with its own code; the Rust `Validator` must accept the good ones and
//!   reject the replay and the broken one.
//!
//! Every key type (ECDSA P-256, P-384, RSA-PSS 2048, Ed25519) and both hashes
//! (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384), both ways.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bauta::seccert::{
    webpki_verifier, ClientHelloInfo, Exporter, HashAlg, OriginCert, ServerAuthenticator,
    ValidateError, Validator,
};
use bauta_tests::{bounded_for, init, make_certs, Certs, TempDir};
use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// Bound for one test (two suites, a Python start-up each, RSA key generation).
const LIMIT: Duration = Duration::from_secs(60);

/// What `ea_peer.py validate` offers by default (its `DEFAULT_SIGALGS`).
const PY_SIGALGS: [u16; 7] = [0x0403, 0x0503, 0x0807, 0x0804, 0x0805, 0x0806, 0x0401];

#[derive(Clone, Copy, Debug)]
enum Kind {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Ed25519,
}

/// One origin: a CA (P-256) and a leaf with a `Kind` key; chain = [leaf, CA].
struct TestOrigin {
    name: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
    chain_pem: PathBuf,
    key_pem: PathBuf,
    _dir: TempDir,
}

struct Suite {
    openssl_name: &'static str,
    suite: CipherSuite,
    hash: HashAlg,
    hash_name: &'static str,
}

const SUITES: [Suite; 2] = [
    Suite {
        openssl_name: "TLS_AES_128_GCM_SHA256",
        suite: CipherSuite::TLS13_AES_128_GCM_SHA256,
        hash: HashAlg::Sha256,
        hash_name: "sha256",
    },
    Suite {
        openssl_name: "TLS_AES_256_GCM_SHA384",
        suite: CipherSuite::TLS13_AES_256_GCM_SHA384,
        hash: HashAlg::Sha384,
        hash_name: "sha384",
    },
];

impl Kind {
    fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Kind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Kind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Kind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            Kind::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// The scheme the Rust signer picks from the Python client's list.
    fn rust_scheme(self) -> u16 {
        match self {
            Kind::EcdsaP256 => 0x0403,
            Kind::EcdsaP384 => 0x0503,
            // aws-lc-rs RSA keys prefer the longest PSS hash offered.
            Kind::Rsa2048 => 0x0806,
            Kind::Ed25519 => 0x0807,
        }
    }

    /// The scheme the Python signer picks.
    fn python_scheme(self) -> SignatureScheme {
        match self {
            Kind::EcdsaP256 => SignatureScheme::ECDSA_NISTP256_SHA256,
            Kind::EcdsaP384 => SignatureScheme::ECDSA_NISTP384_SHA384,
            Kind::Rsa2048 => SignatureScheme::RSA_PSS_SHA256,
            Kind::Ed25519 => SignatureScheme::ED25519,
        }
    }
}

fn origin(kind: Kind, name: &str) -> TestOrigin {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "EA Origin CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate_for(kind.rcgen_alg()).expect("origin key");
    let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
    params.is_ca = IsCa::ExplicitNoCa;
    let leaf = params.signed_by(&key, &issuer).expect("sign leaf");
    let dir = TempDir::new("ea-origin");
    let chain_pem = dir.write("chain.pem", &format!("{}{}", leaf.pem(), ca.pem()));
    let key_pem = dir.write("key.pem", &key.serialize_pem());
    TestOrigin {
        name: name.to_string(),
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ca: ca.der().clone(),
        chain_pem,
        key_pem,
        _dir: dir,
    }
}

/// aws-lc-rs with only `suite`, so the handshake negotiates it.
fn provider_with(suite: CipherSuite) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.retain(|s| s.suite() == suite);
    assert_eq!(p.cipher_suites.len(), 1);
    Arc::new(p)
}

/// `$BAUTA_TEST_PYTHON`, else `<workspace>/target/venv/bin/python`; the test
/// fails (not skips) without one.
fn python() -> PathBuf {
    let p = std::env::var_os("BAUTA_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python")
        });
    assert!(
        p.exists(),
        "no Python for the OpenSSL peer at {}: run tests/run.sh (it creates the venv from \
         tests/peers/requirements.txt: pyOpenSSL, cryptography), or set BAUTA_TEST_PYTHON",
        p.display()
    );
    p
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/ea_peer.py")
}

/// Start the peer; stdout is piped (JSON lines), stderr goes to the test's.
fn spawn_peer(args: &[&str]) -> Child {
    Command::new(python())
        .arg(peer_script())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start ea_peer.py")
}

/// Wait for the peer; its last stdout line that is a JSON object.
async fn peer_result(child: Child) -> Value {
    let out = child.wait_with_output().await.expect("ea_peer.py output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ea_peer.py failed ({:?}; its stderr is above)\nstdout: {stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from ea_peer.py\nstdout: {stdout}"));
    serde_json::from_str(line).expect("JSON")
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, data: &[u8]) {
    let len = u32::try_from(data.len()).expect("frame length");
    s.write_all(&len.to_be_bytes()).await.expect("write");
    s.write_all(data).await.expect("write");
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.expect("frame length");
    let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut data).await.expect("frame");
    data
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn server_config(certs: &Certs, suite: &Suite) -> Arc<rustls::ServerConfig> {
    let chain = bauta::tls::load_certs(&certs.cert_pem).expect("TLS chain");
    let key = bauta::tls::load_key(&certs.key_pem).expect("TLS key");
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider_with(suite.suite))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config"),
    )
}

/// Accept one TLS connection, capturing the ClientHello's
/// `signature_algorithms` before the handshake completes.
async fn accept(
    listener: &TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> (tokio_rustls::server::TlsStream<TcpStream>, ClientHelloInfo) {
    let (tcp, _) = listener.accept().await.expect("accept");
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
        .await
        .expect("ClientHello");
    let info = ClientHelloInfo::from_client_hello(&start.client_hello());
    let tls = start.into_stream(config).await.expect("TLS handshake");
    (tls, info)
}

// === Rust server, Python client ===

async fn rust_server_python_client(kind: Kind) {
    init();
    let certs = make_certs();
    for suite in &SUITES {
        let o1 = origin(kind, "one.ea.test");
        let o2 = origin(kind, "two.ea.test");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port().to_string();
        let ca = certs.ca_pem.to_str().expect("path");
        let child = spawn_peer(&[
            "validate",
            "--port",
            &port,
            "--ca",
            ca,
            "--suite",
            suite.openssl_name,
        ]);
        let (mut tls, info) = accept(&listener, server_config(&certs, suite)).await;

        // The capture saw exactly what OpenSSL was told to offer.
        let captured: Vec<u16> = info
            .signature_schemes
            .iter()
            .map(|s| u16::from(*s))
            .collect();
        assert_eq!(captured, PY_SIGALGS, "captured signature_algorithms");

        let exporter = Exporter::from_rustls(tls.get_ref().1).expect("exporter");
        assert_eq!(exporter.hash(), suite.hash);
        let mut sa = ServerAuthenticator::new(exporter.clone(), &info.signature_schemes);
        let rng = rustls::crypto::aws_lc_rs::default_provider().secure_random;
        let o1 = (
            Arc::new(OriginCert::from_der(o1.chain.clone(), o1.key.clone_key()).expect("o1")),
            o1,
        );
        let o2 = (
            Arc::new(OriginCert::from_der(o2.chain.clone(), o2.key.clone_key()).expect("o2")),
            o2,
        );
        let a1 = sa.authenticator(&o1.0, rng).expect("authenticate one");
        let a2 = sa.authenticator(&o2.0, rng).expect("authenticate two");
        // A broken copy of a1: the last signature byte flipped.
        let mut broken = a1.to_vec();
        let sig_end = broken.len() - 4 - suite.hash.output_len() - 1;
        broken[sig_end] ^= 0x01;

        for frame in [&broken[..], &a1, &a2, &a1] {
            write_frame(&mut tls, frame).await;
        }
        write_frame(&mut tls, &[]).await;
        tls.flush().await.expect("flush");
        // Wait for the client to finish reading and close.
        let mut sink = Vec::new();
        let _ = tls.read_to_end(&mut sink).await;

        let r = peer_result(child).await;
        let what = format!("{kind:?} {}", suite.openssl_name);
        assert_eq!(r["cipher"], suite.openssl_name, "{what}");
        assert_eq!(r["hash"], suite.hash_name, "{what}");
        assert_eq!(r["empty_context_equals_none"], true, "{what}");
        // Both stacks derived the same exporter values.
        assert_eq!(
            r["handshake_context"],
            hex(exporter.handshake_context()),
            "{what}"
        );
        assert_eq!(r["finished_key"], hex(exporter.finished_key()), "{what}");
        let results = r["results"].as_array().expect("results");
        assert_eq!(results.len(), 4, "{what}: {r}");
        assert_eq!(results[0]["valid"], false, "{what}: broken accepted");
        assert!(
            results[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("signature")),
            "{what}: {}",
            results[0]
        );
        for (res, (a, o)) in [(&results[1], (&a1, &o1.1)), (&results[2], (&a2, &o2.1))] {
            assert_eq!(res["valid"], true, "{what}: {res}");
            assert_eq!(res["scheme"], kind.rust_scheme(), "{what}");
            assert_eq!(res["context"], hex(&a[5..37]), "{what}");
            assert_eq!(res["chain_len"], 2, "{what}");
            assert_eq!(res["names"][0], o.name.as_str(), "{what}");
        }
        assert_eq!(results[3]["valid"], false, "{what}: replay accepted");
        assert!(
            results[3]["error"]
                .as_str()
                .is_some_and(|e| e.contains("repeated")),
            "{what}: {}",
            results[3]
        );
    }
}

#[tokio::test]
async fn rust_server_to_openssl_client_ecdsa_p256() {
    bounded_for(LIMIT, rust_server_python_client(Kind::EcdsaP256)).await;
}

#[tokio::test]
async fn rust_server_to_openssl_client_ecdsa_p384() {
    bounded_for(LIMIT, rust_server_python_client(Kind::EcdsaP384)).await;
}

#[tokio::test]
async fn rust_server_to_openssl_client_rsa_pss() {
    bounded_for(LIMIT, rust_server_python_client(Kind::Rsa2048)).await;
}

#[tokio::test]
async fn rust_server_to_openssl_client_ed25519() {
    bounded_for(LIMIT, rust_server_python_client(Kind::Ed25519)).await;
}

/// The client offered no scheme that suits the origin key: the server makes
/// no authenticator (RFC 9261 §5.2.2) and says why.
#[tokio::test]
async fn rust_server_refuses_when_no_offered_scheme_fits() {
    bounded_for(LIMIT, async {
        init();
        let certs = make_certs();
        let suite = &SUITES[0];
        let o = origin(Kind::Ed25519, "ed.ea.test");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port().to_string();
        let child = spawn_peer(&[
            "validate",
            "--port",
            &port,
            "--ca",
            certs.ca_pem.to_str().expect("path"),
            "--suite",
            suite.openssl_name,
            "--sigalgs",
            "ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256:rsa_pkcs1_sha256",
        ]);
        let (mut tls, info) = accept(&listener, server_config(&certs, suite)).await;
        let exporter = Exporter::from_rustls(tls.get_ref().1).expect("exporter");
        let mut sa = ServerAuthenticator::new(exporter, &info.signature_schemes);
        let oc = Arc::new(OriginCert::from_der(o.chain.clone(), o.key.clone_key()).expect("o"));
        let rng = rustls::crypto::aws_lc_rs::default_provider().secure_random;
        let err = sa.authenticator(&oc, rng).expect_err("no scheme fits");
        assert!(
            matches!(err, bauta::seccert::AuthError::NoSchemeFits { .. }),
            "{err}"
        );
        write_frame(&mut tls, &[]).await;
        tls.flush().await.expect("flush");
        let mut sink = Vec::new();
        let _ = tls.read_to_end(&mut sink).await;
        let r = peer_result(child).await;
        assert_eq!(r["results"].as_array().map(Vec::len), Some(0), "{r}");
    })
    .await;
}

// === Python server, Rust client ===

async fn python_server_rust_client(kind: Kind) {
    init();
    let certs = make_certs();
    for suite in &SUITES {
        let what = format!("{kind:?} {}", suite.openssl_name);
        let o = origin(kind, "py.ea.test");
        let mut child = spawn_peer(&[
            "serve",
            "--tls-cert",
            certs.cert_pem.to_str().expect("path"),
            "--tls-key",
            certs.key_pem.to_str().expect("path"),
            "--origin-chain",
            o.chain_pem.to_str().expect("path"),
            "--origin-key",
            o.key_pem.to_str().expect("path"),
            "--suite",
            suite.openssl_name,
        ]);
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next_line()
            .await
            .expect("read port")
            .unwrap_or_else(|| panic!("{what}: ea_peer.py serve printed nothing"));
        let port: Value = serde_json::from_str(&first).expect("port JSON");
        let port = u16::try_from(port["port"].as_u64().expect("port")).expect("port");

        let mut roots = RootCertStore::empty();
        roots.add(certs.ca_der.clone()).expect("TLS CA");
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider_with(suite.suite))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // What this client puts in signature_algorithms.
        let offered = client_cfg
            .crypto_provider()
            .signature_verification_algorithms
            .supported_schemes();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut tls = connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake");
        let exporter = Exporter::from_rustls(tls.get_ref().1).expect("exporter");
        assert_eq!(exporter.hash(), suite.hash, "{what}");
        let mut validator = Validator::new(exporter.clone(), &offered);

        let mut frames = Vec::new();
        loop {
            let f = read_frame(&mut tls).await;
            if f.is_empty() {
                break;
            }
            frames.push(f);
        }
        assert_eq!(frames.len(), 4, "{what}");
        let results: Vec<_> = frames.iter().map(|f| validator.validate(f)).collect();
        let first = results[0]
            .as_ref()
            .unwrap_or_else(|e| panic!("{what}: Python's authenticator rejected: {e}"));
        assert_eq!(first.scheme(), kind.python_scheme(), "{what}");
        assert_eq!(first.chain(), &o.chain[..], "{what}");
        assert_eq!(first.context().len(), 32, "{what}");
        assert_eq!(
            results[1].as_ref().err(),
            Some(&ValidateError::RepeatedContext),
            "{what}: replay"
        );
        assert_eq!(
            results[2].as_ref().err(),
            Some(&ValidateError::BadFinished),
            "{what}: broken Finished"
        );
        assert!(results[3].is_ok(), "{what}: {:?}", results[3]);

        // Acceptable for its origin, not for another name.
        let mut origin_roots = RootCertStore::empty();
        origin_roots.add(o.ca.clone()).expect("origin CA");
        let verifier = webpki_verifier(Arc::new(origin_roots)).expect("verifier");
        let name = ServerName::try_from(o.name.as_str()).expect("name");
        first
            .accept_for(verifier.as_ref(), &name, UnixTime::now())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let other = ServerName::try_from("other.ea.test").expect("name");
        assert!(first
            .accept_for(verifier.as_ref(), &other, UnixTime::now())
            .is_err());

        tls.shutdown().await.expect("close");
        drop(tls);
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest = line;
        }
        let status = child.wait().await.expect("ea_peer.py exit");
        assert!(
            status.success(),
            "{what}: ea_peer.py serve failed: {status:?}"
        );
        let r: Value = serde_json::from_str(&rest).expect("summary JSON");
        assert_eq!(r["cipher"], suite.openssl_name, "{what}");
        assert_eq!(r["hash"], suite.hash_name, "{what}");
        assert_eq!(
            r["handshake_context"],
            hex(exporter.handshake_context()),
            "{what}"
        );
        assert_eq!(r["finished_key"], hex(exporter.finished_key()), "{what}");
    }
}

#[tokio::test]
async fn openssl_server_to_rust_client_ecdsa_p256() {
    bounded_for(LIMIT, python_server_rust_client(Kind::EcdsaP256)).await;
}

#[tokio::test]
async fn openssl_server_to_rust_client_ecdsa_p384() {
    bounded_for(LIMIT, python_server_rust_client(Kind::EcdsaP384)).await;
}

#[tokio::test]
async fn openssl_server_to_rust_client_rsa_pss() {
    bounded_for(LIMIT, python_server_rust_client(Kind::Rsa2048)).await;
}

#[tokio::test]
async fn openssl_server_to_rust_client_ed25519() {
    bounded_for(LIMIT, python_server_rust_client(Kind::Ed25519)).await;
}

// === QUIC ===

/// The QUIC path: the ClientHello is captured by a per-connection
/// `CapturingResolver` (quinn `Incoming::accept_with`), both ends' quinn
/// exporters agree, and an authenticator made on one end validates on the
/// other. (quinn does not report the suite; the proxy's QUIC listener offers
/// SHA-256 suites only, `bauta::tls::quic_server_config`.)
#[tokio::test]
async fn quic_capture_and_exporters_agree() {
    bounded_for(LIMIT, async {
        init();
        let certs = make_certs();
        let chain = bauta::tls::load_certs(&certs.cert_pem).expect("chain");
        let key = bauta::tls::load_key(&certs.key_pem).expect("key");
        let base = bauta::tls::quic_server_config(chain, key, None).expect("QUIC TLS config");
        let listener_crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(base.clone()).expect("QUIC crypto");
        let server_ep = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(listener_crypto)),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .expect("server endpoint");
        let addr = server_ep.local_addr().expect("addr");

        let server = async {
            let incoming = server_ep.accept().await.expect("incoming");
            let (tls, slot) = bauta::seccert::CapturingResolver::config_for_connection(&base);
            let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("crypto");
            let conn = incoming
                .accept_with(Arc::new(quinn::ServerConfig::with_crypto(Arc::new(crypto))))
                .expect("accept")
                .await
                .expect("server handshake");
            (conn, slot)
        };
        let mut roots = RootCertStore::empty();
        roots.add(certs.ca_der.clone()).expect("CA");
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let offered = tls
            .crypto_provider()
            .signature_verification_algorithms
            .supported_schemes();
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).expect("crypto");
        let client_ep =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
        let client = async {
            client_ep
                .connect_with(
                    quinn::ClientConfig::new(Arc::new(crypto)),
                    addr,
                    "localhost",
                )
                .expect("connect")
                .await
                .expect("client handshake")
        };
        let ((sconn, slot), cconn) = tokio::join!(server, client);

        let info = slot.get().expect("ClientHello captured");
        assert_eq!(info.signature_schemes, offered);
        assert_eq!(info.server_name.as_deref(), Some("localhost"));
        let se = Exporter::from_quinn(&sconn, HashAlg::Sha256).expect("server exporter");
        let ce = Exporter::from_quinn(&cconn, HashAlg::Sha256).expect("client exporter");
        assert_eq!(se.handshake_context(), ce.handshake_context());
        assert_eq!(se.finished_key(), ce.finished_key());

        let rng = rustls::crypto::aws_lc_rs::default_provider().secure_random;
        let mut sa = ServerAuthenticator::new(se, &info.signature_schemes);
        let mut v = Validator::new(ce, &offered);
        for kind in [Kind::EcdsaP256, Kind::Ed25519] {
            let o = origin(kind, "quic.ea.test");
            let oc = Arc::new(OriginCert::from_der(o.chain.clone(), o.key.clone_key()).expect("o"));
            let a = sa.authenticator(&oc, rng).expect("authenticate");
            let ok = v.validate(&a).expect("validate");
            assert_eq!(ok.chain(), &o.chain[..]);
        }
        cconn.close(0u32.into(), b"done");
        sconn.close(0u32.into(), b"done");
    })
    .await;
}

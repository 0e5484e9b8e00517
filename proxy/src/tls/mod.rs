//! TLS material: PEM loading, server configs, and the self-signed certificate
//! of the embedded default configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

pub mod identity;
pub mod secret_file;

/// The one crypto provider of the process (aws-lc-rs). Installed once at
/// start so that no library falls back to a different default.
pub fn install_crypto_provider() {
    // Err means one is already installed, which is the state we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Read a PEM certificate chain (leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut data.as_slice()).collect();
    let certs = certs.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE block found", path.display()));
    }
    Ok(certs)
}

/// Read a PEM private key: PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    secret_file::warn_if_exposed(path, "private key file");
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| format!("{}: bad PEM: {e}", path.display()))?
        .ok_or_else(|| {
            format!(
                "{}: no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block found",
                path.display()
            )
        })
}

/// Client certificates a listener asks for: verified against `roots`;
/// without one the handshake fails when `required`, else the client is
/// anonymous.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    pub roots: Arc<rustls::RootCertStore>,
    pub required: bool,
}

/// `reason` values of `bauta_auth_failures_total{method="mtls"}`.
pub const MTLS_FAILURES: &[&str] = &["no_certificate", "bad_certificate"];

/// Why a TLS handshake failed on the client's certificate, if it did.
pub fn mtls_failure(e: &rustls::Error) -> Option<&'static str> {
    match e {
        rustls::Error::NoCertificatesPresented => Some("no_certificate"),
        rustls::Error::InvalidCertificate(_) => Some("bad_certificate"),
        _ => None,
    }
}

/// The same for a QUIC handshake, from the TLS alert we closed it with
/// (QUIC carries it as transport error 0x100 + alert, RFC 9001 §4.8).
pub fn mtls_failure_quic(e: &quinn::ConnectionError) -> Option<&'static str> {
    let quinn::ConnectionError::TransportError(t) = e else {
        return None;
    };
    match u64::from(t.code).checked_sub(0x100)? {
        // certificate_required (RFC 8446 §4.4.2.4)
        116 => Some("no_certificate"),
        // bad_certificate, unsupported, revoked, expired, unknown, unknown_ca
        42..=46 | 48 => Some("bad_certificate"),
        _ => None,
    }
}

/// As `mtls_failure`, for the I/O error tokio-rustls reports.
pub fn mtls_failure_io(e: &std::io::Error) -> Option<&'static str> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(mtls_failure)
}

fn client_verifier(
    client: Option<&ClientAuth>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let Some(c) = client else {
        return Ok(rustls::server::WebPkiClientVerifier::no_client_auth());
    };
    let builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::clone(&c.roots), provider);
    let builder = if c.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| format!("client certificate verifier: {e}"))
}

/// A server config with the given ALPN list, TLS 1.2 and 1.3, and client
/// certificates if `client` asks for them.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: Vec<Vec<u8>>,
    client: Option<&ClientAuth>,
) -> Result<rustls::ServerConfig, String> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_client_cert_verifier(client_verifier(client, provider())?)
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))?;
    cfg.alpn_protocols = alpn;
    Ok(cfg)
}

/// The provider for QUIC: only SHA-256 TLS 1.3 suites, so that both ends
/// know the exporter hash without asking quinn for the suite.
pub fn quic_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.retain(|s| {
        matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        )
    });
    provider
}

/// A TLS config for QUIC: TLS 1.3 only, SHA-256 cipher suites only (quinn
/// does not report the negotiated suite, and RFC 9261 exporters need its
/// hash), ALPN `h3`, no 0-RTT.
pub fn quic_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client: Option<&ClientAuth>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(quic_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("QUIC TLS setup: {e}"))?
        .with_client_cert_verifier(client_verifier(client, provider)?)
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))?;
    cfg.alpn_protocols = vec![b"h3".to_vec()];
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// Trust anchors: the certificates in `ca` when given, else the system's
/// roots (the Mozilla roots we ship when the system has none).
pub fn root_store(ca: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for c in load_certs(path)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: not a usable trust anchor: {e}", path.display()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
        }
    }
    Ok(roots)
}

/// The TLS server name for a target host (an IP literal or a DNS name).
pub fn server_name(
    host: &bauta_policy::Host,
) -> Result<rustls::pki_types::ServerName<'static>, String> {
    match host {
        bauta_policy::Host::Ip(ip) => Ok(rustls::pki_types::ServerName::IpAddress((*ip).into())),
        bauta_policy::Host::Name(n) => rustls::pki_types::ServerName::try_from(n.clone())
            .map_err(|_| format!("{n:?} is not a valid TLS server name")),
    }
}

/// SHA-256 fingerprint as colon-separated upper-case hex (as `openssl x509 -fingerprint` prints).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Where the embedded default keeps its generated certificate.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BAUTA_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("bauta");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/state/bauta");
    }
    PathBuf::from(".bauta")
}

/// Paths of the default self-signed certificate, generating it on first use.
/// Returns (cert path, key path, created now?).
pub fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf, bool), String> {
    let cert_path = dir.join("proxy.pem");
    let key_path = dir.join("proxy.key");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path, false));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, certified.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
    Ok((cert_path, key_path, true))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts`, by the crypto
/// provider's library.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use aws_lc_rs::hmac;
    let mut cx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    for p in parts {
        cx.update(p);
    }
    let mut out = [0u8; 32];
    let tag = cx.sign();
    let n = out.len().min(tag.as_ref().len());
    if let (Some(o), Some(t)) = (out.get_mut(..n), tag.as_ref().get(..n)) {
        o.copy_from_slice(t);
    }
    out
}

/// The QUIC stateless-reset key of a listener: from its private key and
/// name, so stable across restarts and secret as the key is.
pub fn stateless_reset_key(key: &PrivateKeyDer<'_>, listener: &str) -> [u8; 32] {
    hmac_sha256(
        key.secret_der(),
        &[b"bauta QUIC stateless reset v1\0", listener.as_bytes()],
    )
}

#[cfg(test)]
mod tests {
    /// RFC 4231 test case 2, and a key longer than a block (case 6).
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(super::hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(super::hmac_sha256(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    use super::*;

    #[test]
    fn self_signed_is_generated_once_and_loads() {
        install_crypto_provider();
        let dir = std::env::temp_dir().join(format!("bauta-tls-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (c, k, created) = ensure_self_signed(&dir).expect("generate");
        assert!(created);
        let (_, _, again) = ensure_self_signed(&dir).expect("reuse");
        assert!(!again);
        let chain = load_certs(&c).expect("certs");
        let key = load_key(&k).expect("key");
        let fp = fingerprint(&chain[0]);
        assert_eq!(fp.len(), 32 * 3 - 1);
        server_config(chain, key, vec![b"h2".to_vec()], None).expect("config");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// SECURITY.md: no 0-RTT anywhere (replayable requests), TLS 1.3 only
    /// on QUIC, TLS 1.2 and 1.3 on TCP.
    #[test]
    fn listener_configs_refuse_0rtt_and_old_versions() {
        install_crypto_provider();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let chain = vec![cert.cert.der().clone()];
        let key = || PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let tcp = server_config(chain.clone(), key(), vec![b"h2".to_vec()], None).expect("tcp");
        let quic = quic_server_config(chain, key(), None).expect("quic");
        for cfg in [&tcp, &quic] {
            assert_eq!(cfg.max_early_data_size, 0, "0-RTT off");
            assert!(!cfg.send_half_rtt_data);
        }
        assert!(quic
            .crypto_provider()
            .cipher_suites
            .iter()
            .all(|s| s.version() == &rustls::version::TLS13));
        assert!(tcp.crypto_provider().cipher_suites.iter().all(|s| [
            &rustls::version::TLS12,
            &rustls::version::TLS13
        ]
        .contains(&s.version())));
    }

    #[test]
    fn missing_key_block_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("bauta-tls-test2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("empty.pem");
        std::fs::write(&p, "not pem").expect("write");
        assert!(load_key(&p).expect_err("error").contains("no PRIVATE KEY"));
        assert!(load_certs(&p)
            .expect_err("error")
            .contains("no CERTIFICATE"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! TLS Exported Authenticators (RFC 9261), spontaneous server mode only: the
//! cryptographic core of secondary certificates
//! (`shared/spec/exported-authenticators.md` is the digest this follows).
//!
//! * Server: [`OriginCert`] holds an origin's chain and key, with its
//!   `certificate_list` encoded once; [`ServerAuthenticator`] (one per
//!   connection) signs each origin once and caches the bytes;
//!   [`authenticate`] is the underlying one-shot function.
//! * Client: [`Validator`] (one per connection) checks an authenticator in the
//!   digest's order (§12) and returns a [`Validated`] proof, or a
//!   [`ValidateError`] naming the failed step. Whether the certificate is
//!   *acceptable* for an origin (chain, name, expiry) is a separate question:
//!   [`Validated::accept_for`], with rustls's `WebPkiServerVerifier`.
//! * Both ends bind to the connection through an [`Exporter`] (the two
//!   RFC 9261 §5.1 exporter outputs with the **server** labels) and a
//!   [`HashAlg`] (the negotiated TLS 1.3 suite's hash).
//! * The server must know the client's ClientHello `signature_algorithms`:
//!   [`ClientHelloInfo`] and [`CapturingResolver`] capture them.

mod authenticator;
mod capture;
pub mod messages;
pub mod sig_schemes;
mod validator;

pub mod advertiser;
pub mod coverage;
pub mod h2_shim;
pub mod h3_shim;
pub mod negotiation;

#[cfg(test)]
mod testkeys;
#[cfg(test)]
mod vectors;

use std::fmt;

use rustls::crypto::hash::{HashAlgorithm, Output};
use rustls::crypto::hmac::Tag;
use rustls::crypto::tls13::OkmBlock;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::{CipherSuite, ProtocolVersion, SupportedCipherSuite, Tls13CipherSuite};

pub use authenticator::{
    authenticate, fresh_context, AuthError, OriginCert, ServerAuthenticator, CONTEXT_LEN,
};
pub use capture::{CapturingResolver, ClientHelloInfo, ClientHelloSlot};
pub use validator::{
    webpki_verifier, AcceptedOrigin, CertificateUnacceptable, ValidateError, Validated, Validator,
    CT_EXTENSIONS, DEFAULT_MAX_SIZE,
};

/// Exporter label for the Handshake Context of a server-sent authenticator
/// (RFC 9261 §5.1; 47 bytes).
pub const SERVER_HANDSHAKE_CONTEXT_LABEL: &[u8] =
    b"EXPORTER-server authenticator handshake context";
/// Exporter label for the Finished MAC Key of a server-sent authenticator
/// (RFC 9261 §5.1; 42 bytes).
pub const SERVER_FINISHED_KEY_LABEL: &[u8] = b"EXPORTER-server authenticator finished key";
/// Client-role labels (RFC 9261 §5.1). Unused by the project (only servers
/// send spontaneous authenticators); kept for tests that must fail with them.
pub const CLIENT_HANDSHAKE_CONTEXT_LABEL: &[u8] =
    b"EXPORTER-client authenticator handshake context";
pub const CLIENT_FINISHED_KEY_LABEL: &[u8] = b"EXPORTER-client authenticator finished key";

/// The context string of the CertificateVerify signature (RFC 9261 §5.2.2).
pub const SIGNATURE_CONTEXT: &[u8] = b"Exported Authenticator";

/// The authenticator hash: the hash of the negotiated TLS 1.3 cipher suite
/// (RFC 9261 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha256,
    Sha384,
}

/// The two exporter outputs that bind authenticators to one connection
/// (RFC 9261 §5.1), for **server-sent** authenticators, with their hash.
#[derive(Clone)]
pub struct Exporter {
    hash: HashAlg,
    handshake_context: Vec<u8>,
    finished_key: Vec<u8>,
}

/// Why the exporter values cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// "every API MUST fail" below TLS 1.3 in this project (RFC 9261 §7 allows
    /// TLS 1.2 with extended master secret; the project uses TLS 1.3 only).
    #[error("the connection is not TLS 1.3 ({0:?})")]
    NotTls13(Option<ProtocolVersion>),
    /// The handshake, including the client Finished, is not complete
    /// (RFC 9261 §9).
    #[error("the TLS handshake is not complete")]
    Handshaking,
    /// The suite has no hash that we support (RFC 9261 §5.1).
    #[error("cipher suite {0:?} has no supported authenticator hash")]
    UnsupportedSuite(CipherSuite),
    /// A supplied exporter value has the wrong length (must be the hash length).
    #[error("exporter value is {found} bytes, the hash needs {expected}")]
    WrongLength { expected: usize, found: usize },
    /// The TLS library refused to export.
    #[error("TLS exporter failed: {0}")]
    Export(String),
}

// === impl HashAlg ===

impl HashAlg {
    /// Output length L (32 or 48).
    pub const fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
        }
    }

    /// The hash of a negotiated TLS 1.3 cipher suite.
    pub fn from_suite(suite: SupportedCipherSuite) -> Result<HashAlg, ExporterError> {
        let Some(t13) = suite.tls13() else {
            return Err(ExporterError::NotTls13(Some(ProtocolVersion::TLSv1_2)));
        };
        match t13.common.hash_provider.algorithm() {
            HashAlgorithm::SHA256 => Ok(HashAlg::Sha256),
            HashAlgorithm::SHA384 => Ok(HashAlg::Sha384),
            _ => Err(ExporterError::UnsupportedSuite(suite.suite())),
        }
    }

    /// An aws-lc-rs TLS 1.3 suite with this hash: the source of the hash and
    /// HMAC implementations (the process's one crypto provider).
    fn suite(self) -> &'static Tls13CipherSuite {
        let s = match self {
            HashAlg::Sha256 => aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
            HashAlg::Sha384 => aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
        };
        match s {
            SupportedCipherSuite::Tls13(t) => t,
            // Both constants above are TLS 1.3 suites.
            #[allow(unreachable_patterns)]
            _ => unreachable!("aws-lc-rs TLS13_* suites are TLS 1.3 suites"),
        }
    }

    /// Hash(parts[0] || parts[1] || …).
    pub(crate) fn hash(self, parts: &[&[u8]]) -> Output {
        let mut cx = self.suite().common.hash_provider.start();
        for p in parts {
            cx.update(p);
        }
        cx.finish()
    }

    /// HMAC_Hash(key, msg). `key` is at most 48 bytes (an [`Exporter`] value).
    pub(crate) fn hmac(self, key: &[u8], msg: &[u8]) -> Tag {
        self.suite()
            .hkdf_provider
            .hmac_sign(&OkmBlock::new(key), msg)
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha384 => "SHA-384",
        })
    }
}

// === impl Exporter ===

impl Exporter {
    /// From already exported values (test vectors, another TLS stack).
    pub fn new(
        hash: HashAlg,
        handshake_context: Vec<u8>,
        finished_key: Vec<u8>,
    ) -> Result<Exporter, ExporterError> {
        for v in [&handshake_context, &finished_key] {
            if v.len() != hash.output_len() {
                return Err(ExporterError::WrongLength {
                    expected: hash.output_len(),
                    found: v.len(),
                });
            }
        }
        Ok(Exporter {
            hash,
            handshake_context,
            finished_key,
        })
    }

    /// Call `export(label, out)` for the two server labels, with an empty
    /// context and L = hash length (RFC 9261 §5.1).
    pub fn from_fn<E: fmt::Display>(
        hash: HashAlg,
        mut export: impl FnMut(&[u8], &mut [u8]) -> Result<(), E>,
    ) -> Result<Exporter, ExporterError> {
        let mut hc = vec![0u8; hash.output_len()];
        let mut fk = vec![0u8; hash.output_len()];
        export(SERVER_HANDSHAKE_CONTEXT_LABEL, &mut hc)
            .map_err(|e| ExporterError::Export(e.to_string()))?;
        export(SERVER_FINISHED_KEY_LABEL, &mut fk)
            .map_err(|e| ExporterError::Export(e.to_string()))?;
        Exporter::new(hash, hc, fk)
    }

    /// From a rustls connection (client or server) after its handshake: TLS
    /// 1.3 only, hash from the negotiated suite.
    pub fn from_rustls<D>(conn: &rustls::ConnectionCommon<D>) -> Result<Exporter, ExporterError> {
        if conn.is_handshaking() {
            return Err(ExporterError::Handshaking);
        }
        let version = conn.protocol_version();
        if version != Some(ProtocolVersion::TLSv1_3) {
            return Err(ExporterError::NotTls13(version));
        }
        let suite = conn
            .negotiated_cipher_suite()
            .ok_or(ExporterError::Handshaking)?;
        let hash = HashAlg::from_suite(suite)?;
        // RFC 8446 §7.5: in TLS 1.3 an empty context and no context give the
        // same output; pass the empty context RFC 9261 §5.1 names.
        Exporter::from_fn(hash, |label, out| {
            conn.export_keying_material(out, label, Some(&[]))
                .map(|_| ())
        })
    }

    /// From a quinn connection once its `Connecting` future has resolved
    /// (for a server, after the client Finished). quinn does not report
    /// the negotiated cipher suite, so the caller says which hash it is
    /// (the proxy's QUIC listener offers SHA-256 suites only:
    /// `tls::quic_server_config`).
    pub fn from_quinn(conn: &quinn::Connection, hash: HashAlg) -> Result<Exporter, ExporterError> {
        Exporter::from_fn(hash, |label, out| {
            conn.export_keying_material(out, label, &[])
                .map_err(|_| "quinn refused to export keying material")
        })
    }

    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// The L-byte Handshake Context (an exporter output, not a message list).
    pub fn handshake_context(&self) -> &[u8] {
        &self.handshake_context
    }

    /// The L-byte Finished MAC Key (used directly as the HMAC key).
    pub fn finished_key(&self) -> &[u8] {
        &self.finished_key
    }
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// The bytes a CertificateVerify signs (RFC 9261 §5.2.2): 64 spaces, the
/// context string, a zero byte, then TH1.
pub(crate) fn signed_content(th1: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + SIGNATURE_CONTEXT.len() + 1 + th1.len());
    m.extend_from_slice(&[0x20; 64]);
    m.extend_from_slice(SIGNATURE_CONTEXT);
    m.push(0);
    m.extend_from_slice(th1);
    m
}

/// Equality in time that does not depend on where the inputs differ
/// (RFC 9261 §5.2.4, §7.4).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The provider the whole module uses (the process's one: aws-lc-rs).
pub(crate) fn provider() -> CryptoProvider {
    aws_lc_rs::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_bytes_and_lengths() {
        assert_eq!(SERVER_HANDSHAKE_CONTEXT_LABEL.len(), 0x2f);
        assert_eq!(CLIENT_HANDSHAKE_CONTEXT_LABEL.len(), 0x2f);
        assert_eq!(SERVER_FINISHED_KEY_LABEL.len(), 0x2a);
        assert_eq!(CLIENT_FINISHED_KEY_LABEL.len(), 0x2a);
        assert!(SERVER_HANDSHAKE_CONTEXT_LABEL.starts_with(b"EXPORTER-server "));
        assert!(!SERVER_FINISHED_KEY_LABEL.ends_with(b" "));
        assert_eq!(
            SIGNATURE_CONTEXT,
            &[
                0x45, 0x78, 0x70, 0x6f, 0x72, 0x74, 0x65, 0x64, 0x20, 0x41, 0x75, 0x74, 0x68, 0x65,
                0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x6f, 0x72
            ]
        );
    }

    #[test]
    fn signed_content_lengths() {
        assert_eq!(signed_content(&[0; 32]).len(), 119);
        assert_eq!(signed_content(&[0; 48]).len(), 135);
    }

    #[test]
    fn hash_and_hmac_known_answers() {
        // SHA-256("abc") (FIPS 180-2).
        assert_eq!(
            HashAlg::Sha256.hash(&[b"a", b"bc"]).as_ref(),
            &hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")[..]
        );
        assert_eq!(HashAlg::Sha384.hash(&[b"abc"]).as_ref().len(), 48);
        // RFC 4231 test case 2.
        assert_eq!(
            HashAlg::Sha256
                .hmac(b"Jefe", b"what do ya want for nothing?")
                .as_ref(),
            &hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")[..]
        );
        assert_eq!(
            HashAlg::Sha384
                .hmac(b"Jefe", b"what do ya want for nothing?")
                .as_ref(),
            &hex("af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649")[..]
        );
    }

    #[test]
    fn exporter_checks_lengths() {
        assert!(matches!(
            Exporter::new(HashAlg::Sha256, vec![0; 48], vec![0; 32]),
            Err(ExporterError::WrongLength {
                expected: 32,
                found: 48
            })
        ));
        assert!(Exporter::new(HashAlg::Sha384, vec![0; 48], vec![0; 48]).is_ok());
    }

    #[test]
    fn suites_map_to_hashes() {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        assert_eq!(
            HashAlg::from_suite(cs::TLS13_AES_128_GCM_SHA256).ok(),
            Some(HashAlg::Sha256)
        );
        assert_eq!(
            HashAlg::from_suite(cs::TLS13_CHACHA20_POLY1305_SHA256).ok(),
            Some(HashAlg::Sha256)
        );
        assert_eq!(
            HashAlg::from_suite(cs::TLS13_AES_256_GCM_SHA384).ok(),
            Some(HashAlg::Sha384)
        );
        assert!(HashAlg::from_suite(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256).is_err());
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }
}

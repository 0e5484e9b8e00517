//! The server side: build spontaneous authenticators (RFC 9261 §5.2, §5.2.4;
//! digest §9).
//!
//! 1. `HC`, `FK` come from the [`Exporter`] (server labels, L = hash length).
//! 2. `ctx` = 32 fresh random bytes, never used before on this connection.
//! 3. `CertificateMsg = 0b || len24 || ctx-vector || certificate_list`.
//! 4. `TH1 = Hash(HC || CertificateMsg)`; sign `0x20*64 || "Exported
//!    Authenticator" || 0x00 || TH1` with a scheme the client offered.
//! 5. `TH2 = Hash(HC || CertificateMsg || CertificateVerifyMsg)`;
//!    `FinishedMsg = 14 || len24(L) || HMAC(FK, TH2)`.
//! 6. Output the three messages concatenated.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use rustls::crypto::SecureRandom;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::messages::{
    encode_certificate_list, Certificate, CertificateVerify, EncodeError, Handshake, HandshakeType,
};
use super::{sig_schemes, signed_content, Exporter};

/// Length of the `certificate_request_context` the server picks (project rule).
pub const CONTEXT_LEN: usize = 32;

/// One origin's identity, ready to sign authenticators: the chain and key,
/// and the chain's `certificate_list` encoded once (empty extensions).
#[derive(Debug)]
pub struct OriginCert {
    key: Arc<CertifiedKey>,
    certificate_list: Vec<u8>,
}

/// The sender's per-connection state: the contexts it used, and the
/// authenticator it made for each origin, so that each origin is signed once
/// per connection (RFC 9261 §5.2: do not build two with one context).
#[derive(Debug)]
pub struct ServerAuthenticator {
    exporter: Exporter,
    offered: Vec<SignatureScheme>,
    used_contexts: HashSet<Vec<u8>>,
    made: Vec<(Arc<OriginCert>, Bytes)>,
    /// Certificates whose authenticator went out on the connection.
    sent: Vec<Arc<OriginCert>>,
}

/// Why an authenticator was not made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The chain is empty.
    #[error("the certificate chain is empty")]
    EmptyChain,
    /// The key cannot be loaded, or does not belong to the end-entity
    /// certificate.
    #[error("the origin key is unusable: {0}")]
    Key(rustls::Error),
    /// The chain does not fit a Certificate message.
    #[error("the certificate chain cannot be encoded: {0}")]
    Encode(#[from] EncodeError),
    /// "If no scheme fits, do not build an authenticator" (RFC 9261 §5.2.2):
    /// none of the client's TLS 1.3 `signature_algorithms` suits the key.
    #[error("no signature scheme the client offered ({offered:?}) suits the {key:?} key")]
    NoSchemeFits {
        offered: Vec<SignatureScheme>,
        key: SignatureAlgorithm,
    },
    /// The `certificate_request_context` is over 255 bytes.
    #[error("certificate_request_context is {0} bytes (at most 255)")]
    ContextTooLong(usize),
    /// The context was already used on this connection (RFC 9261 §5.2.1:
    /// "MUST be unique within the connection").
    #[error("certificate_request_context already used on this connection")]
    ContextReused,
    /// The random generator failed.
    #[error("the random generator failed")]
    Random,
    /// The key refused to sign.
    #[error("signing failed: {0}")]
    Sign(rustls::Error),
}

// === impl OriginCert ===

impl OriginCert {
    /// From a chain (end-entity first) and its key in DER, loaded through the
    /// provider's `load_private_key`; the key must match the end-entity
    /// certificate.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<OriginCert, AuthError> {
        if chain.is_empty() {
            return Err(AuthError::EmptyChain);
        }
        let ck = CertifiedKey::from_der(chain, key, &super::provider()).map_err(AuthError::Key)?;
        OriginCert::new(Arc::new(ck))
    }

    /// From a `CertifiedKey` (for example the one a TLS resolver serves).
    pub fn new(key: Arc<CertifiedKey>) -> Result<OriginCert, AuthError> {
        if key.cert.is_empty() {
            return Err(AuthError::EmptyChain);
        }
        let certificate_list = encode_certificate_list(&key.cert)?;
        Ok(OriginCert {
            key,
            certificate_list,
        })
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }
}

// === impl ServerAuthenticator ===

impl ServerAuthenticator {
    /// `offered`: the client's ClientHello `signature_algorithms`, as
    /// captured during the handshake ([`super::ClientHelloInfo`]).
    pub fn new(exporter: Exporter, offered: &[SignatureScheme]) -> ServerAuthenticator {
        ServerAuthenticator {
            exporter,
            offered: offered.to_vec(),
            used_contexts: HashSet::new(),
            made: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Whether `origin`'s authenticator was sent on this connection (the
    /// sender's record: a frame the client's limits refused is not).
    pub fn was_sent(&self, origin: &Arc<OriginCert>) -> bool {
        self.sent.iter().any(|o| Arc::ptr_eq(o, origin))
    }

    pub fn mark_sent(&mut self, origin: &Arc<OriginCert>) {
        if !self.was_sent(origin) {
            self.sent.push(Arc::clone(origin));
        }
    }

    /// The authenticator for `origin` on this connection: signed the first
    /// time with a fresh context, the same bytes afterwards.
    pub fn authenticator(
        &mut self,
        origin: &Arc<OriginCert>,
        rng: &dyn SecureRandom,
    ) -> Result<Bytes, AuthError> {
        if let Some((_, bytes)) = self.made.iter().find(|(o, _)| Arc::ptr_eq(o, origin)) {
            return Ok(bytes.clone());
        }
        let context = fresh_context(rng)?;
        if self.used_contexts.contains(&context[..]) {
            // 2^-256 for a working generator; a broken one must not reuse.
            return Err(AuthError::ContextReused);
        }
        let bytes = Bytes::from(authenticate(
            &self.exporter,
            &self.offered,
            origin,
            &context,
        )?);
        self.used_contexts.insert(context.to_vec());
        self.made.push((Arc::clone(origin), bytes.clone()));
        Ok(bytes)
    }

    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }
}

/// A fresh `certificate_request_context`: 32 bytes from the CSPRNG
/// (RFC 9261 §5.2.1: "MUST be unpredictable to the peer").
pub fn fresh_context(rng: &dyn SecureRandom) -> Result<[u8; CONTEXT_LEN], AuthError> {
    let mut ctx = [0u8; CONTEXT_LEN];
    rng.fill(&mut ctx).map_err(|_| AuthError::Random)?;
    Ok(ctx)
}

/// Build one spontaneous authenticator (`Certificate || CertificateVerify ||
/// Finished`) for `origin` with the given `context`.
///
/// `offered` is the client's ClientHello `signature_algorithms`; the scheme is
/// the key's preferred one among the offered TLS 1.3 schemes. Uniqueness of
/// `context` on the connection is the caller's duty ([`ServerAuthenticator`]
/// keeps it).
pub fn authenticate(
    exporter: &Exporter,
    offered: &[SignatureScheme],
    origin: &OriginCert,
    context: &[u8],
) -> Result<Vec<u8>, AuthError> {
    let hash = exporter.hash();
    if context.len() > 255 {
        return Err(AuthError::ContextTooLong(context.len()));
    }
    // RFC 9261 §5.2.2: "The signature scheme MUST be a valid TLS 1.3
    // signature scheme" and, spontaneously, one the client offered. rustls's
    // RSA keys would otherwise also pick RSASSA-PKCS1-v1_5.
    let usable = sig_schemes::tls13_subset(offered);
    let signer = origin
        .key
        .key
        .choose_scheme(&usable)
        .ok_or_else(|| AuthError::NoSchemeFits {
            offered: offered.to_vec(),
            key: origin.key.key.algorithm(),
        })?;

    let mut out = Vec::with_capacity(
        4 + 1 + context.len() + origin.certificate_list.len() + 600 + 4 + hash.output_len(),
    );
    Certificate::encode_message(context, &origin.certificate_list, &mut out)?;
    let cert_end = out.len();

    let th1 = hash.hash(&[exporter.handshake_context(), &out]);
    let signature = signer
        .sign(&signed_content(th1.as_ref()))
        .map_err(AuthError::Sign)?;
    CertificateVerify {
        scheme: signer.scheme(),
        signature: &signature,
    }
    .encode_message(&mut out)?;

    let th2 = hash.hash(&[exporter.handshake_context(), &out]);
    let verify_data = hash.hmac(exporter.finished_key(), th2.as_ref());
    Handshake::encode(HandshakeType::FINISHED, verify_data.as_ref(), &mut out)?;
    debug_assert!(cert_end < out.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testkeys::{origin, KeyKind};
    use super::super::{HashAlg, Validator};
    use super::*;

    fn exporter(hash: HashAlg) -> Exporter {
        let l = hash.output_len();
        Exporter::new(hash, vec![0x11; l], vec![0x22; l]).unwrap()
    }

    fn all_offered() -> Vec<SignatureScheme> {
        super::super::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }

    #[test]
    fn each_origin_is_signed_once_per_connection() {
        let rng = super::super::provider().secure_random;
        let a = Arc::new(origin(KeyKind::EcdsaP256, "a.example").origin);
        let b = Arc::new(origin(KeyKind::Ed25519, "b.example").origin);
        let mut sa = ServerAuthenticator::new(exporter(HashAlg::Sha256), &all_offered());
        let a1 = sa.authenticator(&a, rng).unwrap();
        let b1 = sa.authenticator(&b, rng).unwrap();
        let a2 = sa.authenticator(&a, rng).unwrap();
        assert_eq!(a1, a2);
        assert_ne!(a1, b1);
        // Fresh 32-byte contexts, different per origin.
        assert_eq!(a1[4], 32);
        assert_ne!(a1[5..37], b1[5..37]);
        let mut v = Validator::new(exporter(HashAlg::Sha256), &all_offered());
        v.validate(&a1).unwrap();
        v.validate(&b1).unwrap();
    }

    #[test]
    fn no_scheme_fits_is_an_error() {
        let o = origin(KeyKind::EcdsaP384, "a.example").origin;
        let err = authenticate(
            &exporter(HashAlg::Sha256),
            &[
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ED25519,
            ],
            &o,
            &[1; 32],
        )
        .unwrap_err();
        assert!(matches!(err, AuthError::NoSchemeFits { .. }), "{err}");
    }

    #[test]
    fn rsa_never_signs_with_pkcs1() {
        let o = origin(KeyKind::Rsa2048, "a.example").origin;
        let err = authenticate(
            &exporter(HashAlg::Sha256),
            &[
                SignatureScheme::RSA_PKCS1_SHA256,
                SignatureScheme::RSA_PKCS1_SHA384,
            ],
            &o,
            &[1; 32],
        )
        .unwrap_err();
        assert!(matches!(err, AuthError::NoSchemeFits { .. }), "{err}");
        let ok = authenticate(
            &exporter(HashAlg::Sha256),
            &[
                SignatureScheme::RSA_PKCS1_SHA256,
                SignatureScheme::RSA_PSS_SHA256,
            ],
            &o,
            &[1; 32],
        )
        .unwrap();
        let mut v = Validator::new(exporter(HashAlg::Sha256), &all_offered());
        assert_eq!(
            v.validate(&ok).unwrap().scheme(),
            SignatureScheme::RSA_PSS_SHA256
        );
    }

    #[test]
    fn context_limits() {
        let o = origin(KeyKind::Ed25519, "a.example").origin;
        assert!(matches!(
            authenticate(&exporter(HashAlg::Sha256), &all_offered(), &o, &[0; 256]),
            Err(AuthError::ContextTooLong(256))
        ));
        // An empty context is legal (once per connection).
        let a = authenticate(&exporter(HashAlg::Sha256), &all_offered(), &o, &[]).unwrap();
        let mut v = Validator::new(exporter(HashAlg::Sha256), &all_offered());
        assert_eq!(v.validate(&a).unwrap().context(), b"");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = origin(KeyKind::EcdsaP256, "a.example");
        let b = origin(KeyKind::EcdsaP256, "b.example");
        let err = OriginCert::from_der(a.origin.chain().to_vec(), b.key_der).unwrap_err();
        assert!(matches!(err, AuthError::Key(_)), "{err}");
        assert!(matches!(
            OriginCert::from_der(Vec::new(), a.key_der),
            Err(AuthError::EmptyChain)
        ));
    }

    #[test]
    fn failing_rng_is_an_error() {
        #[derive(Debug)]
        struct Broken;
        impl SecureRandom for Broken {
            fn fill(&self, _: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
                Err(rustls::crypto::GetRandomFailed)
            }
        }
        let o = Arc::new(origin(KeyKind::Ed25519, "a.example").origin);
        let mut sa = ServerAuthenticator::new(exporter(HashAlg::Sha256), &all_offered());
        assert!(matches!(
            sa.authenticator(&o, &Broken),
            Err(AuthError::Random)
        ));
    }

    #[test]
    fn constant_rng_cannot_reuse_a_context() {
        #[derive(Debug)]
        struct Zeros;
        impl SecureRandom for Zeros {
            fn fill(&self, b: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
                b.fill(0);
                Ok(())
            }
        }
        let a = Arc::new(origin(KeyKind::Ed25519, "a.example").origin);
        let b = Arc::new(origin(KeyKind::Ed25519, "b.example").origin);
        let mut sa = ServerAuthenticator::new(exporter(HashAlg::Sha256), &all_offered());
        sa.authenticator(&a, &Zeros).unwrap();
        assert!(matches!(
            sa.authenticator(&b, &Zeros),
            Err(AuthError::ContextReused)
        ));
    }
}

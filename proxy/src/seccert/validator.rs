//! The client side: validate spontaneous server authenticators (RFC 9261
//! §5.2.1–§5.2.4, §7.4), in the order of the digest's §12:
//!
//! 1. size ≤ the local cap (TLS 1.3 and a complete handshake are the
//!    [`Exporter`]'s preconditions);
//! 2. message 1 header: a lone Finished is an empty authenticator (invalid);
//!    otherwise a Certificate whose length fits;
//! 3. Certificate body: context, `certificate_list` exactly covering
//!    well-formed entries, no bytes left, list non-empty;
//! 4. context not seen on an earlier validated authenticator;
//! 5. every entry extension offered in the ClientHello and CT-eligible;
//! 6. message 2: a CertificateVerify with exact lengths;
//! 7. scheme offered, TLS 1.3-valid, and matching the end-entity key (the
//!    key match is checked inside the verification call, before the
//!    signature);
//! 8. exporter values (already in the [`Exporter`], server labels);
//! 9. the signature over `0x20*64 || "Exported Authenticator" || 0x00 ||
//!    Hash(HC || received Certificate message)`;
//! 10. message 3: a Finished of length L, compared in constant time with
//!     `HMAC(FK, Hash(HC || Certificate || CertificateVerify))`;
//! 11. nothing after the Finished;
//! 12. record the context, return the chain.
//!
//! A failure in any of these is "cannot be validated" ([`ValidateError`]).
//! Whether the validated certificate is *acceptable* for an origin (step 13:
//! path, validity, name) is a separate call, [`Validated::accept_for`], whose
//! failure ([`CertificateUnacceptable`]) is not a protocol error.

use std::collections::HashSet;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{RootCertStore, SignatureScheme};

use super::messages::{
    Certificate, CertificateVerify, DecodeError, Field, Handshake, HandshakeHeader, HandshakeType,
    Reader,
};
use super::{constant_time_eq, sig_schemes, signed_content, Exporter};

/// The default cap on one authenticator's size (rustls caps a handshake
/// Certificate message at 64 KiB too: `CERTIFICATE_MAX_SIZE_LIMIT`).
pub const DEFAULT_MAX_SIZE: usize = 64 * 1024;

/// Extension types that may appear in a CertificateEntry in TLS 1.3 ("CT" in
/// the IANA registry): status_request, signed_certificate_timestamp,
/// delegated_credential, transparency_info (RFC 9261 §5.2.1; digest §8).
pub const CT_EXTENSIONS: &[u16] = &[5, 18, 34, 52];

/// The receiver's per-connection state.
#[derive(Debug)]
pub struct Validator {
    exporter: Exporter,
    offered_schemes: Vec<SignatureScheme>,
    offered_extensions: Vec<u16>,
    max_size: usize,
    seen_contexts: HashSet<Vec<u8>>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Proof that an authenticator passed every check of [`Validator::validate`].
/// Only `validate` makes one.
#[derive(Clone, Debug)]
pub struct Validated {
    chain: Vec<CertificateDer<'static>>,
    extensions: Vec<Vec<(u16, Vec<u8>)>>,
    context: Vec<u8>,
    scheme: SignatureScheme,
}

/// Proof that a validated authenticator's certificate is acceptable for one
/// origin (chain to a trust anchor, validity, name). Only
/// [`Validated::accept_for`] makes one.
#[derive(Clone, Debug)]
pub struct AcceptedOrigin {
    name: ServerName<'static>,
    end_entity: CertificateDer<'static>,
}

/// Why an authenticator cannot be validated: one variant per check, in the
/// order they run. See [`ValidateError::step`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidateError {
    #[error("authenticator is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// A lone Finished message: "Well-formed empty authenticators count as
    /// invalid" (RFC 9261 §7.4), and only answer requests (§6).
    #[error("empty authenticator (a Finished message alone)")]
    EmptyAuthenticator,
    #[error("expected a {expected} message, found {found}")]
    UnexpectedMessage {
        expected: HandshakeType,
        found: HandshakeType,
    },
    #[error("malformed {message} message: {error}")]
    Malformed {
        message: HandshakeType,
        error: DecodeError,
    },
    /// "A real authenticator has a non-empty certificate_list" (§5.2.1, §6).
    #[error("the certificate_list is empty")]
    EmptyCertificateList,
    /// "the validate API should fail if this context value was already used
    /// by a different, previously validated authenticator" (§7.4).
    #[error("certificate_request_context was already used on this connection")]
    RepeatedContext,
    /// Spontaneously, "only extensions that were present in the ClientHello"
    /// (§5.2.1).
    #[error("CertificateEntry extension {0} was not offered in the ClientHello")]
    ExtensionNotOffered(u16),
    #[error("extension {0} may not appear in a CertificateEntry")]
    ExtensionNotAllowed(u16),
    /// "MUST be one of the schemes the client listed in the
    /// signature_algorithms extension of its ClientHello" (§5.2.2).
    #[error("signature scheme {0:?} was not offered in the ClientHello")]
    SchemeNotOffered(SignatureScheme),
    /// "The signature scheme MUST be a valid TLS 1.3 signature scheme" (§5.2.2).
    #[error("signature scheme {0:?} is not valid for TLS 1.3")]
    SchemeNotTls13(SignatureScheme),
    #[error("signature scheme {0:?} is not supported here")]
    SchemeUnsupported(SignatureScheme),
    #[error("the end-entity certificate cannot be parsed for its public key")]
    BadEndEntityCertificate,
    #[error("signature scheme {0:?} does not match the end-entity key")]
    SchemeKeyMismatch(SignatureScheme),
    #[error("the CertificateVerify signature does not verify")]
    BadSignature,
    #[error("Finished is {found} bytes, the hash needs {expected}")]
    FinishedLength { expected: usize, found: usize },
    #[error("Finished verify_data does not match")]
    BadFinished,
    #[error("{0} bytes follow the Finished message")]
    TrailingBytes(usize),
}

/// The validated certificate is not acceptable for the origin. Not a
/// protocol error: the client just does not use it (digest §12 step 13).
#[derive(Debug, thiserror::Error)]
#[error("certificate not acceptable for {name}: {error}")]
pub struct CertificateUnacceptable {
    pub name: String,
    pub error: rustls::Error,
}

// === impl Validator ===

impl Validator {
    /// `offered_schemes`: the `signature_algorithms` this client sent in its
    /// ClientHello. No CertificateEntry extension is accepted until
    /// [`Validator::with_offered_extensions`] says which were offered.
    pub fn new(exporter: Exporter, offered_schemes: &[SignatureScheme]) -> Validator {
        Validator {
            exporter,
            offered_schemes: offered_schemes.to_vec(),
            offered_extensions: Vec::new(),
            max_size: DEFAULT_MAX_SIZE,
            seen_contexts: HashSet::new(),
            algorithms: super::provider().signature_verification_algorithms,
        }
    }

    /// The extension types the ClientHello carried (e.g. 5 when it asked for
    /// OCSP stapling).
    pub fn with_offered_extensions(mut self, types: &[u16]) -> Validator {
        self.offered_extensions = types.to_vec();
        self
    }

    pub fn with_max_size(mut self, max: usize) -> Validator {
        self.max_size = max;
        self
    }

    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    /// Check one authenticator; on success its context counts as used.
    pub fn validate(&mut self, bytes: &[u8]) -> Result<Validated, ValidateError> {
        let hash = self.exporter.hash();

        // 1. Size.
        if bytes.len() > self.max_size {
            return Err(ValidateError::TooLarge {
                len: bytes.len(),
                max: self.max_size,
            });
        }
        let mut r = Reader::new(bytes);

        // 2. Message 1 header.
        let header = HandshakeHeader::decode(&mut r.clone())
            .map_err(malformed(HandshakeType::CERTIFICATE))?;
        if header.typ == HandshakeType::FINISHED
            && Some(header.len) == bytes.len().checked_sub(HandshakeHeader::LEN)
        {
            return Err(ValidateError::EmptyAuthenticator);
        }
        expect_type(HandshakeType::CERTIFICATE, header.typ)?;
        let cert_msg = Handshake::decode(&mut r).map_err(malformed(HandshakeType::CERTIFICATE))?;

        // 3. Certificate body.
        let cert =
            Certificate::decode(cert_msg.body).map_err(malformed(HandshakeType::CERTIFICATE))?;
        let Some(end_entity) = cert.entries.first() else {
            return Err(ValidateError::EmptyCertificateList);
        };

        // 4. Context.
        if self.seen_contexts.contains(cert.context) {
            return Err(ValidateError::RepeatedContext);
        }

        // 5. Extensions.
        for ext in cert.entries.iter().flat_map(|e| &e.extensions) {
            if !self.offered_extensions.contains(&ext.typ) {
                return Err(ValidateError::ExtensionNotOffered(ext.typ));
            }
            if !CT_EXTENSIONS.contains(&ext.typ) {
                return Err(ValidateError::ExtensionNotAllowed(ext.typ));
            }
        }

        // 6. Message 2.
        let cv_header = HandshakeHeader::decode(&mut r.clone())
            .map_err(malformed(HandshakeType::CERTIFICATE_VERIFY))?;
        expect_type(HandshakeType::CERTIFICATE_VERIFY, cv_header.typ)?;
        let cv_msg =
            Handshake::decode(&mut r).map_err(malformed(HandshakeType::CERTIFICATE_VERIFY))?;
        let cv = CertificateVerify::decode(cv_msg.body)
            .map_err(malformed(HandshakeType::CERTIFICATE_VERIFY))?;

        // 7. Scheme.
        if !self.offered_schemes.contains(&cv.scheme) {
            return Err(ValidateError::SchemeNotOffered(cv.scheme));
        }
        if !sig_schemes::is_tls13(cv.scheme) {
            return Err(ValidateError::SchemeNotTls13(cv.scheme));
        }
        // In TLS 1.3 the scheme fixes the curve: rustls lists the matching
        // curve first for each ECDSA scheme.
        let alg = self
            .algorithms
            .mapping
            .iter()
            .find(|(s, _)| *s == cv.scheme)
            .and_then(|(_, algs)| algs.first())
            .ok_or(ValidateError::SchemeUnsupported(cv.scheme))?;
        let ee_der = CertificateDer::from(end_entity.cert_data);
        let ee = webpki::EndEntityCert::try_from(&ee_der)
            .map_err(|_| ValidateError::BadEndEntityCertificate)?;

        // 8. Exporter values: self.exporter (server labels, L bytes).
        // 9. Signature over the received Certificate bytes.
        let th1 = hash.hash(&[self.exporter.handshake_context(), cert_msg.encoded]);
        ee.verify_signature(*alg, &signed_content(th1.as_ref()), cv.signature)
            .map_err(|e| match e {
                #[allow(deprecated)]
                webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
                | webpki::Error::UnsupportedSignatureAlgorithmForPublicKey => {
                    ValidateError::SchemeKeyMismatch(cv.scheme)
                }
                _ => ValidateError::BadSignature,
            })?;

        // 10. Message 3: Finished.
        let fin_header =
            HandshakeHeader::decode(&mut r.clone()).map_err(malformed(HandshakeType::FINISHED))?;
        expect_type(HandshakeType::FINISHED, fin_header.typ)?;
        if fin_header.len != hash.output_len() {
            return Err(ValidateError::FinishedLength {
                expected: hash.output_len(),
                found: fin_header.len,
            });
        }
        let fin_msg = Handshake::decode(&mut r).map_err(malformed(HandshakeType::FINISHED))?;
        let th2 = hash.hash(&[
            self.exporter.handshake_context(),
            cert_msg.encoded,
            cv_msg.encoded,
        ]);
        let expected = hash.hmac(self.exporter.finished_key(), th2.as_ref());
        if !constant_time_eq(expected.as_ref(), fin_msg.body) {
            return Err(ValidateError::BadFinished);
        }

        // 11. Trailing data.
        if !r.is_empty() {
            return Err(ValidateError::TrailingBytes(r.remaining()));
        }

        // 12. Record and return.
        self.seen_contexts.insert(cert.context.to_vec());
        Ok(Validated {
            chain: cert
                .entries
                .iter()
                .map(|e| CertificateDer::from(e.cert_data.to_vec()))
                .collect(),
            extensions: cert
                .entries
                .iter()
                .map(|e| {
                    e.extensions
                        .iter()
                        .map(|x| (x.typ, x.data.to_vec()))
                        .collect()
                })
                .collect(),
            context: cert.context.to_vec(),
            scheme: cv.scheme,
        })
    }
}

fn malformed(message: HandshakeType) -> impl Fn(DecodeError) -> ValidateError {
    move |error| ValidateError::Malformed { message, error }
}

fn expect_type(expected: HandshakeType, found: HandshakeType) -> Result<(), ValidateError> {
    if found == expected {
        Ok(())
    } else {
        Err(ValidateError::UnexpectedMessage { expected, found })
    }
}

// === impl ValidateError ===

impl ValidateError {
    /// The step of the digest's validation order (§12) that failed.
    pub fn step(&self) -> u8 {
        match self {
            ValidateError::TooLarge { .. } => 1,
            ValidateError::EmptyAuthenticator => 2,
            ValidateError::UnexpectedMessage { expected, .. }
            | ValidateError::Malformed {
                message: expected, ..
            } => match *expected {
                HandshakeType::CERTIFICATE => match self {
                    ValidateError::Malformed {
                        error: DecodeError::Truncated(Field::HandshakeHeader | Field::HandshakeBody),
                        ..
                    }
                    | ValidateError::UnexpectedMessage { .. } => 2,
                    _ => 3,
                },
                HandshakeType::CERTIFICATE_VERIFY => 6,
                _ => 10,
            },
            ValidateError::EmptyCertificateList => 3,
            ValidateError::RepeatedContext => 4,
            ValidateError::ExtensionNotOffered(_) | ValidateError::ExtensionNotAllowed(_) => 5,
            ValidateError::SchemeNotOffered(_)
            | ValidateError::SchemeNotTls13(_)
            | ValidateError::SchemeUnsupported(_)
            | ValidateError::BadEndEntityCertificate
            | ValidateError::SchemeKeyMismatch(_) => 7,
            ValidateError::BadSignature => 9,
            ValidateError::FinishedLength { .. } | ValidateError::BadFinished => 10,
            ValidateError::TrailingBytes(_) => 11,
        }
    }
}

// === impl Validated ===

impl Validated {
    /// The chain, end-entity first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn end_entity(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }

    /// Per certificate, its (extension type, data) pairs.
    pub fn extensions(&self) -> &[Vec<(u16, Vec<u8>)>] {
        &self.extensions
    }

    pub fn context(&self) -> &[u8] {
        &self.context
    }

    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// Step 13: is the certificate acceptable for `origin` (path to a trust
    /// anchor, validity at `now`, name)? `verifier` is normally a
    /// `WebPkiServerVerifier` ([`webpki_verifier`]); a stapled OCSP response
    /// (extension 5) is passed on to it.
    pub fn accept_for(
        &self,
        verifier: &dyn ServerCertVerifier,
        origin: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<AcceptedOrigin, CertificateUnacceptable> {
        let unacceptable = |error| CertificateUnacceptable {
            name: origin.to_str().into_owned(),
            error,
        };
        let (end_entity, intermediates) = self
            .chain
            .split_first()
            .ok_or_else(|| unacceptable(rustls::Error::NoCertificatesPresented))?;
        let ocsp = self.ocsp_response().unwrap_or_default();
        verifier
            .verify_server_cert(end_entity, intermediates, origin, ocsp, now)
            .map_err(unacceptable)?;
        Ok(AcceptedOrigin {
            name: origin.to_owned(),
            end_entity: end_entity.clone(),
        })
    }

    /// The OCSP response in the end-entity's status_request extension
    /// (`CertificateStatus`, RFC 8446 §4.4.2.1: type 1 = ocsp, then a 3-byte
    /// length), if any.
    fn ocsp_response(&self) -> Option<&[u8]> {
        let (_, data) = self.extensions.first()?.iter().find(|(t, _)| *t == 5)?;
        let mut r = Reader::new(data);
        if r.u8(Field::Extension).ok()? != 1 {
            return None;
        }
        let resp = r.vec24(Field::Extension).ok()?;
        r.expect_end(Field::Extension).ok()?;
        Some(resp)
    }
}

// === impl AcceptedOrigin ===

impl AcceptedOrigin {
    pub fn name(&self) -> &ServerName<'static> {
        &self.name
    }

    pub fn end_entity(&self) -> &CertificateDer<'static> {
        &self.end_entity
    }
}

/// A `WebPkiServerVerifier` over `roots` with the process's provider.
pub fn webpki_verifier(
    roots: Arc<RootCertStore>,
) -> Result<Arc<WebPkiServerVerifier>, VerifierBuilderError> {
    WebPkiServerVerifier::builder_with_provider(roots, Arc::new(super::provider())).build()
}

#[cfg(test)]
mod tests {
    use super::super::testkeys::{shared, KeyKind, ALL_KINDS};

    use super::super::{authenticate, HashAlg};
    use super::*;
    use proptest::prelude::*;

    use super::super::testkeys::{offered, test_exporter as exporter};

    fn make(kind: KeyKind, hash: HashAlg, ctx: &[u8]) -> Vec<u8> {
        authenticate(&exporter(hash), &offered(), &shared(kind).origin, ctx).unwrap()
    }

    /// Split a valid authenticator into its three messages.
    fn parts(a: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut r = Reader::new(a);
        let c = Handshake::decode(&mut r).unwrap().encoded.to_vec();
        let v = Handshake::decode(&mut r).unwrap().encoded.to_vec();
        let f = Handshake::decode(&mut r).unwrap().encoded.to_vec();
        (c, v, f)
    }

    /// Re-seal: recompute the Finished over (possibly altered) messages 1-2,
    /// so that a test reaches a check before the Finished.
    fn finish(hash: HashAlg, cert: &[u8], cv: &[u8]) -> Vec<u8> {
        let e = exporter(hash);
        let th2 = hash.hash(&[e.handshake_context(), cert, cv]);
        let vd = hash.hmac(e.finished_key(), th2.as_ref());
        let mut out = [cert, cv].concat();
        Handshake::encode(HandshakeType::FINISHED, vd.as_ref(), &mut out).unwrap();
        out
    }

    /// A Certificate message with the given entries (DER, extension block).
    fn cert_msg(ctx: &[u8], entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (der, exts) in entries {
            list.extend_from_slice(&(der.len() as u32).to_be_bytes()[1..]);
            list.extend_from_slice(der);
            list.extend_from_slice(&(exts.len() as u16).to_be_bytes());
            list.extend_from_slice(exts);
        }
        let mut l = (list.len() as u32).to_be_bytes()[1..].to_vec();
        l.extend_from_slice(&list);
        let mut out = Vec::new();
        Certificate::encode_message(ctx, &l, &mut out).unwrap();
        out
    }

    /// Sign a Certificate message as the test origin would.
    fn sign_cv(kind: KeyKind, hash: HashAlg, cert: &[u8], scheme: SignatureScheme) -> Vec<u8> {
        let e = exporter(hash);
        let th1 = hash.hash(&[e.handshake_context(), cert]);
        let signer = shared(kind)
            .origin
            .certified_key()
            .key
            .choose_scheme(&[scheme])
            .unwrap();
        let sig = signer.sign(&signed_content(th1.as_ref())).unwrap();
        let mut out = Vec::new();
        CertificateVerify {
            scheme,
            signature: &sig,
        }
        .encode_message(&mut out)
        .unwrap();
        out
    }

    fn validate(hash: HashAlg, bytes: &[u8]) -> Result<Validated, ValidateError> {
        Validator::new(exporter(hash), &offered()).validate(bytes)
    }

    #[test]
    fn round_trip_every_key_type_and_hash() {
        for kind in ALL_KINDS {
            for hash in [HashAlg::Sha256, HashAlg::Sha384] {
                let a = make(kind, hash, &[7; 32]);
                let v = validate(hash, &a).unwrap_or_else(|e| panic!("{kind:?} {hash}: {e}"));
                assert_eq!(v.chain(), shared(kind).origin.chain());
                assert_eq!(v.context(), &[7; 32]);
                assert_eq!(v.scheme(), kind.scheme());
                assert!(v.extensions().iter().all(|e| e.is_empty()));
            }
        }
    }

    #[test]
    fn step1_size_cap() {
        let a = make(KeyKind::Ed25519, HashAlg::Sha256, &[1; 32]);
        let mut v =
            Validator::new(exporter(HashAlg::Sha256), &offered()).with_max_size(a.len() - 1);
        let e = v.validate(&a).unwrap_err();
        assert_eq!(e.step(), 1);
        assert!(matches!(e, ValidateError::TooLarge { .. }));
    }

    #[test]
    fn step2_empty_authenticator_and_wrong_first_message() {
        let hash = HashAlg::Sha256;
        // An empty authenticator: HMAC over a Certificate with an empty list.
        let e = exporter(hash);
        let empty_cert = cert_msg(&[1; 32], &[]);
        let th = hash.hash(&[e.handshake_context(), &empty_cert]);
        let mut lone = Vec::new();
        Handshake::encode(
            HandshakeType::FINISHED,
            hash.hmac(e.finished_key(), th.as_ref()).as_ref(),
            &mut lone,
        )
        .unwrap();
        assert_eq!(
            validate(hash, &lone).unwrap_err(),
            ValidateError::EmptyAuthenticator
        );
        assert_eq!(validate(hash, &lone).unwrap_err().step(), 2);

        let a = make(KeyKind::Ed25519, hash, &[1; 32]);
        let (c, v, f) = parts(&a);
        let swapped = [v.clone(), c.clone(), f.clone()].concat();
        assert_eq!(
            validate(hash, &swapped).unwrap_err(),
            ValidateError::UnexpectedMessage {
                expected: HandshakeType::CERTIFICATE,
                found: HandshakeType::CERTIFICATE_VERIFY
            }
        );
        // Length of message 1 beyond the input.
        let mut long = a.clone();
        long[3] = long[3].wrapping_add(0x10);
        long[2] = 0xff;
        let e = validate(hash, &long).unwrap_err();
        assert_eq!(
            e,
            ValidateError::Malformed {
                message: HandshakeType::CERTIFICATE,
                error: DecodeError::Truncated(Field::HandshakeBody)
            }
        );
        assert_eq!(e.step(), 2);
        assert_eq!(
            validate(hash, &[]).unwrap_err(),
            ValidateError::Malformed {
                message: HandshakeType::CERTIFICATE,
                error: DecodeError::Truncated(Field::HandshakeHeader)
            }
        );
    }

    #[test]
    fn step3_certificate_body() {
        let hash = HashAlg::Sha256;
        let kind = KeyKind::Ed25519;
        let der = shared(kind).origin.chain()[0].to_vec();
        // Empty list (with a valid signature and Finished around it).
        let c = cert_msg(&[2; 32], &[]);
        let v = sign_cv(kind, hash, &c, SignatureScheme::ED25519);
        assert_eq!(
            validate(hash, &finish(hash, &c, &v)).unwrap_err(),
            ValidateError::EmptyCertificateList
        );
        // Zero-length cert_data.
        let c = cert_msg(&[2; 32], &[(&der, b""), (b"", b"")]);
        let e = validate(hash, &finish(hash, &c, &v)).unwrap_err();
        assert_eq!(
            e,
            ValidateError::Malformed {
                message: HandshakeType::CERTIFICATE,
                error: DecodeError::EmptyCertData
            }
        );
        assert_eq!(e.step(), 3);
        // A byte left in the body after the list.
        let mut body = cert_msg(&[2; 32], &[(&der, b"")])[4..].to_vec();
        body.push(0);
        let mut c = Vec::new();
        Handshake::encode(HandshakeType::CERTIFICATE, &body, &mut c).unwrap();
        assert!(matches!(
            validate(hash, &finish(hash, &c, &v)).unwrap_err(),
            ValidateError::Malformed {
                error: DecodeError::Trailing { .. },
                ..
            }
        ));
    }

    #[test]
    fn step4_repeated_context() {
        let hash = HashAlg::Sha384;
        let mut v = Validator::new(exporter(hash), &offered());
        let a = make(KeyKind::EcdsaP256, hash, &[3; 32]);
        let b = make(KeyKind::Ed25519, hash, &[3; 32]);
        v.validate(&a).unwrap();
        assert_eq!(v.validate(&b).unwrap_err(), ValidateError::RepeatedContext);
        assert_eq!(v.validate(&a).unwrap_err(), ValidateError::RepeatedContext);
        // An empty context is fine once.
        let e1 = make(KeyKind::EcdsaP256, hash, &[]);
        let e2 = make(KeyKind::EcdsaP256, hash, &[]);
        v.validate(&e1).unwrap();
        assert_eq!(v.validate(&e2).unwrap_err(), ValidateError::RepeatedContext);
        // A failed authenticator does not burn its context.
        let mut v = Validator::new(exporter(hash), &offered());
        let good = make(KeyKind::Ed25519, hash, &[4; 32]);
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(v.validate(&bad).is_err());
        v.validate(&good).unwrap();
    }

    #[test]
    fn step5_extensions() {
        let hash = HashAlg::Sha256;
        let kind = KeyKind::Ed25519;
        let der = shared(kind).origin.chain()[0].to_vec();
        // SCT (18) with 2 bytes of data.
        let sct = [0x00, 0x12, 0x00, 0x02, 0xAB, 0xCD];
        let c = cert_msg(&[5; 32], &[(&der, &sct)]);
        let cv = sign_cv(kind, hash, &c, SignatureScheme::ED25519);
        let a = finish(hash, &c, &cv);
        assert_eq!(
            validate(hash, &a).unwrap_err(),
            ValidateError::ExtensionNotOffered(18)
        );
        let ok = Validator::new(exporter(hash), &offered())
            .with_offered_extensions(&[18])
            .validate(&a)
            .unwrap();
        assert_eq!(ok.extensions()[0], vec![(18, vec![0xAB, 0xCD])]);
        // server_name (0) is never allowed in a CertificateEntry.
        let sni = [0x00, 0x00, 0x00, 0x00];
        let c = cert_msg(&[5; 32], &[(&der, &sni)]);
        let cv = sign_cv(kind, hash, &c, SignatureScheme::ED25519);
        let e = Validator::new(exporter(hash), &offered())
            .with_offered_extensions(&[0])
            .validate(&finish(hash, &c, &cv))
            .unwrap_err();
        assert_eq!(e, ValidateError::ExtensionNotAllowed(0));
        assert_eq!(e.step(), 5);
    }

    #[test]
    fn step6_certificate_verify_shape() {
        let hash = HashAlg::Sha256;
        let a = make(KeyKind::EcdsaP256, hash, &[6; 32]);
        let (c, mut v, _) = parts(&a);
        // Signature vector one byte longer than the body.
        v[7] = v[7].wrapping_add(1);
        let e = validate(hash, &finish(hash, &c, &v)).unwrap_err();
        assert_eq!(
            e,
            ValidateError::Malformed {
                message: HandshakeType::CERTIFICATE_VERIFY,
                error: DecodeError::Truncated(Field::Signature)
            }
        );
        assert_eq!(e.step(), 6);
        // Finished in place of CertificateVerify.
        let (c, _, f) = parts(&a);
        assert_eq!(
            validate(hash, &[c, f.clone(), f].concat()).unwrap_err(),
            ValidateError::UnexpectedMessage {
                expected: HandshakeType::CERTIFICATE_VERIFY,
                found: HandshakeType::FINISHED
            }
        );
    }

    #[test]
    fn step7_scheme_checks() {
        let hash = HashAlg::Sha256;
        let kind = KeyKind::EcdsaP256;
        let a = make(kind, hash, &[7; 32]);
        // Not offered.
        let e = Validator::new(exporter(hash), &[SignatureScheme::ED25519])
            .validate(&a)
            .unwrap_err();
        assert_eq!(
            e,
            ValidateError::SchemeNotOffered(SignatureScheme::ECDSA_NISTP256_SHA256)
        );
        assert_eq!(e.step(), 7);
        // PKCS#1 v1.5, offered (as for TLS 1.2) but not TLS 1.3-valid.
        let (c, mut v, _) = parts(&a);
        v[4..6].copy_from_slice(&[0x04, 0x01]);
        assert_eq!(
            validate(hash, &finish(hash, &c, &v)).unwrap_err(),
            ValidateError::SchemeNotTls13(SignatureScheme::RSA_PKCS1_SHA256)
        );
        // TLS 1.3-valid but not one we can verify (rsa_pss_pss_sha256).
        v[4..6].copy_from_slice(&[0x08, 0x09]);
        assert_eq!(
            Validator::new(exporter(hash), &[SignatureScheme::from(0x0809)])
                .validate(&finish(hash, &c, &v))
                .unwrap_err(),
            ValidateError::SchemeUnsupported(SignatureScheme::from(0x0809))
        );
        // ECDSA scheme of the other curve: the curve is fixed by the scheme.
        v[4..6].copy_from_slice(&[0x05, 0x03]);
        assert_eq!(
            validate(hash, &finish(hash, &c, &v)).unwrap_err(),
            ValidateError::SchemeKeyMismatch(SignatureScheme::ECDSA_NISTP384_SHA384)
        );
        // Ed25519 scheme on an RSA key.
        let r = make(KeyKind::Rsa2048, hash, &[7; 32]);
        let (c, v, _) = parts(&r);
        let mut v2 = Vec::new();
        CertificateVerify {
            scheme: SignatureScheme::ED25519,
            signature: &[0; 64],
        }
        .encode_message(&mut v2)
        .unwrap();
        assert_eq!(
            validate(hash, &finish(hash, &c, &v2)).unwrap_err(),
            ValidateError::SchemeKeyMismatch(SignatureScheme::ED25519)
        );
        // An RSA key may not sign with PSS scheme of another hash and pass.
        let mut v3 = v.clone();
        v3[4..6].copy_from_slice(&[0x08, 0x05]);
        assert_eq!(
            validate(hash, &finish(hash, &c, &v3)).unwrap_err(),
            ValidateError::BadSignature
        );
        // Garbage as the end-entity certificate.
        let c = cert_msg(&[7; 32], &[(b"\x30\x03\x02\x01\x00", b"")]);
        assert_eq!(
            validate(hash, &finish(hash, &c, &v)).unwrap_err(),
            ValidateError::BadEndEntityCertificate
        );
    }

    #[test]
    fn step9_signature_binds_exporter_and_labels() {
        for hash in [HashAlg::Sha256, HashAlg::Sha384] {
            let l = hash.output_len();
            let a = make(KeyKind::EcdsaP384, hash, &[9; 32]);
            // Another connection's Handshake Context.
            let other = Exporter::new(hash, vec![0x5b; l], vec![0xa5; l]).unwrap();
            let e = Validator::new(other, &offered()).validate(&a).unwrap_err();
            assert_eq!(e, ValidateError::BadSignature);
            assert_eq!(e.step(), 9);
        }
    }

    #[test]
    fn client_labels_do_not_validate() {
        // Exporter outputs under the client labels differ from the server
        // ones; a stand-in exporter shows the validator notices.
        let fake = |label: &[u8], out: &mut [u8]| -> Result<(), &'static str> {
            let h = HashAlg::Sha256.hash(&[label]);
            out.copy_from_slice(h.as_ref());
            Ok(())
        };
        let server = Exporter::from_fn(HashAlg::Sha256, fake).unwrap();
        let mut hc = [0u8; 32];
        let mut fk = [0u8; 32];
        fake(super::super::CLIENT_HANDSHAKE_CONTEXT_LABEL, &mut hc).unwrap();
        fake(super::super::CLIENT_FINISHED_KEY_LABEL, &mut fk).unwrap();
        let client = Exporter::new(HashAlg::Sha256, hc.to_vec(), fk.to_vec()).unwrap();
        let a = authenticate(
            &client,
            &offered(),
            &shared(KeyKind::Ed25519).origin,
            &[1; 32],
        )
        .unwrap();
        assert_eq!(
            Validator::new(server, &offered()).validate(&a).unwrap_err(),
            ValidateError::BadSignature
        );
    }

    #[test]
    fn step10_finished() {
        let hash = HashAlg::Sha256;
        let a = make(KeyKind::Ed25519, hash, &[10; 32]);
        let mut bad = a.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        let e = validate(hash, &bad).unwrap_err();
        assert_eq!(e, ValidateError::BadFinished);
        assert_eq!(e.step(), 10);
        // A Finished of the wrong hash length.
        let (c, v, f) = parts(&a);
        let mut long = f.clone();
        long[3] = 48;
        long.extend_from_slice(&[0; 16]);
        assert_eq!(
            validate(hash, &[c.clone(), v.clone(), long].concat()).unwrap_err(),
            ValidateError::FinishedLength {
                expected: 32,
                found: 48
            }
        );
        // A second CertificateVerify where the Finished belongs.
        assert_eq!(
            validate(hash, &[c, v.clone(), v].concat()).unwrap_err(),
            ValidateError::UnexpectedMessage {
                expected: HandshakeType::FINISHED,
                found: HandshakeType::CERTIFICATE_VERIFY
            }
        );
    }

    #[test]
    fn step11_trailing_bytes() {
        let hash = HashAlg::Sha384;
        let mut a = make(KeyKind::EcdsaP256, hash, &[11; 32]);
        a.push(0);
        let e = validate(hash, &a).unwrap_err();
        assert_eq!(e, ValidateError::TrailingBytes(1));
        assert_eq!(e.step(), 11);
    }

    #[test]
    fn acceptability_is_separate_from_validity() {
        let hash = HashAlg::Sha256;
        let t = shared(KeyKind::EcdsaP256);
        let a = make(KeyKind::EcdsaP256, hash, &[12; 32]);
        let v = validate(hash, &a).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(t.ca.clone()).unwrap();
        let verifier = webpki_verifier(Arc::new(roots)).unwrap();
        let name = ServerName::try_from(t.name.as_str()).unwrap().to_owned();
        let ok = v
            .accept_for(verifier.as_ref(), &name, UnixTime::now())
            .unwrap();
        assert_eq!(ok.name(), &name);
        assert_eq!(ok.end_entity(), &t.origin.chain()[0]);
        let other = ServerName::try_from("other.example").unwrap();
        let err = v
            .accept_for(verifier.as_ref(), &other, UnixTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("other.example"), "{err}");
        // Unknown issuer.
        let empty = webpki_verifier(Arc::new({
            let mut r = RootCertStore::empty();
            r.add(shared(KeyKind::Ed25519).ca.clone()).unwrap();
            r
        }))
        .unwrap();
        assert!(v
            .accept_for(empty.as_ref(), &name, UnixTime::now())
            .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_single_byte_change_is_rejected(
            kind in prop::sample::select(ALL_KINDS.to_vec()),
            sha384 in any::<bool>(),
            pos in any::<prop::sample::Index>(),
            delta in 1u8..=255,
        ) {
            let hash = if sha384 { HashAlg::Sha384 } else { HashAlg::Sha256 };
            let a = shared(kind).authenticator(hash);
            let mut b = a.to_vec();
            let i = pos.index(b.len());
            b[i] = b[i].wrapping_add(delta);
            let mut v = Validator::new(exporter(hash), &offered());
            prop_assert!(v.validate(&b).is_err(), "byte {} changed, still valid", i);
        }

        #[test]
        fn any_truncation_is_rejected(
            kind in prop::sample::select(ALL_KINDS.to_vec()),
            sha384 in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let hash = if sha384 { HashAlg::Sha384 } else { HashAlg::Sha256 };
            let a = shared(kind).authenticator(hash);
            let n = cut.index(a.len());
            let mut v = Validator::new(exporter(hash), &offered());
            prop_assert!(v.validate(&a[..n]).is_err(), "prefix of {} bytes valid", n);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let mut v = Validator::new(exporter(HashAlg::Sha256), &offered());
            let _ = v.validate(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_prefix_never_panic(
            kind in prop::sample::select(ALL_KINDS.to_vec()),
            keep in any::<prop::sample::Index>(),
            tail in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let a = shared(kind).authenticator(HashAlg::Sha256);
            let mut b = a[..keep.index(a.len())].to_vec();
            b.extend_from_slice(&tail);
            let mut v = Validator::new(exporter(HashAlg::Sha256), &offered());
            let _ = v.validate(&b);
        }
    }

    #[test]
    fn every_single_byte_position_is_covered() {
        // Exhaustive over positions (one delta each) for one key type.
        let hash = HashAlg::Sha256;
        let a = shared(KeyKind::Ed25519).authenticator(hash);
        for i in 0..a.len() {
            let mut b = a.to_vec();
            b[i] ^= 0x01;
            assert!(
                Validator::new(exporter(hash), &offered())
                    .validate(&b)
                    .is_err(),
                "byte {i}"
            );
            assert!(
                Validator::new(exporter(hash), &offered())
                    .validate(&a[..i])
                    .is_err(),
                "prefix {i}"
            );
        }
    }
}

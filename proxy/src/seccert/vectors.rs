//! The independent test vectors (`shared/vectors/exported-authenticators.json`,
//! copied to `testdata/`): Ed25519 byte for byte, ECDSA and RSA-PSS every
//! intermediate value, every `invalid` entry rejected. Test-only.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{RootCertStore, SignatureScheme};
use serde_json::Value;

use super::messages::{DecodeError, Field, Handshake, HandshakeType, Reader};
use super::tests::hex;
use super::{
    authenticate, signed_content, webpki_verifier, Exporter, HashAlg, OriginCert, ValidateError,
    Validator,
};

const JSON: &str = include_str!("testdata/exported-authenticators.json");

struct Vector {
    name: String,
    hash: HashAlg,
    scheme: SignatureScheme,
    deterministic: bool,
    exporter: Exporter,
    context: Vec<u8>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    anchor: CertificateDer<'static>,
    origin: String,
    certificate_msg: Vec<u8>,
    signed_content: Vec<u8>,
    certificate_verify_msg: Vec<u8>,
    finished_verify_data: Vec<u8>,
    authenticator: Vec<u8>,
    invalid: serde_json::Map<String, Value>,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {k}"))
}

fn der_from_base64(b64: &str) -> CertificateDer<'static> {
    let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("one certificate")
        .expect("base64");
    der
}

fn vectors() -> Vec<Vector> {
    let doc: Value = serde_json::from_str(JSON).expect("JSON");
    let list = doc["vectors"].as_array().expect("vectors");
    assert_eq!(list.len(), 8, "vector count");
    list.iter()
        .map(|v| {
            let hash = match s(v, "hash") {
                "sha256" => HashAlg::Sha256,
                "sha384" => HashAlg::Sha384,
                other => panic!("hash {other}"),
            };
            let scheme = u16::from_str_radix(s(v, "signature_scheme").trim_start_matches("0x"), 16)
                .expect("scheme");
            Vector {
                name: s(v, "name").to_string(),
                hash,
                scheme: SignatureScheme::from(scheme),
                deterministic: v["deterministic"].as_bool().expect("deterministic"),
                exporter: Exporter::new(
                    hash,
                    hex(s(v, "handshake_context")),
                    hex(s(v, "finished_key")),
                )
                .expect("exporter"),
                context: hex(s(v, "certificate_request_context")),
                chain: v["chain_der_base64"]
                    .as_array()
                    .expect("chain")
                    .iter()
                    .map(|c| der_from_base64(c.as_str().expect("b64")))
                    .collect(),
                key: rustls_pemfile::private_key(&mut s(v, "private_key_pkcs8_pem").as_bytes())
                    .expect("PEM")
                    .expect("key"),
                anchor: der_from_base64(s(v, "trust_anchor_der_base64")),
                origin: s(v, "origin").to_string(),
                certificate_msg: hex(s(v, "certificate_msg")),
                signed_content: hex(s(v, "signed_content")),
                certificate_verify_msg: hex(s(v, "certificate_verify_msg")),
                finished_verify_data: hex(s(v, "finished_verify_data")),
                authenticator: hex(s(v, "authenticator")),
                invalid: v["invalid"].as_object().expect("invalid").clone(),
            }
        })
        .collect()
}

/// The provider's schemes: what a rustls client offers (PKCS#1 included,
/// for TLS 1.2), so the TLS 1.3 check is what rejects PKCS#1.
fn offered() -> Vec<SignatureScheme> {
    super::provider()
        .signature_verification_algorithms
        .supported_schemes()
}

fn messages(a: &[u8]) -> Vec<Vec<u8>> {
    let mut r = Reader::new(a);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(Handshake::decode(&mut r).expect("message").encoded.to_vec());
    }
    out
}

#[test]
fn builder_matches_every_vector() {
    for v in vectors() {
        let origin = OriginCert::from_der(v.chain.clone(), v.key.clone_key()).expect(&v.name);
        // The client offered the vector's scheme (an RSA key would otherwise
        // prefer rsa_pss_rsae_sha512).
        let ours = authenticate(&v.exporter, &[v.scheme], &origin, &v.context).expect(&v.name);
        let m = messages(&ours);
        assert_eq!(m.len(), 3, "{}", v.name);
        assert_eq!(m[0], v.certificate_msg, "{}: certificate_msg", v.name);
        let th1 = v
            .hash
            .hash(&[v.exporter.handshake_context(), &v.certificate_msg]);
        assert_eq!(
            signed_content(th1.as_ref()),
            v.signed_content,
            "{}: signed_content",
            v.name
        );
        // Header and scheme of our CertificateVerify.
        assert_eq!(m[1][0], 0x0f, "{}", v.name);
        assert_eq!(
            u16::from_be_bytes([m[1][4], m[1][5]]),
            u16::from(v.scheme),
            "{}: scheme",
            v.name
        );
        // The Finished over the vector's CertificateVerify.
        let th2 = v.hash.hash(&[
            v.exporter.handshake_context(),
            &v.certificate_msg,
            &v.certificate_verify_msg,
        ]);
        assert_eq!(
            v.hash
                .hmac(v.exporter.finished_key(), th2.as_ref())
                .as_ref(),
            &v.finished_verify_data[..],
            "{}: finished_verify_data",
            v.name
        );
        if v.deterministic {
            assert_eq!(ours, v.authenticator, "{}: byte for byte", v.name);
        } else {
            // Our own (randomised) output validates too.
            Validator::new(v.exporter.clone(), &offered())
                .validate(&ours)
                .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        }
    }
}

#[test]
fn validator_accepts_every_vector() {
    for v in vectors() {
        let ok = Validator::new(v.exporter.clone(), &offered())
            .validate(&v.authenticator)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(ok.chain(), &v.chain[..], "{}", v.name);
        assert_eq!(ok.context(), &v.context[..], "{}", v.name);
        assert_eq!(ok.scheme(), v.scheme, "{}", v.name);
        assert_eq!(
            messages(&v.authenticator),
            vec![
                v.certificate_msg.clone(),
                v.certificate_verify_msg.clone(),
                {
                    let mut f = vec![0x14, 0, 0, v.hash.output_len() as u8];
                    f.extend_from_slice(&v.finished_verify_data);
                    f
                }
            ],
            "{}",
            v.name
        );
    }
}

#[test]
fn validator_rejects_every_invalid_vector() {
    for v in vectors() {
        assert_eq!(v.invalid.len(), 7, "{}", v.name);
        for (what, inv) in &v.invalid {
            let (exporter, bytes) = if what == "other_connection" {
                let hc = hex(s(inv, "handshake_context"));
                (
                    Exporter::new(v.hash, hc, v.exporter.finished_key().to_vec()).expect("hc"),
                    v.authenticator.clone(),
                )
            } else {
                (v.exporter.clone(), hex(s(inv, "authenticator")))
            };
            let err = Validator::new(exporter, &offered())
                .validate(&bytes)
                .err()
                .unwrap_or_else(|| panic!("{} / {what}: accepted", v.name));
            let expected = match what.as_str() {
                "signature" | "cert" | "other_connection" => ValidateError::BadSignature,
                "finished" => ValidateError::BadFinished,
                "scheme" => ValidateError::SchemeNotTls13(SignatureScheme::RSA_PKCS1_SHA256),
                "trailing" => ValidateError::TrailingBytes(1),
                "truncate" => ValidateError::Malformed {
                    message: HandshakeType::FINISHED,
                    error: DecodeError::Truncated(Field::HandshakeBody),
                },
                other => panic!("unknown invalid kind {other}"),
            };
            assert_eq!(err, expected, "{} / {what}", v.name);
        }
    }
}

#[test]
fn vector_certificates_are_acceptable_for_their_origin_only() {
    // 2027-01-01T00:00:00Z, inside the vectors' validity (2026-2035).
    let when = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_798_761_600));
    let after = UnixTime::since_unix_epoch(std::time::Duration::from_secs(2_208_988_800));
    for v in vectors() {
        let ok = Validator::new(v.exporter.clone(), &offered())
            .validate(&v.authenticator)
            .expect("valid");
        let mut roots = RootCertStore::empty();
        roots.add(v.anchor.clone()).expect("anchor");
        let verifier = webpki_verifier(Arc::new(roots)).expect("verifier");
        let name = ServerName::try_from(v.origin.clone()).expect("name");
        ok.accept_for(verifier.as_ref(), &name, when)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        let wrong = ServerName::try_from("wrong.vectors.test").expect("name");
        assert!(ok.accept_for(verifier.as_ref(), &wrong, when).is_err());
        // 2040: expired. Still a valid authenticator, just not acceptable.
        assert!(ok.accept_for(verifier.as_ref(), &name, after).is_err());
    }
}

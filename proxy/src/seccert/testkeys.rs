//! Test identities: a CA and one origin certificate per key type (rcgen),
//! with a canonical test exporter. Test-only.

use std::sync::OnceLock;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::SignatureScheme;

use super::{authenticate, Exporter, HashAlg, OriginCert};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Ed25519,
}

pub const ALL_KINDS: [KeyKind; 4] = [
    KeyKind::EcdsaP256,
    KeyKind::EcdsaP384,
    KeyKind::Rsa2048,
    KeyKind::Ed25519,
];

pub struct TestOrigin {
    pub origin: OriginCert,
    pub key_der: PrivateKeyDer<'static>,
    pub ca: CertificateDer<'static>,
    pub name: String,
    authenticators: [OnceLock<Vec<u8>>; 2],
}

impl KeyKind {
    fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// The scheme the key picks when every scheme is offered.
    pub fn scheme(self) -> SignatureScheme {
        match self {
            KeyKind::EcdsaP256 => SignatureScheme::ECDSA_NISTP256_SHA256,
            KeyKind::EcdsaP384 => SignatureScheme::ECDSA_NISTP384_SHA384,
            KeyKind::Rsa2048 => SignatureScheme::RSA_PSS_SHA512,
            KeyKind::Ed25519 => SignatureScheme::ED25519,
        }
    }
}

/// The exporter values the unit tests use.
pub fn test_exporter(hash: HashAlg) -> Exporter {
    let l = hash.output_len();
    Exporter::new(hash, vec![0x5a; l], vec![0xa5; l]).expect("lengths")
}

/// Every scheme the provider verifies (what a rustls client offers).
pub fn offered() -> Vec<SignatureScheme> {
    super::provider()
        .signature_verification_algorithms
        .supported_schemes()
}

/// A fresh CA and origin certificate for `name` with a `kind` key.
pub fn origin(kind: KeyKind, name: &str) -> TestOrigin {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate_for(kind.rcgen_alg()).expect("origin key");
    let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
    params.is_ca = IsCa::ExplicitNoCa;
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let origin =
        OriginCert::from_der(vec![cert.der().clone()], key_der.clone_key()).expect("origin cert");
    TestOrigin {
        origin,
        key_der,
        ca: ca.der().clone(),
        name: name.to_string(),
        authenticators: [OnceLock::new(), OnceLock::new()],
    }
}

/// One origin per key type for the whole test run (RSA keys are slow to make).
pub fn shared(kind: KeyKind) -> &'static TestOrigin {
    static ORIGINS: [OnceLock<TestOrigin>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let i = match kind {
        KeyKind::EcdsaP256 => 0,
        KeyKind::EcdsaP384 => 1,
        KeyKind::Rsa2048 => 2,
        KeyKind::Ed25519 => 3,
    };
    ORIGINS[i].get_or_init(|| origin(kind, &format!("{kind:?}.origin.test").to_lowercase()))
}

impl TestOrigin {
    /// A valid authenticator under [`test_exporter`] (made once per hash).
    pub fn authenticator(&self, hash: HashAlg) -> &[u8] {
        let i = usize::from(hash == HashAlg::Sha384);
        self.authenticators[i].get_or_init(|| {
            authenticate(&test_exporter(hash), &offered(), &self.origin, &[0x42; 32])
                .expect("authenticate")
        })
    }
}

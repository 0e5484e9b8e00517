//! Which TLS `SignatureScheme`s may sign an authenticator.
//!
//! RFC 9261 §5.2.2: "The signature scheme MUST be a valid TLS 1.3 signature
//! scheme" and, without a request, "MUST be one of the schemes the client
//! listed in the `signature_algorithms` extension of its ClientHello".

use rustls::SignatureScheme;

/// The schemes TLS 1.3 defines for CertificateVerify (RFC 8446 §4.2.3) that
/// rustls names, plus the later-registered ML-DSA ones. rsa_pss_pss_sha256,
/// _sha384 and _sha512 (0x0809..=0x080b) are TLS 1.3 schemes too; rustls has
/// no names for them, so [`is_tls13`] matches their codes. Everything else
/// (RSASSA-PKCS1-v1_5, SHA-1, SHA-224, DSA, GOST, unknown codes) is refused.
pub const TLS13_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::ED25519,
    SignatureScheme::ED448,
    SignatureScheme::ML_DSA_44,
    SignatureScheme::ML_DSA_65,
    SignatureScheme::ML_DSA_87,
];

/// Whether `scheme` may sign a TLS 1.3 CertificateVerify, and so an
/// authenticator (RFC 9261 §5.2.2).
pub fn is_tls13(scheme: SignatureScheme) -> bool {
    TLS13_SCHEMES.contains(&scheme) || matches!(u16::from(scheme), 0x0809..=0x080b)
}

/// The offered schemes that TLS 1.3 allows, in the client's order.
pub fn tls13_subset(offered: &[SignatureScheme]) -> Vec<SignatureScheme> {
    offered.iter().copied().filter(|s| is_tls13(*s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs1_sha1_and_unknown_are_refused() {
        for s in [
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::RSA_PKCS1_SHA1,
            SignatureScheme::ECDSA_SHA1_Legacy,
            SignatureScheme::Unknown(0x0303),
            SignatureScheme::Unknown(0xffff),
        ] {
            assert!(!is_tls13(s), "{s:?}");
        }
    }

    #[test]
    fn rfc8446_schemes_are_allowed() {
        for code in [
            0x0403u16, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0807, 0x0808, 0x0809, 0x080a,
            0x080b,
        ] {
            assert!(is_tls13(SignatureScheme::from(code)), "{code:#06x}");
        }
    }

    #[test]
    fn subset_keeps_order() {
        let offered = [
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA256,
        ];
        assert_eq!(
            tls13_subset(&offered),
            vec![SignatureScheme::ED25519, SignatureScheme::RSA_PSS_SHA256]
        );
    }
}

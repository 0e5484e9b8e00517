//! Who a client certificate names: the identity a verified client
//! certificate gives the policy and the access log (URI SAN such as
//! `spiffe://…`, else DNS SAN, else the subject CN — the order is
//! configurable).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Where in the certificate to look, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// The first URI subject alternative name.
    Uri,
    /// The first DNS subject alternative name.
    Dns,
    /// The subject's common name.
    Cn,
}

/// The default order: URI SAN, DNS SAN, subject CN.
pub const DEFAULT_ORDER: [IdentitySource; 3] =
    [IdentitySource::Uri, IdentitySource::Dns, IdentitySource::Cn];

/// The identity `leaf` names, trying `order`; `None` if the certificate
/// cannot be parsed or names nothing there. The chain has been verified by
/// the handshake before this is asked.
pub fn client_identity(leaf: &CertificateDer<'_>, order: &[IdentitySource]) -> Option<Arc<str>> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default();
    order.iter().find_map(|source| {
        let found = match source {
            IdentitySource::Uri => sans.iter().find_map(|n| match n {
                GeneralName::URI(u) => Some((*u).to_string()),
                _ => None,
            }),
            IdentitySource::Dns => sans.iter().find_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            }),
            IdentitySource::Cn => cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string),
        };
        found.filter(|s| !s.is_empty()).map(Arc::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: Vec<rcgen::SanType>, cn: &str) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn order_decides() {
        let uri = rcgen::SanType::URI("spiffe://corp/payments/api".try_into().expect("uri"));
        let dns = rcgen::SanType::DnsName("Api.Corp.Example".try_into().expect("dns"));
        let both = cert(vec![dns.clone(), uri], "alice");
        assert_eq!(
            client_identity(&both, &DEFAULT_ORDER).as_deref(),
            Some("spiffe://corp/payments/api")
        );
        assert_eq!(
            client_identity(&both, &[IdentitySource::Dns, IdentitySource::Uri]).as_deref(),
            Some("api.corp.example")
        );
        assert_eq!(
            client_identity(&both, &[IdentitySource::Cn]).as_deref(),
            Some("alice")
        );
        let only_cn = cert(vec![], "bob");
        assert_eq!(
            client_identity(&only_cn, &DEFAULT_ORDER).as_deref(),
            Some("bob")
        );
        assert_eq!(
            client_identity(&only_cn, &[IdentitySource::Uri, IdentitySource::Dns]),
            None
        );
        assert_eq!(
            client_identity(&CertificateDer::from(vec![1, 2, 3]), &DEFAULT_ORDER),
            None
        );
    }
}

//! Client identities for mTLS tests: a client CA and the certificates it
//! signs (with a SPIFFE-style URI SAN), and a proxy that asks for them.

use std::path::PathBuf;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Certs, TempDir};

/// A client CA and client certificates it signs, as PEM files and DER.
pub struct ClientPki {
    dir: TempDir,
    pub ca_pem: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

impl ClientPki {
    pub fn new(name: &str) -> ClientPki {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} client CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let dir = TempDir::new(name);
        let ca_pem = dir.write("client-ca.pem", &cert.pem());
        ClientPki {
            dir,
            ca_pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A client certificate `file`.pem/.key with common name `cn` and,
    /// if given, a URI SAN (the identity).
    pub fn issue(&self, file: &str, uri: Option<&str>, cn: &str) -> ClientCert {
        let key = rcgen::KeyPair::generate().expect("client key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        if let Some(uri) = uri {
            params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().expect("URI SAN"))];
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign client cert");
        let cert_pem = self.dir.write(&format!("{file}.pem"), &cert.pem());
        let key_pem = self
            .dir
            .write_secret(&format!("{file}.key"), &key.serialize_pem());
        ClientCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).expect("key DER"),
            cert_pem,
            key_pem,
        }
    }
}

/// A proxy configuration: listener `mtls` (HTTP/1.1, HTTP/2, HTTP/3) that
/// asks for client certificates from `pki`, and a deny-by-default policy
/// whose one rule, `rule`, lets `identities` reach loopback.
pub fn mtls_h3_config(certs: &Certs, pki: &ClientPki, rule: &str, identities: &str) -> String {
    format!(
        r#"
[[listener]]
name = "mtls"
listen = "127.0.0.1:0"
protocols = ["http1", "h2", "h3"]
tls_cert = '{cert}'
tls_key = '{key}'
client_ca = '{ca}'

[policy]
default = "deny"

[[policy.rule]]
name = "{rule}"
action = "allow"
identities = ["{identities}"]
cidrs = ["127.0.0.0/8"]
"#,
        cert = certs.cert_pem.display(),
        key = certs.key_pem.display(),
        ca = pki.ca_pem.display(),
    )
}

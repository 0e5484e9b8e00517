//! Capturing what the server needs from the client's ClientHello.
//!
//! RFC 9261 §5.2.2: without a request, the scheme "MUST be one of the
//! schemes the client listed in the `signature_algorithms` extension of its
//! ClientHello". rustls only shows that list during the handshake, so it has
//! to be recorded then and kept with the connection. Two ways:
//!
//! * TCP (tokio-rustls): `LazyConfigAcceptor` yields the ClientHello before
//!   the handshake goes on; [`ClientHelloInfo::from_client_hello`] on
//!   `start.client_hello()`.
//! * Any rustls server, QUIC included: a per-connection config whose
//!   certificate resolver is a [`CapturingResolver`]
//!   ([`CapturingResolver::config_for_connection`]), read through its
//!   [`ClientHelloSlot`] after the handshake. With quinn, pass that config to
//!   `Incoming::accept_with`. rustls calls the resolver for every full and
//!   resumed TLS 1.3 handshake.
//!
//! rustls does not expose the ClientHello's extension list, so the server
//! never attaches CertificateEntry extensions (RFC 9261 §5.2.1 allows only
//! extensions the ClientHello carried).

use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SignatureScheme};

/// The parts of a ClientHello that authenticators depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// `signature_algorithms`, in the client's order. (For TLS 1.3 rustls
    /// passes the list through unfiltered.)
    pub signature_schemes: Vec<SignatureScheme>,
    /// The SNI, if any.
    pub server_name: Option<String>,
}

/// Where a [`CapturingResolver`] leaves the ClientHello of its connection.
#[derive(Clone, Debug, Default)]
pub struct ClientHelloSlot(Arc<Mutex<Option<ClientHelloInfo>>>);

/// A certificate resolver that records the ClientHello, then defers to
/// another resolver.
#[derive(Debug)]
pub struct CapturingResolver {
    inner: Arc<dyn ResolvesServerCert>,
    slot: ClientHelloSlot,
}

// === impl ClientHelloInfo ===

impl ClientHelloInfo {
    pub fn from_client_hello(ch: &ClientHello<'_>) -> ClientHelloInfo {
        ClientHelloInfo {
            signature_schemes: ch.signature_schemes().to_vec(),
            server_name: ch.server_name().map(str::to_owned),
        }
    }
}

// === impl ClientHelloSlot ===

impl ClientHelloSlot {
    /// The recorded ClientHello (the last one, after a HelloRetryRequest).
    pub fn get(&self) -> Option<ClientHelloInfo> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn put(&self, info: ClientHelloInfo) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(info);
    }
}

// === impl CapturingResolver ===

impl CapturingResolver {
    pub fn new(inner: Arc<dyn ResolvesServerCert>, slot: ClientHelloSlot) -> CapturingResolver {
        CapturingResolver { inner, slot }
    }

    /// A copy of `base` for one connection, whose resolver records that
    /// connection's ClientHello into the returned slot.
    pub fn config_for_connection(base: &ServerConfig) -> (Arc<ServerConfig>, ClientHelloSlot) {
        let slot = ClientHelloSlot::default();
        let mut cfg = base.clone();
        cfg.cert_resolver = Arc::new(CapturingResolver::new(
            Arc::clone(&base.cert_resolver),
            slot.clone(),
        ));
        (Arc::new(cfg), slot)
    }
}

impl ResolvesServerCert for CapturingResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.slot
            .put(ClientHelloInfo::from_client_hello(&client_hello));
        self.inner.resolve(client_hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkeys::{shared, KeyKind};
    use super::super::{Exporter, HashAlg, OriginCert, ServerAuthenticator, Validator};
    use super::*;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};

    fn configs(
        client_schemes_suite: rustls::SupportedCipherSuite,
    ) -> (ServerConfig, Arc<ClientConfig>) {
        let t = shared(KeyKind::EcdsaP256);
        let server = ServerConfig::builder_with_provider(Arc::new(super::super::provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Single(Arc::clone(t.origin.certified_key()))));
        let mut roots = RootCertStore::empty();
        roots.add(t.ca.clone()).unwrap();
        let mut provider = super::super::provider();
        provider.cipher_suites = vec![client_schemes_suite];
        let client = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    #[derive(Debug)]
    struct Single(Arc<CertifiedKey>);

    impl ResolvesServerCert for Single {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
    }

    fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) {
        let mut buf = Vec::new();
        for _ in 0..10 {
            buf.clear();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
            }
            server.process_new_packets().unwrap();
            buf.clear();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
            }
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                return;
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn resolver_captures_schemes_and_both_ends_agree() {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        for (suite, hash) in [
            (cs::TLS13_AES_128_GCM_SHA256, HashAlg::Sha256),
            (cs::TLS13_AES_256_GCM_SHA384, HashAlg::Sha384),
        ] {
            let (base, client_cfg) = configs(suite);
            let (cfg, slot) = CapturingResolver::config_for_connection(&base);
            assert!(slot.get().is_none());
            let name = shared(KeyKind::EcdsaP256).name.clone();
            let mut client =
                ClientConnection::new(client_cfg.clone(), name.clone().try_into().unwrap())
                    .unwrap();
            let mut server = ServerConnection::new(cfg).unwrap();
            assert!(matches!(
                Exporter::from_rustls(&server),
                Err(super::super::ExporterError::Handshaking)
            ));
            handshake(&mut client, &mut server);

            let info = slot.get().expect("captured");
            assert_eq!(info.server_name.as_deref(), Some(name.as_str()));
            let client_offered = client_cfg
                .crypto_provider()
                .signature_verification_algorithms
                .supported_schemes();
            assert_eq!(info.signature_schemes, client_offered);

            let se = Exporter::from_rustls(&server).unwrap();
            let ce = Exporter::from_rustls(&client).unwrap();
            assert_eq!(se.hash(), hash);
            assert_eq!(ce.hash(), hash);
            assert_eq!(se.handshake_context(), ce.handshake_context());
            assert_eq!(se.finished_key(), ce.finished_key());
            assert_ne!(se.handshake_context(), se.finished_key());

            let mut sa = ServerAuthenticator::new(se, &info.signature_schemes);
            let mut v = Validator::new(ce, &client_offered);
            for kind in super::super::testkeys::ALL_KINDS {
                let o = Arc::new(
                    OriginCert::new(Arc::clone(shared(kind).origin.certified_key())).unwrap(),
                );
                let a = sa
                    .authenticator(&o, super::super::provider().secure_random)
                    .unwrap();
                let ok = v.validate(&a).unwrap();
                assert_eq!(ok.scheme(), kind.scheme());
            }
        }
    }

    #[test]
    fn acceptor_path_sees_the_same_schemes() {
        let (_, client_cfg) =
            configs(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256);
        let mut client =
            ClientConnection::new(client_cfg.clone(), "a.example".try_into().unwrap()).unwrap();
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        let mut acceptor = rustls::server::Acceptor::default();
        acceptor.read_tls(&mut &buf[..]).unwrap();
        let accepted = acceptor
            .accept()
            .ok()
            .flatten()
            .expect("a whole ClientHello");
        let info = ClientHelloInfo::from_client_hello(&accepted.client_hello());
        assert_eq!(
            info.signature_schemes,
            client_cfg
                .crypto_provider()
                .signature_verification_algorithms
                .supported_schemes()
        );
        assert_eq!(info.server_name.as_deref(), Some("a.example"));
    }
}

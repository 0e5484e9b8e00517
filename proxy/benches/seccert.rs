//! RFC 9261 authenticator cost beside a plain TLS 1.3 handshake, in one run
//! on one machine, with the process's provider (aws-lc-rs):
//!
//! * `authenticate/<key>`: the server builds one spontaneous authenticator
//!   (encode Certificate, hash, sign, HMAC) — the per-connection, per-origin
//!   cost of advertising an origin;
//! * `validate/<key>`: the client checks one (parse, verify, HMAC), a fresh
//!   `Validator` each time as on a new connection;
//! * `tls13_handshake`: a full TLS 1.3 handshake in memory (rustls client and
//!   server pumping bytes, both ends' CPU, no resumption), ECDSA P-256 server
//!   certificate, default key exchange.
//!
//! Criterion prints the times. A summary at the end, from its own timing
//! loop, prints each cost as a multiple of one handshake, and what
//! advertising N origins costs a connection.
//!
//! `cargo bench -p bauta --bench seccert`. `BAUTA_BENCH_SUMMARY_SECS` sets the
//! summary's time per measurement (default 1). Without `--bench` (under
//! `cargo test --all-targets`) criterion runs each benchmark once and the
//! summary uses a few iterations.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bauta::seccert::{authenticate, Exporter, HashAlg, OriginCert, Validator};
use criterion::Criterion;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::SignatureScheme;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

#[derive(Clone, Copy)]
enum Kind {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Ed25519,
}

const KINDS: [Kind; 4] = [
    Kind::EcdsaP256,
    Kind::EcdsaP384,
    Kind::Rsa2048,
    Kind::Ed25519,
];

struct Fixture {
    kind: Kind,
    origin: OriginCert,
    offered: Vec<SignatureScheme>,
    exporter: Exporter,
    authenticator: Vec<u8>,
}

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::EcdsaP256 => "ecdsa-p256",
            Kind::EcdsaP384 => "ecdsa-p384",
            Kind::Rsa2048 => "rsa-pss-2048",
            Kind::Ed25519 => "ed25519",
        }
    }

    fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Kind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Kind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Kind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            Kind::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A CA (P-256) and a leaf for `name` with a `kind` key; chain = [leaf, CA].
fn identity(kind: Kind, name: &str) -> Identity {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate_for(kind.rcgen_alg()).expect("key");
    let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
    params.is_ca = IsCa::ExplicitNoCa;
    let leaf = params.signed_by(&key, &issuer).expect("leaf");
    Identity {
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ca: ca.der().clone(),
    }
}

fn fixture(kind: Kind) -> Fixture {
    let id = identity(kind, "origin.bench.test");
    let origin = OriginCert::from_der(id.chain, id.key).expect("origin");
    // What a rustls client offers.
    let offered = provider()
        .signature_verification_algorithms
        .supported_schemes();
    let exporter = Exporter::new(HashAlg::Sha256, vec![0x11; 32], vec![0x22; 32]).expect("exp");
    let authenticator = authenticate(&exporter, &offered, &origin, &[0x33; 32]).expect("auth");
    Fixture {
        kind,
        origin,
        offered,
        exporter,
        authenticator,
    }
}

fn one_authenticate(f: &Fixture) -> usize {
    let a = authenticate(&f.exporter, &f.offered, &f.origin, black_box(&[0x44; 32]))
        .expect("authenticate");
    a.len()
}

fn one_validate(f: &Fixture) -> usize {
    let mut v = Validator::new(f.exporter.clone(), &f.offered);
    let ok = v.validate(black_box(&f.authenticator)).expect("validate");
    ok.chain().len()
}

/// A client and server config for the handshake baseline.
struct Handshake {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl Handshake {
    fn new() -> Handshake {
        let id = identity(Kind::EcdsaP256, "localhost");
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(id.chain, id.key)
            .expect("server");
        let mut roots = RootCertStore::empty();
        roots.add(id.ca).expect("root");
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every handshake is a full one.
        client.resumption = rustls::client::Resumption::disabled();
        Handshake {
            client: Arc::new(client),
            server: Arc::new(server),
        }
    }

    /// One full handshake; returns the negotiated key exchange group.
    fn run(&self) -> Option<rustls::NamedGroup> {
        let name = ServerName::try_from("localhost").expect("name");
        let mut client = ClientConnection::new(Arc::clone(&self.client), name).expect("client");
        let mut server = ServerConnection::new(Arc::clone(&self.server)).expect("server");
        let mut pipe = Pipe::default();
        loop {
            while client.wants_write() {
                client.write_tls(&mut pipe.to_server).expect("write");
            }
            pump(&mut pipe.to_server, |rd| server.read_tls(rd));
            server.process_new_packets().expect("server");
            while server.wants_write() {
                server.write_tls(&mut pipe.to_client).expect("write");
            }
            pump(&mut pipe.to_client, |rd| client.read_tls(rd));
            client.process_new_packets().expect("client");
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        client.negotiated_key_exchange_group().map(|g| g.name())
    }
}

#[derive(Default)]
struct Pipe {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

fn pump(buf: &mut Vec<u8>, mut read: impl FnMut(&mut &[u8]) -> std::io::Result<usize>) {
    let mut rd = &buf[..];
    while !rd.is_empty() {
        if read(&mut rd).expect("read_tls") == 0 {
            break;
        }
    }
    buf.clear();
}

/// Mean time of `f` over `budget` (at least `min_iters` runs).
fn time_per_call(budget: Duration, min_iters: u32, mut f: impl FnMut()) -> Duration {
    f(); // warm up
    let start = Instant::now();
    let mut n = 0u32;
    while n < min_iters || start.elapsed() < budget {
        f();
        n += 1;
    }
    start.elapsed() / n
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .ok();
    let bench = std::env::args().any(|a| a == "--bench");
    let fixtures: Vec<Fixture> = KINDS.iter().map(|k| fixture(*k)).collect();
    let hs = Handshake::new();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    c.bench_function("tls13_handshake", |b| b.iter(|| hs.run()));
    for f in &fixtures {
        c.bench_function(&format!("authenticate/{}", f.kind.label()), |b| {
            b.iter(|| one_authenticate(f))
        });
        c.bench_function(&format!("validate/{}", f.kind.label()), |b| {
            b.iter(|| one_validate(f))
        });
    }
    c.final_summary();

    // The summary: own timing loop, same process, same machine.
    let budget = if bench {
        let secs = std::env::var("BAUTA_BENCH_SUMMARY_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(1.0);
        Duration::from_secs_f64(secs)
    } else {
        Duration::ZERO
    };
    let min_iters = if bench { 20 } else { 2 };
    let group = hs.run();
    let handshake = time_per_call(budget, min_iters, || {
        black_box(hs.run());
    });
    println!();
    println!("seccert summary (SHA-256 authenticators, 2-certificate chains; 1 handshake = full TLS 1.3, ECDSA P-256 server cert, {group:?}, client + server CPU, in memory)");
    println!("  tls13 handshake: {:9.1} µs", micros(handshake));
    for f in &fixtures {
        let auth = time_per_call(budget, min_iters, || {
            black_box(one_authenticate(f));
        });
        let val = time_per_call(budget, min_iters, || {
            black_box(one_validate(f));
        });
        let ra = auth.as_secs_f64() / handshake.as_secs_f64();
        let rv = val.as_secs_f64() / handshake.as_secs_f64();
        println!(
            "  {:<13} authenticate = {:8.1} µs = {:.3} x handshake;  validate = {:8.1} µs = {:.3} x handshake;  10 origins: server +{:.2}, client +{:.2} handshakes",
            f.kind.label(),
            micros(auth),
            ra,
            micros(val),
            rv,
            10.0 * ra,
            10.0 * rv,
        );
    }
}

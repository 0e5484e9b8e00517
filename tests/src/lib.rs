//! Shared helpers for end-to-end tests: peers the proxy talks to (TCP echo,
//! HTTP/1.1 origin, fake DNS), TLS material, a proxy started in-process on
//! ephemeral ports, and small clients (raw HTTP/1.1, HTTP/2 CONNECT, admin).
//!
//! Everything binds 127.0.0.1 port 0, so tests run in parallel without
//! stepping on each other.

pub mod client_pki;
pub mod curl;
pub mod faults_env;
// Sidecar chaining: a gateway and a sidecar Bauta (tests/tests/gateway_*.rs).
pub mod gateway_env;
pub mod h2_raw;
// The load tool (src/bin/load.rs).
pub mod load;
pub mod masque;
pub mod raw_peers;
// tests-c: helpers for the README-claim tests (tests/tests/readme_*.rs).
pub mod readme_env;
pub mod seccert_env;
pub mod smuggle_env;
pub mod soak;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

/// Default bound for one whole test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the echo server sends after it sees EOF from its peer (then it closes).
pub const ECHO_EOF_REPLY: &[u8] = b"<eof>";

/// Install the crypto provider. Call first in every test.
pub fn init() {
    bauta::tls::install_crypto_provider();
}

/// Run `f` with the default test bound; a test that hangs fails instead.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    bounded_for(TEST_TIMEOUT, f).await
}

pub async fn bounded_for<F: Future>(limit: Duration, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

// === temporary directories ===

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "bauta-tests-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `contents` to `name` inside the directory; returns the full path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }

    /// [`TempDir::write`], readable by the owner only (mode 0600): how
    /// private keys should be kept (the proxy warns about others).
    pub fn write_secret(&self, name: &str, contents: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(name, contents);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600 temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// === TLS material ===

/// A test CA and a proxy certificate it signed (SANs: localhost, 127.0.0.1).
pub struct Certs {
    pub dir: TempDir,
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub ca_der: CertificateDer<'static>,
}

pub fn make_certs() -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Bauta Test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "bauta test proxy");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("sign leaf");

    let dir = TempDir::new("certs");
    let ca_pem = dir.write("ca.pem", &ca_cert.pem());
    let cert_pem = dir.write("proxy.pem", &leaf_cert.pem());
    let key_pem = dir.write_secret("proxy.key", &leaf_key.serialize_pem());
    Certs {
        dir,
        ca_pem,
        cert_pem,
        key_pem,
        ca_der: ca_cert.der().clone(),
    }
}

/// A rustls client config trusting only the test CA, offering `alpn`.
pub fn tls_client_config(certs: &Certs, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.ca_der.clone()).expect("add test CA");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// TLS to the proxy's secure listener, verifying its certificate for the IP.
pub async fn tls_connect(addr: SocketAddr, certs: &Certs, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(certs, alpn));
    let tcp = TcpStream::connect(addr)
        .await
        .expect("TCP connect to proxy");
    connector
        .connect(ServerName::from(addr.ip()), tcp)
        .await
        .expect("TLS handshake with the proxy")
}

/// The DER of the (first) certificate in a PEM file.
pub fn pem_der(path: &Path) -> rustls_pki_types::CertificateDer<'static> {
    let pem = std::fs::read(path).expect("read PEM");
    rustls_pki_types::pem::PemObject::from_pem_slice(&pem).expect("a PEM certificate")
}

/// A fresh TLS handshake over TCP (verifying for "localhost"); the server's leaf.
pub async fn tcp_leaf(
    addr: SocketAddr,
    certs: &Certs,
) -> rustls_pki_types::CertificateDer<'static> {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(certs, &[b"http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("TCP connect");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake over TCP");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

// === TCP echo server ===

/// Echoes every byte back; on EOF replies [`ECHO_EOF_REPLY`] and closes.
pub struct EchoServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        EchoServer::from_listener(listener)
    }

    /// Serve on a listener the test bound itself (another loopback address,
    /// a chosen port).
    pub fn from_listener(listener: TcpListener) -> EchoServer {
        let addr = listener.local_addr().expect("echo addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) => {
                                let _ = stream.write_all(ECHO_EOF_REPLY).await;
                                let _ = stream.shutdown().await;
                                return;
                            }
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        EchoServer {
            addr,
            accepted,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Write `msg` and expect it echoed back.
pub async fn assert_echo<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, msg: &[u8]) {
    stream.write_all(msg).await.expect("write into tunnel");
    stream.flush().await.expect("flush tunnel");
    let mut got = vec![0u8; msg.len()];
    stream
        .read_exact(&mut got)
        .await
        .expect("read echo back through the tunnel");
    assert_eq!(got, msg, "echo through the tunnel");
}

/// Half-close: shut our write side, expect the echo server's EOF reply, then EOF.
pub async fn assert_half_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    stream.shutdown().await.expect("shutdown write side");
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .await
        .expect("read until the tunnel closes");
    assert_eq!(
        rest, ECHO_EOF_REPLY,
        "after our half-close the echo server should see EOF, reply, and the tunnel close"
    );
}

// === HTTP/1.1 origin ===

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: Method,
    /// The request target exactly as received (origin-form expected).
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
}

struct OriginState {
    conns: AtomicUsize,
    seen: Mutex<Vec<SeenRequest>>,
    release: Notify,
    upload_tx: mpsc::UnboundedSender<Bytes>,
}

pub type TestBody = BoxBody<Bytes, Infallible>;

/// A small hyper HTTP/1.1 server.
///
/// * `GET /stream`: sends `part1;`, waits for [`Origin::release`], sends `part2;`.
/// * any `POST`: echoes the request body; each received chunk is also
///   reported to [`Origin::next_upload_chunk`].
/// * anything else: `origin: METHOD PATH\n`.
///
/// Every response carries `x-origin: yes` plus hop-by-hop fields
/// (`Connection: x-origin-hop`, `X-Origin-Hop`, `Keep-Alive`) that a proxy must drop.
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    upload_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Bytes>>,
    task: JoinHandle<()>,
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        Origin::from_listener(listener)
    }

    /// Serve on a listener the test bound itself (another loopback address,
    /// a chosen port).
    pub fn from_listener(listener: TcpListener) -> Origin {
        let addr = listener.local_addr().expect("origin addr");
        let (upload_tx, upload_rx) = mpsc::unbounded_channel();
        let state = Arc::new(OriginState {
            conns: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            release: Notify::new(),
            upload_tx,
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.conns.fetch_add(1, Ordering::SeqCst);
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| origin_handle(Arc::clone(&st), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            state,
            upload_rx: tokio::sync::Mutex::new(upload_rx),
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.conns.load(Ordering::SeqCst)
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().expect("origin lock").clone()
    }

    /// Let a `GET /stream` response continue.
    pub fn release(&self) {
        self.state.release.notify_one();
    }

    /// The next request-body chunk a POST handler received.
    pub async fn next_upload_chunk(&self) -> Bytes {
        self.upload_rx
            .lock()
            .await
            .recv()
            .await
            .expect("origin upload channel open")
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn origin_handle(
    state: Arc<OriginState>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    state.seen.lock().expect("origin lock").push(SeenRequest {
        method: req.method().clone(),
        uri: req.uri().to_string(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body: TestBody = if method == Method::GET && path == "/stream" {
        let st = Arc::clone(&state);
        let s = futures_util::stream::unfold(0u8, move |step| {
            let st = Arc::clone(&st);
            async move {
                match step {
                    0 => Some((Ok(Frame::data(Bytes::from_static(b"part1;"))), 1)),
                    1 => {
                        st.release.notified().await;
                        Some((Ok(Frame::data(Bytes::from_static(b"part2;"))), 2))
                    }
                    _ => None,
                }
            }
        });
        StreamBody::new(s).boxed()
    } else if method == Method::POST {
        let mut incoming = req.into_body();
        let mut all = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                let _ = state.upload_tx.send(data.clone());
                all.extend_from_slice(&data);
            }
        }
        Full::new(Bytes::from(all)).boxed()
    } else {
        Full::new(Bytes::from(format!("origin: {method} {path}\n"))).boxed()
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert("x-origin", http::HeaderValue::from_static("yes"));
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("x-origin-hop"),
    );
    h.insert("x-origin-hop", http::HeaderValue::from_static("secret"));
    h.insert("keep-alive", http::HeaderValue::from_static("timeout=30"));
    Ok(resp)
}

/// A request body fed from a channel: send chunks, drop the sender to end it.
pub fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(s).boxed())
}

pub fn full_body(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).boxed()
}

// === fake DNS ===

/// A hand-written DNS server on 127.0.0.1 (UDP and TCP, same port):
/// `echo.test` → A 127.0.0.1 (AAAA: no data), `slow.test` → never answers,
/// `servfail.test` → SERVFAIL,
/// everything else → NXDOMAIN. For DNS-rebinding tests, names whose answer
/// changes from one query to the next (TTL 0, counted per name and type):
///
/// * `rebind.test`: A queries 1, 3, 5, … → 127.0.0.2 (the allowed address),
///   2, 4, 6, … → 127.0.0.1 (the victim); AAAA: no data.
/// * `rebind-slow.test`: the same, but every 127.0.0.1 answer is sent
///   [`REBIND_SLOW_DELAY`] late.
/// * `rebind6.test`: A always 127.0.0.2; AAAA queries 1, 3, … → no data,
///   2, 4, … → ::1.
pub struct FakeDns {
    pub addr: SocketAddr,
    queries: Arc<Mutex<Vec<(String, u16)>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeDns {
    pub async fn start() -> FakeDns {
        // UDP and TCP on the same port; retry if TCP's is taken.
        let mut tries = 0;
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS UDP");
            let addr = udp.local_addr().expect("DNS addr");
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) => {
                    tries += 1;
                    assert!(tries < 20, "no port free for UDP and TCP DNS: {e}");
                }
            }
        };
        let addr = udp.local_addr().expect("DNS addr");
        let queries = Arc::new(Mutex::new(Vec::new()));
        let q_udp = Arc::clone(&queries);
        let udp = Arc::new(udp);
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                match dns_answer(&buf[..n], &q_udp) {
                    Some((resp, delay)) if delay.is_zero() => {
                        let _ = udp.send_to(&resp, peer).await;
                    }
                    // A late answer must not hold up the ones behind it.
                    Some((resp, delay)) => {
                        let udp = Arc::clone(&udp);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = udp.send_to(&resp, peer).await;
                        });
                    }
                    None => {}
                }
            }
        });
        let q_tcp = Arc::clone(&queries);
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else {
                    continue;
                };
                let q = Arc::clone(&q_tcp);
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        if s.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                        if s.read_exact(&mut msg).await.is_err() {
                            return;
                        }
                        if let Some((resp, delay)) = dns_answer(&msg, &q) {
                            tokio::time::sleep(delay).await;
                            let Ok(l) = u16::try_from(resp.len()) else {
                                return;
                            };
                            let mut out = l.to_be_bytes().to_vec();
                            out.extend_from_slice(&resp);
                            if s.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                        // slow.test: hold the connection open without answering.
                    }
                });
            }
        });
        FakeDns {
            addr,
            queries,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// `(name, qtype)` of every query received.
    pub fn queries(&self) -> Vec<(String, u16)> {
        self.queries.lock().expect("dns lock").clone()
    }

    /// How many queries of type `qtype` (1 = A, 28 = AAAA) asked for `name`.
    pub fn query_count(&self, name: &str, qtype: u16) -> usize {
        self.queries
            .lock()
            .expect("dns lock")
            .iter()
            .filter(|(n, t)| n == name && *t == qtype)
            .count()
    }

    /// `[dns]` and `[limits]` TOML pointing the proxy here with a 500 ms timeout.
    pub fn toml(&self) -> String {
        format!(
            "[dns]\nservers = [\"{}\"]\n\n[limits]\ndns_timeout_ms = 500\nconnect_timeout_ms = 500\n",
            self.addr
        )
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How late `rebind-slow.test` sends its 127.0.0.1 answers.
pub const REBIND_SLOW_DELAY: Duration = Duration::from_millis(150);

/// Build the answer to one DNS query and how long to wait before sending
/// it, or `None` to stay silent.
fn dns_answer(q: &[u8], log: &Mutex<Vec<(String, u16)>>) -> Option<(Vec<u8>, Duration)> {
    if q.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([q[2], q[3]]);
    if flags & 0x8000 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None; // a response, or not exactly one question
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let q_end = i + 4;
    let question = q.get(12..q_end)?;
    let name = labels.join(".");
    // 0 for the first query of this name and type, 1 for the second, …
    let nth = {
        let mut log = log.lock().expect("dns lock");
        let nth = log
            .iter()
            .filter(|(n, t)| *n == name && *t == qtype)
            .count();
        log.push((name.clone(), qtype));
        nth
    };
    const A: u16 = 1;
    const AAAA: u16 = 28;
    const ALLOWED: [u8; 4] = [127, 0, 0, 2];
    const VICTIM: [u8; 4] = [127, 0, 0, 1];
    const VICTIM6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let alternate = |first: [u8; 4], second: [u8; 4]| {
        if nth % 2 == 0 {
            first
        } else {
            second
        }
    };

    // An answer record: (type, TTL, RDATA).
    type Record = (u16, u32, Vec<u8>);
    let (rcode, answers, delay): (u16, Vec<Record>, Duration) = match (name.as_str(), qtype) {
        ("slow.test", _) => return None,
        ("servfail.test", _) => (2, vec![], Duration::ZERO),
        ("echo.test", A) => (0, vec![(A, 60, vec![127, 0, 0, 1])], Duration::ZERO),
        ("echo.test", _) => (0, vec![], Duration::ZERO),
        ("rebind.test", A) => (
            0,
            vec![(A, 0, alternate(ALLOWED, VICTIM).to_vec())],
            Duration::ZERO,
        ),
        ("rebind-slow.test", A) => {
            let addr = alternate(ALLOWED, VICTIM);
            let delay = if addr == VICTIM {
                REBIND_SLOW_DELAY
            } else {
                Duration::ZERO
            };
            (0, vec![(A, 0, addr.to_vec())], delay)
        }
        ("rebind.test" | "rebind-slow.test", _) => (0, vec![], Duration::ZERO),
        ("rebind6.test", A) => (0, vec![(A, 0, ALLOWED.to_vec())], Duration::ZERO),
        ("rebind6.test", AAAA) if nth % 2 == 1 => {
            (0, vec![(AAAA, 0, VICTIM6.to_vec())], Duration::ZERO)
        }
        ("rebind6.test", _) => (0, vec![], Duration::ZERO),
        _ => (3, vec![], Duration::ZERO),
    };
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&q[0..2]); // id
    let rflags: u16 = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode;
    out.extend_from_slice(&rflags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&u16::try_from(answers.len()).ok()?.to_be_bytes()); // ANCOUNT
    out.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
    out.extend_from_slice(&0u16.to_be_bytes()); // ARCOUNT
    out.extend_from_slice(question);
    for (rtype, ttl, rdata) in answers {
        out.extend_from_slice(&[0xC0, 0x0C]); // name: pointer to the question
        out.extend_from_slice(&rtype.to_be_bytes()); // TYPE
        out.extend_from_slice(&1u16.to_be_bytes()); // CLASS IN
        out.extend_from_slice(&ttl.to_be_bytes()); // TTL
        out.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes()); // RDLENGTH
        out.extend_from_slice(&rdata);
    }
    Some((out, delay))
}

// === the proxy ===

/// How to start the proxy under test.
pub struct ProxyOpts<'a> {
    /// Add a TLS listener "secure" (`["http1", "h2"]`) with these certificates.
    pub certs: Option<&'a Certs>,
    /// Protocols of the plaintext listener "plain".
    pub plain_protocols: &'a [&'a str],
    /// TOML appended after the listeners (`[policy]`, `[dns]`, `[limits]`, …).
    pub extra: String,
}

impl Default for ProxyOpts<'_> {
    fn default() -> Self {
        ProxyOpts {
            certs: None,
            plain_protocols: &["http1"],
            extra: String::new(),
        }
    }
}

/// A proxy running in this process on ephemeral ports.
pub struct TestProxy {
    running: Option<bauta::Running>,
    pub plain: SocketAddr,
    pub secure: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub config_text: String,
}

impl TestProxy {
    /// The bound address of the listener `name` (from the test's TOML).
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.running
            .as_ref()
            .and_then(|r| r.listener_addr(name))
            .unwrap_or_else(|| panic!("listener {name:?} bound"))
    }

    pub fn secure(&self) -> SocketAddr {
        self.secure.expect("proxy started with a TLS listener")
    }

    /// Graceful shutdown (waits for the configured grace at most).
    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Allow rule for the loopback range (without it, SSRF protection refuses 127/8).
pub const ALLOW_LOOPBACK: &str = r#"
[policy]
default = "deny"

[[policy.rule]]
name = "lab"
action = "allow"
cidrs = ["127.0.0.0/8"]
"#;

/// Start a proxy with a plaintext HTTP/1.1 listener, admin, and `extra` TOML.
pub async fn start_proxy(extra: &str) -> TestProxy {
    start_proxy_opts(ProxyOpts {
        extra: extra.to_string(),
        ..ProxyOpts::default()
    })
    .await
}

/// Start a proxy with plaintext and TLS listeners, admin, and `extra` TOML.
pub async fn start_proxy_tls(certs: &Certs, extra: &str) -> TestProxy {
    start_proxy_opts(ProxyOpts {
        certs: Some(certs),
        extra: extra.to_string(),
        ..ProxyOpts::default()
    })
    .await
}

pub async fn start_proxy_opts(opts: ProxyOpts<'_>) -> TestProxy {
    init();
    let protocols = opts
        .plain_protocols
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [{protocols}]\n"
    );
    if let Some(c) = opts.certs {
        text.push_str(&format!(
            "\n[[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\", \"h2\"]\n\
             tls_cert = '{}'\ntls_key = '{}'\n",
            c.cert_pem.display(),
            c.key_pem.display()
        ));
    }
    text.push('\n');
    text.push_str(&opts.extra);
    let cfg = match bauta::Config::parse(&text, "test.toml", &std::env::temp_dir()) {
        Ok(c) => c,
        Err(e) => panic!("test config rejected: {e}\n---\n{text}"),
    };
    let running = bauta::start(cfg).await.expect("start the proxy");
    let plain = running
        .listener_addr("plain")
        .expect("plain listener bound");
    let secure = running.listener_addr("secure");
    let admin = running.admin.expect("admin bound");
    TestProxy {
        running: Some(running),
        plain,
        secure,
        admin,
        config_text: text,
    }
}

// === raw HTTP/1.1 ===

/// A response head as read off the wire.
#[derive(Clone, Debug)]
pub struct Head {
    pub status: u16,
    pub status_line: String,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn proxy_status(&self) -> Option<&str> {
        self.header("proxy-status")
    }

    /// Assert `status` and a `Proxy-Status: bauta; error=<token>` header.
    pub fn assert_error(&self, status: u16, token: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: status; head: {self:?}");
        let ps = self
            .proxy_status()
            .unwrap_or_else(|| panic!("{what}: no Proxy-Status header; head: {self:?}"));
        assert_proxy_status(ps, token, what);
    }
}

/// Assert a Proxy-Status value starts with `bauta; error=<token>` (and the token ends there).
pub fn assert_proxy_status(value: &str, token: &str, what: &str) {
    let prefix = format!("bauta; error={token}");
    let ok = value
        .strip_prefix(&prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(';'));
    assert!(
        ok,
        "{what}: Proxy-Status {value:?} should start with {prefix:?}"
    );
}

/// Read one response head; returns it and whatever bytes followed it.
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<(Head, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too long",
            ));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a complete response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let leftover = buf[end + 4..].to_vec();
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((
        Head {
            status,
            status_line,
            headers,
        },
        leftover,
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read a `Content-Length` body (the head must have one), given bytes already read.
pub async fn read_body<S: AsyncRead + Unpin>(
    s: &mut S,
    head: &Head,
    mut leftover: Vec<u8>,
) -> Vec<u8> {
    let len: usize = head
        .header("content-length")
        .unwrap_or_else(|| panic!("response without Content-Length: {head:?}"))
        .parse()
        .expect("numeric Content-Length");
    while leftover.len() < len {
        let mut chunk = vec![0u8; len - leftover.len()];
        let n = s.read(&mut chunk).await.expect("read response body");
        assert!(n > 0, "connection closed inside the response body");
        leftover.extend_from_slice(&chunk[..n]);
    }
    leftover.truncate(len);
    leftover
}

/// Send raw bytes to `addr`; read the response head.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> (Head, TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(request).await.expect("send request");
    let (head, leftover) = read_head(&mut s).await.unwrap_or_else(|e| {
        panic!(
            "reading the response to {:?}: {e}",
            String::from_utf8_lossy(request)
        )
    });
    (head, s, leftover)
}

/// `CONNECT authority HTTP/1.1` with a matching Host header, over any stream.
pub async fn connect_on<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, authority: &str) -> Head {
    connect_on_with(s, authority, "").await
}

/// As [`connect_on`], with `extra` header lines (each ending in CRLF) after Host.
pub async fn connect_on_with<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    authority: &str,
    extra: &str,
) -> Head {
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.expect("send CONNECT");
    s.flush().await.expect("flush CONNECT");
    let (head, leftover) = read_head(s)
        .await
        .unwrap_or_else(|e| panic!("reading the answer to CONNECT {authority}: {e}"));
    if head.status == 200 {
        assert!(
            leftover.is_empty(),
            "no bytes may follow a 2xx CONNECT head before the target speaks: {leftover:?}"
        );
    }
    head
}

/// CONNECT over a fresh plaintext HTTP/1.1 connection.
pub async fn connect_h1(proxy: SocketAddr, authority: &str) -> (Head, TcpStream) {
    connect_h1_with(proxy, authority, "").await
}

/// As [`connect_h1`], with `extra` header lines (each ending in CRLF).
pub async fn connect_h1_with(proxy: SocketAddr, authority: &str, extra: &str) -> (Head, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.expect("connect to proxy");
    let head = connect_on_with(&mut s, authority, extra).await;
    (head, s)
}

/// A `Proxy-Authorization` value: `Basic base64(user ":" password)` (RFC 7617).
pub fn basic_credential(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

// === HTTP/1.1 client (hyper) ===

pub type H1Sender = hyper::client::conn::http1::SendRequest<TestBody>;

/// A hyper HTTP/1.1 client connection over `io` (requests are sent as given, so an
/// absolute URI goes out in absolute-form; set Host yourself).
pub async fn h1_client<S>(io: S) -> H1Sender
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1 client handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// Send a request and collect the response.
pub async fn h1_send(
    sender: &mut H1Sender,
    req: Request<TestBody>,
) -> (http::response::Parts, Bytes) {
    sender.ready().await.expect("client connection ready");
    let resp = sender.send_request(req).await.expect("response from proxy");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("read response body").to_bytes();
    (parts, body)
}

/// `GET {url}` in absolute-form with a Host header.
pub fn get_absolute(url: &str) -> Request<TestBody> {
    let uri: http::Uri = url.parse().expect("valid URL");
    let host = uri.authority().expect("URL has an authority").to_string();
    Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(http::header::HOST, host)
        .body(full_body(Bytes::new()))
        .expect("request")
}

// === HTTP/2 ===

pub type H2Sender = h2::client::SendRequest<Bytes>;

/// HTTP/2 client handshake over `io` (TLS with ALPN h2, or h2c prior knowledge).
pub async fn h2_client<S>(io: S) -> H2Sender
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::handshake(io).await.expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// One HTTP/2 stream used as a byte tunnel.
pub struct H2Tunnel {
    pub send: h2::SendStream<Bytes>,
    pub recv: h2::RecvStream,
    pending: Vec<u8>,
    eof: bool,
}

impl H2Tunnel {
    pub fn write(&mut self, data: &[u8]) {
        self.send
            .send_data(Bytes::copy_from_slice(data), false)
            .expect("send DATA into the tunnel");
    }

    /// END_STREAM on our side (the HTTP/2 half-close).
    pub fn finish(&mut self) {
        self.send
            .send_data(Bytes::new(), true)
            .expect("send END_STREAM");
    }

    async fn fill(&mut self) -> bool {
        match self.recv.data().await {
            Some(Ok(d)) => {
                let _ = self.recv.flow_control().release_capacity(d.len());
                self.pending.extend_from_slice(&d);
                true
            }
            Some(Err(e)) => panic!("tunnel stream error: {e}"),
            None => {
                self.eof = true;
                false
            }
        }
    }

    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            assert!(
                self.fill().await,
                "tunnel ended after {} of {n} bytes",
                self.pending.len()
            );
        }
        self.pending.drain(..n).collect()
    }

    pub async fn read_to_end(&mut self) -> Vec<u8> {
        while !self.eof {
            self.fill().await;
        }
        std::mem::take(&mut self.pending)
    }

    pub async fn assert_echo(&mut self, msg: &[u8]) {
        self.write(msg);
        let got = self.read_exact(msg.len()).await;
        assert_eq!(got, msg, "echo through the HTTP/2 tunnel");
    }

    pub async fn assert_half_close(&mut self) {
        self.finish();
        let rest = self.read_to_end().await;
        assert_eq!(
            rest, ECHO_EOF_REPLY,
            "after END_STREAM the echo server should see EOF, reply, and the stream end"
        );
    }
}

/// CONNECT over HTTP/2. The tunnel is returned only for a 2xx.
pub async fn h2_connect(
    client: &H2Sender,
    authority: &str,
) -> (http::response::Parts, Option<H2Tunnel>) {
    let mut client = client
        .clone()
        .ready()
        .await
        .expect("HTTP/2 connection ready");
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(authority)
        .body(())
        .expect("CONNECT request");
    let (resp, send) = client
        .send_request(req, false)
        .expect("send CONNECT on HTTP/2");
    let resp = resp.await.expect("HTTP/2 CONNECT response");
    let (parts, recv) = resp.into_parts();
    let tunnel = parts.status.is_success().then(|| H2Tunnel {
        send,
        recv,
        pending: Vec::new(),
        eof: false,
    });
    (parts, tunnel)
}

/// A plain request over HTTP/2 with an optional body; collects the response.
pub async fn h2_request(
    client: &H2Sender,
    req: Request<()>,
    body: Option<Bytes>,
) -> (http::response::Parts, Bytes) {
    let mut client = client
        .clone()
        .ready()
        .await
        .expect("HTTP/2 connection ready");
    let (resp, mut send) = client
        .send_request(req, body.is_none())
        .expect("send HTTP/2 request");
    if let Some(b) = body {
        send.send_data(b, true).expect("send request body");
    }
    let resp = resp.await.expect("HTTP/2 response");
    let (parts, mut recv) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(d) = recv.data().await {
        let d = d.expect("response body DATA");
        let _ = recv.flow_control().release_capacity(d.len());
        out.extend_from_slice(&d);
    }
    (parts, Bytes::from(out))
}

/// The Proxy-Status header of an http response.
pub fn proxy_status_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("proxy-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub fn assert_error_parts(
    parts: &http::response::Parts,
    status: StatusCode,
    token: &str,
    what: &str,
) {
    assert_eq!(
        parts.status, status,
        "{what}: status; headers {:?}",
        parts.headers
    );
    let ps = proxy_status_of(&parts.headers)
        .unwrap_or_else(|| panic!("{what}: no Proxy-Status; headers {:?}", parts.headers));
    assert_proxy_status(&ps, token, what);
}

// === admin ===

/// `GET path` on a plain HTTP/1.1 server with `Connection: close`; (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (head, mut s, leftover) = raw_request(addr, req.as_bytes()).await;
    let body = if head.header("content-length").is_some() {
        read_body(&mut s, &head, leftover).await
    } else {
        let mut all = leftover;
        s.read_to_end(&mut all).await.expect("read body to EOF");
        all
    };
    (head.status, String::from_utf8_lossy(&body).into_owned())
}

pub async fn fetch_metrics(admin: SocketAddr) -> String {
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics");
    body
}

// === misc ===

/// A loopback port with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

// === the `bauta` binary ===

/// Path of the `bauta` binary, built once per test process with the same
/// cargo and profile as this test.
pub fn bauta_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // The soak binary (`tests/soak.sh`) names a release build.
        if let Some(bin) = std::env::var_os("BAUTA_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in <target>/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir
            .parent()
            .expect("<target>/<profile> has a parent")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "bauta",
            "--bin",
            "bauta",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
        if release {
            cmd.arg("--release");
        }
        let out = run_with_timeout(&mut cmd, Duration::from_secs(600));
        assert!(
            out.status.success(),
            "cargo build -p bauta --bin bauta failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join(format!("bauta{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// Run a command to completion, killing it after `limit`.
pub fn run_with_timeout(cmd: &mut std::process::Command, limit: Duration) -> std::process::Output {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let started = Instant::now();
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("wait for {cmd:?}: {e}")),
        Err(_) => {
            // Kill by pid: only the child we started.
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(id.to_string())
                .status();
            panic!("{cmd:?} did not finish within {:?}", started.elapsed());
        }
    }
}

// === lifecycle: the `bauta` binary as a child process (shutdown, reload, idle timers) ===

/// A `bauta run --config FILE` child process. Its listeners' bound addresses
/// are read from its start-up log (ports may be 0 in the file); stdout (the
/// JSON access log) and stderr (diagnostics) are collected. Killed on drop.
pub struct BautaProcess {
    child: tokio::process::Child,
    pub pid: u32,
    /// `(listener name, bound address)` as the process logged them.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// While true, nobody reads the process's stdout (a stalled log reader).
    stdout_paused: tokio::sync::watch::Sender<bool>,
}

/// Strip ANSI escape sequences (in case the log is coloured).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The value of `key=VALUE` in a plain-text log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!(" {key}=");
    let at = line.find(&needle)? + needle.len();
    line[at..].split_whitespace().next()
}

impl BautaProcess {
    /// Start `bauta run --config PATH` (the file must have an `[admin]`
    /// table) and wait (20 s at most) until it has logged every listener and
    /// the admin endpoint. Retries a few times when a port is taken (the UDP
    /// side of an h3 listener takes the TCP side's port number).
    pub async fn start(config_path: &Path) -> BautaProcess {
        BautaProcess::start_with_args(config_path, &[]).await
    }

    /// [`BautaProcess::start`] with more arguments after `run --config PATH`.
    pub async fn start_with_args(config_path: &Path, args: &[&str]) -> BautaProcess {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match BautaProcess::try_start(config_path, args).await {
                Ok(p) => return p,
                Err(log) if log.contains("in use") && attempt < 10 => continue,
                Err(log) => panic!(
                    "bauta run --config {} did not start:\n{log}",
                    config_path.display()
                ),
            }
        }
    }

    async fn try_start(config_path: &Path, args: &[&str]) -> Result<BautaProcess, String> {
        use std::process::Stdio;
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(bauta_bin())
            .arg("run")
            .arg("--config")
            .arg(config_path)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bauta_bin().display()));
        let pid = child.id().expect("child pid");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (line_tx, mut line_rx) = mpsc::unbounded_channel::<String>();
        let out_pipe = child.stdout.take().expect("piped stdout");
        let err_pipe = child.stderr.take().expect("piped stderr");
        let out_buf = Arc::clone(&stdout);
        let (stdout_paused, mut paused) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(out_pipe).lines();
            loop {
                // A dropped sender (the process handle is gone) reads on.
                let _ = paused.wait_for(|p| !*p).await;
                let Ok(Some(l)) = lines.next_line().await else {
                    break;
                };
                let mut b = out_buf.lock().expect("stdout lock");
                b.push_str(&l);
                b.push('\n');
            }
        });
        let err_buf = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(err_pipe).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let l = strip_ansi(&l);
                {
                    let mut b = err_buf.lock().expect("stderr lock");
                    b.push_str(&l);
                    b.push('\n');
                }
                let _ = line_tx.send(l);
            }
        });
        let mut listeners = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let admin = loop {
            let line = match tokio::time::timeout_at(deadline, line_rx.recv()).await {
                Ok(Some(l)) => l,
                // stderr closed: the process ended.
                Ok(None) => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    return Err(stderr.lock().expect("stderr lock").clone());
                }
                Err(_) => panic!(
                    "bauta did not log its admin endpoint within 20 s; stderr:\n{}",
                    stderr.lock().expect("stderr lock")
                ),
            };
            if line.contains("listening") {
                if let (Some(name), Some(addr)) =
                    (log_field(&line, "listener"), log_field(&line, "addr"))
                {
                    let addr: SocketAddr = addr
                        .parse()
                        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                    listeners.push((name.to_string(), addr));
                }
            } else if line.contains("admin endpoint") {
                let a =
                    log_field(&line, "a").unwrap_or_else(|| panic!("no admin address in {line:?}"));
                break a
                    .parse::<SocketAddr>()
                    .unwrap_or_else(|e| panic!("bad admin address in {line:?}: {e}"));
            }
        };
        // The process logs its listeners before it installs its SIGTERM /
        // SIGHUP handlers; a signal in between would kill it outright. Wait
        // until the kernel shows both as caught.
        wait_signals_caught(pid, &[("HUP", 1), ("TERM", 15)], Duration::from_secs(10)).await;
        Ok(BautaProcess {
            child,
            pid,
            listeners,
            admin,
            config_path: config_path.to_path_buf(),
            stdout,
            stderr,
            stdout_paused,
        })
    }

    /// Stop reading the process's stdout, as a stalled log collector would
    /// (the pipe fills and writes to it block).
    pub fn pause_stdout(&self) {
        let _ = self.stdout_paused.send(true);
    }

    /// Read its stdout again.
    pub fn resume_stdout(&self) {
        let _ = self.stdout_paused.send(false);
    }

    /// The bound address of listener `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name:?} in {:?}", self.listeners))
    }

    /// Send `signal` (e.g. "TERM", "HUP") to this process (by its pid only).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg("-s")
            .arg(signal)
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid);
    }

    /// Its exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait on bauta")
    }

    /// Wait for it to exit, at most `limit`; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(r) => Some(r.expect("wait for bauta")),
            Err(_) => None,
        }
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Poll stderr (every 50 ms, at most `limit`) for a line containing
    /// `needle`; that line, or `None`.
    pub async fn wait_stderr_line(&self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.stderr().lines().find(|l| l.contains(needle)) {
                return Some(l.to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its access log so far: one JSON object per stdout line (others skipped).
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .expect("stdout lock")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Poll the access log (every 50 ms, at most `limit`) for a line that
    /// `pred` accepts.
    pub async fn wait_access_log(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = self.access_log().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no such access-log line within {limit:?}; stdout:\n{}\nstderr:\n{}",
                self.stdout.lock().expect("stdout lock"),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        fetch_metrics(self.admin).await
    }
}

/// Poll `/proc/PID/status` (Linux) until every signal in `signals` (name,
/// number) is in the process's caught-signal mask (`SigCgt`).
pub async fn wait_signals_caught(pid: u32, signals: &[(&str, u32)], limit: Duration) {
    let deadline = Instant::now() + limit;
    let path = format!("/proc/{pid}/status");
    loop {
        let status = std::fs::read_to_string(&path).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok());
        let missing: Vec<&str> = signals
            .iter()
            .filter(|(_, n)| caught.is_none_or(|m| m & (1u64 << (n - 1)) == 0))
            .map(|(name, _)| *name)
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bauta (pid {pid}) does not catch SIG{missing:?} {limit:?} after start-up \
             (SigCgt {caught:x?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of the one sample of `name` whose labels are exactly `labels`
/// (in any order); `None` if the metrics have no such sample.
pub fn metric_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let got: Vec<&str> = rest.split(',').filter(|p| !p.is_empty()).collect();
        let exact = got.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| got.contains(&format!("{k}=\"{v}\"").as_str()));
        exact.then(|| value.parse::<f64>().ok()).flatten()
    })
}

/// Poll `/metrics` (every 50 ms, at most `limit`) until the sample
/// `name{labels}` exists and `pred` holds; returns the last value seen
/// (`None`: never present).
pub async fn wait_sample(
    admin: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    limit: Duration,
    pred: impl Fn(f64) -> bool,
) -> Option<f64> {
    let deadline = Instant::now() + limit;
    loop {
        let v = metric_sample(&fetch_metrics(admin).await, name, labels);
        if v.is_some_and(&pred) || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait (5 s at most) until `bauta_tunnels_active{kind}` is `n`: a closed
/// tunnel has given its places back by then.
pub async fn wait_tunnels(admin: SocketAddr, kind: &str, n: f64) {
    wait_tunnels_for(admin, kind, n, Duration::from_secs(5), "").await;
}

/// Wait (at most `limit`) until `bauta_tunnels_active{kind}` is `n`;
/// `what` names the step in the failure message.
pub async fn wait_tunnels_for(admin: SocketAddr, kind: &str, n: f64, limit: Duration, what: &str) {
    let got = wait_sample(
        admin,
        "bauta_tunnels_active",
        &[("kind", kind)],
        limit,
        |v| v == n,
    )
    .await;
    assert_eq!(got, Some(n), "{what}: bauta_tunnels_active{{kind={kind}}}");
}

/// A plain HTTP/1.1 upstream that answers every request with
/// `upstream NAME: METHOD PATH\n` (so a request routed to the wrong upstream shows).
pub struct NamedUpstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl NamedUpstream {
    pub async fn start(name: &str) -> NamedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind named upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let name: Arc<str> = Arc::from(name);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = Arc::clone(&name);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let body =
                            format!("upstream {name}: {} {}\n", req.method(), req.uri().path());
                        async move { Ok::<_, Infallible>(Response::new(full_body(body))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        NamedUpstream { addr, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for NamedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

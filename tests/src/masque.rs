//! Helpers for the HTTP/3 and CONNECT-UDP end-to-end tests: a proxy with an
//! HTTP/3 listener, a UDP echo server, a Rust HTTP/3 client (quinn + h3) with
//! raw access to QUIC datagrams, the independent aioquic client in
//! `tests/peers/h3_masque_client.py`, capsule codecs written from RFC 9297
//! (independent of the proxy's own), and HTTP/1.1 / HTTP/2 CONNECT-UDP
//! clients.
//!
//! Everything binds 127.0.0.1 (or ::1) port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::{
    assert_proxy_status, fetch_metrics, init, read_head, tls_connect, Certs, H2Sender, Head,
};

/// H3_DATAGRAM_ERROR (RFC 9297 §5.2).
pub const H3_DATAGRAM_ERROR: u64 = 0x33;
/// H3_MESSAGE_ERROR (RFC 9114 §8.1).
pub const H3_MESSAGE_ERROR: u64 = 0x10e;

/// Allow rule for the loopback ranges, every protocol (CONNECT-UDP included).
pub const ALLOW_LOOPBACK_V4_V6: &str = r#"
[policy]
default = "deny"

[[policy.rule]]
name = "lab"
action = "allow"
cidrs = ["127.0.0.0/8"]

[[policy.rule]]
name = "lab6"
action = "allow"
cidrs = ["::1/128"]
"#;

// === the proxy, with HTTP/3 ===

/// A proxy with a plaintext HTTP/1.1 listener "plain" and a TLS listener
/// "secure" speaking HTTP/1.1, HTTP/2 and HTTP/3 (UDP on the same port).
pub struct MasqueProxy {
    running: Option<bauta::Running>,
    pub plain: SocketAddr,
    /// TCP (http1, h2) and UDP (h3) on the same address and port.
    pub secure: SocketAddr,
    pub admin: SocketAddr,
    pub config_text: String,
}

impl MasqueProxy {
    /// `127.0.0.1:PORT` of the secure listener (the authority clients use).
    pub fn secure_authority(&self) -> String {
        format!("127.0.0.1:{}", self.secure.port())
    }

    pub async fn metrics(&self) -> String {
        fetch_metrics(self.admin).await
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Start a proxy with an HTTP/3 listener; `extra` is TOML appended after the
/// listeners (`[policy]`, `[connect_udp]`, …).
pub async fn start_masque_proxy(certs: &Certs, extra: &str) -> MasqueProxy {
    init();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let text = format!(
            "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
             [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
             protocols = [\"http1\", \"h2\", \"h3\"]\ntls_cert = '{}'\ntls_key = '{}'\n\n{extra}",
            certs.cert_pem.display(),
            certs.key_pem.display()
        );
        let cfg = match bauta::Config::parse(&text, "test.toml", &std::env::temp_dir()) {
            Ok(c) => c,
            Err(e) => panic!("test config rejected: {e}\n---\n{text}"),
        };
        match bauta::start(cfg).await {
            Ok(running) => {
                let plain = running.listener_addr("plain").expect("plain bound");
                let secure = running.listener_addr("secure").expect("secure bound");
                let admin = running.admin.expect("admin bound");
                return MasqueProxy {
                    running: Some(running),
                    plain,
                    secure,
                    admin,
                    config_text: text,
                };
            }
            // The UDP side takes the TCP side's port; another process may
            // hold that UDP port. Try another one.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 10 => continue,
            Err(e) => panic!("start the proxy: {e}\n---\n{text}"),
        }
    }
}

// === UDP echo ===

/// Echoes every datagram back to its sender and counts them.
pub struct UdpEcho {
    pub addr: SocketAddr,
    received: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl UdpEcho {
    /// On 127.0.0.1, an ephemeral port.
    pub async fn start() -> UdpEcho {
        UdpEcho::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(bind: SocketAddr) -> UdpEcho {
        let socket = UdpSocket::bind(bind).await.expect("bind UDP echo");
        UdpEcho::from_socket(socket)
    }

    /// Serve on a socket the test bound itself (another loopback address,
    /// a chosen port).
    pub fn from_socket(socket: UdpSocket) -> UdpEcho {
        let addr = socket.local_addr().expect("UDP echo addr");
        let received = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = socket.send_to(&buf[..n], peer).await;
            }
        });
        UdpEcho {
            addr,
            received,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Datagrams received so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether this machine has an IPv6 loopback to bind.
pub fn has_ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

/// The default template's path for a target: `host` goes in as given (so
/// percent-encode IPv6 colons yourself: `%3A%3A1`).
pub fn udp_path(host: &str, port: u16) -> String {
    format!("/.well-known/masque/udp/{host}/{port}/")
}

// === varints and capsules (RFC 9000 §16, RFC 9297 §3), written independently ===

/// QUIC variable-length integer, shortest encoding.
pub fn varint(v: u64) -> Vec<u8> {
    match v {
        0..=0x3f => vec![v as u8],
        0x40..=0x3fff => ((0x4000 | v) as u16).to_be_bytes().to_vec(),
        0x4000..=0x3fff_ffff => ((0x8000_0000 | v) as u32).to_be_bytes().to_vec(),
        _ => {
            assert!(v < 1 << 62, "varint {v} out of range");
            (0xc000_0000_0000_0000 | v).to_be_bytes().to_vec()
        }
    }
}

/// `(value, length)` of the varint at the front of `buf`, or `None` if incomplete.
pub fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// A DATAGRAM capsule: `00 || varint(len) || varint(context) || payload`.
pub fn datagram_capsule(context: u64, payload: &[u8]) -> Vec<u8> {
    let mut value = varint(context);
    value.extend_from_slice(payload);
    let mut out = vec![0x00];
    out.extend(varint(value.len() as u64));
    out.extend(value);
    out
}

/// An HTTP/3 datagram for a request stream: `varint(stream_id / 4) ||
/// varint(context) || payload`.
pub fn h3_datagram(stream_id: u64, context: u64, payload: &[u8]) -> Bytes {
    assert_eq!(stream_id % 4, 0, "client-initiated bidirectional stream");
    let mut out = varint(stream_id / 4);
    out.extend(varint(context));
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// One complete capsule at the front of `buf`: `(type, value, consumed)`.
pub fn parse_capsule(buf: &[u8]) -> Option<(u64, Vec<u8>, usize)> {
    let (ty, a) = read_varint(buf)?;
    let (len, b) = read_varint(&buf[a..])?;
    let start = a + b;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let value = buf.get(start..end)?.to_vec();
    Some((ty, value, end))
}

/// Split a DATAGRAM capsule value into `(context, payload)`.
pub fn split_context(value: &[u8]) -> (u64, Vec<u8>) {
    let (ctx, n) = read_varint(value).expect("DATAGRAM capsule value holds a context ID");
    (ctx, value[n..].to_vec())
}

/// How a capsule stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// Clean end (EOF / END_STREAM / FIN).
    Finished,
    /// An error: reset, connection closed with an error, I/O error.
    Error(String),
}

// === capsules over a byte stream (HTTP/1.1 after 101) ===

/// Capsules over an upgraded HTTP/1.1 connection.
pub struct CapsuleStream<S> {
    pub io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> CapsuleStream<S> {
    /// `leftover`: bytes that followed the response head.
    pub fn new(io: S, leftover: Vec<u8>) -> CapsuleStream<S> {
        CapsuleStream { io, buf: leftover }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write capsule bytes");
        self.io.flush().await.expect("flush");
    }

    pub async fn send_datagram(&mut self, context: u64, payload: &[u8]) {
        self.send_raw(&datagram_capsule(context, payload)).await;
    }

    /// The next capsule, or how the stream ended.
    pub async fn next_capsule(&mut self) -> Result<(u64, Vec<u8>), StreamEnd> {
        loop {
            if let Some((ty, value, used)) = parse_capsule(&self.buf) {
                self.buf.drain(..used);
                return Ok((ty, value));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.io.read(&mut chunk).await {
                Ok(0) => return Err(StreamEnd::Finished),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(StreamEnd::Error(e.to_string())),
            }
        }
    }

    /// The next DATAGRAM capsule's `(context, payload)`, skipping other types.
    pub async fn next_datagram(&mut self) -> (u64, Vec<u8>) {
        loop {
            match self.next_capsule().await {
                Ok((0, value)) => return split_context(&value),
                Ok(_) => continue,
                Err(end) => panic!("capsule stream ended while waiting for a datagram: {end:?}"),
            }
        }
    }

    /// Send a context-0 datagram, expect the same payload back.
    pub async fn assert_echo(&mut self, payload: &[u8]) {
        self.send_datagram(0, payload).await;
        let (ctx, got) = self.next_datagram().await;
        assert_eq!(ctx, 0, "reply context ID");
        assert_eq!(
            got, payload,
            "UDP payload echoed through the capsule stream"
        );
    }
}

/// `GET path` with `Connection: Upgrade` / `Upgrade: connect-udp` /
/// `Capsule-Protocol: ?1` and `Host: authority`, plus `extra` header lines.
pub fn h1_connect_udp_request(authority: &str, path: &str, extra: &[&str]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\n\
         Upgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n"
    );
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// Send `request` on a fresh connection; the head and the capsule stream after it.
pub async fn h1_upgrade(proxy: SocketAddr, request: &str) -> (Head, CapsuleStream<TcpStream>) {
    let mut s = TcpStream::connect(proxy).await.expect("connect to proxy");
    s.write_all(request.as_bytes()).await.expect("send request");
    let (head, leftover) = read_head(&mut s)
        .await
        .unwrap_or_else(|e| panic!("reading the response to {request:?}: {e}"));
    (head, CapsuleStream::new(s, leftover))
}

/// Wait until the peer closes `s` (EOF or reset), within `limit`.
pub async fn expect_closed<S: AsyncRead + Unpin>(s: &mut S, limit: Duration, what: &str) {
    let r = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "{what}: the connection was not closed within {limit:?}"
    );
}

// === HTTP/2 extended CONNECT ===

/// HTTP/2 over TLS (ALPN h2) to `proxy`, once the server's SETTINGS enabled
/// extended CONNECT (RFC 8441 §3).
pub async fn h2_extended_client(proxy: SocketAddr, certs: &Certs) -> H2Sender {
    let tls = tls_connect(proxy, certs, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    let client = crate::h2_client(tls).await;
    for _ in 0..200 {
        let ready = client
            .clone()
            .ready()
            .await
            .expect("HTTP/2 connection ready");
        if ready.is_extended_connect_protocol_enabled() {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the proxy never sent SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 on HTTP/2");
}

/// A CONNECT-UDP stream over HTTP/2 carrying capsules in DATA frames.
pub struct H2Capsules {
    pub send: h2::SendStream<Bytes>,
    pub recv: h2::RecvStream,
    buf: Vec<u8>,
}

impl H2Capsules {
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.send
            .send_data(Bytes::copy_from_slice(bytes), false)
            .expect("send DATA on the CONNECT-UDP stream");
    }

    pub fn send_datagram(&mut self, context: u64, payload: &[u8]) {
        self.send_raw(&datagram_capsule(context, payload));
    }

    pub async fn next_capsule(&mut self) -> Result<(u64, Vec<u8>), StreamEnd> {
        loop {
            if let Some((ty, value, used)) = parse_capsule(&self.buf) {
                self.buf.drain(..used);
                return Ok((ty, value));
            }
            match self.recv.data().await {
                Some(Ok(d)) => {
                    let _ = self.recv.flow_control().release_capacity(d.len());
                    self.buf.extend_from_slice(&d);
                }
                Some(Err(e)) => return Err(StreamEnd::Error(format!("{e:?}"))),
                None => return Err(StreamEnd::Finished),
            }
        }
    }

    pub async fn next_datagram(&mut self) -> (u64, Vec<u8>) {
        loop {
            match self.next_capsule().await {
                Ok((0, value)) => return split_context(&value),
                Ok(_) => continue,
                Err(end) => panic!("HTTP/2 CONNECT-UDP stream ended: {end:?}"),
            }
        }
    }

    pub async fn assert_echo(&mut self, payload: &[u8]) {
        self.send_datagram(0, payload);
        let (ctx, got) = self.next_datagram().await;
        assert_eq!(ctx, 0, "reply context ID");
        assert_eq!(got, payload, "UDP payload echoed over HTTP/2 capsules");
    }
}

/// Extended CONNECT `:protocol connect-udp` over HTTP/2; the stream only for a 2xx.
pub async fn h2_connect_udp(
    client: &H2Sender,
    authority: &str,
    path: &str,
) -> (http::response::Parts, Option<H2Capsules>) {
    let mut client = client
        .clone()
        .ready()
        .await
        .expect("HTTP/2 connection ready");
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://{authority}{path}"))
        .header("capsule-protocol", "?1")
        .body(())
        .expect("extended CONNECT request");
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("connect-udp"));
    let (resp, send) = client
        .send_request(req, false)
        .expect("send extended CONNECT on HTTP/2");
    let resp = resp.await.expect("HTTP/2 CONNECT-UDP response");
    let (parts, recv) = resp.into_parts();
    let stream = parts.status.is_success().then(|| H2Capsules {
        send,
        recv,
        buf: Vec::new(),
    });
    (parts, stream)
}

// === the Rust HTTP/3 client (quinn + h3) ===

pub type H3Request = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// QUIC client config: TLS 1.3 trusting the test CA, ALPN h3, datagrams on.
pub fn quic_client_config(certs: &Certs) -> quinn::ClientConfig {
    quic_client_config_with_cert(certs, None)
}

/// [`quic_client_config`], presenting a client certificate (chain, key) when given.
pub fn quic_client_config_with_cert(
    certs: &Certs,
    client: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.ca_der.clone()).expect("add test CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots);
    let mut tls = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
        .expect("QUIC client TLS config");
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Some(..) also advertises max_datagram_frame_size (RFC 9221).
    transport.datagram_receive_buffer_size(Some(1 << 20));
    cfg.transport_config(Arc::new(transport));
    cfg
}

/// An HTTP/3 client connection. `conn` is the QUIC connection underneath, for
/// raw datagrams (the h3 crate does not read them: its datagram feature is off).
pub struct H3Client {
    pub conn: quinn::Connection,
    pub send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    /// `127.0.0.1:PORT` of the proxy.
    pub authority: String,
    driver: JoinHandle<h3::error::ConnectionError>,
    _endpoint: quinn::Endpoint,
}

impl H3Client {
    /// Connect and set up HTTP/3 with SETTINGS_H3_DATAGRAM = 1 and extended CONNECT.
    pub async fn connect(proxy: SocketAddr, certs: &Certs) -> H3Client {
        H3Client::connect_with(proxy, quic_client_config(certs)).await
    }

    /// [`H3Client::connect`] with this QUIC client config.
    pub async fn connect_with(proxy: SocketAddr, config: quinn::ClientConfig) -> H3Client {
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind QUIC client endpoint");
        let conn = endpoint
            .connect_with(config, proxy, "localhost")
            .expect("start QUIC connection")
            .await
            .expect("QUIC handshake with the proxy");
        let (mut driver, send) = h3::client::builder()
            .enable_datagram(true)
            .enable_extended_connect(true)
            .build::<_, _, Bytes>(h3_quinn::Connection::new(conn.clone()))
            .await
            .expect("HTTP/3 client setup");
        let driver = tokio::spawn(async move { driver.wait_idle().await });
        H3Client {
            conn,
            send,
            authority: format!("127.0.0.1:{}", proxy.port()),
            driver,
            _endpoint: endpoint,
        }
    }

    /// Extended CONNECT (`:protocol connect-udp`, `:scheme https`, `:path`,
    /// `:authority`) with exactly the given extra header fields.
    pub async fn extended_connect(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(http::Response<()>, H3Request), h3::error::StreamError> {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(format!("https://{}{path}", self.authority));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(()).expect("extended CONNECT request");
        req.extensions_mut().insert(h3::ext::Protocol::CONNECT_UDP);
        let mut stream = self.send.send_request(req).await?;
        let resp = stream.recv_response().await?;
        Ok((resp, stream))
    }

    /// CONNECT-UDP with `capsule-protocol: ?1`; asserts 200 and the
    /// response's `capsule-protocol: ?1`.
    pub async fn connect_udp(&mut self, path: &str) -> H3Request {
        let (resp, stream) = self
            .extended_connect(path, &[("capsule-protocol", "?1")])
            .await
            .unwrap_or_else(|e| panic!("HTTP/3 CONNECT-UDP {path}: {e:?}"));
        assert_eq!(resp.status(), 200, "CONNECT-UDP {path}: {resp:?}");
        assert_eq!(
            resp.headers()
                .get("capsule-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("?1"),
            "capsule-protocol on the 200: {resp:?}"
        );
        stream
    }

    /// Send a raw QUIC DATAGRAM frame.
    pub fn send_raw_datagram(&self, data: Bytes) {
        self.conn.send_datagram(data).expect("send a QUIC datagram");
    }

    /// Send `payload` with `context` for the request stream `stream_id`.
    pub fn send_datagram(&self, stream_id: u64, context: u64, payload: &[u8]) {
        self.send_raw_datagram(h3_datagram(stream_id, context, payload));
    }

    /// The next QUIC datagram, or `None` after `limit`.
    pub async fn recv_datagram(&self, limit: Duration) -> Option<Bytes> {
        match tokio::time::timeout(limit, self.conn.read_datagram()).await {
            Ok(Ok(d)) => Some(d),
            Ok(Err(e)) => panic!("reading a QUIC datagram: connection ended: {e}"),
            Err(_) => None,
        }
    }

    /// Send a context-0 datagram on `stream_id`, expect the exact datagram
    /// back (same Quarter Stream ID, context 0, same payload).
    pub async fn assert_datagram_echo(&self, stream_id: u64, payload: &[u8]) {
        let sent = h3_datagram(stream_id, 0, payload);
        self.send_raw_datagram(sent.clone());
        let got = self
            .recv_datagram(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no datagram echoed for stream {stream_id} within 5 s"));
        assert_eq!(
            got.as_ref(),
            sent.as_ref(),
            "echoed HTTP/3 datagram (quarter stream id, context 0, payload)"
        );
    }
}

impl Drop for H3Client {
    fn drop(&mut self) {
        self.driver.abort();
        self.conn.close(0u32.into(), b"test done");
    }
}

/// The stream's ID as a number.
pub fn stream_id(s: &H3Request) -> u64 {
    s.id().into_inner()
}

/// Read the request stream until it ends; DATA bytes, and how it ended.
pub async fn h3_read_to_end(s: &mut H3Request) -> (Vec<u8>, StreamEnd) {
    let mut out = Vec::new();
    loop {
        match s.recv_data().await {
            Ok(Some(mut d)) => {
                let n = d.remaining();
                out.extend_from_slice(&d.copy_to_bytes(n));
            }
            Ok(None) => return (out, StreamEnd::Finished),
            Err(e) => return (out, StreamEnd::Error(format!("{e:?}"))),
        }
    }
}

/// A fresh QUIC handshake (ALPN h3, verifying for "localhost"); the server's leaf.
pub async fn quic_leaf(
    addr: SocketAddr,
    certs: &Certs,
) -> rustls_pki_types::CertificateDer<'static> {
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind QUIC client endpoint");
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        endpoint
            .connect_with(quic_client_config(certs), addr, "localhost")
            .expect("start QUIC connection"),
    )
    .await
    .expect("QUIC handshake within 5 s")
    .expect("QUIC handshake");
    let chain = conn
        .peer_identity()
        .expect("peer identity")
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .expect("rustls certificate chain");
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    chain.first().expect("a server certificate").clone()
}

// === the aioquic client (tests/peers/h3_masque_client.py) ===

/// The Python interpreter with aioquic: `$BAUTA_TEST_PYTHON`, else
/// `<workspace>/target/venv/bin/python`. Fails the test if neither exists.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BAUTA_TEST_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "BAUTA_TEST_PYTHON={} does not exist; run tests/run.sh to create the venv",
            p.display()
        );
        return p;
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python");
    assert!(
        p.exists(),
        "no Python for the aioquic peer: BAUTA_TEST_PYTHON is unset and {} does not exist. \
         Run tests/run.sh (it creates the venv from tests/peers/requirements.txt), or set \
         BAUTA_TEST_PYTHON to a python with aioquic 1.2.0.",
        p.display()
    );
    p
}

pub fn masque_client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/h3_masque_client.py")
}

/// One run of the aioquic client.
#[derive(Debug)]
pub struct PyRun {
    /// The JSON object it printed.
    pub json: serde_json::Value,
    /// Exit status 0.
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl PyRun {
    /// A field as a string (`None` if absent or null).
    pub fn str(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(|v| v.as_str())
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.json.get(key).and_then(|v| v.as_u64())
    }
}

/// `h3_masque_client.py raw --wait-end` with exactly these `NAME=VALUE`
/// header fields: one request, and how its stream ended.
pub async fn run_raw_h3(proxy: SocketAddr, certs: &Certs, headers: &[String]) -> PyRun {
    let mut args: Vec<&str> = vec!["--wait-end"];
    for h in headers {
        args.push("--header");
        args.push(h);
    }
    run_masque_client(proxy, certs, "raw", &args).await
}

/// Run `h3_masque_client.py MODE --proxy-port PORT --ca CA ARGS…` against the
/// proxy's HTTP/3 listener, with a 15 s bound; parse the JSON it prints.
pub async fn run_masque_client(
    proxy: SocketAddr,
    certs: &Certs,
    mode: &str,
    args: &[&str],
) -> PyRun {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(masque_client_script())
        .arg(mode)
        .arg("--proxy-host")
        .arg(proxy.ip().to_string())
        .arg("--proxy-port")
        .arg(proxy.port().to_string())
        .arg("--ca")
        .arg(&certs.ca_pem)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let what = format!("h3_masque_client.py {mode} {args:?}");
    let out = match tokio::time::timeout(Duration::from_secs(15), cmd.output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => panic!("{what}: cannot run {}: {e}", python().display()),
        Err(_) => panic!("{what}: did not finish within 15 s"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "{what}: no JSON on stdout (exit {:?})\nstdout: {stdout}\nstderr: {stderr}",
                out.status
            )
        });
    let json = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{what}: bad JSON {line:?}: {e}\nstderr: {stderr}"));
    PyRun {
        json,
        success: out.status.success(),
        stdout,
        stderr,
    }
}

/// The events an aioquic `raw --wait-end` run saw on its request stream.
fn stream_events(run: &PyRun, what: &str) -> Vec<String> {
    run.json["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no events (was --wait-end given?): {run:?}"))
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect()
}

/// The part of the README's answer to a malformed HTTP/3 request that does
/// not depend on the 400 arriving: the stream ends with a reset carrying
/// H3_MESSAGE_ERROR (not FIN, not a connection close), and if a head arrived
/// it is that 400 with `Proxy-Status: bauta; error=proxy_internal_response`.
/// `run` is an aioquic `raw --wait-end` run.
pub fn assert_h3_malformed_reset(run: &PyRun, what: &str) {
    let events = stream_events(run, what);
    let reset = format!("reset:{H3_MESSAGE_ERROR}");
    assert_eq!(
        events.last(),
        Some(&reset),
        "{what}: the stream is reset with H3_MESSAGE_ERROR (0x10e): {run:?}"
    );
    assert!(
        !events.iter().any(|e| e == "fin"),
        "{what}: the stream is reset, not finished: {run:?}"
    );
    assert_eq!(run.u64("reset"), Some(H3_MESSAGE_ERROR), "{what}: {run:?}");
    assert_eq!(
        run.json.get("terminated"),
        Some(&serde_json::Value::Null),
        "{what}: a stream error, not a connection error: {run:?}"
    );
    if let Some(status) = run.str("status") {
        assert_eq!(status, "400", "{what}: no other status than 400: {run:?}");
        let ps = run
            .str("proxy_status")
            .unwrap_or_else(|| panic!("{what}: no Proxy-Status on the 400: {run:?}"));
        assert_proxy_status(ps, "proxy_internal_response", what);
    }
}

/// README: a malformed HTTP/3 request gets a 400 (with Proxy-Status), THEN
/// its stream is reset with H3_MESSAGE_ERROR; the connection stays up. `run`
/// is an aioquic `raw --wait-end` run (aioquic reports stream events in
/// order, so it sees the head arrive before the reset).
pub fn assert_h3_malformed_answer(run: &PyRun, what: &str) {
    assert_eq!(
        run.str("status"),
        Some("400"),
        "{what}: the 400 head arrives before the reset; {run:?}"
    );
    assert_eq!(
        stream_events(run, what).first().map(String::as_str),
        Some("headers"),
        "{what}: the head comes first: {run:?}"
    );
    assert_h3_malformed_reset(run, what);
}

// === metrics ===

/// Sum of the samples of `name` whose labels include all of `labels`, or
/// `None` if no such series is exported at all.
pub fn metric_opt(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found: Option<f64> = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => match rest.strip_suffix('}') {
                Some(rest) => (n, rest),
                None => continue,
            },
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")));
        if !all {
            continue;
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("metric sample {l:?}: bad value: {e}"));
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// Sum of the samples of `name` whose labels include all of `labels`.
/// Panics if no such series exists: an absent series is a failure, not 0.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_opt(text, name, labels).unwrap_or_else(|| {
        panic!(
            "metric {name}{labels:?} is absent from /metrics; its lines:\n{}",
            family_lines(text, name)
        )
    })
}

/// Assert that no series of `name` with all of `labels` is exported.
pub fn assert_metric_absent(text: &str, name: &str, labels: &[(&str, &str)]) {
    assert!(
        metric_opt(text, name, labels).is_none(),
        "metric {name}{labels:?} must be absent; its lines:\n{}",
        family_lines(text, name)
    );
}

/// Assert that nothing was counted in `name` (with `labels`): the series is
/// absent or sums to 0. Only for "this did not happen" checks on a family
/// that may have no series yet; that every family is exported at 0 from the
/// start is asserted on its own by admin.rs
/// `fresh_proxy_exports_every_family_at_zero`.
pub fn assert_nothing_counted(text: &str, name: &str, labels: &[(&str, &str)], what: &str) {
    let v = metric_opt(text, name, labels);
    assert!(
        matches!(v, None | Some(0.0)),
        "{what}: {name}{labels:?} = {v:?}, want nothing counted; its lines:\n{}",
        family_lines(text, name)
    );
}

/// The sample lines of `name` (and its `_bucket`/`_sum`/`_count`), for messages.
pub fn family_lines(text: &str, name: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Poll the metrics until the series exists and `pred(value)` holds (up to
/// 3 s); returns the last value. Panics if the series never appeared.
pub async fn wait_metric(
    admin: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    pred: impl Fn(f64) -> bool,
) -> f64 {
    let mut last = None;
    let mut text = String::new();
    for _ in 0..60 {
        text = fetch_metrics(admin).await;
        last = metric_opt(&text, name, labels);
        if last.is_some_and(&pred) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last.unwrap_or_else(|| {
        panic!(
            "metric {name}{labels:?} never appeared in /metrics within 3 s; its lines:\n{}",
            family_lines(&text, name)
        )
    })
}

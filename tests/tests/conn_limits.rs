//! Idle client connections and connection caps (README: `[limits]
//! client_idle_timeout_s`, `max_connections`, `max_connections_per_client`;
//! metric `bauta_connections_refused_total`).
//!
//! * A connection that carries no request is closed after the client idle
//!   timeout: plain TCP that sends no byte, TLS with no request, HTTP/1.1
//!   keep-alive between requests, HTTP/2 with no stream (GOAWAY NO_ERROR,
//!   then the close), HTTP/3 with no request (the QUIC idle timeout) — not
//!   before the timeout, and within a bounded slack.
//! * A connection with a request in flight or a tunnel open is not, even
//!   when no byte moves for several timeouts.
//! * Over `max_connections` (all listeners, TCP and QUIC) or
//!   `max_connections_per_client` a new connection is closed at once (TCP)
//!   or refused (QUIC), counted by cap and listener; held connections keep
//!   being served, the admin endpoint answers, and once the held
//!   connections idle out new ones are served again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bauta_tests::masque::{metric, start_masque_proxy, H3Client};
use bauta_tests::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The client idle timeout of the idle tests.
const IDLE: Duration = Duration::from_secs(1);
/// A close earlier than IDLE - EARLY after the last request fails the test.
const EARLY: Duration = Duration::from_millis(250);
/// A close later than IDLE + SLACK fails the test (covers the drop after a
/// graceful close that does not complete, which is IDLE more at most).
const SLACK: Duration = Duration::from_millis(2500);
/// Per-test bound.
const LIMIT: Duration = Duration::from_secs(20);

/// Plain listener sniffing HTTP/1.1 and h2c ("plain"), a TLS listener
/// ("secure"), and an HTTP/1.1-only plain listener ("h1only").
async fn idle_proxy(certs: &Certs) -> TestProxy {
    start_proxy_opts(ProxyOpts {
        certs: Some(certs),
        plain_protocols: &["http1", "h2"],
        extra: format!(
            "[[listener]]\nname = \"h1only\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
             [limits]\nclient_idle_timeout_s = {}\nshutdown_grace_s = 1\n\n{ALLOW_LOOPBACK}",
            IDLE.as_secs()
        ),
    })
    .await
}

/// Read until the proxy closes `s` (EOF or reset), at most IDLE + SLACK
/// after `since`; asserts the close came no earlier than IDLE - EARLY.
/// Returns everything read.
async fn expect_idle_close<S: AsyncRead + Unpin>(s: &mut S, since: Instant, what: &str) -> Vec<u8> {
    let mut all = Vec::new();
    let r = tokio::time::timeout_at((since + IDLE + SLACK).into(), async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let waited = since.elapsed();
    assert!(
        r.is_ok(),
        "{what}: still open {waited:?} later (client idle timeout {IDLE:?})"
    );
    assert!(
        waited >= IDLE - EARLY,
        "{what}: closed after {waited:?}, before the {IDLE:?} idle timeout"
    );
    eprintln!("{what}: closed after {waited:?}");
    all
}

/// Assert `s` is closed by the proxy within `limit` (a refused connection).
async fn expect_closed_at_once(s: &mut TcpStream, limit: Duration, what: &str) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: got {n} bytes instead of a close"),
        Err(_) => panic!("{what}: not closed within {limit:?}"),
    }
}

/// Assert the proxy has not closed `s` (nothing to read, no EOF) for `d`.
async fn expect_open_for(s: &mut TcpStream, d: Duration, what: &str) {
    let mut buf = [0u8; 64];
    if let Ok(r) = tokio::time::timeout(d, s.read(&mut buf)).await {
        panic!("{what}: expected an open, quiet connection, got {r:?}");
    }
}

fn get_request(origin: &Origin, path: &str) -> String {
    format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        origin.url(path),
        origin.port()
    )
}

/// One forwarded GET on an open HTTP/1.1 connection; returns the body.
async fn forward_get(s: &mut TcpStream, origin: &Origin, path: &str) -> Vec<u8> {
    s.write_all(get_request(origin, path).as_bytes())
        .await
        .expect("send GET");
    let (head, leftover) = read_head(s).await.expect("response head");
    assert_eq!(head.status, 200, "forwarded GET {path}: {head:?}");
    read_body(s, &head, leftover).await
}

#[tokio::test]
async fn tcp_connection_without_a_byte_is_closed() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let proxy = idle_proxy(&certs).await;
        let targets = [
            ("plain (HTTP/1.1 or h2c: the preface decides)", proxy.plain),
            ("h1only", proxy.listener("h1only")),
            ("secure (no ClientHello)", proxy.secure()),
        ];
        let mut conns = Vec::new();
        for (what, addr) in targets {
            let s = TcpStream::connect(addr).await.expect("connect");
            conns.push((what, s));
        }
        let since = Instant::now();
        for (what, s) in &mut conns {
            let got = expect_idle_close(s, since, what).await;
            assert!(got.is_empty(), "{what}: nothing is sent: {got:?}");
        }
        proxy.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn tls_connection_without_a_request_is_closed() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let proxy = idle_proxy(&certs).await;
        // HTTP/1.1 after the handshake: closed.
        let mut h1 = tls_connect(proxy.secure(), &certs, &[b"http/1.1"]).await;
        let since = Instant::now();
        expect_idle_close(&mut h1, since, "TLS, ALPN http/1.1, no request").await;
        // ALPN h2 and not even the client preface: the server's SETTINGS
        // may arrive, then the connection is dropped.
        let mut h2 = tls_connect(proxy.secure(), &certs, &[b"h2"]).await;
        let since = Instant::now();
        expect_idle_close(&mut h2, since, "TLS, ALPN h2, no preface").await;
        proxy.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn http1_keep_alive_is_closed_when_idle_between_requests() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let proxy = idle_proxy(&certs).await;
        let origin = Origin::start().await;
        let mut s = TcpStream::connect(proxy.listener("h1only"))
            .await
            .expect("connect");
        // Requests every 0.6 s for 2 s (two timeouts): the timer restarts
        // after each response, so the connection stays.
        let start = Instant::now();
        while start.elapsed() < 2 * IDLE {
            let body = forward_get(&mut s, &origin, "/again").await;
            assert_eq!(body, b"origin: GET /again\n");
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        forward_get(&mut s, &origin, "/last").await;
        let since = Instant::now();
        expect_idle_close(&mut s, since, "HTTP/1.1 keep-alive after a response").await;
        proxy.shutdown().await;
    })
    .await;
}

/// The HTTP/2 frames read until EOF: (type, error code of a GOAWAY).
async fn h2_frames_until_close<S: AsyncRead + Unpin>(
    s: &mut S,
    since: Instant,
    what: &str,
) -> Vec<(u8, Option<u32>)> {
    let bytes = expect_idle_close(s, since, what).await;
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let kind = rest[3];
        let Some(payload) = rest.get(9..9 + len) else {
            break;
        };
        let code = (kind == 7 && payload.len() >= 8)
            .then(|| u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
        frames.push((kind, code));
        rest = &rest[9 + len..];
    }
    frames
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

async fn assert_h2_goaway_then_close<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, what: &str) {
    s.write_all(H2_PREFACE).await.expect("preface");
    s.write_all(H2_SETTINGS).await.expect("SETTINGS");
    s.flush().await.expect("flush");
    let since = Instant::now();
    let frames = h2_frames_until_close(&mut s, since, what).await;
    eprintln!("{what}: frames {frames:?}");
    let goaways: Vec<_> = frames.iter().filter(|(t, _)| *t == 7).collect();
    assert!(
        !goaways.is_empty(),
        "{what}: a GOAWAY before the close: {frames:?}"
    );
    assert!(
        goaways.iter().all(|(_, code)| *code == Some(0)),
        "{what}: GOAWAY with NO_ERROR: {frames:?}"
    );
}

#[tokio::test]
async fn http2_without_a_stream_gets_goaway_then_close() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let proxy = idle_proxy(&certs).await;
        let h2c = TcpStream::connect(proxy.plain).await.expect("connect");
        assert_h2_goaway_then_close(h2c, "h2c (prior knowledge), no stream").await;
        let tls = tls_connect(proxy.secure(), &certs, &[b"h2"]).await;
        assert_h2_goaway_then_close(tls, "HTTP/2 over TLS, no stream").await;
        // A client that answers the GOAWAY's PING is closed right after the
        // timeout (not by the drop that follows it), without an error.
        let tls = tls_connect(proxy.secure(), &certs, &[b"h2"]).await;
        let (_send, conn) = h2::client::handshake(tls).await.expect("HTTP/2 handshake");
        let since = Instant::now();
        let end = tokio::time::timeout(IDLE + Duration::from_millis(700), conn)
            .await
            .unwrap_or_else(|_| panic!("HTTP/2 client: still open {:?} later", since.elapsed()));
        let waited = since.elapsed();
        eprintln!("HTTP/2 client: {end:?} after {waited:?}");
        assert!(
            waited >= IDLE - EARLY,
            "HTTP/2 client: closed after {waited:?}"
        );
        assert!(end.is_ok(), "HTTP/2 client: a graceful close: {end:?}");
        proxy.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn requests_in_flight_and_tunnels_are_not_closed() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let proxy = idle_proxy(&certs).await;
        let echo = EchoServer::start().await;
        let origin = Origin::start().await;
        let target = format!("127.0.0.1:{}", echo.port());

        // HTTP/1.1 CONNECT: bytes every 0.3 s for three timeouts, then
        // quiet for more than the timeout plus the grace.
        let (head, mut h1_tunnel) = connect_h1(proxy.plain, &target).await;
        assert_eq!(head.status, 200, "CONNECT: {head:?}");
        // HTTP/2 CONNECT over TLS: its stream keeps the connection busy.
        let h2 = h2_client(tls_connect(proxy.secure(), &certs, &[b"h2"]).await).await;
        let (parts, h2_tunnel) = h2_connect(&h2, &target).await;
        assert_eq!(parts.status, 200, "HTTP/2 CONNECT: {parts:?}");
        let mut h2_tunnel = h2_tunnel.expect("tunnel");
        // A response still streaming (the origin holds its second part).
        let mut long = TcpStream::connect(proxy.listener("h1only"))
            .await
            .expect("connect");
        long.write_all(get_request(&origin, "/stream").as_bytes())
            .await
            .expect("send GET /stream");
        let (head, mut got) = read_head(&mut long).await.expect("head");
        assert_eq!(head.status, 200, "GET /stream: {head:?}");

        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < 3 * IDLE {
            n += 1;
            assert_echo(&mut h1_tunnel, format!("h1 {n}").as_bytes()).await;
            h2_tunnel.assert_echo(format!("h2 {n}").as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tokio::time::sleep(IDLE * 2 + Duration::from_millis(500)).await;
        assert_echo(&mut h1_tunnel, b"h1 after a quiet spell").await;
        h2_tunnel.assert_echo(b"h2 after a quiet spell").await;

        origin.release();
        let mut chunk = [0u8; 256];
        while !String::from_utf8_lossy(&got).contains("part2;") {
            let n = long.read(&mut chunk).await.expect("read /stream");
            assert!(n > 0, "the streaming response was cut: {got:?}");
            got.extend_from_slice(&chunk[..n]);
        }
        proxy.shutdown().await;
    })
    .await;
}

/// A TCP connection from `source` (another loopback address is another client).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind the client address");
    socket.connect(to).await.expect("connect")
}

fn refused(text: &str, listener: &str, reason: &str) -> f64 {
    metric(
        text,
        "bauta_connections_refused_total",
        &[("listener", listener), ("reason", reason)],
    )
}

#[tokio::test]
async fn connection_caps_close_new_connections_and_keep_the_admin_reachable() {
    bounded_for(LIMIT, async {
        const TOTAL: usize = 20;
        const PER_CLIENT: usize = 15;
        const HOLD_IDLE: Duration = Duration::from_secs(2);
        let certs = make_certs();
        let proxy = start_proxy_opts(ProxyOpts {
            certs: Some(&certs),
            extra: format!(
                "[limits]\nclient_idle_timeout_s = {}\nmax_connections = {TOTAL}\n\
                 max_connections_per_client = {PER_CLIENT}\nshutdown_grace_s = 1\n\n{ALLOW_LOOPBACK}",
                HOLD_IDLE.as_secs()
            ),
            ..ProxyOpts::default()
        })
        .await;
        let origin = Origin::start().await;
        let text = fetch_metrics(proxy.admin).await;
        for listener in ["plain", "secure"] {
            for reason in ["total", "per_client"] {
                assert_eq!(refused(&text, listener, reason), 0.0, "pre-filled at 0");
            }
        }

        // 15 idle connections from 127.0.0.1: its cap.
        let mut held = Vec::new();
        for _ in 0..PER_CLIENT {
            held.push(connect_from([127, 0, 0, 1], proxy.plain).await);
        }
        let since = Instant::now();
        let mut over = connect_from([127, 0, 0, 1], proxy.plain).await;
        expect_closed_at_once(&mut over, Duration::from_millis(500), "16th from 127.0.0.1").await;
        // Another client still gets in, up to the total of 20…
        for _ in PER_CLIENT..TOTAL {
            held.push(connect_from([127, 0, 0, 2], proxy.plain).await);
        }
        // …which counts every listener: the TLS one is full too.
        let mut over = connect_from([127, 0, 0, 2], proxy.secure()).await;
        expect_closed_at_once(&mut over, Duration::from_millis(500), "21st, on secure").await;

        // Saturated: the admin endpoint answers, and held connections are served.
        let (status, body) = http_get(proxy.admin, "/healthz").await;
        assert_eq!(status, 200, "/healthz while saturated: {body}");
        let text = fetch_metrics(proxy.admin).await;
        assert_eq!(refused(&text, "plain", "per_client"), 1.0, "{text}");
        assert_eq!(refused(&text, "secure", "total"), 1.0);
        assert_eq!(refused(&text, "plain", "total"), 0.0);
        assert_eq!(refused(&text, "secure", "per_client"), 0.0);
        let served = forward_get(&mut held[0], &origin, "/held").await;
        assert_eq!(served, b"origin: GET /held\n");
        assert!(
            since.elapsed() < HOLD_IDLE - EARLY,
            "the checks above ran within the idle timeout ({:?})",
            since.elapsed()
        );
        expect_open_for(&mut held[1], Duration::from_millis(100), "a held connection").await;

        // The held connections idle out: the proxy closes every one.
        for (i, s) in held.iter_mut().enumerate() {
            let mut buf = [0u8; 64];
            let r = tokio::time::timeout_at((since + HOLD_IDLE + SLACK).into(), s.read(&mut buf))
                .await;
            assert!(
                matches!(r, Ok(Ok(0)) | Ok(Err(_))),
                "held connection {i}: closed by the idle timeout: {r:?}"
            );
        }
        // Places are given back: new connections are served again.
        let mut again = connect_from([127, 0, 0, 1], proxy.plain).await;
        let served = forward_get(&mut again, &origin, "/again").await;
        assert_eq!(served, b"origin: GET /again\n");
        let text = fetch_metrics(proxy.admin).await;
        assert_eq!(refused(&text, "plain", "per_client"), 1.0, "{text}");
        assert_eq!(refused(&text, "secure", "total"), 1.0);
        proxy.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn quic_over_the_cap_is_refused_and_idle_quic_is_closed() {
    bounded_for(LIMIT, async {
        const QUIC_IDLE: Duration = Duration::from_secs(2);
        let certs = make_certs();
        let proxy = start_masque_proxy(
            &certs,
            &format!(
                "[limits]\nclient_idle_timeout_s = {}\nmax_connections = 2\n\
                 shutdown_grace_s = 1\n\n{ALLOW_LOOPBACK}",
                QUIC_IDLE.as_secs()
            ),
        )
        .await;
        let a = H3Client::connect(proxy.secure, &certs).await;
        let since = Instant::now();
        let b = H3Client::connect(proxy.secure, &certs).await;
        // The third: refused before the handshake (CONNECTION_REFUSED).
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("client endpoint");
        let third = endpoint
            .connect_with(
                bauta_tests::masque::quic_client_config(&certs),
                proxy.secure,
                "localhost",
            )
            .expect("start QUIC connection")
            .await;
        match third {
            Err(quinn::ConnectionError::ConnectionClosed(close)) => assert_eq!(
                close.error_code,
                quinn::TransportErrorCode::CONNECTION_REFUSED,
                "{close:?}"
            ),
            other => panic!("third QUIC connection over max_connections = 2: {other:?}"),
        }
        // A TCP connection is over the same total cap.
        let mut tcp = TcpStream::connect(proxy.plain).await.expect("connect");
        expect_closed_at_once(
            &mut tcp,
            Duration::from_millis(500),
            "TCP while QUIC is full",
        )
        .await;
        let text = proxy.metrics().await;
        assert_eq!(refused(&text, "secure", "total"), 1.0, "{text}");
        assert_eq!(refused(&text, "plain", "total"), 1.0, "{text}");
        assert_eq!(refused(&text, "secure", "per_client"), 0.0, "{text}");

        // No request: the QUIC idle timeout closes both.
        for (what, c) in [("first", &a), ("second", &b)] {
            let err = tokio::time::timeout_at((since + QUIC_IDLE + SLACK).into(), c.conn.closed())
                .await
                .unwrap_or_else(|_| panic!("{what} HTTP/3 connection still open"));
            let waited = since.elapsed();
            eprintln!("{what} HTTP/3 connection: {err:?} after {waited:?}");
            assert!(
                waited >= QUIC_IDLE - EARLY,
                "{what}: closed after {waited:?}"
            );
            assert!(
                matches!(err, quinn::ConnectionError::TimedOut),
                "{what}: closed by the idle timeout: {err:?}"
            );
        }
        // Their places are given back.
        let _c = H3Client::connect(proxy.secure, &certs).await;
        let text = proxy.metrics().await;
        assert_eq!(refused(&text, "secure", "total"), 1.0, "{text}");
        drop((a, b));
        proxy.shutdown().await;
    })
    .await;
}

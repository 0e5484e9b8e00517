//! CONNECT tunnels: HTTP/1.1 on the plaintext and TLS listeners, HTTP/2 over
//! TLS (ALPN h2) and h2c prior knowledge; bytes both ways and half-close.

use bauta_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn connect_http1_plain_relays_both_ways_and_half_closes() {
    bounded(async {
        let echo = EchoServer::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let authority = format!("127.0.0.1:{}", echo.port());
        let (head, mut s) = connect_h1(proxy.plain, &authority).await;
        assert_eq!(head.status, 200, "CONNECT {authority}: {head:?}");
        assert_echo(&mut s, b"hello through the tunnel").await;
        // A bigger payload, several buffers' worth, both ways.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = s.into_split();
        let payload = big.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&payload).await.expect("write big payload");
            w
        });
        let mut got = vec![0u8; big.len()];
        r.read_exact(&mut got).await.expect("read big payload back");
        assert!(got == big, "200 kB echoed intact");
        let w = writer.await.expect("writer task");
        let mut s = r.reunite(w).expect("reunite halves");
        assert_half_close(&mut s).await;
        assert_eq!(echo.accepted(), 1);
    })
    .await
}

#[tokio::test]
async fn connect_http1_over_tls_listener() {
    bounded(async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_proxy_tls(&certs, ALLOW_LOOPBACK).await;
        let mut tls = tls_connect(proxy.secure(), &certs, &[b"http/1.1"]).await;
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "ALPN picks http/1.1"
        );
        let head = connect_on(&mut tls, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(head.status, 200, "{head:?}");
        assert_echo(&mut tls, b"over TLS").await;
        assert_echo(&mut tls, b"second message").await;
        assert_half_close(&mut tls).await;
    })
    .await
}

#[tokio::test]
async fn connect_http1_over_tls_without_alpn_defaults_to_http1() {
    bounded(async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_proxy_tls(&certs, ALLOW_LOOPBACK).await;
        let mut tls = tls_connect(proxy.secure(), &certs, &[]).await;
        let head = connect_on(&mut tls, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(head.status, 200, "{head:?}");
        assert_echo(&mut tls, b"no alpn").await;
    })
    .await
}

#[tokio::test]
async fn connect_http2_over_tls() {
    bounded(async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_proxy_tls(&certs, ALLOW_LOOPBACK).await;
        let tls = tls_connect(proxy.secure(), &certs, &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        let client = h2_client(tls).await;
        let authority = format!("127.0.0.1:{}", echo.port());
        let (parts, tunnel) = h2_connect(&client, &authority).await;
        assert_eq!(parts.status, 200, "h2 CONNECT {authority}: {parts:?}");
        let mut tunnel = tunnel.expect("tunnel on 2xx");
        tunnel.assert_echo(b"h2 tunnel bytes").await;
        tunnel.assert_echo(&vec![7u8; 100_000]).await;
        tunnel.assert_half_close().await;
    })
    .await
}

#[tokio::test]
async fn connect_http2_two_tunnels_on_one_connection() {
    bounded(async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_proxy_tls(&certs, ALLOW_LOOPBACK).await;
        let client = h2_client(tls_connect(proxy.secure(), &certs, &[b"h2"]).await).await;
        let authority = format!("127.0.0.1:{}", echo.port());
        let (p1, t1) = h2_connect(&client, &authority).await;
        let (p2, t2) = h2_connect(&client, &authority).await;
        assert_eq!(p1.status, 200);
        assert_eq!(p2.status, 200);
        let (mut t1, mut t2) = (t1.expect("tunnel 1"), t2.expect("tunnel 2"));
        t1.assert_echo(b"one").await;
        t2.assert_echo(b"two").await;
        t1.assert_half_close().await;
        t2.assert_echo(b"still open").await;
        t2.assert_half_close().await;
        assert_eq!(echo.accepted(), 2);
    })
    .await
}

#[tokio::test]
async fn connect_h2c_prior_knowledge_on_plain_listener() {
    bounded(async {
        let echo = EchoServer::start().await;
        let proxy = start_proxy_opts(ProxyOpts {
            plain_protocols: &["http1", "h2"],
            extra: ALLOW_LOOPBACK.to_string(),
            ..ProxyOpts::default()
        })
        .await;
        let tcp = tokio::net::TcpStream::connect(proxy.plain)
            .await
            .expect("connect to proxy");
        let client = h2_client(tcp).await;
        let (parts, tunnel) = h2_connect(&client, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(parts.status, 200, "{parts:?}");
        let mut tunnel = tunnel.expect("tunnel");
        tunnel.assert_echo(b"h2c").await;
        tunnel.assert_half_close().await;

        // The same listener still speaks HTTP/1.1.
        let (head, mut s) = connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(head.status, 200, "{head:?}");
        assert_echo(&mut s, b"http1 too").await;
    })
    .await
}

#[tokio::test]
async fn connect_http2_denied_gets_403_with_proxy_status() {
    bounded(async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        // Default deny, no rules.
        let proxy = start_proxy_tls(&certs, "[policy]\ndefault = \"deny\"\n").await;
        let client = h2_client(tls_connect(proxy.secure(), &certs, &[b"h2"]).await).await;
        let (parts, tunnel) = h2_connect(&client, &format!("127.0.0.1:{}", echo.port())).await;
        assert!(tunnel.is_none());
        assert_error_parts(
            &parts,
            http::StatusCode::FORBIDDEN,
            "http_request_denied",
            "h2 CONNECT denied",
        );
        assert_eq!(
            echo.accepted(),
            0,
            "a denied CONNECT never reaches the target"
        );
    })
    .await
}

#[tokio::test]
async fn connect_http2_errors_carry_proxy_status() {
    bounded(async {
        let certs = make_certs();
        let proxy = start_proxy_tls(&certs, ALLOW_LOOPBACK).await;
        let client = h2_client(tls_connect(proxy.secure(), &certs, &[b"h2"]).await).await;
        let (parts, tunnel) = h2_connect(&client, &format!("127.0.0.1:{}", closed_port())).await;
        assert!(tunnel.is_none());
        assert_error_parts(
            &parts,
            http::StatusCode::BAD_GATEWAY,
            "connection_refused",
            "h2 CONNECT to a closed port",
        );
        let (parts, _) = h2_connect(&client, "10.0.0.1:80").await;
        assert_error_parts(
            &parts,
            http::StatusCode::FORBIDDEN,
            "http_request_denied",
            "h2 CONNECT outside the rule",
        );
        // The HTTP/2 connection survives the errors.
        let echo = EchoServer::start().await;
        let (parts, tunnel) = h2_connect(&client, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(parts.status, 200);
        tunnel.expect("tunnel").assert_echo(b"after errors").await;
    })
    .await
}

/// The plain HTTP/1.1 listener relays a tunnel with splice(2) on Linux:
/// bytes the client sends in the same write as its CONNECT reach the target
/// first, payloads around the pipe and buffer sizes arrive intact both ways
/// at once, and every byte is counted.
#[tokio::test]
async fn connect_http1_plain_early_bytes_and_buffer_boundaries() {
    bounded(async {
        let echo = EchoServer::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let authority = format!("127.0.0.1:{}", echo.port());
        let mut s = tokio::net::TcpStream::connect(proxy.plain)
            .await
            .expect("connect to proxy");
        let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\nearly|");
        s.write_all(request.as_bytes()).await.expect("CONNECT");
        let (head, leftover) = read_head(&mut s).await.expect("response head");
        assert_eq!(head.status, 200, "{head:?}");
        // The echo of the early bytes may have come with the head.
        let mut rest = vec![0u8; 6usize.saturating_sub(leftover.len())];
        s.read_exact(&mut rest).await.expect("early echo");
        let back = [leftover, rest].concat();
        assert_eq!(&back, b"early|", "bytes sent with the request come first");
        let mut sent = 6u64;
        for n in [
            2047usize,
            2048,
            2049,
            16_385,
            65_535,
            65_536,
            65_537,
            (1 << 20) + 3,
        ] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 % 253) as u8).collect();
            let (mut r, mut w) = s.into_split();
            let out = data.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&out).await.expect("write");
                w
            });
            let mut got = vec![0u8; n];
            r.read_exact(&mut got).await.expect("echo");
            assert!(got == data, "{n} bytes echoed intact");
            s = r.reunite(writer.await.expect("writer")).expect("reunite");
            sent += n as u64;
        }
        assert_half_close(&mut s).await;
        let text = wait_metric(proxy.admin, "bauta_tunnels_active", 0.0).await;
        let bytes = |dir| {
            metric_sample(
                &text,
                "bauta_tunnel_bytes_total",
                &[("kind", "connect"), ("direction", dir)],
            )
        };
        assert_eq!(bytes("upstream"), Some(sent as f64), "{text}");
        assert_eq!(
            bytes("downstream"),
            Some((sent + ECHO_EOF_REPLY.len() as u64) as f64),
            "{text}"
        );
    })
    .await
}

/// Scrape until `gauge{kind="connect"}` reads `want`; the last scrape.
async fn wait_metric(admin: std::net::SocketAddr, gauge: &str, want: f64) -> String {
    loop {
        let text = fetch_metrics(admin).await;
        if metric_sample(&text, gauge, &[("kind", "connect")]) == Some(want) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

//! Request limits, each hit on every front it applies to (`[limits]`):
//! `max_headers` (431), `max_uri_bytes` (414), `max_header_list_size`
//! (431 from HTTP/1.1's parser and the HTTP/3 library), `header_read_timeout_s`
//! (an HTTP/1.1 head that never completes), `handshake_timeout_s` (a TLS
//! handshake that never completes), `h3_max_concurrent_streams` (QUIC
//! stream credit).

use std::time::{Duration, Instant};

use bauta_tests::masque::{
    quic_client_config, start_masque_proxy, udp_path, H3Client, UdpEcho, ALLOW_LOOPBACK_V4_V6,
};
use bauta_tests::*;
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(60);

fn extra(limits: &str) -> String {
    format!("{ALLOW_LOOPBACK_V4_V6}\n[limits]\nshutdown_grace_s = 1\n{limits}")
}

async fn h2_on(proxy: std::net::SocketAddr, certs: &Certs) -> H2Sender {
    h2_client(tls_connect(proxy, certs, &[b"h2"]).await).await
}

/// Send `req` on HTTP/2 and return the response head.
async fn h2_head(client: &H2Sender, req: Request<()>) -> http::response::Parts {
    let mut c = client.clone().ready().await.expect("h2 ready");
    let (resp, _send) = c.send_request(req, false).expect("send");
    resp.await.expect("HTTP/2 response").into_parts().0
}

#[tokio::test(flavor = "multi_thread")]
async fn max_headers_is_431_on_every_front() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let proxy = start_masque_proxy(&certs, &extra("max_headers = 10\n")).await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let many: String = (0..20).map(|i| format!("x-f{i}: v\r\n")).collect();
        let (h, _) = connect_h1_with(proxy.plain, &target, &many).await;
        assert_eq!(h.status, 431, "HTTP/1.1: {h:?}");
        let (h, _) = connect_h1_with(proxy.plain, &target, "x-one: v\r\n").await;
        assert_eq!(h.status, 200, "HTTP/1.1 under the limit");

        let h2 = h2_on(proxy.secure, &certs).await;
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(target.as_str());
        for i in 0..20 {
            req = req.header(format!("x-f{i}"), "v");
        }
        let parts = h2_head(&h2, req.body(()).expect("req")).await;
        assert_error_parts(
            &parts,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "http_request_error",
            "HTTP/2 with 20 fields",
        );

        let udp = UdpEcho::start().await;
        let mut h3 = H3Client::connect_with(proxy.secure, quic_client_config(&certs)).await;
        let names: Vec<String> = (0..20).map(|i| format!("x-f{i}")).collect();
        let mut fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        fields.push(("capsule-protocol", "?1"));
        let (resp, _s) = h3
            .extended_connect(&udp_path("127.0.0.1", udp.port()), &fields)
            .await
            .expect("HTTP/3 response");
        assert_eq!(resp.status(), 431, "HTTP/3: {resp:?}");
        assert!(
            proxy_status_of(resp.headers()).is_some_and(|p| p.contains("http_request_error")),
            "{resp:?}"
        );
        proxy.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn max_uri_bytes_is_414_on_every_front() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let proxy = start_masque_proxy(&certs, &extra("max_uri_bytes = 100\n")).await;
        let origin = Origin::start().await;
        let long = "a".repeat(200);
        let req = format!(
            "GET http://{0}/{long} HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
            origin.addr
        );
        let (h, _, _) = raw_request(proxy.plain, req.as_bytes()).await;
        h.assert_error(414, "http_request_error", "HTTP/1.1 long target");
        let req = format!(
            "GET http://{0}/short HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
            origin.addr
        );
        let (h, _, _) = raw_request(proxy.plain, req.as_bytes()).await;
        assert_eq!(h.status, 200, "HTTP/1.1 short target");

        let h2 = h2_on(proxy.secure, &certs).await;
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{}/{long}", origin.addr))
            .body(())
            .expect("req");
        let parts = h2_head(&h2, req).await;
        assert_error_parts(
            &parts,
            StatusCode::URI_TOO_LONG,
            "http_request_error",
            "HTTP/2 long :path",
        );

        let mut h3 = H3Client::connect_with(proxy.secure, quic_client_config(&certs)).await;
        let path = format!("{}?{long}", udp_path("127.0.0.1", 9));
        let (resp, _s) = h3
            .extended_connect(&path, &[("capsule-protocol", "?1")])
            .await
            .expect("HTTP/3 response");
        assert_eq!(resp.status(), 414, "HTTP/3: {resp:?}");
        assert_eq!(
            origin.connections(),
            1,
            "only the short request went upstream"
        );
        proxy.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn max_header_list_size_is_431_on_http1_and_http3() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let proxy = start_masque_proxy(&certs, &extra("max_header_list_size = 2048\n")).await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        // HTTP/1.1: hyper answers 431 once more than max_header_list_size +
        // max_uri_bytes (here 10 KiB) is buffered without a complete head
        // (a head that completes within the reads that fill that is let
        // through: the bound is on memory, not exact).
        let big = format!("x-big: {}\r\n", "b".repeat(32 * 1024));
        let (h, _) = connect_h1_with(proxy.plain, &target, &big).await;
        assert_eq!(h.status, 431, "HTTP/1.1 with a 32 KiB field: {h:?}");

        let udp = UdpEcho::start().await;
        let mut h3 = H3Client::connect_with(proxy.secure, quic_client_config(&certs)).await;
        let value = "b".repeat(4096);
        // The h3 library answers 431 itself and drops the request stream;
        // the drop can overtake the answer, so a reset is the other outcome.
        // Either way no flow is opened.
        match h3
            .extended_connect(
                &udp_path("127.0.0.1", udp.port()),
                &[("capsule-protocol", "?1"), ("x-big", value.as_str())],
            )
            .await
        {
            Ok((resp, _s)) => assert_eq!(resp.status(), 431, "HTTP/3 with a 4 KiB field: {resp:?}"),
            Err(e) => eprintln!("HTTP/3 with a 4 KiB field: the stream ended first: {e:?}"),
        }
        let m = proxy.metrics().await;
        assert_eq!(
            bauta_tests::masque::metric(&m, "bauta_tunnels_active", &[("kind", "connect-udp")]),
            0.0
        );
        assert_eq!(udp.received(), 0, "nothing reached the UDP target");
        proxy.shutdown().await;
    })
    .await
}

/// Read until the proxy closes `s`; what it sent before.
async fn read_until_close(s: &mut TcpStream, limit: Duration, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("{what}: still open after {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn header_read_and_handshake_timeouts_close_stalled_connections() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        // The idle timeout is long: only the new timeouts can close these.
        let proxy = start_masque_proxy(
            &certs,
            &extra(
                "header_read_timeout_s = 1\nhandshake_timeout_s = 1\nclient_idle_timeout_s = 60\n",
            ),
        )
        .await;
        // An HTTP/1.1 head that never completes.
        let mut s = TcpStream::connect(proxy.plain).await.expect("connect");
        s.write_all(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
            .await
            .expect("partial head");
        let started = Instant::now();
        read_until_close(&mut s, Duration::from_secs(10), "a stalled HTTP/1.1 head").await;
        assert!(started.elapsed() < Duration::from_secs(10));
        // A TLS handshake that never completes (one byte of a record).
        let mut t = TcpStream::connect(proxy.secure).await.expect("connect");
        t.write_all(&[0x16]).await.expect("one byte");
        read_until_close(&mut t, Duration::from_secs(10), "a stalled TLS handshake").await;
        proxy.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn h3_max_concurrent_streams_is_the_clients_stream_credit() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let proxy = start_masque_proxy(&certs, &extra("h3_max_concurrent_streams = 2\n")).await;
        let udp = UdpEcho::start().await;
        let path = udp_path("127.0.0.1", udp.port());
        let mut h3 = H3Client::connect_with(proxy.secure, quic_client_config(&certs)).await;
        let first = h3.connect_udp(&path).await;
        let _second = h3.connect_udp(&path).await;
        // No credit for a third request stream while two are open.
        let third = h3.conn.open_bi();
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut third)
                .await
                .is_err(),
            "a third request stream opened past h3_max_concurrent_streams = 2"
        );
        // A closed flow gives its credit back.
        drop(first);
        let opened = tokio::time::timeout(Duration::from_secs(5), third).await;
        assert!(
            matches!(opened, Ok(Ok(_))),
            "credit after a flow closed: {opened:?}"
        );
        proxy.shutdown().await;
    })
    .await
}

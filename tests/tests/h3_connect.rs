//! HTTP/3 front: plain CONNECT (RFC 9114 §4.4) with the independent aioquic
//! client, policy denials, malformed CONNECT, Alt-Svc on the TCP side of an
//! h3 listener, and connection metrics.

use std::time::Duration;

use bauta_tests::masque::*;
use bauta_tests::*;
use tokio::io::AsyncWriteExt;

const MSG: &str = "hello over h3 connect";

#[tokio::test]
async fn h3_connect_relays_to_tcp_echo() {
    bounded_for(Duration::from_secs(20), async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let port = echo.port().to_string();
        let run = run_masque_client(
            proxy.secure,
            &certs,
            "connect",
            &["--target-host", "127.0.0.1", "--target-port", &port],
        )
        .await;
        assert_eq!(run.str("status"), Some("200"), "HTTP/3 CONNECT: {run:?}");
        // The client half-closes after its message, so the echo server's EOF
        // reply may follow the echo.
        let got = run.str("echo").unwrap_or_default();
        assert!(
            got == MSG || got == format!("{MSG}{}", String::from_utf8_lossy(ECHO_EOF_REPLY)),
            "bytes echoed through the HTTP/3 tunnel: {got:?}; {run:?}"
        );
        assert_eq!(echo.accepted(), 1, "one TCP connection to the target");
        let ok = wait_metric(
            proxy.admin,
            "bauta_requests_total",
            &[
                ("listener", "secure"),
                ("protocol", "h3"),
                ("kind", "connect"),
                ("outcome", "ok"),
            ],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(
            ok, 1.0,
            "requests_total{{protocol=h3,kind=connect,outcome=ok}}"
        );
    })
    .await
}

#[tokio::test]
async fn h3_connect_denied_gets_403_with_proxy_status() {
    bounded_for(Duration::from_secs(20), async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        // Default deny, no rules.
        let proxy = start_masque_proxy(&certs, "[policy]\ndefault = \"deny\"\n").await;
        let authority = format!("127.0.0.1:{}", echo.port());
        let run = run_masque_client(
            proxy.secure,
            &certs,
            "raw",
            &[
                "--header",
                ":method=CONNECT",
                "--header",
                &format!(":authority={authority}"),
            ],
        )
        .await;
        assert_eq!(run.str("status"), Some("403"), "denied CONNECT: {run:?}");
        let ps = run
            .str("proxy_status")
            .unwrap_or_else(|| panic!("no proxy-status on the 403: {run:?}"));
        assert_proxy_status(ps, "http_request_denied", "HTTP/3 CONNECT denied");
        assert_eq!(
            echo.accepted(),
            0,
            "a denied CONNECT never reaches the target"
        );
        let denied = wait_metric(
            proxy.admin,
            "bauta_requests_total",
            &[
                ("protocol", "h3"),
                ("kind", "connect"),
                ("outcome", "denied"),
            ],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(denied, 1.0, "requests_total{{protocol=h3,outcome=denied}}");
    })
    .await
}

#[tokio::test]
async fn h3_connect_with_scheme_and_path_is_malformed() {
    bounded_for(Duration::from_secs(20), async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let authority = format!("127.0.0.1:{}", echo.port());

        // aioquic: exactly the four pseudo-headers, nothing else. The 400
        // head itself is asserted by
        // `h3_connect_with_scheme_and_path_gets_400_before_the_reset`.
        let run = run_masque_client(
            proxy.secure,
            &certs,
            "raw",
            &[
                "--wait-end",
                "--header",
                ":method=CONNECT",
                "--header",
                ":scheme=https",
                "--header",
                ":path=/",
                "--header",
                &format!(":authority={authority}"),
            ],
        )
        .await;
        assert_h3_malformed_reset(&run, "aioquic CONNECT with :scheme/:path");

        // The h3 crate's client always sends :scheme and :path on CONNECT.
        // quinn surfaces a RESET_STREAM before any data buffered ahead of
        // it, so this client cannot always see the 400 that precedes the
        // reset (aioquic above asserts it); it must see the reset code.
        let mut h3 = H3Client::connect(proxy.secure, &certs).await;
        let req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("https://{authority}/"))
            .body(())
            .expect("request");
        let mut stream = h3.send.send_request(req).await.expect("send CONNECT");
        match stream.recv_response().await {
            Ok(resp) => {
                assert_eq!(resp.status(), 400, "{resp:?}");
                let (_, end) = h3_read_to_end(&mut stream).await;
                match end {
                    StreamEnd::Error(e) => assert!(
                        e.contains("H3_MESSAGE_ERROR"),
                        "after the 400 the stream is reset with H3_MESSAGE_ERROR: {e}"
                    ),
                    StreamEnd::Finished => {
                        panic!("after the 400 the stream must be reset with H3_MESSAGE_ERROR, not finished")
                    }
                }
            }
            Err(e) => assert!(
                format!("{e:?}").contains("H3_MESSAGE_ERROR"),
                "stream reset with H3_MESSAGE_ERROR: {e:?}"
            ),
        }
        assert_eq!(echo.accepted(), 0, "a malformed CONNECT never reaches the target");

        // The connection is still usable: a well-formed CONNECT-UDP on it works.
        let udp = UdpEcho::start().await;
        let s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        h3.assert_datagram_echo(stream_id(&s), b"still fine").await;
    })
    .await
}

/// README: `:scheme`/`:path` on an HTTP/3 CONNECT make it malformed: "400,
/// then the stream is reset with H3_MESSAGE_ERROR". aioquic reports the
/// stream's events in order, so it sees whether the 400 head arrived before
/// the reset.
#[tokio::test]
async fn h3_connect_with_scheme_and_path_gets_400_before_the_reset() {
    bounded_for(Duration::from_secs(20), async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let authority = format!("127.0.0.1:{}", echo.port());
        let run = run_masque_client(
            proxy.secure,
            &certs,
            "raw",
            &[
                "--wait-end",
                "--header",
                ":method=CONNECT",
                "--header",
                ":scheme=https",
                "--header",
                ":path=/",
                "--header",
                &format!(":authority={authority}"),
            ],
        )
        .await;
        assert_h3_malformed_answer(&run, "aioquic CONNECT with :scheme/:path");
        assert_eq!(
            echo.accepted(),
            0,
            "a malformed CONNECT never reaches the target"
        );
    })
    .await
}

#[tokio::test]
async fn alt_svc_advertises_h3_on_the_tls_listener() {
    bounded(async {
        let certs = make_certs();
        // Default deny: every CONNECT gets a 403 (an HTTP response to look at).
        let proxy = start_masque_proxy(&certs, "[policy]\ndefault = \"deny\"\n").await;
        let want = format!("h3=\":{}\"; ma=86400", proxy.secure.port());

        // HTTP/1.1 over TLS: a 403.
        let mut tls = tls_connect(proxy.secure, &certs, &[b"http/1.1"]).await;
        let head = connect_on(&mut tls, "127.0.0.1:9").await;
        head.assert_error(403, "http_request_denied", "CONNECT on the TLS listener");
        assert_eq!(head.header("alt-svc"), Some(want.as_str()), "{head:?}");

        // HTTP/1.1 over TLS: a 400 (CONNECT without a port).
        let mut tls = tls_connect(proxy.secure, &certs, &[b"http/1.1"]).await;
        tls.write_all(b"CONNECT 127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("send CONNECT");
        let (head, _) = read_head(&mut tls).await.expect("response head");
        assert_eq!(head.status, 400, "{head:?}");
        assert_eq!(head.header("alt-svc"), Some(want.as_str()), "{head:?}");

        // HTTP/2 over TLS too.
        let client = h2_client(tls_connect(proxy.secure, &certs, &[b"h2"]).await).await;
        let (parts, _) = h2_connect(&client, "127.0.0.1:9").await;
        assert_eq!(parts.status, 403);
        assert_eq!(
            parts.headers.get("alt-svc").and_then(|v| v.to_str().ok()),
            Some(want.as_str()),
            "{parts:?}"
        );

        // The plaintext listener has no HTTP/3 side and advertises nothing.
        let (head, _) = connect_h1(proxy.plain, "127.0.0.1:9").await;
        assert_eq!(head.status, 403);
        assert_eq!(head.header("alt-svc"), None, "plain listener: {head:?}");
    })
    .await
}

#[tokio::test]
async fn h3_connections_are_counted() {
    bounded_for(Duration::from_secs(20), async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let labels = [("listener", "secure"), ("protocol", "h3")];
        // Nothing counted yet (that the series exists at 0 from the start
        // is asserted by `connection_counters_are_exported_at_zero`).
        assert_nothing_counted(
            &proxy.metrics().await,
            "bauta_connections_total",
            &labels,
            "no HTTP/3 connection yet",
        );

        // One connection from aioquic, one from the Rust client.
        let port = echo.port().to_string();
        let run =
            run_masque_client(proxy.secure, &certs, "connect", &["--target-port", &port]).await;
        assert_eq!(run.str("status"), Some("200"), "{run:?}");
        let _h3 = H3Client::connect(proxy.secure, &certs).await;

        let n = wait_metric(proxy.admin, "bauta_connections_total", &labels, |v| {
            v >= 2.0
        })
        .await;
        assert_eq!(
            n, 2.0,
            "bauta_connections_total{{listener=secure,protocol=h3}}"
        );
        // TCP connections on the same listener are counted apart.
        assert_nothing_counted(
            &proxy.metrics().await,
            "bauta_connections_total",
            &[("listener", "secure"), ("protocol", "http1")],
            "no HTTP/1.1 connection was made",
        );
    })
    .await
}

/// On a fresh proxy each listener's connection counters exist at 0, one per
/// protocol it serves (README metrics table: `listener`, `protocol`).
#[tokio::test]
async fn connection_counters_are_exported_at_zero() {
    bounded(async {
        let certs = make_certs();
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let text = proxy.metrics().await;
        for (listener, protocol) in [
            ("plain", "http1"),
            ("secure", "http1"),
            ("secure", "h2"),
            ("secure", "h3"),
        ] {
            assert_eq!(
                metric(
                    &text,
                    "bauta_connections_total",
                    &[("listener", listener), ("protocol", protocol)]
                ),
                0.0,
                "bauta_connections_total{{listener={listener},protocol={protocol}}}"
            );
        }
    })
    .await
}

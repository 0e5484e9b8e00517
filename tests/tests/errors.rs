//! Failure answers: DNS errors and timeouts, refused and timed-out connects,
//! malformed CONNECT requests; the proxy keeps serving afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use bauta_tests::*;
use tokio::net::TcpStream;

/// A proxy that resolves through `dns` and may reach 127.0.0.0/8.
async fn proxy_with_dns(dns: &FakeDns) -> TestProxy {
    start_proxy(&format!("{}\n{ALLOW_LOOPBACK}", dns.toml())).await
}

#[tokio::test]
async fn dns_nxdomain_is_502_dns_error_with_rcode() {
    bounded(async {
        let dns = FakeDns::start().await;
        let proxy = proxy_with_dns(&dns).await;
        let (head, _) = connect_h1(proxy.plain, "missing.test:443").await;
        head.assert_error(502, "dns_error", "CONNECT missing.test");
        let ps = head.proxy_status().unwrap_or_default();
        assert!(
            ps.contains("rcode=\"NXDOMAIN\""),
            "Proxy-Status carries the rcode: {ps:?}"
        );
        assert!(
            dns.queries().iter().any(|(n, _)| n == "missing.test"),
            "the fake DNS server was asked: {:?}",
            dns.queries()
        );
    })
    .await
}

#[tokio::test]
async fn dns_silence_is_504_dns_timeout() {
    bounded(async {
        let dns = FakeDns::start().await;
        let proxy = proxy_with_dns(&dns).await;
        let started = std::time::Instant::now();
        let (head, _) = connect_h1(proxy.plain, "slow.test:443").await;
        head.assert_error(504, "dns_timeout", "CONNECT slow.test");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "dns_timeout_ms = 500 should bound the wait, took {:?}",
            started.elapsed()
        );
    })
    .await
}

#[tokio::test]
async fn dns_name_resolving_to_allowed_loopback_tunnels() {
    bounded(async {
        let dns = FakeDns::start().await;
        let echo = EchoServer::start().await;
        let proxy = proxy_with_dns(&dns).await;
        let (head, mut s) = connect_h1(proxy.plain, &format!("echo.test:{}", echo.port())).await;
        assert_eq!(
            head.status, 200,
            "echo.test → 127.0.0.1 inside the cidr rule: {head:?}"
        );
        assert_echo(&mut s, b"resolved by the fake DNS").await;
        assert_half_close(&mut s).await;
    })
    .await
}

#[tokio::test]
async fn dns_forwarding_to_a_name() {
    bounded(async {
        let dns = FakeDns::start().await;
        let origin = Origin::start().await;
        let proxy = proxy_with_dns(&dns).await;
        let host = format!("echo.test:{}", origin.port());
        let req = format!("GET http://{host}/named HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let (head, mut s, leftover) = raw_request(proxy.plain, req.as_bytes()).await;
        assert_eq!(head.status, 200, "{head:?}");
        let body = read_body(&mut s, &head, leftover).await;
        assert_eq!(body, b"origin: GET /named\n");
        let seen = origin.seen();
        assert_eq!(
            seen[0].headers.get("host").map(|v| v.as_bytes()),
            Some(host.as_bytes()),
            "Host is the name from the request target"
        );

        let req = "GET http://missing.test/ HTTP/1.1\r\nHost: missing.test\r\n\r\n";
        let (head, _, _) = raw_request(proxy.plain, req.as_bytes()).await;
        head.assert_error(502, "dns_error", "forward to missing.test");
    })
    .await
}

#[tokio::test]
async fn connection_refused_is_502() {
    bounded(async {
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let port = closed_port();
        let (head, _) = connect_h1(proxy.plain, &format!("127.0.0.1:{port}")).await;
        head.assert_error(502, "connection_refused", "CONNECT to a closed port");

        let req =
            format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        let (head, _, _) = raw_request(proxy.plain, req.as_bytes()).await;
        head.assert_error(502, "connection_refused", "forward to a closed port");
    })
    .await
}

/// A loopback listener whose accept queue is full, so the kernel drops new SYNs.
/// Returns the listener, the connections that fill it, and whether a probe
/// connect indeed hung (SYN dropped).
async fn blackhole_listener() -> (socket2::Socket, SocketAddr, Vec<TcpStream>, bool) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    sock.bind(&bind.into()).expect("bind");
    sock.listen(0).expect("listen backlog 0");
    let addr = sock
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet addr");
    // With backlog 0 the accept queue holds one connection; fill it.
    let first = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .expect("first connection to a fresh listener completes")
        .expect("first connection accepted into the queue");
    let mut fillers = vec![first];
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            // The queue is full and the SYN vanished: exactly what we want.
            Err(_) => return (sock, addr, fillers, true),
            // RST on overflow (tcp_abort_on_overflow): no black hole here.
            Ok(Err(_)) => return (sock, addr, fillers, false),
        }
    }
    (sock, addr, fillers, false)
}

#[tokio::test]
async fn connection_timeout_is_504() {
    bounded(async {
        let (_listener, addr, _fillers, blackholed) = blackhole_listener().await;
        let proxy = start_proxy(&format!(
            "{ALLOW_LOOPBACK}\n[limits]\nconnect_timeout_ms = 500\n"
        ))
        .await;
        // Linux drops SYNs to a listener whose accept queue is full
        // (tcp_abort_on_overflow = 0, the default): the precondition of this
        // test. Without it the timeout path cannot be provoked, and that is a
        // failure, not a pass.
        assert!(
            blackholed,
            "precondition: a loopback listener with a full accept queue must drop SYNs \
             (net.ipv4.tcp_abort_on_overflow = 0); here a connect was answered"
        );
        let started = std::time::Instant::now();
        let (head, _s) = connect_h1(proxy.plain, &addr.to_string()).await;
        head.assert_error(
            504,
            "connection_timeout",
            "CONNECT to a listener that drops SYNs",
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "connect_timeout_ms = 500 should bound the wait, took {:?}",
            started.elapsed()
        );
    })
    .await
}

/// Raw malformed CONNECT requests; each must get a 400.
#[tokio::test]
async fn malformed_connect_is_400() {
    bounded(async {
        let dns = FakeDns::start().await;
        let echo = EchoServer::start().await;
        let proxy = proxy_with_dns(&dns).await;
        let e = format!("127.0.0.1:{}", echo.port());
        let cases: Vec<(&str, String)> = vec![
            (
                "missing port",
                "CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n".into(),
            ),
            (
                "port 0",
                "CONNECT example.com:0 HTTP/1.1\r\nHost: example.com:0\r\n\r\n".into(),
            ),
            (
                "port 99999",
                "CONNECT example.com:99999 HTTP/1.1\r\nHost: example.com:99999\r\n\r\n".into(),
            ),
            (
                "empty port",
                "CONNECT example.com: HTTP/1.1\r\nHost: example.com:\r\n\r\n".into(),
            ),
            (
                "bad host (empty label)",
                "CONNECT exa_mple..com:443 HTTP/1.1\r\nHost: exa_mple..com:443\r\n\r\n".into(),
            ),
            (
                "userinfo",
                "CONNECT a@b:443 HTTP/1.1\r\nHost: a@b:443\r\n\r\n".into(),
            ),
            (
                "two Host headers",
                format!("CONNECT {e} HTTP/1.1\r\nHost: {e}\r\nHost: {e}\r\n\r\n"),
            ),
            ("no Host header", format!("CONNECT {e} HTTP/1.1\r\n\r\n")),
        ];
        let mut failures = Vec::new();
        for (what, req) in &cases {
            let mut s = TcpStream::connect(proxy.plain)
                .await
                .expect("connect to proxy");
            tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
                .await
                .expect("send");
            match read_head(&mut s).await {
                Ok((head, _)) => {
                    // README: 400 with `Proxy-Status: bauta;
                    // error=proxy_internal_response`, and every error response
                    // carries Proxy-Status, even one refused before routing.
                    let ps_ok = head.proxy_status().is_some_and(|ps| {
                        ps.strip_prefix("bauta; error=proxy_internal_response")
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with(';'))
                    });
                    if head.status != 400 || !ps_ok {
                        failures.push(format!(
                            "{what}: got {} {:?}",
                            head.status_line,
                            head.proxy_status()
                        ));
                    }
                }
                Err(err) => failures.push(format!("{what}: no response head ({err})")),
            }
        }
        assert!(
            failures.is_empty(),
            "expected 400 with Proxy-Status: bauta; error=proxy_internal_response for each:\n{}",
            failures.join("\n")
        );
        assert_eq!(
            echo.accepted(),
            0,
            "no malformed request reaches the target"
        );
        for (name, _) in dns.queries() {
            assert!(
                !name.contains("example.com") && !name.contains("mple"),
                "a malformed target was resolved: {name}"
            );
        }

        // Refused by the HTTP parser before the proxy's own code sees it:
        // still a 400 (its Proxy-Status is asserted by
        // `requests_the_http_parser_refuses_carry_proxy_status`).
        let (head, _, _) = raw_request(
            proxy.plain,
            b"CONNECT ::1:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
        )
        .await;
        assert_eq!(head.status, 400, "unbracketed IPv6: {head:?}");
        assert_eq!(
            echo.accepted(),
            0,
            "no malformed request reaches the target"
        );
    })
    .await
}

#[tokio::test]
async fn proxy_stays_up_after_errors() {
    bounded(async {
        let dns = FakeDns::start().await;
        let echo = EchoServer::start().await;
        let proxy = start_proxy(&format!(
            "{}\n[policy]\ndefault = \"deny\"\n\n[[policy.rule]]\nname = \"lab\"\naction = \"allow\"\nhosts = [\"*.test\", \"127.0.0.1\"]\ncidrs = [\"127.0.0.0/8\"]\n",
            dns.toml()
        ))
        .await;
        let closed = closed_port();
        let bad: Vec<(String, u16, &str)> = vec![
            (format!("127.0.0.1:{closed}"), 502, "connection_refused"),
            ("missing.test:1".into(), 502, "dns_error"),
            ("slow.test:1".into(), 504, "dns_timeout"),
            ("denied.example:443".into(), 403, "http_request_denied"),
            ("10.0.0.1:80".into(), 403, "http_request_denied"),
            ("example.com".into(), 400, "proxy_internal_response"),
        ];
        for (t, status, token) in &bad {
            let (head, _) = connect_h1(proxy.plain, t).await;
            head.assert_error(*status, token, &format!("CONNECT {t}"));
        }
        // Garbage on a connection, then a connection closed mid-request.
        let (head, _, _) = raw_request(proxy.plain, b"NOT HTTP AT ALL\r\n\r\n").await;
        assert_eq!(head.status, 400, "{head:?}");
        {
            let mut s = TcpStream::connect(proxy.plain).await.expect("connect");
            tokio::io::AsyncWriteExt::write_all(&mut s, b"CONNECT 127.0.0.1:1 HT")
                .await
                .expect("send half a request");
        }
        // Still serving, on both the tunnel and the forward path.
        for _ in 0..2 {
            let (head, mut s) = connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
            assert_eq!(head.status, 200, "{head:?}");
            assert_echo(&mut s, b"still alive").await;
            assert_half_close(&mut s).await;
        }
        let (status, _) = http_get(proxy.admin, "/healthz").await;
        assert_eq!(status, 200);
    })
    .await
}

/// README: a request line HTTP/1.1's parser cannot read gets hyper's own
/// 400 (without Proxy-Status), and the proxy stays up.
#[tokio::test]
async fn requests_the_http_parser_refuses_get_400() {
    bounded(async {
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let cases: [(&str, &[u8]); 2] = [
            ("garbage request line", b"NOT HTTP AT ALL\r\n\r\n"),
            (
                "unbracketed IPv6",
                b"CONNECT ::1:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
            ),
        ];
        for (what, req) in cases {
            let (head, _, _) = raw_request(proxy.plain, req).await;
            assert_eq!(head.status, 400, "{what}: {head:?}");
        }
        let (head, _, _) =
            raw_request(proxy.plain, b"CONNECT bad HTTP/1.1\r\nHost: bad\r\n\r\n").await;
        head.assert_error(400, "proxy_internal_response", "the proxy still answers");
    })
    .await
}

/// The target: requests hyper refuses before the proxy's code sees them
/// still get the README's answer: every error response carries Proxy-Status, and a
/// malformed request is 400 `proxy_internal_response`.
#[tokio::test]
#[ignore = "hyper limitation: 400s produced by hyper's HTTP/1.1 parser (unparseable request line, unbracketed IPv6 CONNECT target) carry no Proxy-Status; the README says so"]
async fn requests_the_http_parser_refuses_carry_proxy_status() {
    bounded(async {
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let cases: [(&str, &[u8]); 2] = [
            ("garbage request line", b"NOT HTTP AT ALL\r\n\r\n"),
            (
                "unbracketed IPv6",
                b"CONNECT ::1:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
            ),
        ];
        for (what, req) in cases {
            let (head, _, _) = raw_request(proxy.plain, req).await;
            head.assert_error(400, "proxy_internal_response", what);
        }
    })
    .await
}

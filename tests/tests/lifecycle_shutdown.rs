//! Graceful shutdown (README: "SIGTERM / Ctrl-C stop accepting and drain open
//! connections and tunnels for `limits.shutdown_grace_s`").
//!
//! The signal tests run the real `bauta` binary (`bauta run --config FILE`)
//! and send it SIGTERM by its pid: new connections are refused, open tunnels
//! keep relaying during the grace period, the process exits 0 as soon as the
//! last tunnel closes, and a tunnel still open when the grace period ends is
//! cut. The in-process tests drive `Running::shutdown()` directly.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bauta_tests::masque::{stream_id, udp_path, H3Client, UdpEcho};
use bauta_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound for one binary test (start-up, grace periods, exits).
const LIMIT: Duration = Duration::from_secs(40);

/// Admin, a plaintext HTTP/1.1 listener "plain", a TLS listener "secure"
/// (HTTP/1.1, HTTP/2, HTTP/3), loopback allowed, and the grace period.
fn config(certs: &Certs, grace_s: u64) -> String {
    format!(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
         [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
         protocols = [\"http1\", \"h2\", \"h3\"]\ntls_cert = '{}'\ntls_key = '{}'\n\n\
         [limits]\nshutdown_grace_s = {grace_s}\n\n{ALLOW_LOOPBACK}",
        certs.cert_pem.display(),
        certs.key_pem.display()
    )
}

async fn start_binary(dir: &TempDir, text: &str) -> BautaProcess {
    let path = dir.write("bauta.toml", text);
    BautaProcess::start(&path).await
}

/// Poll (every 50 ms) until a TCP connect to `addr` is refused; fails after `limit`.
async fn wait_refused(addr: SocketAddr, limit: Duration, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return started.elapsed(),
            other => {
                assert!(
                    started.elapsed() < limit,
                    "{what}: connections to {addr} still not refused {limit:?} after SIGTERM \
                     (last attempt: {other:?})"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Read once: the peer must close `s` (`Ok(0)`, or the error) without
/// sending anything more.
async fn read_until_closed(s: &mut TcpStream) -> std::io::Result<usize> {
    let mut buf = [0u8; 256];
    match s.read(&mut buf).await {
        Ok(0) => Ok(0),
        Ok(n) => panic!(
            "unexpected bytes on the tunnel: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => Err(e),
    }
}

/// The access-log line of the CONNECT tunnel to `target` over `protocol`.
fn is_tunnel_line(v: &serde_json::Value, protocol: &str, target: &str) -> bool {
    v["kind"] == "connect" && v["protocol"] == protocol && v["target"] == target
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_refuses_new_connections_drains_h1_and_h2_tunnels_and_exits_0_when_they_close() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let dir = TempDir::new("shutdown-drain");
        // A grace period far longer than the test: the exit must come from
        // the tunnels closing, not from the grace period running out.
        let grace = Duration::from_secs(30);
        let mut proxy = start_binary(&dir, &config(&certs, grace.as_secs())).await;
        let plain = proxy.listener("plain");
        let secure = proxy.listener("secure");

        // An HTTP/1.1 tunnel, and an HTTP/2 tunnel over TLS.
        let (head, mut t1) = connect_h1(plain, &target).await;
        assert_eq!(head.status, 200, "HTTP/1.1 CONNECT: {head:?}");
        assert_echo(&mut t1, b"h1 before SIGTERM").await;
        let tls = tls_connect(secure, &certs, &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        let h2 = h2_client(tls).await;
        let (parts, t2) = h2_connect(&h2, &target).await;
        assert_eq!(parts.status, 200, "HTTP/2 CONNECT: {parts:?}");
        let mut t2 = t2.expect("HTTP/2 tunnel");
        t2.assert_echo(b"h2 before SIGTERM").await;
        // And an idle keep-alive HTTP/1.1 connection with no request in
        // flight: one forwarded request served on it before the signal.
        let origin = Origin::start().await;
        let mut idle = TcpStream::connect(plain).await.expect("idle connection");
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url("/before"),
            origin.addr
        );
        idle.write_all(req.as_bytes()).await.expect("send");
        let (h, leftover) = read_head(&mut idle)
            .await
            .expect("answer on the idle connection");
        assert_eq!(h.status, 200, "forwarded GET: {h:?}");
        assert_eq!(h.header("connection"), None, "kept alive: {h:?}");
        let body = read_body(&mut idle, &h, leftover).await;
        assert_eq!(body, b"origin: GET /before\n");

        let sigterm = Instant::now();
        proxy.signal("TERM");

        // (a) New connections are refused soon after, on both listeners.
        wait_refused(plain, Duration::from_secs(3), "plain").await;
        wait_refused(secure, Duration::from_secs(3), "secure").await;

        // The idle connection is closed (nothing in flight to drain).
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
            .await
            .expect("the idle HTTP/1.1 connection is closed within 3 s of SIGTERM");
        assert!(
            matches!(r, Ok(0)),
            "the idle connection is closed cleanly (EOF) after SIGTERM: {r:?}"
        );

        // (b) The open tunnels keep relaying during the grace period.
        for i in 0..5 {
            assert_echo(&mut t1, format!("h1 after SIGTERM #{i}").as_bytes()).await;
            t2.assert_echo(format!("h2 after SIGTERM #{i}").as_bytes())
                .await;
            assert!(
                proxy.try_exit().is_none(),
                "the proxy exited with tunnels open, {:?} after SIGTERM (grace {grace:?})\n{}",
                sigterm.elapsed(),
                proxy.stderr()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // (c) The client closes both tunnels; the process exits 0 right away.
        assert_half_close(&mut t1).await;
        drop(t1);
        t2.assert_half_close().await;
        drop(t2);
        drop(h2);
        let closed = Instant::now();
        let status = proxy
            .wait_exit(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "the proxy did not exit within 5 s of its last tunnel closing \
                     (SIGTERM {:?} ago, grace {grace:?})\n{}",
                    sigterm.elapsed(),
                    proxy.stderr()
                )
            });
        assert_eq!(status.code(), Some(0), "exit status\n{}", proxy.stderr());
        assert!(
            sigterm.elapsed() < grace,
            "exited only after the grace period ({:?})",
            sigterm.elapsed()
        );
        eprintln!(
            "exited {:?} after the last tunnel closed, {:?} after SIGTERM",
            closed.elapsed(),
            sigterm.elapsed()
        );

        // Both tunnels were logged as closed by the client, not cut.
        for protocol in ["http1", "h2"] {
            let line = proxy
                .wait_access_log(Duration::from_secs(1), protocol, |v| {
                    is_tunnel_line(v, protocol, &target)
                })
                .await;
            assert_eq!(line["status"], 200, "{protocol}: {line}");
            assert_eq!(line["outcome"], "closed", "{protocol} tunnel: {line}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cuts_a_tunnel_still_open_when_the_grace_period_ends_and_exits_0() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let dir = TempDir::new("shutdown-cut");
        let grace = Duration::from_secs(2);
        let mut proxy = start_binary(&dir, &config(&certs, grace.as_secs())).await;
        let plain = proxy.listener("plain");

        let (head, mut t1) = connect_h1(plain, &target).await;
        assert_eq!(head.status, 200, "HTTP/1.1 CONNECT: {head:?}");
        assert_echo(&mut t1, b"before SIGTERM").await;

        let sigterm = Instant::now();
        proxy.signal("TERM");
        wait_refused(plain, Duration::from_secs(2), "plain").await;

        // Still relaying until shortly before the grace period ends.
        let mut rounds = 0;
        while sigterm.elapsed() < grace - Duration::from_millis(400) {
            assert_echo(&mut t1, format!("during grace #{rounds}").as_bytes()).await;
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert!(rounds >= 5, "only {rounds} echoes during the grace period");
        let last_echo = sigterm.elapsed();

        // Then the proxy cuts it.
        let slack = Duration::from_secs(3);
        let end = tokio::time::timeout(grace + slack, read_until_closed(&mut t1))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the tunnel is still open {:?} after SIGTERM (grace {grace:?})",
                    sigterm.elapsed()
                )
            });
        let cut_at = sigterm.elapsed();
        eprintln!("tunnel cut {cut_at:?} after SIGTERM ({end:?}); last echo at {last_echo:?}");
        assert!(
            matches!(end, Ok(0)),
            "the cut tunnel is closed (EOF): {end:?}"
        );
        assert!(
            cut_at >= grace - Duration::from_millis(400),
            "cut {cut_at:?} after SIGTERM, before the {grace:?} grace period ended"
        );
        assert!(
            cut_at <= grace + slack,
            "cut {cut_at:?} after SIGTERM, grace {grace:?}"
        );

        let status = proxy.wait_exit(grace + slack).await.unwrap_or_else(|| {
            panic!(
                "the proxy still runs {:?} after SIGTERM (grace {grace:?})\n{}",
                sigterm.elapsed(),
                proxy.stderr()
            )
        });
        let exited = sigterm.elapsed();
        assert_eq!(status.code(), Some(0), "exit status\n{}", proxy.stderr());
        assert!(
            exited <= grace + slack,
            "exited {exited:?} after SIGTERM, grace {grace:?}"
        );
        let line = proxy
            .wait_access_log(Duration::from_secs(1), "cut tunnel", |v| {
                is_tunnel_line(v, "http1", &target)
            })
            .await;
        assert_eq!(
            line["outcome"], "shutdown",
            "a tunnel cut at the end of the grace period: {line}"
        );
    })
    .await
}

/// A CONNECT-UDP flow over HTTP/3 (QUIC datagrams) is a tunnel too: it keeps
/// relaying during the grace period, new QUIC connections are refused, and
/// the process exits 0 once the client ends the flow.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_an_h3_connect_udp_flow() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let dir = TempDir::new("shutdown-h3");
        let grace = Duration::from_secs(30);
        let mut proxy = start_binary(&dir, &config(&certs, grace.as_secs())).await;
        let secure = proxy.listener("secure");

        let mut h3 = H3Client::connect(secure, &certs).await;
        let mut flow = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        let sid = stream_id(&flow);
        h3.assert_datagram_echo(sid, b"before SIGTERM").await;

        let sigterm = Instant::now();
        proxy.signal("TERM");
        wait_refused(proxy.listener("plain"), Duration::from_secs(3), "plain").await;

        for i in 0..5 {
            h3.assert_datagram_echo(sid, format!("after SIGTERM #{i}").as_bytes())
                .await;
            assert!(
                proxy.try_exit().is_none(),
                "the proxy exited with an HTTP/3 flow open"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // A new QUIC connection is not served.
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("client endpoint");
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            endpoint
                .connect_with(masque_quic_config(&certs), secure, "localhost")
                .expect("start QUIC connection"),
        )
        .await;
        assert!(
            !matches!(attempt, Ok(Ok(_))),
            "a new QUIC connection was accepted after SIGTERM"
        );

        // The client ends the flow (FIN on the request stream).
        flow.finish().await.expect("finish the CONNECT-UDP stream");
        drop(flow);
        drop(h3);
        let status = proxy
            .wait_exit(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "the proxy did not exit within 5 s of the flow ending\n{}",
                    proxy.stderr()
                )
            });
        assert_eq!(status.code(), Some(0), "exit status\n{}", proxy.stderr());
        assert!(
            sigterm.elapsed() < grace,
            "exited only after the grace period"
        );
    })
    .await
}

fn masque_quic_config(certs: &Certs) -> quinn::ClientConfig {
    bauta_tests::masque::quic_client_config(certs)
}

// === in-process: `Running::shutdown()` ===

#[tokio::test]
async fn graceful_shutdown_with_an_open_idle_tunnel() {
    bounded(async {
        let echo = EchoServer::start().await;
        let proxy = start_proxy(&format!(
            "{ALLOW_LOOPBACK}\n[limits]\nshutdown_grace_s = 1\n"
        ))
        .await;
        let plain = proxy.plain;
        let (head, mut tunnel) = connect_h1(plain, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(head.status, 200, "{head:?}");
        assert_echo(&mut tunnel, b"before shutdown").await;
        // And an idle keep-alive HTTP/1.1 connection with no request in flight.
        let _idle = tokio::net::TcpStream::connect(plain)
            .await
            .expect("idle connection");

        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
            .await
            .expect("shutdown with shutdown_grace_s = 1 completes within 5 s");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "shutdown took {took:?}");

        // No new connections: the listening socket is closed.
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(plain),
        )
        .await
        .expect("a connect attempt to a closed port is answered at once");
        assert!(
            matches!(&attempt, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
            "after shutdown() a new connection is refused: {attempt:?}"
        );
    })
    .await
}

/// After `shutdown()` returns, the grace period is over: a tunnel still open
/// then should have been closed, not left relaying for a stopped proxy.
#[tokio::test]
async fn shutdown_closes_tunnels_left_after_the_grace_period() {
    bounded(async {
        let echo = EchoServer::start().await;
        let proxy = start_proxy(&format!(
            "{ALLOW_LOOPBACK}\n[limits]\nshutdown_grace_s = 1\n"
        ))
        .await;
        let (head, mut tunnel) =
            connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(head.status, 200, "{head:?}");
        assert_echo(&mut tunnel, b"before shutdown").await;
        tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
            .await
            .expect("shutdown completes");
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_secs(2), tunnel.read(&mut buf)).await {
            Ok(Ok(0)) => {}
            Ok(Err(e)) => panic!("the tunnel should be closed (EOF), not reset: {e}"),
            Ok(Ok(n)) => panic!(
                "unexpected bytes on the tunnel after shutdown: {:?}",
                &buf[..n]
            ),
            Err(_) => {
                // Show that it still relays, for the report.
                let relays = {
                    tokio::io::AsyncWriteExt::write_all(&mut tunnel, b"x")
                        .await
                        .is_ok()
                        && tokio::time::timeout(Duration::from_secs(1), tunnel.read(&mut buf))
                            .await
                            .is_ok_and(|r| r.is_ok_and(|n| n > 0))
                };
                panic!(
                    "the tunnel is still open 2 s after Running::shutdown() returned \
                     (grace 1 s); still relaying bytes: {relays}"
                );
            }
        }
    })
    .await
}

/// Kubernetes' order (README "Drain"): SIGTERM → `/readyz` 503 at once while
/// `/healthz` and `/metrics` keep answering → the listeners keep accepting
/// for `drain_delay_s` (endpoints propagate) → they stop, HTTP/2 gets
/// GOAWAY → open tunnels (one opened during the delay too) keep relaying →
/// exit 0 when they close.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_fails_readiness_first_accepts_for_the_drain_delay_then_goaway_and_exit_0() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let dir = TempDir::new("shutdown-drain-delay");
        let text = config(&certs, 30).replace("[limits]\n", "[limits]\ndrain_delay_s = 2\n");
        let mut proxy = start_binary(&dir, &text).await;
        let plain = proxy.listener("plain");
        let secure = proxy.listener("secure");
        assert_eq!(
            http_get(proxy.admin, "/readyz").await.0,
            200,
            "ready before"
        );
        let (head, mut t1) = connect_h1(plain, &target).await;
        assert_eq!(head.status, 200);
        let tls = tls_connect(secure, &certs, &[b"h2"]).await;
        let h2 = h2_client(tls).await;
        let (parts, _) = h2_connect(&h2, &target).await;
        assert_eq!(parts.status, 200, "HTTP/2 works before SIGTERM");

        proxy.signal("TERM");
        // 1. Readiness fails at once; liveness and metrics keep answering.
        let mut readyz = 0;
        for _ in 0..40 {
            readyz = http_get(proxy.admin, "/readyz").await.0;
            if readyz == 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(readyz, 503, "/readyz after SIGTERM");
        let ready_failed = Instant::now();
        assert_eq!(http_get(proxy.admin, "/healthz").await.0, 200);
        assert_eq!(http_get(proxy.admin, "/metrics").await.0, 200);
        // 2. During the drain delay the listeners still accept: a tunnel
        //    opened now is served.
        let (head, mut t_late) = connect_h1(plain, &target).await;
        assert_eq!(head.status, 200, "a connection during the drain delay");
        assert_echo(&mut t_late, b"opened while draining").await;
        // 3. Then they stop accepting.
        wait_refused(plain, Duration::from_secs(10), "plain").await;
        wait_refused(secure, Duration::from_secs(3), "secure").await;
        assert!(ready_failed.elapsed() > Duration::ZERO);
        assert_eq!(
            http_get(proxy.admin, "/healthz").await.0,
            200,
            "the admin endpoint outlives the listeners"
        );
        // 4. HTTP/2 got GOAWAY: no new stream on the old connection.
        let req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(target.as_str())
            .body(())
            .expect("request");
        let refused = match h2.clone().ready().await {
            Err(e) => e.is_go_away() || e.is_io(),
            Ok(mut c) => match c.send_request(req, false) {
                Err(e) => e.is_go_away() || e.is_io(),
                Ok((resp, _)) => resp.await.is_err(),
            },
        };
        assert!(refused, "a new HTTP/2 stream after GOAWAY must fail");
        // 5. Open tunnels keep relaying, then close: exit 0.
        assert_echo(&mut t1, b"still relaying").await;
        assert_echo(&mut t_late, b"late one too").await;
        assert_half_close(&mut t1).await;
        assert_half_close(&mut t_late).await;
        drop((t1, t_late, h2));
        let status = proxy
            .wait_exit(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no exit after the tunnels closed\n{}", proxy.stderr()));
        assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
        assert!(proxy.stderr().contains("draining: /readyz answers 503"));
    })
    .await
}

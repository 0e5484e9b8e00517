//! Fault injection with real sockets, over QUIC (issue 12, item 4): a target
//! that resets an HTTP/3 CONNECT tunnel, CONNECT-UDP to a port nothing
//! listens on (ICMP port unreachable), a client that vanishes without
//! closing its QUIC connection, and HTTP/3 through a relay that loses,
//! reorders and delays datagrams and drops those above a smaller path MTU.
//! `tc netem` would do the last in a network namespace, but the machine's
//! kernel has no `sch_netem`; the relay (`faults_env::LossyRelay`) stands in.
//! Each runs the real binary and checks the client's answer, that
//! `bauta_tunnels_active` is back to 0 and that the process's descriptors
//! are back to their baseline.

use std::collections::HashMap;
use std::time::Duration;

use bauta_tests::faults_env::*;
use bauta_tests::masque::{
    h3_datagram, quic_client_config, stream_id, udp_path, H3Client, UdpEcho,
};
use bauta_tests::*;

const LIMIT: Duration = Duration::from_secs(30);
/// Bound for a gauge or the descriptor count to come back.
const SETTLE: Duration = Duration::from_secs(8);

async fn start(certs: &Certs, extra: &str) -> (TempDir, BautaProcess, usize) {
    let dir = TempDir::new("faults-quic");
    let path = dir.write("bauta.toml", &config(certs, extra));
    let p = BautaProcess::start(&path).await;
    let _ = p.metrics().await;
    let baseline = held_fds(p.pid, p.admin).await;
    (dir, p, baseline)
}

async fn assert_freed(p: &BautaProcess, baseline: usize, what: &str) {
    wait_no_tunnels(p.admin, "connect", SETTLE, what).await;
    wait_no_tunnels(p.admin, "connect-udp", SETTLE, what).await;
    wait_fds(p.pid, p.admin, baseline, SETTLE, what).await;
}

/// A UDP port on 127.0.0.1 with nothing bound to it (bound, then released).
fn closed_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

#[tokio::test]
async fn h3_connect_target_reset_is_h3_connect_error() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "").await;
        let payload = pattern(256 * 1024, 5);
        let mut target = ResettingTarget::start(payload.clone()).await;
        let (status, mut c) = H3Connect::open(
            p.listener("secure"),
            quic_client_config(&certs),
            &target.addr.to_string(),
        )
        .await;
        assert_eq!(status, 200, "HTTP/3 CONNECT");
        c.write(b"?").await;
        let got = c.reader.read_exact(payload.len()).await;
        assert_same(&got, &payload, "HTTP/3 tunnel before the reset");
        c.write(b"!").await;
        (&mut target.done).await.expect("target reset");
        // RFC 9114 §4.4: a TCP reset is a stream error H3_CONNECT_ERROR.
        let (rest, end) = tokio::time::timeout(SETTLE, c.reader.read_to_end())
            .await
            .expect("the HTTP/3 tunnel ends after the target's reset");
        assert!(rest.is_empty(), "{} bytes after the reset", rest.len());
        assert_eq!(
            end,
            H3End::Reset(0x010f),
            "the stream is reset with H3_CONNECT_ERROR"
        );
        let line = p
            .wait_access_log(SETTLE, "tunnel log line", |v| v["kind"] == "connect")
            .await;
        assert_eq!(line["outcome"], "reset", "access log: {line}");
        c.reader.conn.close(0u32.into(), b"done");
        drop(c);
        assert_freed(&p, baseline, "HTTP/3 tunnel after a target reset").await;
    })
    .await
}

#[tokio::test]
async fn connect_udp_to_an_unreachable_port_survives_icmp_and_is_freed() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "").await;
        let port = closed_udp_port();
        let mut client = H3Client::connect(p.listener("secure"), &certs).await;
        let mut req = client.connect_udp(&udp_path("127.0.0.1", port)).await;
        let sid = stream_id(&req);
        wait_tunnels_for(p.admin, "connect-udp", 1.0, SETTLE, "flow open").await;
        // Each datagram draws an ICMP port unreachable; the flow's socket
        // reports it on its next receive.
        const SENT: usize = 10;
        for i in 0..SENT {
            client.send_datagram(sid, 0, format!("ping {i}").as_bytes());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failed = wait_sample(
            p.admin,
            "bauta_udp_drops_total",
            &[("reason", "send_failed")],
            SETTLE,
            |v| v >= 1.0,
        )
        .await;
        assert!(failed >= Some(1.0), "ICMP errors counted: {failed:?}");
        // Not a spin: at most one error per datagram sent (a few polls later).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let m = p.metrics().await;
        let failed = counter(&m, "bauta_udp_drops_total", &[("reason", "send_failed")]);
        assert!(
            failed <= SENT as f64,
            "{failed} send_failed drops for {SENT} datagrams"
        );
        // Nor dead: the flow is still open and carries datagrams once
        // something listens on the port.
        assert_eq!(
            metric_sample(&m, "bauta_tunnels_active", &[("kind", "connect-udp")]),
            Some(1.0),
            "the flow survives ICMP errors"
        );
        let echo = UdpEcho::start_on(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
        client
            .assert_datagram_echo(sid, b"now someone listens")
            .await;
        assert!(echo.received() >= 1);
        // Closing the request stream ends the flow.
        let _ = req.finish().await;
        drop(req);
        drop(client);
        assert_freed(&p, baseline, "CONNECT-UDP flow to an unreachable port").await;
    })
    .await
}

#[tokio::test]
async fn h3_client_vanishing_is_cut_by_the_quic_idle_timeout() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "client_idle_timeout_s = 2").await;
        let clean = Impairment {
            loss_permille: 0,
            reorder_permille: 0,
            max_delay: Duration::ZERO,
            mtu: 65_535,
        };
        let mut echo = ReportingEcho::start().await;
        let udp_echo = UdpEcho::start().await;
        let tcp_relay = LossyRelay::start(p.listener("secure"), clean).await;
        let udp_relay = LossyRelay::start(p.listener("secure"), clean).await;
        let (status, mut c) = H3Connect::open(
            tcp_relay.addr,
            quic_client_config(&certs),
            &echo.addr.to_string(),
        )
        .await;
        assert_eq!(status, 200, "HTTP/3 CONNECT");
        c.write(b"hello").await;
        assert_eq!(c.reader.read_exact(5).await, b"hello");
        let mut client = H3Client::connect(udp_relay.addr, &certs).await;
        let req = client
            .connect_udp(&udp_path("127.0.0.1", udp_echo.port()))
            .await;
        client.assert_datagram_echo(stream_id(&req), b"hello").await;
        wait_tunnels_for(p.admin, "connect", 1.0, SETTLE, "tunnel open").await;
        wait_tunnels_for(p.admin, "connect-udp", 1.0, SETTLE, "flow open").await;
        // Both clients vanish: no CONNECTION_CLOSE, nothing more arrives.
        tcp_relay.black_hole();
        udp_relay.black_hole();
        drop(c);
        drop(req);
        drop(client);
        assert_freed(&p, baseline, "after the clients vanished").await;
        // RFC 9114 §4.4: the lost stream reaches the target as a TCP reset.
        let end = tokio::time::timeout(SETTLE, &mut echo.end)
            .await
            .expect("the target's connection ends")
            .expect("echo task");
        assert_eq!(end, TcpEnd::Reset, "the target sees a reset");
    })
    .await
}

#[tokio::test]
async fn h3_through_loss_reordering_delay_and_a_small_mtu_keeps_payloads_intact() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "").await;
        let rough = Impairment {
            loss_permille: 50,
            reorder_permille: 30,
            max_delay: Duration::from_millis(5),
            mtu: 1250,
        };

        // 2 MB each way through a CONNECT tunnel to an echo server.
        let echo = EchoServer::start().await;
        let relay = LossyRelay::start(p.listener("secure"), rough).await;
        let (status, mut c) = H3Connect::open(
            relay.addr,
            quic_client_config(&certs),
            &echo.addr.to_string(),
        )
        .await;
        assert_eq!(status, 200, "HTTP/3 CONNECT through the lossy relay");
        let payload = pattern(2 * 1024 * 1024, 6);
        let (_, got) = tokio::join!(
            write_data(&mut c.send, &payload),
            c.reader.read_exact(payload.len())
        );
        assert_same(&got, &payload, "2 MB echoed through HTTP/3 under loss");
        c.finish();
        let (rest, end) = c.reader.read_to_end().await;
        assert_eq!(rest, ECHO_EOF_REPLY, "the echo server saw our FIN");
        assert_eq!(end, H3End::Fin, "the tunnel completes cleanly");
        let s = &relay.stats;
        let lost = s.lost.load(std::sync::atomic::Ordering::Relaxed);
        let reordered = s.reordered.load(std::sync::atomic::Ordering::Relaxed);
        assert!(lost > 0 && reordered > 0, "the relay did its job: {s:?}");

        // Datagrams through CONNECT-UDP: loss may reduce the count, never
        // change a byte.
        let udp_echo = UdpEcho::start().await;
        let relay = LossyRelay::start(p.listener("secure"), rough).await;
        let mut client = H3Client::connect(relay.addr, &certs).await;
        let mut req = client
            .connect_udp(&udp_path("127.0.0.1", udp_echo.port()))
            .await;
        let sid = stream_id(&req);
        const N: usize = 300;
        let mut expected = HashMap::new();
        for i in 0..N {
            let mut body = (i as u32).to_be_bytes().to_vec();
            body.extend(pattern(1 + (i * 37) % 1000, i as u64 + 100));
            let d = h3_datagram(sid, 0, &body);
            expected.insert(i as u32, d.clone());
            client.send_raw_datagram(d);
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut seen = std::collections::HashSet::new();
        while seen.len() < N {
            let Some(d) = client.recv_datagram(Duration::from_secs(1)).await else {
                break;
            };
            // Quarter stream ID and context 0 take 1 + 1 bytes here.
            let id = d
                .get(2..6)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(u32::MAX);
            let want = expected
                .get(&id)
                .unwrap_or_else(|| panic!("a datagram no one sent: {} bytes", d.len()));
            assert_eq!(d.as_ref(), want.as_ref(), "datagram {id} came back changed");
            seen.insert(id);
        }
        assert!(
            seen.len() >= N / 2,
            "{} of {N} datagrams came back through 5% loss each way",
            seen.len()
        );
        // Close the flow while the connection lives: retransmission carries
        // the FIN through the loss.
        req.finish().await.expect("finish the CONNECT-UDP stream");
        wait_no_tunnels(p.admin, "connect-udp", SETTLE, "flow closed").await;
        drop(req);
        drop(client);
        drop(c);
        assert_freed(&p, baseline, "after the lossy transfers").await;
    })
    .await
}

#[tokio::test]
async fn h3_forwarded_response_reset_mid_body_is_a_stream_reset() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "").await;
        let sent = pattern(256 * 1024, 7);
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
        let (origin, go, _t) = resetting_origin(head, sent.clone()).await;
        let mut client = H3Client::connect(p.listener("secure"), &certs).await;
        let req = http::Request::builder()
            .uri(format!("http://{origin}/big"))
            .body(())
            .expect("request");
        let mut stream = client.send.send_request(req).await.expect("send request");
        stream.finish().await.expect("finish the request");
        let resp = stream.recv_response().await.expect("response head");
        assert_eq!(resp.status(), 200, "{resp:?}");
        let mut body = Vec::new();
        let mut go = Some(go);
        let end = loop {
            match stream.recv_data().await {
                Ok(Some(mut d)) => {
                    use bytes::Buf;
                    let n = d.remaining();
                    body.extend_from_slice(&d.copy_to_bytes(n));
                    if body.len() >= sent.len() {
                        if let Some(go) = go.take() {
                            let _ = go.send(());
                        }
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(format!("{e:?}")),
            }
        };
        assert_same(&body, &sent, "HTTP/3 body up to the reset");
        let e = end.expect("a truncated HTTP/3 body must end with a stream reset, not a FIN");
        assert!(
            e.contains("H3_INTERNAL_ERROR") || e.contains("0x102"),
            "reset: {e}"
        );
        drop(stream);
        drop(client);
        wait_fds(
            p.pid,
            p.admin,
            baseline,
            SETTLE,
            "after a truncated HTTP/3 response",
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn h3_connect_target_reset_while_data_flows_is_h3_connect_error() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "").await;
        // Writes as fast as the tunnel takes, resets after 1 MiB: whatever
        // was in flight is lost, so the client gets a prefix.
        let payload = pattern(4 * 1024 * 1024, 8);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind target");
        let target = listener.local_addr().expect("target addr");
        let data = payload.clone();
        let _t = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut go = [0u8; 1];
            if s.read_exact(&mut go).await.is_err() {
                return;
            }
            for chunk in data.chunks(64 * 1024).take(16) {
                if s.write_all(chunk).await.is_err() {
                    return;
                }
            }
            set_reset_on_close(&s);
        });
        let (status, mut c) = H3Connect::open(
            p.listener("secure"),
            quic_client_config(&certs),
            &target.to_string(),
        )
        .await;
        assert_eq!(status, 200, "HTTP/3 CONNECT");
        c.write(b"?").await;
        let (got, end) = tokio::time::timeout(SETTLE, c.reader.read_to_end())
            .await
            .expect("the HTTP/3 tunnel ends after the target's reset");
        assert!(
            got.len() <= 1024 * 1024,
            "{} bytes: more than was sent",
            got.len()
        );
        assert_same(
            &got,
            &payload[..got.len()],
            "what arrived is a prefix of what was sent",
        );
        assert_eq!(
            end,
            H3End::Reset(0x010f),
            "the stream is reset with H3_CONNECT_ERROR"
        );
        c.reader.conn.close(0u32.into(), b"done");
        drop(c);
        assert_freed(&p, baseline, "HTTP/3 tunnel reset while data flowed").await;
    })
    .await
}

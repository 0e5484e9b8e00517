//! Idle timers are reset by traffic (README: `limits.idle_timeout_s`: "a
//! tunnel with no bytes either way is closed"; `connect_udp.idle_timeout_s`:
//! "a UDP flow with no datagram either way is closed").
//!
//! With a 2 s idle timeout, a tunnel or flow with traffic every 0.7 s for
//! three idle periods stays open (every echo arrives), traffic in one
//! direction only keeps it open too, and once it goes quiet it is closed
//! after the idle timeout: not before (the time of the close is recorded),
//! and within a bounded slack. Runs the real binary, whose access log names
//! the end (`outcome: idle_timeout`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bauta_tests::masque::{h3_read_to_end, stream_id, udp_path, H3Client, StreamEnd, UdpEcho};
use bauta_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const LIMIT: Duration = Duration::from_secs(40);
/// The idle timeout configured for tunnels and flows.
const IDLE: Duration = Duration::from_secs(2);
/// Traffic period while "busy".
const PERIOD: Duration = Duration::from_millis(700);
/// How long the busy phase lasts: three idle periods.
const BUSY: Duration = Duration::from_secs(6);
/// A close earlier than IDLE - EARLY after the last byte fails the test.
const EARLY: Duration = Duration::from_millis(250);
/// A close later than IDLE + SLACK after the last byte fails the test.
const SLACK: Duration = Duration::from_secs(2);

fn config(certs: &Certs) -> String {
    format!(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
         [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
         protocols = [\"http1\", \"h2\", \"h3\"]\ntls_cert = '{}'\ntls_key = '{}'\n\n\
         [connect_udp]\nidle_timeout_s = {idle}\n\n\
         [limits]\nidle_timeout_s = {idle}\nshutdown_grace_s = 1\n\n{ALLOW_LOOPBACK}",
        certs.cert_pem.display(),
        certs.key_pem.display(),
        idle = IDLE.as_secs()
    )
}

async fn start(dir: &TempDir, certs: &Certs) -> BautaProcess {
    let path = dir.write("bauta.toml", &config(certs));
    BautaProcess::start(&path).await
}

/// Wait (at most IDLE + SLACK) for the proxy to close `s`, timed from
/// `quiet_since`; asserts the close came no earlier than IDLE - EARLY.
async fn expect_idle_close(s: &mut TcpStream, quiet_since: Instant, what: &str) -> Duration {
    let mut buf = [0u8; 256];
    let end = tokio::time::timeout_at((quiet_since + IDLE + SLACK).into(), async {
        match s.read(&mut buf).await {
            Ok(0) => Ok(()),
            Ok(n) => panic!(
                "{what}: unexpected bytes while quiet: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => Err(e),
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{what}: still open {:?} after going quiet (idle timeout {IDLE:?})",
            quiet_since.elapsed()
        )
    });
    let waited = quiet_since.elapsed();
    eprintln!("{what}: closed {waited:?} after going quiet ({end:?})");
    assert!(
        end.is_ok(),
        "{what}: an idle tunnel is closed (EOF), not reset: {end:?}"
    );
    assert!(
        waited >= IDLE - EARLY,
        "{what}: closed {waited:?} after the last byte, before the {IDLE:?} idle timeout"
    );
    waited
}

/// The access-log line of the tunnel/flow to `target`.
async fn tunnel_line(
    proxy: &BautaProcess,
    kind: &str,
    target: &str,
    what: &str,
) -> serde_json::Value {
    proxy
        .wait_access_log(Duration::from_secs(2), what, |v| {
            v["kind"] == kind && v["target"] == target && v.get("outcome").is_some()
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_tunnel_with_traffic_stays_open_then_idles_out() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let dir = TempDir::new("idle-tcp");
        let proxy = start(&dir, &certs).await;
        let (head, mut t) = connect_h1(proxy.listener("plain"), &target).await;
        assert_eq!(head.status, 200, "{head:?}");

        let busy_from = Instant::now();
        let mut sent = 0usize;
        let mut i = 0;
        while busy_from.elapsed() < BUSY {
            let msg = format!("tick {i}");
            assert_echo(&mut t, msg.as_bytes()).await;
            sent += msg.len();
            i += 1;
            tokio::time::sleep(PERIOD).await;
        }
        // One more echo at the end proves it survived 3 idle periods.
        assert_echo(&mut t, b"last").await;
        sent += 4;
        let quiet_since = Instant::now();
        eprintln!("{i} echoes over {:?}", busy_from.elapsed());

        expect_idle_close(&mut t, quiet_since, "HTTP/1.1 tunnel").await;
        let line = tunnel_line(&proxy, "connect", &target, "idle tunnel").await;
        assert_eq!(line["outcome"], "idle_timeout", "{line}");
        assert_eq!(line["bytes_up"], sent, "{line}");
        assert_eq!(line["bytes_down"], sent, "{line}");
        let active = wait_sample(
            proxy.admin,
            "bauta_tunnels_active",
            &[("kind", "connect")],
            Duration::from_secs(2),
            |v| v == 0.0,
        )
        .await;
        assert_eq!(active, Some(0.0), "tunnels_active{{kind=connect}}");
    })
    .await
}

/// A target that accepts one connection and hands it to the test (which then
/// decides what it reads and writes).
async fn one_shot_target() -> (SocketAddr, tokio::task::JoinHandle<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let addr = l.local_addr().expect("target addr");
    let task = tokio::spawn(async move { l.accept().await.expect("accept").0 });
    (addr, task)
}

/// Bytes in one direction only count as activity: client → target only,
/// then target → client only, each for three idle periods.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_tunnel_with_one_way_traffic_stays_open() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (addr, accepted) = one_shot_target().await;
        let target = addr.to_string();
        let dir = TempDir::new("idle-tcp-oneway");
        let proxy = start(&dir, &certs).await;
        let (head, mut t) = connect_h1(proxy.listener("plain"), &target).await;
        assert_eq!(head.status, 200, "{head:?}");
        let mut far = accepted.await.expect("target accepted");

        // Client → target only.
        let from = Instant::now();
        let mut buf = [0u8; 64];
        while from.elapsed() < BUSY {
            t.write_all(b"up").await.expect("write upstream");
            let n = tokio::time::timeout(Duration::from_secs(2), far.read_exact(&mut buf[..2]))
                .await
                .expect("the target receives the client's bytes within 2 s")
                .expect("read at the target");
            assert_eq!(&buf[..n], b"up");
            tokio::time::sleep(PERIOD).await;
        }
        // Target → client only.
        let from = Instant::now();
        while from.elapsed() < BUSY {
            far.write_all(b"down").await.expect("write downstream");
            tokio::time::timeout(Duration::from_secs(2), t.read_exact(&mut buf[..4]))
                .await
                .expect("the client receives the target's bytes within 2 s")
                .expect("read at the client");
            assert_eq!(&buf[..4], b"down");
            tokio::time::sleep(PERIOD).await;
        }
        // Still open both ways after 4 idle periods of one-way traffic.
        t.write_all(b"ping").await.expect("write");
        tokio::time::timeout(Duration::from_secs(2), far.read_exact(&mut buf[..4]))
            .await
            .expect("the tunnel is still open upstream")
            .expect("read at the target");
        assert_eq!(&buf[..4], b"ping");
        let quiet_since = Instant::now();
        expect_idle_close(&mut t, quiet_since, "one-way tunnel").await;
        let line = tunnel_line(&proxy, "connect", &target, "one-way tunnel").await;
        assert_eq!(line["outcome"], "idle_timeout", "{line}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn h3_udp_flow_with_traffic_stays_open_then_idles_out() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let target = format!("127.0.0.1:{}", udp.port());
        let dir = TempDir::new("idle-udp");
        let proxy = start(&dir, &certs).await;
        let mut h3 = H3Client::connect(proxy.listener("secure"), &certs).await;
        let mut s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        let sid = stream_id(&s);

        let busy_from = Instant::now();
        let mut i = 0;
        while busy_from.elapsed() < BUSY {
            h3.assert_datagram_echo(sid, format!("tick {i}").as_bytes())
                .await;
            i += 1;
            tokio::time::sleep(PERIOD).await;
        }
        h3.assert_datagram_echo(sid, b"last").await;
        let quiet_since = Instant::now();
        eprintln!("{i} datagram echoes over {:?}", busy_from.elapsed());
        assert_eq!(udp.received(), i + 1, "datagrams at the target");

        let (_, end) =
            tokio::time::timeout_at((quiet_since + IDLE + SLACK).into(), h3_read_to_end(&mut s))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the flow is still open {:?} after going quiet (idle {IDLE:?})",
                        quiet_since.elapsed()
                    )
                });
        let waited = quiet_since.elapsed();
        eprintln!("flow ended {waited:?} after going quiet: {end:?}");
        assert!(
            matches!(end, StreamEnd::Finished),
            "an idle flow is finished (FIN), not reset: {end:?}"
        );
        assert!(
            waited >= IDLE - EARLY,
            "the flow ended {waited:?} after the last datagram, before the {IDLE:?} idle timeout"
        );
        let line = tunnel_line(&proxy, "connect-udp", &target, "idle flow").await;
        assert_eq!(line["outcome"], "idle_timeout", "{line}");
        let active = wait_sample(
            proxy.admin,
            "bauta_tunnels_active",
            &[("kind", "connect-udp")],
            Duration::from_secs(2),
            |v| v == 0.0,
        )
        .await;
        assert_eq!(active, Some(0.0), "tunnels_active{{kind=connect-udp}}");
    })
    .await
}

/// Datagrams in one direction only keep a flow open: client → target only
/// (a target that never answers), then target → client only.
#[tokio::test(flavor = "multi_thread")]
async fn h3_udp_flow_with_one_way_traffic_stays_open() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let sink = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind UDP target");
        let port = sink.local_addr().expect("addr").port();
        let target = format!("127.0.0.1:{port}");
        let dir = TempDir::new("idle-udp-oneway");
        let proxy = start(&dir, &certs).await;
        let h3 = {
            let mut h3 = H3Client::connect(proxy.listener("secure"), &certs).await;
            let s = h3.connect_udp(&udp_path("127.0.0.1", port)).await;
            (h3, s)
        };
        let (h3, mut s) = h3;
        let sid = stream_id(&s);

        // Client → target only.
        let mut buf = [0u8; 1500];
        let mut flow_addr = None;
        let from = Instant::now();
        while from.elapsed() < BUSY {
            h3.send_datagram(sid, 0, b"up");
            let (n, peer) = tokio::time::timeout(Duration::from_secs(2), sink.recv_from(&mut buf))
                .await
                .expect("the target receives the client's datagram within 2 s")
                .expect("recv at the target");
            assert_eq!(&buf[..n], b"up");
            flow_addr = Some(peer);
            tokio::time::sleep(PERIOD).await;
        }
        let flow_addr = flow_addr.expect("the flow's source address");
        // Target → client only.
        let mut last_traffic = Instant::now();
        let from = Instant::now();
        while from.elapsed() < BUSY {
            sink.send_to(b"down", flow_addr)
                .await
                .expect("send downstream");
            let got = h3
                .recv_datagram(Duration::from_secs(2))
                .await
                .expect("the client receives the target's datagram within 2 s");
            assert_eq!(
                got.as_ref(),
                bauta_tests::masque::h3_datagram(sid, 0, b"down").as_ref()
            );
            last_traffic = Instant::now();
            tokio::time::sleep(PERIOD).await;
        }
        // Quiet since the last datagram arrived.
        let quiet_since = last_traffic;
        let (_, end) =
            tokio::time::timeout_at((quiet_since + IDLE + SLACK).into(), h3_read_to_end(&mut s))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the flow is still open {:?} after going quiet",
                        quiet_since.elapsed()
                    )
                });
        let waited = quiet_since.elapsed();
        assert!(matches!(end, StreamEnd::Finished), "{end:?}");
        assert!(
            waited >= IDLE - EARLY,
            "the flow ended {waited:?} after the last datagram, before the {IDLE:?} idle timeout"
        );
        let line = tunnel_line(&proxy, "connect-udp", &target, "one-way flow").await;
        assert_eq!(line["outcome"], "idle_timeout", "{line}");
    })
    .await
}

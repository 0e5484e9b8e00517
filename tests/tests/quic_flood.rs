//! QUIC under a flood of Initials (README: "HTTP/3 and CONNECT-UDP",
//! `[limits] quic_retry_after_handshakes`, `quic_max_handshakes`; metrics
//! `bauta_quic_retries_total`, `bauta_quic_handshakes`,
//! `bauta_connections_refused_total{reason="quic_handshakes"}`).
//!
//! The flood is made of real client Initials (quinn-proto's client, one
//! 1200-byte datagram each, a fresh random connection ID each) sent from one
//! UDP socket and never completed; the answers are ignored.
//!
//! * Under a flood the handshakes in progress stay at the Retry threshold
//!   (every further attempt gets a stateless Retry), the process's RSS
//!   stays within a bound, and real HTTP/3 clients (quinn + h3, and the
//!   independent aioquic peer) still connect and tunnel during and after it.
//! * With the threshold at 0 (always Retry) real clients follow the Retry
//!   and are served, one Retry each; random UDP garbage gets no Retry.
//! * Over `quic_max_handshakes` attempts are dropped unanswered and counted;
//!   once the stuck handshakes time out, a real client is served again.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bauta_tests::faults_env::rss_kib;
use bauta_tests::masque::*;
use bauta_tests::*;

/// The Retry threshold of the flood test: handshakes in progress never
/// exceed it by more than the real clients handshaking at that moment.
const RETRY_AFTER: usize = 16;
/// Real clients that may be handshaking at once in the flood test (the quinn
/// client and the aioquic peer run one after the other; one spare).
const REAL_AT_ONCE: usize = 2;
/// Initials in the big flood.
const FLOOD: usize = 20_000;
/// How much the proxy's RSS may grow over the flood (MiB). Measured on a
/// debug build: about 3 MiB with Retry; without it (every Initial accepted
/// as a handshake with its own server config, one source address and the
/// per-client cap raised as spoofed addresses would make it) about 29 → 124 MiB,
/// and a real client's tunnel timed out during the flood.
const RSS_GROWTH_MIB: u64 = 32;

// === the flood ===

/// Makes real QUIC client Initials for `target`, each of a new connection
/// with a random destination connection ID; none is ever completed.
struct Initials {
    endpoint: quinn_proto::Endpoint,
    config: quinn_proto::ClientConfig,
    target: SocketAddr,
    made: usize,
}

impl Initials {
    fn new(target: SocketAddr) -> Initials {
        // X25519 only: the ClientHello fits one Initial datagram.
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
            .expect("QUIC client TLS");
        Initials {
            endpoint: Initials::endpoint(),
            config: quinn_proto::ClientConfig::new(Arc::new(crypto)),
            target,
            made: 0,
        }
    }

    fn endpoint() -> quinn_proto::Endpoint {
        quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            false,
            None,
        )
    }

    /// The first datagram of a new connection.
    fn next(&mut self) -> Vec<u8> {
        // The client endpoint remembers each connection; start afresh now
        // and then.
        self.made += 1;
        if self.made % 1000 == 0 {
            self.endpoint = Initials::endpoint();
        }
        let now = Instant::now();
        let (_, mut conn) = self
            .endpoint
            .connect(now, self.config.clone(), self.target, "localhost")
            .expect("start a QUIC connection");
        let mut buf = Vec::with_capacity(1500);
        let t = conn.poll_transmit(now, 1, &mut buf).expect("an Initial");
        buf.truncate(t.size);
        buf
    }
}

/// Send `count` Initials to `target` from one socket, as fast as they are
/// made, on a thread of its own (until `stop`); returns how many were sent.
async fn flood(target: SocketAddr, count: usize, stop: Arc<AtomicBool>) -> usize {
    tokio::task::spawn_blocking(move || {
        let socket = StdUdpSocket::bind("127.0.0.1:0").expect("bind the flood socket");
        let mut initials = Initials::new(target);
        let mut sent = 0;
        while sent < count && !stop.load(Ordering::Relaxed) {
            let d = initials.next();
            assert_eq!(d.len(), 1200, "a padded client Initial");
            // A full socket buffer may refuse one; the flood goes on.
            if socket.send_to(&d, target).is_ok() {
                sent += 1;
            }
        }
        sent
    })
    .await
    .expect("flood thread")
}

/// `name{listener="secure"}`, 0 when absent.
fn secure(text: &str, name: &str) -> f64 {
    metric_sample(text, name, &[("listener", "secure")]).unwrap_or(0.0)
}

fn handshakes_full(text: &str) -> f64 {
    metric_sample(
        text,
        "bauta_connections_refused_total",
        &[("listener", "secure"), ("reason", "quic_handshakes")],
    )
    .unwrap_or(0.0)
}

/// A real quinn + h3 client: handshake (following a Retry if one comes),
/// then CONNECT-UDP and one datagram echoed.
async fn real_h3_client(proxy: SocketAddr, certs: &Certs, udp: &UdpEcho, what: &str) {
    let mut h3 = H3Client::connect(proxy, certs).await;
    let s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
    h3.assert_datagram_echo(stream_id(&s), what.as_bytes())
        .await;
}

/// The aioquic peer: handshake, then a TCP CONNECT echoed by `echo`.
async fn real_aioquic_connect(proxy: SocketAddr, certs: &Certs, echo: &EchoServer, what: &str) {
    let port = echo.port().to_string();
    let run = run_masque_client(
        proxy,
        certs,
        "connect",
        &["--target-host", "127.0.0.1", "--target-port", &port],
    )
    .await;
    assert_eq!(run.str("status"), Some("200"), "{what}: {run:?}");
    const MSG: &str = "hello over h3 connect";
    let got = run.str("echo").unwrap_or_default();
    assert!(
        got == MSG || got == format!("{MSG}{}", String::from_utf8_lossy(ECHO_EOF_REPLY)),
        "{what}: bytes echoed through the HTTP/3 tunnel: {got:?}; {run:?}"
    );
}

fn flood_config(certs: &Certs, limits: &str) -> String {
    format!(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
         protocols = [\"http1\", \"h2\", \"h3\"]\ntls_cert = '{}'\ntls_key = '{}'\n\n\
         [limits]\nshutdown_grace_s = 1\n{limits}\n\n{ALLOW_LOOPBACK_V4_V6}",
        certs.cert_pem.display(),
        certs.key_pem.display()
    )
}

// === the tests ===

#[tokio::test]
async fn initial_flood_gets_retry_and_real_clients_still_connect() {
    bounded_for(Duration::from_secs(120), async {
        let certs = make_certs();
        let dir = TempDir::new("quic-flood");
        // One source address for the whole flood: the per-client cap is
        // raised, as spoofed source addresses would make it useless.
        let path = dir.write(
            "bauta.toml",
            &flood_config(
                &certs,
                &format!(
                    "quic_retry_after_handshakes = {RETRY_AFTER}\nquic_max_handshakes = 256\n\
                     max_connections_per_client = 100000"
                ),
            ),
        );
        let proxy = BautaProcess::start(&path).await;
        let target = proxy.listener("secure");
        let echo = EchoServer::start().await;
        let udp = UdpEcho::start().await;
        // Settle, then the baseline.
        real_h3_client(target, &certs, &udp, "before the flood").await;
        let baseline = rss_kib(proxy.pid);

        let stop = Arc::new(AtomicBool::new(false));
        let flooding = tokio::spawn(flood(target, FLOOD, Arc::clone(&stop)));
        // Watch the handshakes in progress and the RSS until the flood ends.
        let watching = {
            let admin = proxy.admin;
            let pid = proxy.pid;
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut most_handshakes, mut most_rss) = (0f64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let text = fetch_metrics(admin).await;
                    most_handshakes = most_handshakes.max(secure(&text, "bauta_quic_handshakes"));
                    most_rss = most_rss.max(rss_kib(pid));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (most_handshakes, most_rss)
            })
        };
        // Retry is in use…
        let retries = wait_sample(
            proxy.admin,
            "bauta_quic_retries_total",
            &[("listener", "secure")],
            Duration::from_secs(30),
            |v| v > 0.0,
        )
        .await;
        assert!(
            retries.is_some_and(|v| v > 0.0),
            "no Retry sent under the flood: {retries:?}\n{}",
            proxy.metrics().await
        );
        // …and real clients, both stacks, get through during the flood.
        real_h3_client(target, &certs, &udp, "during the flood").await;
        real_aioquic_connect(target, &certs, &echo, "aioquic during the flood").await;
        let sent = flooding.await.expect("flood task");
        stop.store(true, Ordering::Relaxed);
        let (most_handshakes, most_rss) = watching.await.expect("watch task");
        let most_rss = most_rss.max(rss_kib(proxy.pid));

        let text = proxy.metrics().await;
        let retries = secure(&text, "bauta_quic_retries_total");
        let established = metric_sample(
            &text,
            "bauta_connections_total",
            &[("listener", "secure"), ("protocol", "h3")],
        )
        .unwrap_or(0.0);
        eprintln!(
            "flood: {sent} Initials sent; {retries} Retries; at most {most_handshakes} \
             handshakes in progress; {established} HTTP/3 connections; RSS {baseline} KiB \
             before, at most {most_rss} KiB during"
        );
        assert_eq!(sent, FLOOD, "the whole flood was sent");
        assert!(retries >= 1.0, "{text}");
        assert!(
            most_handshakes <= (RETRY_AFTER + REAL_AT_ONCE) as f64,
            "handshakes in progress under the flood: {most_handshakes} (Retry from {RETRY_AFTER})"
        );
        assert!(
            (1.0..=(RETRY_AFTER + REAL_AT_ONCE) as f64)
                .contains(&secure(&text, "bauta_quic_handshakes")),
            "{text}"
        );
        assert_eq!(handshakes_full(&text), 0.0, "under the hard cap: {text}");
        // Only the real clients' connections were established.
        assert_eq!(established, 3.0, "{text}");
        assert!(
            most_rss <= baseline + RSS_GROWTH_MIB * 1024,
            "RSS grew from {baseline} KiB to {most_rss} KiB under the flood \
             (bound: {RSS_GROWTH_MIB} MiB)"
        );

        // After the flood: still served.
        real_h3_client(target, &certs, &udp, "after the flood").await;
        real_aioquic_connect(target, &certs, &echo, "aioquic after the flood").await;
        assert_eq!(
            echo.accepted(),
            2,
            "two TCP tunnels reached the echo server"
        );
    })
    .await;
}

#[tokio::test]
async fn always_retry_real_clients_follow_it_and_garbage_gets_none() {
    bounded_for(Duration::from_secs(60), async {
        let certs = make_certs();
        let proxy = start_masque_proxy(
            &certs,
            &format!("[limits]\nquic_retry_after_handshakes = 0\n\n{ALLOW_LOOPBACK_V4_V6}"),
        )
        .await;
        let echo = EchoServer::start().await;
        let udp = UdpEcho::start().await;
        let retries = |text: &str| secure(text, "bauta_quic_retries_total");

        // Random UDP garbage (some shaped like long-header packets): no
        // Retry, no handshake; the listener goes on serving.
        let garbage = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..3000usize {
            let mut d = vec![0u8; 1 + i % 1400];
            for b in d.iter_mut() {
                // xorshift64
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            if i % 3 == 0 {
                d[0] |= 0xc0;
            }
            garbage.send_to(&d, proxy.secure).await.expect("send");
        }
        let text = proxy.metrics().await;
        assert_eq!(retries(&text), 0.0, "{text}");

        real_h3_client(proxy.secure, &certs, &udp, "quinn after a Retry").await;
        let text = proxy.metrics().await;
        assert_eq!(
            retries(&text),
            1.0,
            "one Retry for the quinn client: {text}"
        );
        real_aioquic_connect(proxy.secure, &certs, &echo, "aioquic after a Retry").await;
        let text = proxy.metrics().await;
        assert_eq!(retries(&text), 2.0, "one Retry for aioquic: {text}");
        assert_eq!(
            metric_sample(
                &text,
                "bauta_connections_total",
                &[("listener", "secure"), ("protocol", "h3")]
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(handshakes_full(&text), 0.0, "{text}");
        assert_eq!(secure(&text, "bauta_quic_handshakes"), 0.0, "{text}");
        proxy.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn over_the_handshake_cap_attempts_are_dropped_and_counted() {
    const CAP: usize = 8;
    const SENT: usize = 300;
    bounded_for(Duration::from_secs(60), async {
        let certs = make_certs();
        // Retry never (threshold = cap): the hard cap alone.
        let proxy = start_masque_proxy(
            &certs,
            &format!(
                "[limits]\nquic_retry_after_handshakes = {CAP}\nquic_max_handshakes = {CAP}\n\n\
                 {ALLOW_LOOPBACK_V4_V6}"
            ),
        )
        .await;
        let udp = UdpEcho::start().await;
        let sent = flood(proxy.secure, SENT, Arc::new(AtomicBool::new(false))).await;
        assert_eq!(sent, SENT);
        let dropped = wait_sample(
            proxy.admin,
            "bauta_connections_refused_total",
            &[("listener", "secure"), ("reason", "quic_handshakes")],
            Duration::from_secs(10),
            |v| v > 0.0,
        )
        .await
        .unwrap_or(0.0);
        let text = proxy.metrics().await;
        assert!(
            dropped > 0.0 && dropped <= (SENT - CAP) as f64,
            "attempts over the cap of {CAP}: {dropped} dropped of {SENT}\n{text}"
        );
        assert_eq!(
            secure(&text, "bauta_quic_handshakes"),
            CAP as f64,
            "the stuck handshakes fill the cap: {text}"
        );
        assert_eq!(secure(&text, "bauta_quic_retries_total"), 0.0, "{text}");
        // A real client is let in once the stuck handshakes time out (10 s).
        real_h3_client(proxy.secure, &certs, &udp, "after the cap frees").await;
        proxy.shutdown().await;
    })
    .await;
}

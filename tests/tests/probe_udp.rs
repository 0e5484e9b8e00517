//! `bauta probe` (the real binary) through a proxy with an HTTP/3 listener:
//! `--connect-udp` over HTTP/3 datagrams and over HTTP/2 capsules to a
//! loopback UDP echo (every datagram back, RTTs reported), a denied target
//! (exit 4, status and Proxy-Status shown), DNS queries to a DNS server
//! (its answers timed as echoes), a target that never answers
//! (100% loss, exit 4), `--h3 --connect` to a TCP echo (status and setup
//! time), and the usage errors. Everything on 127.0.0.1; every run of the
//! probe is bounded.

use std::process::Stdio;
use std::time::Duration;

use bauta_tests::masque::*;
use bauta_tests::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// What one run of `bauta probe` printed and returned.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "probe --json: {e}\nstdout: {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

/// `bauta probe https://127.0.0.1:PORT --ca CA ARGS…` against `proxy`.
async fn probe(proxy: &MasqueProxy, certs: &Certs, args: &[&str]) -> Run {
    let url = format!("https://{}", proxy.secure_authority());
    let mut cmd = tokio::process::Command::new(bauta_bin());
    cmd.arg("probe")
        .arg(&url)
        .arg("--ca")
        .arg(&certs.ca_pem)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("bauta probe {args:?} did not finish within {RUN_LIMIT:?}"))
        .expect("run bauta probe");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("bauta probe {args:?}: {run:?}");
    run
}

/// The datagram part of a successful CONNECT-UDP report: `count` sent and
/// echoed, no loss, the round-trip times in order.
fn assert_all_echoed(v: &Value, count: u64, carriage: &str) {
    let udp = &v["udp"];
    assert_eq!(v["connect_status"].as_u64(), Some(200), "{v:#}");
    assert!(v["connect_ms"].as_f64().is_some(), "setup time: {v:#}");
    assert!(
        v.get("proxy_status").is_none(),
        "no Proxy-Status on a 200: {v:#}"
    );
    assert_eq!(udp["carriage"].as_str(), Some(carriage), "{v:#}");
    assert_eq!(udp["sent"].as_u64(), Some(count), "{v:#}");
    assert_eq!(udp["received"].as_u64(), Some(count), "{v:#}");
    assert_eq!(udp["unexpected"].as_u64(), Some(0), "{v:#}");
    assert_eq!(udp["loss_percent"].as_f64(), Some(0.0), "{v:#}");
    let rtt: Vec<f64> = ["min", "p50", "p99", "max"]
        .iter()
        .map(|k| {
            udp["rtt_ms"][k]
                .as_f64()
                .unwrap_or_else(|| panic!("rtt_ms.{k}: {v:#}"))
        })
        .collect();
    assert!(
        rtt[0] > 0.0 && rtt.windows(2).all(|w| w[0] <= w[1]),
        "min <= p50 <= p99 <= max: {v:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_udp_over_h3_datagrams_echoes_every_datagram() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let target = format!("127.0.0.1:{}", udp.port());
        let run = probe(
            &proxy,
            &certs,
            &[
                "--connect-udp",
                &target,
                "--count",
                "20",
                "--size",
                "100",
                "--interval-ms",
                "5",
                "--json",
            ],
        )
        .await;
        let v = run.json();
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(
            v["protocol"].as_str(),
            Some("h3"),
            "HTTP/3 by default: {v:#}"
        );
        assert_eq!(
            v["udp"]["path"].as_str(),
            Some(udp_path("127.0.0.1", udp.port()).as_str()),
            "the default template: {v:#}"
        );
        assert_eq!(v["udp"]["size"].as_u64(), Some(100), "{v:#}");
        assert_all_echoed(&v, 20, "quic-datagrams");
        assert_eq!(udp.received(), 20, "the target saw each datagram once");

        // The text report says the same.
        let run = probe(
            &proxy,
            &certs,
            &[
                "--connect-udp",
                &target,
                "--count",
                "3",
                "--interval-ms",
                "5",
            ],
        )
        .await;
        assert_eq!(run.code, Some(0), "{run:?}");
        for want in [
            "over h3",
            &format!("CONNECT-UDP {target}"),
            "answered 200",
            "3 sent, 3 received, 0.0% loss",
            "rtt ms: min",
        ] {
            assert!(run.stdout.contains(want), "{want:?} in:\n{}", run.stdout);
        }
        proxy.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_udp_over_h2_capsules_echoes_every_datagram() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let target = format!("127.0.0.1:{}", udp.port());
        let run = probe(
            &proxy,
            &certs,
            &[
                "--connect-udp",
                &target,
                "--h2",
                "--count",
                "10",
                "--interval-ms",
                "5",
                "--json",
            ],
        )
        .await;
        let v = run.json();
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(v["protocol"].as_str(), Some("h2"), "{v:#}");
        assert_all_echoed(&v, 10, "capsules");
        assert_eq!(udp.received(), 10);
        proxy.shutdown().await;
    })
    .await;
}

/// `--payload dns` (the default for port 53): each datagram is a DNS
/// query whose ID is its sequence number, and the DNS server's answers are
/// the echoes — here the tests' own loopback DNS server.
#[tokio::test(flavor = "multi_thread")]
async fn connect_udp_to_a_dns_server_times_its_answers() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let dns = FakeDns::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let target = dns.addr.to_string();
        let run = probe(
            &proxy,
            &certs,
            &[
                "--connect-udp",
                &target,
                "--payload",
                "dns",
                "--count",
                "5",
                "--interval-ms",
                "5",
                "--json",
            ],
        )
        .await;
        let v = run.json();
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(v["udp"]["payload"].as_str(), Some("dns"), "{v:#}");
        assert_all_echoed(&v, 5, "quic-datagrams");
        assert_eq!(
            dns.queries().len(),
            5,
            "five queries reached the DNS server"
        );
        proxy.shutdown().await;
    })
    .await;
}

/// The default deny policy refuses the target: 403 with Proxy-Status, no
/// datagrams, exit 4 — over HTTP/3 and HTTP/2 alike.
#[tokio::test(flavor = "multi_thread")]
async fn denied_connect_udp_exits_4_with_status_and_proxy_status() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, "[policy]\ndefault = \"deny\"\n").await;
        let target = format!("127.0.0.1:{}", udp.port());
        for h2 in [false, true] {
            let mut args = vec!["--connect-udp", target.as_str(), "--count", "3", "--json"];
            if h2 {
                args.push("--h2");
            }
            let run = probe(&proxy, &certs, &args).await;
            let v = run.json();
            assert_eq!(run.code, Some(4), "exit 4 on a refusal (h2: {h2}): {run:?}");
            assert_eq!(v["connect_status"].as_u64(), Some(403), "{v:#}");
            let ps = v["proxy_status"].as_str().unwrap_or_default();
            assert!(
                ps.starts_with("bauta") && ps.contains("error=http_request_denied"),
                "the refusal's Proxy-Status (h2: {h2}): {v:#}"
            );
            assert_eq!(v["udp"]["sent"].as_u64(), Some(0), "{v:#}");
            assert!(v["udp"]["carriage"].is_null(), "{v:#}");

            let text_args: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
            let text = probe(&proxy, &certs, &text_args).await;
            assert_eq!(text.code, Some(4), "{text:?}");
            assert!(
                text.stdout.contains("answered 403")
                    && text
                        .stdout
                        .contains("Proxy-Status: bauta; error=http_request_denied"),
                "the text report shows the refusal:\n{}",
                text.stdout
            );
        }
        assert_eq!(udp.received(), 0, "nothing reached the target");
        proxy.shutdown().await;
    })
    .await;
}

/// A target that reads and never answers: every datagram lost, exit 4.
#[tokio::test(flavor = "multi_thread")]
async fn connect_udp_with_no_echo_reports_full_loss_and_exits_4() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let sink = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind a silent UDP socket");
        let port = sink.local_addr().expect("sink addr").port();
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let target = format!("127.0.0.1:{port}");
        let run = probe(
            &proxy,
            &certs,
            &[
                "--connect-udp",
                &target,
                "--count",
                "3",
                "--interval-ms",
                "5",
                "--wait-ms",
                "300",
                "--json",
            ],
        )
        .await;
        let v = run.json();
        assert_eq!(run.code, Some(4), "{run:?}");
        assert_eq!(v["connect_status"].as_u64(), Some(200), "{v:#}");
        assert_eq!(v["udp"]["sent"].as_u64(), Some(3), "{v:#}");
        assert_eq!(v["udp"]["received"].as_u64(), Some(0), "{v:#}");
        assert_eq!(v["udp"]["loss_percent"].as_f64(), Some(100.0), "{v:#}");
        assert!(v["udp"]["rtt_ms"].is_null(), "{v:#}");
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sink.recv_from(&mut buf))
            .await
            .expect("the target got a datagram")
            .expect("read the sink");
        assert_eq!(n, 64, "a datagram of the default size reached the target");
        proxy.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_over_h3_reports_status_and_setup_time() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let target = format!("127.0.0.1:{}", echo.port());
        let run = probe(&proxy, &certs, &["--h3", "--connect", &target, "--json"]).await;
        let v = run.json();
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(v["protocol"].as_str(), Some("h3"), "{v:#}");
        assert_eq!(v["connect_status"].as_u64(), Some(200), "{v:#}");
        assert!(
            v["connect_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "setup time: {v:#}"
        );
        assert!(v.get("proxy_status").is_none(), "{v:#}");
        assert!(v.get("udp").is_none(), "no udp section for CONNECT: {v:#}");
        assert_eq!(echo.accepted(), 1, "the tunnel reached the TCP echo");
        proxy.shutdown().await;
    })
    .await;
}

/// Conflicting options are usage errors (exit 2), before any connection.
#[test]
fn conflicting_options_are_usage_errors() {
    for (args, says) in [
        (vec!["--h2", "--h3"], "cannot be used with"),
        (
            vec![
                "--connect",
                "a.example:443",
                "--connect-udp",
                "a.example:53",
            ],
            "cannot be used with",
        ),
        (vec!["--count", "3"], "--connect-udp"),
        (
            vec!["--connect-udp", "a.example:53", "--size", "4"],
            "--size",
        ),
    ] {
        let out = run_with_timeout(
            std::process::Command::new(bauta_bin())
                .args(["probe", "https://127.0.0.1:9"])
                .args(&args),
            Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {says:?} in {stderr}");
    }
}

/// Over HTTP/3 the probe waits for the handshake and the proxy's SETTINGS
/// (10 s): against a UDP port where nothing answers it gives up, exits
/// non-zero and says what it waited for.
#[test]
fn probe_h3_against_a_silent_port_says_what_it_waited_for() {
    // Bound and never read: no ICMP error, just silence.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let port = silent.local_addr().expect("its address").port();
    let out = run_with_timeout(
        std::process::Command::new(bauta_bin()).args([
            "probe",
            "--h3",
            &format!("https://127.0.0.1:{port}"),
        ]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no QUIC handshake and HTTP/3 SETTINGS from the proxy within 10 s"),
        "{stderr}"
    );
    drop(silent);
}

//! Prometheus, for real (Debian's `prometheus` package, which `tests/run.sh`
//! installs, brings `promtool`):
//!
//! * `promtool check metrics` finds nothing to say about `/metrics` after
//!   traffic on every front (naming, units, `_total`, HELP);
//! * the shipped rules pass `promtool check rules` and their unit tests
//!   (`promtool test rules`), and the Operator's PrometheusRule carries the
//!   same groups;
//! * a real Prometheus server on loopback scrapes a running Bauta with the
//!   shipped rules loaded: `up == 1`, a counter that moved after traffic, and
//!   the recording rules evaluated on the live series.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bauta_tests::masque::{start_masque_proxy, udp_path, H3Client, UdpEcho, ALLOW_LOOPBACK_V4_V6};
use bauta_tests::*;

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// `promtool` and `prometheus`, or a failure that says how to get them.
fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: install Debian's `prometheus` package (tests/run.sh does)");
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_check_metrics_has_no_findings_after_traffic() {
    bounded_for(Duration::from_secs(60), async {
        let certs = make_certs();
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK_V4_V6).await;
        let echo = EchoServer::start().await;
        let (h, mut t) = connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(h.status, 200);
        assert_echo(&mut t, b"traffic").await;
        let udp = UdpEcho::start().await;
        let mut h3 = H3Client::connect(proxy.secure, &certs).await;
        let flow = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        h3.assert_datagram_echo(bauta_tests::masque::stream_id(&flow), b"datagram")
            .await;
        let (h, _, _) = raw_request(proxy.plain, b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n").await;
        assert_eq!(h.status, 400);
        let text = proxy.metrics().await;
        let dir = TempDir::new("promtool");
        let file = dir.write("metrics.txt", &text);
        let input = std::fs::File::open(&file).expect("open metrics");
        let (ok, out) = run(Command::new(tool("promtool"))
            .args(["check", "metrics"])
            .stdin(Stdio::from(input)));
        assert!(
            ok && out.trim().is_empty(),
            "promtool check metrics:\n{out}"
        );
        drop((t, flow));
        proxy.shutdown().await;
    })
    .await
}

#[test]
fn shipped_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = rules_dir();
    let (ok, out) = run(Command::new(tool("promtool"))
        .args(["check", "rules", "bauta-rules.yaml"])
        .current_dir(&dir));
    assert!(
        ok && out.contains("SUCCESS"),
        "promtool check rules:\n{out}"
    );
    let (ok, out) = run(Command::new(tool("promtool"))
        .args(["test", "rules", "bauta-rules.test.yaml"])
        .current_dir(&dir));
    assert!(ok && out.contains("SUCCESS"), "promtool test rules:\n{out}");
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(dir.join("bauta-rules.yaml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("bauta-rules.test.yaml")).expect("tests");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {a}\n        exp_alerts:\n          - "
            )),
            "{a} has no unit test that fires it"
        );
    }
}

#[test]
fn prometheus_rule_carries_the_same_groups() {
    let dir = rules_dir();
    let rules = std::fs::read_to_string(dir.join("bauta-rules.yaml")).expect("rules");
    let cr = std::fs::read_to_string(dir.join("prometheusrule.yaml")).expect("PrometheusRule");
    assert!(cr.contains("kind: PrometheusRule"), "{cr}");
    let groups = &rules[rules.find("groups:").expect("groups")..];
    let spec = &cr[cr.find("spec:\n").expect("spec") + "spec:\n".len()..];
    let dedented: String = spec
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        dedented.trim_end(),
        groups.trim_end(),
        "prometheusrule.yaml's spec must be bauta-rules.yaml's groups, indented by two"
    );
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrape `target` every second as job "bauta", with the shipped rules
    /// evaluated every second.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.write(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - '{}'\n\
                 scrape_configs:\n  - job_name: bauta\n    static_configs:\n      - targets: ['{target}']\n",
                rules_dir().join("bauta-rules.yaml").display()
            ),
        );
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr")
        };
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The first value of an instant query's result, if any.
    async fn query(&self, promql: &str) -> Option<f64> {
        let mut q = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"_:.".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={q}")).await;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
    }

    /// Poll `promql` (every 250 ms, at most `limit`) until `pred` holds.
    async fn wait(&self, promql: &str, limit: Duration, pred: impl Fn(f64) -> bool) -> Option<f64> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let v = self.query(promql).await;
            if v.is_some_and(&pred) || tokio::time::Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Whether something answers HTTP on `addr`.
async fn answers(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_bauta_and_evaluates_the_rules() {
    bounded_for(Duration::from_secs(90), async {
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let prom = Prometheus::start(proxy.admin);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !answers(prom.addr).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let up = prom
            .wait("up{job=\"bauta\"}", Duration::from_secs(30), |v| v == 1.0)
            .await;
        assert_eq!(up, Some(1.0), "up{{job=\"bauta\"}}");

        let echo = EchoServer::start().await;
        for i in 0..3 {
            let (h, mut t) = connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
            assert_eq!(h.status, 200);
            assert_echo(&mut t, format!("tunnel {i}").as_bytes()).await;
        }
        let ok = prom
            .wait(
                "sum(bauta_requests_total{job=\"bauta\",outcome=\"ok\"})",
                Duration::from_secs(30),
                |v| v >= 3.0,
            )
            .await;
        assert_eq!(ok, Some(3.0), "the counter moved in Prometheus");
        // The recording rules run on the live series.
        let rate = prom
            .wait(
                "sum(bauta:requests:rate5m{job=\"bauta\",outcome=\"ok\"})",
                Duration::from_secs(30),
                |v| v > 0.0,
            )
            .await;
        assert!(
            rate.is_some_and(|v| v > 0.0),
            "bauta:requests:rate5m: {rate:?}"
        );
        // And nothing fires on a healthy proxy.
        assert_eq!(
            prom.query("count(ALERTS{alertstate=\"firing\"})").await,
            None
        );
    })
    .await
}

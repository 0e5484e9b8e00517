//! The figures of one load run, printed as a compact table or as JSON.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::{LoadOptions, Mode};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// p50 / p99 / max of a set of latencies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let at = |q: f64| -> Duration {
            if samples.is_empty() {
                return Duration::ZERO;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        };
        Latency {
            n: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }

    fn text(&self) -> String {
        format!(
            "p50 {}  p99 {}  max {}  (n={})",
            us(self.p50),
            us(self.p99),
            us(self.max),
            self.n
        )
    }

    fn json(&self) -> Value {
        json!({
            "n": self.n,
            "p50_us": self.p50.as_secs_f64() * 1e6,
            "p99_us": self.p99.as_secs_f64() * 1e6,
            "max_us": self.max.as_secs_f64() * 1e6,
        })
    }
}

fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn rate(bytes: f64, secs: f64) -> (f64, f64) {
    let s = secs.max(1e-9);
    (bytes * 8.0 / s / 1e9, bytes / s / MIB)
}

/// N tunnels × B bytes.
#[derive(Clone, Debug, Default)]
pub struct Bulk {
    pub tunnels: usize,
    /// Bytes the sink confirmed (its count matched what was sent).
    pub bytes: u64,
    pub secs: f64,
    /// Tunnels whose count came back right.
    pub counted: usize,
}

/// Open-and-close tunnels for a while.
#[derive(Clone, Debug, Default)]
pub struct Churn {
    pub tunnels: u64,
    pub secs: f64,
}

/// CONNECT-UDP (or plain UDP) datagrams.
#[derive(Clone, Debug, Default)]
pub struct Udp {
    pub flows: usize,
    pub payload: usize,
    pub window: usize,
    pub sent: u64,
    pub echoed: u64,
    pub secs: f64,
    pub rtt: Latency,
}

/// HTTP/1.1 requests.
#[derive(Clone, Debug, Default)]
pub struct Forward {
    pub requests: u64,
    pub body: usize,
    pub secs: f64,
    pub latency: Latency,
}

/// Connection setups with secondary certificates.
#[derive(Clone, Debug, Default)]
pub struct Handshakes {
    pub setups: u64,
    /// SERVER_CERTIFICATE frames received over all setups.
    pub certificates: u64,
    pub origins: usize,
    /// One certificate for every origin.
    pub shared_cert: bool,
    /// Whether the client sent SETTINGS_HTTP_SERVER_CERT_AUTH.
    pub setting: bool,
    pub secs: f64,
    pub latency: Latency,
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    pub mode: Mode,
    pub direct: bool,
    pub proxy: Option<SocketAddr>,
    pub concurrency: usize,
    pub bulk: Option<Bulk>,
    pub setup: Option<Latency>,
    pub churn: Option<Churn>,
    pub rtt: Option<Latency>,
    pub udp: Option<Udp>,
    pub forward: Option<Forward>,
    pub handshakes: Option<Handshakes>,
    /// The proxy's CPU seconds per phase (with `--spawn`).
    pub proxy_cpu: Vec<(&'static str, f64)>,
    /// The proxy's RSS before and after, and its peak, KiB (with `--spawn`).
    pub rss_kib: Option<(u64, u64, u64)>,
    pub failures: u64,
    /// The first few failures, one line each.
    pub failure_lines: Vec<String>,
}

impl Report {
    pub fn new(opts: &LoadOptions, proxy: Option<SocketAddr>) -> Report {
        Report {
            mode: opts.mode,
            direct: opts.direct,
            proxy,
            concurrency: opts.concurrency,
            bulk: None,
            setup: None,
            churn: None,
            rtt: None,
            udp: None,
            forward: None,
            handshakes: None,
            proxy_cpu: Vec::new(),
            rss_kib: None,
            failures: 0,
            failure_lines: Vec::new(),
        }
    }

    pub fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        self.failures += 1;
        if self.failure_lines.len() < 10 {
            self.failure_lines.push(format!("{what}: {e}"));
        }
    }

    pub fn ok(&self) -> bool {
        self.failures == 0
    }

    fn path(&self) -> String {
        match (self.direct, self.proxy) {
            (true, _) => "direct".into(),
            (false, Some(p)) => format!("via bauta {p}"),
            (false, None) => "via bauta".into(),
        }
    }

    fn cpu(&self, phase: &str) -> Option<f64> {
        self.proxy_cpu
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, s)| *s)
    }

    /// The compact table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "load {} {} (concurrency {})\n",
            self.mode.name(),
            self.path(),
            self.concurrency
        );
        if let Some(b) = &self.bulk {
            let (gbit, mib) = rate(b.bytes as f64, b.secs);
            let _ = writeln!(
                s,
                "  bulk      {} tunnels, {:.1} MiB in {:.2} s: {gbit:.2} Gbit/s ({mib:.0} MiB/s); byte counts ok {}/{}",
                b.tunnels,
                b.bytes as f64 / MIB,
                b.secs,
                b.counted,
                b.tunnels
            );
        }
        if let Some(l) = &self.setup {
            let _ = writeln!(s, "  setup     {}", l.text());
        }
        if let Some(c) = &self.churn {
            let _ = writeln!(
                s,
                "  churn     {:.0} new tunnels/s ({} opened and closed in {:.2} s)",
                c.tunnels as f64 / c.secs.max(1e-9),
                c.tunnels,
                c.secs
            );
        }
        if let Some(l) = &self.rtt {
            let _ = writeln!(s, "  rtt 8 B   {}", l.text());
        }
        if let Some(u) = &self.udp {
            let (gbit, mib) = rate((u.echoed * u.payload as u64) as f64, u.secs);
            let loss = 100.0 * u.sent.saturating_sub(u.echoed) as f64 / (u.sent.max(1) as f64);
            let _ = writeln!(
                s,
                "  udp       {} flows x window {}, {} B payloads: {:.0} pkts/s echoed, {gbit:.3} Gbit/s ({mib:.1} MiB/s) one way, loss {loss:.2}% ({} sent, {} back)",
                u.flows,
                u.window,
                u.payload,
                u.echoed as f64 / u.secs.max(1e-9),
                u.sent,
                u.echoed
            );
            let _ = writeln!(s, "  udp rtt   {}", u.rtt.text());
        }
        if let Some(f) = &self.forward {
            let _ = writeln!(
                s,
                "  forward   {:.0} req/s ({} GETs of {} B in {:.2} s); latency {}",
                f.requests as f64 / f.secs.max(1e-9),
                f.requests,
                f.body,
                f.secs,
                f.latency.text()
            );
        }
        if let Some(h) = &self.handshakes {
            let _ = writeln!(
                s,
                "  setups    {:.0}/s ({} in {:.2} s, {} origins eager{}, setting {}, {} certificates); latency {}",
                h.setups as f64 / h.secs.max(1e-9),
                h.setups,
                h.secs,
                h.origins,
                if h.shared_cert { " on one certificate" } else { "" },
                if h.setting { "sent" } else { "not sent" },
                h.certificates,
                h.latency.text()
            );
            if let Some(c) = self.cpu("handshakes") {
                let _ = writeln!(
                    s,
                    "  proxy cpu {:.0} µs per setup",
                    c * 1e6 / h.setups.max(1) as f64
                );
            }
        }
        if !self.proxy_cpu.is_empty() {
            let phases: Vec<String> = self
                .proxy_cpu
                .iter()
                .map(|(p, c)| format!("{p} {c:.2} s"))
                .collect();
            let _ = write!(s, "  proxy cpu {}", phases.join(", "));
            if let (Some(b), Some(c)) = (&self.bulk, self.cpu("bulk")) {
                if b.bytes > 0 {
                    let _ = write!(s, "; {:.2} s/GiB in bulk", c / (b.bytes as f64 / GIB));
                }
            }
            s.push('\n');
        }
        if let Some((before, after, peak)) = self.rss_kib {
            let _ = writeln!(
                s,
                "  proxy rss {:.1} MiB before, {:.1} MiB after, peak {:.1} MiB",
                before as f64 / 1024.0,
                after as f64 / 1024.0,
                peak as f64 / 1024.0
            );
        }
        let _ = write!(s, "  failures  {}", self.failures);
        for l in &self.failure_lines {
            let _ = write!(s, "\n    {l}");
        }
        s
    }

    /// One JSON object.
    pub fn json(&self) -> Value {
        let mut v = json!({
            "mode": self.mode.name(),
            "direct": self.direct,
            "proxy": self.proxy.map(|p| p.to_string()),
            "concurrency": self.concurrency,
            "failures": self.failures,
            "failure_lines": self.failure_lines,
        });
        if let Some(b) = &self.bulk {
            let (gbit, mib) = rate(b.bytes as f64, b.secs);
            v["bulk"] = json!({
                "tunnels": b.tunnels, "bytes": b.bytes, "secs": b.secs, "counted": b.counted,
                "gbit_per_s": gbit, "mib_per_s": mib,
            });
        }
        if let Some(l) = &self.setup {
            v["setup"] = l.json();
        }
        if let Some(c) = &self.churn {
            v["churn"] = json!({
                "tunnels": c.tunnels, "secs": c.secs,
                "tunnels_per_s": c.tunnels as f64 / c.secs.max(1e-9),
            });
        }
        if let Some(l) = &self.rtt {
            v["rtt"] = l.json();
        }
        if let Some(u) = &self.udp {
            let (gbit, mib) = rate((u.echoed * u.payload as u64) as f64, u.secs);
            v["udp"] = json!({
                "flows": u.flows, "window": u.window, "payload": u.payload,
                "sent": u.sent, "echoed": u.echoed, "secs": u.secs,
                "pkts_per_s": u.echoed as f64 / u.secs.max(1e-9),
                "gbit_per_s": gbit, "mib_per_s": mib,
                "loss_pct": 100.0 * u.sent.saturating_sub(u.echoed) as f64 / (u.sent.max(1) as f64),
                "rtt": u.rtt.json(),
            });
        }
        if let Some(f) = &self.forward {
            v["forward"] = json!({
                "requests": f.requests, "body": f.body, "secs": f.secs,
                "req_per_s": f.requests as f64 / f.secs.max(1e-9),
                "latency": f.latency.json(),
            });
        }
        if let Some(h) = &self.handshakes {
            v["handshakes"] = json!({
                "setups": h.setups, "certificates": h.certificates, "origins": h.origins,
                "setting": h.setting, "shared_cert": h.shared_cert, "secs": h.secs,
                "setups_per_s": h.setups as f64 / h.secs.max(1e-9),
                "latency": h.latency.json(),
            });
        }
        if !self.proxy_cpu.is_empty() {
            let mut cpu = serde_json::Map::new();
            for (p, c) in &self.proxy_cpu {
                cpu.insert((*p).to_string(), json!(c));
            }
            v["proxy_cpu_s"] = Value::Object(cpu);
            if let (Some(b), Some(c)) = (&self.bulk, self.cpu("bulk")) {
                if b.bytes > 0 {
                    v["proxy_cpu_s_per_gib"] = json!(c / (b.bytes as f64 / GIB));
                }
            }
        }
        if let Some((before, after, peak)) = self.rss_kib {
            v["proxy_rss_kib"] = json!({"before": before, "after": after, "peak": peak});
        }
        v
    }
}

//! UDP forwarding throughput: the same windowed QUIC-datagram client, in one
//! run, against
//!
//! * a direct QUIC datagram echo (quinn, ALPN "bench"), the baseline, and
//! * Bauta's CONNECT-UDP over HTTP/3 (RFC 9298) to a UDP echo server,
//!
//! and prints packets/s, goodput and their ratio. Everything runs on
//! 127.0.0.1 in this process, on one two-worker tokio runtime.
//!
//! Datagram sizes on the client's QUIC link are identical on both paths: the
//! direct echo gets the same 2-byte HTTP/3 datagram prefix (Quarter Stream ID,
//! Context ID 0) that the proxy path needs, and echoes the datagram whole.
//! Goodput counts UDP payload bytes only (prefix excluded), one direction.
//!
//! `cargo bench -p bauta-tests --bench udp_forwarding`. Environment:
//! `BAUTA_BENCH_SECS` (per phase, default 5), `BAUTA_BENCH_PAYLOAD` (default
//! 1200, always followed by 100; a comma list replaces both),
//! `BAUTA_BENCH_WINDOW` (datagrams outstanding, default 64). Without
//! `--bench` (i.e. under `cargo test --all-targets`) it is a smoke run of
//! 0.3 s per phase. It fails if a phase gets no echo at all.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Echoes still on the way when sending stops are waited for this long.
const DRAIN: Duration = Duration::from_millis(200);
/// No echo for this long while the window is short: the missing datagrams
/// are taken as lost and the window is refilled.
const STALL: Duration = Duration::from_millis(50);
/// How often the receiver checks for a stall.
const SWEEP: Duration = Duration::from_millis(10);
/// Sequence numbers from here on mark warm-up probes, not counted.
const PROBE_SEQ: u64 = 1 << 63;
/// Sequence number and send time (ns since the phase began) lead the payload.
const STAMP: usize = 16;
/// The datagram buffers of both client endpoints (the brief's 4 MiB).
const CLIENT_DGRAM_BUFFER: usize = 4 << 20;
/// The direct echo server's datagram buffers, as the proxy's QUIC listener.
const SERVER_DGRAM_BUFFER: usize = 1 << 20;

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ok = rt.block_on(run(settings))?;
    if ok {
        Ok(())
    } else {
        Err("a phase received no echo at all".into())
    }
}

// === settings ===

struct Settings {
    phase: Duration,
    payloads: Vec<usize>,
    window: usize,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        // `cargo bench` passes --bench; `cargo test --all-targets` does not.
        let bench = std::env::args().any(|a| a == "--bench");
        let secs = match std::env::var("BAUTA_BENCH_SECS") {
            Ok(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|e| format!("BAUTA_BENCH_SECS={s:?}: {e}"))?,
            Err(_) if bench => 5.0,
            Err(_) => 0.3,
        };
        if !(secs > 0.0 && secs <= 600.0) {
            return Err(format!("BAUTA_BENCH_SECS={secs}: want 0 < secs <= 600").into());
        }
        let payloads = match std::env::var("BAUTA_BENCH_PAYLOAD") {
            Ok(s) if s.contains(',') => s
                .split(',')
                .map(|p| parse_payload(p.trim()))
                .collect::<Result<Vec<_>>>()?,
            Ok(s) => vec![parse_payload(s.trim())?, 100],
            Err(_) => vec![1200, 100],
        };
        let mut uniq = Vec::new();
        for p in payloads {
            if !uniq.contains(&p) {
                uniq.push(p);
            }
        }
        let window = match std::env::var("BAUTA_BENCH_WINDOW") {
            Ok(s) => s
                .trim()
                .parse::<usize>()
                .map_err(|e| format!("BAUTA_BENCH_WINDOW={s:?}: {e}"))?,
            Err(_) => 64,
        };
        if !(1..=65536).contains(&window) {
            return Err(format!("BAUTA_BENCH_WINDOW={window}: want 1..=65536").into());
        }
        Ok(Settings {
            phase: Duration::from_secs_f64(secs),
            payloads: uniq,
            window,
        })
    }
}

fn parse_payload(s: &str) -> Result<usize> {
    let n = s
        .parse::<usize>()
        .map_err(|e| format!("BAUTA_BENCH_PAYLOAD {s:?}: {e}"))?;
    // The stamp must fit; 1400 + 2 + QUIC overhead still fits quinn's
    // largest probed MTU (1452) on loopback.
    if !(STAMP..=1400).contains(&n) {
        return Err(format!("BAUTA_BENCH_PAYLOAD {n}: want {STAMP}..=1400").into());
    }
    Ok(n)
}

// === the run ===

async fn run(settings: Settings) -> Result<bool> {
    bauta::tls::install_crypto_provider();
    let dir = TempDir::new()?;
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let cert_pem = dir.write("proxy.pem", &cert.cert.pem())?;
    let key_pem = dir.write("proxy.key", &cert.signing_key.serialize_pem())?;
    let cert_der = cert.cert.der().clone();
    let key_der = cert.signing_key.serialize_der();

    let echo = UdpEcho::start().await?;
    let direct = DirectEcho::start(cert_der.clone(), key_der)?;
    let toml = format!(
        r#"
[[listener]]
name = "secure"
listen = "127.0.0.1:0"
protocols = ["http1", "h3"]
tls_cert = '{cert}'
tls_key = '{key}'

[limits]
# Bounds the final shutdown if a flow were left open.
shutdown_grace_s = 2

[policy]
default = "deny"

[[policy.rule]]
name = "bench"
action = "allow"
cidrs = ["127.0.0.0/8"]
"#,
        cert = cert_pem.display(),
        key = key_pem.display(),
    );
    let cfg = bauta::Config::parse(&toml, "bench.toml", dir.path())
        .map_err(|e| format!("bench config rejected: {e}"))?;
    let running = bauta::start(cfg).await?;
    let proxy = running
        .listener_addr("secure")
        .ok_or("no listener named secure")?;

    let secs = settings.phase.as_secs_f64();
    let load = load_average();
    if let Some(l) = load.filter(|l| *l > 1.0) {
        eprintln!(
            "udp_forwarding: WARNING: load average {l:.2} before the run; other work \
             shares the CPUs and the numbers will be low and noisy"
        );
    }
    eprintln!(
        "udp_forwarding: {} s per phase, window {}, payloads {:?}; proxy {proxy}, \
         UDP echo {}, direct QUIC echo {}",
        fmt_secs(secs),
        settings.window,
        settings.payloads,
        echo.addr,
        direct.addr,
    );
    let mut reports = Vec::new();
    let mut all_echoed = true;
    for &payload in &settings.payloads {
        let spec = PhaseSpec {
            payload,
            window: settings.window,
            duration: settings.phase,
        };
        eprintln!("payload {payload} B: direct QUIC echo …");
        let d = direct_phase(&spec, direct.addr, &cert_der).await?;
        eprintln!("  {}", d.summary(&spec));
        eprintln!("payload {payload} B: via bauta (h3) …");
        let before = ProxyCounters::read(&running);
        let p = proxy_phase(&spec, proxy, echo.addr, &cert_der).await?;
        let after = ProxyCounters::read(&running);
        eprintln!("  {}", p.summary(&spec));
        eprintln!("  proxy: {}", after.since(&before));
        all_echoed &= d.echoed > 0 && p.echoed > 0;
        reports.push((spec, d, p));
    }

    tokio::time::timeout(Duration::from_secs(10), running.shutdown())
        .await
        .map_err(|_| "proxy shutdown took over 10 s")?;
    direct.stop().await;
    echo.stop();

    println!();
    for (spec, d, p) in &reports {
        print_table(spec, d, p);
    }
    for (spec, d, p) in &reports {
        println!(
            "RESULT udp_forwarding payload={} window={} secs={} direct_pps={:.0} proxy_pps={:.0} \
             direct_mbps={:.1} proxy_mbps={:.1} direct_loss_pct={:.2} proxy_loss_pct={:.2} \
             direct_rtt_us={:.0} proxy_rtt_us={:.0} load1={} ratio={:.3}",
            spec.payload,
            spec.window,
            fmt_secs(spec.duration.as_secs_f64()),
            d.pps(),
            p.pps(),
            d.mbps(spec.payload),
            p.mbps(spec.payload),
            d.loss_pct(),
            p.loss_pct(),
            d.rtt_us(),
            p.rtt_us(),
            load.map(|l| format!("{l:.2}"))
                .unwrap_or_else(|| "-".to_string()),
            ratio(p.pps(), d.pps()),
        );
    }
    Ok(all_echoed)
}

fn print_table(spec: &PhaseSpec, d: &Stats, p: &Stats) {
    println!(
        "udp_forwarding payload={}B window={} secs={}",
        spec.payload,
        spec.window,
        fmt_secs(spec.duration.as_secs_f64())
    );
    println!(
        "{:<18} {:>10} {:>15} {:>7} {:>12} {:>6} {:>7}",
        "path", "pkts/s", "goodput Mbit/s", "loss%", "mean RTT µs", "cpu%", "stalls"
    );
    for (name, s) in [("direct QUIC echo", d), ("via bauta (h3)", p)] {
        println!(
            "{:<18} {:>10.0} {:>15.1} {:>7.2} {:>12.0} {:>6} {:>7}",
            name,
            s.pps(),
            s.mbps(spec.payload),
            s.loss_pct(),
            s.rtt_us(),
            s.cpu(),
            s.stalls
        );
    }
    println!(
        "{:<18} {:>10.2}",
        "ratio via/direct",
        ratio(p.pps(), d.pps())
    );
    println!();
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn fmt_secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

// === phases ===

struct PhaseSpec {
    payload: usize,
    window: usize,
    duration: Duration,
}

/// The baseline: the client straight to a QUIC datagram echo.
async fn direct_phase(
    spec: &PhaseSpec,
    server: SocketAddr,
    cert: &CertificateDer<'static>,
) -> Result<Stats> {
    let endpoint = client_endpoint(cert, b"bench")?;
    let conn = endpoint.connect(server, "localhost")?.await?;
    // The same prefix as on the proxy path (stream 0, context 0).
    let prefix = h3_datagram_prefix(0);
    let stats = measure(&conn, &prefix, spec).await;
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    stats
}

/// Through the proxy: CONNECT-UDP to the UDP echo, then HTTP/3 datagrams on
/// the same QUIC connection.
async fn proxy_phase(
    spec: &PhaseSpec,
    proxy: SocketAddr,
    target: SocketAddr,
    cert: &CertificateDer<'static>,
) -> Result<Stats> {
    let endpoint = client_endpoint(cert, b"h3")?;
    let conn = endpoint.connect(proxy, "localhost")?.await?;
    let (mut driver, mut send_request) = h3::client::builder()
        .enable_datagram(true)
        .enable_extended_connect(true)
        .build::<_, _, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await?;
    let drive: JoinHandle<()> = tokio::spawn(async move {
        let _ = poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let uri = format!(
        "https://localhost:{}/.well-known/masque/udp/{}/{}/",
        proxy.port(),
        target.ip(),
        target.port()
    );
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(uri)
        .extension(h3::ext::Protocol::CONNECT_UDP)
        .header("capsule-protocol", "?1")
        .body(())?;
    let mut stream = send_request.send_request(req).await?;
    let resp = stream.recv_response().await?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("CONNECT-UDP answered {}", resp.status()).into());
    }
    let stream_id = stream.id().into_inner();
    let prefix = h3_datagram_prefix(stream_id);
    let stats = measure(&conn, &prefix, spec).await;
    // The request stream stays open until here: it is the flow's lifetime.
    drop(stream);
    drop(send_request);
    conn.close(0x100u32.into(), b"done"); // H3_NO_ERROR
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    drive.abort();
    stats
}

/// RFC 9297 §2.1 / RFC 9298 §5: Quarter Stream ID, then Context ID 0.
fn h3_datagram_prefix(stream_id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    put_varint(stream_id / 4, &mut out);
    put_varint(0, &mut out);
    out
}

/// QUIC variable-length integer (RFC 9000 §16); `v` < 2^62.
fn put_varint(v: u64, out: &mut Vec<u8>) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

fn client_endpoint(cert: &CertificateDer<'static>, alpn: &[u8]) -> Result<quinn::Endpoint> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .datagram_receive_buffer_size(Some(CLIENT_DGRAM_BUFFER))
        .datagram_send_buffer_size(CLIENT_DGRAM_BUFFER);
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

// === the measuring client ===

#[derive(Default)]
struct Stats {
    sent: u64,
    /// All echoes, including those of the drain after sending stopped.
    echoed: u64,
    /// Echoes received while sending (the rate's numerator).
    echoed_in_phase: u64,
    /// Seconds of sending.
    elapsed: f64,
    rtt_sum_ns: u128,
    /// Times the window was refilled after no echo for STALL.
    stalls: u64,
    /// Sends refused by quinn as larger than the path allows (then retried).
    too_large: u64,
    /// Echoes of the wrong length or with a sequence number never sent.
    bad: u64,
    /// CPU time of the whole process (client, proxy, echo servers) while
    /// sending, in % of one core (the machine has two); None off Linux.
    cpu_pct: Option<f64>,
}

impl Stats {
    fn pps(&self) -> f64 {
        if self.elapsed > 0.0 {
            self.echoed_in_phase as f64 / self.elapsed
        } else {
            0.0
        }
    }

    fn mbps(&self, payload: usize) -> f64 {
        self.pps() * payload as f64 * 8.0 / 1e6
    }

    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.sent.saturating_sub(self.echoed) as f64 * 100.0 / self.sent as f64
        }
    }

    fn rtt_us(&self) -> f64 {
        if self.echoed == 0 {
            0.0
        } else {
            self.rtt_sum_ns as f64 / self.echoed as f64 / 1e3
        }
    }

    fn cpu(&self) -> String {
        self.cpu_pct
            .map(|c| format!("{c:.0}%"))
            .unwrap_or_else(|| "-".to_string())
    }

    fn summary(&self, spec: &PhaseSpec) -> String {
        format!(
            "sent {} echoed {} ({} in phase) lost {} ({:.2}%) | {:.0} pkts/s {:.1} Mbit/s \
             | mean RTT {:.0} µs | cpu {} | stalls {} too_large {} bad {}",
            self.sent,
            self.echoed,
            self.echoed_in_phase,
            self.sent.saturating_sub(self.echoed),
            self.loss_pct(),
            self.pps(),
            self.mbps(spec.payload),
            self.rtt_us(),
            self.cpu(),
            self.stalls,
            self.too_large,
            self.bad,
        )
    }
}

/// Warm up (until a full-size datagram comes back), then run one windowed
/// phase: a sender task sends while the window has credit, this task counts
/// echoes and gives credit back; a stall refills the window.
async fn measure(conn: &quinn::Connection, prefix: &[u8], spec: &PhaseSpec) -> Result<Stats> {
    let dlen = prefix.len() + spec.payload;
    let mut template = vec![0u8; dlen];
    template[..prefix.len()].copy_from_slice(prefix);
    for (i, b) in template[prefix.len() + STAMP..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let template: Arc<[u8]> = template.into();
    warm_up(conn, &template, prefix.len()).await?;

    let window = spec.window;
    let credit = Arc::new(Semaphore::new(window));
    let cpu_before = process_cpu();
    let base = Instant::now();
    let deadline = base + spec.duration;
    let sender = tokio::spawn(send_loop(
        conn.clone(),
        Arc::clone(&credit),
        Arc::clone(&template),
        prefix.len(),
        base,
        deadline,
    ));

    let mut stats = Stats::default();
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let drain_end = tokio::time::sleep_until(deadline + DRAIN);
    tokio::pin!(drain_end);
    let cpu_end = tokio::time::sleep_until(deadline);
    tokio::pin!(cpu_end);
    let mut cpu_after = None;
    let off = prefix.len();
    let mut last_progress = Instant::now();
    loop {
        tokio::select! {
            d = conn.read_datagram() => {
                let d = d.map_err(|e| format!("connection lost mid-phase: {e}"))?;
                let now = Instant::now();
                let Some((seq, sent_ns)) = stamp(&d, off, dlen) else {
                    stats.bad += 1;
                    continue;
                };
                if seq >= PROBE_SEQ {
                    continue;
                }
                stats.echoed += 1;
                if now <= deadline {
                    stats.echoed_in_phase += 1;
                }
                let rtt = now.duration_since(base).as_nanos().saturating_sub(sent_ns as u128);
                stats.rtt_sum_ns += rtt;
                last_progress = now;
                // Only the sender takes credit, so this never overfills.
                if credit.available_permits() < window {
                    credit.add_permits(1);
                }
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                let avail = credit.available_permits();
                if avail < window && now.duration_since(last_progress) >= STALL {
                    credit.add_permits(window - avail);
                    stats.stalls += 1;
                    last_progress = now;
                }
            }
            _ = &mut cpu_end, if cpu_after.is_none() => {
                cpu_after = Some((process_cpu(), Instant::now()));
            }
            _ = &mut drain_end => break,
        }
    }
    if let (Some(b), Some((Some(a), at))) = (cpu_before, cpu_after) {
        let wall = at.duration_since(base).as_secs_f64();
        if wall > 0.0 {
            stats.cpu_pct = Some(a.saturating_sub(b).as_secs_f64() * 100.0 / wall);
        }
    }
    let sent = sender.await??;
    stats.sent = sent.sent;
    stats.too_large = sent.too_large;
    stats.elapsed = sent.elapsed.as_secs_f64();
    if stats.echoed > stats.sent {
        stats.bad += stats.echoed - stats.sent;
    }
    Ok(stats)
}

/// User + system CPU time of this process so far (Linux: /proc/self/stat,
/// in clock ticks, which are 1/100 s on every Linux port that matters here).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The 1-minute load average, to flag a machine busy with something else.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// (sequence number, send time) of an echo of the expected length.
fn stamp(d: &[u8], off: usize, dlen: usize) -> Option<(u64, u64)> {
    if d.len() != dlen {
        return None;
    }
    let seq = u64::from_be_bytes(d.get(off..off + 8)?.try_into().ok()?);
    let t = u64::from_be_bytes(d.get(off + 8..off + 16)?.try_into().ok()?);
    Some((seq, t))
}

struct Sent {
    sent: u64,
    too_large: u64,
    elapsed: Duration,
}

async fn send_loop(
    conn: quinn::Connection,
    credit: Arc<Semaphore>,
    template: Arc<[u8]>,
    off: usize,
    base: Instant,
    deadline: Instant,
) -> Result<Sent> {
    let dlen = template.len();
    // One allocation per 64 datagrams; freed when quinn has sent them all.
    let chunk = dlen * 64;
    let mut buf = BytesMut::new();
    let mut out = Sent {
        sent: 0,
        too_large: 0,
        elapsed: Duration::ZERO,
    };
    'phase: loop {
        // The credit is spent only once the datagram is sent: a permit
        // dropped at the deadline goes back, and the window ends full.
        let permit = match credit.try_acquire() {
            Ok(p) => p,
            Err(_) => tokio::select! {
                p = credit.acquire() => p?,
                _ = tokio::time::sleep_until(deadline) => break 'phase,
            },
        };
        // Retried only while quinn refuses the size (see below).
        loop {
            let now = Instant::now();
            if now >= deadline {
                break 'phase;
            }
            if buf.capacity() < dlen {
                buf.reserve(chunk);
            }
            buf.extend_from_slice(&template);
            buf[off..off + 8].copy_from_slice(&out.sent.to_be_bytes());
            let t = now.duration_since(base).as_nanos() as u64;
            buf[off + 8..off + 16].copy_from_slice(&t.to_be_bytes());
            match conn.send_datagram(buf.split().freeze()) {
                Ok(()) => break,
                // The path MTU shrank (black-hole detection after losses):
                // wait for it to grow back rather than count a loss.
                Err(quinn::SendDatagramError::TooLarge) => {
                    out.too_large += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(format!("send_datagram: {e}").into()),
            }
        }
        permit.forget();
        out.sent += 1;
    }
    out.elapsed = deadline.min(Instant::now()).duration_since(base);
    Ok(out)
}

/// Until one full-size datagram has made the round trip: both ends' path
/// MTU must have grown past quinn's initial 1200 for 1200-byte payloads.
async fn warm_up(conn: &quinn::Connection, template: &[u8], off: usize) -> Result<()> {
    let give_up = Instant::now() + Duration::from_secs(5);
    let mut probe = template.to_vec();
    let mut seq = PROBE_SEQ;
    while Instant::now() < give_up {
        if conn.max_datagram_size().unwrap_or(0) < template.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        probe[off..off + 8].copy_from_slice(&seq.to_be_bytes());
        seq += 1;
        conn.send_datagram(Bytes::copy_from_slice(&probe))?;
        let wait = tokio::time::timeout(Duration::from_millis(50), async {
            loop {
                let d = conn.read_datagram().await?;
                if d.len() == template.len() {
                    return Ok::<_, quinn::ConnectionError>(());
                }
            }
        });
        if let Ok(r) = wait.await {
            r?;
            return Ok(());
        }
    }
    Err(format!(
        "warm-up: no {}-byte datagram came back in 5 s (client max_datagram_size {:?})",
        template.len(),
        conn.max_datagram_size()
    )
    .into())
}

// === the proxy's own counters (bauta_udp_*) ===

struct ProxyCounters {
    up: u64,
    down: u64,
    drops: Vec<(&'static str, u64)>,
}

const DROP_REASONS: [&str; 6] = [
    "queue_full",
    "unknown_stream",
    "unknown_context",
    "too_large",
    "send_failed",
    "malformed",
];

impl ProxyCounters {
    fn read(running: &bauta::Running) -> ProxyCounters {
        let m = &running.services.metrics;
        ProxyCounters {
            up: m.udp_datagrams.with_label_values(&["upstream"]).get(),
            down: m.udp_datagrams.with_label_values(&["downstream"]).get(),
            drops: DROP_REASONS
                .iter()
                .map(|r| (*r, m.udp_drops.with_label_values(&[*r]).get()))
                .collect(),
        }
    }

    fn since(&self, before: &ProxyCounters) -> String {
        let mut s = format!(
            "datagrams upstream {} downstream {}",
            self.up - before.up,
            self.down - before.down
        );
        for ((r, a), (_, b)) in self.drops.iter().zip(&before.drops) {
            if a > b {
                s.push_str(&format!(", dropped {r} {}", a - b));
            }
        }
        s
    }
}

// === the echo servers ===

/// The target: echoes every UDP datagram to its sender.
struct UdpEcho {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl UdpEcho {
    async fn start() -> Result<UdpEcho> {
        let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        Ok(UdpEcho { addr, task })
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// The baseline: a QUIC endpoint that echoes every datagram it reads.
struct DirectEcho {
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    task: JoinHandle<()>,
}

impl DirectEcho {
    fn start(cert: CertificateDer<'static>, key: Vec<u8>) -> Result<DirectEcho> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
        tls.alpn_protocols = vec![b"bench".to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        // As the proxy's QUIC listener, so that only the forwarding differs.
        let mut transport = quinn::TransportConfig::default();
        transport
            .datagram_receive_buffer_size(Some(SERVER_DGRAM_BUFFER))
            .datagram_send_buffer_size(SERVER_DGRAM_BUFFER);
        server.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server, SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = endpoint.local_addr()?;
        let ep = endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok(d) = conn.read_datagram().await {
                        match conn.send_datagram(d) {
                            Ok(()) | Err(quinn::SendDatagramError::TooLarge) => {}
                            Err(_) => break,
                        }
                    }
                });
            }
        });
        Ok(DirectEcho {
            addr,
            endpoint,
            task,
        })
    }

    async fn stop(self) {
        self.endpoint.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.task.abort();
    }
}

// === scratch directory for the PEM files ===

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("bauta-bench-udp-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let p = self.0.join(name);
        std::fs::write(&p, contents)?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

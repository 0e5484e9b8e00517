//! The soak: every kind of traffic at once against the real binary, with
//! faults and policy reloads mixed in, then an audit. `tests/soak.sh
//! DURATION` runs it for minutes (`src/bin/soak.rs`); `tests/tests/soak.rs`
//! runs a short one in the test suite.
//!
//! Traffic (each a loop of its own until the deadline): TCP tunnels over
//! HTTP/1.1, HTTP/2 and HTTP/3 CONNECT to an echo server (random payloads,
//! compared byte for byte), CONNECT-UDP flows over HTTP/3 to a UDP echo,
//! reverse-proxied HTTP/2 POSTs and `http://` forwarded POSTs (bodies echoed
//! by the origin and compared). Faults: an upstream that resets mid-tunnel,
//! clients that vanish mid-tunnel (TCP reset, HTTP/2 connection dropped, QUIC
//! connection closed), forwarding to a closed port. Reloads: the policy file
//! is rewritten and SIGHUP sent every few seconds.
//!
//! The audit: no corrupted payload, every worker's failures listed,
//! `bauta_tunnels_active` back to 0, open fds (besides the splice relay's
//! pooled pipes) back to the start's, RSS
//! growth after warm-up under a bound, and no ERROR or WARN line in the
//! proxy's log (none of the faults above is the operator's business).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::faults_env::{held_fds, rss_kib, write_data, H3Connect, H3End};
use crate::masque::{h3_datagram, quic_client_config, udp_path, H3Client, UdpEcho};
use crate::readme_env::{h2_to, origin_listener_certs};
use crate::seccert_env::Pki;
use crate::{
    h2_client, h2_connect, make_certs, read_head, tls_connect, BautaProcess, Certs, EchoServer,
    Origin, TempDir, ECHO_EOF_REPLY,
};

/// What a soak run is asked to do.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub duration: Duration,
    /// RSS may grow at most this much between the end of warm-up (a quarter
    /// of the run) and the end.
    pub rss_growth_limit_kib: u64,
    /// Largest TCP payload per tunnel.
    pub max_payload: usize,
}

impl Default for SoakOptions {
    fn default() -> Self {
        SoakOptions {
            duration: Duration::from_secs(120),
            rss_growth_limit_kib: 32 * 1024,
            max_payload: 256 * 1024,
        }
    }
}

/// Counters the workers move.
#[derive(Default)]
struct Counters {
    tunnels: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    udp_flows: AtomicU64,
    datagrams_sent: AtomicU64,
    datagrams_back: AtomicU64,
    faults: AtomicU64,
    reloads: AtomicU64,
    corrupted: AtomicU64,
}

/// What the run did and found.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub seconds: u64,
    pub tunnels: u64,
    pub requests: u64,
    pub bytes: u64,
    pub udp_flows: u64,
    pub datagrams_sent: u64,
    pub datagrams_back: u64,
    pub faults: u64,
    pub reloads: u64,
    pub corrupted: u64,
    pub leaked_tunnels: u64,
    pub fds_start: usize,
    pub fds_end: usize,
    pub rss_warm_kib: u64,
    pub rss_end_kib: u64,
    pub rss_growth_limit_kib: u64,
    /// Unexpected outcomes, one line each (bounded).
    pub failures: Vec<String>,
    /// ERROR / WARN lines of the proxy's log.
    pub log_problems: Vec<String>,
}

impl SoakReport {
    pub fn ok(&self) -> bool {
        self.corrupted == 0
            && self.leaked_tunnels == 0
            && self.fds_end <= self.fds_start
            && self.rss_end_kib.saturating_sub(self.rss_warm_kib) <= self.rss_growth_limit_kib
            && self.failures.is_empty()
            && self.log_problems.is_empty()
            && self.tunnels > 0
            && self.requests > 0
            && self.datagrams_back > 0
            && self.reloads > 0
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "soak: {} s; tunnels {}, requests {}, bytes {}, udp flows {} (datagrams {} sent, {} back), \
             faults injected {}, policy reloads {}; corrupted = {}, leaked = {}; \
             fds {} -> {}; RSS {} KiB -> {} KiB (growth limit {} KiB); failures {}; log problems {}",
            self.seconds,
            self.tunnels,
            self.requests,
            self.bytes,
            self.udp_flows,
            self.datagrams_sent,
            self.datagrams_back,
            self.faults,
            self.reloads,
            self.corrupted,
            self.leaked_tunnels,
            self.fds_start,
            self.fds_end,
            self.rss_warm_kib,
            self.rss_end_kib,
            self.rss_growth_limit_kib,
            self.failures.len(),
            self.log_problems.len(),
        );
        for f in self.failures.iter().chain(&self.log_problems).take(20) {
            s.push_str("\n  ");
            s.push_str(f);
        }
        s
    }
}

/// A small deterministic generator for payloads (no crate needed).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

type Outcome = Result<(), String>;

/// Everything the workers share.
struct Env {
    deadline: Instant,
    opts: SoakOptions,
    counters: Counters,
    failures: Mutex<Vec<String>>,
    plain: SocketAddr,
    secure: SocketAddr,
    rev: SocketAddr,
    certs: Certs,
    rev_certs: Certs,
    echo: SocketAddr,
    udp_echo: u16,
    origin: SocketAddr,
    resetter: SocketAddr,
}

impl Env {
    fn fail(&self, what: &str, e: String) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() < 100 {
            f.push(format!("{what}: {e}"));
        }
    }

    fn corrupted(&self, what: &str) -> String {
        self.counters.corrupted.fetch_add(1, Ordering::Relaxed);
        format!("{what}: payload corrupted")
    }

    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// What came back must be `want`: a short or long answer is a failure,
    /// the right length with other bytes is corruption (counted).
    fn check_echo(&self, what: &str, got: &[u8], want: &[u8]) -> Outcome {
        if got.len() != want.len() {
            return Err(format!(
                "{what}: {} bytes back, {} expected",
                got.len(),
                want.len()
            ));
        }
        if got != want {
            return Err(self.corrupted(what));
        }
        Ok(())
    }

    /// Count one finished unit of work (`done`) that moved `n` bytes each
    /// way, or record why it failed.
    fn record(&self, what: &str, r: Outcome, done: &AtomicU64, n: usize) {
        match r {
            Ok(()) => self.count(done, n),
            Err(e) => self.fail(what, e),
        }
    }

    /// One more `done`, `n` bytes each way.
    fn count(&self, done: &AtomicU64, n: usize) {
        done.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(2 * n as u64, Ordering::Relaxed);
    }
}

/// Bound every step: a stuck step is a failure, not a hang.
async fn step<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(20), f).await {
        Ok(r) => r,
        Err(_) => Err(format!("{what}: no progress for 20 s")),
    }
}

fn io<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Write `payload` into `s` while reading its echo; compare.
async fn echo_through<S>(env: &Env, s: S, payload: &[u8], what: &str) -> Outcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(s);
    let write = async {
        w.write_all(payload).await.map_err(io("write"))?;
        w.shutdown().await.map_err(io("half-close"))
    };
    let read = async {
        let mut got = Vec::with_capacity(payload.len() + ECHO_EOF_REPLY.len());
        r.read_to_end(&mut got).await.map_err(io("read"))?;
        Ok::<_, String>(got)
    };
    let (w, got) = tokio::join!(write, read);
    w?;
    let mut want = payload.to_vec();
    want.extend_from_slice(ECHO_EOF_REPLY);
    env.check_echo(what, &got?, &want)
}

async fn h1_connect(proxy: SocketAddr, target: SocketAddr) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).await.map_err(io("connect"))?;
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(io("write"))?;
    let (head, rest) = read_head(&mut s).await.map_err(io("head"))?;
    if head.status != 200 || !rest.is_empty() {
        return Err(format!("CONNECT answered {}", head.status));
    }
    Ok(s)
}

async fn h1_tunnels(env: Arc<Env>, seed: u64) {
    let mut rng = XorShift(seed);
    while env.running() {
        let n = 1 + rng.below(env.opts.max_payload);
        let payload = rng.bytes(n);
        let r = step("h1 tunnel", async {
            let s = h1_connect(env.plain, env.echo).await?;
            echo_through(&env, s, &payload, "h1 tunnel").await
        })
        .await;
        env.record("h1 tunnel", r, &env.counters.tunnels, n);
    }
}

async fn h2_tunnels(env: Arc<Env>, seed: u64) {
    let mut rng = XorShift(seed);
    while env.running() {
        let r = step("h2 connection", async {
            let tls = tls_connect(env.secure, &env.certs, &[b"h2"]).await;
            let client = h2_client(tls).await;
            // A few streams per connection, like a real client.
            for _ in 0..4 {
                let n = 1 + rng.below(env.opts.max_payload);
                let payload = rng.bytes(n);
                let (parts, tunnel) = h2_connect(&client, &env.echo.to_string()).await;
                let mut t = tunnel.ok_or_else(|| format!("CONNECT answered {}", parts.status))?;
                t.write(&payload);
                let got = t.read_exact(n).await;
                env.check_echo("h2 tunnel", &got, &payload)?;
                t.assert_half_close().await;
                env.count(&env.counters.tunnels, n);
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            env.fail("h2 tunnel", e);
        }
    }
}

async fn h3_tunnels(env: Arc<Env>, seed: u64) {
    let mut rng = XorShift(seed);
    while env.running() {
        let n = 1 + rng.below(env.opts.max_payload);
        let payload = rng.bytes(n);
        let r = step("h3 tunnel", async {
            let (status, tunnel) = H3Connect::open(
                env.secure,
                quic_client_config(&env.certs),
                &env.echo.to_string(),
            )
            .await;
            if status != 200 {
                return Err(format!("CONNECT answered {status}"));
            }
            let H3Connect {
                mut send,
                mut reader,
            } = tunnel;
            // Send and read at once, so that neither window fills.
            let write = async {
                write_data(&mut send, &payload).await;
                send.finish().map_err(io("finish"))
            };
            let (w, (got, end)) = tokio::join!(write, reader.read_to_end());
            w?;
            if end != H3End::Fin {
                return Err(format!("tunnel ended with {end:?}"));
            }
            let mut want = payload.clone();
            want.extend_from_slice(ECHO_EOF_REPLY);
            env.check_echo("h3 tunnel", &got, &want)
        })
        .await;
        env.record("h3 tunnel", r, &env.counters.tunnels, n);
    }
}

async fn udp_flows(env: Arc<Env>, seed: u64) {
    let mut rng = XorShift(seed);
    while env.running() {
        let r = step("connect-udp flow", async {
            let mut client = H3Client::connect(env.secure, &env.certs).await;
            let path = udp_path("127.0.0.1", env.udp_echo);
            let stream = client.connect_udp(&path).await;
            let id = crate::masque::stream_id(&stream);
            env.counters.udp_flows.fetch_add(1, Ordering::Relaxed);
            for _ in 0..50 {
                let n = 1 + rng.below(1100);
                let payload = rng.bytes(n);
                let sent = h3_datagram(id, 0, &payload);
                client.send_raw_datagram(sent.clone());
                env.counters.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                // Loss is UDP's right; corruption is not.
                if let Some(got) = client.recv_datagram(Duration::from_secs(2)).await {
                    env.check_echo("connect-udp datagram", &got, &sent)?;
                    env.count(&env.counters.datagrams_back, n);
                }
            }
            drop(stream);
            Ok(())
        })
        .await;
        if let Err(e) = r {
            env.fail("connect-udp", e);
        }
    }
}

async fn reverse_requests(env: Arc<Env>, seed: u64) {
    let mut rng = XorShift(seed);
    while env.running() {
        let r = step("reverse", async {
            let client = h2_to(env.rev, &env.rev_certs, "origin.test").await;
            for _ in 0..8 {
                let n = 1 + rng.below(64 * 1024);
                let body = Bytes::from(rng.bytes(n));
                let req = Request::builder()
                    .method(Method::POST)
                    .uri("https://origin.test/soak")
                    .body(())
                    .map_err(io("request"))?;
                let (parts, got) = crate::h2_request(&client, req, Some(body.clone())).await;
                if parts.status != 200 {
                    return Err(format!("reverse POST answered {}", parts.status));
                }
                env.check_echo("reverse body", &got, &body)?;
                env.count(&env.counters.requests, n);
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            env.fail("reverse", e);
        }
    }
}

async fn forward_requests(env: Arc<Env>, seed: u64) {
    let mut rng = XorShift(seed);
    while env.running() {
        let n = 1 + rng.below(64 * 1024);
        let body = rng.bytes(n);
        let r = step("forward", async {
            let mut s = TcpStream::connect(env.plain).await.map_err(io("connect"))?;
            let origin = env.origin;
            let head = format!(
                "POST http://{origin}/soak HTTP/1.1\r\nHost: {origin}\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.map_err(io("write"))?;
            s.write_all(&body).await.map_err(io("write body"))?;
            let (head, rest) = read_head(&mut s).await.map_err(io("head"))?;
            if head.status != 200 {
                return Err(format!("forwarded POST answered {}", head.status));
            }
            let got = crate::read_body(&mut s, &head, rest).await;
            env.check_echo("forwarded body", &got, &body)
        })
        .await;
        env.record("forward", r, &env.counters.requests, n);
    }
}

/// One fault after another: each must end cleanly on the proxy's side.
async fn faults(env: Arc<Env>, seed: u64) {
    let mut rng = XorShift(seed);
    while env.running() {
        let kind = rng.below(5);
        let r = step("fault", async {
            match kind {
                // The target resets mid-tunnel: the tunnel ends, no hang.
                0 => {
                    let mut s = h1_connect(env.plain, env.resetter).await?;
                    let _ = s.write_all(&rng.bytes(4096)).await;
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink).await;
                }
                // The client resets mid-tunnel.
                1 => {
                    let s = h1_connect(env.plain, env.echo).await?;
                    let mut s = s;
                    s.write_all(&rng.bytes(8192)).await.map_err(io("write"))?;
                    socket2::SockRef::from(&s)
                        .set_linger(Some(Duration::ZERO))
                        .map_err(io("linger"))?;
                    drop(s);
                }
                // An HTTP/2 client drops its connection with a tunnel open.
                2 => {
                    let tls = tls_connect(env.secure, &env.certs, &[b"h2"]).await;
                    let client = h2_client(tls).await;
                    let (parts, t) = h2_connect(&client, &env.echo.to_string()).await;
                    let mut t = t.ok_or_else(|| format!("CONNECT answered {}", parts.status))?;
                    t.write(&rng.bytes(8192));
                    let _ = t.read_exact(1).await;
                    drop(t);
                    drop(client);
                }
                // An HTTP/3 client closes its connection with a tunnel open.
                3 => {
                    let (_, mut tunnel) = H3Connect::open(
                        env.secure,
                        quic_client_config(&env.certs),
                        &env.echo.to_string(),
                    )
                    .await;
                    tunnel.write(&rng.bytes(8192)).await;
                    drop(tunnel);
                }
                // Forwarding to a port nobody listens on: 502.
                _ => {
                    let port = crate::closed_port();
                    let req = format!(
                        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                    );
                    let (head, _, _) = crate::raw_request(env.plain, req.as_bytes()).await;
                    if head.status != 502 {
                        return Err(format!("forward to a closed port answered {}", head.status));
                    }
                }
            }
            Ok(())
        })
        .await;
        match r {
            Ok(()) => {
                env.counters.faults.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => env.fail("fault", e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rewrite the policy file and SIGHUP, every 3 s.
async fn reloads(env: Arc<Env>, proxy: Arc<BautaProcess>, policy: PathBuf) {
    let mut n = 0u64;
    while env.running() {
        tokio::time::sleep(Duration::from_secs(3)).await;
        n += 1;
        // Like an editor or a ConfigMap: a complete file renamed into place.
        let tmp = policy.with_extension("tmp");
        if let Err(e) =
            std::fs::write(&tmp, policy_text(n)).and_then(|()| std::fs::rename(&tmp, &policy))
        {
            env.fail("reload", format!("write {}: {e}", policy.display()));
            continue;
        }
        proxy.signal("HUP");
        env.counters.reloads.fetch_add(1, Ordering::Relaxed);
    }
}

/// Loopback allowed for every protocol; generation `n` adds a harmless rule
/// so that every reload really changes the policy.
fn policy_text(n: u64) -> String {
    format!(
        "default = \"deny\"\n\n[[rule]]\nname = \"never-{n}\"\naction = \"deny\"\nhosts = [\"soak-{n}.invalid\"]\n\n\
         [[rule]]\nname = \"lab\"\naction = \"allow\"\ncidrs = [\"127.0.0.0/8\"]\n"
    )
}

/// An upstream that reads a little, then resets the connection.
async fn start_resetter() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind resetter");
    let addr = l.local_addr().expect("resetter addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            });
        }
    });
    addr
}

/// Start the proxy, run the traffic, audit. Panics only on setup failures.
pub async fn run(opts: SoakOptions) -> SoakReport {
    crate::init();
    let dir = TempDir::new("soak");
    let certs = make_certs();
    let pki = Pki::new();
    let (rev_certs, rev_origin) = origin_listener_certs(&pki, "origin.test");
    let echo = EchoServer::start().await;
    let udp_echo = UdpEcho::start().await;
    let origin = Origin::start().await;
    let resetter = start_resetter().await;
    let policy = dir.write("policy.toml", &policy_text(0));
    let config = format!(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [limits]\nupstream_idle_timeout_s = 1\nclient_idle_timeout_s = 5\nidle_timeout_s = 30\n\n\
         [policy]\nfile = '{}'\n\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
         [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\", \"h2\", \"h3\"]\n\
         tls_cert = '{}'\ntls_key = '{}'\n\n\
         [[listener]]\nname = \"rev\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"h2\"]\n\
         tls_cert = '{}'\ntls_key = '{}'\n\n\
         [[origin]]\nhost = \"origin.test\"\nport = 443\ncert = '{}'\nkey = '{}'\nupstream = \"http://{}\"\n",
        policy.display(),
        certs.cert_pem.display(),
        certs.key_pem.display(),
        rev_certs.cert_pem.display(),
        rev_certs.key_pem.display(),
        rev_origin.cert_pem.display(),
        rev_origin.key_pem.display(),
        origin.addr,
    );
    let config_path = dir.write("bauta.toml", &config);
    let proxy = Arc::new(BautaProcess::start(&config_path).await);
    let pid = proxy.pid;
    let admin = proxy.admin;
    let fds_start = held_fds(pid, admin).await;
    let env = Arc::new(Env {
        deadline: Instant::now() + opts.duration,
        opts: opts.clone(),
        counters: Counters::default(),
        failures: Mutex::new(Vec::new()),
        plain: proxy.listener("plain"),
        secure: proxy.listener("secure"),
        rev: proxy.listener("rev"),
        certs,
        rev_certs,
        echo: echo.addr,
        udp_echo: udp_echo.port(),
        origin: origin.addr,
        resetter,
    });
    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 0..2u64 {
        workers.push(tokio::spawn(h1_tunnels(Arc::clone(&env), 0x1000 + i)));
        workers.push(tokio::spawn(h2_tunnels(Arc::clone(&env), 0x2000 + i)));
        workers.push(tokio::spawn(h3_tunnels(Arc::clone(&env), 0x3000 + i)));
        workers.push(tokio::spawn(forward_requests(Arc::clone(&env), 0x6000 + i)));
    }
    workers.push(tokio::spawn(udp_flows(Arc::clone(&env), 0x4000)));
    workers.push(tokio::spawn(reverse_requests(Arc::clone(&env), 0x5000)));
    workers.push(tokio::spawn(faults(Arc::clone(&env), 0x7000)));
    workers.push(tokio::spawn(reloads(
        Arc::clone(&env),
        Arc::clone(&proxy),
        policy.clone(),
    )));

    tokio::time::sleep(opts.duration / 4).await;
    let rss_warm_kib = rss_kib(pid);
    for w in workers {
        if let Err(e) = w.await {
            env.fail("worker", format!("panicked: {e}"));
        }
    }
    let seconds = started.elapsed().as_secs();

    // Everything must drain by itself: tunnels, pooled upstream connections
    // (idle 1 s), client connections (idle 5 s).
    let drained = Instant::now() + Duration::from_secs(30);
    let mut leaked_tunnels;
    let mut fds_end;
    loop {
        let text = crate::fetch_metrics(admin).await;
        leaked_tunnels = text
            .lines()
            .filter(|l| l.starts_with("bauta_tunnels_active"))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum::<f64>() as u64;
        fds_end = held_fds(pid, admin).await;
        if (leaked_tunnels == 0 && fds_end <= fds_start) || Instant::now() >= drained {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_end_kib = rss_kib(pid);
    let log_problems: Vec<String> = proxy
        .stderr()
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .map(str::to_string)
        .collect();
    let c = &env.counters;
    let failures = env
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    SoakReport {
        seconds,
        tunnels: c.tunnels.load(Ordering::Relaxed),
        requests: c.requests.load(Ordering::Relaxed),
        bytes: c.bytes.load(Ordering::Relaxed),
        udp_flows: c.udp_flows.load(Ordering::Relaxed),
        datagrams_sent: c.datagrams_sent.load(Ordering::Relaxed),
        datagrams_back: c.datagrams_back.load(Ordering::Relaxed),
        faults: c.faults.load(Ordering::Relaxed),
        reloads: c.reloads.load(Ordering::Relaxed),
        corrupted: c.corrupted.load(Ordering::Relaxed),
        leaked_tunnels,
        fds_start,
        fds_end,
        rss_warm_kib,
        rss_end_kib,
        rss_growth_limit_kib: opts.rss_growth_limit_kib,
        failures,
        log_problems,
    }
}

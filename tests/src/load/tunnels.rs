//! TCP tunnels: HTTP/1.1 CONNECT (plain and TLS listener), HTTP/2 and
//! HTTP/3 CONNECT, or a plain TCP connection (`--direct`). Three phases:
//!
//! 1. bulk: `--tunnels` tunnels, `--concurrency` at once, each announces
//!    and sends `--bytes` to the counting sink and checks the count the
//!    sink answers; goodput is the confirmed bytes over the phase's time;
//! 2. churn: for `--duration`, `--concurrency` workers open a tunnel to the
//!    sink, announce 0 bytes and wait for the sink's count (0): new tunnels/s,
//!    and the setup latency of each (from the start of the connection to the
//!    proxy to its 2xx);
//! 3. rtt: `--rounds` 8-byte round trips inside one tunnel to the echo.
//!
//! Every tunnel uses a connection of its own (TCP, TLS, HTTP/2 or QUIC), so
//! setup latency includes the handshakes.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::report::{Bulk, Churn, Latency, Report};
use super::targets::CountingSink;
use super::{LoadOptions, Mode, Path, Watched};
use crate::faults_env::{write_data, H3Connect};
use crate::masque::quic_client_config;
use crate::{
    connect_h1, connect_on, h2_client, h2_connect, tls_connect, EchoServer, H2Sender, H2Tunnel,
};

/// One step (open, transfer, close) that takes longer than this fails.
const STEP: Duration = Duration::from_secs(30);
/// What the client writes, over and over.
const CHUNK: usize = 64 * 1024;

/// A byte stream the HTTP/1.1 modes and `--direct` tunnel through.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One open tunnel.
enum Tunnel {
    Stream(Box<dyn Io>),
    H2 { tunnel: H2Tunnel, _conn: H2Sender },
    H3(H3Connect),
}

type Outcome<T> = Result<T, String>;

fn io<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Open a tunnel to `target` the way `mode` says; the time to its 2xx.
async fn open(mode: Mode, path: &Path, target: SocketAddr) -> Outcome<(Tunnel, Duration)> {
    let started = Instant::now();
    let authority = target.to_string();
    let Some(proxy) = path.proxy else {
        let s = TcpStream::connect(target).await.map_err(io("connect"))?;
        s.set_nodelay(true).map_err(io("nodelay"))?;
        return Ok((Tunnel::Stream(Box::new(s)), started.elapsed()));
    };
    let tunnel = match mode {
        Mode::H1 => {
            let (head, s) = connect_h1(proxy, &authority).await;
            if head.status != 200 {
                return Err(format!("CONNECT answered {}", head.status));
            }
            s.set_nodelay(true).map_err(io("nodelay"))?;
            Tunnel::Stream(Box::new(s))
        }
        Mode::H1Tls => {
            let mut tls = tls_connect(proxy, path.certs()?, &[b"http/1.1"]).await;
            tls.get_ref().0.set_nodelay(true).map_err(io("nodelay"))?;
            let head = connect_on(&mut tls, &authority).await;
            if head.status != 200 {
                return Err(format!("CONNECT answered {}", head.status));
            }
            Tunnel::Stream(Box::new(tls))
        }
        Mode::H2 => {
            let tls = tls_connect(proxy, path.certs()?, &[b"h2"]).await;
            tls.get_ref().0.set_nodelay(true).map_err(io("nodelay"))?;
            let conn = h2_client(tls).await;
            let (parts, tunnel) = h2_connect(&conn, &authority).await;
            let tunnel = tunnel.ok_or_else(|| format!("CONNECT answered {}", parts.status))?;
            Tunnel::H2 {
                tunnel,
                _conn: conn,
            }
        }
        Mode::H3 => {
            let config = quic_client_config(path.certs()?);
            let (status, t) = H3Connect::open(proxy, config, &authority).await;
            if status != 200 {
                return Err(format!("CONNECT answered {status}"));
            }
            Tunnel::H3(t)
        }
        Mode::Udp | Mode::Forward | Mode::Handshakes => {
            return Err(format!("{} is not a TCP mode", mode.name()))
        }
    };
    Ok((tunnel, started.elapsed()))
}

impl Tunnel {
    /// Send `n` bytes (zeros), honouring flow control.
    async fn send(&mut self, n: u64) -> Outcome<()> {
        static ZEROS: [u8; CHUNK] = [0u8; CHUNK];
        let mut left = n;
        match self {
            Tunnel::Stream(s) => {
                while left > 0 {
                    let k = left.min(CHUNK as u64) as usize;
                    s.write_all(&ZEROS[..k]).await.map_err(io("write"))?;
                    left -= k as u64;
                }
                s.flush().await.map_err(io("flush"))
            }
            Tunnel::H2 { tunnel, .. } => {
                let chunk = Bytes::from_static(&ZEROS);
                while left > 0 {
                    let want = left.min(CHUNK as u64) as usize;
                    tunnel.send.reserve_capacity(want);
                    let cap = match poll_fn(|cx| tunnel.send.poll_capacity(cx)).await {
                        Some(Ok(c)) => c.min(want),
                        Some(Err(e)) => return Err(format!("HTTP/2 capacity: {e}")),
                        None => return Err("HTTP/2 stream closed while sending".into()),
                    };
                    if cap == 0 {
                        continue;
                    }
                    tunnel
                        .send
                        .send_data(chunk.slice(..cap), false)
                        .map_err(io("send DATA"))?;
                    left -= cap as u64;
                }
                Ok(())
            }
            Tunnel::H3(t) => {
                while left > 0 {
                    let k = left.min(CHUNK as u64) as usize;
                    write_data(&mut t.send, &ZEROS[..k]).await;
                    left -= k as u64;
                }
                Ok(())
            }
        }
    }

    /// Write a few bytes (a ping).
    async fn write(&mut self, data: &[u8]) -> Outcome<()> {
        match self {
            Tunnel::Stream(s) => {
                s.write_all(data).await.map_err(io("write"))?;
                s.flush().await.map_err(io("flush"))
            }
            Tunnel::H2 { tunnel, .. } => {
                tunnel.write(data);
                Ok(())
            }
            Tunnel::H3(t) => {
                t.write(data).await;
                Ok(())
            }
        }
    }

    /// Half-close our side.
    async fn finish(&mut self) -> Outcome<()> {
        match self {
            Tunnel::Stream(s) => s.shutdown().await.map_err(io("half-close")),
            Tunnel::H2 { tunnel, .. } => {
                tunnel.finish();
                Ok(())
            }
            Tunnel::H3(t) => {
                t.finish();
                Ok(())
            }
        }
    }

    async fn read_exact(&mut self, n: usize) -> Outcome<Vec<u8>> {
        match self {
            Tunnel::Stream(s) => {
                let mut buf = vec![0u8; n];
                s.read_exact(&mut buf).await.map_err(io("read"))?;
                Ok(buf)
            }
            Tunnel::H2 { tunnel, .. } => Ok(tunnel.read_exact(n).await),
            Tunnel::H3(t) => Ok(t.reader.read_exact(n).await),
        }
    }

    /// Announce `n` bytes to the sink and send them.
    async fn send_announced(&mut self, n: u64) -> Outcome<()> {
        self.write(&n.to_be_bytes()).await?;
        self.send(n).await
    }

    /// Read the sink's count, then end our side. The sink has closed by
    /// then, and a proxy may already have ended the tunnel: no error.
    async fn counted(&mut self) -> Outcome<u64> {
        let got = self.read_exact(8).await?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&got);
        match self {
            Tunnel::Stream(s) => drop(s.shutdown().await),
            Tunnel::H2 { tunnel, .. } => drop(tunnel.send.send_data(Bytes::new(), true)),
            Tunnel::H3(t) => drop(t.send.finish()),
        }
        Ok(u64::from_be_bytes(b))
    }
}

/// Run `f` in a task of its own, bounded by [`STEP`]; a panic (the tests'
/// clients panic on protocol errors) or a timeout is an error.
async fn guarded<T: Send + 'static>(
    what: &'static str,
    f: impl Future<Output = Outcome<T>> + Send + 'static,
) -> Outcome<T> {
    match tokio::time::timeout(STEP, tokio::spawn(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(format!("{what}: {msg}"))
        }
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no result within {STEP:?}")),
    }
}

/// What the workers of one phase share.
struct Shared {
    mode: Mode,
    path: Path,
    sink: SocketAddr,
    bytes: u64,
    setups: Mutex<Vec<Duration>>,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }
}

/// One bulk tunnel: open, send, check the count. The bytes confirmed.
async fn bulk_one(sh: Arc<Shared>) -> Outcome<u64> {
    let (mut t, _) = open(sh.mode, &sh.path, sh.sink).await?;
    t.send_announced(sh.bytes).await?;
    let n = t.counted().await?;
    if n != sh.bytes {
        return Err(format!("sink counted {n} bytes, {} sent", sh.bytes));
    }
    Ok(n)
}

/// One churn tunnel: open, close, wait for the sink's count (0).
async fn churn_one(sh: Arc<Shared>) -> Outcome<()> {
    let (mut t, setup) = open(sh.mode, &sh.path, sh.sink).await?;
    t.send_announced(0).await?;
    let n = t.counted().await?;
    if n != 0 {
        return Err(format!("sink counted {n} bytes, none sent"));
    }
    sh.setups
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(setup);
    Ok(())
}

/// `rounds` 8-byte round trips through one tunnel to the echo.
async fn rtt(mode: Mode, path: Path, echo: SocketAddr, rounds: usize) -> Outcome<Vec<Duration>> {
    let (mut t, _) = open(mode, &path, echo).await?;
    let mut out = Vec::with_capacity(rounds);
    for i in 0..rounds as u64 {
        let ping = i.to_be_bytes();
        let started = Instant::now();
        t.write(&ping).await?;
        let got = t.read_exact(8).await?;
        out.push(started.elapsed());
        if got != ping {
            return Err(format!("round trip {i}: {got:?} came back"));
        }
    }
    t.finish().await?;
    Ok(out)
}

pub async fn run(
    opts: &LoadOptions,
    path: &Path,
    watched: Option<&Watched>,
    report: &mut Report,
) -> Result<(), String> {
    let sink = CountingSink::start().await.map_err(io("start the sink"))?;
    let echo = EchoServer::start().await;
    let sh = Arc::new(Shared {
        mode: opts.mode,
        path: path.clone(),
        sink: sink.addr,
        bytes: opts.bytes,
        setups: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
    });
    let cpu = |w: Option<&Watched>| w.map(Watched::cpu);

    // 1. bulk
    let c0 = cpu(watched);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..opts.concurrency.max(1) {
        let sh = Arc::clone(&sh);
        let next = Arc::clone(&next);
        let n = opts.tunnels;
        workers.push(tokio::spawn(async move {
            let (mut bytes, mut counted) = (0u64, 0usize);
            while next.fetch_add(1, Ordering::Relaxed) < n {
                match guarded("bulk tunnel", bulk_one(Arc::clone(&sh))).await {
                    Ok(b) => {
                        bytes += b;
                        counted += 1;
                    }
                    Err(e) => sh.error(e),
                }
            }
            (bytes, counted)
        }));
    }
    let mut bulk = Bulk {
        tunnels: opts.tunnels,
        ..Bulk::default()
    };
    for w in workers {
        let (b, c) = w.await.map_err(io("bulk worker"))?;
        bulk.bytes += b;
        bulk.counted += c;
    }
    bulk.secs = started.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (c0, cpu(watched)) {
        report.proxy_cpu.push(("bulk", b - a));
    }
    report.bulk = Some(bulk);

    // 2. churn
    let c0 = cpu(watched);
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mut workers = Vec::new();
    for _ in 0..opts.concurrency.max(1) {
        let sh = Arc::clone(&sh);
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                match guarded("churn tunnel", churn_one(Arc::clone(&sh))).await {
                    Ok(()) => n += 1,
                    Err(e) => sh.error(e),
                }
            }
            n
        }));
    }
    let mut churn = Churn::default();
    for w in workers {
        churn.tunnels += w.await.map_err(io("churn worker"))?;
    }
    churn.secs = started.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (c0, cpu(watched)) {
        report.proxy_cpu.push(("churn", b - a));
    }
    report.churn = Some(churn);
    let setups = std::mem::take(&mut *sh.setups.lock().unwrap_or_else(|p| p.into_inner()));
    report.setup = Some(Latency::of(setups));

    // 3. rtt
    let c0 = cpu(watched);
    match guarded("rtt", rtt(opts.mode, path.clone(), echo.addr, opts.rounds)).await {
        Ok(samples) => report.rtt = Some(Latency::of(samples)),
        Err(e) => report.fail("rtt", e),
    }
    if let (Some(a), Some(b)) = (c0, cpu(watched)) {
        report.proxy_cpu.push(("rtt", b - a));
    }
    for e in std::mem::take(&mut *sh.errors.lock().unwrap_or_else(|p| p.into_inner())) {
        report.fail("tunnel", e);
    }
    Ok(())
}

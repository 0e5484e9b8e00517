//! Helpers for the fault-injection tests (tests/tests/faults*.rs): the real
//! binary's open descriptors, a target that resets its connection on cue, a
//! lossy UDP relay between a QUIC client and the proxy (loss, reordering,
//! delay, a smaller path MTU, or a black hole), and a minimal HTTP/3 client
//! for plain CONNECT (the h3 crate's client always sends `:scheme` and
//! `:path`, which make a CONNECT malformed).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::masque::{read_varint, varint};
use crate::{metric_sample, wait_sample, Certs, ALLOW_LOOPBACK};

/// A config for the binary: "plain" (HTTP/1.1 and h2c), "secure" (HTTP/1.1,
/// HTTP/2, HTTP/3), admin, loopback allowed; `extra` goes in after
/// `[limits] shutdown_grace_s = 1` (more `[limits]` keys may follow it).
pub fn config(certs: &Certs, extra: &str) -> String {
    format!(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\", \"h2\"]\n\n\
         [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
         protocols = [\"http1\", \"h2\", \"h3\"]\ntls_cert = '{}'\ntls_key = '{}'\n\n\
         {ALLOW_LOOPBACK}\n\n[limits]\nshutdown_grace_s = 1\n{extra}\n",
        certs.cert_pem.display(),
        certs.key_pem.display(),
    )
}

// === descriptors and gauges ===

/// Open descriptors of process `pid` (Linux `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Descriptors process `pid` holds besides the splice relay's pool of empty
/// pipes (`bauta_splice_pipes_pooled` on `admin`, two each: bounded, kept
/// for reuse): what a leak would grow.
pub async fn held_fds(pid: u32, admin: SocketAddr) -> usize {
    let text = crate::fetch_metrics(admin).await;
    let pooled = crate::metric_sample(&text, "bauta_splice_pipes_pooled", &[]).unwrap_or(0.0);
    fd_count(pid).saturating_sub(2 * pooled as usize)
}

/// Poll (every 50 ms, at most `limit`) until process `pid` holds no more
/// than `baseline` descriptors ([`held_fds`]); fails the test otherwise.
pub async fn wait_fds(pid: u32, admin: SocketAddr, baseline: usize, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let n = held_fds(pid, admin).await;
        if n <= baseline {
            return;
        }
        if Instant::now() >= deadline {
            let list: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter_map(|e| std::fs::read_link(e.path()).ok())
                        .map(|p| p.display().to_string())
                        .collect()
                })
                .unwrap_or_default();
            // Which sockets, if `ss` is there to say.
            let ss = std::process::Command::new("ss")
                .args(["-tuanp"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let needle = format!("pid={pid},");
            let sockets: Vec<&str> = ss.lines().filter(|l| l.contains(&needle)).collect();
            panic!(
                "{what}: {n} descriptors open after {limit:?}, baseline {baseline}: {list:?}\n{}",
                sockets.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait (at most `limit`) for `bauta_tunnels_active{kind}` to be 0.
pub async fn wait_no_tunnels(admin: SocketAddr, kind: &str, limit: Duration, what: &str) {
    let v = wait_sample(
        admin,
        "bauta_tunnels_active",
        &[("kind", kind)],
        limit,
        |v| v == 0.0,
    )
    .await;
    assert_eq!(v, Some(0.0), "{what}: bauta_tunnels_active{{kind={kind}}}");
}

/// A counter's value in a metrics text (0 when absent).
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sample(text, name, labels).unwrap_or(0.0)
}

// === payloads ===

/// `n` bytes of a pattern that a shifted or dropped byte shows.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// FNV-1a 64: a checksum to name in failure messages.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Assert `got` is exactly `want` (by length and checksum, then bytes).
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got.len() == want.len() && got == want,
        "{what}: got {} bytes (checksum {:x}), want {} bytes (checksum {:x})",
        got.len(),
        checksum(got),
        want.len(),
        checksum(want)
    );
}

/// Make closing `s` send a TCP RST instead of a FIN.
pub fn set_reset_on_close(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

// === a target that resets on cue ===

/// A TCP target for one connection: once its peer has sent one byte (the
/// client's "go"), it writes `payload`, then waits for one more byte (the
/// client's "got everything"), then closes with a RST (SO_LINGER 0). `done`
/// resolves once it has reset.
pub struct ResettingTarget {
    pub addr: SocketAddr,
    pub done: oneshot::Receiver<()>,
    task: JoinHandle<()>,
}

impl ResettingTarget {
    pub async fn start(payload: Vec<u8>) -> ResettingTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
        let addr = listener.local_addr().expect("target addr");
        let (tx, done) = oneshot::channel();
        let task = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut go = [0u8; 1];
            if s.read_exact(&mut go).await.is_err() || s.write_all(&payload).await.is_err() {
                return;
            }
            let mut ack = [0u8; 1];
            let _ = s.read_exact(&mut ack).await;
            set_reset_on_close(&s);
            drop(s);
            let _ = tx.send(());
        });
        ResettingTarget { addr, done, task }
    }
}

impl Drop for ResettingTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream for one forwarded request: it answers with `head` and
/// `body`, then resets (SO_LINGER 0) when `go` fires.
pub async fn resetting_origin(
    head: &'static str,
    body: Vec<u8>,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let (go, wait) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&body).await.is_err() {
            return;
        }
        let _ = wait.await;
        set_reset_on_close(&s);
    });
    (addr, go, task)
}

// === an echo target that says how its connection ended ===

/// How a target's connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum TcpEnd {
    /// A FIN (read returned 0).
    Eof,
    /// A TCP reset (ECONNRESET).
    Reset,
    Other(String),
}

/// An echo server for one connection that reports how it ended.
pub struct ReportingEcho {
    pub addr: SocketAddr,
    pub end: oneshot::Receiver<TcpEnd>,
    task: JoinHandle<()>,
}

impl ReportingEcho {
    pub async fn start() -> ReportingEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("echo addr");
        let (tx, end) = oneshot::channel();
        let task = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 16 * 1024];
            let how = loop {
                match s.read(&mut buf).await {
                    Ok(0) => break TcpEnd::Eof,
                    Ok(n) => {
                        if let Err(e) = s.write_all(&buf[..n]).await {
                            break match e.kind() {
                                std::io::ErrorKind::ConnectionReset => TcpEnd::Reset,
                                _ => TcpEnd::Other(e.to_string()),
                            };
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        break TcpEnd::Reset
                    }
                    Err(e) => break TcpEnd::Other(e.to_string()),
                }
            };
            let _ = tx.send(how);
        });
        ReportingEcho { addr, end, task }
    }
}

impl Drop for ReportingEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === a lossy UDP relay ===

/// How the relay mistreats datagrams, both ways. Decisions come from a
/// fixed-seed generator: every run sees the same pattern.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// Drop this many datagrams per thousand.
    pub loss_permille: u64,
    /// Hold this many per thousand back behind later ones.
    pub reorder_permille: u64,
    /// Delay every datagram by 0..=this.
    pub max_delay: Duration,
    /// Drop datagrams larger than this (a smaller path MTU).
    pub mtu: usize,
}

/// Counts of what the relay did.
#[derive(Default, Debug)]
pub struct RelayStats {
    pub forwarded: AtomicU64,
    pub lost: AtomicU64,
    pub too_big: AtomicU64,
    pub reordered: AtomicU64,
}

/// A UDP relay for one client: the client talks to `addr`, the relay to the
/// proxy from its own socket.
pub struct LossyRelay {
    pub addr: SocketAddr,
    pub stats: Arc<RelayStats>,
    blackhole: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl LossyRelay {
    pub async fn start(proxy: SocketAddr, imp: Impairment) -> LossyRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        back.connect(proxy).await.expect("relay connect");
        let addr = front.local_addr().expect("relay addr");
        let stats = Arc::new(RelayStats::default());
        let blackhole = Arc::new(AtomicBool::new(false));
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let up = {
            let (front, back, stats, hole, client) = (
                Arc::clone(&front),
                Arc::clone(&back),
                Arc::clone(&stats),
                Arc::clone(&blackhole),
                Arc::clone(&client),
            );
            tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((n, from)) = front.recv_from(&mut buf).await else {
                        continue;
                    };
                    *client.lock().expect("relay lock") = Some(from);
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    let back = Arc::clone(&back);
                    impair(&mut rng, imp, &stats, &hole, data, move |d| async move {
                        let _ = back.send(&d).await;
                    });
                }
            })
        };
        let down = {
            let (front, back, stats, hole) = (
                Arc::clone(&front),
                Arc::clone(&back),
                Arc::clone(&stats),
                Arc::clone(&blackhole),
            );
            tokio::spawn(async move {
                let mut rng = Rng(0xd1b5_4a32_d192_ed03);
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok(n) = back.recv(&mut buf).await else {
                        continue;
                    };
                    let Some(to) = *client.lock().expect("relay lock") else {
                        continue;
                    };
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    let front = Arc::clone(&front);
                    impair(&mut rng, imp, &stats, &hole, data, move |d| async move {
                        let _ = front.send_to(&d, to).await;
                    });
                }
            })
        };
        LossyRelay {
            addr,
            stats,
            blackhole,
            tasks: vec![up, down],
        }
    }

    /// From now on, drop everything both ways (the client "vanishes").
    pub fn black_hole(&self) {
        self.blackhole.store(true, Ordering::SeqCst);
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Drop, delay or hold back one datagram, then `send` it.
fn impair<F, Fut>(
    rng: &mut Rng,
    imp: Impairment,
    stats: &RelayStats,
    hole: &AtomicBool,
    data: Bytes,
    send: F,
) where
    F: FnOnce(Bytes) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    if hole.load(Ordering::SeqCst) {
        stats.lost.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if data.len() > imp.mtu {
        stats.too_big.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if rng.next() % 1000 < imp.loss_permille {
        stats.lost.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let max_ms = u64::try_from(imp.max_delay.as_millis()).unwrap_or(u64::MAX);
    let mut delay = Duration::from_millis(rng.next() % (max_ms + 1));
    if rng.next() % 1000 < imp.reorder_permille {
        // Behind whatever comes in the next few milliseconds.
        delay += imp.max_delay + Duration::from_millis(3);
        stats.reordered.fetch_add(1, Ordering::Relaxed);
    }
    stats.forwarded.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        send(data).await;
    });
}

// === a minimal HTTP/3 CONNECT client ===

/// One HTTP/3 CONNECT stream over quinn, framed by hand (RFC 9114 §4.4,
/// §7.2; QPACK static table only, RFC 9204).
pub struct H3Connect {
    pub send: quinn::SendStream,
    pub reader: H3Reader,
}

/// The receiving side of an [`H3Connect`] (and what keeps it alive).
pub struct H3Reader {
    pub conn: quinn::Connection,
    pub recv: quinn::RecvStream,
    /// Unparsed bytes of the response stream.
    buf: BytesMut,
    /// DATA payload bytes still to come in the current frame.
    data_left: u64,
    _control: quinn::SendStream,
    _endpoint: quinn::Endpoint,
}

/// Write `data` as DATA frames of at most 16 KiB.
pub async fn write_data(send: &mut quinn::SendStream, data: &[u8]) {
    for chunk in data.chunks(16 * 1024) {
        let mut frame = varint(0x00);
        frame.extend(varint(chunk.len() as u64));
        frame.extend_from_slice(chunk);
        send.write_all(&frame).await.expect("write DATA");
    }
}

/// How an HTTP/3 stream's receiving side ended.
#[derive(Debug, PartialEq, Eq)]
pub enum H3End {
    Fin,
    Reset(u64),
    Other(String),
}

impl H3Connect {
    /// Connect to `proxy` (or a relay in front of it) and send `CONNECT
    /// authority`; returns the response status and the stream.
    pub async fn open(
        proxy: SocketAddr,
        config: quinn::ClientConfig,
        authority: &str,
    ) -> (u16, H3Connect) {
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind QUIC client endpoint");
        let conn = endpoint
            .connect_with(config, proxy, "localhost")
            .expect("start QUIC connection")
            .await
            .expect("QUIC handshake with the proxy");
        // The control stream: type 0x00, then an empty SETTINGS frame.
        let mut control = conn.open_uni().await.expect("open control stream");
        control
            .write_all(&[0x00, 0x04, 0x00])
            .await
            .expect("write SETTINGS");
        let (mut send, recv) = conn.open_bi().await.expect("open request stream");
        // Required Insert Count 0, Base 0; `:method CONNECT` (static 15);
        // `:authority` (static 0) with a literal value.
        let mut fields = vec![0x00, 0x00, 0xC0 | 15, 0x50];
        let len = u8::try_from(authority.len()).expect("short authority");
        assert!(len < 0x7F, "authority fits a one-byte length");
        fields.push(len);
        fields.extend_from_slice(authority.as_bytes());
        let mut frame = varint(0x01);
        frame.extend(varint(fields.len() as u64));
        frame.extend(fields);
        send.write_all(&frame).await.expect("write HEADERS");
        let mut reader = H3Reader {
            conn,
            recv,
            buf: BytesMut::new(),
            data_left: 0,
            _control: control,
            _endpoint: endpoint,
        };
        let status = reader.read_status().await;
        (status, H3Connect { send, reader })
    }

    /// Write `data` as DATA frames.
    pub async fn write(&mut self, data: &[u8]) {
        write_data(&mut self.send, data).await;
    }

    /// Finish the request stream (FIN): the tunnel's half-close.
    pub fn finish(&mut self) {
        self.send.finish().expect("finish the request stream");
    }
}

impl H3Reader {
    /// Read more of the stream into `buf`; `Err` says how it ended.
    async fn fill(&mut self) -> Result<(), H3End> {
        let mut chunk = [0u8; 16 * 1024];
        match self.recv.read(&mut chunk).await {
            Ok(Some(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(None) => Err(H3End::Fin),
            Err(quinn::ReadError::Reset(code)) => Err(H3End::Reset(code.into_inner())),
            Err(e) => Err(H3End::Other(e.to_string())),
        }
    }

    /// The next frame's (type, payload), DATA excluded (its header only).
    async fn next_frame_header(&mut self) -> Result<(u64, u64), H3End> {
        loop {
            if let Some((ty, n1)) = read_varint(&self.buf) {
                if let Some((len, n2)) = read_varint(&self.buf[n1..]) {
                    self.buf.advance(n1 + n2);
                    return Ok((ty, len));
                }
            }
            self.fill().await?;
        }
    }

    async fn read_status(&mut self) -> u16 {
        loop {
            let (ty, len) = self
                .next_frame_header()
                .await
                .unwrap_or_else(|e| panic!("CONNECT stream ended before a response: {e:?}"));
            let len = usize::try_from(len).expect("frame length");
            while self.buf.len() < len {
                self.fill()
                    .await
                    .unwrap_or_else(|e| panic!("response HEADERS cut short: {e:?}"));
            }
            let payload = self.buf.split_to(len);
            if ty == 0x01 {
                return qpack_status(&payload)
                    .unwrap_or_else(|| panic!("unreadable response HEADERS: {payload:02x?}"));
            }
            // Another frame type (a reserved one): skip it.
        }
    }

    /// The next DATA payload bytes (at most what one read returns), or how
    /// the stream ended.
    pub async fn read(&mut self) -> Result<Bytes, H3End> {
        loop {
            if self.data_left > 0 {
                if self.buf.is_empty() {
                    self.fill().await?;
                }
                let n = self
                    .buf
                    .len()
                    .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
                self.data_left -= n as u64;
                return Ok(self.buf.split_to(n).freeze());
            }
            let (ty, len) = self.next_frame_header().await?;
            if ty == 0x00 {
                self.data_left = len;
                continue;
            }
            let len = usize::try_from(len).expect("frame length");
            while self.buf.len() < len {
                self.fill().await?;
            }
            self.buf.advance(len);
        }
    }

    /// Read exactly `n` DATA bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.read().await {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => panic!(
                    "HTTP/3 tunnel ended after {} of {n} bytes: {e:?}",
                    out.len()
                ),
            }
        }
        out
    }

    /// Read until the stream ends; the bytes and how it ended.
    pub async fn read_to_end(&mut self) -> (Vec<u8>, H3End) {
        let mut out = Vec::new();
        loop {
            match self.read().await {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, e),
            }
        }
    }
}

/// `:status` of a QPACK field section that uses the static table only.
fn qpack_status(section: &[u8]) -> Option<u16> {
    // Skip the prefix (Required Insert Count, Base); expect both 0.
    let fields = section.get(2..)?;
    let first = *fields.first()?;
    // Indexed field line, static (11T=1 + 6-bit index).
    if first & 0xC0 == 0xC0 {
        let mut idx = u64::from(first & 0x3F);
        if idx == 0x3F {
            idx += u64::from(*fields.get(1)?);
        }
        return match idx {
            24 => Some(103),
            25 => Some(200),
            26 => Some(304),
            27 => Some(404),
            28 => Some(503),
            63 => Some(100),
            64 => Some(204),
            65 => Some(206),
            66 => Some(302),
            67 => Some(400),
            68 => Some(403),
            69 => Some(421),
            70 => Some(425),
            71 => Some(500),
            _ => None,
        };
    }
    // Literal with a static name reference (01NT + 4-bit index), value
    // not Huffman-coded.
    if first & 0xF0 == 0x50 {
        let mut i = 1;
        if first & 0x0F == 0x0F {
            i += 1;
        }
        let vlen = usize::from(*fields.get(i)? & 0x7F);
        if fields[i] & 0x80 != 0 {
            return None;
        }
        let v = fields.get(i + 1..i + 1 + vlen)?;
        return std::str::from_utf8(v).ok()?.parse().ok();
    }
    None
}

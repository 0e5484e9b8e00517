//! Datagrams: CONNECT-UDP over HTTP/3 (RFC 9298, QUIC datagrams) to the UDP
//! echo, or plain UDP to it (`--direct`).
//!
//! `--concurrency` flows (each a QUIC connection of its own through the
//! proxy, or a UDP socket) send for `--duration`; each keeps at most
//! `--window` datagrams outstanding (one unit of credit per datagram, one
//! back per echo). If no echo comes for 50 ms while credit is short, what is
//! outstanding is taken as lost and the window refilled. Each payload starts
//! with a sequence number and its send time, for the RTT. After the phase,
//! echoes are waited for for 200 ms more; loss = (sent − echoed) / sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::report::{Latency, Report, Udp};
use super::{LoadOptions, Path, Watched};
use crate::masque::{h3_datagram, stream_id, udp_path, H3Client, H3Request, UdpEcho};

const STALL: Duration = Duration::from_millis(50);
const DRAIN: Duration = Duration::from_millis(200);
/// Sequence number and send time (ns since the phase began) lead the payload.
const STAMP: usize = 16;

/// One flow's way to the echo.
enum Flow {
    Quic {
        conn: quinn::Connection,
        /// Quarter Stream ID and Context ID 0.
        prefix: Vec<u8>,
    },
    Udp(UdpSocket),
}

impl Flow {
    /// The flow, and (through the proxy) the HTTP/3 connection and request
    /// stream to keep open while it runs.
    async fn open(
        path: &Path,
        echo: SocketAddr,
    ) -> Result<(Flow, Option<(H3Client, H3Request)>), String> {
        let Some(proxy) = path.proxy else {
            let s = UdpSocket::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("bind: {e}"))?;
            s.connect(echo).await.map_err(|e| format!("connect: {e}"))?;
            return Ok((Flow::Udp(s), None));
        };
        let mut client = H3Client::connect(proxy, path.certs()?).await;
        let stream = client
            .connect_udp(&udp_path("127.0.0.1", echo.port()))
            .await;
        let prefix = h3_datagram(stream_id(&stream), 0, &[]).to_vec();
        let flow = Flow::Quic {
            conn: client.conn.clone(),
            prefix,
        };
        Ok((flow, Some((client, stream))))
    }

    fn send(&self, payload: &[u8]) -> Result<(), String> {
        match self {
            Flow::Quic { conn, prefix, .. } => {
                let mut d = Vec::with_capacity(prefix.len() + payload.len());
                d.extend_from_slice(prefix);
                d.extend_from_slice(payload);
                conn.send_datagram(Bytes::from(d))
                    .map_err(|e| format!("send datagram: {e}"))
            }
            Flow::Udp(s) => match s.try_send(payload) {
                Ok(_) => Ok(()),
                // A full socket buffer drops the datagram, as a network would.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(format!("send: {e}")),
            },
        }
    }

    /// The next echoed payload (prefix removed), or `None` after `limit`.
    async fn recv(&self, limit: Duration) -> Result<Option<Bytes>, String> {
        match self {
            Flow::Quic { conn, prefix, .. } => {
                match tokio::time::timeout(limit, conn.read_datagram()).await {
                    Err(_) => Ok(None),
                    Ok(Err(e)) => Err(format!("connection ended: {e}")),
                    Ok(Ok(d)) if d.starts_with(prefix) => Ok(Some(d.slice(prefix.len()..))),
                    Ok(Ok(d)) => Err(format!(
                        "datagram with another prefix: {:02x?}",
                        &d[..2.min(d.len())]
                    )),
                }
            }
            Flow::Udp(s) => {
                let mut buf = vec![0u8; 65536];
                match tokio::time::timeout(limit, s.recv(&mut buf)).await {
                    Err(_) => Ok(None),
                    Ok(Err(e)) => Err(format!("recv: {e}")),
                    Ok(Ok(n)) => {
                        buf.truncate(n);
                        Ok(Some(Bytes::from(buf)))
                    }
                }
            }
        }
    }

    /// Wait (2 s at most) until a datagram of `len` fits the QUIC path
    /// (quinn starts at 1200 bytes and probes upwards).
    async fn fits(&self, len: usize) -> Result<(), String> {
        let Flow::Quic { conn, prefix, .. } = self else {
            return Ok(());
        };
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            let max = conn.max_datagram_size().unwrap_or(0);
            if max >= prefix.len() + len {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "a {len}-byte payload does not fit the QUIC path (max datagram {max})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    echoed: AtomicU64,
}

/// One flow for the phase; its RTT samples.
async fn flow(
    path: Path,
    echo: SocketAddr,
    payload: usize,
    window: usize,
    base: Instant,
    deadline: Instant,
    counts: Arc<Counts>,
) -> Result<Vec<Duration>, String> {
    let (f, _keep) = Flow::open(&path, echo).await?;
    let f = Arc::new(f);
    f.fits(payload).await?;
    let credit = Arc::new(Semaphore::new(window));
    let sender = {
        let f = Arc::clone(&f);
        let credit = Arc::clone(&credit);
        let counts = Arc::clone(&counts);
        tokio::spawn(async move {
            let mut buf = vec![0u8; payload];
            let mut seq = 0u64;
            while let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, credit.acquire()).await {
                permit.forget();
                buf[..8].copy_from_slice(&seq.to_be_bytes());
                let ns = base.elapsed().as_nanos() as u64;
                buf[8..16].copy_from_slice(&ns.to_be_bytes());
                f.send(&buf)?;
                counts.sent.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            Ok::<_, String>(())
        })
    };
    let mut rtts = Vec::new();
    loop {
        match f.recv(STALL).await? {
            Some(d) if d.len() == payload => {
                let ns = u64::from_be_bytes(d[8..16].try_into().map_err(|_| "short stamp")?);
                let now = base.elapsed().as_nanos() as u64;
                rtts.push(Duration::from_nanos(now.saturating_sub(ns)));
                counts.echoed.fetch_add(1, Ordering::Relaxed);
                if credit.available_permits() < window {
                    credit.add_permits(1);
                }
            }
            Some(d) => return Err(format!("{} bytes echoed, {payload} sent", d.len())),
            None => {
                let now = Instant::now();
                if now >= deadline + DRAIN {
                    break;
                }
                if now < deadline {
                    credit.add_permits(window.saturating_sub(credit.available_permits()));
                }
            }
        }
    }
    sender.await.map_err(|e| format!("sender: {e}"))??;
    Ok(rtts)
}

pub async fn run(
    opts: &LoadOptions,
    path: &Path,
    watched: Option<&Watched>,
    report: &mut Report,
) -> Result<(), String> {
    if !(STAMP..=1400).contains(&opts.payload) {
        return Err(format!("--payload {}: want {STAMP}..=1400", opts.payload));
    }
    let echo = UdpEcho::start().await;
    let counts = Arc::new(Counts::default());
    let c0 = watched.map(Watched::cpu);
    let base = Instant::now();
    let deadline = base + opts.duration;
    let mut flows = Vec::new();
    for _ in 0..opts.concurrency.max(1) {
        flows.push(tokio::spawn(flow(
            path.clone(),
            echo.addr,
            opts.payload,
            opts.window.max(1),
            base,
            deadline,
            Arc::clone(&counts),
        )));
    }
    let mut rtts = Vec::new();
    for f in flows {
        match tokio::time::timeout_at(deadline + Duration::from_secs(30), f).await {
            Ok(Ok(Ok(r))) => rtts.extend(r),
            Ok(Ok(Err(e))) => report.fail("udp flow", e),
            Ok(Err(e)) => report.fail("udp flow", e),
            Err(_) => report.fail("udp flow", "did not end"),
        }
    }
    if let (Some(a), Some(w)) = (c0, watched) {
        report.proxy_cpu.push(("udp", w.cpu() - a));
    }
    report.udp = Some(Udp {
        flows: opts.concurrency.max(1),
        payload: opts.payload,
        window: opts.window.max(1),
        sent: counts.sent.load(Ordering::Relaxed),
        echoed: counts.echoed.load(Ordering::Relaxed),
        secs: opts.duration.as_secs_f64(),
        rtt: Latency::of(rtts),
    });
    Ok(())
}

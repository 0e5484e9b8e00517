//! The UDP tunnel of CONNECT-UDP (RFC 9298): one connected UDP socket per
//! flow, whatever the front. Client datagrams arrive through a
//! [`DatagramChannel`] (HTTP/3: QUIC DATAGRAM frames, implemented by that
//! front) or as DATAGRAM capsules on the request stream (HTTP/3 fallback,
//! HTTP/2 and HTTP/1.1); replies go back the same way.
//!
//! [`relay`] is the thin driver: it moves bytes and datagrams and asks the
//! sans-IO [`FlowState`] (`udp_flow.rs`) what they mean and when the flow
//! ends (stream end, malformed capsule, idle timeout, abort). Nothing is
//! allocated per packet on the forwarding
//! path: capsules are sliced out of the read buffer, target replies are
//! received into a per-flow buffer with room for the framing in front.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prometheus::IntCounter;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::ops::metrics::Metrics;
use crate::tunnel::carriage::{Carriage, Leg, LegCounters};
use crate::tunnel::udp_flow::{DropReason, FlowState, Uplink};
use crate::wire::capsule;

pub use crate::tunnel::udp_flow::{FlowEnd, FlowReport};

/// Every `reason` label value of `bauta_udp_drops_total`.
pub const DROP_REASONS: &[&str] = &[
    "unknown_context",
    "unknown_stream",
    "too_large",
    "queue_full",
    "send_failed",
    "malformed",
];

/// Largest UDP payload (IPv6 jumbograms aside): 65535 − 8.
pub const MAX_UDP_PAYLOAD: usize = 65527;
/// Room for an HTTP/3 datagram header (Quarter Stream ID + Context ID).
pub const DATAGRAM_HEADROOM: usize = 16;
/// Size of the buffers datagram replies are cut from.
const DATAGRAM_SLAB: usize = 256 * 1024;
/// Capsule read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// HTTP datagrams outside the request stream (HTTP/3: QUIC DATAGRAM frames),
/// as the front that owns them offers them. Capsules on the stream are the
/// fallback and need no channel.
pub trait DatagramChannel: Send {
    /// True once datagrams may be sent to the client (RFC 9297 §2.1.1: it
    /// sent SETTINGS_H3_DATAGRAM = 1 and a max_datagram_frame_size).
    fn ready(&self) -> bool;
    /// The client's datagrams, Context ID first (the Quarter Stream ID
    /// already removed); taken once by the relay.
    fn incoming(&mut self) -> Option<mpsc::Receiver<Bytes>>;
    /// Write this flow's datagram header (Quarter Stream ID, Context ID 0)
    /// at the end of `out`.
    fn put_header(&self, out: &mut BytesMut) -> io::Result<()>;
    /// Send one datagram built by `put_header` + payload.
    fn send(&self, datagram: Bytes) -> DatagramSent;
}

/// What became of one datagram handed to [`DatagramChannel::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramSent {
    Sent,
    /// Too big for the client's path (RFC 9297 §3.5: dropped, not re-encoded).
    TooLarge,
    /// Dropped for another reason.
    Dropped,
    /// The connection is gone.
    Closed,
}

/// For fronts without datagrams (HTTP/1.1, HTTP/2): capsules only.
pub enum NoDatagrams {}

impl DatagramChannel for NoDatagrams {
    fn ready(&self) -> bool {
        match *self {}
    }
    fn incoming(&mut self) -> Option<mpsc::Receiver<Bytes>> {
        match *self {}
    }
    fn put_header(&self, _: &mut BytesMut) -> io::Result<()> {
        match *self {}
    }
    fn send(&self, _: Bytes) -> DatagramSent {
        match *self {}
    }
}

/// One flow's limits and signals.
pub struct FlowSettings<A> {
    pub idle_timeout: Duration,
    /// Resolves when the flow must end now (shutdown grace over).
    pub abort: A,
}

// === the relay ===

/// Per-flow counters, looked up once.
struct FlowMetrics {
    up_datagrams: IntCounter,
    down_datagrams: IntCounter,
    up_bytes: IntCounter,
    down_bytes: IntCounter,
    drop_unknown_context: IntCounter,
    drop_too_large: IntCounter,
    drop_send_failed: IntCounter,
    client: LegCounters,
}

impl FlowMetrics {
    fn new(m: &Metrics) -> FlowMetrics {
        let kind = "connect-udp";
        FlowMetrics {
            up_datagrams: m.udp_datagrams.with_label_values(&["upstream"]),
            down_datagrams: m.udp_datagrams.with_label_values(&["downstream"]),
            up_bytes: m.tunnel_bytes.with_label_values(&[kind, "upstream"]),
            down_bytes: m.tunnel_bytes.with_label_values(&[kind, "downstream"]),
            drop_unknown_context: m.udp_drops.with_label_values(&["unknown_context"]),
            drop_too_large: m.udp_drops.with_label_values(&["too_large"]),
            drop_send_failed: m.udp_drops.with_label_values(&["send_failed"]),
            client: LegCounters::new(m, Leg::Client),
        }
    }
}

/// Relay one flow between the client (capsules on `io`, and datagrams on
/// `datagrams` when the front has them) and the connected `socket`, until the
/// request stream ends, a capsule is malformed, the flow idles out, or
/// `settings.abort` resolves. Counts into the metrics as it goes.
pub async fn relay<IO, D, A>(
    socket: &UdpSocket,
    io: IO,
    mut datagrams: Option<D>,
    settings: FlowSettings<A>,
    metrics: &Metrics,
) -> FlowReport
where
    IO: AsyncRead + AsyncWrite + Unpin,
    D: DatagramChannel,
    A: Future<Output = ()>,
{
    let fm = FlowMetrics::new(metrics);
    let mut flow = FlowState::new(Instant::now(), settings.idle_timeout, MAX_UDP_PAYLOAD);
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    // Reply buffer: capsule header room in front, then the payload.
    let mut reply = vec![0u8; capsule::DATAGRAM_CAPSULE_HEADER_MAX + MAX_UDP_PAYLOAD];
    let mut dgram_out = BytesMut::new();
    // One timer per flow, re-armed to the flow's deadline only when it fires.
    let timer = tokio::time::sleep_until(flow.poll_timeout().into());
    tokio::pin!(timer);
    let mut datagrams_ready = false;
    let mut incoming = datagrams.as_mut().and_then(|d| d.incoming());
    let abort = settings.abort;
    tokio::pin!(abort);

    while flow.poll_end().is_none() {
        // Decided per reply until true: the client's SETTINGS may arrive
        // after its request.
        if !datagrams_ready {
            datagrams_ready = datagrams.as_ref().is_some_and(|d| d.ready());
        }
        let channel = datagrams.as_ref().filter(|_| datagrams_ready);
        tokio::select! {
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) => flow.handle_stream_end(&rbuf),
                Ok(_) => {
                    flow.handle_stream_data(Instant::now());
                    while let Some(up) = flow.poll_uplink(&mut rbuf) {
                        fm.client.received(Carriage::Capsule);
                        uplink(socket, up, &fm).await;
                    }
                    if rbuf.capacity() - rbuf.len() < 1024 {
                        rbuf.reserve(READ_CHUNK);
                    }
                }
                Err(_) => flow.handle_client_error(),
            },
            d = recv_datagram(&mut incoming) => match d {
                Some(data) => {
                    fm.client.received(Carriage::Quic);
                    let up = flow.handle_datagram(Instant::now(), data);
                    uplink(socket, up, &fm).await;
                }
                None => incoming = None,
            },
            r = recv_reply(socket, channel, &mut reply, &mut dgram_out) => match r {
                Ok(n) => {
                    let (sent, carriage) = match channel {
                        Some(ch) => (send_datagram(ch, &mut dgram_out, &fm), Carriage::Quic),
                        None => (send_capsule(&mut wr, &mut reply, n, &fm).await, Carriage::Capsule),
                    };
                    match sent {
                        Ok(true) => {
                            fm.client.sent(carriage);
                            flow.handle_delivered(Instant::now(), n);
                            fm.down_datagrams.inc();
                            fm.down_bytes.inc_by(n as u64);
                        }
                        Ok(false) => {}
                        Err(()) => flow.handle_client_error(),
                    }
                }
                // ICMP errors on a connected socket (port unreachable…): keep going.
                Err(_) => fm.drop_send_failed.inc(),
            },
            _ = &mut timer => {
                flow.handle_timeout(Instant::now());
                timer.as_mut().reset(flow.poll_timeout().into());
            }
            _ = &mut abort => flow.handle_abort(),
        }
    }
    let report = flow.report();
    if report.end == FlowEnd::Closed {
        let _ = wr.shutdown().await;
    }
    report
}

/// Carry out one uplink decision: send the payload to the target, or count the drop.
async fn uplink(socket: &UdpSocket, up: Uplink, fm: &FlowMetrics) {
    match up {
        Uplink::Send(payload) => forward_up(socket, &payload, fm).await,
        Uplink::Drop(DropReason::TooLarge) => fm.drop_too_large.inc(),
        Uplink::Drop(DropReason::UnknownContext) => fm.drop_unknown_context.inc(),
    }
}

async fn recv_datagram(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn forward_up(socket: &UdpSocket, payload: &[u8], fm: &FlowMetrics) {
    match socket.send(payload).await {
        Ok(_) => {
            fm.up_datagrams.inc();
            fm.up_bytes.inc_by(payload.len() as u64);
        }
        Err(e) => {
            // EMSGSIZE (Linux errno 90): larger than the path to the target allows.
            if e.raw_os_error() == Some(90) {
                fm.drop_too_large.inc();
            } else {
                fm.drop_send_failed.inc();
            }
        }
    }
}

/// Receive one reply from the target into the buffer its downlink needs:
/// `out` behind the channel's datagram header when datagrams are in use,
/// else `reply` behind room for a capsule header.
async fn recv_reply<D: DatagramChannel>(
    socket: &UdpSocket,
    channel: Option<&D>,
    reply: &mut [u8],
    out: &mut BytesMut,
) -> io::Result<usize> {
    match channel {
        Some(channel) => {
            if out.is_empty() {
                // Datagrams are carved out of a slab: one allocation per
                // slab, not per datagram; the transport frees each slab once
                // it has sent every datagram cut from it.
                if out.capacity() < DATAGRAM_HEADROOM + MAX_UDP_PAYLOAD {
                    *out = BytesMut::with_capacity(DATAGRAM_SLAB);
                }
                channel.put_header(out)?;
            }
            let head = out.len();
            let n = socket.recv_buf(out).await?;
            debug_assert_eq!(out.len(), head + n);
            Ok(n)
        }
        None => {
            let room = capsule::DATAGRAM_CAPSULE_HEADER_MAX;
            let buf = reply.get_mut(room..).unwrap_or_default();
            socket.recv(buf).await
        }
    }
}

/// Send the prepared datagram. `Ok(false)`: dropped (counted); `Err`: the
/// connection is gone.
fn send_datagram<D: DatagramChannel>(
    channel: &D,
    out: &mut BytesMut,
    fm: &FlowMetrics,
) -> Result<bool, ()> {
    match channel.send(out.split().freeze()) {
        DatagramSent::Sent => Ok(true),
        DatagramSent::TooLarge => {
            fm.drop_too_large.inc();
            Ok(false)
        }
        DatagramSent::Dropped => {
            fm.drop_send_failed.inc();
            Ok(false)
        }
        DatagramSent::Closed => Err(()),
    }
}

/// Write one DATAGRAM capsule (header in the room before the payload).
async fn send_capsule<W: AsyncWrite + Unpin>(
    wr: &mut W,
    reply: &mut [u8],
    n: usize,
    fm: &FlowMetrics,
) -> Result<bool, ()> {
    let room = capsule::DATAGRAM_CAPSULE_HEADER_MAX;
    let header = match capsule::datagram_capsule_header(0, n) {
        Ok(h) => h,
        Err(_) => {
            fm.drop_too_large.inc();
            return Ok(false);
        }
    };
    let h = header.as_bytes();
    let start = room - h.len();
    let frame = match reply.get_mut(start..room + n) {
        Some(f) => f,
        None => return Ok(false),
    };
    frame[..h.len()].copy_from_slice(h);
    wr.write_all(frame).await.map_err(|_| ())?;
    wr.flush().await.map_err(|_| ())?;
    Ok(true)
}

//! A CONNECT-UDP flow relayed to a parent proxy instead of a UDP socket
//! (sidecar mode). Both sides carry HTTP datagrams (RFC 9297) as QUIC
//! DATAGRAM frames when their HTTP/3 connection negotiated them, as
//! DATAGRAM capsules on the request stream otherwise; a datagram leaves
//! each side the way the other side takes it.
//!
//! The datagram's bytes (Context ID and payload) travel unchanged: between
//! two HTTP/3 connections only the Quarter Stream ID in front of them
//! changes, and between a datagram and a capsule only the framing. When
//! neither side has datagrams the caller relays the two capsule streams as
//! bytes instead (every capsule passes, unknown types included); here,
//! capsules other than DATAGRAM are dropped (RFC 9297 §3.2 lets an
//! intermediary that parses them do so only for types it does not know).

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::ops::metrics::Metrics;
use crate::tunnel::carriage::{Carriage, Leg, LegCounters};
use crate::tunnel::udp::{DatagramChannel, DatagramSent, MAX_UDP_PAYLOAD};
use crate::wire::capsule::{self, CapsuleDecoder, Event};
use crate::wire::varint;

/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// How a chained flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainEnd {
    /// Either side ended its stream.
    Closed,
    /// No datagram either way for the idle timeout.
    Idle,
    /// The client sent a malformed capsule.
    Malformed,
    /// The gateway's stream failed or carried a malformed capsule.
    GatewayError,
    /// The client's side failed.
    ClientError,
    Aborted,
}

/// Payload bytes moved; `up` is client → gateway.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChainReport {
    pub up: u64,
    pub down: u64,
}

/// One side of the relay: its request stream (written half), its
/// datagram channel, if any, and its carriage counters.
struct Side<W, D> {
    stream: W,
    datagrams: Option<D>,
    out: BytesMut,
    counters: LegCounters,
}

impl<W: AsyncWrite + Unpin, D: DatagramChannel> Side<W, D> {
    /// Deliver one HTTP datagram (`context_id`, `payload`) to this side: a
    /// QUIC DATAGRAM when it takes them and the context is 0 (the only one
    /// these flows negotiate), else a DATAGRAM capsule on its stream. Too
    /// big for its QUIC path: dropped (RFC 9297 §3.5), not re-framed.
    async fn deliver(&mut self, context_id: u64, payload: &[u8]) -> std::io::Result<()> {
        self.out.clear();
        if let Some(dg) = self
            .datagrams
            .as_ref()
            .filter(|d| context_id == 0 && d.ready())
        {
            dg.put_header(&mut self.out)?;
            self.out.extend_from_slice(payload);
            return match dg.send(self.out.split().freeze()) {
                DatagramSent::Closed => Err(std::io::ErrorKind::ConnectionAborted.into()),
                DatagramSent::Sent => {
                    self.counters.sent(Carriage::Quic);
                    Ok(())
                }
                DatagramSent::TooLarge | DatagramSent::Dropped => Ok(()),
            };
        }
        capsule::encode_datagram_capsule(context_id, payload, &mut self.out)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.stream.write_all(&self.out).await?;
        self.counters.sent(Carriage::Capsule);
        Ok(())
    }
}

/// Relay the client (stream and datagrams) and the gateway's CONNECT-UDP
/// stream (and datagrams) until one ends, counting each leg's carriage.
pub async fn relay<C, G, D, E, A>(
    client: C,
    client_datagrams: Option<D>,
    gateway: G,
    gateway_datagrams: Option<E>,
    idle_timeout: Duration,
    abort: A,
    metrics: &Metrics,
) -> (ChainReport, ChainEnd)
where
    C: AsyncRead + AsyncWrite + Unpin,
    G: AsyncRead + AsyncWrite + Unpin,
    D: DatagramChannel,
    E: DatagramChannel,
    A: Future<Output = ()>,
{
    let (mut crd, cwr) = tokio::io::split(client);
    let (mut grd, gwr) = tokio::io::split(gateway);
    let mut client = Side {
        stream: cwr,
        datagrams: client_datagrams,
        out: BytesMut::new(),
        counters: LegCounters::new(metrics, Leg::Client),
    };
    let mut gw = Side {
        stream: gwr,
        datagrams: gateway_datagrams,
        out: BytesMut::new(),
        counters: LegCounters::new(metrics, Leg::Gateway),
    };
    let mut client_in = client.datagrams.as_mut().and_then(|d| d.incoming());
    let mut gw_in = gw.datagrams.as_mut().and_then(|d| d.incoming());
    let mut cbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut gbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut from_client = CapsuleDecoder::new(MAX_UDP_PAYLOAD);
    let mut from_gateway = CapsuleDecoder::new(MAX_UDP_PAYLOAD);
    let mut report = ChainReport::default();
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle, abort);
    let end = loop {
        let step = tokio::select! {
            r = crd.read_buf(&mut cbuf) => match r {
                Ok(0) => Err(ChainEnd::Closed),
                Ok(_) => pump(&mut from_client, &mut cbuf, &client.counters, &mut gw, &mut report.up, ChainEnd::Malformed, ChainEnd::GatewayError).await,
                Err(_) => Err(ChainEnd::ClientError),
            },
            d = recv(&mut client_in) => match d {
                Some(d) => {
                    client.counters.received(Carriage::Quic);
                    forward(&d, &mut gw, &mut report.up, ChainEnd::GatewayError).await
                }
                None => { client_in = None; Ok(()) }
            },
            r = grd.read_buf(&mut gbuf) => match r {
                Ok(0) => Err(ChainEnd::Closed),
                Ok(_) => pump(&mut from_gateway, &mut gbuf, &gw.counters, &mut client, &mut report.down, ChainEnd::GatewayError, ChainEnd::ClientError).await,
                Err(_) => Err(ChainEnd::GatewayError),
            },
            d = recv(&mut gw_in) => match d {
                Some(d) => {
                    gw.counters.received(Carriage::Quic);
                    forward(&d, &mut client, &mut report.down, ChainEnd::ClientError).await
                }
                None => { gw_in = None; Ok(()) }
            },
            _ = &mut idle => Err(ChainEnd::Idle),
            _ = &mut abort => Err(ChainEnd::Aborted),
        };
        match step {
            Ok(()) => idle
                .as_mut()
                .reset(tokio::time::Instant::now() + idle_timeout),
            Err(end) => break end,
        }
    };
    if end == ChainEnd::Closed {
        let _ = client.stream.shutdown().await;
        let _ = gw.stream.shutdown().await;
    }
    (report, end)
}

/// The capsules read so far from one side (counted on `from`), delivered
/// to `to`.
async fn pump<W: AsyncWrite + Unpin, D: DatagramChannel>(
    decoder: &mut CapsuleDecoder,
    buf: &mut BytesMut,
    from: &LegCounters,
    to: &mut Side<W, D>,
    moved: &mut u64,
    malformed: ChainEnd,
    failed: ChainEnd,
) -> Result<(), ChainEnd> {
    loop {
        match decoder.decode(buf) {
            Ok(None) => break,
            Ok(Some(Event::Datagram {
                context_id,
                payload,
            })) => {
                from.received(Carriage::Capsule);
                to.deliver(context_id, &payload).await.map_err(|_| failed)?;
                *moved += payload.len() as u64;
            }
            Ok(Some(_)) => {}
            Err(_) => return Err(malformed),
        }
    }
    to.stream.flush().await.map_err(|_| failed)?;
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    Ok(())
}

/// One received datagram (Context ID first) delivered to `to`.
async fn forward<W: AsyncWrite + Unpin, D: DatagramChannel>(
    datagram: &Bytes,
    to: &mut Side<W, D>,
    moved: &mut u64,
    failed: ChainEnd,
) -> Result<(), ChainEnd> {
    // A datagram whose Context ID does not parse is dropped (RFC 9297 §2.1).
    let Ok((context_id, n)) = varint::decode(datagram) else {
        return Ok(());
    };
    let payload = datagram.get(n..).unwrap_or_default();
    to.deliver(context_id, payload).await.map_err(|_| failed)?;
    if to.datagrams.as_ref().is_none_or(|d| !d.ready()) {
        to.stream.flush().await.map_err(|_| failed)?;
    }
    *moved += payload.len() as u64;
    Ok(())
}

async fn recv(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

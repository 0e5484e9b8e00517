//! A CONNECT-UDP flow relayed to a parent proxy instead of a UDP socket
//! (sidecar mode): the client's HTTP datagrams — QUIC DATAGRAM frames on
//! HTTP/3, DATAGRAM capsules on the stream otherwise — go to the gateway as
//! DATAGRAM capsules on its CONNECT-UDP stream, and back.
//!
//! Each datagram's bytes (Context ID and payload) travel unchanged; only the
//! framing around them changes. A client without a datagram channel speaks
//! capsules on both sides, and is relayed as a byte stream by the caller
//! instead (every capsule passes, unknown types included).

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tunnel::udp::{DatagramChannel, DatagramSent, MAX_UDP_PAYLOAD};
use crate::wire::capsule::{self, CapsuleDecoder, CapsuleType, Event};

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

/// Relay the client (`client` stream capsules and `datagrams`) and the
/// gateway's CONNECT-UDP stream until one ends.
pub async fn relay<C, G, D, A>(
    client: C,
    mut datagrams: D,
    gateway: G,
    idle_timeout: Duration,
    abort: A,
) -> (ChainReport, ChainEnd)
where
    C: AsyncRead + AsyncWrite + Unpin,
    G: AsyncRead + AsyncWrite + Unpin,
    D: DatagramChannel,
    A: Future<Output = ()>,
{
    let (mut crd, mut cwr) = tokio::io::split(client);
    let (mut grd, mut gwr) = tokio::io::split(gateway);
    let mut cbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut gbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut from_client = CapsuleDecoder::new(MAX_UDP_PAYLOAD);
    let mut from_gateway = CapsuleDecoder::new(MAX_UDP_PAYLOAD);
    let mut incoming = datagrams.incoming();
    let mut out = BytesMut::new();
    let mut report = ChainReport::default();
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle, abort);
    let end = loop {
        tokio::select! {
            r = crd.read_buf(&mut cbuf) => match r {
                Ok(0) => break ChainEnd::Closed,
                Ok(_) => {
                    let mut failed = None;
                    loop {
                        match from_client.decode(&mut cbuf) {
                            Ok(None) => break,
                            Ok(Some(Event::Datagram { context_id, payload })) => {
                                out.clear();
                                let _ = capsule::encode_datagram_capsule(context_id, &payload, &mut out);
                                if gwr.write_all(&out).await.is_err() {
                                    failed = Some(ChainEnd::GatewayError);
                                    break;
                                }
                                report.up += payload.len() as u64;
                            }
                            Ok(Some(_)) => {}
                            Err(_) => {
                                failed = Some(ChainEnd::Malformed);
                                break;
                            }
                        }
                    }
                    if let Some(end) = failed {
                        break end;
                    }
                    let _ = gwr.flush().await;
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                    reserve(&mut cbuf);
                }
                Err(_) => break ChainEnd::ClientError,
            },
            d = recv(&mut incoming) => match d {
                // Context ID and payload as they came: the capsule's value.
                Some(dgram) => {
                    out.clear();
                    let _ = capsule::encode_capsule(CapsuleType::DATAGRAM, &dgram, &mut out);
                    if gwr.write_all(&out).await.is_err() || gwr.flush().await.is_err() {
                        break ChainEnd::GatewayError;
                    }
                    report.up += dgram.len().saturating_sub(1) as u64;
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                }
                None => incoming = None,
            },
            r = grd.read_buf(&mut gbuf) => match r {
                Ok(0) => break ChainEnd::Closed,
                Ok(_) => {
                    let mut failed = None;
                    loop {
                        match from_gateway.decode(&mut gbuf) {
                            Ok(None) => break,
                            Ok(Some(Event::Datagram { context_id, payload })) => {
                                if to_client(&datagrams, &mut cwr, &mut out, context_id, &payload).await.is_err() {
                                    failed = Some(ChainEnd::ClientError);
                                    break;
                                }
                                report.down += payload.len() as u64;
                            }
                            Ok(Some(_)) => {}
                            Err(_) => {
                                failed = Some(ChainEnd::GatewayError);
                                break;
                            }
                        }
                    }
                    if let Some(end) = failed {
                        break end;
                    }
                    let _ = cwr.flush().await;
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                    reserve(&mut gbuf);
                }
                Err(_) => break ChainEnd::GatewayError,
            },
            _ = &mut idle => break ChainEnd::Idle,
            _ = &mut abort => break ChainEnd::Aborted,
        }
    };
    if end == ChainEnd::Closed {
        let _ = cwr.shutdown().await;
        let _ = gwr.shutdown().await;
    }
    (report, end)
}

/// One datagram from the gateway to the client: a QUIC DATAGRAM when the
/// client can take them and the context is 0 (the only one this flow
/// negotiated), else a DATAGRAM capsule on its stream. A datagram too big
/// for the client's path is dropped (RFC 9297 §3.5), not re-framed.
async fn to_client<D: DatagramChannel, W: AsyncWrite + Unpin>(
    datagrams: &D,
    stream: &mut W,
    out: &mut BytesMut,
    context_id: u64,
    payload: &Bytes,
) -> std::io::Result<()> {
    out.clear();
    if context_id == 0 && datagrams.ready() {
        datagrams.put_header(out)?;
        out.extend_from_slice(payload);
        return match datagrams.send(out.split().freeze()) {
            DatagramSent::Closed => Err(std::io::ErrorKind::ConnectionAborted.into()),
            _ => Ok(()),
        };
    }
    capsule::encode_datagram_capsule(context_id, payload, out)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(out).await
}

async fn recv(rx: &mut Option<tokio::sync::mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
}

//! HTTP/3 datagrams (RFC 9297 §2) on one QUIC connection: a router task that
//! hands each received QUIC DATAGRAM to the flow of the request stream its
//! Quarter Stream ID names, and the [`DatagramChannel`] a flow uses to send
//! and receive them.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::ops::metrics::Metrics;
use crate::tunnel::udp::{DatagramChannel, DatagramSent};
use crate::wire::datagram;
use crate::wire::h3_error::H3ErrorCode;

/// Datagrams queued from the router to one flow before we drop.
const FLOW_QUEUE: usize = 256;

/// Routes received QUIC DATAGRAM frames of one connection to the flow of the
/// request stream named by their Quarter Stream ID.
#[derive(Clone)]
pub struct QuicDatagrams {
    register: mpsc::UnboundedSender<(u64, mpsc::Sender<Bytes>)>,
}

/// One flow's datagrams on its QUIC connection.
pub struct QuicFlowChannel {
    conn: quinn::Connection,
    stream_id: u64,
    rx: Option<mpsc::Receiver<Bytes>>,
    /// The connection's view of the client's SETTINGS.
    peer: Arc<h3::SharedState>,
}

// === impl QuicDatagrams ===

impl QuicDatagrams {
    pub fn spawn(conn: quinn::Connection, metrics: Arc<Metrics>) -> QuicDatagrams {
        let (register, mut reg_rx) = mpsc::unbounded_channel::<(u64, mpsc::Sender<Bytes>)>();
        tokio::spawn(async move {
            let mut flows: HashMap<u64, mpsc::Sender<Bytes>> = HashMap::new();
            let unknown = metrics.udp_drops.with_label_values(&["unknown_stream"]);
            let full = metrics.udp_drops.with_label_values(&["queue_full"]);
            loop {
                tokio::select! {
                    // Registrations first: a flow is registered before its 2xx
                    // is sent, so a datagram the client sends after the 2xx
                    // finds it, even when both are ready in the same poll
                    // (an unbiased select dropped ~1 in 1,200 first datagrams).
                    biased;
                    r = reg_rx.recv() => match r {
                        Some((id, tx)) => { flows.insert(id, tx); }
                        None => break,
                    },
                    d = conn.read_datagram() => {
                        let Ok(data) = d else { break };
                        match datagram::decode_quarter_stream_id(&data) {
                            Ok((stream_id, payload)) => match flows.get(&stream_id) {
                                Some(tx) => match tx.try_send(payload) {
                                    Ok(()) => {}
                                    Err(mpsc::error::TrySendError::Full(_)) => full.inc(),
                                    Err(mpsc::error::TrySendError::Closed(_)) => {
                                        flows.remove(&stream_id);
                                        unknown.inc();
                                    }
                                },
                                // RFC 9297 §2.1: a stream not (or no longer) open → drop.
                                None => unknown.inc(),
                            },
                            Err(e) => {
                                // RFC 9297 §2.1: too short for a Quarter Stream ID, or
                                // beyond 2^60-1 → connection error H3_DATAGRAM_ERROR.
                                tracing::debug!(error = %e, "malformed HTTP/3 datagram; closing the connection");
                                metrics.udp_drops.with_label_values(&["malformed"]).inc();
                                conn.close(quinn::VarInt::from_u64(H3ErrorCode::DATAGRAM_ERROR.0).unwrap_or_default(), b"malformed HTTP/3 datagram");
                                break;
                            }
                        }
                    }
                }
            }
        });
        QuicDatagrams { register }
    }

    /// Start routing the datagrams of `stream_id` to a new flow channel.
    /// Call before answering the request, so that no datagram sent right
    /// after the 2xx is lost.
    pub fn register(
        &self,
        conn: quinn::Connection,
        stream_id: u64,
        peer: Arc<h3::SharedState>,
    ) -> QuicFlowChannel {
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        let _ = self.register.send((stream_id, tx));
        QuicFlowChannel {
            conn,
            stream_id,
            rx: Some(rx),
            peer,
        }
    }
}

// === impl QuicFlowChannel ===

impl DatagramChannel for QuicFlowChannel {
    fn ready(&self) -> bool {
        use h3::ConnectionState;
        self.peer.settings().enable_datagram() && self.conn.max_datagram_size().is_some()
    }

    fn incoming(&mut self) -> Option<mpsc::Receiver<Bytes>> {
        self.rx.take()
    }

    fn put_header(&self, out: &mut BytesMut) -> io::Result<()> {
        datagram::encode_h3_datagram_header(self.stream_id, 0, out)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn send(&self, dgram: Bytes) -> DatagramSent {
        match self.conn.send_datagram(dgram) {
            Ok(()) => DatagramSent::Sent,
            // RFC 9297 §3.5: too big for a QUIC DATAGRAM → drop, not re-encode.
            Err(quinn::SendDatagramError::TooLarge) => DatagramSent::TooLarge,
            Err(quinn::SendDatagramError::ConnectionLost(_)) => DatagramSent::Closed,
            Err(_) => DatagramSent::Dropped,
        }
    }
}

//! HTTP/3 datagrams (RFC 9297 §2) on the gateway connection, the client's
//! mirror of `front/h3_datagrams.rs`: one router task per connection hands
//! each received QUIC DATAGRAM to the flow of the request stream its
//! Quarter Stream ID names; a [`FlowDatagrams`] sends with its own Quarter
//! Stream ID in front. Payloads are slices of what quinn received, never
//! copied on the way in.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::tunnel::udp::{DatagramChannel, DatagramSent};
use crate::wire::datagram;
use crate::wire::h3_error::H3ErrorCode;
use crate::wire::varint;

use super::uni_streams::PeerState;

/// Datagrams queued from the router to one flow before they are dropped
/// (UDP semantics: a slow reader loses datagrams, it does not stall the
/// other flows of the connection).
const FLOW_QUEUE: usize = 256;

enum Registration {
    Add(u64, mpsc::Sender<Bytes>),
    Remove(u64),
}

/// The handle to one connection's router task.
#[derive(Clone)]
pub(super) struct Router {
    register: mpsc::UnboundedSender<Registration>,
}

/// The datagrams of one request stream (a CONNECT-UDP flow). Unregistered
/// from the router when dropped. It does not keep the connection open by
/// itself: hold it with its stream.
pub struct FlowDatagrams {
    conn: quinn::Connection,
    stream_id: u64,
    /// `varint(stream_id / 4)`: put in front of every datagram we send.
    quarter: Bytes,
    rx: Option<mpsc::Receiver<Bytes>>,
    router: Router,
    /// Both sides agreed on HTTP/3 datagrams (RFC 9297 §2.1.1).
    enabled: bool,
}

// === impl Router ===

impl Router {
    /// Start the router for `conn`. It ends when the connection does, or
    /// when every handle is gone.
    pub(super) fn spawn(conn: quinn::Connection, peer: Arc<PeerState>) -> Router {
        let (register, reg_rx) = mpsc::unbounded_channel();
        tokio::spawn(route(conn, peer, reg_rx));
        Router { register }
    }

    pub(super) fn flow(
        &self,
        conn: quinn::Connection,
        stream_id: u64,
        enabled: bool,
    ) -> FlowDatagrams {
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        let _ = self.register.send(Registration::Add(stream_id, tx));
        let mut quarter = BytesMut::with_capacity(varint::MAX_LEN);
        // Request stream IDs are below 2^62, so a quarter fits a varint.
        let _ = varint::encode(stream_id / 4, &mut quarter);
        FlowDatagrams {
            conn,
            stream_id,
            quarter: quarter.freeze(),
            rx: Some(rx),
            router: self.clone(),
            enabled,
        }
    }
}

async fn route(
    conn: quinn::Connection,
    peer: Arc<PeerState>,
    mut reg_rx: mpsc::UnboundedReceiver<Registration>,
) {
    let mut flows: HashMap<u64, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        tokio::select! {
            // Registrations first: a flow registered before its request was
            // sent finds every datagram the gateway sends after answering,
            // even when both are ready in the same poll.
            biased;
            r = reg_rx.recv() => match r {
                Some(Registration::Add(id, tx)) => { flows.insert(id, tx); }
                Some(Registration::Remove(id)) => { flows.remove(&id); }
                None => return,
            },
            d = conn.read_datagram() => {
                let Ok(data) = d else { return };
                match datagram::decode_quarter_stream_id(&data) {
                    Ok((stream_id, payload)) => {
                        let Some(tx) = flows.get(&stream_id) else {
                            // RFC 9297 §2.1: a stream not (or no longer)
                            // open: dropped.
                            continue;
                        };
                        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(payload) {
                            flows.remove(&stream_id);
                        }
                    }
                    Err(e) => {
                        // RFC 9297 §2.1: too short for a Quarter Stream ID,
                        // or beyond 2^60-1: connection error H3_DATAGRAM_ERROR.
                        tracing::debug!(error = %e, "malformed HTTP/3 datagram from the gateway");
                        peer.close(&conn, H3ErrorCode::DATAGRAM_ERROR, "malformed HTTP/3 datagram");
                        return;
                    }
                }
            }
        }
    }
}

// === impl FlowDatagrams ===

impl FlowDatagrams {
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// The gateway's datagrams for this stream: the HTTP Datagram Payload
    /// (Context ID first, bytes unchanged). Taken once.
    pub fn receiver(&mut self) -> Option<mpsc::Receiver<Bytes>> {
        self.rx.take()
    }

    /// Receive the next datagram (Context ID first); `None` once the
    /// connection is gone or the receiver was taken.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.as_mut()?.recv().await
    }

    /// Send one HTTP datagram: `context_first` is the HTTP Datagram Payload
    /// (Context ID, then the payload); the Quarter Stream ID goes in front.
    /// RFC 9297 §3.5: one too large for a QUIC DATAGRAM frame is dropped
    /// (`TooLarge`), not sent another way.
    pub fn send(&self, context_first: &[u8]) -> DatagramSent {
        if !self.enabled {
            return DatagramSent::Dropped;
        }
        let mut d = BytesMut::with_capacity(self.quarter.len() + context_first.len());
        d.extend_from_slice(&self.quarter);
        d.extend_from_slice(context_first);
        send_on(&self.conn, d.freeze())
    }

    /// The largest HTTP Datagram Payload that fits a QUIC DATAGRAM frame on
    /// the path now.
    pub fn max_payload(&self) -> Option<usize> {
        self.conn
            .max_datagram_size()
            .map(|m| m.saturating_sub(self.quarter.len()))
    }
}

fn send_on(conn: &quinn::Connection, d: Bytes) -> DatagramSent {
    match conn.send_datagram(d) {
        Ok(()) => DatagramSent::Sent,
        Err(quinn::SendDatagramError::TooLarge) => DatagramSent::TooLarge,
        Err(quinn::SendDatagramError::ConnectionLost(_)) => DatagramSent::Closed,
        Err(_) => DatagramSent::Dropped,
    }
}

impl Drop for FlowDatagrams {
    fn drop(&mut self) {
        let _ = self
            .router
            .register
            .send(Registration::Remove(self.stream_id));
    }
}

/// So that the sidecar can hand a flow to `tunnel::udp::relay` like a front
/// does: the relay builds `header + payload` itself.
impl DatagramChannel for FlowDatagrams {
    fn ready(&self) -> bool {
        self.enabled && self.conn.max_datagram_size().is_some()
    }

    fn incoming(&mut self) -> Option<mpsc::Receiver<Bytes>> {
        self.rx.take()
    }

    fn put_header(&self, out: &mut BytesMut) -> io::Result<()> {
        datagram::encode_h3_datagram_header(self.stream_id, 0, out)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn send(&self, datagram: Bytes) -> DatagramSent {
        if !self.enabled {
            return DatagramSent::Dropped;
        }
        send_on(&self.conn, datagram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a flow puts in front: varint(stream_id / 4), the fix
    /// h3-datagram 0.0.2 lacks (it always wrote 0).
    #[test]
    fn quarter_stream_id_header_bytes() {
        for (id, want) in [
            (0u64, vec![0x00]),
            (4, vec![0x01]),
            (8, vec![0x02]),
            (252, vec![0x3f]),
            (256, vec![0x40, 0x40]),
        ] {
            let mut q = BytesMut::new();
            varint::encode(id / 4, &mut q).unwrap();
            assert_eq!(q.to_vec(), want, "stream {id}");
            // What the gateway's router decodes back.
            let mut d = q.clone();
            d.extend_from_slice(&[0x00, b'h', b'i']);
            let (sid, payload) = datagram::decode_quarter_stream_id(&d.freeze()).unwrap();
            assert_eq!(sid, id);
            assert_eq!(&payload[..], &[0x00, b'h', b'i']);
        }
        let mut h = BytesMut::new();
        datagram::encode_h3_datagram_header(4, 0, &mut h).unwrap();
        assert_eq!(&h[..], &[0x01, 0x00]);
    }
}

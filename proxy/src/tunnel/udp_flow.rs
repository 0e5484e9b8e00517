//! One CONNECT-UDP flow's state, without I/O (style habit 5): the driver
//! (`tunnel::udp::relay`) tells it what happened with `handle_*(now, …)`,
//! asks what to forward with [`FlowState::poll_uplink`], when to wake with
//! [`FlowState::poll_timeout`], and whether the flow is over with
//! [`FlowState::poll_end`]. Time is an argument, so the rules are tested
//! with a fake clock and no sockets.
//!
//! The rules (RFC 9298 §3.5, §5; RFC 9297 §3.3):
//! * capsules from the client are decoded in order; DATAGRAM capsules with
//!   Context ID 0 carry UDP payloads, other Context IDs are dropped, unknown
//!   capsule types skipped, a malformed capsule ends the flow (`Malformed`);
//! * the stream's end with a partial capsule left is malformed too; a clean
//!   end closes the flow;
//! * a flow with no datagram either way for the idle timeout ends (`Idle`):
//!   traffic in either direction moves the deadline.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::wire::capsule::{CapsuleDecoder, Event};
use crate::wire::varint;

/// How the flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEnd {
    /// The client ended the request stream.
    Closed,
    Idle,
    /// A malformed capsule (RFC 9297 §3.3).
    Malformed,
    /// The client's stream or connection failed.
    Reset,
    /// The proxy is shutting down and the grace period is over.
    Aborted,
}

/// What to do with one unit of client input.
#[derive(Debug, PartialEq, Eq)]
pub enum Uplink {
    /// Send this payload to the target.
    Send(Bytes),
    /// Drop it, for this reason.
    Drop(DropReason),
}

/// Why client input was dropped (a `bauta_udp_drops_total` reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A Context ID other than 0 (RFC 9298 §5), or none at all.
    UnknownContext,
    /// Larger than any UDP payload.
    TooLarge,
}

/// How a flow ended and what it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowReport {
    pub end: FlowEnd,
    /// Payload bytes client → target.
    pub upstream: u64,
    /// Payload bytes target → client.
    pub downstream: u64,
}

pub struct FlowState {
    idle_timeout: Duration,
    last_activity: Instant,
    decoder: CapsuleDecoder,
    end: Option<FlowEnd>,
    upstream: u64,
    downstream: u64,
}

// === impl FlowEnd ===

impl FlowEnd {
    /// The access log's `outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowEnd::Closed => "closed",
            FlowEnd::Idle => "idle_timeout",
            FlowEnd::Malformed => "malformed_capsule",
            FlowEnd::Reset => "reset",
            FlowEnd::Aborted => "shutdown",
        }
    }
}

// === impl FlowState ===

impl FlowState {
    /// A flow whose capsules carry at most `max_payload` bytes of UDP payload.
    pub fn new(now: Instant, idle_timeout: Duration, max_payload: usize) -> FlowState {
        FlowState {
            idle_timeout,
            last_activity: now,
            decoder: CapsuleDecoder::new(max_payload),
            end: None,
            upstream: 0,
            downstream: 0,
        }
    }

    /// Bytes of the client's capsule stream arrived (appended to the buffer
    /// that [`FlowState::poll_uplink`] then drains).
    pub fn handle_stream_data(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// The next thing to do with the buffered capsule stream, or `None` when
    /// more bytes are needed (or the flow has ended: a malformed capsule
    /// ends it here).
    pub fn poll_uplink(&mut self, buf: &mut BytesMut) -> Option<Uplink> {
        if self.end.is_some() {
            return None;
        }
        loop {
            match self.decoder.decode(buf) {
                Ok(Some(Event::Datagram {
                    context_id: 0,
                    payload,
                })) => return Some(self.send(payload)),
                // RFC 9298 §5: only Context ID 0 carries UDP payloads here.
                Ok(Some(Event::Datagram { .. })) => {
                    return Some(Uplink::Drop(DropReason::UnknownContext))
                }
                Ok(Some(Event::OversizeDatagram { .. })) => {
                    return Some(Uplink::Drop(DropReason::TooLarge))
                }
                // RFC 9297 §3.2: unknown capsule types are skipped.
                Ok(Some(Event::Skipped { .. })) => continue,
                Ok(None) => return None,
                Err(_) => {
                    self.end = Some(FlowEnd::Malformed);
                    return None;
                }
            }
        }
    }

    /// The client's stream ended; `rest` is what is still buffered.
    pub fn handle_stream_end(&mut self, rest: &[u8]) {
        let end = match self.decoder.finish(rest) {
            Ok(()) => FlowEnd::Closed,
            Err(_) => FlowEnd::Malformed,
        };
        self.end.get_or_insert(end);
    }

    /// The client's stream or connection failed.
    pub fn handle_client_error(&mut self) {
        self.end.get_or_insert(FlowEnd::Reset);
    }

    /// A datagram from the client outside the stream (HTTP/3 QUIC DATAGRAM),
    /// Context ID first.
    pub fn handle_datagram(&mut self, now: Instant, data: Bytes) -> Uplink {
        self.last_activity = now;
        match varint::decode(&data) {
            Ok((0, n)) => self.send(data.slice(n..)),
            _ => Uplink::Drop(DropReason::UnknownContext),
        }
    }

    /// A reply of `len` payload bytes from the target reached the client.
    pub fn handle_delivered(&mut self, now: Instant, len: usize) {
        self.last_activity = now;
        self.downstream += len as u64;
    }

    /// When the driver must call [`FlowState::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Instant {
        self.last_activity + self.idle_timeout
    }

    /// The timer fired: end the flow if it has been idle long enough.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.poll_timeout() {
            self.end.get_or_insert(FlowEnd::Idle);
        }
    }

    /// The shutdown grace period is over.
    pub fn handle_abort(&mut self) {
        self.end.get_or_insert(FlowEnd::Aborted);
    }

    pub fn poll_end(&self) -> Option<FlowEnd> {
        self.end
    }

    /// The flow's report; call once [`FlowState::poll_end`] says it ended.
    pub fn report(&self) -> FlowReport {
        FlowReport {
            end: self.end.unwrap_or(FlowEnd::Reset),
            upstream: self.upstream,
            downstream: self.downstream,
        }
    }

    fn send(&mut self, payload: Bytes) -> Uplink {
        self.upstream += payload.len() as u64;
        Uplink::Send(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::capsule;

    const IDLE: Duration = Duration::from_secs(2);

    fn datagram_capsule(context_id: u8, payload: &[u8]) -> Vec<u8> {
        // type 0x00 (DATAGRAM), length, context id, payload
        let mut out = vec![0x00, (payload.len() + 1) as u8, context_id];
        out.extend_from_slice(payload);
        out
    }

    fn drain(flow: &mut FlowState, buf: &mut BytesMut) -> Vec<Uplink> {
        std::iter::from_fn(|| flow.poll_uplink(buf)).collect()
    }

    #[test]
    fn capsules_become_payloads_and_unknown_contexts_drop() {
        let t0 = Instant::now();
        let mut flow = FlowState::new(t0, IDLE, 1500);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&datagram_capsule(0, b"hello"));
        buf.extend_from_slice(&datagram_capsule(2, b"nope"));
        // An unknown capsule type (0x17, 1 byte) is skipped.
        buf.extend_from_slice(&[0x17, 0x01, 0xaa]);
        buf.extend_from_slice(&datagram_capsule(0, b"again"));
        flow.handle_stream_data(t0);
        assert_eq!(
            drain(&mut flow, &mut buf),
            vec![
                Uplink::Send(Bytes::from_static(b"hello")),
                Uplink::Drop(DropReason::UnknownContext),
                Uplink::Send(Bytes::from_static(b"again")),
            ]
        );
        assert_eq!(flow.poll_end(), None);
        assert_eq!(flow.report().upstream, 10);
    }

    #[test]
    fn a_capsule_split_across_reads_waits_for_its_rest() {
        let t0 = Instant::now();
        let mut flow = FlowState::new(t0, IDLE, 1500);
        let whole = datagram_capsule(0, b"split me");
        let mut buf = BytesMut::from(&whole[..4]);
        assert_eq!(drain(&mut flow, &mut buf), vec![]);
        buf.extend_from_slice(&whole[4..]);
        assert_eq!(
            drain(&mut flow, &mut buf),
            vec![Uplink::Send(Bytes::from_static(b"split me"))]
        );
    }

    #[test]
    fn an_oversize_datagram_is_dropped_not_buffered() {
        let t0 = Instant::now();
        let mut flow = FlowState::new(t0, IDLE, 4);
        let mut buf = BytesMut::from(&datagram_capsule(0, b"too long")[..]);
        assert_eq!(
            drain(&mut flow, &mut buf),
            vec![Uplink::Drop(DropReason::TooLarge)]
        );
        assert_eq!(flow.poll_end(), None);
    }

    #[test]
    fn a_malformed_capsule_ends_the_flow() {
        let t0 = Instant::now();
        let mut flow = FlowState::new(t0, IDLE, 1500);
        // DATAGRAM capsule of length 0: no room for the Context ID.
        let mut buf = BytesMut::from(&[0x00u8, 0x00][..]);
        assert_eq!(drain(&mut flow, &mut buf), vec![]);
        assert_eq!(flow.poll_end(), Some(FlowEnd::Malformed));
    }

    #[test]
    fn the_stream_end_closes_or_is_malformed_with_a_partial_capsule() {
        let t0 = Instant::now();
        let mut clean = FlowState::new(t0, IDLE, 1500);
        clean.handle_stream_end(&[]);
        assert_eq!(clean.poll_end(), Some(FlowEnd::Closed));

        let mut partial = FlowState::new(t0, IDLE, 1500);
        let whole = datagram_capsule(0, b"cut");
        partial.handle_stream_end(&whole[..3]);
        assert_eq!(partial.poll_end(), Some(FlowEnd::Malformed));
    }

    #[test]
    fn datagrams_check_the_context_id() {
        let t0 = Instant::now();
        let mut flow = FlowState::new(t0, IDLE, 1500);
        assert_eq!(
            flow.handle_datagram(t0, Bytes::from_static(b"\x00abc")),
            Uplink::Send(Bytes::from_static(b"abc"))
        );
        assert_eq!(
            flow.handle_datagram(t0, Bytes::from_static(b"\x04abc")),
            Uplink::Drop(DropReason::UnknownContext)
        );
        // Not even a varint: dropped, not an error.
        assert_eq!(
            flow.handle_datagram(t0, Bytes::new()),
            Uplink::Drop(DropReason::UnknownContext)
        );
    }

    #[test]
    fn traffic_either_way_moves_the_idle_deadline() {
        let t0 = Instant::now();
        let mut flow = FlowState::new(t0, IDLE, 1500);
        assert_eq!(flow.poll_timeout(), t0 + IDLE);

        // Uplink traffic at 1.5 s: the timer that fires at 2 s is early.
        let t1 = t0 + Duration::from_millis(1500);
        flow.handle_datagram(t1, Bytes::from_static(b"\x00x"));
        flow.handle_timeout(t0 + IDLE);
        assert_eq!(flow.poll_end(), None);
        assert_eq!(flow.poll_timeout(), t1 + IDLE);

        // Downlink traffic alone at 3 s moves it again.
        let t2 = t0 + Duration::from_secs(3);
        flow.handle_delivered(t2, 7);
        flow.handle_timeout(t1 + IDLE);
        assert_eq!(flow.poll_end(), None);

        // Quiet for the idle timeout: the flow ends exactly then.
        flow.handle_timeout(t2 + IDLE - Duration::from_millis(1));
        assert_eq!(flow.poll_end(), None);
        flow.handle_timeout(t2 + IDLE);
        assert_eq!(flow.poll_end(), Some(FlowEnd::Idle));
        assert_eq!(flow.report().downstream, 7);
        assert_eq!(flow.report().upstream, 1);
    }

    #[test]
    fn the_first_end_wins() {
        let t0 = Instant::now();
        let mut flow = FlowState::new(t0, IDLE, 1500);
        flow.handle_abort();
        flow.handle_stream_end(&[]);
        flow.handle_timeout(t0 + IDLE);
        assert_eq!(flow.poll_end(), Some(FlowEnd::Aborted));
        let mut buf = BytesMut::from(&datagram_capsule(0, b"late")[..]);
        assert_eq!(drain(&mut flow, &mut buf), vec![], "nothing after the end");
    }

    #[test]
    fn capsule_header_room_matches_the_encoder() {
        // The relay writes replies behind DATAGRAM_CAPSULE_HEADER_MAX bytes
        // of room; a full-size payload's header must fit in it.
        let h = capsule::datagram_capsule_header(0, crate::tunnel::udp::MAX_UDP_PAYLOAD)
            .expect("max payload has a header");
        assert!(h.as_bytes().len() <= capsule::DATAGRAM_CAPSULE_HEADER_MAX);
    }
}

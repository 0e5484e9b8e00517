//! The gateway's unidirectional streams (RFC 9114 §6.2): one task accepts
//! them for the life of the connection and reads each stream's type. The
//! control stream is parsed (`control.rs`) into [`PeerState`]; the QPACK
//! encoder and decoder streams are drained (we allowed no dynamic table, so
//! they carry nothing we need, but closing a critical stream would be a
//! connection error for the gateway); push streams and unknown types are
//! refused with STOP_SENDING, as §6.2 asks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::seccert::negotiation::Codepoints;
use crate::wire::h3_error::H3ErrorCode;
use crate::wire::h3_frame::{StreamType, VarintReader};

use super::control::{ControlEvent, ControlStream, PeerSettings};
use super::error::{codes, H3Error};

/// Read size for the gateway's unidirectional streams.
const READ_CHUNK: usize = 16 * 1024;

/// What the gateway told us on its control stream, shared with every
/// handle of the connection.
pub(super) struct PeerState {
    /// `None` until its SETTINGS arrived.
    pub(super) settings: watch::Sender<Option<PeerSettings>>,
    /// The last GOAWAY's stream ID; `u64::MAX` while none came.
    pub(super) goaway: AtomicU64,
    /// Woken when a GOAWAY arrives.
    pub(super) goaway_seen: tokio::sync::Notify,
    /// Every SERVER_CERTIFICATE authenticator, in order.
    pub(super) certificates: watch::Sender<Vec<Bytes>>,
    /// Why we closed the connection ourselves, if we did: quinn only says
    /// "closed" to the streams and to `closed()`.
    local_close: OnceLock<(H3ErrorCode, &'static str)>,
}

impl PeerState {
    pub(super) fn new() -> PeerState {
        PeerState {
            settings: watch::Sender::new(None),
            goaway: AtomicU64::new(u64::MAX),
            goaway_seen: tokio::sync::Notify::new(),
            certificates: watch::Sender::new(Vec::new()),
            local_close: OnceLock::new(),
        }
    }

    /// Close the connection for a protocol error of the gateway's.
    pub(super) fn close(&self, conn: &quinn::Connection, code: H3ErrorCode, why: &'static str) {
        tracing::debug!(?code, why, "closing the gateway connection");
        let _ = self.local_close.set((code, why));
        conn.close(
            quinn::VarInt::from_u64(code.0).unwrap_or_default(),
            why.as_bytes(),
        );
    }

    /// `e` as an [`H3Error`], with our reason when we closed it.
    pub(super) fn lost(&self, e: &quinn::ConnectionError) -> H3Error {
        match (e, self.local_close.get()) {
            (quinn::ConnectionError::LocallyClosed, Some((code, why))) => {
                H3Error::ConnectionLost(format!("we closed it with {code:?}: {why}"))
            }
            _ => H3Error::lost(e),
        }
    }

    /// The first stream ID the gateway will not process, if it sent GOAWAY.
    pub(super) fn goaway(&self) -> Option<u64> {
        match self.goaway.load(Ordering::Acquire) {
            u64::MAX => None,
            id => Some(id),
        }
    }

    fn apply(&self, event: ControlEvent) {
        match event {
            ControlEvent::Settings(s) => {
                self.settings.send_replace(Some(s));
            }
            ControlEvent::GoAway(id) => {
                self.goaway.store(id, Ordering::Release);
                self.goaway_seen.notify_waiters();
                tracing::debug!(stream = id, "gateway sent GOAWAY");
            }
            ControlEvent::Certificate(auth) => {
                self.certificates.send_modify(|v| v.push(auth));
            }
        }
    }
}

/// Accept the gateway's unidirectional streams until the connection ends.
pub(super) async fn accept(conn: quinn::Connection, cp: Codepoints, peer: Arc<PeerState>) {
    let control_taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    while let Ok(stream) = conn.accept_uni().await {
        tokio::spawn(serve(
            conn.clone(),
            stream,
            cp,
            Arc::clone(&peer),
            Arc::clone(&control_taken),
        ));
    }
}

async fn serve(
    conn: quinn::Connection,
    mut stream: quinn::RecvStream,
    cp: Codepoints,
    peer: Arc<PeerState>,
    control_taken: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut ty = VarintReader::default();
    let mut chunk = vec![0u8; READ_CHUNK];
    let (kind, rest) = loop {
        let n = match stream.read(&mut chunk).await {
            Ok(Some(n)) => n,
            // Ended or reset before its type: nothing to do (§6.2).
            _ => return,
        };
        let mut input = chunk.get(..n).unwrap_or_default();
        if let Some(t) = ty.feed(&mut input) {
            break (StreamType(t), input.to_vec());
        }
    };
    match kind {
        StreamType::CONTROL => {
            // RFC 9114 §6.2.1: "Only one control stream per peer is
            // permitted; receipt of a second stream claiming to be a
            // control stream MUST be treated as a connection error of type
            // H3_STREAM_CREATION_ERROR."
            if control_taken.swap(true, Ordering::AcqRel) {
                peer.close(&conn, codes::STREAM_CREATION_ERROR, "second control stream");
                return;
            }
            let result = read_control(&mut stream, cp, &peer, rest, &mut chunk).await;
            match result {
                Ok(()) => {}
                Err((code, why)) => peer.close(&conn, code, why),
            }
        }
        StreamType::QPACK_ENCODER | StreamType::QPACK_DECODER => {
            while let Ok(Some(_)) = stream.read(&mut chunk).await {}
        }
        // RFC 9114 §4.6: we sent no MAX_PUSH_ID, so no push stream is
        // allowed; §6.2: other types are refused, H3_STREAM_CREATION_ERROR.
        StreamType::PUSH => stop(&mut stream, codes::ID_ERROR),
        _ => stop(&mut stream, codes::STREAM_CREATION_ERROR),
    }
}

async fn read_control(
    stream: &mut quinn::RecvStream,
    cp: Codepoints,
    peer: &PeerState,
    first: Vec<u8>,
    chunk: &mut [u8],
) -> Result<(), (H3ErrorCode, &'static str)> {
    let mut control = ControlStream::new(cp);
    let mut events = Vec::new();
    let mut apply = |control: &mut ControlStream, bytes: &[u8]| {
        control.feed(bytes, &mut events)?;
        for e in events.drain(..) {
            peer.apply(e);
        }
        Ok::<(), (H3ErrorCode, &'static str)>(())
    };
    apply(&mut control, &first)?;
    loop {
        match stream.read(chunk).await {
            Ok(Some(n)) => apply(&mut control, chunk.get(..n).unwrap_or_default())?,
            // The connection is going (it reset or closed everything).
            Err(quinn::ReadError::ConnectionLost(_)) => return Ok(()),
            // RFC 9114 §6.2.1: "If either control stream is closed at any
            // point, this MUST be treated as a connection error of type
            // H3_CLOSED_CRITICAL_STREAM."
            Ok(None) | Err(_) => {
                return Err((codes::CLOSED_CRITICAL_STREAM, "control stream closed"));
            }
        }
    }
}

fn stop(stream: &mut quinn::RecvStream, code: H3ErrorCode) {
    let _ = stream.stop(quinn::VarInt::from_u64(code.0).unwrap_or_default());
}

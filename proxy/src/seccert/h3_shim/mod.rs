//! The HTTP/3 side of secondary certificates: a quic-trait shim between h3
//! and h3-quinn (spec `secondary-certs.md` §2, §3, §4.2, §6, §9).
//!
//! h3 knows neither `SETTINGS_HTTP_SERVER_CERT_AUTH` nor `SERVER_CERTIFICATE`
//! and exposes no way to add a setting or a control-stream frame, so the shim
//! sits where h3 talks to QUIC (`h3::quic::{Connection, OpenStreams,
//! SendStream, RecvStream, BidiStream}`) and delegates to h3-quinn:
//!
//! * **Our control stream.** h3 opens it first and writes, in one
//!   `send_data`, the stream type `0x00` and its whole SETTINGS frame (a
//!   `WriteBuf` whose header holds both; `ConnectionInner::new` then
//!   `send_control_stream_headers`). The shim recognises that first write by
//!   its stream-type byte `0x00`, re-encodes the SETTINGS frame with one more
//!   entry `varint(h3_setting) || varint(1)`, and from then on owns the
//!   stream: a small task writes whole frames, one after the other, through
//!   h3-quinn's raw `poll_send`. h3 writes to its control stream once more,
//!   for GOAWAY (`ConnectionInner::shutdown`, also reached when `accept()`
//!   ends); each h3 `send_data` is one whole frame, so such a write is queued
//!   to the same task as a whole frame and h3's `poll_ready` completes when
//!   the task has written it. Injected `SERVER_CERTIFICATE` frames and h3's
//!   frames therefore meet only at frame boundaries, in queue order. Other
//!   unidirectional streams (QPACK encoder `0x02`, decoder `0x03`, grease)
//!   pass through untouched.
//! * **The client's control stream** (and every request stream) is read by
//!   h3 as usual; the shim only looks at the bytes on their way to h3 (a
//!   side parser that tracks frame headers and skips payloads, never
//!   buffering one). It records the client's SETTINGS, decides the
//!   negotiation, and closes the connection on the draft's violations.
//!   h3 reads the client's control stream only while `accept()` is polled:
//!   keep an accept loop running.
//!
//! Violations (only when the feature is on here; frame-based ones only once
//! the client itself sent the setting = 1, otherwise the frame is an unknown
//! type that RFC 9114 §9 says to ignore):
//!
//! | client did | violation | connection close |
//! |---|---|---|
//! | setting value ∉ {0, 1} | `BadSettingValue` | `H3_SETTINGS_ERROR` 0x0109 |
//! | SERVER_CERTIFICATE on its control stream | `ClientSentCertificate` | `H3_FRAME_UNEXPECTED` 0x0105 |
//! | SERVER_CERTIFICATE on a request stream | `WrongStream` | `H3_FRAME_UNEXPECTED` 0x0105 |
//!
//! (The codes come from `Violation::h3_code`, the frame layout from
//! `wire::server_certificate`.)
//!
//! A request stream may carry our frame type before the client's SETTINGS
//! has arrived (the two streams are independent); that is remembered and
//! judged when the SETTINGS is parsed.
//!
//! Files: this one holds the connection ([`H3Shim`], [`H3Control`]);
//! `send` the unidirectional streams we open (our control stream and its
//! writer task); `recv` the streams the client opens, watched on the side by
//! `control` (the client's control stream, pure) and `sections` (each
//! request's field sections: the pseudo-header rules h3 does not enforce).
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming};
use quinn::VarInt;
use tokio::sync::{mpsc, oneshot, watch};

use super::negotiation::{Codepoints, Negotiation, SendError, Violation};
use crate::wire::h3_error::H3ErrorCode;
use crate::wire::h3_frame::FrameType;
use crate::wire::qpack::Misplaced;
use crate::wire::server_certificate::{EncodeError, ServerCertificate};
use sections::Verdicts;

/// The side parser of the client's control stream; public for fuzzing.
pub mod control;
mod recv;
mod sections;
mod send;
#[cfg(test)]
mod tests;

pub use recv::{ShimBidiStream, ShimRecvStream};
pub use send::ShimSendStream;

// === what an HTTP/3 front sees ===

/// An h3 server connection over the shim.
pub type ServerConnection = h3::server::Connection<H3Shim, Bytes>;
/// One request stream of such a connection …
pub type RequestStream = h3::server::RequestStream<ShimBidiStream, Bytes>;
/// … its receive half …
pub type RequestRecv = h3::server::RequestStream<ShimRecvStream, Bytes>;
/// … and its send half.
pub type RequestSend = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// How the shim is set up for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H3ShimConfig {
    pub codepoints: Codepoints,
    /// The config switch (spec §2). Off: no setting is sent, nothing is
    /// enforced, frames of our type are unknown frames.
    pub enabled: bool,
    /// `[limits] max_header_list_size`: a HEADERS frame larger than this is
    /// not read for the field-section rules (h3 refuses it).
    pub max_field_section: u32,
}

/// One command for the control-stream writer task: each is written whole.
enum Cmd {
    Frame {
        head: Bytes,
        body: Bytes,
        /// Told when the frame has been handed to QUIC (h3's own writes).
        done: Option<oneshot::Sender<Result<(), StreamErrorIncoming>>>,
    },
    Finish,
    Reset(u64),
}

/// What the recorded negotiation is (mirrored in an atomic for the hot path).
fn neg_to_u8(n: Negotiation) -> u8 {
    match n {
        Negotiation::Pending => 0,
        Negotiation::Enabled => 1,
        Negotiation::Disabled => 2,
        Negotiation::Closed => 3,
    }
}

fn neg_from_u8(v: u8) -> Negotiation {
    match v {
        0 => Negotiation::Pending,
        1 => Negotiation::Enabled,
        2 => Negotiation::Disabled,
        _ => Negotiation::Closed,
    }
}

/// Per-connection state shared by the shim, its streams and [`H3Control`].
struct Shared {
    codepoints: Codepoints,
    /// `cfg.enabled` and codepoints that fit in a varint.
    enabled: bool,
    conn: quinn::Connection,
    /// Our SETTINGS went out with the setting = 1 (queued first on our
    /// control stream).
    advertised: AtomicBool,
    /// The first control stream h3 writes has been taken over.
    send_control_claimed: AtomicBool,
    /// The client's control stream has been found.
    recv_control_claimed: AtomicBool,
    /// Mirror of `state.negotiation`, read per chunk on request streams.
    negotiation: AtomicU8,
    /// See [`H3ShimConfig::max_field_section`].
    max_field_section: u64,
    /// Field sections that broke RFC 9114 §4.3, until the front asks.
    verdicts: Verdicts,
    state: Mutex<State>,
    /// Wakes [`H3Control::negotiated`].
    changed: watch::Sender<()>,
    /// Queue of the control-stream writer; its receiver goes to the task.
    tx: mpsc::UnboundedSender<Cmd>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Cmd>>>,
}

struct State {
    negotiation: Negotiation,
    violation: Option<Violation>,
    peer_settings: Vec<(u64, u64)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked while holding
        // it; the state itself is always consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn negotiation(&self) -> Negotiation {
        if self.conn.close_reason().is_some() {
            return Negotiation::Closed;
        }
        neg_from_u8(self.negotiation.load(Ordering::Acquire))
    }

    fn set_negotiation(&self, st: &mut State, n: Negotiation) {
        st.negotiation = n;
        self.negotiation.store(neg_to_u8(n), Ordering::Release);
    }

    /// Record a violation (the first one wins) and close the connection.
    fn violate(&self, v: Violation) {
        {
            let mut st = self.lock();
            if st.violation.is_some() {
                return;
            }
            st.violation = Some(v);
            self.set_negotiation(&mut st, Negotiation::Closed);
        }
        self.changed.send_replace(());
        // Every code of `h3_code` is a registered one below 2^62.
        let code = VarInt::from_u64(v.h3_code().0).unwrap_or(VarInt::MAX);
        self.conn.close(code, v.reason().as_bytes());
    }

    /// The client's SETTINGS frame has been parsed completely.
    fn on_client_settings(&self, entries: Vec<(u64, u64)>, ours: Option<u64>) {
        let mut violation = None;
        {
            let mut st = self.lock();
            st.peer_settings = entries;
            if st.negotiation != Negotiation::Pending {
                return;
            }
            let n = if !self.enabled {
                Negotiation::Disabled
            } else {
                match ours {
                    Some(v) if v > 1 => {
                        violation = Some(Violation::BadSettingValue);
                        Negotiation::Pending
                    }
                    Some(1) if self.advertised.load(Ordering::Acquire) => Negotiation::Enabled,
                    _ => Negotiation::Disabled,
                }
            };
            if violation.is_none() {
                self.set_negotiation(&mut st, n);
            }
        }
        match violation {
            Some(v) => self.violate(v),
            None => {
                self.changed.send_replace(());
            }
        }
    }

    /// A frame of type `ty` started on the client's control stream (after
    /// its SETTINGS).
    /// Spec §3: a client never sends certificates; while the feature is on
    /// here, one that does loses the connection (as in the HTTP/2 shim),
    /// whether or not it sent the setting itself.
    fn on_client_control_frame(&self, ty: FrameType) {
        if self.enabled && ServerCertificate::is_h3(&self.codepoints, ty) {
            self.violate(Violation::ClientSentCertificate);
        }
    }

    /// A request stream's field section broke RFC 9114 §4.3.
    fn on_misplaced(&self, id: u64, m: Misplaced) {
        if !self.verdicts.record(id, m) {
            let code = VarInt::from_u64(H3ErrorCode::MESSAGE_ERROR.0).unwrap_or(VarInt::MAX);
            self.conn.close(code, b"too many malformed requests");
        }
    }

    /// A frame of our type started on a request stream.
    fn on_request_certificate_frame(&self) {
        if !self.enabled {
            return;
        }
        self.violate(Violation::WrongStream);
    }

    /// The error h3 sees when the control-stream writer is gone.
    fn writer_gone(&self) -> StreamErrorIncoming {
        match self.conn.close_reason() {
            Some(e) => StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: connection_error(e),
            },
            None => StreamErrorIncoming::Unknown(Box::new(std::io::Error::other(
                "the control stream writer has stopped",
            ))),
        }
    }
}

/// quinn's close reason in h3's terms (as h3-quinn maps it).
fn connection_error(e: quinn::ConnectionError) -> ConnectionErrorIncoming {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            ConnectionErrorIncoming::ApplicationClose {
                error_code: close.error_code.into_inner(),
            }
        }
        quinn::ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

/// The handle the front keeps: negotiation state, violations, and the way to
/// send `SERVER_CERTIFICATE`.
#[derive(Clone)]
pub struct H3Control {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for H3Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Control")
            .field("negotiation", &self.negotiation())
            .field("violation", &self.violation())
            .finish()
    }
}

impl H3Control {
    /// Where the negotiation stands: `Pending` until the client's SETTINGS
    /// (on its control stream) has been parsed; `Closed` once the connection
    /// is closed, whatever it was before.
    pub fn negotiation(&self) -> Negotiation {
        self.shared.negotiation()
    }

    /// Waits while the negotiation is `Pending`; `Closed` if the connection
    /// ends first.
    pub async fn negotiated(&self) -> Negotiation {
        let mut changed = self.shared.changed.subscribe();
        loop {
            let n = self.negotiation();
            if n != Negotiation::Pending {
                return n;
            }
            tokio::select! {
                r = changed.changed() => {
                    if r.is_err() {
                        return Negotiation::Closed;
                    }
                }
                _ = self.shared.conn.closed() => return Negotiation::Closed,
            }
        }
    }

    /// Queues one `SERVER_CERTIFICATE` frame (`varint(type) || varint(len)
    /// || authenticator`) on our control stream, after our SETTINGS and
    /// after anything queued before it. Only when the negotiation is
    /// `Enabled`. Returns once queued; the writer task writes it whole.
    ///
    /// The caller keeps the draft's other preconditions (spec §3 item 2:
    /// the handshake is complete; 1-RTT exporter only).
    pub fn send_server_certificate(&self, authenticator: Bytes) -> Result<(), SendError> {
        match self.negotiation() {
            Negotiation::Enabled => {}
            Negotiation::Closed => return Err(SendError::Closed),
            Negotiation::Pending | Negotiation::Disabled => return Err(SendError::NotNegotiated),
        }
        let len = authenticator.len();
        let mut head = BytesMut::with_capacity(16);
        // The codepoints were checked to fit when the shim was built.
        ServerCertificate::encode_h3_header(&self.shared.codepoints, len, &mut head).map_err(
            |e| match e {
                EncodeError::TooLarge { len, max } => SendError::TooLarge { len, max },
                EncodeError::Codepoint(_) => SendError::NotNegotiated,
            },
        )?;
        self.shared
            .tx
            .send(Cmd::Frame {
                head: head.freeze(),
                body: authenticator,
                done: None,
            })
            .map_err(|_| SendError::Closed)
    }

    /// The rule the client broke, if any (the connection is then closed).
    pub fn violation(&self) -> Option<Violation> {
        self.shared.lock().violation
    }

    /// Whether request stream `id`'s field section (or, once its body has
    /// ended, its trailer section) broke RFC 9114 §4.3; asked once.
    pub fn take_misplaced(&self, id: u64) -> Option<Misplaced> {
        self.shared.verdicts.take(id)
    }

    /// The client's SETTINGS as received (all ids, in order; at most 64
    /// entries are kept). Empty until it has been parsed.
    pub fn peer_settings(&self) -> Vec<(u64, u64)> {
        self.shared.lock().peer_settings.clone()
    }
}

/// The shim: an `h3::quic::Connection<Bytes>` over h3-quinn's connection.
pub struct H3Shim {
    inner: h3_quinn::Connection,
    shared: Arc<Shared>,
}

impl H3Shim {
    /// Wraps h3-quinn's connection; `conn` is the same QUIC connection (used
    /// to close it on a violation and to learn that it closed).
    pub fn new(
        inner: h3_quinn::Connection,
        conn: quinn::Connection,
        cfg: H3ShimConfig,
    ) -> (H3Shim, H3Control) {
        let cp = cfg.codepoints;
        let enabled = cfg.enabled && cp.h3_fits();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            codepoints: cp,
            enabled,
            conn,
            advertised: AtomicBool::new(false),
            send_control_claimed: AtomicBool::new(false),
            recv_control_claimed: AtomicBool::new(false),
            negotiation: AtomicU8::new(neg_to_u8(Negotiation::Pending)),
            max_field_section: u64::from(cfg.max_field_section),
            verdicts: Verdicts::default(),
            state: Mutex::new(State {
                negotiation: Negotiation::Pending,
                violation: None,
                peer_settings: Vec::new(),
            }),
            changed: watch::Sender::new(()),
            tx,
            rx: Mutex::new(Some(rx)),
        });
        let control = H3Control {
            shared: Arc::clone(&shared),
        };
        (H3Shim { inner, shared }, control)
    }
}

impl quic::Connection<Bytes> for H3Shim {
    type RecvStream = ShimRecvStream;
    type OpenStreams = ShimOpener;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        let recv = ready!(quic::Connection::<Bytes>::poll_accept_recv(
            &mut self.inner,
            cx
        ))?;
        Poll::Ready(Ok(ShimRecvStream::uni(recv, &self.shared)))
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        let bidi = ready!(quic::Connection::<Bytes>::poll_accept_bidi(
            &mut self.inner,
            cx
        ))?;
        Poll::Ready(Ok(ShimBidiStream::new(&self.shared, bidi, true)))
    }

    fn opener(&self) -> Self::OpenStreams {
        ShimOpener {
            inner: quic::Connection::<Bytes>::opener(&self.inner),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl quic::OpenStreams<Bytes> for H3Shim {
    type BidiStream = ShimBidiStream;
    type SendStream = ShimSendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        open_bidi(&mut self.inner, &self.shared, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        open_send(&mut self.inner, &self.shared, cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        quic::OpenStreams::<Bytes>::close(&mut self.inner, code, reason)
    }
}

// h3's traits want `OpenStreams` on both the connection and its opener;
// both open h3-quinn streams and wrap them the same way.

fn open_bidi<O>(
    inner: &mut O,
    shared: &Arc<Shared>,
    cx: &mut Context<'_>,
) -> Poll<Result<ShimBidiStream, StreamErrorIncoming>>
where
    O: quic::OpenStreams<Bytes, BidiStream = h3_quinn::BidiStream<Bytes>>,
{
    let bidi = ready!(inner.poll_open_bidi(cx))?;
    Poll::Ready(Ok(ShimBidiStream::new(shared, bidi, false)))
}

fn open_send<O>(
    inner: &mut O,
    shared: &Arc<Shared>,
    cx: &mut Context<'_>,
) -> Poll<Result<ShimSendStream, StreamErrorIncoming>>
where
    O: quic::OpenStreams<Bytes, SendStream = h3_quinn::SendStream<Bytes>>,
{
    let send = ready!(inner.poll_open_send(cx))?;
    Poll::Ready(Ok(ShimSendStream::new(send, shared)))
}

/// The shim's stream opener (`Connection::opener`).
pub struct ShimOpener {
    inner: h3_quinn::OpenStreams,
    shared: Arc<Shared>,
}

impl quic::OpenStreams<Bytes> for ShimOpener {
    type BidiStream = ShimBidiStream;
    type SendStream = ShimSendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        open_bidi(&mut self.inner, &self.shared, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        open_send(&mut self.inner, &self.shared, cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        quic::OpenStreams::<Bytes>::close(&mut self.inner, code, reason)
    }
}

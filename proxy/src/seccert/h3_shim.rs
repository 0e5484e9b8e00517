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
//! A request stream may carry our frame type before the client's SETTINGS
//! has arrived (the two streams are independent); that is remembered and
//! judged when the SETTINGS is parsed.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use h3::quic::{
    self, ConnectionErrorIncoming, SendStreamUnframed as _, StreamErrorIncoming, StreamId, WriteBuf,
};
use quinn::VarInt;
use tokio::sync::{mpsc, oneshot, watch};

use super::negotiation::{Codepoints, Negotiation, SendError, Violation};
use crate::wire::varint;

/// Unidirectional stream type of the control stream (RFC 9114 §6.2.1).
const STREAM_TYPE_CONTROL: u64 = 0x00;
/// SETTINGS frame type (RFC 9114 §7.2.4).
const FRAME_SETTINGS: u64 = 0x04;
/// WebTransport bidirectional stream signal: no length follows, the rest of
/// the stream is raw; h3 rejects it on request streams unless WebTransport
/// is on. Frame tracking stops there.
const FRAME_WEBTRANSPORT_STREAM: u64 = 0x41;
/// `H3_FRAME_UNEXPECTED` (RFC 9114 §8.1).
const H3_FRAME_UNEXPECTED: u32 = 0x0105;
/// `H3_SETTINGS_ERROR` (RFC 9114 §8.1).
const H3_SETTINGS_ERROR: u32 = 0x0109;
/// At most this many of the client's SETTINGS entries are recorded (unknown
/// ids are unlimited on the wire; our own id is tracked whatever its place).
const MAX_RECORDED_SETTINGS: usize = 64;

/// How the shim is set up for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H3ShimConfig {
    pub codepoints: Codepoints,
    /// The config switch (spec §2). Off: no setting is sent, nothing is
    /// enforced, frames of our type are unknown frames.
    pub enabled: bool,
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
        let code = match v {
            Violation::BadSettingValue | Violation::SettingWithdrawn => H3_SETTINGS_ERROR,
            Violation::ClientSentCertificate
            | Violation::WrongStream
            | Violation::MalformedFrame => H3_FRAME_UNEXPECTED,
        };
        self.conn
            .close(VarInt::from_u32(code), v.as_str().as_bytes());
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
    fn on_client_control_frame(&self, ty: u64) {
        if self.enabled && ty == self.codepoints.h3_frame_type {
            self.violate(Violation::ClientSentCertificate);
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
        let too_large = SendError::TooLarge {
            len,
            max: usize::try_from(varint::MAX).unwrap_or(usize::MAX),
        };
        let len64 = u64::try_from(len).map_err(|_| too_large)?;
        let mut head = BytesMut::with_capacity(2 * varint::MAX_LEN);
        // The frame type was checked to fit when the shim was built.
        varint::encode(self.shared.codepoints.h3_frame_type, &mut head)
            .map_err(|_| SendError::NotNegotiated)?;
        varint::encode(len64, &mut head).map_err(|_| too_large)?;
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
        let enabled =
            cfg.enabled && cp.h3_setting <= varint::MAX && cp.h3_frame_type <= varint::MAX;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            codepoints: cp,
            enabled,
            conn,
            advertised: AtomicBool::new(false),
            send_control_claimed: AtomicBool::new(false),
            recv_control_claimed: AtomicBool::new(false),
            negotiation: AtomicU8::new(neg_to_u8(Negotiation::Pending)),
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

    fn wrap_bidi(&self, bidi: h3_quinn::BidiStream<Bytes>, tap: bool) -> ShimBidiStream {
        wrap_bidi(&self.shared, bidi, tap)
    }
}

fn wrap_bidi(shared: &Arc<Shared>, bidi: h3_quinn::BidiStream<Bytes>, tap: bool) -> ShimBidiStream {
    let (send, recv) = quic::BidiStream::split(bidi);
    let tap = if tap && shared.enabled {
        Tap::Request(FrameParser::default())
    } else {
        Tap::Off
    };
    ShimBidiStream {
        send,
        recv: ShimRecvStream {
            inner: recv,
            tap,
            shared: Arc::clone(shared),
        },
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
        Poll::Ready(Ok(ShimRecvStream {
            inner: recv,
            tap: Tap::UniType(VarintReader::default()),
            shared: Arc::clone(&self.shared),
        }))
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        let bidi = ready!(quic::Connection::<Bytes>::poll_accept_bidi(
            &mut self.inner,
            cx
        ))?;
        Poll::Ready(Ok(self.wrap_bidi(bidi, true)))
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
        let bidi = ready!(quic::OpenStreams::<Bytes>::poll_open_bidi(
            &mut self.inner,
            cx
        ))?;
        Poll::Ready(Ok(self.wrap_bidi(bidi, false)))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        let send = ready!(quic::OpenStreams::<Bytes>::poll_open_send(
            &mut self.inner,
            cx
        ))?;
        Poll::Ready(Ok(ShimSendStream::new(send, &self.shared)))
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        quic::OpenStreams::<Bytes>::close(&mut self.inner, code, reason)
    }
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
        let bidi = ready!(quic::OpenStreams::<Bytes>::poll_open_bidi(
            &mut self.inner,
            cx
        ))?;
        Poll::Ready(Ok(wrap_bidi(&self.shared, bidi, false)))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        let send = ready!(quic::OpenStreams::<Bytes>::poll_open_send(
            &mut self.inner,
            cx
        ))?;
        Poll::Ready(Ok(ShimSendStream::new(send, &self.shared)))
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        quic::OpenStreams::<Bytes>::close(&mut self.inner, code, reason)
    }
}

// ---------------------------------------------------------------------------
// Sending: unidirectional streams, one of which is our control stream.

/// A unidirectional stream h3 opened. Passed through, except the control
/// stream, which the shim takes over at h3's first write.
pub struct ShimSendStream {
    id: StreamId,
    state: SendState,
    shared: Arc<Shared>,
}

enum SendState {
    /// Nothing written yet: the first write tells which stream this is.
    Fresh(h3_quinn::SendStream<Bytes>),
    /// Not our control stream.
    Pass(h3_quinn::SendStream<Bytes>),
    /// Our control stream, written by the writer task.
    Control {
        /// Set while one of h3's frames waits in the writer's queue.
        waiting: Option<oneshot::Receiver<Result<(), StreamErrorIncoming>>>,
    },
    /// Only while switching states.
    Gone,
}

impl ShimSendStream {
    fn new(inner: h3_quinn::SendStream<Bytes>, shared: &Arc<Shared>) -> ShimSendStream {
        ShimSendStream {
            id: quic::SendStream::<Bytes>::send_id(&inner),
            state: SendState::Fresh(inner),
            shared: Arc::clone(shared),
        }
    }

    /// h3's first write on a control stream: take the stream over, queue
    /// our SETTINGS (h3's, plus our setting) first, and start the writer.
    fn take_over(
        &mut self,
        stream: h3_quinn::SendStream<Bytes>,
        mut wb: WriteBuf<Bytes>,
    ) -> Result<(), StreamErrorIncoming> {
        let original = wb.copy_to_bytes(wb.remaining());
        let rewritten = add_setting(&original, self.shared.codepoints.h3_setting, 1);
        let advertised = rewritten.is_some();
        let first = rewritten.unwrap_or(original);
        let rx = self
            .shared
            .rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (Some(rx), Ok(rt)) = (rx, tokio::runtime::Handle::try_current()) else {
            return Err(StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: ConnectionErrorIncoming::InternalError(
                    "secondary-certificate shim: no writer for the control stream".to_string(),
                ),
            });
        };
        let (done_tx, done_rx) = oneshot::channel();
        // Queued before anything else can be: H3Control only queues once the
        // negotiation is Enabled, which needs `advertised`, set below.
        self.shared
            .tx
            .send(Cmd::Frame {
                head: first,
                body: Bytes::new(),
                done: Some(done_tx),
            })
            .map_err(|_| self.shared.writer_gone())?;
        rt.spawn(control_writer(stream, rx, self.shared.conn.clone()));
        self.shared.advertised.store(advertised, Ordering::Release);
        self.state = SendState::Control {
            waiting: Some(done_rx),
        };
        Ok(())
    }
}

impl quic::SendStream<Bytes> for ShimSendStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        match &mut self.state {
            SendState::Fresh(s) | SendState::Pass(s) => s.poll_ready(cx),
            SendState::Control { waiting } => {
                let Some(rx) = waiting else {
                    return Poll::Ready(Ok(()));
                };
                let r = ready!(Pin::new(rx).poll(cx));
                *waiting = None;
                Poll::Ready(r.unwrap_or_else(|_| Err(self.shared.writer_gone())))
            }
            SendState::Gone => Poll::Ready(Err(self.shared.writer_gone())),
        }
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        let mut wb: WriteBuf<Bytes> = data.into();
        match std::mem::replace(&mut self.state, SendState::Gone) {
            SendState::Fresh(mut s) => {
                // Every uni stream h3 writes starts with its stream type,
                // encoded minimally in the WriteBuf's header: 0x00 is the
                // control stream (RFC 9114 §6.2.1).
                let is_control = wb.chunk().first() == Some(&(STREAM_TYPE_CONTROL as u8));
                if is_control
                    && self.shared.enabled
                    && !self
                        .shared
                        .send_control_claimed
                        .swap(true, Ordering::AcqRel)
                {
                    return self.take_over(s, wb);
                }
                let r = s.send_data(wb);
                self.state = SendState::Pass(s);
                r
            }
            SendState::Pass(mut s) => {
                let r = s.send_data(wb);
                self.state = SendState::Pass(s);
                r
            }
            SendState::Control { waiting } => {
                if waiting.is_some() {
                    self.state = SendState::Control { waiting };
                    // The same misuse h3-quinn reports.
                    return Err(StreamErrorIncoming::ConnectionErrorIncoming {
                        connection_error: ConnectionErrorIncoming::InternalError(
                            "send_data called while the control stream is not ready".to_string(),
                        ),
                    });
                }
                // One h3 send_data is one whole frame (h3 `stream::write`).
                let frame = wb.copy_to_bytes(wb.remaining());
                let (done_tx, done_rx) = oneshot::channel();
                let sent = self.shared.tx.send(Cmd::Frame {
                    head: frame,
                    body: Bytes::new(),
                    done: Some(done_tx),
                });
                self.state = SendState::Control {
                    waiting: Some(done_rx),
                };
                sent.map_err(|_| self.shared.writer_gone())
            }
            SendState::Gone => Err(self.shared.writer_gone()),
        }
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        match &mut self.state {
            SendState::Fresh(s) | SendState::Pass(s) => s.poll_finish(cx),
            SendState::Control { .. } => {
                // h3 never finishes its control stream (RFC 9114 §6.2.1).
                let r = self.shared.tx.send(Cmd::Finish);
                Poll::Ready(r.map_err(|_| self.shared.writer_gone()))
            }
            SendState::Gone => Poll::Ready(Err(self.shared.writer_gone())),
        }
    }

    fn reset(&mut self, reset_code: u64) {
        match &mut self.state {
            SendState::Fresh(s) | SendState::Pass(s) => s.reset(reset_code),
            SendState::Control { .. } => {
                let _ = self.shared.tx.send(Cmd::Reset(reset_code));
            }
            SendState::Gone => {}
        }
    }

    fn send_id(&self) -> StreamId {
        self.id
    }
}

/// Writes queued frames on our control stream, each whole, in order, until
/// the connection closes or every queue handle is gone.
async fn control_writer(
    mut stream: h3_quinn::SendStream<Bytes>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    conn: quinn::Connection,
) {
    loop {
        let cmd = tokio::select! {
            biased;
            cmd = rx.recv() => cmd,
            _ = conn.closed() => None,
        };
        match cmd {
            None => break,
            Some(Cmd::Frame { head, body, done }) => {
                let mut buf = head.chain(body);
                let r =
                    futures_util::future::poll_fn(|cx| write_all(&mut stream, cx, &mut buf)).await;
                let failed = r.is_err();
                if let Some(done) = done {
                    let _ = done.send(r);
                }
                if failed {
                    break;
                }
            }
            Some(Cmd::Finish) => {
                let _ = futures_util::future::poll_fn(|cx| {
                    quic::SendStream::<Bytes>::poll_finish(&mut stream, cx)
                })
                .await;
                break;
            }
            Some(Cmd::Reset(code)) => {
                quic::SendStream::<Bytes>::reset(&mut stream, code);
                break;
            }
        }
    }
}

fn write_all(
    stream: &mut h3_quinn::SendStream<Bytes>,
    cx: &mut Context<'_>,
    buf: &mut impl Buf,
) -> Poll<Result<(), StreamErrorIncoming>> {
    while buf.has_remaining() {
        let n = ready!(stream.poll_send(cx, buf))?;
        if n == 0 {
            return Poll::Ready(Err(StreamErrorIncoming::Unknown(Box::new(
                std::io::Error::from(std::io::ErrorKind::WriteZero),
            ))));
        }
    }
    Poll::Ready(Ok(()))
}

/// Re-encodes `0x00 || SETTINGS frame` (h3's first control-stream write)
/// with one more entry `id = value` appended. `None` if the bytes are not
/// exactly that, or already carry `id` (then they are sent unchanged).
fn add_setting(header: &[u8], id: u64, value: u64) -> Option<Bytes> {
    let (stream_type, a) = varint::decode(header).ok()?;
    let rest = header.get(a..)?;
    let (frame_type, b) = varint::decode(rest).ok()?;
    let rest = rest.get(b..)?;
    let (len, c) = varint::decode(rest).ok()?;
    let payload = rest.get(c..)?;
    if stream_type != STREAM_TYPE_CONTROL
        || frame_type != FRAME_SETTINGS
        || u64::try_from(payload.len()).ok()? != len
    {
        return None;
    }
    let mut p = payload;
    while !p.is_empty() {
        let (k, n) = varint::decode(p).ok()?;
        p = p.get(n..)?;
        let (_, n) = varint::decode(p).ok()?;
        p = p.get(n..)?;
        if k == id {
            return None;
        }
    }
    let extra = varint::encoded_len(id) + varint::encoded_len(value);
    let new_len = u64::try_from(payload.len() + extra).ok()?;
    let mut out = BytesMut::with_capacity(1 + 1 + varint::MAX_LEN + payload.len() + extra);
    varint::encode(STREAM_TYPE_CONTROL, &mut out).ok()?;
    varint::encode(FRAME_SETTINGS, &mut out).ok()?;
    varint::encode(new_len, &mut out).ok()?;
    out.extend_from_slice(payload);
    varint::encode(id, &mut out).ok()?;
    varint::encode(value, &mut out).ok()?;
    Some(out.freeze())
}

// ---------------------------------------------------------------------------
// Receiving: bytes pass to h3 unchanged; a side parser looks at them.

/// A receive stream: a client's unidirectional stream, or the receive half
/// of a request stream.
pub struct ShimRecvStream {
    inner: h3_quinn::RecvStream,
    tap: Tap,
    shared: Arc<Shared>,
}

/// What the side parser of one receive stream does.
enum Tap {
    /// Unidirectional, reading the stream type.
    UniType(VarintReader),
    /// The client's control stream.
    Control(Box<ControlParser>),
    /// A request stream: frame headers only.
    Request(FrameParser),
    /// Nothing to look at.
    Off,
}

impl ShimRecvStream {
    fn observe(&mut self, mut data: &[u8]) {
        let shared = &*self.shared;
        loop {
            match &mut self.tap {
                Tap::Off => return,
                Tap::UniType(r) => {
                    let Some(ty) = r.feed(&mut data) else { return };
                    self.tap = if ty == STREAM_TYPE_CONTROL
                        && !shared.recv_control_claimed.swap(true, Ordering::AcqRel)
                    {
                        Tap::Control(Box::new(ControlParser::new(shared.codepoints.h3_setting)))
                    } else {
                        Tap::Off
                    };
                    // The rest of this chunk belongs to the next state.
                }
                Tap::Control(p) => {
                    p.feed(data, &mut |ev| match ev {
                        ControlEvent::Settings { entries, ours } => {
                            shared.on_client_settings(entries, ours)
                        }
                        ControlEvent::Frame(ty) => shared.on_client_control_frame(ty),
                        // h3 closes the connection itself (missing or
                        // malformed SETTINGS).
                        ControlEvent::Malformed => {}
                    });
                    if p.is_dead() {
                        self.tap = Tap::Off;
                    }
                    return;
                }
                Tap::Request(p) => {
                    // Settled without the feature: nothing can be a
                    // violation on this connection any more.
                    if matches!(
                        neg_from_u8(shared.negotiation.load(Ordering::Acquire)),
                        Negotiation::Disabled | Negotiation::Closed
                    ) {
                        self.tap = Tap::Off;
                        return;
                    }
                    let ours = shared.codepoints.h3_frame_type;
                    let flow = p.feed(data, |ev| match ev {
                        FrameEvent::Type(FRAME_WEBTRANSPORT_STREAM) => ControlFlow::Break(()),
                        FrameEvent::Type(ty) if ty == ours => {
                            shared.on_request_certificate_frame();
                            ControlFlow::Continue(())
                        }
                        _ => ControlFlow::Continue(()),
                    });
                    if flow.is_break() {
                        self.tap = Tap::Off;
                    }
                    return;
                }
            }
        }
    }
}

impl quic::RecvStream for ShimRecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        let r = ready!(self.inner.poll_data(cx));
        if let Ok(Some(data)) = &r {
            if !matches!(self.tap, Tap::Off) {
                self.observe(data);
            }
        }
        Poll::Ready(r)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.inner.stop_sending(error_code)
    }

    fn recv_id(&self) -> StreamId {
        self.inner.recv_id()
    }
}

/// A request stream: h3-quinn's send half unchanged, the receive half
/// watched for frames of our type.
pub struct ShimBidiStream {
    send: h3_quinn::SendStream<Bytes>,
    recv: ShimRecvStream,
}

impl quic::RecvStream for ShimBidiStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code)
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

impl quic::SendStream<Bytes> for ShimBidiStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code)
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

impl quic::SendStreamUnframed<Bytes> for ShimBidiStream {
    fn poll_send<D: Buf>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut D,
    ) -> Poll<Result<usize, StreamErrorIncoming>> {
        self.send.poll_send(cx, buf)
    }
}

impl quic::BidiStream<Bytes> for ShimBidiStream {
    type SendStream = h3_quinn::SendStream<Bytes>;
    type RecvStream = ShimRecvStream;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        (self.send, self.recv)
    }
}

// ---------------------------------------------------------------------------
// Side parsers: incremental, chunk-boundary safe, bounded memory.

/// One QUIC varint read across chunk boundaries (holds at most 8 bytes).
#[derive(Clone, Copy, Debug, Default)]
struct VarintReader {
    buf: [u8; varint::MAX_LEN],
    have: u8,
}

impl VarintReader {
    /// Takes what it needs from the front of `input` (advancing it); the
    /// value once complete, then the reader is empty again.
    fn feed(&mut self, input: &mut &[u8]) -> Option<u64> {
        let have = usize::from(self.have);
        let first = if have > 0 {
            *self.buf.first()?
        } else {
            *input.first()?
        };
        let need = varint::len_from_first_byte(first);
        let take = need.saturating_sub(have).min(input.len());
        let (head, rest) = input.split_at(take);
        self.buf.get_mut(have..have + take)?.copy_from_slice(head);
        *input = rest;
        // `have + take <= need <= 8`.
        self.have = u8::try_from(have + take).ok()?;
        if have + take < need {
            return None;
        }
        self.have = 0;
        varint::decode(self.buf.get(..need)?).ok().map(|(v, _)| v)
    }

    fn is_empty(&self) -> bool {
        self.have == 0
    }
}

/// What the frame parser reports, in stream order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameEvent<'a> {
    /// A frame's type is known (its length may not be yet).
    Type(u64),
    /// Its length is known; that many payload bytes follow.
    Header { ty: u64, len: u64 },
    /// Some payload bytes of the current frame.
    Payload(&'a [u8]),
    /// The current frame's payload is complete.
    End,
}

#[derive(Clone, Copy, Debug)]
enum FrameState {
    Type(VarintReader),
    Len { ty: u64, r: VarintReader },
    Payload { remaining: u64 },
}

/// Tracks HTTP/3 frame boundaries (`type (i) || length (i) || payload`,
/// RFC 9114 §7.1) without keeping payloads.
#[derive(Clone, Copy, Debug)]
struct FrameParser {
    state: FrameState,
}

impl Default for FrameParser {
    fn default() -> Self {
        FrameParser {
            state: FrameState::Type(VarintReader::default()),
        }
    }
}

impl FrameParser {
    /// Feeds one chunk; `on` may stop the parse (the parser is then left
    /// where it stopped and should not be fed again).
    fn feed<F>(&mut self, mut input: &[u8], mut on: F) -> ControlFlow<()>
    where
        F: FnMut(FrameEvent<'_>) -> ControlFlow<()>,
    {
        loop {
            match &mut self.state {
                FrameState::Type(r) => {
                    let Some(ty) = r.feed(&mut input) else {
                        return ControlFlow::Continue(());
                    };
                    self.state = FrameState::Len {
                        ty,
                        r: VarintReader::default(),
                    };
                    on(FrameEvent::Type(ty))?;
                }
                FrameState::Len { ty, r } => {
                    let ty = *ty;
                    let Some(len) = r.feed(&mut input) else {
                        return ControlFlow::Continue(());
                    };
                    self.state = FrameState::Payload { remaining: len };
                    on(FrameEvent::Header { ty, len })?;
                }
                FrameState::Payload { remaining: 0 } => {
                    self.state = FrameState::Type(VarintReader::default());
                    on(FrameEvent::End)?;
                }
                FrameState::Payload { remaining } => {
                    if input.is_empty() {
                        return ControlFlow::Continue(());
                    }
                    let n = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                    let (chunk, rest) = input.split_at(n);
                    // `n <= remaining`, so this cannot underflow.
                    *remaining -= n as u64;
                    input = rest;
                    on(FrameEvent::Payload(chunk))?;
                }
            }
        }
    }

    /// Between frames (no partial header, no payload owed).
    #[cfg(test)]
    fn at_boundary(&self) -> bool {
        matches!(self.state, FrameState::Type(r) if r.is_empty())
    }
}

/// What the control-stream parser reports.
#[derive(Debug, PartialEq, Eq)]
enum ControlEvent {
    /// The first frame, SETTINGS, is complete: its entries (at most
    /// [`MAX_RECORDED_SETTINGS`]) and our setting's value (the first value
    /// that is not 0 or 1 if any, else the last).
    Settings {
        entries: Vec<(u64, u64)>,
        ours: Option<u64>,
    },
    /// A later frame of this type started.
    Frame(u64),
    /// The first frame is not SETTINGS or does not parse (h3 closes the
    /// connection for this; the parser stops).
    Malformed,
}

/// Reads SETTINGS entries from payload chunks.
#[derive(Debug)]
struct SettingsReader {
    our_id: u64,
    id: Option<u64>,
    r: VarintReader,
    entries: Vec<(u64, u64)>,
    ours: Option<u64>,
}

impl SettingsReader {
    fn new(our_id: u64) -> SettingsReader {
        SettingsReader {
            our_id,
            id: None,
            r: VarintReader::default(),
            entries: Vec::new(),
            ours: None,
        }
    }

    fn feed(&mut self, mut payload: &[u8]) {
        while let Some(v) = self.r.feed(&mut payload) {
            match self.id.take() {
                None => self.id = Some(v),
                Some(id) => {
                    if self.entries.len() < MAX_RECORDED_SETTINGS {
                        self.entries.push((id, v));
                    }
                    if id == self.our_id {
                        self.ours = match self.ours {
                            Some(bad) if bad > 1 => Some(bad),
                            _ => Some(v),
                        };
                    }
                }
            }
        }
    }

    /// No entry cut short by the end of the frame.
    fn is_clean(&self) -> bool {
        self.id.is_none() && self.r.is_empty()
    }
}

#[derive(Debug)]
enum ControlPhase {
    ExpectSettings,
    InSettings(SettingsReader),
    After,
    Dead,
}

/// The client's control stream after its stream type: SETTINGS first, then
/// frame types only.
#[derive(Debug)]
struct ControlParser {
    our_setting: u64,
    frames: FrameParser,
    phase: ControlPhase,
}

impl ControlParser {
    fn new(our_setting: u64) -> ControlParser {
        ControlParser {
            our_setting,
            frames: FrameParser::default(),
            phase: ControlPhase::ExpectSettings,
        }
    }

    fn is_dead(&self) -> bool {
        matches!(self.phase, ControlPhase::Dead)
    }

    fn feed(&mut self, input: &[u8], out: &mut impl FnMut(ControlEvent)) {
        if self.is_dead() {
            return;
        }
        let our_setting = self.our_setting;
        let phase = &mut self.phase;
        let _ = self.frames.feed(input, |ev| {
            match (ev, &mut *phase) {
                (FrameEvent::Type(ty), ControlPhase::ExpectSettings) => {
                    if ty != FRAME_SETTINGS {
                        *phase = ControlPhase::Dead;
                        out(ControlEvent::Malformed);
                        return ControlFlow::Break(());
                    }
                    *phase = ControlPhase::InSettings(SettingsReader::new(our_setting));
                }
                (FrameEvent::Payload(p), ControlPhase::InSettings(s)) => s.feed(p),
                (FrameEvent::End, ControlPhase::InSettings(_)) => {
                    if let ControlPhase::InSettings(s) =
                        std::mem::replace(phase, ControlPhase::After)
                    {
                        if !s.is_clean() {
                            *phase = ControlPhase::Dead;
                            out(ControlEvent::Malformed);
                            return ControlFlow::Break(());
                        }
                        out(ControlEvent::Settings {
                            entries: s.entries,
                            ours: s.ours,
                        });
                    }
                }
                (FrameEvent::Type(ty), ControlPhase::After) => out(ControlEvent::Frame(ty)),
                _ => {}
            }
            ControlFlow::Continue(())
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    const OUR_SETTING: u64 = 0x5E_CC02;
    const OUR_FRAME: u64 = 0x5E_CC01;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint::encode(v, &mut out).unwrap();
        out
    }

    /// `v` in an encoding of exactly `len` bytes (non-minimal allowed).
    fn enc_len(v: u64, len: usize) -> Vec<u8> {
        let prefix: u64 = match len {
            1 => 0,
            2 => 0x4000,
            4 => 0x8000_0000,
            _ => 0xc000_0000_0000_0000,
        };
        let all = (prefix | v).to_be_bytes();
        all[8 - len..].to_vec()
    }

    fn frame(ty: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = enc(ty);
        out.extend(enc(payload.len() as u64));
        out.extend_from_slice(payload);
        out
    }

    fn settings_payload(pairs: &[(u64, u64)]) -> Vec<u8> {
        pairs
            .iter()
            .flat_map(|&(k, v)| [enc(k), enc(v)].concat())
            .collect()
    }

    // ----- pure parsers -------------------------------------------------

    #[test]
    fn varint_reader_split_at_every_position() {
        for bytes in [
            vec![0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
            vec![0x9d, 0x7f, 0x3e, 0x7d],
            vec![0x7b, 0xbd],
            vec![0x25],
            vec![0x80, 0x5e, 0xcc, 0x01],
        ] {
            let want = varint::decode(&bytes).unwrap().0;
            for cut in 0..=bytes.len() {
                let mut r = VarintReader::default();
                let (a, b) = bytes.split_at(cut);
                let mut a = a;
                let first = r.feed(&mut a);
                assert!(a.is_empty());
                if cut == bytes.len() {
                    assert_eq!(first, Some(want));
                    continue;
                }
                assert_eq!(first, None);
                let mut b = b;
                assert_eq!(r.feed(&mut b), Some(want), "{bytes:02x?} cut {cut}");
                assert!(b.is_empty() && r.is_empty());
            }
        }
    }

    #[test]
    fn add_setting_appends_one_entry() {
        let mut header = vec![0x00];
        header.extend(frame(
            FRAME_SETTINGS,
            &settings_payload(&[(0x06, 16384), (0x33, 1)]),
        ));
        let out = add_setting(&header, OUR_SETTING, 1).unwrap();
        let mut want = vec![0x00];
        want.extend(frame(
            FRAME_SETTINGS,
            &settings_payload(&[(0x06, 16384), (0x33, 1), (OUR_SETTING, 1)]),
        ));
        assert_eq!(&out[..], &want[..]);
        // The wire form the spec gives: id `80 5e cc 02`, value `01`.
        assert!(out.ends_with(&[0x80, 0x5e, 0xcc, 0x02, 0x01]));
        // Already present, or not a control stream SETTINGS: unchanged.
        assert_eq!(add_setting(&out, OUR_SETTING, 1), None);
        assert_eq!(add_setting(&[0x02], OUR_SETTING, 1), None);
        assert_eq!(add_setting(&[0x00, 0x07, 0x01, 0x00], OUR_SETTING, 1), None);
        assert_eq!(add_setting(&[0x00, 0x04, 0x05, 0x06], OUR_SETTING, 1), None);
        // An empty SETTINGS frame.
        let out = add_setting(&[0x00, 0x04, 0x00], OUR_SETTING, 1).unwrap();
        assert_eq!(&out[..], &[0x00, 0x04, 0x05, 0x80, 0x5e, 0xcc, 0x02, 0x01]);
    }

    fn control_events(bytes: &[u8], cuts: &[usize]) -> Vec<ControlEvent> {
        let mut p = ControlParser::new(OUR_SETTING);
        let mut events = Vec::new();
        let mut last = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(bytes.len());
        for c in cuts {
            p.feed(&bytes[last..c], &mut |e| events.push(e));
            last = c;
        }
        events
    }

    #[test]
    fn control_parser_reports_settings_then_frame_types() {
        let mut bytes = frame(
            FRAME_SETTINGS,
            &settings_payload(&[(0x01, 0), (OUR_SETTING, 1)]),
        );
        bytes.extend(frame(0x07, &[0x00]));
        bytes.extend(frame(OUR_FRAME, b"abc"));
        for cut in 0..bytes.len() {
            assert_eq!(
                control_events(&bytes, &[cut]),
                vec![
                    ControlEvent::Settings {
                        entries: vec![(0x01, 0), (OUR_SETTING, 1)],
                        ours: Some(1)
                    },
                    ControlEvent::Frame(0x07),
                    ControlEvent::Frame(OUR_FRAME),
                ]
            );
        }
    }

    #[test]
    fn control_parser_bad_first_frame_and_truncated_settings() {
        assert_eq!(
            control_events(&frame(0x07, &[0]), &[]),
            vec![ControlEvent::Malformed]
        );
        // Length 1, one byte: an id without a value.
        assert_eq!(
            control_events(&[0x04, 0x01, 0x01], &[]),
            vec![ControlEvent::Malformed]
        );
        // A bad value sticks even if repeated with 1 afterwards.
        let bytes = frame(
            FRAME_SETTINGS,
            &settings_payload(&[(OUR_SETTING, 7), (OUR_SETTING, 1)]),
        );
        assert!(matches!(
            control_events(&bytes, &[]).as_slice(),
            [ControlEvent::Settings { ours: Some(7), .. }]
        ));
    }

    #[test]
    fn settings_entries_are_capped_but_ours_is_always_found() {
        let mut pairs: Vec<(u64, u64)> = (0..200).map(|i| (0x21 + 0x1f * i, i)).collect();
        pairs.push((OUR_SETTING, 1));
        let bytes = frame(FRAME_SETTINGS, &settings_payload(&pairs));
        match control_events(&bytes, &[17]).as_slice() {
            [ControlEvent::Settings { entries, ours }] => {
                assert_eq!(entries.len(), MAX_RECORDED_SETTINGS);
                assert_eq!(*ours, Some(1));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Reference: frame headers of a whole buffer, parsed in one go.
    fn reference_headers(mut b: &[u8]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while let Ok((ty, n)) = varint::decode(b) {
            b = &b[n..];
            let Ok((len, n)) = varint::decode(b) else {
                break;
            };
            b = &b[n..];
            out.push((ty, len));
            match usize::try_from(len) {
                Ok(l) if l <= b.len() => b = &b[l..],
                _ => break,
            }
        }
        out
    }

    fn chunked_headers(bytes: &[u8], cuts: &[usize]) -> (Vec<(u64, u64)>, Vec<u8>, FrameParser) {
        let mut p = FrameParser::default();
        let mut headers = Vec::new();
        let mut payload = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(bytes.len());
        let mut last = 0;
        for c in cuts {
            let flow = p.feed(&bytes[last..c], |ev| {
                match ev {
                    FrameEvent::Header { ty, len } => headers.push((ty, len)),
                    FrameEvent::Payload(b) => payload.extend_from_slice(b),
                    FrameEvent::Type(_) | FrameEvent::End => {}
                }
                ControlFlow::Continue(())
            });
            assert!(flow.is_continue());
            last = c;
        }
        (headers, payload, p)
    }

    proptest! {
        #[test]
        fn parsers_never_panic(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..40), 0..12)) {
            let mut f = FrameParser::default();
            let mut c = ControlParser::new(OUR_SETTING);
            let mut u = VarintReader::default();
            for ch in &chunks {
                let _ = f.feed(ch, |_| ControlFlow::Continue(()));
                c.feed(ch, &mut |_| {});
                let mut s = &ch[..];
                while u.feed(&mut s).is_some() {}
            }
        }

        #[test]
        fn frame_boundaries_match_reference_on_any_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let (headers, _, _) = chunked_headers(&bytes, &cuts);
            prop_assert_eq!(headers, reference_headers(&bytes));
        }

        #[test]
        fn frame_boundaries_match_generated_frames(
            frames in proptest::collection::vec(
                (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..50), 0usize..4, 0usize..4),
                0..10),
            cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
            let mut bytes = Vec::new();
            let mut want = Vec::new();
            let mut want_payload = Vec::new();
            for (ty, payload, tl, ll) in &frames {
                let ty = ty & varint::MAX;
                let tl = varint::encoded_len(ty).max([1, 2, 4, 8][*tl]);
                let len = payload.len() as u64;
                let ll = varint::encoded_len(len).max([1, 2, 4, 8][*ll]);
                bytes.extend(enc_len(ty, tl));
                bytes.extend(enc_len(len, ll));
                bytes.extend_from_slice(payload);
                want.push((ty, len));
                want_payload.extend_from_slice(payload);
            }
            let (headers, payload, p) = chunked_headers(&bytes, &cuts);
            prop_assert_eq!(headers, want);
            prop_assert_eq!(payload, want_payload);
            prop_assert!(p.at_boundary());
        }

        #[test]
        fn settings_round_trip(
            pairs in proptest::collection::vec(
                (
                    prop_oneof![Just(OUR_SETTING), 0..=varint::MAX],
                    prop_oneof![0u64..3, 0..=varint::MAX],
                ),
                0..20,
            ),
            cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let bytes = frame(FRAME_SETTINGS, &settings_payload(&pairs));
            let values: Vec<u64> = pairs.iter().filter(|p| p.0 == OUR_SETTING).map(|p| p.1).collect();
            let ours = values.iter().copied().find(|v| *v > 1).or(values.last().copied());
            prop_assert_eq!(
                control_events(&bytes, &cuts),
                vec![ControlEvent::Settings { entries: pairs.clone(), ours }]
            );
        }
    }

    // ----- real QUIC ----------------------------------------------------

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    struct Pki {
        cert: rustls::pki_types::CertificateDer<'static>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    }

    fn pki() -> Pki {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        Pki {
            cert: ck.cert.der().clone(),
            key: rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into(),
        }
    }

    fn server_endpoint(pki: &Pki) -> quinn::Endpoint {
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
            .unwrap();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
    }

    async fn client_connect(pki: &Pki, addr: SocketAddr) -> quinn::Connection {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.cert.clone()).unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        ep.connect(addr, "localhost").unwrap().await.unwrap()
    }

    /// One served connection: the test gets its H3Control and a way to make
    /// h3 send GOAWAY.
    struct Served {
        ctl: H3Control,
        goaway: mpsc::UnboundedSender<oneshot::Sender<()>>,
    }

    /// An h3 server over the shim, like the front builds it, answering every
    /// request with 200 and `echo:` + its body.
    async fn serve(enabled: bool) -> (SocketAddr, Arc<Pki>, mpsc::UnboundedReceiver<Served>) {
        let pki = Arc::new(pki());
        let ep = server_endpoint(&pki);
        let addr = ep.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let conn = incoming.await.unwrap();
                    let cfg = H3ShimConfig {
                        codepoints: Codepoints::default(),
                        enabled,
                    };
                    let (shim, ctl) =
                        H3Shim::new(h3_quinn::Connection::new(conn.clone()), conn.clone(), cfg);
                    let mut h3c: h3::server::Connection<H3Shim, Bytes> = h3::server::builder()
                        .enable_extended_connect(true)
                        .enable_datagram(true)
                        .send_grease(true)
                        .build(shim)
                        .await
                        .unwrap();
                    let (goaway, mut goaway_rx) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
                    let _ = tx.send(Served { ctl, goaway });
                    loop {
                        tokio::select! {
                            r = h3c.accept() => match r {
                                Ok(Some(resolver)) => {
                                    tokio::spawn(async move {
                                        let Ok((_req, mut stream)) = resolver.resolve_request().await else { return };
                                        let mut body = b"echo:".to_vec();
                                        while let Ok(Some(mut chunk)) = stream.recv_data().await {
                                            while chunk.has_remaining() {
                                                let c = chunk.chunk();
                                                body.extend_from_slice(c);
                                                let n = c.len();
                                                chunk.advance(n);
                                            }
                                        }
                                        let resp = http::Response::builder().status(200).body(()).unwrap();
                                        let _ = stream.send_response(resp).await;
                                        let _ = stream.send_data(Bytes::from(body)).await;
                                        let _ = stream.finish().await;
                                    });
                                }
                                _ => break,
                            },
                            Some(ack) = goaway_rx.recv() => {
                                h3c.shutdown(0).await.unwrap();
                                let _ = ack.send(());
                            }
                        }
                    }
                });
            }
        });
        (addr, pki, rx)
    }

    async fn read_varint(r: &mut quinn::RecvStream) -> u64 {
        let mut first = [0u8; 1];
        r.read_exact(&mut first).await.unwrap();
        let len = varint::len_from_first_byte(first[0]);
        let mut buf = vec![first[0]];
        buf.resize(len, 0);
        r.read_exact(&mut buf[1..]).await.unwrap();
        varint::decode(&buf).unwrap().0
    }

    async fn read_frame(r: &mut quinn::RecvStream) -> (u64, Vec<u8>) {
        let ty = read_varint(r).await;
        let len = read_varint(r).await;
        let mut payload = vec![0; len as usize];
        r.read_exact(&mut payload).await.unwrap();
        (ty, payload)
    }

    fn parse_settings(mut p: &[u8]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while !p.is_empty() {
            let (k, n) = varint::decode(p).unwrap();
            p = &p[n..];
            let (v, n) = varint::decode(p).unwrap();
            p = &p[n..];
            out.push((k, v));
        }
        out
    }

    /// Accepts the server's uni streams until its control stream (type 0);
    /// the others are kept open in `keep`.
    async fn server_control_stream(
        conn: &quinn::Connection,
        keep: &mut Vec<quinn::RecvStream>,
    ) -> quinn::RecvStream {
        loop {
            let mut s = conn.accept_uni().await.unwrap();
            if read_varint(&mut s).await == STREAM_TYPE_CONTROL {
                return s;
            }
            keep.push(s);
        }
    }

    /// Opens the client's control stream with this SETTINGS payload.
    async fn open_client_control(
        conn: &quinn::Connection,
        pairs: &[(u64, u64)],
    ) -> quinn::SendStream {
        let mut s = conn.open_uni().await.unwrap();
        let mut bytes = vec![0x00];
        bytes.extend(frame(FRAME_SETTINGS, &settings_payload(pairs)));
        s.write_all(&bytes).await.unwrap();
        s
    }

    async fn closed_with(conn: &quinn::Connection) -> u64 {
        let e = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("connection not closed");
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
            other => panic!("closed with {other:?}"),
        }
    }

    async fn next_served(rx: &mut mpsc::UnboundedReceiver<Served>) -> Served {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    async fn goaway(served: &Served) {
        let (tx, rx) = oneshot::channel();
        served.goaway.send(tx).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn advertises_setting_and_delivers_certificates_around_goaway() {
        let (addr, pki, mut served_rx) = serve(true).await;
        let conn = client_connect(&pki, addr).await;
        let _ctrl = open_client_control(&conn, &[(OUR_SETTING, 1)]).await;
        let served = next_served(&mut served_rx).await;

        let mut keep = Vec::new();
        let mut ctrl = server_control_stream(&conn, &mut keep).await;
        let (ty, payload) = read_frame(&mut ctrl).await;
        assert_eq!(ty, FRAME_SETTINGS);
        let settings = parse_settings(&payload);
        assert!(settings.contains(&(OUR_SETTING, 1)), "{settings:x?}");
        // h3's own settings are still there.
        assert!(
            settings.contains(&(0x08, 1)) && settings.contains(&(0x33, 1)),
            "{settings:x?}"
        );

        let ctl = &served.ctl;
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), ctl.negotiated())
                .await
                .unwrap(),
            Negotiation::Enabled
        );
        assert_eq!(ctl.peer_settings(), vec![(OUR_SETTING, 1)]);
        ctl.send_server_certificate(Bytes::from_static(b"authenticator-1"))
            .unwrap();
        ctl.send_server_certificate(Bytes::from(vec![0xab; 3000]))
            .unwrap();
        // h3's GOAWAY goes through the same queue, whole, between ours.
        goaway(&served).await;
        ctl.send_server_certificate(Bytes::from_static(b"authenticator-3"))
            .unwrap();

        let raw = {
            let mut head = vec![0x80, 0x5e, 0xcc, 0x01, 0x0f];
            head.extend_from_slice(b"authenticator-1");
            head
        };
        let mut got = vec![0u8; raw.len()];
        ctrl.read_exact(&mut got).await.unwrap();
        assert_eq!(got, raw, "exact wire bytes of the first frame");
        assert_eq!(read_frame(&mut ctrl).await, (OUR_FRAME, vec![0xab; 3000]));
        assert_eq!(read_frame(&mut ctrl).await, (0x07, vec![0x00]));
        assert_eq!(
            read_frame(&mut ctrl).await,
            (OUR_FRAME, b"authenticator-3".to_vec())
        );
        assert_eq!(ctl.violation(), None);
        assert!(conn.close_reason().is_none());
    }

    #[tokio::test]
    async fn client_certificate_on_control_stream_closes_with_frame_unexpected() {
        let (addr, pki, mut served_rx) = serve(true).await;
        let conn = client_connect(&pki, addr).await;
        let mut ctrl = open_client_control(&conn, &[(OUR_SETTING, 1)]).await;
        let served = next_served(&mut served_rx).await;
        ctrl.write_all(&frame(OUR_FRAME, b"no")).await.unwrap();
        assert_eq!(closed_with(&conn).await, 0x0105);
        assert_eq!(
            served.ctl.violation(),
            Some(Violation::ClientSentCertificate)
        );
        assert_eq!(served.ctl.negotiation(), Negotiation::Closed);
        assert_eq!(
            served.ctl.send_server_certificate(Bytes::from_static(b"x")),
            Err(SendError::Closed)
        );
    }

    #[tokio::test]
    async fn setting_value_two_closes_with_settings_error() {
        let (addr, pki, mut served_rx) = serve(true).await;
        let conn = client_connect(&pki, addr).await;
        let _ctrl = open_client_control(&conn, &[(0x33, 1), (OUR_SETTING, 2)]).await;
        let served = next_served(&mut served_rx).await;
        assert_eq!(closed_with(&conn).await, 0x0109);
        assert_eq!(served.ctl.violation(), Some(Violation::BadSettingValue));
        assert_eq!(served.ctl.negotiated().await, Negotiation::Closed);
    }

    #[tokio::test]
    async fn certificate_frame_on_request_stream_closes_with_frame_unexpected() {
        let (addr, pki, mut served_rx) = serve(true).await;
        let conn = client_connect(&pki, addr).await;
        let _ctrl = open_client_control(&conn, &[(OUR_SETTING, 1)]).await;
        let served = next_served(&mut served_rx).await;
        assert_eq!(served.ctl.negotiated().await, Negotiation::Enabled);
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0x80, 0x5e, 0xcc, 0x01, 0x00])
            .await
            .unwrap();
        assert_eq!(closed_with(&conn).await, 0x0105);
        assert_eq!(served.ctl.violation(), Some(Violation::WrongStream));
    }

    #[tokio::test]
    async fn certificate_frame_on_request_stream_before_settings_closes_at_once() {
        let (addr, pki, mut served_rx) = serve(true).await;
        let conn = client_connect(&pki, addr).await;
        let served = next_served(&mut served_rx).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0x80, 0x5e, 0xcc, 0x01, 0x00])
            .await
            .unwrap();
        assert_eq!(closed_with(&conn).await, 0x0105);
        assert_eq!(served.ctl.violation(), Some(Violation::WrongStream));
    }

    /// Spec §3: while the feature is on here, a client that sends a
    /// certificate loses the connection even without sending the setting
    /// (the same rule as the HTTP/2 shim).
    #[tokio::test]
    async fn without_the_clients_setting_a_client_certificate_still_closes() {
        let (addr, pki, mut served_rx) = serve(true).await;
        let conn = client_connect(&pki, addr).await;
        let mut ctrl = open_client_control(&conn, &[(0x33, 1)]).await;
        let served = next_served(&mut served_rx).await;
        assert_eq!(served.ctl.negotiated().await, Negotiation::Disabled);
        assert_eq!(
            served.ctl.send_server_certificate(Bytes::from_static(b"x")),
            Err(SendError::NotNegotiated)
        );
        ctrl.write_all(&frame(OUR_FRAME, b"from a client"))
            .await
            .unwrap();
        assert_eq!(closed_with(&conn).await, 0x0105);
        assert_eq!(
            served.ctl.violation(),
            Some(Violation::ClientSentCertificate)
        );
    }

    #[tokio::test]
    async fn switched_off_sends_no_setting_and_never_enables() {
        let (addr, pki, mut served_rx) = serve(false).await;
        let conn = client_connect(&pki, addr).await;
        let mut ctrl_out = open_client_control(&conn, &[(OUR_SETTING, 1)]).await;
        let served = next_served(&mut served_rx).await;
        let mut keep = Vec::new();
        let mut ctrl = server_control_stream(&conn, &mut keep).await;
        let (ty, payload) = read_frame(&mut ctrl).await;
        assert_eq!(ty, FRAME_SETTINGS);
        assert!(!parse_settings(&payload).iter().any(|p| p.0 == OUR_SETTING));
        assert_eq!(served.ctl.negotiated().await, Negotiation::Disabled);
        assert_eq!(served.ctl.peer_settings(), vec![(OUR_SETTING, 1)]);
        // Nothing is enforced: our frame is an unknown frame.
        ctrl_out.write_all(&frame(OUR_FRAME, b"x")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(conn.close_reason().is_none());
        assert_eq!(served.ctl.violation(), None);
    }

    /// A POST written by hand: QPACK with static-table references only.
    fn post_headers() -> Vec<u8> {
        let mut block = vec![0x00, 0x00, 0xd4, 0xd7, 0xc1, 0x50, 0x09];
        block.extend_from_slice(b"localhost");
        frame(0x01, &block)
    }

    #[tokio::test]
    async fn data_payload_that_looks_like_our_frame_is_not_a_frame() {
        let (addr, pki, mut served_rx) = serve(true).await;
        let conn = client_connect(&pki, addr).await;
        let _ctrl = open_client_control(&conn, &[(OUR_SETTING, 1)]).await;
        let served = next_served(&mut served_rx).await;
        assert_eq!(served.ctl.negotiated().await, Negotiation::Enabled);

        // Capsule-like DATA payloads full of our frame's bytes, in odd chunks.
        let lookalike: Vec<u8> = [0x80, 0x5e, 0xcc, 0x01, 0x00].repeat(20_000);
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&post_headers()).await.unwrap();
        let mut body = frame(0x00, &lookalike);
        body.extend(frame(0x21, b"grease")); // a reserved frame type in between
        body.extend(frame(0x00, &lookalike[..7]));
        for chunk in body.chunks(1_337) {
            send.write_all(chunk).await.unwrap();
        }
        send.finish().unwrap();

        let mut echoed = Vec::new();
        let mut status_seen = false;
        loop {
            let mut first = [0u8; 1];
            match recv.read(&mut first).await.unwrap() {
                None | Some(0) => break,
                Some(_) => {}
            }
            let len = varint::len_from_first_byte(first[0]);
            let mut tyb = vec![first[0]];
            tyb.resize(len, 0);
            recv.read_exact(&mut tyb[1..]).await.unwrap();
            let ty = varint::decode(&tyb).unwrap().0;
            let flen = read_varint(&mut recv).await;
            let mut payload = vec![0; flen as usize];
            recv.read_exact(&mut payload).await.unwrap();
            match ty {
                0x01 => status_seen = true,
                0x00 => echoed.extend(payload),
                _ => {}
            }
        }
        assert!(status_seen);
        let mut want = b"echo:".to_vec();
        want.extend_from_slice(&lookalike);
        want.extend_from_slice(&lookalike[..7]);
        assert_eq!(echoed.len(), want.len());
        assert!(echoed == want);
        assert!(conn.close_reason().is_none());
        assert_eq!(served.ctl.violation(), None);
    }

    #[tokio::test]
    async fn h3_client_requests_work_through_the_shim() {
        let (addr, pki, mut served_rx) = serve(true).await;
        let conn = client_connect(&pki, addr).await;
        let (mut driver, mut send_request) =
            h3::client::new(h3_quinn::Connection::new(conn.clone()))
                .await
                .unwrap();
        tokio::spawn(async move {
            let _ = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        let served = next_served(&mut served_rx).await;

        for body_len in [0usize, 10, 200_000] {
            let req = http::Request::builder()
                .method(if body_len == 0 { "GET" } else { "POST" })
                .uri("https://localhost/x")
                .body(())
                .unwrap();
            let mut stream = send_request.send_request(req).await.unwrap();
            if body_len > 0 {
                stream
                    .send_data(Bytes::from(vec![0x5e; body_len]))
                    .await
                    .unwrap();
            }
            stream.finish().await.unwrap();
            let resp = stream.recv_response().await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut got = Vec::new();
            while let Some(mut chunk) = stream.recv_data().await.unwrap() {
                while chunk.has_remaining() {
                    let c = chunk.chunk();
                    got.extend_from_slice(c);
                    let n = c.len();
                    chunk.advance(n);
                }
            }
            assert_eq!(got.len(), 5 + body_len);
            assert!(got.starts_with(b"echo:"));
        }
        // The h3 client does not send our setting.
        assert_eq!(served.ctl.negotiated().await, Negotiation::Disabled);
        assert_eq!(served.ctl.violation(), None);
        assert_eq!(
            served.ctl.send_server_certificate(Bytes::from_static(b"x")),
            Err(SendError::NotNegotiated)
        );
    }

    #[test]
    fn control_handle_is_send_sync_and_streams_are_send() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send + 'static>() {}
        send_sync::<H3Control>();
        send::<H3Shim>();
        send::<ShimBidiStream>();
        send::<ShimRecvStream>();
        send::<ShimSendStream>();
    }
}

//! The HTTP/2 frame-layer shim: secondary certificates on a connection that
//! h2 serves, although h2 can neither send a custom frame nor add a SETTINGS
//! parameter, and drops unknown frames and settings it receives.
//!
//! [`wrap`] puts an [`H2Shim`] between the TLS stream and hyper/h2's HTTP/2
//! server (only when ALPN chose `h2`); request handlers keep the
//! [`H2Control`].
//!
//! Server → client (the bytes h2 writes):
//!
//! * h2's first frame is its SETTINGS. When the feature is on, the shim holds
//!   it back until it is complete and appends `SETTINGS_HTTP_SERVER_CERT_AUTH
//!   = 1` to it (spec `secondary-certs.md` §2: "MUST send the setting with
//!   value 1"). It never sends a SETTINGS frame of its own: the client's ACK
//!   for it would be an unexpected ACK to h2.
//! * Everything after passes through unchanged, vectored writes as vectored
//!   writes, while a [`FrameTracker`] follows the frame boundaries.
//! * Frames of our own (a queued SERVER_CERTIFICATE, a GOAWAY) are written only
//!   between two frames and outside a header block (RFC 9113 §6.10), and in
//!   full before any further h2 byte. They go out when h2 writes or flushes
//!   next, or from `poll_read` when h2's task polls it while idle; queuing one
//!   wakes that task.
//!
//! Client → server: bytes pass through unchanged; a [`FrameScanner`] reads the
//! frame layer on the side (SETTINGS entries, HEADERS stream ids, frames of our
//! type) with a fixed few dozen bytes of state.
//!
//! A client that breaks a rule (spec §2, §3, §4.1) gets a GOAWAY with
//! PROTOCOL_ERROR (spec §6) at the next frame boundary; then reads return EOF
//! and writes fail, so h2 and hyper end the connection.
//!
//! The shim is also every HTTP/2 connection's flood guard, the feature on or
//! off: control frames that cost us work without carrying a request (PING,
//! SETTINGS, PRIORITY, empty frames; [`crate::wire::h2_flood`]) go through a
//! token bucket, and a client that empties it gets GOAWAY
//! ENHANCE_YOUR_CALM the same way. Bytes that do not start with the HTTP/2
//! preface (HTTP/1.1 on a sniffed plaintext listener) pass through untouched.
//!
//! The shim only adapts: which certificate to send and when is the caller's
//! business. The caller also owns the preconditions of spec §3 item 2 and the
//! TLS 1.3 rule of §2: set [`H2ShimConfig::enabled`] only on a TLS 1.3
//! connection whose handshake (client Finished included) is complete.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::negotiation::{Codepoints, Negotiation, SendError, Violation};
use crate::wire::h2_blocks::{Block, BlockAssembler};
use crate::wire::h2_flood::FloodGuard;
pub use crate::wire::h2_flood::{FloodKind, FloodLimits};
use crate::wire::h2_frame::{
    self, ErrorCode, FrameHeader, FrameScanner, FrameTracker, FrameType, ScanEvent, SettingId,
};
use crate::wire::hpack::NameTable;
use crate::wire::pseudo::{self, Misplaced};
use crate::wire::server_certificate::{self as sc, ServerCertificate};

/// Hold back at most this much of h2's first frame. h2's SETTINGS is a few
/// dozen bytes; anything larger is passed through unchanged (and the setting
/// is then not advertised).
const MAX_FIRST_FRAME: usize = 16 * 1024;

/// At most this many distinct SETTINGS identifiers are recorded for
/// [`H2Control::peer_settings`], so a client cannot grow the list.
const MAX_RECORDED_SETTINGS: usize = 64;

/// How the shim is set up for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2ShimConfig {
    pub codepoints: Codepoints,
    /// Advertise `SETTINGS_HTTP_SERVER_CERT_AUTH = 1` and enforce the draft's
    /// rules. `false`: the feature is off — the setting is never sent, and a
    /// client's SERVER_CERTIFICATE is an unknown frame, ignored (RFC 9113 §5.5).
    pub enabled: bool,
    /// The control-frame flood limit (always enforced).
    pub flood: FloodLimits,
    /// The largest client header block followed for the pseudo-header rules
    /// of trailer sections (`[limits] max_header_list_size` and some room).
    pub max_header_block: usize,
}

/// The byte stream hyper/h2's HTTP/2 server runs over; see the module docs.
pub struct H2Shim<IO> {
    io: IO,
    shared: Arc<Shared>,
    output: Output,
    inspector: Inspector,
    close: Close,
}

/// The handle request handlers use to send certificates and read what the
/// client negotiated. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct H2Control {
    shared: Arc<Shared>,
}

/// State shared between the shim (owned by the connection task) and the
/// controls. The shim's pass-through path touches only `queued` and `waker`.
struct Shared {
    codepoints: Codepoints,
    /// Frames are queued: the shim should look at `state.queue`.
    queued: AtomicBool,
    /// The connection task, woken when a frame is queued.
    waker: AtomicWaker,
    negotiation: watch::Sender<Negotiation>,
    state: Mutex<SharedState>,
}

struct SharedState {
    /// Encoded frames waiting for a frame boundary.
    queue: VecDeque<Bytes>,
    violation: Option<Violation>,
    /// The control frames the client flooded us with, if it did.
    flood: Option<FloodKind>,
    /// Latest value per identifier, in the order first seen.
    peer_settings: Vec<(u16, u32)>,
    peer_max_frame_size: usize,
    closed: bool,
}

/// The server → client direction.
struct Output {
    /// h2's first frame while it is held back to append our setting; `None`
    /// once it is sent, or from the start when the feature is off.
    first: Option<Vec<u8>>,
    /// Follows h2's frames (everything after the first frame when held).
    tracker: FrameTracker,
    /// Bytes of our own still to write: the rewritten first SETTINGS frame, a
    /// SERVER_CERTIFICATE or a GOAWAY. Empty when none.
    own: Bytes,
    /// Own bytes were written and the inner IO has not been flushed since.
    unflushed: bool,
}

/// Pure: what the client's bytes mean for the extension.
struct Inspector {
    scanner: FrameScanner,
    codepoints: Codepoints,
    /// Enforce the draft's rules (the feature is on and was advertised).
    enforce: bool,
    /// The setting went out in our first SETTINGS frame (or will).
    advertised: bool,
    flood: FloodGuard,
    /// The client's header blocks, reassembled, and the names in them
    /// (h2 drops a trailer section's pseudo-headers without a word; RFC
    /// 9113 §8.1 makes them malformed).
    blocks: BlockAssembler,
    names: NameTable,
    /// The current frame's payload goes to `blocks`.
    collecting: bool,
    /// Highest client-initiated stream id seen in a HEADERS frame.
    highest_stream: u32,
    /// The client's first SETTINGS frame has ended.
    first_settings_done: bool,
    /// Our setting's value in the client's first SETTINGS frame.
    first_value: Option<u32>,
    /// The client has sent our setting = 1 at some point.
    sent_one: bool,
    /// A violation was found; nothing more is inspected.
    stopped: bool,
}

/// What [`Inspector::handle`] found in the client's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finding {
    Setting {
        id: SettingId,
        value: u32,
    },
    /// The client's first SETTINGS frame ended; the outcome.
    Negotiated(Negotiation),
    Violation(Violation),
    Flood(FloodKind),
    /// A trailer section with a pseudo-header; h2 must not read the frame
    /// that completes it: only the first `keep` bytes of this read go on.
    Malformed {
        misplaced: Misplaced,
        keep: usize,
    },
}

/// Why the shim closes the connection with its own GOAWAY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Violation(Violation),
    Flood(FloodKind),
    Malformed(Misplaced),
}

/// Closing after a violation: GOAWAY at the next frame boundary, flush, then
/// EOF for reads and errors for writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    Open,
    GoAwayPending(Reason),
    GoAwayWriting,
    GoAwayWritten,
    Done,
}

/// h2's HPACK decoder table size: the default, which we do not change
/// (RFC 9113 §6.5.2), so the client's size updates stay within it.
const HEADER_TABLE_SIZE: usize = 4096;

/// How much more of h2's first frame [`H2Shim::hold_first`] needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    More(usize),
    Complete,
    GiveUp,
}

/// Wraps `io` (the TLS stream of a connection where ALPN chose `h2`). Give the
/// [`H2Shim`] to hyper's HTTP/2 server and the [`H2Control`] to the handlers.
pub fn wrap<IO>(io: IO, cfg: H2ShimConfig) -> (H2Shim<IO>, H2Control)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let initial = if cfg.enabled {
        Negotiation::Pending
    } else {
        Negotiation::Disabled
    };
    let shared = Arc::new(Shared {
        codepoints: cfg.codepoints,
        queued: AtomicBool::new(false),
        waker: AtomicWaker::new(),
        negotiation: watch::Sender::new(initial),
        state: Mutex::new(SharedState {
            queue: VecDeque::new(),
            violation: None,
            flood: None,
            peer_settings: Vec::new(),
            peer_max_frame_size: h2_frame::DEFAULT_MAX_FRAME_SIZE as usize,
            closed: false,
        }),
    });
    let shim = H2Shim {
        io,
        shared: Arc::clone(&shared),
        output: Output {
            first: cfg.enabled.then(Vec::new),
            tracker: FrameTracker::new(),
            own: Bytes::new(),
            unflushed: false,
        },
        inspector: Inspector::new(cfg),
        close: Close::Open,
    };
    (shim, H2Control { shared })
}

// === impl H2Control ===

impl H2Control {
    /// Where the negotiation stands: `Pending` until the client's first
    /// SETTINGS frame has been read (`Disabled` from the start when the feature
    /// is off), `Closed` once the connection ended or the client broke a rule.
    pub fn negotiation(&self) -> Negotiation {
        *self.shared.negotiation.borrow()
    }

    /// Waits until the negotiation is no longer `Pending`.
    pub async fn negotiated(&self) -> Negotiation {
        let mut rx = self.shared.negotiation.subscribe();
        // The sender lives in `shared`, which `self` keeps alive; the shim
        // publishes `Closed` when it is dropped.
        let outcome = match rx.wait_for(|n| *n != Negotiation::Pending).await {
            Ok(n) => *n,
            Err(_) => Negotiation::Closed,
        };
        outcome
    }

    /// The client's `SETTINGS_MAX_FRAME_SIZE` (16,384 until it says otherwise).
    pub fn peer_max_frame_size(&self) -> usize {
        self.shared.lock().peer_max_frame_size
    }

    /// Queues one SERVER_CERTIFICATE frame (stream 0, flags 0) carrying
    /// `authenticator` and wakes the connection task, which writes it at the
    /// next frame boundary, ahead of any frame h2 produces after this call.
    ///
    /// Spec §3.1: nothing may be sent before both sides sent the setting = 1.
    /// Spec §4.3 (project rule): an authenticator larger than the client's
    /// maximum frame size is not sent.
    pub fn send_server_certificate(&self, authenticator: Bytes) -> Result<(), SendError> {
        match self.negotiation() {
            Negotiation::Enabled => {}
            Negotiation::Closed => return Err(SendError::Closed),
            Negotiation::Pending | Negotiation::Disabled => return Err(SendError::NotNegotiated),
        }
        let mut state = self.shared.lock();
        if state.closed {
            return Err(SendError::Closed);
        }
        let len = authenticator.len();
        let max = state.peer_max_frame_size;
        let mut frame = BytesMut::with_capacity(h2_frame::HEADER_LEN + len);
        ServerCertificate::new(authenticator)
            .encode_h2(&self.shared.codepoints, max, &mut frame)
            .map_err(|_| SendError::TooLarge { len, max })?;
        state.queue.push_back(frame.freeze());
        self.shared.queued.store(true, Ordering::Release);
        drop(state);
        self.shared.waker.wake();
        Ok(())
    }

    /// The rule the client broke, if any (the connection is then closing).
    pub fn violation(&self) -> Option<Violation> {
        self.shared.lock().violation
    }

    /// The control frames the client flooded us with, if it did (the
    /// connection is then closing with GOAWAY ENHANCE_YOUR_CALM).
    pub fn flood(&self) -> Option<FloodKind> {
        self.shared.lock().flood
    }

    /// What the client's SETTINGS frames said: the latest value of each
    /// identifier, in the order first seen (at most 64 identifiers).
    pub fn peer_settings(&self) -> Vec<(u16, u32)> {
        self.shared.lock().peer_settings.clone()
    }
}

impl fmt::Debug for H2Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Control")
            .field("negotiation", &self.negotiation())
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        // The state stays consistent under every panic point (there are none
        // while it is held), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next queued frame.
    fn pop_queued(&self) -> Option<Bytes> {
        if !self.queued.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        let frame = state.queue.pop_front();
        if state.queue.is_empty() {
            self.queued.store(false, Ordering::Release);
        }
        frame
    }

    fn record_setting(&self, id: SettingId, value: u32) {
        let mut state = self.lock();
        if id == SettingId::MAX_FRAME_SIZE
            && (h2_frame::DEFAULT_MAX_FRAME_SIZE..=h2_frame::MAX_PAYLOAD_LEN).contains(&value)
        {
            // Out-of-range values are a PROTOCOL_ERROR that h2 reports.
            state.peer_max_frame_size = value as usize;
        }
        let recorded = &mut state.peer_settings;
        if let Some(entry) = recorded.iter_mut().find(|(i, _)| *i == id.0) {
            entry.1 = value;
        } else if recorded.len() < MAX_RECORDED_SETTINGS {
            recorded.push((id.0, value));
        }
    }

    /// Publishes the outcome of the negotiation unless it is already decided.
    fn settle(&self, outcome: Negotiation) {
        self.negotiation.send_if_modified(|n| {
            let pending = *n == Negotiation::Pending;
            if pending {
                *n = outcome;
            }
            pending
        });
    }

    fn set_violation(&self, violation: Violation) {
        self.lock().violation.get_or_insert(violation);
        self.close();
    }

    fn set_flood(&self, kind: FloodKind) {
        self.lock().flood.get_or_insert(kind);
        self.close();
    }

    /// The connection is over: refuse and drop queued frames, tell waiters.
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.queue.clear();
        self.queued.store(false, Ordering::Release);
        drop(state);
        self.negotiation.send_replace(Negotiation::Closed);
    }
}

// === impl H2Shim ===

impl<IO> H2Shim<IO> {
    /// The wrapped stream (e.g. to read TLS state for an exporter).
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The wrapped stream. Reading or writing it directly breaks the shim.
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }
}

impl<IO> H2Shim<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// Something of our own is waiting for a frame boundary.
    fn wants_insert(&self) -> bool {
        matches!(self.close, Close::GoAwayPending(_)) || self.shared.queued.load(Ordering::Acquire)
    }

    /// Writes our own bytes: the frame in progress first, then — where h2's
    /// stream allows an insertion — the GOAWAY or the queued frames. `Ready`
    /// once there is nothing more to write now.
    fn poll_own(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.output.own.is_empty() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.output.own))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                let n = n.min(self.output.own.len());
                self.output.own.advance(n);
                self.output.unflushed = true;
                continue;
            }
            if self.close == Close::GoAwayWriting {
                self.close = Close::GoAwayWritten;
            }
            if self.output.first.is_some() || !self.output.tracker.can_insert() {
                return Poll::Ready(Ok(()));
            }
            match self.close {
                Close::GoAwayPending(reason) => {
                    self.output.own = self.goaway(reason);
                    self.close = Close::GoAwayWriting;
                }
                Close::Open => match self.shared.pop_queued() {
                    Some(frame) => self.output.own = frame,
                    None => return Poll::Ready(Ok(())),
                },
                Close::GoAwayWriting | Close::GoAwayWritten | Close::Done => {
                    return Poll::Ready(Ok(()))
                }
            }
        }
    }

    /// After the GOAWAY is written: flush it, then the connection is done.
    fn poll_finish_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.close == Close::GoAwayWritten {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.output.unflushed = false;
            self.close = Close::Done;
        }
        Poll::Ready(Ok(()))
    }

    fn goaway(&self, reason: Reason) -> Bytes {
        let (code, debug) = match reason {
            Reason::Violation(v) => (v.h2_code(), v.reason()),
            Reason::Flood(_) => (ErrorCode::ENHANCE_YOUR_CALM, "control frame flood"),
            Reason::Malformed(m) => (ErrorCode::PROTOCOL_ERROR, m.reason()),
        };
        let debug = debug.as_bytes();
        let mut frame = BytesMut::with_capacity(h2_frame::HEADER_LEN + 8 + debug.len());
        // The debug strings are short constants; encoding cannot fail.
        let _ = h2_frame::encode_goaway(self.inspector.highest_stream, code, debug, &mut frame);
        frame.freeze()
    }

    /// Takes bytes of h2's first frame into `output.first`; returns how many.
    /// Once the frame is complete, its rewritten form becomes `output.own`.
    fn hold_first(&mut self, bufs: &[IoSlice<'_>]) -> usize {
        let Some(held) = self.output.first.as_mut() else {
            return 0;
        };
        let mut taken = 0;
        let mut verdict = None;
        'bufs: for buf in bufs {
            let mut bytes: &[u8] = buf;
            while !bytes.is_empty() {
                match Need::of(held) {
                    Need::More(need) => {
                        let n = need.min(bytes.len());
                        let (head, rest) = bytes.split_at(n);
                        held.extend_from_slice(head);
                        bytes = rest;
                        taken += n;
                    }
                    done => {
                        verdict = Some(done);
                        break 'bufs;
                    }
                }
            }
        }
        let verdict = verdict.unwrap_or_else(|| Need::of(held));
        match verdict {
            Need::More(_) => {}
            Need::Complete => self.finish_first(),
            Need::GiveUp => self.give_up_first(),
        }
        taken
    }

    /// h2's first frame is complete: append our setting and send it.
    fn finish_first(&mut self) {
        let Some(held) = self.output.first.take() else {
            return;
        };
        match sc::advertise_h2(&self.inspector.codepoints, &held) {
            Some(rewritten) => self.output.own = Bytes::from(rewritten),
            None => {
                self.output.first = Some(held);
                self.give_up_first();
            }
        }
    }

    /// h2's first frame is not a SETTINGS frame we can extend: send it as it
    /// is, and the feature is off for this connection.
    fn give_up_first(&mut self) {
        let Some(held) = self.output.first.take() else {
            return;
        };
        tracing::warn!("h2's first frame is not a SETTINGS frame; secondary certificates off");
        self.output.tracker.advance(&held);
        self.output.own = Bytes::from(held);
        self.inspector.enforce = false;
        self.inspector.advertised = false;
        self.shared.negotiation.send_if_modified(|n| {
            let was_enabled = *n == Negotiation::Enabled;
            if was_enabled {
                *n = Negotiation::Disabled;
            }
            was_enabled
        });
    }

    fn poll_write_bufs(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.shared.waker.register(cx.waker());
        ready!(self.poll_own(cx))?;
        if !matches!(self.close, Close::Open | Close::GoAwayPending(_)) {
            ready!(self.poll_finish_close(cx))?;
            return Poll::Ready(Err(closed_error()));
        }
        let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if self.output.first.is_some() {
            return Poll::Ready(Ok(self.hold_first(bufs)));
        }
        let limit = if self.wants_insert() {
            self.output.tracker.insert_point(bufs)
        } else {
            None
        };
        let io = Pin::new(&mut self.io);
        let n = match limit {
            // Stop at the boundary where our frame goes; h2 writes the rest
            // in its next call.
            Some(limit) => {
                let len = limit.min(first.len());
                ready!(io.poll_write(cx, first.get(..len).unwrap_or_default()))?
            }
            None if bufs.len() == 1 => ready!(io.poll_write(cx, first))?,
            None => ready!(io.poll_write_vectored(cx, bufs))?,
        };
        self.output.tracker.advance_bufs(bufs, n);
        Poll::Ready(Ok(n))
    }

    /// Looks at bytes the client sent (already handed to h2).
    /// Follows the client's new bytes; `Some(n)`: only the first `n` of
    /// them may reach h2.
    fn inspect(&mut self, bytes: &[u8]) -> Option<usize> {
        if self.inspector.scanner.is_stopped() {
            // Not HTTP/2 (HTTP/1.1 on a sniffed listener): pass-through.
            return None;
        }
        let shared = &self.shared;
        let mut reason = None;
        let mut keep = None;
        let now = std::time::Instant::now();
        self.inspector.handle(bytes, now, |finding| match finding {
            Finding::Setting { id, value } => shared.record_setting(id, value),
            Finding::Negotiated(outcome) => shared.settle(outcome),
            Finding::Violation(v) => reason = Some(Reason::Violation(v)),
            Finding::Flood(kind) => reason = Some(Reason::Flood(kind)),
            Finding::Malformed { misplaced, keep: k } => {
                reason = Some(Reason::Malformed(misplaced));
                keep = Some(k);
            }
        });
        match reason {
            None => return None,
            Some(Reason::Malformed(m)) => {
                tracing::debug!(
                    reason = m.reason(),
                    "malformed HTTP/2 request; closing the connection"
                );
            }
            Some(Reason::Violation(v)) => {
                tracing::debug!(violation = %v, "client broke a secondary-certificate rule");
                shared.set_violation(v);
            }
            Some(Reason::Flood(kind)) => {
                tracing::debug!(frame = kind.as_str(), "client flooded control frames");
                shared.set_flood(kind);
            }
        }
        if let (Some(reason), Close::Open) = (reason, self.close) {
            self.close = Close::GoAwayPending(reason);
        }
        keep
    }
}

// === impl Need ===

impl Need {
    /// What `held`, the start of h2's first frame, still lacks.
    fn of(held: &[u8]) -> Need {
        let Some(head) = held.first_chunk::<{ h2_frame::HEADER_LEN }>() else {
            return Need::More(h2_frame::HEADER_LEN - held.len());
        };
        let header = FrameHeader::decode(head);
        let total = h2_frame::HEADER_LEN + header.payload_len();
        if header.kind != FrameType::SETTINGS || total > MAX_FIRST_FRAME {
            return Need::GiveUp;
        }
        match total.checked_sub(held.len()) {
            Some(0) | None => Need::Complete,
            Some(n) => Need::More(n),
        }
    }
}

fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "HTTP/2 connection closed after a secondary-certificate violation",
    )
}

impl<IO> AsyncRead for H2Shim<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared.waker.register(cx.waker());
        match this.close {
            Close::Open => {}
            Close::Done => return Poll::Ready(Ok(())),
            Close::GoAwayPending(_) | Close::GoAwayWriting | Close::GoAwayWritten => {
                ready!(this.poll_own(cx))?;
                if matches!(this.close, Close::GoAwayPending(_)) {
                    // h2 is in the middle of a frame, so it has bytes left to
                    // write; it flushes them in this same poll, and the GOAWAY
                    // follows from `poll_write`.
                    return Poll::Pending;
                }
                ready!(this.poll_finish_close(cx))?;
                return Poll::Ready(Ok(()));
            }
        }
        // h2 polls reads whenever its task is idle: a chance to send queued
        // frames. A `Pending` write leaves a waker with the inner IO.
        if this.wants_insert() || !this.output.own.is_empty() {
            if let Poll::Ready(Err(e)) = this.poll_own(cx) {
                return Poll::Ready(Err(e));
            }
        }
        if this.output.unflushed {
            match Pin::new(&mut this.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => this.output.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        let before = buf.filled().len();
        if let Err(e) = ready!(Pin::new(&mut this.io).poll_read(cx, buf)) {
            this.shared.close();
            return Poll::Ready(Err(e));
        }
        let new = buf.filled().get(before..).unwrap_or_default();
        if new.is_empty() {
            this.shared.close();
        } else if let Some(keep) = this.inspect(new) {
            // The rest (the frame completing a malformed block, and what
            // follows) never reaches h2; the GOAWAY, then EOF, come next.
            buf.set_filled(before + keep);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO> AsyncWrite for H2Shim<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared.waker.register(cx.waker());
        ready!(this.poll_own(cx))?;
        if this.close == Close::GoAwayWritten {
            return this.poll_finish_close(cx);
        }
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        this.output.unflushed = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_own(cx))?;
        ready!(this.poll_finish_close(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO> Drop for H2Shim<IO> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl<IO> fmt::Debug for H2Shim<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Shim")
            .field("negotiation", &*self.shared.negotiation.borrow())
            .field("close", &self.close)
            .finish_non_exhaustive()
    }
}

// === impl Inspector ===

impl Inspector {
    fn new(cfg: H2ShimConfig) -> Inspector {
        Inspector {
            scanner: FrameScanner::new(),
            codepoints: cfg.codepoints,
            enforce: cfg.enabled,
            advertised: cfg.enabled,
            flood: FloodGuard::new(cfg.flood),
            blocks: BlockAssembler::new(cfg.max_header_block),
            names: NameTable::new(HEADER_TABLE_SIZE),
            collecting: false,
            highest_stream: 0,
            first_settings_done: false,
            first_value: None,
            sent_one: false,
            stopped: false,
        }
    }

    /// Follows `bytes`, the next bytes the client sent (read at `now`);
    /// reports findings in order. After a violation or a flood nothing more
    /// is reported, but stream ids are still followed to the end of `bytes`
    /// (h2 gets all of them, and the GOAWAY's last stream id must cover what
    /// it may have processed).
    fn handle(&mut self, mut bytes: &[u8], now: std::time::Instant, mut on: impl FnMut(Finding)) {
        let start = bytes.len();
        loop {
            if self.collecting {
                if let Some(chunk) = self.scanner.take_payload(&mut bytes) {
                    self.blocks.payload(chunk);
                }
                if !self.scanner.payload_done() {
                    return; // the rest of the payload comes in a later read
                }
                self.collecting = false;
                if let Some(block) = self.blocks.frame_end() {
                    let consumed = start - bytes.len();
                    self.judge(block, consumed, &mut on);
                }
                continue;
            }
            let Some(event) = self.scanner.next_event(&mut bytes) else {
                return;
            };
            if self.stopped {
                if let ScanEvent::Frame(header) = event {
                    self.follow_streams(&header);
                }
                continue;
            }
            match event {
                ScanEvent::PrefaceMismatch => {}
                ScanEvent::Frame(header) => {
                    if let Some(kind) = self.flood.check(&header, now) {
                        self.follow_streams(&header);
                        self.stopped = true;
                        on(Finding::Flood(kind));
                        continue;
                    }
                    self.on_frame(&header, &mut on);
                    self.collecting = !self.stopped && self.blocks.frame(&header);
                }
                ScanEvent::Setting { id, value } => {
                    on(Finding::Setting { id, value });
                    if id == self.codepoints.h2_setting() {
                        self.on_our_setting(value, &mut on);
                    }
                }
                ScanEvent::SettingsEnd if !self.first_settings_done => {
                    self.first_settings_done = true;
                    let on_both_sides = self.advertised && self.first_value == Some(1);
                    on(Finding::Negotiated(if on_both_sides {
                        Negotiation::Enabled
                    } else {
                        Negotiation::Disabled
                    }));
                }
                ScanEvent::SettingsEnd => {}
            }
        }
    }

    /// A complete header block: its names keep the HPACK table in step;
    /// a trailer section may carry no pseudo-header. `consumed`: how many
    /// bytes of this read the block's last frame ends at.
    fn judge(&mut self, block: Block, consumed: usize, on: &mut impl FnMut(Finding)) {
        let names = match self.names.block(&block.fragment) {
            Ok(names) => names,
            // h2 fails the connection too (COMPRESSION_ERROR); the table
            // cannot be followed past it.
            Err(_) => {
                self.blocks.give_up();
                return;
            }
        };
        if !block.trailers {
            return;
        }
        if let Err(misplaced) = pseudo::check(&names, true) {
            self.stopped = true;
            on(Finding::Malformed {
                misplaced,
                // Hold back at least the block's last byte: h2 then never
                // has the whole frame.
                keep: consumed.saturating_sub(1),
            });
        }
    }

    fn follow_streams(&mut self, header: &FrameHeader) {
        if header.kind == FrameType::HEADERS && header.stream_id % 2 == 1 {
            self.highest_stream = self.highest_stream.max(header.stream_id);
        }
    }

    fn on_frame(&mut self, header: &FrameHeader, on: &mut impl FnMut(Finding)) {
        self.follow_streams(header);
        if self.enforce && ServerCertificate::is_h2(&self.codepoints, header) {
            // Spec §3.2: "A server that receives a SERVER_CERTIFICATE frame
            // from a client MUST close the connection"; §4.1: on a stream
            // other than 0 it "MUST be treated as a connection error".
            self.violate(
                if header.stream_id == 0 {
                    Violation::ClientSentCertificate
                } else {
                    Violation::WrongStream
                },
                on,
            );
        }
    }

    fn on_our_setting(&mut self, value: u32, on: &mut impl FnMut(Finding)) {
        if !self.first_settings_done {
            self.first_value = Some(value);
        }
        if !self.enforce {
            return;
        }
        match sc::decode_setting_value(u64::from(value)) {
            Ok(true) => self.sent_one = true,
            // Spec §3.1: once an endpoint has sent 1 it "MUST NOT later send 0".
            Ok(false) if self.sent_one => self.violate(Violation::SettingWithdrawn, on),
            Ok(false) => {}
            // Spec §2: the value "MUST be 0 or 1".
            Err(_) => self.violate(Violation::BadSettingValue, on),
        }
    }

    fn violate(&mut self, violation: Violation, on: &mut impl FnMut(Finding)) {
        self.stopped = true;
        on(Finding::Violation(violation));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    use bytes::Bytes;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use crate::wire::h2_frame::{encode_setting, PREFACE};

    const OURS: u16 = 0x5ECC;
    const CERT: u8 = 0xCE;

    // --- frame builders ---

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = FrameHeader::new(FrameType(kind), flags, stream, payload.len())
            .unwrap()
            .encode()
            .to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let payload: Vec<u8> = entries
            .iter()
            .flat_map(|&(id, v)| encode_setting(SettingId(id), v))
            .collect();
        frame(4, 0, 0, &payload)
    }

    fn client_hello(entries: &[(u16, u32)]) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(settings(entries));
        out
    }

    /// What h2's first SETTINGS frame looks like, and its rewritten form.
    fn server_settings() -> (Vec<u8>, Vec<u8>) {
        let plain = settings(&[(3, 256), (4, 1 << 20), (8, 1)]);
        let rewritten = settings(&[(3, 256), (4, 1 << 20), (8, 1), (OURS, 1)]);
        (plain, rewritten)
    }

    fn cert_frame(payload: &[u8]) -> Vec<u8> {
        frame(CERT, 0, 0, payload)
    }

    fn cfg(enabled: bool) -> H2ShimConfig {
        H2ShimConfig {
            codepoints: Codepoints::default(),
            enabled,
            flood: FloodLimits {
                per_s: 1000,
                burst: 1000,
            },
            max_header_block: 64 * 1024,
        }
    }

    // --- a scripted inner IO ---

    #[derive(Clone, Copy, Debug)]
    enum Step {
        Accept(usize),
        Pending,
    }

    #[derive(Default)]
    struct MockIo {
        written: Vec<u8>,
        plan: VecDeque<Step>,
        vectored: bool,
        vectored_calls: Vec<usize>,
        flushes: usize,
        read_data: VecDeque<u8>,
        eof: bool,
    }

    impl MockIo {
        fn accept(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
            match self.plan.pop_front() {
                Some(Step::Pending) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Step::Accept(n)) => Poll::Ready(Ok(n.clamp(1, len.max(1)).min(len))),
                None => Poll::Ready(Ok(len)),
            }
        }
    }

    impl AsyncRead for MockIo {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.read_data.is_empty() {
                return if self.eof {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            let n = buf.remaining().min(self.read_data.len());
            let bytes: Vec<u8> = self.read_data.drain(..n).collect();
            buf.put_slice(&bytes);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for MockIo {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = ready!(self.accept(cx, buf.len()))?;
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let n = ready!(self.accept(cx, total))?;
            self.vectored_calls.push(bufs.len());
            let mut left = n;
            for b in bufs {
                let take = left.min(b.len());
                self.written.extend_from_slice(&b[..take]);
                left -= take;
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn noop_cx() -> Context<'static> {
        Context::from_waker(futures_util::task::noop_waker_ref())
    }

    type Shim = H2Shim<MockIo>;

    fn mock_shim(enabled: bool, vectored: bool) -> (Shim, H2Control) {
        let io = MockIo {
            vectored,
            ..MockIo::default()
        };
        wrap(io, cfg(enabled))
    }

    /// Writes all of `bytes` the way h2 would: retrying short writes; `Pending`
    /// from the mock is retried too (the mock woke us).
    fn h2_write(shim: &mut Shim, mut bytes: &[u8]) {
        let mut cx = noop_cx();
        let mut spins = 0;
        while !bytes.is_empty() {
            match Pin::new(&mut *shim).poll_write(&mut cx, bytes) {
                Poll::Ready(Ok(n)) => {
                    assert!(n > 0 && n <= bytes.len());
                    bytes = &bytes[n..];
                }
                Poll::Ready(Err(e)) => panic!("write failed: {e}"),
                Poll::Pending => {
                    spins += 1;
                    assert!(spins < 10_000);
                }
            }
        }
    }

    fn flush(shim: &mut Shim) -> Poll<io::Result<()>> {
        Pin::new(shim).poll_flush(&mut noop_cx())
    }

    /// Polls one read with `cx`; returns the bytes h2 got (`None`: Pending).
    fn read_with(shim: &mut Shim, cx: &mut Context<'_>) -> Option<io::Result<Vec<u8>>> {
        let mut storage = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut storage);
        match Pin::new(shim).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Some(Ok(buf.filled().to_vec())),
            Poll::Ready(Err(e)) => Some(Err(e)),
            Poll::Pending => None,
        }
    }

    /// Feeds client bytes through the shim's read side; returns what h2 saw.
    fn client_sends(shim: &mut Shim, bytes: &[u8]) -> Vec<u8> {
        shim.get_mut().read_data.extend(bytes.iter().copied());
        let mut seen = Vec::new();
        while !shim.get_ref().read_data.is_empty() {
            match read_with(shim, &mut noop_cx()) {
                Some(Ok(b)) if !b.is_empty() => seen.extend(b),
                _ => break,
            }
        }
        seen
    }

    /// A shim whose client negotiated the feature and which has sent h2's
    /// (rewritten) first SETTINGS.
    fn negotiated_shim(vectored: bool) -> (Shim, H2Control) {
        let (mut shim, control) = mock_shim(true, vectored);
        client_sends(&mut shim, &client_hello(&[(OURS, 1)]));
        assert_eq!(control.negotiation(), Negotiation::Enabled);
        h2_write(&mut shim, &server_settings().0);
        assert!(flush(&mut shim).is_ready());
        assert_eq!(shim.get_ref().written, server_settings().1);
        shim.get_mut().written.clear();
        (shim, control)
    }

    // --- output ---

    #[test]
    fn first_settings_in_one_byte_writes_is_rewritten() {
        let (mut shim, _control) = mock_shim(true, false);
        let (plain, rewritten) = server_settings();
        let window_update = frame(8, 0, 0, &[0, 0x0f, 0, 1]);
        let mut stream = plain.clone();
        stream.extend(&window_update);
        for b in &stream {
            h2_write(&mut shim, std::slice::from_ref(b));
        }
        assert!(flush(&mut shim).is_ready());
        let mut want = rewritten;
        want.extend(&window_update);
        assert_eq!(shim.get_ref().written, want);
        assert_eq!(&want[..3], &[0, 0, 24]);
    }

    #[test]
    fn first_settings_with_more_frames_in_one_write() {
        let (mut shim, _control) = mock_shim(true, false);
        let (plain, rewritten) = server_settings();
        let ping = frame(6, 0, 0, &[7; 8]);
        let mut stream = plain.clone();
        stream.extend(&ping);
        let mut cx = noop_cx();
        // The first write takes exactly the SETTINGS frame.
        match Pin::new(&mut shim).poll_write(&mut cx, &stream) {
            Poll::Ready(Ok(n)) => assert_eq!(n, plain.len()),
            other => panic!("{other:?}"),
        }
        h2_write(&mut shim, &stream[plain.len()..]);
        assert!(flush(&mut shim).is_ready());
        let mut want = rewritten;
        want.extend(&ping);
        assert_eq!(shim.get_ref().written, want);
    }

    #[test]
    fn rewritten_settings_partially_written_is_finished_first() {
        let (mut shim, _control) = mock_shim(true, false);
        let (plain, rewritten) = server_settings();
        let ping = frame(6, 0, 0, &[1; 8]);
        shim.get_mut().plan = VecDeque::from([
            Step::Accept(5),
            Step::Pending,
            Step::Accept(1),
            Step::Pending,
        ]);
        h2_write(&mut shim, &plain);
        h2_write(&mut shim, &ping);
        while flush(&mut shim).is_pending() {}
        let mut want = rewritten;
        want.extend(&ping);
        assert_eq!(shim.get_ref().written, want);
    }

    #[test]
    fn first_frame_not_settings_turns_the_feature_off() {
        let (mut shim, control) = mock_shim(true, false);
        client_sends(&mut shim, &client_hello(&[(OURS, 1)]));
        assert_eq!(control.negotiation(), Negotiation::Enabled);
        let ping = frame(6, 0, 0, &[1; 8]);
        let data = frame(0, 0, 1, &[2; 40]);
        h2_write(&mut shim, &ping[..5]);
        h2_write(&mut shim, &ping[5..]);
        h2_write(&mut shim, &data);
        assert!(flush(&mut shim).is_ready());
        let mut want = ping;
        want.extend(data);
        assert_eq!(shim.get_ref().written, want);
        assert_eq!(control.negotiation(), Negotiation::Disabled);
        // Nothing is enforced any more.
        client_sends(&mut shim, &cert_frame(b"x"));
        assert_eq!(control.violation(), None);
    }

    #[test]
    fn disabled_passes_settings_through_unchanged() {
        let (mut shim, control) = mock_shim(false, false);
        assert_eq!(control.negotiation(), Negotiation::Disabled);
        let (plain, _) = server_settings();
        for b in &plain {
            h2_write(&mut shim, std::slice::from_ref(b));
        }
        assert_eq!(shim.get_ref().written, plain);
        client_sends(&mut shim, &client_hello(&[(OURS, 1)]));
        assert_eq!(control.negotiation(), Negotiation::Disabled);
        assert_eq!(
            control.send_server_certificate(Bytes::from_static(b"x")),
            Err(SendError::NotNegotiated)
        );
    }

    #[test]
    fn queued_frame_goes_out_between_frames() {
        let (mut shim, control) = negotiated_shim(false);
        let data1 = frame(0, 0, 1, &[1; 100]);
        let data2 = frame(0, 1, 1, &[2; 50]);
        // Half of DATA1, then queue: the rest of the write stops at DATA1's end.
        h2_write(&mut shim, &data1[..40]);
        control
            .send_server_certificate(Bytes::from_static(b"auth"))
            .unwrap();
        let mut rest = data1[40..].to_vec();
        rest.extend(&data2);
        let mut cx = noop_cx();
        match Pin::new(&mut shim).poll_write(&mut cx, &rest) {
            Poll::Ready(Ok(n)) => assert_eq!(n, data1.len() - 40),
            other => panic!("{other:?}"),
        }
        h2_write(&mut shim, &data2);
        let mut want = data1.clone();
        want.extend(cert_frame(b"auth"));
        want.extend(&data2);
        assert_eq!(shim.get_ref().written, want);
    }

    #[test]
    fn queued_frame_never_inside_a_header_block() {
        let (mut shim, control) = negotiated_shim(false);
        let headers = frame(1, 0, 1, &[0x82; 20]); // no END_HEADERS
        let cont1 = frame(9, 0, 1, &[0x84; 20]);
        let cont2 = frame(9, 4, 1, &[0x87; 5]); // END_HEADERS
        let push = frame(5, 0, 1, &[0, 0, 0, 2, 0x82]); // PUSH_PROMISE, open
        let push_end = frame(9, 4, 1, &[0x84]);
        let data = frame(0, 1, 1, b"body");

        h2_write(&mut shim, &headers);
        control
            .send_server_certificate(Bytes::from_static(b"A"))
            .unwrap();
        // Idle inside the block: neither flush nor read may insert it.
        assert!(flush(&mut shim).is_ready());
        assert!(read_with(&mut shim, &mut noop_cx()).is_none());
        let mut block = cont1.clone();
        block.extend(&cont2);
        block.extend(&push);
        block.extend(&push_end);
        h2_write(&mut shim, &block);
        control
            .send_server_certificate(Bytes::from_static(b"B"))
            .unwrap();
        h2_write(&mut shim, &data);
        assert!(flush(&mut shim).is_ready());

        let mut want = headers;
        want.extend(cont1);
        want.extend(cont2);
        want.extend(cert_frame(b"A"));
        want.extend(push);
        want.extend(push_end);
        want.extend(cert_frame(b"B"));
        want.extend(data);
        assert_eq!(shim.get_ref().written, want);
    }

    #[test]
    fn idle_connection_sends_from_poll_read_and_queuing_wakes() {
        let (mut shim, control) = negotiated_shim(false);
        h2_write(&mut shim, &frame(6, 0, 0, &[0; 8]));
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        assert!(read_with(&mut shim, &mut cx).is_none());
        control
            .send_server_certificate(Bytes::from_static(b"cert"))
            .unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        let flushes = shim.get_ref().flushes;
        assert!(read_with(&mut shim, &mut cx).is_none());
        let mut want = frame(6, 0, 0, &[0; 8]);
        want.extend(cert_frame(b"cert"));
        assert_eq!(shim.get_ref().written, want);
        assert_eq!(shim.get_ref().flushes, flushes + 1);
    }

    #[test]
    fn partially_written_frame_is_finished_before_h2_bytes() {
        let (mut shim, control) = negotiated_shim(false);
        control
            .send_server_certificate(Bytes::from(vec![9u8; 100]))
            .unwrap();
        shim.get_mut().plan = VecDeque::from([
            Step::Accept(10),
            Step::Pending,
            Step::Accept(7),
            Step::Pending,
        ]);
        // From poll_read: 10 bytes, then Pending.
        assert!(read_with(&mut shim, &mut noop_cx()).is_none());
        // h2's write must wait until the frame is out.
        let data = frame(0, 0, 1, b"hello");
        let mut cx = noop_cx();
        assert!(Pin::new(&mut shim).poll_write(&mut cx, &data).is_pending());
        h2_write(&mut shim, &data);
        let mut want = cert_frame(&[9; 100]);
        want.extend(&data);
        assert_eq!(shim.get_ref().written, want);
    }

    #[test]
    fn vectored_writes_pass_through_as_vectored() {
        let (mut shim, control) = negotiated_shim(true);
        assert!(shim.is_write_vectored());
        let head = FrameHeader::new(FrameType::DATA, 0, 1, 300)
            .unwrap()
            .encode();
        let payload = vec![5u8; 300];
        let next = frame(8, 0, 1, &[0, 0, 1, 0]);
        let bufs = [
            IoSlice::new(&head),
            IoSlice::new(&payload),
            IoSlice::new(&next),
        ];
        let mut cx = noop_cx();
        match Pin::new(&mut shim).poll_write_vectored(&mut cx, &bufs) {
            Poll::Ready(Ok(n)) => assert_eq!(n, 9 + 300 + 13),
            other => panic!("{other:?}"),
        }
        assert_eq!(shim.get_ref().vectored_calls, vec![3]);
        // A short vectored write ends mid-frame; a queued frame then waits
        // for the boundary and is written before the next h2 bytes.
        shim.get_mut().plan = VecDeque::from([Step::Accept(100)]);
        let _ = Pin::new(&mut shim).poll_write_vectored(&mut cx, &bufs);
        control
            .send_server_certificate(Bytes::from_static(b"V"))
            .unwrap();
        assert!(flush(&mut shim).is_ready());
        assert!(read_with(&mut shim, &mut cx).is_none());
        let mut rest: Vec<u8> = bufs.iter().flat_map(|b| b.to_vec()).collect();
        rest.drain(..100);
        h2_write(&mut shim, &rest);

        let one: Vec<u8> = bufs.iter().flat_map(|b| b.to_vec()).collect();
        let mut want = one.clone();
        want.extend(&one[..9 + 300]);
        want.extend(cert_frame(b"V"));
        want.extend(&one[9 + 300..]);
        assert_eq!(shim.get_ref().written, want);
    }

    #[test]
    fn too_large_respects_peer_max_frame_size() {
        let (_shim, control) = negotiated_shim(false);
        assert_eq!(control.peer_max_frame_size(), 16_384);
        assert_eq!(
            control.send_server_certificate(Bytes::from(vec![0u8; 16_385])),
            Err(SendError::TooLarge {
                len: 16_385,
                max: 16_384
            })
        );
        assert!(control
            .send_server_certificate(Bytes::from(vec![0u8; 16_384]))
            .is_ok());

        let (mut shim, control) = mock_shim(true, false);
        client_sends(&mut shim, &client_hello(&[(5, 20_000), (OURS, 1)]));
        assert_eq!(control.peer_max_frame_size(), 20_000);
        assert!(control
            .send_server_certificate(Bytes::from(vec![0u8; 20_000]))
            .is_ok());
        // An invalid MAX_FRAME_SIZE (h2 rejects it) does not change the limit.
        client_sends(&mut shim, &settings(&[(5, 100)]));
        assert_eq!(control.peer_max_frame_size(), 20_000);
    }

    #[test]
    fn negotiation_outcomes() {
        let cases: &[(&[(u16, u32)], Negotiation)] = &[
            (&[(OURS, 1)], Negotiation::Enabled),
            (&[(OURS, 0)], Negotiation::Disabled),
            (&[], Negotiation::Disabled),
            (&[(3, 100)], Negotiation::Disabled),
            (&[(OURS, 0), (OURS, 1)], Negotiation::Enabled),
        ];
        for (entries, want) in cases {
            let (mut shim, control) = mock_shim(true, false);
            assert_eq!(control.negotiation(), Negotiation::Pending);
            assert_eq!(
                control.send_server_certificate(Bytes::from_static(b"x")),
                Err(SendError::NotNegotiated)
            );
            let mut hello = client_hello(entries);
            let last = hello.pop().unwrap();
            client_sends(&mut shim, &hello);
            assert_eq!(control.negotiation(), Negotiation::Pending, "{entries:?}");
            client_sends(&mut shim, &[last]);
            assert_eq!(control.negotiation(), *want, "{entries:?}");
        }
        // A later SETTINGS with 1 does not change a Disabled outcome.
        let (mut shim, control) = mock_shim(true, false);
        client_sends(&mut shim, &client_hello(&[]));
        client_sends(&mut shim, &settings(&[(OURS, 1)]));
        assert_eq!(control.negotiation(), Negotiation::Disabled);
    }

    #[test]
    fn peer_settings_are_recorded() {
        let (mut shim, control) = mock_shim(true, false);
        let seen = client_sends(
            &mut shim,
            &client_hello(&[(3, 100), (OURS, 1), (0x7777, 9)]),
        );
        assert_eq!(seen, client_hello(&[(3, 100), (OURS, 1), (0x7777, 9)]));
        client_sends(&mut shim, &settings(&[(3, 50)]));
        client_sends(&mut shim, &frame(4, 1, 0, &[])); // ACK: not entries
        assert_eq!(
            control.peer_settings(),
            vec![(3, 50), (OURS, 1), (0x7777, 9)]
        );
        let many: Vec<(u16, u32)> = (100..300).map(|i| (i, 0)).collect();
        client_sends(&mut shim, &settings(&many));
        assert_eq!(control.peer_settings().len(), MAX_RECORDED_SETTINGS);
    }

    #[tokio::test]
    async fn negotiated_waits_and_reports_close() {
        let (mut shim, control) = mock_shim(true, false);
        let waiter = tokio::spawn({
            let control = control.clone();
            async move { control.negotiated().await }
        });
        tokio::task::yield_now().await;
        client_sends(&mut shim, &client_hello(&[(OURS, 1)]));
        assert_eq!(waiter.await.unwrap(), Negotiation::Enabled);

        let (shim, control) = mock_shim(true, false);
        let waiter = tokio::spawn(async move { control.negotiated().await });
        tokio::task::yield_now().await;
        drop(shim);
        assert_eq!(waiter.await.unwrap(), Negotiation::Closed);
    }

    #[test]
    fn eof_closes() {
        let (mut shim, control) = negotiated_shim(false);
        shim.get_mut().eof = true;
        assert_eq!(read_with(&mut shim, &mut noop_cx()).unwrap().unwrap(), b"");
        assert_eq!(control.negotiation(), Negotiation::Closed);
        assert_eq!(
            control.send_server_certificate(Bytes::from_static(b"x")),
            Err(SendError::Closed)
        );
    }

    #[test]
    fn control_is_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<H2Control>();
    }

    // --- violations, over a duplex "TLS" side ---

    /// The server side of a duplex with the shim on it, h2's first SETTINGS
    /// already written; returns the client end.
    async fn duplex_shim(enabled: bool) -> (H2Shim<DuplexStream>, H2Control, DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut shim, control) = wrap(server, cfg(enabled));
        shim.write_all(&server_settings().0).await.unwrap();
        shim.flush().await.unwrap();
        (shim, control, client)
    }

    async fn read_frames_to_eof(client: &mut DuplexStream) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        parse_frames(&all).0
    }

    /// Splits a server byte stream into frames; returns leftover bytes too.
    fn parse_frames(mut bytes: &[u8]) -> (Vec<(FrameHeader, Vec<u8>)>, usize) {
        let mut out = Vec::new();
        while let Some(head) = bytes.first_chunk::<9>() {
            let h = FrameHeader::decode(head);
            let end = 9 + h.payload_len();
            if bytes.len() < end {
                break;
            }
            out.push((h, bytes[9..end].to_vec()));
            bytes = &bytes[end..];
        }
        (out, bytes.len())
    }

    async fn expect_goaway(
        client_bytes: Vec<u8>,
        want: Violation,
        last_stream: u32,
        enabled_debug: &str,
    ) {
        let (mut shim, control, mut client) = duplex_shim(true).await;
        client.write_all(&client_bytes).await.unwrap();
        // The "h2" side reads everything the client sent, then EOF.
        let mut seen = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let mut buf = [0u8; 1024];
            loop {
                let n = shim.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("EOF after the violation");
        assert_eq!(seen, client_bytes, "bytes pass through unchanged");
        assert_eq!(control.violation(), Some(want));
        assert_eq!(control.negotiation(), Negotiation::Closed);
        let err = shim.write_all(&frame(6, 0, 0, &[0; 8])).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        drop(shim);
        let frames = read_frames_to_eof(&mut client).await;
        let (h, payload) = frames.last().unwrap();
        assert_eq!(h.kind, FrameType::GOAWAY);
        assert_eq!(h.stream_id, 0);
        assert_eq!(&payload[..4], &last_stream.to_be_bytes());
        assert_eq!(&payload[4..8], &[0, 0, 0, 1], "PROTOCOL_ERROR");
        assert_eq!(&payload[8..], enabled_debug.as_bytes());
    }

    fn get_headers(stream: u32) -> Vec<u8> {
        // :method GET, :scheme https, :path /, :authority localhost (literal
        // without indexing, indexed name 1).
        let mut block = vec![0x82, 0x87, 0x84, 0x01, 0x09];
        block.extend_from_slice(b"localhost");
        frame(1, 0x5, stream, &block)
    }

    #[tokio::test]
    async fn goaway_on_client_certificate_stream_0() {
        let mut bytes = client_hello(&[(OURS, 1)]);
        bytes.extend(get_headers(1));
        bytes.extend(get_headers(5));
        bytes.extend(cert_frame(b"from client"));
        expect_goaway(
            bytes,
            Violation::ClientSentCertificate,
            5,
            "SERVER_CERTIFICATE from client",
        )
        .await;
    }

    #[tokio::test]
    async fn goaway_on_client_certificate_stream_3() {
        let mut bytes = client_hello(&[(OURS, 1)]);
        bytes.extend(get_headers(1));
        bytes.extend(frame(CERT, 0, 3, b"x"));
        expect_goaway(
            bytes,
            Violation::WrongStream,
            1,
            "SERVER_CERTIFICATE on the wrong stream",
        )
        .await;
    }

    #[tokio::test]
    async fn goaway_on_client_certificate_even_without_its_setting() {
        let mut bytes = client_hello(&[]);
        bytes.extend(cert_frame(b""));
        expect_goaway(
            bytes,
            Violation::ClientSentCertificate,
            0,
            "SERVER_CERTIFICATE from client",
        )
        .await;
    }

    #[tokio::test]
    async fn goaway_on_bad_setting_value() {
        expect_goaway(
            client_hello(&[(OURS, 2)]),
            Violation::BadSettingValue,
            0,
            "SETTINGS_HTTP_SERVER_CERT_AUTH not 0 or 1",
        )
        .await;
    }

    #[tokio::test]
    async fn goaway_on_setting_withdrawn() {
        let mut bytes = client_hello(&[(OURS, 1)]);
        bytes.extend(get_headers(3));
        bytes.extend(settings(&[(OURS, 0)]));
        expect_goaway(
            bytes,
            Violation::SettingWithdrawn,
            3,
            "SETTINGS_HTTP_SERVER_CERT_AUTH changed from 1 to 0",
        )
        .await;
    }

    #[tokio::test]
    async fn disabled_ignores_client_certificate_and_setting_values() {
        let (mut shim, control, mut client) = duplex_shim(false).await;
        let mut bytes = client_hello(&[(OURS, 7)]);
        bytes.extend(cert_frame(b"ignored"));
        bytes.extend(frame(CERT, 0, 3, b"ignored"));
        bytes.extend(settings(&[(OURS, 0)]));
        client.write_all(&bytes).await.unwrap();
        let mut seen = vec![0u8; bytes.len()];
        shim.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, bytes);
        assert_eq!(control.violation(), None);
        assert_eq!(control.negotiation(), Negotiation::Disabled);
        shim.write_all(&frame(6, 0, 0, &[0; 8])).await.unwrap();
        shim.flush().await.unwrap();
        drop(shim);
        let frames = read_frames_to_eof(&mut client).await;
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|(h, _)| h.kind != FrameType::GOAWAY));
        // The setting was not advertised.
        assert_eq!(frames[0].1, server_settings().0[9..]);
    }

    // --- the control-frame flood guard ---

    /// A shim with the feature off and a flood limit of `burst` frames (one
    /// more a second), on a duplex; h2's first SETTINGS already written.
    async fn flood_shim(burst: u32) -> (H2Shim<DuplexStream>, H2Control, DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let config = H2ShimConfig {
            flood: FloodLimits { per_s: 1, burst },
            ..cfg(false)
        };
        let (mut shim, control) = wrap(server, config);
        shim.write_all(&server_settings().0).await.unwrap();
        shim.flush().await.unwrap();
        (shim, control, client)
    }

    /// Everything the "h2" side reads until EOF (bounded).
    async fn h2_reads_to_eof(shim: &mut H2Shim<DuplexStream>) -> Vec<u8> {
        let mut seen = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let mut buf = [0u8; 1024];
            loop {
                let n = shim.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("EOF");
        seen
    }

    #[tokio::test]
    async fn control_frame_flood_gets_enhance_your_calm_with_the_feature_off() {
        for (flood, kind) in [
            (frame(6, 0, 0, &[0; 8]), FloodKind::Ping),
            (settings(&[(4, 65_535)]), FloodKind::Settings),
            (frame(2, 0, 3, &[0, 0, 0, 1, 16]), FloodKind::Priority),
            (frame(0, 0, 1, &[]), FloodKind::Empty),
        ] {
            let (mut shim, control, mut client) = flood_shim(4).await;
            // The client's first SETTINGS counts too: 1 + 3 fit, the 5th
            // counted frame is one too many. Acks and requests never count.
            let mut bytes = client_hello(&[]);
            bytes.extend(frame(4, 1, 0, &[]));
            bytes.extend(get_headers(1));
            bytes.extend(frame(6, 1, 0, &[0; 8]));
            for _ in 0..4 {
                bytes.extend(&flood);
            }
            bytes.extend(get_headers(3));
            client.write_all(&bytes).await.unwrap();
            client.flush().await.unwrap();
            let seen = h2_reads_to_eof(&mut shim).await;
            assert_eq!(seen, bytes, "bytes pass through unchanged");
            assert_eq!(control.flood(), Some(kind));
            assert_eq!(control.violation(), None);
            drop(shim);
            let frames = read_frames_to_eof(&mut client).await;
            let (h, payload) = frames.last().unwrap();
            assert_eq!(h.kind, FrameType::GOAWAY, "{kind:?}");
            // Stream 3 came in the same read as the flood.
            assert_eq!(
                &payload[..8],
                &[0, 0, 0, 3, 0, 0, 0, 0xb],
                "ENHANCE_YOUR_CALM"
            );
            assert_eq!(&payload[8..], b"control frame flood");
        }
    }

    #[tokio::test]
    async fn under_the_limit_nothing_happens() {
        let (mut shim, control, mut client) = flood_shim(4).await;
        let mut bytes = client_hello(&[]);
        for _ in 0..3 {
            bytes.extend(frame(6, 0, 0, &[0; 8]));
        }
        bytes.extend(frame(0, 1, 1, &[]));
        client.write_all(&bytes).await.unwrap();
        drop(client);
        assert_eq!(h2_reads_to_eof(&mut shim).await, bytes);
        assert_eq!(control.flood(), None);
    }

    #[tokio::test]
    async fn without_the_preface_bytes_pass_through_and_nothing_counts() {
        // HTTP/1.1 on a sniffed plaintext listener, with bytes that would be
        // PING frames if they were HTTP/2.
        let (client, server) = tokio::io::duplex(64 * 1024);
        let config = H2ShimConfig {
            flood: FloodLimits { per_s: 1, burst: 1 },
            ..cfg(false)
        };
        let (mut shim, control) = wrap(server, config);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut bytes =
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec();
        for _ in 0..10 {
            bytes.extend(frame(6, 0, 0, &[0; 8]));
        }
        client_write.write_all(&bytes).await.unwrap();
        client_write.shutdown().await.unwrap();
        assert_eq!(h2_reads_to_eof(&mut shim).await, bytes);
        assert_eq!(control.flood(), None);
        let reply = b"HTTP/1.1 200 OK\r\n\r\n\x00\x00\x00\x06\x00";
        shim.write_all(reply).await.unwrap();
        shim.flush().await.unwrap();
        drop(shim);
        let mut got = Vec::new();
        client_read.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, reply);
    }

    #[test]
    fn goaway_waits_for_the_frame_boundary() {
        let (mut shim, control) = negotiated_shim(false);
        let data = frame(0, 0, 1, &[3; 64]);
        h2_write(&mut shim, &data[..20]);
        let mut hello_bad = settings(&[(OURS, 5)]);
        hello_bad.extend(get_headers(7));
        client_sends(&mut shim, &hello_bad);
        assert_eq!(control.violation(), Some(Violation::BadSettingValue));
        // Mid-frame: the read side waits; h2 finishes its frame, then its
        // next write fails after the GOAWAY.
        assert!(read_with(&mut shim, &mut noop_cx()).is_none());
        let mut more = data[20..].to_vec();
        more.extend(frame(6, 0, 0, &[0; 8]));
        let mut cx = noop_cx();
        let n = match Pin::new(&mut shim).poll_write(&mut cx, &more) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(n, data.len() - 20);
        match Pin::new(&mut shim).poll_write(&mut cx, &more[n..]) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted),
            other => panic!("{other:?}"),
        }
        assert_eq!(read_with(&mut shim, &mut cx).unwrap().unwrap(), b"");
        let written = shim.get_ref().written.clone();
        let (frames, rest) = parse_frames(&written);
        assert_eq!(rest, 0);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].0.kind, FrameType::GOAWAY);
        // HEADERS on stream 7 came in the same read as the bad setting.
        assert_eq!(&frames[1].1[..8], &[0, 0, 0, 7, 0, 0, 0, 1]);
    }

    /// An oracle for header blocks, independent of [`FrameTracker`].
    #[derive(Default)]
    struct HeaderBlock {
        open: bool,
    }

    impl HeaderBlock {
        fn follow(&mut self, h: &FrameHeader) {
            let end = h.flags & 0x4 != 0;
            match h.kind.0 {
                0x1 | 0x5 => self.open = !end,
                0x9 => {
                    assert!(self.open, "CONTINUATION outside a header block");
                    self.open = !end;
                }
                _ => assert!(!self.open, "{:?} inside a header block", h.kind),
            }
        }
    }

    // --- property tests ---

    /// One h2 output frame for the generator: kind, flags, payload length.
    fn arb_frames() -> impl Strategy<Value = Vec<u8>> {
        let one = prop_oneof![
            (0usize..3000).prop_map(|n| frame(0, 0, 1, &vec![0xd; n])),
            (0usize..40).prop_map(|n| frame(1, 4, 3, &vec![0x1; n])),
            (0usize..40, 0usize..3, 0usize..40).prop_map(|(a, k, b)| {
                // HEADERS + k CONTINUATION + final CONTINUATION.
                let mut f = frame(1, 0, 5, &vec![0x2; a]);
                for _ in 0..k {
                    f.extend(frame(9, 0, 5, &vec![0x3; b]));
                }
                f.extend(frame(9, 4, 5, &vec![0x4; b]));
                f
            }),
            (0usize..30).prop_map(|n| {
                let mut f = frame(5, 0, 1, &vec![0x5; n + 4]);
                f.extend(frame(9, 4, 1, &[0x6]));
                f
            }),
            Just(frame(6, 0, 0, &[0; 8])),
            Just(frame(8, 0, 0, &[0, 0, 1, 0])),
        ];
        proptest::collection::vec(one, 0..25).prop_map(|v| v.concat())
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write(usize),
        WriteVectored(usize, usize),
        Queue(usize),
        Flush,
        Read,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..2000).prop_map(Op::Write),
            3 => (1usize..400, 1usize..2000).prop_map(|(a, b)| Op::WriteVectored(a, b)),
            1 => (0usize..300).prop_map(Op::Queue),
            1 => Just(Op::Flush),
            1 => Just(Op::Read),
        ]
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (1usize..3000).prop_map(Step::Accept),
            1 => Just(Step::Pending),
        ]
    }

    /// Checks that `written` is `rewritten settings ++ h2` with exactly the
    /// `queued` frames inserted, in order, only at boundaries outside header
    /// blocks.
    fn check_output(written: &[u8], h2: &[u8], queued: &[Vec<u8>]) -> Result<(), TestCaseError> {
        let (frames, rest) = parse_frames(written);
        prop_assert_eq!(rest, 0);
        let mut original = Vec::new();
        let mut injected = Vec::new();
        let mut block = HeaderBlock::default();
        for (i, (h, payload)) in frames.iter().enumerate() {
            let mut bytes = h.encode().to_vec();
            bytes.extend(payload);
            if i == 0 {
                prop_assert_eq!(&bytes, &server_settings().1);
            } else if h.kind.0 == CERT {
                prop_assert!(!block.open, "inserted inside a header block");
                injected.push(bytes);
            } else {
                block.follow(h);
                original.extend(bytes);
            }
        }
        prop_assert_eq!(original, h2.to_vec());
        prop_assert_eq!(injected, queued.to_vec());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn output_is_input_plus_frames_at_boundaries(
            h2 in arb_frames(),
            ops in proptest::collection::vec(arb_op(), 1..80),
            plan in proptest::collection::vec(arb_step(), 0..60),
            vectored in any::<bool>(),
        ) {
            let (mut shim, control) = mock_shim(true, vectored);
            client_sends(&mut shim, &client_hello(&[(OURS, 1)]));
            let (plain, _) = server_settings();
            let mut stream = plain.clone();
            stream.extend(&h2);
            shim.get_mut().plan = plan.into();

            let mut cx = noop_cx();
            let mut pos = 0;
            let mut queued = Vec::new();
            let mut ops = ops.into_iter().cycle().take(10_000);
            while pos < stream.len() {
                let Some(op) = ops.next() else { break };
                let rest = &stream[pos..];
                let r = match op {
                    Op::Write(n) => {
                        Pin::new(&mut shim).poll_write(&mut cx, &rest[..n.min(rest.len())])
                    }
                    Op::WriteVectored(a, b) => {
                        let a = a.min(rest.len());
                        let b = b.min(rest.len() - a);
                        let bufs = [IoSlice::new(&rest[..a]), IoSlice::new(&rest[a..a + b])];
                        Pin::new(&mut shim).poll_write_vectored(&mut cx, &bufs)
                    }
                    Op::Queue(len) => {
                        // Before h2's first SETTINGS is out, queued frames
                        // wait for it as well.
                        let payload = vec![(queued.len() % 251) as u8; len];
                        control.send_server_certificate(Bytes::from(payload.clone())).unwrap();
                        queued.push(cert_frame(&payload));
                        continue;
                    }
                    Op::Flush => {
                        let _ = flush(&mut shim);
                        continue;
                    }
                    Op::Read => {
                        let _ = read_with(&mut shim, &mut cx);
                        continue;
                    }
                };
                match r {
                    Poll::Ready(Ok(n)) => pos += n,
                    Poll::Ready(Err(e)) => panic!("{e}"),
                    Poll::Pending => {}
                }
            }
            // Drain what remains (the plan may still hold Pendings).
            h2_write(&mut shim, &stream[pos..]);
            while flush(&mut shim).is_pending() {}
            check_output(&shim.get_ref().written, &h2, &queued)?;
        }

        #[test]
        fn input_side_never_panics_on_garbage(
            garbage in proptest::collection::vec(any::<u8>(), 0..2000),
            chunk in 1usize..64,
            preface in any::<bool>(),
            enabled in any::<bool>(),
        ) {
            let (mut shim, control) = mock_shim(enabled, false);
            let mut input = if preface { PREFACE.to_vec() } else { Vec::new() };
            input.extend(&garbage);
            let mut seen = Vec::new();
            for c in input.chunks(chunk) {
                seen.extend(client_sends(&mut shim, c));
            }
            if control.violation().is_none() {
                prop_assert_eq!(seen, input);
            }
            let _ = control.negotiation();
            let _ = control.peer_settings();
        }

        #[test]
        fn inspector_is_split_invariant(
            entries in proptest::collection::vec((prop_oneof![Just(OURS), Just(5u16), any::<u16>()], 0u32..3), 0..8),
            tail in proptest::collection::vec(any::<u8>(), 0..200),
            chunk in 1usize..20,
        ) {
            let mut input = client_hello(&entries);
            input.extend(tail);
            let run = |chunks: Vec<&[u8]>| {
                let mut insp = Inspector::new(cfg(true));
                let mut found = Vec::new();
                let now = std::time::Instant::now();
                for c in chunks {
                    insp.handle(c, now, |f| found.push(f));
                }
                (found, insp.highest_stream)
            };
            prop_assert_eq!(run(input.chunks(chunk).collect()), run(vec![&input[..]]));
        }
    }

    // --- with real h2 (hyper's HTTP/2 server behind the shim) ---

    mod real_h2 {
        use super::*;

        use std::convert::Infallible;
        use std::time::Duration;

        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::{TokioExecutor, TokioIo};

        const BODY: usize = 160 * 1024;
        const BIG_HEADER: usize = 40 * 1024;
        const WAIT: Duration = Duration::from_secs(20);

        /// A duplex end that reports and implements vectored writes, as TLS
        /// streams do (a plain duplex has none): h2 then chains DATA payloads.
        struct Vectored<IO>(IO);

        impl<IO: AsyncRead + Unpin> AsyncRead for Vectored<IO> {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.0).poll_read(cx, buf)
            }
        }

        impl<IO: AsyncWrite + Unpin> AsyncWrite for Vectored<IO> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.0).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let mut total = 0;
                for buf in bufs.iter().filter(|b| !b.is_empty()) {
                    match Pin::new(&mut self.0).poll_write(cx, buf) {
                        Poll::Ready(Ok(n)) => {
                            total += n;
                            if n < buf.len() {
                                break;
                            }
                        }
                        Poll::Ready(Err(e)) if total == 0 => return Poll::Ready(Err(e)),
                        Poll::Pending if total == 0 => return Poll::Pending,
                        _ => break,
                    }
                }
                Poll::Ready(Ok(total))
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.0).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.0).poll_shutdown(cx)
            }
        }

        /// The client's side: records every byte read from the server, and
        /// adds `SETTINGS_HTTP_SERVER_CERT_AUTH = 1` to the h2 client's first
        /// SETTINGS frame (h2 cannot send it).
        struct ClientTap {
            io: DuplexStream,
            seen: Arc<Mutex<Vec<u8>>>,
            /// Preface and first SETTINGS, until complete.
            held: Option<Vec<u8>>,
            out: Bytes,
        }

        impl ClientTap {
            fn new(io: DuplexStream) -> (ClientTap, Arc<Mutex<Vec<u8>>>) {
                let seen = Arc::new(Mutex::new(Vec::new()));
                let tap = ClientTap {
                    io,
                    seen: Arc::clone(&seen),
                    held: Some(Vec::new()),
                    out: Bytes::new(),
                };
                (tap, seen)
            }

            fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                while !self.out.is_empty() {
                    let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
                    self.out.advance(n);
                }
                Poll::Ready(Ok(()))
            }
        }

        impl AsyncRead for ClientTap {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let before = buf.filled().len();
                ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
                self.seen
                    .lock()
                    .unwrap()
                    .extend_from_slice(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
        }

        impl AsyncWrite for ClientTap {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let this = &mut *self;
                if let Some(held) = this.held.as_mut() {
                    held.extend_from_slice(buf);
                    if let Some(head) = held.get(24..33) {
                        let len = FrameHeader::decode(head.try_into().unwrap()).payload_len();
                        if held.len() >= 33 + len {
                            let mut out = held[..24].to_vec();
                            let first = &held[24..33 + len];
                            out.extend(
                                h2_frame::append_setting(first, SettingId(OURS), 1).unwrap(),
                            );
                            out.extend_from_slice(&held[33 + len..]);
                            this.out = Bytes::from(out);
                            this.held = None;
                        }
                    }
                    return Poll::Ready(Ok(buf.len()));
                }
                ready!(this.poll_out(cx))?;
                Pin::new(&mut this.io).poll_write(cx, buf)
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                ready!(self.poll_out(cx))?;
                Pin::new(&mut self.io).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                ready!(self.poll_out(cx))?;
                Pin::new(&mut self.io).poll_shutdown(cx)
            }
        }

        fn body_byte(i: usize, j: usize) -> u8 {
            ((j % 251) ^ i) as u8
        }

        fn cert_payload(tag: u16, len: usize) -> Bytes {
            let mut p = tag.to_be_bytes().to_vec();
            p.resize(len.max(2), (tag % 200) as u8);
            Bytes::from(p)
        }

        /// hyper's HTTP/2 server over the shim. `/big/i`: a large body;
        /// `/hdr/i`: a response header block larger than one frame (HEADERS +
        /// CONTINUATION); `/cert/i`: queues a SERVER_CERTIFICATE first.
        async fn serve<IO>(shim: H2Shim<IO>, control: H2Control) -> Result<(), hyper::Error>
        where
            IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let control = control.clone();
                async move {
                    let path = req.uri().path().to_owned();
                    let mut parts = path.trim_start_matches('/').split('/');
                    let kind = parts.next().unwrap_or_default().to_owned();
                    let i: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                    let mut resp = http::Response::builder().status(200);
                    let body = match kind.as_str() {
                        "big" => (0..BODY).map(|j| body_byte(i, j)).collect(),
                        "hdr" => {
                            resp = resp.header("x-big", "h".repeat(BIG_HEADER));
                            b"small".to_vec()
                        }
                        "cert" => {
                            let tag = 10_000 + i as u16;
                            control
                                .send_server_certificate(cert_payload(tag, 500 + i))
                                .unwrap();
                            b"sent".to_vec()
                        }
                        _ => b"hello".to_vec(),
                    };
                    Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(body))).unwrap())
                }
            });
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(shim), svc)
                .await
        }

        async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<(FrameHeader, Vec<u8>)> {
            let mut head = [0u8; 9];
            r.read_exact(&mut head).await.ok()?;
            let h = FrameHeader::decode(&head);
            let mut payload = vec![0; h.payload_len()];
            r.read_exact(&mut payload).await.ok()?;
            Some((h, payload))
        }

        /// The server's first SETTINGS frame carries `5e cc 00 00 00 01`
        /// after h2's own entries.
        #[tokio::test]
        async fn real_h2_advertises_the_setting() {
            let (mut client, server) = tokio::io::duplex(16 * 1024);
            let (shim, control) = wrap(server, cfg(true));
            let server = tokio::spawn(serve(shim, control.clone()));
            client.write_all(&client_hello(&[])).await.unwrap();
            let (h, payload) = read_frame(&mut client).await.unwrap();
            assert_eq!(h.kind, FrameType::SETTINGS);
            assert!(!h.has_flag(FrameHeader::FLAG_ACK));
            assert!(payload.len() > 6, "h2's own entries are kept");
            assert_eq!(&payload[payload.len() - 6..], &[0x5e, 0xcc, 0, 0, 0, 1]);
            assert_eq!(
                payload.chunks(6).filter(|e| e[..2] == [0x5e, 0xcc]).count(),
                1
            );
            assert_eq!(control.negotiated().await, Negotiation::Disabled);
            drop(client);
            let _ = tokio::time::timeout(WAIT, server).await.unwrap();
        }

        /// A raw client: negotiates, makes a request, receives an injected
        /// certificate with the exact bytes, then sends one itself and gets
        /// GOAWAY(PROTOCOL_ERROR) and the end of the connection.
        #[tokio::test]
        async fn real_h2_raw_client_certificate_then_goaway() {
            let (mut client, server) = tokio::io::duplex(16 * 1024);
            let (shim, control) = wrap(server, cfg(true));
            let server = tokio::spawn(serve(shim, control.clone()));
            client
                .write_all(&client_hello(&[(OURS, 1), (5, 32_768)]))
                .await
                .unwrap();
            let (h, _) = read_frame(&mut client).await.unwrap();
            assert_eq!(h.kind, FrameType::SETTINGS);
            client.write_all(&frame(4, 1, 0, &[])).await.unwrap();
            client.write_all(&get_headers(1)).await.unwrap();
            assert_eq!(control.negotiated().await, Negotiation::Enabled);
            assert_eq!(control.peer_max_frame_size(), 32_768);
            loop {
                let (h, _) = read_frame(&mut client).await.unwrap();
                if h.kind == FrameType::HEADERS && h.stream_id == 1 {
                    break;
                }
            }
            let auth = cert_payload(7, 20_000);
            control.send_server_certificate(auth.clone()).unwrap();
            let (h, payload) = loop {
                let (h, payload) = read_frame(&mut client).await.unwrap();
                if h.kind.0 == CERT {
                    break (h, payload);
                }
            };
            assert_eq!(h.encode(), [0x00, 0x4e, 0x20, 0xce, 0, 0, 0, 0, 0]);
            assert_eq!(payload, auth);

            client.write_all(&cert_frame(b"nope")).await.unwrap();
            let mut last = None;
            while let Some(f) = tokio::time::timeout(WAIT, read_frame(&mut client))
                .await
                .unwrap()
            {
                last = Some(f);
            }
            let (h, payload) = last.unwrap();
            assert_eq!(h.kind, FrameType::GOAWAY);
            assert_eq!(&payload[..8], &[0, 0, 0, 1, 0, 0, 0, 1]);
            assert_eq!(control.violation(), Some(Violation::ClientSentCertificate));
            // hyper's connection ends (h2 saw EOF / a failed write).
            let _ = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
        }

        /// Feature off: a client SERVER_CERTIFICATE is an unknown frame and
        /// the connection goes on.
        #[tokio::test]
        async fn real_h2_disabled_ignores_client_certificate() {
            let (mut client, server) = tokio::io::duplex(16 * 1024);
            let (shim, control) = wrap(server, cfg(false));
            let server = tokio::spawn(serve(shim, control.clone()));
            let mut hello = client_hello(&[(OURS, 1)]);
            hello.extend(cert_frame(b"from client"));
            hello.extend(frame(CERT, 0, 9, b"x"));
            hello.extend(get_headers(1));
            client.write_all(&hello).await.unwrap();
            let (h, payload) = read_frame(&mut client).await.unwrap();
            assert_eq!(h.kind, FrameType::SETTINGS);
            assert!(payload.chunks(6).all(|e| e[..2] != [0x5e, 0xcc]));
            client.write_all(&frame(4, 1, 0, &[])).await.unwrap();
            loop {
                let (h, _) = read_frame(&mut client).await.unwrap();
                assert_ne!(h.kind, FrameType::GOAWAY);
                if h.kind == FrameType::DATA && h.stream_id == 1 && h.has_flag(1) {
                    break;
                }
            }
            assert_eq!(control.violation(), None);
            assert_eq!(
                control.send_server_certificate(Bytes::from_static(b"x")),
                Err(SendError::NotNegotiated)
            );
            drop(client);
            let _ = tokio::time::timeout(WAIT, server).await.unwrap();
        }

        /// h2's client over a small duplex (many partial writes), many
        /// concurrent streams with large bodies and multi-frame header
        /// blocks, while certificates are queued from handlers and from
        /// another task: every request succeeds, and on the wire each
        /// certificate is a whole frame at a boundary outside any header
        /// block (the h2 client would fail the connection otherwise).
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn real_h2_keeps_working_with_injected_certificates() {
            let (client_io, server_io) = tokio::io::duplex(3000);
            let (shim, control) = wrap(Vectored(server_io), cfg(true));
            let server = tokio::spawn(serve(shim, control.clone()));
            let (tap, seen) = ClientTap::new(client_io);
            let (send, conn) = h2::client::Builder::new()
                .max_frame_size(20_000)
                .handshake::<_, Bytes>(tap)
                .await
                .unwrap();
            let client_conn = tokio::spawn(conn);
            assert_eq!(
                tokio::time::timeout(WAIT, control.negotiated())
                    .await
                    .unwrap(),
                Negotiation::Enabled
            );

            let injector = tokio::spawn({
                let control = control.clone();
                async move {
                    let mut sent = Vec::new();
                    for tag in 0..60u16 {
                        let payload = cert_payload(tag, 100 + 331 * tag as usize);
                        control.send_server_certificate(payload.clone()).unwrap();
                        sent.push(payload);
                        if tag % 3 == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        } else {
                            tokio::task::yield_now().await;
                        }
                    }
                    sent
                }
            });

            let mut tasks = Vec::new();
            for i in 0..48usize {
                let send = send.clone();
                tasks.push(tokio::spawn(async move {
                    let kind = ["big", "big", "hdr", "cert"][i % 4];
                    let req = http::Request::get(format!("https://localhost/{kind}/{i}"))
                        .body(())
                        .unwrap();
                    let mut send = send.ready().await.unwrap();
                    let (resp, _) = send.send_request(req, true).unwrap();
                    let stream_id = u32::from(resp.stream_id());
                    let resp = resp.await.unwrap();
                    assert_eq!(resp.status(), 200);
                    if kind == "hdr" {
                        assert_eq!(resp.headers()["x-big"].len(), BIG_HEADER);
                    }
                    let mut body = resp.into_body();
                    let mut got = Vec::new();
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk.unwrap();
                        body.flow_control().release_capacity(chunk.len()).unwrap();
                        got.extend_from_slice(&chunk);
                    }
                    if kind == "big" {
                        assert_eq!(got.len(), BODY);
                        assert!(got.iter().enumerate().all(|(j, &b)| b == body_byte(i, j)));
                    }
                    (kind, i, stream_id)
                }));
            }
            let mut cert_streams = Vec::new();
            for t in tasks {
                let (kind, i, stream_id) = tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
                if kind == "cert" {
                    cert_streams.push((10_000 + i as u16, stream_id));
                }
            }
            let injected = injector.await.unwrap();
            let want_certs = injected.len() + cert_streams.len();

            // Wait until every queued certificate reached the client.
            let frames = tokio::time::timeout(WAIT, async {
                loop {
                    let bytes = seen.lock().unwrap().clone();
                    let (frames, _) = parse_frames(&bytes);
                    let certs = frames.iter().filter(|(h, _)| h.kind.0 == CERT).count();
                    if certs >= want_certs {
                        break frames;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("all certificates arrive");

            let (first, payload) = &frames[0];
            assert_eq!(first.kind, FrameType::SETTINGS);
            assert_eq!(&payload[payload.len() - 6..], &[0x5e, 0xcc, 0, 0, 0, 1]);
            let mut block = HeaderBlock::default();
            let mut certs = Vec::new();
            let mut continuations = 0;
            let mut first_headers = std::collections::HashMap::new();
            for (pos, (h, payload)) in frames.iter().enumerate() {
                if h.kind.0 == CERT {
                    assert!(!block.open, "certificate inside a header block");
                    assert_eq!(h.flags, 0);
                    assert_eq!(h.stream_id, 0);
                    certs.push((pos, payload.clone()));
                    continue;
                }
                if h.kind == FrameType::CONTINUATION {
                    continuations += 1;
                }
                if h.kind == FrameType::HEADERS {
                    first_headers.entry(h.stream_id).or_insert(pos);
                }
                block.follow(h);
            }
            assert!(continuations >= 12, "header blocks spanned frames");
            assert_eq!(certs.len(), want_certs);
            // The injector's frames in queue order.
            let from_injector: Vec<Bytes> = certs
                .iter()
                .map(|(_, p)| Bytes::from(p.clone()))
                .filter(|p| u16::from_be_bytes([p[0], p[1]]) < 10_000)
                .collect();
            assert_eq!(from_injector, injected);
            // A handler's certificate precedes its response's HEADERS.
            for (tag, stream_id) in cert_streams {
                let cert_pos = certs
                    .iter()
                    .find(|(_, p)| u16::from_be_bytes([p[0], p[1]]) == tag)
                    .map(|(pos, _)| *pos)
                    .unwrap();
                assert!(cert_pos < first_headers[&stream_id]);
            }

            // Still serving, then a clean end.
            let mut s = send.clone().ready().await.unwrap();
            let req = http::Request::get("https://localhost/").body(()).unwrap();
            let (resp, _) = s.send_request(req, true).unwrap();
            assert_eq!(resp.await.unwrap().status(), 200);
            assert_eq!(control.violation(), None);
            drop((s, send));
            tokio::time::timeout(WAIT, client_conn)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            tokio::time::timeout(WAIT, server)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(control.negotiation(), Negotiation::Closed);
        }
    }
}

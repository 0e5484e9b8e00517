//! The sidecar's HTTP/2 shim under hyper's client, on a gateway connection:
//! what hyper/h2 cannot do or do not tell.
//!
//! * Out: with origination configured, `SETTINGS_HTTP_SERVER_CERT_AUTH = 1`
//!   is appended to h2's first SETTINGS frame (held back until complete;
//!   the preface before it passes as it is). Afterwards bytes pass through,
//!   vectored writes as vectored writes, while a [`FrameTracker`] follows
//!   the frame boundaries so that a GOAWAY of our own can go in between.
//! * In: bytes pass through unchanged and are scanned in place with the
//!   sans-IO [`FrameScanner`] for the gateway's `MAX_CONCURRENT_STREAMS`
//!   (the pool opens another connection instead of queueing behind a full
//!   one), GOAWAY (no new stream here), its secondary-certificate setting,
//!   and SERVER_CERTIFICATE frames, whose payloads alone are gathered.
//! * Each authenticator is validated at once ([`CertCheck`], RFC 9261); a
//!   certificate that validates and is acceptable for a configured
//!   `[[originate]]` origin (chain to `origin_ca`, validity, name) proves it
//!   on this connection only ([`PeerState::proves`]). One that does not
//!   validate is a connection error (draft §4.3, `SERVER_CERTIFICATE_INVALID`):
//!   a GOAWAY with that code goes out at the next frame boundary and reads
//!   end, so hyper closes the connection.
//! * `bauta probe` runs the same tap under the h2 crate, collecting the
//!   authenticators for its report instead ([`Certificates::Collect`]).

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use prometheus::IntCounterVec;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::UnixTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::seccert::negotiation::Codepoints;
use crate::seccert::Validator;
use crate::wire::h2_frame::{self, FrameScanner, FrameTracker, FrameType, ScanEvent, SettingId};
use crate::wire::server_certificate::{self as sc, ServerCertificate};
use crate::wire::target::Target;

/// Largest SERVER_CERTIFICATE payload gathered (the validator's cap);
/// a longer one is a connection error.
const MAX_AUTHENTICATOR: usize = crate::seccert::DEFAULT_MAX_SIZE;

/// Largest first frame held back to add our setting.
const MAX_FIRST_FRAME: usize = 16 * 1024;

/// The `outcome` label values of `bauta_secondary_certs_validated_total`.
pub const VALIDATION_OUTCOMES: &[&str] = &["accepted", "unacceptable", "invalid"];

/// What the tap saw, shared with the pool and the requests.
#[derive(Debug)]
pub struct PeerState {
    /// The peer's MAX_CONCURRENT_STREAMS; `usize::MAX` until it sent one
    /// (RFC 9113 §6.5.2: unlimited until then).
    max_streams: AtomicUsize,
    goaway: AtomicBool,
    /// The byte stream is gone (the [`Tap`] was dropped): the connection
    /// has ended, whatever hyper's request handle says.
    ended: AtomicBool,
    /// Woken on GOAWAY and on the end, for the connection's one watcher.
    changes: tokio::sync::Notify,
    /// The gateway sent `SETTINGS_HTTP_SERVER_CERT_AUTH = 1`.
    offers_certs: AtomicBool,
    /// Origins a validated, acceptable certificate proved on this
    /// connection (dropped with it: never carried to another connection or
    /// a resumed session).
    proven: Mutex<HashSet<Target>>,
    /// Woken after each authenticator is checked.
    proofs: tokio::sync::Notify,
}

impl PeerState {
    pub fn new() -> Arc<PeerState> {
        Arc::new(PeerState {
            max_streams: AtomicUsize::new(usize::MAX),
            goaway: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            changes: tokio::sync::Notify::new(),
            offers_certs: AtomicBool::new(false),
            proven: Mutex::new(HashSet::new()),
            proofs: tokio::sync::Notify::new(),
        })
    }

    pub fn max_streams(&self) -> usize {
        self.max_streams.load(Ordering::Relaxed)
    }

    /// The peer sent GOAWAY (or we are closing): no new stream here.
    pub fn goaway(&self) -> bool {
        self.goaway.load(Ordering::Relaxed)
    }

    /// The connection's byte stream is closed.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Resolves after a GOAWAY or the end (a change since the last call:
    /// one watcher only, the wake-up is kept until it looks).
    pub async fn changed(&self) {
        self.changes.notified().await;
    }

    fn saw_goaway(&self) {
        self.goaway.store(true, Ordering::Relaxed);
        self.changes.notify_one();
    }

    pub fn offers_certs(&self) -> bool {
        self.offers_certs.load(Ordering::Relaxed)
    }

    /// Has this connection's gateway proven `origin`?
    pub fn proves(&self, origin: &Target) -> bool {
        self.proven
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(origin)
    }

    /// [`PeerState::proves`], waiting up to `wait` for an authenticator
    /// being checked to prove it.
    pub async fn wait_proof(&self, origin: &Target, wait: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.proofs.notified();
            if self.proves(origin) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.proves(origin);
            }
        }
    }

    /// An authenticator was checked.
    pub fn notify_proofs(&self) {
        self.proofs.notify_waiters();
    }

    /// A connection error: no new stream, and no proof from this connection
    /// stands.
    pub fn fail(&self) {
        self.saw_goaway();
        self.proven
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.notify_proofs();
    }
}

/// What the tap does with the peer's SERVER_CERTIFICATE frames (and,
/// either way, our setting goes out in the first SETTINGS).
pub enum Certificates {
    /// Validate each at once; one that does not validate, or that comes
    /// from a peer that never offered the setting, is a connection error
    /// (the sidecar).
    Check(Box<CertCheck>),
    /// Keep every authenticator, in order, for a verdict later (`bauta
    /// probe`, which reports what a proxy sends rather than acting on it).
    Collect(Arc<Mutex<Vec<Bytes>>>),
}

/// Validation of the gateway's authenticators on one connection.
pub struct CertCheck {
    pub validator: Validator,
    pub verifier: Arc<dyn ServerCertVerifier>,
    /// The `[[originate]]` origins a certificate may prove.
    pub origins: Arc<[Target]>,
    pub metrics: IntCounterVec,
}

impl CertCheck {
    /// Validate one authenticator; `false` when it does not validate (a
    /// connection error).
    pub fn check(&mut self, authenticator: &[u8], peer: &PeerState) -> bool {
        let validated = match self.validator.validate(authenticator) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "the gateway's SERVER_CERTIFICATE does not validate; closing the connection");
                self.count("invalid");
                return false;
            }
        };
        let now = UnixTime::now();
        let mut accepted = Vec::new();
        for origin in self.origins.iter() {
            let Ok(name) = crate::tls::server_name(&origin.host) else {
                continue;
            };
            match validated.accept_for(self.verifier.as_ref(), &name, now) {
                Ok(_) => accepted.push(origin.clone()),
                Err(e) => {
                    tracing::debug!(origin = %origin, error = %e, "gateway certificate not acceptable for this origin")
                }
            }
        }
        if accepted.is_empty() {
            tracing::info!("the gateway's secondary certificate is acceptable for no [[originate]] origin; not used");
            self.count("unacceptable");
            return true;
        }
        self.count("accepted");
        let mut proven = peer.proven.lock().unwrap_or_else(PoisonError::into_inner);
        for origin in accepted {
            tracing::debug!(origin = %origin, "the gateway proved an origin");
            proven.insert(origin);
        }
        true
    }

    fn count(&self, outcome: &str) {
        self.metrics.with_label_values(&[outcome]).inc();
    }
}

/// The gateway connection's byte stream under hyper; see the module docs.
pub struct Tap<IO> {
    io: IO,
    cp: Codepoints,
    peer: Arc<PeerState>,
    certs: Option<Certificates>,
    // Out.
    /// Preface and first frame, held until the frame is complete.
    first: Option<Vec<u8>>,
    /// Bytes of ours to write before anything else (the rewritten start,
    /// a GOAWAY), and how far they are written.
    ours: Option<(Vec<u8>, usize)>,
    tracker: FrameTracker,
    // In.
    scanner: FrameScanner,
    /// Gathering a SERVER_CERTIFICATE payload.
    gathering: Option<BytesMut>,
    /// A connection error is decided: GOAWAY, then EOF.
    failing: Failing,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Failing {
    No,
    /// Send GOAWAY with the code when a frame may be inserted.
    GoAway(u32),
    /// Sent (or given up): reads end, writes fail.
    Closed,
}

impl<IO> Tap<IO> {
    /// `certs`: what to do with authenticators (and send our setting);
    /// `None`: the setting is not sent.
    pub fn new(
        io: IO,
        cp: Codepoints,
        peer: Arc<PeerState>,
        certs: Option<Certificates>,
    ) -> Tap<IO> {
        Tap {
            io,
            cp,
            peer,
            first: certs.is_some().then(Vec::new),
            certs,
            ours: None,
            tracker: FrameTracker::new(),
            scanner: FrameScanner::without_preface(),
            gathering: None,
            failing: Failing::No,
        }
    }

    fn scan(&mut self, mut input: &[u8]) {
        while self.failing == Failing::No {
            if let Some(buf) = self.gathering.as_mut() {
                if let Some(part) = self.scanner.take_payload(&mut input) {
                    buf.extend_from_slice(part);
                }
                if !self.scanner.payload_done() {
                    return;
                }
                let payload = self.gathering.take().unwrap_or_default();
                self.on_certificate(payload);
                self.peer.notify_proofs();
                continue;
            }
            let Some(event) = self.scanner.next_event(&mut input) else {
                return;
            };
            match event {
                ScanEvent::Frame(h) if h.kind == FrameType::GOAWAY => self.peer.saw_goaway(),
                ScanEvent::Frame(h)
                    if self.certs.is_some() && ServerCertificate::is_h2(&self.cp, &h) =>
                {
                    if h.payload_len() > MAX_AUTHENTICATOR || h.stream_id != 0 {
                        self.fail();
                    } else {
                        self.gathering = Some(BytesMut::with_capacity(h.payload_len()));
                    }
                }
                ScanEvent::Setting { id, value } if id == SettingId::MAX_CONCURRENT_STREAMS => {
                    self.peer
                        .max_streams
                        .store(value as usize, Ordering::Relaxed);
                }
                ScanEvent::Setting { id, value } if id == self.cp.h2_setting() => {
                    let on = sc::decode_setting_value(u64::from(value)) == Ok(true);
                    self.peer.offers_certs.store(on, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }

    fn on_certificate(&mut self, payload: BytesMut) {
        // Frames the gateway may not send: it never offered the setting.
        let valid = match self.certs.as_mut() {
            Some(Certificates::Check(c)) => {
                self.peer.offers_certs() && c.check(&payload, &self.peer)
            }
            Some(Certificates::Collect(all)) => {
                all.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(payload.freeze());
                true
            }
            None => false,
        };
        if !valid {
            self.fail();
        }
    }

    /// A connection error: no new stream here, no proof from this
    /// connection stands, GOAWAY, then close.
    fn fail(&mut self) {
        self.peer.fail();
        self.failing = Failing::GoAway(self.cp.h2_error_invalid);
    }
}

impl<IO> Drop for Tap<IO> {
    fn drop(&mut self) {
        self.peer.ended.store(true, Ordering::Relaxed);
        self.peer.changes.notify_one();
    }
}

impl<IO: AsyncWrite + Unpin> Tap<IO> {
    /// Write out bytes of ours (rewritten start, GOAWAY) before any more of h2's.
    fn poll_ours(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, off)) = &mut self.ours {
            while let Some(rest) = bytes.get(*off..).filter(|r| !r.is_empty()) {
                let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *off += n;
            }
            self.ours = None;
        }
        Poll::Ready(Ok(()))
    }

    /// Queue our GOAWAY if one is due and a frame may go in now.
    fn queue_goaway(&mut self) {
        if let Failing::GoAway(code) = self.failing {
            if self.first.is_none() && self.ours.is_none() && self.tracker.can_insert() {
                let mut out = Vec::new();
                let _ = h2_frame::encode_goaway(0, h2_frame::ErrorCode(code), b"", &mut out);
                self.ours = Some((out, 0));
                self.failing = Failing::Closed;
            }
        }
    }

    fn closed_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "SERVER_CERTIFICATE did not validate",
        )
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Tap<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.failing != Failing::No {
            // Best effort: the GOAWAY goes out now if it can; either way
            // the connection ends here.
            this.queue_goaway();
            let _ = this.poll_ours(cx);
            this.failing = Failing::Closed;
            return Poll::Ready(Err(Self::closed_error()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            if let Some(new) = buf.filled().get(before..) {
                this.scan(new);
            }
            if this.failing != Failing::No {
                cx.waker().wake_by_ref();
            }
        }
        res
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tap<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.poll_ours(cx))?;
        if this.failing == Failing::Closed {
            return Poll::Ready(Err(Self::closed_error()));
        }
        if let Some(held) = this.first.as_mut() {
            held.extend_from_slice(data);
            let preface = h2_frame::PREFACE.len();
            let Some(head) = held
                .get(preface..)
                .and_then(|r| r.first_chunk::<{ h2_frame::HEADER_LEN }>())
            else {
                return Poll::Ready(Ok(data.len()));
            };
            let len = h2_frame::FrameHeader::decode(head).payload_len();
            let end = preface + h2_frame::HEADER_LEN + len;
            if held.len() < end && len <= MAX_FIRST_FRAME {
                return Poll::Ready(Ok(data.len()));
            }
            let mut out = this.first.take().unwrap_or_default();
            let rest = out.split_off(end.min(out.len()));
            let frame = out.split_off(preface.min(out.len()));
            // Not a SETTINGS frame we can extend: sent as it is.
            let frame = sc::advertise_h2(&this.cp, &frame).unwrap_or(frame);
            this.tracker.advance(&frame);
            this.tracker.advance(&rest);
            out.extend(frame);
            out.extend(rest);
            this.ours = Some((out, 0));
            return Poll::Ready(Ok(data.len()));
        }
        let n = std::task::ready!(Pin::new(&mut this.io).poll_write(cx, data))?;
        this.tracker.advance(data.get(..n).unwrap_or_default());
        this.queue_goaway();
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.first.is_some() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return self.poll_write(cx, first);
        }
        let this = &mut *self;
        std::task::ready!(this.poll_ours(cx))?;
        if this.failing == Failing::Closed {
            return Poll::Ready(Err(Self::closed_error()));
        }
        let n = std::task::ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        this.tracker.advance_bufs(bufs, n);
        this.queue_goaway();
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.queue_goaway();
        std::task::ready!(this.poll_ours(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_ours(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::h2_frame::FrameHeader;

    fn frame(kind: FrameType, payload: &[u8]) -> Vec<u8> {
        let mut out = FrameHeader {
            len: payload.len() as u32,
            kind,
            flags: 0,
            stream_id: 0,
        }
        .encode()
        .to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn tap() -> (Tap<()>, Arc<PeerState>) {
        let peer = PeerState::new();
        let cp = crate::seccert::negotiation::Codepoints::default();
        (Tap::new((), cp, Arc::clone(&peer), None), peer)
    }

    #[test]
    fn sees_max_streams_and_goaway_across_split_reads() {
        let (mut t, peer) = tap();
        let mut bytes = frame(FrameType::SETTINGS, &[0, 3, 0, 0, 0, 7, 0, 4, 0, 1, 0, 0]);
        bytes.extend(frame(FrameType::DATA, &[1; 40]));
        bytes.extend(frame(FrameType::GOAWAY, &[0; 8]));
        assert_eq!(peer.max_streams(), usize::MAX);
        for chunk in bytes.chunks(5) {
            t.scan(chunk);
        }
        assert_eq!(peer.max_streams(), 7);
        assert!(peer.goaway());
    }

    #[test]
    fn without_origination_certificates_are_ignored() {
        let (mut t, peer) = tap();
        let cp = crate::seccert::negotiation::Codepoints::default();
        let mut f = FrameHeader {
            len: 3,
            kind: cp.h2_frame(),
            flags: 0,
            stream_id: 0,
        }
        .encode()
        .to_vec();
        f.extend_from_slice(&[1, 2, 3]);
        t.scan(&f);
        assert!(t.failing == Failing::No);
        assert!(!peer.goaway());
    }
}

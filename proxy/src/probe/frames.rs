//! How the probe sees the proxy's frames: a tap under h2 (adds our setting
//! to the client's SETTINGS, picks SERVER_CERTIFICATE and the proxy's
//! setting out of the bytes h2 reads) and a reader of the proxy's HTTP/3
//! control stream (which also notes its SETTINGS_H3_DATAGRAM). Both go
//! through the codecs in `wire/`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::seccert::negotiation::Codepoints;
use crate::wire::server_certificate::{self as sc, ServerCertificate};
use crate::wire::{h2_frame, h3_frame};

/// Largest SERVER_CERTIFICATE payload the probe accepts (spec §4.4).
const MAX_AUTHENTICATOR: usize = 64 * 1024;

/// What the tap or the control-stream reader collected.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) setting_advertised: bool,
    pub(super) certificates: Vec<Bytes>,
    /// HTTP/3: the proxy's SETTINGS_H3_DATAGRAM is 1; `None` until its
    /// SETTINGS arrived.
    pub(super) h3_datagram: Option<bool>,
}

/// Reads the proxy's unidirectional streams: the control stream's SETTINGS
/// and SERVER_CERTIFICATE frames; other stream types are dropped.
pub(super) struct H3ControlScan {
    cp: Codepoints,
    stream_type: h3_frame::VarintReader,
    /// `Some` once the stream type said "control".
    frames: Option<h3_frame::FrameDecoder>,
    buf: BytesMut,
}

impl H3ControlScan {
    pub(super) fn new(cp: Codepoints) -> H3ControlScan {
        H3ControlScan {
            cp,
            stream_type: h3_frame::VarintReader::default(),
            frames: None,
            buf: BytesMut::new(),
        }
    }

    /// Takes the next bytes of the stream; `false` once the rest of the
    /// stream does not matter (not the control stream).
    pub(super) fn feed(&mut self, mut bytes: &[u8], seen: &Mutex<Seen>) -> bool {
        if self.frames.is_none() {
            match self.stream_type.feed(&mut bytes) {
                None => return true,
                Some(t) if h3_frame::StreamType(t) == h3_frame::StreamType::CONTROL => {
                    self.frames = Some(h3_frame::FrameDecoder::new(MAX_AUTHENTICATOR));
                }
                Some(_) => return false,
            }
        }
        let Some(frames) = self.frames.as_mut() else {
            return false;
        };
        self.buf.extend_from_slice(bytes);
        while let Some(frame) = frames.decode(&mut self.buf) {
            let h3_frame::Frame::Whole { ty, payload } = frame else {
                continue;
            };
            let Ok(mut s) = seen.lock() else {
                return false;
            };
            if ty == h3_frame::FrameType::SETTINGS {
                s.h3_datagram = Some(false);
                for (id, value) in h3_frame::Settings::new(&payload).map_while(Result::ok) {
                    if id == self.cp.h3_setting() {
                        s.setting_advertised = sc::decode_setting_value(value) == Ok(true);
                    } else if id == h3_frame::SettingId::H3_DATAGRAM {
                        s.h3_datagram = Some(value == 1);
                    }
                }
            } else if ServerCertificate::is_h3(&self.cp, ty) {
                if let Ok(cert) = ServerCertificate::decode_h3(payload, MAX_AUTHENTICATOR) {
                    s.certificates.push(cert.authenticator);
                }
            }
        }
        true
    }
}

/// Adds SETTINGS_HTTP_SERVER_CERT_AUTH = 1 to the client's first SETTINGS
/// frame on the way out, and picks SERVER_CERTIFICATE frames (and the
/// proxy's setting) out of the bytes on the way in. h2 ignores both.
pub(super) struct Tap<IO> {
    inner: IO,
    cp: Codepoints,
    seen: Arc<Mutex<Seen>>,
    // Output: preface and the first SETTINGS frame are held until rewritten.
    out_pending: Vec<u8>,
    out_flushing: Option<(Vec<u8>, usize)>,
    out_done: bool,
    // Input: whole frames (the server's side has no preface).
    frames: h2_frame::FrameDecoder,
    inbuf: BytesMut,
}

impl<IO> Tap<IO> {
    pub(super) fn new(inner: IO, cp: Codepoints, seen: Arc<Mutex<Seen>>) -> Tap<IO> {
        Tap {
            inner,
            cp,
            seen,
            out_pending: Vec::new(),
            out_flushing: None,
            out_done: false,
            frames: h2_frame::FrameDecoder::new(MAX_AUTHENTICATOR),
            inbuf: BytesMut::new(),
        }
    }

    /// Takes whole frames out of `inbuf`, keeping what belongs to us.
    fn scan_input(&mut self) {
        while let Some(frame) = self.frames.decode(&mut self.inbuf) {
            let h2_frame::Frame::Whole { header, payload } = frame else {
                continue;
            };
            let Ok(mut seen) = self.seen.lock() else {
                return;
            };
            if header.kind == h2_frame::FrameType::SETTINGS
                && !header.has_flag(h2_frame::FrameHeader::FLAG_ACK)
            {
                for (id, value) in h2_frame::settings(&payload) {
                    if id == self.cp.h2_setting() {
                        seen.setting_advertised =
                            sc::decode_setting_value(u64::from(value)) == Ok(true);
                    }
                }
            } else if ServerCertificate::is_h2(&self.cp, &header) {
                if let Ok(cert) = ServerCertificate::decode_h2(&header, payload, MAX_AUTHENTICATOR)
                {
                    seen.certificates.push(cert.authenticator);
                }
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tap<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = buf.filled().get(before..).unwrap_or_default().to_vec();
            self.inbuf.extend_from_slice(&new);
            self.scan_input();
        }
        res
    }
}

impl<IO: AsyncWrite + Unpin> Tap<IO> {
    /// Write out the held (rewritten) preface and SETTINGS, if any.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, off)) = &mut self.out_flushing {
            while let Some(rest) = bytes.get(*off..).filter(|r| !r.is_empty()) {
                let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *off += n;
            }
            self.out_flushing = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tap<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // Drain a rewritten prefix first.
        std::task::ready!(this.poll_drain(cx))?;
        if this.out_done {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        // Hold the preface and the first frame (SETTINGS) until complete.
        this.out_pending.extend_from_slice(data);
        let preface = h2_frame::PREFACE.len();
        let Some(head) = this
            .out_pending
            .get(preface..)
            .and_then(|r| r.first_chunk::<{ h2_frame::HEADER_LEN }>())
        else {
            return Poll::Ready(Ok(data.len()));
        };
        let end =
            preface + h2_frame::HEADER_LEN + h2_frame::FrameHeader::decode(head).payload_len();
        if this.out_pending.len() < end {
            return Poll::Ready(Ok(data.len()));
        }
        let mut out = std::mem::take(&mut this.out_pending);
        let rest = out.split_off(end);
        let first = out.split_off(preface);
        // Not a SETTINGS frame we can extend: sent as it is.
        out.extend(sc::advertise_h2(&this.cp, &first).unwrap_or(first));
        out.extend(rest);
        this.out_done = true;
        this.out_flushing = Some((out, 0));
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

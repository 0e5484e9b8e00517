//! One request stream of the gateway connection after its response head:
//! bytes in as DATA payloads, bytes out as DATA frames, as a tokio
//! `AsyncRead + AsyncWrite` so that the TCP relays (`tunnel::tcp`) run over
//! it like over any socket, and as two halves for request/response bodies.
//!
//! An unfinished stream is not left to quinn's defaults when dropped
//! (quinn would finish a send stream, which reads as a complete message,
//! and stop a receive stream with code 0, which is no HTTP/3 code): the
//! send half is reset and the receive half stopped with
//! H3_REQUEST_CANCELLED (RFC 9114 §4.1.1).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::wire::h3_error::H3ErrorCode;
use crate::wire::h3_frame::{FrameHeader, FrameType};
use crate::wire::varint;

use super::connection::StreamGuard;
use super::datagrams::FlowDatagrams;
use super::error::H3Error;
use super::frames::{Event, RequestFrames};
use super::section::{self, SectionKind};

/// Largest DATA frame one `poll_write` makes: the copy of one frame is all
/// a stream buffers on its own (quinn's send window does the rest).
const MAX_WRITE_FRAME: usize = 64 * 1024;

/// A request stream: both halves, plus its datagram flow if the request
/// asked for one.
pub struct H3Stream {
    pub(super) send: H3SendStream,
    pub(super) recv: H3RecvStream,
    pub(super) flow: Option<FlowDatagrams>,
}

/// Our side of a request stream: DATA frames, then trailers or FIN.
pub struct H3SendStream {
    inner: quinn::SendStream,
    id: u64,
    /// The rest of the last frame accepted (header, payload), not yet in
    /// quinn. Queued before it is written, so a cancelled write never
    /// leaves half a frame: the next write, flush or shutdown ends it.
    pending: [Bytes; 2],
    finished: bool,
    _guard: Arc<StreamGuard>,
}

/// The gateway's side: DATA payloads, then optional trailers, then FIN.
pub struct H3RecvStream {
    inner: quinn::RecvStream,
    id: u64,
    frames: RequestFrames,
    /// Received bytes not yet through `frames`.
    chunk: Bytes,
    /// DATA bytes not yet handed out (a reader's buffer was smaller).
    data: Bytes,
    state: RecvState,
    trailers: Option<HeaderMap>,
    max_field_section: u64,
    _guard: Arc<StreamGuard>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecvState {
    Body,
    /// Trailers read; only the end of the stream may follow.
    Trailers,
    /// The stream ended cleanly.
    Done,
    /// Failed; it was stopped.
    Failed,
}

// === impl H3Stream ===

impl H3Stream {
    pub fn stream_id(&self) -> u64 {
        self.send.id
    }

    /// The CONNECT-UDP flow registered by `open` (`H3Request::datagrams`).
    pub fn take_flow(&mut self) -> Option<FlowDatagrams> {
        self.flow.take()
    }

    /// Both halves, for a request body going out while the response body
    /// comes in.
    pub fn into_split(self) -> (H3SendStream, H3RecvStream) {
        (self.send, self.recv)
    }

    pub fn send_half(&mut self) -> &mut H3SendStream {
        &mut self.send
    }

    pub fn recv_half(&mut self) -> &mut H3RecvStream {
        &mut self.recv
    }

    /// Abandon the stream both ways with `code`.
    pub fn reset(&mut self, code: H3ErrorCode) {
        self.send.reset(code);
        self.recv.stop(code);
    }
}

impl AsyncRead for H3Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for H3Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.send).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.send).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_shutdown(cx)
    }
}

// === impl H3SendStream ===

impl H3SendStream {
    pub(super) fn new(inner: quinn::SendStream, guard: Arc<StreamGuard>) -> H3SendStream {
        H3SendStream {
            id: u64::from(inner.id()),
            inner,
            pending: [Bytes::new(), Bytes::new()],
            finished: false,
            _guard: guard,
        }
    }

    pub fn stream_id(&self) -> u64 {
        self.id
    }

    /// Write one whole frame (header, payload) without copying the payload.
    /// Cancel-safe: once started, the frame goes out whole with the next
    /// write, flush or shutdown.
    pub(super) async fn write_frame(
        &mut self,
        ty: FrameType,
        payload: Bytes,
    ) -> Result<(), H3Error> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await?;
        if self.finished {
            return Err(H3Error::Request("the stream is already finished or reset"));
        }
        let mut header = BytesMut::with_capacity(2 * varint::MAX_LEN);
        let len = u64::try_from(payload.len()).map_err(|_| H3Error::Request("frame too large"))?;
        FrameHeader { ty, len }
            .encode(&mut header)
            .map_err(|_| H3Error::Request("frame too large"))?;
        self.pending = [header.freeze(), payload];
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }

    /// One DATA frame with `data` as its payload, not copied.
    pub async fn send_data(&mut self, data: Bytes) -> Result<(), H3Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.write_frame(FrameType::DATA, data).await
    }

    /// A trailer section, then the end of the stream.
    pub async fn send_trailers(&mut self, trailers: &HeaderMap) -> Result<(), H3Error> {
        let block = section::encode_trailers(trailers);
        self.write_frame(FrameType::HEADERS, Bytes::from(block))
            .await?;
        self.finish().await
    }

    /// End our side of the stream (FIN) once buffered bytes are out.
    pub async fn finish(&mut self) -> Result<(), H3Error> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await?;
        self.finish_now();
        Ok(())
    }

    fn finish_now(&mut self) {
        if !self.finished {
            self.finished = true;
            let _ = self.inner.finish();
        }
    }

    /// Abandon our side with `code` (RESET_STREAM).
    pub fn reset(&mut self, code: H3ErrorCode) {
        self.finished = true;
        let _ = self
            .inner
            .reset(quinn::VarInt::from_u64(code.0).unwrap_or_default());
    }

    /// Hand the rest of the pending frame to quinn. Cancel-safe:
    /// `write_chunks` writes nothing if it does not resolve.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H3Error>> {
        while self.pending.iter().any(|b| !b.is_empty()) {
            let fut = self.inner.write_chunks(&mut self.pending);
            if let Err(e) = ready!(pin!(fut).poll(cx)) {
                return Poll::Ready(Err(H3Error::from_write(e)));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Take up to [`MAX_WRITE_FRAME`] bytes of `bufs` as one DATA frame.
    fn poll_write_frame(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx)).map_err(H3Error::into_io)?;
        if self.finished {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the stream was finished",
            )));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let n = total.min(MAX_WRITE_FRAME);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let header = FrameHeader {
            ty: FrameType::DATA,
            len: n as u64,
        };
        let mut frame = BytesMut::with_capacity(header.encoded_len() + n);
        header
            .encode(&mut frame)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut left = n;
        for b in bufs {
            let take = left.min(b.len());
            frame.put_slice(b.get(..take).unwrap_or_default());
            left -= take;
            if left == 0 {
                break;
            }
        }
        self.pending = [frame.freeze(), Bytes::new()];
        // Start sending now; what quinn does not take yet goes with the
        // next write or flush. The bytes are ours either way.
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            return Poll::Ready(Err(e.into_io()));
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for H3SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_frame(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_frame(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx).map_err(H3Error::into_io)
    }

    /// Sends what is buffered, then FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx)).map_err(H3Error::into_io)?;
        this.finish_now();
        Poll::Ready(Ok(()))
    }
}

impl Drop for H3SendStream {
    fn drop(&mut self) {
        if !self.finished {
            self.reset(H3ErrorCode::REQUEST_CANCELLED);
        }
    }
}

// === impl H3RecvStream ===

impl H3RecvStream {
    pub(super) fn new(
        inner: quinn::RecvStream,
        max_field_section: usize,
        guard: Arc<StreamGuard>,
    ) -> H3RecvStream {
        H3RecvStream {
            id: u64::from(inner.id()),
            inner,
            frames: RequestFrames::new(max_field_section),
            chunk: Bytes::new(),
            data: Bytes::new(),
            state: RecvState::Body,
            trailers: None,
            max_field_section: u64::try_from(max_field_section).unwrap_or(u64::MAX),
            _guard: guard,
        }
    }

    pub fn stream_id(&self) -> u64 {
        self.id
    }

    /// The trailer section, once the body has ended with one.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    /// Stop reading (STOP_SENDING with `code`).
    pub fn stop(&mut self, code: H3ErrorCode) {
        if matches!(self.state, RecvState::Body | RecvState::Trailers) {
            self.state = RecvState::Failed;
            let _ = self
                .inner
                .stop(quinn::VarInt::from_u64(code.0).unwrap_or_default());
        }
    }

    /// The next frame event; `None` at a clean end of the stream.
    pub(super) fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Event>, H3Error>> {
        loop {
            if !self.chunk.is_empty() {
                match self.frames.feed(&mut self.chunk) {
                    Ok(Some(e)) => return Poll::Ready(Ok(Some(e))),
                    Ok(None) => {}
                    Err(why) => return Poll::Ready(Err(self.fail(why))),
                }
                continue;
            }
            let read = pin!(self.inner.read_chunk(usize::MAX, true)).poll(cx);
            match ready!(read) {
                Ok(Some(chunk)) => self.chunk = chunk.bytes,
                Ok(None) => {
                    return Poll::Ready(match self.frames.finish() {
                        Ok(()) => Ok(None),
                        Err(why) => Err(self.fail(why)),
                    })
                }
                Err(e) => {
                    self.state = RecvState::Failed;
                    return Poll::Ready(Err(H3Error::from_read(e)));
                }
            }
        }
    }

    /// The next event, awaited.
    pub(super) async fn next_event(&mut self) -> Result<Option<Event>, H3Error> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// A malformed stream: stopped with H3_FRAME_UNEXPECTED /
    /// H3_MESSAGE_ERROR territory; we say H3_MESSAGE_ERROR.
    pub(super) fn fail(&mut self, why: &'static str) -> H3Error {
        self.stop(H3ErrorCode::MESSAGE_ERROR);
        H3Error::Malformed(why)
    }

    /// The next DATA bytes of the body (a slice of what quinn received);
    /// `None` at its end (trailers, if any, are then in [`trailers`]).
    ///
    /// [`trailers`]: H3RecvStream::trailers
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, H3Error>> {
        if !self.data.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.data))));
        }
        loop {
            match self.state {
                RecvState::Done => return Poll::Ready(Ok(None)),
                RecvState::Failed => {
                    return Poll::Ready(Err(H3Error::Malformed("read after a stream error")))
                }
                RecvState::Body | RecvState::Trailers => {}
            }
            match ready!(self.poll_event(cx))? {
                Some(Event::Data(d)) if self.state == RecvState::Body => {
                    return Poll::Ready(Ok(Some(d)));
                }
                Some(Event::Headers(block)) if self.state == RecvState::Body => {
                    match section::decode(&block, SectionKind::Trailers, self.max_field_section) {
                        Ok(d) => {
                            self.trailers = Some(d.headers);
                            self.state = RecvState::Trailers;
                        }
                        Err(why) => return Poll::Ready(Err(self.fail(why))),
                    }
                }
                // RFC 9114 §4.1: nothing may follow the trailer section.
                Some(_) => return Poll::Ready(Err(self.fail("frame after the trailer section"))),
                None => {
                    self.state = RecvState::Done;
                    return Poll::Ready(Ok(None));
                }
            }
        }
    }

    /// [`H3RecvStream::poll_data`], awaited.
    pub async fn recv_data(&mut self) -> Result<Option<Bytes>, H3Error> {
        std::future::poll_fn(|cx| self.poll_data(cx)).await
    }

    /// The response body as the crate's body type (data frames, then the
    /// trailers if the gateway sent any), for a forwarded response.
    pub fn into_body(self) -> crate::body::Body {
        crate::body::boxed(super::body::RecvBody::new(self))
    }

    /// Our SETTINGS_MAX_FIELD_SECTION_SIZE, for the sections read here.
    pub(super) fn max_field_section(&self) -> u64 {
        self.max_field_section
    }

    pub(super) fn trailers_taken(&mut self) -> Option<HeaderMap> {
        self.trailers.take()
    }
}

impl AsyncRead for H3RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut data = match ready!(this.poll_data(cx)) {
            Ok(Some(d)) => d,
            Ok(None) => return Poll::Ready(Ok(())),
            Err(e) => return Poll::Ready(Err(e.into_io())),
        };
        let n = data.len().min(buf.remaining());
        buf.put_slice(&data.split_to(n));
        this.data = data;
        Poll::Ready(Ok(()))
    }
}

impl Drop for H3RecvStream {
    fn drop(&mut self) {
        self.stop(H3ErrorCode::REQUEST_CANCELLED);
    }
}

//! An HTTP/3 request stream as `AsyncRead + AsyncWrite`, so that the one TCP
//! tunnel relay serves HTTP/3 CONNECT too. Reads yield DATA frame payloads;
//! writes become DATA frames; shutdown finishes the stream (FIN).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::wire::h3_error::H3ErrorCode;

use crate::front::h3_body::{RecvHalf, SendHalf};
/// How long [`H3Io::reset`] waits for a send in flight.
const RESET_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

type Pending =
    Pin<Box<dyn Future<Output = (Box<SendHalf>, Result<(), h3::error::StreamError>)> + Send>>;

pub struct H3Io {
    recv: RecvHalf,
    /// Unread rest of the last DATA frame.
    leftover: Bytes,
    recv_done: bool,
    /// FIN has been requested.
    finishing: bool,
    /// The send half, or the in-flight operation that holds it.
    send: SendState,
}

enum SendState {
    Idle(Box<SendHalf>),
    Busy(Pending),
    /// Only after a send future panicked; every later write fails.
    Gone,
}

// === impl H3Io ===

impl H3Io {
    pub fn from_halves(send: SendHalf, recv: RecvHalf) -> H3Io {
        H3Io {
            recv,
            leftover: Bytes::new(),
            recv_done: false,
            finishing: false,
            send: SendState::Idle(Box::new(send)),
        }
    }

    /// Drive the in-flight send (if any) to completion.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let SendState::Busy(fut) = &mut self.send {
            let (half, res) = ready!(fut.as_mut().poll(cx));
            self.send = SendState::Idle(half);
            res.map_err(to_io)?;
        }
        Poll::Ready(Ok(()))
    }

    fn start(&mut self, op: impl FnOnce(Box<SendHalf>) -> Pending) -> io::Result<()> {
        match std::mem::replace(&mut self.send, SendState::Gone) {
            SendState::Idle(half) => {
                self.send = SendState::Busy(op(half));
                Ok(())
            }
            other => {
                self.send = other;
                Err(io::Error::other("HTTP/3 stream send half unavailable"))
            }
        }
    }
}

impl H3Io {
    /// Abort the stream with an HTTP/3 error code (a stream error): reset
    /// our sending side. (h3-quinn panics on STOP_SENDING while a read is
    /// pending; dropping the receive half stops the client's side anyway.)
    /// A send still in flight gets [`RESET_WAIT`] to hand its frame over
    /// (it holds the send half); dropped unfinished, quinn would end the
    /// stream with a FIN instead.
    pub async fn reset(&mut self, code: H3ErrorCode) {
        if matches!(self.send, SendState::Busy(_)) {
            let idle = std::future::poll_fn(|cx| self.poll_idle(cx));
            let _ = tokio::time::timeout(RESET_WAIT, idle).await;
        }
        if let SendState::Idle(half) = &mut self.send {
            half.stop_stream(h3::error::Code::from(code.0));
        }
    }
}

fn to_io(e: h3::error::StreamError) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

impl AsyncRead for H3Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.leftover.is_empty() && !this.recv_done {
            match ready!(this.recv.poll_recv_data(cx)) {
                Ok(Some(mut data)) => {
                    let n = data.remaining();
                    this.leftover = data.copy_to_bytes(n);
                }
                Ok(None) => this.recv_done = true,
                Err(e) => return Poll::Ready(Err(to_io(e))),
            }
        }
        let n = this.leftover.len().min(buf.remaining());
        buf.put_slice(&this.leftover[..n]);
        this.leftover.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H3Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_idle(cx))?;
        let data = Bytes::copy_from_slice(buf);
        self.start(|mut half| {
            Box::pin(async move {
                let r = half.send_data(data).await;
                (half, r)
            })
        })?;
        // The bytes are ours now; report them written and let flush or the
        // next write wait for the frame to be queued.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_idle(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.finishing {
            ready!(self.poll_idle(cx))?;
            self.start(|mut half| {
                Box::pin(async move {
                    let r = half.finish().await;
                    (half, r)
                })
            })?;
            self.finishing = true;
        }
        self.poll_idle(cx)
    }
}

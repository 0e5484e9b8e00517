//! A gateway stream as the core sees it: the tunnel's bytes
//! ([`GatewayIo`], HTTP/2 or HTTP/3) or a forwarded response's body
//! ([`GatewayBody`]), each holding its stream slot until it is dropped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h3::{FlowDatagrams, H3Stream};
use super::pool::Lease;
use crate::body::{Body, BoxError};

/// The byte stream of a CONNECT (or CONNECT-UDP capsules) on the gateway.
pub struct GatewayIo {
    stream: Stream,
    _lease: Lease,
}

enum Stream {
    H2(TokioIo<Upgraded>),
    H3(Box<H3Stream>),
}

impl GatewayIo {
    pub(super) fn h2(upgraded: Upgraded, lease: Lease) -> GatewayIo {
        GatewayIo {
            stream: Stream::H2(TokioIo::new(upgraded)),
            _lease: lease,
        }
    }

    pub(super) fn h3(stream: H3Stream, lease: Lease) -> GatewayIo {
        GatewayIo {
            stream: Stream::H3(Box::new(stream)),
            _lease: lease,
        }
    }

    /// A CONNECT-UDP stream's HTTP datagrams on an HTTP/3 gateway
    /// connection that negotiated them; taken once.
    pub fn take_datagrams(&mut self) -> Option<FlowDatagrams> {
        match &mut self.stream {
            Stream::H2(_) => None,
            Stream::H3(s) => s.take_flow(),
        }
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.stream {
            Stream::H2($s) => $e,
            Stream::H3($s) => $e,
        }
    };
}

impl AsyncRead for GatewayIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        both!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for GatewayIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => Pin::new(s).poll_write(cx, data))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::H2(s) => s.is_write_vectored(),
            Stream::H3(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A response body from the gateway.
pub struct GatewayBody {
    body: Body,
    _lease: Lease,
}

impl GatewayBody {
    pub(super) fn new(body: Body, lease: Lease) -> GatewayBody {
        GatewayBody {
            body,
            _lease: lease,
        }
    }
}

impl hyper::body::Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

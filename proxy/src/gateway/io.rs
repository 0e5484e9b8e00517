//! A gateway stream as the core sees it: the tunnel's bytes
//! ([`GatewayIo`]) or a forwarded response's body ([`GatewayBody`]), each
//! holding its stream slot until it is dropped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pool::Lease;
use crate::body::BoxError;

/// The byte stream of a CONNECT (or CONNECT-UDP capsules) on the gateway.
pub struct GatewayIo {
    io: TokioIo<Upgraded>,
    _lease: Lease,
}

impl GatewayIo {
    pub(super) fn new(upgraded: Upgraded, lease: Lease) -> GatewayIo {
        GatewayIo {
            io: TokioIo::new(upgraded),
            _lease: lease,
        }
    }
}

impl AsyncRead for GatewayIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatewayIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body from the gateway.
pub struct GatewayBody {
    body: Incoming,
    _lease: Lease,
}

impl GatewayBody {
    pub(super) fn new(body: Incoming, lease: Lease) -> GatewayBody {
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
        Pin::new(&mut self.body)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

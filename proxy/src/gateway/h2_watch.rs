//! What the sidecar learns from the gateway's HTTP/2 frames that hyper does
//! not tell it: the peer's `SETTINGS_MAX_CONCURRENT_STREAMS` (to open another
//! connection instead of queueing behind a full one) and a GOAWAY (to stop
//! opening streams at once, not after the next request fails).
//!
//! [`Watched`] sits between TLS and hyper. Bytes pass through unchanged in
//! both directions; the read side is scanned in place with the sans-IO
//! [`FrameScanner`] (a few dozen bytes of state, no copy of the data).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::wire::h2_frame::{FrameScanner, FrameType, ScanEvent, SettingId};

/// What the watcher saw, shared with the pool.
#[derive(Debug)]
pub struct PeerState {
    /// The peer's MAX_CONCURRENT_STREAMS; `usize::MAX` until it sent one
    /// (RFC 9113 §6.5.2: unlimited until then).
    max_streams: AtomicUsize,
    goaway: AtomicBool,
}

impl PeerState {
    pub fn new() -> Arc<PeerState> {
        Arc::new(PeerState {
            max_streams: AtomicUsize::new(usize::MAX),
            goaway: AtomicBool::new(false),
        })
    }

    pub fn max_streams(&self) -> usize {
        self.max_streams.load(Ordering::Relaxed)
    }

    /// The peer sent GOAWAY: no new stream may start here.
    pub fn goaway(&self) -> bool {
        self.goaway.load(Ordering::Relaxed)
    }
}

/// The gateway connection's byte stream under hyper; see the module docs.
pub struct Watched<IO> {
    io: IO,
    scanner: FrameScanner,
    peer: Arc<PeerState>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, peer: Arc<PeerState>) -> Watched<IO> {
        Watched {
            io,
            scanner: FrameScanner::without_preface(),
            peer,
        }
    }

    fn scan(&mut self, mut input: &[u8]) {
        while let Some(event) = self.scanner.next_event(&mut input) {
            match event {
                ScanEvent::Frame(h) if h.kind == FrameType::GOAWAY => {
                    self.peer.goaway.store(true, Ordering::Relaxed);
                }
                ScanEvent::Setting { id, value } if id == SettingId::MAX_CONCURRENT_STREAMS => {
                    self.peer
                        .max_streams
                        .store(value as usize, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            if let Some(new) = buf.filled().get(before..) {
                this.scan(new);
            }
        }
        res
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
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

    #[test]
    fn sees_max_streams_and_goaway_across_split_reads() {
        let peer = PeerState::new();
        let mut w = Watched::new((), Arc::clone(&peer));
        let mut bytes = frame(FrameType::SETTINGS, &[0, 3, 0, 0, 0, 7, 0, 4, 0, 1, 0, 0]);
        bytes.extend(frame(FrameType::DATA, &[1; 40]));
        bytes.extend(frame(FrameType::GOAWAY, &[0; 8]));
        assert_eq!(peer.max_streams(), usize::MAX);
        for chunk in bytes.chunks(5) {
            w.scan(chunk);
        }
        assert_eq!(peer.max_streams(), 7);
        assert!(peer.goaway());
    }
}

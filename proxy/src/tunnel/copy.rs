//! A bidirectional copy whose buffers cost nothing while a tunnel is idle.
//!
//! `tokio::io::copy_bidirectional_with_sizes` keeps one heap buffer per
//! direction for the tunnel's whole life: 2 × 16 KiB for every idle tunnel.
//! Here each direction reads into a small inline buffer while traffic is
//! light; a read that fills it switches the direction to a large buffer
//! (bulk transfer: fewer reads and writes), which is given back as
//! soon as the source has nothing more to read and everything read has been
//! written. An idle tunnel holds only the two small buffers, inside its
//! task.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Inline, per direction: enough for interactive traffic (keystrokes,
/// small requests and answers); anything bigger moves to `LARGE`. Every idle
/// TLS, HTTP/2 and HTTP/3 tunnel holds two of these.
pub const SMALL: usize = 512;
/// While bulk data flows: a whole TLS record per read. Not larger: a
/// tunnel whose client stopped reading holds it until the idle timeout,
/// and the HTTP/2 memory bound counts on 16 KiB per stalled tunnel
/// (`tests/tests/h2_memory.rs`; 64 KiB took 8 × 128 stalled CONNECT
/// streams from +100 to +262 MiB).
pub const LARGE: usize = 16 * 1024;

/// One direction of the copy.
struct Pump {
    small: [u8; SMALL],
    large: Option<Box<[u8]>>,
    /// Bytes `pos..cap` of the current buffer are read and not yet written.
    pos: usize,
    cap: usize,
    /// The last read filled the small buffer: use the large one next.
    grow: bool,
    read_done: bool,
    need_flush: bool,
    done: bool,
}

impl Pump {
    fn new() -> Pump {
        Pump {
            small: [0; SMALL],
            large: None,
            pos: 0,
            cap: 0,
            grow: false,
            read_done: false,
            need_flush: false,
            done: false,
        }
    }

    fn filled(&self) -> &[u8] {
        let buf = match &self.large {
            Some(b) => &b[..],
            None => &self.small[..],
        };
        buf.get(self.pos..self.cap).unwrap_or_default()
    }

    /// Copy until the reader's EOF has been passed on (the writer shut
    /// down) or an error.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos == self.cap && !self.read_done {
                if self.grow {
                    self.grow = false;
                    self.large = Some(vec![0; LARGE].into_boxed_slice());
                }
                self.pos = 0;
                self.cap = 0;
                let buf = match &mut self.large {
                    Some(b) => &mut b[..],
                    None => &mut self.small[..],
                };
                let mut rb = ReadBuf::new(buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.cap = n;
                            self.grow = self.large.is_none() && n == SMALL;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing to read and nothing held: the large
                        // buffer goes back; what was written goes out.
                        self.large = None;
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(writer.as_mut().poll_write(cx, self.filled()))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write zero bytes into the tunnel",
                    )));
                }
                self.pos += n;
                self.need_flush = true;
            }
            if self.read_done {
                // Shutdown flushes first.
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.large = None;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Copy both ways between `a` and `b` until both directions have ended
/// (each source's EOF passed on as a shutdown of the other side), or one
/// fails (the caller counts bytes in its reader wrappers).
pub async fn bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    Bidirectional {
        a,
        b,
        a_to_b: Box::new(Pump::new()),
        b_to_a: Box::new(Pump::new()),
    }
    .await
}

struct Bidirectional<'a, A: ?Sized, B: ?Sized> {
    a: &'a mut A,
    b: &'a mut B,
    a_to_b: Box<Pump>,
    b_to_a: Box<Pump>,
}

impl<A, B> Future for Bidirectional<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let forward = this
            .a_to_b
            .poll_copy(cx, Pin::new(&mut *this.a), Pin::new(&mut *this.b))?;
        let back = this
            .b_to_a
            .poll_copy(cx, Pin::new(&mut *this.b), Pin::new(&mut *this.a))?;
        if forward.is_ready() && back.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Write `data` and shut down while reading to the end, at once (a pipe
    /// smaller than the payload would otherwise block both writers).
    async fn write_and_read(io: tokio::io::DuplexStream, data: Vec<u8>) -> Vec<u8> {
        let (mut r, mut w) = tokio::io::split(io);
        let write = async {
            w.write_all(&data).await.expect("write");
            w.shutdown().await.expect("shutdown");
        };
        let mut got = Vec::new();
        let read = r.read_to_end(&mut got);
        let ((), n) = tokio::join!(write, read);
        n.expect("read");
        got
    }

    /// Every size around the buffer boundaries arrives intact, both ways,
    /// through pipes smaller and larger than the buffers.
    #[tokio::test]
    async fn payloads_around_the_buffer_sizes_arrive_intact() {
        for pipe in [512, 4096, 256 * 1024] {
            for size in [
                0,
                1,
                SMALL - 1,
                SMALL,
                SMALL + 1,
                LARGE - 1,
                LARGE,
                LARGE + 1,
                3 * LARGE + 17,
            ] {
                let (mut a, a_far) = tokio::io::duplex(pipe);
                let (mut b, b_far) = tokio::io::duplex(pipe);
                let copy = tokio::spawn(async move { bidirectional(&mut a, &mut b).await });
                let up: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
                let down: Vec<u8> = (0..size).map(|i| (i * 13 % 241) as u8).collect();
                let (up2, down2) = (up.clone(), down.clone());
                let w1 = tokio::spawn(write_and_read(a_far, up2));
                let w2 = tokio::spawn(write_and_read(b_far, down2));
                let got_down = w1.await.expect("join");
                let got_up = w2.await.expect("join");
                copy.await.expect("join").expect("copy");
                assert!(got_up == up, "up, {size} bytes, pipe {pipe}");
                assert!(got_down == down, "down, {size} bytes, pipe {pipe}");
            }
        }
    }

    /// One side's EOF is passed on while the other direction keeps going.
    #[tokio::test]
    async fn half_close_keeps_the_other_direction() {
        let (mut a, mut a_far) = tokio::io::duplex(1024);
        let (mut b, mut b_far) = tokio::io::duplex(1024);
        let copy = tokio::spawn(async move { bidirectional(&mut a, &mut b).await });
        a_far.write_all(b"request").await.expect("write");
        a_far.shutdown().await.expect("half-close");
        let mut req = Vec::new();
        b_far.read_to_end(&mut req).await.expect("EOF passed on");
        assert_eq!(req, b"request");
        // The other way still works after the half-close.
        b_far.write_all(b"response after EOF").await.expect("write");
        b_far.shutdown().await.expect("close");
        let mut resp = Vec::new();
        a_far.read_to_end(&mut resp).await.expect("read");
        assert_eq!(resp, b"response after EOF");
        copy.await.expect("join").expect("copy");
    }

    /// A peer that vanishes mid-transfer ends the copy with an error.
    #[tokio::test]
    async fn a_peer_closing_mid_transfer_is_an_error() {
        let (mut a, mut a_far) = tokio::io::duplex(1024);
        let (mut b, b_far) = tokio::io::duplex(1024);
        let copy = tokio::spawn(async move { bidirectional(&mut a, &mut b).await });
        drop(b_far);
        let big = vec![7u8; 64 * 1024];
        let _ = a_far.write_all(&big).await;
        let r = copy.await.expect("join");
        assert!(r.is_err(), "writing to a vanished peer fails the copy");
    }

    /// The large buffer is held only while bulk data flows.
    #[tokio::test]
    async fn the_large_buffer_is_given_back_when_quiet() {
        let (mut far, near) = tokio::io::duplex(256 * 1024);
        let (sink_near, mut sink) = tokio::io::duplex(256 * 1024);
        let mut pump = Pump::new();
        let mut near = near;
        let mut sink_near = sink_near;
        far.write_all(&vec![1u8; 3 * SMALL]).await.expect("write");
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let r = pump.poll_copy(&mut cx, Pin::new(&mut near), Pin::new(&mut sink_near));
        assert!(r.is_pending());
        assert!(pump.large.is_none(), "given back once the source is dry");
        let mut got = vec![0u8; 3 * SMALL];
        sink.read_exact(&mut got).await.expect("all copied");
        assert!(got.iter().all(|&b| b == 1));
    }
}

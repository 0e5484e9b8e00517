//! The TCP tunnel: one bidirectional copy over any `AsyncRead + AsyncWrite`
//! pair, whatever front the client came from (HTTP/1.1 upgrade, HTTP/2 or
//! HTTP/3 stream). Bytes are counted live into the metrics; a tunnel with no
//! traffic either way for the idle timeout is closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Client → target.
    pub upstream: u64,
    /// Target → client.
    pub downstream: u64,
}

#[derive(Debug)]
pub enum End {
    /// Both directions finished (EOF each way).
    Closed,
    /// No bytes either way for the idle timeout.
    Idle,
    /// A read or write on the client's side failed (a reset stream, a
    /// vanished client).
    Error(io::Error),
    /// A read or write on the target's TCP connection failed (a TCP reset):
    /// RFC 9113 §8.5 and RFC 9114 §4.4 make this a stream error
    /// (`CONNECT_ERROR`, `H3_CONNECT_ERROR`) on the client's side.
    TargetError(io::Error),
    /// The proxy is shutting down and the grace period is over.
    Aborted,
}

/// Relay until both sides are done, one fails, the tunnel idles out, or
/// `abort` resolves.
pub async fn relay<C, T>(
    client: C,
    target: T,
    idle_timeout: Duration,
    up_counter: IntCounter,
    down_counter: IntCounter,
    abort: impl std::future::Future<Output = ()>,
) -> (Transferred, End)
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let origin = Instant::now();
    let last_activity = AtomicU64::new(0);
    let mut client = Counted {
        inner: client,
        counter: up_counter,
        total: 0,
        origin,
        last_activity: &last_activity,
        failed: false,
    };
    let mut target = Counted {
        inner: target,
        counter: down_counter,
        total: 0,
        origin,
        last_activity: &last_activity,
        failed: false,
    };
    let end = {
        // Buffers only while data flows (`copy`): idle tunnels stay small.
        let copy = super::copy::bidirectional(&mut client, &mut target);
        tokio::pin!(copy);
        tokio::pin!(abort);
        loop {
            let idle_at = origin
                + Duration::from_millis(last_activity.load(Ordering::Relaxed))
                + idle_timeout;
            tokio::select! {
                r = &mut copy => break match r {
                    Ok(_) => End::Closed,
                    Err(e) => End::Error(e),
                },
                _ = &mut abort => break End::Aborted,
                _ = tokio::time::sleep_until(idle_at) => {
                    let last = origin + Duration::from_millis(last_activity.load(Ordering::Relaxed));
                    if Instant::now().saturating_duration_since(last) >= idle_timeout {
                        break End::Idle;
                    }
                }
            }
        }
    };
    // Which side failed: only the side's own I/O sets `failed`.
    let end = match end {
        End::Error(e) if target.failed && !client.failed => End::TargetError(e),
        other => other,
    };
    (
        Transferred {
            upstream: client.total,
            downstream: target.total,
        },
        end,
    )
}

/// Counts bytes read from `inner` and notes the time of the last activity.
struct Counted<'a, S> {
    inner: S,
    counter: IntCounter,
    total: u64,
    origin: Instant,
    last_activity: &'a AtomicU64,
    /// A read, write, flush or shutdown of `inner` returned an error.
    failed: bool,
}

impl<S> Counted<'_, S> {
    fn note<T>(&mut self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &r {
            self.failed = true;
        }
        r
    }

    fn touch(&self) {
        let ms = Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis();
        self.last_activity
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let res = self.note(res);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.total += n;
            self.counter.inc_by(n);
            self.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn counter() -> IntCounter {
        IntCounter::new("t", "t").expect("counter")
    }

    #[tokio::test]
    async fn relays_both_ways_and_counts() {
        let (client_side, mut client) = tokio::io::duplex(1024);
        let (target_side, mut target) = tokio::io::duplex(1024);
        let up = counter();
        let down = counter();
        let task = tokio::spawn(relay(
            client_side,
            target_side,
            Duration::from_secs(10),
            up.clone(),
            down.clone(),
            std::future::pending(),
        ));
        client.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        target.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hello");
        target.write_all(b"world!").await.expect("write");
        let mut buf = [0u8; 6];
        client.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"world!");
        client.shutdown().await.expect("shutdown");
        target.shutdown().await.expect("shutdown");
        let (t, end) = task.await.expect("join");
        assert!(matches!(end, End::Closed), "{end:?}");
        assert_eq!(
            t,
            Transferred {
                upstream: 5,
                downstream: 6
            }
        );
        assert_eq!(up.get(), 5);
        assert_eq!(down.get(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_is_closed() {
        let (client_side, _client) = tokio::io::duplex(64);
        let (target_side, _target) = tokio::io::duplex(64);
        let (t, end) = relay(
            client_side,
            target_side,
            Duration::from_secs(30),
            counter(),
            counter(),
            std::future::pending(),
        )
        .await;
        assert!(matches!(end, End::Idle), "{end:?}");
        assert_eq!(t, Transferred::default());
    }

    /// Reads fail with a connection reset; writes are swallowed.
    struct Resetting;

    impl AsyncRead for Resetting {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
        }
    }

    impl AsyncWrite for Resetting {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_failing_side_is_named() {
        let (client_side, _client) = tokio::io::duplex(64);
        let (_, end) = relay(
            client_side,
            Resetting,
            Duration::from_secs(10),
            counter(),
            counter(),
            std::future::pending(),
        )
        .await;
        assert!(matches!(end, End::TargetError(_)), "{end:?}");
        let (target_side, _target) = tokio::io::duplex(64);
        let (_, end) = relay(
            Resetting,
            target_side,
            Duration::from_secs(10),
            counter(),
            counter(),
            std::future::pending(),
        )
        .await;
        assert!(matches!(end, End::Error(_)), "{end:?}");
    }
}

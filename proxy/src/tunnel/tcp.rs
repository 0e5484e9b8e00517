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

/// One TCP tunnel's limits, counters and signal, the same for either relay.
pub struct TcpSettings<A> {
    pub idle_timeout: Duration,
    /// Bytes client → target.
    pub up: IntCounter,
    /// Bytes target → client.
    pub down: IntCounter,
    /// Resolves when the tunnel must end now (shutdown grace over).
    pub abort: A,
}

/// Relay until both sides are done, one fails, the tunnel idles out, or
/// `settings.abort` resolves.
pub async fn relay<C, T, A>(client: C, target: T, settings: TcpSettings<A>) -> (Transferred, End)
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
    A: std::future::Future<Output = ()>,
{
    let origin = Instant::now();
    let last_activity = AtomicU64::new(0);
    let mut client = Counted {
        inner: client,
        counter: settings.up,
        total: 0,
        origin,
        last_activity: &last_activity,
        failed: false,
    };
    let mut target = Counted {
        inner: target,
        counter: settings.down,
        total: 0,
        origin,
        last_activity: &last_activity,
        failed: false,
    };
    // Buffers only while data flows (`copy`): idle tunnels stay small.
    let copy = super::copy::bidirectional(&mut client, &mut target);
    let end = drive(
        async { copy.await.map_err(End::Error) },
        origin,
        &last_activity,
        settings.idle_timeout,
        settings.abort,
    )
    .await;
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

/// Relay between two plain TCP sockets with splice(2) (`super::splice`):
/// the bytes never enter user space and an idle tunnel holds no buffer.
/// `early` is what the client sent before the tunnel began (read ahead by
/// the front); it goes to the target first. Ends as [`relay`] does.
#[cfg(target_os = "linux")]
pub async fn relay_sockets(
    client: &tokio::net::TcpStream,
    early: bytes::Bytes,
    target: &tokio::net::TcpStream,
    settings: TcpSettings<impl std::future::Future<Output = ()>>,
) -> (Transferred, End) {
    use super::splice::{pump, write_all, Failure};

    let (up, down) = (&settings.up, &settings.down);
    let origin = Instant::now();
    let last_activity = AtomicU64::new(0);
    let (up_total, down_total) = (AtomicU64::new(0), AtomicU64::new(0));
    let count = |total: &AtomicU64, counter: &IntCounter, n: u64| {
        total.fetch_add(n, Ordering::Relaxed);
        counter.inc_by(n);
        touch(origin, &last_activity);
    };
    let copy = async {
        if !early.is_empty() {
            write_all(target, &early).await.map_err(End::TargetError)?;
            count(&up_total, up, early.len() as u64);
        }
        // It may share the front's whole read buffer: not for the
        // tunnel's life.
        drop(early);
        let up = async {
            pump(client, target, |n| count(&up_total, up, n))
                .await
                .map_err(|f| match f {
                    Failure::Source(e) => End::Error(e),
                    Failure::Sink(e) => End::TargetError(e),
                })
        };
        let down = async {
            pump(target, client, |n| count(&down_total, down, n))
                .await
                .map_err(|f| match f {
                    Failure::Source(e) => End::TargetError(e),
                    Failure::Sink(e) => End::Error(e),
                })
        };
        tokio::try_join!(up, down).map(|_| ())
    };
    let end = drive(
        copy,
        origin,
        &last_activity,
        settings.idle_timeout,
        settings.abort,
    )
    .await;
    (
        Transferred {
            upstream: up_total.load(Ordering::Relaxed),
            downstream: down_total.load(Ordering::Relaxed),
        },
        end,
    )
}

/// Run `copy` (both directions) until it ends, the tunnel has been idle for
/// `idle_timeout` since `last_activity` (milliseconds after `origin`), or
/// `abort` resolves.
async fn drive(
    copy: impl std::future::Future<Output = Result<(), End>>,
    origin: Instant,
    last_activity: &AtomicU64,
    idle_timeout: Duration,
    abort: impl std::future::Future<Output = ()>,
) -> End {
    tokio::pin!(copy);
    tokio::pin!(abort);
    loop {
        let last = || origin + Duration::from_millis(last_activity.load(Ordering::Relaxed));
        tokio::select! {
            r = &mut copy => return match r {
                Ok(()) => End::Closed,
                Err(end) => end,
            },
            _ = &mut abort => return End::Aborted,
            _ = tokio::time::sleep_until(last() + idle_timeout) => {
                if Instant::now().saturating_duration_since(last()) >= idle_timeout {
                    return End::Idle;
                }
            }
        }
    }
}

/// Note now as the tunnel's last activity.
fn touch(origin: Instant, last_activity: &AtomicU64) {
    let ms = Instant::now().saturating_duration_since(origin).as_millis();
    last_activity.store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
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
        touch(self.origin, self.last_activity);
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

/// Test settings: never aborted.
#[cfg(test)]
fn settings(
    idle_timeout: Duration,
    up: IntCounter,
    down: IntCounter,
) -> TcpSettings<std::future::Pending<()>> {
    TcpSettings {
        idle_timeout,
        up,
        down,
        abort: std::future::pending(),
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
            settings(Duration::from_secs(10), up.clone(), down.clone()),
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
            settings(Duration::from_secs(30), counter(), counter()),
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
            settings(Duration::from_secs(10), counter(), counter()),
        )
        .await;
        assert!(matches!(end, End::TargetError(_)), "{end:?}");
        let (target_side, _target) = tokio::io::duplex(64);
        let (_, end) = relay(
            Resetting,
            target_side,
            settings(Duration::from_secs(10), counter(), counter()),
        )
        .await;
        assert!(matches!(end, End::Error(_)), "{end:?}");
    }
}

/// `relay_sockets` over real loopback sockets: the splice path.
#[cfg(all(test, target_os = "linux"))]
mod socket_tests {
    use super::*;
    use crate::tunnel::splice::{pooled, NO_PIPES, TEST_LOCK};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Both ends of one loopback TCP connection.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    /// app ⇄ (client | relay | target) ⇄ origin, relayed with splice.
    struct Rig {
        app: TcpStream,
        origin: TcpStream,
        relay: tokio::task::JoinHandle<(Transferred, End)>,
        up: IntCounter,
        down: IntCounter,
    }

    async fn rig(early: &'static [u8], idle: Duration) -> Rig {
        let (app, client) = pair().await;
        let (target, origin) = pair().await;
        let (up, down) = (counter(), counter());
        let (u, d) = (up.clone(), down.clone());
        let relay = tokio::spawn(async move {
            let early = bytes::Bytes::from_static(early);
            relay_sockets(&client, early, &target, settings(idle, u, d)).await
        });
        Rig {
            app,
            origin,
            relay,
            up,
            down,
        }
    }

    fn counter() -> IntCounter {
        IntCounter::new("t", "t").expect("counter")
    }

    fn payload(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect()
    }

    /// Write `data`, close the write side, and read everything the peer
    /// sends until it closes.
    async fn exchange(s: TcpStream, data: Vec<u8>) -> Vec<u8> {
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            w.write_all(&data).await.expect("write");
            w.shutdown().await.expect("shutdown");
            w
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.expect("read");
        let _keep_open = writer.await.expect("writer");
        got
    }

    #[tokio::test]
    async fn payloads_around_pipe_and_buffer_sizes_arrive_intact_both_ways() {
        let _pool = TEST_LOCK.lock().await;
        let sizes = [
            0usize,
            1,
            2047,
            2048,
            2049,
            16_383,
            16_384,
            16_385,
            65_535,
            65_536,
            65_537,
            (1 << 20) + 3,
        ];
        for (i, &n) in sizes.iter().enumerate() {
            let m = sizes[sizes.len() - 1 - i];
            let r = rig(b"", Duration::from_secs(30)).await;
            let (up, down) = (payload(n, 1), payload(m, 2));
            let (at_origin, at_app) = tokio::join!(
                exchange(r.origin, down.clone()),
                exchange(r.app, up.clone())
            );
            assert!(at_origin == up, "{n} bytes upstream arrive intact");
            assert!(at_app == down, "{m} bytes downstream arrive intact");
            let (moved, end) = r.relay.await.expect("relay");
            assert!(matches!(end, End::Closed), "{end:?}");
            assert_eq!((moved.upstream, moved.downstream), (n as u64, m as u64));
            assert_eq!((r.up.get(), r.down.get()), (n as u64, m as u64));
        }
    }

    #[tokio::test]
    async fn without_descriptors_for_a_pipe_it_copies_instead() {
        let _pool = TEST_LOCK.lock().await;
        NO_PIPES.store(true, Ordering::Relaxed);
        let r = rig(b"early|", Duration::from_secs(30)).await;
        let (up, down) = (payload(70_001, 7), payload(16_385, 8));
        let (at_origin, at_app) = tokio::join!(
            exchange(r.origin, down.clone()),
            exchange(r.app, up.clone())
        );
        NO_PIPES.store(false, Ordering::Relaxed);
        assert!(
            at_origin == [&b"early|"[..], &up].concat(),
            "upstream intact"
        );
        assert!(at_app == down, "downstream intact");
        let (moved, end) = r.relay.await.expect("relay");
        assert!(matches!(end, End::Closed), "{end:?}");
        assert_eq!((moved.upstream, moved.downstream), (70_007, 16_385));
    }

    #[tokio::test]
    async fn early_bytes_reach_the_target_first_and_are_counted() {
        let _pool = TEST_LOCK.lock().await;
        let r = rig(b"sent with the request|", Duration::from_secs(30)).await;
        let (at_origin, at_app) = tokio::join!(
            exchange(r.origin, b"reply".to_vec()),
            exchange(r.app, b"then the tunnel".to_vec())
        );
        assert_eq!(at_origin, b"sent with the request|then the tunnel");
        assert_eq!(at_app, b"reply");
        let (moved, end) = r.relay.await.expect("relay");
        assert!(matches!(end, End::Closed), "{end:?}");
        assert_eq!(moved.upstream, 37);
        assert_eq!(r.up.get(), 37);
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_open() {
        let _pool = TEST_LOCK.lock().await;
        let mut r = rig(b"", Duration::from_secs(30)).await;
        r.app.write_all(b"request").await.expect("write");
        r.app.shutdown().await.expect("shutdown");
        // The FIN passes through: the origin reads to its end first…
        let mut got = Vec::new();
        r.origin.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"request");
        // …and only then answers, on the half still open.
        let answer = payload(300_000, 3);
        r.origin.write_all(&answer).await.expect("write");
        r.origin.shutdown().await.expect("shutdown");
        let mut back = Vec::new();
        r.app.read_to_end(&mut back).await.expect("read");
        assert!(back == answer, "answer after half-close arrives intact");
        let (_, end) = r.relay.await.expect("relay");
        assert!(matches!(end, End::Closed), "{end:?}");
    }

    /// Close `s` with a TCP reset.
    fn reset(s: TcpStream) {
        s.set_zero_linger().expect("linger");
        drop(s);
    }

    #[tokio::test]
    async fn a_target_reset_mid_transfer_names_the_target() {
        let _pool = TEST_LOCK.lock().await;
        let mut r = rig(b"", Duration::from_secs(30)).await;
        let mut first = [0u8; 4];
        r.app.write_all(b"some").await.expect("write");
        r.origin.read_exact(&mut first).await.expect("read");
        reset(r.origin);
        // The client keeps sending into a tunnel whose target is gone.
        let big = payload(4 << 20, 4);
        let _ = tokio::time::timeout(Duration::from_secs(10), r.app.write_all(&big)).await;
        let (_, end) = r.relay.await.expect("relay");
        assert!(matches!(end, End::TargetError(_)), "{end:?}");
    }

    #[tokio::test]
    async fn a_client_reset_mid_transfer_names_the_client() {
        let _pool = TEST_LOCK.lock().await;
        let mut r = rig(b"", Duration::from_secs(30)).await;
        let mut first = [0u8; 4];
        r.origin.write_all(b"some").await.expect("write");
        r.app.read_exact(&mut first).await.expect("read");
        reset(r.app);
        let big = payload(4 << 20, 5);
        let _ = tokio::time::timeout(Duration::from_secs(10), r.origin.write_all(&big)).await;
        let (_, end) = r.relay.await.expect("relay");
        assert!(matches!(end, End::Error(_)), "{end:?}");
    }

    #[tokio::test]
    async fn an_idle_tunnel_holds_no_pipe_and_times_out() {
        let _pool = TEST_LOCK.lock().await;
        let mut r = rig(b"", Duration::from_millis(400)).await;
        let data = payload(200_000, 6);
        r.app.write_all(&data).await.expect("write");
        let mut got = vec![0u8; data.len()];
        r.origin.read_exact(&mut got).await.expect("read");
        assert!(got == data);
        r.origin.write_all(b"ok").await.expect("write");
        r.app.read_exact(&mut [0u8; 2]).await.expect("read");
        // Quiet now: both directions give their pipe back to the pool.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while pooled() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let idle_pool = pooled();
        assert!(
            idle_pool >= 1,
            "a quiet tunnel's pipes are back in the pool"
        );
        let (moved, end) = r.relay.await.expect("relay");
        assert!(matches!(end, End::Idle), "{end:?}");
        assert_eq!((moved.upstream, moved.downstream), (200_000, 2));
        // Ending took nothing back from the tunnel: it held no pipe.
        assert_eq!(pooled(), idle_pool);
    }
}

//! A body wrapper that counts data bytes as they stream and runs a callback
//! exactly once when the body ends (end of stream, error, or drop) — so the
//! access log of a forwarded request can report bytes and full duration.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

type OnEnd = Box<dyn FnOnce(u64) + Send + Sync>;

pub struct MeteredBody<B> {
    inner: B,
    count: Arc<AtomicU64>,
    on_end: Option<OnEnd>,
}

// === impl MeteredBody ===

impl<B> MeteredBody<B> {
    /// Count into `count`; call `on_end(total)` once when the body is finished.
    pub fn new(inner: B, count: Arc<AtomicU64>, on_end: Option<OnEnd>) -> Self {
        MeteredBody {
            inner,
            count,
            on_end,
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.count.load(Ordering::Relaxed));
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::Mutex;

    #[tokio::test]
    async fn counts_and_ends_once() {
        let count = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        let body = MeteredBody::new(
            Full::new(Bytes::from_static(b"hello")),
            Arc::clone(&count),
            Some(Box::new(move |n| seen2.lock().expect("lock").push(n))),
        );
        let collected = body.collect().await.expect("collect").to_bytes();
        assert_eq!(&collected[..], b"hello");
        assert_eq!(count.load(Ordering::Relaxed), 5);
        assert_eq!(*seen.lock().expect("lock"), vec![5]);
    }

    #[test]
    fn drop_without_polling_still_ends() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        let body = MeteredBody::new(
            Full::new(Bytes::from_static(b"x")),
            Arc::new(AtomicU64::new(0)),
            Some(Box::new(move |n| seen2.lock().expect("lock").push(n))),
        );
        drop(body);
        assert_eq!(*seen.lock().expect("lock"), vec![0]);
    }
}

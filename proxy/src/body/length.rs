//! A request body held to its declared `content-length` (RFC 9113 §8.1.1,
//! RFC 9114 §4.1.2: a body longer or shorter than its `content-length` makes
//! the message malformed). It never yields a byte past the declared length,
//! and it holds back the chunk that completes the length until the stream
//! has ended: a body that turns out too long is an error before the next hop
//! has read a complete request.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};

use super::{Body, BoxError, Malformed};

/// `inner`, held to `length` bytes.
pub fn declared(inner: Body, length: u64) -> Body {
    Declared {
        inner,
        left: length,
        held: None,
        trailers: None,
        done: false,
    }
    .boxed()
}

struct Declared {
    inner: Body,
    /// Bytes still expected.
    left: u64,
    /// The chunk that completed the length, until the stream ends.
    held: Option<Bytes>,
    /// Trailers that arrived while a chunk was held.
    trailers: Option<Frame<Bytes>>,
    done: bool,
}

impl Declared {
    fn fail(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.held = None;
        Poll::Ready(Some(Err(Box::new(Malformed(why)))))
    }
}

impl HttpBody for Declared {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(t) = this.trailers.take() {
                this.done = true;
                return Poll::Ready(Some(Ok(t)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        let n = data.len() as u64;
                        if this.held.is_some() || n > this.left {
                            return this.fail("the request body is longer than its content-length");
                        }
                        this.left -= n;
                        if this.left == 0 {
                            this.held = Some(data);
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Err(trailers) => {
                        if this.left > 0 {
                            return this
                                .fail("the request body is shorter than its content-length");
                        }
                        match this.held.take() {
                            Some(data) => {
                                this.trailers = Some(trailers);
                                return Poll::Ready(Some(Ok(Frame::data(data))));
                            }
                            None => {
                                this.done = true;
                                return Poll::Ready(Some(Ok(trailers)));
                            }
                        }
                    }
                },
                Some(Err(e)) => {
                    this.done = true;
                    this.held = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    if this.left > 0 {
                        return this.fail("the request body is shorter than its content-length");
                    }
                    this.done = true;
                    return Poll::Ready(this.held.take().map(|d| Ok(Frame::data(d))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.held.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    /// A body of these frames (`None`: an error), then its end.
    fn source(frames: Vec<Option<&'static [u8]>>) -> Body {
        let items = frames.into_iter().map(|f| match f {
            Some(d) => Ok(Frame::data(Bytes::from_static(d))),
            None => Err::<_, BoxError>("broken".into()),
        });
        StreamBody::new(futures_util::stream::iter(items)).boxed()
    }

    /// Every frame until the end or the first error.
    async fn drain(mut b: Body) -> (Vec<u8>, Option<BoxError>) {
        let mut got = Vec::new();
        while let Some(f) = b.frame().await {
            match f {
                Ok(f) => got.extend_from_slice(&f.into_data().unwrap_or_default()),
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn exact_bodies_pass_and_others_fail_before_their_last_chunk() {
        let (got, err) = drain(declared(source(vec![Some(b"ab"), Some(b"cd")]), 4)).await;
        assert_eq!((got.as_slice(), err.is_none()), (&b"abcd"[..], true));
        let (got, err) = drain(declared(source(vec![]), 0)).await;
        assert!(got.is_empty() && err.is_none());

        // Longer, in one chunk or after the length was reached: the chunk
        // that completed the length was never let out.
        for frames in [
            vec![Some(&b"abcdEF"[..])],
            vec![Some(&b"ab"[..]), Some(b"cd"), Some(b"EF")],
        ] {
            let (got, err) = drain(declared(source(frames), 4)).await;
            assert_eq!(
                got,
                b"ab"[..got.len()].to_vec(),
                "nothing past the held chunk"
            );
            assert!(got.len() < 4, "{got:?}");
            let err = err.expect("an error");
            assert!(crate::body::is_malformed(err.as_ref()), "{err}");
        }

        // Shorter.
        let (got, err) = drain(declared(source(vec![Some(b"ab")]), 4)).await;
        assert_eq!(got, b"ab");
        assert!(err.is_some_and(|e| crate::body::is_malformed(e.as_ref())));

        // The source's own error passes through, and is not a mismatch.
        let (_, err) = drain(declared(source(vec![Some(b"ab"), None]), 4)).await;
        assert!(err.is_some_and(|e| !crate::body::is_malformed(e.as_ref())));
    }
}

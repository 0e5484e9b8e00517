//! HTTP/3 request and response bodies in terms of `http_body`: the receive
//! half of a request stream as a request body, and a response body written
//! to the send half as DATA frames and trailers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};

pub use crate::seccert::h3_shim::{RequestRecv as RecvHalf, RequestSend as SendHalf};
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};

use crate::body::{Body, BoxError, Malformed};
use crate::seccert::h3_shim::H3Control;

/// Where a request's trailer section is judged: h3 drops its pseudo-header
/// fields, the shim saw them (RFC 9114 §4.3 makes the message malformed).
pub struct TrailerCheck {
    pub control: H3Control,
    pub stream_id: u64,
}

/// The client's request body, read from the stream as it arrives.
pub struct H3RequestBody {
    recv: RecvHalf,
    trailers: TrailerCheck,
    data_done: bool,
    done: bool,
}

impl H3RequestBody {
    pub fn new(recv: RecvHalf, trailers: TrailerCheck) -> H3RequestBody {
        H3RequestBody {
            recv,
            trailers,
            data_done: false,
            done: false,
        }
    }
}

impl HttpBody for H3RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match this.recv.poll_recv_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(mut buf))) => {
                    let n = buf.remaining();
                    return Poll::Ready(Some(Ok(Frame::data(buf.copy_to_bytes(n)))));
                }
                Poll::Ready(Ok(None)) => this.data_done = true,
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
        match this.recv.poll_recv_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(t))) => {
                this.done = true;
                let check = &this.trailers;
                if let Some(m) = check.control.take_misplaced(check.stream_id) {
                    return Poll::Ready(Some(Err(Box::new(Malformed(m.reason())))));
                }
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Poll::Ready(Ok(None)) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(Box::new(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Send a complete response (head, body, trailers) and finish the stream.
/// A body error resets the stream with H3_INTERNAL_ERROR.
pub async fn send_response(
    send: &mut SendHalf,
    resp: Response<Body>,
) -> Result<(), h3::error::StreamError> {
    let (parts, mut body) = resp.into_parts();
    send.send_response(Response::from_parts(parts, ())).await?;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => match f.into_data() {
                Ok(data) => {
                    if !data.is_empty() {
                        send.send_data(data).await?;
                    }
                }
                Err(f) => {
                    if let Ok(trailers) = f.into_trailers() {
                        send.send_trailers(trailers).await?;
                        return Ok(());
                    }
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "response body failed; resetting the HTTP/3 stream");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        }
    }
    send.finish().await
}

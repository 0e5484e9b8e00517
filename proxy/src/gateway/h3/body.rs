//! Bodies over a gateway request stream: the response side read as an
//! `http_body::Body` (so a forwarded response goes back to the sidecar's
//! client through hyper unchanged, data frames zero-copy, trailers kept),
//! and a request body streamed into the send side.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::error::H3Error;
use super::stream::{H3RecvStream, H3SendStream};

/// The gateway's response body on one stream.
pub(super) struct RecvBody {
    stream: H3RecvStream,
    done: bool,
}

impl RecvBody {
    pub(super) fn new(stream: H3RecvStream) -> RecvBody {
        RecvBody {
            stream,
            done: false,
        }
    }
}

impl HttpBody for RecvBody {
    type Data = Bytes;
    type Error = H3Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H3Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match std::task::ready!(this.stream.poll_data(cx)) {
            Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => {
                this.done = true;
                Poll::Ready(this.stream.trailers_taken().map(|t| Ok(Frame::trailers(t))))
            }
            Err(e) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Stream `body` into `send` as DATA frames (each body frame one DATA
/// frame, not copied), then its trailers if it has any, then FIN. A body
/// error resets the stream with H3_REQUEST_CANCELLED: the gateway must not
/// take a truncated body for a whole one.
pub async fn send_body(
    send: &mut H3SendStream,
    mut body: crate::body::Body,
) -> Result<(), H3Error> {
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "request body failed; cancelling the gateway stream");
                send.reset(crate::wire::h3_error::H3ErrorCode::REQUEST_CANCELLED);
                return Err(H3Error::Request("the request body failed"));
            }
        };
        match frame.into_data() {
            Ok(data) => send.send_data(data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return send.send_trailers(&trailers).await;
                }
            }
        }
    }
    send.finish().await
}

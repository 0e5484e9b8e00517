//! Opening a request stream on the gateway connection: HEADERS out, the
//! final response head in (interim 1xx passed over), the stream handed back
//! for the body or the tunnel. GOAWAY is honoured on both sides of the
//! open: no stream is opened after one, and a stream the gateway said it
//! would not process comes back as the retryable [`H3Error::GoAway`].

use std::sync::Arc;

use bytes::Bytes;

use crate::wire::h3_error::H3ErrorCode;
use crate::wire::h3_frame::FrameType;

use super::connection::H3Connection;
use super::datagrams::FlowDatagrams;
use super::error::H3Error;
use super::frames::Event;
use super::section::{self, H3Request, SectionKind};
use super::stream::{H3RecvStream, H3SendStream, H3Stream};

/// A request sent whose response head has not been read yet: the send
/// half is already the caller's (to stream a request body while the
/// gateway answers, which a server may do before reading the body).
pub struct PendingResponse {
    conn: H3Connection,
    recv: H3RecvStream,
    flow: Option<FlowDatagrams>,
}

impl H3Connection {
    /// Send `req` on a new request stream (FIN after the HEADERS when
    /// `end_stream`), then wait for the final response. A refusal (403,
    /// 502, ...) is a response, not an error. No timeout here: wrap the
    /// call in one; dropping it cancels the stream (H3_REQUEST_CANCELLED).
    ///
    /// Stream credit: when the gateway's MAX_STREAMS is used up, this waits
    /// in quinn's `open_bi` until a stream closes.
    pub async fn open(
        &self,
        req: H3Request,
        end_stream: bool,
    ) -> Result<(http::response::Parts, H3Stream), H3Error> {
        let (send, pending) = self.send_request(req, end_stream).await?;
        let flow = pending.flow;
        let mut recv = pending.recv;
        let conn = pending.conn;
        let id = send.stream_id();
        let parts = conn.head_or_goaway(id, &mut recv).await?;
        Ok((parts, H3Stream { send, recv, flow }))
    }

    /// Send `req`'s HEADERS on a new request stream and return at once: the
    /// send half for the body ([`super::send_body`]), and the response to
    /// wait for.
    pub async fn send_request(
        &self,
        req: H3Request,
        end_stream: bool,
    ) -> Result<(H3SendStream, PendingResponse), H3Error> {
        if self.goaway_received() {
            return Err(H3Error::GoAway);
        }
        if let Some(e) = self.inner.conn.close_reason() {
            return Err(self.inner.peer.lost(&e));
        }
        let peer_max = self.peer_settings().max_field_section;
        let block = req.encode(peer_max).map_err(H3Error::Request)?;
        let (send, recv) = self
            .inner
            .conn
            .open_bi()
            .await
            .map_err(|e| self.inner.peer.lost(&e))?;
        let guard = self.guard();
        let mut send = H3SendStream::new(send, Arc::clone(&guard));
        let recv = H3RecvStream::new(recv, self.inner.max_field_section, guard);
        let id = send.stream_id();
        // RFC 9114 §5.2: a GOAWAY that came while we waited for the stream
        // covers it if its ID is at or above the one announced.
        if self.not_processed(id) {
            send.reset(H3ErrorCode::REQUEST_CANCELLED);
            return Err(H3Error::GoAway);
        }
        let flow = req.datagrams.then(|| self.register_flow(id));
        let sent = async {
            send.write_frame(FrameType::HEADERS, Bytes::from(block))
                .await?;
            if end_stream {
                send.finish().await?;
            }
            Ok::<_, H3Error>(())
        }
        .await;
        match sent {
            Ok(()) => {}
            Err(_) if self.not_processed(id) => return Err(H3Error::GoAway),
            Err(e) => return Err(e),
        }
        let pending = PendingResponse {
            conn: self.clone(),
            recv,
            flow,
        };
        Ok((send, pending))
    }

    /// The response head of stream `id`, or `GoAway` if it failed because
    /// the gateway would not process it.
    async fn head_or_goaway(
        &self,
        id: u64,
        recv: &mut H3RecvStream,
    ) -> Result<http::response::Parts, H3Error> {
        match response_head(recv).await {
            Ok(parts) => Ok(parts),
            Err(_) if self.not_processed(id) => Err(H3Error::GoAway),
            Err(e) => Err(e),
        }
    }

    /// The gateway announced it will not process stream `id`.
    fn not_processed(&self, id: u64) -> bool {
        self.inner.peer.goaway().is_some_and(|first| id >= first)
    }
}

impl PendingResponse {
    pub fn stream_id(&self) -> u64 {
        self.recv.stream_id()
    }

    /// Wait for the final response head; the receive half then carries the
    /// body (`H3RecvStream::into_body`).
    pub async fn response(mut self) -> Result<(http::response::Parts, H3RecvStream), H3Error> {
        let id = self.recv.stream_id();
        let parts = self.conn.head_or_goaway(id, &mut self.recv).await?;
        Ok((parts, self.recv))
    }
}

/// Read frames until the final response head (RFC 9114 §4.1: "one or more
/// interim responses (1xx) ... followed by a single final response").
async fn response_head(recv: &mut H3RecvStream) -> Result<http::response::Parts, H3Error> {
    let max = recv.max_field_section();
    loop {
        match recv.next_event().await? {
            Some(Event::Headers(block)) => {
                let decoded = match section::decode(&block, SectionKind::Response, max) {
                    Ok(d) => d,
                    Err(why) => return Err(recv.fail(why)),
                };
                let Some(status) = decoded.status else {
                    return Err(recv.fail("response without :status"));
                };
                if status.is_informational() {
                    continue;
                }
                let (mut parts, ()) = http::Response::new(()).into_parts();
                parts.status = status;
                parts.version = http::Version::HTTP_3;
                parts.headers = decoded.headers;
                return Ok(parts);
            }
            // RFC 9114 §4.1: DATA before HEADERS is H3_FRAME_UNEXPECTED.
            Some(Event::Data(_)) => return Err(recv.fail("DATA before the response head")),
            None => return Err(H3Error::Malformed("stream ended without a response")),
        }
    }
}

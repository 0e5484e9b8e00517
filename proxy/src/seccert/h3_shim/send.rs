//! The unidirectional streams h3 opens: passed through, except our control
//! stream, which the shim takes over at h3's first write (it adds our
//! setting to h3's SETTINGS) and then writes whole frames from a queue, in
//! order, in a small task ([`control_writer`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use h3::quic::{
    self, ConnectionErrorIncoming, SendStreamUnframed as _, StreamErrorIncoming, StreamId, WriteBuf,
};
use tokio::sync::{mpsc, oneshot};

use super::{Cmd, Codepoints, Shared};
use crate::wire::h3_frame::StreamType;
use crate::wire::server_certificate;
use crate::wire::varint;

/// A unidirectional stream h3 opened. Passed through, except the control
/// stream, which the shim takes over at h3's first write.
pub struct ShimSendStream {
    id: StreamId,
    state: SendState,
    shared: Arc<Shared>,
}

enum SendState {
    /// Nothing written yet: the first write tells which stream this is.
    Fresh(h3_quinn::SendStream<Bytes>),
    /// Not our control stream.
    Pass(h3_quinn::SendStream<Bytes>),
    /// Our control stream, written by the writer task.
    Control {
        /// Set while one of h3's frames waits in the writer's queue.
        waiting: Option<oneshot::Receiver<Result<(), StreamErrorIncoming>>>,
    },
    /// Only while switching states.
    Gone,
}

impl ShimSendStream {
    pub(super) fn new(inner: h3_quinn::SendStream<Bytes>, shared: &Arc<Shared>) -> ShimSendStream {
        ShimSendStream {
            id: quic::SendStream::<Bytes>::send_id(&inner),
            state: SendState::Fresh(inner),
            shared: Arc::clone(shared),
        }
    }

    /// h3's first write on a control stream: take the stream over, queue
    /// our SETTINGS (h3's, plus our setting) first, and start the writer.
    fn take_over(
        &mut self,
        stream: h3_quinn::SendStream<Bytes>,
        mut wb: WriteBuf<Bytes>,
    ) -> Result<(), StreamErrorIncoming> {
        let original = wb.copy_to_bytes(wb.remaining());
        let rewritten = advertise(&self.shared.codepoints, &original);
        let advertised = rewritten.is_some();
        let first = rewritten.unwrap_or(original);
        let rx = self
            .shared
            .rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (Some(rx), Ok(rt)) = (rx, tokio::runtime::Handle::try_current()) else {
            return Err(StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: ConnectionErrorIncoming::InternalError(
                    "secondary-certificate shim: no writer for the control stream".to_string(),
                ),
            });
        };
        let (done_tx, done_rx) = oneshot::channel();
        // Queued before anything else can be: H3Control only queues once the
        // negotiation is Enabled, which needs `advertised`, set below.
        self.shared
            .tx
            .send(Cmd::Frame {
                head: first,
                body: Bytes::new(),
                done: Some(done_tx),
            })
            .map_err(|_| self.shared.writer_gone())?;
        rt.spawn(control_writer(stream, rx, self.shared.conn.clone()));
        self.shared.advertised.store(advertised, Ordering::Release);
        self.state = SendState::Control {
            waiting: Some(done_rx),
        };
        Ok(())
    }
}

impl quic::SendStream<Bytes> for ShimSendStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        match &mut self.state {
            SendState::Fresh(s) | SendState::Pass(s) => s.poll_ready(cx),
            SendState::Control { waiting } => {
                let Some(rx) = waiting else {
                    return Poll::Ready(Ok(()));
                };
                let r = ready!(Pin::new(rx).poll(cx));
                *waiting = None;
                Poll::Ready(r.unwrap_or_else(|_| Err(self.shared.writer_gone())))
            }
            SendState::Gone => Poll::Ready(Err(self.shared.writer_gone())),
        }
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        let mut wb: WriteBuf<Bytes> = data.into();
        match std::mem::replace(&mut self.state, SendState::Gone) {
            SendState::Fresh(mut s) => {
                // Every uni stream h3 writes starts with its stream type,
                // encoded minimally in the WriteBuf's header: 0x00 is the
                // control stream (RFC 9114 §6.2.1).
                let is_control = wb.chunk().first() == Some(&(StreamType::CONTROL.0 as u8));
                if is_control
                    && self.shared.enabled
                    && !self
                        .shared
                        .send_control_claimed
                        .swap(true, Ordering::AcqRel)
                {
                    return self.take_over(s, wb);
                }
                let r = s.send_data(wb);
                self.state = SendState::Pass(s);
                r
            }
            SendState::Pass(mut s) => {
                let r = s.send_data(wb);
                self.state = SendState::Pass(s);
                r
            }
            SendState::Control { waiting } => {
                if waiting.is_some() {
                    self.state = SendState::Control { waiting };
                    // The same misuse h3-quinn reports.
                    return Err(StreamErrorIncoming::ConnectionErrorIncoming {
                        connection_error: ConnectionErrorIncoming::InternalError(
                            "send_data called while the control stream is not ready".to_string(),
                        ),
                    });
                }
                // One h3 send_data is one whole frame (h3 `stream::write`).
                let frame = wb.copy_to_bytes(wb.remaining());
                let (done_tx, done_rx) = oneshot::channel();
                let sent = self.shared.tx.send(Cmd::Frame {
                    head: frame,
                    body: Bytes::new(),
                    done: Some(done_tx),
                });
                self.state = SendState::Control {
                    waiting: Some(done_rx),
                };
                sent.map_err(|_| self.shared.writer_gone())
            }
            SendState::Gone => Err(self.shared.writer_gone()),
        }
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        match &mut self.state {
            SendState::Fresh(s) | SendState::Pass(s) => s.poll_finish(cx),
            SendState::Control { .. } => {
                // h3 never finishes its control stream (RFC 9114 §6.2.1).
                let r = self.shared.tx.send(Cmd::Finish);
                Poll::Ready(r.map_err(|_| self.shared.writer_gone()))
            }
            SendState::Gone => Poll::Ready(Err(self.shared.writer_gone())),
        }
    }

    fn reset(&mut self, reset_code: u64) {
        match &mut self.state {
            SendState::Fresh(s) | SendState::Pass(s) => s.reset(reset_code),
            SendState::Control { .. } => {
                let _ = self.shared.tx.send(Cmd::Reset(reset_code));
            }
            SendState::Gone => {}
        }
    }

    fn send_id(&self) -> StreamId {
        self.id
    }
}

/// Writes queued frames on our control stream, each whole, in order, until
/// the connection closes or every queue handle is gone.
async fn control_writer(
    mut stream: h3_quinn::SendStream<Bytes>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    conn: quinn::Connection,
) {
    loop {
        let cmd = tokio::select! {
            biased;
            cmd = rx.recv() => cmd,
            _ = conn.closed() => None,
        };
        match cmd {
            None => break,
            Some(Cmd::Frame { head, body, done }) => {
                let mut buf = head.chain(body);
                let r =
                    futures_util::future::poll_fn(|cx| write_all(&mut stream, cx, &mut buf)).await;
                let failed = r.is_err();
                if let Some(done) = done {
                    let _ = done.send(r);
                }
                if failed {
                    break;
                }
            }
            Some(Cmd::Finish) => {
                let _ = futures_util::future::poll_fn(|cx| {
                    quic::SendStream::<Bytes>::poll_finish(&mut stream, cx)
                })
                .await;
                break;
            }
            Some(Cmd::Reset(code)) => {
                quic::SendStream::<Bytes>::reset(&mut stream, code);
                break;
            }
        }
    }
}

fn write_all(
    stream: &mut h3_quinn::SendStream<Bytes>,
    cx: &mut Context<'_>,
    buf: &mut impl Buf,
) -> Poll<Result<(), StreamErrorIncoming>> {
    while buf.has_remaining() {
        let n = ready!(stream.poll_send(cx, buf))?;
        if n == 0 {
            return Poll::Ready(Err(StreamErrorIncoming::Unknown(Box::new(
                std::io::Error::from(std::io::ErrorKind::WriteZero),
            ))));
        }
    }
    Poll::Ready(Ok(()))
}

/// Re-encodes `0x00 || SETTINGS frame` (h3's first control-stream write)
/// with `SETTINGS_HTTP_SERVER_CERT_AUTH = 1` appended. `None` if the bytes
/// are not exactly that, or already carry the setting (then they are sent
/// unchanged).
pub(super) fn advertise(cp: &Codepoints, first_write: &[u8]) -> Option<Bytes> {
    let (stream_type, n) = varint::decode(first_write).ok()?;
    if StreamType(stream_type) != StreamType::CONTROL {
        return None;
    }
    let settings = server_certificate::advertise_h3(cp, first_write.get(n..)?)?;
    let mut out = BytesMut::with_capacity(varint::MAX_LEN + settings.len());
    StreamType::CONTROL.encode(&mut out).ok()?;
    out.extend_from_slice(&settings);
    Some(out.freeze())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn advertise_rewrites_only_the_control_streams_settings() {
        let cp = Codepoints::default();
        // 0x00 (control), SETTINGS { 0x06 = 16 }.
        let first = [0x00, 0x04, 0x02, 0x06, 0x10];
        let out = advertise(&cp, &first).unwrap();
        assert_eq!(
            &out[..],
            &[0x00, 0x04, 0x07, 0x06, 0x10, 0x80, 0x5e, 0xcc, 0x02, 0x01]
        );
        // Already advertised, another stream type, not SETTINGS: unchanged.
        assert_eq!(advertise(&cp, &out), None);
        assert_eq!(advertise(&cp, &[0x02]), None);
        assert_eq!(advertise(&cp, &[0x00, 0x07, 0x01, 0x00]), None);
        assert_eq!(advertise(&cp, &[0x00, 0x04, 0x05, 0x06]), None);
        assert_eq!(
            &advertise(&cp, &[0x00, 0x04, 0x00]).unwrap()[..],
            &[0x00, 0x04, 0x05, 0x80, 0x5e, 0xcc, 0x02, 0x01]
        );
    }
}

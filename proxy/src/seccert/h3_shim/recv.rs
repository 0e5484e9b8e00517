//! The streams the client opens: bytes pass to h3 unchanged while a side
//! parser looks at them (the client's control stream: [`ControlParser`];
//! request streams: frame types, for our frame, and the HEADERS frames'
//! field names, for the rules in `sections`).

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h3::quic::{self, StreamErrorIncoming, StreamId, WriteBuf};

use super::control::{ControlEvent, ControlParser};
use super::sections::SectionTap;
use super::{neg_from_u8, Negotiation, Shared};
use crate::wire::h3_frame::{FrameEvent, FrameParser, FrameType, StreamType, VarintReader};
use crate::wire::server_certificate::ServerCertificate;

/// What is watched on a request stream.
struct RequestTap {
    frames: FrameParser,
    /// Frames of our type are a violation (the feature is on here).
    watch_certificate: bool,
    sections: SectionTap,
}

/// A receive stream: a client's unidirectional stream, or the receive half
/// of a request stream.
pub struct ShimRecvStream {
    inner: h3_quinn::RecvStream,
    tap: Tap,
    shared: Arc<Shared>,
}

/// What the side parser of one receive stream does.
enum Tap {
    /// Unidirectional, reading the stream type.
    UniType(VarintReader),
    /// The client's control stream.
    Control(Box<ControlParser>),
    /// A request stream: frame headers, and the field sections.
    Request(Box<RequestTap>),
    /// Nothing to look at.
    Off,
}

impl ShimRecvStream {
    /// A unidirectional stream the client opened; its type comes first.
    pub(super) fn uni(inner: h3_quinn::RecvStream, shared: &Arc<Shared>) -> ShimRecvStream {
        ShimRecvStream {
            inner,
            tap: Tap::UniType(VarintReader::default()),
            shared: Arc::clone(shared),
        }
    }

    fn observe(&mut self, mut data: &[u8]) {
        let shared = &*self.shared;
        loop {
            match &mut self.tap {
                Tap::Off => return,
                Tap::UniType(r) => {
                    let Some(ty) = r.feed(&mut data) else { return };
                    self.tap = if StreamType(ty) == StreamType::CONTROL
                        && !shared.recv_control_claimed.swap(true, Ordering::AcqRel)
                    {
                        Tap::Control(Box::new(ControlParser::new(shared.codepoints.h3_setting())))
                    } else {
                        Tap::Off
                    };
                    // The rest of this chunk belongs to the next state.
                }
                Tap::Control(p) => {
                    p.feed(data, &mut |ev| match ev {
                        ControlEvent::Settings { entries, ours } => {
                            shared.on_client_settings(entries, ours)
                        }
                        ControlEvent::Frame(ty) => shared.on_client_control_frame(ty),
                        // h3 closes the connection itself (missing or
                        // malformed SETTINGS).
                        ControlEvent::Malformed => {}
                    });
                    if p.is_dead() {
                        self.tap = Tap::Off;
                    }
                    return;
                }
                Tap::Request(t) => {
                    // Settled without the feature: nothing can be a
                    // violation on this connection any more.
                    if t.watch_certificate
                        && matches!(
                            neg_from_u8(shared.negotiation.load(Ordering::Acquire)),
                            Negotiation::Disabled | Negotiation::Closed
                        )
                    {
                        t.watch_certificate = false;
                    }
                    let cp = &shared.codepoints;
                    let id = quic::RecvStream::recv_id(&self.inner).into_inner();
                    let RequestTap {
                        frames,
                        watch_certificate,
                        sections,
                    } = &mut **t;
                    let flow = frames.feed(data, |ev| {
                        if let Some(m) = sections.on(&ev) {
                            shared.on_misplaced(id, m);
                        }
                        match ev {
                            // No length follows, the rest of the stream is
                            // raw; h3 rejects it on request streams unless
                            // WebTransport is on. Frame tracking stops there.
                            FrameEvent::Type(FrameType::WEBTRANSPORT_STREAM) => {
                                ControlFlow::Break(())
                            }
                            FrameEvent::Type(ty)
                                if *watch_certificate && ServerCertificate::is_h3(cp, ty) =>
                            {
                                shared.on_request_certificate_frame();
                                ControlFlow::Continue(())
                            }
                            _ => ControlFlow::Continue(()),
                        }
                    });
                    if flow.is_break() {
                        self.tap = Tap::Off;
                    }
                    return;
                }
            }
        }
    }
}

impl quic::RecvStream for ShimRecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        let r = ready!(self.inner.poll_data(cx));
        if let Ok(Some(data)) = &r {
            if !matches!(self.tap, Tap::Off) {
                self.observe(data);
            }
        }
        Poll::Ready(r)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.inner.stop_sending(error_code)
    }

    fn recv_id(&self) -> StreamId {
        self.inner.recv_id()
    }
}

/// A request stream: h3-quinn's send half unchanged, the receive half
/// watched for frames of our type.
pub struct ShimBidiStream {
    send: h3_quinn::SendStream<Bytes>,
    recv: ShimRecvStream,
}

impl ShimBidiStream {
    /// A request stream the client opened (`client`: watch its bytes), or
    /// one we opened (nothing to watch).
    pub(super) fn new(
        shared: &Arc<Shared>,
        bidi: h3_quinn::BidiStream<Bytes>,
        client: bool,
    ) -> ShimBidiStream {
        let (send, recv) = quic::BidiStream::split(bidi);
        let tap = if client {
            Tap::Request(Box::new(RequestTap {
                frames: FrameParser::new(),
                watch_certificate: shared.enabled,
                sections: SectionTap::new(shared.max_field_section),
            }))
        } else {
            Tap::Off
        };
        ShimBidiStream {
            send,
            recv: ShimRecvStream {
                inner: recv,
                tap,
                shared: Arc::clone(shared),
            },
        }
    }
}

impl quic::RecvStream for ShimBidiStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code)
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

impl quic::SendStream<Bytes> for ShimBidiStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code)
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

impl quic::SendStreamUnframed<Bytes> for ShimBidiStream {
    fn poll_send<D: Buf>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut D,
    ) -> Poll<Result<usize, StreamErrorIncoming>> {
        self.send.poll_send(cx, buf)
    }
}

impl quic::BidiStream<Bytes> for ShimBidiStream {
    type SendStream = h3_quinn::SendStream<Bytes>;
    type RecvStream = ShimRecvStream;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        (self.send, self.recv)
    }
}

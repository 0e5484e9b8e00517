//! What the core hands back to a front: a complete response, a refusal
//! (with the stream reset that follows it, where the protocol has one), or
//! a tunnel (a response head, then the client's stream is handed over).

use std::sync::Arc;

use bauta_policy::Decision;
use bytes::Bytes;
use http::Response;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UdpSocket};

use crate::body::Body;
use crate::core::context::Services;
use crate::core::exchange::Exchange;
use crate::core::limits::Permit;
use crate::tunnel::tcp::{self as tcp_tunnel, End};
use crate::tunnel::udp::{self as udp_tunnel, DatagramChannel, FlowEnd, FlowSettings};
use crate::wire::h2_frame::ErrorCode as H2ErrorCode;
use crate::wire::h3_error::H3ErrorCode;

/// The core's answer to one request.
pub enum Reply {
    /// Send this response (forwarded, reverse-proxied, or generated).
    Response(Response<Body>),
    /// Send this error response (`head`, then `text` as its body), then
    /// reset the stream with the code for the front's protocol, if any (see
    /// `core::respond`).
    Refusal {
        head: Response<()>,
        text: Bytes,
        h2_reset: Option<H2ErrorCode>,
        h3_reset: Option<H3ErrorCode>,
    },
    /// Send `head` (2xx), then hand the client's stream to `tunnel`.
    Tunnel { head: Response<()>, tunnel: Tunnel },
}

/// An established tunnel waiting for the client's side.
pub struct Tunnel {
    services: Arc<Services>,
    ex: Exchange,
    decision: Decision,
    far: Far,
    /// The client's place under its limits, held until the tunnel ends.
    permit: Permit,
}

enum Far {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

/// How a tunnel ended, as far as the front must act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    Done,
    /// The client sent a malformed capsule: the front resets the stream
    /// (RFC 9297 §3.3; HTTP/3 `H3_MESSAGE_ERROR`).
    Malformed,
    /// The target's TCP connection failed (a reset): the front resets the
    /// stream (RFC 9113 §8.5 `CONNECT_ERROR`, RFC 9114 §4.4
    /// `H3_CONNECT_ERROR`) rather than end it as if complete.
    TargetError,
}

// === impl Tunnel ===

impl Tunnel {
    pub(crate) fn tcp(
        services: Arc<Services>,
        ex: Exchange,
        decision: Decision,
        s: TcpStream,
        permit: Permit,
    ) -> Tunnel {
        Tunnel {
            services,
            ex,
            decision,
            far: Far::Tcp(s),
            permit,
        }
    }

    pub(crate) fn udp(
        services: Arc<Services>,
        ex: Exchange,
        decision: Decision,
        s: UdpSocket,
        permit: Permit,
    ) -> Tunnel {
        Tunnel {
            services,
            ex,
            decision,
            far: Far::Udp(s),
            permit,
        }
    }

    /// True for CONNECT-UDP (the front then offers its datagrams).
    pub fn is_udp(&self) -> bool {
        matches!(self.far, Far::Udp(_))
    }

    /// Relay between the client's stream (and, for UDP on HTTP/3, its
    /// datagrams) and the target until either side ends; count and log.
    pub async fn run<IO, D>(self, client: IO, datagrams: Option<D>) -> TunnelEnd
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
        D: DatagramChannel,
    {
        let Tunnel {
            services,
            ex,
            decision,
            far,
            // Bound, not `_`: the place is given back when `run` returns.
            permit: _permit,
        } = self;
        let _live = services.tunnels.open();
        let m = &services.metrics;
        let kind = ex.kind.as_str();
        let gauge = m.tunnels_active.with_label_values(&[kind]);
        gauge.inc();
        let config = &ex.config;
        let (outcome, up, down, end) = match far {
            Far::Tcp(mut target) => {
                let (moved, end) = tcp_tunnel::relay(
                    client,
                    &mut target,
                    config.limits.idle_timeout,
                    m.tunnel_bytes.with_label_values(&[kind, "upstream"]),
                    m.tunnel_bytes.with_label_values(&[kind, "downstream"]),
                    services.tunnels.aborted(),
                )
                .await;
                if matches!(end, End::Error(_)) {
                    // RFC 9113 §8.5, RFC 9114 §4.4: an error on the client's
                    // side reaches the target as a TCP reset, not a FIN.
                    let _ = target.set_zero_linger();
                }
                let (outcome, end) = match end {
                    End::Closed => ("closed", TunnelEnd::Done),
                    End::Idle => ("idle_timeout", TunnelEnd::Done),
                    End::Error(_) => ("reset", TunnelEnd::Done),
                    End::TargetError(_) => ("reset", TunnelEnd::TargetError),
                    End::Aborted => ("shutdown", TunnelEnd::Done),
                };
                (outcome, moved.upstream, moved.downstream, end)
            }
            Far::Udp(socket) => {
                let settings = FlowSettings {
                    idle_timeout: config.connect_udp.idle_timeout,
                    abort: services.tunnels.aborted(),
                };
                let r = udp_tunnel::relay(&socket, client, datagrams, settings, m).await;
                let end = match r.end {
                    FlowEnd::Malformed => TunnelEnd::Malformed,
                    _ => TunnelEnd::Done,
                };
                (r.end.as_str(), r.upstream, r.downstream, end)
            }
        };
        gauge.dec();
        ex.log(Some(&decision), 200, outcome, up, down);
        end
    }

    /// The client went away before the tunnel started.
    pub fn abandon(self) {
        tracing::debug!(target = %self.ex.target, "client went away before the tunnel started");
        self.ex.log(Some(&self.decision), 200, "client_gone", 0, 0);
    }
}

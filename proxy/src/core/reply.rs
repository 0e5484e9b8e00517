//! What the core hands back to a front: a complete response, a refusal
//! (with the stream reset that follows it, where the protocol has one), or
//! a tunnel (a response head, then the client's stream is handed over).

use std::future::Future;
use std::sync::Arc;

use bauta_policy::Decision;
use bytes::Bytes;
use http::Response;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UdpSocket};

use crate::body::Body;
use crate::core::context::Services;
use crate::core::exchange::Exchange;
use crate::core::limits::Permit;
use crate::core::tunnels::TunnelGuard;
use crate::gateway::GatewayIo;
use crate::tunnel::tcp::{self as tcp_tunnel, End, TcpSettings, Transferred};
use crate::tunnel::udp::{self as udp_tunnel, DatagramChannel, FlowEnd, FlowSettings};
use crate::tunnel::udp_chain::{self, ChainEnd};
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
    /// A CONNECT stream on a gateway connection.
    GatewayTcp(Box<GatewayIo>),
    /// A CONNECT-UDP stream (capsules) on a gateway connection.
    GatewayUdp(Box<GatewayIo>),
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

    /// A tunnel through the gateway's stream `io` (`udp`: CONNECT-UDP).
    pub(crate) fn gateway(
        services: Arc<Services>,
        ex: Exchange,
        decision: Decision,
        io: GatewayIo,
        udp: bool,
        permit: Permit,
    ) -> Tunnel {
        Tunnel {
            services,
            ex,
            decision,
            far: if udp {
                Far::GatewayUdp(Box::new(io))
            } else {
                Far::GatewayTcp(Box::new(io))
            },
            permit,
        }
    }

    /// True for CONNECT-UDP (the front then offers its datagrams).
    pub fn is_udp(&self) -> bool {
        matches!(self.far, Far::Udp(_) | Far::GatewayUdp(_))
    }

    /// Relay between the client's stream (and, for UDP on HTTP/3, its
    /// datagrams) and the target until either side ends; count and log.
    pub async fn run<IO, D>(self, client: IO, datagrams: Option<D>) -> TunnelEnd
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
        D: DatagramChannel,
    {
        let (live, far) = self.begin();
        live.relay(far, client, datagrams).await
    }

    /// The same for a client side that is a plain TCP socket: a TCP tunnel
    /// is relayed with splice(2), the bytes never entering user space.
    /// `early` is what the client sent after its request, before the tunnel
    /// began (read ahead by the front).
    #[cfg(target_os = "linux")]
    pub async fn run_socket(self, client: TcpStream, early: Bytes) -> TunnelEnd {
        let (live, far) = self.begin();
        match far {
            Far::Tcp(target) => {
                let (moved, end) =
                    tcp_tunnel::relay_sockets(&client, early, &target, live.tcp_settings()).await;
                live.tcp_ended(&target, moved, end)
            }
            far => {
                let client = crate::tunnel::prefixed::Prefixed::new(early, client);
                live.relay(far, client, None::<udp_tunnel::NoDatagrams>)
                    .await
            }
        }
    }

    /// The tunnel is live: counted until [`Live`] is dropped.
    fn begin(self) -> (Live, Far) {
        let Tunnel {
            services,
            ex,
            decision,
            far,
            permit,
        } = self;
        (Live::new(services, ex, decision, permit), far)
    }

    /// The client went away before the tunnel started.
    pub fn abandon(self) {
        tracing::debug!(target = %self.ex.target, "client went away before the tunnel started");
        self.ex.log(Some(&self.decision), 200, "client_gone", 0, 0);
    }
}

/// A running tunnel: holds the client's place under its limits and in the
/// live-tunnel count, and the active gauge, until it is logged and dropped.
struct Live {
    services: Arc<Services>,
    ex: Exchange,
    decision: Decision,
    gauge: IntGauge,
    _permit: Permit,
    _guard: TunnelGuard,
}

impl Live {
    fn new(services: Arc<Services>, ex: Exchange, decision: Decision, permit: Permit) -> Live {
        let guard = services.tunnels.open();
        let gauge = services
            .metrics
            .tunnels_active
            .with_label_values(&[ex.kind.as_str()]);
        gauge.inc();
        Live {
            services,
            ex,
            decision,
            gauge,
            _permit: permit,
            _guard: guard,
        }
    }

    /// Relay `far` with the copying relays (see [`Tunnel::run`]).
    async fn relay<IO, D>(self, far: Far, client: IO, datagrams: Option<D>) -> TunnelEnd
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
        D: DatagramChannel,
    {
        match far {
            Far::Tcp(mut target) => {
                let (moved, end) =
                    tcp_tunnel::relay(client, &mut target, self.tcp_settings()).await;
                self.tcp_ended(&target, moved, end)
            }
            Far::Udp(socket) => {
                let settings = FlowSettings {
                    idle_timeout: self.ex.config.connect_udp.idle_timeout,
                    abort: self.services.tunnels.aborted(),
                };
                let m = &self.services.metrics;
                let r = udp_tunnel::relay(&socket, client, datagrams, settings, m).await;
                let end = match r.end {
                    FlowEnd::Malformed => TunnelEnd::Malformed,
                    _ => TunnelEnd::Done,
                };
                self.ended(r.end.as_str(), r.upstream, r.downstream);
                end
            }
            Far::GatewayTcp(gateway) => {
                let (moved, end) = tcp_tunnel::relay(client, gateway, self.tcp_settings()).await;
                self.relay_ended(moved, end)
            }
            // A client without datagrams speaks capsules like the gateway:
            // the stream passes as it is, every capsule type included.
            Far::GatewayUdp(mut gateway) => {
                let gateway_datagrams = gateway.take_datagrams();
                if datagrams.is_none() && gateway_datagrams.is_none() {
                    let (moved, end) =
                        tcp_tunnel::relay(client, gateway, self.tcp_settings()).await;
                    return self.relay_ended(moved, end);
                }
                let idle = self.ex.config.connect_udp.idle_timeout;
                let abort = self.services.tunnels.aborted();
                let (moved, end) = udp_chain::relay(
                    client,
                    datagrams,
                    gateway,
                    gateway_datagrams,
                    idle,
                    abort,
                    &self.services.metrics,
                )
                .await;
                self.ended(chain_outcome(end), moved.up, moved.down);
                match end {
                    ChainEnd::Malformed => TunnelEnd::Malformed,
                    ChainEnd::GatewayError => TunnelEnd::TargetError,
                    _ => TunnelEnd::Done,
                }
            }
        }
    }

    /// A byte relay ended, direct or through the gateway: a failure of the
    /// far side (the target's TCP connection, the gateway's stream) resets
    /// the client's stream.
    fn relay_ended(self, moved: Transferred, end: End) -> TunnelEnd {
        self.ended(tcp_outcome(&end), moved.upstream, moved.downstream);
        match end {
            End::TargetError(_) => TunnelEnd::TargetError,
            _ => TunnelEnd::Done,
        }
    }

    /// The TCP relay's idle timeout, byte counters and abort signal.
    fn tcp_settings(&self) -> TcpSettings<impl Future<Output = ()> + Send + 'static> {
        let bytes = |direction: &str| {
            self.services
                .metrics
                .tunnel_bytes
                .with_label_values(&[self.ex.kind.as_str(), direction])
        };
        TcpSettings {
            idle_timeout: self.ex.config.limits.idle_timeout,
            up: bytes("upstream"),
            down: bytes("downstream"),
            abort: self.services.tunnels.aborted(),
        }
    }

    /// A TCP tunnel ended: an error on the client's side reaches the
    /// target as a TCP reset, not a FIN (RFC 9113 §8.5, RFC 9114 §4.4).
    fn tcp_ended(self, target: &TcpStream, moved: Transferred, end: End) -> TunnelEnd {
        if matches!(end, End::Error(_)) {
            let _ = target.set_zero_linger();
        }
        self.relay_ended(moved, end)
    }

    fn ended(self, outcome: &str, up: u64, down: u64) {
        self.gauge.dec();
        self.ex.log(Some(&self.decision), 200, outcome, up, down);
    }
}

/// The access log's outcome of a TCP tunnel (direct or chained).
fn tcp_outcome(end: &End) -> &'static str {
    match end {
        End::Closed => "closed",
        End::Idle => "idle_timeout",
        End::Error(_) | End::TargetError(_) => "reset",
        End::Aborted => "shutdown",
    }
}

/// The access log's outcome of a chained CONNECT-UDP flow, in the same
/// words as [`tcp_outcome`].
fn chain_outcome(end: ChainEnd) -> &'static str {
    match end {
        ChainEnd::Closed => "closed",
        ChainEnd::Idle => "idle_timeout",
        ChainEnd::Malformed => "malformed",
        ChainEnd::GatewayError | ChainEnd::ClientError => "reset",
        ChainEnd::Aborted => "shutdown",
    }
}

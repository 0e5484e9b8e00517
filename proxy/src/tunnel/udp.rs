//! CONNECT-UDP (RFC 9298): one connected UDP socket per flow, whatever the
//! front. Client datagrams arrive as QUIC DATAGRAM frames (HTTP/3, routed
//! here by [`QuicDatagrams`]) or as DATAGRAM capsules on the request stream
//! (HTTP/3 fallback, HTTP/2 and HTTP/1.1); replies go back the same way.
//!
//! The flow ends when the request stream ends, on a malformed capsule, or
//! after the idle timeout. Nothing is allocated per packet on the forwarding
//! path: capsules are sliced out of the read buffer, target replies are
//! received into a per-flow buffer with room for the framing in front.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bauta_policy::{Decision, Host, Protocol};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::udp_template::{self, MatchError, UdpHost};
use crate::core::context::Shared;
use crate::core::exchange::{dial_failure, Exchange, Failure};
use crate::core::respond::ProxyError;
use crate::ops::metrics::Metrics;
use crate::wire::capsule::{self, CapsuleDecoder, Event};
use crate::wire::target::Target;
use crate::wire::{datagram, varint};

/// Largest UDP payload (IPv6 jumbograms aside): 65535 − 8.
pub const MAX_UDP_PAYLOAD: usize = 65527;
/// Datagrams queued from the QUIC router to one flow before we drop.
const FLOW_QUEUE: usize = 256;
/// Room for an HTTP/3 datagram header (Quarter Stream ID + Context ID).
const QUIC_HEADROOM: usize = 16;
/// Size of the buffers QUIC replies are cut from.
const QUIC_SLAB: usize = 256 * 1024;
/// Capsule read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;
/// H3_DATAGRAM_ERROR (RFC 9297 §5.2).
const H3_DATAGRAM_ERROR: u32 = 0x33;

/// A validated CONNECT-UDP request: where to.
pub struct Plan {
    pub target: Target,
}

/// An open flow: the connected socket and the decision that allowed it.
pub struct Flow {
    pub socket: UdpSocket,
    pub peer: SocketAddr,
    pub decision: Decision,
    pub target: Target,
}

/// Why a request is not a valid CONNECT-UDP request, and how bad that is.
pub type Rejection = (Failure, Option<h3::error::Code>);

// === request validation (spec/masque.md §5.6) ===

/// Validate a CONNECT-UDP request from any front. `extended` is true for
/// HTTP/2 and HTTP/3 extended CONNECT, false for the HTTP/1.1 Upgrade form.
pub fn validate(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    extended: bool,
) -> Result<Plan, (ProxyError, bool)> {
    // RFC 9297 §3.2: a message using the Capsule Protocol carries no content;
    // Content-Length / Content-Type / Transfer-Encoding make it malformed.
    let malformed = |why| Err((ProxyError::BadRequest(why), true));
    if headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::CONTENT_TYPE)
        || headers.contains_key(header::TRANSFER_ENCODING)
    {
        return malformed("CONNECT-UDP requests carry no content (Content-Length, Content-Type, Transfer-Encoding)");
    }
    if extended {
        // RFC 8441 §4 / RFC 9220: :scheme and :path present with :protocol.
        if *method != Method::CONNECT || uri.scheme().is_none() || uri.authority().is_none() {
            return malformed("extended CONNECT needs :scheme, :authority and :path");
        }
        if uri.path().is_empty() {
            return malformed("extended CONNECT needs a non-empty :path");
        }
    } else if *method != Method::GET {
        return Err((
            ProxyError::BadRequest("CONNECT-UDP over HTTP/1.1 uses GET with Upgrade: connect-udp"),
            false,
        ));
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let config = shared.config();
    let raw = config
        .connect_udp
        .template
        .match_path(path)
        .map_err(|e| match e {
            MatchError::NoMatch => (
                ProxyError::NotFound("no CONNECT-UDP URI template matches this path"),
                false,
            ),
            MatchError::BadTarget(why) => (ProxyError::BadRequest(why), false),
        })?;
    let (host, port) =
        udp_template::parse_udp_target(&raw.host, &raw.port).map_err(|e| match e {
            MatchError::NoMatch => (ProxyError::BadRequest("bad CONNECT-UDP target"), false),
            MatchError::BadTarget(why) => (ProxyError::BadRequest(why), false),
        })?;
    let host = match host {
        UdpHost::Ip(ip) => Host::Ip(ip),
        UdpHost::Name(n) => Host::parse(&n).map_err(|_| {
            (
                ProxyError::BadRequest("target_host is not a valid host name"),
                false,
            )
        })?,
    };
    Ok(Plan {
        target: Target { host, port },
    })
}

/// Policy, DNS, then a connected UDP socket to the first address that takes it.
pub async fn open(shared: &Shared, plan: Plan) -> Result<Flow, Failure> {
    let config = shared.config();
    let auth = shared
        .dialer
        .authorize(&config.policy, Protocol::ConnectUdp, &plan.target)
        .await
        .map_err(dial_failure)?;
    let mut last_err = None;
    for ip in crate::upstream::dial::interleave_ips(&auth.addrs) {
        let peer = SocketAddr::new(ip, plan.target.port);
        let bind: SocketAddr = if ip.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = match UdpSocket::bind(bind).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a UDP socket");
                return Err((
                    ProxyError::Internal("cannot create a UDP socket"),
                    Some(auth.decision),
                ));
            }
        };
        match socket.connect(peer).await {
            Ok(()) => {
                return Ok(Flow {
                    socket,
                    peer,
                    decision: auth.decision,
                    target: plan.target,
                })
            }
            Err(e) => last_err = Some(e),
        }
    }
    let err = match last_err {
        Some(e)
            if e.kind() == io::ErrorKind::NetworkUnreachable
                || e.kind() == io::ErrorKind::HostUnreachable =>
        {
            crate::upstream::dial::DialError::Unreachable
        }
        Some(e) => crate::upstream::dial::DialError::Io(e),
        None => crate::upstream::dial::DialError::Unreachable,
    };
    Err((ProxyError::Dial(err), Some(auth.decision)))
}

/// The success response head: 200 with `capsule-protocol: ?1` (HTTP/2, HTTP/3).
pub fn ok_response() -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert("capsule-protocol", HeaderValue::from_static("?1"));
    r
}

// === the relay ===

/// The HTTP/3 side of a flow: QUIC datagrams routed to this request.
pub struct H3Side<'a> {
    pub conn: &'a quinn::Connection,
    pub stream_id: u64,
    pub rx: mpsc::Receiver<Bytes>,
    /// The connection's view of the client's SETTINGS.
    pub peer: Arc<h3::SharedState>,
}

impl H3Side<'_> {
    /// RFC 9297 §2.1.1 / RFC 9221: QUIC DATAGRAM frames only once the client
    /// has sent SETTINGS_H3_DATAGRAM = 1 and a non-zero max_datagram_frame_size.
    /// Until then (or never) replies go as capsules on the stream.
    fn datagrams_ready(&self) -> bool {
        use h3::ConnectionState;
        self.peer.settings().enable_datagram() && self.conn.max_datagram_size().is_some()
    }
}

/// Per-flow counters, looked up once.
struct FlowMetrics {
    up_datagrams: IntCounter,
    down_datagrams: IntCounter,
    up_bytes: IntCounter,
    down_bytes: IntCounter,
    drop_unknown_context: IntCounter,
    drop_too_large: IntCounter,
    drop_send_failed: IntCounter,
}

impl FlowMetrics {
    fn new(m: &Metrics) -> FlowMetrics {
        let kind = "connect-udp";
        FlowMetrics {
            up_datagrams: m.udp_datagrams.with_label_values(&["upstream"]),
            down_datagrams: m.udp_datagrams.with_label_values(&["downstream"]),
            up_bytes: m.tunnel_bytes.with_label_values(&[kind, "upstream"]),
            down_bytes: m.tunnel_bytes.with_label_values(&[kind, "downstream"]),
            drop_unknown_context: m.udp_drops.with_label_values(&["unknown_context"]),
            drop_too_large: m.udp_drops.with_label_values(&["too_large"]),
            drop_send_failed: m.udp_drops.with_label_values(&["send_failed"]),
        }
    }
}

/// How the flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEnd {
    /// The client ended the request stream.
    Closed,
    Idle,
    /// A malformed capsule (or a stream error).
    Malformed,
    Reset,
    /// The proxy is shutting down and the grace period is over.
    Aborted,
}

impl FlowEnd {
    fn as_str(self) -> &'static str {
        match self {
            FlowEnd::Closed => "closed",
            FlowEnd::Idle => "idle_timeout",
            FlowEnd::Malformed => "malformed_capsule",
            FlowEnd::Reset => "reset",
            FlowEnd::Aborted => "shutdown",
        }
    }
}

/// Relay a flow whose client side is a capsule stream (`io`) and, for HTTP/3,
/// also QUIC datagrams. Returns the end reason; counts and logs.
pub async fn relay<IO>(
    shared: &Shared,
    ex: &Exchange,
    flow: Flow,
    io: IO,
    h3: Option<H3Side<'_>>,
) -> FlowEnd
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let fm = FlowMetrics::new(&shared.metrics);
    let gauge = shared
        .metrics
        .tunnels_active
        .with_label_values(&["connect-udp"]);
    gauge.inc();
    let idle = shared.config().connect_udp.idle_timeout;
    let (mut rd, mut wr) = tokio::io::split(io);
    let (h3, mut quic_rx) = match h3 {
        Some(mut h) => {
            let (_, dummy) = mpsc::channel(1);
            let rx = std::mem::replace(&mut h.rx, dummy);
            (Some(h), Some(rx))
        }
        None => (None, None),
    };
    let socket = &flow.socket;
    let mut decoder = CapsuleDecoder::new(MAX_UDP_PAYLOAD);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    // Reply buffer: capsule header room in front, then the payload.
    let mut reply = vec![0u8; capsule::DATAGRAM_CAPSULE_HEADER_MAX + MAX_UDP_PAYLOAD];
    let mut quic_out = BytesMut::new();
    let (mut up_total, mut down_total) = (0u64, 0u64);
    // One idle timer per flow, re-armed only when it fires early.
    let mut last_activity = Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let mut quic_ready = false;
    let abort = shared.aborted();
    tokio::pin!(abort);

    let end = loop {
        // Decided per reply: the client's SETTINGS may arrive after its request.
        // Decided per reply until true: the client's SETTINGS may arrive
        // after its request.
        if !quic_ready {
            quic_ready = h3.as_ref().is_some_and(|h| h.datagrams_ready());
        }
        let quic = if quic_ready {
            h3.as_ref().map(|h| (h.conn, h.stream_id))
        } else {
            None
        };
        tokio::select! {
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) => {
                    break if decoder.finish(&rbuf).is_ok() { FlowEnd::Closed } else { FlowEnd::Malformed };
                }
                Ok(_) => {
                    last_activity = Instant::now();
                    let mut failed = false;
                    loop {
                        match decoder.decode(&mut rbuf) {
                            Ok(Some(Event::Datagram { context_id: 0, payload })) => {
                                up_total += payload.len() as u64;
                                forward_up(socket, &payload, &fm).await;
                            }
                            Ok(Some(Event::Datagram { .. })) => fm.drop_unknown_context.inc(),
                            Ok(Some(Event::OversizeDatagram { .. })) => fm.drop_too_large.inc(),
                            Ok(Some(Event::Skipped { .. })) => {}
                            Ok(None) => break,
                            Err(_) => {
                                failed = true;
                                break;
                            }
                        }
                    }
                    if failed {
                        break FlowEnd::Malformed;
                    }
                    if rbuf.capacity() - rbuf.len() < 1024 {
                        rbuf.reserve(READ_CHUNK);
                    }
                }
                Err(_) => break FlowEnd::Reset,
            },
            d = recv_opt(&mut quic_rx) => match d {
                Some(data) => {
                    last_activity = Instant::now();
                    // RFC 9298 §5: Context ID 0 carries UDP payloads; others are dropped.
                    match varint::decode(&data) {
                        Ok((0, n)) => {
                            let payload = data.slice(n..);
                            up_total += payload.len() as u64;
                            forward_up(socket, &payload, &fm).await;
                        }
                        _ => fm.drop_unknown_context.inc(),
                    }
                }
                None => quic_rx = None,
            },
            r = recv_reply(socket, quic.map(|q| q.1), &mut reply, &mut quic_out) => match r {
                Ok(n) => {
                    last_activity = Instant::now();
                    let sent = match quic {
                        Some((conn, _)) => send_quic(conn, &mut quic_out, &fm),
                        None => send_capsule(&mut wr, &mut reply, n, &fm).await,
                    };
                    match sent {
                        Ok(true) => {
                            fm.down_datagrams.inc();
                            fm.down_bytes.inc_by(n as u64);
                            down_total += n as u64;
                        }
                        Ok(false) => {}
                        Err(()) => break FlowEnd::Reset,
                    }
                }
                // ICMP errors on a connected socket (port unreachable…): keep going.
                Err(_) => fm.drop_send_failed.inc(),
            },
            _ = &mut idle_timer => {
                let due = last_activity + idle;
                if Instant::now() >= due {
                    break FlowEnd::Idle;
                }
                idle_timer.as_mut().reset(due);
            }
            _ = &mut abort => break FlowEnd::Aborted,
        }
    };
    gauge.dec();
    if end == FlowEnd::Closed {
        let _ = wr.shutdown().await;
    }
    ex.log(
        Some(&flow.decision),
        200,
        end.as_str(),
        up_total,
        down_total,
    );
    end
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn forward_up(socket: &UdpSocket, payload: &[u8], fm: &FlowMetrics) {
    match socket.send(payload).await {
        Ok(_) => {
            fm.up_datagrams.inc();
            fm.up_bytes.inc_by(payload.len() as u64);
        }
        Err(e) => {
            // EMSGSIZE (Linux errno 90): larger than the path to the target allows.
            if e.raw_os_error() == Some(90) {
                fm.drop_too_large.inc();
            } else {
                fm.drop_send_failed.inc();
            }
        }
    }
}

/// Receive one reply from the target into the buffer its downlink needs:
/// `quic_out` behind an HTTP/3 datagram header when `quic_stream` is set,
/// else `reply` behind room for a capsule header.
async fn recv_reply(
    socket: &UdpSocket,
    quic_stream: Option<u64>,
    reply: &mut [u8],
    quic_out: &mut BytesMut,
) -> io::Result<usize> {
    match quic_stream {
        Some(stream_id) => {
            if quic_out.is_empty() {
                // Datagrams are carved out of a slab: one allocation per
                // slab, not per datagram; quinn frees each slab once it has
                // sent every datagram cut from it.
                if quic_out.capacity() < QUIC_HEADROOM + MAX_UDP_PAYLOAD {
                    *quic_out = BytesMut::with_capacity(QUIC_SLAB);
                }
                datagram::encode_h3_datagram_header(stream_id, 0, quic_out)
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
            let head = quic_out.len();
            let n = socket.recv_buf(quic_out).await?;
            debug_assert_eq!(quic_out.len(), head + n);
            Ok(n)
        }
        None => {
            let room = capsule::DATAGRAM_CAPSULE_HEADER_MAX;
            let buf = reply.get_mut(room..).unwrap_or_default();
            socket.recv(buf).await
        }
    }
}

/// Send the prepared datagram. `Ok(false)`: dropped (counted); `Err`: the
/// connection is gone.
fn send_quic(conn: &quinn::Connection, out: &mut BytesMut, fm: &FlowMetrics) -> Result<bool, ()> {
    let dgram = out.split().freeze();
    match conn.send_datagram(dgram) {
        Ok(()) => Ok(true),
        // RFC 9297 §3.5: too big for a QUIC DATAGRAM → drop, not re-encode.
        Err(quinn::SendDatagramError::TooLarge) => {
            fm.drop_too_large.inc();
            Ok(false)
        }
        Err(quinn::SendDatagramError::ConnectionLost(_)) => Err(()),
        Err(_) => {
            fm.drop_send_failed.inc();
            Ok(false)
        }
    }
}

/// Write one DATAGRAM capsule (header in the room before the payload).
async fn send_capsule<W: AsyncWrite + Unpin>(
    wr: &mut W,
    reply: &mut [u8],
    n: usize,
    fm: &FlowMetrics,
) -> Result<bool, ()> {
    let room = capsule::DATAGRAM_CAPSULE_HEADER_MAX;
    let header = match capsule::datagram_capsule_header(0, n) {
        Ok(h) => h,
        Err(_) => {
            fm.drop_too_large.inc();
            return Ok(false);
        }
    };
    let h = header.as_bytes();
    let start = room - h.len();
    let frame = match reply.get_mut(start..room + n) {
        Some(f) => f,
        None => return Ok(false),
    };
    frame[..h.len()].copy_from_slice(h);
    wr.write_all(frame).await.map_err(|_| ())?;
    wr.flush().await.map_err(|_| ())?;
    Ok(true)
}

// === QUIC datagram routing ===

/// Routes received QUIC DATAGRAM frames of one connection to the flow of the
/// request stream named by their Quarter Stream ID.
#[derive(Clone)]
pub struct QuicDatagrams {
    register: mpsc::UnboundedSender<(u64, mpsc::Sender<Bytes>)>,
}

impl QuicDatagrams {
    pub fn spawn(conn: quinn::Connection, metrics: Arc<Metrics>) -> QuicDatagrams {
        let (register, mut reg_rx) = mpsc::unbounded_channel::<(u64, mpsc::Sender<Bytes>)>();
        tokio::spawn(async move {
            let mut flows: HashMap<u64, mpsc::Sender<Bytes>> = HashMap::new();
            let unknown = metrics.udp_drops.with_label_values(&["unknown_stream"]);
            let full = metrics.udp_drops.with_label_values(&["queue_full"]);
            loop {
                tokio::select! {
                    d = conn.read_datagram() => {
                        let Ok(data) = d else { break };
                        match datagram::decode_quarter_stream_id(&data) {
                            Ok((stream_id, payload)) => match flows.get(&stream_id) {
                                Some(tx) => match tx.try_send(payload) {
                                    Ok(()) => {}
                                    Err(mpsc::error::TrySendError::Full(_)) => full.inc(),
                                    Err(mpsc::error::TrySendError::Closed(_)) => {
                                        flows.remove(&stream_id);
                                        unknown.inc();
                                    }
                                },
                                // RFC 9297 §2.1: a stream not (or no longer) open → drop.
                                None => unknown.inc(),
                            },
                            Err(e) => {
                                // RFC 9297 §2.1: too short for a Quarter Stream ID, or
                                // beyond 2^60-1 → connection error H3_DATAGRAM_ERROR.
                                tracing::debug!(error = %e, "malformed HTTP/3 datagram; closing the connection");
                                metrics.udp_drops.with_label_values(&["malformed"]).inc();
                                conn.close(H3_DATAGRAM_ERROR.into(), b"malformed HTTP/3 datagram");
                                break;
                            }
                        }
                    }
                    r = reg_rx.recv() => match r {
                        Some((id, tx)) => { flows.insert(id, tx); }
                        None => break,
                    },
                }
            }
        });
        QuicDatagrams { register }
    }

    /// Start routing datagrams of `stream_id` to the returned receiver.
    pub fn register(&self, stream_id: u64) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        let _ = self.register.send((stream_id, tx));
        rx
    }
}

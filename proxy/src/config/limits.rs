//! `[limits]`: timeouts, pools and connection caps (the per-client limits
//! are in `client_limits`).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::client_limits;
use super::{ConfigError, Source};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsSection {
    connect_timeout_ms: Option<Spanned<u64>>,
    dns_timeout_ms: Option<Spanned<u64>>,
    idle_timeout_s: Option<Spanned<u64>>,
    upstream_idle_timeout_s: Option<Spanned<u64>>,
    response_timeout_s: Option<Spanned<u64>>,
    max_upstream_idle_per_host: Option<Spanned<u64>>,
    shutdown_grace_s: Option<Spanned<u64>>,
    drain_delay_s: Option<Spanned<u64>>,
    client_idle_timeout_s: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    max_connections_per_client: Option<Spanned<u64>>,
    h2_max_concurrent_streams: Option<Spanned<u64>>,
    connection_buffer_bytes: Option<Spanned<u64>>,
    max_header_list_size: Option<Spanned<u64>>,
    max_headers: Option<Spanned<u64>>,
    max_uri_bytes: Option<Spanned<u64>>,
    header_read_timeout_s: Option<Spanned<u64>>,
    handshake_timeout_s: Option<Spanned<u64>>,
    h3_max_concurrent_streams: Option<Spanned<u64>>,
    h2_control_frames_per_s: Option<Spanned<u64>>,
    h2_control_frames_burst: Option<Spanned<u64>>,
    max_tunnels: Option<Spanned<u64>>,
    max_udp_flows: Option<Spanned<u64>>,
    max_udp_flows_per_connection: Option<Spanned<u64>>,
    memory_watermark_mib: Option<Spanned<u64>>,
    quic_retry_after_handshakes: Option<Spanned<u64>>,
    quic_max_handshakes: Option<Spanned<u64>>,
    pub(super) per_identity: Option<Spanned<client_limits::IdentityLimitsSection>>,
    #[serde(default)]
    pub(super) per_group:
        std::collections::BTreeMap<String, Spanned<client_limits::IdentityLimitsSection>>,
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub dns_timeout: Duration,
    /// A tunnel with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    /// A forwarded or reverse-proxied request whose response head has not
    /// arrived this long after it was sent is answered 504.
    pub response_timeout: Duration,
    pub max_upstream_idle_per_host: usize,
    pub shutdown_grace: Duration,
    /// After SIGTERM, `/readyz` answers 503 at once but the listeners keep
    /// accepting this long (load balancers take the pod out first).
    pub drain_delay: Duration,
    /// A client connection carrying no request (and no tunnel) this long is
    /// closed; also the QUIC idle timeout.
    pub client_idle_timeout: Duration,
    /// Client connections at once, all listeners (TCP and QUIC) together.
    pub max_connections: usize,
    /// Client connections at once from one source address.
    pub max_connections_per_client: usize,
    /// HTTP/2 streams at once per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub h2_max_concurrent_streams: u32,
    /// Per-connection budget for buffered data (HTTP/2 and HTTP/3): half
    /// for what the client sent and we have not relayed yet (our receive
    /// windows), half for what waits to be sent to it; see
    /// [`Limits::receive_window`] and [`Limits::h2_stream_send_buffer`].
    pub connection_buffer_bytes: u32,
    /// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE: a larger request header
    /// section is refused.
    pub max_header_list_size: u32,
    /// Header fields in one request, every front (431).
    pub max_headers: usize,
    /// Bytes of a request target (`:path` or the absolute URI), every
    /// front (414).
    pub max_uri_bytes: usize,
    /// HTTP/1.1: the request header section must arrive within this.
    pub header_read_timeout: Duration,
    /// TLS (TCP) and QUIC handshakes must complete within this.
    pub handshake_timeout: Duration,
    /// HTTP/3 request streams at once per connection.
    pub h3_max_concurrent_streams: u32,
    /// HTTP/2 control frames (PING, SETTINGS, PRIORITY, empty frames) a
    /// client may send per second on one connection, on average …
    pub h2_control_frames_per_s: u32,
    /// … and at once.
    pub h2_control_frames_burst: u32,
    /// Tunnels (CONNECT and CONNECT-UDP) at once, process-wide.
    pub max_tunnels: usize,
    /// CONNECT-UDP flows at once, process-wide (each holds a UDP socket).
    pub max_udp_flows: usize,
    /// CONNECT-UDP flows at once on one HTTP/2 or HTTP/3 connection.
    pub max_udp_flows_per_connection: usize,
    /// Resident memory (bytes) above which new work is shed; `None`: 90% of
    /// the cgroup memory limit, if any (`core::overload`).
    pub memory_watermark: Option<u64>,
    /// QUIC handshakes in progress on one listener (accepted, not yet
    /// established) from which a client whose address is not validated gets
    /// a Retry (RFC 9000 §8.1.2) instead of a handshake; 0: always.
    pub quic_retry_after_handshakes: usize,
    /// QUIC handshakes in progress on one listener beyond which a new
    /// connection attempt is dropped unanswered.
    pub quic_max_handshakes: usize,
}

/// The least send buffer an HTTP/2 stream gets, whatever the budget.
pub const MIN_STREAM_SEND_BUFFER: usize = 4 * 1024;
/// Bounds of `connection_buffer_bytes`.
const BUFFER_RANGE: std::ops::RangeInclusive<u64> = 64 * 1024..=1 << 30;

impl Limits {
    /// The receive windows (HTTP/2 connection and stream, QUIC connection
    /// and stream): half the connection budget.
    pub fn receive_window(&self) -> u32 {
        self.connection_buffer_bytes / 2
    }

    /// What may wait to be sent on one connection (QUIC's send window).
    pub fn send_budget(&self) -> u32 {
        self.connection_buffer_bytes - self.receive_window()
    }

    /// hyper/h2's `max_send_buf_size`: the send half of the budget shared by
    /// the concurrent streams (h2 reserves it per stream, whatever window
    /// the client grants), at least [`MIN_STREAM_SEND_BUFFER`].
    pub fn h2_stream_send_buffer(&self) -> usize {
        let streams = self.h2_max_concurrent_streams.max(1) as usize;
        (self.send_budget() as usize / streams).max(MIN_STREAM_SEND_BUFFER)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(10),
            dns_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            upstream_idle_timeout: Duration::from_secs(90),
            response_timeout: Duration::from_secs(60),
            max_upstream_idle_per_host: 32,
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            client_idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_client: 512,
            h2_max_concurrent_streams: 128,
            connection_buffer_bytes: 4 << 20,
            max_header_list_size: 16 << 10,
            max_headers: 100,
            max_uri_bytes: 8 << 10,
            header_read_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            h3_max_concurrent_streams: 128,
            h2_control_frames_per_s: 100,
            h2_control_frames_burst: 1000,
            max_tunnels: 10_000,
            max_udp_flows: 4_096,
            max_udp_flows_per_connection: 128,
            memory_watermark: None,
            quic_retry_after_handshakes: 64,
            quic_max_handshakes: 1024,
        }
    }
}

pub(super) fn compile_limits(l: &LimitsSection, src: &Source<'_>) -> Result<Limits, ConfigError> {
    let mut out = Limits::default();
    let ms = |v: &Option<Spanned<u64>>, key: &str, dst: &mut Duration| -> Result<(), ConfigError> {
        if let Some(v) = v {
            if *v.get_ref() == 0 {
                return Err(src.err(v.span(), key, "must be greater than 0"));
            }
            *dst = Duration::from_millis(*v.get_ref());
        }
        Ok(())
    };
    ms(
        &l.connect_timeout_ms,
        "limits.connect_timeout_ms",
        &mut out.connect_timeout,
    )?;
    ms(
        &l.dns_timeout_ms,
        "limits.dns_timeout_ms",
        &mut out.dns_timeout,
    )?;
    let secs =
        |v: &Option<Spanned<u64>>, key: &str, dst: &mut Duration| -> Result<(), ConfigError> {
            if let Some(v) = v {
                if *v.get_ref() == 0 {
                    return Err(src.err(v.span(), key, "must be greater than 0"));
                }
                *dst = Duration::from_secs(*v.get_ref());
            }
            Ok(())
        };
    secs(
        &l.idle_timeout_s,
        "limits.idle_timeout_s",
        &mut out.idle_timeout,
    )?;
    secs(
        &l.upstream_idle_timeout_s,
        "limits.upstream_idle_timeout_s",
        &mut out.upstream_idle_timeout,
    )?;
    secs(
        &l.response_timeout_s,
        "limits.response_timeout_s",
        &mut out.response_timeout,
    )?;
    secs(
        &l.shutdown_grace_s,
        "limits.shutdown_grace_s",
        &mut out.shutdown_grace,
    )?;
    // 0 is allowed: stop accepting at once (no load balancer in front).
    if let Some(v) = &l.drain_delay_s {
        out.drain_delay = Duration::from_secs(*v.get_ref());
    }
    secs(
        &l.client_idle_timeout_s,
        "limits.client_idle_timeout_s",
        &mut out.client_idle_timeout,
    )?;
    if let Some(v) = &l.max_upstream_idle_per_host {
        out.max_upstream_idle_per_host = usize::try_from(*v.get_ref()).unwrap_or(usize::MAX);
    }
    let count = |v: &Option<Spanned<u64>>, key: &str, dst: &mut usize| -> Result<(), ConfigError> {
        if let Some(v) = v {
            if *v.get_ref() == 0 {
                return Err(src.err(v.span(), key, "must be greater than 0"));
            }
            *dst = usize::try_from(*v.get_ref()).unwrap_or(usize::MAX);
        }
        Ok(())
    };
    count(
        &l.max_connections,
        "limits.max_connections",
        &mut out.max_connections,
    )?;
    count(
        &l.max_connections_per_client,
        "limits.max_connections_per_client",
        &mut out.max_connections_per_client,
    )?;
    let count32 = |v: &Option<Spanned<u64>>, key: &str, dst: &mut u32| -> Result<(), ConfigError> {
        if let Some(v) = v {
            let n = *v.get_ref();
            if n == 0 {
                return Err(src.err(v.span(), key, "must be greater than 0"));
            }
            *dst = u32::try_from(n)
                .ok()
                .filter(|n| *n <= i32::MAX as u32)
                .ok_or_else(|| src.err(v.span(), key, "must be at most 2147483647"))?;
        }
        Ok(())
    };
    count32(
        &l.h2_max_concurrent_streams,
        "limits.h2_max_concurrent_streams",
        &mut out.h2_max_concurrent_streams,
    )?;
    count32(
        &l.max_header_list_size,
        "limits.max_header_list_size",
        &mut out.max_header_list_size,
    )?;
    count32(
        &l.h3_max_concurrent_streams,
        "limits.h3_max_concurrent_streams",
        &mut out.h3_max_concurrent_streams,
    )?;
    count(&l.max_headers, "limits.max_headers", &mut out.max_headers)?;
    count(
        &l.max_uri_bytes,
        "limits.max_uri_bytes",
        &mut out.max_uri_bytes,
    )?;
    secs(
        &l.header_read_timeout_s,
        "limits.header_read_timeout_s",
        &mut out.header_read_timeout,
    )?;
    secs(
        &l.handshake_timeout_s,
        "limits.handshake_timeout_s",
        &mut out.handshake_timeout,
    )?;
    count32(
        &l.h2_control_frames_per_s,
        "limits.h2_control_frames_per_s",
        &mut out.h2_control_frames_per_s,
    )?;
    count32(
        &l.h2_control_frames_burst,
        "limits.h2_control_frames_burst",
        &mut out.h2_control_frames_burst,
    )?;
    if let Some(v) = &l.connection_buffer_bytes {
        let n = *v.get_ref();
        if !BUFFER_RANGE.contains(&n) {
            let why = format!(
                "must be between {} and {}",
                BUFFER_RANGE.start(),
                BUFFER_RANGE.end()
            );
            return Err(src.err(v.span(), "limits.connection_buffer_bytes", why));
        }
        out.connection_buffer_bytes = u32::try_from(n).unwrap_or(u32::MAX);
    }
    count(&l.max_tunnels, "limits.max_tunnels", &mut out.max_tunnels)?;
    count(
        &l.max_udp_flows,
        "limits.max_udp_flows",
        &mut out.max_udp_flows,
    )?;
    count(
        &l.max_udp_flows_per_connection,
        "limits.max_udp_flows_per_connection",
        &mut out.max_udp_flows_per_connection,
    )?;
    if let Some(v) = &l.memory_watermark_mib {
        if *v.get_ref() == 0 {
            return Err(src.err(
                v.span(),
                "limits.memory_watermark_mib",
                "must be greater than 0",
            ));
        }
        out.memory_watermark = Some(v.get_ref().saturating_mul(1024 * 1024));
    }
    count(
        &l.quic_max_handshakes,
        "limits.quic_max_handshakes",
        &mut out.quic_max_handshakes,
    )?;
    // 0 is allowed: Retry for every client whose address is not validated.
    if let Some(v) = &l.quic_retry_after_handshakes {
        let n = usize::try_from(*v.get_ref()).unwrap_or(usize::MAX);
        if n > out.quic_max_handshakes {
            return Err(src.err(
                v.span(),
                "limits.quic_retry_after_handshakes",
                format!(
                    "must not be greater than limits.quic_max_handshakes ({})",
                    out.quic_max_handshakes
                ),
            ));
        }
        out.quic_retry_after_handshakes = n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};
    use super::*;

    fn limits(section: &str) -> Result<Limits, ConfigError> {
        let text = format!(
            "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n[limits]\n{section}"
        );
        Config::parse(&text, "test.toml", std::path::Path::new(".")).map(|c| c.limits)
    }

    #[test]
    fn quic_handshake_limits_default_and_validate() {
        let d = limits("").expect("defaults");
        assert_eq!(d.quic_retry_after_handshakes, 64);
        assert_eq!(d.quic_max_handshakes, 1024);
        let l = limits("quic_retry_after_handshakes = 0\nquic_max_handshakes = 10\n")
            .expect("0 means always Retry");
        assert_eq!(l.quic_retry_after_handshakes, 0);
        assert_eq!(l.quic_max_handshakes, 10);
        let l = limits("quic_retry_after_handshakes = 10\nquic_max_handshakes = 10\n")
            .expect("equal: Retry never");
        assert_eq!(l.quic_retry_after_handshakes, 10);
        let e = limits("quic_max_handshakes = 0\n").expect_err("0 handshakes");
        assert_eq!(e.key, "limits.quic_max_handshakes");
        let e = limits("quic_retry_after_handshakes = 11\nquic_max_handshakes = 10\n")
            .expect_err("above the hard cap");
        assert_eq!(e.key, "limits.quic_retry_after_handshakes");
        assert!(e.message.contains("quic_max_handshakes"), "{e}");
        let e = limits("quic_retry_after_handshakes = 2000\n").expect_err("above the default cap");
        assert_eq!(e.key, "limits.quic_retry_after_handshakes");
    }

    #[test]
    fn http2_budget_defaults_and_derived_sizes() {
        let l = limits("").expect("defaults");
        assert_eq!(l.h2_max_concurrent_streams, 128);
        assert_eq!(l.connection_buffer_bytes, 4 << 20);
        assert_eq!(l.receive_window(), 2 << 20);
        assert_eq!(l.send_budget(), 2 << 20);
        // 2 MiB shared by 128 streams.
        assert_eq!(l.h2_stream_send_buffer(), 16 << 10);
        let l = limits("connection_buffer_bytes = 65536\nh2_max_concurrent_streams = 1000")
            .expect("valid");
        assert_eq!(l.h2_stream_send_buffer(), MIN_STREAM_SEND_BUFFER);
        assert_eq!(l.receive_window(), 32 << 10);
    }

    #[test]
    fn http2_keys_refuse_zero_and_out_of_range_with_file_and_line() {
        for (text, key) in [
            (
                "h2_max_concurrent_streams = 0",
                "limits.h2_max_concurrent_streams",
            ),
            (
                "connection_buffer_bytes = 0",
                "limits.connection_buffer_bytes",
            ),
            (
                "connection_buffer_bytes = 1024",
                "limits.connection_buffer_bytes",
            ),
            (
                "connection_buffer_bytes = 2147483648",
                "limits.connection_buffer_bytes",
            ),
            ("max_header_list_size = 0", "limits.max_header_list_size"),
            (
                "h2_control_frames_per_s = 0",
                "limits.h2_control_frames_per_s",
            ),
            (
                "h2_control_frames_burst = 0",
                "limits.h2_control_frames_burst",
            ),
            (
                "h2_max_concurrent_streams = 4294967296",
                "limits.h2_max_concurrent_streams",
            ),
        ] {
            let e = limits(&format!("\n{text}")).expect_err(text);
            assert_eq!(e.key, key, "{text}");
            assert_eq!(e.line, Some(8), "{text}");
        }
    }
}

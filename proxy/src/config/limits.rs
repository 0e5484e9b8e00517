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
}

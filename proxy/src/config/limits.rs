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
    client_idle_timeout_s: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    max_connections_per_client: Option<Spanned<u64>>,
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
    /// A client connection carrying no request (and no tunnel) this long is
    /// closed; also the QUIC idle timeout.
    pub client_idle_timeout: Duration,
    /// Client connections at once, all listeners (TCP and QUIC) together.
    pub max_connections: usize,
    /// Client connections at once from one source address.
    pub max_connections_per_client: usize,
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
            client_idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_client: 512,
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
    Ok(out)
}

//! `[gateway]`: a parent Bauta this one chains to (sidecar mode). Every
//! tunnel, UDP flow and forwarded request goes to the gateway over a few
//! multiplexed connections instead of being dialled here.
//!
//! ```toml
//! [gateway]
//! url = "https://egress.corp.svc:8443"
//! protocols = ["h3", "h2"]      # HTTP/3 first, HTTP/2 when UDP is blocked
//! ca = "gateway-ca.pem"         # trust anchors for the gateway's certificate
//! client_cert = "pod.pem"       # mTLS: the identity the gateway's policy sees
//! client_key = "pod.key"
//! connections = 1               # kept open; more only for throughput
//! max_connections = 4           # opened when every connection is full of streams
//! max_streams_per_connection = 100
//! connect_timeout_ms = 5000
//! keepalive_s = 3              # a dead gateway is noticed within 3x this
//! udp_template = "/.well-known/masque/udp/{target_host}/{target_port}/"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source, DEFAULT_UDP_TEMPLATE};
use crate::tls;
use crate::wire::target::Target;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GatewaySection {
    url: Option<Spanned<String>>,
    protocols: Option<Spanned<Vec<String>>>,
    ca: Option<Spanned<String>>,
    client_cert: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
    connections: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    max_streams_per_connection: Option<Spanned<u64>>,
    connect_timeout_ms: Option<Spanned<u64>>,
    keepalive_s: Option<Spanned<u64>>,
    udp_template: Option<Spanned<String>>,
    origin_ca: Option<Spanned<String>>,
}

/// One `[[originate]]`: an origin whose `http://` requests are sent as
/// `https://` through the gateway once it has proven the origin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OriginateSection {
    host: Spanned<String>,
    port: Option<Spanned<u16>>,
}

/// The protocols a gateway connection may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GatewayProtocol {
    H3,
    H2,
}

impl GatewayProtocol {
    /// The config spelling, also the metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            GatewayProtocol::H3 => "h3",
            GatewayProtocol::H2 => "h2",
        }
    }
}

/// The compiled `[gateway]`.
#[derive(Clone)]
pub struct GatewaySpec {
    /// As written (for logs and `next-hop`).
    pub url: Arc<str>,
    /// Host and port to connect to.
    pub target: Target,
    pub server_name: ServerName<'static>,
    pub protocols: Vec<GatewayProtocol>,
    /// TLS 1.3 with ALPN `h2`, the gateway's trust anchors and our client
    /// certificate, if any.
    pub tls_h2: Arc<rustls::ClientConfig>,
    /// The same for QUIC: ALPN `h3`, SHA-256 suites only (the exporter
    /// needs the hash, which quinn does not report).
    pub tls_h3: Arc<rustls::ClientConfig>,
    pub connections: usize,
    pub max_connections: usize,
    pub max_streams_per_connection: usize,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
    /// The path template of the gateway's CONNECT-UDP resource.
    pub udp_template: Arc<str>,
    /// `[[originate]]`: origins to upgrade to `https://` once proven.
    pub originate: Arc<[Target]>,
    /// Checks a secondary certificate for an originated origin (chain to
    /// `origin_ca`, else `ca`; validity; name).
    pub origin_verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    /// `[secondary_certs]` codepoints, for our setting and the frames.
    pub codepoints: crate::seccert::negotiation::Codepoints,
    /// Files read for this section (watched for reload).
    pub files: Vec<PathBuf>,
    /// What makes two specs the same gateway: the settings and the bytes of
    /// every file. A reload that keeps it keeps the open connections.
    pub fingerprint: Vec<u8>,
}

impl std::fmt::Debug for GatewaySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySpec")
            .field("url", &self.url)
            .field("protocols", &self.protocols)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl PartialEq for GatewaySpec {
    fn eq(&self, other: &GatewaySpec) -> bool {
        self.fingerprint == other.fingerprint
    }
}

pub(super) fn compile_gateway(
    g: Option<&GatewaySection>,
    originate: &[OriginateSection],
    codepoints: crate::seccert::negotiation::Codepoints,
    src: &Source<'_>,
    base: &Path,
) -> Result<Option<GatewaySpec>, ConfigError> {
    let Some(g) = g else {
        if let Some(o) = originate.first() {
            return Err(src.err(
                o.host.span(),
                "originate",
                "needs a [gateway]: origination goes through the gateway only",
            ));
        }
        return Ok(None);
    };
    let Some(url) = &g.url else {
        return Err(ConfigError {
            file: src.name.clone(),
            line: None,
            key: "gateway.url".into(),
            message: "is required (\"https://host:port\")".into(),
        });
    };
    let target = parse_url(url.get_ref()).map_err(|m| src.err(url.span(), "gateway.url", m))?;
    let server_name =
        tls::server_name(&target.host).map_err(|m| src.err(url.span(), "gateway.url", m))?;
    let protocols = match &g.protocols {
        None => vec![GatewayProtocol::H3, GatewayProtocol::H2],
        Some(p) => {
            let mut out = Vec::new();
            for name in p.get_ref() {
                let proto = match name.as_str() {
                    "h3" => GatewayProtocol::H3,
                    "h2" => GatewayProtocol::H2,
                    other => {
                        return Err(src.err(
                            p.span(),
                            "gateway.protocols",
                            format!("unknown protocol {other:?} (supported: \"h3\", \"h2\")"),
                        ))
                    }
                };
                if !out.contains(&proto) {
                    out.push(proto);
                }
            }
            if out.is_empty() {
                return Err(src.err(p.span(), "gateway.protocols", "must not be empty"));
            }
            out
        }
    };
    let mut fingerprint = Vec::new();
    let mut files = Vec::new();
    let mut read = |path: &Spanned<String>, key: &str| -> Result<PathBuf, ConfigError> {
        let p = src.path(base, path.get_ref());
        let bytes = std::fs::read(&p)
            .map_err(|e| src.err(path.span(), key, format!("{}: {e}", p.display())))?;
        fingerprint.extend_from_slice(key.as_bytes());
        fingerprint.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        fingerprint.extend_from_slice(&bytes);
        files.push(p.clone());
        Ok(p)
    };
    let ca = match &g.ca {
        Some(ca) => Some((read(ca, "gateway.ca")?, ca.span())),
        None => None,
    };
    let client = match (&g.client_cert, &g.client_key) {
        (Some(c), Some(k)) => {
            let cert = read(c, "gateway.client_cert")?;
            let key = read(k, "gateway.client_key")?;
            let chain =
                tls::load_certs(&cert).map_err(|m| src.err(c.span(), "gateway.client_cert", m))?;
            let key_der =
                tls::load_key(&key).map_err(|m| src.err(k.span(), "gateway.client_key", m))?;
            tls::secret_file::warn_if_exposed(&key, "gateway.client_key");
            Some((chain, key_der, c.span()))
        }
        (None, None) => None,
        (Some(c), None) => {
            return Err(src.err(
                c.span(),
                "gateway.client_key",
                "is required with client_cert",
            ))
        }
        (None, Some(k)) => {
            return Err(src.err(
                k.span(),
                "gateway.client_cert",
                "is required with client_key",
            ))
        }
    };
    let origin_ca = match &g.origin_ca {
        Some(p) => Some((read(p, "gateway.origin_ca")?, p.span())),
        None => None,
    };
    let roots = match &ca {
        Some((p, span)) => {
            tls::root_store(Some(p)).map_err(|m| src.err(span.clone(), "gateway.ca", m))?
        }
        None => tls::root_store(None).map_err(|m| ConfigError {
            file: src.name.clone(),
            line: None,
            key: "gateway.ca".into(),
            message: m,
        })?,
    };
    let origin_roots = match &origin_ca {
        Some((p, span)) => {
            tls::root_store(Some(p)).map_err(|m| src.err(span.clone(), "gateway.origin_ca", m))?
        }
        None => roots.clone(),
    };
    let origin_verifier =
        crate::seccert::webpki_verifier(Arc::new(origin_roots)).map_err(|e| ConfigError {
            file: src.name.clone(),
            line: None,
            key: "gateway.origin_ca".into(),
            message: format!("no usable trust anchor: {e}"),
        })?;
    let mut origins = Vec::new();
    for o in originate {
        let port = o.port.as_ref().map_or(443, |p| *p.get_ref());
        let host = bauta_policy::Host::parse(o.host.get_ref())
            .map_err(|e| src.err(o.host.span(), "originate.host", e.to_string()))?;
        if port == 0 {
            let span = o.port.as_ref().map(|p| p.span()).unwrap_or_default();
            return Err(src.err(span, "originate.port", "must be 1..65535"));
        }
        let t = Target { host, port };
        if origins.contains(&t) {
            return Err(src.err(
                o.host.span(),
                "originate.host",
                format!("{t} is listed twice"),
            ));
        }
        origins.push(t);
    }
    let build = |provider: Arc<rustls::crypto::CryptoProvider>, alpn: &[u8]| {
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| src.err(url.span(), "gateway", format!("TLS setup: {e}")))?
            .with_root_certificates(roots.clone());
        let mut cfg = match &client {
            Some((chain, key, span)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| {
                    src.err(
                        span.clone(),
                        "gateway.client_cert",
                        format!("unusable with the key: {e}"),
                    )
                })?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![alpn.to_vec()];
        Ok::<_, ConfigError>(Arc::new(cfg))
    };
    let tls_h2 = build(tls::provider(), b"h2")?;
    let tls_h3 = build(Arc::new(tls::quic_provider()), b"h3")?;

    let count = |v: &Option<Spanned<u64>>, key: &str, default: u64, max: u64| {
        let Some(v) = v else {
            return Ok(default as usize);
        };
        match *v.get_ref() {
            n if (1..=max).contains(&n) => Ok(n as usize),
            _ => Err(src.err(v.span(), key, format!("must be between 1 and {max}"))),
        }
    };
    let connections = count(&g.connections, "gateway.connections", 1, 64)?;
    let max_connections = count(
        &g.max_connections,
        "gateway.max_connections",
        4.max(connections as u64),
        256,
    )?;
    if max_connections < connections {
        let span = g
            .max_connections
            .as_ref()
            .map(|s| s.span())
            .unwrap_or_default();
        return Err(src.err(
            span,
            "gateway.max_connections",
            "must be at least gateway.connections",
        ));
    }
    let max_streams = count(
        &g.max_streams_per_connection,
        "gateway.max_streams_per_connection",
        100,
        1 << 20,
    )?;
    let connect_timeout = Duration::from_millis(count(
        &g.connect_timeout_ms,
        "gateway.connect_timeout_ms",
        5000,
        600_000,
    )? as u64);
    let keepalive =
        Duration::from_secs(count(&g.keepalive_s, "gateway.keepalive_s", 3, 3600)? as u64);
    let udp_template: Arc<str> = match &g.udp_template {
        None => Arc::from(DEFAULT_UDP_TEMPLATE),
        Some(t) => {
            let s = t.get_ref();
            if !s.starts_with('/') || !s.contains("{target_host}") || !s.contains("{target_port}") {
                return Err(src.err(
                    t.span(),
                    "gateway.udp_template",
                    "must be a path holding {target_host} and {target_port}",
                ));
            }
            Arc::from(s.as_str())
        }
    };
    for part in [
        url.get_ref().as_bytes(),
        format!("{protocols:?}/{connections}/{max_connections}/{max_streams}/{connect_timeout:?}/{keepalive:?}/{udp_template}/{origins:?}/{codepoints:?}").as_bytes(),
    ] {
        fingerprint.extend_from_slice(&(part.len() as u64).to_be_bytes());
        fingerprint.extend_from_slice(part);
    }
    Ok(Some(GatewaySpec {
        url: Arc::from(url.get_ref().as_str()),
        target,
        server_name,
        protocols,
        tls_h2,
        tls_h3,
        connections,
        max_connections,
        max_streams_per_connection: max_streams,
        connect_timeout,
        keepalive,
        udp_template,
        originate: origins.into(),
        origin_verifier,
        codepoints,
        files,
        fingerprint,
    }))
}

/// `https://host[:port][/]` → the gateway's host and port (443 by default).
fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("must start with https:// (the gateway is always reached over TLS)")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err("must be https://host[:port] with nothing after the authority".into());
    }
    Target::parse_authority(authority, Some(443)).map_err(|e| format!("{authority:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(gateway: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n[gateway]\n{gateway}\n"
        );
        Config::parse(&text, "t.toml", Path::new("/nonexistent"))
    }

    #[test]
    fn refuses_what_cannot_work_naming_the_key() {
        for (body, key) in [
            ("protocols = [\"h2\"]", "gateway.url"),
            ("url = \"http://gw:1\"", "gateway.url"),
            (
                "url = \"https://gw:1\"\nprotocols = [\"h4\"]",
                "gateway.protocols",
            ),
            (
                "url = \"https://gw:1\"\nprotocols = []",
                "gateway.protocols",
            ),
            (
                "url = \"https://gw:1\"\nclient_cert = \"a.pem\"",
                "gateway.client_key",
            ),
            ("url = \"https://gw:1\"\nca = \"missing.pem\"", "gateway.ca"),
            (
                "url = \"https://gw:1\"\nconnections = 0",
                "gateway.connections",
            ),
            (
                "url = \"https://gw:1\"\nconnections = 8\nmax_connections = 2",
                "gateway.max_connections",
            ),
            (
                "url = \"https://gw:1\"\nudp_template = \"/x\"",
                "gateway.udp_template",
            ),
        ] {
            let e = parse(body).expect_err(body);
            assert_eq!(e.key, key, "{body}: {e}");
        }
    }

    #[test]
    fn defaults_and_the_identity_of_a_spec() {
        let c = parse("url = \"https://gw.test:8443\"").expect("config");
        let g = c.gateway.as_ref().expect("gateway");
        assert_eq!(g.target.to_string(), "gw.test:8443");
        assert_eq!(g.protocols, vec![GatewayProtocol::H3, GatewayProtocol::H2]);
        assert_eq!((g.connections, g.max_connections), (1, 4));
        assert_eq!(g.max_streams_per_connection, 100);
        assert_eq!(&*g.udp_template, DEFAULT_UDP_TEMPLATE);
        let same = parse("url = \"https://gw.test:8443\"").expect("config");
        assert!(**g == **same.gateway.as_ref().expect("gateway"));
        let other = parse("url = \"https://gw.test:8443\"\nconnections = 2").expect("config");
        assert!(**g != **other.gateway.as_ref().expect("gateway"));
    }

    #[test]
    fn urls() {
        let t = parse_url("https://egress.corp.svc:8443").expect("url");
        assert_eq!(t.to_string(), "egress.corp.svc:8443");
        assert_eq!(parse_url("https://gw/").expect("url").port, 443);
        assert_eq!(parse_url("https://[::1]:9").expect("url").port, 9);
        assert_eq!(parse_url("https://127.0.0.1:8443").expect("url").port, 8443);
        for bad in [
            "http://gw:1",
            "https://",
            "https://gw:1/path",
            "https://u@gw",
            "https://::1:9",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}

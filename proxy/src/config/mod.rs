//! TOML configuration: serde types that mirror the file, and `compile()`, which
//! turns them into the typed runtime [`Config`] or an error naming the file,
//! the key and the line.
//!
//! `bauta check` and `bauta run` both go through [`Config::load`], so a file
//! that checks clean is a file that runs.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod auth;
pub mod certificates;
pub mod client_limits;
pub mod gateway;
mod limits;
pub mod log;
pub use limits::Limits;
pub mod default;
pub mod origin;
pub mod policy_file;
pub mod runtime;
pub mod udp_template;

use bauta_policy::Policy;
use serde::Deserialize;
use toml::Spanned;

use self::origin::{Origin, Origins};
use crate::config::udp_template::UdpTemplate;
use crate::seccert::advertiser::Advertise;
use crate::seccert::negotiation::Codepoints;
use crate::tls;
use crate::tls::identity::IdentitySource;
use crate::wire::target::Target;

// === file types (mirror the TOML) ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    proxy: ProxySection,
    admin: Option<AdminSection>,
    #[serde(default, rename = "listener")]
    listeners: Vec<ListenerSection>,
    #[serde(default)]
    dns: DnsSection,
    #[serde(default)]
    policy: policy_file::PolicySection,
    #[serde(default)]
    limits: limits::LimitsSection,
    #[serde(default)]
    connect_udp: ConnectUdpSection,
    #[serde(default)]
    secondary_certs: SecondaryCertsSection,
    #[serde(default, rename = "origin")]
    origins: Vec<OriginSection>,
    gateway: Option<gateway::GatewaySection>,
    #[serde(default)]
    originate: Vec<gateway::OriginateSection>,
    #[serde(default)]
    auth: auth::AuthSection,
    #[serde(default)]
    reload: ReloadSection,
    #[serde(default)]
    log: log::LogSection,
    #[serde(default)]
    runtime: runtime::RuntimeSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadSection {
    /// Reload when the configuration, policy or credentials file changes
    /// (default true); SIGHUP always reloads.
    watch_files: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecondaryCertsSection {
    advertise: Option<Spanned<Advertise>>,
    h2_frame_type: Option<Spanned<u64>>,
    h2_setting: Option<Spanned<u64>>,
    h3_frame_type: Option<Spanned<u64>>,
    h3_setting: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginSection {
    host: Spanned<String>,
    port: Option<Spanned<u16>>,
    cert: Spanned<String>,
    key: Spanned<String>,
    upstream: Spanned<String>,
    upstream_ca: Option<Spanned<String>>,
    /// The header that carries the client's verified identity upstream.
    identity_header: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectUdpSection {
    /// URI template (path, or absolute URI whose path is used).
    template: Option<Spanned<String>>,
    idle_timeout_s: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxySection {
    /// Our name in `Proxy-Status` and `Via`.
    name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    listen: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerSection {
    name: Spanned<String>,
    listen: Spanned<String>,
    protocols: Spanned<Vec<Spanned<String>>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    /// Trust anchors for client certificates (mTLS).
    client_ca: Option<Spanned<String>>,
    /// `required` (default with client_ca) or `optional`.
    client_auth: Option<Spanned<String>>,
    /// Where a client certificate's identity is read from, in order.
    identity_from: Option<Spanned<Vec<IdentitySource>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsSection {
    #[serde(default)]
    servers: Vec<Spanned<String>>,
}

// === runtime types ===

/// A validated configuration. Everything in it is usable as is.
#[derive(Clone)]
pub struct Config {
    /// Where it came from (for messages); `None` for the embedded default.
    pub source: Option<PathBuf>,
    pub proxy_name: Arc<str>,
    pub admin: Option<SocketAddr>,
    pub listeners: Vec<ListenerSpec>,
    pub dns_servers: Vec<SocketAddr>,
    pub policy: Arc<Policy>,
    /// `[policy] file`, when the rules live in their own file.
    pub policy_file: Option<PathBuf>,
    pub limits: Limits,
    pub connect_udp: ConnectUdpSpec,
    pub secondary: SecondarySpec,
    pub origins: Arc<Origins>,
    /// `[auth]`: Basic credentials for clients without a certificate.
    pub auth: Option<auth::AuthSpec>,
    /// `[limits] per_identity` and `per_group`.
    pub client_limits: client_limits::ClientLimits,
    /// `[reload] watch_files`: reload when a file of [`Config::files`] changes.
    pub watch_files: bool,
    /// Certificate, key and CA files of listeners and origins.
    pub tls_files: Vec<PathBuf>,
    /// `[log] format`: diagnostics as text or JSON (fixed at start).
    pub log_format: log::LogFormat,
    /// `[runtime] worker_threads` (fixed at start); `None`: one per core.
    pub worker_threads: Option<usize>,
    /// `[gateway]`: chain everything to a parent Bauta instead of dialling.
    pub gateway: Option<Arc<gateway::GatewaySpec>>,
}

/// `[secondary_certs]`: when to advertise, on which codepoints.
#[derive(Clone, Copy, Debug)]
pub struct SecondarySpec {
    pub advertise: Advertise,
    pub codepoints: Codepoints,
}

/// CONNECT-UDP settings.
#[derive(Clone, Debug)]
pub struct ConnectUdpSpec {
    pub template: UdpTemplate,
    /// A flow with no datagram either way for this long is closed.
    pub idle_timeout: Duration,
}

#[derive(Clone)]
pub struct ListenerSpec {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub http1: bool,
    pub h2: bool,
    pub h3: bool,
    /// TLS when present; ALPN is set from the protocols.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// QUIC TLS (ALPN h3) when `h3` is enabled; UDP on the same address.
    pub quic_tls: Option<Arc<rustls::ServerConfig>>,
    /// The listener certificate's leaf, to see which origins it covers.
    pub leaf: Option<rustls::pki_types::CertificateDer<'static>>,
    /// Origins the listener's own certificate covers.
    pub handshake_covers: Arc<std::collections::HashSet<Target>>,
    /// Where a verified client certificate's identity is read from, in order.
    pub identity_from: Arc<[IdentitySource]>,
    /// The QUIC stateless-reset key, derived from the listener's private
    /// key: the same after a restart, so that a restarted proxy resets the
    /// connections its predecessor left (RFC 9000 §10.3).
    pub quic_reset_key: Option<[u8; 32]>,
}

/// A configuration error: which file, which line, which key, what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: ", self.file, line)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Knows the text a span points into, to turn byte offsets into line numbers.
struct Source<'a> {
    name: String,
    text: &'a str,
    /// `bauta check --root DIR`: absolute paths are read under DIR.
    root: Option<&'a Path>,
}

impl Source<'_> {
    /// A path the file names: relative to `base`, or (absolute) under the
    /// check root when there is one.
    fn path(&self, base: &Path, p: &str) -> PathBuf {
        let p = Path::new(p);
        match self.root {
            Some(root) if p.is_absolute() => root.join(p.strip_prefix("/").unwrap_or(p)),
            _ => base.join(p),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn err(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.name.clone(),
            line: Some(self.line_of(span.start)),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn toml_err(&self, e: toml::de::Error) -> ConfigError {
        let line = e.span().map(|s| self.line_of(s.start));
        ConfigError {
            file: self.name.clone(),
            line,
            key: String::new(),
            message: e.message().trim().to_string(),
        }
    }
}

// === impl Config ===

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

impl Config {
    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_under(path, None)
    }

    /// As [`Config::load`], reading every absolute path the file names
    /// (`/etc/bauta/tls/tls.crt`) under `root` instead — to check a
    /// configuration whose files are mounted elsewhere at run time.
    pub fn load_under(path: &Path, root: Option<&Path>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let src = Source {
            name: path.display().to_string(),
            text: &text,
            root,
        };
        let mut config = Self::compile_source(&src, base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parse and validate configuration text. Relative paths resolve against `base`.
    pub fn parse(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let src = Source {
            name: name.to_string(),
            text,
            root: None,
        };
        Self::compile_source(&src, base)
    }

    fn compile_source(src: &Source<'_>, base: &Path) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(src.text).map_err(|e| src.toml_err(e))?;
        compile(file, src, base)
    }

    /// The files this configuration was read from (the file itself, the
    /// policy file, the credentials file, certificates, keys and CAs): a
    /// change to any of them reloads.
    pub fn files(&self) -> Vec<PathBuf> {
        [
            self.source.clone(),
            self.policy_file.clone(),
            self.auth.as_ref().map(|a| a.file.clone()),
        ]
        .into_iter()
        .flatten()
        .chain(self.tls_files.iter().cloned())
        .collect()
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    /// One line for `bauta check`.
    pub fn summary(&self) -> String {
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|l| {
                let mut protos = Vec::new();
                if l.http1 {
                    protos.push("http1");
                }
                if l.h2 {
                    protos.push("h2");
                }
                if l.h3 {
                    protos.push("h3");
                }
                format!(
                    "{}={}{}[{}]",
                    l.name,
                    if l.tls.is_some() { "tls://" } else { "tcp://" },
                    l.addr,
                    protos.join(",")
                )
            })
            .collect();
        format!(
            "ok: {} listener(s) {}; admin {}; policy {} rule(s), default {}",
            self.listeners.len(),
            listeners.join(" "),
            self.admin
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into()),
            self.policy.rule_count(),
            self.policy.default_verdict().as_str(),
        )
    }
}

fn compile(file: FileConfig, src: &Source<'_>, base: &Path) -> Result<Config, ConfigError> {
    let proxy_name: Arc<str> = match &file.proxy.name {
        Some(n) => {
            if !is_sf_token(n.get_ref()) {
                return Err(src.err(
                    n.span(),
                    "proxy.name",
                    format!(
                        "{:?} is not a structured-field token (letters, digits, and !#$%&'*+-.^_`|~:/ ; first a letter or '*')",
                        n.get_ref()
                    ),
                ));
            }
            Arc::from(n.get_ref().as_str())
        }
        None => Arc::from("bauta"),
    };

    let admin = match &file.admin {
        Some(a) => Some(parse_socket_addr(src, &a.listen, "admin.listen")?),
        None => None,
    };

    if file.listeners.is_empty() {
        return Err(ConfigError {
            file: src.name.clone(),
            line: None,
            key: "listener".into(),
            message: "at least one [[listener]] is required".into(),
        });
    }
    let mut listeners = Vec::new();
    for (i, l) in file.listeners.iter().enumerate() {
        listeners.push(compile_listener(i, l, src, base)?);
    }
    for (i, a) in listeners.iter().enumerate() {
        for b in &listeners[..i] {
            if a.name == b.name {
                return Err(src.err(
                    file.listeners[i].name.span(),
                    "listener.name",
                    format!("duplicate listener name {:?}", a.name),
                ));
            }
            if a.addr == b.addr && a.addr.port() != 0 {
                return Err(src.err(
                    file.listeners[i].listen.span(),
                    "listener.listen",
                    format!("{} is already used by listener {:?}", a.addr, b.name),
                ));
            }
        }
    }

    let mut dns_servers = Vec::new();
    for s in &file.dns.servers {
        dns_servers.push(parse_socket_addr(src, s, "dns.servers")?);
    }

    let policy = policy_file::compile_policy(&file.policy, src, base)?;
    let policy_file = file
        .policy
        .file
        .as_ref()
        .map(|f| src.path(base, f.get_ref()));
    let limits = limits::compile_limits(&file.limits, src)?;
    let connect_udp = compile_connect_udp(&file.connect_udp, src)?;
    let secondary = compile_secondary(&file.secondary_certs, src)?;
    let origins = compile_origins(&file.origins, src, base)?;
    let auth = auth::compile_auth(&file.auth, src, base)?;
    let client_limits = client_limits::compile_client_limits(
        file.limits.per_identity.as_ref(),
        &file.limits.per_group,
        &policy,
        src,
    )?;
    let listener_files = file.listeners.iter().flat_map(|l| {
        [&l.tls_cert, &l.tls_key, &l.client_ca]
            .into_iter()
            .flatten()
            .map(|p| src.path(base, p.get_ref()))
    });
    let origin_files = file
        .origins
        .iter()
        .flat_map(|o| [&o.cert, &o.key].map(|p| src.path(base, p.get_ref())));
    let gateway = gateway::compile_gateway(
        file.gateway.as_ref(),
        &file.originate,
        secondary.codepoints,
        src,
        base,
    )?;
    let gateway_files = gateway.iter().flat_map(|g| g.files.iter().cloned());
    let tls_files = listener_files
        .chain(origin_files)
        .chain(gateway_files)
        .collect();
    for l in &mut listeners {
        if let Some(leaf) = &l.leaf {
            l.handshake_covers = Arc::new(origin::covered_by(leaf, &origins));
        }
    }

    Ok(Config {
        source: None,
        proxy_name,
        admin,
        listeners,
        dns_servers,
        policy: Arc::new(policy),
        policy_file,
        limits,
        connect_udp,
        secondary,
        origins: Arc::new(origins),
        auth,
        client_limits,
        watch_files: file.reload.watch_files.unwrap_or(true),
        tls_files,
        log_format: log::compile_log(&file.log, src)?,
        worker_threads: runtime::compile_runtime(&file.runtime, src)?,
        gateway: gateway.map(Arc::new),
    })
}

fn compile_listener(
    index: usize,
    l: &ListenerSection,
    src: &Source<'_>,
    base: &Path,
) -> Result<ListenerSpec, ConfigError> {
    let name = l.name.get_ref().trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(src.err(
            l.name.span(),
            "listener.name",
            format!(
                "listener #{index}: name {:?} must be non-empty ASCII letters, digits, '-', '_' or '.' (it is a metric label)",
                l.name.get_ref()
            ),
        ));
    }
    let addr = parse_socket_addr(src, &l.listen, "listener.listen")?;
    let (mut http1, mut h2, mut h3) = (false, false, false);
    for p in l.protocols.get_ref() {
        match p.get_ref().as_str() {
            "http1" => http1 = true,
            "h2" => h2 = true,
            "h3" => h3 = true,
            other => {
                return Err(src.err(
                    p.span(),
                    "listener.protocols",
                    format!("unknown protocol {other:?}; expected \"http1\", \"h2\" or \"h3\""),
                ))
            }
        }
    }
    if !(http1 || h2 || h3) {
        return Err(src.err(
            l.protocols.span(),
            "listener.protocols",
            "must name at least one of \"http1\", \"h2\", \"h3\"",
        ));
    }
    if h3 && (l.tls_cert.is_none() || l.tls_key.is_none()) {
        return Err(src.err(
            l.protocols.span(),
            "listener.protocols",
            "\"h3\" needs tls_cert and tls_key (QUIC is always encrypted)",
        ));
    }
    if h3 && !(http1 || h2) {
        return Err(src.err(
            l.protocols.span(),
            "listener.protocols",
            "\"h3\" needs \"http1\" or \"h2\" beside it on the same listener (clients discover HTTP/3 through Alt-Svc)",
        ));
    }
    let client_auth = compile_client_auth(l, src, base)?;
    let identity_from: Arc<[IdentitySource]> = match &l.identity_from {
        None => Arc::new(tls::identity::DEFAULT_ORDER),
        Some(list) if list.get_ref().is_empty() => {
            return Err(src.err(
                list.span(),
                "listener.identity_from",
                "name at least one of \"uri\", \"dns\", \"cn\"",
            ))
        }
        Some(list) => list.get_ref().clone().into(),
    };
    let mut quic_tls = None;
    let mut quic_reset_key = None;
    let mut leaf = None;
    let tls = match (&l.tls_cert, &l.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let cert_path = src.path(base, cert.get_ref());
            let key_path = src.path(base, key.get_ref());
            let chain = tls::load_certs(&cert_path)
                .map_err(|e| src.err(cert.span(), "listener.tls_cert", e))?;
            let key_der =
                tls::load_key(&key_path).map_err(|e| src.err(key.span(), "listener.tls_key", e))?;
            leaf = chain.first().cloned();
            let mut alpn = Vec::new();
            if h2 {
                alpn.push(b"h2".to_vec());
            }
            if http1 {
                alpn.push(b"http/1.1".to_vec());
            }
            if h3 {
                let q = tls::quic_server_config(
                    chain.clone(),
                    key_der.clone_key(),
                    client_auth.as_ref(),
                )
                .map_err(|e| src.err(key.span(), "listener.tls_key", e))?;
                quic_tls = Some(Arc::new(q));
                quic_reset_key = Some(tls::stateless_reset_key(&key_der, name));
            }
            let cfg = tls::server_config(chain, key_der, alpn, client_auth.as_ref())
                .map_err(|e| src.err(key.span(), "listener.tls_key", e))?;
            Some(Arc::new(cfg))
        }
        (Some(cert), None) => {
            return Err(src.err(
                cert.span(),
                "listener.tls_key",
                "tls_cert given without tls_key",
            ))
        }
        (None, Some(key)) => {
            return Err(src.err(
                key.span(),
                "listener.tls_cert",
                "tls_key given without tls_cert",
            ))
        }
    };
    Ok(ListenerSpec {
        name: Arc::from(name),
        addr,
        http1,
        h2,
        h3,
        tls,
        quic_tls,
        leaf,
        handshake_covers: Arc::default(),
        identity_from,
        quic_reset_key,
    })
}

/// `client_ca` and `client_auth` of a TLS listener.
fn compile_client_auth(
    l: &ListenerSection,
    src: &Source<'_>,
    base: &Path,
) -> Result<Option<tls::ClientAuth>, ConfigError> {
    let required = match &l.client_auth {
        None => true,
        Some(v) => match v.get_ref().as_str() {
            "required" => true,
            "optional" => false,
            other => {
                return Err(src.err(
                    v.span(),
                    "listener.client_auth",
                    format!("{other:?}: expected \"required\" or \"optional\""),
                ))
            }
        },
    };
    let Some(ca) = &l.client_ca else {
        if let Some(v) = &l.client_auth {
            return Err(src.err(
                v.span(),
                "listener.client_auth",
                "client_auth needs client_ca (the trust anchors for client certificates)",
            ));
        }
        return Ok(None);
    };
    if l.tls_cert.is_none() {
        return Err(src.err(
            ca.span(),
            "listener.client_ca",
            "client certificates need a TLS listener (tls_cert and tls_key)",
        ));
    }
    let path = src.path(base, ca.get_ref());
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(&path).map_err(|e| src.err(ca.span(), "listener.client_ca", e))? {
        roots
            .add(cert)
            .map_err(|e| src.err(ca.span(), "listener.client_ca", e.to_string()))?;
    }
    Ok(Some(tls::ClientAuth {
        roots: Arc::new(roots),
        required,
    }))
}

fn compile_connect_udp(
    c: &ConnectUdpSection,
    src: &Source<'_>,
) -> Result<ConnectUdpSpec, ConfigError> {
    let template = match &c.template {
        Some(t) => UdpTemplate::parse(t.get_ref())
            .map_err(|e| src.err(t.span(), "connect_udp.template", e.to_string()))?,
        None => UdpTemplate::parse(DEFAULT_UDP_TEMPLATE).map_err(|e| ConfigError {
            file: src.name.clone(),
            line: None,
            key: "connect_udp.template".into(),
            message: format!("built-in default is invalid: {e}"),
        })?,
    };
    let idle_timeout = match &c.idle_timeout_s {
        Some(v) if *v.get_ref() == 0 => {
            return Err(src.err(
                v.span(),
                "connect_udp.idle_timeout_s",
                "must be greater than 0",
            ))
        }
        Some(v) => Duration::from_secs(*v.get_ref()),
        None => Duration::from_secs(60),
    };
    Ok(ConnectUdpSpec {
        template,
        idle_timeout,
    })
}

fn compile_secondary(
    c: &SecondaryCertsSection,
    src: &Source<'_>,
) -> Result<SecondarySpec, ConfigError> {
    let mut cp = Codepoints::default();
    if let Some(v) = &c.h2_frame_type {
        // RFC 9113 §4.1: 8-bit type; 0x00-0x09 are the core frames.
        cp.h2_frame_type = u8::try_from(*v.get_ref())
            .ok()
            .filter(|t| *t > 0x09)
            .ok_or_else(|| {
                src.err(
                    v.span(),
                    "secondary_certs.h2_frame_type",
                    "must be 0x0a..0xff (not a core HTTP/2 frame type)",
                )
            })?;
    }
    if let Some(v) = &c.h2_setting {
        cp.h2_setting = u16::try_from(*v.get_ref())
            .ok()
            .filter(|t| *t > 0x09)
            .ok_or_else(|| {
                src.err(
                    v.span(),
                    "secondary_certs.h2_setting",
                    "must be 0x000a..0xffff (not a core HTTP/2 setting)",
                )
            })?;
    }
    let varint_max = (1u64 << 62) - 1;
    if let Some(v) = &c.h3_frame_type {
        if *v.get_ref() > varint_max || *v.get_ref() <= 0x0d {
            return Err(src.err(
                v.span(),
                "secondary_certs.h3_frame_type",
                "must be a varint above the core HTTP/3 frame types",
            ));
        }
        cp.h3_frame_type = *v.get_ref();
    }
    if let Some(v) = &c.h3_setting {
        if *v.get_ref() > varint_max || *v.get_ref() <= 0x08 {
            return Err(src.err(
                v.span(),
                "secondary_certs.h3_setting",
                "must be a varint above the core HTTP/3 settings",
            ));
        }
        cp.h3_setting = *v.get_ref();
    }
    Ok(SecondarySpec {
        advertise: c
            .advertise
            .as_ref()
            .map(|a| *a.get_ref())
            .unwrap_or(Advertise::OnConnect),
        codepoints: cp,
    })
}

fn compile_origins(
    list: &[OriginSection],
    src: &Source<'_>,
    base: &Path,
) -> Result<Origins, ConfigError> {
    let mut out: Vec<Arc<Origin>> = Vec::new();
    for o in list {
        let host = o
            .host
            .get_ref()
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let name = match bauta_policy::Host::parse(&host) {
            Ok(h @ bauta_policy::Host::Name(_)) => h,
            _ => {
                return Err(src.err(
                    o.host.span(),
                    "origin.host",
                    format!("{:?} is not a DNS host name", o.host.get_ref()),
                ))
            }
        };
        let port = match &o.port {
            Some(p) if *p.get_ref() == 0 => {
                return Err(src.err(p.span(), "origin.port", "must be 1..65535"))
            }
            Some(p) => *p.get_ref(),
            None => 443,
        };
        if out.iter().any(|x| x.host == host && x.port == port) {
            return Err(src.err(
                o.host.span(),
                "origin.host",
                format!("{host}:{port} is configured twice"),
            ));
        }
        let (chain, key) = origin::load_identity(
            &host,
            &src.path(base, o.cert.get_ref()),
            &src.path(base, o.key.get_ref()),
        )
        .map_err(|e| src.err(o.cert.span(), "origin.cert", e))?;
        let ca = o.upstream_ca.as_ref().map(|c| src.path(base, c.get_ref()));
        let upstream = origin::parse_upstream(o.upstream.get_ref(), ca.as_deref())
            .map_err(|e| src.err(o.upstream.span(), "origin.upstream", e))?;
        // Origins that share one certificate (several names, or a wildcard)
        // share its OriginCert: a connection signs it once and one
        // SERVER_CERTIFICATE proves all of them.
        let cert = match out.iter().find(|x| same_identity(x, &chain, &key)) {
            Some(x) => Arc::clone(&x.cert),
            None => {
                let certified = rustls::sign::CertifiedKey::new(chain.clone(), Arc::clone(&key));
                Arc::new(
                    crate::seccert::OriginCert::new(Arc::new(certified))
                        .map_err(|e| src.err(o.cert.span(), "origin.cert", e.to_string()))?,
                )
            }
        };
        let identity_header = match &o.identity_header {
            None => None,
            Some(h) => Some(
                http::HeaderName::from_bytes(h.get_ref().trim().as_bytes())
                    .ok()
                    .filter(|n| !is_reserved_header(n))
                    .ok_or_else(|| {
                        src.err(
                            h.span(),
                            "origin.identity_header",
                            format!(
                                "{:?} is not a header name this proxy may set (a valid name, not a hop-by-hop, Host, Forwarded or Via field)",
                                h.get_ref()
                            ),
                        )
                    })?,
            ),
        };
        out.push(Arc::new(Origin {
            identity_header,
            authority: Target { host: name, port },
            host,
            port,
            chain,
            key,
            cert,
            upstream,
        }));
    }
    Ok(Origins::new(out))
}

/// The same chain with the same key pair (compared by public key; a key
/// that cannot tell its public key is never taken for another).
fn same_identity(
    o: &Origin,
    chain: &[rustls::pki_types::CertificateDer<'static>],
    key: &Arc<dyn rustls::sign::SigningKey>,
) -> bool {
    o.chain == chain
        && matches!((o.key.public_key(), key.public_key()), (Some(a), Some(b)) if a == b)
}

/// RFC 9298 §2's well-known default.
pub const DEFAULT_UDP_TEMPLATE: &str = "/.well-known/masque/udp/{target_host}/{target_port}/";

fn parse_socket_addr(
    src: &Source<'_>,
    s: &Spanned<String>,
    key: &str,
) -> Result<SocketAddr, ConfigError> {
    s.get_ref().parse::<SocketAddr>().map_err(|_| {
        src.err(
            s.span(),
            key,
            format!(
                "{:?} is not an \"ip:port\" address (IPv6 in brackets: \"[::1]:8080\")",
                s.get_ref()
            ),
        )
    })
}

/// Fields the proxy manages itself and an identity header must not name.
fn is_reserved_header(name: &http::HeaderName) -> bool {
    use http::header;
    [
        header::HOST,
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::FORWARDED,
        header::VIA,
    ]
    .contains(name)
}

/// RFC 8941 §3.3.4 token syntax.
fn is_sf_token(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '*' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauta_policy::Verdict;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("."))
    }

    const MINIMAL: &str = r#"
[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocols = ["http1"]
"#;

    #[test]
    fn minimal_config_defaults_to_deny() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.policy.default_verdict(), Verdict::Deny);
        assert!(c.admin.is_none());
        assert_eq!(&*c.proxy_name, "bauta");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let text =
            "[[listener]]\nname = \"plain\"\nlisten = \"nonsense\"\nprotocols = [\"http1\"]\n";
        let e = parse(text).expect_err("invalid");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key, "listener.listen");
        let shown = e.to_string();
        assert!(
            shown.starts_with("test.toml:3: listener.listen:"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_protocol_is_rejected_with_its_line() {
        let text = "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:1\"\nprotocols = [\n  \"http1\",\n  \"spdy\"]\n";
        let e = parse(text).expect_err("invalid");
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("spdy"));
    }

    #[test]
    fn unknown_key_is_rejected() {
        let text = format!("{MINIMAL}\n[dns]\nserverz = []\n");
        let e = parse(&text).expect_err("invalid");
        assert_eq!(e.line, Some(8));
        assert!(e.message.contains("serverz"), "{e}");
    }

    #[test]
    fn bad_policy_rule_points_at_the_rule() {
        let text = format!(
            "{MINIMAL}\n[policy]\ndefault = \"deny\"\n[[policy.rule]]\nname = \"x\"\naction = \"allow\"\nports = [\"9-1\"]\n"
        );
        let e = parse(&text).expect_err("invalid");
        assert_eq!(e.key, "policy.rule");
        assert!(e.line.is_some());
    }

    #[test]
    fn tls_key_without_cert_is_rejected() {
        let text = format!("{MINIMAL}tls_key = \"k.pem\"\n");
        let e = parse(&text).expect_err("invalid");
        assert_eq!(e.key, "listener.tls_cert");
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let text = format!("{MINIMAL}\n[limits]\nconnect_timeout_ms = 0\n");
        let e = parse(&text).expect_err("invalid");
        assert_eq!(e.key, "limits.connect_timeout_ms");
    }

    #[test]
    fn duplicate_listener_names_are_rejected() {
        let text = format!("{MINIMAL}{MINIMAL}");
        let e = parse(&text).expect_err("invalid");
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn token_check() {
        assert!(is_sf_token("bauta"));
        assert!(is_sf_token("proxy.example.net"));
        assert!(!is_sf_token("1proxy"));
        assert!(!is_sf_token("a b"));
        assert!(!is_sf_token(""));
    }
}

#[cfg(test)]
mod client_auth_tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        match Config::parse(text, "test.toml", Path::new("/nonexistent")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn client_auth_keys_are_checked() {
        let e = err(
            "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\nclient_ca = \"c.pem\"\n",
        );
        assert_eq!(
            (e.key.as_str(), e.line),
            ("listener.client_ca", Some(5)),
            "{e}"
        );
        assert!(e.message.contains("need a TLS listener"), "{e}");

        let e = err(
            "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\nclient_auth = \"optional\"\n",
        );
        assert_eq!(e.key, "listener.client_auth", "{e}");
        assert!(e.message.contains("needs client_ca"), "{e}");

        let e = err(
            "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\nclient_auth = \"sometimes\"\n",
        );
        assert_eq!(e.key, "listener.client_auth", "{e}");
        assert!(e.message.contains("\"required\" or \"optional\""), "{e}");

        let e = err(
            "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\nidentity_from = []\n",
        );
        assert_eq!(e.key, "listener.identity_from", "{e}");

        let e = err(
            "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\nidentity_from = [\"email\"]\n",
        );
        assert!(e.message.contains("email"), "{e}");
    }

    #[test]
    fn identities_rules_are_checked() {
        let e = err(
            "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n[[policy.rule]]\nname = \"r\"\naction = \"allow\"\nidentities = [\"spiffe://*/x\"]\n",
        );
        assert!(e.message.contains("identities"), "{e}");
        assert_eq!(e.line, Some(6), "{e}");
    }
}

#[cfg(test)]
mod identity_header_tests {
    use super::*;

    #[test]
    fn identity_header_must_be_a_header_we_may_set() {
        let dir = std::env::temp_dir().join(format!("bauta-idh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["origin.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.join("o.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.join("o.key"), key.serialize_pem()).expect("write key");
        let config = |header: &str| {
            format!(
                "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
                 [[origin]]\nhost = \"origin.test\"\ncert = \"o.pem\"\nkey = \"o.key\"\n\
                 upstream = \"http://127.0.0.1:9\"\nidentity_header = \"{header}\"\n"
            )
        };
        for bad in ["Host", "via", "x bad", ""] {
            match Config::parse(&config(bad), "test.toml", &dir) {
                Ok(_) => panic!("{bad:?} accepted"),
                Err(e) => {
                    assert_eq!(e.key, "origin.identity_header", "{bad:?}: {e}");
                    assert_eq!(e.line, Some(11), "{bad:?}: {e}");
                }
            }
        }
        let ok = Config::parse(&config("X-Client-Identity"), "test.toml", &dir).expect("valid");
        let origin = ok.origins.list.first().expect("one origin");
        assert_eq!(
            origin.identity_header.as_ref().map(|h| h.as_str()),
            Some("x-client-identity")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod shared_origin_cert_tests {
    use super::*;

    /// Origins named by one certificate share its OriginCert (one signature
    /// per connection proves them all); another certificate does not.
    #[test]
    fn one_certificate_for_several_origins_is_loaded_once() {
        let dir = std::env::temp_dir().join(format!("bauta-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write = |stem: &str, names: &[&str]| {
            let key = rcgen::KeyPair::generate().expect("key");
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let cert = rcgen::CertificateParams::new(names)
                .expect("params")
                .self_signed(&key)
                .expect("cert");
            std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write cert");
            std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem())
                .expect("write key");
        };
        write("ab", &["a.test", "b.test"]);
        write("c", &["c.test"]);
        let origin = |host: &str, stem: &str| {
            format!(
                "[[origin]]\nhost = \"{host}\"\ncert = \"{stem}.pem\"\nkey = \"{stem}.key\"\n\
                 upstream = \"http://127.0.0.1:9\"\n\n"
            )
        };
        let text = format!(
            "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n{}{}{}",
            origin("a.test", "ab"),
            origin("c.test", "c"),
            origin("b.test", "ab"),
        );
        let config = Config::parse(&text, "test.toml", &dir).expect("valid");
        let certs: Vec<_> = config.origins.list.iter().map(|o| &o.cert).collect();
        assert_eq!(certs.len(), 3);
        assert!(Arc::ptr_eq(certs[0], certs[2]), "a.test and b.test share");
        assert!(!Arc::ptr_eq(certs[0], certs[1]), "c.test has its own");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

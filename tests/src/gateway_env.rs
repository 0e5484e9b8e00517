//! Sidecar chaining, two processes: a **gateway** Bauta (TLS listener with
//! mTLS, a policy keyed on the client's SPIFFE identity) and a **sidecar**
//! Bauta whose `[gateway]` section sends everything it would dial to the
//! gateway over one multiplexed connection: HTTP/2 unless
//! [`GatewayEnv::set_protocols`] says otherwise ([`Proto`] for one protocol,
//! [`PROTOCOLS_RACE`] for the HTTP/3-then-HTTP/2 race).
//!
//! * [`GatewayPki`]: a gateway CA and the gateway's certificate (IP SAN
//!   127.0.0.1, DNS SAN `gateway.test`); a client CA and two pod identities
//!   ([`POD_PAYMENTS`], allowed by the gateway; [`POD_WEB`], not); the
//!   app-facing certificate of the sidecar's own TLS listener.
//! * [`gateway_toml`] / [`sidecar_toml`]: the two configurations, as files.
//! * [`GatewayEnv`]: start, kill and restart (same port) both as
//!   [`BautaProcess`]es; read metrics from either admin endpoint. The
//!   gateway's listener may leave h3 out ([`GatewayEnv::set_gateway_h3`]):
//!   nothing then listens on its UDP port, as when UDP is blocked.
//! * [`ProxyStatus`]: an RFC 9209 `Proxy-Status` list, member by member, to
//!   check which hop said what, in which order.
//! * [`chain`]: clients of the sidecar (curl, the Python h2 and aioquic
//!   peers, Rust HTTP/2), what its answers must say (gateway-then-sidecar,
//!   or the sidecar alone), the gateway's counters, and waits that end: a
//!   tunnel ending, a CONNECT retried while the sidecar reconnects.
//!
//! Everything binds 127.0.0.1.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::faults_env::pattern;
use crate::masque::{family_lines, metric_opt};
use crate::{bauta_bin, fetch_metrics, make_certs, run_with_timeout, BautaProcess, Certs, TempDir};

pub mod chain;
pub use chain::*;

/// `[proxy] name` of the gateway: its member in `Proxy-Status`.
pub const GATEWAY_NAME: &str = "gw";
/// `[proxy] name` of the sidecar.
pub const SIDECAR_NAME: &str = "sidecar";
/// The gateway's one TLS listener (http1, h2, h3; client certificates required).
pub const GATEWAY_LISTENER: &str = "mesh";
/// The sidecar's plaintext HTTP/1.1 listener for the app.
pub const SIDECAR_PLAIN: &str = "app-plain";
/// The sidecar's TLS listener for the app (http1, h2, h3; no client certificates).
pub const SIDECAR_TLS: &str = "app-tls";
/// The identity the gateway's policy allows (to loopback targets).
pub const POD_PAYMENTS: &str = "spiffe://corp/payments/api";
/// An identity the gateway's policy does not allow.
pub const POD_WEB: &str = "spiffe://corp/web";
/// The gateway's allow rule (`identities = ["spiffe://corp/payments/*"]`).
pub const GATEWAY_RULE: &str = "payments-loopback";
/// A destination port the sidecar's own policy denies (rule [`SIDECAR_DENY_RULE`]),
/// before anything is sent to the gateway.
pub const SIDECAR_DENIED_PORT: u16 = 9;
/// The sidecar's local deny rule.
pub const SIDECAR_DENY_RULE: &str = "local-deny";
/// The sidecar's loopback allow rule.
pub const SIDECAR_ALLOW_RULE: &str = "loopback";

// === gateway protocols ===

/// One protocol for the sidecar's gateway connections (`[gateway] protocols`
/// with that one alone), and the label it has in the metrics
/// (`bauta_gateway_connections{protocol}` at the sidecar,
/// `bauta_connections_total{protocol}` / `bauta_requests_total{protocol}`
/// at the gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H3,
    H2,
}

impl Proto {
    /// The metric label (and the `[gateway] protocols` spelling).
    pub const fn as_str(self) -> &'static str {
        match self {
            Proto::H3 => "h3",
            Proto::H2 => "h2",
        }
    }

    /// `[gateway] protocols` with this protocol alone, as TOML.
    pub const fn toml(self) -> &'static str {
        match self {
            Proto::H3 => r#"["h3"]"#,
            Proto::H2 => r#"["h2"]"#,
        }
    }

    /// The other one.
    pub const fn other(self) -> Proto {
        match self {
            Proto::H3 => Proto::H2,
            Proto::H2 => Proto::H3,
        }
    }
}

/// Tests `name::h3` and `name::h2` for each `async fn name(proto: Proto)`
/// given: every chain behaviour is tested over both gateway protocols.
#[macro_export]
macro_rules! over_h3_and_h2 {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn h3() {
                super::$name($crate::gateway_env::Proto::H3).await;
            }

            #[tokio::test]
            async fn h2() {
                super::$name($crate::gateway_env::Proto::H2).await;
            }
        }
    )+};
}

/// `[gateway] protocols` of the environment unless set: HTTP/2 alone.
pub const PROTOCOLS_DEFAULT: &str = r#"["h2"]"#;
/// `[gateway] protocols` for the race: HTTP/3 first, HTTP/2 250 ms later
/// (the default of a `[gateway]` without `protocols`).
pub const PROTOCOLS_RACE: &str = r#"["h3", "h2"]"#;

// === PKI ===

/// A client certificate (chain, key) as DER and as PEM files.
pub struct ClientCert {
    pub identity: &'static str,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

impl ClientCert {
    /// The (chain, key) pair rustls and quinn take.
    pub fn pair(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key.clone_key())
    }
}

/// Which pod identity the sidecar presents to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pod {
    /// [`POD_PAYMENTS`]: allowed by the gateway's policy.
    Payments,
    /// [`POD_WEB`]: verified by the gateway, but no rule allows it.
    Web,
}

/// Every certificate the two processes and the tests need.
pub struct GatewayPki {
    /// The gateway's CA and server certificate (SANs: IP 127.0.0.1, DNS
    /// `gateway.test`), shaped as [`Certs`] so the crate's TLS helpers take it.
    pub gateway: Certs,
    /// Trust anchor for the pods' client certificates (the gateway's `client_ca`).
    pub client_ca_pem: PathBuf,
    pub payments: ClientCert,
    pub web: ClientCert,
    /// A certificate naming [`POD_PAYMENTS`] from a CA the gateway does not trust.
    pub stranger: ClientCert,
    /// The sidecar's app-facing listener certificate (localhost, 127.0.0.1),
    /// from a CA of its own (`app.ca_pem` is what the apps trust).
    pub app: Certs,
    _dir: TempDir,
}

impl GatewayPki {
    pub fn new() -> GatewayPki {
        let dir = TempDir::new("gateway-pki");
        let (gw_ca, gw_issuer) = ca("Bauta Test Gateway CA");
        let gw_key = rcgen::KeyPair::generate().expect("gateway key");
        let mut params = rcgen::CertificateParams::new(vec![
            "gateway.test".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("gateway certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "bauta test gateway");
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let gw_cert = params
            .signed_by(&gw_key, &gw_issuer)
            .expect("sign the gateway certificate");
        let gw_dir = TempDir::new("gateway-certs");
        let gateway = Certs {
            ca_pem: gw_dir.write("gw-ca.pem", &gw_ca.pem()),
            cert_pem: gw_dir.write("gw.pem", &gw_cert.pem()),
            key_pem: gw_dir.write_secret("gw.key", &gw_key.serialize_pem()),
            ca_der: gw_ca.der().clone(),
            dir: gw_dir,
        };

        let (client_ca, client_issuer) = ca("Bauta Test Pod CA");
        let client_ca_pem = dir.write("pod-ca.pem", &client_ca.pem());
        let payments = issue(&dir, &client_issuer, "payments", POD_PAYMENTS);
        let web = issue(&dir, &client_issuer, "web", POD_WEB);
        let (_, other_issuer) = ca("Bauta Test Stranger CA");
        let stranger = issue(&dir, &other_issuer, "stranger", POD_PAYMENTS);
        GatewayPki {
            gateway,
            client_ca_pem,
            payments,
            web,
            stranger,
            app: make_certs(),
            _dir: dir,
        }
    }

    pub fn pod(&self, pod: Pod) -> &ClientCert {
        match pod {
            Pod::Payments => &self.payments,
            Pod::Web => &self.web,
        }
    }

    /// A rustls client config trusting the gateway CA, offering `alpn`,
    /// presenting `cert` when given.
    pub fn gateway_client_config(
        &self,
        cert: Option<&ClientCert>,
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.gateway.ca_der.clone())
            .expect("add the gateway CA");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
        let mut cfg = match cert {
            Some(c) => builder
                .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// TLS to the gateway as `server_name` (an IP or `gateway.test`),
    /// presenting `cert`. `Err` when the handshake fails (with TLS 1.3 a
    /// refused client certificate may only show at the first read).
    pub async fn tls_to_gateway(
        &self,
        addr: SocketAddr,
        server_name: &str,
        cert: Option<&ClientCert>,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(server_name.to_string()).expect("server name");
        let tcp = TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(self.gateway_client_config(cert, alpn))
            .connect(name, tcp)
            .await
    }
}

impl Default for GatewayPki {
    fn default() -> Self {
        GatewayPki::new()
    }
}

fn ca(cn: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert, rcgen::Issuer::new(params, key))
}

fn issue(
    dir: &TempDir,
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    file: &str,
    identity: &'static str,
) -> ClientCert {
    let key = rcgen::KeyPair::generate().expect("client key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(identity.try_into().expect("URI SAN"))];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, file);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params
        .signed_by(&key, issuer)
        .expect("sign client certificate");
    ClientCert {
        identity,
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der()).expect("client key DER"),
        cert_pem: dir.write(&format!("{file}.pem"), &cert.pem()),
        key_pem: dir.write_secret(&format!("{file}.key"), &key.serialize_pem()),
    }
}

// === configurations ===

/// The gateway's configuration: listener [`GATEWAY_LISTENER`] on
/// `127.0.0.1:port` (0: any) with client certificates required, and a
/// policy allowing loopback targets to `spiffe://corp/payments/*` only.
pub fn gateway_toml(pki: &GatewayPki, port: u16) -> String {
    gateway_toml_with(pki, port, true, 1)
}

/// [`gateway_toml`], its listener serving h3 (UDP) or not (without h3 it
/// is `["http1", "h2"]` and nothing listens on the gateway's UDP port),
/// with `shutdown_grace_s` for its open tunnels on SIGTERM.
pub fn gateway_toml_with(pki: &GatewayPki, port: u16, h3: bool, grace_s: u64) -> String {
    let protocols = if h3 {
        r#"["http1", "h2", "h3"]"#
    } else {
        r#"["http1", "h2"]"#
    };
    format!(
        r#"[proxy]
name = "{GATEWAY_NAME}"

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "{GATEWAY_LISTENER}"
listen = "127.0.0.1:{port}"
protocols = {protocols}
tls_cert = '{cert}'
tls_key = '{key}'
client_ca = '{client_ca}'
client_auth = "required"

[policy]
default = "deny"

[[policy.rule]]
name = "{GATEWAY_RULE}"
action = "allow"
identities = ["spiffe://corp/payments/*"]
cidrs = ["127.0.0.0/8"]

[limits]
shutdown_grace_s = {grace_s}
connect_timeout_ms = 2000
"#,
        cert = pki.gateway.cert_pem.display(),
        key = pki.gateway.key_pem.display(),
        client_ca = pki.client_ca_pem.display(),
    )
}

/// The sidecar's `[gateway]` section: `url` to `gateway`, HTTP/2, the
/// gateway CA, the pod's certificate, one connection.
pub fn gateway_section(pki: &GatewayPki, gateway: SocketAddr, pod: Pod) -> String {
    gateway_section_with(pki, gateway, pod, PROTOCOLS_DEFAULT)
}

/// [`gateway_section`] with `protocols` (a TOML array: `["h3"]`,
/// `["h2"]`, `["h3", "h2"]`).
pub fn gateway_section_with(
    pki: &GatewayPki,
    gateway: SocketAddr,
    pod: Pod,
    protocols: &str,
) -> String {
    let cert = pki.pod(pod);
    format!(
        r#"[gateway]
url = "https://{gateway}"
protocols = {protocols}
ca = '{ca}'
client_cert = '{client_cert}'
client_key = '{client_key}'
connections = 1
"#,
        ca = pki.gateway.ca_pem.display(),
        client_cert = cert.cert_pem.display(),
        client_key = cert.key_pem.display(),
    )
}

/// The sidecar's configuration: [`SIDECAR_PLAIN`] (HTTP/1.1) and
/// [`SIDECAR_TLS`] (http1, h2, h3) for the app, admin, the `[gateway]`
/// section when `gateway` is given (without it the sidecar dials directly,
/// as Bauta does today), and a local policy: deny port
/// [`SIDECAR_DENIED_PORT`], allow loopback.
pub fn sidecar_toml(pki: &GatewayPki, gateway: Option<(SocketAddr, Pod)>) -> String {
    sidecar_toml_with(pki, gateway, PROTOCOLS_DEFAULT)
}

/// [`sidecar_toml`] whose `[gateway]` (if any) has `protocols`.
pub fn sidecar_toml_with(
    pki: &GatewayPki,
    gateway: Option<(SocketAddr, Pod)>,
    protocols: &str,
) -> String {
    let section = gateway
        .map(|(addr, pod)| gateway_section_with(pki, addr, pod, protocols))
        .unwrap_or_default();
    format!(
        r#"[proxy]
name = "{SIDECAR_NAME}"

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "{SIDECAR_PLAIN}"
listen = "127.0.0.1:0"
protocols = ["http1"]

[[listener]]
name = "{SIDECAR_TLS}"
listen = "127.0.0.1:0"
protocols = ["http1", "h2", "h3"]
tls_cert = '{cert}'
tls_key = '{key}'

{section}
[policy]
default = "deny"

[[policy.rule]]
name = "{SIDECAR_DENY_RULE}"
action = "deny"
ports = [{SIDECAR_DENIED_PORT}]

[[policy.rule]]
name = "{SIDECAR_ALLOW_RULE}"
action = "allow"
cidrs = ["127.0.0.0/8"]

[limits]
shutdown_grace_s = 1
connect_timeout_ms = 2000
"#,
        cert = pki.app.cert_pem.display(),
        key = pki.app.key_pem.display(),
    )
}

/// `bauta check --config PATH`: `Ok(summary)` or `Err(diagnostics)`.
pub fn bauta_check(path: &std::path::Path) -> Result<String, String> {
    let mut cmd = std::process::Command::new(bauta_bin());
    cmd.arg("check").arg("--config").arg(path);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

// === the two processes ===

/// A gateway and a sidecar, each a `bauta run` child process (killed on drop).
pub struct GatewayEnv {
    pub pki: GatewayPki,
    dir: TempDir,
    gateway: Option<BautaProcess>,
    /// Where the gateway listens (TCP and UDP): fixed after its first start
    /// (or [`GatewayEnv::reserve_gateway_addr`]), so a restart reuses it.
    gateway_addr: Option<SocketAddr>,
    sidecar: Option<BautaProcess>,
    /// Appended to the gateway's configuration (origins, secondary certs).
    gateway_extra: String,
    /// The gateway's `shutdown_grace_s` (1 unless a test needs longer).
    gateway_grace_s: u64,
    /// The sidecar's `[gateway] protocols` (TOML array).
    protocols: &'static str,
    /// Whether the gateway's listener serves h3 (listens on UDP).
    gateway_h3: bool,
}

impl GatewayEnv {
    pub fn new() -> GatewayEnv {
        crate::init();
        GatewayEnv {
            pki: GatewayPki::new(),
            dir: TempDir::new("gateway-env"),
            gateway: None,
            gateway_addr: None,
            sidecar: None,
            gateway_extra: String::new(),
            gateway_grace_s: 1,
            protocols: PROTOCOLS_DEFAULT,
            gateway_h3: true,
        }
    }

    /// The sidecar's `[gateway] protocols` from its next start on: a TOML
    /// array ([`Proto::toml`], [`PROTOCOLS_RACE`]); [`PROTOCOLS_DEFAULT`]
    /// unless set.
    pub fn set_protocols(&mut self, protocols: &'static str) {
        self.protocols = protocols;
    }

    /// The sidecar's `[gateway] protocols` (TOML array).
    pub fn protocols(&self) -> &'static str {
        self.protocols
    }

    /// Whether the gateway's listener serves h3, from its next start on
    /// (default: yes). Without it the listener is `["http1", "h2"]` and
    /// nothing answers on the gateway's UDP port: UDP to the gateway is
    /// blocked, as far as the sidecar can tell.
    pub fn set_gateway_h3(&mut self, h3: bool) {
        self.gateway_h3 = h3;
    }

    /// The gateway's `[limits] shutdown_grace_s` from its next start on.
    pub fn set_gateway_grace_s(&mut self, seconds: u64) {
        self.gateway_grace_s = seconds;
    }

    /// Gateway and sidecar (with `[gateway]` and `pod`'s certificate), both up.
    pub async fn start(pod: Pod) -> GatewayEnv {
        let mut env = GatewayEnv::new();
        env.start_gateway().await;
        env.start_sidecar(pod).await;
        env
    }

    /// The gateway's address: a loopback port nothing listens on, for a
    /// sidecar whose gateway never starts.
    pub fn reserve_gateway_addr(&mut self) -> SocketAddr {
        assert!(self.gateway_addr.is_none(), "gateway address already set");
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::closed_port()));
        self.gateway_addr = Some(addr);
        addr
    }

    /// Where the gateway listens (after its first start or a reservation).
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
            .expect("the gateway has an address once started or reserved")
    }

    /// `https://127.0.0.1:PORT`, as in the sidecar's `[gateway] url`.
    pub fn gateway_url(&self) -> String {
        format!("https://{}", self.gateway_addr())
    }

    /// Start the gateway: on any free port the first time, on the same
    /// port afterwards (a restart). Returns its listener address.
    pub async fn start_gateway(&mut self) -> SocketAddr {
        assert!(self.gateway.is_none(), "the gateway is already running");
        let port = self.gateway_addr.map_or(0, |a| a.port());
        let text = gateway_toml_with(&self.pki, port, self.gateway_h3, self.gateway_grace_s)
            + &self.gateway_extra;
        let path = self.dir.write("gateway.toml", &text);
        let p = BautaProcess::start(&path).await;
        let addr = p.listener(GATEWAY_LISTENER);
        if let Some(before) = self.gateway_addr {
            assert_eq!(addr, before, "the gateway restarted on the same address");
        }
        self.gateway_addr = Some(addr);
        self.gateway = Some(p);
        addr
    }

    /// SIGKILL the gateway (no drain, no GOAWAY) and wait (5 s at most) until it is gone.
    pub async fn kill_gateway(&mut self) {
        let mut p = self.gateway.take().expect("the gateway is running");
        p.signal("KILL");
        assert!(
            p.wait_exit(Duration::from_secs(5)).await.is_some(),
            "the gateway (pid {}) did not exit within 5 s of SIGKILL",
            p.pid
        );
    }

    /// TOML appended to the gateway's configuration from its next start on
    /// (`[[origin]]` tables, `[secondary_certs]`).
    pub fn set_gateway_extra(&mut self, extra: &str) {
        self.gateway_extra = extra.to_string();
    }

    /// Start the gateway again on the address it had.
    pub async fn restart_gateway(&mut self) -> SocketAddr {
        assert!(
            self.gateway_addr.is_some(),
            "restart needs a gateway that ran before"
        );
        self.start_gateway().await
    }

    /// The sidecar's configuration with `[gateway]` for `pod` (and the
    /// protocols of [`GatewayEnv::set_protocols`]).
    pub fn sidecar_config(&self, pod: Pod) -> String {
        sidecar_toml_with(&self.pki, Some((self.gateway_addr(), pod)), self.protocols)
    }

    /// Start the sidecar with `[gateway]` pointing at the gateway's address.
    /// Its configuration is first checked with `bauta check`, so a binary
    /// without sidecar chaining fails here with one clear message.
    pub async fn start_sidecar(&mut self, pod: Pod) -> &BautaProcess {
        let text = self.sidecar_config(pod);
        self.start_sidecar_with(&text, true).await
    }

    /// Start the sidecar from `text` (e.g. [`sidecar_toml`] without a
    /// gateway, dialling directly). `chained`: whether `text` has `[gateway]`
    /// (only for the failure message).
    pub async fn start_sidecar_with(&mut self, text: &str, chained: bool) -> &BautaProcess {
        assert!(self.sidecar.is_none(), "the sidecar is already running");
        let path = self.dir.write("sidecar.toml", text);
        if let Err(diag) = bauta_check(&path) {
            if chained {
                panic!(
                    "the sidecar's configuration with a [gateway] section is refused by \
                     `bauta check` (sidecar chaining not implemented in this binary?):\n{diag}\n\
                     --- sidecar.toml ---\n{text}"
                );
            }
            panic!("the sidecar's configuration is refused by `bauta check`:\n{diag}\n---\n{text}");
        }
        let p = BautaProcess::start(&path).await;
        self.sidecar.insert(p)
    }

    pub fn gateway(&self) -> &BautaProcess {
        self.gateway.as_ref().expect("the gateway is running")
    }

    pub fn sidecar(&self) -> &BautaProcess {
        self.sidecar.as_ref().expect("the sidecar is running")
    }

    pub fn sidecar_mut(&mut self) -> &mut BautaProcess {
        self.sidecar.as_mut().expect("the sidecar is running")
    }

    /// The gateway's TLS listener.
    pub fn gateway_listener(&self) -> SocketAddr {
        self.gateway().listener(GATEWAY_LISTENER)
    }

    /// The sidecar's plaintext HTTP/1.1 listener.
    pub fn sidecar_plain(&self) -> SocketAddr {
        self.sidecar().listener(SIDECAR_PLAIN)
    }

    /// The sidecar's TLS listener (TCP: http1, h2; UDP: h3).
    pub fn sidecar_tls(&self) -> SocketAddr {
        self.sidecar().listener(SIDECAR_TLS)
    }

    pub async fn gateway_metrics(&self) -> String {
        fetch_metrics(self.gateway().admin).await
    }

    pub async fn sidecar_metrics(&self) -> String {
        fetch_metrics(self.sidecar().admin).await
    }

    /// Sum of the gateway's samples of `name` whose labels include `labels`
    /// (`None`: no such series).
    pub async fn gateway_metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_opt(&self.gateway_metrics().await, name, labels)
    }

    /// Sum of the sidecar's samples of `name` whose labels include `labels`.
    pub async fn sidecar_metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_opt(&self.sidecar_metrics().await, name, labels)
    }

    /// Connections the gateway accepted on its listener, every protocol
    /// (`bauta_connections_total{listener="mesh"}`, summed).
    pub async fn gateway_connections_accepted(&self) -> f64 {
        let text = self.gateway_metrics().await;
        metric_opt(
            &text,
            "bauta_connections_total",
            &[("listener", GATEWAY_LISTENER)],
        )
        .unwrap_or_else(|| {
            panic!(
                "the gateway exports no bauta_connections_total{{listener=\"{GATEWAY_LISTENER}\"}}:\n{}",
                family_lines(&text, "bauta_connections_total")
            )
        })
    }

    /// Connections the gateway accepted on its listener over `protocol`
    /// (`bauta_connections_total{listener="mesh",protocol}`; 0 when the
    /// series is absent, e.g. h3 on a listener without it).
    pub async fn gateway_connections_over(&self, protocol: &str) -> f64 {
        self.gateway_metric(
            "bauta_connections_total",
            &[("listener", GATEWAY_LISTENER), ("protocol", protocol)],
        )
        .await
        .unwrap_or(0.0)
    }

    /// Requests the gateway counted (`bauta_requests_total`, summed over the
    /// series whose labels include `labels`; 0 when there is none).
    pub async fn gateway_requests(&self, labels: &[(&str, &str)]) -> f64 {
        self.gateway_metric("bauta_requests_total", labels)
            .await
            .unwrap_or(0.0)
    }

    /// Poll one of the two admin endpoints (every 50 ms, at most `limit`)
    /// until the summed `name{labels…}` exists and `pred` holds; the last
    /// value (`None`: never present).
    pub async fn wait_metric_on(
        admin: SocketAddr,
        name: &str,
        labels: &[(&str, &str)],
        limit: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let v = metric_opt(&fetch_metrics(admin).await, name, labels);
            if v.is_some_and(&pred) || tokio::time::Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Default for GatewayEnv {
    fn default() -> Self {
        GatewayEnv::new()
    }
}

// === Proxy-Status ===

/// One member of a `Proxy-Status` list: the proxy's name and its parameters
/// (values unquoted), in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyStatusMember {
    pub name: String,
    pub params: Vec<(String, String)>,
}

impl ProxyStatusMember {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// An RFC 9209 `Proxy-Status` value, split into members (RFC 8941 list;
/// commas and semicolons inside quoted strings are kept).
#[derive(Clone, Debug)]
pub struct ProxyStatus {
    pub raw: String,
    pub members: Vec<ProxyStatusMember>,
}

impl ProxyStatus {
    pub fn parse(raw: &str) -> ProxyStatus {
        let members = split_outside_quotes(raw, ',')
            .into_iter()
            .map(|m| {
                let mut parts = split_outside_quotes(&m, ';').into_iter();
                let name = unquote(parts.next().unwrap_or_default().trim());
                let params = parts
                    .map(|p| match p.split_once('=') {
                        Some((k, v)) => (k.trim().to_string(), unquote(v.trim())),
                        None => (p.trim().to_string(), "?1".to_string()),
                    })
                    .collect();
                ProxyStatusMember { name, params }
            })
            .collect();
        ProxyStatus {
            raw: raw.to_string(),
            members,
        }
    }

    /// The member named `name`, and its position.
    pub fn member(&self, name: &str) -> Option<(usize, &ProxyStatusMember)> {
        self.members
            .iter()
            .enumerate()
            .find(|(_, m)| m.name == name)
    }

    /// The member named `name`; fails the test (`what`) if there is none.
    pub fn expect_member(&self, name: &str, what: &str) -> (usize, &ProxyStatusMember) {
        self.member(name).unwrap_or_else(|| {
            panic!(
                "{what}: Proxy-Status {:?} has no member {name:?} (members: {:?})",
                self.raw,
                self.members.iter().map(|m| &m.name).collect::<Vec<_>>()
            )
        })
    }
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if quoted {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if c == '"' {
            quoted = true;
            cur.push(c);
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

// === payloads ===

/// `n` bytes no other call returns (random per process, then a counter).
pub fn random_bytes(n: usize) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    pattern(n, h.finish())
}

/// `2n` lower-case hex characters of [`random_bytes`]: a text payload
/// (command-line arguments, HTTP bodies) no other call returns.
pub fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_status_members_in_order_with_quoted_commas() {
        let ps = ProxyStatus::parse(
            r#"gw; error=http_request_denied; details="a, b; c", sidecar; next-hop="127.0.0.1:1"; received-status=403"#,
        );
        assert_eq!(ps.members.len(), 2, "{ps:?}");
        assert_eq!(ps.members[0].name, "gw");
        assert_eq!(ps.members[0].param("error"), Some("http_request_denied"));
        assert_eq!(ps.members[0].param("details"), Some("a, b; c"));
        let (at, sidecar) = ps.expect_member("sidecar", "test");
        assert_eq!(at, 1);
        assert_eq!(sidecar.param("next-hop"), Some("127.0.0.1:1"));
        assert_eq!(sidecar.param("received-status"), Some("403"));
    }

    #[test]
    fn random_payloads_differ() {
        assert_ne!(random_bytes(32), random_bytes(32));
        assert_eq!(random_hex(8).len(), 16);
    }
}

//! `bauta probe`: connect to a proxy as a client that supports secondary
//! certificates, optionally send a CONNECT, and report every
//! SERVER_CERTIFICATE received — names, chain, validity, signature scheme,
//! whether the authenticator validated (RFC 9261) and whether the certificate
//! is acceptable (chain and name) — and how the CONNECT was answered: status,
//! setup time, `Proxy-Status`. With `--connect-udp`, a CONNECT-UDP tunnel
//! (HTTP/3 datagrams, or capsules over HTTP/2) and the echo round trips
//! through it (`udp.rs`). The operator's view of what a proxy advertises and
//! whether it tunnels.
//!
//! The probe is a client like the sidecar's gateway connections and runs on
//! their pieces: the HTTP/2 tap under the h2 crate, the raw HTTP/3 client
//! (`crate::gateway::{h2_tap, h3}`). It collects authenticators instead of
//! acting on them, and judges them here.

mod http2;
mod http3;
mod udp;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::SignatureScheme;
use serde::Serialize;

use crate::seccert::negotiation::Codepoints;
use crate::seccert::{self, Exporter, Validator};

/// What the proxy sent on the connection, for [`judge`].
struct Seen {
    /// `SETTINGS_HTTP_SERVER_CERT_AUTH = 1` in its SETTINGS.
    setting_advertised: bool,
    /// Every SERVER_CERTIFICATE authenticator, in order.
    certificates: Vec<bytes::Bytes>,
}

pub use udp::{RttReport, UdpOptions, UdpReport, DEFAULT_TEMPLATE, MAX_SIZE, MIN_SIZE};

pub struct ProbeOptions {
    /// `https://host:port`
    pub url: String,
    pub h3: bool,
    pub ca: Option<std::path::PathBuf>,
    pub connect: Option<String>,
    /// Open a CONNECT-UDP tunnel and time echoes through it (not with
    /// `connect`).
    pub connect_udp: Option<UdpOptions>,
    /// The `Proxy-Authorization` value sent with the CONNECT, if any (see
    /// [`basic_authorization`]).
    pub proxy_authorization: Option<String>,
    /// How long to listen for certificates after the exchange.
    pub wait: Duration,
    pub codepoints: Codepoints,
}

/// How long a CONNECT may wait for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// `Basic base64(user:password)` (RFC 7617 §2), for `Proxy-Authorization`.
pub fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// What the probe saw.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub proxy: String,
    pub protocol: String,
    /// The proxy sent SETTINGS_HTTP_SERVER_CERT_AUTH = 1.
    pub setting_advertised: bool,
    pub connect_status: Option<u16>,
    /// From sending the CONNECT to its answer's header, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<f64>,
    /// The answer's `Proxy-Status` when it was not 2xx (RFC 9209).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_status: Option<String>,
    pub certificates: Vec<CertReport>,
    /// With `--connect-udp`: the tunnel's datagrams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct CertReport {
    pub bytes: usize,
    pub validated: bool,
    pub validation_error: Option<String>,
    pub signature_scheme: Option<String>,
    pub names: Vec<String>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub chain_length: usize,
    /// Per name: "ok" or why the certificate is not acceptable for it.
    pub acceptable: Vec<(String, String)>,
}

impl Report {
    /// Record a CONNECT's answer: the status, how long it took, and — when
    /// it is not 2xx — its `Proxy-Status`.
    fn answered(
        &mut self,
        status: Option<u16>,
        took: Duration,
        proxy_status: impl FnOnce() -> Option<String>,
    ) {
        self.connect_status = status;
        self.connect_ms = Some(millis(took));
        if !status.is_some_and(is_success) {
            self.proxy_status = proxy_status();
        }
    }

    /// A CONNECT or CONNECT-UDP was answered with something other than
    /// 2xx, or every datagram sent through the tunnel was lost.
    pub fn tunnel_failed(&self) -> bool {
        self.connect_status.is_some_and(|s| !is_success(s))
            || self.udp.as_ref().is_some_and(UdpReport::all_lost)
    }

    pub fn print_text(&self) {
        println!("proxy {} over {}", self.proxy, self.protocol);
        println!(
            "  SETTINGS_HTTP_SERVER_CERT_AUTH from the proxy: {}",
            if self.setting_advertised {
                "1"
            } else {
                "absent or 0"
            }
        );
        if let Some(s) = self.connect_status {
            let what = match &self.udp {
                Some(u) => format!("CONNECT-UDP {} ({})", u.target, u.path),
                None => "CONNECT".into(),
            };
            match self.connect_ms {
                Some(ms) => println!("  {what} answered {s} in {ms:.1} ms"),
                None => println!("  {what} answered {s}"),
            }
        }
        if let Some(p) = &self.proxy_status {
            println!("  Proxy-Status: {p}");
        }
        if let Some(u) = &self.udp {
            u.print_text();
        }
        if self.certificates.is_empty() {
            println!("  no SERVER_CERTIFICATE received");
        }
        for (i, c) in self.certificates.iter().enumerate() {
            println!("  SERVER_CERTIFICATE #{} ({} bytes)", i + 1, c.bytes);
            match &c.validation_error {
                None => println!(
                    "    authenticator: valid ({})",
                    c.signature_scheme.as_deref().unwrap_or("?")
                ),
                Some(e) => println!("    authenticator: INVALID: {e}"),
            }
            println!("    names: {}", c.names.join(", "));
            if let Some(s) = &c.subject {
                println!("    subject: {s}");
            }
            if let Some(s) = &c.issuer {
                println!("    issuer: {s}");
            }
            if let (Some(a), Some(b)) = (&c.not_before, &c.not_after) {
                println!("    valid: {a} .. {b}");
            }
            println!("    chain: {} certificate(s)", c.chain_length);
            for (name, verdict) in &c.acceptable {
                println!("    acceptable for {name}: {verdict}");
            }
        }
    }
}

/// The `Proxy-Status` field of an answer, several joined with ", ".
fn proxy_status(headers: &http::HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all("proxy-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// A duration in milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Run the probe.
pub async fn run(opts: &ProbeOptions) -> Result<Report, String> {
    let authority = opts
        .url
        .strip_prefix("https://")
        .ok_or("the proxy URL must start with https://")?
        .trim_end_matches('/');
    let target = crate::wire::target::Target::parse_authority(authority, Some(443))
        .map_err(|e| format!("proxy URL: {e}"))?;
    if opts.connect.is_some() && opts.connect_udp.is_some() {
        return Err("--connect and --connect-udp cannot be used together".into());
    }
    let roots = Arc::new(crate::tls::root_store(opts.ca.as_deref())?);
    if opts.h3 {
        return http3::probe(opts, &target, roots).await;
    }
    http2::probe(opts, &target, roots).await
}

/// Validate and describe every certificate the proxy sent.
fn judge(
    report: &mut Report,
    seen: Seen,
    exporter: Exporter,
    offered: &[SignatureScheme],
    roots: Arc<rustls::RootCertStore>,
) -> Result<(), String> {
    report.setting_advertised = seen.setting_advertised;
    let mut validator = Validator::new(exporter, offered);
    let verifier = seccert::webpki_verifier(roots).map_err(|e| e.to_string())?;
    for bytes in seen.certificates {
        report
            .certificates
            .push(describe(&mut validator, &*verifier, &bytes));
    }
    Ok(())
}

fn describe(
    validator: &mut Validator,
    verifier: &dyn rustls::client::danger::ServerCertVerifier,
    bytes: &[u8],
) -> CertReport {
    let mut r = CertReport {
        bytes: bytes.len(),
        ..CertReport::default()
    };
    match validator.validate(bytes) {
        Ok(v) => {
            r.validated = true;
            r.signature_scheme = Some(format!("{:?}", v.scheme()));
            r.chain_length = v.chain().len();
            if let Some(leaf) = v.end_entity() {
                describe_leaf(leaf, &mut r);
            }
            let now = UnixTime::now();
            for name in r.names.clone() {
                let verdict = match ServerName::try_from(name.clone()) {
                    Ok(sn) => match v.accept_for(verifier, &sn, now) {
                        Ok(_) => "ok".to_string(),
                        Err(e) => e.to_string(),
                    },
                    Err(_) => "not a server name".into(),
                };
                r.acceptable.push((name, verdict));
            }
        }
        Err(e) => r.validation_error = Some(e.to_string()),
    }
    r
}

fn describe_leaf(leaf: &CertificateDer<'_>, r: &mut CertReport) {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(leaf.as_ref()) else {
        return;
    };
    r.subject = Some(cert.subject().to_string());
    r.issuer = Some(cert.issuer().to_string());
    r.not_before = Some(cert.validity().not_before.to_string());
    r.not_after = Some(cert.validity().not_after.to_string());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => r.names.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => r
                        .names
                        .push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        r.names.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
}

//! `bauta probe`: connect to a proxy as a client that supports secondary
//! certificates, optionally send a CONNECT, and report every
//! SERVER_CERTIFICATE received — names, chain, validity, signature scheme,
//! whether the authenticator validated (RFC 9261) and whether the certificate
//! is acceptable (chain and name). The operator's view of what a proxy
//! advertises.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::SignatureScheme;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::seccert::{self, Exporter, Validator};
use crate::secondary::Codepoints;

/// Largest SERVER_CERTIFICATE payload the probe accepts (spec §4.4).
const MAX_AUTHENTICATOR: usize = 64 * 1024;

pub struct ProbeOptions {
    /// `https://host:port`
    pub url: String,
    pub h3: bool,
    pub ca: Option<std::path::PathBuf>,
    pub connect: Option<String>,
    /// How long to listen for certificates after the exchange.
    pub wait: Duration,
    pub codepoints: Codepoints,
}

/// What the probe saw.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub proxy: String,
    pub protocol: String,
    /// The proxy sent SETTINGS_HTTP_SERVER_CERT_AUTH = 1.
    pub setting_advertised: bool,
    pub connect_status: Option<u16>,
    pub certificates: Vec<CertReport>,
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
            println!("  CONNECT answered {s}");
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

/// Run the probe.
pub async fn run(opts: &ProbeOptions) -> Result<Report, String> {
    let authority = opts
        .url
        .strip_prefix("https://")
        .ok_or("the proxy URL must start with https://")?
        .trim_end_matches('/');
    let target = crate::target::Target::parse_authority(authority, Some(443))
        .map_err(|e| format!("proxy URL: {e}"))?;
    let roots = Arc::new(roots(opts.ca.as_deref())?);
    if opts.h3 {
        return Err(
            "--h3: probing over HTTP/3 is not supported by this build yet; use HTTP/2".into(),
        );
    }
    probe_h2(opts, &target, roots).await
}

fn roots(ca: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(p) => {
            for c in crate::tls::load_certs(p)? {
                roots.add(c).map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
        }
    }
    Ok(roots)
}

async fn probe_h2(
    opts: &ProbeOptions,
    target: &crate::target::Target,
    roots: Arc<rustls::RootCertStore>,
) -> Result<Report, String> {
    let provider = crate::tls::provider();
    let offered: Vec<SignatureScheme> = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(Arc::clone(&roots))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let server_name = match &target.host {
        bauta_policy::Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        bauta_policy::Host::Name(n) => {
            ServerName::try_from(n.clone()).map_err(|e| e.to_string())?
        }
    };
    let addr = format!("{}:{}", target.host, target.port);
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .map_err(|_| format!("{addr}: connect timed out"))?
    .map_err(|e| format!("{addr}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("the proxy did not negotiate h2".into());
    }
    let exporter = Exporter::from_rustls(tls.get_ref().1).map_err(|e| format!("exporter: {e}"))?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let io = Tap::new(tls, opts.codepoints, Arc::clone(&seen));
    let (mut client, conn) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("HTTP/2: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut report = Report {
        proxy: opts.url.clone(),
        protocol: "h2".into(),
        ..Report::default()
    };
    // Let SETTINGS go both ways.
    client = client.ready().await.map_err(|e| format!("HTTP/2: {e}"))?;
    if let Some(dest) = &opts.connect {
        let req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(dest.as_str())
            .body(())
            .map_err(|e| format!("--connect {dest}: {e}"))?;
        let (resp, _stream) = client
            .send_request(req, false)
            .map_err(|e| format!("CONNECT: {e}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(15), resp)
            .await
            .map_err(|_| "CONNECT: no answer".to_string())?
            .map_err(|e| format!("CONNECT: {e}"))?;
        report.connect_status = Some(resp.status().as_u16());
    }
    tokio::time::sleep(opts.wait).await;
    let (certs, advertised) = {
        let s = seen.lock().map_err(|_| "internal error")?;
        (s.certificates.clone(), s.setting_advertised)
    };
    report.setting_advertised = advertised;
    let mut validator = Validator::new(exporter, &offered);
    let verifier = seccert::webpki_verifier(roots).map_err(|e| e.to_string())?;
    for bytes in certs {
        report
            .certificates
            .push(describe(&mut validator, &*verifier, &bytes));
    }
    Ok(report)
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

// === the frame tap ===

#[derive(Default)]
struct Seen {
    setting_advertised: bool,
    certificates: Vec<Bytes>,
}

/// Adds SETTINGS_HTTP_SERVER_CERT_AUTH = 1 to the client's first SETTINGS
/// frame on the way out, and picks SERVER_CERTIFICATE frames (and the
/// proxy's setting) out of the bytes on the way in. h2 ignores both.
struct Tap<IO> {
    inner: IO,
    cp: Codepoints,
    seen: Arc<Mutex<Seen>>,
    // Output: preface and the first SETTINGS frame are held until rewritten.
    out_pending: Vec<u8>,
    out_flushing: Option<(Vec<u8>, usize)>,
    out_done: bool,
    // Input frame parser.
    inbuf: Vec<u8>,
}

impl<IO> Tap<IO> {
    fn new(inner: IO, cp: Codepoints, seen: Arc<Mutex<Seen>>) -> Tap<IO> {
        Tap {
            inner,
            cp,
            seen,
            out_pending: Vec::new(),
            out_flushing: None,
            out_done: false,
            inbuf: Vec::new(),
        }
    }

    /// Parse whole frames out of `inbuf`, keeping what belongs to us.
    fn scan_input(&mut self) {
        loop {
            let Some(head) = self.inbuf.get(..9) else {
                return;
            };
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (ty, flags) = (head[3], head[4]);
            if len > MAX_AUTHENTICATOR + 9 {
                // Not a frame we keep; skip it without buffering forever.
                self.inbuf.clear();
                return;
            }
            let Some(payload) = self.inbuf.get(9..9 + len) else {
                return;
            };
            if let Ok(mut seen) = self.seen.lock() {
                if ty == 0x4 && flags & 0x1 == 0 {
                    for e in payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([e[0], e[1]]);
                        let value = u32::from_be_bytes([e[2], e[3], e[4], e[5]]);
                        if id == self.cp.h2_setting {
                            seen.setting_advertised = value == 1;
                        }
                    }
                } else if ty == self.cp.h2_frame_type {
                    seen.certificates.push(Bytes::copy_from_slice(payload));
                }
            }
            self.inbuf.drain(..9 + len);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tap<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = buf.filled()[before..].to_vec();
            self.inbuf.extend_from_slice(&new);
            self.scan_input();
        }
        res
    }
}

const PREFACE_LEN: usize = 24;

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tap<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // Drain a rewritten prefix first.
        if let Some((bytes, off)) = &mut this.out_flushing {
            while *off < bytes.len() {
                let n =
                    std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*off..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *off += n;
            }
            this.out_flushing = None;
        }
        if this.out_done {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        // Hold the preface and the first frame (SETTINGS) until complete.
        this.out_pending.extend_from_slice(data);
        let Some(head) = this.out_pending.get(PREFACE_LEN..PREFACE_LEN + 9) else {
            return Poll::Ready(Ok(data.len()));
        };
        let (len, ty) = (
            usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]),
            head[3],
        );
        let end = PREFACE_LEN + 9 + len;
        if this.out_pending.len() < end {
            return Poll::Ready(Ok(data.len()));
        }
        let mut out = std::mem::take(&mut this.out_pending);
        if ty == 0x4 {
            let new_len = len + 6;
            out[PREFACE_LEN] = (new_len >> 16) as u8;
            out[PREFACE_LEN + 1] = (new_len >> 8) as u8;
            out[PREFACE_LEN + 2] = new_len as u8;
            let mut entry = Vec::with_capacity(6);
            entry.extend_from_slice(&this.cp.h2_setting.to_be_bytes());
            entry.extend_from_slice(&1u32.to_be_bytes());
            out.splice(end..end, entry);
        }
        this.out_done = true;
        this.out_flushing = Some((out, 0));
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some((bytes, off)) = &mut this.out_flushing {
            while *off < bytes.len() {
                let n =
                    std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*off..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *off += n;
            }
            this.out_flushing = None;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

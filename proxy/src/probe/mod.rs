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

use crate::seccert::negotiation::Codepoints;
use crate::seccert::{self, Exporter, Validator};

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
    let target = crate::wire::target::Target::parse_authority(authority, Some(443))
        .map_err(|e| format!("proxy URL: {e}"))?;
    let roots = Arc::new(crate::tls::root_store(opts.ca.as_deref())?);
    if opts.h3 {
        return probe_h3(opts, &target, roots).await;
    }
    probe_h2(opts, &target, roots).await
}

async fn probe_h2(
    opts: &ProbeOptions,
    target: &crate::wire::target::Target,
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
    let server_name = crate::tls::server_name(&target.host)?;
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
    judge(&mut report, &seen, exporter, &offered, roots)?;
    Ok(report)
}

/// HTTP/3 with raw QUIC streams: our control stream carries SETTINGS with
/// the extension's setting, the proxy's control stream is read for its
/// SETTINGS and SERVER_CERTIFICATE frames, and an optional CONNECT goes out
/// on a request stream with a minimal QPACK header block.
async fn probe_h3(
    opts: &ProbeOptions,
    target: &crate::wire::target::Target,
    roots: Arc<rustls::RootCertStore>,
) -> Result<Report, String> {
    use crate::wire::varint;
    // Our proxies run SHA-256 suites on QUIC; the exporter hash must match.
    let provider = crate::tls::quic_provider();
    let offered: Vec<SignatureScheme> = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(Arc::clone(&roots))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h3".to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(|e| e.to_string())?;
    let client_cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let bind: std::net::SocketAddr = match &target.host {
        bauta_policy::Host::Ip(std::net::IpAddr::V6(_)) => "[::]:0",
        _ => "0.0.0.0:0",
    }
    .parse()
    .map_err(|_| "bind address")?;
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(client_cfg);
    let addr = tokio::net::lookup_host(format!("{}:{}", target.host, target.port))
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the proxy's name did not resolve")?;
    let sni = match &target.host {
        bauta_policy::Host::Name(n) => n.clone(),
        bauta_policy::Host::Ip(ip) => ip.to_string(),
    };
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(addr, &sni).map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|_| "QUIC handshake timed out".to_string())?
    .map_err(|e| format!("QUIC: {e}"))?;
    let exporter = Exporter::from_quinn(&conn, seccert::HashAlg::Sha256)
        .map_err(|e| format!("exporter: {e}"))?;

    // Our control stream: type 0x00, SETTINGS { our setting = 1 }.
    let cp = opts.codepoints;
    let mut settings = Vec::new();
    varint::encode(cp.h3_setting, &mut settings).map_err(|e| e.to_string())?;
    varint::encode(1, &mut settings).map_err(|e| e.to_string())?;
    let mut ctrl = Vec::new();
    varint::encode(0x00, &mut ctrl).map_err(|e| e.to_string())?;
    push_frame(&mut ctrl, 0x04, &settings)?;
    let mut our_ctrl = conn.open_uni().await.map_err(|e| e.to_string())?;
    our_ctrl.write_all(&ctrl).await.map_err(|e| e.to_string())?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = {
        let conn = conn.clone();
        let seen = Arc::clone(&seen);
        let cp = opts.codepoints;
        tokio::spawn(async move {
            while let Ok(mut stream) = conn.accept_uni().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; 16 * 1024];
                    while let Ok(Some(n)) = stream.read(&mut chunk).await {
                        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                        if buf.len() > 4 * MAX_AUTHENTICATOR {
                            return;
                        }
                        scan_h3_control(&mut buf, cp, &seen);
                    }
                });
            }
        })
    };
    let mut report = Report {
        proxy: opts.url.clone(),
        protocol: "h3".into(),
        ..Report::default()
    };
    if let Some(dest) = &opts.connect {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut block = vec![0x00, 0x00, 0xC0 | 15]; // no dynamic table; :method CONNECT (static 15)
        block.push(0x50); // :authority (static 0), literal value follows
        if dest.len() > 126 {
            return Err("--connect: authority too long".into());
        }
        block.push(dest.len() as u8);
        block.extend_from_slice(dest.as_bytes());
        let mut frame = Vec::new();
        push_frame(&mut frame, 0x01, &block)?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        // Read until the first frame (the response HEADERS) is complete;
        // the proxy may send its header and payload in separate chunks.
        let mut head = Vec::new();
        let mut chunk = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while head.len() < 16 * 1024 {
            if h3_frame_complete(&head) {
                report.connect_status = h3_status(&head);
                break;
            }
            match tokio::time::timeout_at(deadline, recv.read(&mut chunk)).await {
                Ok(Ok(Some(n))) => head.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                _ => break,
            }
        }
        let _ = send.finish();
    }
    tokio::time::sleep(opts.wait).await;
    reader.abort();
    judge(&mut report, &seen, exporter, &offered, roots)?;
    conn.close(0x100u32.into(), b"probe done");
    Ok(report)
}

fn push_frame(out: &mut Vec<u8>, ty: u64, payload: &[u8]) -> Result<(), String> {
    use crate::wire::varint;
    varint::encode(ty, out).map_err(|e| e.to_string())?;
    varint::encode(payload.len() as u64, out).map_err(|e| e.to_string())?;
    out.extend_from_slice(payload);
    Ok(())
}

/// Pick SETTINGS and SERVER_CERTIFICATE frames off the proxy's control stream.
fn scan_h3_control(buf: &mut Vec<u8>, cp: Codepoints, seen: &Mutex<Seen>) {
    use crate::wire::varint;
    // The stream type comes first; only the control stream (0x00) matters.
    let Ok((ty, n)) = varint::decode(buf) else {
        return;
    };
    if ty != 0x00 {
        buf.clear();
        return;
    }
    let mut pos = n;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let Ok((fty, a)) = varint::decode(rest) else {
            break;
        };
        let Ok((len, b)) = varint::decode(rest.get(a..).unwrap_or_default()) else {
            break;
        };
        let Ok(len) = usize::try_from(len) else { break };
        let Some(payload) = rest.get(a + b..a + b + len) else {
            break;
        };
        if let Ok(mut s) = seen.lock() {
            if fty == 0x04 {
                let mut p = payload;
                while let Ok((id, x)) = varint::decode(p) {
                    let Ok((v, y)) = varint::decode(p.get(x..).unwrap_or_default()) else {
                        break;
                    };
                    if id == cp.h3_setting {
                        s.setting_advertised = v == 1;
                    }
                    p = p.get(x + y..).unwrap_or_default();
                }
            } else if fty == cp.h3_frame_type {
                s.certificates.push(Bytes::copy_from_slice(payload));
            }
        }
        pos += a + b + len;
    }
    // Keep the stream type and any partial frame.
    let mut kept = buf.get(..n).unwrap_or_default().to_vec();
    kept.extend_from_slice(buf.get(pos..).unwrap_or_default());
    *buf = kept;
}

/// `:status` from a HEADERS frame: a static-table entry, or a literal with a
/// static name reference (plain or Huffman-coded digits). Enough for a probe;
/// anything else reads as unknown.
fn h3_status(frame: &[u8]) -> Option<u16> {
    use crate::wire::varint;
    let (ty, a) = varint::decode(frame).ok()?;
    if ty != 0x01 {
        return None;
    }
    let (_len, b) = varint::decode(frame.get(a..)?).ok()?;
    let block = frame.get(a + b..)?;
    // Field section prefix: Required Insert Count (8-bit prefix) and Base
    // (7-bit prefix); a response without the dynamic table has both 0.
    let (_ric, n1) = prefixed_int(block, 8)?;
    let (_base, n2) = prefixed_int(block.get(n1..)?, 7)?;
    let line = block.get(n1 + n2..)?;
    let first = *line.first()?;
    // RFC 9204 Appendix A: the static table's :status entries.
    const STATUS: [(u64, u16); 14] = [
        (24, 103),
        (25, 200),
        (26, 304),
        (27, 404),
        (28, 503),
        (63, 100),
        (64, 204),
        (65, 206),
        (66, 302),
        (67, 400),
        (68, 403),
        (69, 421),
        (70, 425),
        (71, 500),
    ];
    if first & 0xC0 == 0xC0 {
        // Indexed field line, static table (6-bit index).
        let (idx, _) = prefixed_int(line, 6)?;
        return STATUS.iter().find(|(i, _)| *i == idx).map(|(_, s)| *s);
    }
    if first & 0xF0 == 0x50 {
        // Literal field line with a static name reference (4-bit index).
        let (_idx, n) = prefixed_int(line, 4)?;
        let value = line.get(n..)?;
        let huffman = *value.first()? & 0x80 != 0;
        let (len, m) = prefixed_int(value, 7)?;
        let bytes = value.get(m..m + usize::try_from(len).ok()?)?;
        let text = if huffman {
            huffman_digits(bytes)?
        } else {
            std::str::from_utf8(bytes).ok()?.to_string()
        };
        return text.parse().ok();
    }
    None
}

/// Whether `buf` starts with a whole HTTP/3 frame.
fn h3_frame_complete(buf: &[u8]) -> bool {
    use crate::wire::varint;
    let Ok((_, a)) = varint::decode(buf) else {
        return false;
    };
    let Ok((len, b)) = varint::decode(buf.get(a..).unwrap_or_default()) else {
        return false;
    };
    usize::try_from(len).is_ok_and(|len| buf.len() >= a + b + len)
}

/// An RFC 7541 §5.1 prefixed integer in the low `bits` of the first byte.
fn prefixed_int(buf: &[u8], bits: u32) -> Option<(u64, usize)> {
    let max = (1u64 << bits) - 1;
    let mut v = u64::from(*buf.first()?) & max;
    if v < max {
        return Some((v, 1));
    }
    let mut shift = 0;
    for (i, b) in buf.iter().enumerate().skip(1) {
        v = v.checked_add(u64::from(b & 0x7F).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
    None
}

/// Decode a Huffman-coded string made only of digits (RFC 7541 Appendix B:
/// '0'-'2' are 5-bit codes 0-2, '3'-'9' are 6-bit codes 0x19-0x1f).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let total = bytes.len() * 8;
    let bit = |i: usize| -> u8 { (bytes[i / 8] >> (7 - i % 8)) & 1 };
    let mut out = String::new();
    let mut i = 0;
    while i < total {
        // What is left may be EOS padding: all ones, fewer than 8 bits.
        if total - i < 8 && (i..total).all(|j| bit(j) == 1) {
            return Some(out);
        }
        let read = |n: usize| -> Option<u8> {
            if i + n > total {
                return None;
            }
            Some((i..i + n).fold(0u8, |acc, j| acc << 1 | bit(j)))
        };
        let five = read(5)?;
        if five <= 2 {
            out.push(char::from(b'0' + five));
            i += 5;
            continue;
        }
        let six = read(6)?;
        if (0x19..=0x1f).contains(&six) {
            out.push(char::from(b'3' + (six - 0x19)));
            i += 6;
            continue;
        }
        return None;
    }
    Some(out)
}

/// Validate and describe every certificate the tap or reader collected.
fn judge(
    report: &mut Report,
    seen: &Mutex<Seen>,
    exporter: Exporter,
    offered: &[SignatureScheme],
    roots: Arc<rustls::RootCertStore>,
) -> Result<(), String> {
    let (certs, advertised) = {
        let s = seen.lock().map_err(|_| "internal error")?;
        (s.certificates.clone(), s.setting_advertised)
    };
    report.setting_advertised = advertised;
    let mut validator = Validator::new(exporter, offered);
    let verifier = seccert::webpki_verifier(roots).map_err(|e| e.to_string())?;
    for bytes in certs {
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

impl<IO: AsyncWrite + Unpin> Tap<IO> {
    /// Write out the held (rewritten) preface and SETTINGS, if any.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, off)) = &mut self.out_flushing {
            while let Some(rest) = bytes.get(*off..).filter(|r| !r.is_empty()) {
                let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *off += n;
            }
            self.out_flushing = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tap<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // Drain a rewritten prefix first.
        std::task::ready!(this.poll_drain(cx))?;
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
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huffman_digits_decode() {
        // "502": '5' 011011, '0' 00000, '2' 00010: exactly 16 bits.
        assert_eq!(huffman_digits(&[0x6C, 0x02]).as_deref(), Some("502"));
        // "200": 00010 00000 00000 + one bit of EOS padding.
        assert_eq!(huffman_digits(&[0x10, 0x01]).as_deref(), Some("200"));
        // Eight bits of padding are an error (RFC 7541 §5.2).
        assert_eq!(huffman_digits(&[0xff]), None);
        assert_eq!(huffman_digits(&[0b1010_1010]), None);
    }

    #[test]
    fn status_from_static_and_literal_lines() {
        // HEADERS frame: type 1, len, prefix 00 00, indexed static 25 (:status 200).
        assert_eq!(h3_status(&[0x01, 0x03, 0x00, 0x00, 0xC0 | 25]), Some(200));
        // Literal with name ref 24 (:status), plain value "502".
        assert_eq!(
            h3_status(&[0x01, 0x08, 0x00, 0x00, 0x5F, 0x09, 0x03, b'5', b'0', b'2']),
            Some(502)
        );
        assert_eq!(prefixed_int(&[0x1F, 0x9A, 0x0A], 5), Some((1337, 3)));
    }
}

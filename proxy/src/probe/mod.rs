//! `bauta probe`: connect to a proxy as a client that supports secondary
//! certificates, optionally send a CONNECT, and report every
//! SERVER_CERTIFICATE received — names, chain, validity, signature scheme,
//! whether the authenticator validated (RFC 9261) and whether the certificate
//! is acceptable (chain and name). The operator's view of what a proxy
//! advertises.

mod frames;
mod qpack;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::SignatureScheme;
use serde::Serialize;

use crate::seccert::negotiation::Codepoints;
use crate::seccert::{self, Exporter, Validator};
use crate::wire::h3_frame;
use crate::wire::server_certificate as sc;

use frames::{H3ControlScan, Seen, Tap};

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
    sc::encode_h3_setting(&cp, true, &mut settings).map_err(|e| e.to_string())?;
    let mut ctrl = Vec::new();
    h3_frame::StreamType::CONTROL
        .encode(&mut ctrl)
        .and_then(|()| h3_frame::encode_frame(h3_frame::FrameType::SETTINGS, &settings, &mut ctrl))
        .map_err(|e| e.to_string())?;
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
                    let mut scan = H3ControlScan::new(cp);
                    let mut chunk = vec![0u8; 16 * 1024];
                    while let Ok(Some(n)) = stream.read(&mut chunk).await {
                        if !scan.feed(chunk.get(..n).unwrap_or_default(), &seen) {
                            return;
                        }
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
        let block = qpack::connect_block(dest)?;
        let mut frame = Vec::new();
        h3_frame::encode_frame(h3_frame::FrameType::HEADERS, &block, &mut frame)
            .map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        // Read until the first frame (the response HEADERS) is complete;
        // the proxy may send its header and payload in separate chunks.
        let mut frames = h3_frame::FrameDecoder::new(16 * 1024);
        let mut buf = BytesMut::new();
        let mut chunk = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match frames.decode(&mut buf) {
                Some(h3_frame::Frame::Whole { ty, payload }) => {
                    if ty == h3_frame::FrameType::HEADERS {
                        report.connect_status = qpack::status(&payload);
                    }
                    break;
                }
                Some(h3_frame::Frame::Skipped(_)) => break,
                None => {}
            }
            match tokio::time::timeout_at(deadline, recv.read(&mut chunk)).await {
                Ok(Ok(Some(n))) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
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

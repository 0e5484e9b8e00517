//! `bauta probe` over HTTP/3 on the sidecar's gateway client
//! (`crate::gateway::h3`): our SETTINGS carry the secondary-certificate
//! setting and SETTINGS_H3_DATAGRAM, the proxy's control stream is read for
//! its SETTINGS and SERVER_CERTIFICATE frames, and an optional CONNECT or
//! CONNECT-UDP goes out on a request stream; CONNECT-UDP's datagrams travel
//! in QUIC DATAGRAM frames (or capsules on the request stream).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use rustls::SignatureScheme;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::gateway::h3::{self, FlowDatagrams, H3Connection, H3Options, H3Request, H3Stream};
use crate::tunnel::udp::DatagramSent;
use crate::wire::{capsule, varint};

use super::udp::{self, Datagrams, UdpOptions, UdpReport};
use super::{is_success, judge, proxy_status, ProbeOptions, Report, Seen, ANSWER_TIMEOUT};

/// Largest capsule the probe reads whole (the largest UDP payload and more).
const MAX_CAPSULE: usize = 64 * 1024;
/// Handshake and the proxy's SETTINGS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn probe(
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
    let addr = tokio::net::lookup_host(format!("{}:{}", target.host, target.port))
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the proxy's name did not resolve")?;
    let bind = match addr {
        std::net::SocketAddr::V6(_) => std::net::SocketAddr::from(([0u16; 8], 0)),
        std::net::SocketAddr::V4(_) => std::net::SocketAddr::from(([0u8; 4], 0)),
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    let h3_opts = H3Options {
        addr,
        server_name: match &target.host {
            bauta_policy::Host::Name(n) => n.clone(),
            bauta_policy::Host::Ip(ip) => ip.to_string(),
        },
        tls: Arc::new(cfg),
        codepoints: opts.codepoints,
        keepalive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        connect_timeout: CONNECT_TIMEOUT,
        max_field_section: MAX_CAPSULE,
    };
    let conn = h3::connect(&endpoint, &h3_opts)
        .await
        .map_err(|e| match e {
            h3::H3Error::ConnectTimeout => format!(
                "no QUIC handshake and HTTP/3 SETTINGS from the proxy within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
            other => format!("QUIC: {other}"),
        })?;
    let exporter = conn.exporter().map_err(|e| format!("exporter: {e}"))?;

    let mut report = Report {
        proxy: opts.url.clone(),
        protocol: "h3".into(),
        ..Report::default()
    };
    if let Some(dest) = &opts.connect {
        let mut req = H3Request::connect(dest.as_str());
        authorize(&mut req, opts)?;
        let started = Instant::now();
        let (head, mut stream) = open(&conn, req, "CONNECT").await?;
        report.answered(Some(head.status.as_u16()), started.elapsed(), || {
            proxy_status(&head.headers)
        });
        let _ = stream.shutdown().await;
    }
    if let Some(udp) = &opts.connect_udp {
        connect_udp(&conn, opts, udp, &target.to_string(), &mut report).await?;
    }
    tokio::time::sleep(opts.wait).await;
    let seen = Seen {
        setting_advertised: conn.peer_offers_certs(),
        certificates: conn.certificates().borrow().clone(),
    };
    judge(&mut report, seen, exporter, &offered, roots)?;
    conn.close(0x100, b"probe done");
    Ok(report)
}

/// `--proxy-authorization`, if given, on `req`.
fn authorize(req: &mut H3Request, opts: &ProbeOptions) -> Result<(), String> {
    if let Some(auth) = &opts.proxy_authorization {
        let value = HeaderValue::from_str(auth)
            .map_err(|_| "--proxy-authorization is not a valid field value".to_string())?;
        req.headers.insert(http::header::PROXY_AUTHORIZATION, value);
    }
    Ok(())
}

/// Send `req` and wait for the final answer (interim 1xx passed over).
async fn open(
    conn: &H3Connection,
    req: H3Request,
    what: &str,
) -> Result<(http::response::Parts, H3Stream), String> {
    tokio::time::timeout(ANSWER_TIMEOUT, conn.open(req, false))
        .await
        .map_err(|_| format!("{what}: no answer"))?
        .map_err(|e| format!("{what}: {e}"))
}

/// CONNECT-UDP (RFC 9298 §3.4) on a request stream; on a 2xx, the
/// datagrams go in QUIC DATAGRAM frames when both sides sent
/// SETTINGS_H3_DATAGRAM = 1 and the proxy takes DATAGRAM frames, else in
/// DATAGRAM capsules on the stream.
async fn connect_udp(
    conn: &H3Connection,
    opts: &ProbeOptions,
    udp: &UdpOptions,
    authority: &str,
    report: &mut Report,
) -> Result<(), String> {
    let mut req = H3Request::connect_udp(authority, udp.path.as_str());
    authorize(&mut req, opts)?;
    let started = Instant::now();
    let (head, mut stream) = open(conn, req, "CONNECT-UDP").await?;
    let status = head.status.as_u16();
    report.answered(Some(status), started.elapsed(), || {
        proxy_status(&head.headers)
    });
    let mut udp_report = UdpReport::new(udp);
    if is_success(status) {
        // RFC 9297 §2.1.1: no QUIC DATAGRAM frame before the setting was
        // both sent and received (`connect` waited for the proxy's).
        let flow = stream
            .take_flow()
            .filter(|f| conn.datagrams_enabled() && f.max_payload().is_some());
        let carriage = if flow.is_some() {
            "quic-datagrams"
        } else {
            "capsules"
        };
        let mut datagrams = H3Datagrams {
            stream,
            flow,
            capsules: capsule::CapsuleDecoder::new(MAX_CAPSULE),
            buf: BytesMut::new(),
            pending: VecDeque::new(),
        };
        let result = udp::exchange(udp, opts.wait, carriage, &mut datagrams, &mut udp_report).await;
        let _ = datagrams.stream.shutdown().await;
        result?;
    }
    report.udp = Some(udp_report);
    Ok(())
}

/// The datagrams of one CONNECT-UDP request stream: out as QUIC DATAGRAM
/// frames (when `flow` is there) or capsules, in either way (a proxy may
/// answer with capsules until it has read our SETTINGS).
struct H3Datagrams {
    stream: H3Stream,
    /// QUIC DATAGRAMs of this stream, when in use.
    flow: Option<FlowDatagrams>,
    capsules: capsule::CapsuleDecoder,
    /// Stream bytes not yet cut into capsules.
    buf: BytesMut,
    /// Payloads cut from capsules, not yet handed out.
    pending: VecDeque<Bytes>,
}

impl Datagrams for H3Datagrams {
    async fn send(&mut self, payload: &[u8]) -> Result<(), String> {
        if let Some(flow) = &self.flow {
            let mut d = BytesMut::with_capacity(1 + payload.len());
            varint::encode(0, &mut d).map_err(|e| e.to_string())?;
            d.extend_from_slice(payload);
            return match flow.send(&d) {
                DatagramSent::Sent => Ok(()),
                DatagramSent::TooLarge => Err(format!(
                    "a {}-byte datagram does not fit in a QUIC DATAGRAM frame on this \
                     path now (at most {} bytes with its header); try a smaller --size",
                    payload.len(),
                    flow.max_payload().unwrap_or(0)
                )),
                DatagramSent::Dropped => Err("QUIC DATAGRAM: not sent".into()),
                DatagramSent::Closed => Err("QUIC DATAGRAM: the connection is closed".into()),
            };
        }
        let mut c = Vec::new();
        capsule::encode_datagram_capsule(0, payload, &mut c).map_err(|e| e.to_string())?;
        self.stream
            .write_all(&c)
            .await
            .map_err(|e| format!("request stream: {e}"))?;
        self.stream
            .flush()
            .await
            .map_err(|e| format!("request stream: {e}"))
    }

    async fn recv(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Ok(Some(p));
            }
            let quic = async {
                match self.flow.as_mut() {
                    Some(f) => f.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                d = quic => {
                    let Some(d) = d else {
                        return Err("QUIC: the connection is closed".into());
                    };
                    // Another context's or malformed: not an answer to ours.
                    if let Ok((0, n)) = varint::decode(&d) {
                        return Ok(Some(d.slice(n..)));
                    }
                }
                r = self.stream.read_buf(&mut self.buf) => {
                    match r.map_err(|e| format!("request stream: {e}"))? {
                        0 => return Ok(None),
                        _ => {
                            while let Some(event) = self
                                .capsules
                                .decode(&mut self.buf)
                                .map_err(|e| format!("the proxy's capsules: {e}"))?
                            {
                                if let capsule::Event::Datagram { context_id: 0, payload } = event {
                                    self.pending.push_back(payload);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

//! `bauta probe` over HTTP/3 with raw QUIC streams (quinn): our own control
//! stream, a reader of the proxy's, request streams written with the
//! probe's minimal QPACK, and CONNECT-UDP's datagrams in QUIC DATAGRAM
//! frames (or capsules on the request stream).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::SignatureScheme;

use crate::seccert::{self, Exporter};
use crate::wire::server_certificate as sc;
use crate::wire::{capsule, datagram, h3_frame};

use super::frames::{H3ControlScan, Seen};
use super::udp::{self, Datagrams, UdpOptions, UdpReport};
use super::{is_success, judge, qpack, ProbeOptions, Report, ANSWER_TIMEOUT};

/// Largest frame on a request stream the probe reads whole.
const MAX_FRAME: usize = 64 * 1024;

/// HTTP/3 with raw QUIC streams: our control stream carries SETTINGS with
/// the extension's setting and SETTINGS_H3_DATAGRAM, the proxy's control
/// stream is read for its SETTINGS and SERVER_CERTIFICATE frames, and an
/// optional CONNECT or CONNECT-UDP goes out on a request stream with a
/// minimal QPACK header block.
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
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(|e| e.to_string())?;
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Some(..) advertises max_datagram_frame_size (RFC 9221): the proxy may
    // send us QUIC DATAGRAM frames.
    transport.datagram_receive_buffer_size(Some(1 << 20));
    client_cfg.transport_config(Arc::new(transport));
    let addr = tokio::net::lookup_host(format!("{}:{}", target.host, target.port))
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the proxy's name did not resolve")?;
    let bind = match addr {
        std::net::SocketAddr::V6(_) => std::net::SocketAddr::from(([0u16; 8], 0)),
        std::net::SocketAddr::V4(_) => std::net::SocketAddr::from(([0u8; 4], 0)),
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(client_cfg);
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

    // Our control stream: type 0x00, SETTINGS { our setting = 1,
    // SETTINGS_H3_DATAGRAM = 1 } (RFC 9297 §2.1.1).
    let cp = opts.codepoints;
    let mut settings = Vec::new();
    sc::encode_h3_setting(&cp, true, &mut settings).map_err(|e| e.to_string())?;
    h3_frame::encode_setting(h3_frame::SettingId::H3_DATAGRAM, 1, &mut settings)
        .map_err(|e| e.to_string())?;
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
        let block = qpack::connect_block(dest, opts.proxy_authorization.as_deref());
        let started = Instant::now();
        let mut stream = RequestStream::open(&conn, &block).await?;
        let response = stream.response().await?;
        report.answered(response.status, started.elapsed(), || {
            response.field("proxy-status")
        });
        stream.finish();
    }
    if let Some(udp) = &opts.connect_udp {
        connect_udp(&conn, opts, udp, &target.to_string(), &seen, &mut report).await?;
    }
    tokio::time::sleep(opts.wait).await;
    reader.abort();
    judge(&mut report, &seen, exporter, &offered, roots)?;
    conn.close(0x100u32.into(), b"probe done");
    Ok(report)
}

/// CONNECT-UDP (RFC 9298 §3.4) on a request stream; on a 2xx, the
/// datagrams go in QUIC DATAGRAM frames when both sides sent
/// SETTINGS_H3_DATAGRAM = 1 and the proxy takes DATAGRAM frames, else in
/// DATAGRAM capsules on the stream.
async fn connect_udp(
    conn: &quinn::Connection,
    opts: &ProbeOptions,
    udp: &UdpOptions,
    authority: &str,
    seen: &Mutex<Seen>,
    report: &mut Report,
) -> Result<(), String> {
    let block = qpack::connect_udp_block(authority, &udp.path, opts.proxy_authorization.as_deref());
    let started = Instant::now();
    let mut stream = RequestStream::open(conn, &block).await?;
    let stream_id = stream.id;
    let response = stream.response().await?;
    report.answered(response.status, started.elapsed(), || {
        response.field("proxy-status")
    });
    let mut udp_report = UdpReport::new(udp);
    if response.status.is_some_and(is_success) {
        // RFC 9297 §2.1.1: no QUIC DATAGRAM frame before the setting was
        // both sent and received.
        let quic = proxy_h3_datagram(seen).await && conn.max_datagram_size().is_some();
        let mut datagrams = H3Datagrams {
            conn: conn.clone(),
            stream,
            stream_id,
            quic,
            capsules: capsule::CapsuleDecoder::new(MAX_FRAME),
            buf: BytesMut::new(),
            pending: VecDeque::new(),
        };
        let carriage = if quic { "quic-datagrams" } else { "capsules" };
        let result = udp::exchange(udp, opts.wait, carriage, &mut datagrams, &mut udp_report).await;
        datagrams.stream.finish();
        result?;
    }
    report.udp = Some(udp_report);
    Ok(())
}

/// Whether the proxy's SETTINGS said SETTINGS_H3_DATAGRAM = 1, waiting up
/// to a second for them.
async fn proxy_h3_datagram(seen: &Mutex<Seen>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let value = seen.lock().ok().and_then(|s| s.h3_datagram);
        match value {
            Some(v) => return v,
            None if Instant::now() >= deadline => return false,
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The datagrams of one CONNECT-UDP request stream: out as QUIC DATAGRAM
/// frames or capsules, in either way (a proxy may answer with capsules until
/// it has read our SETTINGS).
struct H3Datagrams {
    conn: quinn::Connection,
    stream: RequestStream,
    stream_id: u64,
    /// Send QUIC DATAGRAM frames (else capsules).
    quic: bool,
    capsules: capsule::CapsuleDecoder,
    /// DATA frame payloads not yet cut into capsules.
    buf: BytesMut,
    /// Payloads cut from capsules, not yet handed out.
    pending: VecDeque<Bytes>,
}

impl Datagrams for H3Datagrams {
    async fn send(&mut self, payload: &[u8]) -> Result<(), String> {
        if self.quic {
            let mut d = BytesMut::new();
            datagram::encode_h3_datagram(self.stream_id, 0, payload, &mut d)
                .map_err(|e| e.to_string())?;
            return match self.conn.send_datagram(d.freeze()) {
                Ok(()) => Ok(()),
                Err(quinn::SendDatagramError::TooLarge) => Err(format!(
                    "a {}-byte datagram does not fit in a QUIC DATAGRAM frame on this \
                     path now (at most {} bytes with its header); try a smaller --size",
                    payload.len(),
                    self.conn.max_datagram_size().unwrap_or(0)
                )),
                Err(e) => Err(format!("QUIC DATAGRAM: {e}")),
            };
        }
        let mut c = Vec::new();
        capsule::encode_datagram_capsule(0, payload, &mut c).map_err(|e| e.to_string())?;
        let mut frame = Vec::new();
        h3_frame::encode_frame(h3_frame::FrameType::DATA, &c, &mut frame)
            .map_err(|e| e.to_string())?;
        self.stream
            .send
            .write_all(&frame)
            .await
            .map_err(|e| format!("request stream: {e}"))
    }

    async fn recv(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Ok(Some(p));
            }
            tokio::select! {
                d = self.conn.read_datagram() => {
                    let d = d.map_err(|e| format!("QUIC: {e}"))?;
                    // Another request's, another context's or malformed:
                    // not an answer to ours.
                    if let Ok(h) = datagram::decode_h3_datagram(&d) {
                        if h.stream_id == self.stream_id && h.context_id == 0 {
                            return Ok(Some(h.payload));
                        }
                    }
                }
                f = self.stream.next_frame() => match f? {
                    Some((ty, payload)) if ty == h3_frame::FrameType::DATA => {
                        self.buf.extend_from_slice(&payload);
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
                    Some(_) => {}
                    None => return Ok(None),
                },
            }
        }
    }
}

/// One request stream: our HEADERS out, the proxy's frames in.
struct RequestStream {
    id: u64,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    frames: h3_frame::FrameDecoder,
    buf: BytesMut,
}

impl RequestStream {
    /// Open a request stream and send `block` in a HEADERS frame.
    async fn open(conn: &quinn::Connection, block: &[u8]) -> Result<RequestStream, String> {
        let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut frame = Vec::new();
        h3_frame::encode_frame(h3_frame::FrameType::HEADERS, block, &mut frame)
            .map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        Ok(RequestStream {
            id: u64::from(send.id()),
            send,
            recv,
            frames: h3_frame::FrameDecoder::new(MAX_FRAME),
            buf: BytesMut::new(),
        })
    }

    /// The final response's fields (interim 1xx answers are passed over).
    async fn response(&mut self) -> Result<qpack::Response, String> {
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.next_frame())
                .await
                .map_err(|_| "CONNECT: no answer".to_string())??;
            let Some((ty, payload)) = frame else {
                return Err("CONNECT: the proxy ended the stream without an answer".into());
            };
            if ty != h3_frame::FrameType::HEADERS {
                continue;
            }
            let response = qpack::decode_response(&payload)
                .ok_or("CONNECT: the answer's header block could not be read")?;
            match response.status {
                Some(s) if s >= 200 => return Ok(response),
                Some(_) => continue,
                None => return Err("CONNECT: the answer has no :status".into()),
            }
        }
    }

    /// The next whole frame; `None` at the end of the stream. Cancel-safe:
    /// what was read stays in `buf`.
    async fn next_frame(&mut self) -> Result<Option<(h3_frame::FrameType, Bytes)>, String> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.frames.decode(&mut self.buf) {
                Some(h3_frame::Frame::Whole { ty, payload }) => return Ok(Some((ty, payload))),
                // Larger than we read (no frame of ours is): passed over.
                Some(h3_frame::Frame::Skipped(_)) => continue,
                None => {}
            }
            match self.recv.read(&mut chunk).await {
                Ok(Some(n)) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Ok(None) => return Ok(None),
                Err(e) => return Err(format!("request stream: {e}")),
            }
        }
    }

    /// End our side of the stream (for a tunnel: close it).
    fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

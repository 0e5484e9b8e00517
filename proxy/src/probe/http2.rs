//! `bauta probe` over HTTP/2: TLS with ALPN h2, the h2 crate over the
//! gateway connections' [`Tap`], which adds our setting and collects the
//! proxy's SERVER_CERTIFICATE frames;
//! CONNECT-UDP as extended CONNECT (RFC 8441) with DATAGRAM capsules on the
//! stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::SignatureScheme;

use crate::seccert::Exporter;
use crate::wire::capsule;

use crate::gateway::h2_tap::{Certificates, PeerState, Tap};

use super::udp::{self, Datagrams, UdpOptions, UdpReport};
use super::{is_success, judge, proxy_status, ProbeOptions, Report, Seen, ANSWER_TIMEOUT};

/// Largest DATAGRAM capsule payload read whole (the largest UDP payload).
const MAX_DATAGRAM: usize = 65527;

pub(super) async fn probe(
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
    let peer = PeerState::new();
    let collected = Arc::new(Mutex::new(Vec::new()));
    let io = Tap::new(
        tls,
        opts.codepoints,
        Arc::clone(&peer),
        Some(Certificates::Collect(Arc::clone(&collected))),
    );
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
        let mut req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(dest.as_str());
        if let Some(auth) = &opts.proxy_authorization {
            req = req.header(http::header::PROXY_AUTHORIZATION, auth.as_str());
        }
        let req = req.body(()).map_err(|e| format!("--connect {dest}: {e}"))?;
        let started = Instant::now();
        let (resp, _stream) = client
            .send_request(req, false)
            .map_err(|e| format!("CONNECT: {e}"))?;
        let resp = tokio::time::timeout(ANSWER_TIMEOUT, resp)
            .await
            .map_err(|_| "CONNECT: no answer".to_string())?
            .map_err(|e| format!("CONNECT: {e}"))?;
        report.answered(Some(resp.status().as_u16()), started.elapsed(), || {
            proxy_status(resp.headers())
        });
    }
    if let Some(udp) = &opts.connect_udp {
        connect_udp(client.clone(), opts, udp, &target.to_string(), &mut report).await?;
    }
    tokio::time::sleep(opts.wait).await;
    let seen = Seen {
        setting_advertised: peer.offers_certs(),
        certificates: collected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
    };
    judge(&mut report, seen, exporter, &offered, roots)?;
    Ok(report)
}

/// CONNECT-UDP over HTTP/2 (RFC 9298 §3.4): extended CONNECT, once the proxy
/// has enabled it, then DATAGRAM capsules both ways on the stream.
async fn connect_udp(
    client: h2::client::SendRequest<Bytes>,
    opts: &ProbeOptions,
    udp: &UdpOptions,
    authority: &str,
    report: &mut Report,
) -> Result<(), String> {
    // RFC 8441 §3: only after the proxy sent SETTINGS_ENABLE_CONNECT_PROTOCOL
    // = 1, which h2 may read a little after the connection is ready.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut client = client;
    loop {
        client = client.ready().await.map_err(|e| format!("HTTP/2: {e}"))?;
        if client.is_extended_connect_protocol_enabled() {
            break;
        }
        if Instant::now() >= deadline {
            return Err("the proxy did not enable extended CONNECT on HTTP/2 \
                        (SETTINGS_ENABLE_CONNECT_PROTOCOL), which CONNECT-UDP needs there; \
                        try it over HTTP/3 (without --h2)"
                .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://{authority}{}", udp.path))
        .header("capsule-protocol", "?1");
    if let Some(auth) = &opts.proxy_authorization {
        req = req.header(http::header::PROXY_AUTHORIZATION, auth.as_str());
    }
    let mut req = req
        .body(())
        .map_err(|e| format!("--connect-udp {}: {e}", udp.target))?;
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("connect-udp"));
    let started = Instant::now();
    let (resp, send) = client
        .send_request(req, false)
        .map_err(|e| format!("CONNECT-UDP: {e}"))?;
    let resp = tokio::time::timeout(ANSWER_TIMEOUT, resp)
        .await
        .map_err(|_| "CONNECT-UDP: no answer".to_string())?
        .map_err(|e| format!("CONNECT-UDP: {e}"))?;
    let status = resp.status().as_u16();
    report.answered(Some(status), started.elapsed(), || {
        proxy_status(resp.headers())
    });
    let mut udp_report = UdpReport::new(udp);
    if is_success(status) {
        let mut capsules = H2Capsules {
            send,
            recv: resp.into_body(),
            decoder: capsule::CapsuleDecoder::new(MAX_DATAGRAM),
            buf: BytesMut::new(),
            pending: VecDeque::new(),
        };
        let result =
            udp::exchange(udp, opts.wait, "capsules", &mut capsules, &mut udp_report).await;
        // END_STREAM closes the tunnel.
        let _ = capsules.send.send_data(Bytes::new(), true);
        result?;
    }
    report.udp = Some(udp_report);
    Ok(())
}

/// DATAGRAM capsules (RFC 9297 §3.5) in the DATA frames of one stream.
struct H2Capsules {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    decoder: capsule::CapsuleDecoder,
    buf: BytesMut,
    pending: VecDeque<Bytes>,
}

impl Datagrams for H2Capsules {
    async fn send(&mut self, payload: &[u8]) -> Result<(), String> {
        let mut c = Vec::new();
        capsule::encode_datagram_capsule(0, payload, &mut c).map_err(|e| e.to_string())?;
        self.send
            .send_data(Bytes::from(c), false)
            .map_err(|e| format!("CONNECT-UDP stream: {e}"))
    }

    async fn recv(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Ok(Some(p));
            }
            let Some(data) = self.recv.data().await else {
                return Ok(None);
            };
            let data = data.map_err(|e| format!("CONNECT-UDP stream: {e}"))?;
            let _ = self.recv.flow_control().release_capacity(data.len());
            self.buf.extend_from_slice(&data);
            while let Some(event) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| format!("the proxy's capsules: {e}"))?
            {
                if let capsule::Event::Datagram {
                    context_id: 0,
                    payload,
                } = event
                {
                    self.pending.push_back(payload);
                }
            }
        }
    }
}

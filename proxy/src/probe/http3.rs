//! `bauta probe` over HTTP/3 with raw QUIC streams (quinn): our own control
//! stream, a reader of the proxy's, and request streams written with the
//! probe's minimal QPACK.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rustls::SignatureScheme;

use crate::seccert::{self, Exporter};
use crate::wire::h3_frame;
use crate::wire::server_certificate as sc;

use super::frames::{H3ControlScan, Seen};
use super::{judge, qpack, ProbeOptions, Report};

/// HTTP/3 with raw QUIC streams: our control stream carries SETTINGS with
/// the extension's setting, the proxy's control stream is read for its
/// SETTINGS and SERVER_CERTIFICATE frames, and an optional CONNECT goes out
/// on a request stream with a minimal QPACK header block.
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

//! `bauta probe` over HTTP/2: TLS with ALPN h2, the h2 crate over a [`Tap`]
//! that adds our setting and sees the proxy's SERVER_CERTIFICATE frames.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::SignatureScheme;

use crate::seccert::Exporter;

use super::frames::{Seen, Tap};
use super::{judge, ProbeOptions, Report};

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

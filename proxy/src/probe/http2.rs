//! `bauta probe` over HTTP/2: TLS with ALPN h2, the h2 crate over a [`Tap`]
//! that adds our setting and sees the proxy's SERVER_CERTIFICATE frames.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::SignatureScheme;

use crate::seccert::Exporter;

use super::frames::{Seen, Tap};
use super::{judge, ProbeOptions, Report, ANSWER_TIMEOUT};

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
    tokio::time::sleep(opts.wait).await;
    judge(&mut report, &seen, exporter, &offered, roots)?;
    Ok(report)
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

//! Connection setups with secondary certificates: for `--duration`,
//! `--concurrency` workers each open an HTTP/2 connection to the TLS
//! listener (a full TLS 1.3 handshake: the client keeps no session for
//! resumption), send the preface and SETTINGS with
//! `SETTINGS_HTTP_SERVER_CERT_AUTH = 1` (unless `--no-setting`), acknowledge
//! the server's SETTINGS, and wait until the server has acknowledged ours and
//! sent one `SERVER_CERTIFICATE` per `--origins` (the spawned proxy
//! advertises that many origins eagerly); then close. Reports setups/s, the
//! latency of each (TCP connect to the last expected frame), and the frames.
//!
//! The ratio of two runs, `--origins 10` against `--origins 0`, is what eager
//! advertisement costs a server that clients connect to often.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::report::{Handshakes, Latency, Report};
use super::{repeat_until, LoadOptions, Path, Watched};
use crate::h2_raw::{frame, hello, read_frame, GOAWAY, SETTINGS};
use crate::tls_client_config;

/// `SETTINGS_HTTP_SERVER_CERT_AUTH` (project codepoint for HTTP/2).
const SETTINGS_SERVER_CERT_AUTH: u16 = 0x5ECC;
/// The HTTP/2 `SERVER_CERTIFICATE` frame type.
const SERVER_CERTIFICATE: u8 = 0xCE;
/// SETTINGS flag ACK.
const ACK: u8 = 0x1;
/// One setup that takes longer than this fails.
const STEP: Duration = Duration::from_secs(10);

/// What one worker saw.
#[derive(Default)]
struct Tally {
    setups: AtomicU64,
    certificates: AtomicU64,
}

/// One connection: handshake, SETTINGS both ways, the expected certificates.
async fn setup(
    path: &Path,
    tls: &tokio_rustls::TlsConnector,
    setting: bool,
    origins: usize,
) -> Result<u64, String> {
    let proxy = path.proxy.ok_or("handshakes needs --proxy or --spawn")?;
    let tcp = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let mut s = tls
        .connect(ServerName::from(proxy.ip()), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let entries: &[(u16, u32)] = if setting {
        &[(SETTINGS_SERVER_CERT_AUTH, 1)]
    } else {
        &[]
    };
    s.write_all(&hello(entries))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let (mut acked, mut settings, mut certificates) = (false, false, 0u64);
    let want = if setting { origins as u64 } else { 0 };
    while !(acked && settings && certificates >= want) {
        let f = read_frame(&mut s)
            .await
            .ok_or("the connection ended before the certificates")?;
        match (f.kind, f.stream) {
            (SETTINGS, 0) if f.flags & ACK != 0 => acked = true,
            (SETTINGS, 0) => {
                settings = true;
                s.write_all(&frame(SETTINGS, ACK, 0, &[]))
                    .await
                    .map_err(|e| format!("write: {e}"))?;
            }
            (SERVER_CERTIFICATE, 0) if !f.payload.is_empty() => certificates += 1,
            (SERVER_CERTIFICATE, _) => return Err("a malformed SERVER_CERTIFICATE".into()),
            (GOAWAY, _) => return Err("GOAWAY before the certificates".into()),
            _ => {}
        }
    }
    if certificates > want {
        return Err(format!("{certificates} certificates, want {want}"));
    }
    // Close politely (GOAWAY, NO_ERROR), as a client that is done would.
    let _ = s
        .write_all(&frame(GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]))
        .await;
    let _ = s.shutdown().await;
    Ok(certificates)
}

pub async fn run(
    opts: &LoadOptions,
    path: &Path,
    watched: Option<&Watched>,
    report: &mut Report,
) -> Result<(), String> {
    let mut cfg = (*tls_client_config(path.certs()?, &[b"h2"])).clone();
    // Every setup a full handshake, as for a new client.
    cfg.resumption = rustls::client::Resumption::disabled();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let setting = !opts.no_setting;
    let tally = Arc::new(Tally::default());
    let lat = Arc::new(Mutex::new(Vec::new()));
    let c0 = watched.map(Watched::cpu);
    let started = Instant::now();
    let deadline = started + opts.duration;
    // One SERVER_CERTIFICATE proves every origin of a shared certificate.
    let origins = if opts.shared_cert {
        opts.origins.min(1)
    } else {
        opts.origins
    };
    let (path, step_tally, step_lat) = (path.clone(), Arc::clone(&tally), Arc::clone(&lat));
    repeat_until(
        opts.concurrency,
        deadline,
        "handshakes",
        report,
        move || {
            let (path, tls, tally, lat) = (
                path.clone(),
                tls.clone(),
                Arc::clone(&step_tally),
                Arc::clone(&step_lat),
            );
            async move {
                let t = Instant::now();
                match tokio::time::timeout(STEP, setup(&path, &tls, setting, origins)).await {
                    Ok(Ok(certs)) => {
                        lat.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(t.elapsed());
                        tally.setups.fetch_add(1, Ordering::Relaxed);
                        tally.certificates.fetch_add(certs, Ordering::Relaxed);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("a setup took more than {STEP:?}")),
                }
            }
        },
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    if let (Some(a), Some(w)) = (c0, watched) {
        report.proxy_cpu.push(("handshakes", w.cpu() - a));
    }
    let samples = std::mem::take(&mut *lat.lock().unwrap_or_else(|p| p.into_inner()));
    report.handshakes = Some(Handshakes {
        setups: tally.setups.load(Ordering::Relaxed),
        certificates: tally.certificates.load(Ordering::Relaxed),
        origins: opts.origins,
        shared_cert: opts.shared_cert,
        setting,
        secs,
        latency: Latency::of(samples),
    });
    Ok(())
}

//! HTTP/1.1 forwarding: absolute-form `GET http://origin/load` through the
//! plaintext listener (or straight to the origin, `--direct`) on
//! `--concurrency` keep-alive connections for `--duration`; requests/s and
//! the latency of each request (send to last body byte).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::report::{Forward, Latency, Report};
use super::targets::FixedOrigin;
use super::{repeat_until, LoadOptions, Path, Watched};
use crate::{get_absolute, h1_client, h1_send};

/// Body bytes of every answer.
const BODY: usize = 1024;

/// Requests on one connection until `deadline`; latencies, or why it failed.
async fn session(
    to: std::net::SocketAddr,
    url: Arc<String>,
    deadline: Instant,
    lat: Arc<Mutex<Vec<Duration>>>,
) -> Result<(), String> {
    let s = TcpStream::connect(to)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let mut sender = h1_client(s).await;
    let mut mine = Vec::new();
    let r = loop {
        if Instant::now() >= deadline {
            break Ok(());
        }
        let started = Instant::now();
        let (parts, body) = h1_send(&mut sender, get_absolute(&url)).await;
        if parts.status != 200 || body.len() != BODY {
            break Err(format!("answer {} with {} bytes", parts.status, body.len()));
        }
        mine.push(started.elapsed());
    };
    lat.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
    r
}

pub async fn run(
    opts: &LoadOptions,
    path: &Path,
    watched: Option<&Watched>,
    report: &mut Report,
) -> Result<(), String> {
    let origin = FixedOrigin::start(BODY)
        .await
        .map_err(|e| format!("start the origin: {e}"))?;
    let to = path.proxy.unwrap_or(origin.addr);
    let url = Arc::new(format!("http://{}/load", origin.addr));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let c0 = watched.map(Watched::cpu);
    let started = Instant::now();
    let deadline = started + opts.duration;
    let step_lat = Arc::clone(&lat);
    repeat_until(opts.concurrency, deadline, "forward", report, move || {
        let (url, lat) = (Arc::clone(&url), Arc::clone(&step_lat));
        async move {
            // A failed connection is counted and replaced.
            let s = tokio::spawn(session(to, url, deadline, lat));
            match tokio::time::timeout_at(deadline + Duration::from_secs(10), s).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("session: {e}")),
                Err(_) => Err("a request took more than 10 s".into()),
            }
        }
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    if let (Some(a), Some(w)) = (c0, watched) {
        report.proxy_cpu.push(("forward", w.cpu() - a));
    }
    let samples = std::mem::take(&mut *lat.lock().unwrap_or_else(|p| p.into_inner()));
    report.forward = Some(Forward {
        requests: samples.len() as u64,
        body: BODY,
        secs,
        latency: Latency::of(samples),
    });
    Ok(())
}

//! Start-up and shutdown: bind every socket, start the accept loops and the
//! admin endpoint, and stop them all gracefully.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::core::context::Shared;
use crate::listen;
use crate::ops::metrics::Metrics;
use crate::server::shutdown::Tracker;

pub mod reload;
pub mod shutdown;

/// A started proxy.
pub struct Running {
    /// Bound addresses by listener name (useful with port 0).
    pub listeners: Vec<(Arc<str>, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    tracker: Tracker,
    grace: Duration,
}

/// Bind everything, then serve in the background. Fails if any socket cannot be bound.
pub async fn start(config: Config) -> io::Result<Running> {
    let metrics = Arc::new(
        Metrics::new(Registry::new()).map_err(|e| io::Error::other(format!("metrics: {e}")))?,
    );
    let config = Arc::new(config);
    let shared = Arc::new(Shared::new(Arc::clone(&config), Arc::clone(&metrics))?);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let tracker = Tracker::new();
    let mut tasks = JoinSet::new();

    let admin = match config.admin {
        Some(addr) => {
            let l = bind(addr, "admin").await?;
            let bound = l.local_addr()?;
            tasks.spawn(crate::ops::admin::serve(
                l,
                Arc::clone(&metrics),
                Arc::clone(&ready),
                shutdown_rx.clone(),
            ));
            Some(bound)
        }
        None => None,
    };

    let mut listeners = Vec::new();
    let mut endpoints = Vec::new();
    for spec in &config.listeners {
        let l = bind(spec.addr, &spec.name).await?;
        let bound = l.local_addr()?;
        listeners.push((Arc::clone(&spec.name), bound));
        // HTTP/3 on the same address and port, over UDP; advertised by Alt-Svc.
        let alt_svc = if spec.h3 {
            let endpoint = listen::quic::bind(spec, bound)?;
            endpoints.push((Arc::clone(&spec.name), endpoint.clone()));
            tasks.spawn(listen::quic::accept_loop(
                endpoint,
                spec.clone(),
                Arc::clone(&shared),
                shutdown_rx.clone(),
            ));
            http::HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", bound.port())).ok()
        } else {
            None
        };
        tasks.spawn(listen::tcp::accept_loop(
            l,
            spec.clone(),
            Arc::clone(&shared),
            tracker.clone(),
            shutdown_rx.clone(),
            alt_svc,
        ));
    }
    ready.store(true, Ordering::Release);
    if let Some(path) = &config.source {
        crate::server::reload::spawn_on_sighup(path.clone(), Arc::clone(&shared), endpoints);
    }

    Ok(Running {
        listeners,
        admin,
        shared,
        shutdown: shutdown_tx,
        tasks,
        tracker,
        grace: config.limits.shutdown_grace,
    })
}

async fn bind(addr: SocketAddr, what: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {what} on {addr}: {e}")))
}

// === impl Running ===

impl Running {
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, a)| *a)
    }

    /// Stop accepting, drain open connections for up to the grace period.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        let deadline = tokio::time::Instant::now() + self.grace;
        let drained = self.tracker.drain(self.grace).await;
        // Tunnels outlive their HTTP connection task; wait for them too.
        while tunnels_open(&self.shared) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !drained || tunnels_open(&self.shared) > 0 {
            tracing::warn!("grace period over; closing the remaining connections");
            self.shared.abort_tunnels();
            let until = tokio::time::Instant::now() + Duration::from_secs(1);
            while tunnels_open(&self.shared) > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Serve until SIGINT or SIGTERM, then shut down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

fn tunnels_open(shared: &Shared) -> i64 {
    ["connect", "connect-udp"]
        .iter()
        .map(|k| shared.metrics.tunnels_active.with_label_values(&[k]).get())
        .sum()
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

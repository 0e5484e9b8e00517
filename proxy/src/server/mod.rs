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
use crate::core::context::Services;
use crate::listen;
use crate::listen::admission::Admission;
use crate::listen::connections::Connections;
use crate::ops::metrics::Metrics;
use crate::wire::h3_error::H3ErrorCode;

pub mod file_watch;
pub mod prefill;
pub mod reload;

/// A started proxy.
pub struct Running {
    /// Bound addresses by listener name (useful with port 0).
    pub listeners: Vec<(Arc<str>, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    pub services: Arc<Services>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// The admin endpoint outlives the listeners: stopped last.
    admin_stop: watch::Sender<bool>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    /// `/readyz`: false from the start of a shutdown.
    ready: Arc<AtomicBool>,
    connections: Connections,
    /// QUIC endpoints: closed last, so HTTP/3 tunnels can drain.
    endpoints: Vec<quinn::Endpoint>,
    grace: Duration,
}

/// Bind everything, then serve in the background. Fails if any socket cannot be bound.
pub async fn start(config: Config) -> io::Result<Running> {
    let metrics = Arc::new(
        Metrics::new(Registry::new()).map_err(|e| io::Error::other(format!("metrics: {e}")))?,
    );
    let config = Arc::new(config);
    let services = Arc::new(Services::new(Arc::clone(&config), Arc::clone(&metrics))?);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    prefill::prefill(&metrics, &config);
    crate::config::certificates::warn_expiring(&config, crate::config::certificates::unix_now());
    metrics.policy_generation.set(1);
    let connections = Connections::new();
    let admission = Admission::new();
    admission.log_if_lowered(&config.limits);
    let mut tasks = JoinSet::new();

    let (admin_stop, admin_rx) = watch::channel(false);
    let mut admin_task = None;
    let admin = match config.admin {
        Some(addr) => {
            let l = bind(addr, "admin").await?;
            let bound = l.local_addr()?;
            admin_task = Some(tokio::spawn(crate::ops::admin::serve(
                l,
                Arc::clone(&metrics),
                Arc::clone(&ready),
                admin_rx,
            )));
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
            let (endpoint, base) = listen::quic::bind(spec, bound, &config.limits)?;
            endpoints.push(endpoint.clone());
            tasks.spawn(listen::quic::accept_loop(
                endpoint,
                base,
                Arc::clone(&spec.name),
                Arc::clone(&services),
                Arc::clone(&admission),
                shutdown_rx.clone(),
            ));
            http::HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", bound.port())).ok()
        } else {
            None
        };
        tasks.spawn(listen::tcp::accept_loop(
            l,
            spec.clone(),
            Arc::clone(&services),
            connections.clone(),
            Arc::clone(&admission),
            shutdown_rx.clone(),
            alt_svc,
        ));
    }
    tasks.spawn(sample_memory(Arc::clone(&services), shutdown_rx.clone()));
    ready.store(true, Ordering::Release);
    if let Some(path) = &config.source {
        let reloader = reload::Reloader::new(path.clone(), Arc::clone(&services));
        reload::spawn_on_sighup(Arc::clone(&reloader));
        if config.watch_files {
            file_watch::spawn_on_change(reloader);
        }
    } else {
        reload::spawn_sighup_without_file();
    }

    Ok(Running {
        listeners,
        admin,
        services,
        shutdown: shutdown_tx,
        tasks,
        admin_stop,
        admin_task,
        ready,
        connections,
        endpoints,
        grace: config.limits.shutdown_grace,
    })
}

/// The overload manager's memory sampler: every
/// [`SAMPLE_EVERY`](crate::core::overload::SAMPLE_EVERY), resident memory
/// against the watermark of the configuration in force.
async fn sample_memory(services: Arc<Services>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(crate::core::overload::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_over = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let limits = &services.snapshot().limits;
        // No watermark (none configured, no cgroup limit): nothing to read.
        let resident = services
            .overload
            .memory_watermark(limits)
            .and_then(|_| crate::ops::process::resident_bytes());
        let over = services.overload.sample(limits, resident);
        services.metrics.overloaded.set(i64::from(over));
        if over != was_over {
            if over {
                tracing::warn!(
                    watermark = services.overload.memory_watermark(limits),
                    "resident memory is over the watermark: shedding new tunnels and requests (503)"
                );
            } else {
                tracing::info!("resident memory is under the watermark again: accepting new work");
            }
            was_over = over;
        }
    }
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

    /// Drain the way a load balancer expects: `/readyz` answers 503 at
    /// once (`/healthz` and `/metrics` keep answering); the listeners keep
    /// accepting for `drain_delay`, then stop; HTTP/2 and HTTP/3 clients get
    /// GOAWAY; open tunnels get the grace period; whatever is left is
    /// closed; the admin endpoint stops last.
    pub async fn shutdown(mut self) {
        self.ready.store(false, Ordering::Release);
        let drain_delay = self.services.snapshot().limits.drain_delay;
        if !drain_delay.is_zero() {
            tracing::info!(
                drain_delay_s = drain_delay.as_secs(),
                "draining: /readyz answers 503; listeners close after the drain delay"
            );
            tokio::time::sleep(drain_delay).await;
        }
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        let deadline = tokio::time::Instant::now() + self.grace;
        let drained = self.connections.drain(self.grace).await;
        // Tunnels outlive their HTTP connection task; wait for them too.
        let tunnels = &self.services.tunnels;
        if !drained || !tunnels.closed(deadline).await {
            tracing::warn!(
                tunnels = tunnels.count(),
                "grace period over; closing the remaining connections"
            );
            tunnels.abort();
            let until = tokio::time::Instant::now() + Duration::from_secs(1);
            tunnels.closed(until).await;
        }
        // Tell every HTTP/3 client we are gone (H3_NO_ERROR), and give the
        // CONNECTION_CLOSE a moment to leave.
        let code = quinn::VarInt::from_u64(H3ErrorCode::NO_ERROR.0).unwrap_or_default();
        for endpoint in &self.endpoints {
            endpoint.close(code, b"shutting down");
        }
        for endpoint in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        let _ = self.admin_stop.send(true);
        if let Some(admin) = self.admin_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
        }
    }

    /// Serve until SIGINT or SIGTERM, then shut down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
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

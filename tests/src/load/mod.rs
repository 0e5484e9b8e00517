//! The load tool (`src/bin/load.rs`): measures one front of Bauta, or the
//! same work without it (`--direct`, the physical limit of this machine).
//!
//! Modes (one file per family):
//! * `tunnels.rs`: TCP tunnels over HTTP/1.1 CONNECT (plain and TLS
//!   listener), HTTP/2 and HTTP/3 CONNECT: bulk goodput to a counting sink,
//!   setup latency and new tunnels/s (open-and-close churn), 8-byte round
//!   trips inside one tunnel to an echo.
//! * `udp.rs`: CONNECT-UDP over HTTP/3 datagrams to a UDP echo: packets/s,
//!   goodput, loss, RTT.
//! * `forward.rs`: HTTP/1.1 absolute-form GETs through the plain listener to
//!   a small origin: requests/s and latency.
//! * `handshakes.rs`: HTTP/2 connection setups (full TLS handshake, SETTINGS
//!   with the secondary-certificate setting, the eager `SERVER_CERTIFICATE`s
//!   of `--origins` origins): setups/s and latency.
//!
//! `targets.rs` holds the local peers the tool starts itself; `report.rs`
//! the figures, the table and the JSON. Every phase is bounded in time.

pub mod forward;
pub mod handshakes;
pub mod report;
pub mod targets;
pub mod tunnels;
pub mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::seccert_env::KeyKind;
use crate::seccert_env::{config_text, OriginCert as SeccertOrigin, OriginEntry, Pki};
use crate::{make_certs, pem_der, BautaProcess, Certs, TempDir, ALLOW_LOOPBACK};

pub use report::Report;

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// CONNECT over the plaintext HTTP/1.1 listener.
    H1,
    /// CONNECT over HTTP/1.1 on the TLS listener.
    H1Tls,
    /// CONNECT over HTTP/2 (TLS, ALPN h2).
    H2,
    /// CONNECT over HTTP/3.
    H3,
    /// CONNECT-UDP over HTTP/3 datagrams.
    Udp,
    /// HTTP/1.1 absolute-form GET through the plaintext listener.
    Forward,
    /// HTTP/2 connection setups with eager secondary certificates.
    Handshakes,
}

impl Mode {
    pub const ALL: [Mode; 7] = [
        Mode::H1,
        Mode::H1Tls,
        Mode::H2,
        Mode::H3,
        Mode::Udp,
        Mode::Forward,
        Mode::Handshakes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::H1 => "h1",
            Mode::H1Tls => "h1-tls",
            Mode::H2 => "h2",
            Mode::H3 => "h3",
            Mode::Udp => "udp",
            Mode::Forward => "forward",
            Mode::Handshakes => "handshakes",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Whether the mode talks to the plaintext listener (else the TLS one).
    pub fn plain(self) -> bool {
        matches!(self, Mode::H1 | Mode::Forward)
    }
}

/// Everything the command line sets.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub mode: Mode,
    /// The proxy's listener for this mode (plain or TLS); unused with
    /// `--direct` or `--spawn`.
    pub proxy: Option<SocketAddr>,
    /// CA that signed the proxy's certificate (TLS modes, external proxy).
    pub ca: Option<PathBuf>,
    /// Bulk phase: this many tunnels…
    pub tunnels: usize,
    /// …each carrying this many bytes (client to target).
    pub bytes: u64,
    /// Tunnels, flows or connections at once.
    pub concurrency: usize,
    /// Length of the timed phases (churn, udp, forward).
    pub duration: Duration,
    /// 8-byte round trips in the RTT phase.
    pub rounds: usize,
    /// `udp`: payload bytes of one datagram.
    pub payload: usize,
    /// `udp`: datagrams outstanding per flow.
    pub window: usize,
    /// `handshakes`: origins the spawned proxy advertises eagerly.
    pub origins: usize,
    /// `handshakes`: the client does not send the secondary-certificate
    /// setting (as every client but Bauta's does today).
    pub no_setting: bool,
    /// `handshakes`: one certificate names every origin.
    pub shared_cert: bool,
    /// `handshakes`: the origins' key type.
    pub origin_key: KeyKind,
    pub direct: bool,
    pub spawn: bool,
    pub worker_threads: Option<usize>,
}

/// Where the clients go: the proxy's listener (with the CA to trust), or
/// nowhere but the targets.
#[derive(Clone)]
pub struct Path {
    pub proxy: Option<SocketAddr>,
    pub certs: Option<Arc<Certs>>,
}

impl Path {
    pub fn certs(&self) -> Result<&Certs, String> {
        self.certs
            .as_deref()
            .ok_or_else(|| "this mode needs --ca FILE (the CA of the proxy's certificate)".into())
    }
}

/// CPU seconds (user + system) of process `pid`, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime, stime are 14, 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI Bauta runs on.
    Some((utime + stime) / 100.0)
}

/// `VmRSS` and `VmHWM` (peak) of process `pid`, KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The process the figures are charged to, when the tool started it.
pub struct Watched {
    pub pid: u32,
}

impl Watched {
    pub fn cpu(&self) -> f64 {
        cpu_seconds(self.pid).unwrap_or(f64::NAN)
    }
}

/// The config `--spawn` runs: a plaintext listener "plain" (HTTP/1.1), a TLS
/// listener "secure" (HTTP/1.1, HTTP/2, HTTP/3), admin, loopback allowed.
fn spawn_config(certs: &Certs) -> String {
    format!(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
         [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
         protocols = [\"http1\", \"h2\", \"h3\"]\ntls_cert = '{}'\ntls_key = '{}'\n\n{ALLOW_LOOPBACK}",
        certs.cert_pem.display(),
        certs.key_pem.display()
    )
}

/// The config `--spawn` runs for `handshakes`: the TLS listener "secure"
/// with `[secondary_certs] advertise = "eager"` and `origins` origins
/// (`o0.example` …): each with a certificate of its own, or one certificate
/// naming them all (`shared`); keys of `kind`. Their upstream is never
/// dialled: the load only sets connections up.
fn spawn_seccert(origins: usize, shared: bool, kind: KeyKind) -> (String, Certs) {
    let pki = Pki::new();
    let names: Vec<String> = (0..origins).map(|i| format!("o{i}.example")).collect();
    let certs: Vec<SeccertOrigin> = if shared && origins > 0 {
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let one = pki.origin_with(&all, kind, "shared", None);
        names.iter().map(|n| one.also_for(n)).collect()
    } else {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| pki.origin(n, kind, &format!("o{i}")))
            .collect()
    };
    let entries: Vec<OriginEntry<'_>> = certs
        .iter()
        .map(|cert| OriginEntry {
            cert,
            upstream: "http://127.0.0.1:9".into(),
        })
        .collect();
    let text = config_text(&pki, "eager", &entries, "");
    (text, pki.into_certs())
}

/// Trust `ca` (PEM) for an external proxy. Only `ca_der` is read by the
/// clients; the other paths name the CA file.
fn external_certs(ca: &std::path::Path) -> Certs {
    Certs {
        dir: TempDir::new("load-ca"),
        ca_pem: ca.to_path_buf(),
        cert_pem: ca.to_path_buf(),
        key_pem: ca.to_path_buf(),
        ca_der: pem_der(ca),
    }
}

/// `concurrency` workers, each running `step` again and again until
/// `deadline`; every error a step returns is a failure of `phase` in the
/// report.
pub async fn repeat_until<F, Fut>(
    concurrency: usize,
    deadline: tokio::time::Instant,
    phase: &'static str,
    report: &mut Report,
    step: F,
) -> Result<(), String>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let step = step.clone();
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while tokio::time::Instant::now() < deadline {
                if let Err(e) = step().await {
                    errors.push(e);
                }
            }
            errors
        }));
    }
    for w in workers {
        for e in w.await.map_err(|e| format!("{phase} worker: {e}"))? {
            report.fail(phase, e);
        }
    }
    Ok(())
}

/// Run one mode; the report, or why it could not run at all.
pub async fn run(opts: LoadOptions) -> Result<Report, String> {
    crate::init();
    let mut _keep = None;
    let mut watched = None;
    let path = if opts.direct {
        Path {
            proxy: None,
            certs: None,
        }
    } else if opts.spawn {
        let (text, certs) = if opts.mode == Mode::Handshakes {
            spawn_seccert(opts.origins, opts.shared_cert, opts.origin_key)
        } else {
            let certs = make_certs();
            (spawn_config(&certs), certs)
        };
        let dir = TempDir::new("load");
        let config = dir.write("bauta.toml", &text);
        let threads = opts.worker_threads.map(|n| n.to_string());
        let args: Vec<&str> = match &threads {
            Some(n) => vec!["--worker-threads", n],
            None => vec![],
        };
        let proc = BautaProcess::start_with_args(&config, &args).await;
        let proxy = proc.listener(if opts.mode.plain() { "plain" } else { "secure" });
        watched = Some(Watched { pid: proc.pid });
        _keep = Some((proc, dir));
        Path {
            proxy: Some(proxy),
            certs: Some(Arc::new(certs)),
        }
    } else {
        let proxy = opts.proxy.ok_or("give --proxy ADDR, --spawn or --direct")?;
        Path {
            proxy: Some(proxy),
            certs: opts.ca.as_deref().map(|ca| Arc::new(external_certs(ca))),
        }
    };
    let mut report = Report::new(&opts, path.proxy);
    let rss_before = watched.as_ref().and_then(|w| memory_kib(w.pid));
    match opts.mode {
        Mode::Udp => udp::run(&opts, &path, watched.as_ref(), &mut report).await?,
        Mode::Forward => forward::run(&opts, &path, watched.as_ref(), &mut report).await?,
        Mode::Handshakes => {
            if opts.direct {
                return Err(
                    "handshakes has no --direct: compare --origins 10 with --origins 0".into(),
                );
            }
            handshakes::run(&opts, &path, watched.as_ref(), &mut report).await?
        }
        _ => tunnels::run(&opts, &path, watched.as_ref(), &mut report).await?,
    }
    if let Some(w) = &watched {
        report.rss_kib =
            memory_kib(w.pid).map(|(rss, peak)| (rss_before.map_or(0, |r| r.0), rss, peak));
    }
    Ok(report)
}

//! `load MODE [--proxy ADDR [--ca FILE] | --spawn | --direct] …`: the load
//! tool of `bauta_tests::load`. Prints a compact table (or one JSON object
//! with `--json`); exit 0 when nothing failed, 1 otherwise, 2 on bad usage.
//! See tests/benches/README.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bauta_tests::load::{run, KeyKind, LoadOptions, Mode};
use clap::Parser;

/// Measure one front of Bauta, or the same work without it (--direct).
#[derive(Parser, Debug)]
#[command(name = "load")]
struct Args {
    /// h1 | h1-tls | h2 | h3 | udp | forward | handshakes
    mode: String,
    /// The proxy's listener: the plaintext one for h1 and forward, the TLS
    /// one (TCP and UDP) for h1-tls, h2, h3 and udp.
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// CA (PEM) of the proxy's certificate, for the TLS modes.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Start the release `bauta` ($BAUTA_BIN, else next to this binary)
    /// with a config that allows 127.0.0.0/8, and measure it.
    #[arg(long, conflicts_with = "proxy")]
    spawn: bool,
    /// With --spawn: `bauta run --worker-threads N`.
    #[arg(long, requires = "spawn")]
    worker_threads: Option<usize>,
    /// The same work straight to the targets, without the proxy.
    #[arg(long, conflicts_with_all = ["proxy", "spawn"])]
    direct: bool,
    /// Bulk phase: number of tunnels.
    #[arg(long, default_value_t = 16)]
    tunnels: usize,
    /// Bulk phase: bytes each tunnel sends.
    #[arg(long, default_value_t = 8 << 20)]
    bytes: u64,
    /// Tunnels, flows or connections at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds of the timed phases (churn, udp, forward).
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// 8-byte round trips in one tunnel.
    #[arg(long, default_value_t = 1000)]
    rounds: usize,
    /// udp: payload bytes per datagram (16..=1400).
    #[arg(long, default_value_t = 1000)]
    payload: usize,
    /// udp: datagrams outstanding per flow.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// handshakes (with --spawn): origins advertised eagerly.
    #[arg(long, default_value_t = 0)]
    origins: usize,
    /// handshakes: the client does not send SETTINGS_HTTP_SERVER_CERT_AUTH.
    #[arg(long)]
    no_setting: bool,
    /// handshakes: one certificate names every origin (one signature).
    #[arg(long)]
    shared_cert: bool,
    /// handshakes: the origins' keys: ecdsa (P-256), ed25519 or rsa (2048).
    #[arg(long, default_value = "ecdsa")]
    origin_key: String,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(mode) = Mode::parse(&args.mode) else {
        eprintln!(
            "load: unknown mode {:?}; one of h1, h1-tls, h2, h3, udp, forward, handshakes",
            args.mode
        );
        return ExitCode::from(2);
    };
    let origin_key = match args.origin_key.as_str() {
        "ecdsa" => KeyKind::EcdsaP256,
        "ed25519" => KeyKind::Ed25519,
        "rsa" => KeyKind::Rsa2048,
        other => {
            eprintln!("load: --origin-key {other:?}: one of ecdsa, ed25519, rsa");
            return ExitCode::from(2);
        }
    };
    if !(args.duration > 0.0 && args.duration <= 600.0) {
        eprintln!("load: --duration {}: want 0 < S <= 600", args.duration);
        return ExitCode::from(2);
    }
    if args.spawn && std::env::var_os("BAUTA_BIN").is_none() {
        // target/<profile>/load → target/<profile>/bauta. Set before any
        // thread starts.
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("bauta")));
        match sibling {
            Some(bin) if bin.exists() => std::env::set_var("BAUTA_BIN", bin),
            _ => {
                eprintln!(
                    "load: --spawn: set BAUTA_BIN or build it: cargo build --release -p bauta --bin bauta"
                );
                return ExitCode::from(2);
            }
        }
    }
    let opts = LoadOptions {
        mode,
        proxy: args.proxy,
        ca: args.ca,
        tunnels: args.tunnels,
        bytes: args.bytes,
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.duration),
        rounds: args.rounds,
        payload: args.payload,
        window: args.window,
        origins: args.origins,
        no_setting: args.no_setting,
        shared_cert: args.shared_cert,
        origin_key,
        direct: args.direct,
        spawn: args.spawn,
        worker_threads: args.worker_threads,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(run(opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.table());
    }
    // The clients' tasks may still hold sockets: do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! The `bauta` command line: run (default), check.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bauta::config::default as default_config;
use bauta::ops::logging;
use bauta::{tls, Config};

#[derive(Parser)]
#[command(name = "bauta", version, about = "MASQUE forward proxy")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default; without --config, the embedded default).
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print a one-line summary.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Connect to a proxy and show every secondary certificate it advertises.
    Probe {
        /// The proxy, as https://HOST:PORT.
        url: String,
        /// Use HTTP/3 instead of HTTP/2.
        #[arg(long)]
        h3: bool,
        /// Trust anchors (PEM) for the proxy and the advertised certificates;
        /// default: the system's roots.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Send CONNECT HOST:PORT first (on-connect advertising reacts to it).
        #[arg(long, value_name = "HOST:PORT")]
        connect: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// How long to wait for certificates, in milliseconds.
        #[arg(long, default_value_t = 500)]
        wait_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tls::install_crypto_provider();
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Run { config }) => run(config),
        Some(Command::Probe {
            url,
            h3,
            ca,
            connect,
            json,
            wait_ms,
        }) => probe(
            bauta::probe::ProbeOptions {
                url,
                h3,
                ca,
                connect,
                wait: std::time::Duration::from_millis(wait_ms),
                codepoints: Default::default(),
            },
            json,
        ),
        None => run(None),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            println!("{}: {}", path.display(), c.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn probe(opts: bauta::probe::ProbeOptions, json: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bauta::probe::run(&opts)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                report.print_text();
            }
            if report.certificates.iter().any(|c| !c.validated) {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: Option<PathBuf>) -> ExitCode {
    logging::init();
    let config = match path {
        Some(p) => Config::load(&p),
        None => embedded_default(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let running = match bauta::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        for (name, addr) in &running.listeners {
            tracing::info!(listener = %name, %addr, "listening");
        }
        if let Some(a) = running.admin {
            tracing::info!(%a, "admin endpoint: /metrics /healthz /readyz");
        }
        running.run_until_signal().await;
        ExitCode::SUCCESS
    })
}

fn embedded_default() -> Result<Config, bauta::config::ConfigError> {
    let dir = tls::state_dir();
    let fail = |message: String| bauta::config::ConfigError {
        file: "<embedded default>".into(),
        line: None,
        key: "listener.tls_cert".into(),
        message,
    };
    let (cert, key, created) = tls::ensure_self_signed(&dir).map_err(fail)?;
    let chain = tls::load_certs(&cert).map_err(fail)?;
    let fp = tls::fingerprint(&chain[0]);
    eprintln!(
        "bauta: {} self-signed certificate {} (SHA-256 {fp})",
        if created { "generated" } else { "using" },
        cert.display()
    );
    eprintln!(
        "bauta: try  curl -p -x http://127.0.0.1:8080 https://example.com/  or  curl --proxy https://127.0.0.1:8443 --proxy-cacert {} https://example.com/",
        cert.display()
    );
    default_config::build(&cert, &key)
}

//! The `bauta` command line: run (default), check.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bauta::{default_config, logging, tls, Config};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tls::install_crypto_provider();
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Run { config }) => run(config),
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

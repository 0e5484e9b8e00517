//! The `bauta` command line: run (default), check, probe, policy explain | test.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bauta_policy::Protocol;
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
        /// Threads serving connections (overrides `[runtime]
        /// worker_threads`; default: one per core).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        worker_threads: Option<u16>,
    },
    /// Validate a configuration file and print a one-line summary.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Read the absolute paths the file names (certificates, keys, the
        /// policy and credentials files) under DIR — for a configuration
        /// whose files are mounted elsewhere when it runs.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Connect to a proxy and show every secondary certificate it advertises,
    /// and how it answers a CONNECT or CONNECT-UDP. Exit 0 ok, 1 error, 3 an
    /// authenticator is invalid, 4 the CONNECT or CONNECT-UDP was not
    /// answered 2xx or no datagram came back.
    Probe(ProbeArgs),
    /// Add or replace USER in a Basic credentials file (`[auth] basic_file`)
    /// with an argon2id hash. The password is read from the terminal (asked
    /// twice) or from one line of standard input, never from the command line.
    Passwd {
        /// The credentials file (created, mode 0600, if missing).
        file: PathBuf,
        user: String,
    },
    /// Ask the configured policy about destinations, without reaching them.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

/// `bauta probe`'s arguments.
#[derive(clap::Args)]
struct ProbeArgs {
    /// The proxy, as https://HOST:PORT.
    url: String,
    /// Use HTTP/3 (the default with --connect-udp; else HTTP/2).
    #[arg(long, conflicts_with = "h2")]
    h3: bool,
    /// Use HTTP/2 (the default without --connect-udp; with it, extended
    /// CONNECT and DATAGRAM capsules instead of HTTP/3 datagrams).
    #[arg(long)]
    h2: bool,
    /// Trust anchors (PEM) for the proxy and the advertised certificates;
    /// default: the system's roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Send CONNECT HOST:PORT first (on-connect advertising reacts to it)
    /// and report the answer: status, setup time, Proxy-Status.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "connect_udp")]
    connect: Option<String>,
    /// Open a CONNECT-UDP tunnel to HOST:PORT (a UDP echo service, or a
    /// DNS server on port 53), send --count datagrams through it and report
    /// the echoes: sent, received, loss, round-trip times.
    #[arg(long, value_name = "HOST:PORT")]
    connect_udp: Option<String>,
    /// Datagrams to send through the CONNECT-UDP tunnel.
    #[arg(long, default_value_t = 10, requires = "connect_udp",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// UDP payload size of each datagram, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64, requires = "connect_udp",
          value_parser = clap::value_parser!(u16).range(bauta::probe::MIN_SIZE as i64..=bauta::probe::MAX_SIZE as i64))]
    size: u16,
    /// Time between two datagrams, in milliseconds.
    #[arg(long, default_value_t = 100, requires = "connect_udp")]
    interval_ms: u64,
    /// What the datagrams carry: `echo` (a sequence number and a send
    /// time, for a UDP echo service) or `dns` (a DNS query per datagram, for
    /// a DNS server: its answers are the echoes; --size does not apply).
    /// Default: dns for port 53, else echo.
    #[arg(long, value_name = "KIND", requires = "connect_udp")]
    payload: Option<String>,
    /// The proxy's CONNECT-UDP URI template, as a path with
    /// {target_host} and {target_port}.
    #[arg(long, value_name = "PATH", default_value = bauta::probe::DEFAULT_TEMPLATE,
          requires = "connect_udp")]
    udp_template: String,
    /// Send Proxy-Authorization: Basic with this user; the password is
    /// read from the environment variable BAUTA_PROBE_PASSWORD.
    #[arg(long, value_name = "USER")]
    proxy_user: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// How long to wait for certificates after the exchange, and for
    /// the last echoes after the last datagram, in milliseconds.
    #[arg(long, default_value_t = 500)]
    wait_ms: u64,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Decide one request as the proxy would and say why: the verdict, the
    /// rule, and each address with the SSRF guard's view of it. Exit 0
    /// allowed (allow or report), 1 denied, 2 error.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_name = "HOST:PORT")]
        target: String,
        /// connect, connect-udp, http or reverse.
        #[arg(long, default_value = "connect", value_parser = bauta::policy_tool::parse_protocol)]
        protocol: Protocol,
        /// The client's source address (for rules with `clients`).
        #[arg(long, value_name = "IP")]
        client_ip: Option<IpAddr>,
        /// The client's verified identity (for rules with `identities`).
        #[arg(long, value_name = "ID")]
        identity: Option<String>,
        /// Decide with this address instead of resolving the name (repeatable).
        #[arg(long = "addr", value_name = "IP")]
        addrs: Vec<IpAddr>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a table of expected verdicts (`[[case]]`, see the README) against
    /// a configuration's policy. Exit 0 all as expected, 1 any mismatch, 2 error.
    Test { file: PathBuf },
    /// Validate a policy file on its own (`default`, `[[rule]]`, `[groups]`,
    /// as `[policy] file` names it). Exit 0 and a summary, or 2 with
    /// `FILE:LINE: KEY: message`.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tls::install_crypto_provider();
    match cli.command {
        Some(Command::Check { config, root }) => check(&config, root.as_deref()),
        Some(Command::Run {
            config,
            worker_threads,
        }) => run(config, worker_threads.map(usize::from)),
        Some(Command::Probe(args)) => {
            let json = args.json;
            match probe_options(args) {
                Ok(opts) => probe(opts, json),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Policy { command }) => policy(command),
        Some(Command::Passwd { file, user }) => passwd(&file, &user),
        None => run(None, None),
    }
}

fn policy(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Explain {
            config,
            target,
            protocol,
            client_ip,
            identity,
            addrs,
            json,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match runtime(Threads::Current) {
                Some(r) => r,
                None => return ExitCode::from(2),
            };
            let question = bauta::policy_tool::Question {
                target,
                protocol,
                client: client_ip,
                identity,
                addrs,
            };
            match runtime.block_on(bauta::policy_tool::explain(&config, &question)) {
                Ok(e) => {
                    if json {
                        if !print_json(&e) {
                            return ExitCode::from(2);
                        }
                    } else {
                        e.print_text();
                    }
                    if e.allowed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        PolicyCommand::Check { file } => {
            match bauta::config::policy_file::load_policy_file(&file) {
                Ok(p) => {
                    println!(
                        "{}: ok: policy {} rule(s), default {}",
                        file.display(),
                        p.rule_count(),
                        p.default_verdict().as_str()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        PolicyCommand::Test { file } => match bauta::policy_tool::cases::run(&file) {
            Ok(outcome) => {
                for f in &outcome.failures {
                    println!("FAIL {f}");
                }
                println!(
                    "policy test: {} cases, {} failed",
                    outcome.cases,
                    outcome.failures.len()
                );
                if outcome.failures.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn passwd(file: &std::path::Path, user: &str) -> ExitCode {
    use bauta::auth::passwd::{read_password, set, Change};
    let result = read_password(user).and_then(|password| set(file, user, &password));
    match result {
        Ok(change) => {
            let did = match change {
                Change::Added => "added",
                Change::Replaced => "replaced",
            };
            eprintln!("{}: {did} {user}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(path: &std::path::Path, root: Option<&std::path::Path>) -> ExitCode {
    // Warnings found while loading (a key file others can read) go to stderr.
    logging::init(bauta::config::log::peek_format(path) == bauta::config::log::LogFormat::Json);
    match Config::load_under(path, root) {
        Ok(c) => {
            let now = bauta::config::certificates::unix_now();
            bauta::config::certificates::warn_expiring(&c, now);
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
    let runtime = match runtime(Threads::Current) {
        Some(r) => r,
        None => return ExitCode::FAILURE,
    };
    match runtime.block_on(bauta::probe::run(&opts)) {
        Ok(report) => {
            if json {
                if !print_json(&report) {
                    return ExitCode::FAILURE;
                }
            } else {
                report.print_text();
            }
            if report.certificates.iter().any(|c| !c.validated) {
                ExitCode::from(3)
            } else if report.tunnel_failed() {
                ExitCode::from(4)
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

fn probe_options(args: ProbeArgs) -> Result<bauta::probe::ProbeOptions, String> {
    let connect_udp = args
        .connect_udp
        .map(|target| {
            bauta::probe::UdpOptions::new(
                &target,
                &args.udp_template,
                args.count,
                usize::from(args.size),
                std::time::Duration::from_millis(args.interval_ms),
                args.payload.as_deref(),
            )
        })
        .transpose()?;
    Ok(bauta::probe::ProbeOptions {
        url: args.url,
        // CONNECT-UDP defaults to HTTP/3 datagrams, the rest to HTTP/2.
        h3: args.h3 || (connect_udp.is_some() && !args.h2),
        ca: args.ca,
        connect: args.connect,
        connect_udp,
        proxy_authorization: args.proxy_user.map(probe_authorization).transpose()?,
        wait: std::time::Duration::from_millis(args.wait_ms),
        codepoints: Default::default(),
    })
}

/// `Proxy-Authorization` for `--proxy-user USER`, the password from
/// `BAUTA_PROBE_PASSWORD` (never from the command line).
fn probe_authorization(user: String) -> Result<String, String> {
    if user.contains(':') {
        return Err("--proxy-user: a Basic user-id cannot contain ':'".into());
    }
    let password = std::env::var("BAUTA_PROBE_PASSWORD")
        .map_err(|_| "--proxy-user needs the password in BAUTA_PROBE_PASSWORD".to_string())?;
    Ok(bauta::probe::basic_authorization(&user, &password))
}

fn run(path: Option<PathBuf>, worker_threads: Option<usize>) -> ExitCode {
    let format = path
        .as_deref()
        .map(bauta::config::log::peek_format)
        .unwrap_or_default();
    logging::init(format == bauta::config::log::LogFormat::Json);
    bauta::ops::access_log::to_stdout();
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
    let workers = worker_threads.or(config.worker_threads);
    let runtime = match runtime(Threads::Workers(workers)) {
        Some(r) => r,
        None => return ExitCode::FAILURE,
    };
    let code = runtime.block_on(async move {
        let running = match bauta::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
            "runtime started"
        );
        for (name, addr) in &running.listeners {
            tracing::info!(listener = %name, %addr, "listening");
        }
        if let Some(a) = running.admin {
            tracing::info!(%a, "admin endpoint: /metrics /healthz /readyz");
        }
        running.run_until_signal().await;
        ExitCode::SUCCESS
    });
    // Tasks dropped with the runtime may still log; then every line is
    // written before the process exits.
    drop(runtime);
    bauta::ops::access_log::flush();
    code
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

/// Which runtime a command runs on.
enum Threads {
    /// The proxy: this many workers (`None`: one per core).
    Workers(Option<usize>),
    /// A short command: the calling thread.
    Current,
}

/// The tokio runtime for a command; `None` (after saying why) if it cannot start.
fn runtime(threads: Threads) -> Option<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Threads::Workers(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = n {
                b.worker_threads(n);
            }
            b
        }
        Threads::Current => tokio::runtime::Builder::new_current_thread(),
    };
    match builder.enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

/// Print `value` as pretty JSON on stdout; false (after saying why) if it cannot be.
fn print_json(value: &impl serde::Serialize) -> bool {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

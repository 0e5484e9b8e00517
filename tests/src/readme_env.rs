//! Helpers for the README-claim tests (`tests/tests/readme_*.rs`): the
//! `bauta` binary run as a child process (optionally inside a network
//! namespace the test creates), with its stdout (the access log) and stderr
//! captured; scripted misbehaving upstreams; and the HTTP/2 client flows of
//! `tests/peers/readme_h2_client.py`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use rustls_pki_types::ServerName;

use crate::masque::python;
use crate::seccert_env::{peer_json, KeyKind, OriginCert, Pki};
use crate::{bauta_bin, h2_client, tls_client_config, Certs, H2Sender, TempDir};

// === network namespaces ===

/// A network namespace (`ip netns add`) with only `lo` up, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Create one, or `Err(why)` if this machine cannot (no `ip`, no privilege).
    pub fn create() -> Result<NetNs, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bauta-t-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let run = |args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip {args:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(&["netns", "add", &name])?;
        let ns = NetNs { name };
        run(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip netns exec NAME` as a command prefix.
    pub fn prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

// === the binary as a child process ===

/// `bauta run --config FILE` as a child (killed on drop). Stdout lines (the
/// access log) and stderr lines are collected as they come.
pub struct BinProxy {
    child: Child,
    pub dir: TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
    listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
}

/// Remove ANSI colour sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The value of `key=` in a text log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    line[start..].split_whitespace().next()
}

impl BinProxy {
    /// Start with `config` (written to a temp file) under `prefix` (e.g. an
    /// `ip netns exec` prefix); wait until every listener in `listeners`
    /// (and the admin endpoint, if `admin`) has logged its address.
    pub async fn start(
        config: &str,
        prefix: &[String],
        listeners: &[&str],
        admin: bool,
    ) -> BinProxy {
        let dir = TempDir::new("binproxy");
        let path = dir.write("bauta.toml", config);
        let bin = bauta_bin();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&path)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let out = child.stdout.take().expect("piped stdout");
        let sink = Arc::clone(&stdout);
        tasks.push(tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().expect("stdout lock").push(l);
            }
        }));
        let err = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        tasks.push(tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().expect("stderr lock").push(strip_ansi(&l));
            }
        }));
        let mut p = BinProxy {
            child,
            dir,
            stdout,
            stderr,
            tasks,
            listeners: Vec::new(),
            admin: None,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let lines = p.stderr_lines();
            p.listeners = lines
                .iter()
                .filter(|l| l.contains("listening"))
                .filter_map(|l| {
                    let name = field(l, "listener")?.to_string();
                    let addr = field(l, "addr")?.parse().ok()?;
                    Some((name, addr))
                })
                .collect();
            p.admin = lines
                .iter()
                .filter(|l| l.contains("admin endpoint"))
                .find_map(|l| field(l, "a")?.parse().ok());
            let ready = listeners
                .iter()
                .all(|n| p.listeners.iter().any(|(m, _)| m == n))
                && (!admin || p.admin.is_some());
            if ready {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!(
                    "bauta exited with {status} before listening\nstderr:\n{}",
                    lines.join("\n")
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "bauta did not log its listeners within 20 s\nstderr:\n{}",
                lines.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.listeners))
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lock").clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Wait (up to `limit`) until stdout holds at least `n` lines; returns them all.
    pub async fn wait_stdout_lines(&self, n: usize, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let lines = self.stdout_lines();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stdout has {} of {n} lines after {limit:?}: {lines:#?}\nstderr:\n{}",
                lines.len(),
                self.stderr_lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BinProxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        for t in &self.tasks {
            t.abort();
        }
    }
}

// === scripted upstreams ===

/// What a [`ScriptedUpstream`] does once it has read a request head.
#[derive(Clone, Copy, Debug)]
pub enum Script {
    /// Close the connection without a byte of response.
    Close,
    /// Send these bytes, then close.
    Send(&'static [u8]),
}

/// A TCP server on 127.0.0.1 that reads one request head (or, for TLS
/// clients, whatever arrives first) and then follows its script.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ScriptedUpstream {
    /// `head_end`: read until `\r\n\r\n` (an HTTP/1.1 request) if true, else
    /// until the first bytes (e.g. a TLS ClientHello).
    pub async fn start(script: Script, head_end: bool) -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind scripted upstream");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if !head_end || buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    if let Script::Send(bytes) = script {
                        let _ = s.write_all(bytes).await;
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
        ScriptedUpstream {
            addr,
            accepted,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === tests/peers/readme_h2_client.py ===

pub fn readme_h2_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/readme_h2_client.py")
}

/// Run `readme_h2_client.py MODE --port PORT --ca CA ARGS…` (20 s bound);
/// its JSON. Fails the test if it exits non-zero or prints no JSON.
pub async fn run_readme_h2(mode: &str, port: u16, ca: &Path, args: &[String]) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(readme_h2_script())
        .arg(mode)
        .arg("--port")
        .arg(port.to_string())
        .arg("--ca")
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let what = format!("readme_h2_client.py {mode} {args:?}");
    peer_json(&what, cmd.output()).await
}

// === a TLS listener whose own certificate covers an origin ===

/// Certificates for a TLS listener whose own certificate is an origin
/// certificate (SAN `host` only), signed by the PKI's CA: the origin is then
/// covered by the handshake.
pub fn origin_listener_certs(pki: &Pki, host: &str) -> (Certs, OriginCert) {
    let origin = pki.origin(host, KeyKind::EcdsaP256, "listener-origin");
    let certs = Certs {
        dir: TempDir::new("listener-origin"),
        ca_pem: pki.certs.ca_pem.clone(),
        cert_pem: origin.cert_pem.clone(),
        key_pem: origin.key_pem.clone(),
        ca_der: pki.certs.ca_der.clone(),
    };
    (certs, origin)
}

/// HTTP/2 over TLS (ALPN h2) to `addr`, verifying the certificate for `name`.
pub async fn h2_to(addr: SocketAddr, certs: &Certs, name: &str) -> H2Sender {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(certs, &[b"h2"]));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("TCP connect to proxy");
    let tls = connector
        .connect(
            ServerName::try_from(name.to_string()).expect("server name"),
            tcp,
        )
        .await
        .expect("TLS handshake with the proxy");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    h2_client(tls).await
}

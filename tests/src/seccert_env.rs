//! Helpers for the secondary-certificate end-to-end tests
//! (`tests/tests/secondary_certs.rs`): a test PKI whose CA also signs origin
//! certificates, a proxy with `[secondary_certs]` and `[[origin]]` tables on
//! an HTTP/1.1 + HTTP/2 + HTTP/3 listener (started from text or from a file,
//! for reloads), and runners for the independent Python clients
//! `tests/peers/seccert_h2_client.py` (pyOpenSSL + h2) and
//! `tests/peers/seccert_h3_client.py` (aioquic).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::masque::{metric, python};
use crate::{fetch_metrics, init, Certs, TempDir};

/// Bound for one secondary-certificate test (Python start-ups included).
pub const SECCERT_LIMIT: Duration = Duration::from_secs(30);

/// The HTTP/2 GOAWAY code PROTOCOL_ERROR (RFC 9113 §7).
pub const H2_PROTOCOL_ERROR: u64 = 0x1;
/// H3_FRAME_UNEXPECTED (RFC 9114 §8.1).
pub const H3_FRAME_UNEXPECTED: u64 = 0x0105;
/// H3_SETTINGS_ERROR (RFC 9114 §8.1).
pub const H3_SETTINGS_ERROR: u64 = 0x0109;

/// Key type of an origin certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Ed25519,
    Rsa2048,
}

impl KeyKind {
    fn alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
            KeyKind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// TLS SignatureSchemes an authenticator for this key may carry, given
    /// what the Python clients offer.
    pub fn schemes(self) -> &'static [u64] {
        match self {
            KeyKind::EcdsaP256 => &[0x0403],
            KeyKind::Ed25519 => &[0x0807],
            KeyKind::Rsa2048 => &[0x0804, 0x0805, 0x0806],
        }
    }
}

/// A test CA (key kept, so it can sign origin certificates too) and the
/// proxy's listener certificate (SANs `localhost`, `127.0.0.1`).
pub struct Pki {
    /// `ca.pem`, `proxy.pem`, `proxy.key` in `certs.dir`.
    pub certs: Certs,
    issuer: Issuer<'static, KeyPair>,
}

/// An origin certificate and key written as PEM files.
#[derive(Clone, Debug)]
pub struct OriginCert {
    pub host: String,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    /// The leaf's serial number, lower-case hex without leading zeros (as the
    /// Python clients print it).
    pub serial_hex: String,
    pub kind: KeyKind,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Bauta Secondary Certs Test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let dir = TempDir::new("seccert-pki");
        let (leaf_pem, leaf_key) = leaf(
            &issuer,
            &["localhost", "127.0.0.1"],
            KeyKind::EcdsaP256,
            next_serial(),
            None,
        );
        let ca_pem = dir.write("ca.pem", &ca_cert.pem());
        let cert_pem = dir.write("proxy.pem", &leaf_pem);
        let key_pem = dir.write_secret("proxy.key", &leaf_key);
        Pki {
            certs: Certs {
                dir,
                ca_pem,
                cert_pem,
                key_pem,
                ca_der: ca_cert.der().clone(),
            },
            issuer,
        }
    }

    pub fn dir(&self) -> &Path {
        self.certs.dir.path()
    }

    /// The CA and the proxy's certificate, for a client (the directory with
    /// the origin certificates goes along).
    pub fn into_certs(self) -> Certs {
        self.certs
    }

    /// A CA-signed certificate for `host` (SAN dNSName), leaf only, written to
    /// `<stem>.pem` / `<stem>.key` in the PKI directory.
    pub fn origin(&self, host: &str, kind: KeyKind, stem: &str) -> OriginCert {
        self.origin_until(host, kind, stem, None)
    }

    /// [`Pki::origin`] valid until `not_after_unix` (seconds since the epoch;
    /// `None`: rcgen's default, far in the future).
    pub fn origin_until(
        &self,
        host: &str,
        kind: KeyKind,
        stem: &str,
        not_after_unix: Option<u64>,
    ) -> OriginCert {
        self.origin_with(&[host], kind, stem, not_after_unix)
    }

    /// One certificate for several origins (`names`: SAN dNSNames; the
    /// first is `host`).
    pub fn origin_with(
        &self,
        names: &[&str],
        kind: KeyKind,
        stem: &str,
        not_after_unix: Option<u64>,
    ) -> OriginCert {
        let host = names.first().copied().unwrap_or("origin.test");
        let serial = next_serial();
        let (cert, key) = leaf(&self.issuer, names, kind, serial, not_after_unix);
        let cert_pem = self.certs.dir.write(&format!("{stem}.pem"), &cert);
        let key_pem = self.certs.dir.write_secret(&format!("{stem}.key"), &key);
        OriginCert {
            host: host.to_string(),
            cert_pem,
            key_pem,
            serial_hex: format!("{serial:x}"),
            kind,
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl OriginCert {
    /// The same certificate and key, configured for `host` (one of its
    /// names): another `[[origin]]` on a shared certificate.
    pub fn also_for(&self, host: &str) -> OriginCert {
        OriginCert {
            host: host.to_string(),
            ..self.clone()
        }
    }

    /// Copy this certificate and key over `other`'s files (for a reload).
    pub fn install_over(&self, other: &OriginCert) {
        for (from, to) in [
            (&self.cert_pem, &other.cert_pem),
            (&self.key_pem, &other.key_pem),
        ] {
            let tmp = to.with_extension("tmp");
            std::fs::copy(from, &tmp).expect("copy the new certificate");
            std::fs::rename(&tmp, to).expect("replace the certificate file");
        }
    }
}

/// Serial numbers unique within the test process (and unlikely to repeat across).
fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
        & 0x00ff_ffff_ffff_ffff;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Positive, non-zero, and with its top bit clear so DER needs no padding.
    (base.wrapping_add(n << 1) | 1) & 0x3fff_ffff_ffff_ffff
}

/// A server leaf for `names` signed by `issuer`: (certificate PEM, key PEM).
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    kind: KeyKind,
    serial: u64,
    not_after_unix: Option<u64>,
) -> (String, String) {
    let key = KeyPair::generate_for(kind.alg()).expect("leaf key");
    let mut params = CertificateParams::new(
        names
            .iter()
            .map(|n| (*n).to_string())
            .collect::<Vec<String>>(),
    )
    .expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // cryptography's X.509 verifier (the Python clients) wants an AKI.
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from(serial.to_be_bytes().to_vec()));
    if let Some(secs) = not_after_unix {
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(secs);
    }
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}

// === the proxy ===

/// One `[[origin]]` table.
pub struct OriginEntry<'a> {
    pub cert: &'a OriginCert,
    /// `http://127.0.0.1:PORT`
    pub upstream: String,
}

/// The whole configuration: admin, a TLS listener "secure" (`http1`, `h2`,
/// `h3`), `[secondary_certs] advertise = MODE`, the origins, an allow rule for
/// 127.0.0.0/8, and `extra` (e.g. the fake DNS's `[dns]`/`[limits]`).
pub fn config_text(pki: &Pki, advertise: &str, origins: &[OriginEntry<'_>], extra: &str) -> String {
    let mut text = format!(
        "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
         protocols = [\"http1\", \"h2\", \"h3\"]\ntls_cert = '{}'\ntls_key = '{}'\n\n\
         [secondary_certs]\nadvertise = \"{advertise}\"\n\n",
        pki.certs.cert_pem.display(),
        pki.certs.key_pem.display()
    );
    for o in origins {
        text.push_str(&format!(
            "[[origin]]\nhost = \"{}\"\nport = 443\ncert = '{}'\nkey = '{}'\nupstream = \"{}\"\n\n",
            o.cert.host,
            o.cert.cert_pem.display(),
            o.cert.key_pem.display(),
            o.upstream
        ));
    }
    text.push_str(crate::ALLOW_LOOPBACK);
    text.push('\n');
    text.push_str(extra);
    text
}

/// A proxy running in this process.
pub struct SeccertProxy {
    running: Option<bauta::Running>,
    /// TCP (http1, h2) and UDP (h3), same port.
    pub secure: SocketAddr,
    pub admin: SocketAddr,
    pub config_text: String,
    /// Set when started from a file.
    pub config_path: Option<PathBuf>,
}

impl SeccertProxy {
    /// Start from configuration text (`bauta::Config::parse`).
    pub async fn start(text: &str) -> SeccertProxy {
        SeccertProxy::start_with(text, None).await
    }

    /// Write `text` to `path` and start with `bauta::Config::load(path)`.
    pub async fn start_from_file(text: &str, path: &Path) -> SeccertProxy {
        std::fs::write(path, text).expect("write the config file");
        SeccertProxy::start_with(text, Some(path)).await
    }

    async fn start_with(text: &str, path: Option<&Path>) -> SeccertProxy {
        init();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let cfg = match path {
                Some(p) => bauta::Config::load(p),
                None => bauta::Config::parse(text, "seccert.toml", &std::env::temp_dir()),
            };
            let cfg = cfg.unwrap_or_else(|e| panic!("test config rejected: {e}\n---\n{text}"));
            match bauta::start(cfg).await {
                Ok(running) => {
                    let secure = running.listener_addr("secure").expect("secure bound");
                    let admin = running.admin.expect("admin bound");
                    return SeccertProxy {
                        running: Some(running),
                        secure,
                        admin,
                        config_text: text.to_string(),
                        config_path: path.map(Path::to_path_buf),
                    };
                }
                // The UDP side takes the TCP side's port; another process may hold it.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 10 => continue,
                Err(e) => panic!("start the proxy: {e}\n---\n{text}"),
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.secure.port()
    }

    pub async fn metrics(&self) -> String {
        fetch_metrics(self.admin).await
    }

    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics().await, name, labels)
    }

    /// `bauta::server::reload::reload` on the file the proxy was started from.
    pub fn reload(&self) -> Result<(), bauta::server::reload::ReloadError> {
        let path = self
            .config_path
            .as_deref()
            .expect("proxy started from a file");
        let running = self.running.as_ref().expect("proxy running");
        bauta::server::reload::reload(path, &running.services)
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

// === the Python clients ===

/// Which independent client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// `seccert_h2_client.py`: pyOpenSSL + h2.
    H2,
    /// `seccert_h3_client.py`: aioquic.
    H3,
}

impl Peer {
    pub fn script(self) -> PathBuf {
        let name = match self {
            Peer::H2 => "seccert_h2_client.py",
            Peer::H3 => "seccert_h3_client.py",
        };
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("peers")
            .join(name)
    }

    /// `"h2"` / `"h3"`, the proxy's metric label.
    pub fn protocol(self) -> &'static str {
        match self {
            Peer::H2 => "h2",
            Peer::H3 => "h3",
        }
    }
}

fn peer_command(peer: Peer, args: &[String]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(peer.script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `MODE --port PORT --ca CA ARGS…` as owned strings.
pub fn peer_args(mode: &str, proxy: &SeccertProxy, pki: &Pki, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        mode.to_string(),
        "--port".to_string(),
        proxy.port().to_string(),
        "--ca".to_string(),
        pki.certs.ca_pem.display().to_string(),
    ];
    v.extend(extra.iter().map(|s| (*s).to_string()));
    v
}

/// Run a client to completion (20 s bound); its last JSON line. Fails the
/// test (with its stderr) if it exits non-zero or prints no JSON.
pub async fn run_peer(peer: Peer, args: &[String]) -> Value {
    let what = format!("{} {args:?}", peer.script().display());
    let child = peer_command(peer, args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {}: {e}", python().display()));
    peer_json(&what, child.wait_with_output()).await
}

/// Wait (20 s bound) for a peer script's output; its last JSON line. Fails
/// the test (with its stderr) if it exits non-zero or prints no JSON.
pub async fn peer_json(
    what: &str,
    output: impl std::future::Future<Output = std::io::Result<std::process::Output>>,
) -> Value {
    let out = match tokio::time::timeout(Duration::from_secs(20), output).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: did not finish within 20 s"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("{what}: no JSON\nstdout: {stdout}\nstderr: {stderr}"));
    // Shown with the test's output when it fails (or with --nocapture).
    eprintln!("{what}:\n{line}");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: bad JSON {line:?}: {e}"))
}

/// A client started with `--hold`: it prints one JSON object, then waits for
/// a line on stdin before its second round on the same connection.
pub struct HeldPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    what: String,
}

impl HeldPeer {
    pub async fn start(peer: Peer, args: &[String]) -> HeldPeer {
        let what = format!("{} {args:?}", peer.script().display());
        let mut child = peer_command(peer, args)
            .stdin(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        HeldPeer {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            what,
        }
    }

    /// The next JSON object it prints (15 s bound).
    pub async fn next_json(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(15), self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("{}: no output within 15 s", self.what))
                .unwrap_or_else(|e| panic!("{}: read stdout: {e}", self.what))
                .unwrap_or_else(|| {
                    panic!("{}: exited without JSON (its stderr is above)", self.what)
                });
            if line.trim_start().starts_with('{') {
                return serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{}: bad JSON {line:?}: {e}", self.what));
            }
        }
    }

    /// Let it continue; returns its second JSON object and waits for it to exit.
    pub async fn resume(mut self) -> Value {
        let mut stdin = self.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").await.expect("write to the client");
        stdin.flush().await.expect("flush");
        let v = self.next_json().await;
        drop(stdin);
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: did not exit", self.what))
            .expect("wait for the client");
        assert!(status.success(), "{}: exit {status:?}", self.what);
        v
    }
}

// === reading the clients' JSON ===

/// `v[key]` as u64, failing with the whole object otherwise.
pub fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{key} is not a number in {v:#}"))
}

/// `v[key]` as str, failing with the whole object otherwise.
pub fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{key} is not a string in {v:#}"))
}

/// The `certificates` array of a flow report.
pub fn certificates(v: &Value) -> &Vec<Value> {
    v.get("certificates")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no certificates array in {v:#}"))
}

/// Assert one certificate report: validated (RFC 9261), chain acceptable,
/// names include `host`, the expected serial and a scheme fitting the key.
pub fn assert_certificate(c: &Value, origin: &OriginCert, what: &str) {
    assert_eq!(
        c.get("valid"),
        Some(&Value::Bool(true)),
        "{what}: the authenticator must validate (RFC 9261): {c:#}"
    );
    assert_eq!(
        c.get("acceptable"),
        Some(&Value::Bool(true)),
        "{what}: the chain must verify to the test CA for {}: {c:#}",
        origin.host
    );
    let names: Vec<&str> = c
        .get("names")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&origin.host.as_str()),
        "{what}: names {names:?} should contain {}",
        origin.host
    );
    assert_eq!(
        str_at(c, "leaf_serial"),
        origin.serial_hex,
        "{what}: leaf serial (which certificate was sent)"
    );
    let scheme = u64_at(c, "scheme");
    assert!(
        origin.kind.schemes().contains(&scheme),
        "{what}: scheme {scheme:#06x} for a {:?} key",
        origin.kind
    );
    assert_eq!(u64_at(c, "chain_len"), 1, "{what}: chain = the leaf only");
}

/// The `status` of a sub-report (`get_origin`, `connect_echo`, …).
pub fn status_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key)
        .and_then(|r| r.get("status"))
        .and_then(Value::as_u64)
}

/// Assert the same-connection requests of a flow report: GET origin → 200
/// from the upstream; CONNECT echo → 200 + echo (when asked); GET other → 421.
pub fn assert_served(v: &Value, path: &str, echo: bool, what: &str) {
    let get = &v["get_origin"];
    assert_eq!(
        get["status"].as_u64(),
        Some(200),
        "{what}: GET https://origin.test{path} on the same connection is reverse-proxied: {v:#}"
    );
    assert_eq!(
        get["body"].as_str(),
        Some(format!("origin: GET {path}\n").as_str()),
        "{what}: body from the upstream"
    );
    assert_eq!(
        get["ended"].as_bool(),
        Some(true),
        "{what}: the reverse-proxied response ends (END_STREAM / FIN) within 5 s: {get:#}"
    );
    assert_eq!(
        get["headers"]["x-origin"].as_str(),
        Some("yes"),
        "{what}: upstream response header kept: {get:#}"
    );
    for hop in ["x-origin-hop", "keep-alive", "connection"] {
        assert!(
            get["headers"].get(hop).is_none(),
            "{what}: hop-by-hop {hop} must not reach the client: {get:#}"
        );
    }
    if echo {
        let c = &v["connect_echo"];
        assert_eq!(
            c["status"].as_u64(),
            Some(200),
            "{what}: CONNECT to the echo server still tunnels: {c:#}"
        );
        assert!(
            c["echo"]
                .as_str()
                .is_some_and(|e| e.starts_with("hello through the h")),
            "{what}: echo through the tunnel: {c:#}"
        );
        assert_eq!(
            c["after_eof"].as_str(),
            std::str::from_utf8(crate::ECHO_EOF_REPLY).ok(),
            "{what}: half-close reaches the echo server: {c:#}"
        );
    }
    assert_eq!(
        status_of(v, "get_other"),
        Some(421),
        "{what}: GET https://other.test/ (not covered) → 421: {v:#}"
    );
}

//! What the chain tests do through the sidecar: its clients (curl, the
//! Python h2 and aioquic peers, Rust HTTP/1.1 and HTTP/2), what its answers
//! must say (`Proxy-Status` gateway-then-sidecar, or the sidecar alone), the
//! gateway's counters, and waits that end: a tunnel ending, a CONNECT
//! retried while the sidecar reconnects.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{GatewayEnv, Pod, Proto, ProxyStatus, GATEWAY_LISTENER, GATEWAY_NAME, SIDECAR_NAME};
use crate::masque::{run_masque_client, PyRun};
use crate::{full_body, h2_client, read_head, tls_connect, H2Sender, H2Tunnel, Head, TestBody};

/// Bound for a gauge or a counter to settle.
pub const SETTLE: Duration = Duration::from_secs(5);
/// Bound for a tunnel to end once the gateway is gone.
pub const TUNNEL_END: Duration = Duration::from_secs(10);
/// How long the sidecar gets to reconnect to a restarted gateway.
pub const RECONNECT: Duration = Duration::from_secs(15);

// === clients and answers through the sidecar ===

pub use crate::curl::{curl, curl_body};

/// `tests/peers/h2_connect_client.py`: HTTP/2 CONNECT to `target` through the
/// sidecar's TLS listener, `msg` sent then END_STREAM; its JSON report.
pub async fn python_h2_connect(env: &GatewayEnv, target: &str, msg: &str) -> serde_json::Value {
    let mut cmd = tokio::process::Command::new(crate::masque::python());
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/peers/h2_connect_client.py"
    ))
    .arg("--proxy-port")
    .arg(env.sidecar_tls().port().to_string())
    .arg("--ca")
    .arg(&env.pki.app.ca_pem)
    .arg("--target")
    .arg(target)
    .arg("--message")
    .arg(msg)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("h2_connect_client.py finishes within 20 s")
        .expect("run h2_connect_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "h2_connect_client.py exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("JSON from h2_connect_client.py: {e}: {stdout}"))
}

/// `tests/peers/h3_masque_client.py connect`: HTTP/3 CONNECT to
/// 127.0.0.1:`port` through the sidecar's TLS listener (UDP side), `msg`
/// sent then FIN.
pub async fn aioquic_connect(env: &GatewayEnv, port: u16, msg: &str) -> PyRun {
    let port = port.to_string();
    run_masque_client(
        env.sidecar_tls(),
        &env.pki.app,
        "connect",
        &[
            "--target-host",
            "127.0.0.1",
            "--target-port",
            &port,
            "--message",
            msg,
        ],
    )
    .await
}

/// An HTTP/2 connection to the sidecar's TLS listener (ALPN h2).
pub async fn h2_to_sidecar(env: &GatewayEnv) -> H2Sender {
    let tls = tls_connect(env.sidecar_tls(), &env.pki.app, &[b"h2"]).await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN h2 on the sidecar's TLS listener"
    );
    h2_client(tls).await
}

/// A request in absolute-form with a Host header and `body`.
pub fn absolute(method: Method, url: &str, body: Bytes) -> Request<TestBody> {
    let uri: http::Uri = url.parse().expect("valid URL");
    let host = uri.authority().expect("URL has an authority").to_string();
    Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::HOST, host)
        .body(full_body(body))
        .expect("request")
}

/// The gateway refused and the sidecar passed its answer on: the gateway's
/// member first with `error=gw_error`, then the sidecar's with
/// `next-hop="<gateway address>"` and `received-status=<status>` (RFC 9209:
/// the member closest to the origin first).
pub fn assert_gateway_then_sidecar(
    env: &GatewayEnv,
    proxy_status: Option<&str>,
    status: u16,
    gw_error: &str,
    what: &str,
) {
    let raw = proxy_status
        .unwrap_or_else(|| panic!("{what}: no Proxy-Status on the {status} through the sidecar"));
    let ps = ProxyStatus::parse(raw);
    let (gw_at, gw) = ps.expect_member(GATEWAY_NAME, what);
    assert_eq!(
        gw.param("error"),
        Some(gw_error),
        "{what}: the gateway's member carries its error: {raw:?}"
    );
    let (sc_at, sc) = ps.expect_member(SIDECAR_NAME, what);
    assert_eq!(
        gw_at, 0,
        "{what}: the gateway's member comes first: {raw:?}"
    );
    assert!(
        sc_at > gw_at,
        "{what}: the sidecar's member follows the gateway's: {raw:?}"
    );
    assert_eq!(
        sc.param("next-hop"),
        Some(env.gateway_addr().to_string().as_str()),
        "{what}: the sidecar names the gateway as next hop: {raw:?}"
    );
    let status = status.to_string();
    assert_eq!(
        sc.param("received-status"),
        Some(status.as_str()),
        "{what}: the sidecar says what it received from the gateway: {raw:?}"
    );
}

/// The sidecar answered on its own: one member, the sidecar's, with an
/// `error` among `errors`, and with `next-hop` = the gateway's address when
/// `next_hop` (the gateway could not be reached) or without when not (the
/// sidecar's own policy refused).
pub fn assert_sidecar_alone(
    env: &GatewayEnv,
    proxy_status: Option<&str>,
    errors: &[&str],
    next_hop: bool,
    what: &str,
) {
    let raw = proxy_status.unwrap_or_else(|| panic!("{what}: no Proxy-Status"));
    let ps = ProxyStatus::parse(raw);
    assert!(
        ps.member(GATEWAY_NAME).is_none(),
        "{what}: the gateway did not answer, so it has no member: {raw:?}"
    );
    assert_eq!(
        ps.members.len(),
        1,
        "{what}: one member, the sidecar's: {raw:?}"
    );
    let (_, sc) = ps.expect_member(SIDECAR_NAME, what);
    let err = sc.param("error").unwrap_or_default();
    assert!(
        errors.contains(&err),
        "{what}: the sidecar's error is one of {errors:?}: {raw:?}"
    );
    if next_hop {
        assert_eq!(
            sc.param("next-hop"),
            Some(env.gateway_addr().to_string().as_str()),
            "{what}: the sidecar names the gateway it could not reach: {raw:?}"
        );
    }
}

/// Wait until the gateway's `bauta_requests_total{labels…}` (summed) is at
/// least `want`, then assert it is exactly `want`.
pub async fn assert_gateway_requests(
    env: &GatewayEnv,
    labels: &[(&str, &str)],
    want: f64,
    what: &str,
) {
    let got = GatewayEnv::wait_metric_on(
        env.gateway().admin,
        "bauta_requests_total",
        labels,
        SETTLE,
        |v| v >= want,
    )
    .await
    .unwrap_or(0.0);
    assert_eq!(
        got, want,
        "{what}: the gateway's bauta_requests_total{labels:?} (every chained request went through the gateway)"
    );
}

/// The gateway accepted exactly one more connection than `before`: the
/// sidecar's one multiplexed connection carried everything.
pub async fn assert_one_gateway_connection(env: &GatewayEnv, before: f64, what: &str) {
    let now = env.gateway_connections_accepted().await;
    assert_eq!(
        now - before,
        1.0,
        "{what}: the gateway accepted {} connections for all of it (bauta_connections_total{{listener=\"{GATEWAY_LISTENER}\"}}); want exactly 1",
        now - before
    );
}

/// Gateway up, its accepted-connection count, then the sidecar for `pod`.
pub async fn start_chain(pod: Pod) -> (GatewayEnv, f64) {
    let mut env = GatewayEnv::new();
    env.start_gateway().await;
    let before = env.gateway_connections_accepted().await;
    env.start_sidecar(pod).await;
    (env, before)
}

/// What the gateway's listener had accepted, in all and per protocol
/// (`bauta_connections_total{listener="mesh"}`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accepted {
    pub total: f64,
    pub h3: f64,
    pub h2: f64,
}

impl Accepted {
    pub async fn read(env: &GatewayEnv) -> Accepted {
        Accepted {
            total: env.gateway_connections_accepted().await,
            h3: env.gateway_connections_over("h3").await,
            h2: env.gateway_connections_over("h2").await,
        }
    }

    pub fn over(&self, proto: Proto) -> f64 {
        match proto {
            Proto::H3 => self.h3,
            Proto::H2 => self.h2,
        }
    }
}

/// Gateway up (its listener with h3), its accepted connections, then the
/// sidecar for `pod` with `[gateway] protocols` = `proto` alone.
pub async fn start_chain_over(proto: Proto, pod: Pod) -> (GatewayEnv, Accepted) {
    let mut env = GatewayEnv::new();
    env.set_protocols(proto.toml());
    env.start_gateway().await;
    let before = Accepted::read(&env).await;
    env.start_sidecar(pod).await;
    (env, before)
}

/// The gateway accepted exactly one more connection than `before`, over
/// `proto`, and none over the other protocol: the sidecar's one
/// multiplexed connection carried everything.
pub async fn assert_one_gateway_connection_over(
    env: &GatewayEnv,
    before: Accepted,
    proto: Proto,
    what: &str,
) {
    let now = Accepted::read(env).await;
    assert_eq!(
        now.over(proto) - before.over(proto),
        1.0,
        "{what}: the gateway accepted {} {} connections for all of it \
         (bauta_connections_total{{listener=\"{GATEWAY_LISTENER}\",protocol=\"{}\"}}); want exactly 1 \
         (before {before:?}, now {now:?})",
        now.over(proto) - before.over(proto),
        proto.as_str(),
        proto.as_str(),
    );
    assert_eq!(
        now.over(proto.other()) - before.over(proto.other()),
        0.0,
        "{what}: no {} connection to the gateway with `protocols = {}` (before {before:?}, now {now:?})",
        proto.other().as_str(),
        proto.toml(),
    );
    assert_eq!(
        now.total - before.total,
        1.0,
        "{what}: one gateway connection in all (before {before:?}, now {now:?})"
    );
}

/// HTTP/1.1 CONNECT that reports a connection closed without an answer, or
/// no answer within 5 s, instead of failing the test (the sidecar may be
/// between gateway connections).
pub async fn try_connect_h1(
    proxy: SocketAddr,
    authority: &str,
) -> Result<(Head, TcpStream), String> {
    use tokio::io::AsyncWriteExt;
    let attempt = async {
        let mut s = TcpStream::connect(proxy)
            .await
            .map_err(|e| format!("connect to the sidecar: {e}"))?;
        let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send CONNECT: {e}"))?;
        let (head, leftover) = read_head(&mut s)
            .await
            .map_err(|e| format!("no answer to CONNECT: {e}"))?;
        if head.status == 200 && !leftover.is_empty() {
            return Err(format!("{} bytes after the 200 head", leftover.len()));
        }
        Ok((head, s))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer to CONNECT within 5 s".to_string()))
}

/// Retry (every 250 ms, at most [`RECONNECT`]) HTTP/1.1 CONNECT to `target`
/// through the sidecar until one is answered 200, while the sidecar
/// (re)connects to the gateway with backoff; that tunnel.
pub async fn tunnel_once_reconnected(env: &GatewayEnv, target: &str, what: &str) -> TcpStream {
    let deadline = tokio::time::Instant::now() + RECONNECT;
    let mut attempts = Vec::new();
    loop {
        match try_connect_h1(env.sidecar_plain(), target).await {
            Ok((head, s)) if head.status == 200 => return s,
            Ok((head, _)) => attempts.push(format!("{} {:?}", head.status, head.proxy_status())),
            Err(e) => attempts.push(e),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: no CONNECT through the sidecar worked within {RECONNECT:?}; answers: {attempts:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Read `s` until it ends (EOF or an error); whether it did within `limit`.
pub async fn ends_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// Read an HTTP/2 tunnel until its stream ends or is reset; whether it did
/// within `limit`.
pub async fn h2_ends_within(t: &mut H2Tunnel, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        while let Some(Ok(d)) = t.recv.data().await {
            let _ = t.recv.flow_control().release_capacity(d.len());
        }
    })
    .await
    .is_ok()
}

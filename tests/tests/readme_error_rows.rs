//! README "Errors" rows that had no end-to-end test: no route (502
//! `destination_ip_unroutable`, in a network namespace the test creates),
//! upstream closed / sent garbage while forwarding (502
//! `connection_terminated` / `http_protocol_error`), upstream TLS failure on
//! the reverse path (502 `tls_protocol_error`), extended CONNECT with an
//! unknown `:protocol` (501 `proxy_internal_response`) on HTTP/2 and HTTP/3,
//! and an HTTP/2 CONNECT carrying `:scheme`/`:path` (reset `PROTOCOL_ERROR`).

use std::time::Duration;

use bauta_tests::masque::{
    h2_extended_client, metric, run_masque_client, start_masque_proxy, wait_metric,
};
use bauta_tests::readme_env::{
    h2_to, origin_listener_certs, run_readme_h2, BinProxy, NetNs, Script, ScriptedUpstream,
};
use bauta_tests::seccert_env::Pki;
use bauta_tests::{
    assert_error_parts, assert_proxy_status, bounded_for, fetch_metrics, raw_request, read_head,
    start_proxy, start_proxy_opts, EchoServer, Head, ProxyOpts, ALLOW_LOOPBACK,
};
use http::{Method, Request, StatusCode};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(40);
const REQUESTS: &str = "bauta_requests_total";

// === no route: a network namespace with only `lo` ===

/// A raw exchange run *inside* the namespace (the proxy listens on the
/// namespace's loopback): prints what the server sent, up to the end of the
/// head (`head`) or until EOF (`all`).
const NS_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(sys.argv[2].encode())
buf = b""
while True:
    if sys.argv[3] == "head" and b"\r\n\r\n" in buf:
        break
    d = s.recv(65536)
    if not d:
        break
    buf += d
sys.stdout.write(buf.decode("latin-1"))
"#;

async fn ns_exchange(ns: &NetNs, port: u16, request: &str, mode: &str) -> Vec<u8> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "python3", "-c", NS_CLIENT])
        .arg(port.to_string())
        .arg(request)
        .arg(mode)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("client in {} did not finish within 15 s", ns.name))
        .unwrap_or_else(|e| panic!("run python3 in {}: {e}", ns.name));
    assert!(
        out.status.success(),
        "client in {}: {:?}\nstderr: {}",
        ns.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn ns_head(ns: &NetNs, port: u16, request: &str) -> Head {
    let bytes = ns_exchange(ns, port, request, "head").await;
    let (head, _) = read_head(&mut bytes.as_slice())
        .await
        .unwrap_or_else(|e| panic!("answer to {request:?}: {e}"));
    head
}

#[tokio::test]
async fn no_route_is_502_destination_ip_unroutable() {
    bounded_for(LIMIT, async {
        let ns = NetNs::create().unwrap_or_else(|e| {
            panic!(
                "this test needs a network namespace (ip netns add, as root) so that a dial \
                 fails with ENETUNREACH without leaving the machine: {e}"
            )
        });
        // Documentation ranges, explicitly named by the rule (so the SSRF
        // guard lets them through); the namespace has no route to them.
        let config = "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
             [limits]\nconnect_timeout_ms = 5000\n\n\
             [policy]\ndefault = \"deny\"\n\n\
             [[policy.rule]]\nname = \"doc\"\naction = \"allow\"\ncidrs = [\"203.0.113.0/24\"]\n\n\
             [[policy.rule]]\nname = \"doc6\"\naction = \"allow\"\ncidrs = [\"2001:db8::/32\"]\n";
        let proxy = BinProxy::start(config, &ns.prefix(), &["plain"], true).await;
        let port = proxy.listener("plain").port();
        let admin = proxy.admin.expect("admin address").port();

        let started = std::time::Instant::now();
        for target in ["203.0.113.5:443", "[2001:db8::5]:443"] {
            let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            let head = ns_head(&ns, port, &req).await;
            head.assert_error(
                502,
                "destination_ip_unroutable",
                &format!("CONNECT {target} with no route"),
            );
        }
        let head = ns_head(
            &ns,
            port,
            "GET http://203.0.113.5/x HTTP/1.1\r\nHost: 203.0.113.5\r\n\r\n",
        )
        .await;
        head.assert_error(502, "destination_ip_unroutable", "forward with no route");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "ENETUNREACH is immediate; the answers must not wait for connect_timeout_ms ({:?})",
            started.elapsed()
        );

        let text = ns_exchange(
            &ns,
            admin,
            "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
            "all",
        )
        .await;
        let text = String::from_utf8_lossy(&text);
        assert_eq!(
            metric(
                &text,
                REQUESTS,
                &[("kind", "connect"), ("outcome", "unreachable")]
            ),
            2.0,
            "requests_total{{kind=connect,outcome=unreachable}}\n{text}"
        );
        assert_eq!(
            metric(
                &text,
                REQUESTS,
                &[("kind", "forward"), ("outcome", "unreachable")]
            ),
            1.0,
            "requests_total{{kind=forward,outcome=unreachable}}"
        );
    })
    .await
}

// === forwarding to an upstream that misbehaves ===

#[tokio::test]
async fn forward_upstream_closing_before_a_response_is_502_connection_terminated() {
    bounded_for(LIMIT, async {
        let upstream = ScriptedUpstream::start(Script::Close, true).await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let u = upstream.addr;
        let req = format!("GET http://{u}/x HTTP/1.1\r\nHost: {u}\r\n\r\n");
        let (head, _, _) = raw_request(proxy.plain, req.as_bytes()).await;
        head.assert_error(502, "connection_terminated", "upstream closed silently");
        assert_eq!(upstream.accepted(), 1, "exactly one upstream connection");
        let m = fetch_metrics(proxy.admin).await;
        assert_eq!(
            metric(
                &m,
                REQUESTS,
                &[("kind", "forward"), ("outcome", "upstream_error")]
            ),
            1.0,
            "requests_total{{kind=forward,outcome=upstream_error}}"
        );
    })
    .await
}

#[tokio::test]
async fn forward_upstream_sending_garbage_is_502_http_protocol_error() {
    bounded_for(LIMIT, async {
        let upstream = ScriptedUpstream::start(
            Script::Send(b"THIS IS NOT HTTP AT ALL\r\nreally not\r\n\r\n"),
            true,
        )
        .await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let u = upstream.addr;
        let req = format!("GET http://{u}/x HTTP/1.1\r\nHost: {u}\r\n\r\n");
        let (head, _, _) = raw_request(proxy.plain, req.as_bytes()).await;
        head.assert_error(502, "http_protocol_error", "upstream sent garbage");
        assert_eq!(upstream.accepted(), 1, "exactly one upstream connection");
        let m = fetch_metrics(proxy.admin).await;
        assert_eq!(
            metric(
                &m,
                REQUESTS,
                &[("kind", "forward"), ("outcome", "upstream_error")]
            ),
            1.0,
            "requests_total{{kind=forward,outcome=upstream_error}}"
        );
    })
    .await
}

// === reverse proxying to an https upstream that does not speak TLS ===

#[tokio::test]
async fn reverse_upstream_speaking_no_tls_is_502_tls_protocol_error() {
    bounded_for(LIMIT, async {
        let pki = Pki::new();
        let (certs, origin) = origin_listener_certs(&pki, "origin.test");
        // Answers the ClientHello with plaintext HTTP.
        let upstream = ScriptedUpstream::start(
            Script::Send(b"HTTP/1.1 400 Bad Request\r\n\r\nnot TLS"),
            false,
        )
        .await;
        let extra = format!(
            "[[origin]]\nhost = \"origin.test\"\nport = 443\ncert = '{}'\nkey = '{}'\n\
             upstream = \"https://127.0.0.1:{}\"\nupstream_ca = '{}'\n\n{ALLOW_LOOPBACK}",
            origin.cert_pem.display(),
            origin.key_pem.display(),
            upstream.port(),
            pki.certs.ca_pem.display()
        );
        let proxy = start_proxy_opts(ProxyOpts {
            certs: Some(&certs),
            extra,
            ..ProxyOpts::default()
        })
        .await;
        let client = h2_to(proxy.secure(), &certs, "origin.test").await;
        let req = Request::builder()
            .method(Method::GET)
            .uri("https://origin.test/hello")
            .body(())
            .expect("request");
        let (parts, _) = bauta_tests::h2_request(&client, req, None).await;
        assert_error_parts(
            &parts,
            StatusCode::BAD_GATEWAY,
            "tls_protocol_error",
            "reverse to an https upstream that answers in plaintext",
        );
        assert_eq!(upstream.accepted(), 1, "the upstream was dialled once");
    })
    .await
}

// === extended CONNECT with an unknown :protocol → 501 ===

#[tokio::test]
async fn h2_extended_connect_websocket_is_501() {
    bounded_for(LIMIT, async {
        let certs = bauta_tests::make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let client = h2_extended_client(proxy.secure, &certs).await;
        let mut ready = client.clone().ready().await.expect("ready");
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(format!("https://127.0.0.1:{}/chat", echo.port()))
            .body(())
            .expect("request");
        req.extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let (resp, _send) = ready.send_request(req, false).expect("send");
        let resp = resp.await.expect("HTTP/2 response");
        let (parts, _) = resp.into_parts();
        assert_error_parts(
            &parts,
            StatusCode::NOT_IMPLEMENTED,
            "proxy_internal_response",
            "HTTP/2 extended CONNECT :protocol websocket",
        );
        assert_eq!(echo.accepted(), 0, "nothing dialled");
        let n = wait_metric(
            proxy.admin,
            REQUESTS,
            &[("protocol", "h2"), ("outcome", "not_implemented")],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(
            n, 1.0,
            "requests_total{{protocol=h2,outcome=not_implemented}}"
        );
    })
    .await
}

fn assert_h3_501(run: &bauta_tests::masque::PyRun, what: &str) {
    assert_eq!(run.str("status"), Some("501"), "{what}: {run:?}");
    let ps = run
        .str("proxy_status")
        .unwrap_or_else(|| panic!("{what}: no proxy-status: {run:?}"));
    assert_proxy_status(ps, "proxy_internal_response", what);
    assert_eq!(
        run.json.get("terminated"),
        Some(&Value::Null),
        "{what}: the connection stays up: {run:?}"
    );
}

async fn h3_unknown_protocol(protocol: &str) {
    let certs = bauta_tests::make_certs();
    let echo = EchoServer::start().await;
    let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
    let run = run_masque_client(
        proxy.secure,
        &certs,
        "raw",
        &[
            "--header",
            ":method=CONNECT",
            "--header",
            &format!(":protocol={protocol}"),
            "--header",
            ":scheme=https",
            "--header",
            &format!(":authority=127.0.0.1:{}", echo.port()),
            "--header",
            ":path=/chat",
        ],
    )
    .await;
    assert_h3_501(
        &run,
        &format!("HTTP/3 extended CONNECT :protocol {protocol}"),
    );
    assert_eq!(echo.accepted(), 0, "nothing dialled");
}

#[tokio::test]
#[ignore = "h3 limitation: the h3 crate resets unknown :protocol values (all but connect-udp and webtransport) with H3_MESSAGE_ERROR before the proxy sees the request; the target is 501 as on HTTP/2"]
async fn h3_extended_connect_websocket_is_501() {
    bounded_for(LIMIT, h3_unknown_protocol("websocket")).await
}

/// README: on HTTP/3 the h3 library resets an unknown `:protocol` (other
/// than `webtransport`) with H3_MESSAGE_ERROR before the proxy sees it.
#[tokio::test]
async fn h3_extended_connect_websocket_is_reset_by_the_h3_library() {
    bounded_for(LIMIT, async {
        let certs = bauta_tests::make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let authority = format!(":authority=127.0.0.1:{}", echo.port());
        let run = run_masque_client(
            proxy.secure,
            &certs,
            "raw",
            &[
                "--wait-end",
                "--header",
                ":method=CONNECT",
                "--header",
                ":protocol=websocket",
                "--header",
                ":scheme=https",
                "--header",
                &authority,
                "--header",
                ":path=/chat",
            ],
        )
        .await;
        assert_eq!(run.str("status"), None, "no response: {run:?}");
        assert_eq!(
            run.u64("reset"),
            Some(bauta_tests::masque::H3_MESSAGE_ERROR),
            "reset with H3_MESSAGE_ERROR: {run:?}"
        );
        assert_eq!(echo.accepted(), 0, "nothing dialled");
    })
    .await
}

#[tokio::test]
async fn h3_extended_connect_webtransport_is_501() {
    bounded_for(LIMIT, h3_unknown_protocol("webtransport")).await
}

// === HTTP/2 CONNECT with :scheme / :path ===

#[tokio::test]
async fn h2_connect_with_scheme_and_path_is_reset_with_protocol_error() {
    bounded_for(LIMIT, async {
        let certs = bauta_tests::make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let authority = format!("127.0.0.1:{}", echo.port());
        let v = run_readme_h2(
            "raw",
            proxy.secure.port(),
            &certs.ca_pem,
            &[
                "--header".into(),
                ":method=CONNECT".into(),
                "--header".into(),
                ":scheme=https".into(),
                "--header".into(),
                format!(":authority={authority}"),
                "--header".into(),
                ":path=/".into(),
                "--echo-port".into(),
                echo.port().to_string(),
            ],
        )
        .await;
        let r = &v["request"];
        assert_eq!(
            r["reset"].as_u64(),
            Some(0x1),
            "RST_STREAM PROTOCOL_ERROR (RFC 9113 §8.5): {v:#}"
        );
        assert_eq!(r["status"], Value::Null, "no response HEADERS: {v:#}");
        assert_eq!(
            v["goaway"],
            Value::Null,
            "a stream error, not a connection error: {v:#}"
        );
        let c = &v["connect_echo"];
        assert_eq!(
            c["status"].as_u64(),
            Some(200),
            "the connection still tunnels: {v:#}"
        );
        assert_eq!(
            c["echo"].as_str(),
            Some("hello through the h2 tunnel"),
            "echo after the reset: {v:#}"
        );
        assert_eq!(
            echo.accepted(),
            1,
            "only the well-formed CONNECT reached the target"
        );
    })
    .await
}

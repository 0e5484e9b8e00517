//! Fault injection with real sockets, over TCP (issue 12, item 4): a target
//! that resets a CONNECT tunnel (HTTP/1.1, HTTP/2) or a forwarded response
//! mid-body, an upstream that accepts and never answers, a DNS server that
//! answers SERVFAIL, a client that resets mid-tunnel. Each runs the real
//! binary and checks the client's answer, that `bauta_tunnels_active` is back
//! to 0 and that the process's descriptors are back to their baseline.
//! The QUIC faults are in `faults_quic.rs`.

use std::time::Duration;

use bauta_tests::faults_env::*;
use bauta_tests::*;
use http::{Method, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(20);
/// Bound for a gauge or the descriptor count to come back.
const SETTLE: Duration = Duration::from_secs(5);
/// Bytes a target sends before it resets.
const BEFORE_RESET: usize = 256 * 1024;

/// The binary with [`config`] and its descriptor count once it is up.
async fn start(certs: &Certs, extra: &str) -> (TempDir, BautaProcess, usize) {
    let dir = TempDir::new("faults");
    let path = dir.write("bauta.toml", &config(certs, extra));
    let p = BautaProcess::start(&path).await;
    // One admin round trip first: whatever the first request opens lazily
    // belongs to the baseline.
    let _ = p.metrics().await;
    let baseline = held_fds(p.pid, p.admin).await;
    (dir, p, baseline)
}

/// Tunnels back to 0, descriptors back to baseline.
async fn assert_freed(p: &BautaProcess, kind: &str, baseline: usize, what: &str) {
    wait_no_tunnels(p.admin, kind, SETTLE, what).await;
    wait_fds(p.pid, p.admin, baseline, SETTLE, what).await;
}

#[tokio::test]
async fn h1_connect_target_reset_ends_the_tunnel_and_frees_it() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "").await;
        let payload = pattern(BEFORE_RESET, 1);
        let mut target = ResettingTarget::start(payload.clone()).await;
        let (head, mut s) = connect_h1(p.listener("plain"), &target.addr.to_string()).await;
        assert_eq!(head.status, 200, "CONNECT: {head:?}");
        s.write_all(b"?").await.expect("go");
        let mut got = vec![0u8; payload.len()];
        s.read_exact(&mut got)
            .await
            .expect("bytes before the reset");
        assert_same(&got, &payload, "HTTP/1.1 tunnel before the reset");
        s.write_all(b"!").await.expect("ack");
        (&mut target.done).await.expect("target reset");
        // HTTP/1.1 has no stream to reset: the connection ends.
        let mut rest = Vec::new();
        let r = s.read_to_end(&mut rest).await;
        assert!(
            rest.is_empty(),
            "nothing after the reset: {} bytes",
            rest.len()
        );
        drop(r);
        let line = p
            .wait_access_log(SETTLE, "tunnel log line", |v| v["kind"] == "connect")
            .await;
        assert_eq!(line["outcome"], "reset", "access log: {line}");
        assert_freed(
            &p,
            "connect",
            baseline,
            "HTTP/1.1 tunnel after a target reset",
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn h2_connect_target_reset_ends_the_stream_and_frees_it() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "").await;
        let payload = pattern(BEFORE_RESET, 2);
        let mut target = ResettingTarget::start(payload.clone()).await;
        let io = TcpStream::connect(p.listener("plain")).await.expect("h2c");
        let client = h2_client(io).await;
        let (parts, tunnel) = h2_connect(&client, &target.addr.to_string()).await;
        let mut t = tunnel.unwrap_or_else(|| panic!("CONNECT: {parts:?}"));
        t.write(b"?");
        let got = t.read_exact(payload.len()).await;
        assert_same(&got, &payload, "HTTP/2 tunnel before the reset");
        t.write(b"!");
        (&mut target.done).await.expect("target reset");
        // RFC 9113 §8.5 wants RST_STREAM(CONNECT_ERROR) here. hyper (1.x)
        // hands a CONNECT stream over as an `Upgraded` byte stream that can
        // only end it with END_STREAM (then CANCEL): no error code can be
        // chosen. What is checked: the stream ends, with no stray byte.
        let end = tokio::time::timeout(SETTLE, async {
            loop {
                match t.recv.data().await {
                    Some(Ok(d)) => assert!(d.is_empty(), "{} bytes after the reset", d.len()),
                    Some(Err(e)) => break Some(e.reason()),
                    None => break None,
                }
            }
        })
        .await
        .expect("the HTTP/2 tunnel ends after the target's reset");
        if let Some(reason) = end {
            assert!(
                reason == Some(h2::Reason::CONNECT_ERROR) || reason == Some(h2::Reason::CANCEL),
                "stream reset with {reason:?}"
            );
        }
        drop(t);
        drop(client);
        assert_freed(
            &p,
            "connect",
            baseline,
            "HTTP/2 tunnel after a target reset",
        )
        .await;
    })
    .await
}

/// The body of a chunked HTTP/1.1 response read to the connection's end;
/// `true` if its last chunk (`0\r\n\r\n`) arrived.
fn parse_chunked(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size else {
            return (out, false);
        };
        raw = &raw[eol + 2..];
        if size == 0 {
            return (out, raw.starts_with(b"\r\n"));
        }
        if raw.len() < size + 2 {
            out.extend_from_slice(&raw[..raw.len().min(size)]);
            return (out, false);
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[tokio::test]
async fn forwarded_response_reset_mid_body_is_not_presented_as_complete() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "").await;
        let full = pattern(4 * BEFORE_RESET, 3);
        let sent = full[..BEFORE_RESET].to_vec();

        // 1. Content-Length framing, HTTP/1.1 client: the connection closes
        //    before Content-Length bytes.
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
        let (origin, go, _t) = resetting_origin(head, sent.clone()).await;
        let req = format!("GET http://{origin}/big HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        let (h, mut s, mut body) = raw_request(p.listener("plain"), req.as_bytes()).await;
        assert_eq!(h.status, 200, "{h:?}");
        assert_eq!(h.header("content-length"), Some("1048576"), "{h:?}");
        while body.len() < sent.len() {
            let mut buf = [0u8; 16 * 1024];
            let n = s.read(&mut buf).await.expect("body before the reset");
            assert!(n > 0, "closed after {} bytes, before the reset", body.len());
            body.extend_from_slice(&buf[..n]);
        }
        let _ = go.send(());
        let _ = s.read_to_end(&mut body).await;
        assert_same(&body, &sent, "Content-Length body up to the reset");
        assert!(
            body.len() < 1_048_576,
            "a truncated body must not look complete"
        );

        // 2. Chunked framing: the last chunk never comes.
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let chunk = [
            format!("{:x}\r\n", sent.len()).into_bytes(),
            sent.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        let (origin, go, _t) = resetting_origin(head, chunk).await;
        let req = format!("GET http://{origin}/big HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        let (h, mut s, mut raw) = raw_request(p.listener("plain"), req.as_bytes()).await;
        assert_eq!(h.status, 200, "{h:?}");
        while parse_chunked(&raw).0.len() < sent.len() {
            let mut buf = [0u8; 16 * 1024];
            let n = s.read(&mut buf).await.expect("body before the reset");
            assert!(n > 0, "closed before the reset");
            raw.extend_from_slice(&buf[..n]);
        }
        let _ = go.send(());
        let _ = s.read_to_end(&mut raw).await;
        let (body, complete) = parse_chunked(&raw);
        assert_same(&body, &sent, "chunked body up to the reset");
        assert!(
            !complete,
            "a truncated chunked body must not end with its last chunk"
        );

        // 3. HTTP/2 client: the stream is reset, not ended.
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
        let (origin, go, _t) = resetting_origin(head, sent.clone()).await;
        let client = h2_client(TcpStream::connect(p.listener("plain")).await.expect("h2c")).await;
        let mut ready = client.clone().ready().await.expect("h2 ready");
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{origin}/big"))
            .body(())
            .expect("request");
        let (resp, send) = ready.send_request(req, true).expect("send");
        let resp = resp.await.expect("response head");
        assert_eq!(resp.status(), 200);
        let mut recv = resp.into_body();
        let mut body = Vec::new();
        let mut go = Some(go);
        let end = loop {
            match recv.data().await {
                Some(Ok(d)) => {
                    let _ = recv.flow_control().release_capacity(d.len());
                    body.extend_from_slice(&d);
                    if body.len() >= sent.len() {
                        if let Some(go) = go.take() {
                            let _ = go.send(());
                        }
                    }
                }
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        assert_same(&body, &sent, "HTTP/2 body up to the reset");
        let e = end.expect("a truncated HTTP/2 body must end with RST_STREAM, not END_STREAM");
        assert!(e.reason().is_some(), "stream reset: {e:?}");
        // Every handle on the connection gone: the client closes it.
        drop((recv, send, ready, client));

        wait_fds(
            p.pid,
            p.admin,
            baseline,
            SETTLE,
            "after three truncated responses",
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn upstream_that_never_answers_gets_504_http_response_timeout() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "response_timeout_s = 1").await;
        // Accepts, reads the request, says nothing; reports when the proxy
        // lets go of the connection.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let origin = listener.local_addr().expect("addr");
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let _task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    let mut buf = [0u8; 4096];
                    while let Ok(k) = s.read(&mut buf).await {
                        if k == 0 {
                            break;
                        }
                        n += k;
                    }
                    let _ = closed_tx.send(n);
                });
            }
        });
        for what in ["HTTP/1.1", "HTTP/2"] {
            let req = format!("GET http://{origin}/slow HTTP/1.1\r\nHost: {origin}\r\n\r\n");
            if what == "HTTP/1.1" {
                let (h, s, _) = raw_request(p.listener("plain"), req.as_bytes()).await;
                h.assert_error(504, "http_response_timeout", what);
                drop(s);
            } else {
                let client =
                    h2_client(TcpStream::connect(p.listener("plain")).await.expect("h2c")).await;
                let req = Request::builder()
                    .uri(format!("http://{origin}/slow"))
                    .body(())
                    .expect("request");
                let (parts, _) = h2_request(&client, req, None).await;
                assert_error_parts(
                    &parts,
                    http::StatusCode::GATEWAY_TIMEOUT,
                    "http_response_timeout",
                    what,
                );
            }
        }
        for _ in 0..2 {
            let n = tokio::time::timeout(SETTLE, closed.recv())
                .await
                .expect("the proxy closes the silent upstream's connection")
                .expect("upstream task");
            assert!(n > 0, "the upstream saw the request");
        }
        let m = p.metrics().await;
        assert_eq!(
            counter(
                &m,
                "bauta_requests_total",
                &[
                    ("listener", "plain"),
                    ("protocol", "http1"),
                    ("kind", "forward"),
                    ("outcome", "upstream_error")
                ]
            ),
            1.0,
            "counted as an upstream error"
        );
        wait_fds(
            p.pid,
            p.admin,
            baseline,
            SETTLE,
            "after the response timeouts",
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn dns_servfail_is_502_dns_error_with_rcode() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let dns = FakeDns::start().await;
        let extra = format!(
            "dns_timeout_ms = 2000\n\n[dns]\nservers = [\"{}\"]\n",
            dns.addr
        );
        let (_dir, p, baseline) = start(&certs, &extra).await;
        let (head, s) = connect_h1(p.listener("plain"), "servfail.test:80").await;
        drop(s);
        head.assert_error(502, "dns_error", "SERVFAIL");
        let ps = head.proxy_status().unwrap_or_default();
        assert!(
            ps.contains("rcode=\"SERVFAIL\""),
            "Proxy-Status names the rcode: {ps}"
        );
        assert!(
            dns.query_count("servfail.test", 1) >= 1,
            "asked: {:?}",
            dns.queries()
        );
        let m = p.metrics().await;
        assert!(
            counter(&m, "bauta_dns_lookups_total", &[("outcome", "error")]) >= 1.0,
            "dns_lookups_total{{outcome=error}}"
        );
        wait_fds(p.pid, p.admin, baseline, SETTLE, "after a SERVFAIL").await;
    })
    .await
}

#[tokio::test]
async fn h1_client_reset_mid_tunnel_frees_the_tunnel() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let (_dir, p, baseline) = start(&certs, "").await;
        let mut echo = ReportingEcho::start().await;
        let (head, mut s) = connect_h1(p.listener("plain"), &echo.addr.to_string()).await;
        assert_eq!(head.status, 200, "CONNECT: {head:?}");
        let msg = pattern(64 * 1024, 4);
        assert_echo(&mut s, &msg).await;
        // More on its way back when the client vanishes.
        s.write_all(&msg).await.expect("write");
        wait_tunnels_for(p.admin, "connect", 1.0, SETTLE, "tunnel open").await;
        set_reset_on_close(&s);
        drop(s);
        let line = p
            .wait_access_log(SETTLE, "tunnel log line", |v| v["kind"] == "connect")
            .await;
        assert_eq!(line["outcome"], "reset", "access log: {line}");
        // RFC 9113 §8.5 / RFC 9114 §4.4 in spirit: the client's error is
        // passed on as a TCP reset, not a FIN that looks like a clean end.
        let end = tokio::time::timeout(SETTLE, &mut echo.end)
            .await
            .expect("the target's connection ends")
            .expect("echo task");
        assert_eq!(end, TcpEnd::Reset, "the target sees a reset");
        assert_freed(
            &p,
            "connect",
            baseline,
            "HTTP/1.1 tunnel after a client reset",
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn reverse_upstream_that_never_answers_gets_504_http_response_timeout() {
    bauta_bin(); // built outside the time bound
    bounded_for(LIMIT, async {
        let pki = bauta_tests::seccert_env::Pki::new();
        // The listener's own certificate covers origin.test.
        let (certs, origin_cert) =
            bauta_tests::readme_env::origin_listener_certs(&pki, "origin.test");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = listener.local_addr().expect("addr");
        let (closed_tx, closed) = oneshot::channel::<usize>();
        let _task = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut n = 0;
            let mut buf = [0u8; 4096];
            while let Ok(k) = s.read(&mut buf).await {
                if k == 0 {
                    break;
                }
                n += k;
            }
            let _ = closed_tx.send(n);
        });
        let extra = format!(
            "response_timeout_s = 1\n\n[[origin]]\nhost = \"origin.test\"\nport = 443\n\
             cert = '{}'\nkey = '{}'\nupstream = \"http://{upstream}\"\n",
            origin_cert.cert_pem.display(),
            origin_cert.key_pem.display()
        );
        let (_dir, p, baseline) = start(&certs, &extra).await;
        let client =
            bauta_tests::readme_env::h2_to(p.listener("secure"), &certs, "origin.test").await;
        let req = Request::builder()
            .uri("https://origin.test/hello")
            .body(())
            .expect("request");
        let (parts, _) = h2_request(&client, req, None).await;
        assert_error_parts(
            &parts,
            http::StatusCode::GATEWAY_TIMEOUT,
            "http_response_timeout",
            "reverse proxying to a silent upstream",
        );
        drop(client);
        let n = tokio::time::timeout(SETTLE, closed)
            .await
            .expect("the proxy closes the silent upstream's connection")
            .expect("upstream task");
        assert!(n > 0, "the upstream saw the request");
        wait_fds(
            p.pid,
            p.admin,
            baseline,
            SETTLE,
            "after the reverse response timeout",
        )
        .await;
    })
    .await
}

//! The same refused or malformed situation gets the same answer on every
//! front: status and Proxy-Status `error=` token on HTTP/1.1, HTTP/2 and
//! HTTP/3 (README "Errors" and the CONNECT-UDP table). One test per row, so
//! a row that drifts on one front fails by name.
//!
//! Clients: raw bytes for HTTP/1.1, the `h2` crate for HTTP/2, and the
//! independent aioquic client (`h3_masque_client.py raw`) for HTTP/3.

use std::time::Duration;

use bauta_tests::masque::{
    h1_connect_udp_request, h1_upgrade, h2_extended_client, run_raw_h3, start_masque_proxy,
    udp_path, wait_metric, MasqueProxy, UdpEcho, ALLOW_LOOPBACK_V4_V6, H3_MESSAGE_ERROR,
};
use bauta_tests::{
    assert_proxy_status, bounded_for, make_certs, proxy_status_of, raw_request, Certs, EchoServer,
};
use http::{Method, Request};

const LIMIT: Duration = Duration::from_secs(60);

/// What one front answered.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    proxy_status: Option<String>,
    /// HTTP/3: the stream reset code, if any.
    reset: Option<u64>,
}

#[derive(Clone, Debug)]
enum Situation {
    /// Plain CONNECT to this authority.
    Connect(String),
    /// CONNECT-UDP with this path and an optional extra header.
    ConnectUdp(String, Option<(&'static str, &'static str)>),
    /// Extended CONNECT with this `:protocol` (no HTTP/1.1 equivalent).
    Extended(&'static str),
}

async fn h1(proxy: &MasqueProxy, s: &Situation) -> Option<Answer> {
    let req = match s {
        Situation::Connect(a) => format!("CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n"),
        Situation::ConnectUdp(path, extra) => {
            let extra: Vec<String> = extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            h1_connect_udp_request(&proxy.plain.to_string(), path, &extra)
        }
        Situation::Extended(_) => return None,
    };
    let head = match s {
        Situation::ConnectUdp(..) => h1_upgrade(proxy.plain, &req).await.0,
        _ => raw_request(proxy.plain, req.as_bytes()).await.0,
    };
    Some(Answer {
        status: Some(head.status),
        proxy_status: head.proxy_status().map(str::to_string),
        reset: None,
    })
}

async fn h2(proxy: &MasqueProxy, certs: &Certs, s: &Situation) -> Answer {
    let client = h2_extended_client(proxy.secure, certs).await;
    let mut ready = client.clone().ready().await.expect("HTTP/2 ready");
    let authority = proxy.secure_authority();
    let req = match s {
        Situation::Connect(a) => Request::builder()
            .method(Method::CONNECT)
            .uri(a.as_str())
            .body(())
            .expect("CONNECT"),
        Situation::ConnectUdp(path, extra) => {
            let mut b = Request::builder()
                .method(Method::CONNECT)
                .uri(format!("https://{authority}{path}"))
                .header("capsule-protocol", "?1");
            if let Some((k, v)) = extra {
                b = b.header(*k, *v);
            }
            let mut r = b.body(()).expect("CONNECT-UDP");
            r.extensions_mut()
                .insert(h2::ext::Protocol::from_static("connect-udp"));
            r
        }
        Situation::Extended(p) => {
            let mut r = Request::builder()
                .method(Method::CONNECT)
                .uri(format!("https://{authority}/x"))
                .body(())
                .expect("extended CONNECT");
            r.extensions_mut().insert(h2::ext::Protocol::from_static(p));
            r
        }
    };
    let (resp, _send) = ready.send_request(req, false).expect("send on HTTP/2");
    match tokio::time::timeout(Duration::from_secs(10), resp).await {
        Ok(Ok(resp)) => {
            let status = Some(resp.status().as_u16());
            let proxy_status = proxy_status_of(resp.headers());
            // Read the body to its end: a reset may follow the response.
            let mut body = resp.into_body();
            let mut reset = None;
            let end = async {
                while let Some(chunk) = body.data().await {
                    match chunk {
                        Ok(c) => {
                            let _ = body.flow_control().release_capacity(c.len());
                        }
                        Err(e) => {
                            reset = e.reason().map(|r| u64::from(u32::from(r)));
                            break;
                        }
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(5), end)
                .await
                .expect("HTTP/2 stream ends within 5 s");
            Answer {
                status,
                proxy_status,
                reset,
            }
        }
        Ok(Err(e)) => Answer {
            status: None,
            proxy_status: None,
            reset: e.reason().map(|r| u64::from(u32::from(r))),
        },
        Err(_) => panic!("HTTP/2 {s:?}: no answer within 10 s"),
    }
}

async fn h3(proxy: &MasqueProxy, certs: &Certs, s: &Situation) -> Answer {
    let authority = proxy.secure_authority();
    let mut headers: Vec<String> = vec![":method=CONNECT".into()];
    match s {
        Situation::Connect(a) => headers.push(format!(":authority={a}")),
        Situation::ConnectUdp(path, extra) => {
            headers.extend([
                ":protocol=connect-udp".into(),
                ":scheme=https".into(),
                format!(":authority={authority}"),
                format!(":path={path}"),
                "capsule-protocol=?1".into(),
            ]);
            if let Some((k, v)) = extra {
                headers.push(format!("{k}={v}"));
            }
        }
        Situation::Extended(p) => headers.extend([
            format!(":protocol={p}"),
            ":scheme=https".into(),
            format!(":authority={authority}"),
            ":path=/x".into(),
        ]),
    }
    // Wait for the stream's end: a reset may follow the response.
    let run = run_raw_h3(proxy.secure, certs, &headers).await;
    Answer {
        status: run.str("status").and_then(|s| s.parse().ok()),
        proxy_status: run.str("proxy_status").map(str::to_string),
        reset: run.u64("reset"),
    }
}

fn check(front: &str, a: &Answer, status: u16, token: &str, what: &str) {
    let what = format!("{what} over {front}");
    assert_eq!(a.status, Some(status), "{what}: {a:?}");
    let ps = a
        .proxy_status
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: no Proxy-Status: {a:?}"));
    assert_proxy_status(ps, token, &what);
}

/// HTTP/2 `PROTOCOL_ERROR` (RFC 9113 §7).
const H2_PROTOCOL_ERROR: u64 = 0x1;

/// What the HTTP/3 front must do for a row.
#[derive(Clone, Copy, Debug)]
enum H3 {
    /// The same status and token as the other fronts, stream not reset.
    Same,
    /// Malformed (README: "400, then the stream is reset"): the 400 with its
    /// Proxy-Status arrives, then the stream is reset with H3_MESSAGE_ERROR
    /// (and on HTTP/2 with PROTOCOL_ERROR).
    MalformedReset,
    /// Not run here (checked by its own test).
    Skip,
}

/// Run one row on HTTP/1.1 (if it has an equivalent), HTTP/2 and HTTP/3 and
/// assert the same answer everywhere.
async fn row(proxy: &MasqueProxy, certs: &Certs, s: Situation, status: u16, token: &str, h3w: H3) {
    let what = format!("{s:?}");
    if let Some(a) = h1(proxy, &s).await {
        check("HTTP/1.1", &a, status, token, &what);
    }
    let a = h2(proxy, certs, &s).await;
    check("HTTP/2", &a, status, token, &what);
    // Malformed (README): the 400, then RST_STREAM(PROTOCOL_ERROR).
    let h2_reset = matches!(h3w, H3::MalformedReset).then_some(H2_PROTOCOL_ERROR);
    assert_eq!(a.reset, h2_reset, "{what} over HTTP/2: reset: {a:?}");
    if matches!(h3w, H3::Skip) {
        return;
    }
    let a = h3(proxy, certs, &s).await;
    match h3w {
        H3::Same => {
            check("HTTP/3", &a, status, token, &what);
            assert_eq!(a.reset, None, "{what} over HTTP/3: no reset: {a:?}");
        }
        H3::MalformedReset => {
            check("HTTP/3", &a, status, token, &what);
            assert_eq!(
                a.reset,
                Some(H3_MESSAGE_ERROR),
                "{what} over HTTP/3: stream reset with H3_MESSAGE_ERROR: {a:?}"
            );
            // The reset is the proxy's answer (counted), not the h3 library's.
            let n = wait_metric(
                proxy.admin,
                "bauta_requests_total",
                &[("protocol", "h3"), ("outcome", "bad_request")],
                |v| v >= 1.0,
            )
            .await;
            assert_eq!(n, 1.0, "{what}: requests_total{{h3,bad_request}}");
        }
        H3::Skip => {}
    }
}

struct Env {
    certs: Certs,
    proxy: MasqueProxy,
    echo: EchoServer,
    udp: UdpEcho,
}

async fn env(policy: &str) -> Env {
    let certs = make_certs();
    let proxy = start_masque_proxy(&certs, policy).await;
    Env {
        certs,
        proxy,
        echo: EchoServer::start().await,
        udp: UdpEcho::start().await,
    }
}

impl Env {
    fn untouched(&self) {
        assert_eq!(self.echo.accepted(), 0, "no TCP target was contacted");
        assert_eq!(self.udp.received(), 0, "no UDP target was contacted");
    }
}

#[tokio::test]
async fn connect_port_0_is_400_everywhere() {
    bounded_for(LIMIT, async {
        let e = env(ALLOW_LOOPBACK_V4_V6).await;
        let s = Situation::Connect("127.0.0.1:0".into());
        row(
            &e.proxy,
            &e.certs,
            s,
            400,
            "proxy_internal_response",
            H3::MalformedReset,
        )
        .await;
        e.untouched();
    })
    .await
}

#[tokio::test]
async fn connect_without_port_is_400_everywhere() {
    bounded_for(LIMIT, async {
        let e = env(ALLOW_LOOPBACK_V4_V6).await;
        let s = Situation::Connect("127.0.0.1".into());
        row(
            &e.proxy,
            &e.certs,
            s,
            400,
            "proxy_internal_response",
            H3::MalformedReset,
        )
        .await;
        e.untouched();
    })
    .await
}

#[tokio::test]
async fn connect_denied_by_policy_is_403_everywhere() {
    bounded_for(LIMIT, async {
        let e = env(ALLOW_LOOPBACK_V4_V6).await;
        let s = Situation::Connect("10.0.0.1:80".into());
        row(&e.proxy, &e.certs, s, 403, "http_request_denied", H3::Same).await;
    })
    .await
}

#[tokio::test]
async fn connect_to_loopback_under_default_allow_is_502_prohibited_everywhere() {
    bounded_for(LIMIT, async {
        let e = env("[policy]\ndefault = \"allow\"\n").await;
        let s = Situation::Connect(format!("127.0.0.1:{}", e.echo.port()));
        row(
            &e.proxy,
            &e.certs,
            s,
            502,
            "destination_ip_prohibited",
            H3::Same,
        )
        .await;
        e.untouched();
    })
    .await
}

#[tokio::test]
async fn connect_udp_path_outside_the_template_is_404_everywhere() {
    bounded_for(LIMIT, async {
        let e = env(ALLOW_LOOPBACK_V4_V6).await;
        let s = Situation::ConnectUdp(
            format!("/.well-known/masque/tcp/127.0.0.1/{}/", e.udp.port()),
            None,
        );
        row(
            &e.proxy,
            &e.certs,
            s,
            404,
            "proxy_internal_response",
            H3::Same,
        )
        .await;
        e.untouched();
    })
    .await
}

#[tokio::test]
async fn connect_udp_denied_by_policy_is_403_everywhere() {
    bounded_for(LIMIT, async {
        let e = env("[policy]\ndefault = \"deny\"\n").await;
        let s = Situation::ConnectUdp(udp_path("127.0.0.1", e.udp.port()), None);
        row(&e.proxy, &e.certs, s, 403, "http_request_denied", H3::Same).await;
        e.untouched();
    })
    .await
}

#[tokio::test]
async fn connect_udp_with_content_length_is_400_everywhere() {
    bounded_for(LIMIT, async {
        let e = env(ALLOW_LOOPBACK_V4_V6).await;
        let s = Situation::ConnectUdp(
            udp_path("127.0.0.1", e.udp.port()),
            Some(("content-length", "0")),
        );
        row(
            &e.proxy,
            &e.certs,
            s,
            400,
            "proxy_internal_response",
            H3::MalformedReset,
        )
        .await;
        e.untouched();
    })
    .await
}

#[tokio::test]
async fn extended_connect_unknown_protocol_is_501_on_h2() {
    bounded_for(LIMIT, async {
        let e = env(ALLOW_LOOPBACK_V4_V6).await;
        row(
            &e.proxy,
            &e.certs,
            Situation::Extended("websocket"),
            501,
            "proxy_internal_response",
            H3::Skip,
        )
        .await;
        e.untouched();
    })
    .await
}

/// HTTP/3 for the row above (the same claim as
/// `readme_error_rows::h3_extended_connect_websocket_is_501`).
#[tokio::test]
#[ignore = "h3 limitation: the h3 crate resets unknown :protocol values with H3_MESSAGE_ERROR before the proxy sees the request (covered as documented by readme_error_rows::h3_extended_connect_websocket_is_reset_by_the_h3_library)"]
async fn extended_connect_unknown_protocol_is_501_on_h3() {
    bounded_for(LIMIT, async {
        let e = env(ALLOW_LOOPBACK_V4_V6).await;
        let a = h3(&e.proxy, &e.certs, &Situation::Extended("websocket")).await;
        check(
            "HTTP/3",
            &a,
            501,
            "proxy_internal_response",
            "Extended(websocket)",
        );
        assert_eq!(a.reset, None, "{a:?}");
        e.untouched();
    })
    .await
}

// === HTTP/3 malformed rows: the 400 before the reset ===

async fn h3_malformed_answered(s: Situation) {
    let e = env(ALLOW_LOOPBACK_V4_V6).await;
    let what = format!("{s:?}");
    let a = h3(&e.proxy, &e.certs, &s).await;
    check("HTTP/3", &a, 400, "proxy_internal_response", &what);
    assert_eq!(
        a.reset,
        Some(H3_MESSAGE_ERROR),
        "{what} over HTTP/3: then the stream is reset with H3_MESSAGE_ERROR: {a:?}"
    );
    e.untouched();
}

#[tokio::test]
async fn h3_malformed_connect_port_0_gets_400_before_the_reset() {
    bounded_for(
        LIMIT,
        h3_malformed_answered(Situation::Connect("127.0.0.1:0".into())),
    )
    .await
}

#[tokio::test]
async fn h3_malformed_connect_udp_content_length_gets_400_before_the_reset() {
    bounded_for(LIMIT, async {
        let udp = UdpEcho::start().await;
        h3_malformed_answered(Situation::ConnectUdp(
            udp_path("127.0.0.1", udp.port()),
            Some(("content-length", "0")),
        ))
        .await
    })
    .await
}

//! Absolute-form `http://` forwarding over HTTP/1.1 and HTTP/2: what the
//! origin sees, what the client gets back, keep-alive reuse, streaming.

use bauta_tests::*;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;

fn has(headers: &http::HeaderMap, name: &str) -> bool {
    headers.contains_key(name)
}

#[tokio::test]
async fn forward_http1_rewrites_request_and_strips_hop_by_hop() {
    bounded(async {
        let origin = Origin::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let authority = origin.addr.to_string();
        let req = format!(
            "GET http://{authority}/path?q=1 HTTP/1.1\r\n\
             Host: {authority}\r\n\
             Connection: keep-alive, X-Drop-Me\r\n\
             X-Drop-Me: must not reach the origin\r\n\
             Proxy-Connection: keep-alive\r\n\
             Keep-Alive: timeout=5\r\n\
             Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
             X-Keep: yes\r\n\
             \r\n"
        );
        let (head, mut s, leftover) = raw_request(proxy.plain, req.as_bytes()).await;
        assert_eq!(head.status, 200, "{head:?}");
        let body = read_body(&mut s, &head, leftover).await;
        assert_eq!(body, b"origin: GET /path\n");

        // The client's view: Via added, origin's hop-by-hop fields gone.
        let via = head.header("via").expect("response carries Via");
        assert!(via.contains("1.1 bauta"), "response Via: {via:?}");
        assert_eq!(head.header("x-origin"), Some("yes"));
        assert_eq!(
            head.header("x-origin-hop"),
            None,
            "a field the origin's Connection header named must be dropped: {head:?}"
        );
        assert_eq!(head.header("keep-alive"), None, "{head:?}");

        // The origin's view.
        let seen = origin.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let r = &seen[0];
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.uri, "/path?q=1", "origin-form request target");
        assert_eq!(r.version, http::Version::HTTP_11);
        let hosts: Vec<_> = r.headers.get_all("host").iter().collect();
        assert_eq!(hosts.len(), 1, "{:?}", r.headers);
        assert_eq!(hosts[0], authority.as_str());
        let via: Vec<String> = r
            .headers
            .get_all("via")
            .iter()
            .map(|v| v.to_str().expect("ascii Via").to_string())
            .collect();
        assert!(
            via.iter().any(|v| v.contains("1.1 bauta")),
            "origin sees Via: 1.1 bauta, got {via:?}"
        );
        for h in [
            "x-drop-me",
            "proxy-connection",
            "keep-alive",
            "proxy-authorization",
        ] {
            assert!(
                !has(&r.headers, h),
                "hop-by-hop {h} forwarded: {:?}",
                r.headers
            );
        }
        if let Some(c) = r.headers.get("connection") {
            let c = c.to_str().expect("ascii").to_ascii_lowercase();
            assert!(
                !c.contains("x-drop-me"),
                "client's Connection header forwarded: {c:?}"
            );
        }
        assert_eq!(
            r.headers.get("x-keep").map(|v| v.as_bytes()),
            Some(&b"yes"[..])
        );
    })
    .await
}

#[tokio::test]
async fn forward_http1_keep_alive_reuses_one_upstream_connection() {
    bounded(async {
        let origin = Origin::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let tcp = tokio::net::TcpStream::connect(proxy.plain)
            .await
            .expect("connect to proxy");
        let mut client = h1_client(tcp).await;
        for path in ["/one", "/two", "/three"] {
            let (parts, body) = h1_send(&mut client, get_absolute(&origin.url(path))).await;
            assert_eq!(parts.status, 200, "{path}: {parts:?}");
            assert_eq!(body, format!("origin: GET {path}\n"));
        }
        assert_eq!(
            origin.connections(),
            1,
            "three sequential requests on one client connection should reuse one upstream connection"
        );
    })
    .await
}

#[tokio::test]
async fn forward_http1_response_is_streamed() {
    bounded(async {
        let origin = Origin::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let tcp = tokio::net::TcpStream::connect(proxy.plain)
            .await
            .expect("connect to proxy");
        let mut client = h1_client(tcp).await;
        client.ready().await.expect("ready");
        let resp = client
            .send_request(get_absolute(&origin.url("/stream")))
            .await
            .expect("response head");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        // The first chunk must arrive while the origin is still holding the second.
        let first = body
            .frame()
            .await
            .expect("a first frame")
            .expect("frame ok")
            .into_data()
            .expect("data frame");
        assert_eq!(first, Bytes::from_static(b"part1;"));
        origin.release();
        let rest = body.collect().await.expect("rest of the body").to_bytes();
        assert_eq!(rest, Bytes::from_static(b"part2;"));
    })
    .await
}

#[tokio::test]
async fn forward_http1_post_body_streams_through() {
    bounded(async {
        let origin = Origin::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let tcp = tokio::net::TcpStream::connect(proxy.plain)
            .await
            .expect("connect to proxy");
        let mut client = h1_client(tcp).await;
        let (tx, body) = channel_body();
        let req = Request::builder()
            .method(Method::POST)
            .uri(origin.url("/upload"))
            .header("host", origin.addr.to_string())
            .body(body)
            .expect("request");
        client.ready().await.expect("ready");
        let resp = tokio::spawn(client.send_request(req));
        // The origin receives the first chunk before the client has sent the second.
        tx.send(Bytes::from_static(b"chunk-one;"))
            .await
            .expect("send chunk");
        let got = origin.next_upload_chunk().await;
        assert_eq!(got, Bytes::from_static(b"chunk-one;"));
        let big = Bytes::from(vec![b'x'; 300_000]);
        tx.send(big.clone()).await.expect("send big chunk");
        drop(tx);
        let resp = resp.await.expect("task").expect("response");
        assert_eq!(resp.status(), 200);
        let echoed = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(echoed.len(), 10 + big.len());
        assert!(echoed.starts_with(b"chunk-one;"));
        assert!(echoed[10..].iter().all(|b| *b == b'x'));
        let seen = origin.seen();
        assert_eq!(seen[0].method, Method::POST);
        assert_eq!(seen[0].uri, "/upload");
    })
    .await
}

#[tokio::test]
async fn forward_http1_post_with_content_length() {
    bounded(async {
        let origin = Origin::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let authority = origin.addr.to_string();
        let payload = "a=1&b=2";
        let req = format!(
            "POST http://{authority}/form HTTP/1.1\r\nHost: {authority}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        let (head, mut s, leftover) = raw_request(proxy.plain, req.as_bytes()).await;
        assert_eq!(head.status, 200, "{head:?}");
        let body = read_body(&mut s, &head, leftover).await;
        assert_eq!(body, payload.as_bytes());
        let seen = origin.seen();
        assert_eq!(
            seen[0].headers.get("content-length").map(|v| v.as_bytes()),
            Some(payload.len().to_string().as_bytes())
        );
    })
    .await
}

#[tokio::test]
async fn forward_http2_over_tls() {
    bounded(async {
        let certs = make_certs();
        let origin = Origin::start().await;
        let proxy = start_proxy_tls(&certs, ALLOW_LOOPBACK).await;
        let client = h2_client(tls_connect(proxy.secure(), &certs, &[b"h2"]).await).await;

        let req = Request::builder()
            .method(Method::GET)
            .uri(origin.url("/h2path?x=y"))
            .body(())
            .expect("request");
        let (parts, body) = h2_request(&client, req, None).await;
        assert_eq!(parts.status, 200, "{parts:?}");
        assert_eq!(body, Bytes::from_static(b"origin: GET /h2path\n"));
        let via = parts
            .headers
            .get("via")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(via.contains("bauta"), "response Via over h2: {via:?}");

        let post = Request::builder()
            .method(Method::POST)
            .uri(origin.url("/h2post"))
            .body(())
            .expect("request");
        let (parts, body) = h2_request(&client, post, Some(Bytes::from_static(b"h2 body"))).await;
        assert_eq!(parts.status, 200);
        assert_eq!(body, Bytes::from_static(b"h2 body"));

        let seen = origin.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].uri, "/h2path?x=y");
        assert_eq!(
            seen[0].version,
            http::Version::HTTP_11,
            "upstream is HTTP/1.1"
        );
        assert_eq!(
            seen[0].headers.get("host").map(|v| v.as_bytes()),
            Some(origin.addr.to_string().as_bytes()),
            "Host from :authority"
        );
        let via = seen[0]
            .headers
            .get("via")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(via.contains("bauta"), "origin sees Via: {via:?}");
        assert_eq!(
            origin.connections(),
            1,
            "the two h2 requests share one upstream connection"
        );
    })
    .await
}

#[tokio::test]
async fn forward_denied_by_default_is_not_forwarded() {
    bounded(async {
        let origin = Origin::start().await;
        let proxy = start_proxy("[policy]\ndefault = \"deny\"\n").await;
        let tcp = tokio::net::TcpStream::connect(proxy.plain)
            .await
            .expect("connect to proxy");
        let mut client = h1_client(tcp).await;
        let (parts, _) = h1_send(&mut client, get_absolute(&origin.url("/secret"))).await;
        assert_error_parts(
            &parts,
            http::StatusCode::FORBIDDEN,
            "http_request_denied",
            "forward default deny",
        );
        assert_eq!(origin.connections(), 0, "origin must not be contacted");
    })
    .await
}

#[tokio::test]
async fn origin_form_request_to_the_proxy_is_400() {
    bounded(async {
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let req = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.plain);
        let (head, _s, _) = raw_request(proxy.plain, req.as_bytes()).await;
        assert_eq!(head.status, 400, "{head:?}");
    })
    .await
}

#[tokio::test]
async fn forward_https_absolute_form_not_covered_is_421() {
    bounded(async {
        let origin = Origin::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let req = format!(
            "GET https://{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n",
            a = origin.addr
        );
        let (head, _s, _) = raw_request(proxy.plain, req.as_bytes()).await;
        // An https request the connection does not cover is misdirected
        // (RFC 9110 §15.5.20); it must use CONNECT instead.
        head.assert_error(421, "proxy_internal_response", "https:// not covered");
        assert_eq!(origin.connections(), 0);
    })
    .await
}

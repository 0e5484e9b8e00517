//! The upstream keep-alive pool's limits (README `[limits]`):
//! `upstream_idle_timeout_s` — a pooled connection idle longer than that is
//! not reused; `max_upstream_idle_per_host` — at most that many idle
//! connections are kept per target. Forward path (`http://`) and reverse
//! path (an origin's http upstream). Upstream connections are counted at the
//! upstream's accept.

use std::time::Duration;

use bauta_tests::readme_env::{h2_to, origin_listener_certs};
use bauta_tests::seccert_env::Pki;
use bauta_tests::{
    bounded_for, channel_body, get_absolute, h1_client, h1_send, h2_request, start_proxy,
    start_proxy_opts, Origin, ProxyOpts, TestProxy, ALLOW_LOOPBACK,
};
use bytes::Bytes;
use http::{Method, Request};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(40);

/// One GET through the proxy on a fresh client connection (so reuse can only
/// come from the proxy's pool).
async fn get_fresh(proxy: &TestProxy, origin: &Origin, path: &str) {
    let tcp = TcpStream::connect(proxy.plain).await.expect("connect");
    let mut client = h1_client(tcp).await;
    let (parts, body) = h1_send(&mut client, get_absolute(&origin.url(path))).await;
    assert_eq!(parts.status, 200, "{path}: {parts:?}");
    assert_eq!(body, format!("origin: GET {path}\n"));
}

#[tokio::test]
async fn forward_pool_is_shared_across_client_connections_until_the_idle_timeout() {
    bounded_for(LIMIT, async {
        let origin = Origin::start().await;
        let proxy = start_proxy(&format!(
            "{ALLOW_LOOPBACK}\n[limits]\nupstream_idle_timeout_s = 1\n"
        ))
        .await;
        get_fresh(&proxy, &origin, "/a").await;
        get_fresh(&proxy, &origin, "/b").await;
        assert_eq!(
            origin.connections(),
            1,
            "two sequential requests from two client connections share one pooled upstream connection"
        );
        // Let the pooled connection go past upstream_idle_timeout_s.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        get_fresh(&proxy, &origin, "/c").await;
        assert_eq!(
            origin.connections(),
            2,
            "after upstream_idle_timeout_s the next request opens a new upstream connection"
        );
        get_fresh(&proxy, &origin, "/d").await;
        assert_eq!(origin.connections(), 2, "and that one is pooled again");
    })
    .await
}

/// `n` POSTs at once, each on its own client connection, each holding its
/// upstream connection until every one has reached the upstream; then all
/// finish. Returns how many new upstream connections the round opened.
async fn concurrent_round(proxy: &TestProxy, origin: &Origin, n: usize) -> usize {
    let before = origin.connections();
    let mut senders = Vec::new();
    let mut responses = Vec::new();
    for i in 0..n {
        let tcp = TcpStream::connect(proxy.plain).await.expect("connect");
        let mut client = h1_client(tcp).await;
        let (tx, body) = channel_body();
        let url = origin.url(&format!("/up{i}"));
        let host = url
            .parse::<http::Uri>()
            .expect("url")
            .authority()
            .expect("authority")
            .to_string();
        let req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(http::header::HOST, host)
            .body(body)
            .expect("request");
        responses.push(tokio::spawn(async move {
            client.ready().await.expect("ready");
            let resp = client.send_request(req).await.expect("response");
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .expect("body")
                .to_bytes();
            (status, body)
        }));
        tx.send(Bytes::from(format!("chunk{i};")))
            .await
            .expect("send chunk");
        senders.push(tx);
    }
    // Every request is now in flight on its own upstream connection.
    for _ in 0..n {
        let _ = origin.next_upload_chunk().await;
    }
    let opened = origin.connections() - before;
    drop(senders);
    for (i, r) in responses.into_iter().enumerate() {
        let (status, body) = r.await.expect("request task");
        assert_eq!(status, 200, "POST {i}");
        assert_eq!(body, format!("chunk{i};"), "POST {i} echoed");
    }
    opened
}

#[tokio::test]
async fn forward_pool_keeps_at_most_max_upstream_idle_per_host() {
    bounded_for(LIMIT, async {
        let origin = Origin::start().await;
        let proxy = start_proxy(&format!(
            "{ALLOW_LOOPBACK}\n[limits]\nmax_upstream_idle_per_host = 1\n"
        ))
        .await;
        assert_eq!(concurrent_round(&proxy, &origin, 3).await, 3, "round 1");
        // One of the three was kept; the next three concurrent requests reuse
        // it and open 3 - 1 new ones.
        assert_eq!(
            concurrent_round(&proxy, &origin, 3).await,
            2,
            "round 2 with max_upstream_idle_per_host = 1"
        );
    })
    .await
}

/// Control for the test above: with the default (32) all three are kept.
#[tokio::test]
async fn forward_pool_with_default_limit_keeps_all_three() {
    bounded_for(LIMIT, async {
        let origin = Origin::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        assert_eq!(concurrent_round(&proxy, &origin, 3).await, 3, "round 1");
        assert_eq!(
            concurrent_round(&proxy, &origin, 3).await,
            0,
            "round 2 reuses the three pooled connections"
        );
    })
    .await
}

#[tokio::test]
async fn reverse_pool_reuses_until_the_idle_timeout() {
    bounded_for(LIMIT, async {
        let pki = Pki::new();
        let (certs, cert) = origin_listener_certs(&pki, "origin.test");
        let upstream = Origin::start().await;
        let extra = format!(
            "[[origin]]\nhost = \"origin.test\"\nport = 443\ncert = '{}'\nkey = '{}'\n\
             upstream = \"http://{}\"\n\n{ALLOW_LOOPBACK}\n[limits]\nupstream_idle_timeout_s = 1\n",
            cert.cert_pem.display(),
            cert.key_pem.display(),
            upstream.addr
        );
        let proxy = start_proxy_opts(ProxyOpts {
            certs: Some(&certs),
            extra,
            ..ProxyOpts::default()
        })
        .await;
        let get = |path: &'static str| {
            let certs = &certs;
            let proxy = &proxy;
            async move {
                let client = h2_to(proxy.secure(), certs, "origin.test").await;
                let req = Request::builder()
                    .method(Method::GET)
                    .uri(format!("https://origin.test{path}"))
                    .body(())
                    .expect("request");
                let (parts, body) = h2_request(&client, req, None).await;
                assert_eq!(parts.status, 200, "{path}: {parts:?}");
                assert_eq!(body, format!("origin: GET {path}\n"));
            }
        };
        get("/a").await;
        get("/b").await;
        assert_eq!(
            upstream.connections(),
            1,
            "two reverse requests from two client connections share one upstream connection"
        );
        tokio::time::sleep(Duration::from_millis(1600)).await;
        get("/c").await;
        assert_eq!(
            upstream.connections(),
            2,
            "after upstream_idle_timeout_s the reverse path opens a new upstream connection"
        );
    })
    .await
}

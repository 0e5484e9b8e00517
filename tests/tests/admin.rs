//! The admin endpoint (/metrics, /healthz, /readyz).

use bauta_tests::*;

/// Sum of the samples of `family` whose label set contains every `labels` pair.
fn sample_sum(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let (label_part, value) = if let Some(rest) = rest.strip_prefix('{') {
            let Some((l, v)) = rest.split_once('}') else {
                continue;
            };
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another family sharing the prefix
        };
        let all = labels
            .iter()
            .all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")));
        if !all {
            continue;
        }
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        *found.get_or_insert(0.0) += v;
    }
    found
}

#[tokio::test]
async fn metrics_cover_every_family() {
    bounded(async {
        let dns = FakeDns::start().await;
        let echo = EchoServer::start().await;
        let origin = Origin::start().await;
        let proxy = start_proxy(&format!("{}\n{ALLOW_LOOPBACK}", dns.toml())).await;

        // A tunnel by name (DNS, policy allow, upstream connect, bytes both ways).
        let (head, mut s) = connect_h1(proxy.plain, &format!("echo.test:{}", echo.port())).await;
        assert_eq!(head.status, 200, "{head:?}");
        assert_echo(&mut s, b"metrics bytes").await;
        assert_half_close(&mut s).await;
        // A denial and a forward.
        let (head, _) = connect_h1(proxy.plain, "10.0.0.1:80").await;
        assert_eq!(head.status, 403, "{head:?}");
        let (head, mut s, leftover) = raw_request(
            proxy.plain,
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
                origin.url("/m"),
                origin.addr
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(head.status, 200);
        let _ = read_body(&mut s, &head, leftover).await;

        let text = fetch_metrics(proxy.admin).await;
        for name in [
            "bauta_connections_total",
            "bauta_requests_total",
            "bauta_policy_decisions_total",
            "bauta_tunnel_bytes_total",
            "bauta_dns_lookups_total",
            "bauta_upstream_connect_seconds_bucket",
        ] {
            assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
        }
        assert!(
            text.contains("process_cpu_seconds_total")
                || text.contains("process_resident_memory_bytes"),
            "/metrics lacks process metrics:\n{text}"
        );

        let ok_connects = sample_sum(
            &text,
            "bauta_requests_total",
            &[("kind", "connect"), ("outcome", "ok")],
        );
        assert!(
            ok_connects.is_some_and(|v| v >= 1.0),
            "bauta_requests_total{{kind=\"connect\",outcome=\"ok\"}}: {ok_connects:?}\n{text}"
        );
        let denied = sample_sum(
            &text,
            "bauta_requests_total",
            &[("kind", "connect"), ("outcome", "denied")],
        );
        assert!(
            denied.is_some_and(|v| v >= 1.0),
            "denied CONNECT counted: {denied:?}\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("bauta_requests_total{") && l.contains("kind=\"forward\"")),
            "forward requests counted:\n{text}"
        );
        let allow = sample_sum(
            &text,
            "bauta_policy_decisions_total",
            &[("verdict", "allow"), ("rule", "lab")],
        );
        assert!(
            allow.is_some_and(|v| v >= 1.0),
            "allow decisions: {allow:?}\n{text}"
        );
        let deny = sample_sum(
            &text,
            "bauta_policy_decisions_total",
            &[("verdict", "deny")],
        );
        assert!(
            deny.is_some_and(|v| v >= 1.0),
            "deny decisions: {deny:?}\n{text}"
        );
        let up = sample_sum(
            &text,
            "bauta_tunnel_bytes_total",
            &[("kind", "connect"), ("direction", "upstream")],
        );
        assert!(
            up.is_some_and(|v| v >= b"metrics bytes".len() as f64),
            "upstream tunnel bytes: {up:?}\n{text}"
        );
        let down = sample_sum(
            &text,
            "bauta_tunnel_bytes_total",
            &[("kind", "connect"), ("direction", "downstream")],
        );
        assert!(
            down.is_some_and(|v| v >= (b"metrics bytes".len() + ECHO_EOF_REPLY.len()) as f64),
            "downstream tunnel bytes: {down:?}\n{text}"
        );
        let lookups = sample_sum(&text, "bauta_dns_lookups_total", &[("outcome", "ok")]);
        assert!(
            lookups.is_some_and(|v| v >= 1.0),
            "dns lookups: {lookups:?}\n{text}"
        );
        let connects = sample_sum(&text, "bauta_upstream_connect_seconds_count", &[]);
        assert!(
            connects.is_some_and(|v| v >= 2.0),
            "upstream connects: {connects:?}\n{text}"
        );
        let conns = sample_sum(&text, "bauta_connections_total", &[("listener", "plain")]);
        assert!(
            conns.is_some_and(|v| v >= 3.0),
            "client connections: {conns:?}\n{text}"
        );
    })
    .await
}

#[tokio::test]
async fn metrics_count_dns_failures() {
    bounded(async {
        let dns = FakeDns::start().await;
        let proxy = start_proxy(&format!("{}\n{ALLOW_LOOPBACK}", dns.toml())).await;
        let (head, _) = connect_h1(proxy.plain, "missing.test:443").await;
        assert_eq!(head.status, 502);
        let (head, _) = connect_h1(proxy.plain, "slow.test:443").await;
        assert_eq!(head.status, 504);
        let text = fetch_metrics(proxy.admin).await;
        let nx = sample_sum(&text, "bauta_dns_lookups_total", &[("outcome", "nxdomain")]);
        assert!(
            nx.is_some_and(|v| v >= 1.0),
            "nxdomain lookups: {nx:?}\n{text}"
        );
        let to = sample_sum(&text, "bauta_dns_lookups_total", &[("outcome", "timeout")]);
        assert!(
            to.is_some_and(|v| v >= 1.0),
            "timed-out lookups: {to:?}\n{text}"
        );
        let dns_err = sample_sum(
            &text,
            "bauta_requests_total",
            &[("kind", "connect"), ("outcome", "dns_error")],
        );
        assert!(dns_err.is_some_and(|v| v >= 1.0), "{dns_err:?}\n{text}");
    })
    .await
}

#[tokio::test]
async fn health_and_readiness() {
    bounded(async {
        let proxy = start_proxy("").await;
        let (status, body) = http_get(proxy.admin, "/healthz").await;
        assert_eq!(status, 200, "/healthz: {body}");
        let (status, body) = http_get(proxy.admin, "/readyz").await;
        assert_eq!(status, 200, "/readyz: {body}");
        let (status, _) = http_get(proxy.admin, "/nope").await;
        assert_eq!(status, 404);
        let req = format!(
            "POST /metrics HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            proxy.admin
        );
        let (head, _, _) = raw_request(proxy.admin, req.as_bytes()).await;
        assert_eq!(head.status, 405, "{head:?}");
        let (head, _, _) = raw_request(
            proxy.admin,
            format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                proxy.admin
            )
            .as_bytes(),
        )
        .await;
        let ct = head.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("text/plain"), "metrics content type {ct:?}");
    })
    .await
}

// Graceful shutdown: see lifecycle_shutdown.rs.

//! The overload manager (`[limits] max_tunnels`, `max_udp_flows`,
//! `max_udp_flows_per_connection`, `memory_watermark_mib`): new work is shed
//! with a 503 (`connection_limit_reached`, or `proxy_internal_error` for
//! memory) while what is open keeps working, the per-connection CONNECT-UDP
//! cap answers 429, and a place comes back when its tunnel ends. Counted in
//! `bauta_overload_shed_total{reason}` and `bauta_overloaded`.

use std::time::Duration;

use bauta_tests::masque::{
    h2_connect_udp, h2_extended_client, quic_client_config, start_masque_proxy, udp_path, H3Client,
    UdpEcho, ALLOW_LOOPBACK_V4_V6,
};
use bauta_tests::*;

const SHED: &str = "bauta_overload_shed_total";

async fn shed(admin: std::net::SocketAddr, reason: &str) -> f64 {
    metric_sample(&fetch_metrics(admin).await, SHED, &[("reason", reason)]).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn max_tunnels_sheds_new_tunnels_and_keeps_open_ones() {
    bounded_for(Duration::from_secs(60), async {
        let certs = make_certs();
        let extra = format!("{ALLOW_LOOPBACK_V4_V6}\n[limits]\nmax_tunnels = 2\n");
        let proxy = start_masque_proxy(&certs, &extra).await;
        assert_eq!(shed(proxy.admin, "tunnels").await, 0.0, "pre-filled");
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let (h, mut t1) = connect_h1_with(proxy.plain, &target, "").await;
        assert_eq!(h.status, 200);
        // The second place is taken over HTTP/2: the count is process-wide.
        let tls = tls_connect(proxy.secure, &certs, &[b"h2"]).await;
        let h2 = h2_client(tls).await;
        let (parts, t2) = h2_connect(&h2, &target).await;
        assert_eq!(parts.status, 200);
        let mut t2 = t2.expect("HTTP/2 tunnel");
        let (h, _) = connect_h1_with(proxy.plain, &target, "").await;
        h.assert_error(503, "connection_limit_reached", "third tunnel");
        assert!(
            h.proxy_status()
                .is_some_and(|p| p.contains("maximum of tunnels")),
            "{h:?}"
        );
        let (parts, _) = h2_connect(&h2, &target).await;
        assert_error_parts(
            &parts,
            http::StatusCode::SERVICE_UNAVAILABLE,
            "connection_limit_reached",
            "third tunnel over HTTP/2",
        );
        assert_eq!(shed(proxy.admin, "tunnels").await, 2.0);
        // What is open keeps working.
        assert_echo(&mut t1, b"still open").await;
        t2.assert_echo(b"also open").await;
        // A place comes back when a tunnel ends.
        drop(t1);
        wait_tunnels(proxy.admin, "connect", 1.0).await;
        let (h, mut t3) = connect_h1_with(proxy.plain, &target, "").await;
        assert_eq!(h.status, 200, "after one closed");
        assert_echo(&mut t3, b"new place").await;
        let requests = metric_sample(
            &proxy.metrics().await,
            "bauta_requests_total",
            &[
                ("listener", "plain"),
                ("protocol", "http1"),
                ("kind", "connect"),
                ("outcome", "overloaded"),
            ],
        );
        assert_eq!(requests, Some(1.0), "counted as outcome=overloaded");
        drop((t2, t3));
        proxy.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_flows_are_capped_per_connection_and_in_total() {
    bounded_for(Duration::from_secs(60), async {
        let certs = make_certs();
        let extra = format!(
            "{ALLOW_LOOPBACK_V4_V6}\n[limits]\nmax_udp_flows_per_connection = 2\nmax_udp_flows = 3\n"
        );
        let proxy = start_masque_proxy(&certs, &extra).await;
        let udp = UdpEcho::start().await;
        let path = udp_path("127.0.0.1", udp.port());

        // HTTP/3: two flows on one connection, the third is the client's
        // excess (429), not the proxy's.
        let mut a = H3Client::connect_with(proxy.secure, quic_client_config(&certs)).await;
        let f1 = a.connect_udp(&path).await;
        let _f2 = a.connect_udp(&path).await;
        let (resp, _s) = a
            .extended_connect(&path, &[("capsule-protocol", "?1")])
            .await
            .expect("third CONNECT-UDP");
        assert_eq!(resp.status(), 429, "third flow on one connection");
        let ps = proxy_status_of(resp.headers()).unwrap_or_default();
        assert!(
            ps.contains("http_request_error") && ps.contains("on this connection"),
            "{ps}"
        );
        // Another connection has its own two, but the process only three.
        let mut b = H3Client::connect_with(proxy.secure, quic_client_config(&certs)).await;
        let f3 = b.connect_udp(&path).await;
        b.assert_datagram_echo(bauta_tests::masque::stream_id(&f3), b"third flow works")
            .await;
        let (resp, _s) = b
            .extended_connect(&path, &[("capsule-protocol", "?1")])
            .await
            .expect("fourth CONNECT-UDP");
        assert_eq!(resp.status(), 503, "fourth flow in the process");
        let ps = proxy_status_of(resp.headers()).unwrap_or_default();
        assert!(ps.contains("connection_limit_reached"), "{ps}");
        // HTTP/2 capsules count the same way.
        let h2 = h2_extended_client(proxy.secure, &certs).await;
        let (parts, _) = h2_connect_udp(&h2, &proxy.secure_authority(), &path).await;
        assert_eq!(parts.status, 503, "HTTP/2 flow while the process is full");
        let text = proxy.metrics().await;
        assert_eq!(
            metric_sample(
                &text,
                "bauta_limit_rejections_total",
                &[("limit", "udp_flows_per_connection")]
            ),
            Some(1.0)
        );
        assert_eq!(metric_sample(&text, SHED, &[("reason", "udp_flows")]), Some(2.0));
        // Places come back.
        drop(f1);
        wait_tunnels(proxy.admin, "connect-udp", 2.0).await;
        let again = b.connect_udp(&path).await;
        drop((again, f3));
        proxy.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_watermark_sheds_new_work_until_lifted_by_a_reload() {
    bounded_for(Duration::from_secs(60), async {
        let dir = TempDir::new("overload-memory");
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let origin = Origin::start().await;
        let config = |limits: &str| {
            format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"plain\"\n\
                 listen = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n{ALLOW_LOOPBACK_V4_V6}\n{limits}"
            )
        };
        // 1 MiB: any process is over it.
        let path = dir.write("bauta.toml", &config("[limits]\nmemory_watermark_mib = 1\n"));
        let proxy = BautaProcess::start(&path).await;
        let plain = proxy.listener("plain");
        let over = wait_sample(proxy.admin, "bauta_overloaded", &[], Duration::from_secs(5), |v| {
            v == 1.0
        })
        .await;
        assert_eq!(over, Some(1.0), "bauta_overloaded");
        let (h, _) = connect_h1_with(plain, &target, "").await;
        h.assert_error(503, "proxy_internal_error", "CONNECT over the watermark");
        assert!(
            h.proxy_status().is_some_and(|p| p.contains("memory")),
            "{h:?}"
        );
        let get = format!(
            "GET http://{0}/x HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
            origin.addr
        );
        let (h, _, _) = raw_request(plain, get.as_bytes()).await;
        h.assert_error(503, "proxy_internal_error", "forwarding over the watermark");
        assert_eq!(origin.connections(), 0, "shed before any upstream connection");
        // The admin endpoint still answers.
        let (status, _) = http_get(proxy.admin, "/healthz").await;
        assert_eq!(status, 200);
        assert_eq!(shed(proxy.admin, "memory").await, 2.0);
        // A reload without the watermark lifts it.
        std::fs::write(&path, config("")).expect("rewrite config");
        proxy.signal("HUP");
        let over = wait_sample(proxy.admin, "bauta_overloaded", &[], Duration::from_secs(5), |v| {
            v == 0.0
        })
        .await;
        assert_eq!(over, Some(0.0), "bauta_overloaded after the reload");
        let (h, mut t) = connect_h1_with(plain, &target, "").await;
        assert_eq!(h.status, 200, "accepting again");
        assert_echo(&mut t, b"back to work").await;
        let stderr = proxy.stderr();
        assert!(stderr.contains("over the watermark"), "{stderr}");
        assert!(stderr.contains("under the watermark again"), "{stderr}");
    })
    .await
}

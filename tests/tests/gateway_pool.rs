//! The sidecar's gateway connections over time: a pod certificate renewed
//! in place (as cert-manager does to a mounted Secret) makes the sidecar
//! reload and present it on a new connection; the gateway's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` makes it open another connection, up
//! to `max_connections`.

use std::time::Duration;

use bauta_tests::gateway_env::{GatewayEnv, Pod, Proto, ProxyStatus, GATEWAY_NAME};
use bauta_tests::{assert_echo, bounded_for, connect_h1, EchoServer};

const LIMIT: Duration = Duration::from_secs(60);

/// Replace `to` with `from`'s bytes atomically (write beside, rename).
fn install(from: &std::path::Path, to: &std::path::Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).expect("copy the renewed file");
    std::fs::rename(&tmp, to).expect("replace the file");
}

#[tokio::test]
async fn a_renewed_pod_certificate_is_presented_on_new_gateway_connections() {
    bounded_for(LIMIT, async {
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let mut env = GatewayEnv::new();
        env.start_gateway().await;
        env.start_sidecar(Pod::Payments).await;
        let sidecar = env.sidecar_plain();

        let (head, _held) = connect_h1(sidecar, &target).await;
        assert_eq!(head.status, 200, "payments may: {head:?}");
        let before = env.gateway_connections_accepted().await;

        // "Renew" the pod certificate with the web pod's (same CA, another
        // SPIFFE URI), key first then certificate, as a Secret update lands.
        let (pay, web) = (&env.pki.payments, &env.pki.web);
        install(&web.key_pem, &pay.key_pem);
        install(&web.cert_pem, &pay.cert_pem);

        // The reload is asynchronous: poll until a CONNECT is refused by
        // the gateway for the new identity.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let head = loop {
            let (head, _s) = connect_h1(sidecar, &target).await;
            if head.status == 403 || tokio::time::Instant::now() > deadline {
                break head;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(head.status, 403, "the web identity is refused: {head:?}");
        let raw = head.proxy_status().expect("Proxy-Status");
        let ps = ProxyStatus::parse(raw);
        let (i, m) = ps.expect_member(GATEWAY_NAME, "refused by the gateway");
        assert_eq!(i, 0, "the gateway's member first: {raw}");
        assert_eq!(m.param("error"), Some("http_request_denied"), "{raw}");
        let after = env.gateway_connections_accepted().await;
        assert_eq!(
            after - before,
            1.0,
            "one new gateway connection after the reload"
        );
        let reloads = env
            .sidecar_metric("bauta_config_reloads_total", &[("outcome", "ok")])
            .await
            .unwrap_or(0.0);
        assert!(reloads >= 1.0, "the sidecar reloaded: {reloads}");
        let lines = env.gateway().access_log();
        assert!(
            lines
                .iter()
                .any(|l| l["identity"] == "spiffe://corp/web" && l["status"] == 403),
            "the gateway logged the new identity: {lines:?}"
        );
    })
    .await;
}

/// The gateway allows 2 streams per HTTP/2 connection
/// (`h2_max_concurrent_streams`): the sidecar reads its SETTINGS and opens
/// another connection instead of queueing, up to `max_connections` (here
/// 2), then answers 503 at once.
#[tokio::test]
async fn the_gateways_stream_limit_opens_another_connection_up_to_the_cap() {
    bounded_for(LIMIT, async {
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let mut env = GatewayEnv::new();
        // Lands in the gateway's [limits] table, its last.
        env.set_gateway_extra("h2_max_concurrent_streams = 2\n");
        env.start_gateway().await;
        let before = env.gateway_connections_accepted().await;
        let text = env.sidecar_config(Pod::Payments).replace(
            "connections = 1\n",
            "connections = 1\nmax_connections = 2\n",
        );
        assert!(text.contains("max_connections = 2"), "{text}");
        env.start_sidecar_with(&text, true).await;
        let sidecar = env.sidecar_plain();

        let mut held = Vec::new();
        for i in 0..4 {
            let (head, s) = connect_h1(sidecar, &target).await;
            assert_eq!(head.status, 200, "tunnel {i}: {head:?}");
            held.push(s);
        }
        let open = env
            .sidecar_metric(
                "bauta_gateway_connections",
                &[("protocol", "h2"), ("state", "open")],
            )
            .await;
        assert_eq!(open, Some(2.0), "two connections of two streams each");
        let after = env.gateway_connections_accepted().await;
        assert_eq!(after - before, 2.0, "the gateway accepted two connections");

        // Both full, no third allowed: refused at once, not queued.
        let (head, _s) = connect_h1(sidecar, &target).await;
        assert_eq!(head.status, 503, "{head:?}");
        let raw = head.proxy_status().expect("Proxy-Status");
        let ps = ProxyStatus::parse(raw);
        assert_eq!(ps.members.len(), 1, "{raw}");
        assert_eq!(
            ps.members[0].param("error"),
            Some("connection_limit_reached"),
            "{raw}"
        );
        let saturated = env
            .sidecar_metric("bauta_gateway_errors_total", &[("reason", "saturated")])
            .await;
        assert_eq!(saturated, Some(1.0));

        // A stream ends: its slot is free again.
        held.pop();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (head, s) = connect_h1(sidecar, &target).await;
            if head.status == 200 {
                held.push(s);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slot never freed: {head:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// The gateway shuts down gracefully (SIGTERM: GOAWAY, then a grace period
/// for open tunnels): the sidecar moves that connection to draining, its
/// open tunnel keeps working, and a new tunnel does not go on it (the
/// gateway takes no new connection either: 502 or 503 from the sidecar).
async fn goaway_drains_the_connection(proto: Proto) {
    bounded_for(LIMIT, async {
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let mut env = GatewayEnv::new();
        env.set_protocols(proto.toml());
        env.set_gateway_grace_s(20);
        env.start_gateway().await;
        env.start_sidecar(Pod::Payments).await;
        let sidecar = env.sidecar_plain();
        let (head, mut open) = connect_h1(sidecar, &target).await;
        assert_eq!(head.status, 200, "{head:?}");
        assert_echo(&mut open, b"before the GOAWAY").await;

        env.gateway().signal("TERM");
        // The GOAWAY moves the connection to draining as it arrives.
        assert_eq!(
            draining(&env, proto, 1.0).await,
            Some(1.0),
            "{proto:?}: the connection is draining"
        );
        // New work does not go on the draining connection, and the closing
        // gateway takes no new connection: refused by the sidecar (502 or
        // 503; 504 when the closing gateway's QUIC endpoint no longer
        // answers).
        let (head, _s) = connect_h1(sidecar, &target).await;
        assert!(
            [502, 503, 504].contains(&head.status),
            "{proto:?}: a new tunnel went to the gateway after its GOAWAY: {head:?}"
        );
        // The open tunnel drains: it still carries bytes.
        assert_echo(&mut open, b"after the GOAWAY, within the grace").await;
        assert_eq!(
            env.sidecar_metric(
                "bauta_gateway_connections",
                &[("protocol", proto.as_str()), ("state", "open")]
            )
            .await,
            Some(0.0),
            "{proto:?}"
        );
        // Its last stream done, the drained connection closes (well within
        // the gateway's 20 s grace).
        drop(open);
        assert_eq!(
            draining(&env, proto, 0.0).await,
            Some(0.0),
            "{proto:?}: the drained connection closed"
        );
    })
    .await;
}

/// The sidecar's draining `proto` connections, once they are `expected`
/// (or after 10 s).
async fn draining(env: &GatewayEnv, proto: Proto, expected: f64) -> Option<f64> {
    GatewayEnv::wait_metric_on(
        env.sidecar().admin,
        "bauta_gateway_connections",
        &[("protocol", proto.as_str()), ("state", "draining")],
        Duration::from_secs(10),
        |v| v == expected,
    )
    .await
}

bauta_tests::over_h3_and_h2!(goaway_drains_the_connection);

//! The sidecar-chaining harness (`bauta_tests::gateway_env`) checked on its
//! own, without the feature: the gateway's configuration runs, its mTLS
//! listener takes the pod's certificate (verified for its IP SAN and its DNS
//! SAN) and refuses a handshake without one, its policy allows the payments
//! identity and denies the web one; the sidecar's configuration without
//! `[gateway]` runs and tunnels directly, with its local deny rule.
//! `gateway_chain.rs` then runs the two processes chained.

use std::time::Duration;

use bauta_tests::gateway_env::*;
use bauta_tests::masque::{quic_client_config_with_cert, wait_metric};
use bauta_tests::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// HTTP/2 to the gateway with `cert`, verifying it as `server_name`.
async fn h2_to_gateway(env: &GatewayEnv, server_name: &str, cert: &ClientCert) -> H2Sender {
    let tls = env
        .pki
        .tls_to_gateway(env.gateway_listener(), server_name, Some(cert), &[b"h2"])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "TLS to the gateway as {server_name} with {}: {e}",
                cert.identity
            )
        });
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the gateway's listener speaks h2"
    );
    h2_client(tls).await
}

#[tokio::test]
async fn gateway_harness_direct() {
    bauta_bin(); // built outside the time bound
    bounded_for(Duration::from_secs(60), async {
        let mut env = GatewayEnv::new();
        let gw = env.start_gateway().await;
        assert_eq!(gw.ip().to_string(), "127.0.0.1");
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());

        // The pod's certificate, the gateway verified by its IP SAN: CONNECT
        // over HTTP/2 reaches the echo server.
        let h2 = h2_to_gateway(&env, "127.0.0.1", &env.pki.payments).await;
        let (parts, tunnel) = h2_connect(&h2, &target).await;
        assert_eq!(parts.status, 200, "payments pod CONNECT: {parts:?}");
        let mut tunnel = tunnel.expect("a tunnel on 200");
        tunnel.assert_echo(&random_bytes(4096)).await;
        tunnel.assert_half_close().await;
        // The counter gateway_chain.rs relies on: one accepted h2 connection.
        let accepted = wait_sample(
            env.gateway().admin,
            "bauta_connections_total",
            &[("listener", GATEWAY_LISTENER), ("protocol", "h2")],
            Duration::from_secs(3),
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(
            accepted,
            Some(1.0),
            "bauta_connections_total{{listener=mesh,protocol=h2}}"
        );
        assert_eq!(env.gateway_connections_accepted().await, 1.0);

        // The DNS SAN too (what a `[gateway] url` with a name checks).
        let h2 = h2_to_gateway(&env, "gateway.test", &env.pki.payments).await;
        let (parts, tunnel) = h2_connect(&h2, &target).await;
        assert_eq!(parts.status, 200, "as gateway.test: {parts:?}");
        tunnel
            .expect("tunnel")
            .assert_echo(b"verified as gateway.test")
            .await;

        // The gateway's access log names the pod.
        let line = env
            .gateway()
            .wait_access_log(Duration::from_secs(5), "gateway CONNECT", |v| {
                v["kind"] == "connect" && v["status"] == 200
            })
            .await;
        assert_eq!(line["identity"], POD_PAYMENTS, "gateway access log: {line}");

        // Verified, but the policy allows payments only: 403 from the gateway.
        let h2 = h2_to_gateway(&env, "127.0.0.1", &env.pki.web).await;
        let (parts, tunnel) = h2_connect(&h2, &target).await;
        assert_eq!(parts.status, 403, "web pod CONNECT: {parts:?}");
        assert!(tunnel.is_none());
        let ps = ProxyStatus::parse(
            &proxy_status_of(&parts.headers).expect("Proxy-Status on the gateway's 403"),
        );
        assert_eq!(ps.members.len(), 1, "one hop: {ps:?}");
        let (_, gw_member) = ps.expect_member(GATEWAY_NAME, "gateway 403");
        assert_eq!(
            gw_member.param("error"),
            Some("http_request_denied"),
            "{ps:?}"
        );
        let denied = wait_metric(
            env.gateway().admin,
            "bauta_policy_decisions_total",
            &[("verdict", "deny"), ("rule", "default")],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(denied, 1.0, "the web pod denied by the default");

        // No client certificate, or one from a CA the gateway does not
        // trust: refused in the handshake (TLS 1.3: seen at the first read).
        for (what, cert) in [
            ("no certificate", None),
            ("another CA", Some(&env.pki.stranger)),
        ] {
            let refused = match env
                .pki
                .tls_to_gateway(env.gateway_listener(), "127.0.0.1", cert, &[b"h2"])
                .await
            {
                Err(_) => true,
                Ok(mut tls) => {
                    let mut buf = [0u8; 64];
                    matches!(
                        tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await,
                        Ok(Err(_) | Ok(0))
                    )
                }
            };
            assert!(refused, "{what}: the gateway must refuse the handshake");
        }
        assert_eq!(
            echo.accepted(),
            2,
            "only the payments tunnels reached the target"
        );

        // QUIC (h3, for the sidecar's later `protocols = ["h3", "h2"]`): the
        // handshake needs the pod certificate too.
        let quic = |cert: Option<&ClientCert>| {
            let cfg = quic_client_config_with_cert(&env.pki.gateway, cert.map(ClientCert::pair));
            let addr = env.gateway_listener();
            async move {
                let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr"))
                    .expect("QUIC client endpoint");
                let conn = endpoint
                    .connect_with(cfg, addr, "gateway.test")
                    .expect("start QUIC")
                    .await;
                // A refused client certificate shows after the handshake.
                match conn {
                    Ok(c) => tokio::time::timeout(Duration::from_secs(2), c.closed())
                        .await
                        .is_err(),
                    Err(_) => false,
                }
            }
        };
        assert!(
            quic(Some(&env.pki.payments)).await,
            "QUIC with the pod certificate"
        );
        assert!(
            !quic(None).await,
            "QUIC without a client certificate is refused"
        );

        // The sidecar's configuration without [gateway] runs today: it
        // tunnels directly, and its local rule denies port 9.
        let accepted = env.gateway_connections_accepted().await;
        let text = sidecar_toml(&env.pki, None);
        env.start_sidecar_with(&text, false).await;
        let (head, mut s) = connect_h1(env.sidecar_plain(), &target).await;
        assert_eq!(
            head.status, 200,
            "direct CONNECT through the sidecar: {head:?}"
        );
        assert_echo(&mut s, b"direct through the sidecar").await;
        let (head, _) = connect_h1(
            env.sidecar_plain(),
            &format!("127.0.0.1:{SIDECAR_DENIED_PORT}"),
        )
        .await;
        assert_eq!(head.status, 403, "local deny: {head:?}");
        let ps = ProxyStatus::parse(head.proxy_status().expect("Proxy-Status on the local 403"));
        let (_, m) = ps.expect_member(SIDECAR_NAME, "local deny");
        assert_eq!(m.param("error"), Some("http_request_denied"));
        let decided = wait_metric(
            env.sidecar().admin,
            "bauta_policy_decisions_total",
            &[("verdict", "deny"), ("rule", SIDECAR_DENY_RULE)],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(decided, 1.0, "the sidecar's own rule decided");
        let tls = tls_connect(env.sidecar_tls(), &env.pki.app, &[b"h2"]).await;
        let h2 = h2_client(tls).await;
        let (parts, tunnel) = h2_connect(&h2, &target).await;
        assert_eq!(
            parts.status, 200,
            "h2 CONNECT on the sidecar's TLS listener"
        );
        tunnel
            .expect("tunnel")
            .assert_echo(b"h2 to the sidecar")
            .await;
        assert_eq!(
            env.gateway_connections_accepted().await,
            accepted,
            "without [gateway] the sidecar never reaches the gateway"
        );
    })
    .await
}

/// The harness's kill and restart: a tunnel to the gateway ends when it is
/// SIGKILLed (bounded), the gateway comes back on the same port (after
/// connections it accepted, so with their TIME_WAIT), and serves again.
#[tokio::test]
async fn gateway_harness_restart_on_the_same_port() {
    bauta_bin();
    bounded_for(Duration::from_secs(60), async {
        let mut env = GatewayEnv::new();
        let first = env.start_gateway().await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());

        let h2 = h2_to_gateway(&env, "127.0.0.1", &env.pki.payments).await;
        let (parts, tunnel) = h2_connect(&h2, &target).await;
        assert_eq!(parts.status, 200, "CONNECT before the kill: {parts:?}");
        let mut tunnel = tunnel.expect("tunnel");
        tunnel.assert_echo(&random_bytes(1024)).await;

        env.kill_gateway().await;
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = tunnel.recv.data().await {}
        })
        .await;
        assert!(ended.is_ok(), "the tunnel ends when the gateway dies");
        assert!(
            TcpStream::connect(first).await.is_err(),
            "nothing listens on {first} while the gateway is down"
        );

        let again = env.restart_gateway().await;
        assert_eq!(again, first, "same address after the restart");
        let h2 = h2_to_gateway(&env, "127.0.0.1", &env.pki.payments).await;
        let (parts, tunnel) = h2_connect(&h2, &target).await;
        assert_eq!(parts.status, 200, "CONNECT after the restart: {parts:?}");
        tunnel
            .expect("tunnel")
            .assert_echo(&random_bytes(1024))
            .await;
        assert_eq!(
            env.gateway_connections_accepted().await,
            1.0,
            "a fresh process counts from 0"
        );
    })
    .await
}

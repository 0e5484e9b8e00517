//! Sidecar chaining end to end: a sidecar Bauta with `[gateway]` sends
//! everything it would dial to a gateway Bauta over one multiplexed HTTP/3
//! or HTTP/2 connection with mTLS (`bauta_tests::gateway_env`).
//!
//! The traffic tests run twice, `…_h3` with `[gateway] protocols = ["h3"]`
//! and `…_h2` with `["h2"]`; the identity, local-deny, never-started and
//! direct tests run over HTTP/2. Two more run the default race
//! (`["h3", "h2"]`): HTTP/2 wins when nothing answers on the gateway's UDP
//! port, HTTP/3 when the gateway serves it.
//!
//! Apps talk to the sidecar as to any Bauta — curl and a Rust client over
//! HTTP/1.1, the Python `h2` peer and a Rust client over HTTP/2, the aioquic
//! peer over HTTP/3 — and every tunnel, CONNECT-UDP flow and forwarded
//! request must reach its target through the gateway (counted by the
//! gateway's `bauta_requests_total`), all on one gateway connection (the
//! gateway's `bauta_connections_total` grows by exactly 1). The gateway's
//! policy sees the pod's identity; the sidecar's own policy answers first;
//! an unreachable or killed gateway is answered 502/503 naming the sidecar
//! and the next hop, and the sidecar reconnects when the gateway is back.
//!
//! Every wait is bounded; everything is on 127.0.0.1.

use std::time::Duration;

use bauta_tests::gateway_env::*;
use bauta_tests::masque::{
    h2_connect_udp, h2_extended_client, run_masque_client, udp_path, wait_metric, UdpEcho,
};
use bauta_tests::*;
use bytes::Bytes;
use futures_util::future::join_all;
use http::Method;
use tokio::net::TcpStream;

/// Bound for one whole test (two process start-ups, peers in subprocesses).
const LIMIT: Duration = Duration::from_secs(90);

// === tests ===

const H1_TUNNELS: usize = 10;
const H2_TUNNELS: usize = 6;
const CURLS: usize = 2;
const PY_H2: usize = 3;
const AIOQUIC: usize = 3;

/// 24 CONNECT tunnels from four clients on three protocols through the
/// sidecar, 16 of them held open while the other 8 run: payloads intact, every
/// tunnel through the gateway, one gateway connection over `proto`.
async fn chained_connect_from_every_front_shares_one_gateway_connection(proto: Proto) {
    bauta_bin();
    bounded_for(LIMIT, async {
        let (env, before) = start_chain_over(proto, Pod::Payments).await;
        let echo = EchoServer::start().await;
        let origin = Origin::start().await;
        let target = format!("127.0.0.1:{}", echo.port());

        // HTTP/1.1 tunnels (Rust client), opened at once, held open.
        let plain = env.sidecar_plain();
        let mut h1: Vec<TcpStream> = join_all((0..H1_TUNNELS).map(|i| {
            let target = target.clone();
            async move {
                let (head, s) = connect_h1(plain, &target).await;
                assert_eq!(
                    head.status, 200,
                    "HTTP/1.1 CONNECT #{i} through the sidecar: {head:?}"
                );
                s
            }
        }))
        .await;
        join_all(h1.iter_mut().map(|s| async move {
            assert_echo(s, &random_bytes(16 * 1024)).await;
        }))
        .await;

        // HTTP/2 tunnels (Rust client), streams of one app connection, held open.
        let h2 = h2_to_sidecar(&env).await;
        let mut h2_tunnels: Vec<H2Tunnel> = join_all((0..H2_TUNNELS).map(|i| {
            let (h2, target) = (h2.clone(), target.clone());
            async move {
                let (parts, t) = h2_connect(&h2, &target).await;
                assert_eq!(
                    parts.status, 200,
                    "HTTP/2 CONNECT #{i} through the sidecar: {parts:?}"
                );
                t.expect("a tunnel on 200")
            }
        }))
        .await;
        join_all(h2_tunnels.iter_mut().map(|t| async move {
            t.assert_echo(&random_bytes(16 * 1024)).await;
        }))
        .await;

        // While those 16 are open: curl (CONNECT, then an HTTP request in the
        // tunnel), the Python h2 peer and the aioquic peer, all at once.
        let proxy_url = format!("http://{plain}");
        let curls = join_all((0..CURLS).map(|i| {
            let (proxy_url, url) = (proxy_url.clone(), origin.url(&format!("/curl/{i}")));
            async move {
                let body = random_hex(2048);
                let out = curl(&["-p", "-x", &proxy_url, "--data-binary", &body, &url]).await;
                assert_eq!(
                    curl_body(&out, &format!("curl -p #{i}")),
                    body,
                    "curl #{i}: the POST body echoed by the origin, through the chained tunnel"
                );
            }
        }));
        let pys = join_all((0..PY_H2).map(|i| {
            let (env, target) = (&env, target.clone());
            async move {
                let msg = random_hex(1024);
                let v = python_h2_connect(env, &target, &msg).await;
                assert_eq!(v["status"], 200, "Python h2 CONNECT #{i}: {v}");
                assert_eq!(
                    v["received"].as_str(),
                    Some(format!("{msg}{}", String::from_utf8_lossy(ECHO_EOF_REPLY)).as_str()),
                    "Python h2 #{i}: its bytes echoed, then the echo's reply to END_STREAM: {v}"
                );
                assert_eq!(
                    v["ended"], true,
                    "Python h2 #{i}: the stream ended cleanly: {v}"
                );
            }
        }));
        let quics = join_all((0..AIOQUIC).map(|i| {
            let env = &env;
            let port = echo.port();
            async move {
                let msg = random_hex(1024);
                let run = aioquic_connect(env, port, &msg).await;
                assert_eq!(
                    run.str("status"),
                    Some("200"),
                    "aioquic CONNECT #{i}: {run:?}"
                );
                let got = run.str("echo").unwrap_or_default();
                assert!(
                    got == msg
                        || got == format!("{msg}{}", String::from_utf8_lossy(ECHO_EOF_REPLY)),
                    "aioquic #{i}: its bytes echoed through the HTTP/3 tunnel: {run:?}"
                );
            }
        }));
        tokio::join!(curls, pys, quics);

        // The held tunnels are still intact; then each is half-closed.
        join_all(h1.iter_mut().map(|s| async move {
            assert_echo(s, &random_bytes(8 * 1024)).await;
            assert_half_close(s).await;
        }))
        .await;
        join_all(h2_tunnels.iter_mut().map(|t| async move {
            t.assert_echo(&random_bytes(8 * 1024)).await;
            t.assert_half_close().await;
        }))
        .await;

        assert_eq!(
            echo.accepted(),
            H1_TUNNELS + H2_TUNNELS + PY_H2 + AIOQUIC,
            "one target connection per tunnel"
        );
        assert_eq!(
            origin.connections(),
            CURLS,
            "one origin connection per curl tunnel"
        );
        let total = (H1_TUNNELS + H2_TUNNELS + CURLS + PY_H2 + AIOQUIC) as f64;
        assert_gateway_requests(
            &env,
            &[
                ("listener", GATEWAY_LISTENER),
                ("protocol", proto.as_str()),
                ("kind", "connect"),
                ("outcome", "ok"),
            ],
            total,
            "every CONNECT, whatever its front at the sidecar",
        )
        .await;
        assert_one_gateway_connection_over(&env, before, proto, "24 CONNECT tunnels").await;
    })
    .await
}

bauta_tests::over_h3_and_h2!(chained_connect_from_every_front_shares_one_gateway_connection);

/// CONNECT-UDP through the sidecar: aioquic with QUIC datagrams, aioquic
/// without the datagram setting (capsules on the request stream), and a Rust
/// HTTP/2 client (capsules), at once: payloads intact, one gateway
/// connection over `proto`.
///
/// Over HTTP/3 the sidecar relays every flow to the gateway as QUIC
/// datagrams, whatever the client used; over HTTP/2 as capsules. Both
/// processes' `bauta_http_datagrams_total` say so: the sidecar's gateway
/// leg and the gateway's client leg.
async fn chained_connect_udp_datagrams_and_capsules_share_one_gateway_connection(proto: Proto) {
    bauta_bin();
    bounded_for(LIMIT, async {
        let (env, before) = start_chain_over(proto, Pod::Payments).await;
        let udp = UdpEcho::start().await;
        let port = udp.port().to_string();
        const COUNT: usize = 10;
        let count = COUNT.to_string();

        let datagram_args = [
            "--target-host",
            "127.0.0.1",
            "--target-port",
            &port,
            "--count",
            &count,
        ];
        let capsule_args = [
            "--no-datagram-setting",
            "--target-host",
            "127.0.0.1",
            "--target-port",
            &port,
            "--count",
            &count,
        ];
        let datagrams = run_masque_client(env.sidecar_tls(), &env.pki.app, "udp", &datagram_args);
        let capsules = run_masque_client(env.sidecar_tls(), &env.pki.app, "udp", &capsule_args);
        let h2 = async {
            let client = h2_extended_client(env.sidecar_tls(), &env.pki.app).await;
            let authority = format!("127.0.0.1:{}", env.sidecar_tls().port());
            let (parts, stream) =
                h2_connect_udp(&client, &authority, &udp_path("127.0.0.1", udp.port())).await;
            assert_eq!(
                parts.status, 200,
                "HTTP/2 CONNECT-UDP through the sidecar: {parts:?}"
            );
            let mut stream = stream.expect("a CONNECT-UDP stream on 200");
            for _ in 0..COUNT {
                stream.assert_echo(&random_bytes(512)).await;
            }
        };
        let (datagrams, capsules, ()) = tokio::join!(datagrams, capsules, h2);

        assert_eq!(
            datagrams.str("status"),
            Some("200"),
            "aioquic CONNECT-UDP: {datagrams:?}"
        );
        assert_eq!(
            datagrams.u64("echoed"),
            Some(COUNT as u64),
            "aioquic: every QUIC datagram echoed intact: {datagrams:?}"
        );
        assert_eq!(
            capsules.str("status"),
            Some("200"),
            "aioquic capsules: {capsules:?}"
        );
        assert_eq!(
            capsules.u64("echoed"),
            Some(COUNT as u64),
            "aioquic without SETTINGS_H3_DATAGRAM: every capsule echoed intact: {capsules:?}"
        );
        assert_eq!(
            capsules.u64("quic_datagrams_unread"),
            Some(0),
            "no QUIC datagram to a client that did not ask for them: {capsules:?}"
        );
        assert_eq!(
            udp.received(),
            3 * COUNT,
            "every datagram reached the UDP echo"
        );
        assert_gateway_requests(
            &env,
            &[
                ("listener", GATEWAY_LISTENER),
                ("protocol", proto.as_str()),
                ("kind", "connect-udp"),
                ("outcome", "ok"),
            ],
            3.0,
            "every CONNECT-UDP went through the gateway",
        )
        .await;
        let relayed = GatewayEnv::wait_metric_on(
            env.gateway().admin,
            "bauta_udp_datagrams_total",
            &[("direction", "upstream")],
            SETTLE,
            |v| v >= (3 * COUNT) as f64,
        )
        .await;
        assert_eq!(
            relayed,
            Some((3 * COUNT) as f64),
            "the gateway relayed every datagram to the target (bauta_udp_datagrams_total{{direction=\"upstream\"}})"
        );
        assert_carriage(&env, proto, COUNT).await;
        assert_one_gateway_connection_over(&env, before, proto, "three CONNECT-UDP flows").await;
    })
    .await
}

/// How the chained flows' datagrams travelled between sidecar and gateway,
/// seen from both ends: over HTTP/3 as QUIC datagrams only (not one
/// capsule), over HTTP/2 as capsules. Over HTTP/2 the HTTP/2 client's
/// flow, capsules on both legs, passes as a byte stream, unparsed and
/// uncounted by the sidecar: it counts the two flows from its HTTP/3 front
/// (`count` datagrams each, each way).
async fn assert_carriage(env: &GatewayEnv, proto: Proto, count: usize) {
    let series = |leg: &'static str, direction: &'static str, carriage: &'static str| {
        [
            ("leg", leg),
            ("direction", direction),
            ("carriage", carriage),
        ]
    };
    let (used, unused, sidecar_flows) = match proto {
        Proto::H3 => ("quic", "capsule", 3),
        Proto::H2 => ("capsule", "quic", 2),
    };
    let all = (3 * count) as f64;
    let on_gateway = GatewayEnv::wait_metric_on(
        env.gateway().admin,
        "bauta_http_datagrams_total",
        &series("client", "upstream", used),
        SETTLE,
        |v| v >= all,
    )
    .await;
    assert_eq!(
        on_gateway,
        Some(all),
        "{proto:?}: the gateway received every datagram from the sidecar as {used}"
    );
    for (direction, n) in [
        ("upstream", sidecar_flows * count),
        ("downstream", sidecar_flows * count),
    ] {
        assert_eq!(
            env.sidecar_metric(
                "bauta_http_datagrams_total",
                &series("gateway", direction, used)
            )
            .await,
            Some(n as f64),
            "{proto:?}: the sidecar's gateway leg carried {direction} datagrams as {used}"
        );
        assert_eq!(
            env.sidecar_metric(
                "bauta_http_datagrams_total",
                &series("gateway", direction, unused)
            )
            .await,
            Some(0.0),
            "{proto:?}: not one {direction} datagram went to the gateway as {unused}"
        );
        assert_eq!(
            env.gateway_metric(
                "bauta_http_datagrams_total",
                &series("client", direction, unused)
            )
            .await,
            Some(0.0),
            "{proto:?}: the gateway saw no {direction} {unused} from the sidecar"
        );
    }
}

bauta_tests::over_h3_and_h2!(
    chained_connect_udp_datagrams_and_capsules_share_one_gateway_connection
);

/// `http://` forwarding through the sidecar: GET and POST (64 KiB body) from a
/// Rust HTTP/1.1 client, GET from curl; the origin sees each request, the
/// body intact; one gateway connection over `proto`.
async fn chained_http_forwarding_get_and_post(proto: Proto) {
    bauta_bin();
    bounded_for(LIMIT, async {
        let (env, before) = start_chain_over(proto, Pod::Payments).await;
        let origin = Origin::start().await;

        let s = TcpStream::connect(env.sidecar_plain())
            .await
            .expect("connect to the sidecar");
        let mut client = h1_client(s).await;
        let get_path = format!("/get-{}", random_hex(8));
        let (parts, body) = h1_send(
            &mut client,
            absolute(Method::GET, &origin.url(&get_path), Bytes::new()),
        )
        .await;
        assert_eq!(parts.status, 200, "forwarded GET: {parts:?}");
        assert_eq!(
            body,
            format!("origin: GET {get_path}\n"),
            "forwarded GET body"
        );
        assert_eq!(
            parts.headers.get("x-origin").map(|v| v.as_bytes()),
            Some(&b"yes"[..]),
            "the origin's answer: {parts:?}"
        );

        let payload = Bytes::from(random_hex(32 * 1024));
        let post_path = format!("/post-{}", random_hex(8));
        let (parts, body) = h1_send(
            &mut client,
            absolute(Method::POST, &origin.url(&post_path), payload.clone()),
        )
        .await;
        assert_eq!(parts.status, 200, "forwarded POST: {parts:?}");
        assert!(
            body == payload,
            "the POST body echoed intact ({} of {} bytes)",
            body.len(),
            payload.len()
        );

        let curl_path = format!("/curl-{}", random_hex(8));
        let out = curl(&[
            "-x",
            &format!("http://{}", env.sidecar_plain()),
            &origin.url(&curl_path),
        ])
        .await;
        assert_eq!(
            curl_body(&out, "curl -x (forward)"),
            format!("origin: GET {curl_path}\n")
        );

        let seen = origin.seen();
        for (method, path) in [
            (Method::GET, &get_path),
            (Method::POST, &post_path),
            (Method::GET, &curl_path),
        ] {
            assert!(
                seen.iter().any(|r| r.method == method && r.uri == *path),
                "the origin saw {method} {path} in origin-form: {seen:?}"
            );
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_gateway_requests(
            &env,
            &[
                ("listener", GATEWAY_LISTENER),
                ("protocol", proto.as_str()),
                ("kind", "forward"),
                ("outcome", "ok"),
            ],
            3.0,
            "every forwarded request went through the gateway",
        )
        .await;
        assert_one_gateway_connection_over(&env, before, proto, "three forwarded requests").await;
    })
    .await
}

bauta_tests::over_h3_and_h2!(chained_http_forwarding_get_and_post);

/// The gateway's policy sees the pod's certificate: a sidecar presenting
/// `spiffe://corp/web` is refused by the gateway (403) on every front, with
/// the gateway's Proxy-Status member first and the sidecar's after it.
#[tokio::test]
async fn gateway_policy_sees_the_pod_identity() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let (env, _) = start_chain(Pod::Web).await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());

        let (head, _) = connect_h1(env.sidecar_plain(), &target).await;
        assert_eq!(
            head.status, 403,
            "HTTP/1.1 CONNECT as the web pod: {head:?}"
        );
        assert_gateway_then_sidecar(
            &env,
            head.proxy_status(),
            403,
            "http_request_denied",
            "HTTP/1.1",
        );

        let h2 = h2_to_sidecar(&env).await;
        let (parts, tunnel) = h2_connect(&h2, &target).await;
        assert_eq!(
            parts.status, 403,
            "HTTP/2 CONNECT as the web pod: {parts:?}"
        );
        assert!(tunnel.is_none());
        let ps = proxy_status_of(&parts.headers);
        assert_gateway_then_sidecar(&env, ps.as_deref(), 403, "http_request_denied", "HTTP/2");

        let run = run_masque_client(
            env.sidecar_tls(),
            &env.pki.app,
            "raw",
            &[
                "--header",
                ":method=CONNECT",
                "--header",
                &format!(":authority={target}"),
            ],
        )
        .await;
        assert_eq!(
            run.str("status"),
            Some("403"),
            "HTTP/3 CONNECT as the web pod: {run:?}"
        );
        assert_gateway_then_sidecar(
            &env,
            run.str("proxy_status"),
            403,
            "http_request_denied",
            "HTTP/3",
        );

        assert_eq!(
            echo.accepted(),
            0,
            "a denied CONNECT never reaches the target"
        );
        // The gateway decided on the pod's identity (its access log says whose).
        let line = env
            .gateway()
            .wait_access_log(SETTLE, "the gateway's line for the web pod", |v| {
                v["kind"] == "connect"
            })
            .await;
        assert_eq!(line["identity"], POD_WEB, "gateway access log: {line}");
        assert_eq!(line["status"], 403, "gateway access log: {line}");
    })
    .await
}

/// The sidecar's own policy answers first: a CONNECT to its denied port is
/// refused with the sidecar's 403 alone, and the gateway sees nothing.
#[tokio::test]
async fn sidecar_local_deny_never_reaches_the_gateway() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let (env, _) = start_chain(Pod::Payments).await;
        let echo = EchoServer::start().await;

        // One allowed tunnel first, so the gateway connection exists.
        let (head, mut s) =
            connect_h1(env.sidecar_plain(), &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(
            head.status, 200,
            "allowed CONNECT through the sidecar: {head:?}"
        );
        assert_echo(&mut s, &random_bytes(1024)).await;
        assert_half_close(&mut s).await;
        assert_gateway_requests(&env, &[("kind", "connect")], 1.0, "the allowed tunnel").await;
        let conns = env.gateway_connections_accepted().await;
        let requests = env.gateway_requests(&[]).await;

        let denied = format!("127.0.0.1:{SIDECAR_DENIED_PORT}");
        let (head, _) = connect_h1(env.sidecar_plain(), &denied).await;
        assert_eq!(
            head.status, 403,
            "HTTP/1.1 CONNECT to the locally denied port: {head:?}"
        );
        assert_sidecar_alone(
            &env,
            head.proxy_status(),
            &["http_request_denied"],
            false,
            "local deny, HTTP/1.1",
        );
        let h2 = h2_to_sidecar(&env).await;
        let (parts, _) = h2_connect(&h2, &denied).await;
        assert_eq!(
            parts.status, 403,
            "HTTP/2 CONNECT to the locally denied port: {parts:?}"
        );
        let ps = proxy_status_of(&parts.headers);
        assert_sidecar_alone(
            &env,
            ps.as_deref(),
            &["http_request_denied"],
            false,
            "local deny, HTTP/2",
        );

        let decided = wait_metric(
            env.sidecar().admin,
            "bauta_policy_decisions_total",
            &[("verdict", "deny"), ("rule", SIDECAR_DENY_RULE)],
            |v| v >= 2.0,
        )
        .await;
        assert_eq!(decided, 2.0, "the sidecar's own rule decided both");
        assert_eq!(
            env.gateway_connections_accepted().await,
            conns,
            "no new gateway connection"
        );
        assert_eq!(
            env.gateway_requests(&[]).await,
            requests,
            "the gateway saw no request"
        );
    })
    .await
}

/// No gateway listening: CONNECT (HTTP/1.1, HTTP/2) and forwarding through
/// the sidecar answer 502 (or 503 while a circuit breaker is open) with the
/// sidecar's Proxy-Status naming the next hop; the sidecar stays up, and
/// connects once the gateway starts.
#[tokio::test]
async fn gateway_never_started_answers_502_naming_the_sidecar_and_next_hop() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let mut env = GatewayEnv::new();
        env.reserve_gateway_addr();
        env.start_sidecar(Pod::Payments).await;
        let echo = EchoServer::start().await;
        let origin = Origin::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let errors = ["connection_refused", "destination_unavailable"];

        for i in 0..3 {
            let (head, _) = connect_h1(env.sidecar_plain(), &target).await;
            assert!(
                matches!(head.status, 502 | 503),
                "HTTP/1.1 CONNECT #{i} with the gateway down: 502 or 503: {head:?}"
            );
            assert_sidecar_alone(
                &env,
                head.proxy_status(),
                &errors,
                true,
                "gateway down, HTTP/1.1",
            );
        }
        let h2 = h2_to_sidecar(&env).await;
        let (parts, _) = h2_connect(&h2, &target).await;
        assert!(
            matches!(parts.status.as_u16(), 502 | 503),
            "HTTP/2 CONNECT, gateway down: {parts:?}"
        );
        let ps = proxy_status_of(&parts.headers);
        assert_sidecar_alone(&env, ps.as_deref(), &errors, true, "gateway down, HTTP/2");

        let s = TcpStream::connect(env.sidecar_plain())
            .await
            .expect("connect to the sidecar");
        let mut client = h1_client(s).await;
        let (parts, _) = h1_send(&mut client, get_absolute(&origin.url("/down"))).await;
        assert!(
            matches!(parts.status.as_u16(), 502 | 503),
            "forwarded GET, gateway down: {parts:?}"
        );
        let ps = proxy_status_of(&parts.headers);
        assert_sidecar_alone(
            &env,
            ps.as_deref(),
            &errors,
            true,
            "gateway down, forwarding",
        );

        assert_eq!(echo.accepted(), 0, "nothing dialled directly");
        assert_eq!(origin.connections(), 0, "nothing forwarded directly");
        assert!(
            env.sidecar_mut().try_exit().is_none(),
            "the sidecar is still running"
        );
        let (status, _) = http_get(env.sidecar().admin, "/healthz").await;
        assert_eq!(status, 200, "the sidecar's /healthz");
        let errors_total = GatewayEnv::wait_metric_on(
            env.sidecar().admin,
            "bauta_gateway_errors_total",
            &[],
            SETTLE,
            |v| v >= 1.0,
        )
        .await;
        assert!(
            errors_total.is_some_and(|v| v >= 1.0),
            "bauta_gateway_errors_total counts the failed gateway connections: {errors_total:?}"
        );

        // The gateway comes up on that address: the sidecar connects and
        // tunnels work, through the gateway.
        env.start_gateway().await;
        let mut tunnel =
            tunnel_once_reconnected(&env, &target, "after the gateway's first start").await;
        assert_echo(&mut tunnel, &random_bytes(4096)).await;
        assert_half_close(&mut tunnel).await;
        assert_gateway_requests(
            &env,
            &[
                ("listener", GATEWAY_LISTENER),
                ("kind", "connect"),
                ("outcome", "ok"),
            ],
            1.0,
            "the tunnel once the gateway is up",
        )
        .await;
    })
    .await
}

/// SIGKILL the gateway under open tunnels: they end (no hang), new CONNECTs
/// are answered 502/503 by the sidecar, which stays up; the gateway comes
/// back on the same port and new tunnels work again once the sidecar has
/// reconnected over `proto`; the failure is counted in
/// `bauta_gateway_errors_total`. Over HTTP/3 the dead gateway is noticed
/// when the restarted one resets the old connection (stateless reset), so
/// the tunnels must have ended by then, not before.
async fn gateway_killed_mid_traffic_then_restarted(proto: Proto) {
    bauta_bin();
    bounded_for(LIMIT, async {
        let (mut env, _) = start_chain_over(proto, Pod::Payments).await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());

        let mut h1 = Vec::new();
        for i in 0..4 {
            let (head, mut s) = connect_h1(env.sidecar_plain(), &target).await;
            assert_eq!(head.status, 200, "HTTP/1.1 CONNECT #{i}: {head:?}");
            assert_echo(&mut s, &random_bytes(4096)).await;
            h1.push(s);
        }
        let h2 = h2_to_sidecar(&env).await;
        let mut h2_tunnels = Vec::new();
        for i in 0..3 {
            let (parts, t) = h2_connect(&h2, &target).await;
            assert_eq!(parts.status, 200, "HTTP/2 CONNECT #{i}: {parts:?}");
            let mut t = t.expect("tunnel");
            t.assert_echo(&random_bytes(4096)).await;
            h2_tunnels.push(t);
        }

        env.kill_gateway().await;

        if proto == Proto::H2 {
            // Over TCP the kernel answers for the dead gateway (RST): the
            // sidecar knows at once.
            assert_old_tunnels_ended(&mut h1, &mut h2_tunnels, "after the gateway died").await;

            // Gateway down: the sidecar answers for it, and stays up.
            let (head, _) = connect_h1(env.sidecar_plain(), &target).await;
            assert!(
                matches!(head.status, 502 | 503),
                "CONNECT while the gateway is down: {head:?}"
            );
            assert_sidecar_alone(
                &env,
                head.proxy_status(),
                &["connection_refused", "destination_unavailable"],
                true,
                "CONNECT while the gateway is down",
            );
        }
        // Over QUIC nothing tells the sidecar that the gateway died (no RST;
        // ICMP is not acted on) until its idle timeout, so the steps above
        // are for HTTP/2 only. What does tell it is the restarted gateway:
        // its listener's stateless-reset key is derived from its TLS key, so
        // the first packet the sidecar sends on the old connection is
        // answered with a stateless reset (RFC 9000 §10.3) it can verify.
        assert!(
            env.sidecar_mut().try_exit().is_none(),
            "the sidecar survived the gateway"
        );

        // Back on the same port: retry while the sidecar reconnects (backoff).
        env.restart_gateway().await;
        let mut tunnel =
            tunnel_once_reconnected(&env, &target, "after the gateway's restart").await;
        assert_echo(&mut tunnel, &random_bytes(16 * 1024)).await;
        assert_half_close(&mut tunnel).await;
        if proto == Proto::H3 {
            assert_old_tunnels_ended(
                &mut h1,
                &mut h2_tunnels,
                "after the restarted gateway reset the old connection",
            )
            .await;
        }
        // The app's HTTP/2 connection to the sidecar outlived the gateway too.
        let (parts, t) = h2_connect(&h2, &target).await;
        assert_eq!(
            parts.status, 200,
            "HTTP/2 CONNECT on the same app connection after the restart: {parts:?}"
        );
        t.expect("tunnel").assert_echo(&random_bytes(4096)).await;

        let open = GatewayEnv::wait_metric_on(
            env.sidecar().admin,
            "bauta_gateway_connections",
            &[("protocol", proto.as_str()), ("state", "open")],
            SETTLE,
            |v| v == 1.0,
        )
        .await;
        assert_eq!(
            open,
            Some(1.0),
            "one open {} gateway connection again",
            proto.as_str()
        );
        let errors_total = env.sidecar_metric("bauta_gateway_errors_total", &[]).await;
        assert!(
            errors_total.is_some_and(|v| v >= 1.0),
            "bauta_gateway_errors_total counted the lost gateway: {errors_total:?}"
        );
        assert!(
            env.gateway_connections_over(proto.as_str()).await >= 1.0,
            "the restarted gateway accepted the sidecar's new {} connection",
            proto.as_str()
        );
    })
    .await
}

/// The tunnels opened before the gateway died have ended (each within
/// [`TUNNEL_END`]).
async fn assert_old_tunnels_ended(h1: &mut [TcpStream], h2: &mut [H2Tunnel], when: &str) {
    for (i, s) in h1.iter_mut().enumerate() {
        assert!(
            ends_within(s, TUNNEL_END).await,
            "HTTP/1.1 tunnel #{i} still open {TUNNEL_END:?} {when}"
        );
    }
    for (i, t) in h2.iter_mut().enumerate() {
        assert!(
            h2_ends_within(t, TUNNEL_END).await,
            "HTTP/2 tunnel #{i} still open {TUNNEL_END:?} {when}"
        );
    }
}

bauta_tests::over_h3_and_h2!(gateway_killed_mid_traffic_then_restarted);

/// Metrics and the access log say what was chained: one open gateway
/// connection over `proto` (none over the other), the streams it carries by
/// kind, the connect-time histogram; `"via":"gateway"` on every chained
/// access-log line.
async fn sidecar_metrics_and_access_log_mark_chained_requests(proto: Proto) {
    bauta_bin();
    bounded_for(LIMIT, async {
        let (env, _) = start_chain_over(proto, Pod::Payments).await;
        let echo = EchoServer::start().await;
        let origin = Origin::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        let admin = env.sidecar().admin;

        // Every series of the new families' closed label sets from the start.
        let text = env.sidecar_metrics().await;
        for kind in ["connect", "connect-udp", "http"] {
            assert!(
                bauta_tests::masque::metric_opt(
                    &text,
                    "bauta_gateway_streams_active",
                    &[("kind", kind)]
                )
                .is_some(),
                "bauta_gateway_streams_active{{kind=\"{kind}\"}} is exported from the start:\n{}",
                bauta_tests::masque::family_lines(&text, "bauta_gateway_")
            );
        }
        for carriage in ["quic", "capsule"] {
            assert_eq!(
                bauta_tests::masque::metric_opt(
                    &text,
                    "bauta_http_datagrams_total",
                    &[("leg", "gateway"), ("carriage", carriage)]
                ),
                Some(0.0),
                "bauta_http_datagrams_total{{leg=\"gateway\",carriage=\"{carriage}\"}} is exported from the start"
            );
        }
        assert!(
            bauta_tests::masque::metric_opt(&text, "bauta_gateway_errors_total", &[]).is_some(),
            "bauta_gateway_errors_total is exported from the start:\n{}",
            bauta_tests::masque::family_lines(&text, "bauta_gateway_")
        );

        let mut tunnels = Vec::new();
        for i in 0..3 {
            let (head, mut s) = connect_h1(env.sidecar_plain(), &target).await;
            assert_eq!(head.status, 200, "CONNECT #{i}: {head:?}");
            assert_echo(&mut s, &random_bytes(1024)).await;
            tunnels.push(s);
        }
        let open = wait_sample(
            admin,
            "bauta_gateway_connections",
            &[("protocol", proto.as_str()), ("state", "open")],
            SETTLE,
            |v| v == 1.0,
        )
        .await;
        assert_eq!(
            open,
            Some(1.0),
            "bauta_gateway_connections{{protocol=\"{}\",state=\"open\"}}",
            proto.as_str()
        );
        let other = env
            .sidecar_metric(
                "bauta_gateway_connections",
                &[("protocol", proto.other().as_str())],
            )
            .await;
        assert!(
            other.is_none_or(|v| v == 0.0),
            "no {} gateway connection with `protocols = {}`: {other:?}",
            proto.other().as_str(),
            proto.toml()
        );
        let streams = wait_sample(
            admin,
            "bauta_gateway_streams_active",
            &[("kind", "connect")],
            SETTLE,
            |v| v == 3.0,
        )
        .await;
        assert_eq!(
            streams,
            Some(3.0),
            "three CONNECT streams on the gateway connection"
        );
        for s in &mut tunnels {
            assert_half_close(s).await;
        }
        let streams = wait_sample(
            admin,
            "bauta_gateway_streams_active",
            &[("kind", "connect")],
            SETTLE,
            |v| v == 0.0,
        )
        .await;
        assert_eq!(
            streams,
            Some(0.0),
            "the streams given back when the tunnels closed"
        );

        let s = TcpStream::connect(env.sidecar_plain())
            .await
            .expect("connect to the sidecar");
        let mut client = h1_client(s).await;
        let (parts, _) = h1_send(&mut client, get_absolute(&origin.url("/via"))).await;
        assert_eq!(parts.status, 200, "forwarded GET: {parts:?}");
        let streams = wait_sample(
            admin,
            "bauta_gateway_streams_active",
            &[("kind", "http")],
            SETTLE,
            |v| v == 0.0,
        )
        .await;
        assert_eq!(
            streams,
            Some(0.0),
            "bauta_gateway_streams_active{{kind=\"http\"}} back to 0"
        );

        let connects = env
            .sidecar_metric("bauta_gateway_connect_seconds_count", &[])
            .await;
        assert!(
            connects.is_some_and(|v| v >= 1.0),
            "bauta_gateway_connect_seconds observed the gateway connection: {connects:?}\n{}",
            bauta_tests::masque::family_lines(
                &env.sidecar_metrics().await,
                "bauta_gateway_connect_seconds"
            )
        );

        let sidecar = env.sidecar();
        sidecar
            .wait_access_log(SETTLE, "the forwarded GET", |v| v["kind"] == "forward")
            .await;
        // One line per tunnel, written when it closed.
        let deadline = tokio::time::Instant::now() + SETTLE;
        let connects = loop {
            let lines: Vec<_> = sidecar
                .access_log()
                .into_iter()
                .filter(|v| v["kind"] == "connect")
                .collect();
            if lines.len() >= 3 || tokio::time::Instant::now() >= deadline {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            connects.len(),
            3,
            "one access-log line per tunnel: {connects:?}"
        );
        for line in connects.iter().chain(
            sidecar
                .access_log()
                .iter()
                .filter(|v| v["kind"] == "forward"),
        ) {
            assert_eq!(
                line["via"], "gateway",
                "a chained request's access-log line: {line}"
            );
        }
    })
    .await
}

bauta_tests::over_h3_and_h2!(sidecar_metrics_and_access_log_mark_chained_requests);

/// Without `[gateway]` the same sidecar configuration dials directly, and its
/// access-log lines say so: `"via":"direct"`.
#[tokio::test]
async fn without_gateway_the_access_log_says_via_direct() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let mut env = GatewayEnv::new();
        let text = sidecar_toml(&env.pki, None);
        env.start_sidecar_with(&text, false).await;
        let echo = EchoServer::start().await;
        let (head, mut s) =
            connect_h1(env.sidecar_plain(), &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(head.status, 200, "direct CONNECT: {head:?}");
        assert_echo(&mut s, &random_bytes(1024)).await;
        assert_half_close(&mut s).await;
        let line = env
            .sidecar()
            .wait_access_log(SETTLE, "the direct tunnel", |v| v["kind"] == "connect")
            .await;
        assert_eq!(
            line["via"], "direct",
            "a direct tunnel's access-log line: {line}"
        );
    })
    .await
}

// === the protocol race: `protocols = ["h3", "h2"]` ===

const RACE_H1: usize = 8;
const RACE_H2: usize = 6;

/// A burst of CONNECT tunnels through the sidecar, all at once: `RACE_H1`
/// from HTTP/1.1 clients (one connection each) and `RACE_H2` streams of one
/// HTTP/2 app connection; each echoes a payload intact and half-closes. The
/// first of them makes the sidecar open its gateway connection (the race).
async fn connect_burst(env: &GatewayEnv, echo: &EchoServer, what: &str) {
    let target = format!("127.0.0.1:{}", echo.port());
    let plain = env.sidecar_plain();
    let h2 = h2_to_sidecar(env).await;
    let h1s = join_all((0..RACE_H1).map(|i| {
        let target = target.clone();
        async move {
            let (head, mut s) = connect_h1(plain, &target).await;
            assert_eq!(head.status, 200, "{what}: HTTP/1.1 CONNECT #{i}: {head:?}");
            assert_echo(&mut s, &random_bytes(8 * 1024)).await;
            assert_half_close(&mut s).await;
        }
    }));
    let h2s = join_all((0..RACE_H2).map(|i| {
        let (h2, target) = (h2.clone(), target.clone());
        async move {
            let (parts, t) = h2_connect(&h2, &target).await;
            assert_eq!(parts.status, 200, "{what}: HTTP/2 CONNECT #{i}: {parts:?}");
            let mut t = t.expect("a tunnel on 200");
            t.assert_echo(&random_bytes(8 * 1024)).await;
            t.assert_half_close().await;
        }
    }));
    tokio::join!(h1s, h2s);
}

/// The gateway's listener without h3 (nothing answers on its UDP port: UDP
/// to the gateway is blocked, as far as the sidecar can tell) and the
/// sidecar with the default race, `protocols = ["h3", "h2"]`: a burst of
/// CONNECT tunnels from HTTP/1.1 and HTTP/2 apps all work, over the one
/// HTTP/2 connection that won; no HTTP/3 connection is open or was accepted.
#[tokio::test]
async fn h2_fallback_when_udp_to_the_gateway_is_blocked() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let mut env = GatewayEnv::new();
        env.set_gateway_h3(false);
        env.set_protocols(PROTOCOLS_RACE);
        let gw = env.start_gateway().await;
        // Nothing listens on the gateway's UDP port (we can bind it ourselves).
        drop(std::net::UdpSocket::bind(gw).unwrap_or_else(|e| {
            panic!("the gateway without h3 leaves UDP {gw} free, but binding it failed: {e}")
        }));
        let before = Accepted::read(&env).await;
        env.start_sidecar(Pod::Payments).await;
        let echo = EchoServer::start().await;

        connect_burst(&env, &echo, "UDP blocked, first burst").await;
        connect_burst(&env, &echo, "UDP blocked, second burst").await;
        let total = 2 * (RACE_H1 + RACE_H2);
        assert_eq!(echo.accepted(), total, "one target connection per tunnel");
        assert_gateway_requests(
            &env,
            &[
                ("listener", GATEWAY_LISTENER),
                ("protocol", "h2"),
                ("kind", "connect"),
                ("outcome", "ok"),
            ],
            total as f64,
            "every tunnel went through the gateway over HTTP/2",
        )
        .await;

        let admin = env.sidecar().admin;
        let h2_open = wait_sample(
            admin,
            "bauta_gateway_connections",
            &[("protocol", "h2"), ("state", "open")],
            SETTLE,
            |v| v == 1.0,
        )
        .await;
        assert_eq!(
            h2_open,
            Some(1.0),
            "the sidecar's bauta_gateway_connections{{protocol=\"h2\",state=\"open\"}}:\n{}",
            bauta_tests::masque::family_lines(&env.sidecar_metrics().await, "bauta_gateway_")
        );
        let h3_open = env
            .sidecar_metric(
                "bauta_gateway_connections",
                &[("protocol", "h3"), ("state", "open")],
            )
            .await;
        assert!(
            h3_open.is_none_or(|v| v == 0.0),
            "no HTTP/3 gateway connection is open when nothing answers on UDP: {h3_open:?}"
        );
        assert_one_gateway_connection_over(&env, before, Proto::H2, "UDP blocked").await;
    })
    .await
}

/// The gateway serving h3 and the sidecar with the default race: HTTP/3
/// starts first and wins on loopback; the tunnels work, the open gateway
/// connection is the HTTP/3 one and the gateway accepted exactly one HTTP/3
/// connection (an HTTP/2 attempt started 250 ms into the race may also have
/// reached it, then been dropped).
#[tokio::test]
async fn h3_preferred_when_the_gateway_serves_it() {
    bauta_bin();
    bounded_for(LIMIT, async {
        let mut env = GatewayEnv::new();
        env.set_protocols(PROTOCOLS_RACE);
        env.start_gateway().await;
        let before = Accepted::read(&env).await;
        env.start_sidecar(Pod::Payments).await;
        let echo = EchoServer::start().await;

        connect_burst(&env, &echo, "h3 served, first burst").await;
        connect_burst(&env, &echo, "h3 served, second burst").await;
        let total = 2 * (RACE_H1 + RACE_H2);
        assert_eq!(echo.accepted(), total, "one target connection per tunnel");
        assert_gateway_requests(
            &env,
            &[
                ("listener", GATEWAY_LISTENER),
                ("protocol", "h3"),
                ("kind", "connect"),
                ("outcome", "ok"),
            ],
            total as f64,
            "every tunnel went through the gateway over HTTP/3",
        )
        .await;
        assert_eq!(
            env.gateway_requests(&[("protocol", "h2")]).await,
            0.0,
            "no request to the gateway over HTTP/2"
        );

        let admin = env.sidecar().admin;
        let h3_open = wait_sample(
            admin,
            "bauta_gateway_connections",
            &[("protocol", "h3"), ("state", "open")],
            SETTLE,
            |v| v == 1.0,
        )
        .await;
        assert_eq!(
            h3_open,
            Some(1.0),
            "the sidecar's bauta_gateway_connections{{protocol=\"h3\",state=\"open\"}}:\n{}",
            bauta_tests::masque::family_lines(&env.sidecar_metrics().await, "bauta_gateway_")
        );
        let h2_open = wait_sample(
            admin,
            "bauta_gateway_connections",
            &[("protocol", "h2"), ("state", "open")],
            SETTLE,
            |v| v == 0.0,
        )
        .await;
        assert_eq!(
            h2_open,
            Some(0.0),
            "no HTTP/2 gateway connection stays open once HTTP/3 won"
        );
        let now = Accepted::read(&env).await;
        assert_eq!(
            now.h3 - before.h3,
            1.0,
            "the gateway accepted exactly one HTTP/3 connection (before {before:?}, now {now:?})"
        );
        assert!(
            now.h2 - before.h2 <= 1.0,
            "at most the race's losing HTTP/2 attempt reached the gateway (before {before:?}, now {now:?})"
        );
    })
    .await
}

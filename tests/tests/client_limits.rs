//! Per-client limits (`[limits] per_identity`, `[limits.per_group.NAME]`):
//! concurrent tunnels, CONNECT-UDP flows and new tunnels per second, per
//! identity (a Basic user here) or per address (anonymous clients). Excess
//! is a 429 with `Proxy-Status: …; error=http_request_error` on HTTP/1.1,
//! HTTP/2 and HTTP/3, counted in `bauta_limit_rejections_total{limit}`, and
//! a place comes back when its tunnel ends.

use std::time::Duration;

use bauta_tests::masque::{quic_client_config, start_masque_proxy, udp_path, H3Client, UdpEcho};
use bauta_tests::*;
use http::{Method, Request};

const REJECTIONS: &str = "bauta_limit_rejections_total";

/// Users alice (in group "batch") and bob, and a policy that lets
/// everyone reach loopback.
fn auth_and_policy(dir: &TempDir, limits: &str) -> String {
    let users = dir.path().join("users.txt");
    for (user, pw) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        bauta::auth::passwd::set(&users, user, pw).expect("write a user");
    }
    format!(
        "[auth]\nbasic_file = '{}'\nrequired = false\n\n\
         [policy]\ndefault = \"deny\"\n\n[policy.groups]\nbatch = [\"alice\"]\n\n\
         [[policy.rule]]\nname = \"lab\"\naction = \"allow\"\ncidrs = [\"127.0.0.0/8\"]\n\n\
         {limits}",
        users.display()
    )
}

async fn rejections(admin: std::net::SocketAddr, limit: &str) -> f64 {
    metric_sample(&fetch_metrics(admin).await, REJECTIONS, &[("limit", limit)]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_tunnels_and_flows_per_client_on_every_front() {
    bounded_for(Duration::from_secs(60), async {
        let dir = TempDir::new("client-limits");
        let certs = make_certs();
        let extra = auth_and_policy(
            &dir,
            "[limits]\nper_identity = { tunnels = 2, udp_flows = 1 }\n\n\
             [limits.per_group.batch]\ntunnels = 3\n",
        );
        let proxy = start_masque_proxy(&certs, &extra).await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());

        // Anonymous over HTTP/1.1 (counted by address): two, then 429.
        let (h, mut t1) = connect_h1_with(proxy.plain, &target, "").await;
        assert_eq!(h.status, 200);
        let (h, mut t2) = connect_h1_with(proxy.plain, &target, "").await;
        assert_eq!(h.status, 200);
        let (h, _) = connect_h1_with(proxy.plain, &target, "").await;
        h.assert_error(429, "http_request_error", "HTTP/1.1 third tunnel");
        assert!(
            h.proxy_status()
                .is_some_and(|p| p.contains("too many open tunnels")),
            "{h:?}"
        );
        // The anonymous client's count is shared across fronts: HTTP/2 too.
        let tls = tls_connect(proxy.secure, &certs, &[b"h2"]).await;
        let h2 = h2_client(tls).await;
        let (parts, _) = h2_connect(&h2, &target).await;
        assert_error_parts(
            &parts,
            http::StatusCode::TOO_MANY_REQUESTS,
            "http_request_error",
            "HTTP/2",
        );
        // alice has her own count, raised by her group to three.
        let alice = format!(
            "Proxy-Authorization: {}\r\n",
            basic_credential("alice", "alice-pw")
        );
        let mut held = Vec::new();
        for i in 0..3 {
            let (h, t) = connect_h1_with(proxy.plain, &target, &alice).await;
            assert_eq!(h.status, 200, "alice #{i}");
            held.push(t);
        }
        let (h, _) = connect_h1_with(proxy.plain, &target, &alice).await;
        assert_eq!(h.status, 429, "alice's fourth");
        // bob: the default two, also over HTTP/2.
        let bob = basic_credential("bob", "bob-pw");
        let mut bob_streams = Vec::new();
        for want in [200, 200, 429] {
            let req = Request::builder()
                .method(Method::CONNECT)
                .uri(target.as_str())
                .header("proxy-authorization", bob.as_str())
                .body(())
                .expect("request");
            let mut client = h2.clone().ready().await.expect("h2 ready");
            let (resp, send) = client.send_request(req, false).expect("send");
            let resp = resp.await.expect("HTTP/2 response");
            assert_eq!(resp.status().as_u16(), want, "bob over HTTP/2");
            bob_streams.push((resp, send));
        }
        assert_eq!(rejections(proxy.admin, "tunnels").await, 4.0);

        // A place comes back when its tunnel ends.
        assert_echo(&mut t1, b"first").await;
        drop(t1);
        wait_tunnels(proxy.admin, "connect", 6.0).await;
        let (h, mut t3) = connect_h1_with(proxy.plain, &target, "").await;
        assert_eq!(h.status, 200, "after one closed");
        assert_echo(&mut t3, b"reused place").await;
        assert_echo(&mut t2, b"still open").await;
        drop((t2, t3, held, bob_streams));
        wait_tunnels(proxy.admin, "connect", 0.0).await;

        // CONNECT-UDP over HTTP/3: one flow per client.
        let udp = UdpEcho::start().await;
        let path = udp_path("127.0.0.1", udp.port());
        let mut h3 = H3Client::connect_with(proxy.secure, quic_client_config(&certs)).await;
        let first = h3.connect_udp(&path).await;
        let (resp, _s) = h3
            .extended_connect(&path, &[("capsule-protocol", "?1")])
            .await
            .expect("second CONNECT-UDP");
        assert_eq!(resp.status(), 429, "HTTP/3 second flow");
        assert!(
            proxy_status_of(resp.headers()).is_some_and(|p| p.contains("http_request_error")),
            "{resp:?}"
        );
        assert_eq!(rejections(proxy.admin, "udp_flows").await, 1.0);
        drop(first);
        wait_tunnels(proxy.admin, "connect-udp", 0.0).await;
        let again = h3.connect_udp(&path).await;
        drop(again);
        let requests = metric_sample(
            &proxy.metrics().await,
            "bauta_requests_total",
            &[
                ("listener", "secure"),
                ("protocol", "h3"),
                ("kind", "connect-udp"),
                ("outcome", "limited"),
            ],
        );
        assert_eq!(requests, Some(1.0), "counted as outcome=limited");
        proxy.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn new_tunnels_per_second_is_a_token_bucket() {
    bounded_for(Duration::from_secs(30), async {
        let dir = TempDir::new("client-rate");
        let certs = make_certs();
        let extra = auth_and_policy(&dir, "[limits]\nper_identity = { new_per_s = 1 }\n");
        let proxy = start_masque_proxy(&certs, &extra).await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        // One per second, a burst of one: the first passes, the next at once is refused
        // even though the first is already closed.
        let (h, t) = connect_h1_with(proxy.plain, &target, "").await;
        assert_eq!(h.status, 200);
        drop(t);
        let (h, _) = connect_h1_with(proxy.plain, &target, "").await;
        h.assert_error(429, "http_request_error", "second within the second");
        assert_eq!(rejections(proxy.admin, "new_per_s").await, 1.0);
        // Another client (alice) has her own bucket.
        let alice = format!(
            "Proxy-Authorization: {}\r\n",
            basic_credential("alice", "alice-pw")
        );
        let (h, _) = connect_h1_with(proxy.plain, &target, &alice).await;
        assert_eq!(h.status, 200, "alice's own bucket");
        // A second later the bucket has a token again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (h, _) = connect_h1_with(proxy.plain, &target, "").await;
        assert_eq!(h.status, 200, "refilled");
        proxy.shutdown().await;
    })
    .await
}

#[test]
fn bad_limits_are_refused_at_their_key() {
    let base =
        "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n";
    for (limits, needle) in [
        (
            "[limits]\nper_identity = { tunnels = 0 }\n",
            "limits.per_identity.tunnels",
        ),
        ("[limits]\nper_identity = { tunels = 3 }\n", "unknown field"),
        (
            "[limits.per_group.nope]\ntunnels = 3\n",
            "limits.per_group.nope",
        ),
    ] {
        let text = format!("{base}{limits}");
        let e = bauta::Config::parse(&text, "t.toml", std::path::Path::new(".")).expect_err(limits);
        assert!(e.to_string().contains(needle), "{limits}: {e}");
    }
}

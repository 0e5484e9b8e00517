//! Policy denials (403 `http_request_denied`) and SSRF protection (502
//! `destination_ip_prohibited`) for every odd spelling of a special address.
//! None of the prohibited targets is ever dialled.

use bauta_tests::*;

#[tokio::test]
async fn default_deny_refuses_connect_and_forward() {
    bounded(async {
        let echo = EchoServer::start().await;
        let origin = Origin::start().await;
        let proxy = start_proxy("[policy]\ndefault = \"deny\"\n").await;

        let (head, _) = connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
        head.assert_error(403, "http_request_denied", "CONNECT under default deny");

        let url = origin.url("/x");
        let req = format!("GET {url} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr);
        let (head, _, _) = raw_request(proxy.plain, req.as_bytes()).await;
        head.assert_error(403, "http_request_denied", "forward under default deny");

        assert_eq!(
            echo.accepted(),
            0,
            "denied CONNECT must not reach the target"
        );
        assert_eq!(
            origin.connections(),
            0,
            "denied request must not be forwarded"
        );
    })
    .await
}

#[tokio::test]
async fn deny_rule_refuses_while_allow_rule_admits() {
    bounded(async {
        let echo = EchoServer::start().await;
        let origin = Origin::start().await;
        // First rule denies the origin's port; the second allows loopback.
        let extra = format!(
            r#"
[policy]
default = "deny"

[[policy.rule]]
name = "no-origin"
action = "deny"
ports = [{origin}]

[[policy.rule]]
name = "lab"
action = "allow"
cidrs = ["127.0.0.0/8"]
"#,
            origin = origin.port()
        );
        let proxy = start_proxy(&extra).await;

        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url("/blocked"),
            origin.addr
        );
        let (head, _, _) = raw_request(proxy.plain, req.as_bytes()).await;
        head.assert_error(403, "http_request_denied", "forward hit by deny rule");

        let (head, _) = connect_h1(proxy.plain, &format!("127.0.0.1:{}", origin.port())).await;
        head.assert_error(403, "http_request_denied", "CONNECT hit by deny rule");
        assert_eq!(origin.connections(), 0, "the origin is never contacted");

        let (head, mut s) = connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(head.status, 200, "allowed by the lab rule: {head:?}");
        assert_echo(&mut s, b"allowed").await;
    })
    .await
}

#[tokio::test]
async fn protocol_restricted_rule_allows_connect_only() {
    bounded(async {
        let echo = EchoServer::start().await;
        let origin = Origin::start().await;
        let extra = r#"
[policy]
default = "deny"

[[policy.rule]]
name = "tunnels-only"
action = "allow"
protocols = ["connect"]
cidrs = ["127.0.0.0/8"]
"#;
        let proxy = start_proxy(extra).await;
        let (head, _) = connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(head.status, 200, "{head:?}");
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url("/x"),
            origin.addr
        );
        let (head, _, _) = raw_request(proxy.plain, req.as_bytes()).await;
        head.assert_error(
            403,
            "http_request_denied",
            "forward under a connect-only rule",
        );
        assert_eq!(origin.connections(), 0);
    })
    .await
}

/// Allow-all policy without cidrs: the SSRF guard must still refuse these.
#[tokio::test]
async fn ssrf_every_spelling_of_a_special_address_is_prohibited() {
    bounded(async {
        let echo = EchoServer::start().await;
        let dns = FakeDns::start().await;
        let extra = format!("{}\n[policy]\ndefault = \"allow\"\n", dns.toml());
        let proxy = start_proxy(&extra).await;
        let p = echo.port();
        let targets = [
            format!("127.0.0.1:{p}"),
            format!("2130706433:{p}"),
            format!("0x7f.1:{p}"),
            format!("0177.0.0.1:{p}"),
            format!("127.1:{p}"),
            format!("[::ffff:127.0.0.1]:{p}"),
            format!("[::1]:{p}"),
            format!("0.0.0.0:{p}"),
            format!("localhost:{p}"),
            "169.254.169.254:80".to_string(),
            "10.0.0.1:80".to_string(),
            "100.64.0.1:80".to_string(),
            "[fc00::1]:80".to_string(),
            "[::ffff:7f00:1]:80".to_string(),
            format!("echo.test:{p}"),
        ];
        let mut failures = Vec::new();
        for t in &targets {
            let (head, _) = connect_h1(proxy.plain, t).await;
            let ok = head.status == 502
                && head
                    .proxy_status()
                    .is_some_and(|v| v.starts_with("bauta; error=destination_ip_prohibited"));
            if !ok {
                failures.push(format!(
                    "CONNECT {t}: got {} {:?}",
                    head.status,
                    head.proxy_status()
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "expected 502 destination_ip_prohibited for every target:\n{}",
            failures.join("\n")
        );
        assert_eq!(echo.accepted(), 0, "no prohibited target may be dialled");
        // The guard refused what the default allowed: its own rule label.
        let m = fetch_metrics(proxy.admin).await;
        let decisions = |verdict: &str, rule: &str| {
            bauta_tests::masque::metric(
                &m,
                "bauta_policy_decisions_total",
                &[("verdict", verdict), ("rule", rule)],
            )
        };
        assert_eq!(decisions("deny", "ssrf_guard"), targets.len() as f64);
        assert_eq!(decisions("deny", "default"), 0.0);
        assert!(
            dns.queries().iter().any(|(n, _)| n == "echo.test"),
            "echo.test was resolved through the fake DNS: {:?}",
            dns.queries()
        );
    })
    .await
}

#[tokio::test]
async fn ssrf_applies_to_forwarding_too() {
    bounded(async {
        let origin = Origin::start().await;
        let proxy = start_proxy("[policy]\ndefault = \"allow\"\n").await;
        for host in [
            format!("127.0.0.1:{}", origin.port()),
            format!("2130706433:{}", origin.port()),
            format!("[::1]:{}", origin.port()),
        ] {
            let req = format!("GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let (head, _, _) = raw_request(proxy.plain, req.as_bytes()).await;
            head.assert_error(
                502,
                "destination_ip_prohibited",
                &format!("forward to {host}"),
            );
        }
        assert_eq!(origin.connections(), 0);
    })
    .await
}

#[tokio::test]
async fn explicit_cidr_rule_admits_odd_loopback_spelling() {
    bounded(async {
        let echo = EchoServer::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let (head, mut s) = connect_h1(proxy.plain, &format!("2130706433:{}", echo.port())).await;
        assert_eq!(
            head.status, 200,
            "2130706433 is 127.0.0.1, inside the allowed cidr: {head:?}"
        );
        assert_echo(&mut s, b"decimal loopback").await;
        assert_half_close(&mut s).await;
        assert_eq!(echo.accepted(), 1);
    })
    .await
}

#[tokio::test]
async fn cidr_rule_does_not_cover_other_special_ranges() {
    bounded(async {
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        // Allowed only 127/8. These IP literals are known before any
        // lookup and lie outside the rule's cidrs, so no rule matches and the
        // default (deny) decides: 403 http_request_denied. The SSRF guard
        // (502) only applies to requests a rule or the default allowed.
        for t in ["10.0.0.1:80", "169.254.169.254:80", "[::1]:80"] {
            let (head, _) = connect_h1(proxy.plain, t).await;
            head.assert_error(403, "http_request_denied", &format!("CONNECT {t}"));
        }
        let m = fetch_metrics(proxy.admin).await;
        assert_eq!(
            bauta_tests::masque::metric(
                &m,
                "bauta_policy_decisions_total",
                &[("verdict", "deny"), ("rule", "default")]
            ),
            3.0,
            "three denials by the default"
        );
        assert_eq!(
            bauta_tests::masque::metric(
                &m,
                "bauta_requests_total",
                &[("kind", "connect"), ("outcome", "denied")]
            ),
            3.0,
            "three CONNECTs counted as denied"
        );
    })
    .await
}

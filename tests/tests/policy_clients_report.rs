//! Policy rules on the client's source address (`clients`) and report mode
//! (`action = "report"`: allowed, counted and logged as a would-be denial),
//! end to end through the HTTP/1.1 front.

use bauta_tests::masque::{metric, wait_metric};
use bauta_tests::*;

/// A rule whose `clients` holds the test client (127.0.0.1) admits it; one
/// whose `clients` does not is skipped, and the default decides.
#[tokio::test]
async fn clients_match_the_source_address() {
    bounded(async {
        let echo = EchoServer::start().await;
        let proxy = start_proxy(
            r#"
[policy]
default = "deny"

[[policy.rule]]
name = "branch-office"
action = "allow"
clients = ["10.0.0.0/8"]
cidrs = ["127.0.0.0/8"]
ports = [1]

[[policy.rule]]
name = "this-host"
action = "allow"
clients = ["127.0.0.1/32", "::1/128"]
cidrs = ["127.0.0.0/8"]
"#,
        )
        .await;
        let target = format!("127.0.0.1:{}", echo.port());
        let (head, mut tunnel) = connect_h1(proxy.plain, &target).await;
        assert_eq!(head.status, 200, "{head:?}");
        assert_echo(&mut tunnel, b"from 127.0.0.1").await;
        let n = wait_metric(
            proxy.admin,
            "bauta_policy_decisions_total",
            &[("verdict", "allow"), ("rule", "this-host")],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(n, 1.0, "decided by the clients rule");
    })
    .await
}

#[tokio::test]
async fn clients_outside_every_rule_fall_to_the_default() {
    bounded(async {
        let echo = EchoServer::start().await;
        let proxy = start_proxy(
            r#"
[policy]
default = "deny"

[[policy.rule]]
name = "branch-office"
action = "allow"
clients = ["10.0.0.0/8", "fd00::/8"]
cidrs = ["127.0.0.0/8"]
"#,
        )
        .await;
        let (head, _) = connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
        head.assert_error(403, "http_request_denied", "client outside `clients`");
        assert_eq!(echo.accepted(), 0, "nothing dialled");
        let text = fetch_metrics(proxy.admin).await;
        assert_eq!(
            metric(
                &text,
                "bauta_policy_decisions_total",
                &[("verdict", "deny"), ("rule", "default")]
            ),
            1.0
        );
    })
    .await
}

/// Report mode: the request goes through, and the decision is counted as
/// `verdict="report"` under the reporting rule — the would-be denial an
/// operator reads before switching the rule to `deny`.
#[tokio::test]
async fn report_allows_and_counts() {
    bounded(async {
        let echo = EchoServer::start().await;
        let proxy = start_proxy(
            r#"
[policy]
default = "deny"

[[policy.rule]]
name = "rollout"
action = "report"
cidrs = ["127.0.0.0/8"]
"#,
        )
        .await;
        let text = fetch_metrics(proxy.admin).await;
        assert_eq!(
            metric(
                &text,
                "bauta_policy_decisions_total",
                &[("verdict", "report"), ("rule", "rollout")]
            ),
            0.0,
            "pre-filled at 0"
        );
        let (head, mut tunnel) =
            connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
        assert_eq!(head.status, 200, "report allows: {head:?}");
        assert_echo(&mut tunnel, b"reported, not refused").await;
        let n = wait_metric(
            proxy.admin,
            "bauta_policy_decisions_total",
            &[("verdict", "report"), ("rule", "rollout")],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(n, 1.0);
        let text = fetch_metrics(proxy.admin).await;
        assert_eq!(
            metric(
                &text,
                "bauta_requests_total",
                &[("kind", "connect"), ("outcome", "ok")]
            ),
            1.0
        );
    })
    .await
}

/// Report never lets a forbidden address through: the SSRF guard still
/// applies to what a report rule allows.
#[tokio::test]
async fn report_keeps_the_ssrf_guard() {
    bounded(async {
        let echo = EchoServer::start().await;
        let proxy = start_proxy(
            r#"
[policy]
default = "report"
"#,
        )
        .await;
        let (head, _) = connect_h1(proxy.plain, &format!("127.0.0.1:{}", echo.port())).await;
        head.assert_error(
            502,
            "destination_ip_prohibited",
            "loopback under default report",
        );
        assert_eq!(echo.accepted(), 0, "nothing dialled");
    })
    .await
}

/// IDNA: a rule written with a Unicode name matches the A-label form clients
/// send (decided before DNS, so nothing is looked up).
#[tokio::test]
async fn unicode_rule_hosts_match_their_a_labels() {
    bounded(async {
        let proxy = start_proxy(
            r#"
[policy]
default = "allow"

[[policy.rule]]
name = "no-books"
action = "deny"
hosts = ["bücher.example", "*.BÜCHER.example."]
"#,
        )
        .await;
        for target in [
            "xn--bcher-kva.example:443",
            "shop.xn--bcher-kva.example:443",
        ] {
            let (head, _) = connect_h1(proxy.plain, target).await;
            head.assert_error(403, "http_request_denied", target);
        }
        let n = wait_metric(
            proxy.admin,
            "bauta_policy_decisions_total",
            &[("verdict", "deny"), ("rule", "no-books")],
            |v| v >= 2.0,
        )
        .await;
        assert_eq!(n, 2.0);
    })
    .await
}

//! The admin endpoint (/metrics, /healthz, /readyz).

use bauta_tests::*;

use bauta_tests::masque::{family_lines, metric, metric_opt, wait_metric};

/// One metric family of the README's table: its name, whether it is a
/// histogram, and for each label the closed set of values the README lists
/// (listener / rule names are the test configuration's).
struct Family {
    name: &'static str,
    histogram: bool,
    labels: &'static [(&'static str, &'static [&'static str])],
}

const OUTCOMES: &[&str] = &[
    "ok",
    "denied",
    "address_prohibited",
    "auth_required",
    "limited",
    "overloaded",
    "bad_request",
    "not_found",
    "misdirected",
    "dns_error",
    "dns_timeout",
    "connection_refused",
    "connection_timeout",
    "unreachable",
    "upstream_error",
    "internal_error",
    "not_implemented",
    "gateway_error",
    "gateway_refused",
];

/// The README's metrics table, for a proxy with one plain HTTP/1.1 listener
/// "plain" and the policy rule "lab".
const FAMILIES: &[Family] = &[
    Family {
        name: "bauta_connections_total",
        histogram: false,
        labels: &[("listener", &["plain"]), ("protocol", &["http1"])],
    },
    Family {
        name: "bauta_requests_total",
        histogram: false,
        labels: &[
            ("listener", &["plain"]),
            ("protocol", &["http1"]),
            ("kind", &["connect", "connect-udp", "forward", "reverse"]),
            ("outcome", OUTCOMES),
        ],
    },
    Family {
        name: "bauta_tunnels_active",
        histogram: false,
        labels: &[("kind", &["connect", "connect-udp"])],
    },
    Family {
        name: "bauta_tunnel_bytes_total",
        histogram: false,
        labels: &[
            ("kind", &["connect", "connect-udp"]),
            ("direction", &["upstream", "downstream"]),
        ],
    },
    Family {
        name: "bauta_policy_decisions_total",
        histogram: false,
        labels: &[
            ("verdict", &["allow", "deny", "report"]),
            ("rule", &["lab", "default", "ssrf_guard"]),
        ],
    },
    Family {
        name: "bauta_dns_lookups_total",
        histogram: false,
        labels: &[("outcome", &["ok", "nxdomain", "nodata", "timeout", "error"])],
    },
    Family {
        name: "bauta_upstream_connect_seconds",
        histogram: true,
        labels: &[],
    },
    Family {
        name: "bauta_udp_datagrams_total",
        histogram: false,
        labels: &[("direction", &["upstream", "downstream"])],
    },
    Family {
        name: "bauta_http_datagrams_total",
        histogram: false,
        labels: &[
            ("leg", &["client"]),
            ("direction", &["upstream", "downstream"]),
            ("carriage", &["quic", "capsule"]),
        ],
    },
    Family {
        name: "bauta_udp_drops_total",
        histogram: false,
        labels: &[(
            "reason",
            &[
                "unknown_context",
                "unknown_stream",
                "too_large",
                "queue_full",
                "send_failed",
                "malformed",
            ],
        )],
    },
    Family {
        name: "bauta_secondary_certs_sent_total",
        histogram: false,
        labels: &[
            ("protocol", &["h2", "h3"]),
            ("mode", &["eager", "on-connect"]),
        ],
    },
    Family {
        name: "bauta_secondary_cert_errors_total",
        histogram: false,
        labels: &[
            ("protocol", &["h2", "h3"]),
            (
                "kind",
                &[
                    "client_sent_certificate",
                    "wrong_stream",
                    "bad_setting_value",
                    "setting_withdrawn",
                    "malformed_frame",
                    "too_large",
                    "authenticator",
                ],
            ),
        ],
    },
    Family {
        name: "bauta_reverse_requests_total",
        histogram: false,
        labels: &[
            ("protocol", &["http1", "h2", "h3"]),
            ("status_class", &["1xx", "2xx", "3xx", "4xx", "5xx"]),
        ],
    },
    Family {
        name: "bauta_reverse_upstream_seconds",
        histogram: true,
        labels: &[],
    },
    Family {
        name: "bauta_config_reloads_total",
        histogram: false,
        labels: &[("outcome", &["ok", "error"])],
    },
    Family {
        name: "bauta_policy_reloads_total",
        histogram: false,
        labels: &[("outcome", &["ok", "error"])],
    },
    Family {
        name: "bauta_policy_generation",
        histogram: false,
        labels: &[],
    },
    Family {
        name: "bauta_auth_failures_total",
        histogram: false,
        labels: &[
            ("method", &["basic", "mtls"]),
            (
                "reason",
                &[
                    "missing",
                    "malformed",
                    "unknown_user",
                    "wrong_password",
                    "no_certificate",
                    "bad_certificate",
                ],
            ),
        ],
    },
    Family {
        name: "bauta_limit_rejections_total",
        histogram: false,
        labels: &[(
            "limit",
            &[
                "tunnels",
                "new_per_s",
                "udp_flows",
                "udp_flows_per_connection",
            ],
        )],
    },
    Family {
        name: "bauta_overload_shed_total",
        histogram: false,
        labels: &[("reason", &["memory", "tunnels", "udp_flows"])],
    },
    Family {
        name: "bauta_overloaded",
        histogram: false,
        labels: &[],
    },
    Family {
        name: "bauta_splice_pipes_pooled",
        histogram: false,
        labels: &[],
    },
    Family {
        name: "bauta_certificate_expiry_timestamp_seconds",
        histogram: false,
        labels: &[("kind", &["listener", "origin"]), ("name", &[])],
    },
    Family {
        name: "bauta_connections_refused_total",
        histogram: false,
        labels: &[
            ("listener", &["plain"]),
            ("reason", &["total", "per_client"]),
        ],
    },
    Family {
        name: "bauta_gateway_connect_seconds",
        histogram: true,
        labels: &[],
    },
    Family {
        name: "bauta_protocol_floods_total",
        histogram: false,
        labels: &[
            ("front", &["h2"]),
            ("frame", &["ping", "settings", "priority", "empty"]),
        ],
    },
];

/// The families a sidecar (`[gateway]`, with `[[originate]]`) adds; see
/// tests/tests/gateway_chain.rs for their values.
const GATEWAY_FAMILIES: &[Family] = &[
    Family {
        name: "bauta_gateway_connections",
        histogram: false,
        labels: &[
            ("protocol", &["h3", "h2"]),
            ("state", &["open", "draining"]),
        ],
    },
    Family {
        name: "bauta_gateway_streams_active",
        histogram: false,
        labels: &[("kind", &["connect", "connect-udp", "http"])],
    },
    Family {
        name: "bauta_gateway_errors_total",
        histogram: false,
        labels: &[("reason", &[])],
    },
    Family {
        name: "bauta_originated_requests_total",
        histogram: false,
        labels: &[("outcome", &["ok", "not_authoritative", "gateway_error"])],
    },
    Family {
        name: "bauta_secondary_certs_validated_total",
        histogram: false,
        labels: &[("outcome", &["accepted", "unacceptable", "invalid"])],
    },
];

/// The families only HTTP/3 listeners have (and the refusal reason only
/// they add), for a proxy whose listener "secure" serves h3.
const H3_FAMILIES: &[Family] = &[
    Family {
        name: "bauta_quic_retries_total",
        histogram: false,
        labels: &[("listener", &["secure"])],
    },
    Family {
        name: "bauta_quic_handshakes",
        histogram: false,
        labels: &[("listener", &["secure"])],
    },
    Family {
        name: "bauta_connections_refused_total",
        histogram: false,
        labels: &[
            ("listener", &["secure"]),
            ("reason", &["total", "per_client", "quic_handshakes"]),
        ],
    },
];

/// The one family that is not 0 on a fresh proxy: the first policy is
/// generation 1.
const GENERATION: &str = "bauta_policy_generation";

/// Present per served certificate only (tested in `lifecycle_reload`).
const CERT_EXPIRY: &str = "bauta_certificate_expiry_timestamp_seconds";

/// One sample: (series name, labels, value).
type Sample = (String, Vec<(String, String)>, f64);

/// Every sample line. Panics on a malformed line.
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("sample line {line:?}: bad value: {e}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let rest = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("sample line {line:?}: unterminated labels"));
                let labels = rest
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p
                            .split_once('=')
                            .unwrap_or_else(|| panic!("sample line {line:?}: label {p:?}"));
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), Vec::new()),
        };
        out.push((name, labels, value));
    }
    out
}

/// The README's table lists exactly the families in `FAMILIES`: a family
/// added to the README must be added here too.
#[test]
fn families_match_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let section = readme
        .split("## Metrics")
        .nth(1)
        .expect("README has a ## Metrics section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut documented: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `bauta_"))
        .filter_map(|l| l.split('`').next())
        .collect();
    documented.sort_unstable();
    let mut ours: Vec<&str> = FAMILIES
        .iter()
        .chain(H3_FAMILIES)
        .chain(GATEWAY_FAMILIES)
        .map(|f| f.name.strip_prefix("bauta_").expect("bauta_ prefix"))
        .collect();
    ours.sort_unstable();
    ours.dedup();
    assert_eq!(
        documented, ours,
        "README metric families vs this test's table"
    );
}

/// On a fresh proxy the histograms (always exported) are at zero, the
/// process collector is there, and every `bauta_` sample that is exported
/// at all is 0.
#[tokio::test]
async fn fresh_proxy_metrics_are_zero() {
    bounded(async {
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let text = fetch_metrics(proxy.admin).await;
        for f in FAMILIES.iter().filter(|f| f.histogram) {
            for suffix in ["_count", "_sum"] {
                assert_eq!(
                    metric(&text, &format!("{}{suffix}", f.name), &[]),
                    0.0,
                    "{}{suffix} on a fresh proxy",
                    f.name
                );
            }
            let inf = metric(&text, &format!("{}_bucket", f.name), &[("le", "+Inf")]);
            assert_eq!(inf, 0.0, "{} +Inf bucket on a fresh proxy", f.name);
        }
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(
                metric_opt(&text, name, &[]).is_some(),
                "/metrics lacks {name}:\n{text}"
            );
        }
        for (name, labels, value) in samples(&text) {
            if name == GENERATION {
                assert_eq!(value, 1.0, "{name} on a fresh proxy");
            } else if name.starts_with("bauta_") {
                assert_eq!(value, 0.0, "{name}{labels:?} on a fresh proxy:\n{text}");
            }
        }
    })
    .await
}

/// What is wrong with `text` (a fresh proxy's /metrics) for `families`:
/// each exported, with a # TYPE line, every listed label value in some
/// series, every series at 0 (histograms: count 0).
fn fresh_failures(text: &str, families: &[Family]) -> Vec<String> {
    let all = samples(text);
    let mut failures = Vec::new();
    for f in families {
        // One series per served certificate, at its notAfter: none on a
        // proxy without TLS (a 0 would read as "expired in 1970").
        if f.name == CERT_EXPIRY {
            continue;
        }
        if f.histogram {
            if metric_opt(text, &format!("{}_count", f.name), &[]) != Some(0.0) {
                failures.push(format!("{}_count is not 0", f.name));
            }
            continue;
        }
        let series: Vec<_> = all.iter().filter(|(n, _, _)| n == f.name).collect();
        if series.is_empty() {
            failures.push(format!("{}: absent", f.name));
            continue;
        }
        if !text.contains(&format!("# TYPE {} ", f.name)) {
            failures.push(format!("{}: no # TYPE line", f.name));
        }
        for (key, values) in f.labels {
            for v in *values {
                let found = series
                    .iter()
                    .any(|(_, ls, _)| ls.iter().any(|(k, x)| k == key && x == v));
                if !found {
                    failures.push(format!("{}: no series with {key}=\"{v}\"", f.name));
                }
            }
        }
        for (_, ls, value) in series {
            if *value != 0.0 && f.name != GENERATION {
                failures.push(format!("{}{ls:?} = {value}, not 0", f.name));
            }
        }
    }
    failures
}

/// README: the families and label values a dashboard relies on are exported
/// from the start, at 0 — not only after their first use. For every family,
/// every label value of the README's closed sets (and this configuration's
/// listener and rule names) appears in some series at 0; histograms have
/// count 0.
#[tokio::test]
async fn fresh_proxy_exports_every_family_at_zero() {
    bounded(async {
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let text = fetch_metrics(proxy.admin).await;
        let failures = fresh_failures(&text, FAMILIES);
        assert!(
            failures.is_empty(),
            "fresh proxy /metrics:\n{}\n---\n{text}",
            failures.join("\n")
        );
    })
    .await
}

/// The same for the families of an HTTP/3 listener (QUIC Retry and
/// handshakes, the `quic_handshakes` refusal reason).
#[tokio::test]
async fn fresh_h3_listener_exports_its_quic_families_at_zero() {
    bounded(async {
        let certs = make_certs();
        let proxy = bauta_tests::masque::start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let text = fetch_metrics(proxy.admin).await;
        let failures = fresh_failures(&text, H3_FAMILIES);
        assert!(
            failures.is_empty(),
            "fresh proxy /metrics:\n{}\n---\n{text}",
            failures.join("\n")
        );
        proxy.shutdown().await;
    })
    .await
}

/// Wait until the series exists and equals `want` (bounded); assert it.
async fn assert_metric_eq(
    admin: std::net::SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) {
    let got = wait_metric(admin, name, labels, |v| v == want).await;
    assert_eq!(
        got,
        want,
        "{name}{labels:?}:\n{}",
        family_lines(&fetch_metrics(admin).await, name)
    );
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
        drop(s);
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

        let a = proxy.admin;
        let text = fetch_metrics(a).await;
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes"] {
            assert!(
                metric_opt(&text, name, &[]).is_some(),
                "/metrics lacks {name}:\n{text}"
            );
        }
        // Exact counts: the proxy is fresh and the scenario deterministic.
        let plain = ("listener", "plain");
        let h1 = ("protocol", "http1");
        for (kind, outcome) in [("connect", "ok"), ("connect", "denied"), ("forward", "ok")] {
            assert_metric_eq(
                a,
                "bauta_requests_total",
                &[plain, h1, ("kind", kind), ("outcome", outcome)],
                1.0,
            )
            .await;
        }
        assert_metric_eq(a, "bauta_requests_total", &[], 3.0).await;
        assert_metric_eq(
            a,
            "bauta_policy_decisions_total",
            &[("verdict", "allow"), ("rule", "lab")],
            2.0,
        )
        .await;
        assert_metric_eq(
            a,
            "bauta_policy_decisions_total",
            &[("verdict", "deny"), ("rule", "default")],
            1.0,
        )
        .await;
        assert_metric_eq(a, "bauta_policy_decisions_total", &[], 3.0).await;
        let sent = b"metrics bytes".len() as f64;
        assert_metric_eq(
            a,
            "bauta_tunnel_bytes_total",
            &[("kind", "connect"), ("direction", "upstream")],
            sent,
        )
        .await;
        assert_metric_eq(
            a,
            "bauta_tunnel_bytes_total",
            &[("kind", "connect"), ("direction", "downstream")],
            sent + ECHO_EOF_REPLY.len() as f64,
        )
        .await;
        assert_metric_eq(a, "bauta_tunnels_active", &[("kind", "connect")], 0.0).await;
        // echo.test once; the IP literals need no lookup.
        assert_metric_eq(a, "bauta_dns_lookups_total", &[("outcome", "ok")], 1.0).await;
        assert_metric_eq(a, "bauta_dns_lookups_total", &[], 1.0).await;
        // The echo server and the origin.
        assert_metric_eq(a, "bauta_upstream_connect_seconds_count", &[], 2.0).await;
        // Three client connections, all HTTP/1.1 on "plain".
        assert_metric_eq(a, "bauta_connections_total", &[plain, h1], 3.0).await;
        assert_metric_eq(a, "bauta_connections_total", &[], 3.0).await;
    })
    .await
}

#[tokio::test]
async fn metrics_count_dns_failures() {
    bounded(async {
        let dns = FakeDns::start().await;
        let proxy = start_proxy(&format!("{}\n{ALLOW_LOOPBACK}", dns.toml())).await;
        let (head, _) = connect_h1(proxy.plain, "missing.test:443").await;
        head.assert_error(502, "dns_error", "CONNECT missing.test");
        let (head, _) = connect_h1(proxy.plain, "slow.test:443").await;
        head.assert_error(504, "dns_timeout", "CONNECT slow.test");
        let a = proxy.admin;
        assert_metric_eq(
            a,
            "bauta_dns_lookups_total",
            &[("outcome", "nxdomain")],
            1.0,
        )
        .await;
        assert_metric_eq(a, "bauta_dns_lookups_total", &[("outcome", "timeout")], 1.0).await;
        assert_metric_eq(a, "bauta_dns_lookups_total", &[], 2.0).await;
        for outcome in ["dns_error", "dns_timeout"] {
            assert_metric_eq(
                a,
                "bauta_requests_total",
                &[("kind", "connect"), ("outcome", outcome)],
                1.0,
            )
            .await;
        }
        assert_metric_eq(a, "bauta_requests_total", &[], 2.0).await;
    })
    .await
}

/// Label cardinality guard (README: "Label values never contain hostnames or
/// other client-supplied strings"): after CONNECTs and forwards to several
/// names, paths and ports, no hostname, path, port or client address appears
/// anywhere in /metrics, and every label value of a `bauta_` series is one of
/// the README's closed values (or a configured name).
#[tokio::test]
async fn metric_labels_never_carry_hostnames_paths_or_addresses() {
    bounded(async {
        let dns = FakeDns::start().await;
        let echo = EchoServer::start().await;
        let origin = Origin::start().await;
        let proxy = start_proxy(&format!("{}\n{ALLOW_LOOPBACK}", dns.toml())).await;
        let mut client_addrs = Vec::new();

        // CONNECT by name (ok), to a name that does not resolve, to a denied
        // literal, and a malformed one.
        for target in [
            format!("echo.test:{}", echo.port()),
            "cardinality-nx.test:4433".to_string(),
            "10.9.8.7:8081".to_string(),
            "bad..host-zz:1".to_string(),
        ] {
            let (_, s) = connect_h1(proxy.plain, &target).await;
            client_addrs.push(s.local_addr().expect("client addr"));
        }
        // Forwards with distinct paths and queries, by name and by address.
        for url in [
            format!(
                "http://echo.test:{}/card/path-one?q=secret-1",
                origin.port()
            ),
            format!("http://{}/card/path-two?q=secret-2", origin.addr),
            "http://cardinality-fwd.test/card/path-three".to_string(),
        ] {
            let uri: http::Uri = url.parse().expect("url");
            let host = uri.authority().expect("authority").to_string();
            let req = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ua-zz\r\n\r\n");
            let (_, s, _) = raw_request(proxy.plain, req.as_bytes()).await;
            client_addrs.push(s.local_addr().expect("client addr"));
        }

        let text = fetch_metrics(proxy.admin).await;
        let mut forbidden: Vec<String> = vec![
            "echo.test".into(),
            "cardinality".into(),
            ".test".into(),
            "10.9.8.7".into(),
            "bad..host".into(),
            "host-zz".into(),
            "/card".into(),
            "path-one".into(),
            "path-two".into(),
            "path-three".into(),
            "secret".into(),
            "ua-zz".into(),
            "127.0.0.1".into(),
        ];
        forbidden.extend(client_addrs.iter().map(|a| a.to_string()));
        for needle in &forbidden {
            assert!(
                !text.contains(needle.as_str()),
                "/metrics contains the client-supplied string {needle:?}:\n{text}"
            );
        }
        // Every label value of a bauta_ series is from a closed set.
        let ports: Vec<String> = [echo.port(), origin.port(), 4433, 8081]
            .iter()
            .map(u16::to_string)
            .chain(client_addrs.iter().map(|a| a.port().to_string()))
            .collect();
        for (name, labels, _) in samples(&text) {
            if !name.starts_with("bauta_") {
                continue;
            }
            let family = FAMILIES
                .iter()
                .find(|f| {
                    name == f.name
                        || (f.histogram
                            && ["_bucket", "_sum", "_count"]
                                .iter()
                                .any(|s| name == format!("{}{s}", f.name)))
                })
                .unwrap_or_else(|| panic!("{name}: not a family the README documents"));
            for (k, v) in &labels {
                if k == "le" && family.histogram {
                    assert!(
                        v == "+Inf" || v.parse::<f64>().is_ok(),
                        "{name}: bucket bound {v:?}"
                    );
                    continue;
                }
                let allowed = family
                    .labels
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, vals)| *vals)
                    .unwrap_or_else(|| panic!("{name}: label {k} not in the README"));
                assert!(
                    allowed.contains(&v.as_str()),
                    "{name}{{{k}={v:?}}}: not one of the README's values {allowed:?}"
                );
                assert!(!ports.contains(v), "{name}{{{k}={v:?}}}: a port number");
            }
        }
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

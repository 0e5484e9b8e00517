//! TLS origination through the gateway, verified by secondary certificates
//! (issue 15 item 2): an application's plain `GET http://api.test/…` to the
//! sidecar goes to the gateway as `GET https://api.test/…` only once the
//! gateway proved `api.test` on that connection with a SERVER_CERTIFICATE
//! the sidecar validated (RFC 9261) and accepted (chain to `origin_ca`,
//! validity, name). Against a real gateway Bauta (on-connect and eager,
//! each over `[gateway] protocols = ["h3"]` and `["h2"]`), and against
//! independent servers (pyOpenSSL HTTP/2, aioquic HTTP/3) sending a broken
//! authenticator.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bauta_tests::gateway_env::chain::RECONNECT;
use bauta_tests::gateway_env::chain::{curl, curl_body};
use bauta_tests::gateway_env::{GatewayEnv, Pod, Proto, ProxyStatus, SIDECAR_NAME};
use bauta_tests::masque::python;
use bauta_tests::seccert_env::{KeyKind, Pki};
use bauta_tests::{bounded_for, Origin, TempDir};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const LIMIT: Duration = Duration::from_secs(60);

/// The gateway's `[[origin]]` tables: `api.test` (valid) and `old.test`
/// (expired) reverse-proxied to `upstream`, advertised in `mode`.
fn gateway_origins(pki: &Pki, upstream: u16, mode: &str) -> String {
    let api = pki.origin("api.test", KeyKind::EcdsaP256, "api");
    let an_hour_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 3600;
    let old = pki.origin_until("old.test", KeyKind::EcdsaP256, "old", Some(an_hour_ago));
    let mut out = format!("\n[secondary_certs]\nadvertise = \"{mode}\"\n");
    for o in [&api, &old] {
        out.push_str(&format!(
            "\n[[origin]]\nhost = \"{}\"\nport = 443\ncert = '{}'\nkey = '{}'\nupstream = \"http://127.0.0.1:{upstream}\"\n",
            o.host,
            o.cert_pem.display(),
            o.key_pem.display()
        ));
    }
    out
}

/// The sidecar's configuration: `[[originate]]` for the three hosts, the
/// origin CA, and a local rule letting the names through.
fn sidecar_originating(env: &GatewayEnv, origin_ca: &std::path::Path) -> String {
    let text = env.sidecar_config(Pod::Payments).replace(
        "[gateway]\n",
        &format!("[gateway]\norigin_ca = '{}'\n", origin_ca.display()),
    );
    text + r#"
[[policy.rule]]
name = "origins"
action = "allow"
hosts = ["api.test", "old.test", "unproven.test"]

[[originate]]
host = "api.test"

[[originate]]
host = "old.test"

[[originate]]
host = "unproven.test"
"#
}

fn header<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `curl -i` through the sidecar's plain listener: (status, head text, body).
async fn get(env: &GatewayEnv, url: &str) -> (u16, String) {
    let proxy = format!("http://{}", env.sidecar_plain());
    let out = curl(&["-i", "-x", &proxy, url]).await;
    let text = curl_body(&out, url);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{url}: no status line in {text:?}"));
    (status, text)
}

fn assert_not_authoritative(env: &GatewayEnv, status: u16, text: &str, host: &str) {
    assert_eq!(status, 502, "{host}: refused, not sent: {text}");
    let raw =
        header(text, "proxy-status").unwrap_or_else(|| panic!("{host}: Proxy-Status: {text}"));
    let ps = ProxyStatus::parse(raw);
    assert_eq!(ps.members.len(), 1, "the sidecar alone answers: {raw}");
    let (_, m) = ps.expect_member(SIDECAR_NAME, host);
    assert_eq!(m.param("error"), Some("tls_certificate_error"), "{raw}");
    assert_eq!(
        m.param("details"),
        Some(format!("gateway is not authoritative for {host}").as_str()),
        "{raw}"
    );
    assert_eq!(
        m.param("next-hop"),
        Some(env.gateway_addr().to_string().as_str()),
        "{raw}"
    );
}

/// Origination through a real gateway advertising in `advertise`
/// (`on-connect`, `eager`), the sidecar connecting to it over `proto`.
async fn originates_only_what_the_gateway_proved(advertise: &str, proto: Proto) {
    bounded_for(LIMIT, async {
        let upstream = Origin::start().await;
        let origin_pki = Pki::new();
        let mut env = GatewayEnv::new();
        env.set_protocols(proto.toml());
        let mode = format!("{advertise} over {}", proto.as_str());
        env.set_gateway_extra(&gateway_origins(&origin_pki, upstream.port(), advertise));
        env.start_gateway().await;
        let text = sidecar_originating(&env, &origin_pki.certs.ca_pem);
        env.start_sidecar_with(&text, true).await;

        // Proven: the request reaches the gateway's reverse-proxied upstream
        // as https (the gateway adds Forwarded; the upstream is plain http).
        let (status, text) = get(&env, "http://api.test/orders?id=7").await;
        if status != 200 {
            panic!(
                "{mode}: the first originated request on a fresh gateway connection: {text}\n\
                 --- sidecar metrics ---\n{}\n--- gateway metrics ---\n{}\n{}\n\
                 --- sidecar stderr ---\n{}\n--- gateway stderr ---\n{}",
                bauta_tests::masque::family_lines(
                    &env.sidecar_metrics().await,
                    "bauta_secondary_certs_validated_total"
                ),
                bauta_tests::masque::family_lines(
                    &env.gateway_metrics().await,
                    "bauta_secondary_certs_sent_total"
                ),
                bauta_tests::masque::family_lines(
                    &env.gateway_metrics().await,
                    "bauta_secondary_cert_errors_total"
                ),
                env.sidecar().stderr(),
                env.gateway().stderr()
            );
        }
        assert!(text.contains("origin: GET /orders"), "{mode}: {text}");
        assert!(
            header(&text, "alt-svc").is_none(),
            "{mode}: the gateway's Alt-Svc names the gateway, not the origin: {text}"
        );
        let seen = upstream.seen();
        assert_eq!(seen.len(), 1, "{mode}: the upstream saw one request");
        assert_eq!(seen[0].uri, "/orders?id=7", "{mode}: path and query intact");
        let fwd = seen[0]
            .headers
            .get("forwarded")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{mode}: the upstream sees Forwarded: {:?}", seen[0]));
        assert!(
            fwd.contains("proto=https"),
            "{mode}: served as https: {fwd}"
        );
        assert!(
            fwd.contains("host=api.test") || fwd.contains("host=\"api.test\""),
            "{fwd}"
        );
        // Once more on the same connection: the proof is kept.
        let (status, _) = get(&env, "http://api.test/again").await;
        assert_eq!(status, 200, "{mode}: second request");
        assert_eq!(upstream.seen().len(), 2);

        // Not proven (no certificate for it) and expired: refused, never sent.
        for host in ["unproven.test", "old.test"] {
            let (status, text) = get(&env, &format!("http://{host}/secret")).await;
            assert_not_authoritative(&env, status, &text, host);
        }
        assert_eq!(
            upstream.seen().len(),
            2,
            "nothing more reached the upstream"
        );

        let m = |name: &'static str, label: &'static str| {
            let env = &env;
            async move {
                env.sidecar_metric(name, &[("outcome", label)])
                    .await
                    .unwrap_or(0.0)
            }
        };
        assert_eq!(m("bauta_originated_requests_total", "ok").await, 2.0);
        assert_eq!(
            m("bauta_originated_requests_total", "not_authoritative").await,
            2.0
        );
        assert!(m("bauta_secondary_certs_validated_total", "accepted").await >= 1.0);
        assert!(
            m("bauta_secondary_certs_validated_total", "unacceptable").await >= 1.0,
            "{mode}: the expired certificate validated but was not used"
        );
        assert_eq!(
            m("bauta_secondary_certs_validated_total", "invalid").await,
            0.0
        );
        assert_eq!(
            env.gateway_connections_accepted().await,
            1.0,
            "{mode}: everything on one gateway connection"
        );
        assert_eq!(
            env.gateway_connections_over(proto.as_str()).await,
            1.0,
            "{mode}: the one gateway connection is {}",
            proto.as_str()
        );
        assert_eq!(
            env.gateway_metric(
                "bauta_reverse_requests_total",
                &[("protocol", proto.as_str())]
            )
            .await,
            Some(2.0),
            "{mode}: the gateway served the two originated requests over {}",
            proto.as_str()
        );
        let lines = env.sidecar().access_log();
        let originated: Vec<&Value> = lines.iter().filter(|l| l["via"] == "originated").collect();
        assert_eq!(originated.len(), 4, "{mode}: {lines:?}");
        assert!(originated
            .iter()
            .any(|l| l["status"] == 200 && l["target"] == "api.test"));
    })
    .await;
}

#[tokio::test]
async fn originates_only_what_an_on_connect_gateway_proved_h3() {
    originates_only_what_the_gateway_proved("on-connect", Proto::H3).await;
}

#[tokio::test]
async fn originates_only_what_an_on_connect_gateway_proved_h2() {
    originates_only_what_the_gateway_proved("on-connect", Proto::H2).await;
}

#[tokio::test]
async fn originates_only_what_an_eager_gateway_proved_h3() {
    originates_only_what_the_gateway_proved("eager", Proto::H3).await;
}

#[tokio::test]
async fn originates_only_what_an_eager_gateway_proved_h2() {
    originates_only_what_the_gateway_proved("eager", Proto::H2).await;
}

/// A proof belongs to its connection: proven on one gateway connection,
/// `api.test` is originated; the gateway comes back (same address, same
/// listener certificate) without `api.test`'s secondary certificate, and
/// on the sidecar's new connection `api.test` is not proven any more —
/// refused by the sidecar, never sent (the new gateway serves nothing).
/// Proofs are never carried over to another connection, whatever TLS
/// resumes.
async fn a_proof_ends_with_its_connection(proto: Proto) {
    bounded_for(LIMIT, async {
        let upstream = Origin::start().await;
        let origin_pki = Pki::new();
        let mut env = GatewayEnv::new();
        env.set_protocols(proto.toml());
        env.set_gateway_extra(&gateway_origins(&origin_pki, upstream.port(), "on-connect"));
        env.start_gateway().await;
        let text = sidecar_originating(&env, &origin_pki.certs.ca_pem);
        env.start_sidecar_with(&text, true).await;
        let (status, text) = get(&env, "http://api.test/before").await;
        assert_eq!(
            status, 200,
            "{proto:?}: proven on the first connection: {text}"
        );

        env.kill_gateway().await;
        env.set_gateway_extra("");
        env.restart_gateway().await;
        // While the sidecar notices and reconnects: 502/503 gateway errors;
        // then the sidecar's own refusal. Never a 200.
        let deadline = tokio::time::Instant::now() + RECONNECT;
        let text = loop {
            let (status, text) = get(&env, "http://api.test/after").await;
            assert_ne!(
                status, 200,
                "{proto:?}: a proof outlived its connection: {text}"
            );
            if text.contains("gateway is not authoritative for api.test") {
                break text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{proto:?}: the sidecar did not reconnect and refuse: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert_not_authoritative(&env, status, &text, "api.test");
        assert_eq!(
            upstream.seen().len(),
            1,
            "{proto:?}: only the first request"
        );
        assert_eq!(
            env.gateway_metric("bauta_reverse_requests_total", &[])
                .await,
            Some(0.0),
            "{proto:?}: the new gateway served nothing"
        );
    })
    .await;
}

bauta_tests::over_h3_and_h2!(a_proof_ends_with_its_connection);

/// An independent server (its own RFC 9261 code) sends a valid
/// authenticator for `api.test`, then one whose Finished is broken: the
/// sidecar closes that connection with SERVER_CERTIFICATE_INVALID (HTTP/2:
/// GOAWAY, `bad_seccert_server.py` on pyOpenSSL; HTTP/3: CONNECTION_CLOSE,
/// `bad_seccert_h3_server.py` on aioquic), drops the connection's proofs,
/// and refuses the request with 502. `[gateway] protocols` names the one
/// protocol: nothing else answers on the peer's port.
///
/// Neither peer answers a request, so the sidecar's CONNECT for `api.test`
/// (sent to make an on-connect gateway prove it) ends only with the
/// connection, after the broken authenticator dropped the proof. Over
/// HTTP/2 both frames come in one write after SETTINGS and are read in
/// order from the one byte stream. Over HTTP/3 they do not fit in one QUIC
/// packet: sent right after SETTINGS, a request leased while the valid one
/// alone is in would find `api.test` proven, skip the CONNECT, be sent, and
/// fail with the connection (`connection_terminated`; about one run in ten
/// on loopback). So the HTTP/3 peer sends them when that CONNECT arrives.
async fn an_invalid_authenticator_closes_the_gateway_connection(proto: Proto) {
    // The peer's script, and the report field with the code the sidecar
    // closed with and its expected value (the default codepoints).
    let (script, extra, field, code): (_, &[&str], _, _) = match proto {
        Proto::H2 => ("peers/bad_seccert_server.py", &[], "goaway", 0x005E_CC03),
        Proto::H3 => (
            "peers/bad_seccert_h3_server.py",
            &["--send-on", "request"],
            "close_code",
            0x5E_CC03,
        ),
    };
    // Built outside the time bound, and before the peer starts: the peer
    // gives up after 25 s.
    bauta_tests::bauta_bin();
    bounded_for(LIMIT, async {
        let pki = Pki::new();
        let api = pki.origin("api.test", KeyKind::EcdsaP256, "api");
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(script);
        let mut server = tokio::process::Command::new(python())
            .arg(&script)
            .arg("--tls-cert")
            .arg(&pki.certs.cert_pem)
            .arg("--tls-key")
            .arg(&pki.certs.key_pem)
            .arg("--origin-chain")
            .arg(&api.cert_pem)
            .arg("--origin-key")
            .arg(&api.key_pem)
            .arg("--broken")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", script.display()));
        let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .expect("the server printed its port within 15 s")
            .expect("read the server's stdout")
            .expect("a line");
        let port = serde_json::from_str::<Value>(&first).expect("port JSON")["port"]
            .as_u64()
            .expect("port");

        let dir = TempDir::new(&format!("originate-invalid-{}", proto.as_str()));
        let config = format!(
            r#"[proxy]
name = "{SIDECAR_NAME}"

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "app-plain"
listen = "127.0.0.1:0"
protocols = ["http1"]

[gateway]
url = "https://127.0.0.1:{port}"
ca = '{ca}'
protocols = {protocols}
connect_timeout_ms = 2000

[[originate]]
host = "api.test"

[policy]
default = "deny"

[[policy.rule]]
name = "origins"
action = "allow"
hosts = ["api.test"]

[limits]
response_timeout_s = 3
"#,
            ca = pki.certs.ca_pem.display(),
            protocols = proto.toml(),
        );
        let path = dir.write("sidecar.toml", &config);
        let sidecar = bauta_tests::BautaProcess::start(&path).await;
        let proxy = format!("http://{}", sidecar.listener("app-plain"));
        let out = curl(&["-i", "-x", &proxy, "http://api.test/x"]).await;
        let text = curl_body(&out, "http://api.test/x");
        assert!(
            text.starts_with("HTTP/1.1 502"),
            "{}: {text}\n--- sidecar stderr ---\n{}",
            proto.as_str(),
            sidecar.stderr()
        );
        let raw = header(&text, "proxy-status").expect("Proxy-Status");
        let ps = ProxyStatus::parse(raw);
        let (_, m) = ps.expect_member(SIDECAR_NAME, "invalid authenticator");
        assert_eq!(
            m.param("error"),
            Some("tls_certificate_error"),
            "{}: {raw}\n--- sidecar stderr ---\n{}",
            proto.as_str(),
            sidecar.stderr()
        );

        let report = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .expect("the server saw the connection end within 15 s")
            .expect("read")
            .expect("a report line");
        let report: Value = serde_json::from_str(&report).expect("report JSON");
        assert_eq!(report["sent"], 2, "{report}");
        assert_eq!(
            report[field].as_u64(),
            Some(code),
            "{}: closed with SERVER_CERTIFICATE_INVALID: {report}",
            proto.as_str()
        );
        let metrics = bauta_tests::fetch_metrics(sidecar.admin).await;
        let invalid = bauta_tests::masque::metric_opt(
            &metrics,
            "bauta_secondary_certs_validated_total",
            &[("outcome", "invalid")],
        );
        assert_eq!(invalid, Some(1.0), "{metrics}");
    })
    .await;
}

bauta_tests::over_h3_and_h2!(an_invalid_authenticator_closes_the_gateway_connection);

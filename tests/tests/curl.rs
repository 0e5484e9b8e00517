//! curl as an independent client. curl must be installed: these tests fail,
//! not skip, without it.

use std::time::Duration;

use bauta_tests::curl::{curl, curl_body};
use bauta_tests::*;

#[tokio::test]
async fn curl_tunnels_and_forwards_through_the_plain_listener() {
    bounded_for(Duration::from_secs(30), async {
        let origin = Origin::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let proxy_url = format!("http://{}", proxy.plain);
        let target = origin.url("/hello");

        let out = curl(&["-p", "-x", &proxy_url, &target]).await;
        assert_eq!(curl_body(&out, "curl -p (CONNECT)"), "origin: GET /hello\n");

        let out = curl(&["-x", &proxy_url, &target]).await;
        assert_eq!(curl_body(&out, "curl -x (forward)"), "origin: GET /hello\n");

        // Forwarded request: origin-form and a Via from the proxy; the tunnelled
        // one came straight from curl.
        let seen = origin.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[0].headers.get("via").is_none(),
            "tunnelled request untouched"
        );
        assert_eq!(seen[1].uri, "/hello");
        assert!(
            seen[1].headers.get("via").is_some(),
            "forwarded request has Via"
        );
        assert!(seen[1].headers.get("proxy-connection").is_none());
    })
    .await
}

#[tokio::test]
async fn curl_through_the_tls_listener() {
    bounded_for(Duration::from_secs(30), async {
        let certs = make_certs();
        let origin = Origin::start().await;
        let proxy = start_proxy_tls(&certs, ALLOW_LOOPBACK).await;
        let proxy_url = format!("https://{}", proxy.secure());
        let ca = certs.ca_pem.to_string_lossy().into_owned();
        let target = origin.url("/hello");

        let out = curl(&["--proxy", &proxy_url, "--proxy-cacert", &ca, "-p", &target]).await;
        assert_eq!(
            curl_body(&out, "curl https proxy -p"),
            "origin: GET /hello\n"
        );

        let out = curl(&["--proxy", &proxy_url, "--proxy-cacert", &ca, &target]).await;
        assert_eq!(
            curl_body(&out, "curl https proxy forward"),
            "origin: GET /hello\n"
        );

        // Without the CA, curl must refuse the proxy's certificate.
        let out = curl(&["--proxy", &proxy_url, "-p", &target]).await;
        assert!(
            !out.status.success(),
            "untrusted proxy certificate accepted"
        );
    })
    .await
}

/// HTTP/2 CONNECT through the TLS listener with an independent client. curl's
/// `--proxy-http2` would do, but Debian's curl lacks it, so this uses the
/// Python `h2` package over Python's own TLS (tests/peers/h2_connect_client.py):
/// it always runs, never skips.
#[tokio::test]
async fn python_h2_connect_through_the_tls_listener() {
    bounded_for(Duration::from_secs(30), async {
        let certs = make_certs();
        let echo = EchoServer::start().await;
        let proxy = start_proxy_tls(&certs, ALLOW_LOOPBACK).await;
        let msg = "hello over h2 connect";
        let mut cmd = tokio::process::Command::new(bauta_tests::masque::python());
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/peers/h2_connect_client.py"
        ))
        .arg("--proxy-port")
        .arg(proxy.secure().port().to_string())
        .arg("--ca")
        .arg(&certs.ca_pem)
        .arg("--target")
        .arg(format!("127.0.0.1:{}", echo.port()))
        .arg("--message")
        .arg(msg)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
            .await
            .expect("h2_connect_client.py finishes within 15 s")
            .expect("run h2_connect_client.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "h2_connect_client.py exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("JSON from h2_connect_client.py: {e}: {stdout}"));
        assert_eq!(v["alpn"], "h2", "ALPN h2 on the TLS listener: {v}");
        assert_eq!(v["status"], 200, "HTTP/2 CONNECT: {v}");
        assert_eq!(
            v["received"].as_str(),
            Some(format!("{msg}{}", String::from_utf8_lossy(ECHO_EOF_REPLY)).as_str()),
            "the bytes relayed both ways, then the echo's reply to our END_STREAM: {v}"
        );
        assert_eq!(v["ended"], true, "the proxy ended the stream cleanly: {v}");
        assert!(v["reset"].is_null() && v["goaway"].is_null(), "{v}");
        assert_eq!(echo.accepted(), 1, "one TCP connection to the target");
    })
    .await
}

#[tokio::test]
async fn curl_denied_target_shows_403() {
    bounded_for(Duration::from_secs(30), async {
        let origin = Origin::start().await;
        let proxy = start_proxy("[policy]\ndefault = \"deny\"\n").await;
        let proxy_url = format!("http://{}", proxy.plain);
        let target = origin.url("/hello");

        let out = curl(&["-v", "-p", "-x", &proxy_url, &target]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "curl -p to a denied target must fail"
        );
        assert!(stderr.contains("403"), "curl -v shows the 403: {stderr}");
        assert!(
            stderr
                .to_ascii_lowercase()
                .contains("proxy-status: bauta; error=http_request_denied"),
            "curl -v shows Proxy-Status: {stderr}"
        );

        let out = curl(&[
            "-x",
            &proxy_url,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &target,
        ])
        .await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "403",
            "forwarded request denied"
        );
        assert_eq!(origin.connections(), 0, "origin never contacted");
    })
    .await
}

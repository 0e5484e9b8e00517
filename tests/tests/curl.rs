//! curl as an independent client. curl must be installed: these tests fail,
//! not skip, without it.

use std::process::Output;
use std::time::Duration;

use bauta_tests::*;

/// Run curl with `args`, no proxy settings from the environment, bounded in time.
async fn curl(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("curl");
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(["--max-time", "8", "--silent", "--show-error"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("curl {args:?} did not finish in 10 s"));
    out.unwrap_or_else(|e| panic!("cannot run curl (it is required for these tests): {e}"))
}

fn ok_body(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: curl exited {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn curl_supports(option: &str) -> bool {
    let out = curl(&["--help", "all"]).await;
    String::from_utf8_lossy(&out.stdout).contains(option)
}

#[tokio::test]
async fn curl_tunnels_and_forwards_through_the_plain_listener() {
    bounded_for(Duration::from_secs(30), async {
        let origin = Origin::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let proxy_url = format!("http://{}", proxy.plain);
        let target = origin.url("/hello");

        let out = curl(&["-p", "-x", &proxy_url, &target]).await;
        assert_eq!(ok_body(&out, "curl -p (CONNECT)"), "origin: GET /hello\n");

        let out = curl(&["-x", &proxy_url, &target]).await;
        assert_eq!(ok_body(&out, "curl -x (forward)"), "origin: GET /hello\n");

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
        assert_eq!(ok_body(&out, "curl https proxy -p"), "origin: GET /hello\n");

        let out = curl(&["--proxy", &proxy_url, "--proxy-cacert", &ca, &target]).await;
        assert_eq!(
            ok_body(&out, "curl https proxy forward"),
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

#[tokio::test]
async fn curl_proxy_http2_when_supported() {
    bounded_for(Duration::from_secs(30), async {
        let version = curl(&["--version"]).await;
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        if !version.contains("HTTP2") || !curl_supports("--proxy-http2").await {
            eprintln!(
                "note: this curl has no --proxy-http2 (needs 8.1+ with HTTP2): {}",
                version.lines().next().unwrap_or_default()
            );
            return;
        }
        let certs = make_certs();
        let origin = Origin::start().await;
        let proxy = start_proxy_tls(&certs, ALLOW_LOOPBACK).await;
        let proxy_url = format!("https://{}", proxy.secure());
        let ca = certs.ca_pem.to_string_lossy().into_owned();
        let target = origin.url("/hello");
        let out = curl(&[
            "--proxy-http2",
            "--proxy",
            &proxy_url,
            "--proxy-cacert",
            &ca,
            "-p",
            &target,
        ])
        .await;
        assert_eq!(
            ok_body(&out, "curl --proxy-http2 -p"),
            "origin: GET /hello\n"
        );
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

//! RFC 9114 §4.3 through an independent encoder: the aioquic client's
//! QPACK (pylsqpack) sends pseudo-header fields as static-table references
//! and Huffman-coded literal names (`:protocol` is not in the static
//! table), not the plain literals of `raw_peers`. A repeated pseudo-header
//! — which h3 would resolve by keeping the last — is answered 400, then
//! `H3_MESSAGE_ERROR`, and nothing is dialled; the same request without the
//! repeat is served.

use std::time::Duration;

use bauta_tests::masque::{
    run_raw_h3, start_masque_proxy, udp_path, UdpEcho, ALLOW_LOOPBACK_V4_V6, H3_MESSAGE_ERROR,
};
use bauta_tests::{bounded_for, make_certs, EchoServer};

async fn raw(
    proxy: &bauta_tests::masque::MasqueProxy,
    certs: &bauta_tests::Certs,
    headers: &[String],
) -> (Option<u16>, Option<u64>) {
    let run = run_raw_h3(proxy.secure, certs, headers).await;
    (
        run.str("status").and_then(|s| s.parse().ok()),
        run.u64("reset"),
    )
}

#[tokio::test]
async fn repeated_pseudo_headers_from_aioquic_are_malformed() {
    bounded_for(Duration::from_secs(60), async {
        let certs = make_certs();
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK_V4_V6).await;
        let echo = EchoServer::start().await;
        let udp = UdpEcho::start().await;
        let tcp_target = format!("127.0.0.1:{}", echo.addr.port());
        let authority = proxy.secure_authority();
        let udp_headers = |protocols: &[&str]| {
            let mut h: Vec<String> = vec![":method=CONNECT".into()];
            h.extend(protocols.iter().map(|p| format!(":protocol={p}")));
            h.extend([
                ":scheme=https".into(),
                format!(":authority={authority}"),
                format!(":path={}", udp_path("127.0.0.1", udp.addr.port())),
                "capsule-protocol=?1".into(),
            ]);
            h
        };

        // Controls: served.
        let ok = raw(
            &proxy,
            &certs,
            &[":method=CONNECT".into(), format!(":authority={tcp_target}")],
        )
        .await;
        assert_eq!(ok.0, Some(200), "CONNECT: {ok:?}");
        let ok = raw(&proxy, &certs, &udp_headers(&["connect-udp"])).await;
        assert_eq!(ok.0, Some(200), "CONNECT-UDP: {ok:?}");
        let accepted = echo.accepted();

        // `:authority` twice (a static-table name reference each): the
        // first names a target the policy would refuse.
        let twice = raw(
            &proxy,
            &certs,
            &[
                ":method=CONNECT".into(),
                ":authority=169.254.169.254:80".into(),
                format!(":authority={tcp_target}"),
            ],
        )
        .await;
        assert_eq!(
            twice,
            (Some(400), Some(H3_MESSAGE_ERROR)),
            ":authority twice"
        );

        // `:protocol` twice (Huffman-coded literal names).
        let twice = raw(
            &proxy,
            &certs,
            &udp_headers(&["connect-udp", "connect-udp"]),
        )
        .await;
        assert_eq!(
            twice,
            (Some(400), Some(H3_MESSAGE_ERROR)),
            ":protocol twice"
        );

        // A pseudo-header after a regular field.
        let after = raw(
            &proxy,
            &certs,
            &[
                ":method=CONNECT".into(),
                "x-first=1".into(),
                format!(":authority={tcp_target}"),
            ],
        )
        .await;
        assert_eq!(
            after,
            (Some(400), Some(H3_MESSAGE_ERROR)),
            "after a regular field"
        );

        assert_eq!(
            echo.accepted(),
            accepted,
            "no refused request reached a target"
        );
    })
    .await
}

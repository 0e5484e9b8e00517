//! CONNECT-UDP (RFC 9298) end to end: HTTP/3 with QUIC datagrams and with the
//! capsule fallback (aioquic and a quinn/h3 client), HTTP/2 extended CONNECT
//! and HTTP/1.1 Upgrade with capsules, datagram routing errors, request
//! validation, the idle timeout and the metrics.

use std::time::{Duration, Instant};

use bauta_tests::masque::*;
use bauta_tests::*;
use bytes::Bytes;

const LIMIT: Duration = Duration::from_secs(20);

/// Allow every destination for any protocol, but with no `cidrs`: the SSRF
/// guard still refuses loopback.
const ALLOW_WITHOUT_CIDRS: &str = r#"
[policy]
default = "deny"

[[policy.rule]]
name = "everything"
action = "allow"
"#;

const DENY_ALL: &str = "[policy]\ndefault = \"deny\"\n";

// === HTTP/3, aioquic ===

#[tokio::test]
async fn h3_aioquic_echoes_20_datagrams_of_1_100_and_1200_bytes() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let port = udp.port().to_string();
        for size in ["1", "100", "1200"] {
            let run = run_masque_client(
                proxy.secure,
                &certs,
                "udp",
                &[
                    "--target-port",
                    &port,
                    "--count",
                    "20",
                    "--size",
                    size,
                    // aioquic's default 1200-byte packets cannot carry a
                    // DATAGRAM frame with 1200 bytes of UDP payload.
                    "--max-udp-payload",
                    "1400",
                    // Likewise the proxy's QUIC stack starts at a 1200-byte
                    // path MTU and (rightly, RFC 9298 §5) drops replies that
                    // do not fit until path MTU discovery has raised it.
                    "--pause-ms",
                    if size == "1200" { "1000" } else { "0" },
                ],
            )
            .await;
            assert_eq!(run.str("status"), Some("200"), "size {size}: {run:?}");
            assert_eq!(
                run.str("capsule_protocol"),
                Some("?1"),
                "size {size}: {run:?}"
            );
            if run.u64("echoed") != Some(20) {
                let m = proxy.metrics().await;
                let udp_lines: Vec<&str> =
                    m.lines().filter(|l| l.starts_with("bauta_udp")).collect();
                panic!(
                    "size {size}: 20 datagrams should be echoed; {run:?}\nproxy: {udp_lines:#?}"
                );
            }
            assert!(run.success, "size {size}: {run:?}");
        }
        assert_eq!(udp.received(), 60, "the target saw every datagram once");
    })
    .await
}

#[tokio::test]
async fn h3_without_h3_datagram_setting_falls_back_to_capsules() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let port = udp.port().to_string();
        let run = run_masque_client(
            proxy.secure,
            &certs,
            "udp",
            &[
                "--no-datagram-setting",
                "--target-port",
                &port,
                "--count",
                "10",
                "--size",
                "300",
            ],
        )
        .await;
        assert_eq!(run.str("status"), Some("200"), "{run:?}");
        assert_eq!(
            run.u64("echoed"),
            Some(10),
            "replies as DATAGRAM capsules on the request stream: {run:?}"
        );
        assert_eq!(
            run.u64("quic_datagrams_unread"),
            Some(0),
            "no QUIC DATAGRAM frames to a client that did not send SETTINGS_H3_DATAGRAM: {run:?}"
        );
        assert_eq!(udp.received(), 10);
        let down = metric(
            &proxy.metrics().await,
            "bauta_udp_datagrams_total",
            &[("direction", "downstream")],
        );
        assert_eq!(down, 10.0, "downstream datagrams counted");
    })
    .await
}

// === HTTP/3, quinn + h3 ===

#[tokio::test]
async fn h3_connect_udp_on_the_second_request_stream_keeps_exact_datagram_bytes() {
    bounded(async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let mut h3 = H3Client::connect(proxy.secure, &certs).await;

        // Stream 0: a path outside the template → 404.
        let (resp, first) = h3
            .extended_connect("/not/the/template/", &[("capsule-protocol", "?1")])
            .await
            .expect("first request");
        assert_eq!(resp.status(), 404, "{resp:?}");
        assert_eq!(stream_id(&first), 0);

        // Stream 4: the CONNECT-UDP request; its Quarter Stream ID is 1.
        let s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        assert_eq!(
            stream_id(&s),
            4,
            "the CONNECT-UDP request is the second stream"
        );
        let sent = Bytes::from_static(b"\x01\x00hello");
        h3.send_raw_datagram(sent.clone());
        let got = h3
            .recv_datagram(Duration::from_secs(5))
            .await
            .expect("a reply datagram within 5 s");
        assert_eq!(
            got.as_ref(),
            b"\x01\x00hello",
            "reply = Quarter Stream ID 1, Context ID 0, payload"
        );
        assert_eq!(udp.received(), 1);
        // Several more, of several sizes.
        for n in [0usize, 1, 500, 1000] {
            let payload = vec![0xa5u8; n];
            h3.assert_datagram_echo(4, &payload).await;
        }
    })
    .await
}

#[tokio::test]
async fn h3_unknown_context_id_is_dropped_and_counted() {
    bounded(async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let mut h3 = H3Client::connect(proxy.secure, &certs).await;
        let s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        let sid = stream_id(&s);
        h3.assert_datagram_echo(sid, b"first").await;
        assert_eq!(udp.received(), 1);

        // Context ID 2 (client-allocated, never registered): dropped.
        h3.send_datagram(sid, 2, b"not for the target");
        let drops = wait_metric(
            proxy.admin,
            "bauta_udp_drops_total",
            &[("reason", "unknown_context")],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(
            drops, 1.0,
            "bauta_udp_drops_total{{reason=unknown_context}}"
        );
        assert_eq!(
            udp.received(),
            1,
            "the unknown-context datagram was not forwarded"
        );

        // Context 0 still flows, and the very next datagram the client gets
        // is the echo of this one (assert_datagram_echo compares the next
        // datagram exactly): nothing came back for the unknown context.
        h3.assert_datagram_echo(sid, b"after").await;
        assert_eq!(udp.received(), 2);
    })
    .await
}

#[tokio::test]
async fn h3_datagram_for_an_unknown_stream_is_dropped_and_counted() {
    bounded(async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let mut h3 = H3Client::connect(proxy.secure, &certs).await;
        let s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        let sid = stream_id(&s);

        // Quarter Stream ID 50 = stream 200: no such request.
        h3.send_datagram(200, 0, b"nobody home");
        let drops = wait_metric(
            proxy.admin,
            "bauta_udp_drops_total",
            &[("reason", "unknown_stream")],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(drops, 1.0, "bauta_udp_drops_total{{reason=unknown_stream}}");
        assert_eq!(udp.received(), 0, "not forwarded anywhere");

        // The connection and the real flow still work.
        h3.assert_datagram_echo(sid, b"still here").await;
        assert_eq!(udp.received(), 1);
    })
    .await
}

#[tokio::test]
async fn h3_datagram_too_short_for_a_quarter_stream_id_closes_with_h3_datagram_error() {
    bounded(async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let mut h3 = H3Client::connect(proxy.secure, &certs).await;
        let _s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;

        // 0x40 announces a two-byte varint and stops.
        h3.send_raw_datagram(Bytes::from_static(&[0x40]));
        let err = tokio::time::timeout(Duration::from_secs(5), h3.conn.closed())
            .await
            .expect("the proxy closes the connection within 5 s");
        match &err {
            quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
                close.error_code,
                quinn::VarInt::from_u64(H3_DATAGRAM_ERROR).expect("varint"),
                "close code: {err:?}"
            ),
            other => {
                panic!("want an application close with H3_DATAGRAM_ERROR (0x33), got {other:?}")
            }
        }
        assert_eq!(udp.received(), 0);

        // The proxy still serves new connections.
        let mut again = H3Client::connect(proxy.secure, &certs).await;
        let s = again.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        again
            .assert_datagram_echo(stream_id(&s), b"new connection")
            .await;
    })
    .await
}

#[tokio::test]
async fn h3_capsules_on_the_stream_work_beside_quic_datagrams() {
    bounded(async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let mut h3 = H3Client::connect(proxy.secure, &certs).await;
        let mut s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        let sid = stream_id(&s);
        // A DATAGRAM capsule on the stream (RFC 9297 §3.5 allows it on HTTP/3);
        // the client takes QUIC datagrams, so the reply comes as one.
        s.send_data(Bytes::from(datagram_capsule(0, b"via capsule")))
            .await
            .expect("send a capsule");
        let got = h3
            .recv_datagram(Duration::from_secs(5))
            .await
            .expect("reply within 5 s");
        assert_eq!(got, h3_datagram(sid, 0, b"via capsule"));
        assert_eq!(udp.received(), 1);
    })
    .await
}

#[tokio::test]
async fn h3_malformed_capsule_resets_the_stream_with_h3_message_error() {
    bounded(async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let mut h3 = H3Client::connect(proxy.secure, &certs).await;
        let mut s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        // A DATAGRAM capsule of length 0 has no room for its Context ID.
        s.send_data(Bytes::from_static(&[0x00, 0x00]))
            .await
            .expect("send the malformed capsule");
        let (_, end) = tokio::time::timeout(Duration::from_secs(5), h3_read_to_end(&mut s))
            .await
            .expect("the stream ends within 5 s");
        let active = wait_metric(
            proxy.admin,
            "bauta_tunnels_active",
            &[("kind", "connect-udp")],
            |v| v == 0.0,
        )
        .await;
        assert_eq!(active, 0.0, "the flow ended");
        // The connection itself is fine.
        let s2 = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        h3.assert_datagram_echo(stream_id(&s2), b"next flow").await;
        assert_eq!(
            udp.received(),
            1,
            "only the good datagram reached the target"
        );
        // RFC 9297 §3.3 → RFC 9114 §4.1.2: a malformed message is a stream
        // error H3_MESSAGE_ERROR, not a clean end.
        match end {
            StreamEnd::Error(e) => assert!(e.contains("H3_MESSAGE_ERROR"), "reset code: {e}"),
            StreamEnd::Finished => panic!(
                "after a malformed capsule the stream must be reset with H3_MESSAGE_ERROR; \
                 the proxy finished it cleanly (FIN); look for a panic of the proxy's \
                 request task above"
            ),
        }
    })
    .await
}

#[tokio::test]
async fn h3_idle_flow_is_finished_after_the_idle_timeout() {
    bounded(async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let extra = format!("{ALLOW_LOOPBACK}\n[connect_udp]\nidle_timeout_s = 1\n");
        let proxy = start_masque_proxy(&certs, &extra).await;
        let mut h3 = H3Client::connect(proxy.secure, &certs).await;
        let mut s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        h3.assert_datagram_echo(stream_id(&s), b"once").await;
        let quiet_since = Instant::now();
        let (_, end) = tokio::time::timeout(Duration::from_secs(5), h3_read_to_end(&mut s))
            .await
            .expect("the proxy ends the idle flow within 5 s");
        let waited = quiet_since.elapsed();
        assert!(
            matches!(end, StreamEnd::Finished),
            "an idle flow is finished (FIN), not reset: {end:?}"
        );
        assert!(
            waited >= Duration::from_millis(800),
            "ended after {waited:?}, before the 1 s idle timeout"
        );
        let active = wait_metric(
            proxy.admin,
            "bauta_tunnels_active",
            &[("kind", "connect-udp")],
            |v| v == 0.0,
        )
        .await;
        assert_eq!(
            active, 0.0,
            "tunnels_active{{kind=connect-udp}} after the timeout"
        );
    })
    .await
}

#[tokio::test]
async fn metrics_after_connect_udp_traffic() {
    bounded(async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let mut h3 = H3Client::connect(proxy.secure, &certs).await;
        let mut s = h3.connect_udp(&udp_path("127.0.0.1", udp.port())).await;
        let sid = stream_id(&s);
        for p in [&b"abc"[..], b"defgh", b"ij"] {
            h3.assert_datagram_echo(sid, p).await;
        }
        let m = proxy.metrics().await;
        assert_eq!(
            metric(
                &m,
                "bauta_udp_datagrams_total",
                &[("direction", "upstream")]
            ),
            3.0,
            "upstream datagrams"
        );
        assert_eq!(
            metric(
                &m,
                "bauta_udp_datagrams_total",
                &[("direction", "downstream")]
            ),
            3.0,
            "downstream datagrams"
        );
        for dir in ["upstream", "downstream"] {
            assert_eq!(
                metric(
                    &m,
                    "bauta_tunnel_bytes_total",
                    &[("kind", "connect-udp"), ("direction", dir)]
                ),
                10.0,
                "UDP payload bytes {dir}"
            );
        }
        assert_eq!(
            metric(&m, "bauta_tunnels_active", &[("kind", "connect-udp")]),
            1.0,
            "one open flow"
        );
        assert_eq!(
            metric(
                &m,
                "bauta_requests_total",
                &[
                    ("listener", "secure"),
                    ("protocol", "h3"),
                    ("kind", "connect-udp"),
                    ("outcome", "ok")
                ]
            ),
            1.0,
            "requests_total for the CONNECT-UDP request"
        );

        // The client ends the stream: the proxy finishes its side and the gauge drops.
        s.finish().await.expect("finish our side");
        let (_, end) = tokio::time::timeout(Duration::from_secs(5), h3_read_to_end(&mut s))
            .await
            .expect("the proxy ends its side within 5 s");
        assert!(matches!(end, StreamEnd::Finished), "{end:?}");
        let active = wait_metric(
            proxy.admin,
            "bauta_tunnels_active",
            &[("kind", "connect-udp")],
            |v| v == 0.0,
        )
        .await;
        assert_eq!(active, 0.0, "no open flow after the client closed");
    })
    .await
}

// === HTTP/2 extended CONNECT ===

#[tokio::test]
async fn h2_connect_udp_round_trips_capsules() {
    bounded(async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let client = h2_extended_client(proxy.secure, &certs).await;
        let (parts, stream) = h2_connect_udp(
            &client,
            &proxy.secure_authority(),
            &udp_path("127.0.0.1", udp.port()),
        )
        .await;
        assert_eq!(parts.status, 200, "{parts:?}");
        assert_eq!(
            parts
                .headers
                .get("capsule-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("?1"),
            "{parts:?}"
        );
        let mut stream = stream.expect("stream on 200");
        for i in 0..5u8 {
            stream
                .assert_echo(&vec![i; 10 + 100 * usize::from(i)])
                .await;
        }
        assert_eq!(udp.received(), 5);
        let ok = metric(
            &proxy.metrics().await,
            "bauta_requests_total",
            &[
                ("protocol", "h2"),
                ("kind", "connect-udp"),
                ("outcome", "ok"),
            ],
        );
        assert_eq!(ok, 1.0);
    })
    .await
}

/// Two CONNECT-UDP flows on one HTTP/2 connection; a malformed capsule on
/// the second. Returns how that stream ended (data after it, and the h2
/// error if it was reset), after checking that the other flow, a new
/// connection and the target saw nothing of it.
async fn h2_malformed_capsule_end() -> (Vec<u8>, Option<h2::Error>) {
    let certs = make_certs();
    let udp = UdpEcho::start().await;
    let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
    let authority = proxy.secure_authority();
    let path = udp_path("127.0.0.1", udp.port());
    let client = h2_extended_client(proxy.secure, &certs).await;
    let (_, good) = h2_connect_udp(&client, &authority, &path).await;
    let mut good = good.expect("first flow");
    let (_, bad) = h2_connect_udp(&client, &authority, &path).await;
    let mut bad = bad.expect("second flow");
    good.assert_echo(b"before").await;

    bad.send_raw(&[0x00, 0x00]);
    // Read the bad stream to its end, keeping the h2 error if it is reset.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        let mut data = Vec::new();
        loop {
            match bad.recv.data().await {
                Some(Ok(d)) => {
                    let _ = bad.recv.flow_control().release_capacity(d.len());
                    data.extend_from_slice(&d);
                }
                Some(Err(e)) => return (data, Some(e)),
                None => return (data, None),
            }
        }
    })
    .await
    .expect("the malformed stream ends within 5 s");

    // The other stream on the same connection, and a new connection, work.
    good.assert_echo(b"after").await;
    let other = h2_extended_client(proxy.secure, &certs).await;
    let (parts, s) = h2_connect_udp(&other, &authority, &path).await;
    assert_eq!(parts.status, 200);
    s.expect("flow").assert_echo(b"new connection").await;
    assert_eq!(udp.received(), 3, "the malformed capsule forwarded nothing");
    assert!(
        end.0.is_empty(),
        "no capsule comes back after a malformed one: {:?}",
        end.0
    );
    end
}

/// README: on HTTP/2 a malformed capsule ends that stream — END_STREAM,
/// since hyper cannot reset an upgraded stream with a code — and nothing
/// else on the connection.
#[tokio::test]
async fn h2_malformed_capsule_ends_only_that_stream() {
    bounded(async {
        let (_, err) = h2_malformed_capsule_end().await;
        assert!(err.is_none(), "END_STREAM, as the README says: {err:?}");
    })
    .await
}

/// The RFC's answer (RFC 9297 §3.3 → RFC 9113 §8.1.1): a stream error of
/// type PROTOCOL_ERROR. Out of reach while hyper owns the upgraded stream.
#[tokio::test]
#[ignore = "hyper limitation: an upgraded HTTP/2 stream cannot be reset with a code; the proxy ends it with END_STREAM (then RST_STREAM NO_ERROR) instead of RST_STREAM PROTOCOL_ERROR"]
async fn h2_malformed_capsule_resets_only_that_stream() {
    bounded(async {
        let (_, err) = h2_malformed_capsule_end().await;
        let err = err.unwrap_or_else(|| {
            panic!(
                "after a malformed capsule the stream must be reset (RST_STREAM \
                 PROTOCOL_ERROR); the proxy ended it with END_STREAM"
            )
        });
        assert!(
            err.is_reset() && err.is_remote(),
            "want RST_STREAM from the proxy, got {err:?}"
        );
        assert_eq!(
            err.reason(),
            Some(h2::Reason::PROTOCOL_ERROR),
            "RST_STREAM code: {err:?}"
        );
    })
    .await
}

// === HTTP/1.1 Upgrade ===

#[tokio::test]
async fn h1_connect_udp_upgrade_round_trips_capsules() {
    bounded(async {
        let udp = UdpEcho::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let authority = proxy.plain.to_string();
        let req = h1_connect_udp_request(&authority, &udp_path("127.0.0.1", udp.port()), &[]);
        let (head, mut s) = h1_upgrade(proxy.plain, &req).await;
        assert_eq!(head.status, 101, "{head:?}");
        assert!(
            head.header("upgrade")
                .is_some_and(|v| v.eq_ignore_ascii_case("connect-udp")),
            "Upgrade: connect-udp; {head:?}"
        );
        assert!(
            head.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
            "Connection: upgrade; {head:?}"
        );
        assert_eq!(head.header("capsule-protocol"), Some("?1"), "{head:?}");
        assert_eq!(head.header("content-length"), None, "{head:?}");

        for i in 0..5u8 {
            s.assert_echo(&vec![b'a' + i; 1 + 300 * usize::from(i)])
                .await;
        }
        // Unknown context IDs and unknown capsule types are dropped.
        s.send_datagram(2, b"context two").await;
        s.send_raw(&[0x17, 0x03, 1, 2, 3]).await; // a grease capsule
        s.assert_echo(b"last").await;
        assert_eq!(udp.received(), 6, "context 2 was not forwarded");
        let m = fetch_metrics(proxy.admin).await;
        assert_eq!(
            metric(
                &m,
                "bauta_udp_drops_total",
                &[("reason", "unknown_context")]
            ),
            1.0
        );
        assert_eq!(
            metric(
                &m,
                "bauta_requests_total",
                &[
                    ("protocol", "http1"),
                    ("kind", "connect-udp"),
                    ("outcome", "ok")
                ]
            ),
            1.0
        );
    })
    .await
}

#[tokio::test]
async fn h1_malformed_capsule_closes_the_connection() {
    bounded(async {
        let udp = UdpEcho::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let req = h1_connect_udp_request(
            &proxy.plain.to_string(),
            &udp_path("127.0.0.1", udp.port()),
            &[],
        );
        let (head, mut s) = h1_upgrade(proxy.plain, &req).await;
        assert_eq!(head.status, 101, "{head:?}");
        s.assert_echo(b"ok").await;
        s.send_raw(&[0x00, 0x00]).await;
        expect_closed(
            &mut s.io,
            Duration::from_secs(5),
            "after a malformed capsule",
        )
        .await;
        assert_eq!(udp.received(), 1);
        // The listener still works.
        let (head, mut s2) = h1_upgrade(proxy.plain, &req).await;
        assert_eq!(head.status, 101, "{head:?}");
        s2.assert_echo(b"again").await;
    })
    .await
}

// === validation ===

/// What a validation row expects.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Success (101 on HTTP/1.1, 200 on HTTP/3) and a working flow.
    Ok,
    /// This status (and Proxy-Status token, if given).
    Status(u16, Option<&'static str>),
    /// Malformed: 400 on HTTP/1.1; on HTTP/3 a 400, then a reset with H3_MESSAGE_ERROR.
    Malformed,
}

/// Which proxy a row runs against.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Policy {
    AllowLoopback,
    DenyAll,
    AllowWithoutCidrs,
}

struct Row {
    name: &'static str,
    policy: Policy,
    /// Path for the target echo port.
    path: fn(u16) -> String,
    /// Omit `capsule-protocol: ?1`.
    no_capsule_protocol: bool,
    /// Extra header (name, value).
    extra: Option<(&'static str, &'static str)>,
    /// Target the IPv6 echo.
    ipv6: bool,
    want: Want,
}

fn rows() -> Vec<Row> {
    let base = Row {
        name: "",
        policy: Policy::AllowLoopback,
        path: |p| udp_path("127.0.0.1", p),
        no_capsule_protocol: false,
        extra: None,
        ipv6: false,
        want: Want::Ok,
    };
    vec![
        Row {
            name: "well-formed",
            ..base
        },
        Row {
            name: "path outside the template",
            path: |p| format!("/.well-known/masque/tcp/127.0.0.1/{p}/"),
            want: Want::Status(404, None),
            ..base
        },
        Row {
            name: "target_port 0",
            path: |_| udp_path("127.0.0.1", 0),
            want: Want::Status(400, None),
            ..base
        },
        Row {
            name: "bad target_host",
            path: |p| udp_path("exa%2Fmple", p),
            want: Want::Status(400, None),
            ..base
        },
        Row {
            name: "IPv6 literal ::1",
            path: |p| udp_path("%3A%3A1", p),
            ipv6: true,
            ..base
        },
        Row {
            name: "no capsule-protocol (accepted)",
            no_capsule_protocol: true,
            ..base
        },
        Row {
            name: "content-length: 0",
            extra: Some(("content-length", "0")),
            want: Want::Malformed,
            ..base
        },
        Row {
            name: "denied by default",
            policy: Policy::DenyAll,
            want: Want::Status(403, Some("http_request_denied")),
            ..base
        },
        Row {
            name: "loopback without a cidrs rule",
            policy: Policy::AllowWithoutCidrs,
            want: Want::Status(502, Some("destination_ip_prohibited")),
            ..base
        },
    ]
}

struct Proxies {
    allow: MasqueProxy,
    deny: MasqueProxy,
    no_cidrs: MasqueProxy,
}

impl Proxies {
    async fn start(certs: &Certs) -> Proxies {
        Proxies {
            allow: start_masque_proxy(certs, ALLOW_LOOPBACK_V4_V6).await,
            deny: start_masque_proxy(certs, DENY_ALL).await,
            no_cidrs: start_masque_proxy(certs, ALLOW_WITHOUT_CIDRS).await,
        }
    }

    fn get(&self, p: Policy) -> &MasqueProxy {
        match p {
            Policy::AllowLoopback => &self.allow,
            Policy::DenyAll => &self.deny,
            Policy::AllowWithoutCidrs => &self.no_cidrs,
        }
    }
}

#[tokio::test]
async fn h3_connect_udp_validation() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let v4 = UdpEcho::start().await;
        assert!(
            has_ipv6_loopback(),
            "precondition: the IPv6 row needs ::1 on loopback (check `ip -6 addr show lo`)"
        );
        let v6 = UdpEcho::start_on("[::1]:0".parse().expect("addr")).await;
        let proxies = Proxies::start(&certs).await;
        for row in rows() {
            let echo = if row.ipv6 { &v6 } else { &v4 };
            let proxy = proxies.get(row.policy);
            let mut h3 = H3Client::connect(proxy.secure, &certs).await;
            let mut headers = Vec::new();
            if !row.no_capsule_protocol {
                headers.push(("capsule-protocol", "?1"));
            }
            if let Some(h) = row.extra {
                headers.push(h);
            }
            let before = echo.received();
            let path = (row.path)(echo.port());
            let what = format!("HTTP/3 {}: {path}", row.name);
            let result = h3.extended_connect(&path, &headers).await;
            match row.want {
                Want::Ok => {
                    let (resp, s) = result.unwrap_or_else(|e| panic!("{what}: {e:?}"));
                    assert_eq!(resp.status(), 200, "{what}: {resp:?}");
                    assert_eq!(
                        resp.headers()
                            .get("capsule-protocol")
                            .and_then(|v| v.to_str().ok()),
                        Some("?1"),
                        "{what}: {resp:?}"
                    );
                    h3.assert_datagram_echo(stream_id(&s), row.name.as_bytes())
                        .await;
                    assert_eq!(echo.received(), before + 1, "{what}");
                }
                Want::Status(status, token) => {
                    let (resp, _) = result.unwrap_or_else(|e| panic!("{what}: {e:?}"));
                    assert_eq!(resp.status(), status, "{what}: {resp:?}");
                    if let Some(token) = token {
                        let ps = proxy_status_of(resp.headers())
                            .unwrap_or_else(|| panic!("{what}: no proxy-status: {resp:?}"));
                        assert_proxy_status(&ps, token, &what);
                    }
                    assert_eq!(echo.received(), before, "{what}: nothing forwarded");
                }
                Want::Malformed => {
                    // aioquic: the stream is reset with H3_MESSAGE_ERROR (the
                    // 400 before it is asserted by
                    // `h3_connect_udp_with_content_length_gets_400_before_the_reset`).
                    let run = aioquic_raw(proxy, &certs, &path, &headers).await;
                    assert_h3_malformed_reset(&run, &format!("{what} (aioquic)"));
                    assert_eq!(echo.received(), before, "{what}: nothing forwarded");
                    // The h3 crate: quinn surfaces the reset before data
                    // buffered ahead of it, so the 400 may be invisible here;
                    // the reset code must not be.
                    match result {
                    Ok((resp, mut s)) => {
                        assert_eq!(resp.status(), 400, "{what}: {resp:?}");
                        let (_, end) = h3_read_to_end(&mut s).await;
                        assert!(
                            matches!(&end, StreamEnd::Error(e) if e.contains("H3_MESSAGE_ERROR")),
                            "{what}: after the 400, a reset with H3_MESSAGE_ERROR: {end:?}"
                        );
                    }
                    Err(e) => assert!(
                        format!("{e:?}").contains("H3_MESSAGE_ERROR"),
                        "{what}: reset with H3_MESSAGE_ERROR: {e:?}"
                    ),
                    }
                }
            }
        }
        assert_eq!(v6.received(), 1, "the IPv6 row ran and sent one datagram");
    })
    .await
}

/// An aioquic `raw --wait-end` extended CONNECT (`connect-udp`) to `path`
/// on the proxy's HTTP/3 listener, with the extra header fields.
async fn aioquic_raw(
    proxy: &MasqueProxy,
    certs: &Certs,
    path: &str,
    headers: &[(&str, &str)],
) -> PyRun {
    let authority = format!("127.0.0.1:{}", proxy.secure.port());
    let mut args: Vec<String> = vec!["--wait-end".into()];
    let mut fields = vec![
        (":method", "CONNECT"),
        (":protocol", "connect-udp"),
        (":scheme", "https"),
        (":authority", authority.as_str()),
        (":path", path),
    ];
    fields.extend(headers.iter().copied());
    for (k, v) in fields {
        args.push("--header".into());
        args.push(format!("{k}={v}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_masque_client(proxy.secure, certs, "raw", &args).await
}

/// README: `Content-Length` on a CONNECT-UDP request is "400 (HTTP/3: then
/// H3_MESSAGE_ERROR)". aioquic reports the stream's events in order, so it
/// sees whether the 400 head arrived before the reset.
#[tokio::test]
async fn h3_connect_udp_with_content_length_gets_400_before_the_reset() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let udp = UdpEcho::start().await;
        let proxy = start_masque_proxy(&certs, ALLOW_LOOPBACK).await;
        let path = udp_path("127.0.0.1", udp.port());
        let run = aioquic_raw(
            &proxy,
            &certs,
            &path,
            &[("capsule-protocol", "?1"), ("content-length", "0")],
        )
        .await;
        assert_h3_malformed_answer(&run, "HTTP/3 CONNECT-UDP with content-length: 0");
        assert_eq!(udp.received(), 0, "nothing forwarded");
    })
    .await
}

#[tokio::test]
async fn h1_connect_udp_validation() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let v4 = UdpEcho::start().await;
        assert!(
            has_ipv6_loopback(),
            "precondition: the IPv6 row needs ::1 on loopback (check `ip -6 addr show lo`)"
        );
        let v6 = UdpEcho::start_on("[::1]:0".parse().expect("addr")).await;
        let proxies = Proxies::start(&certs).await;
        for row in rows() {
            let echo = if row.ipv6 { &v6 } else { &v4 };
            let proxy = proxies.get(row.policy);
            let authority = proxy.plain.to_string();
            let path = (row.path)(echo.port());
            let mut req = format!(
                "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: connect-udp\r\n"
            );
            if !row.no_capsule_protocol {
                req.push_str("Capsule-Protocol: ?1\r\n");
            }
            if let Some((k, v)) = row.extra {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
            req.push_str("\r\n");
            let what = format!("HTTP/1.1 {}: {path}", row.name);
            let before = echo.received();
            let (head, mut s) = h1_upgrade(proxy.plain, &req).await;
            match row.want {
                Want::Ok => {
                    assert_eq!(head.status, 101, "{what}: {head:?}");
                    assert_eq!(head.header("capsule-protocol"), Some("?1"), "{what}: {head:?}");
                    s.assert_echo(row.name.as_bytes()).await;
                    assert_eq!(echo.received(), before + 1, "{what}");
                }
                Want::Status(status, token) => {
                    assert_eq!(head.status, status, "{what}: {head:?}");
                    if let Some(token) = token {
                        head.assert_error(status, token, &what);
                    }
                    assert_eq!(echo.received(), before, "{what}: nothing forwarded");
                }
                Want::Malformed => {
                    assert_eq!(head.status, 400, "{what}: {head:?}");
                    assert_eq!(echo.received(), before, "{what}: nothing forwarded");
                }
            }
        }

        // HTTP/1.1 only: the Upgrade handshake itself.
        let path = udp_path("127.0.0.1", v4.port());
        let authority = proxies.allow.plain.to_string();
        let cases = [
            (
                "no Connection: Upgrade",
                format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n"),
            ),
            (
                "POST with Upgrade: connect-udp",
                format!("POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n"),
            ),
        ];
        for (name, req) in cases {
            let (head, _) = h1_upgrade(proxies.allow.plain, &req).await;
            assert_eq!(head.status, 400, "HTTP/1.1 {name}: {head:?}");
        }
        assert_eq!(v4.received(), 2, "only the two successful rows sent anything");
        assert_eq!(v6.received(), 1, "the IPv6 row ran and sent one datagram");
    })
    .await
}

//! The gateway HTTP/3 client (`bauta::gateway::h3`) against a real
//! in-process Bauta with an h3 listener: CONNECT tunnels (one and twenty at
//! once on one connection), CONNECT-UDP over QUIC datagrams, a forwarded
//! `http://` GET and POST, a policy refusal as a response, secondary
//! certificates validated with the client's exporter, a client certificate
//! (mTLS) the gateway's policy sees, and GOAWAY on a graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bauta::gateway::h3::{self as gw, H3Connection, H3Error, H3Options, H3Request};
use bauta_tests::client_pki::{mtls_h3_config, ClientPki};
use bauta_tests::masque::{start_masque_proxy, udp_path, wait_metric, MasqueProxy, UdpEcho};
use bauta_tests::seccert_env::{config_text, KeyKind, OriginEntry, Pki, SeccertProxy};
use bauta_tests::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(30);

/// A client TLS config on the QUIC provider (SHA-256 suites), trusting
/// `ca`, ALPN h3, with an optional client certificate.
fn gateway_tls(
    ca: &CertificateDer<'static>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("add the test CA");
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(bauta::tls::quic_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots);
    let mut cfg = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h3".to_vec()];
    Arc::new(cfg)
}

fn options(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> H3Options {
    H3Options {
        addr,
        server_name: "localhost".into(),
        tls,
        codepoints: Default::default(),
        keepalive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        max_field_section: 64 * 1024,
    }
}

/// A Bauta with an HTTP/3 listener and `policy` (TOML), and a gateway
/// connection to it (no client certificate).
async fn gateway(policy: &str) -> (Certs, MasqueProxy, quinn::Endpoint, H3Connection) {
    let certs = make_certs();
    let proxy = start_masque_proxy(&certs, policy).await;
    let (ep, conn) = connect(&options(proxy.secure, gateway_tls(&certs.ca_der, None))).await;
    (certs, proxy, ep, conn)
}

/// A client endpoint on 127.0.0.1 and a gateway connection through it.
async fn connect(opts: &H3Options) -> (quinn::Endpoint, H3Connection) {
    let endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("QUIC endpoint");
    let conn = gw::connect(&endpoint, opts)
        .await
        .unwrap_or_else(|e| panic!("connect to the gateway: {e}"));
    (endpoint, conn)
}

#[tokio::test]
async fn connect_tunnel_echoes_100_kib_then_half_closes() {
    bounded_for(LIMIT, async {
        let echo = EchoServer::start().await;
        let (_certs, _proxy, _ep, conn) = gateway(ALLOW_LOOPBACK).await;
        assert!(conn.is_usable());
        let (head, stream) = conn
            .open(
                H3Request::connect(format!("127.0.0.1:{}", echo.port())),
                false,
            )
            .await
            .expect("CONNECT");
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(conn.active_streams(), 1);
        let (mut send, mut recv) = stream.into_split();
        let data: Vec<u8> = (0..100 * 1024u32)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let out = data.clone();
        let writer = tokio::spawn(async move {
            // One write larger than a DATA frame the client makes (64 KiB),
            // one vectored write (one frame), then uneven writes (one
            // frame each).
            let (big, rest) = out.split_at(70 * 1024);
            send.write_all(big).await.expect("write into the tunnel");
            let (a, rest) = rest.split_at(1000);
            let (b, rest) = rest.split_at(1500);
            let bufs = [std::io::IoSlice::new(a), std::io::IoSlice::new(b)];
            let n = send.write_vectored(&bufs).await.expect("vectored write");
            assert_eq!(n, 2500, "both slices in one DATA frame");
            for piece in rest.chunks(3001) {
                send.write_all(piece).await.expect("write into the tunnel");
            }
            send.shutdown().await.expect("half-close");
            send
        });
        let mut got = Vec::new();
        recv.read_to_end(&mut got).await.expect("read the echo");
        let mut want = data;
        want.extend_from_slice(ECHO_EOF_REPLY);
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "100 KiB echoed intact, then the echo's EOF reply"
        );
        drop(writer.await.expect("writer"));
        drop(recv);
        assert_eq!(conn.active_streams(), 0);
        assert_eq!(echo.accepted(), 1);
    })
    .await
}

#[tokio::test]
async fn twenty_concurrent_tunnels_share_one_connection() {
    bounded_for(LIMIT, async {
        let echo = EchoServer::start().await;
        let (_certs, _proxy, _ep, conn) = gateway(ALLOW_LOOPBACK).await;
        let target = format!("127.0.0.1:{}", echo.port());
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let conn = conn.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let (head, mut s) = conn
                        .open(H3Request::connect(target), false)
                        .await
                        .expect("CONNECT");
                    assert_eq!(head.status, 200);
                    let msg = format!("tunnel {i} says hello").repeat(50);
                    assert_echo(&mut s, msg.as_bytes()).await;
                    assert_half_close(&mut s).await;
                    s.stream_id()
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.expect("tunnel task"));
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 20, "twenty distinct request streams");
        assert_eq!(echo.accepted(), 20);
        assert_eq!(conn.active_streams(), 0);
        assert_eq!(conn.quic().stable_id(), conn.clone().quic().stable_id());
    })
    .await
}

#[tokio::test]
async fn connect_udp_datagrams_come_back_byte_exact() {
    bounded_for(LIMIT, async {
        let udp = UdpEcho::start().await;
        let (_certs, proxy, _ep, conn) = gateway(ALLOW_LOOPBACK).await;
        assert!(conn.datagrams_enabled(), "{:?}", conn.peer_settings());
        assert!(conn.peer_settings().extended_connect);
        let req =
            H3Request::connect_udp(proxy.secure_authority(), udp_path("127.0.0.1", udp.port()));
        let (head, mut stream) = conn.open(req, false).await.expect("CONNECT-UDP");
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(
            head.headers.get("capsule-protocol").map(|v| v.as_bytes()),
            Some(&b"?1"[..])
        );
        let mut flow = stream.take_flow().expect("a flow registered by open");
        assert_eq!(flow.stream_id(), stream.stream_id());
        for size in [0usize, 1, 100, 1200] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8 ^ 0x5a).collect();
            // Context ID 0, then the UDP payload.
            let mut dgram = vec![0x00];
            dgram.extend_from_slice(&payload);
            let mut got = None;
            for _attempt in 0..3 {
                assert_eq!(flow.send(&dgram), bauta::tunnel::udp::DatagramSent::Sent);
                if let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(2), flow.recv()).await
                {
                    got = Some(d);
                    break;
                }
            }
            let got: Bytes = got.unwrap_or_else(|| panic!("no echo of a {size}-byte datagram"));
            assert_eq!(
                &got[..],
                &dgram[..],
                "size {size}: exactly our bytes, Context ID first"
            );
        }
        // Far too large for one QUIC DATAGRAM frame: reported, not sent.
        let huge = vec![0u8; 4000];
        assert_eq!(flow.send(&huge), bauta::tunnel::udp::DatagramSent::TooLarge);
    })
    .await
}

#[tokio::test]
async fn forwarded_get_and_post_through_open() {
    bounded_for(LIMIT, async {
        let origin = Origin::start().await;
        let (_certs, _proxy, _ep, conn) = gateway(ALLOW_LOOPBACK).await;
        let authority = format!("127.0.0.1:{}", origin.port());

        let req = H3Request::new(http::Method::GET, "http", authority.clone(), "/x");
        let (head, stream) = conn.open(req, true).await.expect("GET");
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(
            head.headers.get("x-origin").map(|v| v.as_bytes()),
            Some(&b"yes"[..])
        );
        let (_send, recv) = stream.into_split();
        let body = recv.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"origin: GET /x\n");
        let seen = origin.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].uri, "/x");

        // A request body streamed while the response comes back.
        let mut req = H3Request::new(http::Method::POST, "http", authority, "/echo");
        req.headers
            .insert("content-type", "text/plain".parse().expect("value"));
        let (mut send, pending) = conn.send_request(req, false).await.expect("POST");
        let (tx, body) = channel_body();
        let upload =
            tokio::spawn(async move { gw::send_body(&mut send, bauta::body::boxed(body)).await });
        for part in ["one,", "two,", "three"] {
            tx.send(Bytes::from(part)).await.expect("body part");
        }
        drop(tx);
        let (head, recv) = pending.response().await.expect("POST response");
        assert_eq!(head.status, 200, "{head:?}");
        let body = recv.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"one,two,three");
        upload
            .await
            .expect("upload task")
            .expect("request body sent");
    })
    .await
}

#[tokio::test]
async fn a_policy_refusal_is_a_response_with_proxy_status() {
    bounded_for(LIMIT, async {
        let echo = EchoServer::start().await;
        let (_certs, _proxy, _ep, conn) = gateway("[policy]\ndefault = \"deny\"\n").await;
        let (head, _stream) = conn
            .open(
                H3Request::connect(format!("127.0.0.1:{}", echo.port())),
                false,
            )
            .await
            .expect("a 403 is a response, not an error");
        assert_eq!(head.status, 403);
        let ps = head
            .headers
            .get("proxy-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Proxy-Status: {head:?}"));
        assert_proxy_status(ps, "http_request_denied", "gateway client CONNECT denied");
        assert_eq!(echo.accepted(), 0);
        assert!(conn.is_usable(), "a refusal leaves the connection usable");
    })
    .await
}

#[tokio::test]
async fn secondary_certificates_validate_with_the_client_exporter() {
    bounded_for(LIMIT, async {
        let pki = Pki::new();
        let origin = pki.origin("origin.test", KeyKind::EcdsaP256, "origin");
        let upstream = Origin::start().await;
        let text = config_text(
            &pki,
            "eager",
            &[OriginEntry {
                cert: &origin,
                upstream: format!("http://{}", upstream.addr),
            }],
            "",
        );
        let proxy = SeccertProxy::start(&text).await;
        let (_ep, conn) =
            connect(&options(proxy.secure, gateway_tls(&pki.certs.ca_der, None))).await;
        assert!(conn.peer_offers_certs(), "{:?}", conn.peer_settings());
        let mut certs = conn.certificates();
        let list = certs
            .wait_for(|v| !v.is_empty())
            .await
            .expect("certificates channel")
            .clone();
        assert_eq!(list.len(), 1, "one origin, one authenticator");
        let offered = bauta::tls::quic_provider()
            .signature_verification_algorithms
            .supported_schemes();
        let exporter = conn.exporter().expect("exporter");
        let mut validator = bauta::seccert::Validator::new(exporter, &offered);
        let validated = validator
            .validate(&list[0])
            .unwrap_or_else(|e| panic!("the gateway's authenticator: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.certs.ca_der.clone()).expect("CA");
        let verifier = bauta::seccert::webpki_verifier(Arc::new(roots)).expect("verifier");
        let name = rustls::pki_types::ServerName::try_from("origin.test").expect("name");
        validated
            .accept_for(verifier.as_ref(), &name, rustls::pki_types::UnixTime::now())
            .expect("the certificate covers origin.test");
    })
    .await
}

#[tokio::test]
async fn the_client_certificate_names_the_identity() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let pki = ClientPki::new("gateway-mtls");
        let sidecar = pki.issue("sidecar", Some("spiffe://corp/sidecar/a"), "sidecar");
        let echo = EchoServer::start().await;
        let proxy = start_proxy(&mtls_h3_config(
            &certs,
            &pki,
            "sidecars",
            "spiffe://corp/sidecar/*",
        ))
        .await;
        let addr = proxy.listener("mtls");
        let (_ep, conn) = connect(&options(
            addr,
            gateway_tls(&certs.ca_der, Some((sidecar.chain, sidecar.key))),
        ))
        .await;
        let (head, mut s) = conn
            .open(
                H3Request::connect(format!("127.0.0.1:{}", echo.port())),
                false,
            )
            .await
            .expect("CONNECT");
        assert_eq!(
            head.status, 200,
            "only the identity's rule allows it: {head:?}"
        );
        assert_echo(&mut s, b"identified").await;
        let n = wait_metric(
            proxy.admin,
            "bauta_policy_decisions_total",
            &[("verdict", "allow"), ("rule", "sidecars")],
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(n, 1.0);

        // Without the certificate the handshake is refused.
        let endpoint =
            quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("QUIC endpoint");
        let refused =
            gw::connect(&endpoint, &options(addr, gateway_tls(&certs.ca_der, None))).await;
        assert!(refused.is_err(), "no client certificate, no connection");
    })
    .await
}

#[tokio::test]
async fn goaway_on_graceful_shutdown_makes_the_connection_unusable() {
    bounded_for(LIMIT, async {
        let echo = EchoServer::start().await;
        let (_certs, proxy, _ep, conn) = gateway(ALLOW_LOOPBACK).await;
        let (head, mut s) = conn
            .open(
                H3Request::connect(format!("127.0.0.1:{}", echo.port())),
                false,
            )
            .await
            .expect("CONNECT");
        assert_eq!(head.status, 200);
        assert_echo(&mut s, b"before the shutdown").await;
        let shutdown = tokio::spawn(proxy.shutdown());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while conn.is_usable() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no GOAWAY within 10 s of the shutdown"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(conn.goaway_received(), "unusable because of GOAWAY");
        match conn
            .open(
                H3Request::connect(format!("127.0.0.1:{}", echo.port())),
                false,
            )
            .await
        {
            Err(e @ H3Error::GoAway) => assert!(e.is_retryable()),
            Err(e) => panic!("expected GoAway, got {e}"),
            Ok((h, _)) => panic!("a stream opened after GOAWAY: {h:?}"),
        }
        drop(s);
        drop(conn);
        shutdown.await.expect("shutdown");
    })
    .await
}

// === a scripted gateway: what a real Bauta never sends ===

/// One HTTP/3 frame, encoded here independently of `bauta::wire`.
fn frame(ty: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = bauta_tests::masque::varint(ty);
    out.extend(bauta_tests::masque::varint(payload.len() as u64));
    out.extend_from_slice(payload);
    out
}

/// SETTINGS { H3_DATAGRAM = 1 } as a control stream's first bytes.
fn control_with_settings() -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(frame(0x04, &[0x33, 0x01]));
    out
}

/// A QUIC server speaking just enough HTTP/3: it sends `control` on a
/// control stream (none when `None`), and answers every request stream with
/// `answer` then FIN, or with RESET_STREAM(`reset`) when given.
struct Scripted {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start(
        certs: &Certs,
        control: Option<Vec<u8>>,
        answer: Vec<u8>,
        reset: Option<u32>,
    ) -> Scripted {
        let chain = bauta::tls::load_certs(&certs.cert_pem).expect("certificate");
        let key = bauta::tls::load_key(&certs.key_pem).expect("key");
        let tls = bauta::tls::quic_server_config(chain, key, None).expect("server TLS");
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS");
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("QUIC server");
        let addr = endpoint.local_addr().expect("server address");
        let task = tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let Ok(conn) = incoming.await else { continue };
                let control = control.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut _ctrl = None;
                    if let Some(bytes) = control {
                        let mut s = conn.open_uni().await.expect("control stream");
                        s.write_all(&bytes).await.expect("control bytes");
                        _ctrl = Some(s);
                    }
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let mut buf = [0u8; 4096];
                        let _ = recv.read(&mut buf).await;
                        match reset {
                            Some(code) => {
                                let _ = send.reset(code.into());
                            }
                            None => {
                                let _ = send.write_all(&answer).await;
                                let _ = send.finish();
                            }
                        }
                        // Keep the streams until the peer is done with them.
                        tokio::spawn(async move {
                            let _ = send.stopped().await;
                            drop(recv);
                        });
                    }
                });
            }
        });
        Scripted { addr, task }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `CONNECT 127.0.0.1:9` to a scripted gateway answering `answer`.
async fn scripted_open(
    answer: Vec<u8>,
    reset: Option<u32>,
    max_field_section: usize,
) -> Result<(http::response::Parts, gw::H3Stream), H3Error> {
    let certs = make_certs();
    let gateway = Scripted::start(&certs, Some(control_with_settings()), answer, reset).await;
    let mut opts = options(gateway.addr, gateway_tls(&certs.ca_der, None));
    opts.max_field_section = max_field_section;
    let (_ep, conn) = connect(&opts).await;
    let r = conn.open(H3Request::connect("127.0.0.1:9"), false).await;
    drop(gateway);
    r
}

#[tokio::test]
async fn interim_responses_are_skipped_and_trailers_end_the_body() {
    bounded_for(LIMIT, async {
        let mut answer = frame(0x01, &[0x00, 0x00, 0xC0 | 24]); // :status 103
        answer.extend(frame(0x01, &[0x00, 0x00, 0xC0 | 25])); // :status 200
        answer.extend(frame(0x21, b"grease")); // unknown: skipped
        answer.extend(frame(0x00, b"h"));
        answer.extend(frame(0x00, b"i"));
        let mut trailers = vec![0x00, 0x00, 0x23];
        trailers.extend(b"x-t");
        trailers.extend([0x01, b'1']);
        answer.extend(frame(0x01, &trailers));
        let (head, stream) = scripted_open(answer, None, 1024).await.expect("response");
        assert_eq!(head.status, 200, "the 103 was passed over");
        let (_send, recv) = stream.into_split();
        let collected = recv.into_body().collect().await.expect("body");
        assert_eq!(
            collected
                .trailers()
                .and_then(|t| t.get("x-t"))
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!(&collected.to_bytes()[..], b"hi");
    })
    .await
}

#[tokio::test]
async fn malformed_responses_and_resets_are_errors_not_panics() {
    bounded_for(LIMIT, async {
        let mut data_first = frame(0x00, b"x");
        data_first.extend(frame(0x01, &[0x00, 0x00, 0xD9]));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("DATA before HEADERS", data_first),
            ("dynamic table", frame(0x01, &[0x01, 0x00, 0xD9])),
            ("no :status", frame(0x01, &[0x00, 0x00, 0xC2])),
            ("oversized section", frame(0x01, &[0u8; 100])),
            ("cut inside a frame", frame(0x00, b"abc")[..3].to_vec()),
            ("ends without a response", Vec::new()),
            ("control frame on a request stream", frame(0x07, &[0x00])),
        ];
        for (what, answer) in cases {
            match scripted_open(answer, None, 64).await {
                Err(H3Error::Malformed(why)) => assert!(!why.is_empty(), "{what}"),
                Err(e) => panic!("{what}: expected Malformed, got {e}"),
                Ok((h, _)) => panic!("{what}: accepted {h:?}"),
            }
        }
        match scripted_open(Vec::new(), Some(0x0102), 1024).await {
            Err(H3Error::StreamReset { code }) => assert_eq!(code.0, 0x0102),
            other => panic!("reset with H3_INTERNAL_ERROR: {:?}", other.map(|(h, _)| h)),
        }
        match scripted_open(Vec::new(), Some(0x010b), 1024).await {
            Err(e @ H3Error::GoAway) => assert!(e.is_retryable(), "H3_REQUEST_REJECTED is a retry"),
            other => panic!(
                "reset with H3_REQUEST_REJECTED: {:?}",
                other.map(|(h, _)| h)
            ),
        }
    })
    .await
}

#[tokio::test]
async fn connect_fails_cleanly_on_bad_settings_silence_and_bad_options() {
    bounded_for(LIMIT, async {
        let certs = make_certs();
        let endpoint =
            quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
        // A duplicate setting: we close with H3_SETTINGS_ERROR.
        let mut dup = vec![0x00];
        dup.extend(frame(0x04, &[0x33, 0x01, 0x33, 0x01]));
        let gateway = Scripted::start(&certs, Some(dup), Vec::new(), None).await;
        let opts = options(gateway.addr, gateway_tls(&certs.ca_der, None));
        match gw::connect(&endpoint, &opts).await {
            // We closed it ourselves, and say why.
            Err(H3Error::ConnectionLost(why)) => {
                assert!(why.contains("duplicate setting"), "{why}")
            }
            Err(e) => panic!("expected the connection closed, got {e}"),
            Ok(_) => panic!("duplicate settings accepted"),
        }
        // No control stream at all: no SETTINGS within the timeout.
        let silent = Scripted::start(&certs, None, Vec::new(), None).await;
        let mut opts = options(silent.addr, gateway_tls(&certs.ca_der, None));
        opts.connect_timeout = Duration::from_millis(500);
        assert!(matches!(
            gw::connect(&endpoint, &opts).await,
            Err(H3Error::ConnectTimeout)
        ));
        // Nobody there at all.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut opts = options(
            udp.local_addr().expect("addr"),
            gateway_tls(&certs.ca_der, None),
        );
        opts.connect_timeout = Duration::from_millis(300);
        assert!(matches!(
            gw::connect(&endpoint, &opts).await,
            Err(H3Error::ConnectTimeout)
        ));
        // A TLS config with a SHA-384 suite, or without ALPN h3: refused up front.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certs.ca_der.clone()).expect("CA");
        let mut sha384 = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
        sha384.alpn_protocols = vec![b"h3".to_vec()];
        let opts = options(gateway.addr, Arc::new(sha384));
        assert!(matches!(
            gw::connect(&endpoint, &opts).await,
            Err(H3Error::Config(_))
        ));
        let mut no_alpn = (*gateway_tls(&certs.ca_der, None)).clone();
        no_alpn.alpn_protocols.clear();
        let opts = options(gateway.addr, Arc::new(no_alpn));
        assert!(matches!(
            gw::connect(&endpoint, &opts).await,
            Err(H3Error::Config(_))
        ));
    })
    .await
}

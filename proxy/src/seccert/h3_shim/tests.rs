//! The shim over real QUIC: an h3 server built the way the front builds it,
//! and a hand-written client that reads and writes raw frames.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::wire::varint;

const OUR_SETTING: u64 = 0x5E_CC02;
const OUR_FRAME: u64 = 0x5E_CC01;
const STREAM_TYPE_CONTROL: u64 = 0x00;
const FRAME_SETTINGS: u64 = 0x04;

fn enc(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint::encode(v, &mut out).unwrap();
    out
}

fn frame(ty: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = enc(ty);
    out.extend(enc(payload.len() as u64));
    out.extend_from_slice(payload);
    out
}

fn settings_payload(pairs: &[(u64, u64)]) -> Vec<u8> {
    pairs
        .iter()
        .flat_map(|&(k, v)| [enc(k), enc(v)].concat())
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

struct Pki {
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Pki {
        cert: ck.cert.der().clone(),
        key: rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into(),
    }
}

fn server_endpoint(pki: &Pki) -> quinn::Endpoint {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
}

async fn client_connect(pki: &Pki, addr: SocketAddr) -> quinn::Connection {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    ep.connect(addr, "localhost").unwrap().await.unwrap()
}

/// One served connection: the test gets its H3Control and a way to make
/// h3 send GOAWAY.
struct Served {
    ctl: H3Control,
    goaway: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

/// An h3 server over the shim, like the front builds it, answering every
/// request with 200 and `echo:` + its body.
async fn serve(enabled: bool) -> (SocketAddr, Arc<Pki>, mpsc::UnboundedReceiver<Served>) {
    let pki = Arc::new(pki());
    let ep = server_endpoint(&pki);
    let addr = ep.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let conn = incoming.await.unwrap();
                let cfg = H3ShimConfig {
                    codepoints: Codepoints::default(),
                    enabled,
                    max_field_section: 64 * 1024,
                };
                let (shim, ctl) =
                    H3Shim::new(h3_quinn::Connection::new(conn.clone()), conn.clone(), cfg);
                let mut h3c: h3::server::Connection<H3Shim, Bytes> = h3::server::builder()
                    .enable_extended_connect(true)
                    .enable_datagram(true)
                    .send_grease(true)
                    .build(shim)
                    .await
                    .unwrap();
                let (goaway, mut goaway_rx) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
                let _ = tx.send(Served { ctl, goaway });
                loop {
                    tokio::select! {
                        r = h3c.accept() => match r {
                            Ok(Some(resolver)) => {
                                tokio::spawn(async move {
                                    let Ok((_req, mut stream)) = resolver.resolve_request().await else { return };
                                    let mut body = b"echo:".to_vec();
                                    while let Ok(Some(mut chunk)) = stream.recv_data().await {
                                        while chunk.has_remaining() {
                                            let c = chunk.chunk();
                                            body.extend_from_slice(c);
                                            let n = c.len();
                                            chunk.advance(n);
                                        }
                                    }
                                    let resp = http::Response::builder().status(200).body(()).unwrap();
                                    let _ = stream.send_response(resp).await;
                                    let _ = stream.send_data(Bytes::from(body)).await;
                                    let _ = stream.finish().await;
                                });
                            }
                            _ => break,
                        },
                        Some(ack) = goaway_rx.recv() => {
                            h3c.shutdown(0).await.unwrap();
                            let _ = ack.send(());
                        }
                    }
                }
            });
        }
    });
    (addr, pki, rx)
}

async fn read_varint(r: &mut quinn::RecvStream) -> u64 {
    let mut first = [0u8; 1];
    r.read_exact(&mut first).await.unwrap();
    let len = varint::len_from_first_byte(first[0]);
    let mut buf = vec![first[0]];
    buf.resize(len, 0);
    r.read_exact(&mut buf[1..]).await.unwrap();
    varint::decode(&buf).unwrap().0
}

async fn read_frame(r: &mut quinn::RecvStream) -> (u64, Vec<u8>) {
    let ty = read_varint(r).await;
    let len = read_varint(r).await;
    let mut payload = vec![0; len as usize];
    r.read_exact(&mut payload).await.unwrap();
    (ty, payload)
}

fn parse_settings(mut p: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    while !p.is_empty() {
        let (k, n) = varint::decode(p).unwrap();
        p = &p[n..];
        let (v, n) = varint::decode(p).unwrap();
        p = &p[n..];
        out.push((k, v));
    }
    out
}

/// Accepts the server's uni streams until its control stream (type 0);
/// the others are kept open in `keep`.
async fn server_control_stream(
    conn: &quinn::Connection,
    keep: &mut Vec<quinn::RecvStream>,
) -> quinn::RecvStream {
    loop {
        let mut s = conn.accept_uni().await.unwrap();
        if read_varint(&mut s).await == STREAM_TYPE_CONTROL {
            return s;
        }
        keep.push(s);
    }
}

/// Opens the client's control stream with this SETTINGS payload.
async fn open_client_control(conn: &quinn::Connection, pairs: &[(u64, u64)]) -> quinn::SendStream {
    let mut s = conn.open_uni().await.unwrap();
    let mut bytes = vec![0x00];
    bytes.extend(frame(FRAME_SETTINGS, &settings_payload(pairs)));
    s.write_all(&bytes).await.unwrap();
    s
}

async fn closed_with(conn: &quinn::Connection) -> u64 {
    let e = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("connection not closed");
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("closed with {other:?}"),
    }
}

async fn next_served(rx: &mut mpsc::UnboundedReceiver<Served>) -> Served {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

async fn goaway(served: &Served) {
    let (tx, rx) = oneshot::channel();
    served.goaway.send(tx).unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn advertises_setting_and_delivers_certificates_around_goaway() {
    let (addr, pki, mut served_rx) = serve(true).await;
    let conn = client_connect(&pki, addr).await;
    let _ctrl = open_client_control(&conn, &[(OUR_SETTING, 1)]).await;
    let served = next_served(&mut served_rx).await;

    let mut keep = Vec::new();
    let mut ctrl = server_control_stream(&conn, &mut keep).await;
    let (ty, payload) = read_frame(&mut ctrl).await;
    assert_eq!(ty, FRAME_SETTINGS);
    let settings = parse_settings(&payload);
    assert!(settings.contains(&(OUR_SETTING, 1)), "{settings:x?}");
    // h3's own settings are still there.
    assert!(
        settings.contains(&(0x08, 1)) && settings.contains(&(0x33, 1)),
        "{settings:x?}"
    );

    let ctl = &served.ctl;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), ctl.negotiated())
            .await
            .unwrap(),
        Negotiation::Enabled
    );
    assert_eq!(ctl.peer_settings(), vec![(OUR_SETTING, 1)]);
    ctl.send_server_certificate(Bytes::from_static(b"authenticator-1"))
        .unwrap();
    ctl.send_server_certificate(Bytes::from(vec![0xab; 3000]))
        .unwrap();
    // h3's GOAWAY goes through the same queue, whole, between ours.
    goaway(&served).await;
    ctl.send_server_certificate(Bytes::from_static(b"authenticator-3"))
        .unwrap();

    let raw = {
        let mut head = vec![0x80, 0x5e, 0xcc, 0x01, 0x0f];
        head.extend_from_slice(b"authenticator-1");
        head
    };
    let mut got = vec![0u8; raw.len()];
    ctrl.read_exact(&mut got).await.unwrap();
    assert_eq!(got, raw, "exact wire bytes of the first frame");
    assert_eq!(read_frame(&mut ctrl).await, (OUR_FRAME, vec![0xab; 3000]));
    assert_eq!(read_frame(&mut ctrl).await, (0x07, vec![0x00]));
    assert_eq!(
        read_frame(&mut ctrl).await,
        (OUR_FRAME, b"authenticator-3".to_vec())
    );
    assert_eq!(ctl.violation(), None);
    assert!(conn.close_reason().is_none());
}

#[tokio::test]
async fn client_certificate_on_control_stream_closes_with_frame_unexpected() {
    let (addr, pki, mut served_rx) = serve(true).await;
    let conn = client_connect(&pki, addr).await;
    let mut ctrl = open_client_control(&conn, &[(OUR_SETTING, 1)]).await;
    let served = next_served(&mut served_rx).await;
    ctrl.write_all(&frame(OUR_FRAME, b"no")).await.unwrap();
    assert_eq!(closed_with(&conn).await, 0x0105);
    assert_eq!(
        served.ctl.violation(),
        Some(Violation::ClientSentCertificate)
    );
    assert_eq!(served.ctl.negotiation(), Negotiation::Closed);
    assert_eq!(
        served.ctl.send_server_certificate(Bytes::from_static(b"x")),
        Err(SendError::Closed)
    );
}

#[tokio::test]
async fn setting_value_two_closes_with_settings_error() {
    let (addr, pki, mut served_rx) = serve(true).await;
    let conn = client_connect(&pki, addr).await;
    let _ctrl = open_client_control(&conn, &[(0x33, 1), (OUR_SETTING, 2)]).await;
    let served = next_served(&mut served_rx).await;
    assert_eq!(closed_with(&conn).await, 0x0109);
    assert_eq!(served.ctl.violation(), Some(Violation::BadSettingValue));
    assert_eq!(served.ctl.negotiated().await, Negotiation::Closed);
}

#[tokio::test]
async fn certificate_frame_on_request_stream_closes_with_frame_unexpected() {
    let (addr, pki, mut served_rx) = serve(true).await;
    let conn = client_connect(&pki, addr).await;
    let _ctrl = open_client_control(&conn, &[(OUR_SETTING, 1)]).await;
    let served = next_served(&mut served_rx).await;
    assert_eq!(served.ctl.negotiated().await, Negotiation::Enabled);
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x80, 0x5e, 0xcc, 0x01, 0x00])
        .await
        .unwrap();
    assert_eq!(closed_with(&conn).await, 0x0105);
    assert_eq!(served.ctl.violation(), Some(Violation::WrongStream));
}

#[tokio::test]
async fn certificate_frame_on_request_stream_before_settings_closes_at_once() {
    let (addr, pki, mut served_rx) = serve(true).await;
    let conn = client_connect(&pki, addr).await;
    let served = next_served(&mut served_rx).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x80, 0x5e, 0xcc, 0x01, 0x00])
        .await
        .unwrap();
    assert_eq!(closed_with(&conn).await, 0x0105);
    assert_eq!(served.ctl.violation(), Some(Violation::WrongStream));
}

/// Spec §3: while the feature is on here, a client that sends a
/// certificate loses the connection even without sending the setting
/// (the same rule as the HTTP/2 shim).
#[tokio::test]
async fn without_the_clients_setting_a_client_certificate_still_closes() {
    let (addr, pki, mut served_rx) = serve(true).await;
    let conn = client_connect(&pki, addr).await;
    let mut ctrl = open_client_control(&conn, &[(0x33, 1)]).await;
    let served = next_served(&mut served_rx).await;
    assert_eq!(served.ctl.negotiated().await, Negotiation::Disabled);
    assert_eq!(
        served.ctl.send_server_certificate(Bytes::from_static(b"x")),
        Err(SendError::NotNegotiated)
    );
    ctrl.write_all(&frame(OUR_FRAME, b"from a client"))
        .await
        .unwrap();
    assert_eq!(closed_with(&conn).await, 0x0105);
    assert_eq!(
        served.ctl.violation(),
        Some(Violation::ClientSentCertificate)
    );
}

#[tokio::test]
async fn switched_off_sends_no_setting_and_never_enables() {
    let (addr, pki, mut served_rx) = serve(false).await;
    let conn = client_connect(&pki, addr).await;
    let mut ctrl_out = open_client_control(&conn, &[(OUR_SETTING, 1)]).await;
    let served = next_served(&mut served_rx).await;
    let mut keep = Vec::new();
    let mut ctrl = server_control_stream(&conn, &mut keep).await;
    let (ty, payload) = read_frame(&mut ctrl).await;
    assert_eq!(ty, FRAME_SETTINGS);
    assert!(!parse_settings(&payload).iter().any(|p| p.0 == OUR_SETTING));
    assert_eq!(served.ctl.negotiated().await, Negotiation::Disabled);
    assert_eq!(served.ctl.peer_settings(), vec![(OUR_SETTING, 1)]);
    // Nothing is enforced: our frame is an unknown frame.
    ctrl_out.write_all(&frame(OUR_FRAME, b"x")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(conn.close_reason().is_none());
    assert_eq!(served.ctl.violation(), None);
}

/// A POST written by hand: QPACK with static-table references only.
fn post_headers() -> Vec<u8> {
    let mut block = vec![0x00, 0x00, 0xd4, 0xd7, 0xc1, 0x50, 0x09];
    block.extend_from_slice(b"localhost");
    frame(0x01, &block)
}

#[tokio::test]
async fn data_payload_that_looks_like_our_frame_is_not_a_frame() {
    let (addr, pki, mut served_rx) = serve(true).await;
    let conn = client_connect(&pki, addr).await;
    let _ctrl = open_client_control(&conn, &[(OUR_SETTING, 1)]).await;
    let served = next_served(&mut served_rx).await;
    assert_eq!(served.ctl.negotiated().await, Negotiation::Enabled);

    // Capsule-like DATA payloads full of our frame's bytes, in odd chunks.
    let lookalike: Vec<u8> = [0x80, 0x5e, 0xcc, 0x01, 0x00].repeat(20_000);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&post_headers()).await.unwrap();
    let mut body = frame(0x00, &lookalike);
    body.extend(frame(0x21, b"grease")); // a reserved frame type in between
    body.extend(frame(0x00, &lookalike[..7]));
    for chunk in body.chunks(1_337) {
        send.write_all(chunk).await.unwrap();
    }
    send.finish().unwrap();

    let mut echoed = Vec::new();
    let mut status_seen = false;
    loop {
        let mut first = [0u8; 1];
        match recv.read(&mut first).await.unwrap() {
            None | Some(0) => break,
            Some(_) => {}
        }
        let len = varint::len_from_first_byte(first[0]);
        let mut tyb = vec![first[0]];
        tyb.resize(len, 0);
        recv.read_exact(&mut tyb[1..]).await.unwrap();
        let ty = varint::decode(&tyb).unwrap().0;
        let flen = read_varint(&mut recv).await;
        let mut payload = vec![0; flen as usize];
        recv.read_exact(&mut payload).await.unwrap();
        match ty {
            0x01 => status_seen = true,
            0x00 => echoed.extend(payload),
            _ => {}
        }
    }
    assert!(status_seen);
    let mut want = b"echo:".to_vec();
    want.extend_from_slice(&lookalike);
    want.extend_from_slice(&lookalike[..7]);
    assert_eq!(echoed.len(), want.len());
    assert!(echoed == want);
    assert!(conn.close_reason().is_none());
    assert_eq!(served.ctl.violation(), None);
}

#[tokio::test]
async fn h3_client_requests_work_through_the_shim() {
    let (addr, pki, mut served_rx) = serve(true).await;
    let conn = client_connect(&pki, addr).await;
    let (mut driver, mut send_request) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let served = next_served(&mut served_rx).await;

    for body_len in [0usize, 10, 200_000] {
        let req = http::Request::builder()
            .method(if body_len == 0 { "GET" } else { "POST" })
            .uri("https://localhost/x")
            .body(())
            .unwrap();
        let mut stream = send_request.send_request(req).await.unwrap();
        if body_len > 0 {
            stream
                .send_data(Bytes::from(vec![0x5e; body_len]))
                .await
                .unwrap();
        }
        stream.finish().await.unwrap();
        let resp = stream.recv_response().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut got = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            while chunk.has_remaining() {
                let c = chunk.chunk();
                got.extend_from_slice(c);
                let n = c.len();
                chunk.advance(n);
            }
        }
        assert_eq!(got.len(), 5 + body_len);
        assert!(got.starts_with(b"echo:"));
    }
    // The h3 client does not send our setting.
    assert_eq!(served.ctl.negotiated().await, Negotiation::Disabled);
    assert_eq!(served.ctl.violation(), None);
    assert_eq!(
        served.ctl.send_server_certificate(Bytes::from_static(b"x")),
        Err(SendError::NotNegotiated)
    );
}

#[test]
fn control_handle_is_send_sync_and_streams_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<H3Control>();
    send::<H3Shim>();
    send::<ShimBidiStream>();
    send::<ShimRecvStream>();
    send::<ShimSendStream>();
}

//! Request smuggling over HTTP/1.1, on both paths to an upstream: `http://`
//! forwarding (absolute-form on the plaintext listener) and reverse proxying
//! (origin-form with `Host: origin.test` over TLS, the listener's
//! certificate covering the origin), against an upstream that records the
//! raw bytes it receives and frames requests itself. Every ambiguous
//! framing is refused with 400 before anything reaches the upstream, or —
//! where RFC 9112 lets a server process it — forwarded in exactly one
//! unambiguous form and the client connection closed after the answer. The
//! same on both paths:
//!
//! | case | answer | upstream sees |
//! |---|---|---|
//! | `Content-Length` + `Transfer-Encoding: chunked` | 200, then close (RFC 9112 §6.1; hyper drops the `Content-Length` before the proxy sees it) | chunked only, no `Content-Length`, nothing after the body |
//! | two different `Content-Length`s, `4, 4`, `+4`, `-1` | 400 | nothing |
//! | two identical `Content-Length`s | 200 | one `Content-Length` |
//! | obsolete line folding, a space before the colon | 400 | nothing |
//! | `Transfer-Encoding` not ending in chunked, or on HTTP/1.0 | 400 | nothing |
//! | an invalid chunk size (`zz`, `+3`) | 400 (`http_request_error`) | at most the head: never a complete request |
//! | bare LF line ends | 200 (RFC 9112 §2.2 lets a recipient accept them) | CRLF line ends |
//! | hop-by-hop fields (`Connection` and what it names, `Keep-Alive`, `Proxy-Connection`, `TE`) | 200 | none of them; one `Content-Length` or chunked, never both |
//!
//! HTTP/2 and HTTP/3 are in `smuggling_h2_h3.rs`.

use std::time::Duration;

use bauta_tests::smuggle_env::{SmuggleEnv, ORIGIN};
use bauta_tests::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The two ways a request reaches the upstream.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// Absolute-form `http://127.0.0.1:PORT/x` on the plaintext listener.
    Forward,
    /// Origin-form `/x` with `Host: origin.test` over TLS (HTTP/1.1), the
    /// listener's certificate covering the origin.
    Reverse,
}

impl Path {
    /// The request target and the Host line for `/x` on this path.
    fn target(self, env: &SmuggleEnv) -> (String, String) {
        match self {
            Path::Forward => (
                format!("http://{}/x", env.upstream_authority()),
                format!("Host: {}", env.upstream_authority()),
            ),
            Path::Reverse => ("/x".to_string(), format!("Host: {ORIGIN}")),
        }
    }

    /// Send `req` on a new connection; the status, the Proxy-Status and
    /// whether the proxy closed the connection (EOF within 2 s).
    async fn send(self, env: &SmuggleEnv, req: &str) -> (u16, String, bool) {
        match self {
            Path::Forward => {
                let s = TcpStream::connect(env.proxy.plain).await.expect("connect");
                exchange(s, req).await
            }
            Path::Reverse => {
                let connector =
                    tokio_rustls::TlsConnector::from(tls_client_config(&env.certs, &[b"http/1.1"]));
                let tcp = TcpStream::connect(env.proxy.secure).await.expect("connect");
                let name = rustls_pki_types::ServerName::try_from(ORIGIN).expect("name");
                let tls = connector.connect(name, tcp).await.expect("TLS");
                exchange(tls, req).await
            }
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, req: &str) -> (u16, String, bool) {
    s.write_all(req.as_bytes()).await.expect("write");
    let (head, _) = read_head(&mut s).await.expect("a response head");
    let mut rest = Vec::new();
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await,
        Ok(Ok(_))
    );
    (
        head.status,
        head.proxy_status().unwrap_or_default().to_string(),
        closed,
    )
}

#[tokio::test]
async fn ambiguous_framing_is_refused_or_made_unambiguous() {
    bounded_for(Duration::from_secs(60), async {
        let env = SmuggleEnv::start().await;
        let up = &env.upstream;
        for path in [Path::Forward, Path::Reverse] {
            let (url, host) = path.target(&env);
            let refused = [
                ("different Content-Lengths", format!("POST {url} HTTP/1.1\r\n{host}\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde")),
                ("comma-listed Content-Length", format!("POST {url} HTTP/1.1\r\n{host}\r\nContent-Length: 4, 4\r\n\r\nabcd")),
                ("signed Content-Length", format!("POST {url} HTTP/1.1\r\n{host}\r\nContent-Length: +4\r\n\r\nabcd")),
                ("negative Content-Length", format!("POST {url} HTTP/1.1\r\n{host}\r\nContent-Length: -1\r\n\r\n")),
                ("obsolete line folding", format!("GET {url} HTTP/1.1\r\n{host}\r\nX-A: a\r\n b\r\n\r\n")),
                ("space before the colon", format!("POST {url} HTTP/1.1\r\n{host}\r\nContent-Length : 4\r\n\r\nabcd")),
                ("chunked not last", format!("POST {url} HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n")),
                ("Transfer-Encoding without chunked", format!("POST {url} HTTP/1.1\r\n{host}\r\nTransfer-Encoding: identity\r\n\r\n")),
                ("Transfer-Encoding on HTTP/1.0", format!("POST {url} HTTP/1.0\r\n{host}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
                ("invalid chunk size", format!("POST {url} HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")),
                ("chunk size with a sign", format!("POST {url} HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n")),
            ];
            for (what, req) in &refused {
                let (status, ps, _) = path.send(&env, req).await;
                assert_eq!(status, 400, "{path:?} {what}");
                // The 400 is the whole answer: a forward would have come first;
                // the pause only lets the upstream's recorder catch up.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let seen = up.take();
                if what.contains("chunk size") {
                    // The head went on before the body broke: never a whole request.
                    assert_proxy_status(&ps, "http_request_error", "a bad chunk is the client's error");
                    assert!(up.take_complete().is_empty(), "{path:?} {what}: upstream saw {seen:?}");
                    assert!(!seen.contains("abc"), "{path:?} {what}: upstream saw {seen:?}");
                } else {
                    assert!(seen.is_empty(), "{path:?} {what}: upstream saw {seen:?}");
                }
            }

            // CL + TE: processed by Transfer-Encoding, forwarded chunked only, and
            // the connection closed, so what follows the chunked body (here a
            // second request hidden in the Content-Length) is never read.
            let hidden = format!("GET {url}?smuggled HTTP/1.1\r\n{host}\r\n\r\n");
            let body = format!("0\r\n\r\n{hidden}");
            let req = format!(
                "POST {url} HTTP/1.1\r\n{host}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
                body.len()
            );
            let (status, _, closed) = path.send(&env, &req).await;
            assert_eq!(status, 200, "{path:?}: CL+TE is processed by Transfer-Encoding");
            assert!(closed, "{path:?}: CL+TE: the proxy closes the connection after answering");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let seen = up.take().to_ascii_lowercase();
            assert_eq!(seen.matches("post /x http/1.1").count(), 1, "{seen}");
            assert!(seen.contains("transfer-encoding: chunked"), "{seen}");
            assert!(!seen.contains("content-length"), "one framing only: {seen}");
            assert!(!seen.contains("smuggled"), "the hidden request never left: {seen}");
            assert_eq!(up.take_complete().len(), 1, "{path:?}");

            // Identical Content-Lengths: one, forwarded.
            let req = format!("POST {url} HTTP/1.1\r\n{host}\r\nContent-Length: 4\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd");
            let (status, _, _) = path.send(&env, &req).await;
            assert_eq!(status, 200, "{path:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let seen = up.take().to_ascii_lowercase();
            assert_eq!(seen.matches("content-length: 4").count(), 1, "{seen}");
            up.take_complete();

            // Bare LF: re-serialised with CRLF.
            let req = format!("GET {url} HTTP/1.1\n{host}\nX-A: a\nConnection: close\n\n");
            let (status, _, _) = path.send(&env, &req).await;
            assert_eq!(status, 200, "{path:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let seen = up.take();
            assert!(seen.starts_with("GET /x HTTP/1.1\r\n"), "{seen:?}");
            assert!(!seen.replace("\r\n", "").contains('\n'), "CRLF only: {seen:?}");
            up.take_complete();

            // Hop-by-hop fields stay on this hop, and each request is framed
            // exactly once upstream.
            let req = format!(
                "POST {url} HTTP/1.1\r\n{host}\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\n\
                 Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nContent-Length: 4\r\n\r\nabcd"
            );
            let (status, _, _) = path.send(&env, &req).await;
            assert_eq!(status, 200, "{path:?}");
            let req = format!(
                "POST {url} HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"
            );
            let (status, _, _) = path.send(&env, &req).await;
            assert_eq!(status, 200, "{path:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            up.take();
            let complete = up.take_complete();
            assert_eq!(complete.len(), 2, "{path:?}: {complete:?}");
            for req in &complete {
                let lower = req.to_ascii_lowercase();
                for hop in ["x-secret", "keep-alive", "proxy-connection", "\r\nte:", "connection:"] {
                    assert!(!lower.contains(hop), "{path:?}: {hop} went upstream: {req:?}");
                }
                let framings = lower.matches("content-length:").count()
                    + lower.matches("transfer-encoding:").count();
                assert_eq!(framings, 1, "{path:?}: framed exactly once: {req:?}");
            }
        }

        // An HTTP/1.0 upstream's answer goes back in our own version.
        let old = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let old_port = old.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = old.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            }
        });
        let req = format!(
            "GET http://127.0.0.1:{old_port}/ HTTP/1.1\r\nHost: 127.0.0.1:{old_port}\r\nConnection: close\r\n\r\n"
        );
        let mut s = TcpStream::connect(env.proxy.plain).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200"), "RFC 9110 §6.2: {got:?}");
    })
    .await
}

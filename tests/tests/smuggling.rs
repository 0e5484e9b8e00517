//! Request smuggling on `http://` forwarding (HTTP/1.1 front), against an
//! upstream that records the raw bytes it receives. Every ambiguous framing
//! is refused with 400 before anything reaches the upstream, or — where RFC
//! 9112 lets a server process it — forwarded in exactly one unambiguous
//! form and the client connection closed after the answer:
//!
//! | case | answer | upstream sees |
//! |---|---|---|
//! | `Content-Length` + `Transfer-Encoding: chunked` | 200, then close (RFC 9112 §6.1) | chunked only, no `Content-Length`, nothing after the body |
//! | two different `Content-Length`s, `4, 4`, `+4`, `-1` | 400 | nothing |
//! | two identical `Content-Length`s | 200 | one `Content-Length` |
//! | obsolete line folding, a space before the colon | 400 | nothing |
//! | `Transfer-Encoding` not ending in chunked, or on HTTP/1.0 | 400 | nothing |
//! | an invalid chunk size | 400 (`http_request_error`) | no request |
//! | bare LF line ends | 200 | CRLF line ends |

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bauta_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that records every byte it receives per connection and
/// answers each read with a small 200.
struct RawUpstream {
    port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        record.lock().expect("lock").extend_from_slice(&buf[..n]);
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        RawUpstream { port, seen }
    }

    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.seen.lock().expect("lock"))).into_owned()
    }
}

/// Send `req` on a new connection; the status line and whether the proxy
/// closed the connection (EOF within 2 s).
async fn send(proxy: std::net::SocketAddr, req: &str) -> (u16, String, bool) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
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
    bounded(async {
        let up = RawUpstream::start().await;
        let proxy = start_proxy(ALLOW_LOOPBACK).await;
        let url = format!("http://127.0.0.1:{}/x", up.port);
        let host = format!("Host: 127.0.0.1:{}", up.port);
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
        ];
        for (what, req) in &refused {
            let (status, _, _) = send(proxy.plain, req).await;
            assert_eq!(status, 400, "{what}");
            // The 400 is the whole answer: a forward would have come first;
            // the pause only lets the upstream's recorder catch up.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let seen = up.take();
            assert!(seen.is_empty(), "{what}: upstream saw {seen:?}");
        }
        let (_, ps, _) = send(proxy.plain, &refused[9].1).await;
        assert!(ps.contains("http_request_error"), "a bad chunk is the client's error: {ps}");
        up.take();

        // CL + TE: processed by Transfer-Encoding, forwarded chunked only, and
        // the connection closed, so what follows the chunked body (here a
        // second request hidden in the Content-Length) is never read.
        let hidden = format!("GET http://127.0.0.1:{}/smuggled HTTP/1.1\r\n{host}\r\n\r\n", up.port);
        let body = format!("0\r\n\r\n{hidden}");
        let req = format!(
            "POST {url} HTTP/1.1\r\n{host}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            body.len()
        );
        let (status, _, closed) = send(proxy.plain, &req).await;
        assert_eq!(status, 200, "CL+TE is processed by Transfer-Encoding");
        assert!(closed, "CL+TE: the proxy closes the connection after answering");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = up.take().to_ascii_lowercase();
        assert_eq!(seen.matches("post /x http/1.1").count(), 1, "{seen}");
        assert!(seen.contains("transfer-encoding: chunked"), "{seen}");
        assert!(!seen.contains("content-length"), "one framing only: {seen}");
        assert!(!seen.contains("smuggled"), "the hidden request never left: {seen}");

        // Identical Content-Lengths: one, forwarded.
        let req = format!("POST {url} HTTP/1.1\r\n{host}\r\nContent-Length: 4\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd");
        let (status, _, _) = send(proxy.plain, &req).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = up.take().to_ascii_lowercase();
        assert_eq!(seen.matches("content-length: 4").count(), 1, "{seen}");

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
        let mut s = TcpStream::connect(proxy.plain).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200"), "RFC 9110 §6.2: {got:?}");

        // Bare LF: re-serialised with CRLF.
        let req = format!("GET {url} HTTP/1.1\n{host}\nX-A: a\nConnection: close\n\n");
        let (status, _, _) = send(proxy.plain, &req).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = up.take();
        assert!(seen.starts_with("GET /x HTTP/1.1\r\n"), "{seen:?}");
        assert!(!seen.replace("\r\n", "").contains('\n'), "CRLF only: {seen:?}");
    })
    .await
}

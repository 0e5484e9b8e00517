//! The local peers the load tool measures against: a counting TCP sink and
//! a small HTTP/1.1 origin. (The 8-byte round trips use the tests'
//! [`crate::EchoServer`], CONNECT-UDP the [`crate::masque::UdpEcho`].)

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Reads the number of bytes the client will send (8 bytes, big-endian),
/// then that many bytes (or until EOF), then answers with the number it read
/// (8 bytes, big-endian) and closes. Goodput is measured one way, client to
/// sink; the count checks that every byte arrived. The client never needs
/// to half-close: proxies that end a tunnel on a half-close (squid, Envoy's
/// HTTP/1.1 CONNECT) can be measured too.
pub struct CountingSink {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl CountingSink {
    pub async fn start() -> std::io::Result<CountingSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut announced = [0u8; 8];
                    if s.read_exact(&mut announced).await.is_err() {
                        return;
                    }
                    let want = u64::from_be_bytes(announced);
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut n = 0u64;
                    while n < want {
                        let room = (want - n).min(buf.len() as u64) as usize;
                        match s.read(&mut buf[..room]).await {
                            Ok(0) => break,
                            Ok(k) => n += k as u64,
                            Err(_) => return,
                        }
                    }
                    let _ = s.write_all(&n.to_be_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Ok(CountingSink { addr, task })
    }
}

impl Drop for CountingSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1.1 origin (hyper) that answers every request 200 with the same
/// body of `body` bytes.
pub struct FixedOrigin {
    pub addr: SocketAddr,
    pub body: usize,
    task: JoinHandle<()>,
}

impl FixedOrigin {
    pub async fn start(body: usize) -> std::io::Result<FixedOrigin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let payload = Bytes::from(vec![b'x'; body]);
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                let payload = payload.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let b = payload.clone();
                        async move { Ok::<_, Infallible>(http::Response::new(Full::new(b))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Ok(FixedOrigin { addr, body, task })
    }
}

impl Drop for FixedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

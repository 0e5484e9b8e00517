//! Helpers for the request-smuggling tests (`tests/tests/smuggling*.rs`): an
//! HTTP/1.1 upstream that records the raw bytes it receives and answers only
//! the requests it could read completely, and a proxy whose TLS listener
//! (HTTP/1.1, HTTP/2, HTTP/3) both forwards `http://` requests and
//! reverse-proxies `origin.test` to that upstream.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::masque::{start_masque_proxy, MasqueProxy};
use crate::readme_env::origin_listener_certs;
use crate::seccert_env::Pki;
use crate::{Certs, ALLOW_LOOPBACK};

/// The origin the proxy's TLS listener certificate covers.
pub const ORIGIN: &str = "origin.test";

/// What the upstream received.
#[derive(Default)]
struct Record {
    /// Every byte, all connections, in arrival order.
    raw: Vec<u8>,
    /// Each request it could frame completely (head and body), as text.
    complete: Vec<String>,
}

/// An HTTP/1.1 upstream that records every byte and frames requests itself
/// (Content-Length, else chunked, else no body): it answers 200 to each
/// complete request, and nothing to one whose body never completes.
pub struct RecordingUpstream {
    pub port: u16,
    record: Arc<Mutex<Record>>,
}

impl RecordingUpstream {
    pub async fn start() -> RecordingUpstream {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let record = Arc::new(Mutex::new(Record::default()));
        let rec = Arc::clone(&record);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let rec = Arc::clone(&rec);
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        let mut answers = 0;
                        {
                            let mut r = rec.lock().expect("lock");
                            r.raw.extend_from_slice(&buf[..n]);
                            while let Some(used) = complete_request(&pending) {
                                let req = String::from_utf8_lossy(&pending[..used]).into_owned();
                                r.complete.push(req);
                                pending.drain(..used);
                                answers += 1;
                            }
                        }
                        for _ in 0..answers {
                            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        RecordingUpstream { port, record }
    }

    /// The raw bytes received since the last call, as (lossy) text.
    pub fn take(&self) -> String {
        let raw = std::mem::take(&mut self.record.lock().expect("lock").raw);
        String::from_utf8_lossy(&raw).into_owned()
    }

    /// The complete requests received since the last call.
    pub fn take_complete(&self) -> Vec<String> {
        std::mem::take(&mut self.record.lock().expect("lock").complete)
    }
}

/// The length of the first complete request in `buf`, if there is one.
fn complete_request(buf: &[u8]) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    if field("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        let mut at = head_end;
        loop {
            let line_end = at + find(&buf[at..], b"\r\n")?;
            let size = String::from_utf8_lossy(&buf[at..line_end]);
            let size = size
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            let size = usize::from_str_radix(&size, 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // Trailer lines, then an empty line.
                loop {
                    let end = at + find(&buf[at..], b"\r\n")?;
                    let empty = end == at;
                    at = end + 2;
                    if empty {
                        return Some(at);
                    }
                }
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            at += size + 2;
        }
    }
    let len = match field("content-length") {
        Some(v) => v.parse::<usize>().ok()?,
        None => 0,
    };
    (buf.len() >= head_end + len).then_some(head_end + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A proxy with a plaintext HTTP/1.1 listener ("plain") and a TLS listener
/// ("secure": HTTP/1.1, HTTP/2, HTTP/3) whose own certificate covers
/// [`ORIGIN`], reverse-proxied to `upstream`; loopback is allowed, so
/// `http://127.0.0.1:PORT/` is forwarded to the same upstream.
pub struct SmuggleEnv {
    _pki: Pki,
    pub certs: Certs,
    pub upstream: RecordingUpstream,
    pub proxy: MasqueProxy,
}

impl SmuggleEnv {
    pub async fn start() -> SmuggleEnv {
        let pki = Pki::new();
        let (certs, origin) = origin_listener_certs(&pki, ORIGIN);
        let upstream = RecordingUpstream::start().await;
        let extra = format!(
            "[[origin]]\nhost = \"{ORIGIN}\"\nport = 443\ncert = '{}'\nkey = '{}'\n\
             upstream = \"http://127.0.0.1:{}\"\n\n{ALLOW_LOOPBACK}",
            origin.cert_pem.display(),
            origin.key_pem.display(),
            upstream.port
        );
        let proxy = start_masque_proxy(&certs, &extra).await;
        SmuggleEnv {
            _pki: pki,
            certs,
            upstream,
            proxy,
        }
    }

    /// `127.0.0.1:PORT` of the upstream (the `http://` forwarding target).
    pub fn upstream_authority(&self) -> String {
        format!("127.0.0.1:{}", self.upstream.port)
    }
}

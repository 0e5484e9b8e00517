//! Raw HTTP/2 and HTTP/3 clients that send exactly the header fields they
//! are given — in order, any case, any bytes, duplicated pseudo-headers —
//! with no validation (HPACK and QPACK literal field lines, no Huffman, no
//! dynamic table), and report what came back on the stream: the `:status`
//! (static-table statuses; 0 for any other), the body, and a stream reset or
//! connection close with its code.

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::masque::{quic_client_config, read_varint, varint};
use crate::{tls_client_config, Certs};

/// A header field as sent: raw name and value bytes.
pub type Field = (Vec<u8>, Vec<u8>);

/// Fields from string pairs.
pub fn fields(list: &[(&str, &str)]) -> Vec<Field> {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// What the proxy did with one request stream.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// The response's `:status` (0: not a static-table status).
    pub status: Option<u16>,
    pub body: Vec<u8>,
    /// HTTP/2 RST_STREAM or HTTP/3 stream reset code.
    pub reset: Option<u64>,
    /// HTTP/2 GOAWAY or QUIC/HTTP/3 connection close code.
    pub closed: Option<u64>,
    /// The stream ended cleanly (END_STREAM / FIN).
    pub finished: bool,
}

/// A prefixed integer (RFC 7541 §5.1; RFC 9204 §4.1.1), `first` holding the
/// pattern bits above the prefix.
fn prefixed(out: &mut Vec<u8>, first: u8, prefix: u32, mut v: usize) {
    let max = (1usize << prefix) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn read_prefixed(buf: &[u8], prefix: u32) -> Option<(usize, usize)> {
    let max = (1usize << prefix) - 1;
    let mut v = usize::from(*buf.first()?) & max;
    if v < max {
        return Some((v, 1));
    }
    let mut shift = 0;
    for (i, b) in buf.iter().enumerate().skip(1) {
        v += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

// === HTTP/2 ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// HPACK: every field a literal without indexing with a literal name.
pub fn hpack(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.push(0x00);
        prefixed(&mut out, 0, 7, n.len());
        out.extend_from_slice(n);
        prefixed(&mut out, 0, 7, v.len());
        out.extend_from_slice(v);
    }
    out
}

/// RFC 7541 Appendix A: the static table's `:status` entries.
fn hpack_status(block: &[u8]) -> u16 {
    match block.first() {
        Some(0x88) => 200,
        Some(0x89) => 204,
        Some(0x8a) => 206,
        Some(0x8b) => 304,
        Some(0x8c) => 400,
        Some(0x8d) => 404,
        Some(0x8e) => 500,
        _ => 0,
    }
}

/// An HTTP/2 connection over TLS (ALPN h2) that writes raw frames.
pub struct RawH2 {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
    next_stream: u32,
}

impl RawH2 {
    /// TLS to `addr` verifying `name`, the preface and an empty SETTINGS.
    pub async fn connect(addr: SocketAddr, certs: &Certs, name: &str) -> RawH2 {
        let connector = tokio_rustls::TlsConnector::from(tls_client_config(certs, &[b"h2"]));
        let tcp = TcpStream::connect(addr).await.expect("TCP connect");
        let server = ServerName::try_from(name.to_string()).expect("server name");
        let tls = connector.connect(server, tcp).await.expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        let mut c = RawH2 {
            tls,
            buf: Vec::new(),
            next_stream: 1,
        };
        c.tls.write_all(PREFACE).await.expect("preface");
        c.frame(SETTINGS, 0, 0, &[]).await;
        c
    }

    async fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        // The proxy may have reset the stream or closed the connection.
        let _ = self.tls.write_all(&f).await;
    }

    /// Open a stream with `fields`, send each of `data` as one DATA frame and
    /// `trailers` (if any) as a HEADERS frame, ending the stream with the last.
    pub async fn request(
        &mut self,
        fields: &[Field],
        data: &[&[u8]],
        trailers: Option<&[Field]>,
    ) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        let ends = |last: bool| if last { END_STREAM } else { 0 };
        let no_more = data.is_empty() && trailers.is_none();
        self.frame(HEADERS, END_HEADERS | ends(no_more), id, &hpack(fields))
            .await;
        for (i, d) in data.iter().enumerate() {
            let last = i + 1 == data.len() && trailers.is_none();
            self.frame(DATA, ends(last), id, d).await;
        }
        if let Some(t) = trailers {
            self.frame(HEADERS, END_HEADERS | END_STREAM, id, &hpack(t))
                .await;
        }
        let _ = self.tls.flush().await;
        id
    }

    /// Read frames until stream `id` ends, is reset, or the connection
    /// closes (or `limit` passes).
    pub async fn outcome(&mut self, id: u32, limit: Duration) -> Outcome {
        let mut out = Outcome::default();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let Some((kind, flags, stream, payload)) = self.next_frame(deadline).await else {
                return out;
            };
            match kind {
                SETTINGS if flags & 0x1 == 0 => self.frame(SETTINGS, 0x1, 0, &[]).await,
                PING if flags & 0x1 == 0 => self.frame(PING, 0x1, 0, &payload).await,
                GOAWAY => {
                    out.closed = payload
                        .get(4..8)
                        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])));
                    return out;
                }
                RST_STREAM if stream == id => {
                    out.reset = payload
                        .get(..4)
                        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])));
                    return out;
                }
                HEADERS | DATA if stream == id => {
                    if kind == HEADERS && out.status.is_none() {
                        // No padding or priority from the proxy.
                        out.status = Some(hpack_status(&payload));
                    } else if kind == DATA {
                        out.body.extend_from_slice(&payload);
                    }
                    if flags & END_STREAM != 0 {
                        out.finished = true;
                        return out;
                    }
                }
                _ => {}
            }
        }
    }

    async fn next_frame(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let kind = self.buf[3];
                    let flags = self.buf[4];
                    let stream =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                            & 0x7fff_ffff;
                    let payload = self.buf[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    return Some((kind, flags, stream, payload));
                }
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout_at(deadline, self.tls.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

// === HTTP/3 ===

/// QPACK (RFC 9204 §4.5.6): every field a literal with a literal name, after
/// a field section prefix of Required Insert Count 0 and Base 0.
pub fn qpack(fields: &[Field]) -> Vec<u8> {
    let mut out = vec![0x00, 0x00];
    for (n, v) in fields {
        prefixed(&mut out, 0x20, 3, n.len());
        out.extend_from_slice(n);
        prefixed(&mut out, 0x00, 7, v.len());
        out.extend_from_slice(v);
    }
    out
}

/// An HTTP/3 frame: type, length, payload.
pub fn h3_frame(kind: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = varint(kind);
    f.extend(varint(payload.len() as u64));
    f.extend_from_slice(payload);
    f
}

/// RFC 9204 Appendix A: the static table's `:status` entries.
fn qpack_status(block: &[u8]) -> u16 {
    const STATUS: [(usize, u16); 14] = [
        (24, 103),
        (25, 200),
        (26, 304),
        (27, 404),
        (28, 503),
        (63, 100),
        (64, 204),
        (65, 206),
        (66, 302),
        (67, 400),
        (68, 403),
        (69, 421),
        (70, 425),
        (71, 500),
    ];
    // Skip the field section prefix (two prefixed integers).
    let Some((_, a)) = read_prefixed(block, 8) else {
        return 0;
    };
    let Some((_, b)) = block.get(a..).and_then(|r| read_prefixed(r, 7)) else {
        return 0;
    };
    let line = &block[a + b..];
    match line.first() {
        // Indexed field line, static table.
        Some(f) if f & 0xC0 == 0xC0 => read_prefixed(line, 6)
            .and_then(|(i, _)| STATUS.iter().find(|(idx, _)| *idx == i))
            .map_or(0, |(_, s)| *s),
        _ => 0,
    }
}

/// An HTTP/3 connection (quinn) that writes raw frames on request streams.
pub struct RawH3 {
    conn: quinn::Connection,
    _control: quinn::SendStream,
    _endpoint: quinn::Endpoint,
}

impl RawH3 {
    /// QUIC to `addr` verifying `name`; a control stream with empty SETTINGS.
    pub async fn connect(addr: SocketAddr, certs: &Certs, name: &str) -> RawH3 {
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("QUIC client endpoint");
        let conn = endpoint
            .connect_with(quic_client_config(certs), addr, name)
            .expect("start QUIC")
            .await
            .expect("QUIC handshake");
        let mut control = conn.open_uni().await.expect("control stream");
        let mut settings = varint(0x00);
        settings.extend(h3_frame(0x04, &[]));
        control.write_all(&settings).await.expect("SETTINGS");
        RawH3 {
            conn,
            _control: control,
            _endpoint: endpoint,
        }
    }

    /// One request stream: a HEADERS frame of `fields`, a DATA frame per
    /// `data`, a trailer HEADERS frame if given, then FIN.
    pub async fn request(
        &self,
        fields: &[Field],
        data: &[&[u8]],
        trailers: Option<&[Field]>,
        limit: Duration,
    ) -> Outcome {
        let (mut send, mut recv) = self.conn.open_bi().await.expect("request stream");
        let mut bytes = h3_frame(0x01, &qpack(fields));
        for d in data {
            bytes.extend(h3_frame(0x00, d));
        }
        if let Some(t) = trailers {
            bytes.extend(h3_frame(0x01, &qpack(t)));
        }
        // The proxy may stop the stream before reading it all.
        let _ = send.write_all(&bytes).await;
        let _ = send.finish();
        let mut out = Outcome::default();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, recv.read(&mut chunk)).await {
                Err(_) => break,
                Ok(Ok(Some(n))) => got.extend_from_slice(&chunk[..n]),
                Ok(Ok(None)) => {
                    out.finished = true;
                    break;
                }
                Ok(Err(quinn::ReadError::Reset(code))) => {
                    out.reset = Some(code.into_inner());
                    break;
                }
                Ok(Err(quinn::ReadError::ConnectionLost(e))) => {
                    out.closed = Some(match e {
                        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
                        _ => u64::MAX,
                    });
                    break;
                }
                Ok(Err(_)) => break,
            }
        }
        // Frames: HEADERS (the status), DATA (the body); others skipped.
        let mut at = 0;
        while let Some((kind, a)) = got.get(at..).and_then(read_varint) {
            let Some((len, b)) = got.get(at + a..).and_then(read_varint) else {
                break;
            };
            let start = at + a + b;
            let Some(payload) = got.get(start..start + len as usize) else {
                break;
            };
            match kind {
                0x01 if out.status.is_none() => out.status = Some(qpack_status(payload)),
                0x00 => out.body.extend_from_slice(payload),
                _ => {}
            }
            at = start + len as usize;
        }
        out
    }
}

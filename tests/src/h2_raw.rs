//! A raw HTTP/2 client for attack tests: frames written by hand (RFC 9113
//! §4.1), header blocks in hand-made HPACK (literals without indexing, RFC
//! 7541 §6.2.2), and a reader that looks for the server's GOAWAY.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// The largest window RFC 9113 allows (§6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

pub const ENHANCE_YOUR_CALM: u32 = 0xb;
pub const CANCEL: u32 = 0x8;

/// One frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame payload fits 24 bits");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & MAX_WINDOW).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = entries
        .iter()
        .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
        .collect();
    frame(SETTINGS, 0, 0, &payload)
}

/// The connection preface and a first SETTINGS frame.
pub fn hello(entries: &[(u16, u32)]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(settings(entries));
    out
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn ping() -> Vec<u8> {
    frame(PING, 0, 0, &[0; 8])
}

/// A literal header field without indexing, name from the static table
/// (`index`), or a new name when `index` is 0.
pub fn literal(index: u8, name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![index & 0x0f];
    if index == 0 {
        push_string(&mut out, name.as_bytes());
    }
    push_string(&mut out, value.as_bytes());
    out
}

fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    // 7-bit prefix integer (RFC 7541 §5.1), no Huffman.
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// The header block of `CONNECT authority`.
pub fn connect_block(authority: &str) -> Vec<u8> {
    let mut block = literal(2, ":method", "CONNECT");
    block.extend(literal(1, ":authority", authority));
    block
}

/// The header block of `GET https://authority/path`.
pub fn get_block(authority: &str, path: &str) -> Vec<u8> {
    let mut block = literal(2, ":method", "GET");
    block.extend(literal(6, ":scheme", "https"));
    block.extend(literal(4, ":path", path));
    block.extend(literal(1, ":authority", authority));
    block
}

/// HEADERS with END_HEADERS (and END_STREAM when `end_stream`).
pub fn headers(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, block)
}

/// The server's GOAWAY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream: u32,
    pub code: u32,
    pub debug: String,
}

/// One frame read off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The entries of a SETTINGS frame.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                )
            })
            .collect()
    }
}

/// Reads the next frame (`None` at the end of the connection).
pub async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<RawFrame> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some(RawFrame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & MAX_WINDOW,
        payload,
    })
}

/// Reads the server's frames until its GOAWAY (returned) or the end of the
/// connection (`None`), for at most `limit`; every other frame is skipped.
pub async fn read_goaway<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<GoAway> {
    let read = async {
        loop {
            let RawFrame { kind, payload, .. } = read_frame(s).await?;
            if kind == GOAWAY && payload.len() >= 8 {
                return Some(GoAway {
                    last_stream: u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]) & MAX_WINDOW,
                    code: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
                    debug: String::from_utf8_lossy(&payload[8..]).into_owned(),
                });
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok().flatten()
}

/// Sends `hello` then `next(i)` for i = 0, 1, … (concatenated in batches)
/// while reading the server's frames, until the server's GOAWAY arrives,
/// the connection ends, or `limit` passes. Returns the GOAWAY, if any.
pub async fn flood_until_goaway<S, F>(
    io: S,
    hello: Vec<u8>,
    mut next: F,
    limit: Duration,
) -> Option<GoAway>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    F: FnMut(u64) -> Vec<u8> + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        if wr.write_all(&hello).await.is_err() {
            return;
        }
        let mut i = 0u64;
        loop {
            let mut batch = Vec::with_capacity(16 * 1024);
            while batch.len() < 16 * 1024 {
                batch.extend(next(i));
                i += 1;
            }
            if wr.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let goaway = read_goaway(&mut rd, limit).await;
    writer.abort();
    goaway
}

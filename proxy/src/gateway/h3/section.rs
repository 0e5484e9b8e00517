//! Field sections on the gateway connection (RFC 9114 §4.1-4.3, RFC 9204
//! §4.5) without a dynamic table: our request sections out, the gateway's
//! response and trailer sections in.
//!
//! We advertise QPACK_MAX_TABLE_CAPACITY = 0 and QPACK_BLOCKED_STREAMS = 0,
//! so the gateway may only use the static table and literals (RFC 9204
//! §3.2.3); a section that refers to a dynamic table is malformed here.
//! Requests go out with static references where the table has them, else
//! literals without Huffman (encoding costs more CPU than the bytes it saves
//! on a connection that mostly carries tunnels).

use bytes::BufMut;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::wire::huffman;
use crate::wire::qpack::{prefixed_int, string};

use super::static_table::{self, STATIC_TABLE};

/// RFC 9114 §4.2.2: a field's size is its name and value lengths plus 32.
const FIELD_OVERHEAD: u64 = 32;

/// RFC 9204 Appendix A indices used on the way out.
const AUTHORITY: u64 = 0;
const PATH_SLASH: u64 = 1;
const METHOD_CONNECT: u64 = 15;
const SCHEME_HTTP: u64 = 22;
const SCHEME_HTTPS: u64 = 23;

/// Connection-specific fields (RFC 9114 §4.2): never sent on HTTP/3, and a
/// response carrying one is malformed.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// One request to send on a new stream of the gateway connection.
#[derive(Debug, Clone)]
pub struct H3Request {
    pub method: Method,
    /// `:scheme`; not sent on plain CONNECT.
    pub scheme: String,
    /// `:authority`: the target of CONNECT, the proxy's authority for
    /// extended CONNECT, the origin for a forwarded request.
    pub authority: String,
    /// `:path`; not sent on plain CONNECT.
    pub path: String,
    /// `:protocol` (RFC 9220 extended CONNECT), e.g. `connect-udp`.
    pub protocol: Option<String>,
    pub headers: HeaderMap,
    /// Route QUIC DATAGRAMs of this stream to the [`super::FlowDatagrams`]
    /// of the returned stream, registered before the request is sent so
    /// that none sent right after the response is lost.
    pub datagrams: bool,
}

/// What a response or trailer section said.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    pub(super) status: Option<StatusCode>,
    pub(super) headers: HeaderMap,
}

/// Which section is read: only a response head carries `:status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SectionKind {
    Response,
    Trailers,
}

// === impl H3Request ===

impl H3Request {
    /// Plain CONNECT (RFC 9114 §4.4): `:method CONNECT`, `:authority
    /// host:port`, nothing else.
    pub fn connect(authority: impl Into<String>) -> H3Request {
        H3Request {
            method: Method::CONNECT,
            scheme: String::new(),
            authority: authority.into(),
            path: String::new(),
            protocol: None,
            headers: HeaderMap::new(),
            datagrams: false,
        }
    }

    /// CONNECT-UDP (RFC 9298 §3.4): extended CONNECT with `:protocol
    /// connect-udp`, `:scheme https`, the proxy's `authority`, the
    /// template's `path` and `capsule-protocol: ?1`; datagrams routed.
    pub fn connect_udp(authority: impl Into<String>, path: impl Into<String>) -> H3Request {
        let mut headers = HeaderMap::new();
        headers.insert("capsule-protocol", HeaderValue::from_static("?1"));
        H3Request {
            method: Method::CONNECT,
            scheme: "https".into(),
            authority: authority.into(),
            path: path.into(),
            protocol: Some("connect-udp".into()),
            headers,
            datagrams: true,
        }
    }

    /// Any other request: `:method :scheme :authority :path`. Forwarding
    /// `http://host/x` is `:scheme http`, `:authority host`, `:path /x`.
    pub fn new(
        method: Method,
        scheme: impl Into<String>,
        authority: impl Into<String>,
        path: impl Into<String>,
    ) -> H3Request {
        H3Request {
            method,
            scheme: scheme.into(),
            authority: authority.into(),
            path: path.into(),
            protocol: None,
            headers: HeaderMap::new(),
            datagrams: false,
        }
    }

    /// The encoded field section (HEADERS payload). `peer_max`: the peer's
    /// SETTINGS_MAX_FIELD_SECTION_SIZE (RFC 9114 §4.2.2: "An implementation
    /// that has received this parameter SHOULD NOT send an HTTP message
    /// header that exceeds the indicated size").
    pub(super) fn encode(&self, peer_max: Option<u64>) -> Result<Vec<u8>, &'static str> {
        if self.authority.is_empty() {
            return Err("empty :authority");
        }
        let plain_connect = self.method == Method::CONNECT && self.protocol.is_none();
        if self.protocol.is_some() && self.method != Method::CONNECT {
            return Err(":protocol on a method other than CONNECT");
        }
        if !plain_connect && (self.scheme.is_empty() || self.path.is_empty()) {
            // RFC 9114 §4.3.1: all requests except plain CONNECT carry
            // :scheme and a non-empty :path.
            return Err("missing :scheme or :path");
        }
        let mut size = 0u64;
        let mut add = |name: &str, value: &[u8]| {
            size = size
                .saturating_add(name.len() as u64)
                .saturating_add(value.len() as u64)
                .saturating_add(FIELD_OVERHEAD);
        };
        // Encoded Field Section Prefix: Required Insert Count 0, Base 0.
        let mut out = vec![0x00, 0x00];
        add(":method", self.method.as_str().as_bytes());
        match STATIC_TABLE
            .iter()
            .position(|&(n, v)| n == ":method" && v == self.method.as_str())
        {
            Some(i) => indexed(&mut out, i as u64),
            None => name_ref(&mut out, METHOD_CONNECT, self.method.as_str().as_bytes()),
        }
        if let Some(protocol) = &self.protocol {
            add(":protocol", protocol.as_bytes());
            literal(&mut out, ":protocol", protocol.as_bytes());
        }
        if !plain_connect {
            add(":scheme", self.scheme.as_bytes());
            match self.scheme.as_str() {
                "http" => indexed(&mut out, SCHEME_HTTP),
                "https" => indexed(&mut out, SCHEME_HTTPS),
                other => name_ref(&mut out, SCHEME_HTTP, other.as_bytes()),
            }
        }
        add(":authority", self.authority.as_bytes());
        name_ref(&mut out, AUTHORITY, self.authority.as_bytes());
        if !plain_connect {
            add(":path", self.path.as_bytes());
            if self.path == "/" {
                indexed(&mut out, PATH_SLASH);
            } else {
                name_ref(&mut out, PATH_SLASH, self.path.as_bytes());
            }
        }
        for (name, value) in &self.headers {
            if skip_on_send(name, value) {
                continue;
            }
            add(name.as_str(), value.as_bytes());
            literal(&mut out, name.as_str(), value.as_bytes());
        }
        if peer_max.is_some_and(|max| size > max) {
            return Err(
                "the request's fields exceed the gateway's SETTINGS_MAX_FIELD_SECTION_SIZE",
            );
        }
        Ok(out)
    }
}

/// RFC 9114 §4.2: connection-specific fields MUST NOT be sent, and `te`
/// only as `trailers`. A forwarder may hand us an HTTP/1.1 head as it came:
/// these are dropped rather than sent or refused.
fn skip_on_send(name: &HeaderName, value: &HeaderValue) -> bool {
    CONNECTION_SPECIFIC.contains(&name.as_str())
        || (name == http::header::TE && value.as_bytes() != b"trailers")
}

/// A trailer section (no pseudo-header fields) for a request body.
pub(super) fn encode_trailers(trailers: &HeaderMap) -> Vec<u8> {
    let mut out = vec![0x00, 0x00];
    for (name, value) in trailers {
        if !skip_on_send(name, value) {
            literal(&mut out, name.as_str(), value.as_bytes());
        }
    }
    out
}

/// Indexed field line, static table (RFC 9204 §4.5.2: `1 T=1 index(6)`).
fn indexed(out: &mut Vec<u8>, index: u64) {
    put_int(out, 0xC0, 6, index);
}

/// Literal with a static name reference (§4.5.4: `0 1 N=0 T=1 index(4)`),
/// the value without Huffman.
fn name_ref(out: &mut Vec<u8>, index: u64, value: &[u8]) {
    put_int(out, 0x50, 4, index);
    put_int(out, 0x00, 7, value.len() as u64);
    out.put_slice(value);
}

/// Literal with a literal name (§4.5.6: `0 0 1 N=0 H=0 length(3)`).
fn literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    put_int(out, 0x20, 3, name.len() as u64);
    out.put_slice(name.as_bytes());
    put_int(out, 0x00, 7, value.len() as u64);
    out.put_slice(value);
}

/// An RFC 7541 §5.1 prefixed integer: `flags` in the high bits of the
/// first byte, `value` in its low `bits` and continuation bytes.
fn put_int(out: &mut Vec<u8>, flags: u8, bits: u32, value: u64) {
    let max = (1u64 << bits) - 1;
    if value < max {
        // `value < max <= 0x7f`: fits the prefix.
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// How the gateway client reads a response head's field section (a hostile
/// gateway writes it, capped at `max` as our SETTINGS say): the status and
/// the number of fields, or why it is refused. Public for fuzzing.
pub fn read_response_head(block: &[u8], max: u64) -> Result<(Option<u16>, usize), &'static str> {
    decode(block, SectionKind::Response, max)
        .map(|d| (d.status.map(|s| s.as_u16()), d.headers.len()))
}

/// Decode a response head or trailer section. `max`: our
/// SETTINGS_MAX_FIELD_SECTION_SIZE, counted as RFC 9114 §4.2.2 counts
/// (the frame's size was already bounded by the reader).
pub(super) fn decode(block: &[u8], kind: SectionKind, max: u64) -> Result<Decoded, &'static str> {
    const CUT: &str = "field section cut short";
    let (ric, n1) = prefixed_int(block, 8).ok_or(CUT)?;
    let (_base, n2) = prefixed_int(block.get(n1..).ok_or(CUT)?, 7).ok_or(CUT)?;
    if ric != 0 {
        // RFC 9204 §2.2.3: we allowed no dynamic table.
        return Err("field section refers to a dynamic table");
    }
    let mut rest = block.get(n1 + n2..).ok_or(CUT)?;
    let mut out = Decoded::default();
    let mut size = 0u64;
    let mut regular_seen = false;
    while let Some(&first) = rest.first() {
        let (name, value, used): (Vec<u8>, Vec<u8>, usize) = if first & 0x80 != 0 {
            // Indexed field line (§4.5.2); T (0x40) = static.
            if first & 0x40 == 0 {
                return Err("field section refers to a dynamic table");
            }
            let (index, n) = prefixed_int(rest, 6).ok_or(CUT)?;
            let (name, value) = static_table::entry(index).ok_or("static index out of range")?;
            (name.as_bytes().to_vec(), value.as_bytes().to_vec(), n)
        } else if first & 0xC0 == 0x40 {
            // Literal with name reference (§4.5.4); T (0x10) = static.
            if first & 0x10 == 0 {
                return Err("field section refers to a dynamic table");
            }
            let (index, n) = prefixed_int(rest, 4).ok_or(CUT)?;
            let (name, _) = static_table::entry(index).ok_or("static index out of range")?;
            let (value, m) = literal_string(rest.get(n..).ok_or(CUT)?, 7)?;
            (name.as_bytes().to_vec(), value, n + m)
        } else if first & 0xE0 == 0x20 {
            // Literal with literal name (§4.5.6).
            let (name, n) = literal_string(rest, 3)?;
            let (value, m) = literal_string(rest.get(n..).ok_or(CUT)?, 7)?;
            (name, value, n + m)
        } else {
            // Post-base forms (§4.5.3, §4.5.5).
            return Err("field section refers to a dynamic table");
        };
        rest = rest.get(used..).ok_or(CUT)?;
        size = size
            .saturating_add(name.len() as u64)
            .saturating_add(value.len() as u64)
            .saturating_add(FIELD_OVERHEAD);
        if size > max {
            return Err("field section larger than our SETTINGS_MAX_FIELD_SECTION_SIZE");
        }
        if name.first() == Some(&b':') {
            // RFC 9114 §4.3: pseudo-header fields come first; a response has
            // exactly one, :status; trailers have none.
            if regular_seen {
                return Err("pseudo-header field after a regular field");
            }
            if kind == SectionKind::Trailers {
                return Err("pseudo-header field in a trailer section");
            }
            if name != b":status" {
                return Err("pseudo-header field other than :status in a response");
            }
            if out.status.is_some() {
                return Err("duplicate :status");
            }
            out.status = Some(parse_status(&value)?);
            continue;
        }
        regular_seen = true;
        if name.iter().any(u8::is_ascii_uppercase) {
            // RFC 9114 §4.2: uppercase field names are malformed.
            return Err("uppercase field name");
        }
        let name = HeaderName::from_bytes(&name).map_err(|_| "invalid field name")?;
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            return Err("connection-specific field in a response");
        }
        let value = HeaderValue::from_bytes(&value).map_err(|_| "invalid field value")?;
        out.headers.append(name, value);
    }
    if kind == SectionKind::Response && out.status.is_none() {
        return Err("response without :status");
    }
    Ok(out)
}

/// `:status` is exactly three digits (RFC 9110 §15).
fn parse_status(value: &[u8]) -> Result<StatusCode, &'static str> {
    if value.len() != 3 || !value.iter().all(u8::is_ascii_digit) {
        return Err("invalid :status");
    }
    StatusCode::from_bytes(value).map_err(|_| "invalid :status")
}

/// A string literal, Huffman-decoded when coded; the bytes and the length
/// used.
fn literal_string(buf: &[u8], bits: u32) -> Result<(Vec<u8>, usize), &'static str> {
    let (raw, coded, used) = string(buf, bits).ok_or("field section cut short")?;
    let bytes = if coded {
        huffman::decode(raw).ok_or("invalid Huffman coding")?
    } else {
        raw.to_vec()
    };
    Ok((bytes, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 16 * 1024;

    #[test]
    fn plain_connect_is_method_and_authority_only() {
        let r = H3Request::connect("a:1");
        assert_eq!(
            r.encode(None).unwrap(),
            [0x00, 0x00, 0xCF, 0x50, 0x03, b'a', b':', b'1']
        );
        // scheme/path given by mistake are still not sent.
        let mut r = H3Request::connect("a:1");
        r.scheme = "https".into();
        r.path = "/".into();
        assert_eq!(r.encode(None).unwrap().len(), 8);
    }

    #[test]
    fn connect_udp_matches_the_probe_layout() {
        let block = H3Request::connect_udp("p:1", "/x").encode(None).unwrap();
        let mut want = vec![0x00, 0x00, 0xCF];
        want.extend([0x27, 0x02]);
        want.extend(b":protocol");
        want.push(11);
        want.extend(b"connect-udp");
        want.push(0xC0 | 23);
        want.extend([0x50, 3]);
        want.extend(b"p:1");
        want.extend([0x51, 2]);
        want.extend(b"/x");
        want.extend([0x27, 16 - 7]);
        want.extend(b"capsule-protocol");
        want.push(2);
        want.extend(b"?1");
        assert_eq!(block, want);
    }

    #[test]
    fn get_round_trips_through_the_names() {
        let mut r = H3Request::new(Method::GET, "http", "h:8", "/");
        r.headers.insert("x-a", HeaderValue::from_static("1"));
        r.headers
            .insert("connection", HeaderValue::from_static("close"));
        r.headers.insert("te", HeaderValue::from_static("gzip"));
        let block = r.encode(None).unwrap();
        let names = crate::wire::qpack::names(&block).unwrap();
        // :method :scheme :authority :path x-a; hop-by-hop fields dropped.
        assert_eq!(names.len(), 5);
        assert_eq!(&block[2..4], [0xC0 | 17, 0xC0 | 22]);
        // A method outside the table is a literal with the :method name.
        let r = H3Request::new(Method::from_bytes(b"PURGE").unwrap(), "https", "h", "/p");
        let block = r.encode(None).unwrap();
        assert_eq!(&block[2..4], [0x5F, 0x00]);
    }

    #[test]
    fn refuses_bad_requests_and_oversized_sections() {
        assert!(H3Request::new(Method::GET, "", "h", "/")
            .encode(None)
            .is_err());
        assert!(H3Request::new(Method::GET, "http", "", "/")
            .encode(None)
            .is_err());
        let mut r = H3Request::new(Method::GET, "http", "h", "/");
        r.protocol = Some("x".into());
        assert!(r.encode(None).is_err());
        let mut r = H3Request::connect("h:1");
        r.headers
            .insert("x-big", HeaderValue::from_str(&"v".repeat(100)).unwrap());
        // (7 + 7 + 32) + (10 + 3 + 32) + (5 + 100 + 32) = 228.
        assert!(r.encode(Some(227)).is_err());
        assert!(r.encode(Some(228)).is_ok());
    }

    #[test]
    fn decodes_static_literal_and_huffman_lines() {
        // :status 403 (two-byte index), content-type text/plain (static
        // name ref 53 + literal value), proxy-status literal, cache-control
        // Huffman value "no-cache".
        let mut block = vec![0x00, 0x00, 0xFF, 68 - 63];
        block.push(0xC0 | 53); // content-type: text/plain
        block.extend([0x5F, 46 - 15, 0x03]);
        block.extend(b"a/b");
        block.extend([0x27, 12 - 7]);
        block.extend(b"proxy-status");
        block.extend([0x01, b'x']);
        block.extend([0x27, 13 - 7]);
        block.extend(b"cache-control");
        block.extend([0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]);
        let d = decode(&block, SectionKind::Response, MAX).unwrap();
        assert_eq!(d.status, Some(StatusCode::FORBIDDEN));
        let ct: Vec<_> = d.headers.get_all("content-type").iter().collect();
        assert_eq!(ct, ["text/plain", "a/b"]);
        assert_eq!(d.headers["proxy-status"], "x");
        assert_eq!(d.headers["cache-control"], "no-cache");
    }

    #[test]
    fn rejects_what_rfc_9114_calls_malformed() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x00, 0x00], "response without :status"),
            (&[0x01, 0x00, 0xD9], "dynamic"),
            (&[0x00, 0x00, 0x80], "dynamic"),
            (&[0x00, 0x00, 0x10], "dynamic"),
            (&[0x00, 0x00, 0xD9, 0xD9], "duplicate"),
            (&[0x00, 0x00, 0xFF, 99 - 63], "out of range"),
            (&[0x00, 0x00, 0xC2, 0xD9], "after a regular"),
            (&[0x00, 0x00, 0xD9, 0xC0], "other than :status"),
            (
                &[0x00, 0x00, 0x5F, 0x09, 0x02, b'2', b'0'],
                "invalid :status",
            ),
            (&[0x00, 0x00, 0xD9, 0x27, 0x02], "cut short"),
            (&[0x00], "cut short"),
        ];
        for (block, want) in cases {
            let e = decode(block, SectionKind::Response, MAX).unwrap_err();
            assert!(e.contains(want), "{block:02x?}: {e} (want {want})");
        }
        let mut upper = vec![0x00, 0x00, 0xD9, 0x23];
        upper.extend(b"X-A");
        upper.extend([0x01, b'1']);
        assert!(decode(&upper, SectionKind::Response, MAX).is_err());
        let mut conn = vec![0x00, 0x00, 0xD9, 0x27, 10 - 7];
        conn.extend(b"connection");
        conn.extend([0x01, b'x']);
        assert!(decode(&conn, SectionKind::Response, MAX).is_err());
        // Trailers: no pseudo-headers, no :status needed.
        assert!(decode(&[0x00, 0x00, 0xD9], SectionKind::Trailers, MAX).is_err());
        assert!(decode(&[0x00, 0x00, 0xC2], SectionKind::Trailers, MAX).is_ok());
        // The size limit counts name + value + 32 per field.
        assert!(decode(&[0x00, 0x00, 0xD9], SectionKind::Response, 41).is_err());
        assert!(decode(&[0x00, 0x00, 0xD9], SectionKind::Response, 42).is_ok());
    }

    proptest::proptest! {
        /// Any bytes: an answer or an error, never a panic.
        #[test]
        fn decode_never_panics(block in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode(&block, SectionKind::Response, MAX);
            let _ = decode(&block, SectionKind::Trailers, 64);
        }
    }

    #[test]
    fn put_int_round_trips() {
        for bits in [3, 4, 6, 7, 8] {
            for v in [
                0u64,
                1,
                6,
                7,
                14,
                15,
                62,
                63,
                126,
                127,
                128,
                255,
                1337,
                1 << 20,
            ] {
                let mut out = Vec::new();
                put_int(&mut out, 0, bits, v);
                assert_eq!(prefixed_int(&out, bits), Some((v, out.len())));
            }
        }
    }
}

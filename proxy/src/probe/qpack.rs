//! The probe's own minimal QPACK (RFC 9204): the header blocks of CONNECT and
//! CONNECT-UDP requests out, the fields of a response in. Static table only:
//! our SETTINGS leave QPACK_MAX_TABLE_CAPACITY at 0, so the proxy may not use
//! a dynamic table, and a response that does reads as undecodable. Requests
//! go out without Huffman; responses may use it (`wire::huffman`). Enough to
//! talk to a proxy, not a general codec (h3 has one, but the probe writes
//! raw frames to see the proxy's control stream).

use crate::wire::huffman;
use crate::wire::qpack::{self, prefixed_int};

/// RFC 9204 Appendix A: static table entries the requests use.
const AUTHORITY: u64 = 0;
const PATH_SLASH: u64 = 1;
const METHOD_CONNECT: u64 = 15;
const SCHEME_HTTPS: u64 = 23;

/// RFC 9204 Appendix A: the static table's `:status` entries.
const STATUS: [(u64, u16); 14] = [
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

/// A request's field section, built line by line.
struct Block(Vec<u8>);

impl Block {
    /// An empty section: Required Insert Count 0, Base 0 (no dynamic table).
    fn new() -> Block {
        Block(vec![0x00, 0x00])
    }

    /// Indexed field line, static table (RFC 9204 §4.5.2: `1 T=1 index(6)`).
    fn indexed(mut self, index: u64) -> Block {
        put_int(&mut self.0, 0xC0, 6, index);
        self
    }

    /// Literal with a static name reference (§4.5.4: `0 1 N=0 T=1
    /// index(4)`), the value as it is (no Huffman).
    fn with_name_ref(mut self, index: u64, value: &str) -> Block {
        put_int(&mut self.0, 0x50, 4, index);
        put_int(&mut self.0, 0x00, 7, value.len() as u64);
        self.0.extend_from_slice(value.as_bytes());
        self
    }

    /// Literal with a literal name (§4.5.6: `0 0 1 N=0 H=0 length(3)`).
    fn literal(mut self, name: &str, value: &str) -> Block {
        put_int(&mut self.0, 0x20, 3, name.len() as u64);
        self.0.extend_from_slice(name.as_bytes());
        put_int(&mut self.0, 0x00, 7, value.len() as u64);
        self.0.extend_from_slice(value.as_bytes());
        self
    }

    fn with_auth(self, authorization: Option<&str>) -> Block {
        match authorization {
            Some(v) => self.literal("proxy-authorization", v),
            None => self,
        }
    }
}

/// `CONNECT authority` (RFC 9114 §4.4): `:method` and `:authority` only.
pub(super) fn connect_block(authority: &str, authorization: Option<&str>) -> Vec<u8> {
    Block::new()
        .indexed(METHOD_CONNECT)
        .with_name_ref(AUTHORITY, authority)
        .with_auth(authorization)
        .0
}

/// Extended CONNECT for CONNECT-UDP (RFC 9298 §3.4, RFC 9220):
/// `:protocol connect-udp`, `:scheme https`, the proxy's `:authority`, the
/// template's `:path`, and `capsule-protocol: ?1`.
pub(super) fn connect_udp_block(
    authority: &str,
    path: &str,
    authorization: Option<&str>,
) -> Vec<u8> {
    Block::new()
        .indexed(METHOD_CONNECT)
        .literal(":protocol", "connect-udp")
        .indexed(SCHEME_HTTPS)
        .with_name_ref(AUTHORITY, authority)
        .with_name_ref(PATH_SLASH, path)
        .literal("capsule-protocol", "?1")
        .with_auth(authorization)
        .0
}

/// What the probe reads of a response's field section.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Response {
    pub(super) status: Option<u16>,
    /// Fields with a literal name, lowercase as HTTP/3 requires; static
    /// entries other than `:status` are not kept.
    pub(super) fields: Vec<(String, String)>,
}

impl Response {
    /// The value of field `name` (lowercase); several are joined with ", ".
    pub(super) fn field(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

/// A response's field section (the HEADERS payload); `None` if it uses the
/// dynamic table or is malformed.
pub(super) fn decode_response(block: &[u8]) -> Option<Response> {
    // Field section prefix: Required Insert Count (8-bit prefix) and Base
    // (7-bit prefix); without the dynamic table both are 0.
    let (ric, n1) = prefixed_int(block, 8)?;
    let (_base, n2) = prefixed_int(block.get(n1..)?, 7)?;
    if ric != 0 {
        return None;
    }
    let mut rest = block.get(n1 + n2..)?;
    let mut out = Response::default();
    while let Some(&first) = rest.first() {
        let used = if first & 0x80 != 0 {
            // Indexed field line (§4.5.2); T (0x40) = static table.
            if first & 0x40 == 0 {
                return None;
            }
            let (index, n) = prefixed_int(rest, 6)?;
            if let Some((_, s)) = STATUS.iter().find(|(i, _)| *i == index) {
                out.status = Some(*s);
            }
            n
        } else if first & 0xC0 == 0x40 {
            // Literal with a name reference (§4.5.4); T (0x10) = static.
            if first & 0x10 == 0 {
                return None;
            }
            let (index, n) = prefixed_int(rest, 4)?;
            let (value, m) = string(rest.get(n..)?, 7)?;
            if STATUS.iter().any(|(i, _)| *i == index) {
                out.status = std::str::from_utf8(&value).ok()?.parse().ok();
            }
            n + m
        } else if first & 0xE0 == 0x20 {
            // Literal with a literal name (§4.5.6).
            let (name, n) = string(rest, 3)?;
            let (value, m) = string(rest.get(n..)?, 7)?;
            out.fields.push((
                String::from_utf8_lossy(&name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
            n + m
        } else {
            // Post-base forms (§4.5.3, §4.5.5): the dynamic table.
            return None;
        };
        rest = rest.get(used..)?;
    }
    Some(out)
}

/// A string literal, Huffman-decoded if it is coded; the bytes and the
/// length used.
fn string(buf: &[u8], bits: u32) -> Option<(Vec<u8>, usize)> {
    let (raw, huffman, used) = qpack::string(buf, bits)?;
    let bytes = if huffman {
        huffman::decode(raw)?
    } else {
        raw.to_vec()
    };
    Some((bytes, used))
}

/// Append an RFC 7541 §5.1 prefixed integer: `flags` in the high bits of the
/// first byte, `value` in its low `bits` and continuation bytes.
fn put_int(out: &mut Vec<u8>, flags: u8, bits: u32, value: u64) {
    let max = (1u64 << bits) - 1;
    if value < max {
        // Fits in the prefix: `value < max <= 0x7f`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_block_bytes() {
        assert_eq!(
            connect_block("a:1", None),
            [0x00, 0x00, 0xCF, 0x50, 0x03, b'a', b':', b'1']
        );
        // A long authority takes a multi-byte length.
        let long = "a".repeat(200);
        let block = connect_block(&long, None);
        assert_eq!(&block[3..6], [0x50, 0x7f, 200 - 127]);
        assert_eq!(block.len(), 6 + 200);
    }

    #[test]
    fn connect_udp_block_bytes() {
        let block = connect_udp_block("p:1", "/x", Some("Basic eA=="));
        let mut want = vec![0x00, 0x00, 0xCF];
        want.extend([0x27, 0x02]); // literal name, 3-bit length 7 + 2 = 9
        want.extend(b":protocol");
        want.push(11);
        want.extend(b"connect-udp");
        want.push(0xC0 | 23); // :scheme https
        want.extend([0x50, 3]);
        want.extend(b"p:1");
        want.extend([0x51, 2]);
        want.extend(b"/x");
        want.extend([0x27, 16 - 7]);
        want.extend(b"capsule-protocol");
        want.push(2);
        want.extend(b"?1");
        want.extend([0x27, 19 - 7]);
        want.extend(b"proxy-authorization");
        want.push(10);
        want.extend(b"Basic eA==");
        assert_eq!(block, want);
    }

    #[test]
    fn status_from_static_and_literal_lines() {
        // Prefix 00 00, indexed static 25 (:status 200).
        assert_eq!(
            decode_response(&[0x00, 0x00, 0xC0 | 25]).and_then(|r| r.status),
            Some(200)
        );
        // Literal with name ref 24 (:status), plain value "502".
        assert_eq!(
            decode_response(&[0x00, 0x00, 0x5F, 0x09, 0x03, b'5', b'0', b'2'])
                .and_then(|r| r.status),
            Some(502)
        );
        // The same with a Huffman-coded value.
        assert_eq!(
            decode_response(&[0x00, 0x00, 0x5F, 0x09, 0x82, 0x6C, 0x02]).and_then(|r| r.status),
            Some(502)
        );
        assert_eq!(prefixed_int(&[0x1F, 0x9A, 0x0A], 5), Some((1337, 3)));
    }

    #[test]
    fn literal_names_plain_and_huffman() {
        // :status 403, then proxy-status: x (plain), then
        // cache-control: no-cache with a Huffman value (RFC 7541 C.4.2).
        let mut block = vec![0x00, 0x00, 0xFF, 68 - 63]; // a two-byte index
        block.extend([0x27, 12 - 7]);
        block.extend(b"proxy-status");
        block.extend([0x01, b'x']);
        block.extend([0x27, 13 - 7]);
        block.extend(b"cache-control");
        block.extend([0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]);
        let r = decode_response(&block).expect("decodes");
        assert_eq!(r.status, Some(403));
        assert_eq!(r.field("proxy-status").as_deref(), Some("x"));
        assert_eq!(r.field("cache-control").as_deref(), Some("no-cache"));
        assert_eq!(r.field("absent"), None);
        // A Huffman-coded name: H is 0x08 in the first byte.
        let mut block = vec![0x00, 0x00, 0x28 | 6];
        block.extend([0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]); // "no-cache"
        block.extend([0x01, b'1']);
        let r = decode_response(&block).expect("decodes");
        assert_eq!(r.field("no-cache").as_deref(), Some("1"));
    }

    #[test]
    fn dynamic_table_and_truncation_read_as_undecodable() {
        assert_eq!(decode_response(&[0x01, 0x00, 0xC0 | 25]), None);
        assert_eq!(decode_response(&[0x00, 0x00, 0x80 | 1]), None);
        assert_eq!(decode_response(&[0x00, 0x00, 0x10]), None);
        assert_eq!(decode_response(&[0x00, 0x00, 0x27, 0x05, b'p']), None);
        assert_eq!(decode_response(&[0x00]), None);
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
                254,
                255,
                1337,
                1 << 20,
            ] {
                let mut out = Vec::new();
                put_int(&mut out, 0, bits, v);
                assert_eq!(prefixed_int(&out, bits), Some((v, out.len())), "{bits} {v}");
            }
        }
    }
}

//! QPACK field sections read without a dynamic table (RFC 9204 §4.5):
//! prefixed integers and string literals ([`prefixed_int`], [`string`],
//! shared with `bauta probe`'s response decoder), and where the
//! pseudo-header fields of a section are (RFC 9114 §4.3), read from the
//! encoded block without decoding it ([`names`], [`check`]).
//!
//! h3 decodes a request's pseudo-header fields into one slot each: a second
//! `:authority` silently replaces the first, one after a regular field is
//! accepted, and a trailer section's are dropped. RFC 9114 §4.3 makes each
//! of these a malformed message, so the HTTP/3 shim looks at the encoded
//! block on its way to h3 and [`check`] judges it.
//!
//! Only field *names* are needed, and only whether each is a pseudo-header
//! and which: a static-table reference says so by its index; a literal name
//! is read plain or Huffman-decoded (`wire::huffman`). Values are skipped
//! by their length. A block that refers to the
//! dynamic table is not judged ([`ScanError::Dynamic`]): we advertise a
//! table capacity of 0, and h3 refuses such a block itself.

use super::pseudo::name_of;
pub use super::pseudo::{check, Misplaced, Name, Pseudo};

/// Why a block could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanError {
    /// It ends inside a field line or an integer.
    Truncated,
    /// A dynamic-table or post-base reference, or a nonzero Required Insert
    /// Count.
    Dynamic,
    /// A static index past the table (RFC 9204 Appendix A has 99 entries).
    BadIndex,
}

/// The field names of an encoded field section, in order.
pub fn names(block: &[u8]) -> Result<Vec<Name>, ScanError> {
    let mut r = Reader { buf: block, pos: 0 };
    // Encoded Field Section Prefix (RFC 9204 §4.5.1).
    if r.int(8)? != 0 {
        return Err(ScanError::Dynamic);
    }
    r.int(7)?; // Sign bit and Delta Base: meaningless without a table.
    let mut out = Vec::new();
    while let Some(&first) = r.buf.get(r.pos) {
        let name = if first & 0x80 != 0 {
            // Indexed field line: 1 T index(6).
            let idx = static_only(first & 0x40, r.int(6)?)?;
            static_name(idx)?
        } else if first & 0x40 != 0 {
            // Literal with name reference: 01 N T index(4), then the value.
            let idx = static_only(first & 0x10, r.int(4)?)?;
            let name = static_name(idx)?;
            r.skip_string(7)?;
            name
        } else if first & 0x20 != 0 {
            // Literal with literal name: 001 N H len(3), name, value.
            let (raw, huffman) = r.string(3)?;
            let name = literal_name(raw, huffman);
            r.skip_string(7)?;
            name
        } else {
            // 0001: indexed post-base; 0000: literal with post-base name.
            return Err(ScanError::Dynamic);
        };
        out.push(name);
    }
    Ok(out)
}

fn static_only(dynamic_bit_clear: u8, idx: u64) -> Result<u64, ScanError> {
    if dynamic_bit_clear == 0 {
        return Err(ScanError::Dynamic);
    }
    Ok(idx)
}

/// The static table's pseudo-header entries (RFC 9204 Appendix A).
fn static_name(idx: u64) -> Result<Name, ScanError> {
    Ok(match idx {
        0 => Name::Pseudo(Pseudo::Authority),
        1 => Name::Pseudo(Pseudo::Path),
        15..=21 => Name::Pseudo(Pseudo::Method),
        22 | 23 => Name::Pseudo(Pseudo::Scheme),
        24..=28 | 63..=71 => Name::Pseudo(Pseudo::Status),
        2..=98 => Name::Regular,
        _ => return Err(ScanError::BadIndex),
    })
}

/// `:` is the 7-bit code 1011100 (RFC 7541 Appendix B, symbol 58).
fn huffman_starts_with_colon(raw: &[u8]) -> bool {
    raw.first().is_some_and(|b| b & 0xfe == 0xb8)
}

fn literal_name(raw: &[u8], huffman: bool) -> Name {
    if !huffman {
        return name_of(raw);
    }
    match super::huffman::decode(raw) {
        Some(name) => name_of(&name),
        // Not a valid coding (h3 refuses the section too): named by its
        // first symbol, as far as that can be read.
        None if huffman_starts_with_colon(raw) => Name::Pseudo(Pseudo::Unknown),
        None => Name::Regular,
    }
}

/// An RFC 7541 §5.1 prefixed integer in the low `bits` of the first byte
/// and the bytes after it; the value and the bytes used. `None` if it is
/// cut short or does not fit in 62 bits' worth of continuation.
pub fn prefixed_int(buf: &[u8], bits: u32) -> Option<(u64, usize)> {
    let max = (1u64 << bits) - 1;
    let mut v = u64::from(*buf.first()?) & max;
    if v < max {
        return Some((v, 1));
    }
    let mut shift = 0;
    for (i, b) in buf.iter().enumerate().skip(1) {
        v = v.checked_add(u64::from(b & 0x7F).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
    None
}

/// A string literal (RFC 9204 §4.1.2) whose length has a `bits`-bit prefix
/// and whose H flag is the bit just above it: the raw bytes, whether they
/// are Huffman-coded, and the length used.
pub fn string(buf: &[u8], bits: u32) -> Option<(&[u8], bool, usize)> {
    let huffman = buf.first()? & (1 << bits) != 0;
    let (len, n) = prefixed_int(buf, bits)?;
    let end = n.checked_add(usize::try_from(len).ok()?)?;
    Some((buf.get(n..end)?, huffman, end))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn int(&mut self, bits: u32) -> Result<u64, ScanError> {
        let (v, n) = prefixed_int(self.rest(), bits).ok_or(ScanError::Truncated)?;
        self.pos += n;
        Ok(v)
    }

    /// A string literal: its raw bytes and its H flag.
    fn string(&mut self, bits: u32) -> Result<(&'a [u8], bool), ScanError> {
        let (raw, huffman, n) = string(self.rest(), bits).ok_or(ScanError::Truncated)?;
        self.pos += n;
        Ok((raw, huffman))
    }

    fn skip_string(&mut self, bits: u32) -> Result<(), ScanError> {
        self.string(bits).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7541 Appendix B codes for the symbols the pseudo names use (an
    /// encoder for the tests; `wire::huffman` decodes).
    const CODES: [(u8, u32, u32); 16] = [
        (b':', 0x5c, 7),
        (b'a', 0x3, 5),
        (b'c', 0x4, 5),
        (b'd', 0x24, 6),
        (b'e', 0x5, 5),
        (b'h', 0x27, 6),
        (b'i', 0x6, 5),
        (b'l', 0x28, 6),
        (b'm', 0x29, 6),
        (b'o', 0x7, 5),
        (b'p', 0x2b, 6),
        (b'r', 0x2c, 6),
        (b's', 0x8, 5),
        (b't', 0x9, 5),
        (b'u', 0x2d, 6),
        (b'y', 0x7a, 7),
    ];

    fn huffman(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut n) = (0u64, 0u32);
        for c in s.bytes() {
            let (_, code, len) = CODES.iter().find(|(s, _, _)| *s == c).expect("symbol");
            acc = (acc << len) | u64::from(*code);
            n += len;
            while n >= 8 {
                out.push((acc >> (n - 8)) as u8);
                n -= 8;
            }
        }
        if n > 0 {
            let pad = 8 - n;
            out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
        }
        out
    }

    #[test]
    fn huffman_coded_names_are_read() {
        use Pseudo::*;
        for p in [Authority, Path, Method, Scheme, Status, Protocol] {
            let code = huffman(p.as_str());
            assert!(huffman_starts_with_colon(&code));
            assert_eq!(literal_name(&code, true), Name::Pseudo(p), "{}", p.as_str());
        }
        assert_eq!(literal_name(&huffman("path"), true), Name::Regular);
        assert!(!huffman_starts_with_colon(&huffman("path")));
        // A coding that does not decode, by its first symbol.
        let mut bad = huffman(":path");
        bad.push(0x00);
        assert_eq!(literal_name(&bad, true), Name::Pseudo(Unknown));
        assert_eq!(literal_name(&[0x00, 0x00], true), Name::Regular);
    }

    /// Literal with literal name, not Huffman-coded, value "v".
    fn literal(name: &str) -> Vec<u8> {
        // A 3-bit length prefix: 7 and more continue in the next byte.
        let mut out = if name.len() < 7 {
            vec![0x20 | name.len() as u8]
        } else {
            vec![0x20 | 0x07, (name.len() - 7) as u8]
        };
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&[0x01, b'v']);
        out
    }

    fn block(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![0, 0];
        for l in lines {
            b.extend_from_slice(l);
        }
        b
    }

    const METHOD_CONNECT: u8 = 0xc0 | 15; // static 15 = :method CONNECT
    const AUTHORITY_REF: u8 = 0x50; // literal, static name 0 = :authority
    const SCHEME_HTTPS: u8 = 0xc0 | 23;
    const PATH_SLASH: u8 = 0xc0 | 1;
    const ACCEPT: u8 = 0xc0 | 29; // accept: */*

    fn authority() -> Vec<u8> {
        vec![AUTHORITY_REF, 0x03, b'a', b':', b'1']
    }

    #[test]
    fn reads_names_from_every_representation() {
        let mut huff_proto = vec![0x20 | 0x08 | 0x07, 0x00];
        huff_proto.extend_from_slice(&huffman(":protocol"));
        huff_proto.extend_from_slice(&[0x01, b'x']);
        let b = block(&[
            vec![METHOD_CONNECT],
            huff_proto,
            authority(),
            vec![ACCEPT],
            literal("x-custom-header"),
        ]);
        assert_eq!(
            names(&b),
            Ok(vec![
                Name::Pseudo(Pseudo::Method),
                Name::Pseudo(Pseudo::Protocol),
                Name::Pseudo(Pseudo::Authority),
                Name::Regular,
                Name::Regular,
            ])
        );
        assert_eq!(check(&names(&b).expect("names"), false), Ok(()));
    }

    #[test]
    fn judges_the_section() {
        let req = |lines: &[Vec<u8>], trailers| check(&names(&block(lines)).expect("n"), trailers);
        let ok = [vec![METHOD_CONNECT], authority()];
        assert_eq!(req(&ok, false), Ok(()));
        assert_eq!(
            req(&[vec![METHOD_CONNECT], authority(), authority()], false),
            Err(Misplaced::Repeated(Pseudo::Authority))
        );
        assert_eq!(
            req(
                &[vec![METHOD_CONNECT], vec![ACCEPT], literal(":authority")],
                false
            ),
            Err(Misplaced::AfterRegular(Pseudo::Authority))
        );
        assert_eq!(
            req(&[vec![ACCEPT], vec![PATH_SLASH]], true),
            Err(Misplaced::InTrailers(Pseudo::Path))
        );
        assert_eq!(req(&[vec![ACCEPT]], true), Ok(()));
        assert_eq!(
            req(&[vec![SCHEME_HTTPS], vec![0xc0 | 25]], false),
            Err(Misplaced::NotForRequests(Pseudo::Status))
        );
        assert_eq!(
            req(&[literal(":bogus")], false),
            Err(Misplaced::NotForRequests(Pseudo::Unknown))
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(names(&[]), Err(ScanError::Truncated));
        assert_eq!(names(&[1, 0]), Err(ScanError::Dynamic));
        assert_eq!(names(&[0, 0, 0x80]), Err(ScanError::Dynamic));
        assert_eq!(names(&[0, 0, 0x10]), Err(ScanError::Dynamic));
        assert_eq!(names(&[0, 0, 0xc0 | 0x3f, 0x40]), Err(ScanError::BadIndex));
        assert_eq!(names(&[0, 0, 0x50, 0x05, b'a']), Err(ScanError::Truncated));
        assert_eq!(names(&[0, 0, 0xff, 0xff, 0xff]), Err(ScanError::Truncated));
        let huge = [
            0, 0, 0x5f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(names(&huge), Err(ScanError::Truncated));
    }
}

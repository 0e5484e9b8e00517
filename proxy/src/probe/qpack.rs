//! The probe's own minimal QPACK (RFC 9204): the header block of a CONNECT
//! request out, the `:status` of a response in. Static table only, no
//! dynamic table, no Huffman beyond digits: enough to talk to a proxy, not a
//! general codec (h3 has one, but the probe writes raw frames to see the
//! proxy's control stream).

/// RFC 9204 Appendix A: the static table's `:method CONNECT`.
const METHOD_CONNECT: u8 = 15;

/// The QPACK header block of `CONNECT authority`: `:method CONNECT` (an
/// indexed static line) and `:authority` (a literal with the static name
/// reference 0).
pub(super) fn connect_block(authority: &str) -> Result<Vec<u8>, String> {
    // A 7-bit length prefix; longer values would need a prefixed integer.
    let len = u8::try_from(authority.len())
        .ok()
        .filter(|&n| n < 0x7f)
        .ok_or("--connect: authority too long")?;
    // Required Insert Count 0, Base 0: no dynamic table.
    let mut block = vec![0x00, 0x00, 0xC0 | METHOD_CONNECT];
    block.push(0x50); // literal with static name reference 0 (:authority)
    block.push(len);
    block.extend_from_slice(authority.as_bytes());
    Ok(block)
}

/// `:status` from a response's QPACK header block (the HEADERS payload): a
/// static-table entry, or a literal with a static name reference (plain or
/// Huffman-coded digits). Enough for a probe; anything else reads as unknown.
pub(super) fn status(block: &[u8]) -> Option<u16> {
    // Field section prefix: Required Insert Count (8-bit prefix) and Base
    // (7-bit prefix); a response without the dynamic table has both 0.
    let (_ric, n1) = prefixed_int(block, 8)?;
    let (_base, n2) = prefixed_int(block.get(n1..)?, 7)?;
    let line = block.get(n1 + n2..)?;
    let first = *line.first()?;
    // RFC 9204 Appendix A: the static table's :status entries.
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
    if first & 0xC0 == 0xC0 {
        // Indexed field line, static table (6-bit index).
        let (idx, _) = prefixed_int(line, 6)?;
        return STATUS.iter().find(|(i, _)| *i == idx).map(|(_, s)| *s);
    }
    if first & 0xF0 == 0x50 {
        // Literal field line with a static name reference (4-bit index).
        let (_idx, n) = prefixed_int(line, 4)?;
        let value = line.get(n..)?;
        let huffman = *value.first()? & 0x80 != 0;
        let (len, m) = prefixed_int(value, 7)?;
        let bytes = value.get(m..m + usize::try_from(len).ok()?)?;
        let text = if huffman {
            huffman_digits(bytes)?
        } else {
            std::str::from_utf8(bytes).ok()?.to_string()
        };
        return text.parse().ok();
    }
    None
}

/// An RFC 7541 §5.1 prefixed integer in the low `bits` of the first byte.
fn prefixed_int(buf: &[u8], bits: u32) -> Option<(u64, usize)> {
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

/// Decode a Huffman-coded string made only of digits (RFC 7541 Appendix B:
/// '0'-'2' are 5-bit codes 0-2, '3'-'9' are 6-bit codes 0x19-0x1f).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let total = bytes.len() * 8;
    let bit = |i: usize| -> u8 { (bytes[i / 8] >> (7 - i % 8)) & 1 };
    let mut out = String::new();
    let mut i = 0;
    while i < total {
        // What is left may be EOS padding: all ones, fewer than 8 bits.
        if total - i < 8 && (i..total).all(|j| bit(j) == 1) {
            return Some(out);
        }
        let read = |n: usize| -> Option<u8> {
            if i + n > total {
                return None;
            }
            Some((i..i + n).fold(0u8, |acc, j| acc << 1 | bit(j)))
        };
        let five = read(5)?;
        if five <= 2 {
            out.push(char::from(b'0' + five));
            i += 5;
            continue;
        }
        let six = read(6)?;
        if (0x19..=0x1f).contains(&six) {
            out.push(char::from(b'3' + (six - 0x19)));
            i += 6;
            continue;
        }
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_block_bytes() {
        assert_eq!(
            connect_block("a:1").unwrap(),
            [0x00, 0x00, 0xCF, 0x50, 0x03, b'a', b':', b'1']
        );
        assert!(connect_block(&"a".repeat(127)).is_err());
    }

    #[test]
    fn huffman_digits_decode() {
        // "502": '5' 011011, '0' 00000, '2' 00010: exactly 16 bits.
        assert_eq!(huffman_digits(&[0x6C, 0x02]).as_deref(), Some("502"));
        // "200": 00010 00000 00000 + one bit of EOS padding.
        assert_eq!(huffman_digits(&[0x10, 0x01]).as_deref(), Some("200"));
        // Eight bits of padding are an error (RFC 7541 §5.2).
        assert_eq!(huffman_digits(&[0xff]), None);
        assert_eq!(huffman_digits(&[0b1010_1010]), None);
    }

    #[test]
    fn status_from_static_and_literal_lines() {
        // Prefix 00 00, indexed static 25 (:status 200).
        assert_eq!(status(&[0x00, 0x00, 0xC0 | 25]), Some(200));
        // Literal with name ref 24 (:status), plain value "502".
        assert_eq!(
            status(&[0x00, 0x00, 0x5F, 0x09, 0x03, b'5', b'0', b'2']),
            Some(502)
        );
        assert_eq!(prefixed_int(&[0x1F, 0x9A, 0x0A], 5), Some((1337, 3)));
    }
}

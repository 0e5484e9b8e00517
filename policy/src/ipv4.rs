//! The WHATWG URL IPv4 parser: the spellings browsers and `inet_aton` accept.
//!
//! `127.0.0.1`, `127.1`, `0x7f.1`, `0177.0.0.1`, `2130706433` and `0x7f000001` are all
//! the same address. A host that *ends in a number* is an IPv4 attempt and must parse
//! as one; it is never a DNS name (<https://url.spec.whatwg.org/#concept-ipv4-parser>).
//!
//! Both functions take the host lowercase or not, with its one trailing dot removed.

use std::net::Ipv4Addr;

/// The WHATWG "ends in a number checker": is the last label all digits, or a valid
/// IPv4 number (`0x1f`, `0x`)?
pub(crate) fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    !last.is_empty() && (last.bytes().all(|b| b.is_ascii_digit()) || number(last).is_some())
}

/// The WHATWG IPv4 parser: one to four parts, each decimal, octal (`0` prefix) or hex
/// (`0x` prefix); every part but the last is one byte, the last fills the remaining
/// bytes.
pub(crate) fn parse(host: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u64; 4];
    let mut count = 0;
    for text in host.split('.') {
        *parts.get_mut(count)? = number(text)?;
        count += 1;
    }
    let (last, leading) = parts.get(..count)?.split_last()?;
    if leading.iter().any(|&part| part > 255) {
        return None;
    }
    // The last part fills 5 - count bytes: 4 bytes when alone, 1 byte in a.b.c.d.
    if *last >= 1u64 << (8 * (5 - count)) {
        return None;
    }
    let leading = leading
        .iter()
        .zip([24, 16, 8])
        .fold(0, |addr, (&part, shift)| addr | (part << shift));
    u32::try_from(leading | last).ok().map(Ipv4Addr::from)
}

/// The WHATWG IPv4 number parser. Saturates instead of overflowing: any value above
/// `u32::MAX` is rejected by [`parse`] anyway.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if let Some(octal) = text.strip_prefix('0').filter(|rest| !rest.is_empty()) {
            (octal, 8)
        } else {
            (text, 10)
        };
    // "0x" alone is zero.
    digits.chars().try_fold(0u64, |value, c| {
        let digit = c.to_digit(radix)?;
        Some(
            value
                .saturating_mul(u64::from(radix))
                .saturating_add(u64::from(digit)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("00", Some(0)),
            ("0x", Some(0)),
            ("0X", Some(0)),
            ("0x1F", Some(31)),
            ("0177", Some(127)),
            ("08", None),
            ("0xg", None),
            ("", None),
            ("+1", None),
            ("-1", None),
            ("1a", None),
            ("99999999999999999999999999", Some(u64::MAX)),
        ];
        for &(text, want) in cases {
            assert_eq!(number(text), want, "{text:?}");
        }
    }

    #[test]
    fn ends_in_a_number() {
        let cases: &[(&str, bool)] = &[
            ("1.2.3.4", true),
            ("example.com", false),
            ("example.123", true),
            ("example.0x1f", true),
            ("example.0xg", false),
            ("example.08", true),
            ("123.example", false),
            ("example.", false),
            ("", false),
        ];
        for &(host, want) in cases {
            assert_eq!(ends_in_number(host), want, "{host:?}");
        }
    }

    #[test]
    fn parses() {
        let cases: &[(&str, Option<[u8; 4]>)] = &[
            ("127.0.0.1", Some([127, 0, 0, 1])),
            ("127.1", Some([127, 0, 0, 1])),
            ("127.0.1", Some([127, 0, 0, 1])),
            ("2130706433", Some([127, 0, 0, 1])),
            ("0x7f000001", Some([127, 0, 0, 1])),
            ("0x7f.1", Some([127, 0, 0, 1])),
            ("0177.0.0.1", Some([127, 0, 0, 1])),
            ("0xff.0xffffff", Some([255, 255, 255, 255])),
            ("4294967295", Some([255, 255, 255, 255])),
            ("4294967296", None),
            ("1.16777216", None),
            ("1.2.65536", None),
            ("1.2.3.256", None),
            ("256.1", None),
            ("1.2.3.4.5", None),
            ("1..2", None),
            (".1", None),
            ("1.2.3.999", None),
            ("0x", Some([0, 0, 0, 0])),
        ];
        for &(host, want) in cases {
            assert_eq!(parse(host), want.map(Ipv4Addr::from), "{host:?}");
        }
    }
}

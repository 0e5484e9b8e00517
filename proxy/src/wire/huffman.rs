//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B), decoding only. QPACK
//! uses the same code (RFC 9204 §4.1.2), and HTTP/3 servers use it: the h3
//! crate Huffman-codes every literal name and value it sends, so the probe
//! needs it to read a `proxy-status` field. Pure; fuzzed (`qpack`).

/// Appendix B's code length in bits of each symbol: bytes 0–255, then EOS
/// (256). The code is canonical — codes of one length are consecutive and
/// follow symbol order, each length starting where the previous one ended,
/// shifted left — so these lengths alone define every code (the unit tests
/// check RFC 7541 Appendix C's strings against it).
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

/// The end-of-string symbol: never valid inside a string.
const EOS: usize = 256;
/// The longest code.
const MAX_BITS: usize = 30;

/// The canonical code laid out for decoding: per length, the first code,
/// how many codes there are, and where their symbols start in `symbols`.
struct Code {
    first: [u32; MAX_BITS + 1],
    count: [u32; MAX_BITS + 1],
    start: [usize; MAX_BITS + 1],
    /// Symbols ordered by (length, symbol).
    symbols: [u16; 257],
}

impl Code {
    fn new() -> Code {
        let mut count = [0u32; MAX_BITS + 1];
        for &len in &LENGTHS {
            if let Some(c) = count.get_mut(usize::from(len)) {
                *c += 1;
            }
        }
        let mut first = [0u32; MAX_BITS + 1];
        let mut start = [0usize; MAX_BITS + 1];
        let (mut code, mut index) = (0u32, 0usize);
        for len in 1..=MAX_BITS {
            first[len] = code;
            start[len] = index;
            code = (code + count[len]) << 1;
            index += count[len] as usize;
        }
        let mut symbols = [0u16; 257];
        let mut next = start;
        for (sym, &len) in (0u16..).zip(LENGTHS.iter()) {
            if let Some(slot) = next.get_mut(usize::from(len)) {
                if let Some(s) = symbols.get_mut(*slot) {
                    *s = sym;
                }
                *slot += 1;
            }
        }
        Code {
            first,
            count,
            start,
            symbols,
        }
    }
}

/// Decode a Huffman-coded string. `None` if the bits are not one (RFC 7541
/// §5.2: a string holding EOS, or padding longer than 7 bits or not all
/// ones, "MUST be treated as a decoding error").
pub fn decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let code = Code::new();
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5);
    let (mut bits, mut len) = (0u32, 0usize);
    for byte in bytes {
        for shift in (0..8).rev() {
            bits = bits << 1 | u32::from(byte >> shift & 1);
            len += 1;
            if len > MAX_BITS {
                return None;
            }
            // `len` is 1..=MAX_BITS here, inside every per-length array.
            let offset = bits
                .checked_sub(code.first[len])
                .filter(|&o| o < code.count[len]);
            if let Some(offset) = offset {
                let sym = *code.symbols.get(code.start[len] + offset as usize)?;
                if usize::from(sym) == EOS {
                    return None;
                }
                out.push(u8::try_from(sym).ok()?);
                (bits, len) = (0, 0);
            }
        }
    }
    // What is left is padding: the most significant bits of EOS (all ones),
    // fewer than 8 of them.
    (len < 8 && bits == (1u32 << len) - 1).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7541_appendix_c_strings() {
        let cases: &[(&[u8], &str)] = &[
            // C.4.1
            (
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
                "www.example.com",
            ),
            // C.4.2
            (&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], "no-cache"),
            // C.4.3
            (
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f],
                "custom-key",
            ),
            (
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf],
                "custom-value",
            ),
            // C.6.1
            (&[0x64, 0x02], "302"),
            (&[0xae, 0xc3, 0x77, 0x1a, 0x4b], "private"),
            (
                &[
                    0xd0, 0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20, 0x05, 0x95, 0x04,
                    0x0b, 0x81, 0x66, 0xe0, 0x82, 0xa6, 0x2d, 0x1b, 0xff,
                ],
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                &[
                    0x9d, 0x29, 0xad, 0x17, 0x18, 0x63, 0xc7, 0x8f, 0x0b, 0x97, 0xc8, 0xe9, 0xae,
                    0x82, 0xae, 0x43, 0xd3,
                ],
                "https://www.example.com",
            ),
            (&[], ""),
        ];
        for (bytes, text) in cases {
            assert_eq!(decode(bytes).as_deref(), Some(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn digits_and_padding() {
        // "502": '5' 011011, '0' 00000, '2' 00010: exactly 16 bits.
        assert_eq!(decode(&[0x6C, 0x02]).as_deref(), Some(&b"502"[..]));
        // "200": 00010 00000 00000 + one bit of EOS padding.
        assert_eq!(decode(&[0x10, 0x01]).as_deref(), Some(&b"200"[..]));
        // Eight bits of padding are an error (RFC 7541 §5.2).
        assert_eq!(decode(&[0xff]), None);
        // Padding that is not all ones.
        assert_eq!(decode(&[0b1010_1010]), None);
        // EOS itself (30 ones) inside the string.
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xfc]), None);
    }

    #[test]
    fn every_code_length_is_used_as_a_prefix_free_code() {
        // Kraft's equality: a complete prefix code has sum 2^-len = 1.
        let sum: u64 = LENGTHS
            .iter()
            .map(|&l| 1u64 << (MAX_BITS - usize::from(l)))
            .sum();
        assert_eq!(sum, 1u64 << MAX_BITS);
    }
}

//! QUIC variable-length integers (RFC 9000 §16, Appendix A.1).
//!
//! The two most significant bits of the first byte give the encoded length
//! (1, 2, 4 or 8 bytes); the remaining 6, 14, 30 or 62 bits hold the value in
//! network byte order.
//!
//! [`encode`] always writes the minimal form. [`decode`] accepts any form,
//! minimal or not: HTTP/3 frame types, settings, capsule types and lengths may
//! all be sent non-minimally (only QUIC's own frame-type field may not, and
//! that is not parsed here).

use bytes::BufMut;

/// The largest value a varint can hold: 2^62 − 1.
pub const MAX: u64 = (1 << 62) - 1;

/// The longest encoding, in bytes.
pub const MAX_LEN: usize = 8;

/// Why a value could not be encoded. Both are bugs of the sender (us), never
/// of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarIntError {
    /// "A varint can never exceed 2^62−1"; a larger value is a sender bug.
    #[error("{0} does not fit in a QUIC varint (max 2^62-1)")]
    TooLarge(u64),
    /// The output buffer has no room for the encoding.
    #[error("no room for a {needed}-byte varint")]
    BufferFull { needed: usize },
}

/// Why a varint could not be decoded.
///
/// A varint has no other failure mode: every 2-bit length prefix is valid and
/// 62 value bits cannot overflow a `u64`. Callers that parse a varint at the
/// end of a complete message turn `Incomplete` into their own "truncated" or
/// "malformed" error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends before the varint does; more bytes are needed.
    #[error("incomplete varint")]
    Incomplete,
}

/// The number of bytes the minimal encoding of `v` takes (1, 2, 4 or 8).
///
/// Values above [`MAX`] report 8; [`encode`] rejects them.
pub fn encoded_len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// The total length of a varint, read from its first byte alone.
pub fn len_from_first_byte(first: u8) -> usize {
    1 << (first >> 6)
}

/// Writes the minimal encoding of `v`.
///
/// Never panics: a value above [`MAX`] or a full fixed-size buffer is an
/// error, and nothing is written in either case.
pub fn encode(v: u64, out: &mut impl BufMut) -> Result<(), VarIntError> {
    if v > MAX {
        return Err(VarIntError::TooLarge(v));
    }
    let needed = encoded_len(v);
    if out.remaining_mut() < needed {
        return Err(VarIntError::BufferFull { needed });
    }
    // The casts below cannot truncate: `encoded_len` chose the class so that
    // `v` fits in its value bits.
    match needed {
        1 => out.put_u8(v as u8),
        2 => out.put_u16(0x4000 | v as u16),
        4 => out.put_u32(0x8000_0000 | v as u32),
        _ => out.put_u64(0xc000_0000_0000_0000 | v),
    }
    Ok(())
}

/// Reads one varint from the start of `buf`: the value and the number of bytes
/// it took. Non-minimal encodings are accepted (`40 25` is 37).
pub fn decode(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let (&first, rest) = buf.split_first().ok_or(DecodeError::Incomplete)?;
    let len = len_from_first_byte(first);
    // `len` is 1, 2, 4 or 8, so `len - 1` cannot underflow.
    let rest = rest.get(..len - 1).ok_or(DecodeError::Incomplete)?;
    let v = rest
        .iter()
        .fold(u64::from(first & 0x3f), |v, &b| (v << 8) | u64::from(b));
    Ok((v, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 9000 Appendix A.1.
    const RFC_VECTORS: &[(&[u8], u64)] = &[
        (
            &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
            151_288_809_941_952_652,
        ),
        (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
        (&[0x7b, 0xbd], 15_293),
        (&[0x25], 37),
        (&[0x40, 0x25], 37),
    ];

    #[test]
    fn rfc_vectors_decode() {
        for (bytes, value) in RFC_VECTORS {
            assert_eq!(decode(bytes), Ok((*value, bytes.len())), "{bytes:02x?}");
        }
    }

    #[test]
    fn rfc_vectors_encode_minimally() {
        // `40 25` is the non-minimal form of 37; we send `25`.
        for (bytes, value) in RFC_VECTORS.iter().filter(|(b, _)| *b != [0x40, 0x25]) {
            let mut out = Vec::new();
            encode(*value, &mut out).unwrap();
            assert_eq!(&out[..], *bytes);
            assert_eq!(encoded_len(*value), bytes.len());
        }
    }

    #[test]
    fn decode_ignores_trailing_bytes() {
        assert_eq!(decode(&[0x25, 0xff, 0xff]), Ok((37, 1)));
    }

    #[test]
    fn class_boundaries() {
        let cases: &[(u64, usize)] = &[
            (0, 1),
            (63, 1),
            (64, 2),
            (16_383, 2),
            (16_384, 4),
            (1_073_741_823, 4),
            (1_073_741_824, 8),
            (MAX, 8),
        ];
        for &(v, len) in cases {
            let mut out = Vec::new();
            encode(v, &mut out).unwrap();
            assert_eq!(out.len(), len, "{v}");
            assert_eq!(decode(&out), Ok((v, len)), "{v}");
        }
    }

    #[test]
    fn too_large_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert_eq!(
            encode(MAX + 1, &mut out),
            Err(VarIntError::TooLarge(MAX + 1))
        );
        assert_eq!(
            encode(u64::MAX, &mut out),
            Err(VarIntError::TooLarge(u64::MAX))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn full_buffer_is_an_error_not_a_panic() {
        let mut arr = [0u8; 3];
        let mut slice = &mut arr[..];
        assert_eq!(
            encode(16_384, &mut slice),
            Err(VarIntError::BufferFull { needed: 4 })
        );
        assert_eq!(arr, [0, 0, 0]);
    }

    #[test]
    fn incomplete() {
        assert_eq!(decode(&[]), Err(DecodeError::Incomplete));
        assert_eq!(decode(&[0x40]), Err(DecodeError::Incomplete));
        assert_eq!(decode(&[0x9d, 0x7f, 0x3e]), Err(DecodeError::Incomplete));
        assert_eq!(
            decode(&[0xc2, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Incomplete)
        );
    }

    #[test]
    fn non_minimal_forms_decode() {
        assert_eq!(decode(&[0x80, 0, 0, 0x25]), Ok((37, 4)));
        assert_eq!(decode(&[0xc0, 0, 0, 0, 0, 0, 0, 0]), Ok((0, 8)));
    }

    proptest! {
        #[test]
        fn round_trip(v in 0..=MAX) {
            let mut out = Vec::new();
            encode(v, &mut out).unwrap();
            prop_assert_eq!(out.len(), encoded_len(v));
            prop_assert_eq!(len_from_first_byte(out[0]), out.len());
            prop_assert_eq!(decode(&out), Ok((v, out.len())));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok((v, len)) = decode(&bytes) {
                prop_assert!(v <= MAX);
                prop_assert!(len <= bytes.len());
            }
        }
    }
}

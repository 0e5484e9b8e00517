//! HTTP/3 Datagrams carried in QUIC DATAGRAM frames (RFC 9297 §2.1), holding
//! CONNECT-UDP payloads (RFC 9298 §5).
//!
//! ```text
//! HTTP/3 Datagram {
//!   Quarter Stream ID (i),          -- request stream ID / 4
//!   HTTP Datagram Payload (..),
//! }
//!
//! UDP Proxying HTTP Datagram Payload {
//!   Context ID (i),                 -- 0: the rest is a raw UDP payload
//!   UDP Proxying Payload (..),      -- may be empty
//! }
//! ```
//!
//! Stream 4, context 0, UDP payload `hi` is `01 00 68 69`.
//!
//! Error scope, for the mapping layer: a missing or too large Quarter Stream
//! ID is a connection error `H3_DATAGRAM_ERROR` (0x33) (RFC 9297 §2.1). A
//! missing Context ID concerns only the request the datagram belongs to;
//! treat it as `H3_DATAGRAM_ERROR` on that request stream.

use bytes::{BufMut, Bytes};

use super::varint::{self, VarIntError};

/// The largest Quarter Stream ID: 2^60 − 1, since stream IDs are at most
/// 2^62 − 1 (RFC 9297 §2.1).
pub const MAX_QUARTER_STREAM_ID: u64 = (1 << 60) - 1;

/// A decoded HTTP/3 Datagram with a CONNECT-UDP payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H3Datagram {
    /// The request stream ID (Quarter Stream ID × 4).
    pub stream_id: u64,
    pub context_id: u64,
    /// The UDP Proxying Payload: a slice of the input, not a copy. May be
    /// empty.
    pub payload: Bytes,
}

/// Why an HTTP/3 Datagram could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Decode: the datagram is empty or ends inside the Quarter Stream ID.
    #[error("HTTP/3 datagram too short to contain a Quarter Stream ID")]
    MissingQuarterStreamId,
    /// Decode or encode: the Quarter Stream ID exceeds 2^60 − 1.
    #[error("Quarter Stream ID {0} exceeds 2^60-1")]
    QuarterStreamIdTooLarge(u64),
    /// Decode: the HTTP Datagram Payload is empty or ends inside the Context
    /// ID.
    #[error("HTTP datagram payload too short to contain a Context ID")]
    MissingContextId,
    /// Encode: datagrams belong to requests, which live on client-initiated
    /// bidirectional streams (IDs that are multiples of 4).
    #[error("stream {0} is not a client-initiated bidirectional stream")]
    NotRequestStream(u64),
    /// Encode: a value does not fit in a varint, or the buffer is full.
    #[error(transparent)]
    Encode(#[from] VarIntError),
}

/// Writes `Quarter Stream ID || Context ID`; the UDP payload goes right after
/// it (possibly as a separate buffer). Nothing is written on error.
pub fn encode_h3_datagram_header(
    stream_id: u64,
    context_id: u64,
    out: &mut impl BufMut,
) -> Result<(), DatagramError> {
    let quarter = quarter_stream_id(stream_id)?;
    if context_id > varint::MAX {
        return Err(VarIntError::TooLarge(context_id).into());
    }
    let needed = varint::encoded_len(quarter) + varint::encoded_len(context_id);
    if out.remaining_mut() < needed {
        return Err(VarIntError::BufferFull { needed }.into());
    }
    varint::encode(quarter, out)?;
    varint::encode(context_id, out)?;
    Ok(())
}

/// Writes a whole HTTP/3 Datagram: header, then `payload`. Nothing is written
/// on error.
pub fn encode_h3_datagram(
    stream_id: u64,
    context_id: u64,
    payload: &[u8],
    out: &mut impl BufMut,
) -> Result<(), DatagramError> {
    let quarter = quarter_stream_id(stream_id)?;
    let needed = varint::encoded_len(quarter)
        .saturating_add(varint::encoded_len(context_id))
        .saturating_add(payload.len());
    if out.remaining_mut() < needed {
        return Err(VarIntError::BufferFull { needed }.into());
    }
    encode_h3_datagram_header(stream_id, context_id, out)?;
    out.put_slice(payload);
    Ok(())
}

/// Splits the Quarter Stream ID off a QUIC DATAGRAM frame's data: the request
/// stream ID and the HTTP Datagram Payload (a slice, not a copy).
///
/// Use this where the request's protocol is not yet known; for CONNECT-UDP
/// [`decode_h3_datagram`] does both steps.
pub fn decode_quarter_stream_id(buf: &Bytes) -> Result<(u64, Bytes), DatagramError> {
    // RFC 9297 §2.1: "Receipt of a QUIC DATAGRAM frame whose payload is too
    // short to allow parsing the Quarter Stream ID field MUST be treated as
    // an HTTP/3 connection error of type H3_DATAGRAM_ERROR (0x33)."
    let (quarter, payload) = take_varint(buf).ok_or(DatagramError::MissingQuarterStreamId)?;
    // RFC 9297 §2.1: the largest legal Quarter Stream ID is 2^60-1.
    // "Receipt of an HTTP/3 Datagram that includes a larger value MUST be
    // treated as an HTTP/3 connection error of type H3_DATAGRAM_ERROR
    // (0x33)."
    if quarter > MAX_QUARTER_STREAM_ID {
        return Err(DatagramError::QuarterStreamIdTooLarge(quarter));
    }
    // Cannot overflow: quarter <= 2^60 - 1.
    Ok((quarter * 4, payload))
}

/// Parses a CONNECT-UDP HTTP/3 Datagram: `Quarter Stream ID || Context ID ||
/// UDP payload`. The payload is a slice of `buf`, not a copy.
pub fn decode_h3_datagram(buf: &Bytes) -> Result<H3Datagram, DatagramError> {
    let (stream_id, rest) = decode_quarter_stream_id(buf)?;
    let (context_id, payload) = take_varint(&rest).ok_or(DatagramError::MissingContextId)?;
    Ok(H3Datagram {
        stream_id,
        context_id,
        payload,
    })
}

fn quarter_stream_id(stream_id: u64) -> Result<u64, DatagramError> {
    // RFC 9297 §2.1: the Quarter Stream ID is the ID of a client-initiated
    // bidirectional stream divided by four.
    if !stream_id.is_multiple_of(4) {
        return Err(DatagramError::NotRequestStream(stream_id));
    }
    let quarter = stream_id / 4;
    if quarter > MAX_QUARTER_STREAM_ID {
        return Err(DatagramError::QuarterStreamIdTooLarge(quarter));
    }
    Ok(quarter)
}

/// A varint from the front of `buf` and the rest, or `None` if `buf` ends
/// first.
fn take_varint(buf: &Bytes) -> Option<(u64, Bytes)> {
    match varint::decode(buf) {
        // `decode` read `n` bytes of `buf`, so `n <= buf.len()` and `slice`
        // cannot panic.
        Ok((v, n)) => Some((v, buf.slice(n..))),
        Err(varint::DecodeError::Incomplete) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(stream_id: u64, context_id: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_h3_datagram(stream_id, context_id, payload, &mut out).unwrap();
        out
    }

    /// Regression: the Quarter Stream ID is stream ID / 4, not the stream ID.
    #[test]
    fn quarter_stream_id_bytes() {
        assert_eq!(encoded(4, 0, b"hi"), [0x01, 0x00, 0x68, 0x69]);
        assert_eq!(encoded(8, 0, b"hi"), [0x02, 0x00, 0x68, 0x69]);
        assert_eq!(encoded(0, 0, b"hi"), [0x00, 0x00, 0x68, 0x69]);
        assert_eq!(encoded(256, 0, b"hi"), [0x40, 0x40, 0x00, 0x68, 0x69]);

        let mut header = Vec::new();
        encode_h3_datagram_header(4, 0, &mut header).unwrap();
        assert_eq!(header, [0x01, 0x00]);
    }

    #[test]
    fn decodes_regression_bytes() {
        let dgram = decode_h3_datagram(&Bytes::from_static(&[0x01, 0x00, 0x68, 0x69])).unwrap();
        assert_eq!(
            dgram,
            H3Datagram {
                stream_id: 4,
                context_id: 0,
                payload: Bytes::from_static(b"hi"),
            }
        );
        let dgram = decode_h3_datagram(&Bytes::from_static(&[0x40, 0x40, 0x00])).unwrap();
        assert_eq!(dgram.stream_id, 256);
        assert!(dgram.payload.is_empty());
    }

    #[test]
    fn encode_rejects_non_request_streams() {
        for id in [1, 2, 3, 5, 7, 0x3f] {
            let mut out = Vec::new();
            assert_eq!(
                encode_h3_datagram_header(id, 0, &mut out),
                Err(DatagramError::NotRequestStream(id))
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn encode_rejects_out_of_range_values() {
        let mut out = Vec::new();
        let too_big_stream = (MAX_QUARTER_STREAM_ID + 1) * 4;
        assert_eq!(
            encode_h3_datagram_header(too_big_stream, 0, &mut out),
            Err(DatagramError::QuarterStreamIdTooLarge(
                MAX_QUARTER_STREAM_ID + 1
            ))
        );
        assert_eq!(
            encode_h3_datagram_header(0, varint::MAX + 1, &mut out),
            Err(DatagramError::Encode(VarIntError::TooLarge(
                varint::MAX + 1
            )))
        );
        assert!(out.is_empty());

        let mut arr = [0u8; 3];
        let mut slice = &mut arr[..];
        assert_eq!(
            encode_h3_datagram(4, 0, b"hi", &mut slice),
            Err(DatagramError::Encode(VarIntError::BufferFull { needed: 4 }))
        );
        assert_eq!(arr, [0; 3]);
    }

    #[test]
    fn largest_stream_id_round_trips() {
        let stream_id = MAX_QUARTER_STREAM_ID * 4;
        let bytes = Bytes::from(encoded(stream_id, varint::MAX, b"x"));
        let dgram = decode_h3_datagram(&bytes).unwrap();
        assert_eq!(dgram.stream_id, stream_id);
        assert_eq!(dgram.context_id, varint::MAX);
    }

    #[test]
    fn decode_errors() {
        let cases: &[(&[u8], DatagramError)] = &[
            (&[], DatagramError::MissingQuarterStreamId),
            (&[0x40], DatagramError::MissingQuarterStreamId),
            (&[0xc0, 0, 0, 0], DatagramError::MissingQuarterStreamId),
            (&[0x01], DatagramError::MissingContextId),
            (&[0x01, 0x40], DatagramError::MissingContextId),
            (&[0x01, 0x80, 0, 0], DatagramError::MissingContextId),
            (
                // 2^60 as an 8-byte varint.
                &[0xd0, 0, 0, 0, 0, 0, 0, 0, 0x00],
                DatagramError::QuarterStreamIdTooLarge(1 << 60),
            ),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
                DatagramError::QuarterStreamIdTooLarge(varint::MAX),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                decode_h3_datagram(&Bytes::copy_from_slice(bytes)),
                Err(*want),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn quarter_stream_id_alone() {
        let (stream_id, rest) = decode_quarter_stream_id(&Bytes::from_static(&[0x02])).unwrap();
        assert_eq!(stream_id, 8);
        assert!(rest.is_empty());
    }

    #[test]
    fn non_minimal_varints_are_accepted() {
        let bytes = Bytes::from_static(&[0x40, 0x01, 0x80, 0, 0, 0x05, b'!']);
        let dgram = decode_h3_datagram(&bytes).unwrap();
        assert_eq!((dgram.stream_id, dgram.context_id), (4, 5));
        assert_eq!(&dgram.payload[..], b"!");
    }

    #[test]
    fn payload_is_a_slice_not_a_copy() {
        let bytes = Bytes::from(encoded(4, 0, b"payload"));
        let dgram = decode_h3_datagram(&bytes).unwrap();
        assert_eq!(dgram.payload.as_ptr() as usize, bytes.as_ptr() as usize + 2);
    }

    proptest! {
        #[test]
        fn round_trip(
            quarter in 0..=MAX_QUARTER_STREAM_ID,
            context_id in 0..=varint::MAX,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let bytes = Bytes::from(encoded(quarter * 4, context_id, &payload));
            let dgram = decode_h3_datagram(&bytes).unwrap();
            prop_assert_eq!(dgram.stream_id, quarter * 4);
            prop_assert_eq!(dgram.context_id, context_id);
            prop_assert_eq!(&dgram.payload[..], &payload[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Ok(dgram) = decode_h3_datagram(&Bytes::from(bytes)) {
                prop_assert_eq!(dgram.stream_id % 4, 0);
                prop_assert!(dgram.stream_id <= varint::MAX);
            }
        }
    }
}

//! The Capsule Protocol (RFC 9297 §3) and the DATAGRAM capsule (§3.5).
//!
//! A data stream that uses the Capsule Protocol is a sequence of
//!
//! ```text
//! Capsule {
//!   Capsule Type (i),
//!   Capsule Length (i),
//!   Capsule Value (..),
//! }
//! ```
//!
//! and a DATAGRAM capsule (type 0x00) carries an HTTP Datagram Payload, which
//! for CONNECT-UDP (RFC 9298 §5) is `Context ID (i) || UDP Proxying Payload`.
//!
//! [`CapsuleDecoder`] parses that stream incrementally: capsules may span any
//! number of reads and one read may hold many capsules. It never buffers a
//! capsule it is going to drop (unknown types, oversize datagrams) and never
//! allocates based on a peer-supplied length, which may be up to 2^62 − 1.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::varint::{self, VarIntError};

/// A capsule type codepoint (the "HTTP Capsule Types" registry, 62-bit space).
///
/// Open: unknown values are carried as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapsuleType(pub u64);

/// What [`CapsuleDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A DATAGRAM capsule whose payload fits the decoder's limit.
    Datagram {
        context_id: u64,
        /// The bytes after the context ID, split off the input without copying.
        /// May be empty.
        payload: Bytes,
    },
    /// A capsule of a type this decoder does not handle, dropped in full.
    Skipped { capsule_type: CapsuleType, len: u64 },
    /// A DATAGRAM capsule whose payload (after the context ID) was longer than
    /// the limit, dropped in full without being buffered. `len` is that
    /// payload's length.
    OversizeDatagram { len: u64 },
}

/// A Capsule Protocol processing error.
///
/// RFC 9297 §3.3: such errors are handled like a malformed or incomplete
/// message (HTTP/3: RFC 9114 §4.1.2, stream error `H3_MESSAGE_ERROR` or the
/// `H3_DATAGRAM_ERROR` 0x33 registered for "datagram or Capsule Protocol parse
/// error"; HTTP/2: RFC 9113 §8.1.1; HTTP/1.x: close the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapsuleError {
    #[error("malformed capsule: {0}")]
    Malformed(&'static str),
    /// The stream ended in the middle of a capsule.
    #[error("stream ended in the middle of a capsule")]
    Truncated,
}

/// Longest DATAGRAM capsule header: type (1) + length (8) + context ID (8).
pub const DATAGRAM_CAPSULE_HEADER_MAX: usize = 1 + varint::MAX_LEN + varint::MAX_LEN;

/// The encoded `Type || Length || Context ID` prefix of a DATAGRAM capsule, so
/// that callers can write it and the payload as two buffers (vectored write)
/// without copying the payload.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DatagramCapsuleHeader {
    bytes: [u8; DATAGRAM_CAPSULE_HEADER_MAX],
    len: usize,
}

/// Incremental decoder for a Capsule Protocol data stream.
///
/// Feed it a `BytesMut` that the caller appends received bytes to; call
/// [`decode`](Self::decode) until it returns `Ok(None)`, read more, repeat. At
/// the clean end of the stream call [`finish`](Self::finish).
///
/// Memory: bytes of skipped capsules are consumed as they arrive; a DATAGRAM
/// capsule is held until complete only if its payload is at most
/// `max_datagram` bytes. At most one capsule header (24 bytes) is otherwise
/// left unconsumed in the buffer.
#[derive(Debug, Clone)]
pub struct CapsuleDecoder {
    max_datagram: usize,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between capsules: waiting for `Type || Length` (and, for DATAGRAM, the
    /// context ID).
    Header,
    /// Header and context ID consumed; waiting for `len` payload bytes.
    Datagram { context_id: u64, len: usize },
    /// Dropping `remaining` more bytes, then reporting `skip`.
    Skip { skip: Skip, remaining: u64 },
    /// A malformed capsule was seen; the stream is dead.
    Failed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Unknown { capsule_type: CapsuleType, len: u64 },
    OversizeDatagram { len: u64 },
}

// === impl CapsuleType ===

impl CapsuleType {
    /// RFC 9297 §3.5.
    pub const DATAGRAM: CapsuleType = CapsuleType(0x00);
    /// RFC 9484 §4.7.1.
    pub const ADDRESS_ASSIGN: CapsuleType = CapsuleType(0x01);
    /// RFC 9484 §4.7.2.
    pub const ADDRESS_REQUEST: CapsuleType = CapsuleType(0x02);
    /// RFC 9484 §4.7.3.
    pub const ROUTE_ADVERTISEMENT: CapsuleType = CapsuleType(0x03);

    /// The registered name, if this is a known codepoint.
    pub fn name(self) -> Option<&'static str> {
        match self {
            CapsuleType::DATAGRAM => Some("DATAGRAM"),
            CapsuleType::ADDRESS_ASSIGN => Some("ADDRESS_ASSIGN"),
            CapsuleType::ADDRESS_REQUEST => Some("ADDRESS_REQUEST"),
            CapsuleType::ROUTE_ADVERTISEMENT => Some("ROUTE_ADVERTISEMENT"),
            _ => None,
        }
    }

    /// Reserved "grease" codepoints, `0x29 * N + 0x17` (RFC 9297 §5.4). They
    /// have no meaning and are dropped like any unknown type.
    pub fn is_grease(self) -> bool {
        self.0
            .checked_sub(0x17)
            .is_some_and(|offset| offset % 0x29 == 0)
    }
}

impl fmt::Debug for CapsuleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None if self.is_grease() => write!(f, "GREASE({:#x})", self.0),
            None => write!(f, "CapsuleType({:#x})", self.0),
        }
    }
}

// === impl DatagramCapsuleHeader ===

impl DatagramCapsuleHeader {
    /// The encoded header bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // `len` is at most DATAGRAM_CAPSULE_HEADER_MAX by construction; `get`
        // keeps this panic-free regardless.
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl AsRef<[u8]> for DatagramCapsuleHeader {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for DatagramCapsuleHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatagramCapsuleHeader({:02x?})", self.as_bytes())
    }
}

/// Encodes `Type (0x00) || Length || Context ID` for a DATAGRAM capsule whose
/// payload (after the context ID) is `payload_len` bytes. Write the payload
/// right after it.
pub fn datagram_capsule_header(
    context_id: u64,
    payload_len: usize,
) -> Result<DatagramCapsuleHeader, VarIntError> {
    let ctx_len = varint::encoded_len(context_id) as u64;
    let too_large = || VarIntError::TooLarge(u64::MAX);
    let value_len = u64::try_from(payload_len)
        .ok()
        .and_then(|n| n.checked_add(ctx_len))
        .ok_or_else(too_large)?;

    let mut bytes = [0u8; DATAGRAM_CAPSULE_HEADER_MAX];
    let mut out = &mut bytes[..];
    // The array fits the longest header, so only `TooLarge` can fail here.
    varint::encode(CapsuleType::DATAGRAM.0, &mut out)?;
    varint::encode(value_len, &mut out)?;
    varint::encode(context_id, &mut out)?;
    let len = DATAGRAM_CAPSULE_HEADER_MAX - out.len();
    Ok(DatagramCapsuleHeader { bytes, len })
}

/// Writes a whole DATAGRAM capsule:
/// `00 || varint(len(ctx) + len(payload)) || varint(ctx) || payload`.
///
/// Nothing is written on error.
pub fn encode_datagram_capsule(
    context_id: u64,
    payload: &[u8],
    out: &mut impl BufMut,
) -> Result<(), VarIntError> {
    let header = datagram_capsule_header(context_id, payload.len())?;
    let needed = header.len.saturating_add(payload.len());
    if out.remaining_mut() < needed {
        return Err(VarIntError::BufferFull { needed });
    }
    out.put_slice(header.as_bytes());
    out.put_slice(payload);
    Ok(())
}

/// Writes any capsule: `Type || Length || Value`. Nothing is written on error.
pub fn encode_capsule(
    capsule_type: CapsuleType,
    value: &[u8],
    out: &mut impl BufMut,
) -> Result<(), VarIntError> {
    let value_len = u64::try_from(value.len()).map_err(|_| VarIntError::TooLarge(u64::MAX))?;
    if value_len > varint::MAX {
        return Err(VarIntError::TooLarge(value_len));
    }
    if capsule_type.0 > varint::MAX {
        return Err(VarIntError::TooLarge(capsule_type.0));
    }
    let needed = varint::encoded_len(capsule_type.0)
        .saturating_add(varint::encoded_len(value_len))
        .saturating_add(value.len());
    if out.remaining_mut() < needed {
        return Err(VarIntError::BufferFull { needed });
    }
    varint::encode(capsule_type.0, out)?;
    varint::encode(value_len, out)?;
    out.put_slice(value);
    Ok(())
}

// === impl CapsuleDecoder ===

impl CapsuleDecoder {
    /// A decoder that delivers DATAGRAM payloads (the bytes after the context
    /// ID) of at most `max_datagram` bytes and skips longer ones.
    ///
    /// For CONNECT-UDP context 0 the natural limit is 65527, the largest UDP
    /// payload (RFC 9298 §5); a smaller outgoing link limit also works.
    pub fn new(max_datagram: usize) -> CapsuleDecoder {
        CapsuleDecoder {
            max_datagram,
            state: State::Header,
        }
    }

    /// The payload limit this decoder was built with.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Consumes bytes from the front of `buf` and returns the next event, or
    /// `Ok(None)` when more bytes are needed. Call again after `Some`: `buf`
    /// may hold further capsules.
    ///
    /// After an error the stream is dead and every later call returns the same
    /// error.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, CapsuleError> {
        let result = self.step(buf);
        if let Err(CapsuleError::Malformed(why)) = result {
            self.state = State::Failed(why);
        }
        result
    }

    /// Checks the clean end of the stream. `rest` is what is left of the
    /// buffer after [`decode`](Self::decode) returned `Ok(None)`.
    pub fn finish(&self, rest: &[u8]) -> Result<(), CapsuleError> {
        match self.state {
            State::Failed(why) => Err(CapsuleError::Malformed(why)),
            // RFC 9297 §3.3 (spec/masque.md §4.5): "A stream that ends
            // cleanly (FIN) in the middle of a capsule is malformed or
            // incomplete." A partial header left in `rest` counts.
            State::Header if rest.is_empty() => Ok(()),
            State::Header | State::Datagram { .. } | State::Skip { .. } => {
                Err(CapsuleError::Truncated)
            }
        }
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, CapsuleError> {
        loop {
            match self.state {
                State::Failed(why) => return Err(CapsuleError::Malformed(why)),
                State::Header => match self.decode_header(buf)? {
                    Some(next) => self.state = next,
                    None => return Ok(None),
                },
                State::Datagram { context_id, len } => {
                    if buf.len() < len {
                        return Ok(None);
                    }
                    let payload = buf.split_to(len).freeze();
                    self.state = State::Header;
                    return Ok(Some(Event::Datagram {
                        context_id,
                        payload,
                    }));
                }
                State::Skip { skip, remaining } => {
                    // RFC 9297 §3.5: for a DATAGRAM capsule too large to be
                    // usable, "the implementation SHOULD discard the Capsule
                    // without buffering its contents into memory"; unknown
                    // types are dropped too (§3.2). Drop what has arrived.
                    let available = u64::try_from(buf.len()).unwrap_or(u64::MAX);
                    let take = remaining.min(available);
                    // `take <= buf.len()`, so it fits in usize.
                    buf.advance(usize::try_from(take).unwrap_or(0));
                    // `take <= remaining` by `min`.
                    let remaining = remaining - take;
                    if remaining > 0 {
                        self.state = State::Skip { skip, remaining };
                        return Ok(None);
                    }
                    self.state = State::Header;
                    return Ok(Some(match skip {
                        Skip::Unknown { capsule_type, len } => Event::Skipped { capsule_type, len },
                        Skip::OversizeDatagram { len } => Event::OversizeDatagram { len },
                    }));
                }
            }
        }
    }

    /// Parses `Type || Length` (and the DATAGRAM context ID) from the front of
    /// `buf`. Consumes nothing and returns `None` until all of it is there.
    fn decode_header(&self, buf: &mut BytesMut) -> Result<Option<State>, CapsuleError> {
        let Some((ty, ty_len)) = peek_varint(buf, 0) else {
            return Ok(None);
        };
        let Some((len, len_len)) = peek_varint(buf, ty_len) else {
            return Ok(None);
        };
        let header_len = ty_len + len_len;
        let capsule_type = CapsuleType(ty);

        // RFC 9297 §3.2: "Endpoints that receive a Capsule with an unknown
        // Capsule Type MUST silently drop that Capsule and skip over it to
        // parse the next Capsule." Everything but DATAGRAM is unknown here.
        if capsule_type != CapsuleType::DATAGRAM {
            buf.advance(header_len);
            return Ok(Some(State::Skip {
                skip: Skip::Unknown { capsule_type, len },
                remaining: len,
            }));
        }

        // RFC 9297 §3.3 (spec/masque.md §4.5): "A capsule value with extra
        // bytes, or too few bytes, for its defined fields is malformed." A
        // CONNECT-UDP DATAGRAM value holds at least its Context ID (RFC 9298
        // §5).
        if len == 0 {
            return Err(CapsuleError::Malformed(
                "DATAGRAM capsule too short to contain a context ID",
            ));
        }
        let Some(&first) = buf.get(header_len) else {
            return Ok(None);
        };
        let ctx_len = varint::len_from_first_byte(first);
        let payload_len = len
            .checked_sub(ctx_len as u64)
            .ok_or(CapsuleError::Malformed(
                "DATAGRAM capsule context ID overruns the capsule",
            ))?;
        let Some((context_id, _)) = peek_varint(buf, header_len) else {
            return Ok(None);
        };
        // `peek_varint` found the whole context ID at `header_len`, so `buf`
        // holds at least `header_len + ctx_len` bytes.
        buf.advance(header_len + ctx_len);

        match usize::try_from(payload_len) {
            Ok(len) if len <= self.max_datagram => Ok(Some(State::Datagram { context_id, len })),
            _ => Ok(Some(State::Skip {
                skip: Skip::OversizeDatagram { len: payload_len },
                remaining: payload_len,
            })),
        }
    }
}

/// A varint at `at`, or `None` if `buf` does not hold all of it yet
/// (`Incomplete` is the only way a varint can fail to decode).
fn peek_varint(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    varint::decode(buf.get(at..)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 65_527;

    /// Decodes everything in `chunks`, fed one chunk at a time, then calls
    /// `finish`.
    fn run(
        max: usize,
        chunks: impl IntoIterator<Item = Vec<u8>>,
    ) -> (Vec<Event>, Result<(), CapsuleError>) {
        let mut dec = CapsuleDecoder::new(max);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(&chunk);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(ev)) => events.push(ev),
                    Ok(None) => break,
                    Err(e) => return (events, Err(e)),
                }
            }
        }
        let end = dec.finish(&buf);
        (events, end)
    }

    fn whole(bytes: &[u8]) -> Vec<Vec<u8>> {
        vec![bytes.to_vec()]
    }

    fn bytewise(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes.iter().map(|&b| vec![b]).collect()
    }

    fn datagram(context_id: u64, payload: &[u8]) -> Event {
        Event::Datagram {
            context_id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn capsule(ty: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_capsule(CapsuleType(ty), value, &mut out).unwrap();
        out
    }

    /// A stream exercising every event kind.
    fn mixed_stream() -> (Vec<u8>, Vec<Event>) {
        let (s, want, _) = mixed_stream_with_boundaries();
        (s, want)
    }

    /// The stream, its events, and the offset at which each capsule ends.
    fn mixed_stream_with_boundaries() -> (Vec<u8>, Vec<Event>, Vec<usize>) {
        let mut s = Vec::new();
        let mut want = Vec::new();

        s.extend(capsule(0x17, b"grease"));
        want.push(Event::Skipped {
            capsule_type: CapsuleType(0x17),
            len: 6,
        });

        encode_datagram_capsule(0, b"hello", &mut s).unwrap();
        want.push(datagram(0, b"hello"));

        s.extend(capsule(0x01, &[1, 2, 3]));
        want.push(Event::Skipped {
            capsule_type: CapsuleType::ADDRESS_ASSIGN,
            len: 3,
        });

        encode_datagram_capsule(0, b"", &mut s).unwrap();
        want.push(datagram(0, b""));

        s.extend(capsule(0x1234_5678, &[]));
        want.push(Event::Skipped {
            capsule_type: CapsuleType(0x1234_5678),
            len: 0,
        });

        encode_datagram_capsule(7, &[0xab; 40], &mut s).unwrap();
        want.push(Event::OversizeDatagram { len: 40 });

        encode_datagram_capsule(varint::MAX, b"x", &mut s).unwrap();
        want.push(datagram(varint::MAX, b"x"));

        // Recover the boundaries by decoding the stream capsule by capsule.
        let mut ends = Vec::new();
        let mut dec = CapsuleDecoder::new(8);
        let mut buf = BytesMut::from(&s[..]);
        while dec.decode(&mut buf).unwrap().is_some() {
            ends.push(s.len() - buf.len());
        }
        (s, want, ends)
    }

    #[test]
    fn spec_example_bytes() {
        // spec/masque.md §5.5: `00 || varint(1 + len(P)) || 00 || P`.
        let mut out = Vec::new();
        encode_datagram_capsule(0, b"hello", &mut out).unwrap();
        assert_eq!(out, b"\x00\x06\x00hello");

        let (events, end) = run(MAX, whole(&out));
        assert_eq!(events, vec![datagram(0, b"hello")]);
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn header_matches_full_encoding() {
        for (ctx, len) in [
            (0u64, 0usize),
            (0, 5),
            (63, 100),
            (64, 16_383),
            (varint::MAX, 70_000),
        ] {
            let payload = vec![0x5a; len];
            let mut full = Vec::new();
            encode_datagram_capsule(ctx, &payload, &mut full).unwrap();
            let header = datagram_capsule_header(ctx, len).unwrap();
            assert_eq!(&full[..header.as_bytes().len()], header.as_bytes());
            assert_eq!(&full[header.as_bytes().len()..], &payload[..]);
        }
        assert_eq!(datagram_capsule_header(1, 2).unwrap().as_bytes(), [0, 3, 1]);
    }

    #[test]
    fn encode_rejects_out_of_range_context_id() {
        let mut out = Vec::new();
        assert_eq!(
            encode_datagram_capsule(varint::MAX + 1, b"x", &mut out),
            Err(VarIntError::TooLarge(varint::MAX + 1))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn encode_into_small_buffer_writes_nothing() {
        let mut arr = [0u8; 4];
        let mut slice = &mut arr[..];
        assert_eq!(
            encode_datagram_capsule(0, b"hello", &mut slice),
            Err(VarIntError::BufferFull { needed: 8 })
        );
        assert_eq!(arr, [0; 4]);
    }

    #[test]
    fn mixed_stream_whole_and_bytewise() {
        let (s, want) = mixed_stream();
        for max in [8, 39] {
            let (events, end) = run(max, whole(&s));
            assert_eq!(events, want, "whole, max {max}");
            assert_eq!(end, Ok(()));
            let (events, end) = run(max, bytewise(&s));
            assert_eq!(events, want, "bytewise, max {max}");
            assert_eq!(end, Ok(()));
        }
    }

    #[test]
    fn mixed_stream_split_at_every_boundary() {
        let (s, want) = mixed_stream();
        for at in 0..=s.len() {
            let (a, b) = s.split_at(at);
            let (events, end) = run(8, vec![a.to_vec(), b.to_vec()]);
            assert_eq!(events, want, "split at {at}");
            assert_eq!(end, Ok(()), "split at {at}");
        }
    }

    #[test]
    fn truncated_at_every_boundary() {
        let (s, want, ends) = mixed_stream_with_boundaries();
        assert_eq!(ends.len(), want.len());
        for at in 0..s.len() {
            let (events, end) = run(8, bytewise(&s[..at]));
            let complete = ends.iter().filter(|&&e| e <= at).count();
            assert_eq!(&events[..], &want[..complete], "cut at {at}");
            if at == 0 || ends.contains(&at) {
                assert_eq!(end, Ok(()), "clean cut at {at}");
            } else {
                assert_eq!(end, Err(CapsuleError::Truncated), "cut at {at}");
            }
        }
    }

    #[test]
    fn truncation_in_each_state() {
        // Partial header.
        assert_eq!(run(MAX, whole(&[0x40])).1, Err(CapsuleError::Truncated));
        assert_eq!(run(MAX, whole(&[0x00])).1, Err(CapsuleError::Truncated));
        // DATAGRAM header without its context ID.
        assert_eq!(
            run(MAX, whole(&[0x00, 0x03])).1,
            Err(CapsuleError::Truncated)
        );
        // DATAGRAM missing payload bytes.
        assert_eq!(
            run(MAX, whole(&[0x00, 0x03, 0x00, b'h'])).1,
            Err(CapsuleError::Truncated)
        );
        // Unknown capsule missing value bytes.
        assert_eq!(
            run(MAX, whole(&[0x17, 0x02, 0xff])).1,
            Err(CapsuleError::Truncated)
        );
        // Empty stream is fine.
        assert_eq!(run(MAX, whole(&[])).1, Ok(()));
    }

    #[test]
    fn zero_length_datagram_value_is_malformed() {
        let (events, end) = run(MAX, whole(&[0x00, 0x00]));
        assert!(events.is_empty());
        assert!(matches!(end, Err(CapsuleError::Malformed(_))));
    }

    #[test]
    fn context_id_overrunning_the_value_is_malformed() {
        // Length 1, but the context ID varint says 2 bytes.
        let (_, end) = run(MAX, whole(&[0x00, 0x01, 0x40, 0x00]));
        assert!(matches!(end, Err(CapsuleError::Malformed(_))));
        // Detected from the first context byte alone, without waiting.
        let mut dec = CapsuleDecoder::new(MAX);
        let mut buf = BytesMut::from(&[0x00, 0x03, 0xc0][..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(CapsuleError::Malformed(_))
        ));
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = CapsuleDecoder::new(MAX);
        let mut buf = BytesMut::from(&[0x00, 0x00][..]);
        let err = dec.decode(&mut buf).unwrap_err();
        let mut more = BytesMut::from(&b"\x00\x02\x00h"[..]);
        assert_eq!(dec.decode(&mut more), Err(err));
        assert_eq!(dec.finish(&[]), Err(err));
    }

    #[test]
    fn datagram_with_only_context_id_has_empty_payload() {
        let (events, end) = run(MAX, whole(&[0x00, 0x01, 0x00]));
        assert_eq!(events, vec![datagram(0, b"")]);
        assert_eq!(end, Ok(()));
        // Two-byte context ID and nothing else.
        let (events, _) = run(MAX, whole(&[0x00, 0x02, 0x40, 0x40]));
        assert_eq!(events, vec![datagram(64, b"")]);
    }

    #[test]
    fn non_minimal_type_and_length_are_accepted() {
        // Type 0x00 as `40 00`, length 3 as `80 00 00 03`, context 0 as `40 00`.
        let s = [0x40, 0x00, 0x80, 0x00, 0x00, 0x03, 0x40, 0x00, b'x'];
        let (events, end) = run(MAX, whole(&s));
        assert_eq!(events, vec![datagram(0, b"x")]);
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn unknown_and_grease_types_are_skipped() {
        for ty in [0x01, 0x02, 0x03, 0x17, 0x40, 0x69, 0x3fff, varint::MAX] {
            let mut s = capsule(ty, b"some value");
            encode_datagram_capsule(2, b"after", &mut s).unwrap();
            let (events, end) = run(MAX, bytewise(&s));
            assert_eq!(
                events,
                vec![
                    Event::Skipped {
                        capsule_type: CapsuleType(ty),
                        len: 10
                    },
                    datagram(2, b"after"),
                ],
                "{ty:#x}"
            );
            assert_eq!(end, Ok(()));
        }
    }

    #[test]
    fn oversize_datagram_is_skipped_across_calls_without_buffering() {
        let mut s = Vec::new();
        encode_datagram_capsule(0, &[0x11; 1000], &mut s).unwrap();
        encode_datagram_capsule(0, b"ok", &mut s).unwrap();

        let mut dec = CapsuleDecoder::new(16);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for chunk in s.chunks(10) {
            buf.extend_from_slice(chunk);
            while let Some(ev) = dec.decode(&mut buf).unwrap() {
                events.push(ev);
            }
            // Never more than one partial header or small datagram held.
            assert!(buf.len() < 16, "holding {} bytes", buf.len());
        }
        assert_eq!(
            events,
            vec![Event::OversizeDatagram { len: 1000 }, datagram(0, b"ok")]
        );
        assert_eq!(dec.finish(&buf), Ok(()));
    }

    #[test]
    fn payload_limit_is_inclusive() {
        let mut s = Vec::new();
        encode_datagram_capsule(5, &[1; 16], &mut s).unwrap();
        encode_datagram_capsule(5, &[1; 17], &mut s).unwrap();
        let (events, _) = run(16, whole(&s));
        assert_eq!(
            events,
            vec![datagram(5, &[1; 16]), Event::OversizeDatagram { len: 17 }]
        );
    }

    #[test]
    fn huge_lengths_do_not_allocate() {
        // Unknown capsule claiming 2^62-1 bytes: consumed as it comes.
        let mut s = vec![0x17];
        varint::encode(varint::MAX, &mut s).unwrap();
        s.extend([0u8; 100]);
        let mut dec = CapsuleDecoder::new(MAX);
        let mut buf = BytesMut::from(&s[..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
        assert_eq!(dec.finish(&buf), Err(CapsuleError::Truncated));

        // DATAGRAM claiming 2^62-1 bytes: oversize, skipped.
        let mut s = vec![0x00];
        varint::encode(varint::MAX, &mut s).unwrap();
        s.push(0x00);
        let mut dec = CapsuleDecoder::new(MAX);
        let mut buf = BytesMut::from(&s[..]);
        buf.extend_from_slice(&[0u8; 100]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());

        // Even with no limit, the decoder only waits; it never reserves.
        let mut dec = CapsuleDecoder::new(usize::MAX);
        let mut buf = BytesMut::from(&s[..]);
        let capacity = buf.capacity();
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(buf.capacity() <= capacity);
        assert_eq!(dec.finish(&buf), Err(CapsuleError::Truncated));
    }

    #[test]
    fn payload_is_split_off_without_copying() {
        let mut s = BytesMut::new();
        encode_datagram_capsule(0, b"zero-copy", &mut s).unwrap();
        let start = s.as_ptr() as usize + 3;
        let mut dec = CapsuleDecoder::new(MAX);
        match dec.decode(&mut s) {
            Ok(Some(Event::Datagram { payload, .. })) => {
                assert_eq!(&payload[..], b"zero-copy");
                assert_eq!(payload.as_ptr() as usize, start);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn capsule_type_names_and_grease() {
        assert_eq!(format!("{:?}", CapsuleType::DATAGRAM), "DATAGRAM");
        assert_eq!(format!("{:?}", CapsuleType(0x01)), "ADDRESS_ASSIGN");
        assert_eq!(format!("{:?}", CapsuleType(0x02)), "ADDRESS_REQUEST");
        assert_eq!(format!("{:?}", CapsuleType(0x03)), "ROUTE_ADVERTISEMENT");
        assert_eq!(format!("{:?}", CapsuleType(0x17)), "GREASE(0x17)");
        assert_eq!(format!("{:?}", CapsuleType(0x18)), "CapsuleType(0x18)");

        for g in [0x17, 0x40, 0x69, 0x29 * 1000 + 0x17] {
            assert!(CapsuleType(g).is_grease(), "{g:#x}");
        }
        let top = (varint::MAX - 0x17) / 0x29 * 0x29 + 0x17;
        assert!(CapsuleType(top).is_grease());
        for n in [0, 1, 2, 3, 0x16, 0x18, 0x3f, 0x41, u64::MAX] {
            assert!(!CapsuleType(n).is_grease(), "{n:#x}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            chunk in 1usize..32,
            max in 0usize..64,
        ) {
            let chunks: Vec<Vec<u8>> = bytes.chunks(chunk).map(<[u8]>::to_vec).collect();
            let (events, _) = run(max, chunks);
            for ev in events {
                if let Event::Datagram { payload, .. } = ev {
                    prop_assert!(payload.len() <= max);
                }
            }
        }

        #[test]
        fn datagram_round_trip(
            ctx in 0..=varint::MAX,
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            max in 0usize..400,
            chunk in 1usize..64,
        ) {
            let mut s = Vec::new();
            encode_datagram_capsule(ctx, &payload, &mut s).unwrap();
            let chunks: Vec<Vec<u8>> = s.chunks(chunk).map(<[u8]>::to_vec).collect();
            let (events, end) = run(max, chunks);
            let want = if payload.len() <= max {
                datagram(ctx, &payload)
            } else {
                Event::OversizeDatagram { len: payload.len() as u64 }
            };
            prop_assert_eq!(events, vec![want]);
            prop_assert_eq!(end, Ok(()));
        }

        #[test]
        fn same_events_for_any_chunking(
            splits in proptest::collection::vec(1usize..16, 1..40),
        ) {
            let (s, want) = mixed_stream();
            let mut chunks = Vec::new();
            let mut rest = &s[..];
            for n in splits.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (a, b) = rest.split_at((*n).min(rest.len()));
                chunks.push(a.to_vec());
                rest = b;
            }
            let (events, end) = run(8, chunks);
            prop_assert_eq!(events, want);
            prop_assert_eq!(end, Ok(()));
        }
    }
}

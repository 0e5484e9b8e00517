//! The HTTP/3 frame layer (RFC 9114 §7): frame headers, SETTINGS entries and
//! the stream type that opens a unidirectional stream (§6.2), decoded from a
//! byte stream that may arrive in pieces of any size.
//!
//! ```text
//! HTTP/3 Frame Format {
//!   Type (i),
//!   Length (i),
//!   Frame Payload (..),
//! }
//!
//! SETTINGS Frame {
//!   Type (i) = 0x04,
//!   Length (i),
//!   Setting {
//!     Identifier (i),
//!     Value (i),
//!   } ...,
//! }
//! ```
//!
//! * Whole buffers: [`FrameHeader::decode`] / [`FrameHeader::encode`],
//!   [`encode_frame`], [`Settings`] (an iterator over a SETTINGS payload),
//!   [`encode_setting`], [`append_setting`].
//! * Streams cut at arbitrary points: [`VarintReader`] (one varint),
//!   [`FrameParser`] (frame boundaries, payloads passed through and never
//!   kept), [`SettingsReader`] (SETTINGS entries from payload pieces), and
//!   [`FrameDecoder`] (whole frames up to a size limit, larger ones skipped
//!   without being buffered).
//!
//! Type, setting and stream-type codepoints are open newtypes: unknown
//! values survive, reserved (grease) values are recognised, and it is the
//! caller's business to ignore what it does not know (RFC 9114 §9:
//! "implementations MUST ignore unknown or unsupported values in all
//! extensible protocol elements"). Nothing here does I/O, and no input makes
//! it panic or allocate more than the limit it was given.

use std::fmt;
use std::ops::ControlFlow;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::varint::{self, VarIntError};

/// A frame type (the "HTTP/3 Frame Types" registry, 62-bit space). Open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameType(pub u64);

/// A SETTINGS identifier (the "HTTP/3 Settings" registry). Open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SettingId(pub u64);

/// A unidirectional stream type (the "HTTP/3 Stream Types" registry). Open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamType(pub u64);

/// Why bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends before the item does; more bytes are needed.
    #[error("incomplete HTTP/3 frame")]
    Incomplete,
    /// RFC 9114 §7.1: a frame whose payload does not match its fields is an
    /// `H3_FRAME_ERROR`.
    #[error("malformed HTTP/3 frame: {0}")]
    Malformed(&'static str),
    /// A length above the limit the caller set.
    #[error("HTTP/3 frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: u64 },
}

/// A frame header: type and payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub ty: FrameType,
    pub len: u64,
}

/// Reads one QUIC varint across chunk boundaries (holds at most 8 bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct VarintReader {
    buf: [u8; varint::MAX_LEN],
    have: u8,
}

/// What [`FrameParser::feed`] reports, in stream order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameEvent<'a> {
    /// A frame's type is known (its length may not be yet).
    Type(FrameType),
    /// Its length is known; that many payload bytes follow.
    Header(FrameHeader),
    /// Some payload bytes of the current frame.
    Payload(&'a [u8]),
    /// The current frame's payload is complete.
    End,
}

/// Follows HTTP/3 frame boundaries in a stream without keeping payloads.
#[derive(Clone, Copy, Debug)]
pub struct FrameParser {
    state: ParseState,
}

#[derive(Clone, Copy, Debug)]
enum ParseState {
    Type(VarintReader),
    Len { ty: FrameType, r: VarintReader },
    Payload { remaining: u64 },
}

/// Reads SETTINGS entries from the pieces of one SETTINGS payload.
#[derive(Clone, Copy, Debug, Default)]
pub struct SettingsReader {
    id: Option<SettingId>,
    r: VarintReader,
}

/// The entries of a whole SETTINGS payload, in order; an entry cut short by
/// the end of the payload is `Err(Malformed)` and ends the iteration.
#[derive(Clone, Debug)]
pub struct Settings<'a> {
    rest: &'a [u8],
}

/// What [`FrameDecoder::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole frame within the limit.
    Whole { ty: FrameType, payload: Bytes },
    /// A frame longer than the limit, dropped without being buffered.
    Skipped(FrameHeader),
}

/// Decodes whole frames from a stream the caller appends to a `BytesMut`.
/// A frame longer than `max_payload` is reported as [`Frame::Skipped`] and
/// its payload dropped as it arrives, never buffered.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_payload: u64,
    /// Payload bytes of a skipped frame still to drop.
    skipping: u64,
}

// === impl FrameType ===

impl FrameType {
    pub const DATA: FrameType = FrameType(0x00);
    pub const HEADERS: FrameType = FrameType(0x01);
    pub const CANCEL_PUSH: FrameType = FrameType(0x03);
    pub const SETTINGS: FrameType = FrameType(0x04);
    pub const PUSH_PROMISE: FrameType = FrameType(0x05);
    pub const GOAWAY: FrameType = FrameType(0x07);
    pub const MAX_PUSH_ID: FrameType = FrameType(0x0d);
    /// WebTransport over HTTP/3 (draft): on a bidirectional stream, no
    /// length follows and the rest of the stream is raw bytes.
    pub const WEBTRANSPORT_STREAM: FrameType = FrameType(0x41);

    /// The registered name, if known here.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            FrameType::DATA => "DATA",
            FrameType::HEADERS => "HEADERS",
            FrameType::CANCEL_PUSH => "CANCEL_PUSH",
            FrameType::SETTINGS => "SETTINGS",
            FrameType::PUSH_PROMISE => "PUSH_PROMISE",
            FrameType::GOAWAY => "GOAWAY",
            FrameType::MAX_PUSH_ID => "MAX_PUSH_ID",
            FrameType::WEBTRANSPORT_STREAM => "WEBTRANSPORT_STREAM",
            _ => return None,
        })
    }

    /// RFC 9114 §7.2.8: types `0x1f * N + 0x21` are reserved to exercise the
    /// requirement that unknown types be ignored.
    pub fn is_grease(self) -> bool {
        is_grease(self.0)
    }

    /// RFC 9114 §7.2.8: HTTP/2 frame types without an HTTP/3 counterpart
    /// (0x02, 0x06, 0x08, 0x09) "MUST NOT be sent, and their receipt MUST be
    /// treated as a connection error of type H3_FRAME_UNEXPECTED".
    pub fn is_reserved_http2(self) -> bool {
        matches!(self.0, 0x02 | 0x06 | 0x08 | 0x09)
    }
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "FrameType({:#x})", self.0),
        }
    }
}

// === impl SettingId ===

impl SettingId {
    pub const QPACK_MAX_TABLE_CAPACITY: SettingId = SettingId(0x01);
    pub const MAX_FIELD_SECTION_SIZE: SettingId = SettingId(0x06);
    pub const QPACK_BLOCKED_STREAMS: SettingId = SettingId(0x07);
    /// RFC 9220 §3.
    pub const ENABLE_CONNECT_PROTOCOL: SettingId = SettingId(0x08);
    /// RFC 9297 §2.1.1.
    pub const H3_DATAGRAM: SettingId = SettingId(0x33);

    /// The registered name, if known here.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            SettingId::QPACK_MAX_TABLE_CAPACITY => "SETTINGS_QPACK_MAX_TABLE_CAPACITY",
            SettingId::MAX_FIELD_SECTION_SIZE => "SETTINGS_MAX_FIELD_SECTION_SIZE",
            SettingId::QPACK_BLOCKED_STREAMS => "SETTINGS_QPACK_BLOCKED_STREAMS",
            SettingId::ENABLE_CONNECT_PROTOCOL => "SETTINGS_ENABLE_CONNECT_PROTOCOL",
            SettingId::H3_DATAGRAM => "SETTINGS_H3_DATAGRAM",
            _ => return None,
        })
    }

    /// RFC 9114 §7.2.4.1: identifiers `0x1f * N + 0x21` are reserved.
    pub fn is_grease(self) -> bool {
        is_grease(self.0)
    }

    /// RFC 9114 §7.2.4.1: HTTP/2 settings without an HTTP/3 counterpart
    /// (0x00, 0x02–0x05); "their receipt MUST be treated as a connection
    /// error of type H3_SETTINGS_ERROR".
    pub fn is_reserved_http2(self) -> bool {
        matches!(self.0, 0x00 | 0x02..=0x05)
    }
}

impl fmt::Debug for SettingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "SettingId({:#x})", self.0),
        }
    }
}

// === impl StreamType ===

impl StreamType {
    /// RFC 9114 §6.2.1.
    pub const CONTROL: StreamType = StreamType(0x00);
    /// RFC 9114 §6.2.2.
    pub const PUSH: StreamType = StreamType(0x01);
    /// RFC 9204 §4.2.
    pub const QPACK_ENCODER: StreamType = StreamType(0x02);
    pub const QPACK_DECODER: StreamType = StreamType(0x03);

    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            StreamType::CONTROL => "CONTROL",
            StreamType::PUSH => "PUSH",
            StreamType::QPACK_ENCODER => "QPACK_ENCODER",
            StreamType::QPACK_DECODER => "QPACK_DECODER",
            _ => return None,
        })
    }

    /// RFC 9114 §6.2.3: stream types `0x1f * N + 0x21` are reserved.
    pub fn is_grease(self) -> bool {
        is_grease(self.0)
    }

    /// Writes the stream type that opens a unidirectional stream.
    pub fn encode(self, out: &mut impl BufMut) -> Result<(), VarIntError> {
        varint::encode(self.0, out)
    }
}

impl fmt::Debug for StreamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "StreamType({:#x})", self.0),
        }
    }
}

/// `v` is of the reserved form `0x1f * N + 0x21` (RFC 9114 §7.2.8, §7.2.4.1,
/// §6.2.3, §8.1).
pub fn is_grease(v: u64) -> bool {
    v >= 0x21 && (v - 0x21).is_multiple_of(0x1f)
}

// === impl FrameHeader ===

impl FrameHeader {
    /// Decodes a header from the start of `buf`: the header and its length
    /// in bytes. Non-minimal varints are accepted (RFC 9114 §7.1 allows them).
    pub fn decode(buf: &[u8]) -> Result<(FrameHeader, usize), DecodeError> {
        let (ty, a) = varint::decode(buf).map_err(|_| DecodeError::Incomplete)?;
        let rest = buf.get(a..).ok_or(DecodeError::Incomplete)?;
        let (len, b) = varint::decode(rest).map_err(|_| DecodeError::Incomplete)?;
        Ok((
            FrameHeader {
                ty: FrameType(ty),
                len,
            },
            a + b,
        ))
    }

    /// Writes the header (minimal varints).
    pub fn encode(&self, out: &mut impl BufMut) -> Result<(), VarIntError> {
        if out.remaining_mut() < self.encoded_len() {
            return Err(VarIntError::BufferFull {
                needed: self.encoded_len(),
            });
        }
        varint::encode(self.ty.0, out)?;
        varint::encode(self.len, out)
    }

    /// The header's length once encoded.
    pub fn encoded_len(&self) -> usize {
        varint::encoded_len(self.ty.0) + varint::encoded_len(self.len)
    }
}

/// Writes one whole frame: header, then `payload`.
pub fn encode_frame(
    ty: FrameType,
    payload: &[u8],
    out: &mut impl BufMut,
) -> Result<(), VarIntError> {
    let len = u64::try_from(payload.len()).map_err(|_| VarIntError::TooLarge(u64::MAX))?;
    let header = FrameHeader { ty, len };
    let needed = header.encoded_len() + payload.len();
    if out.remaining_mut() < needed {
        return Err(VarIntError::BufferFull { needed });
    }
    header.encode(out)?;
    out.put_slice(payload);
    Ok(())
}

/// Writes one SETTINGS entry (into a SETTINGS payload).
pub fn encode_setting(id: SettingId, value: u64, out: &mut impl BufMut) -> Result<(), VarIntError> {
    let needed = varint::encoded_len(id.0) + varint::encoded_len(value);
    if id.0 > varint::MAX || value > varint::MAX {
        return Err(VarIntError::TooLarge(id.0.max(value)));
    }
    if out.remaining_mut() < needed {
        return Err(VarIntError::BufferFull { needed });
    }
    varint::encode(id.0, out)?;
    varint::encode(value, out)
}

/// Given exactly one SETTINGS frame (header and payload, nothing after it),
/// returns it re-encoded with `id = value` appended as its last entry.
/// `None` if `frame` is not exactly such a frame, its payload does not parse,
/// or it already carries `id` (RFC 9114 §7.2.4: "The same setting identifier
/// MUST NOT occur more than once in the SETTINGS frame").
pub fn append_setting(frame: &[u8], id: SettingId, value: u64) -> Option<BytesMut> {
    let (header, n) = FrameHeader::decode(frame).ok()?;
    let payload = frame.get(n..)?;
    if header.ty != FrameType::SETTINGS || u64::try_from(payload.len()).ok()? != header.len {
        return None;
    }
    for entry in Settings::new(payload) {
        if entry.ok()?.0 == id {
            return None;
        }
    }
    let mut body = BytesMut::with_capacity(payload.len() + 2 * varint::MAX_LEN);
    body.extend_from_slice(payload);
    encode_setting(id, value, &mut body).ok()?;
    let mut out = BytesMut::with_capacity(2 * varint::MAX_LEN + body.len());
    encode_frame(FrameType::SETTINGS, &body, &mut out).ok()?;
    Some(out)
}

// === impl Settings ===

impl<'a> Settings<'a> {
    /// The entries of `payload`, a whole SETTINGS payload.
    pub fn new(payload: &'a [u8]) -> Settings<'a> {
        Settings { rest: payload }
    }
}

impl Iterator for Settings<'_> {
    type Item = Result<(SettingId, u64), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let entry = (|| {
            let (id, a) = varint::decode(self.rest).ok()?;
            let (value, b) = varint::decode(self.rest.get(a..)?).ok()?;
            Some((SettingId(id), value, a + b))
        })();
        match entry {
            Some((id, value, n)) => {
                self.rest = self.rest.get(n..).unwrap_or_default();
                Some(Ok((id, value)))
            }
            None => {
                self.rest = &[];
                Some(Err(DecodeError::Malformed("SETTINGS entry cut short")))
            }
        }
    }
}

// === impl VarintReader ===

impl VarintReader {
    /// Takes what it needs from the front of `input` (advancing it); the
    /// value once complete, then the reader is empty again.
    pub fn feed(&mut self, input: &mut &[u8]) -> Option<u64> {
        let have = usize::from(self.have);
        let first = if have > 0 {
            *self.buf.first()?
        } else {
            *input.first()?
        };
        let need = varint::len_from_first_byte(first);
        let take = need.saturating_sub(have).min(input.len());
        let (head, rest) = input.split_at(take);
        self.buf.get_mut(have..have + take)?.copy_from_slice(head);
        *input = rest;
        // `have + take <= need <= 8`.
        self.have = u8::try_from(have + take).ok()?;
        if have + take < need {
            return None;
        }
        self.have = 0;
        varint::decode(self.buf.get(..need)?).ok().map(|(v, _)| v)
    }

    /// No partial varint held.
    pub fn is_empty(&self) -> bool {
        self.have == 0
    }
}

// === impl FrameParser ===

impl Default for FrameParser {
    fn default() -> Self {
        FrameParser::new()
    }
}

impl FrameParser {
    pub fn new() -> FrameParser {
        FrameParser {
            state: ParseState::Type(VarintReader::default()),
        }
    }

    /// Feeds one chunk; `on` may stop the parse (the parser is then left
    /// where it stopped and should not be fed again).
    pub fn feed<F>(&mut self, mut input: &[u8], mut on: F) -> ControlFlow<()>
    where
        F: FnMut(FrameEvent<'_>) -> ControlFlow<()>,
    {
        loop {
            match &mut self.state {
                ParseState::Type(r) => {
                    let Some(ty) = r.feed(&mut input) else {
                        return ControlFlow::Continue(());
                    };
                    let ty = FrameType(ty);
                    self.state = ParseState::Len {
                        ty,
                        r: VarintReader::default(),
                    };
                    on(FrameEvent::Type(ty))?;
                }
                ParseState::Len { ty, r } => {
                    let ty = *ty;
                    let Some(len) = r.feed(&mut input) else {
                        return ControlFlow::Continue(());
                    };
                    self.state = ParseState::Payload { remaining: len };
                    on(FrameEvent::Header(FrameHeader { ty, len }))?;
                }
                ParseState::Payload { remaining: 0 } => {
                    self.state = ParseState::Type(VarintReader::default());
                    on(FrameEvent::End)?;
                }
                ParseState::Payload { remaining } => {
                    if input.is_empty() {
                        return ControlFlow::Continue(());
                    }
                    let n = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                    let (chunk, rest) = input.split_at(n);
                    // `n <= remaining`, so this cannot underflow.
                    *remaining -= n as u64;
                    input = rest;
                    on(FrameEvent::Payload(chunk))?;
                }
            }
        }
    }

    /// Between frames (no partial header, no payload owed).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, ParseState::Type(r) if r.is_empty())
    }
}

// === impl SettingsReader ===

impl SettingsReader {
    pub fn new() -> SettingsReader {
        SettingsReader::default()
    }

    /// Feeds the next piece of the payload; `on` gets each complete entry.
    pub fn feed(&mut self, mut payload: &[u8], mut on: impl FnMut(SettingId, u64)) {
        while let Some(v) = self.r.feed(&mut payload) {
            match self.id.take() {
                None => self.id = Some(SettingId(v)),
                Some(id) => on(id, v),
            }
        }
    }

    /// At the end of the payload: `Malformed` if an entry was cut short
    /// (RFC 9114 §7.1: a frame payload that does not match is an error).
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.id.is_none() && self.r.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed("SETTINGS entry cut short"))
        }
    }
}

// === impl FrameDecoder ===

impl FrameDecoder {
    /// Frames with payloads up to `max_payload` bytes are returned whole.
    pub fn new(max_payload: usize) -> FrameDecoder {
        FrameDecoder {
            max_payload: u64::try_from(max_payload).unwrap_or(u64::MAX),
            skipping: 0,
        }
    }

    /// The next frame from the front of `buf` (consumed), or `None` if more
    /// bytes are needed. Never allocates beyond what `buf` holds.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        if self.skipping > 0 {
            let n = usize::try_from(self.skipping).map_or(buf.len(), |s| s.min(buf.len()));
            buf.advance(n);
            // `n <= skipping`.
            self.skipping -= n as u64;
            if self.skipping > 0 {
                return None;
            }
        }
        let (header, n) = FrameHeader::decode(buf).ok()?;
        if header.len > self.max_payload {
            buf.advance(n);
            self.skipping = header.len;
            return Some(Frame::Skipped(header));
        }
        // Checked against the limit above, so it fits a usize.
        let len = usize::try_from(header.len).ok()?;
        if buf.len() < n + len {
            return None;
        }
        buf.advance(n);
        let payload = buf.split_to(len).freeze();
        Some(Frame::Whole {
            ty: header.ty,
            payload,
        })
    }

    /// Inside a skipped frame's payload.
    pub fn is_skipping(&self) -> bool {
        self.skipping > 0
    }
}

/// Frame builders for tests here and in the shims.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) fn frame(ty: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(FrameType(ty), payload, &mut out).expect("encodable frame");
        out
    }

    pub(crate) fn settings_payload(pairs: &[(u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(k, v) in pairs {
            encode_setting(SettingId(k), v, &mut out).expect("encodable setting");
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `v` in an encoding of exactly `len` bytes (non-minimal allowed).
    fn enc_len(v: u64, len: usize) -> Vec<u8> {
        let prefix: u64 = match len {
            1 => 0,
            2 => 0x4000,
            4 => 0x8000_0000,
            _ => 0xc000_0000_0000_0000,
        };
        let all = (prefix | v).to_be_bytes();
        all[8 - len..].to_vec()
    }

    use super::testing::{frame, settings_payload};

    const OURS: u64 = 0x5E_CC02;

    #[test]
    fn names_and_grease() {
        assert_eq!(format!("{:?}", FrameType::SETTINGS), "SETTINGS");
        assert_eq!(format!("{:?}", FrameType(0x5e_cc01)), "FrameType(0x5ecc01)");
        assert_eq!(format!("{:?}", SettingId(0x33)), "SETTINGS_H3_DATAGRAM");
        assert_eq!(format!("{:?}", StreamType(0x00)), "CONTROL");
        assert!(FrameType(0x21).is_grease() && FrameType(0x21 + 0x1f * 7).is_grease());
        assert!(!FrameType(0x20).is_grease() && !FrameType(0x5e_cc01).is_grease());
        // Spec `secondary-certs.md` §9: none of our codepoints is reserved.
        for v in [0x5e_cc01, 0x5e_cc02, 0x5e_cc03] {
            assert!(!is_grease(v));
        }
        assert!(FrameType(0x06).is_reserved_http2() && !FrameType(0x07).is_reserved_http2());
        assert!(SettingId(0x02).is_reserved_http2() && !SettingId(0x06).is_reserved_http2());
    }

    #[test]
    fn header_wire_form() {
        // Spec §9: SERVER_CERTIFICATE's default type is varint `80 5e cc 01`.
        let h = FrameHeader {
            ty: FrameType(0x5e_cc01),
            len: 15,
        };
        let mut out = Vec::new();
        h.encode(&mut out).unwrap();
        assert_eq!(out, [0x80, 0x5e, 0xcc, 0x01, 0x0f]);
        assert_eq!(FrameHeader::decode(&out), Ok((h, 5)));
        assert_eq!(FrameHeader::decode(&out[..4]), Err(DecodeError::Incomplete));
        assert_eq!(FrameHeader::decode(&[]), Err(DecodeError::Incomplete));
        // Non-minimal length accepted.
        assert_eq!(
            FrameHeader::decode(&[0x04, 0x40, 0x00]),
            Ok((
                FrameHeader {
                    ty: FrameType::SETTINGS,
                    len: 0
                },
                3
            ))
        );
        let mut full = [0u8; 3];
        assert!(h.encode(&mut &mut full[..]).is_err());
    }

    #[test]
    fn settings_iterator() {
        let p = settings_payload(&[(0x06, 16384), (OURS, 1)]);
        let got: Vec<_> = Settings::new(&p).collect();
        assert_eq!(
            got,
            vec![Ok((SettingId(0x06), 16384)), Ok((SettingId(OURS), 1))]
        );
        // An id without its value.
        let got: Vec<_> = Settings::new(&[0x01]).collect();
        assert_eq!(
            got,
            vec![Err(DecodeError::Malformed("SETTINGS entry cut short"))]
        );
        assert_eq!(Settings::new(&[]).count(), 0);
    }

    #[test]
    fn varint_reader_split_at_every_position() {
        for bytes in [
            vec![0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
            vec![0x9d, 0x7f, 0x3e, 0x7d],
            vec![0x7b, 0xbd],
            vec![0x25],
            vec![0x80, 0x5e, 0xcc, 0x01],
        ] {
            let want = varint::decode(&bytes).unwrap().0;
            for cut in 0..=bytes.len() {
                let mut r = VarintReader::default();
                let (a, b) = bytes.split_at(cut);
                let mut a = a;
                let first = r.feed(&mut a);
                assert!(a.is_empty());
                if cut == bytes.len() {
                    assert_eq!(first, Some(want));
                    continue;
                }
                assert_eq!(first, None);
                let mut b = b;
                assert_eq!(r.feed(&mut b), Some(want), "{bytes:02x?} cut {cut}");
                assert!(b.is_empty() && r.is_empty());
            }
        }
    }

    #[test]
    fn append_setting_appends_one_entry() {
        let plain = frame(0x04, &settings_payload(&[(0x06, 16384), (0x33, 1)]));
        let out = append_setting(&plain, SettingId(OURS), 1).unwrap();
        let want = frame(
            0x04,
            &settings_payload(&[(0x06, 16384), (0x33, 1), (OURS, 1)]),
        );
        assert_eq!(&out[..], &want[..]);
        // The wire form the spec gives: id `80 5e cc 02`, value `01`.
        assert!(out.ends_with(&[0x80, 0x5e, 0xcc, 0x02, 0x01]));
        // Already present, not SETTINGS, a wrong length: None.
        assert_eq!(append_setting(&out, SettingId(OURS), 1), None);
        assert_eq!(
            append_setting(&[0x07, 0x01, 0x00], SettingId(OURS), 1),
            None
        );
        assert_eq!(
            append_setting(&[0x04, 0x05, 0x06], SettingId(OURS), 1),
            None
        );
        assert_eq!(
            append_setting(&[0x04, 0x01, 0x06], SettingId(OURS), 1),
            None
        );
        // An empty SETTINGS frame.
        let out = append_setting(&[0x04, 0x00], SettingId(OURS), 1).unwrap();
        assert_eq!(&out[..], &[0x04, 0x05, 0x80, 0x5e, 0xcc, 0x02, 0x01]);
    }

    #[test]
    fn settings_reader_reports_cut_entries() {
        let mut r = SettingsReader::new();
        let mut got = Vec::new();
        r.feed(&[0x01], |id, v| got.push((id, v)));
        assert!(r.finish().is_err());
        r.feed(&[0x40, 0x10], |id, v| got.push((id, v)));
        assert_eq!(r.finish(), Ok(()));
        assert_eq!(got, vec![(SettingId(1), 16)]);
    }

    #[test]
    fn decoder_returns_whole_frames_and_skips_big_ones() {
        let mut d = FrameDecoder::new(4);
        let mut bytes = frame(0x04, &[0x06, 0x01]);
        bytes.extend(frame(0x21, &[0xaa; 10]));
        bytes.extend(frame(0x07, &[0x00]));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes {
            buf.put_u8(b);
            while let Some(f) = d.decode(&mut buf) {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                Frame::Whole {
                    ty: FrameType::SETTINGS,
                    payload: Bytes::from_static(&[0x06, 0x01])
                },
                Frame::Skipped(FrameHeader {
                    ty: FrameType(0x21),
                    len: 10
                }),
                Frame::Whole {
                    ty: FrameType::GOAWAY,
                    payload: Bytes::from_static(&[0x00])
                },
            ]
        );
        assert!(buf.is_empty() && !d.is_skipping());
    }

    /// Reference: frame headers of a whole buffer, parsed in one go.
    fn reference_headers(mut b: &[u8]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while let Ok((h, n)) = FrameHeader::decode(b) {
            b = &b[n..];
            out.push((h.ty.0, h.len));
            match usize::try_from(h.len) {
                Ok(l) if l <= b.len() => b = &b[l..],
                _ => break,
            }
        }
        out
    }

    fn cut_points(len: usize, cuts: &[usize]) -> Vec<usize> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
        cuts.sort_unstable();
        cuts.push(len);
        cuts
    }

    fn chunked_headers(bytes: &[u8], cuts: &[usize]) -> (Vec<(u64, u64)>, Vec<u8>, FrameParser) {
        let mut p = FrameParser::default();
        let mut headers = Vec::new();
        let mut payload = Vec::new();
        let mut last = 0;
        for c in cut_points(bytes.len(), cuts) {
            let flow = p.feed(&bytes[last..c], |ev| {
                match ev {
                    FrameEvent::Header(h) => headers.push((h.ty.0, h.len)),
                    FrameEvent::Payload(b) => payload.extend_from_slice(b),
                    FrameEvent::Type(_) | FrameEvent::End => {}
                }
                ControlFlow::Continue(())
            });
            assert!(flow.is_continue());
            last = c;
        }
        (headers, payload, p)
    }

    fn arb_frames() -> impl Strategy<Value = Vec<(u64, Vec<u8>, usize, usize)>> {
        proptest::collection::vec(
            (
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..50),
                0usize..4,
                0usize..4,
            ),
            0..10,
        )
    }

    proptest! {
        #[test]
        fn decoding_never_panics(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..40), 0..12), max in 0usize..64) {
            let mut f = FrameParser::default();
            let mut u = VarintReader::default();
            let mut s = SettingsReader::new();
            let mut d = FrameDecoder::new(max);
            let mut buf = BytesMut::new();
            for ch in &chunks {
                let _ = f.feed(ch, |_| ControlFlow::Continue(()));
                let mut rest = &ch[..];
                while u.feed(&mut rest).is_some() {}
                s.feed(ch, |_, _| {});
                let _ = FrameHeader::decode(ch);
                let _ = Settings::new(ch).count();
                let _ = append_setting(ch, SettingId(OURS), 1);
                buf.extend_from_slice(ch);
                while let Some(fr) = d.decode(&mut buf) {
                    if let Frame::Whole { payload, .. } = fr {
                        prop_assert!(payload.len() <= max);
                    }
                }
                prop_assert!(buf.len() <= chunks.iter().map(Vec::len).sum::<usize>());
            }
        }

        #[test]
        fn frame_boundaries_match_reference_on_any_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let (headers, _, _) = chunked_headers(&bytes, &cuts);
            prop_assert_eq!(headers, reference_headers(&bytes));
        }

        #[test]
        fn encode_then_decode_round_trips(
            frames in arb_frames(),
            cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
            let mut bytes = Vec::new();
            let mut want = Vec::new();
            let mut want_payload = Vec::new();
            for (ty, payload, tl, ll) in &frames {
                let ty = ty & varint::MAX;
                let tl = varint::encoded_len(ty).max([1, 2, 4, 8][*tl]);
                let len = payload.len() as u64;
                let ll = varint::encoded_len(len).max([1, 2, 4, 8][*ll]);
                bytes.extend(enc_len(ty, tl));
                bytes.extend(enc_len(len, ll));
                bytes.extend_from_slice(payload);
                want.push((ty, len));
                want_payload.extend_from_slice(payload);
            }
            let (headers, payload, p) = chunked_headers(&bytes, &cuts);
            prop_assert_eq!(&headers, &want);
            prop_assert_eq!(payload, want_payload);
            prop_assert!(p.at_boundary());

            // The whole-frame decoder, fed the same pieces.
            let mut d = FrameDecoder::new(64);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut last = 0;
            for c in cut_points(bytes.len(), &cuts) {
                buf.extend_from_slice(&bytes[last..c]);
                last = c;
                while let Some(Frame::Whole { ty, payload }) = d.decode(&mut buf) {
                    got.push((ty.0, payload.to_vec()));
                }
            }
            let whole: Vec<(u64, Vec<u8>)> =
                frames.iter().map(|(t, p, _, _)| (t & varint::MAX, p.clone())).collect();
            prop_assert_eq!(got, whole);

            // Minimal re-encoding decodes to the same headers.
            let mut minimal = Vec::new();
            for (t, p) in frames.iter().map(|(t, p, _, _)| (t & varint::MAX, p)) {
                encode_frame(FrameType(t), p, &mut minimal).unwrap();
            }
            prop_assert_eq!(reference_headers(&minimal), want);
        }

        #[test]
        fn settings_round_trip(
            pairs in proptest::collection::vec((0..=varint::MAX, 0..=varint::MAX), 0..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let payload = settings_payload(&pairs);
            let whole: Vec<(u64, u64)> =
                Settings::new(&payload).map(|e| e.map(|(k, v)| (k.0, v)).unwrap()).collect();
            prop_assert_eq!(&whole, &pairs);
            let mut r = SettingsReader::new();
            let mut got = Vec::new();
            let mut last = 0;
            for c in cut_points(payload.len(), &cuts) {
                r.feed(&payload[last..c], |k, v| got.push((k.0, v)));
                last = c;
            }
            prop_assert_eq!(r.finish(), Ok(()));
            prop_assert_eq!(got, pairs);
        }
    }
}

//! The HTTP/2 frame layer (RFC 9113 §4.1), as far as a byte-stream shim
//! between TLS and h2 needs it: frame headers, SETTINGS entries (§6.5.1),
//! GOAWAY (§6.8), and two incremental scanners that follow frame boundaries in
//! a byte stream cut at arbitrary points.
//!
//! ```text
//! HTTP Frame {
//!   Length (24),
//!   Type (8),
//!   Flags (8),
//!   Reserved (1),
//!   Stream Identifier (31),
//!   Frame Payload (..),
//! }
//! ```
//!
//! * [`FrameTracker`] follows a stream that we produce (h2's output): where the
//!   frame boundaries are and whether a header block is open, so that other
//!   frames can be inserted only where RFC 9113 allows.
//! * [`FrameScanner`] follows a stream that the peer produces (the client's
//!   connection preface and frames): it reports every frame header and every
//!   SETTINGS entry and skips all other payloads without buffering them. Its
//!   memory is a fixed few dozen bytes whatever the input.
//!
//! * [`FrameDecoder`] returns whole frames (for a client that must read a
//!   frame's payload), up to a size limit; larger frames are skipped without
//!   being buffered.
//!
//! None does I/O or panics on any input; only [`FrameDecoder`] allocates,
//! and never more than its limit.

use std::fmt;
use std::ops::Deref;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of a frame header.
pub const HEADER_LEN: usize = 9;

/// The largest frame payload length the 24-bit field can carry.
pub const MAX_PAYLOAD_LEN: u32 = (1 << 24) - 1;

/// `SETTINGS_MAX_FRAME_SIZE` before the peer says otherwise (RFC 9113 §6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The client connection preface (RFC 9113 §3.4), followed by a SETTINGS frame.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of one SETTINGS entry: identifier (16) and value (32).
pub const SETTING_LEN: usize = 6;

/// A frame type (the "HTTP/2 Frame Type" registry). Open: unknown values are
/// carried as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameType(pub u8);

/// A SETTINGS identifier (the "HTTP/2 Settings" registry). Open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SettingId(pub u16);

/// An HTTP/2 error code (the "HTTP/2 Error Code" registry). Open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u32);

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (24 bits).
    pub len: u32,
    pub kind: FrameType,
    pub flags: u8,
    /// Stream identifier with the reserved bit cleared (31 bits).
    pub stream_id: u32,
}

/// Follows frame boundaries in a frame stream we write (after any preface).
///
/// Feed it every byte that goes on the wire, in order, with
/// [`advance`](Self::advance); ask [`can_insert`](Self::can_insert) whether a
/// whole frame of our own may be written now. `Copy`, so that a caller can try
/// a step on a copy first.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameTracker {
    /// The part of the next frame header seen so far.
    head: [u8; HEADER_LEN],
    /// How many bytes of `head` are filled; 0 between frames.
    head_len: usize,
    /// Payload bytes of the current frame not yet seen.
    remaining: usize,
    /// A HEADERS or PUSH_PROMISE without END_HEADERS was seen and no
    /// CONTINUATION with END_HEADERS yet.
    in_header_block: bool,
}

/// What [`FrameScanner::next_event`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanEvent {
    /// The bytes do not start with the client connection preface. The scanner
    /// stops; the HTTP/2 implementation reading the same bytes will fail the
    /// connection itself.
    PrefaceMismatch,
    /// A complete frame header. Its payload follows (and is skipped unless it
    /// is a SETTINGS payload, whose entries are reported next).
    Frame(FrameHeader),
    /// One entry of a non-ACK SETTINGS frame on stream 0.
    Setting { id: SettingId, value: u32 },
    /// The end of the SETTINGS frame whose entries were just reported.
    SettingsEnd,
}

/// Incrementally scans the bytes a client sends: the 24-byte preface, then
/// frames. Bytes may be fed in pieces of any size.
#[derive(Clone, Debug)]
pub struct FrameScanner {
    state: ScanState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScanState {
    /// `matched` bytes of the preface seen.
    Preface { matched: usize },
    /// Between frames; `len` bytes of the next header seen.
    Header { head: [u8; HEADER_LEN], len: usize },
    /// Inside a well-formed SETTINGS payload: `remaining` bytes to go, `len`
    /// bytes of the current entry held in `entry`.
    Settings {
        remaining: usize,
        entry: [u8; SETTING_LEN],
        len: usize,
    },
    /// Dropping the rest of a payload.
    Skip { remaining: usize },
    /// No preface: nothing more is parsed.
    Stopped,
}

/// What [`FrameDecoder::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole frame within the limit.
    Whole { header: FrameHeader, payload: Bytes },
    /// A frame longer than the limit, dropped without being buffered.
    Skipped(FrameHeader),
}

/// Decodes whole frames from a stream (at a frame boundary: after any
/// preface) that the caller appends to a `BytesMut`.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_payload: usize,
    /// Payload bytes of a skipped frame still to drop.
    skipping: usize,
}

// === impl FrameType ===

impl FrameType {
    pub const DATA: FrameType = FrameType(0x0);
    pub const HEADERS: FrameType = FrameType(0x1);
    pub const PRIORITY: FrameType = FrameType(0x2);
    pub const RST_STREAM: FrameType = FrameType(0x3);
    pub const SETTINGS: FrameType = FrameType(0x4);
    pub const PUSH_PROMISE: FrameType = FrameType(0x5);
    pub const PING: FrameType = FrameType(0x6);
    pub const GOAWAY: FrameType = FrameType(0x7);
    pub const WINDOW_UPDATE: FrameType = FrameType(0x8);
    pub const CONTINUATION: FrameType = FrameType(0x9);

    /// The registered name, if this is a core frame type.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            FrameType::DATA => "DATA",
            FrameType::HEADERS => "HEADERS",
            FrameType::PRIORITY => "PRIORITY",
            FrameType::RST_STREAM => "RST_STREAM",
            FrameType::SETTINGS => "SETTINGS",
            FrameType::PUSH_PROMISE => "PUSH_PROMISE",
            FrameType::PING => "PING",
            FrameType::GOAWAY => "GOAWAY",
            FrameType::WINDOW_UPDATE => "WINDOW_UPDATE",
            FrameType::CONTINUATION => "CONTINUATION",
            _ => return None,
        })
    }
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "FrameType({:#04x})", self.0),
        }
    }
}

// === impl SettingId ===

impl SettingId {
    pub const HEADER_TABLE_SIZE: SettingId = SettingId(0x1);
    pub const ENABLE_PUSH: SettingId = SettingId(0x2);
    pub const MAX_CONCURRENT_STREAMS: SettingId = SettingId(0x3);
    pub const INITIAL_WINDOW_SIZE: SettingId = SettingId(0x4);
    pub const MAX_FRAME_SIZE: SettingId = SettingId(0x5);
    pub const MAX_HEADER_LIST_SIZE: SettingId = SettingId(0x6);
    /// RFC 8441 §3.
    pub const ENABLE_CONNECT_PROTOCOL: SettingId = SettingId(0x8);

    /// The registered name, if known here.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            SettingId::HEADER_TABLE_SIZE => "HEADER_TABLE_SIZE",
            SettingId::ENABLE_PUSH => "ENABLE_PUSH",
            SettingId::MAX_CONCURRENT_STREAMS => "MAX_CONCURRENT_STREAMS",
            SettingId::INITIAL_WINDOW_SIZE => "INITIAL_WINDOW_SIZE",
            SettingId::MAX_FRAME_SIZE => "MAX_FRAME_SIZE",
            SettingId::MAX_HEADER_LIST_SIZE => "MAX_HEADER_LIST_SIZE",
            SettingId::ENABLE_CONNECT_PROTOCOL => "ENABLE_CONNECT_PROTOCOL",
            _ => return None,
        })
    }
}

impl fmt::Debug for SettingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "SettingId({:#06x})", self.0),
        }
    }
}

// === impl ErrorCode ===

impl ErrorCode {
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);

    /// The registered name, if known here.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::NO_ERROR => "NO_ERROR",
            ErrorCode::PROTOCOL_ERROR => "PROTOCOL_ERROR",
            ErrorCode::INTERNAL_ERROR => "INTERNAL_ERROR",
            ErrorCode::FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
            ErrorCode::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
            _ => return None,
        })
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ErrorCode({:#010x})", self.0),
        }
    }
}

// === impl FrameHeader ===

impl FrameHeader {
    /// SETTINGS, PING: "ACK" (RFC 9113 §6.5, §6.7).
    pub const FLAG_ACK: u8 = 0x1;
    /// DATA, HEADERS: "END_STREAM".
    pub const FLAG_END_STREAM: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: "END_HEADERS".
    pub const FLAG_END_HEADERS: u8 = 0x4;

    /// A header for a payload of `len` bytes; `None` if `len` does not fit the
    /// 24-bit field. The reserved bit of `stream_id` is cleared.
    pub fn new(kind: FrameType, flags: u8, stream_id: u32, len: usize) -> Option<FrameHeader> {
        let len = u32::try_from(len).ok().filter(|&n| n <= MAX_PAYLOAD_LEN)?;
        Some(FrameHeader {
            len,
            kind,
            flags,
            stream_id: stream_id & 0x7fff_ffff,
        })
    }

    /// Decodes a header. Every 9-byte string is a valid header (RFC 9113 §4.1:
    /// the reserved bit "MUST be ignored when receiving").
    pub fn decode(b: &[u8; HEADER_LEN]) -> FrameHeader {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *b;
        FrameHeader {
            len: u32::from_be_bytes([0, l0, l1, l2]),
            kind: FrameType(kind),
            flags,
            stream_id: u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]),
        }
    }

    /// Encodes the header (the reserved bit is sent as 0, RFC 9113 §4.1).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [_, l0, l1, l2] = (self.len & MAX_PAYLOAD_LEN).to_be_bytes();
        let [s0, s1, s2, s3] = (self.stream_id & 0x7fff_ffff).to_be_bytes();
        [l0, l1, l2, self.kind.0, self.flags, s0, s1, s2, s3]
    }

    /// Payload length as a `usize`.
    pub fn payload_len(&self) -> usize {
        // 24 bits fit every supported `usize`.
        self.len as usize
    }

    pub fn has_flag(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }
}

/// Encodes one SETTINGS entry.
pub fn encode_setting(id: SettingId, value: u32) -> [u8; SETTING_LEN] {
    let [i0, i1] = id.0.to_be_bytes();
    let [v0, v1, v2, v3] = value.to_be_bytes();
    [i0, i1, v0, v1, v2, v3]
}

/// Decodes one SETTINGS entry.
pub fn decode_setting(b: &[u8; SETTING_LEN]) -> (SettingId, u32) {
    let [i0, i1, v0, v1, v2, v3] = *b;
    (
        SettingId(u16::from_be_bytes([i0, i1])),
        u32::from_be_bytes([v0, v1, v2, v3]),
    )
}

/// The entries of a SETTINGS payload; a trailing partial entry is ignored
/// (RFC 9113 §6.5: a length that is not a multiple of 6 is a
/// `FRAME_SIZE_ERROR`, for the HTTP/2 implementation to report).
pub fn settings(payload: &[u8]) -> impl Iterator<Item = (SettingId, u32)> + '_ {
    payload
        .chunks_exact(SETTING_LEN)
        .filter_map(|e| e.first_chunk::<SETTING_LEN>().map(decode_setting))
}

/// Given one complete non-ACK SETTINGS frame on stream 0 (header and payload,
/// nothing after it), returns the same frame with `id = value` appended as its
/// last entry. `None` if `frame` is not exactly such a frame, or the longer
/// frame would not fit the length field.
pub fn append_setting(frame: &[u8], id: SettingId, value: u32) -> Option<Vec<u8>> {
    let (head, payload) = frame.split_first_chunk::<HEADER_LEN>()?;
    let header = FrameHeader::decode(head);
    let well_formed = header.kind == FrameType::SETTINGS
        && header.stream_id == 0
        && !header.has_flag(FrameHeader::FLAG_ACK)
        && header.payload_len() == payload.len()
        && payload.len().is_multiple_of(SETTING_LEN);
    if !well_formed {
        return None;
    }
    let new_len = payload.len().checked_add(SETTING_LEN)?;
    let new_header = FrameHeader::new(FrameType::SETTINGS, header.flags, 0, new_len)?;
    let mut out = Vec::with_capacity(HEADER_LEN + new_len);
    out.extend_from_slice(&new_header.encode());
    out.extend_from_slice(payload);
    out.extend_from_slice(&encode_setting(id, value));
    Some(out)
}

/// Encodes a GOAWAY frame (RFC 9113 §6.8). `None` if `debug` is too long for
/// one frame.
pub fn encode_goaway(
    last_stream_id: u32,
    code: ErrorCode,
    debug: &[u8],
    dst: &mut impl BufMut,
) -> Option<()> {
    let len = debug.len().checked_add(8)?;
    let header = FrameHeader::new(FrameType::GOAWAY, 0, 0, len)?;
    dst.put_slice(&header.encode());
    dst.put_u32(last_stream_id & 0x7fff_ffff);
    dst.put_u32(code.0);
    dst.put_slice(debug);
    Some(())
}

// === impl FrameTracker ===

impl FrameTracker {
    pub fn new() -> FrameTracker {
        FrameTracker::default()
    }

    /// Between two frames (or before the first).
    pub fn at_boundary(&self) -> bool {
        self.head_len == 0 && self.remaining == 0
    }

    /// Between two frames and outside a header block: RFC 9113 §6.10 ("any
    /// number of CONTINUATION frames [...] without any other frames" between a
    /// HEADERS/PUSH_PROMISE lacking END_HEADERS and the last CONTINUATION).
    pub fn can_insert(&self) -> bool {
        self.at_boundary() && !self.in_header_block
    }

    /// Follows `bytes` written after everything fed so far.
    pub fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = self.step(bytes);
            bytes = bytes.get(n..).unwrap_or_default();
        }
    }

    /// Follows the first `n` bytes of `bufs` (a vectored write of which `n`
    /// bytes were accepted).
    pub fn advance_bufs<B: Deref<Target = [u8]>>(&mut self, bufs: &[B], mut n: usize) {
        for buf in bufs {
            if n == 0 {
                break;
            }
            let buf: &[u8] = buf;
            let take = n.min(buf.len());
            self.advance(buf.get(..take).unwrap_or_default());
            n -= take;
        }
    }

    /// The smallest `k ≥ 1` such that after the first `k` bytes of `bufs` a
    /// frame may be inserted ([`can_insert`](Self::can_insert)), or `None` if
    /// there is no such point within `bufs`.
    pub fn insert_point<B: Deref<Target = [u8]>>(&self, bufs: &[B]) -> Option<usize> {
        let mut probe = *self;
        let mut offset = 0usize;
        for buf in bufs {
            let mut bytes: &[u8] = buf;
            while !bytes.is_empty() {
                let n = probe.step(bytes);
                offset += n;
                if probe.can_insert() {
                    return Some(offset);
                }
                bytes = bytes.get(n..).unwrap_or_default();
            }
        }
        None
    }

    /// Consumes a prefix of `bytes` (non-empty) that ends no later than the
    /// next frame boundary; returns its length (at least 1).
    fn step(&mut self, bytes: &[u8]) -> usize {
        if self.remaining > 0 {
            let n = self.remaining.min(bytes.len());
            self.remaining -= n;
            return n;
        }
        if self.head_len == 0 {
            // The common case: a whole header in one piece, no copy.
            if let Some(head) = bytes.first_chunk::<HEADER_LEN>() {
                self.start_frame(&FrameHeader::decode(head));
                return HEADER_LEN;
            }
        }
        let want = HEADER_LEN - self.head_len;
        let n = want.min(bytes.len());
        if let (Some(dst), Some(src)) = (
            self.head.get_mut(self.head_len..self.head_len + n),
            bytes.get(..n),
        ) {
            dst.copy_from_slice(src);
        }
        self.head_len += n;
        if self.head_len == HEADER_LEN {
            self.head_len = 0;
            self.start_frame(&FrameHeader::decode(&self.head));
        }
        n
    }

    fn start_frame(&mut self, header: &FrameHeader) {
        self.remaining = header.payload_len();
        let end_headers = header.has_flag(FrameHeader::FLAG_END_HEADERS);
        match header.kind {
            FrameType::HEADERS | FrameType::PUSH_PROMISE => self.in_header_block = !end_headers,
            FrameType::CONTINUATION if end_headers => self.in_header_block = false,
            _ => {}
        }
    }
}

// === impl FrameScanner ===

impl Default for FrameScanner {
    fn default() -> Self {
        FrameScanner::new()
    }
}

impl FrameScanner {
    /// A scanner expecting the client connection preface.
    pub fn new() -> FrameScanner {
        FrameScanner {
            state: ScanState::Preface { matched: 0 },
        }
    }

    /// A scanner that starts at a frame boundary (no preface).
    pub fn without_preface() -> FrameScanner {
        FrameScanner {
            state: ScanState::Header {
                head: [0; HEADER_LEN],
                len: 0,
            },
        }
    }

    /// The preface did not match; nothing more will be reported.
    pub fn is_stopped(&self) -> bool {
        self.state == ScanState::Stopped
    }

    /// Inside a skipped payload (after [`ScanEvent::Frame`]): takes up to
    /// its rest from the front of `input` and returns it, instead of
    /// letting [`FrameScanner::next_event`] drop it. `None` elsewhere.
    pub fn take_payload<'a>(&mut self, input: &mut &'a [u8]) -> Option<&'a [u8]> {
        let ScanState::Skip { remaining } = &mut self.state else {
            return None;
        };
        let n = (*remaining).min(input.len());
        let (taken, rest) = input.split_at_checked(n)?;
        *input = rest;
        *remaining -= n;
        Some(taken)
    }

    /// At the end of a skipped payload: the frame's bytes are all read.
    pub fn payload_done(&self) -> bool {
        self.state == ScanState::Skip { remaining: 0 }
    }

    /// Consumes bytes from the front of `input` until something is found, and
    /// returns it; `None` once `input` is used up (or the scanner stopped).
    /// Call it in a loop until `None`, then feed the next bytes.
    pub fn next_event(&mut self, input: &mut &[u8]) -> Option<ScanEvent> {
        loop {
            match &mut self.state {
                ScanState::Stopped => return None,
                ScanState::Preface { matched } => {
                    let expected = PREFACE.get(*matched..).unwrap_or_default();
                    let n = expected.len().min(input.len());
                    if n == 0 {
                        return None;
                    }
                    let (got, rest) = input.split_at_checked(n)?;
                    if expected.get(..n) != Some(got) {
                        self.state = ScanState::Stopped;
                        return Some(ScanEvent::PrefaceMismatch);
                    }
                    *input = rest;
                    *matched += n;
                    if *matched == PREFACE.len() {
                        self.state = ScanState::Header {
                            head: [0; HEADER_LEN],
                            len: 0,
                        };
                    }
                }
                ScanState::Header { head, len } => {
                    let n = (HEADER_LEN - *len).min(input.len());
                    if n == 0 {
                        return None;
                    }
                    let (got, rest) = input.split_at_checked(n)?;
                    head.get_mut(*len..*len + n)?.copy_from_slice(got);
                    *input = rest;
                    *len += n;
                    if *len < HEADER_LEN {
                        return None;
                    }
                    let header = FrameHeader::decode(head);
                    let remaining = header.payload_len();
                    let is_settings = header.kind == FrameType::SETTINGS
                        && header.stream_id == 0
                        && !header.has_flag(FrameHeader::FLAG_ACK);
                    // A SETTINGS length that is not a multiple of 6 is a
                    // FRAME_SIZE_ERROR (RFC 9113 §6.5); the HTTP/2
                    // implementation reports it, here it is only skipped.
                    self.state = if is_settings && remaining.is_multiple_of(SETTING_LEN) {
                        ScanState::Settings {
                            remaining,
                            entry: [0; SETTING_LEN],
                            len: 0,
                        }
                    } else {
                        ScanState::Skip { remaining }
                    };
                    return Some(ScanEvent::Frame(header));
                }
                ScanState::Settings {
                    remaining,
                    entry,
                    len,
                } => {
                    if *remaining == 0 {
                        self.state = ScanState::Header {
                            head: [0; HEADER_LEN],
                            len: 0,
                        };
                        return Some(ScanEvent::SettingsEnd);
                    }
                    let n = (SETTING_LEN - *len).min(input.len());
                    if n == 0 {
                        return None;
                    }
                    let (got, rest) = input.split_at_checked(n)?;
                    entry.get_mut(*len..*len + n)?.copy_from_slice(got);
                    *input = rest;
                    *len += n;
                    *remaining -= n;
                    if *len == SETTING_LEN {
                        *len = 0;
                        let (id, value) = decode_setting(entry);
                        return Some(ScanEvent::Setting { id, value });
                    }
                }
                ScanState::Skip { remaining } => {
                    if *remaining == 0 {
                        self.state = ScanState::Header {
                            head: [0; HEADER_LEN],
                            len: 0,
                        };
                        continue;
                    }
                    let n = (*remaining).min(input.len());
                    if n == 0 {
                        return None;
                    }
                    *input = input.get(n..).unwrap_or_default();
                    *remaining -= n;
                }
            }
        }
    }
}

// === impl FrameDecoder ===

impl FrameDecoder {
    /// Frames with payloads up to `max_payload` bytes are returned whole.
    pub fn new(max_payload: usize) -> FrameDecoder {
        FrameDecoder {
            max_payload,
            skipping: 0,
        }
    }

    /// The next frame from the front of `buf` (consumed), or `None` if more
    /// bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        if self.skipping > 0 {
            let n = self.skipping.min(buf.len());
            buf.advance(n);
            self.skipping -= n;
            if self.skipping > 0 {
                return None;
            }
        }
        let header = FrameHeader::decode(buf.first_chunk::<HEADER_LEN>()?);
        let len = header.payload_len();
        if len > self.max_payload {
            buf.advance(HEADER_LEN);
            self.skipping = len;
            return Some(Frame::Skipped(header));
        }
        if buf.len() < HEADER_LEN + len {
            return None;
        }
        buf.advance(HEADER_LEN);
        Some(Frame::Whole {
            header,
            payload: buf.split_to(len).freeze(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: FrameType, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = FrameHeader::new(kind, flags, stream, payload.len())
            .unwrap()
            .encode()
            .to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decoder_returns_whole_frames_and_skips_big_ones() {
        let mut bytes = frame(
            FrameType::SETTINGS,
            0,
            0,
            &encode_setting(SettingId(3), 100),
        );
        bytes.extend(frame(FrameType::DATA, 0, 1, &[0xaa; 20]));
        bytes.extend(frame(FrameType(0xce), 0, 0, b"auth"));
        let mut d = FrameDecoder::new(8);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes {
            buf.put_u8(b);
            while let Some(f) = d.decode(&mut buf) {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        match &got[0] {
            Frame::Whole { header, payload } => {
                assert_eq!(header.kind, FrameType::SETTINGS);
                assert_eq!(
                    settings(payload).collect::<Vec<_>>(),
                    vec![(SettingId(3), 100)]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&got[1], Frame::Skipped(h) if h.len == 20));
        assert!(matches!(&got[2], Frame::Whole { payload, .. } if &payload[..] == b"auth"));
    }

    fn scan_all(chunks: &[&[u8]], scanner: &mut FrameScanner) -> Vec<ScanEvent> {
        let mut events = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while let Some(ev) = scanner.next_event(&mut input) {
                events.push(ev);
            }
            assert!(input.is_empty() || scanner.is_stopped());
        }
        events
    }

    #[test]
    fn header_round_trip_and_rfc_layout() {
        let h = FrameHeader::new(FrameType(0xce), 0, 0, 0x01_0203).unwrap();
        assert_eq!(h.encode(), [0x01, 0x02, 0x03, 0xce, 0, 0, 0, 0, 0]);
        assert_eq!(FrameHeader::decode(&h.encode()), h);
        // The reserved bit is ignored on receipt.
        let h = FrameHeader::decode(&[0, 0, 0, 1, 4, 0x80, 0, 0, 3]);
        assert_eq!(h.stream_id, 3);
        assert!(h.has_flag(FrameHeader::FLAG_END_HEADERS));
        assert_eq!(FrameHeader::new(FrameType::DATA, 0, 1, 1 << 24), None);
        assert!(FrameHeader::new(FrameType::DATA, 0, 1, (1 << 24) - 1).is_some());
    }

    #[test]
    fn debug_prints_names() {
        assert_eq!(format!("{:?}", FrameType::GOAWAY), "GOAWAY");
        assert_eq!(format!("{:?}", FrameType(0xce)), "FrameType(0xce)");
        assert_eq!(format!("{:?}", SettingId(0x5ecc)), "SettingId(0x5ecc)");
        assert_eq!(format!("{:?}", ErrorCode(1)), "PROTOCOL_ERROR");
    }

    #[test]
    fn append_setting_to_settings() {
        let f = frame(
            FrameType::SETTINGS,
            0,
            0,
            &encode_setting(SettingId(3), 100),
        );
        let out = append_setting(&f, SettingId(0x5ecc), 1).unwrap();
        assert_eq!(
            out,
            [
                0, 0, 12, 4, 0, 0, 0, 0, 0, //
                0, 3, 0, 0, 0, 100, //
                0x5e, 0xcc, 0, 0, 0, 1
            ]
        );
        let empty = frame(FrameType::SETTINGS, 0, 0, &[]);
        assert_eq!(
            append_setting(&empty, SettingId(0x5ecc), 1).unwrap(),
            [0, 0, 6, 4, 0, 0, 0, 0, 0, 0x5e, 0xcc, 0, 0, 0, 1]
        );
    }

    #[test]
    fn append_setting_rejects_other_frames() {
        let id = SettingId(0x5ecc);
        // ACK, wrong stream, wrong type, bad length, trailing bytes, short.
        assert!(append_setting(&frame(FrameType::SETTINGS, 1, 0, &[]), id, 1).is_none());
        assert!(append_setting(&frame(FrameType::SETTINGS, 0, 1, &[]), id, 1).is_none());
        assert!(append_setting(&frame(FrameType::PING, 0, 0, &[0; 8]), id, 1).is_none());
        assert!(append_setting(&frame(FrameType::SETTINGS, 0, 0, &[0; 5]), id, 1).is_none());
        let mut extra = frame(FrameType::SETTINGS, 0, 0, &[]);
        extra.push(0);
        assert!(append_setting(&extra, id, 1).is_none());
        assert!(append_setting(&[0, 0, 0, 4], id, 1).is_none());
    }

    #[test]
    fn goaway_layout() {
        let mut out = Vec::new();
        encode_goaway(0x8000_0005, ErrorCode::PROTOCOL_ERROR, b"x", &mut out).unwrap();
        assert_eq!(
            out,
            [0, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, b'x']
        );
    }

    #[test]
    fn tracker_follows_header_blocks() {
        let mut t = FrameTracker::new();
        assert!(t.can_insert());
        t.advance(&frame(FrameType::HEADERS, 0, 1, b"abc"));
        assert!(t.at_boundary() && !t.can_insert());
        t.advance(&frame(FrameType::CONTINUATION, 0, 1, b"d"));
        assert!(!t.can_insert());
        let end = frame(
            FrameType::CONTINUATION,
            FrameHeader::FLAG_END_HEADERS,
            1,
            b"e",
        );
        let (a, b) = end.split_at(4);
        t.advance(a);
        assert!(!t.at_boundary());
        t.advance(b);
        assert!(t.can_insert());
        t.advance(&frame(
            FrameType::PUSH_PROMISE,
            FrameHeader::FLAG_END_HEADERS,
            1,
            &[0, 0, 0, 2],
        ));
        assert!(t.can_insert());
    }

    #[test]
    fn insert_point_skips_header_block() {
        let mut s = frame(FrameType::DATA, 0, 1, b"0123");
        let first = s.len();
        s.extend(frame(FrameType::HEADERS, 0, 3, b"ab"));
        let in_block = s.len();
        s.extend(frame(
            FrameType::CONTINUATION,
            FrameHeader::FLAG_END_HEADERS,
            3,
            b"c",
        ));
        let after_block = s.len();
        s.extend(frame(FrameType::DATA, 0, 1, b""));

        let t = FrameTracker::new();
        assert_eq!(t.insert_point(&[&s[..]]), Some(first));
        let mut t2 = t;
        t2.advance(s.get(..first + 2).unwrap());
        assert_eq!(
            t2.insert_point(&[&s[first + 2..]]),
            Some(after_block - first - 2)
        );
        let mut t3 = t;
        t3.advance(s.get(..in_block).unwrap());
        assert_eq!(t3.insert_point(&[&s[in_block..in_block + 3]]), None);
        // Across slices.
        let mut t4 = t;
        t4.advance(&s[..1]);
        let short: Vec<&[u8]> = vec![&s[1..3], &s[3..first - 1]];
        assert_eq!(t4.insert_point(&short[..]), None);
        let exact: Vec<&[u8]> = vec![&s[1..3], &s[3..first]];
        assert_eq!(t4.insert_point(&exact[..]), Some(first - 1));
        let parts: Vec<&[u8]> = vec![&s[..3], &s[3..first + 1]];
        assert_eq!(FrameTracker::new().insert_point(&parts[..]), Some(first));
    }

    #[test]
    fn scanner_reports_settings_and_frames() {
        let mut s = PREFACE.to_vec();
        let mut payload = encode_setting(SettingId::MAX_FRAME_SIZE, 20_000).to_vec();
        payload.extend(encode_setting(SettingId(0x5ecc), 1));
        s.extend(frame(FrameType::SETTINGS, 0, 0, &payload));
        s.extend(frame(FrameType::SETTINGS, 1, 0, &[]));
        s.extend(frame(FrameType::SETTINGS, 0, 0, &[]));
        s.extend(frame(FrameType::HEADERS, 5, 1, b"hpack"));
        s.extend(frame(FrameType::SETTINGS, 0, 0, &[0; 7])); // malformed: skipped

        let want = vec![
            ScanEvent::Frame(FrameHeader::decode(&[0, 0, 12, 4, 0, 0, 0, 0, 0])),
            ScanEvent::Setting {
                id: SettingId::MAX_FRAME_SIZE,
                value: 20_000,
            },
            ScanEvent::Setting {
                id: SettingId(0x5ecc),
                value: 1,
            },
            ScanEvent::SettingsEnd,
            ScanEvent::Frame(FrameHeader::decode(&[0, 0, 0, 4, 1, 0, 0, 0, 0])),
            ScanEvent::Frame(FrameHeader::decode(&[0, 0, 0, 4, 0, 0, 0, 0, 0])),
            ScanEvent::SettingsEnd,
            ScanEvent::Frame(FrameHeader::decode(&[0, 0, 5, 1, 5, 0, 0, 0, 1])),
            ScanEvent::Frame(FrameHeader::decode(&[0, 0, 7, 4, 0, 0, 0, 0, 0])),
        ];
        assert_eq!(scan_all(&[&s], &mut FrameScanner::new()), want);
        // Byte by byte: the same events.
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(scan_all(&bytes, &mut FrameScanner::new()), want);
    }

    #[test]
    fn scanner_stops_on_bad_preface() {
        let mut sc = FrameScanner::new();
        let events = scan_all(&[b"PRI * HTTP/2.0\r\n", b"\r\nXX"], &mut sc);
        assert_eq!(events, vec![ScanEvent::PrefaceMismatch]);
        assert!(sc.is_stopped());
        let mut more: &[u8] = &[0; 30];
        assert_eq!(sc.next_event(&mut more), None);
    }

    proptest! {
        #[test]
        fn decoder_never_panics_and_splits_agree(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..40,
            max in 0usize..64,
        ) {
            let run = |chunks: &[&[u8]]| {
                let mut d = FrameDecoder::new(max);
                let mut buf = BytesMut::new();
                let mut out = Vec::new();
                for c in chunks {
                    buf.extend_from_slice(c);
                    while let Some(f) = d.decode(&mut buf) {
                        out.push(f);
                    }
                }
                out
            };
            let split = run(&bytes.chunks(chunk).collect::<Vec<_>>());
            let whole = run(&[&bytes]);
            for f in &whole {
                if let Frame::Whole { payload, .. } = f {
                    prop_assert!(payload.len() <= max);
                }
            }
            prop_assert_eq!(split, whole);
        }

        #[test]
        fn scanner_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..40,
            preface in any::<bool>(),
        ) {
            let mut input = if preface { PREFACE.to_vec() } else { Vec::new() };
            input.extend(bytes);
            let chunks: Vec<&[u8]> = input.chunks(chunk).collect();
            let split = scan_all(&chunks, &mut FrameScanner::new());
            let whole = scan_all(&[&input], &mut FrameScanner::new());
            prop_assert_eq!(split, whole);
        }

        #[test]
        fn tracker_split_invariant(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..40,
        ) {
            // What the tracker knows (its header scratch space aside).
            let state = |t: &FrameTracker| {
                (t.head[..t.head_len].to_vec(), t.remaining, t.in_header_block)
            };
            let mut whole = FrameTracker::new();
            whole.advance(&bytes);
            let mut split = FrameTracker::new();
            for c in bytes.chunks(chunk) {
                split.advance(c);
            }
            prop_assert_eq!(state(&whole), state(&split));
            let bufs: Vec<&[u8]> = bytes.chunks(chunk).collect();
            let mut vectored = FrameTracker::new();
            vectored.advance_bufs(&bufs, bytes.len());
            prop_assert_eq!(state(&whole), state(&vectored));
        }
    }
}

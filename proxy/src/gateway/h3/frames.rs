//! The frames of one request stream as the gateway sends them (RFC 9114
//! §7.2), read sans-IO from chunks cut anywhere: DATA payloads come out as
//! slices of the chunk they arrived in (no copy), a HEADERS payload is
//! gathered whole up to our field-section limit, unknown and reserved
//! (grease) frame types are skipped without buffering, and frames that do
//! not belong on a request stream are errors.
//!
//! Which HEADERS is a response and which a trailer section, and what may
//! follow what, is the stream's business (`stream.rs`); this file only
//! knows frame boundaries.

use bytes::{Buf, Bytes, BytesMut};

use crate::wire::h3_frame::{FrameType, VarintReader};

/// One thing the gateway said on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    /// A whole HEADERS payload (an encoded field section).
    Headers(Bytes),
    /// Some bytes of a DATA payload (never empty).
    Data(Bytes),
}

/// Why the stream's framing is broken (RFC 9114 §7.1, §7.2).
pub(super) type FrameError = &'static str;

/// Follows frame boundaries on one request stream.
#[derive(Debug)]
pub(super) struct RequestFrames {
    state: State,
    max_section: u64,
    section: BytesMut,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Type(VarintReader),
    Len { ty: FrameType, r: VarintReader },
    Data { remaining: u64 },
    Headers { remaining: u64 },
    Skip { remaining: u64 },
}

impl RequestFrames {
    /// HEADERS payloads above `max_section` bytes are refused.
    pub(super) fn new(max_section: usize) -> RequestFrames {
        RequestFrames {
            state: State::Type(VarintReader::default()),
            max_section: u64::try_from(max_section).unwrap_or(u64::MAX),
            section: BytesMut::new(),
        }
    }

    /// Consume from the front of `input` until one event is complete (or
    /// the input is used up: `Ok(None)`, feed more).
    pub(super) fn feed(&mut self, input: &mut Bytes) -> Result<Option<Event>, FrameError> {
        loop {
            match &mut self.state {
                State::Type(r) => {
                    let Some(ty) = take_varint(r, input) else {
                        return Ok(None);
                    };
                    self.state = State::Len {
                        ty: FrameType(ty),
                        r: VarintReader::default(),
                    };
                }
                State::Len { ty, r } => {
                    let ty = *ty;
                    let Some(len) = take_varint(r, input) else {
                        return Ok(None);
                    };
                    self.state = self.start(ty, len)?;
                }
                State::Data { remaining: 0 } | State::Skip { remaining: 0 } => {
                    self.state = State::Type(VarintReader::default());
                }
                State::Headers { remaining: 0 } => {
                    self.state = State::Type(VarintReader::default());
                    let section = std::mem::take(&mut self.section).freeze();
                    return Ok(Some(Event::Headers(section)));
                }
                State::Data { remaining } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = take_len(*remaining, input.len());
                    // `n <= remaining`.
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        // At a boundary now, whether or not more is fed.
                        self.state = State::Type(VarintReader::default());
                    }
                    return Ok(Some(Event::Data(input.split_to(n))));
                }
                State::Headers { remaining } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = take_len(*remaining, input.len());
                    *remaining -= n as u64;
                    self.section.extend_from_slice(&input.split_to(n));
                }
                State::Skip { remaining } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = take_len(*remaining, input.len());
                    *remaining -= n as u64;
                    input.advance(n);
                }
            }
        }
    }

    /// What a frame of type `ty` and length `len` starts.
    fn start(&mut self, ty: FrameType, len: u64) -> Result<State, FrameError> {
        Ok(match ty {
            FrameType::DATA => State::Data { remaining: len },
            FrameType::HEADERS => {
                if len > self.max_section {
                    return Err("HEADERS frame larger than our field-section limit");
                }
                // Bounded by `max_section` just above.
                self.section.reserve(usize::try_from(len).unwrap_or(0));
                State::Headers { remaining: len }
            }
            // RFC 9114 §7.2.5: we sent no MAX_PUSH_ID, so no push may be
            // promised (H3_ID_ERROR).
            FrameType::PUSH_PROMISE => return Err("PUSH_PROMISE without MAX_PUSH_ID"),
            // RFC 9114 §7.2.3, §7.2.4, §7.2.6, §7.2.7: control-stream
            // frames on a request stream are H3_FRAME_UNEXPECTED.
            FrameType::CANCEL_PUSH
            | FrameType::SETTINGS
            | FrameType::GOAWAY
            | FrameType::MAX_PUSH_ID => return Err("control frame on a request stream"),
            // RFC 9114 §7.2.8: HTTP/2 frame types are reserved; receiving
            // one is H3_FRAME_UNEXPECTED.
            t if t.is_reserved_http2() => return Err("reserved HTTP/2 frame type"),
            // RFC 9114 §9: unknown types (grease included) are ignored.
            _ => State::Skip { remaining: len },
        })
    }

    /// At the end of the stream: `Err` if it ended inside a frame (RFC
    /// 9114 §7.1: H3_FRAME_ERROR).
    pub(super) fn finish(&self) -> Result<(), FrameError> {
        match self.state {
            State::Type(r) if r.is_empty() => Ok(()),
            State::Data { remaining: 0 } | State::Skip { remaining: 0 } => Ok(()),
            _ => Err("stream ended inside a frame"),
        }
    }
}

/// How much of `available` bytes a payload with `remaining` bytes takes.
fn take_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Feed `r` from the front of `input`, advancing it by what was used.
fn take_varint(r: &mut VarintReader, input: &mut Bytes) -> Option<u64> {
    let mut slice: &[u8] = input;
    let before = slice.len();
    let v = r.feed(&mut slice);
    let used = before - slice.len();
    input.advance(used);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::wire::h3_frame::encode_frame(FrameType(ty), payload, &mut out).unwrap();
        out
    }

    /// Everything `frames` yields for `wire` fed in pieces of `step` bytes,
    /// DATA pieces joined.
    fn run(wire: &[u8], step: usize) -> Result<Vec<Event>, FrameError> {
        let mut f = RequestFrames::new(1024);
        let mut out: Vec<Event> = Vec::new();
        for piece in wire.chunks(step.max(1)) {
            let mut input = Bytes::copy_from_slice(piece);
            while let Some(e) = f.feed(&mut input)? {
                match (out.last_mut(), e) {
                    (Some(Event::Data(prev)), Event::Data(more)) => {
                        let mut joined = prev.to_vec();
                        joined.extend_from_slice(&more);
                        *prev = Bytes::from(joined);
                    }
                    (_, e) => out.push(e),
                }
            }
            assert!(input.is_empty(), "feed consumes its input");
        }
        f.finish()?;
        Ok(out)
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let mut wire = frame(0x01, b"head");
        wire.extend(frame(0x21, b"grease"));
        wire.extend(frame(0x00, b"hello "));
        wire.extend(frame(0x00, b""));
        wire.extend(frame(0x00, &[7u8; 300]));
        wire.extend(frame(0x01, b"trailers"));
        let mut data = b"hello ".to_vec();
        data.extend([7u8; 300]);
        let want = vec![
            Event::Headers(Bytes::from_static(b"head")),
            Event::Data(Bytes::from(data)),
            Event::Headers(Bytes::from_static(b"trailers")),
        ];
        for step in [1, 2, 3, 5, 64, 1000] {
            assert_eq!(run(&wire, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn the_end_right_after_a_data_payload_is_clean() {
        // The caller stops feeding once its chunk is used up.
        let mut f = RequestFrames::new(16);
        let mut input = Bytes::from(frame(0x00, b"abc"));
        assert_eq!(
            f.feed(&mut input).unwrap(),
            Some(Event::Data(Bytes::from_static(b"abc")))
        );
        assert!(input.is_empty());
        assert_eq!(f.finish(), Ok(()));
        // Same for an unknown frame skipped to its end.
        let mut f = RequestFrames::new(16);
        let mut input = Bytes::from(frame(0x21, b"abc"));
        assert_eq!(f.feed(&mut input).unwrap(), None);
        assert_eq!(f.finish(), Ok(()));
    }

    proptest::proptest! {
        /// Any bytes cut anywhere: events or an error, never a panic, and
        /// never a HEADERS payload above the limit.
        #[test]
        fn garbage_never_panics(
            wire in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            step in 1usize..40,
        ) {
            let mut f = RequestFrames::new(64);
            'outer: for piece in wire.chunks(step) {
                let mut input = Bytes::copy_from_slice(piece);
                loop {
                    match f.feed(&mut input) {
                        Ok(Some(Event::Headers(h))) => proptest::prop_assert!(h.len() <= 64),
                        Ok(Some(Event::Data(d))) => proptest::prop_assert!(!d.is_empty()),
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
            }
            let _ = f.finish();
        }
    }

    #[test]
    fn data_is_a_slice_of_the_input() {
        let wire = Bytes::from(frame(0x00, b"abc"));
        let mut input = wire.clone();
        let mut f = RequestFrames::new(16);
        let Some(Event::Data(d)) = f.feed(&mut input).unwrap() else {
            panic!("data")
        };
        assert_eq!(d.as_ptr(), wire[2..].as_ptr());
    }

    #[test]
    fn refuses_frames_that_do_not_belong() {
        for ty in [0x02u64, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0d] {
            assert!(run(&frame(ty, b""), 7).is_err(), "type {ty:#x}");
        }
        // Oversized HEADERS is refused before its payload arrives.
        let mut f = RequestFrames::new(4);
        let mut input = Bytes::from_static(&[0x01, 0x05]);
        assert!(f.feed(&mut input).is_err());
        // Ending inside a frame header or payload.
        assert!(run(&frame(0x00, b"abc")[..3], 1).is_err());
        assert!(run(&[0x00], 1).is_err());
        assert!(run(&[0x40], 1).is_err());
        assert_eq!(run(&[], 1).unwrap(), vec![]);
    }
}

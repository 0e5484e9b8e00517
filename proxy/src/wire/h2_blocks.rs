//! A client's HTTP/2 header blocks, reassembled from the frames that carry
//! them (RFC 9113 §4.3: HEADERS, then CONTINUATION until END_HEADERS), with
//! padding and priority fields removed (§6.2), and told apart as a
//! request's header section or a trailer section (a HEADERS frame on a
//! stream that already had one: client streams open in increasing order,
//! §5.1.1). Fed frame headers and payload bytes; pure.

use super::h2_frame::{FrameHeader, FrameType};

const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// One complete header block.
#[derive(Debug, PartialEq, Eq)]
pub struct Block {
    pub stream_id: u32,
    pub trailers: bool,
    pub fragment: Vec<u8>,
}

/// Why blocks can no longer be followed on this connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// A block larger than the limit (h2 refuses its request, but its
    /// HPACK state moves on: the names after it cannot be known).
    TooLarge,
    /// Padding longer than the frame, or a CONTINUATION out of place:
    /// errors h2 ends the connection for.
    Malformed,
}

/// Reassembles the client's header blocks.
#[derive(Debug)]
pub struct BlockAssembler {
    /// Largest block followed.
    cap: usize,
    /// Highest client stream id that has had a HEADERS frame.
    highest: u32,
    /// The frame being read, if it carries a header block fragment.
    frame: Option<FrameHeader>,
    payload: Vec<u8>,
    /// The block so far (END_HEADERS not yet seen).
    open: Option<Block>,
    lost: Option<Lost>,
}

impl BlockAssembler {
    pub fn new(cap: usize) -> BlockAssembler {
        BlockAssembler {
            cap,
            highest: 0,
            frame: None,
            payload: Vec::new(),
            open: None,
            lost: None,
        }
    }

    /// Stop: the blocks' contents can no longer be followed (the HPACK
    /// table is out of step).
    pub fn give_up(&mut self) {
        self.lost = Some(Lost::Malformed);
        self.frame = None;
        self.open = None;
    }

    /// Blocks can no longer be followed (then nothing more is reported).
    pub fn lost(&self) -> Option<Lost> {
        self.lost
    }

    /// A frame of the client's starts; `true` if its payload is wanted
    /// (hand it to [`BlockAssembler::payload`], then call
    /// [`BlockAssembler::frame_end`]).
    pub fn frame(&mut self, h: &FrameHeader) -> bool {
        if self.lost.is_some() {
            return false;
        }
        let carries = h.kind == FrameType::HEADERS
            || (h.kind == FrameType::CONTINUATION && self.open.is_some());
        if h.kind == FrameType::CONTINUATION && self.open.is_none() {
            self.lost = Some(Lost::Malformed);
        }
        if self.open.is_some() && h.kind != FrameType::CONTINUATION {
            // §6.10: nothing may interleave with a header block.
            self.lost = Some(Lost::Malformed);
            return false;
        }
        if !carries || self.lost.is_some() {
            return false;
        }
        if h.payload_len() > self.cap {
            self.lost = Some(Lost::TooLarge);
            return false;
        }
        self.frame = Some(*h);
        self.payload.clear();
        true
    }

    /// Payload bytes of the current frame.
    pub fn payload(&mut self, chunk: &[u8]) {
        if self.frame.is_some() {
            self.payload.extend_from_slice(chunk);
        }
    }

    /// The current frame has ended: a block it completes.
    pub fn frame_end(&mut self) -> Option<Block> {
        let h = self.frame.take()?;
        let fragment = if h.kind == FrameType::HEADERS {
            match strip(&h, &self.payload) {
                Some(f) => f,
                None => {
                    self.lost = Some(Lost::Malformed);
                    return None;
                }
            }
        } else {
            &self.payload[..]
        };
        let block = match self.open.take() {
            Some(mut b) => {
                b.fragment.extend_from_slice(fragment);
                b
            }
            None => {
                let trailers = h.stream_id <= self.highest;
                if h.stream_id % 2 == 1 {
                    self.highest = self.highest.max(h.stream_id);
                }
                Block {
                    stream_id: h.stream_id,
                    trailers,
                    fragment: fragment.to_vec(),
                }
            }
        };
        if block.fragment.len() > self.cap {
            self.lost = Some(Lost::TooLarge);
            return None;
        }
        if h.has_flag(FrameHeader::FLAG_END_HEADERS) {
            Some(block)
        } else {
            self.open = Some(block);
            None
        }
    }
}

/// A HEADERS payload without its Pad Length, priority fields and padding.
fn strip<'a>(h: &FrameHeader, payload: &'a [u8]) -> Option<&'a [u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if h.has_flag(FLAG_PADDED) {
        let (&n, rest) = p.split_first()?;
        pad = usize::from(n);
        p = rest;
    }
    if h.has_flag(FLAG_PRIORITY) {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: FrameType, flags: u8, stream: u32, len: usize) -> FrameHeader {
        FrameHeader::new(kind, flags, stream, len).expect("header")
    }

    fn feed(
        a: &mut BlockAssembler,
        kind: FrameType,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> Option<Block> {
        if !a.frame(&header(kind, flags, stream, payload.len())) {
            return None;
        }
        for chunk in payload.chunks(3) {
            a.payload(chunk);
        }
        a.frame_end()
    }

    #[test]
    fn blocks_are_reassembled_and_trailers_told_apart() {
        let mut a = BlockAssembler::new(1024);
        let b = feed(&mut a, FrameType::HEADERS, 0x4, 1, b"abc").expect("block");
        assert_eq!(
            (b.stream_id, b.trailers, &b.fragment[..]),
            (1, false, &b"abc"[..])
        );
        // Padded, with priority, split over a CONTINUATION.
        let mut p = vec![2u8];
        p.extend_from_slice(&[0, 0, 0, 0, 9]);
        p.extend_from_slice(b"de");
        p.extend_from_slice(&[0, 0]);
        assert_eq!(
            feed(
                &mut a,
                FrameType::HEADERS,
                FLAG_PADDED | FLAG_PRIORITY,
                3,
                &p
            ),
            None
        );
        let b = feed(&mut a, FrameType::CONTINUATION, 0x4, 3, b"fg").expect("block");
        assert_eq!(
            (b.stream_id, b.trailers, &b.fragment[..]),
            (3, false, &b"defg"[..])
        );
        // A second HEADERS on stream 1: its trailers.
        assert!(!a.frame(&header(FrameType::DATA, 0, 1, 10)));
        let b = feed(&mut a, FrameType::HEADERS, 0x5, 1, b"t").expect("trailers");
        assert!(b.trailers);
        assert_eq!(a.lost(), None);
    }

    #[test]
    fn what_h2_refuses_stops_the_follower() {
        let mut a = BlockAssembler::new(8);
        assert_eq!(feed(&mut a, FrameType::HEADERS, 0x4, 1, &[0u8; 9]), None);
        assert_eq!(a.lost(), Some(Lost::TooLarge));
        let mut a = BlockAssembler::new(64);
        assert_eq!(
            feed(&mut a, FrameType::HEADERS, FLAG_PADDED | 0x4, 1, &[9, 1]),
            None
        );
        assert_eq!(a.lost(), Some(Lost::Malformed));
        let mut a = BlockAssembler::new(64);
        assert_eq!(feed(&mut a, FrameType::CONTINUATION, 0x4, 1, b"x"), None);
        assert_eq!(a.lost(), Some(Lost::Malformed));
    }
}

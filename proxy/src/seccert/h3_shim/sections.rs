//! The field-section rules h3 leaves to us (RFC 9114 §4.3): a request's
//! pseudo-header fields each once and before every regular field, none in a
//! trailer section. h3 keeps the last of a repeated pseudo-header and drops
//! a trailer section's, so the request stream's side parser hands each
//! HEADERS frame to [`SectionTap`] on its way to h3, [`wire::qpack`]
//! judges it, and a verdict waits in [`Verdicts`] until the front asks
//! (`H3Control::take_misplaced`): for the header section when it turns the
//! request into a `RequestHead`, for trailers when the body ends.
//!
//! [`wire::qpack`]: crate::wire::qpack

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::wire::h3_frame::{FrameEvent, FrameType};
use crate::wire::qpack::{self, Misplaced};

/// Verdicts not yet taken, per connection, beyond which the client is only
/// sending malformed requests that h3 refused before the front saw them:
/// the connection is closed.
const MAX_PENDING: usize = 64;

/// The HEADERS frames of one request stream.
pub(super) struct SectionTap {
    /// The type of the frame being read.
    current: FrameType,
    /// HEADERS frames completed so far (the first is the header section).
    sections: u32,
    /// The HEADERS frame being read, while it is within `cap`.
    block: Option<Vec<u8>>,
    /// The largest encoded section worth reading: one above the limit on
    /// its decoded size is refused by h3 anyway (each field line is encoded
    /// in fewer bytes than the 32 + name + value it counts for).
    cap: u64,
}

impl SectionTap {
    pub(super) fn new(cap: u64) -> SectionTap {
        SectionTap {
            current: FrameType::DATA,
            sections: 0,
            block: None,
            cap,
        }
    }

    /// Follow one frame event; a finished section that breaks the rules
    /// yields its verdict.
    pub(super) fn on(&mut self, ev: &FrameEvent<'_>) -> Option<Misplaced> {
        if let FrameEvent::Type(ty) = ev {
            self.current = *ty;
        }
        if self.current != FrameType::HEADERS {
            return None;
        }
        match ev {
            FrameEvent::Header(h) => {
                // Grown as bytes arrive, not sized from the length the
                // peer announces.
                self.block = (h.len <= self.cap).then(Vec::new);
                None
            }
            FrameEvent::Payload(bytes) => {
                if let Some(b) = &mut self.block {
                    b.extend_from_slice(bytes);
                }
                None
            }
            FrameEvent::End => {
                let trailers = self.sections > 0;
                self.sections = self.sections.saturating_add(1);
                let block = self.block.take()?;
                // A block we cannot read is h3's to refuse.
                let names = qpack::names(&block).ok()?;
                qpack::check(&names, trailers).err()
            }
            FrameEvent::Type(_) => None,
        }
    }
}

/// Verdicts waiting for the front, by stream id.
#[derive(Default)]
pub(super) struct Verdicts {
    pending: Mutex<VecDeque<(u64, Misplaced)>>,
}

impl Verdicts {
    /// Keep `m` for stream `id`; `false` when too many are waiting.
    pub(super) fn record(&self, id: u64, m: Misplaced) -> bool {
        let mut q = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_PENDING {
            return false;
        }
        q.push_back((id, m));
        true
    }

    pub(super) fn take(&self, id: u64) -> Option<Misplaced> {
        let mut q = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let at = q.iter().position(|(i, _)| *i == id)?;
        q.remove(at).map(|(_, m)| m)
    }
}

//! HTTP/2 control-frame flood guard: which client frames cost us work
//! without carrying a request, and a token bucket over them (time passed
//! in). Pure; the HTTP/2 shim feeds it the frame headers its scanner sees.
//!
//! Counted (one bucket per connection): PING and SETTINGS without ACK (each
//! makes us write an ACK), PRIORITY (h2 ignores it, but it is parsed), and
//! empty frames that advance nothing — DATA of length 0 without END_STREAM,
//! HEADERS or CONTINUATION of length 0 without END_HEADERS. Other frames
//! (requests, data, resets, window updates) are h2's business: rapid reset,
//! CONTINUATION floods and small-DATA floods have their own limits there.

use std::time::Instant;

use super::h2_frame::{FrameHeader, FrameType};

/// The kind of control frame a flood was made of (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloodKind {
    Ping,
    Settings,
    Priority,
    Empty,
}

impl FloodKind {
    pub const ALL: [FloodKind; 4] = [
        FloodKind::Ping,
        FloodKind::Settings,
        FloodKind::Priority,
        FloodKind::Empty,
    ];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FloodKind::Ping => "ping",
            FloodKind::Settings => "settings",
            FloodKind::Priority => "priority",
            FloodKind::Empty => "empty",
        }
    }

    /// The kind `header` counts as, or `None` for a frame that is not counted.
    pub fn of(header: &FrameHeader) -> Option<FloodKind> {
        let empty = header.len == 0;
        match header.kind {
            FrameType::PING if !header.has_flag(FrameHeader::FLAG_ACK) => Some(FloodKind::Ping),
            FrameType::SETTINGS if !header.has_flag(FrameHeader::FLAG_ACK) => {
                Some(FloodKind::Settings)
            }
            FrameType::PRIORITY => Some(FloodKind::Priority),
            FrameType::DATA if empty && !header.has_flag(FrameHeader::FLAG_END_STREAM) => {
                Some(FloodKind::Empty)
            }
            FrameType::HEADERS | FrameType::CONTINUATION
                if empty && !header.has_flag(FrameHeader::FLAG_END_HEADERS) =>
            {
                Some(FloodKind::Empty)
            }
            _ => None,
        }
    }
}

/// How many counted frames a connection may send: `per_s` on average, `burst`
/// at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodLimits {
    pub per_s: u32,
    pub burst: u32,
}

/// One unit of the bucket: a token is `UNIT` units, and `per_s` tokens a
/// second refill `per_s` units a nanosecond — exact integer arithmetic.
const UNIT: u128 = 1_000_000_000;

/// A token bucket over counted frames. Starts full.
#[derive(Clone, Debug)]
pub struct FloodGuard {
    limits: FloodLimits,
    /// Tokens, in [`UNIT`]s.
    units: u128,
    last: Option<Instant>,
}

impl FloodGuard {
    pub fn new(limits: FloodLimits) -> FloodGuard {
        FloodGuard {
            limits,
            units: u128::from(limits.burst) * UNIT,
            last: None,
        }
    }

    /// Counts `header`, seen at `now`. `Some(kind)` when the frame is
    /// counted and the bucket is empty: the connection is flooding.
    pub fn check(&mut self, header: &FrameHeader, now: Instant) -> Option<FloodKind> {
        let kind = FloodKind::of(header)?;
        (!self.take(now)).then_some(kind)
    }

    /// Takes one token at `now`; false when there is none.
    pub fn take(&mut self, now: Instant) -> bool {
        let full = u128::from(self.limits.burst) * UNIT;
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_nanos();
            let refill = elapsed.saturating_mul(u128::from(self.limits.per_s));
            self.units = self.units.saturating_add(refill).min(full);
        }
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
        match self.units.checked_sub(UNIT) {
            Some(left) => {
                self.units = left;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn header(kind: FrameType, flags: u8, len: u32) -> FrameHeader {
        FrameHeader {
            len,
            kind,
            flags,
            stream_id: 0,
        }
    }

    #[test]
    fn which_frames_count() {
        let rows = [
            (FrameType::PING, 0, 8, Some(FloodKind::Ping)),
            (FrameType::PING, FrameHeader::FLAG_ACK, 8, None),
            (FrameType::SETTINGS, 0, 6, Some(FloodKind::Settings)),
            (FrameType::SETTINGS, 0, 0, Some(FloodKind::Settings)),
            (FrameType::SETTINGS, FrameHeader::FLAG_ACK, 0, None),
            (FrameType::PRIORITY, 0, 5, Some(FloodKind::Priority)),
            (FrameType::DATA, 0, 0, Some(FloodKind::Empty)),
            (FrameType::DATA, FrameHeader::FLAG_END_STREAM, 0, None),
            (FrameType::DATA, 0, 1, None),
            (FrameType::HEADERS, 0, 0, Some(FloodKind::Empty)),
            (FrameType::HEADERS, FrameHeader::FLAG_END_HEADERS, 0, None),
            (FrameType::HEADERS, 0, 10, None),
            (FrameType::CONTINUATION, 0, 0, Some(FloodKind::Empty)),
            (FrameType::CONTINUATION, 0, 3, None),
            (FrameType::RST_STREAM, 0, 4, None),
            (FrameType::WINDOW_UPDATE, 0, 4, None),
            (FrameType::GOAWAY, 0, 8, None),
            (FrameType(0xCE), 0, 0, None),
        ];
        for (kind, flags, len, want) in rows {
            assert_eq!(
                FloodKind::of(&header(kind, flags, len)),
                want,
                "{kind:?} {flags} {len}"
            );
        }
    }

    #[test]
    fn burst_then_refused_then_refilled_at_the_rate() {
        let mut g = FloodGuard::new(FloodLimits {
            per_s: 10,
            burst: 5,
        });
        let t0 = Instant::now();
        let ping = header(FrameType::PING, 0, 8);
        for _ in 0..5 {
            assert_eq!(g.check(&ping, t0), None);
        }
        assert_eq!(g.check(&ping, t0), Some(FloodKind::Ping));
        // 10 per second: one token every 100 ms, none before.
        assert_eq!(
            g.check(&ping, t0 + Duration::from_millis(99)),
            Some(FloodKind::Ping)
        );
        assert_eq!(g.check(&ping, t0 + Duration::from_millis(100)), None);
        assert_eq!(
            g.check(&ping, t0 + Duration::from_millis(150)),
            Some(FloodKind::Ping)
        );
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(g.check(&ping, later), None);
        }
        assert_eq!(g.check(&ping, later), Some(FloodKind::Ping));
        // Uncounted frames never exhaust anything.
        assert_eq!(g.check(&header(FrameType::DATA, 0, 100), later), None);
    }

    #[test]
    fn tiny_steps_add_up_exactly() {
        // 1,000 frames a microsecond apart at 1,000,000/s: each refills one.
        let mut g = FloodGuard::new(FloodLimits {
            per_s: 1_000_000,
            burst: 1,
        });
        let t0 = Instant::now();
        for i in 0..1000u64 {
            assert!(g.take(t0 + Duration::from_micros(i)), "frame {i}");
        }
        // At 1/s, a million frames a microsecond apart: one a second passes.
        let mut g = FloodGuard::new(FloodLimits { per_s: 1, burst: 1 });
        let passed = (0..1_000_000u64)
            .filter(|i| g.take(t0 + Duration::from_micros(*i)))
            .count();
        assert_eq!(passed, 1);
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut g = FloodGuard::new(FloodLimits { per_s: 1, burst: 1 });
        let t0 = Instant::now() + Duration::from_secs(10);
        assert!(g.take(t0));
        assert!(!g.take(t0 - Duration::from_secs(5)));
        assert!(!g.take(t0 + Duration::from_millis(500)));
        assert!(g.take(t0 + Duration::from_secs(1)));
    }
}

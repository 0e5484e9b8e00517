//! [`PortRanges`]: a rule's `ports` matcher.

use crate::PortSpec;

/// An inclusive range of ports, `1 <= start <= end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PortRange {
    start: u16,
    end: u16,
}

/// A rule's `ports`: sorted, merged, disjoint ranges searched by bisection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortRanges(Box<[PortRange]>);

/// Why a `ports` entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("port must be in 1..=65535")]
    OutOfRange,
    #[error("range start is greater than end")]
    Reversed,
    #[error("expected a port like 443 or a range like \"8000-9000\"")]
    Malformed,
}

// === impl PortRange ===

impl PortRange {
    /// `443`, `"443"` or `"8000-9000"`.
    pub(crate) fn parse(spec: &PortSpec) -> Result<PortRange, PortError> {
        let (start, end) = match spec {
            PortSpec::Single(port) => (port_number(*port)?, port_number(*port)?),
            PortSpec::Range(text) => match text.split_once('-') {
                Some((start, end)) => (port_text(start)?, port_text(end)?),
                None => (port_text(text)?, port_text(text)?),
            },
        };
        if start > end {
            return Err(PortError::Reversed);
        }
        Ok(PortRange { start, end })
    }
}

fn port_number(port: i64) -> Result<u16, PortError> {
    u16::try_from(port)
        .ok()
        .filter(|&port| port != 0)
        .ok_or(PortError::OutOfRange)
}

/// Decimal digits only: no sign, no spaces.
fn port_text(text: &str) -> Result<u16, PortError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortError::Malformed);
    }
    // All digits: the only parse failure left is overflow, which is out of range.
    let port = text.parse::<i64>().unwrap_or(i64::MAX);
    port_number(port)
}

// === impl PortRanges ===

impl PortRanges {
    /// Every port.
    pub(crate) fn all() -> PortRanges {
        PortRanges(Box::new([PortRange {
            start: 1,
            end: u16::MAX,
        }]))
    }

    pub(crate) fn new(mut ranges: Vec<PortRange>) -> PortRanges {
        ranges.sort_unstable();
        let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(range.start) <= u32::from(last.end) + 1 => {
                    last.end = last.end.max(range.end);
                }
                _ => merged.push(range),
            }
        }
        PortRanges(merged.into_boxed_slice())
    }

    pub(crate) fn contains(&self, port: u16) -> bool {
        // The first range not wholly below `port` is the only one that can hold it.
        let index = self.0.partition_point(|range| range.end < port);
        self.0.get(index).is_some_and(|range| range.start <= port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(text: &str) -> PortSpec {
        PortSpec::Range(text.to_owned())
    }

    #[test]
    fn parses() {
        type Want = Result<(u16, u16), PortError>;
        let cases: &[(PortSpec, Want)] = &[
            (PortSpec::Single(443), Ok((443, 443))),
            (PortSpec::Single(1), Ok((1, 1))),
            (PortSpec::Single(65535), Ok((65535, 65535))),
            (PortSpec::Single(0), Err(PortError::OutOfRange)),
            (PortSpec::Single(65536), Err(PortError::OutOfRange)),
            (PortSpec::Single(-1), Err(PortError::OutOfRange)),
            (range("443"), Ok((443, 443))),
            (range("8000-9000"), Ok((8000, 9000))),
            (range("1-65535"), Ok((1, 65535))),
            (range("80-80"), Ok((80, 80))),
            (range("9000-8000"), Err(PortError::Reversed)),
            (range("0-10"), Err(PortError::OutOfRange)),
            (range("10-65536"), Err(PortError::OutOfRange)),
            (range("99999999999999999999999"), Err(PortError::OutOfRange)),
            (range(""), Err(PortError::Malformed)),
            (range("abc"), Err(PortError::Malformed)),
            (range("80-"), Err(PortError::Malformed)),
            (range("-80"), Err(PortError::Malformed)),
            (range("+443"), Err(PortError::Malformed)),
            (range(" 443"), Err(PortError::Malformed)),
            (range("1-2-3"), Err(PortError::Malformed)),
            (range("80 - 90"), Err(PortError::Malformed)),
        ];
        for (spec, want) in cases {
            let got = PortRange::parse(spec).map(|r| (r.start, r.end));
            assert_eq!(&got, want, "{spec}");
        }
    }

    fn ranges(specs: &[(u16, u16)]) -> PortRanges {
        PortRanges::new(
            specs
                .iter()
                .map(|&(start, end)| PortRange { start, end })
                .collect(),
        )
    }

    #[test]
    fn merges() {
        let merged = ranges(&[(9000, 9100), (80, 80), (81, 90), (8000, 9000), (85, 86)]);
        assert_eq!(
            merged,
            ranges(&[(80, 90), (8000, 9100)]),
            "adjacent and overlapping ranges merge"
        );
        assert_eq!(merged.0.len(), 2);
        assert_eq!(ranges(&[(1, 65535), (65535, 65535)]), PortRanges::all());
    }

    #[test]
    fn contains() {
        let set = ranges(&[(443, 443), (8000, 9000), (80, 80)]);
        let cases: &[(u16, bool)] = &[
            (0, false),
            (79, false),
            (80, true),
            (81, false),
            (443, true),
            (7999, false),
            (8000, true),
            (8500, true),
            (9000, true),
            (9001, false),
            (65535, false),
        ];
        for &(port, want) in cases {
            assert_eq!(set.contains(port), want, "{port}");
        }
        assert!(PortRanges::all().contains(1));
        assert!(PortRanges::all().contains(65535));
    }

    proptest! {
        #[test]
        fn contains_agrees_with_a_linear_scan(
            specs in proptest::collection::vec((1u16.., 1u16..), 1..8),
            port in any::<u16>(),
        ) {
            let specs: Vec<(u16, u16)> =
                specs.into_iter().map(|(a, b)| (a.min(b), a.max(b))).collect();
            let want = specs.iter().any(|&(start, end)| start <= port && port <= end);
            prop_assert_eq!(ranges(&specs).contains(port), want);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,20}", number in any::<i64>()) {
            let _ = PortRange::parse(&PortSpec::Range(text));
            let _ = PortRange::parse(&PortSpec::Single(number));
        }
    }
}

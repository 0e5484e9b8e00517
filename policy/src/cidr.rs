//! [`CidrSet`]: a rule's `cidrs` matcher.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One network: `(address & mask) == network`, both as `u128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    family: Family,
    network: u128,
    mask: u128,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

/// A rule's `cidrs`: matches an address inside any of its networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CidrSet(Box<[Cidr]>);

/// Why a `cidrs` entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("not an address or a CIDR like \"10.0.0.0/8\" or \"fd00::/8\"")]
    Malformed,
    #[error("prefix length {prefix} is longer than {max}")]
    PrefixTooLong { prefix: u64, max: u8 },
    #[error("has host bits set; did you mean {suggestion}")]
    HostBitsSet { suggestion: String },
}

// === impl Cidr ===

impl Cidr {
    /// Parses `"10.0.0.0/8"`, `"fd00::/8"`, or a bare address (`/32` or `/128`).
    /// Addresses use the strict standard spelling (dotted quad, no brackets, no zone).
    pub(crate) fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let (family, bits, max) = if let Ok(ip) = addr.parse::<Ipv4Addr>() {
            (Family::V4, u128::from(u32::from(ip)), 32)
        } else if let Ok(ip) = addr.parse::<Ipv6Addr>() {
            (Family::V6, u128::from(ip), 128)
        } else {
            return Err(CidrError::Malformed);
        };
        let prefix = match prefix {
            None => max,
            Some(text) => {
                let prefix = decimal(text).ok_or(CidrError::Malformed)?;
                u8::try_from(prefix)
                    .ok()
                    .filter(|&prefix| prefix <= max)
                    .ok_or(CidrError::PrefixTooLong { prefix, max })?
            }
        };
        let mask = mask(family, prefix);
        let network = bits & mask;
        if network != bits {
            let network = match family {
                // Lossless: a v4 network has only the low 32 bits set.
                Family::V4 => Ipv4Addr::from(network as u32).to_string(),
                Family::V6 => Ipv6Addr::from(network).to_string(),
            };
            return Err(CidrError::HostBitsSet {
                suggestion: format!("{network}/{prefix}"),
            });
        }
        Ok(Cidr {
            family,
            network,
            mask,
        })
    }

    /// Whether `ip` is inside. A v4 network also contains the IPv4-mapped IPv6 form
    /// (`::ffff:a.b.c.d`) of its addresses.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let bits = match (self.family, ip) {
            (Family::V4, IpAddr::V4(ip)) => u128::from(u32::from(ip)),
            (Family::V4, IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
                Some(ip) => u128::from(u32::from(ip)),
                None => return false,
            },
            (Family::V6, IpAddr::V6(ip)) => u128::from(ip),
            (Family::V6, IpAddr::V4(_)) => return false,
        };
        bits & self.mask == self.network
    }
}

/// What a prefix trie files a network under: its family, its bits
/// left-aligned in a `u128` (a v4 network in the top 32 bits) and its prefix
/// length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prefix {
    pub(crate) family: Family,
    pub(crate) bits: u128,
    pub(crate) len: u8,
}

impl Cidr {
    /// This network as a trie key.
    pub(crate) fn prefix(&self) -> Prefix {
        let (width, shift) = match self.family {
            Family::V4 => (32, 96),
            Family::V6 => (128, 0),
        };
        // The mask's ones are the prefix; `count_ones` is at most 128.
        let len = u8::try_from(self.mask.count_ones()).unwrap_or(width);
        Prefix {
            family: self.family,
            bits: self.network << shift,
            len,
        }
    }
}

/// The trie keys of `ip`, left-aligned like [`Prefix::bits`]: the bits a v4
/// network compares (a v4 address, or the address an IPv4-mapped v6 address
/// embeds) and the bits a v6 network compares (a v6 address). Exactly what
/// [`Cidr::contains`] looks at.
pub(crate) fn keys(ip: IpAddr) -> (Option<u128>, Option<u128>) {
    let v4 = |ip: Ipv4Addr| u128::from(u32::from(ip)) << 96;
    match ip {
        IpAddr::V4(ip) => (Some(v4(ip)), None),
        IpAddr::V6(ip) => (ip.to_ipv4_mapped().map(v4), Some(u128::from(ip))),
    }
}

/// The mask of a prefix, in the low 32 bits for v4.
fn mask(family: Family, prefix: u8) -> u128 {
    let width = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let all = u128::MAX >> (128 - width);
    // `prefix <= width`; a zero prefix shifts by the full width, which is no mask.
    all.checked_shl(width - u32::from(prefix))
        .map_or(0, |mask| mask & all)
}

/// Unsigned decimal digits only (no sign, no spaces); saturates.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |value, b| {
        value.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

// === impl CidrSet ===

impl CidrSet {
    pub(crate) fn new(cidrs: Vec<Cidr>) -> CidrSet {
        CidrSet(cidrs.into_boxed_slice())
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The networks, in config order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Cidr> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn parses_and_contains() {
        // (cidr, inside, outside)
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "10.0.0.0/8",
                &["10.0.0.0", "10.255.255.255", "::ffff:10.1.2.3"],
                &["11.0.0.0", "9.255.255.255", "::a00:1", "64:ff9b::a00:1"],
            ),
            (
                "127.0.0.1",
                &["127.0.0.1", "::ffff:127.0.0.1"],
                &["127.0.0.2"],
            ),
            (
                "0.0.0.0/0",
                &["0.0.0.0", "255.255.255.255", "::ffff:1.2.3.4"],
                &["::1", "2001:db8::1"],
            ),
            (
                "192.168.1.128/25",
                &["192.168.1.128", "192.168.1.255"],
                &["192.168.1.127"],
            ),
            ("::1/128", &["::1"], &["::2", "127.0.0.1"]),
            ("::1", &["::1"], &["::"]),
            (
                "::/0",
                &["::", "ffff::1", "::ffff:127.0.0.1"],
                &["127.0.0.1", "0.0.0.0"],
            ),
            (
                "fd00::/8",
                &["fd00:ec2::254", "fdff::1"],
                &["fc00::1", "fe00::"],
            ),
            ("::ffff:0:0/96", &["::ffff:127.0.0.1"], &["127.0.0.1"]),
            (
                "2001:db8::/127",
                &["2001:db8::", "2001:db8::1"],
                &["2001:db8::2"],
            ),
        ];
        for &(text, inside, outside) in cases {
            let cidr = Cidr::parse(text).expect(text);
            for addr in inside {
                assert!(cidr.contains(ip(addr)), "{text} should contain {addr}");
            }
            for addr in outside {
                assert!(!cidr.contains(ip(addr)), "{text} should not contain {addr}");
            }
        }
    }

    #[test]
    fn rejects() {
        let cases: &[(&str, CidrError)] = &[
            ("", CidrError::Malformed),
            ("nope", CidrError::Malformed),
            ("10.0.0.0/", CidrError::Malformed),
            ("10.0.0.0/x", CidrError::Malformed),
            ("10.0.0.0/+8", CidrError::Malformed),
            ("10.0.0.0/ 8", CidrError::Malformed),
            ("10.0.0.0/8/8", CidrError::Malformed),
            ("10.1", CidrError::Malformed),
            ("010.0.0.0/8", CidrError::Malformed),
            ("[::1]/128", CidrError::Malformed),
            ("fe80::1%eth0/128", CidrError::Malformed),
            (
                "10.0.0.0/33",
                CidrError::PrefixTooLong {
                    prefix: 33,
                    max: 32,
                },
            ),
            (
                "::/129",
                CidrError::PrefixTooLong {
                    prefix: 129,
                    max: 128,
                },
            ),
            (
                "::/99999999999999999999999",
                CidrError::PrefixTooLong {
                    prefix: u64::MAX,
                    max: 128,
                },
            ),
            (
                "10.0.0.1/8",
                CidrError::HostBitsSet {
                    suggestion: "10.0.0.0/8".into(),
                },
            ),
            (
                "192.168.1.1/24",
                CidrError::HostBitsSet {
                    suggestion: "192.168.1.0/24".into(),
                },
            ),
            (
                "1.2.3.4/0",
                CidrError::HostBitsSet {
                    suggestion: "0.0.0.0/0".into(),
                },
            ),
            (
                "::1/127",
                CidrError::HostBitsSet {
                    suggestion: "::/127".into(),
                },
            ),
            (
                "fd00:ec2::254/64",
                CidrError::HostBitsSet {
                    suggestion: "fd00:ec2::/64".into(),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Cidr::parse(text).as_ref(), Err(want), "{text:?}");
        }
        assert_eq!(
            CidrError::HostBitsSet {
                suggestion: "10.0.0.0/8".into()
            }
            .to_string(),
            "has host bits set; did you mean 10.0.0.0/8"
        );
    }

    #[test]
    fn set_contains_any() {
        let set = CidrSet::new(vec![
            Cidr::parse("10.0.0.0/8").expect("v4"),
            Cidr::parse("::1/128").expect("v6"),
        ]);
        assert!(set.contains(ip("10.9.9.9")));
        assert!(set.contains(ip("::1")));
        assert!(!set.contains(ip("127.0.0.1")));
    }

    /// Bit `i` (0 = most significant) of a `width`-bit value.
    fn bit(value: u128, width: u32, i: u32) -> bool {
        (value >> (width - 1 - i)) & 1 == 1
    }

    /// The naive reference: the first `prefix` bits are equal, one at a time.
    fn naive_contains(network: u128, prefix: u32, addr: u128, width: u32) -> bool {
        (0..prefix).all(|i| bit(network, width, i) == bit(addr, width, i))
    }

    proptest! {
        #[test]
        fn v4_agrees_with_naive(net in any::<u32>(), prefix in 0u32..=32, addr in any::<u32>()) {
            let network = if prefix == 0 { 0 } else { net & (u32::MAX << (32 - prefix)) };
            let cidr = Cidr::parse(&format!("{}/{prefix}", Ipv4Addr::from(network)))
                .expect("masked network parses");
            let want = naive_contains(network.into(), prefix, addr.into(), 32);
            prop_assert_eq!(cidr.contains(IpAddr::V4(addr.into())), want);
            // The mapped form is matched by its embedded address.
            let mapped = IpAddr::V6(Ipv4Addr::from(addr).to_ipv6_mapped());
            prop_assert_eq!(cidr.contains(mapped), want);
            // The same address near the network, too.
            prop_assert!(cidr.contains(IpAddr::V4(network.into())));
        }

        #[test]
        fn v6_agrees_with_naive(net in any::<u128>(), prefix in 0u32..=128, addr in any::<u128>()) {
            let network = if prefix == 0 { 0 } else { net & (u128::MAX << (128 - prefix)) };
            let cidr = Cidr::parse(&format!("{}/{prefix}", Ipv6Addr::from(network)))
                .expect("masked network parses");
            let want = naive_contains(network, prefix, addr, 128);
            prop_assert_eq!(cidr.contains(IpAddr::V6(addr.into())), want);
            prop_assert!(cidr.contains(IpAddr::V6(network.into())));
            prop_assert!(!cidr.contains(IpAddr::V4((addr as u32).into())));
        }

        #[test]
        fn host_bits_are_rejected(net in any::<u32>(), prefix in 0u32..32) {
            let masked = if prefix == 0 { 0 } else { net & (u32::MAX << (32 - prefix)) };
            let result = Cidr::parse(&format!("{}/{prefix}", Ipv4Addr::from(net)));
            if masked == net {
                prop_assert!(result.is_ok());
            } else {
                prop_assert_eq!(
                    result,
                    Err(CidrError::HostBitsSet { suggestion: format!("{}/{prefix}", Ipv4Addr::from(masked)) })
                );
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,50}") {
            let _ = Cidr::parse(&s);
        }
    }
}

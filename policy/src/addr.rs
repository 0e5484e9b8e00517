//! [`classify`]: what kind of address a destination is, for the SSRF check.
//!
//! Only [`AddrClass::Public`] addresses may be dialled unless the matched rule's
//! `cidrs` names the address explicitly.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address this is. Closed; [`AddrClass::as_str`] is a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrClass {
    /// Globally routable, as far as this classification knows.
    Public,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`.
    Private,
    /// `169.254.0.0/16` (but for the metadata address), `fe80::/10`.
    LinkLocal,
    /// `100.64.0.0/10` (RFC 6598).
    SharedCgnat,
    /// `fc00::/7` (but for the metadata address).
    UniqueLocal,
    /// Cloud instance metadata: `169.254.169.254`, `fd00:ec2::254`.
    Metadata,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// The rest of the IANA IPv4 and IPv6 Special-Purpose Address
    /// Registries that is not globally reachable: `240.0.0.0/4`,
    /// `192.0.0.0/24`, `198.18.0.0/15`, the 6to4 relay anycast
    /// `192.88.99.0/24`, documentation ranges (`192.0.2.0/24`,
    /// `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`),
    /// `64:ff9b:1::/48` (local NAT64), `100::/64` (discard), `100:0:0:1::/64`
    /// (dummy prefix), the IETF protocol block `2001::/23` (Teredo, ORCHID
    /// and ORCHIDv2, benchmarking, …), SRv6 SIDs `5f00::/16` and the
    /// deprecated site-local `fec0::/10`.
    Reserved,
    /// An IPv6 address embedding a non-public IPv4 one: IPv4-mapped `::ffff:0:0/96`,
    /// IPv4-translated `::ffff:0:0:0/96` (RFC 2765), IPv4-compatible `::/96`,
    /// NAT64 `64:ff9b::/96`, 6to4 `2002::/16`.
    MappedV4,
}

/// IPv4 ranges, first match wins (so the metadata address precedes link-local and
/// broadcast precedes `240.0.0.0/4`).
const V4_RANGES: &[(Ipv4Addr, u8, AddrClass)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, AddrClass::Unspecified),
    (Ipv4Addr::new(127, 0, 0, 0), 8, AddrClass::Loopback),
    (Ipv4Addr::new(10, 0, 0, 0), 8, AddrClass::Private),
    (Ipv4Addr::new(172, 16, 0, 0), 12, AddrClass::Private),
    (Ipv4Addr::new(192, 168, 0, 0), 16, AddrClass::Private),
    (Ipv4Addr::new(169, 254, 169, 254), 32, AddrClass::Metadata),
    (Ipv4Addr::new(169, 254, 0, 0), 16, AddrClass::LinkLocal),
    (Ipv4Addr::new(100, 64, 0, 0), 10, AddrClass::SharedCgnat),
    (Ipv4Addr::new(224, 0, 0, 0), 4, AddrClass::Multicast),
    (Ipv4Addr::new(255, 255, 255, 255), 32, AddrClass::Broadcast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, AddrClass::Reserved),
    (Ipv4Addr::new(192, 0, 0, 0), 24, AddrClass::Reserved),
    (Ipv4Addr::new(192, 0, 2, 0), 24, AddrClass::Reserved),
    (Ipv4Addr::new(198, 18, 0, 0), 15, AddrClass::Reserved),
    // 6to4 relay anycast (RFC 3068, deprecated by RFC 7526).
    (Ipv4Addr::new(192, 88, 99, 0), 24, AddrClass::Reserved),
    (Ipv4Addr::new(198, 51, 100, 0), 24, AddrClass::Reserved),
    (Ipv4Addr::new(203, 0, 113, 0), 24, AddrClass::Reserved),
];

/// IPv6 ranges checked after `::`, `::1` and the IPv4-embedding ranges; first match
/// wins.
const V6_RANGES: &[(Ipv6Addr, u8, AddrClass)] = &[
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        AddrClass::Reserved,
    ),
    (
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
        128,
        AddrClass::Metadata,
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        AddrClass::UniqueLocal,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddrClass::LinkLocal,
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        AddrClass::Multicast,
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        AddrClass::Reserved,
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        AddrClass::Reserved,
    ),
    // Dummy IPv6 prefix (RFC 9780).
    (
        Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0),
        64,
        AddrClass::Reserved,
    ),
    // IETF protocol assignments (RFC 2928): Teredo 2001::/32 (which hides an
    // obfuscated IPv4 address), benchmarking, ORCHID, ORCHIDv2, DETs, and a
    // few anycast services a proxy client has no reason to reach.
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        AddrClass::Reserved,
    ),
    // Documentation (RFC 9637).
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        AddrClass::Reserved,
    ),
    // SRv6 SIDs (RFC 9602).
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        AddrClass::Reserved,
    ),
    // Site-local, deprecated (RFC 3879).
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddrClass::Reserved,
    ),
];

/// IPv6 ranges whose low 32 bits are an IPv4 address.
const V6_EMBEDDING_LOW_32: &[(Ipv6Addr, u8)] = &[
    // IPv4-mapped (RFC 4291 2.5.5.2).
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
    // IPv4-translated (RFC 2765 §2.1, SIIT): ::ffff:0:a.b.c.d.
    (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96),
    // IPv4-compatible, deprecated (RFC 4291 2.5.5.1); `::` and `::1` are handled first.
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96),
    // NAT64 well-known prefix (RFC 6052).
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96),
];

/// 6to4 (RFC 3056): the IPv4 address is bits 16..48.
const V6_6TO4: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16);

/// Classifies an address for the SSRF check. An IPv6 address embedding an IPv4 one
/// (mapped, compatible, NAT64, 6to4) is `Public` if the embedded address is, and
/// `MappedV4` otherwise.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let bits = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|(net, len, _)| bits & v4_mask(*len) == u32::from(*net))
        .map_or(AddrClass::Public, |&(_, _, class)| class)
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if ip == Ipv6Addr::UNSPECIFIED {
        return AddrClass::Unspecified;
    }
    if ip == Ipv6Addr::LOCALHOST {
        return AddrClass::Loopback;
    }
    if let Some(v4) = embedded_v4(ip) {
        return match classify_v4(v4) {
            AddrClass::Public => AddrClass::Public,
            _ => AddrClass::MappedV4,
        };
    }
    let bits = u128::from(ip);
    V6_RANGES
        .iter()
        .find(|(net, len, _)| bits & v6_mask(*len) == u128::from(*net))
        .map_or(AddrClass::Public, |&(_, _, class)| class)
}

/// The IPv4 address an IPv6 address carries, if it is in a range that carries one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let in_range = |(net, len): (Ipv6Addr, u8)| bits & v6_mask(len) == u128::from(net);
    let low_32 = if V6_EMBEDDING_LOW_32.iter().copied().any(in_range) {
        bits
    } else if in_range(V6_6TO4) {
        bits >> 80
    } else {
        return None;
    };
    // Truncation keeps exactly the 32 bits that hold the address.
    Some(Ipv4Addr::from(low_32 as u32))
}

fn v4_mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn v6_mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

// === impl AddrClass ===

/// One table gives each class its metric label and its prohibited-address reason.
macro_rules! addr_class_labels {
    ($($class:ident => $label:literal,)*) => {
        impl AddrClass {
            /// Every class, e.g. to pre-register metric label values.
            pub const ALL: &'static [AddrClass] = &[$(AddrClass::$class),*];

            /// The metric label.
            pub const fn as_str(&self) -> &'static str {
                match self {
                    $(AddrClass::$class => $label,)*
                }
            }

            /// The fixed text of
            /// [`Reason::AddressProhibited`](crate::Reason::AddressProhibited) for this
            /// class.
            pub(crate) const fn prohibited_reason(&self) -> &'static str {
                match self {
                    $(AddrClass::$class => concat!(
                        "destination address is ",
                        $label,
                        " and no matching rule's cidrs names it"
                    ),)*
                }
            }
        }
    };
}

addr_class_labels! {
    Public => "public",
    Unspecified => "unspecified",
    Loopback => "loopback",
    Private => "private",
    LinkLocal => "link_local",
    SharedCgnat => "shared_cgnat",
    UniqueLocal => "unique_local",
    Metadata => "metadata",
    Multicast => "multicast",
    Broadcast => "broadcast",
    Reserved => "reserved",
    MappedV4 => "mapped_v4",
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classifies() {
        use AddrClass::*;
        let cases: &[(&str, AddrClass)] = &[
            // IPv4, with the edges of each range.
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("0.0.0.0", Unspecified),
            ("0.255.255.255", Unspecified),
            ("1.0.0.0", Public),
            ("127.0.0.1", Loopback),
            ("127.255.255.255", Loopback),
            ("126.255.255.255", Public),
            ("128.0.0.0", Public),
            ("10.0.0.0", Private),
            ("10.255.255.255", Private),
            ("11.0.0.0", Public),
            ("172.16.0.0", Private),
            ("172.31.255.255", Private),
            ("172.15.255.255", Public),
            ("172.32.0.0", Public),
            ("192.168.0.1", Private),
            ("192.169.0.0", Public),
            ("169.254.0.1", LinkLocal),
            ("169.254.169.253", LinkLocal),
            ("169.254.169.254", Metadata),
            ("169.254.169.255", LinkLocal),
            ("169.255.0.0", Public),
            ("100.64.0.0", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("100.63.255.255", Public),
            ("100.128.0.0", Public),
            ("224.0.0.1", Multicast),
            ("239.255.255.255", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
            ("255.255.255.255", Broadcast),
            ("192.0.0.8", Reserved),
            ("192.0.1.0", Public),
            ("192.0.2.1", Reserved),
            ("198.18.0.1", Reserved),
            ("198.19.255.255", Reserved),
            ("198.17.255.255", Public),
            ("198.20.0.0", Public),
            ("198.51.100.7", Reserved),
            ("203.0.113.9", Reserved),
            // IPv6.
            ("2606:4700::1111", Public),
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("fec0::1", Reserved),
            ("fc00::1", UniqueLocal),
            ("fdff:ffff::1", UniqueLocal),
            ("fd00:ec2::254", Metadata),
            ("fd00:ec2::253", UniqueLocal),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("2001:db9::1", Public),
            ("100::1", Reserved),
            ("100:0:0:1::1", Reserved),
            ("100:0:0:2::1", Public),
            ("64:ff9b:1::1", Reserved),
            // IPv4 embedded in IPv6.
            ("::ffff:127.0.0.1", MappedV4),
            ("::ffff:169.254.169.254", MappedV4),
            ("::ffff:0.0.0.0", MappedV4),
            ("::ffff:8.8.8.8", Public),
            ("::127.0.0.1", MappedV4),
            ("::2", MappedV4),
            ("::8.8.8.8", Public),
            ("64:ff9b::10.0.0.1", MappedV4),
            ("64:ff9b::8.8.8.8", Public),
            ("2002:7f00:1::", MappedV4),
            ("2002:a9fe:a9fe::1", MappedV4),
            ("2002:808:808::1", Public),
        ];
        for &(addr, want) in cases {
            let ip: IpAddr = addr.parse().expect(addr);
            assert_eq!(classify(ip), want, "{addr}");
        }
    }

    /// Every entry of the IANA IPv4 and IPv6 Special-Purpose Address
    /// Registries (and multicast, site-local): its first, middle and last
    /// address. Refused unless the registry says "Globally Reachable: True"
    /// AND the entry is not inside a block we refuse whole (`192.0.0.0/24`
    /// and `2001::/23` hold a few globally reachable anycast services; a
    /// proxy client has no business there, and the guard stays simple).
    #[test]
    fn special_purpose_registries() {
        const REFUSED: bool = true;
        const PUBLIC: bool = false;
        let v4: &[(&str, bool)] = &[
            ("0.0.0.0/8", REFUSED),
            ("0.0.0.0/32", REFUSED),
            ("10.0.0.0/8", REFUSED),
            ("100.64.0.0/10", REFUSED),
            ("127.0.0.0/8", REFUSED),
            ("169.254.0.0/16", REFUSED),
            ("172.16.0.0/12", REFUSED),
            ("192.0.0.0/24", REFUSED),
            ("192.0.0.0/29", REFUSED),
            ("192.0.0.8/32", REFUSED),
            ("192.0.0.9/32", REFUSED),  // PCP anycast: inside 192.0.0.0/24
            ("192.0.0.10/32", REFUSED), // TURN anycast: likewise
            ("192.0.0.170/31", REFUSED),
            ("192.0.2.0/24", REFUSED),
            ("192.31.196.0/24", PUBLIC), // AS112-v4
            ("192.52.193.0/24", PUBLIC), // AMT
            ("192.88.99.0/24", REFUSED),
            ("192.168.0.0/16", REFUSED),
            ("192.175.48.0/24", PUBLIC), // Direct Delegation AS112
            ("198.18.0.0/15", REFUSED),
            ("198.51.100.0/24", REFUSED),
            ("203.0.113.0/24", REFUSED),
            ("224.0.0.0/4", REFUSED),
            ("240.0.0.0/4", REFUSED),
            ("255.255.255.255/32", REFUSED),
        ];
        let v6: &[(&str, bool)] = &[
            ("::1/128", REFUSED),
            ("::/128", REFUSED),
            ("64:ff9b:1::/48", REFUSED),
            ("100::/64", REFUSED),
            ("100:0:0:1::/64", REFUSED),
            ("2001::/23", REFUSED),
            ("2001::/32", REFUSED), // Teredo
            ("2001:1::1/128", REFUSED),
            ("2001:1::3/128", REFUSED),
            ("2001:2::/48", REFUSED),
            ("2001:3::/32", REFUSED),
            ("2001:4:112::/48", REFUSED),
            ("2001:10::/28", REFUSED), // ORCHID
            ("2001:20::/28", REFUSED), // ORCHIDv2
            ("2001:30::/28", REFUSED), // DETs
            ("2001:db8::/32", REFUSED),
            ("2620:4f:8000::/48", PUBLIC),
            ("3fff::/20", REFUSED),
            ("5f00::/16", REFUSED),
            ("fc00::/7", REFUSED),
            ("fe80::/10", REFUSED),
            ("fec0::/10", REFUSED),
            ("ff00::/8", REFUSED),
        ];
        let check = |net: &str, first: IpAddr, last: IpAddr, mid: IpAddr, refused: bool| {
            for ip in [first, mid, last] {
                let class = classify(ip);
                assert_eq!(
                    class != AddrClass::Public,
                    refused,
                    "{net}: {ip} is {class}"
                );
            }
        };
        for &(net, refused) in v4 {
            let (addr, len) = net.split_once('/').expect("cidr");
            let base = u32::from(addr.parse::<Ipv4Addr>().expect(net));
            let len: u32 = len.parse().expect(net);
            let last = base | u32::MAX.checked_shr(len).unwrap_or(0);
            let mid = base + (last - base) / 2;
            check(
                net,
                IpAddr::V4(base.into()),
                IpAddr::V4(last.into()),
                IpAddr::V4(mid.into()),
                refused,
            );
        }
        for &(net, refused) in v6 {
            let (addr, len) = net.split_once('/').expect("cidr");
            let base = u128::from(addr.parse::<Ipv6Addr>().expect(net));
            let len: u32 = len.parse().expect(net);
            let last = base | u128::MAX.checked_shr(len).unwrap_or(0);
            let mid = base + (last - base) / 2;
            check(
                net,
                IpAddr::V6(base.into()),
                IpAddr::V6(last.into()),
                IpAddr::V6(mid.into()),
                refused,
            );
        }
        // The entries that carry an IPv4 address follow it: loopback and
        // the metadata address in every form (RFC 2765's ::ffff:0:a.b.c.d too).
        for form in ["::ffff:{}", "::ffff:0:{}", "64:ff9b::{}", "::{}"] {
            for (v4, refused) in [
                ("127.0.0.1", REFUSED),
                ("169.254.169.254", REFUSED),
                ("8.8.8.8", PUBLIC),
            ] {
                let text = form.replace("{}", v4);
                let ip: IpAddr = text.parse().expect(&text);
                check(&text, ip, ip, ip, refused);
            }
        }
        for (six_to_four, refused) in [
            ("2002:7f00:1::", REFUSED),
            ("2002:a9fe:a9fe::", REFUSED),
            ("2002:808:808::", PUBLIC),
        ] {
            let ip: IpAddr = six_to_four.parse().expect(six_to_four);
            check(six_to_four, ip, ip, ip, refused);
        }
    }

    #[test]
    fn labels_are_distinct() {
        let mut labels: Vec<_> = AddrClass::ALL.iter().map(AddrClass::as_str).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), AddrClass::ALL.len());
        for class in AddrClass::ALL {
            let reason = class.prohibited_reason();
            assert!(
                reason.starts_with(&format!("destination address is {} and", class.as_str())),
                "{reason}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(bits in any::<u128>(), v4 in any::<u32>()) {
            let _ = classify(IpAddr::V6(bits.into()));
            let _ = classify(IpAddr::V4(v4.into()));
        }

        #[test]
        fn embedded_forms_follow_the_v4_class(v4 in any::<u32>()) {
            let public = classify(IpAddr::V4(v4.into())) == AddrClass::Public;
            let want = if public { AddrClass::Public } else { AddrClass::MappedV4 };
            let v4 = u128::from(v4);
            let forms = [
                (0xffff_u128 << 32) | v4,                 // ::ffff:a.b.c.d
                (0x64_ff9b_u128 << 96) | v4,              // 64:ff9b::a.b.c.d
                (0x2002_u128 << 112) | (v4 << 80) | 1,    // 2002:AB:CD::1
            ];
            for form in forms {
                prop_assert_eq!(classify(IpAddr::V6(form.into())), want, "{:x}", form);
            }
            if v4 > 1 {
                prop_assert_eq!(classify(IpAddr::V6(v4.into())), want, "compat {:x}", v4);
            }
            // IPv4-translated (RFC 2765): ::ffff:0:a.b.c.d.
            let translated = (0xffff_u128 << 48) | v4;
            prop_assert_eq!(classify(IpAddr::V6(translated.into())), want, "translated {:x}", translated);
        }
    }
}

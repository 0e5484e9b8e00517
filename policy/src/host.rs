//! [`Host`]: a destination host, normalised once so that every later comparison is a
//! plain equality.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use crate::ipv4;

/// Longest DNS name, in bytes, without the trailing dot (RFC 1035 2.3.4).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label, in bytes (RFC 1035 2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// A normalised destination host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// Lowercase ASCII, no trailing dot, LDH labels (underscore allowed).
    Name(String),
    /// A literal address in any spelling `inet_aton` or a browser accepts; IPv4-mapped
    /// IPv6 stays IPv6 ([`classify`](crate::classify) handles mapped forms).
    Ip(IpAddr),
}

/// Why a host was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host is empty")]
    Empty,
    #[error("host is {len} bytes long; at most 253 allowed")]
    TooLong { len: usize },
    #[error("host has an empty label")]
    EmptyLabel,
    #[error("label is {len} bytes long; at most 63 allowed")]
    LabelTooLong { len: usize },
    #[error("label starts or ends with a hyphen")]
    HyphenAtLabelEdge,
    #[error("character {0:?} is not allowed in a host")]
    InvalidCharacter(char),
    #[error("percent-encoding is not allowed in a host")]
    PercentEncoded,
    #[error("not a valid internationalised domain name (IDNA)")]
    InvalidIdna,
    #[error("IPv6 zone identifiers are not allowed")]
    ZoneId,
    #[error("not a valid IPv6 address")]
    InvalidIpv6,
    #[error("host ends in a number but is not a valid IPv4 address")]
    InvalidIpv4,
}

// === impl Host ===

impl Host {
    /// Parses a host as it appears in an authority.
    ///
    /// * `[::1]` (or bare `::1`) is IPv6; `[::ffff:127.0.0.1]` stays IPv6. Zone ids
    ///   (`fe80::1%eth0`, `fe80::1%25eth0`) are rejected.
    /// * A host whose last label is a number (`1.2.3.4`, `127.1`, `0x7f.1`,
    ///   `2130706433`, `x.0x1f`) is IPv4 under the WHATWG URL rules, or an error
    ///   (`1.2.3.999`, `256.1`); never a name.
    /// * Anything else is a name: lowercased, one trailing dot stripped, labels of
    ///   1..=63 letters, digits, `-` and `_`, not starting or ending with `-`, 253
    ///   bytes at most. A Unicode name is first mapped to its IDNA A-labels (UTS
    ///   #46; an invalid one is rejected). `%`, spaces, `@`, `/`, `\` are rejected.
    pub fn parse(s: &str) -> Result<Host, HostError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(HostError::InvalidIpv6)?;
            return parse_ipv6(inner);
        }
        if s.contains(':') {
            return parse_ipv6(s);
        }

        // IDNA (UTS #46): a Unicode name is checked and mapped to its A-label
        // form once, so `bücher.example` and `xn--bcher-kva.example` are one
        // host everywhere (rules, requests, logs).
        let ascii;
        let s = if s.is_ascii() {
            s
        } else {
            ascii = idna::domain_to_ascii(s).map_err(|_| HostError::InvalidIdna)?;
            ascii.as_str()
        };
        let trimmed = s.strip_suffix('.').unwrap_or(s);
        if trimmed.is_empty() {
            return Err(HostError::Empty);
        }
        if trimmed.len() > MAX_NAME_LEN {
            return Err(HostError::TooLong { len: trimmed.len() });
        }
        if let Some(c) = trimmed
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(match c {
                '%' => HostError::PercentEncoded,
                _ => HostError::InvalidCharacter(c),
            });
        }
        let name = trimmed.to_ascii_lowercase();

        if ipv4::ends_in_number(&name) {
            return ipv4::parse(&name)
                .map(|ip| Host::Ip(IpAddr::V4(ip)))
                .ok_or(HostError::InvalidIpv4);
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(HostError::EmptyLabel);
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(HostError::LabelTooLong { len: label.len() });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(HostError::HyphenAtLabelEdge);
            }
        }
        Ok(Host::Name(name))
    }
}

fn parse_ipv6(s: &str) -> Result<Host, HostError> {
    if s.contains('%') {
        return Err(HostError::ZoneId);
    }
    s.parse::<Ipv6Addr>()
        .map(|ip| Host::Ip(IpAddr::V6(ip)))
        .map_err(|_| HostError::InvalidIpv6)
}

impl FromStr for Host {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Host::parse(s)
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        Host::Ip(ip)
    }
}

impl fmt::Display for Host {
    /// The name as is, IPv4 dotted, IPv6 in brackets (`[::1]`): ready for an authority.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> Host {
        Host::Name(s.to_owned())
    }

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().expect("test address"))
    }

    #[test]
    fn parses() {
        let long_label = "a".repeat(63);
        let long_name = format!("{}.com", ["abcdefghi"; 25].join("."));
        assert_eq!(long_name.len(), 253);
        let cases: &[(&str, &str, Host)] = &[
            ("decimal dword", "2130706433", ip("127.0.0.1")),
            ("hex first part", "0x7f.1", ip("127.0.0.1")),
            ("octal first part", "0177.0.0.1", ip("127.0.0.1")),
            ("two parts", "127.1", ip("127.0.0.1")),
            ("three parts", "127.0.1", ip("127.0.0.1")),
            ("upper-case hex dword", "0x7F000001", ip("127.0.0.1")),
            ("upper-case hex prefix", "0X7f.0.0.1", ip("127.0.0.1")),
            ("dotted quad", "8.8.8.8", ip("8.8.8.8")),
            ("ipv4 with trailing dot", "1.2.3.4.", ip("1.2.3.4")),
            ("zero", "0", ip("0.0.0.0")),
            ("max dword", "4294967295", ip("255.255.255.255")),
            (
                "mapped v6 stays v6",
                "[::ffff:127.0.0.1]",
                ip("::ffff:7f00:1"),
            ),
            ("bracketed loopback", "[::1]", ip("::1")),
            ("bare v6", "2001:db8::1", ip("2001:db8::1")),
            ("upper-case v6", "[FE80::1]", ip("fe80::1")),
            ("lowercased, trailing dot", "LocalHost.", name("localhost")),
            ("underscore", "exa_mple.com", name("exa_mple.com")),
            (
                "inner hyphens",
                "r3---sn-abc.example.com",
                name("r3---sn-abc.example.com"),
            ),
            (
                "numeric inner label",
                "1.2.3.example",
                name("1.2.3.example"),
            ),
            ("non-number last label", "1.2.3.4x", name("1.2.3.4x")),
            ("non-hex 0x label", "example.0xg", name("example.0xg")),
            (
                "punycode",
                "xn--bcher-kva.example",
                name("xn--bcher-kva.example"),
            ),
            ("63-byte label", &long_label, name(&long_label)),
            ("253-byte name", &long_name, name(&long_name)),
        ];
        for (case, input, want) in cases {
            assert_eq!(Host::parse(input).as_ref(), Ok(want), "{case}");
        }
    }

    #[test]
    fn rejects() {
        let long_label = "a".repeat(64);
        let long_name = format!("{}.com", ["abcdefghi"; 25].join("."));
        assert_eq!(long_name.len(), 253);
        let too_long_name = format!("a{long_name}");
        let cases: &[(&str, &str, HostError)] = &[
            ("empty", "", HostError::Empty),
            ("only a dot", ".", HostError::Empty),
            ("empty label", "a..b", HostError::EmptyLabel),
            ("leading dot", ".example.com", HostError::EmptyLabel),
            ("two trailing dots", "example.com..", HostError::EmptyLabel),
            (
                "last byte out of range",
                "1.2.3.999",
                HostError::InvalidIpv4,
            ),
            ("first part out of range", "256.1", HostError::InvalidIpv4),
            ("five parts", "1.2.3.4.5", HostError::InvalidIpv4),
            ("dword overflow", "4294967296", HostError::InvalidIpv4),
            ("bad octal digit", "08.0.0.1", HostError::InvalidIpv4),
            (
                "name ending in number",
                "example.123",
                HostError::InvalidIpv4,
            ),
            ("encoded zone id", "fe80::1%25eth0", HostError::ZoneId),
            ("bracketed zone id", "[fe80::1%eth0]", HostError::ZoneId),
            ("unclosed bracket", "[::1", HostError::InvalidIpv6),
            ("port after bracket", "[::1]:443", HostError::InvalidIpv6),
            ("bracketed v4", "[127.0.0.1]", HostError::InvalidIpv6),
            ("host with port", "example.com:443", HostError::InvalidIpv6),
            ("space", "a b", HostError::InvalidCharacter(' ')),
            ("userinfo", "a@b", HostError::InvalidCharacter('@')),
            ("slash", "a/b", HostError::InvalidCharacter('/')),
            ("backslash", "a\\b", HostError::InvalidCharacter('\\')),
            ("star", "*.example.com", HostError::InvalidCharacter('*')),
            (
                "disallowed by IDNA",
                "a\u{2028}b.example",
                HostError::InvalidIdna,
            ),
            (
                "IDNA mapping to a space",
                "a\u{3000}b.example",
                HostError::InvalidCharacter(' '),
            ),
            ("nul", "a\0b", HostError::InvalidCharacter('\0')),
            ("percent", "a%2eb", HostError::PercentEncoded),
            ("lone hyphen", "-", HostError::HyphenAtLabelEdge),
            ("leading hyphen", "-a.com", HostError::HyphenAtLabelEdge),
            ("trailing hyphen", "a-.com", HostError::HyphenAtLabelEdge),
            (
                "64-byte label",
                &long_label,
                HostError::LabelTooLong { len: 64 },
            ),
            (
                "254-byte name",
                &too_long_name,
                HostError::TooLong { len: 254 },
            ),
        ];
        for (case, input, want) in cases {
            assert_eq!(Host::parse(input).as_ref(), Err(want), "{case}");
        }
    }

    /// UTS #46: Unicode names become their A-labels; full-width spellings of an
    /// address become the address (and meet the SSRF guard as such).
    #[test]
    fn idna_names_are_normalised() {
        let cases = [
            ("bücher.example", Host::Name("xn--bcher-kva.example".into())),
            (
                "BÜCHER.Example.",
                Host::Name("xn--bcher-kva.example".into()),
            ),
            (
                "xn--bcher-kva.example",
                Host::Name("xn--bcher-kva.example".into()),
            ),
            ("☃.net", Host::Name("xn--n3h.net".into())),
            (
                "\u{ff11}\u{ff12}\u{ff17}\u{ff0e}\u{ff10}\u{ff0e}\u{ff10}\u{ff0e}\u{ff11}",
                Host::Ip(IpAddr::from([127, 0, 0, 1])),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Host::parse(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn display() {
        let cases = [
            ("Example.COM.", "example.com"),
            ("0x7f.1", "127.0.0.1"),
            ("::1", "[::1]"),
            ("[::ffff:127.0.0.1]", "[::ffff:127.0.0.1]"),
        ];
        for (input, want) in cases {
            let host = Host::parse(input).expect(input);
            assert_eq!(host.to_string(), want, "{input}");
        }
    }

    /// Renders one IPv4 part in a base the WHATWG parser accepts.
    fn spell(part: u32, base: u8, upper: bool) -> String {
        match base {
            0 => format!("{part}"),
            1 if upper => format!("0X{part:X}"),
            1 => format!("0x{part:x}"),
            _ => format!("0{part:o}"),
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = Host::parse(&s);
        }

        #[test]
        fn never_panics_on_host_like_input(s in "[\\[\\]0-9a-fxX.:%_-]{0,40}") {
            let _ = Host::parse(&s);
        }

        #[test]
        fn display_round_trips(s in "[\\[\\]0-9a-zA-Z.:_-]{0,40}") {
            if let Ok(host) = Host::parse(&s) {
                prop_assert_eq!(Host::parse(&host.to_string()), Ok(host));
            }
        }

        #[test]
        fn ipv4_spellings_agree(
            addr in any::<u32>(),
            parts in 1usize..=4,
            bases in proptest::array::uniform4(0u8..3),
            upper in any::<bool>(),
            trailing_dot in any::<bool>(),
        ) {
            // Leading parts are single bytes; the last part fills the rest.
            let bytes = addr.to_be_bytes();
            let last_bits = 8 * (5 - parts as u32);
            let last = if last_bits == 32 { addr } else { addr & ((1 << last_bits) - 1) };
            let mut spelled: Vec<String> = bytes[..parts - 1]
                .iter()
                .zip(bases)
                .map(|(&b, base)| spell(u32::from(b), base, upper))
                .collect();
            spelled.push(spell(last, bases[3], upper));
            let mut text = spelled.join(".");
            if trailing_dot {
                text.push('.');
            }
            prop_assert_eq!(
                Host::parse(&text),
                Ok(Host::Ip(IpAddr::V4(addr.into()))),
                "{}", text
            );
        }
    }
}

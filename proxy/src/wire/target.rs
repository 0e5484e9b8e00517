//! The destination of a request, normalised once: `Target { host, port }`.
//!
//! Authority-form (`host:port`, IPv6 in brackets) as used by CONNECT
//! (RFC 9110 §9.3.6, RFC 9112 §3.2.3) and by the authority of absolute URIs.

use std::fmt;

use bauta_policy::{Host, HostError};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("empty authority")]
    Empty,
    #[error("authority must not carry userinfo")]
    UserInfo,
    #[error("port is missing (CONNECT needs host:port)")]
    MissingPort,
    #[error("port is not a number in 1..65535")]
    BadPort,
    #[error("IPv6 address must be in brackets")]
    UnbracketedIpv6,
    #[error("bad host: {0}")]
    BadHost(#[from] HostError),
}

// === impl Target ===

impl Target {
    /// Parse `host:port`. Without a port, `default_port` applies; `None` makes
    /// the port mandatory (CONNECT has no default port, RFC 9110 §9.3.6).
    pub fn parse_authority(s: &str, default_port: Option<u16>) -> Result<Target, TargetError> {
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        if s.contains('@') {
            return Err(TargetError::UserInfo);
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or(TargetError::UnbracketedIpv6)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(TargetError::BadPort)?),
            };
            (&s[..inner.len() + 2], port)
        } else {
            match s.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => return Err(TargetError::UnbracketedIpv6),
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            Some(p) => parse_port(p)?,
            None => default_port.ok_or(TargetError::MissingPort)?,
        };
        let host = Host::parse(host)?;
        Ok(Target { host, port })
    }
}

/// Digits only (no sign, no spaces), 1..=65535.
fn parse_port(p: &str) -> Result<u16, TargetError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::BadPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(TargetError::BadPort),
        Ok(n) => Ok(n),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn authority_table() {
        let ok: &[(&str, Option<u16>, Host, u16)] = &[
            (
                "example.com:443",
                None,
                Host::Name("example.com".into()),
                443,
            ),
            (
                "Example.COM.:8443",
                None,
                Host::Name("example.com".into()),
                8443,
            ),
            (
                "example.com",
                Some(80),
                Host::Name("example.com".into()),
                80,
            ),
            (
                "[::1]:443",
                None,
                Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                443,
            ),
            (
                "[::1]",
                Some(80),
                Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                80,
            ),
            (
                "127.0.0.1:1",
                None,
                Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                1,
            ),
            (
                "2130706433:65535",
                None,
                Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                65535,
            ),
        ];
        for (s, d, host, port) in ok {
            let t = Target::parse_authority(s, *d).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(&t.host, host, "{s}");
            assert_eq!(t.port, *port, "{s}");
        }
        let bad: &[(&str, TargetError)] = &[
            ("", TargetError::Empty),
            ("example.com", TargetError::MissingPort),
            ("example.com:", TargetError::BadPort),
            ("example.com:0", TargetError::BadPort),
            ("example.com:65536", TargetError::BadPort),
            ("example.com:+80", TargetError::BadPort),
            ("example.com:8o", TargetError::BadPort),
            ("::1:443", TargetError::UnbracketedIpv6),
            ("[::1", TargetError::UnbracketedIpv6),
            ("[::1]443", TargetError::BadPort),
            ("user@example.com:443", TargetError::UserInfo),
        ];
        for (s, want) in bad {
            assert_eq!(
                Target::parse_authority(s, None).err().as_ref(),
                Some(want),
                "{s}"
            );
        }
        assert!(matches!(
            Target::parse_authority("exa mple.com:443", None),
            Err(TargetError::BadHost(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for s in ["example.com:443", "[::1]:8080", "10.0.0.1:22"] {
            let t = Target::parse_authority(s, None).expect("parse");
            assert_eq!(t.to_string(), s);
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,64}") {
            let _ = Target::parse_authority(&s, None);
            let _ = Target::parse_authority(&s, Some(80));
        }
    }
}

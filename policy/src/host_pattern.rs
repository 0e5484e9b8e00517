//! [`HostPatterns`]: a rule's `hosts` matcher.
//!
//! A pattern is `"*"` (every host, IP literals included), `"*.example.com"` (every
//! subdomain at any depth, not `example.com` itself), or an exact host parsed by
//! [`Host::parse`] (a name, or an IP literal matching `Host::Ip`).
//!
//! Exact hosts sit in a hash map keyed by the host's hash, which [`HostProbe`]
//! computes once per request, so a thousand rules cost a thousand integer lookups,
//! not a thousand string hashes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use crate::Host;

/// One parsed `hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Any,
    Exact(Host),
    /// `"*.example.com"`, stored as `".example.com"`.
    Subdomains(Box<str>),
}

/// A rule's `hosts`.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostPatterns {
    any: bool,
    exact: HashMap<u64, Box<[Host]>, BuildHasherDefault<PrehashedHasher>>,
    /// Each with its leading dot: `".example.com"`.
    subdomains: Box<[Box<str>]>,
}

/// A request's host with its hash, computed once and used for every rule.
pub(crate) struct HostProbe<'a> {
    host: &'a Host,
    hash: u64,
}

/// Passes an already computed `u64` hash through.
#[derive(Default)]
struct PrehashedHasher(u64);

/// Why a `hosts` entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPatternError {
    #[error("'*' is allowed only as the whole pattern or as a leading \"*.\"")]
    MisplacedWildcard,
    #[error("nothing follows \"*.\"")]
    EmptyWildcardSuffix,
    #[error("a wildcard suffix must be a DNS name, not an IP address")]
    WildcardIp,
    #[error("{0}")]
    Host(#[from] crate::HostError),
}

/// The hash [`HostPatterns`] keys exact hosts by. `DefaultHasher::new()` has fixed
/// keys; the map only holds configured hosts, so a chosen collision costs a
/// request one extra equality check and nothing more.
fn host_hash(host: &Host) -> u64 {
    let mut hasher = DefaultHasher::new();
    host.hash(&mut hasher);
    hasher.finish()
}

// === impl HostPattern ===

impl HostPattern {
    pub(crate) fn parse(s: &str) -> Result<HostPattern, HostPatternError> {
        if s == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(suffix) = s.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(HostPatternError::MisplacedWildcard);
            }
            if suffix.is_empty() {
                return Err(HostPatternError::EmptyWildcardSuffix);
            }
            return match Host::parse(suffix)? {
                Host::Name(name) => Ok(HostPattern::Subdomains(format!(".{name}").into())),
                Host::Ip(_) => Err(HostPatternError::WildcardIp),
            };
        }
        if s.contains('*') {
            return Err(HostPatternError::MisplacedWildcard);
        }
        Ok(HostPattern::Exact(Host::parse(s)?))
    }
}

// === impl HostPatterns ===

impl HostPatterns {
    /// Every host.
    pub(crate) fn any() -> HostPatterns {
        HostPatterns {
            any: true,
            ..HostPatterns::default()
        }
    }

    pub(crate) fn new(patterns: Vec<HostPattern>) -> HostPatterns {
        let mut exact: HashMap<u64, Vec<Host>> = HashMap::new();
        let mut subdomains = Vec::new();
        let mut any = false;
        for pattern in patterns {
            match pattern {
                HostPattern::Any => any = true,
                HostPattern::Exact(host) => {
                    let hosts = exact.entry(host_hash(&host)).or_default();
                    if !hosts.contains(&host) {
                        hosts.push(host);
                    }
                }
                HostPattern::Subdomains(suffix) => subdomains.push(suffix),
            }
        }
        if any {
            return HostPatterns::any();
        }
        HostPatterns {
            any: false,
            exact: exact
                .into_iter()
                .map(|(hash, hosts)| (hash, hosts.into_boxed_slice()))
                .collect(),
            subdomains: subdomains.into_boxed_slice(),
        }
    }

    /// Whether every host matches (`"*"`, or no `hosts` key).
    pub(crate) fn is_any(&self) -> bool {
        self.any
    }

    /// The exact hosts, in no particular order.
    pub(crate) fn exact_hosts(&self) -> impl Iterator<Item = &Host> {
        self.exact.values().flat_map(|hosts| hosts.iter())
    }

    /// The wildcard suffixes, each with its leading dot (`".example.com"`).
    pub(crate) fn subdomain_suffixes(&self) -> impl Iterator<Item = &str> {
        self.subdomains.iter().map(|s| &**s)
    }

    pub(crate) fn matches(&self, probe: &HostProbe<'_>) -> bool {
        self.any || self.matches_exact(probe) || self.matches_subdomain(probe.host)
    }

    fn matches_exact(&self, probe: &HostProbe<'_>) -> bool {
        !self.exact.is_empty()
            && self
                .exact
                .get(&probe.hash)
                .is_some_and(|hosts| hosts.contains(probe.host))
    }

    fn matches_subdomain(&self, host: &Host) -> bool {
        let Host::Name(name) = host else {
            return false;
        };
        // The suffix starts with '.', so `example.com` never matches `.example.com`
        // and `badexample.com` never matches either.
        self.subdomains
            .iter()
            .any(|suffix| name.len() > suffix.len() && name.ends_with(&**suffix))
    }
}

// === impl HostProbe ===

impl<'a> HostProbe<'a> {
    pub(crate) fn new(host: &'a Host) -> HostProbe<'a> {
        HostProbe {
            host,
            hash: host_hash(host),
        }
    }
}

// === impl PrehashedHasher ===

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Only `u64` keys are hashed with this; mix any other bytes in anyway.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Host {
        Host::parse(s).expect("test host")
    }

    #[test]
    fn parses() {
        let cases: &[(&str, Result<HostPattern, HostPatternError>)] = &[
            ("*", Ok(HostPattern::Any)),
            (
                "*.Example.COM.",
                Ok(HostPattern::Subdomains(".example.com".into())),
            ),
            ("*.com", Ok(HostPattern::Subdomains(".com".into()))),
            ("Example.org", Ok(HostPattern::Exact(host("example.org")))),
            ("127.1", Ok(HostPattern::Exact(host("127.0.0.1")))),
            ("[::1]", Ok(HostPattern::Exact(host("::1")))),
            ("::1", Ok(HostPattern::Exact(host("::1")))),
            ("*.", Err(HostPatternError::EmptyWildcardSuffix)),
            ("a*.b", Err(HostPatternError::MisplacedWildcard)),
            ("foo.*", Err(HostPatternError::MisplacedWildcard)),
            ("*.*.com", Err(HostPatternError::MisplacedWildcard)),
            ("*foo.com", Err(HostPatternError::MisplacedWildcard)),
            ("**", Err(HostPatternError::MisplacedWildcard)),
            ("*.1.2.3.4", Err(HostPatternError::WildcardIp)),
            ("*.0x7f.1", Err(HostPatternError::WildcardIp)),
            (
                "*.a..b",
                Err(HostPatternError::Host(crate::HostError::EmptyLabel)),
            ),
            ("", Err(HostPatternError::Host(crate::HostError::Empty))),
            (
                "1.2.3.999",
                Err(HostPatternError::Host(crate::HostError::InvalidIpv4)),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&HostPattern::parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn matches() {
        let patterns = |texts: &[&str]| {
            HostPatterns::new(
                texts
                    .iter()
                    .map(|text| HostPattern::parse(text).expect(text))
                    .collect(),
            )
        };
        // (case, patterns, host, want)
        let cases: &[(&str, &[&str], &str, bool)] = &[
            ("exact name", &["example.org"], "EXAMPLE.org.", true),
            (
                "exact is not a suffix",
                &["example.org"],
                "www.example.org",
                false,
            ),
            ("exact ip", &["127.0.0.1"], "0x7f000001", true),
            ("exact v6", &["[::1]"], "::1", true),
            (
                "exact ip does not match mapped form",
                &["127.0.0.1"],
                "[::ffff:127.0.0.1]",
                false,
            ),
            (
                "wildcard, one level",
                &["*.example.com"],
                "a.example.com",
                true,
            ),
            (
                "wildcard, any depth",
                &["*.example.com"],
                "a.b.c.example.com",
                true,
            ),
            (
                "wildcard, not the bare suffix",
                &["*.example.com"],
                "example.com",
                false,
            ),
            (
                "wildcard, not a lookalike",
                &["*.example.com"],
                "badexample.com",
                false,
            ),
            (
                "wildcard, not an ip",
                &["*.example.com"],
                "127.0.0.1",
                false,
            ),
            ("star matches names", &["*"], "anything.example", true),
            ("star matches ip literals", &["*"], "[::1]", true),
            (
                "star wins over others",
                &["example.org", "*"],
                "other.example",
                true,
            ),
            (
                "any entry may match",
                &["a.example", "*.b.example", "c.example"],
                "x.b.example",
                true,
            ),
            (
                "none match",
                &["a.example", "*.b.example"],
                "c.example",
                false,
            ),
        ];
        for &(case, texts, input, want) in cases {
            let host = host(input);
            assert_eq!(
                patterns(texts).matches(&HostProbe::new(&host)),
                want,
                "{case}"
            );
        }
        assert!(HostPatterns::any().matches(&HostProbe::new(&host("x"))));
    }

    #[test]
    fn duplicate_exact_hosts_are_stored_once() {
        let patterns = HostPatterns::new(vec![
            HostPattern::Exact(host("a.example")),
            HostPattern::Exact(host("A.example.")),
        ]);
        assert_eq!(
            patterns
                .exact
                .values()
                .map(|hosts| hosts.len())
                .sum::<usize>(),
            1
        );
    }
}

//! [`Rule`]: one compiled `[[rule]]`, its matchers ready to run.

use std::net::IpAddr;
use std::sync::Arc;

use crate::cidr::CidrSet;
use crate::host_pattern::{HostPatterns, HostProbe};
use crate::identity::{Identities, Who};
use crate::port::PortRanges;
use crate::{Protocol, Verdict};

/// A compiled rule. An omitted `protocols`, `hosts` or `ports` key compiles to a
/// matcher that matches everything; `cidrs` stays optional because its absence also
/// means "no non-public address is named".
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) action: Verdict,
    pub(crate) protocols: ProtocolSet,
    pub(crate) hosts: HostPatterns,
    pub(crate) ports: PortRanges,
    pub(crate) cidrs: Option<CidrSet>,
    /// The client's source address must be inside (`clients`), when given.
    pub(crate) clients: Option<CidrSet>,
    /// The client's identity must match (`identities`), when given.
    pub(crate) identities: Option<IdentityPatterns>,
}

/// A rule's `identities` (and the patterns of its `groups`): exact names as
/// sorted interned ids, and prefixes (written with a trailing `*`).
#[derive(Clone, Debug, Default)]
pub(crate) struct IdentityPatterns {
    exact: Box<[u32]>,
    prefixes: Box<[Box<str>]>,
}

/// A set of protocols as a bit mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProtocolSet(u8);

// === impl Rule ===

impl Rule {
    /// Whether protocols, hosts and ports match: everything but the addresses.
    pub(crate) fn matches_target(
        &self,
        protocol: Protocol,
        host: &HostProbe<'_>,
        port: u16,
    ) -> bool {
        self.protocols.contains(protocol) && self.ports.contains(port) && self.hosts.matches(host)
    }

    /// Whether protocols and ports match (the index has already matched the host).
    pub(crate) fn matches_protocol_and_port(&self, protocol: Protocol, port: u16) -> bool {
        self.protocols.contains(protocol) && self.ports.contains(port)
    }

    /// Whether who asks matches: `clients`, if given, contains the client's
    /// address, and `identities`, if given, the client's identity (an unknown
    /// address or an anonymous client matches no rule that names them).
    pub(crate) fn matches_who(&self, client: Option<IpAddr>, who: Who<'_>) -> bool {
        let client = match (&self.clients, client) {
            (None, _) => true,
            (Some(clients), Some(ip)) => clients.contains(ip),
            (Some(_), None) => false,
        };
        client
            && match &self.identities {
                None => true,
                Some(patterns) => patterns.matches(who),
            }
    }

    /// Whether `cidrs`, if given, contains every address. With `cidrs` given and no
    /// addresses, no.
    pub(crate) fn contains_all(&self, addrs: &[IpAddr]) -> bool {
        match &self.cidrs {
            None => true,
            Some(cidrs) => !addrs.is_empty() && addrs.iter().all(|&addr| cidrs.contains(addr)),
        }
    }
}

// === impl IdentityPatterns ===

impl IdentityPatterns {
    /// Compiles `patterns`, interning each exact name in `identities`.
    pub(crate) fn new<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
        identities: &mut Identities,
    ) -> IdentityPatterns {
        let mut exact = Vec::new();
        let mut prefixes: Vec<Box<str>> = Vec::new();
        for p in patterns {
            match p.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix.into()),
                None => exact.push(identities.intern(p)),
            }
        }
        exact.sort_unstable();
        exact.dedup();
        prefixes.sort_unstable();
        prefixes.dedup();
        IdentityPatterns {
            exact: exact.into_boxed_slice(),
            prefixes: prefixes.into_boxed_slice(),
        }
    }

    /// Whether `who` is one of the exact names or starts with a prefix.
    /// Anonymous matches nothing.
    pub(crate) fn matches(&self, who: Who<'_>) -> bool {
        match who {
            Who::Anonymous => false,
            Who::Named { identity, id } => {
                id.is_some_and(|id| self.exact.binary_search(&id).is_ok())
                    || self.prefixes.iter().any(|p| identity.starts_with(&**p))
            }
        }
    }

    /// The interned ids of the exact names, ascending.
    pub(crate) fn exact_ids(&self) -> &[u32] {
        &self.exact
    }

    /// Whether any pattern is a prefix (`...*`).
    pub(crate) fn has_prefixes(&self) -> bool {
        !self.prefixes.is_empty()
    }
}

// === impl ProtocolSet ===

impl ProtocolSet {
    pub(crate) const ALL: ProtocolSet = ProtocolSet(0b1111);

    pub(crate) fn new(protocols: &[Protocol]) -> ProtocolSet {
        ProtocolSet(protocols.iter().fold(0, |bits, &p| bits | Self::bit(p)))
    }

    pub(crate) fn contains(self, protocol: Protocol) -> bool {
        self.0 & Self::bit(protocol) != 0
    }

    const fn bit(protocol: Protocol) -> u8 {
        match protocol {
            Protocol::Connect => 1,
            Protocol::ConnectUdp => 1 << 1,
            Protocol::Http => 1 << 2,
            Protocol::Reverse => 1 << 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_set() {
        let all = ProtocolSet::new(&Protocol::ALL);
        assert_eq!(all, ProtocolSet::ALL);
        for protocol in Protocol::ALL {
            assert!(all.contains(protocol), "{protocol}");
            let only = ProtocolSet::new(&[protocol]);
            for other in Protocol::ALL {
                assert_eq!(
                    only.contains(other),
                    other == protocol,
                    "{protocol} vs {other}"
                );
            }
        }
        assert!(!ProtocolSet::new(&[]).contains(Protocol::Connect));
    }
}

//! [`CidrSplit`]: one list of candidate rules, split again by the networks
//! they name, and [`AddrProbe`], what a decision knows of the addresses.
//!
//! Thousands of rules may share a host key and an identity and differ only by
//! `cidrs` (an egress allow-list, one rule per internal subnet) or by
//! `clients`. So each such list is filed three ways:
//!
//! * `plain`: rules with neither `cidrs` nor `clients`, always candidates;
//! * `dest`: rules with `cidrs`, in a [`PrefixTrie`] by those networks. A
//!   rule with `cidrs` matches only if every address is inside them, so the
//!   first address is a key: the candidates are the rules naming a network
//!   that contains it. With no addresses none of them can match. Before DNS
//!   (precheck: addresses unknown) every one of them is a candidate, in
//!   `dest_all`;
//! * `clients`: rules with `clients` but no `cidrs`, in a [`PrefixTrie`] by
//!   those networks, keyed by the client's address; with no client address
//!   none of them can match.
//!
//! Every list is ascending and every scan stops at the best position so far,
//! so the first match in config order wins, as in the linear walk; the full
//! match (every address, the client, ...) is still checked by the caller.

use std::net::IpAddr;

use crate::positions::{push_once, scan_list};
use crate::prefix_trie::PrefixTrie;
use crate::rule::Rule;

/// One list of candidate rules, by the networks they name.
#[derive(Clone, Debug, Default)]
pub(crate) struct CidrSplit {
    plain: Vec<u32>,
    /// `None` for the many lists whose rules name no network: they stay small.
    by_network: Option<Box<ByNetwork>>,
}

#[derive(Clone, Debug, Default)]
struct ByNetwork {
    dest: PrefixTrie,
    dest_all: Vec<u32>,
    clients: PrefixTrie,
}

/// The addresses of a decision, as far as picking candidates goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AddrProbe<'a> {
    pub(crate) dest: Dest<'a>,
    /// The client's address; `None`: no rule with `clients` matches.
    pub(crate) client: Option<IpAddr>,
}

/// The destination addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dest<'a> {
    /// Not looked up yet (precheck): any rule with `cidrs` may match.
    Unknown,
    /// These (possibly none: then no rule with `cidrs` matches).
    Known(&'a [IpAddr]),
}

// === impl CidrSplit ===

impl CidrSplit {
    /// Files `rule` at `position`; positions must come in ascending order.
    pub(crate) fn push(&mut self, position: u32, rule: &Rule) {
        match (&rule.cidrs, &rule.clients) {
            (Some(cidrs), _) => {
                let by_network = self.by_network.get_or_insert_with(Box::default);
                by_network.dest.insert(cidrs, position);
                push_once(&mut by_network.dest_all, position);
            }
            (None, Some(clients)) => self
                .by_network
                .get_or_insert_with(Box::default)
                .clients
                .insert(clients, position),
            (None, None) => push_once(&mut self.plain, position),
        }
    }

    /// Lowers `best` to the smallest position below it, among the rules
    /// `probe` may match, for which `matches` says yes.
    pub(crate) fn scan(
        &self,
        probe: AddrProbe<'_>,
        best: &mut u32,
        matches: &mut impl FnMut(u32) -> bool,
    ) {
        scan_list(&self.plain, best, matches);
        if let Some(by_network) = &self.by_network {
            by_network.scan(probe, best, matches);
        }
    }
}

// === impl ByNetwork ===

impl ByNetwork {
    fn scan(&self, probe: AddrProbe<'_>, best: &mut u32, matches: &mut impl FnMut(u32) -> bool) {
        match probe.dest {
            Dest::Unknown => scan_list(&self.dest_all, best, matches),
            Dest::Known(addrs) => {
                if let Some(&first) = addrs.first() {
                    self.dest
                        .containing(first, *best, |list| scan_list(list, best, matches));
                }
            }
        }
        if let Some(client) = probe.client {
            self.clients
                .containing(client, *best, |list| scan_list(list, best, matches));
        }
    }
}

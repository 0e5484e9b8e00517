//! [`Candidates`]: one host key's rules, split by what their `identities` ask.
//!
//! Thousands of rules may share a host key (`hosts = ["*"]`, or one name) and
//! differ only by identity. So each host key's rules are filed again:
//!
//! * `open`: rules with no identity constraint (anyone, anonymous too);
//! * `by_id`: for each interned exact identity, the rules that name it;
//! * `prefixed`: rules with a prefix pattern (`"spiffe://corp/*"`), few.
//!
//! A request scans `open`, then (if it has an identity) the `by_id` list of
//! its id and `prefixed`. Anonymous requests skip every rule that names
//! identities. A rule naming no identity at all (an empty group) can never
//! match and is filed nowhere. Every list is ascending, and a scan stops at
//! the best position found so far, so the smallest fully matching position
//! wins: first match in config order, as in the linear walk. Each list is
//! split again by the networks its rules name ([`CidrSplit`]).

use std::collections::HashMap;

use crate::cidr_index::{AddrProbe, CidrSplit};
use crate::identity::Who;
use crate::rule::Rule;

/// The rules filed under one host key, by identity.
#[derive(Clone, Debug, Default)]
pub(crate) struct Candidates {
    open: CidrSplit,
    by_id: HashMap<u32, CidrSplit>,
    prefixed: CidrSplit,
}

// === impl Candidates ===

impl Candidates {
    /// Files `rule` at `position`; positions must come in ascending order.
    pub(crate) fn push(&mut self, position: u32, rule: &Rule) {
        let Some(patterns) = &rule.identities else {
            self.open.push(position, rule);
            return;
        };
        for &id in patterns.exact_ids() {
            self.by_id.entry(id).or_default().push(position, rule);
        }
        if patterns.has_prefixes() {
            self.prefixed.push(position, rule);
        }
    }

    /// Lowers `best` to the smallest position below it, among the rules `who`
    /// and `addrs` may match, for which `matches` says yes.
    pub(crate) fn scan(
        &self,
        who: Who<'_>,
        addrs: AddrProbe<'_>,
        best: &mut u32,
        matches: &mut impl FnMut(u32) -> bool,
    ) {
        self.open.scan(addrs, best, matches);
        if let Who::Named { id, .. } = who {
            if let Some(split) = id.and_then(|id| self.by_id.get(&id)) {
                split.scan(addrs, best, matches);
            }
            self.prefixed.scan(addrs, best, matches);
        }
    }
}

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
//! wins: first match in config order, as in the linear walk.

use std::collections::HashMap;

use crate::identity::Who;
use crate::rule::Rule;

/// The rules filed under one host key, by identity.
#[derive(Clone, Debug, Default)]
pub(crate) struct Candidates {
    open: Vec<u32>,
    by_id: HashMap<u32, Vec<u32>>,
    prefixed: Vec<u32>,
}

// === impl Candidates ===

impl Candidates {
    /// Files `rule` at `position`; positions must come in ascending order.
    pub(crate) fn push(&mut self, position: u32, rule: &Rule) {
        let Some(patterns) = &rule.identities else {
            push_once(&mut self.open, position);
            return;
        };
        for &id in patterns.exact_ids() {
            push_once(self.by_id.entry(id).or_default(), position);
        }
        if patterns.has_prefixes() {
            push_once(&mut self.prefixed, position);
        }
    }

    /// Lowers `best` to the smallest position below it, among the rules `who`
    /// may match, for which `matches` says yes.
    pub(crate) fn scan(&self, who: Who<'_>, best: &mut u32, matches: &mut impl FnMut(u32) -> bool) {
        scan_list(&self.open, best, matches);
        if let Who::Named { id, .. } = who {
            if let Some(list) = id.and_then(|id| self.by_id.get(&id)) {
                scan_list(list, best, matches);
            }
            scan_list(&self.prefixed, best, matches);
        }
    }
}

/// The first position in `list` below `best` that `matches`, into `best`.
fn scan_list(list: &[u32], best: &mut u32, matches: &mut impl FnMut(u32) -> bool) {
    for &position in list {
        if position >= *best {
            break;
        }
        if matches(position) {
            *best = position;
            break;
        }
    }
}

/// Rules are filed in ascending order; a rule naming one key twice is filed once.
fn push_once(list: &mut Vec<u32>, position: u32) {
    if list.last() != Some(&position) {
        list.push(position);
    }
}

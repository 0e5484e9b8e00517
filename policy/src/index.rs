//! [`RuleIndex`]: which rules can match a host, found without walking them all.
//!
//! Every rule is filed under what its `hosts` can match: each exact host, each
//! wildcard suffix (`".example.com"` for `"*.example.com"`), or "any host"
//! (`"*"`, or no `hosts` key). Each list holds rule positions in ascending
//! order. For a request, the candidate lists are the host's exact list, the
//! list of every proper suffix of its name that starts at a label boundary,
//! and the any-host list; the first rule in config order that fully matches
//! is the smallest position that matches in any of them. Each list is scanned
//! only up to the best position found so far, so the answer is exactly the
//! linear scan's, at a cost that grows with the candidates, not the rules.

use std::collections::HashMap;

use crate::rule::Rule;
use crate::Host;

/// Rule positions by what their hosts match.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleIndex {
    exact: HashMap<Host, Vec<u32>>,
    /// Keyed by the suffix with its leading dot.
    suffix: HashMap<Box<str>, Vec<u32>>,
    any: Vec<u32>,
}

// === impl RuleIndex ===

impl RuleIndex {
    pub(crate) fn new(rules: &[Rule]) -> RuleIndex {
        let mut index = RuleIndex::default();
        for (position, rule) in rules.iter().enumerate() {
            // 2^32 rules would not fit in memory; the fallback only keeps this total.
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            if rule.hosts.is_any() {
                index.any.push(position);
                continue;
            }
            for host in rule.hosts.exact_hosts() {
                push_once(index.exact.entry(host.clone()).or_default(), position);
            }
            for suffix in rule.hosts.subdomain_suffixes() {
                push_once(index.suffix.entry(suffix.into()).or_default(), position);
            }
        }
        index
    }

    /// The smallest rule position whose host matcher matches `host` and for
    /// which `matches` (the rule's other matchers) says yes.
    pub(crate) fn first(&self, host: &Host, mut matches: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut best = u32::MAX;
        let mut scan = |list: &[u32]| {
            for &position in list {
                if position >= best {
                    break;
                }
                if matches(position) {
                    best = position;
                    break;
                }
            }
        };
        scan(&self.any);
        if let Some(list) = self.exact.get(host) {
            scan(list);
        }
        if let Host::Name(name) = host {
            if !self.suffix.is_empty() {
                // Every proper suffix that starts with a '.': for
                // "a.b.example.com", ".b.example.com", ".example.com", ".com".
                for (at, _) in name.match_indices('.') {
                    if let Some(list) = name.get(at..).and_then(|s| self.suffix.get(s)) {
                        scan(list);
                    }
                }
            }
        }
        (best != u32::MAX).then_some(best)
    }
}

/// Rules are indexed in ascending order; a rule naming one key twice is filed once.
fn push_once(list: &mut Vec<u32>, position: u32) {
    if list.last() != Some(&position) {
        list.push(position);
    }
}

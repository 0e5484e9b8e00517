//! [`RuleIndex`]: which rules can match a host and an identity, found without
//! walking them all.
//!
//! Every rule is filed under what its `hosts` can match: each exact host, each
//! wildcard suffix (`".example.com"` for `"*.example.com"`), or "any host"
//! (`"*"`, or no `hosts` key). Under each host key the rules are filed again
//! by identity ([`Candidates`]) and by the networks their `cidrs` and
//! `clients` name ([`crate::cidr_index::CidrSplit`]), each list holding rule
//! positions in ascending order. For a request, the candidate lists are the
//! host's exact key, every proper suffix of its name that starts at a label
//! boundary, and the any-host key, each narrowed to the request's identity,
//! first address and client address; the first rule in config
//! order that fully matches is the smallest position that matches in any of
//! them. Each list is scanned only up to the best position found so far, so
//! the answer is exactly the linear scan's, at a cost that grows with the
//! candidates, not the rules.

use std::collections::HashMap;

use crate::cidr_index::AddrProbe;
use crate::identity::Who;
use crate::identity_index::Candidates;
use crate::rule::Rule;
use crate::Host;

/// Rule positions by what their hosts match, then by identity.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleIndex {
    exact: HashMap<Host, Candidates>,
    /// Keyed by the suffix with its leading dot.
    suffix: HashMap<Box<str>, Candidates>,
    any: Candidates,
}

// === impl RuleIndex ===

impl RuleIndex {
    pub(crate) fn new(rules: &[Rule]) -> RuleIndex {
        let mut index = RuleIndex::default();
        for (position, rule) in rules.iter().enumerate() {
            // 2^32 rules would not fit in memory; the fallback only keeps this total.
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            if rule.hosts.is_any() {
                index.any.push(position, rule);
                continue;
            }
            for host in rule.hosts.exact_hosts() {
                index
                    .exact
                    .entry(host.clone())
                    .or_default()
                    .push(position, rule);
            }
            for suffix in rule.hosts.subdomain_suffixes() {
                index
                    .suffix
                    .entry(suffix.into())
                    .or_default()
                    .push(position, rule);
            }
        }
        index
    }

    /// The smallest rule position whose host matcher matches `host`, whose
    /// identities `who` and networks `addrs` may match, and for which
    /// `matches` (the rule's other matchers, identities and networks
    /// included) says yes.
    pub(crate) fn first(
        &self,
        host: &Host,
        who: Who<'_>,
        addrs: AddrProbe<'_>,
        mut matches: impl FnMut(u32) -> bool,
    ) -> Option<u32> {
        let mut best = u32::MAX;
        self.any.scan(who, addrs, &mut best, &mut matches);
        if let Some(candidates) = self.exact.get(host) {
            candidates.scan(who, addrs, &mut best, &mut matches);
        }
        if let Host::Name(name) = host {
            if !self.suffix.is_empty() {
                // Every proper suffix that starts with a '.': for
                // "a.b.example.com", ".b.example.com", ".example.com", ".com".
                for (at, _) in name.match_indices('.') {
                    if let Some(candidates) = name.get(at..).and_then(|s| self.suffix.get(s)) {
                        candidates.scan(who, addrs, &mut best, &mut matches);
                    }
                }
            }
        }
        (best != u32::MAX).then_some(best)
    }
}

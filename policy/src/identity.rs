//! [`Identities`]: every exact identity the rules name, interned to a `u32`,
//! and [`Who`], a request's identity looked up once.
//!
//! Rules keep sorted id sets instead of strings, so matching an exact
//! identity is an integer search, and the index can file rules by id. Prefix
//! patterns (written with a trailing `*`) are not interned: they stay strings.

use std::collections::HashMap;

/// The exact identities named by any rule (directly or through a group),
/// each with its id.
#[derive(Clone, Debug, Default)]
pub(crate) struct Identities {
    ids: HashMap<Box<str>, u32>,
}

/// A request's identity as the rules see it: the string hashed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who<'a> {
    /// No identity: matches no rule that names identities.
    Anonymous,
    /// An identity; `id` is its interned id, `None` when no rule names it
    /// exactly (a prefix pattern may still match it).
    Named { identity: &'a str, id: Option<u32> },
}

// === impl Identities ===

impl Identities {
    /// The id of `identity`, given a new one if it has none yet.
    pub(crate) fn intern(&mut self, identity: &str) -> u32 {
        if let Some(&id) = self.ids.get(identity) {
            return id;
        }
        // 2^32 distinct identities would not fit in memory; saturate rather than wrap.
        let id = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.insert(identity.into(), id);
        id
    }

    /// Looks `identity` up once, for every rule of a decision.
    pub(crate) fn who<'a>(&self, identity: Option<&'a str>) -> Who<'a> {
        match identity {
            None => Who::Anonymous,
            Some(identity) => Who::Named {
                identity,
                id: self.ids.get(identity).copied(),
            },
        }
    }

    /// How many distinct exact identities the rules name.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_lookups_find_only_interned_names() {
        let mut ids = Identities::default();
        let alice = ids.intern("alice");
        let bob = ids.intern("bob");
        assert_ne!(alice, bob);
        assert_eq!(ids.intern("alice"), alice);
        assert_eq!(ids.len(), 2);
        assert_eq!(
            ids.who(Some("bob")),
            Who::Named {
                identity: "bob",
                id: Some(bob)
            }
        );
        assert_eq!(
            ids.who(Some("carol")),
            Who::Named {
                identity: "carol",
                id: None
            }
        );
        assert_eq!(ids.who(None), Who::Anonymous);
    }
}

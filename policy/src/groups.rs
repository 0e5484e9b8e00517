//! [`Groups`]: the `[groups]` of a policy file, kept after compilation so
//! that other settings keyed by group (per-group limits) ask the same
//! membership the rules use: an exact identity, or a prefix written with a
//! trailing `*`.

use std::collections::{BTreeMap, HashSet};

/// Every group's members.
#[derive(Clone, Debug, Default)]
pub(crate) struct Groups {
    groups: BTreeMap<Box<str>, Members>,
}

#[derive(Clone, Debug, Default)]
struct Members {
    exact: HashSet<Box<str>>,
    prefixes: Box<[Box<str>]>,
}

// === impl Groups ===

impl Groups {
    pub(crate) fn new(config: &BTreeMap<String, Vec<String>>) -> Groups {
        let groups = config
            .iter()
            .map(|(name, patterns)| {
                let mut members = Members::default();
                let mut prefixes = Vec::new();
                for p in patterns {
                    match p.strip_suffix('*') {
                        Some(prefix) => prefixes.push(prefix.into()),
                        None => {
                            members.exact.insert(p.as_str().into());
                        }
                    }
                }
                members.prefixes = prefixes.into_boxed_slice();
                (name.as_str().into(), members)
            })
            .collect();
        Groups { groups }
    }

    /// Whether `identity` is in `group`; `None` when there is no such group.
    pub(crate) fn contains(&self, group: &str, identity: &str) -> Option<bool> {
        let m = self.groups.get(group)?;
        Some(m.exact.contains(identity) || m.prefixes.iter().any(|p| identity.starts_with(&**p)))
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(|k| &**k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix_members() {
        let mut cfg = BTreeMap::new();
        cfg.insert(
            "payments".to_string(),
            vec!["spiffe://corp/payments/*".to_string(), "alice".to_string()],
        );
        cfg.insert("empty".to_string(), vec![]);
        let g = Groups::new(&cfg);
        assert_eq!(g.contains("payments", "alice"), Some(true));
        assert_eq!(
            g.contains("payments", "spiffe://corp/payments/api"),
            Some(true)
        );
        assert_eq!(g.contains("payments", "spiffe://corp/web"), Some(false));
        assert_eq!(g.contains("payments", "alicia"), Some(false));
        assert_eq!(g.contains("empty", "alice"), Some(false));
        assert_eq!(g.contains("nope", "alice"), None);
        assert_eq!(g.names().collect::<Vec<_>>(), ["empty", "payments"]);
    }
}

//! Per-client limits (`[limits] per_identity`, `[limits.per_group.NAME]`):
//! what one client may hold and open, and how a group raises it.
//!
//! ```toml
//! [limits]
//! per_identity = { tunnels = 256, new_per_s = 50, udp_flows = 64 }
//!
//! [limits.per_group.payments]     # a group of the policy's [groups]
//! tunnels = 1000                  # unset keys keep per_identity's value
//! ```
//!
//! A client is its verified identity (certificate or Basic user), or its
//! address when anonymous. An identity in several groups with overrides gets
//! the largest value of each limit (a group only ever grants more).

use std::collections::BTreeMap;
use std::sync::Arc;

use bauta_policy::Policy;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};

/// One client's limits; `None`: unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityLimits {
    /// Concurrent tunnels (CONNECT and CONNECT-UDP together).
    pub tunnels: Option<u32>,
    /// New tunnels per second; bursts of up to one second's worth.
    pub new_per_s: Option<u32>,
    /// Concurrent CONNECT-UDP flows.
    pub udp_flows: Option<u32>,
}

/// The compiled `per_identity` and `per_group`.
#[derive(Clone, Debug, Default)]
pub struct ClientLimits {
    pub per_identity: IdentityLimits,
    /// Group name → the keys it sets.
    pub per_group: Vec<(Arc<str>, IdentityLimits)>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IdentityLimitsSection {
    tunnels: Option<Spanned<u32>>,
    new_per_s: Option<Spanned<u32>>,
    udp_flows: Option<Spanned<u32>>,
}

// === impl IdentityLimits ===

impl IdentityLimits {
    pub fn is_unlimited(&self) -> bool {
        *self == IdentityLimits::default()
    }

    /// `self` with each key `more` sets raised to at least that value (an
    /// unlimited key stays unlimited).
    fn raised_by(self, more: &IdentityLimits) -> IdentityLimits {
        let max = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (None, _) => None,
            (Some(x), None) => Some(x),
            (Some(x), Some(y)) => Some(x.max(y)),
        };
        IdentityLimits {
            tunnels: max(self.tunnels, more.tunnels),
            new_per_s: max(self.new_per_s, more.new_per_s),
            udp_flows: max(self.udp_flows, more.udp_flows),
        }
    }
}

// === impl ClientLimits ===

impl ClientLimits {
    /// The limits of a client with `identity` (`None`: anonymous, only
    /// `per_identity` applies).
    pub fn for_client(&self, policy: &Policy, identity: Option<&str>) -> IdentityLimits {
        let Some(identity) = identity else {
            return self.per_identity;
        };
        self.per_group
            .iter()
            .filter(|(group, _)| policy.in_group(group, identity) == Some(true))
            .fold(self.per_identity, |acc, (_, more)| acc.raised_by(more))
    }
}

pub(super) fn compile_client_limits(
    per_identity: Option<&Spanned<IdentityLimitsSection>>,
    per_group: &BTreeMap<String, Spanned<IdentityLimitsSection>>,
    policy: &Policy,
    src: &Source<'_>,
) -> Result<ClientLimits, ConfigError> {
    let per_identity = match per_identity {
        Some(s) => compile_one(s.get_ref(), "limits.per_identity", src)?,
        None => IdentityLimits::default(),
    };
    let mut groups = Vec::with_capacity(per_group.len());
    for (name, section) in per_group {
        let key = format!("limits.per_group.{name}");
        if policy.in_group(name, "").is_none() {
            let known: Vec<&str> = policy.group_names().collect();
            return Err(src.err(
                section.span(),
                &key,
                format!("the policy defines no group {name:?} (its groups: {known:?})"),
            ));
        }
        groups.push((
            Arc::from(name.as_str()),
            compile_one(section.get_ref(), &key, src)?,
        ));
    }
    Ok(ClientLimits {
        per_identity,
        per_group: groups,
    })
}

fn compile_one(
    s: &IdentityLimitsSection,
    key: &str,
    src: &Source<'_>,
) -> Result<IdentityLimits, ConfigError> {
    let positive = |v: &Option<Spanned<u32>>, name: &str| -> Result<Option<u32>, ConfigError> {
        match v {
            Some(v) if *v.get_ref() == 0 => Err(src.err(
                v.span(),
                &format!("{key}.{name}"),
                "must be greater than 0 (to refuse a client, use the policy)",
            )),
            Some(v) => Ok(Some(*v.get_ref())),
            None => Ok(None),
        }
    };
    Ok(IdentityLimits {
        tunnels: positive(&s.tunnels, "tunnels")?,
        new_per_s: positive(&s.new_per_s, "new_per_s")?,
        udp_flows: positive(&s.udp_flows, "udp_flows")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauta_policy::{PolicyConfig, Verdict};

    fn policy() -> Policy {
        let mut groups = BTreeMap::new();
        groups.insert(
            "payments".to_string(),
            vec!["spiffe://corp/payments/*".to_string()],
        );
        groups.insert("batch".to_string(), vec!["alice".to_string()]);
        Policy::compile(&PolicyConfig {
            default: Verdict::Allow,
            rules: vec![],
            groups,
        })
        .expect("policy")
    }

    fn lim(t: Option<u32>, n: Option<u32>, u: Option<u32>) -> IdentityLimits {
        IdentityLimits {
            tunnels: t,
            new_per_s: n,
            udp_flows: u,
        }
    }

    #[test]
    fn groups_raise_what_they_set() {
        let p = policy();
        let c = ClientLimits {
            per_identity: lim(Some(10), Some(5), None),
            per_group: vec![
                ("payments".into(), lim(Some(100), None, Some(50))),
                ("batch".into(), lim(Some(20), Some(50), None)),
            ],
        };
        assert_eq!(c.for_client(&p, None), lim(Some(10), Some(5), None));
        assert_eq!(c.for_client(&p, Some("bob")), lim(Some(10), Some(5), None));
        // udp_flows stays unlimited: per_identity leaves it so.
        assert_eq!(
            c.for_client(&p, Some("spiffe://corp/payments/api")),
            lim(Some(100), Some(5), None)
        );
        assert_eq!(
            c.for_client(&p, Some("alice")),
            lim(Some(20), Some(50), None)
        );
    }
}

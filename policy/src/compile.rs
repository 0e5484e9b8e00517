//! [`Policy::compile`]: from [`PolicyConfig`] to matchers, or an error naming the rule,
//! the key and the value at fault.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cidr::{Cidr, CidrError, CidrSet};
use crate::config::{PolicyConfig, PortSpec, RuleConfig};
use crate::host_pattern::{HostPattern, HostPatternError, HostPatterns};
use crate::identity::Identities;
use crate::index::RuleIndex;
use crate::port::{PortError, PortRange, PortRanges};
use crate::rule::{IdentityPatterns, ProtocolSet, Rule};
use crate::Policy;

/// Rule names that label decisions no rule made: `default` (no rule
/// matched) and `ssrf_guard` (the address guard refused what was allowed).
pub const RESERVED_RULE_NAMES: [&str; 2] = ["default", "ssrf_guard"];

/// Why a policy does not compile. `index` is the rule's 1-based position among the
/// `[[rule]]` tables; `name` is its name as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("rule #{index} (\"\"): name: must not be empty")]
    EmptyName { index: usize },
    #[error("rule #{index} ({name:?}): name: {name:?} is reserved (a metric label for decisions no rule made)")]
    ReservedName { index: usize, name: String },
    #[error("rule #{index} ({name:?}): name: {name:?} is already used by rule #{first}")]
    DuplicateName {
        index: usize,
        name: String,
        first: usize,
    },
    #[error("rule #{index} ({name:?}): {key}: empty list matches nothing; omit the key")]
    EmptyList {
        index: usize,
        name: String,
        key: &'static str,
    },
    #[error("rule #{index} ({name:?}): hosts: {value:?}: {problem}")]
    Host {
        index: usize,
        name: String,
        value: String,
        problem: HostPatternError,
    },
    #[error("rule #{index} ({name:?}): ports: {value}: {problem}")]
    Port {
        index: usize,
        name: String,
        value: PortSpec,
        problem: PortError,
    },
    #[error("rule #{index} ({name:?}): cidrs: {value:?}: {problem}")]
    Cidr {
        index: usize,
        name: String,
        value: String,
        problem: CidrError,
    },
    #[error("rule #{index} ({name:?}): groups: {group:?} is not defined in [groups]")]
    UnknownGroup {
        index: usize,
        name: String,
        group: String,
    },
    #[error("rule #{index} ({name:?}): identities: {value:?}: must be non-empty, with '*' only as a trailing prefix wildcard")]
    Identity {
        index: usize,
        name: String,
        value: String,
    },
    #[error("rule #{index} ({name:?}): clients: {value:?}: {problem}")]
    Clients {
        index: usize,
        name: String,
        value: String,
        problem: CidrError,
    },
}

// === impl Policy ===

impl Policy {
    /// Checks and compiles a policy. The first problem found is returned.
    pub fn compile(cfg: &PolicyConfig) -> Result<Policy, CompileError> {
        let mut first_use: HashMap<&str, usize> = HashMap::with_capacity(cfg.rules.len());
        // Every exact identity any rule names, directly or through a group.
        let mut identities = Identities::default();
        let rules = cfg
            .rules
            .iter()
            .zip(1..)
            .map(|(rule, index)| {
                let numbered = NumberedRule {
                    index,
                    rule,
                    groups: &cfg.groups,
                };
                if rule.name.is_empty() {
                    return Err(CompileError::EmptyName { index });
                }
                if RESERVED_RULE_NAMES.contains(&rule.name.as_str()) {
                    return Err(CompileError::ReservedName {
                        index,
                        name: rule.name.clone(),
                    });
                }
                if let Some(&first) = first_use.get(rule.name.as_str()) {
                    return Err(CompileError::DuplicateName {
                        index,
                        name: rule.name.clone(),
                        first,
                    });
                }
                first_use.insert(&rule.name, index);
                numbered.compile(&mut identities)
            })
            .collect::<Result<_, _>>()?;
        let rules: Box<[Rule]> = rules;
        Ok(Policy {
            default: cfg.default,
            index: RuleIndex::new(&rules),
            rules,
            identities,
            groups: crate::groups::Groups::new(&cfg.groups),
        })
    }
}

/// A rule being compiled, with its position for error messages.
struct NumberedRule<'a> {
    index: usize,
    rule: &'a RuleConfig,
    groups: &'a std::collections::BTreeMap<String, Vec<String>>,
}

// === impl NumberedRule ===

impl NumberedRule<'_> {
    fn compile(&self, identities: &mut Identities) -> Result<Rule, CompileError> {
        let rule = self.rule;
        let protocols = match &rule.protocols {
            None => ProtocolSet::ALL,
            Some(list) => ProtocolSet::new(self.non_empty("protocols", list)?),
        };
        let hosts = match &rule.hosts {
            None => HostPatterns::any(),
            Some(list) => HostPatterns::new(
                self.non_empty("hosts", list)?
                    .iter()
                    .map(|value| {
                        HostPattern::parse(value).map_err(|problem| CompileError::Host {
                            index: self.index,
                            name: rule.name.clone(),
                            value: value.clone(),
                            problem,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let ports = match &rule.ports {
            None => PortRanges::all(),
            Some(list) => PortRanges::new(
                self.non_empty("ports", list)?
                    .iter()
                    .map(|value| {
                        PortRange::parse(value).map_err(|problem| CompileError::Port {
                            index: self.index,
                            name: rule.name.clone(),
                            value: value.clone(),
                            problem,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let cidrs = match &rule.cidrs {
            None => None,
            Some(list) => Some(CidrSet::new(
                self.non_empty("cidrs", list)?
                    .iter()
                    .map(|value| {
                        Cidr::parse(value).map_err(|problem| CompileError::Cidr {
                            index: self.index,
                            name: rule.name.clone(),
                            value: value.clone(),
                            problem,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            )),
        };
        let clients = match &rule.clients {
            None => None,
            Some(list) => Some(CidrSet::new(
                self.non_empty("clients", list)?
                    .iter()
                    .map(|value| {
                        Cidr::parse(value).map_err(|problem| CompileError::Clients {
                            index: self.index,
                            name: rule.name.clone(),
                            value: value.clone(),
                            problem,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            )),
        };
        // `identities` and the patterns of the named `groups`: either may match.
        let mut patterns: Vec<&str> = Vec::new();
        if let Some(list) = &rule.identities {
            patterns.extend(
                self.non_empty("identities", list)?
                    .iter()
                    .map(String::as_str),
            );
        }
        if let Some(names) = &rule.groups {
            for group in self.non_empty("groups", names)? {
                let members = self
                    .groups
                    .get(group)
                    .ok_or_else(|| CompileError::UnknownGroup {
                        index: self.index,
                        name: rule.name.clone(),
                        group: group.clone(),
                    })?;
                patterns.extend(members.iter().map(String::as_str));
            }
        }
        if let Some(bad) = patterns
            .iter()
            .find(|p| p.is_empty() || p.trim_end_matches('*').contains('*'))
        {
            return Err(CompileError::Identity {
                index: self.index,
                name: rule.name.clone(),
                value: (*bad).to_string(),
            });
        }
        let identities = (rule.identities.is_some() || rule.groups.is_some())
            .then(|| IdentityPatterns::new(patterns, identities));
        Ok(Rule {
            name: Arc::from(rule.name.as_str()),
            action: rule.action,
            protocols,
            hosts,
            ports,
            cidrs,
            clients,
            identities,
        })
    }

    fn non_empty<'l, T>(&self, key: &'static str, list: &'l [T]) -> Result<&'l [T], CompileError> {
        if list.is_empty() {
            return Err(CompileError::EmptyList {
                index: self.index,
                name: self.rule.name.clone(),
                key,
            });
        }
        Ok(list)
    }
}

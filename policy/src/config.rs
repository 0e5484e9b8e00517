//! Serde types mirroring the policy TOML. Nothing here is validated; [`Policy::compile`]
//! turns a [`PolicyConfig`] into matchers or says which key of which rule is wrong.
//!
//! ```toml
//! default = "deny"
//!
//! [[rule]]
//! name = "lab"
//! action = "allow"
//! protocols = ["connect", "http"]        # omit: every protocol
//! hosts = ["*.example.com", "example.org"] # omit: every host; "*" also
//! ports = [443, "8000-9000"]             # omit: every port
//! cidrs = ["127.0.0.0/8", "::1/128"]     # omit: no address condition, public only
//! clients = ["10.0.0.0/8"]               # omit: any client source address
//! identities = ["spiffe://corp/payments/*", "alice"]   # omit: anyone, anonymous too
//! groups = ["payments"]                  # names of [groups] (below); either may match
//!
//! [groups]
//! payments = ["spiffe://corp/payments/*", "alice"]
//! ```
//!
//! `action` (and `default`) is `allow`, `deny`, or `report`: allowed, but logged
//! and counted as a would-be denial.
//!
//! [`Policy::compile`]: crate::Policy::compile

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Protocol, Verdict};

/// The whole policy: a default verdict and rules in order (`[[rule]]` tables).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Verdict when no rule matches. Omitted: `deny`.
    #[serde(default = "default_verdict")]
    pub default: Verdict,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// Named sets of identity patterns (`[groups] payments = ["spiffe://corp/payments/*", "alice"]`),
    /// referenced by rules' `groups`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<String>>,
}

/// One `[[rule]]` table. Each matcher that is given must match; an omitted matcher
/// matches everything. An empty list is a compile error.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique, non-empty; appears in decisions, the access log and metrics.
    pub name: String,
    pub action: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<Protocol>>,
    /// `"example.org"`, `"*.example.com"` (subdomains only), `"*"`, or an IP literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortSpec>>,
    /// `"10.0.0.0/8"`, `"::1/128"`, or a bare address. Every resolved address must be
    /// inside; naming a non-public range here is the only way to allow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidrs: Option<Vec<String>>,
    /// The client's source address must be inside one of these (`"10.0.0.0/8"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<String>>,
    /// The client's verified identity must be one of these: exact
    /// (`"spiffe://corp/payments/api"`, `"alice"`), or a prefix ending in `*`
    /// (`"spiffe://corp/payments/*"`). An anonymous client matches none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<Vec<String>>,
    /// Names of `[groups]`: the identity must match one of their patterns
    /// (together with `identities`, either may match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

/// A port (`443`) or an inclusive range (`"8000-9000"`; `"443"` also accepted).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// Signed so that a negative number reaches `compile` and gets a proper message.
    Single(i64),
    Range(String),
}

fn default_verdict() -> Verdict {
    Verdict::Deny
}

// === impl PolicyConfig ===

impl Default for PolicyConfig {
    /// Deny everything.
    fn default() -> Self {
        PolicyConfig {
            default: default_verdict(),
            rules: Vec::new(),
            groups: Default::default(),
        }
    }
}

// === impl PortSpec ===

impl fmt::Display for PortSpec {
    /// As written in TOML: `443` or `"8000-9000"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Single(port) => write!(f, "{port}"),
            PortSpec::Range(range) => write!(f, "{range:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let cfg: PolicyConfig = toml::from_str(
            r#"
            default = "deny"
            [[rule]]
            name = "lab"
            action = "allow"
            protocols = ["connect", "http"]
            hosts = ["*.example.com", "example.org", "*"]
            ports = [443, "8000-9000"]
            cidrs = ["127.0.0.0/8", "::1/128"]
            "#,
        )
        .expect("example parses");
        assert_eq!(
            cfg,
            PolicyConfig {
                default: Verdict::Deny,
                rules: vec![RuleConfig {
                    name: "lab".into(),
                    action: Verdict::Allow,
                    protocols: Some(vec![Protocol::Connect, Protocol::Http]),
                    hosts: Some(vec![
                        "*.example.com".into(),
                        "example.org".into(),
                        "*".into()
                    ]),
                    ports: Some(vec![
                        PortSpec::Single(443),
                        PortSpec::Range("8000-9000".into())
                    ]),
                    cidrs: Some(vec!["127.0.0.0/8".into(), "::1/128".into()]),
                    clients: None,
                    identities: None,
                    groups: None,
                }],
                groups: Default::default(),
            }
        );
    }

    #[test]
    fn omitted_keys() {
        let cfg: PolicyConfig = toml::from_str("").expect("empty parses");
        assert_eq!(cfg, PolicyConfig::default());
        assert_eq!(cfg.default, Verdict::Deny);

        let cfg: PolicyConfig = toml::from_str(
            r#"
            [[rule]]
            name = "r"
            action = "deny"
            "#,
        )
        .expect("minimal rule parses");
        let rule = &cfg.rules[0];
        assert_eq!(
            (&rule.protocols, &rule.hosts, &rule.ports, &rule.cidrs),
            (&None, &None, &None, &None)
        );
    }

    #[test]
    fn all_protocol_spellings() {
        let cfg: PolicyConfig = toml::from_str(
            r#"
            [[rule]]
            name = "r"
            action = "allow"
            protocols = ["connect", "connect-udp", "http", "reverse"]
            "#,
        )
        .expect("parses");
        assert_eq!(cfg.rules[0].protocols.as_deref(), Some(&Protocol::ALL[..]));
        for protocol in Protocol::ALL {
            let text = format!("{:?}", protocol.as_str());
            let back: Protocol = protocol_from_toml(&text);
            assert_eq!(back, protocol);
        }
    }

    /// Parses a quoted TOML string as a `Protocol` by wrapping it in a table.
    fn protocol_from_toml(quoted: &str) -> Protocol {
        #[derive(Deserialize)]
        struct Wrap {
            p: Protocol,
        }
        toml::from_str::<Wrap>(&format!("p = {quoted}"))
            .expect("parses")
            .p
    }

    #[test]
    fn rejects_malformed_toml() {
        struct Case {
            name: &'static str,
            toml: &'static str,
            message: &'static str,
        }
        let cases = [
            Case {
                name: "unknown top-level key",
                toml: "defualt = \"allow\"",
                message: "unknown field `defualt`",
            },
            Case {
                name: "unknown rule key",
                toml: "[[rule]]\nname = \"r\"\naction = \"allow\"\nhost = [\"a\"]",
                message: "unknown field `host`",
            },
            Case {
                name: "unknown verdict",
                toml: "default = \"permit\"",
                message: "unknown variant `permit`",
            },
            Case {
                name: "unknown protocol",
                toml: "[[rule]]\nname = \"r\"\naction = \"allow\"\nprotocols = [\"ftp\"]",
                message: "unknown variant `ftp`",
            },
            Case {
                name: "missing action",
                toml: "[[rule]]\nname = \"r\"",
                message: "missing field `action`",
            },
            Case {
                name: "missing name",
                toml: "[[rule]]\naction = \"allow\"",
                message: "missing field `name`",
            },
            Case {
                name: "port as float",
                toml: "[[rule]]\nname = \"r\"\naction = \"allow\"\nports = [4.5]",
                message: "did not match any variant",
            },
        ];
        for case in cases {
            let err = toml::from_str::<PolicyConfig>(case.toml)
                .expect_err(case.name)
                .to_string();
            assert!(
                err.contains(case.message),
                "{}: {err:?} lacks {:?}",
                case.name,
                case.message
            );
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let cfg = PolicyConfig {
            default: Verdict::Allow,
            rules: vec![
                RuleConfig {
                    name: "a".into(),
                    action: Verdict::Deny,
                    protocols: Some(vec![Protocol::ConnectUdp]),
                    hosts: None,
                    ports: Some(vec![PortSpec::Single(53), PortSpec::Range("1-2".into())]),
                    cidrs: Some(vec!["10.0.0.0/8".into()]),
                    clients: None,
                    identities: None,
                    groups: None,
                },
                RuleConfig {
                    name: "b".into(),
                    action: Verdict::Allow,
                    protocols: None,
                    hosts: Some(vec!["*".into()]),
                    ports: None,
                    cidrs: None,
                    clients: None,
                    identities: None,
                    groups: None,
                },
            ],
            groups: [("ops".to_string(), vec!["bob".to_string()])].into(),
        };
        let text = toml::to_string(&cfg).expect("serialises");
        let back: PolicyConfig = toml::from_str(&text).expect("parses back");
        assert_eq!(back, cfg);
    }

    #[test]
    fn port_spec_displays_as_written() {
        assert_eq!(PortSpec::Single(443).to_string(), "443");
        assert_eq!(
            PortSpec::Range("9000-8000".into()).to_string(),
            "\"9000-8000\""
        );
    }
}

//! Bauta's policy: who may reach what.
//!
//! Pure decision logic: no I/O, no async runtime, no global state. The proxy
//!
//! 1. deserialises a [`PolicyConfig`] from TOML and turns it into a [`Policy`] with
//!    [`Policy::compile`] (the same call `bauta check` makes);
//! 2. normalises each destination authority once with [`Host::parse`];
//! 3. asks [`Policy::precheck`] before DNS, so that a request denied whatever the
//!    addresses are costs no lookup;
//! 4. resolves, then asks [`Policy::evaluate`] with the resolved addresses and dials only
//!    addresses that passed (DNS-rebinding safe: the address checked is the address
//!    dialled).
//!
//! Every [`Decision`] carries the verdict, the rule that decided it and a [`Reason`] with
//! a fixed string, used by the access log and by the tests alike. Non-public addresses
//! (loopback, private, link-local, metadata, IPv4-mapped forms of those, ...; see
//! [`classify`]) are reachable only through a rule whose `cidrs` names them.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

mod addr;
mod cidr;
mod cidr_index;
mod compile;
pub mod config;
mod groups;
mod host;
mod host_pattern;
mod identity;
mod identity_index;
mod index;
mod ipv4;
mod port;
mod positions;
mod prefix_trie;
mod rule;

pub use addr::{classify, AddrClass};
pub use cidr::CidrError;
pub use compile::{CompileError, RESERVED_RULE_NAMES};
pub use config::{PolicyConfig, PortSpec, RuleConfig};
pub use host::{Host, HostError};
pub use host_pattern::HostPatternError;
pub use port::PortError;

use cidr_index::{AddrProbe, Dest};
use host_pattern::HostProbe;
use identity::Identities;
use index::RuleIndex;
use rule::Rule;

/// What happens to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
    /// Allowed, but logged and counted as a would-be denial: for rolling out
    /// a policy safely (Smokescreen's "report" mode).
    Report,
}

/// How the client asked to reach the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum Protocol {
    /// HTTP CONNECT: a TCP tunnel.
    #[serde(rename = "connect")]
    Connect,
    /// CONNECT-UDP (RFC 9298): a UDP tunnel.
    #[serde(rename = "connect-udp")]
    ConnectUdp,
    /// A forwarded plain HTTP request (absolute-form URI).
    #[serde(rename = "http")]
    Http,
    /// A request to a configured reverse-proxy origin.
    #[serde(rename = "reverse")]
    Reverse,
}

/// One request to decide on.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub protocol: Protocol,
    pub host: &'a Host,
    pub port: u16,
    /// Resolved addresses (or the literal). Empty = not resolved yet.
    pub addrs: &'a [IpAddr],
    /// The client's source address, when known; rules with `clients` match
    /// only a known address inside them.
    pub client: Option<IpAddr>,
    /// Who is asking (a verified identity); `None`: anonymous, which no rule
    /// with `identities` matches.
    pub identity: Option<&'a str>,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The matched rule's name; `None` when the default decided.
    pub rule: Option<Arc<str>>,
    pub reason: Reason,
}

/// Why a [`Decision`] came out the way it did. Each variant has one fixed string
/// ([`Reason::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// "rule allows"
    RuleAllow,
    /// "rule denies"
    RuleDeny,
    /// "rule reports; allowed"
    RuleReport,
    /// "no rule matched; default allow"
    DefaultAllow,
    /// "no rule matched; default deny"
    DefaultDeny,
    /// "no rule matched; default report; allowed"
    DefaultReport,
    /// `"destination address is <class> and no matching rule's cidrs names it"`, with
    /// [`AddrClass::as_str`] for `<class>`.
    AddressProhibited(AddrClass),
}

/// The addresses a decision is about: the resolved ones, or the host itself
/// when it is an IP literal and nothing was resolved. Never allocates.
enum DecisionAddrs<'a> {
    Resolved(&'a [IpAddr]),
    Literal([IpAddr; 1]),
}

impl<'a> DecisionAddrs<'a> {
    fn of(req: &Request<'a>) -> DecisionAddrs<'a> {
        match (req.addrs, req.host) {
            ([], Host::Ip(ip)) => DecisionAddrs::Literal([*ip]),
            (addrs, _) => DecisionAddrs::Resolved(addrs),
        }
    }

    fn as_slice(&self) -> &[IpAddr] {
        match self {
            DecisionAddrs::Resolved(addrs) => addrs,
            DecisionAddrs::Literal(one) => one,
        }
    }
}

/// One address of a decision, explained (for `bauta policy explain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressNote {
    pub addr: IpAddr,
    pub class: AddrClass,
    /// The deciding rule's `cidrs` names this address.
    pub named: bool,
    /// The SSRF guard refuses it: not public, and not named.
    pub prohibited: bool,
}

impl AddressNote {
    /// The SSRF guard's rule for one address: a non-public address passes
    /// only when the deciding rule's `cidrs` names it.
    fn of(addr: IpAddr, cidrs: Option<&cidr::CidrSet>) -> AddressNote {
        let class = classify(addr);
        let named = cidrs.is_some_and(|c| c.contains(addr));
        AddressNote {
            addr,
            class,
            named,
            prohibited: class != AddrClass::Public && !named,
        }
    }
}

/// The answer of [`Policy::precheck`], before DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precheck {
    /// Denied whatever the addresses are; no need to resolve.
    Deny(Decision),
    /// The outcome may depend on the addresses: resolve, then [`Policy::evaluate`].
    Resolve,
}

/// A compiled policy: the rules in config order and the default verdict.
///
/// Immutable, `Send + Sync`; share it in an `Arc` and swap the `Arc` on reload.
#[derive(Clone, Debug)]
pub struct Policy {
    default: Verdict,
    rules: Box<[Rule]>,
    /// The rules by what their hosts match, then by identity, then by the
    /// networks they name (first-match order preserved).
    index: RuleIndex,
    /// The exact identities the rules name, interned.
    identities: Identities,
    /// `[groups]`, for settings keyed by group.
    groups: groups::Groups,
}

// === impl Verdict ===

impl Verdict {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Report => "report",
        }
    }

    /// Whether the request may go ahead (`Allow` or `Report`).
    pub const fn allows(&self) -> bool {
        !matches!(self, Verdict::Deny)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Protocol ===

impl Protocol {
    /// Every protocol, e.g. to pre-register metric label values.
    pub const ALL: [Protocol; 4] = [
        Protocol::Connect,
        Protocol::ConnectUdp,
        Protocol::Http,
        Protocol::Reverse,
    ];

    /// The config spelling, also used as a metric label.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Protocol::Connect => "connect",
            Protocol::ConnectUdp => "connect-udp",
            Protocol::Http => "http",
            Protocol::Reverse => "reverse",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Decision ===

impl Decision {
    /// The matched rule's name, or `"default"`.
    pub fn rule_name(&self) -> &str {
        self.rule.as_deref().unwrap_or("default")
    }

    fn deny_by(rule: &Rule) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            rule: Some(rule.name.clone()),
            reason: Reason::RuleDeny,
        }
    }

    fn deny_by_default() -> Decision {
        Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason: Reason::DefaultDeny,
        }
    }
}

// === impl Reason ===

impl Reason {
    /// The fixed text of this reason, for the access log.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Reason::RuleAllow => "rule allows",
            Reason::RuleDeny => "rule denies",
            Reason::RuleReport => "rule reports; allowed",
            Reason::DefaultAllow => "no rule matched; default allow",
            Reason::DefaultDeny => "no rule matched; default deny",
            Reason::DefaultReport => "no rule matched; default report; allowed",
            Reason::AddressProhibited(class) => class.prohibited_reason(),
        }
    }

    pub const fn is_address_prohibited(&self) -> bool {
        matches!(self, Reason::AddressProhibited(_))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Policy ===

impl Policy {
    /// The rules' names, in order (metric label values).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.name)
    }

    /// Decides before DNS, from protocol, host and port alone.
    ///
    /// `req.addrs` is ignored. Walks the rules in order with the addresses unknown:
    ///
    /// * a rule without `cidrs` whose protocols, hosts and ports match decides: `Deny`
    ///   ends the walk with [`Precheck::Deny`], `Allow` with [`Precheck::Resolve`];
    /// * a rule with `cidrs` whose other matchers match makes the outcome depend on the
    ///   addresses: [`Precheck::Resolve`];
    /// * if no rule matches, a `deny` default gives [`Precheck::Deny`], an `allow`
    ///   default [`Precheck::Resolve`].
    ///
    /// When `host` is an IP literal the address is already known, so this returns
    /// [`Policy::evaluate`]'s decision for that one address if it is a deny
    /// (e.g. `127.0.0.1` under a default allow is denied here as loopback).
    ///
    /// `Deny` is returned only when [`Policy::evaluate`] would deny whatever the
    /// resolved addresses are.
    pub fn precheck(&self, req: &Request<'_>) -> Precheck {
        let (protocol, host, port) = (req.protocol, req.host, req.port);
        if let Host::Ip(ip) = host {
            let decision = self.evaluate(&Request {
                addrs: &[*ip],
                ..*req
            });
            return match decision.verdict {
                Verdict::Deny => Precheck::Deny(decision),
                Verdict::Allow | Verdict::Report => Precheck::Resolve,
            };
        }

        let who = self.identities.who(req.identity);
        let unresolved = AddrProbe {
            dest: Dest::Unknown,
            client: req.client,
        };
        let first = self.index.first(host, who, unresolved, |i| {
            self.rule(i).is_some_and(|rule| {
                rule.matches_protocol_and_port(protocol, port) && rule.matches_who(req.client, who)
            })
        });
        match first.and_then(|i| self.rule(i)) {
            Some(rule) if rule.cidrs.is_some() => Precheck::Resolve,
            Some(rule) => match rule.action {
                Verdict::Deny => Precheck::Deny(Decision::deny_by(rule)),
                Verdict::Allow | Verdict::Report => Precheck::Resolve,
            },
            None => match self.default {
                Verdict::Deny => Precheck::Deny(Decision::deny_by_default()),
                Verdict::Allow | Verdict::Report => Precheck::Resolve,
            },
        }
    }

    /// Decides with the resolved addresses, in this order:
    ///
    /// 1. **Rule match.** The first rule, in config order, whose
    ///    * `protocols` (if given) contain `req.protocol`,
    ///    * `hosts` (if given) match `req.host`: an exact entry (a name, or an IP
    ///      literal matching `Host::Ip`), `"*.suffix"` (any depth of subdomain, not the
    ///      bare suffix), or `"*"` (every host, IP literals included),
    ///    * `ports` (if given) contain `req.port`,
    ///    * `cidrs` (if given) contain *every* address in `req.addrs` (a v4 CIDR also
    ///      covers the IPv4-mapped IPv6 form of its addresses; with no addresses a rule
    ///      with `cidrs` does not match),
    ///
    ///    decides: [`Reason::RuleAllow`] or [`Reason::RuleDeny`]. No match: the default
    ///    decides, [`Reason::DefaultAllow`] or [`Reason::DefaultDeny`].
    /// 2. **Address check.** If the verdict is `Allow`, every address whose
    ///    [`classify`] is not [`AddrClass::Public`] must be contained in the matched
    ///    rule's `cidrs`; otherwise the request is denied with
    ///    [`Reason::AddressProhibited`] naming the class of the first offending
    ///    address, and `rule` is still the matched rule (`None` for the default). A
    ///    default allow, or a rule without `cidrs`, never permits a non-public address.
    ///
    /// If `req.addrs` is empty and `req.host` is an IP literal, the literal is the
    /// address. If `req.addrs` is empty and the host is a name, an `Allow` speaks only
    /// for the name: evaluate again with the addresses before dialling.
    ///
    /// The rule match goes through an index of the rules by host (exact,
    /// wildcard suffix, any), by identity (interned once per decision) and by
    /// the networks of their `cidrs` (looked up with the first address) and
    /// `clients` (with the client's address), with the same answer as walking them in order
    /// ([`Policy::evaluate_linear`]). Does not allocate.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let addrs = DecisionAddrs::of(req);
        let addrs = addrs.as_slice();
        // 1. Rule match: the first rule in config order, found through the index.
        let who = self.identities.who(req.identity);
        let probe = AddrProbe {
            dest: Dest::Known(addrs),
            client: req.client,
        };
        let matched = self
            .index
            .first(req.host, who, probe, |i| {
                self.rule(i).is_some_and(|rule| {
                    rule.matches_protocol_and_port(req.protocol, req.port)
                        && rule.matches_who(req.client, who)
                        && rule.contains_all(addrs)
                })
            })
            .and_then(|i| self.rule(i));
        self.decide(matched, addrs)
    }

    /// [`Policy::evaluate`] by walking every rule in order: the reference the
    /// index is tested against and benchmarked beside. Same answers, slower.
    #[doc(hidden)]
    pub fn evaluate_linear(&self, req: &Request<'_>) -> Decision {
        let addrs = DecisionAddrs::of(req);
        let addrs = addrs.as_slice();
        let probe = HostProbe::new(req.host);
        let who = self.identities.who(req.identity);
        let matched = self.rules.iter().find(|rule| {
            rule.matches_target(req.protocol, &probe, req.port)
                && rule.matches_who(req.client, who)
                && rule.contains_all(addrs)
        });
        self.decide(matched, addrs)
    }

    fn rule(&self, position: u32) -> Option<&Rule> {
        self.rules.get(position as usize)
    }

    /// Step 2 of [`Policy::evaluate`], after the rule match.
    fn decide(&self, matched: Option<&Rule>, addrs: &[IpAddr]) -> Decision {
        let (verdict, rule, named) = match matched {
            Some(rule) => (rule.action, Some(rule.name.clone()), rule.cidrs.as_ref()),
            None => (self.default, None, None),
        };

        // 2. Address check.
        if verdict.allows() {
            let prohibited = addrs
                .iter()
                .map(|&addr| AddressNote::of(addr, named))
                .find(|note| note.prohibited)
                .map(|note| note.class);
            if let Some(class) = prohibited {
                return Decision {
                    verdict: Verdict::Deny,
                    rule,
                    reason: Reason::AddressProhibited(class),
                };
            }
        }

        let reason = match (verdict, rule.is_some()) {
            (Verdict::Allow, true) => Reason::RuleAllow,
            (Verdict::Deny, true) => Reason::RuleDeny,
            (Verdict::Report, true) => Reason::RuleReport,
            (Verdict::Allow, false) => Reason::DefaultAllow,
            (Verdict::Deny, false) => Reason::DefaultDeny,
            (Verdict::Report, false) => Reason::DefaultReport,
        };
        Decision {
            verdict,
            rule,
            reason,
        }
    }

    /// Each address of `req` as the decision saw it: its class, whether the
    /// deciding rule's `cidrs` names it, and whether the SSRF guard refuses
    /// it. For explaining a decision, not for deciding.
    pub fn explain_addresses(&self, req: &Request<'_>, decision: &Decision) -> Vec<AddressNote> {
        let cidrs = decision
            .rule
            .as_deref()
            .and_then(|name| self.rules.iter().find(|r| &*r.name == name))
            .and_then(|r| r.cidrs.as_ref());
        let addrs = DecisionAddrs::of(req);
        let addrs = addrs.as_slice();
        addrs
            .iter()
            .map(|&addr| AddressNote::of(addr, cidrs))
            .collect()
    }

    /// How many rules the policy has.
    /// Whether `identity` is a member of `group` (as `groups` in a rule
    /// would match it); `None` when the policy defines no such group.
    pub fn in_group(&self, group: &str, identity: &str) -> Option<bool> {
        self.groups.contains(group, identity)
    }

    /// The names of the groups the policy defines.
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.groups.names()
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The verdict when no rule matches.
    pub fn default_verdict(&self) -> Verdict {
        self.default
    }
}

#[cfg(test)]
mod tests;

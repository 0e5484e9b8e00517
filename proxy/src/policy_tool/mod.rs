//! `bauta policy`: ask the configured policy about a destination without
//! sending a byte to it. [`explain`] decides one request the way the proxy
//! would (precheck, DNS or given addresses, evaluation, SSRF guard) and says
//! why; [`cases`] runs a table of expected verdicts kept beside the policy,
//! so operators can unit-test their policy in their own CI.

use std::net::IpAddr;
use std::sync::Arc;

use bauta_policy::{Decision, Host, Precheck, Protocol, Request, Verdict};
use serde::Serialize;

use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::upstream::dial::Dialer;
use crate::wire::target::Target;

pub mod cases;

/// What to explain.
pub struct Question {
    pub target: String,
    pub protocol: Protocol,
    pub client: Option<IpAddr>,
    /// The client's verified identity (`None`: anonymous).
    pub identity: Option<String>,
    /// Decide with these addresses instead of resolving the name.
    pub addrs: Vec<IpAddr>,
}

/// The explanation of one decision.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub target: String,
    pub protocol: &'static str,
    pub client: Option<IpAddr>,
    pub identity: Option<String>,
    /// `deny` when the policy refused before DNS, else `resolve`.
    pub precheck: &'static str,
    /// Where the addresses came from: `literal`, `given` or `dns`.
    pub addresses_from: &'static str,
    pub addresses: Vec<AddressOut>,
    pub verdict: &'static str,
    pub rule: String,
    pub reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AddressOut {
    pub addr: IpAddr,
    pub class: &'static str,
    /// The deciding rule's `cidrs` names it.
    pub named: bool,
    /// Refused by the SSRF guard.
    pub prohibited: bool,
}

// === impl Explanation ===

impl Explanation {
    /// Exit status: 0 allowed (allow or report), 1 denied.
    pub fn allowed(&self) -> bool {
        self.verdict != Verdict::Deny.as_str()
    }

    pub fn print_text(&self) {
        println!("target:    {} ({})", self.target, self.protocol);
        if let Some(c) = self.client {
            println!("client:    {c}");
        }
        if let Some(id) = &self.identity {
            println!("identity:  {id}");
        }
        println!("verdict:   {}", self.verdict);
        println!("rule:      {}", self.rule);
        println!("reason:    {}", self.reason);
        if self.precheck == "deny" {
            println!("decided before DNS: no lookup needed");
            return;
        }
        println!("addresses ({}):", self.addresses_from);
        for a in &self.addresses {
            let note = match (a.prohibited, a.named) {
                (true, _) => {
                    "refused by the SSRF guard (not public, not named by the rule's cidrs)"
                }
                (false, true) => "named by the rule's cidrs",
                (false, false) => "public",
            };
            println!("  {:<40} {:<16} {note}", a.addr, a.class);
        }
    }
}

/// Decide `q` under the policy of `config` as the proxy would, resolving the
/// name with the configuration's DNS servers unless addresses are given.
pub async fn explain(config: &Config, q: &Question) -> Result<Explanation, String> {
    let target = parse_target(&q.target)?;
    let policy = &config.policy;
    let base = |decision: &Decision, precheck, from, addresses| Explanation {
        target: target.to_string(),
        protocol: q.protocol.as_str(),
        client: q.client,
        identity: q.identity.clone(),
        precheck,
        addresses_from: from,
        addresses,
        verdict: decision.verdict.as_str(),
        rule: decision.rule_name().to_string(),
        reason: decision.reason.as_str(),
    };
    let ask = Request {
        protocol: q.protocol,
        host: &target.host,
        port: target.port,
        addrs: &[],
        client: q.client,
        identity: q.identity.as_deref(),
    };
    if let Precheck::Deny(d) = policy.precheck(&ask) {
        return Ok(base(&d, "deny", "none", Vec::new()));
    }
    let (addrs, from) = match (&target.host, q.addrs.is_empty()) {
        (Host::Ip(ip), _) => (vec![*ip], "literal"),
        (Host::Name(_), false) => (q.addrs.clone(), "given"),
        (Host::Name(name), true) => (resolve(config, name).await?, "dns"),
    };
    let req = Request {
        addrs: &addrs,
        ..ask
    };
    let decision = policy.evaluate(&req);
    let addresses = policy
        .explain_addresses(&req, &decision)
        .into_iter()
        .map(|n| AddressOut {
            addr: n.addr,
            class: n.class.as_str(),
            named: n.named,
            prohibited: n.prohibited,
        })
        .collect();
    Ok(base(&decision, "resolve", from, addresses))
}

async fn resolve(config: &Config, name: &str) -> Result<Vec<IpAddr>, String> {
    let metrics = Metrics::new(prometheus::Registry::new()).map_err(|e| e.to_string())?;
    let dialer = Dialer::new(
        &config.dns_servers,
        config.limits.clone(),
        Arc::new(metrics),
    )
    .map_err(|e| format!("DNS resolver: {e}"))?;
    dialer
        .resolve(name)
        .await
        .map_err(|e| format!("DNS lookup of {name} failed: {e:?}"))
}

/// A target as the proxy parses a CONNECT's: `host:port`.
fn parse_target(s: &str) -> Result<Target, String> {
    Target::parse_authority(s, None).map_err(|e| format!("target {s:?}: {e} (want host:port)"))
}

/// A `--protocol` value.
pub fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::ALL
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| format!("{s:?}: want connect, connect-udp, http or reverse"))
}

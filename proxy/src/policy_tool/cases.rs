//! `bauta policy test FILE`: a table of expected verdicts kept beside the
//! policy, decided offline (no DNS: a case gives the addresses its name
//! resolves to, or is decided on the name alone).
//!
//! ```toml
//! config = "bauta.toml"          # the configuration whose policy is tested
//!
//! [[case]]
//! name = "payments reach the PSP"  # optional
//! target = "api.psp.example:443"
//! protocol = "connect"           # default connect
//! client = "10.1.2.3"            # optional: the client's source address
//! identity = "spiffe://corp/payments/api"   # optional: the verified identity
//! addrs = ["93.184.216.34"]      # optional: what the name resolves to
//! expect = "allow"               # allow | deny | report
//! rule = "payments"              # optional: the deciding rule ("default")
//! ```

use std::net::IpAddr;
use std::path::Path;

use bauta_policy::{Decision, Host, Precheck, Protocol, Request, Verdict};
use serde::Deserialize;

use crate::config::Config;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    config: String,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    target: String,
    #[serde(default = "default_protocol")]
    protocol: Protocol,
    client: Option<IpAddr>,
    identity: Option<String>,
    #[serde(default)]
    addrs: Vec<IpAddr>,
    expect: Verdict,
    rule: Option<String>,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub cases: usize,
    /// One line per case that did not come out as expected.
    pub failures: Vec<String>,
}

fn default_protocol() -> Protocol {
    Protocol::Connect
}

/// Load `file` and its configuration, and decide every case.
pub fn run(file: &Path) -> Result<Outcome, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let cf: CaseFile =
        toml::from_str(&text).map_err(|e| format!("{}: {}", file.display(), e.message()))?;
    if cf.cases.is_empty() {
        return Err(format!("{}: no [[case]] tables", file.display()));
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let config = Config::load(&base.join(&cf.config)).map_err(|e| e.to_string())?;
    let mut outcome = Outcome::default();
    for (i, case) in cf.cases.iter().enumerate() {
        outcome.cases += 1;
        let label = match &case.name {
            Some(n) => format!("case {} ({n})", i + 1),
            None => format!("case {}", i + 1),
        };
        let decision = match decide(&config, case) {
            Ok(d) => d,
            Err(e) => {
                outcome.failures.push(format!("{label}: {e}"));
                continue;
            }
        };
        let verdict_ok = decision.verdict == case.expect;
        let rule_ok = case
            .rule
            .as_deref()
            .is_none_or(|r| r == decision.rule_name());
        if !(verdict_ok && rule_ok) {
            let want_rule = case
                .rule
                .as_deref()
                .map(|r| format!(" by rule {r}"))
                .unwrap_or_default();
            outcome.failures.push(format!(
                "{label}: {} {}: expected {}{want_rule}, got {} by rule {} ({})",
                case.protocol,
                case.target,
                case.expect,
                decision.verdict,
                decision.rule_name(),
                decision.reason
            ));
        }
    }
    Ok(outcome)
}

fn decide(config: &Config, case: &Case) -> Result<Decision, String> {
    let target = super::parse_target(&case.target)?;
    let policy = &config.policy;
    let ask = Request {
        protocol: case.protocol,
        host: &target.host,
        port: target.port,
        addrs: &[],
        client: case.client,
        identity: case.identity.as_deref(),
    };
    if let Precheck::Deny(d) = policy.precheck(&ask) {
        return Ok(d);
    }
    let addrs = match &target.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(_) => case.addrs.clone(),
    };
    Ok(policy.evaluate(&Request {
        addrs: &addrs,
        ..ask
    }))
}

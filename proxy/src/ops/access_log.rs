//! One canonical access-log line per exchange, as JSON on stdout (the
//! `bauta::access` tracing target; see `logging.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use bauta_policy::Decision;

/// Everything one line says. Fields that do not apply stay empty.
pub struct Entry<'a> {
    pub listener: &'a str,
    pub client: SocketAddr,
    /// Who is asking (verified); `None` is logged as `anonymous`.
    pub identity: Option<&'a str>,
    pub protocol: &'a str,
    pub method: &'a str,
    pub kind: &'a str,
    pub target: &'a str,
    pub decision: Option<&'a Decision>,
    pub status: u16,
    pub outcome: &'a str,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration: Duration,
}

pub fn write(e: &Entry<'_>) {
    let (verdict, rule, reason) = match e.decision {
        Some(d) => (d.verdict.as_str(), d.rule_name(), d.reason.as_str()),
        None => ("", "", ""),
    };
    tracing::info!(
        target: "bauta::access",
        listener = e.listener,
        client = %e.client,
        identity = e.identity.unwrap_or("anonymous"),
        protocol = e.protocol,
        method = e.method,
        kind = e.kind,
        target = e.target,
        verdict,
        rule,
        reason,
        status = e.status,
        outcome = e.outcome,
        bytes_up = e.bytes_up,
        bytes_down = e.bytes_down,
        duration_ms = u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX),
    );
}

//! Every documented series exists from the start, at 0: dashboards, alerts
//! and `rate()` see a family before its first event. The label values come
//! from the closed sets their owners define (kinds and fronts in `core`,
//! outcomes in `core::respond`, connection caps in `listen::admission`
//! and `listen::quic_admission`, DNS
//! outcomes in `upstream::dial`, drop reasons in `tunnel::udp`, error kinds
//! in `seccert`, flooded frames in `wire::h2_flood`) and from the
//! configuration (listeners with their protocols, policy rule names).

use crate::auth;
use crate::config::Config;
use crate::core::exchange::{Front, Kind};
use crate::core::limits::Exceeded;
use crate::core::overload::Shed;
use crate::core::respond::OUTCOMES;
use crate::listen::admission::Refused;
use crate::listen::quic_admission;
use crate::ops::metrics::{prefill as touch, Metrics};
use crate::seccert::advertiser::Advertise;
use crate::seccert::h2_shim::FloodKind;
use crate::seccert::negotiation::ERROR_KINDS;
use crate::tls;
use crate::tunnel::carriage::{Carriage, Leg};
use crate::tunnel::udp::DROP_REASONS;
use crate::upstream::dial::DNS_OUTCOMES;

/// `outcome` values of `bauta_config_reloads_total`.
pub const RELOAD_OUTCOMES: &[&str] = &["ok", "error"];
const DIRECTIONS: &[&str] = &["upstream", "downstream"];
const TUNNEL_KINDS: &[&str] = &["connect", "connect-udp"];
const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];
const VERDICTS: &[&str] = &["allow", "deny", "report"];

/// Create the series for `config`. Idempotent: call again after a reload
/// (new rule names get their series; existing ones keep their counts).
pub fn prefill(m: &Metrics, config: &Config) {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let refusals: Vec<&str> = Refused::ALL.iter().map(|r| r.as_str()).collect();
    for l in &config.listeners {
        let mut fronts = Vec::new();
        // A plaintext listener with h2 sniffs h2c; its connections count as http1.
        if l.http1 || l.tls.is_none() {
            fronts.push(Front::Http1.as_str());
        }
        if l.h2 {
            fronts.push(Front::Http2.as_str());
        }
        if l.h3 {
            fronts.push(Front::Http3.as_str());
        }
        let name: &[&str] = &[&l.name];
        touch(&m.connections, &[name, &fronts]);
        touch(&m.connections_refused, &[name, &refusals]);
        if l.h3 {
            touch(
                &m.connections_refused,
                &[name, &[quic_admission::HANDSHAKES_FULL]],
            );
            touch(&m.quic_retries, &[name]);
            m.quic_handshakes.with_label_values(&[&l.name]);
        }
        touch(&m.requests, &[name, &fronts, &kinds, OUTCOMES]);
    }
    for kind in TUNNEL_KINDS {
        m.tunnels_active.with_label_values(&[kind]);
    }
    touch(&m.tunnel_bytes, &[TUNNEL_KINDS, DIRECTIONS]);
    let mut rules: Vec<&str> = config.policy.rule_names().collect();
    rules.push("default");
    touch(&m.policy_decisions, &[VERDICTS, &rules]);
    touch(
        &m.policy_decisions,
        &[&["deny"], &[crate::upstream::dial::SSRF_GUARD_RULE]],
    );
    touch(&m.dns_lookups, &[DNS_OUTCOMES]);
    touch(&m.udp_datagrams, &[DIRECTIONS]);
    let carriages = Carriage::ALL.map(Carriage::as_str);
    touch(
        &m.http_datagrams,
        &[&[Leg::Client.as_str()], DIRECTIONS, &carriages],
    );
    touch(&m.udp_drops, &[DROP_REASONS]);
    let fronts: Vec<&str> = Front::ALL.iter().map(|f| f.as_str()).collect();
    touch(&m.reverse_requests, &[&fronts, STATUS_CLASSES]);
    let cert_fronts: &[&str] = &[Front::Http2.as_str(), Front::Http3.as_str()];
    let modes: &[&str] = &[Advertise::Eager.as_str(), Advertise::OnConnect.as_str()];
    touch(&m.secondary_certs_sent, &[cert_fronts, modes]);
    touch(&m.secondary_cert_errors, &[cert_fronts, ERROR_KINDS]);
    let floods: Vec<&str> = FloodKind::ALL.iter().map(|k| k.as_str()).collect();
    touch(&m.protocol_floods, &[&[Front::Http2.as_str()], &floods]);
    touch(&m.config_reloads, &[RELOAD_OUTCOMES]);
    touch(&m.policy_reloads, &[RELOAD_OUTCOMES]);
    let basic: Vec<&str> = auth::Failure::ALL.iter().map(|f| f.as_str()).collect();
    touch(&m.auth_failures, &[&["basic"], &basic]);
    touch(&m.auth_failures, &[&["mtls"], tls::MTLS_FAILURES]);
    let limits: Vec<&str> = Exceeded::ALL.iter().map(|e| e.as_str()).collect();
    touch(&m.limit_rejections, &[&limits]);
    let shed: Vec<&str> = Shed::ALL.iter().map(|s| s.as_str()).collect();
    touch(&m.overload_shed, &[&shed]);
    if let Some(g) = &config.gateway {
        for p in &g.protocols {
            for state in crate::gateway::STATES {
                m.gateway_connections
                    .with_label_values(&[p.as_str(), state]);
            }
        }
        for kind in crate::gateway::STREAM_KINDS {
            m.gateway_streams_active.with_label_values(&[kind]);
        }
        touch(&m.gateway_errors, &[crate::gateway::error::REASONS]);
        touch(
            &m.http_datagrams,
            &[&[Leg::Gateway.as_str()], DIRECTIONS, &carriages],
        );
        if !g.originate.is_empty() {
            touch(
                &m.originated_requests,
                &[crate::gateway::ORIGINATE_OUTCOMES],
            );
            touch(
                &m.secondary_certs_validated,
                &[crate::gateway::h2_tap::VALIDATION_OUTCOMES],
            );
        }
    }
    // The certificates in force now: a reload drops those no longer served.
    m.certificate_expiry.reset();
    for c in crate::config::certificates::served(config) {
        m.certificate_expiry
            .with_label_values(&[c.kind, &c.name])
            .set(c.not_after);
    }
}

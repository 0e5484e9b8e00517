//! Every metric family Bauta exports, registered into a registry passed in.
//! Label values come from closed sets (enums, configured names), never from
//! hostnames or other client-supplied strings.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Accepted client connections by listener and negotiated protocol.
    pub connections: IntCounterVec,
    /// Client connections closed (TCP) or refused (QUIC) at once because a
    /// connection cap was reached, by listener and cap (`total`,
    /// `per_client`; QUIC also `quic_handshakes`: dropped unanswered over
    /// `limits.quic_max_handshakes`).
    pub connections_refused: IntCounterVec,
    /// QUIC Retry packets sent (address validation under load), by listener.
    pub quic_retries: IntCounterVec,
    /// QUIC handshakes in progress (accepted, not yet established), by listener.
    pub quic_handshakes: IntGaugeVec,
    /// Finished requests by listener, protocol, kind and outcome.
    pub requests: IntCounterVec,
    /// Tunnels open now by kind.
    pub tunnels_active: IntGaugeVec,
    /// Bytes relayed through tunnels; direction `upstream` = client → target.
    pub tunnel_bytes: IntCounterVec,
    /// Policy decisions by verdict and rule name (`default` when no rule matched).
    pub policy_decisions: IntCounterVec,
    /// DNS lookups by outcome.
    pub dns_lookups: IntCounterVec,
    /// Time to open a TCP connection to the next hop (after DNS).
    pub upstream_connect_seconds: Histogram,
    /// CONNECT-UDP datagrams relayed; direction `upstream` = client → target.
    pub udp_datagrams: IntCounterVec,
    /// HTTP datagrams by leg, direction and carriage (`tunnel::carriage`).
    pub http_datagrams: IntCounterVec,
    /// CONNECT-UDP datagrams dropped, by reason.
    pub udp_drops: IntCounterVec,
    /// Reverse-proxied requests by client protocol and response status class.
    pub reverse_requests: IntCounterVec,
    /// Time from sending a reverse-proxied request upstream to its response head.
    pub reverse_upstream_seconds: Histogram,
    /// SERVER_CERTIFICATE frames sent, by protocol and advertise mode.
    pub secondary_certs_sent: IntCounterVec,
    /// Secondary-certificate errors by kind.
    pub secondary_cert_errors: IntCounterVec,
    /// Client connections closed for a control-frame flood, by front and frame.
    pub protocol_floods: IntCounterVec,
    /// Configuration reloads by outcome.
    pub config_reloads: IntCounterVec,
    /// Clients refused for who they are (not) by method and reason.
    pub auth_failures: IntCounterVec,
    /// Tunnels refused by a per-client limit, by limit.
    pub limit_rejections: IntCounterVec,
    /// Policy (and credentials) reloads by outcome.
    pub policy_reloads: IntCounterVec,
    /// The policy in force: 1 at start, one more per successful reload.
    pub policy_generation: IntGauge,
    /// New work refused (503) by a process-wide watermark, by reason.
    pub overload_shed: IntCounterVec,
    /// 1 while resident memory is over the watermark (new work is shed).
    pub overloaded: IntGauge,
    /// notAfter of each served certificate (listener, origin), Unix seconds.
    pub certificate_expiry: IntGaugeVec,
    /// Empty splice(2) pipe pairs kept for reuse ([`SPLICE_PIPES_POOLED`]).
    pub splice_pipes_pooled: IntGauge,
    /// Connections to the `[gateway]` by protocol and state.
    pub gateway_connections: IntGaugeVec,
    /// Streams open on gateway connections by kind.
    pub gateway_streams_active: IntGaugeVec,
    /// Time to open a gateway connection (TCP, TLS and HTTP/2 SETTINGS).
    pub gateway_connect_seconds: Histogram,
    /// Gateway failures by reason.
    pub gateway_errors: IntCounterVec,
    /// `http://` requests sent as `https://` through the gateway, by outcome.
    pub originated_requests: IntCounterVec,
    /// The gateway's secondary certificates checked by this client, by outcome.
    pub secondary_certs_validated: IntCounterVec,
}

/// Empty pipe pairs in the splice relay's pool (`tunnel::splice` keeps it
/// current); read into `bauta_splice_pipes_pooled` at each scrape. Process-
/// wide, as the pool is.
pub static SPLICE_PIPES_POOLED: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Create every series of `vec` in the product of `labels` (one list of
/// values per label, in the family's label order) at 0, so that dashboards
/// and alerts see each documented series from the start.
pub fn prefill(vec: &IntCounterVec, labels: &[&[&str]]) {
    let mut values: Vec<&str> = Vec::with_capacity(labels.len());
    prefill_from(vec, labels, &mut values);
}

fn prefill_from<'a>(vec: &IntCounterVec, labels: &[&[&'a str]], values: &mut Vec<&'a str>) {
    match labels.split_first() {
        None => {
            vec.with_label_values(values);
        }
        Some((first, rest)) => {
            for v in *first {
                values.push(v);
                prefill_from(vec, rest, values);
                values.pop();
            }
        }
    }
}

impl Metrics {
    pub fn new(registry: Registry) -> Result<Metrics, prometheus::Error> {
        let connections = IntCounterVec::new(
            Opts::new("bauta_connections_total", "Client connections accepted."),
            &["listener", "protocol"],
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "bauta_connections_refused_total",
                "Client connections refused at accept because a connection or QUIC handshake cap was reached.",
            ),
            &["listener", "reason"],
        )?;
        let quic_retries = IntCounterVec::new(
            Opts::new(
                "bauta_quic_retries_total",
                "QUIC Retry packets sent to validate client addresses under load.",
            ),
            &["listener"],
        )?;
        let quic_handshakes = IntGaugeVec::new(
            Opts::new(
                "bauta_quic_handshakes",
                "QUIC handshakes in progress (accepted, not yet established).",
            ),
            &["listener"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new("bauta_requests_total", "Requests handled, by outcome."),
            &["listener", "protocol", "kind", "outcome"],
        )?;
        let tunnels_active = IntGaugeVec::new(
            Opts::new("bauta_tunnels_active", "Tunnels currently open."),
            &["kind"],
        )?;
        let tunnel_bytes = IntCounterVec::new(
            Opts::new(
                "bauta_tunnel_bytes_total",
                "Bytes relayed through tunnels; upstream is client to target.",
            ),
            &["kind", "direction"],
        )?;
        let policy_decisions = IntCounterVec::new(
            Opts::new("bauta_policy_decisions_total", "Policy decisions."),
            &["verdict", "rule"],
        )?;
        let dns_lookups = IntCounterVec::new(
            Opts::new("bauta_dns_lookups_total", "DNS lookups, by outcome."),
            &["outcome"],
        )?;
        let upstream_connect_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "bauta_upstream_connect_seconds",
                "Time to establish a TCP connection to the next hop, after DNS.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )?;
        let udp_datagrams = IntCounterVec::new(
            Opts::new(
                "bauta_udp_datagrams_total",
                "CONNECT-UDP datagrams relayed; upstream is client to target.",
            ),
            &["direction"],
        )?;
        let http_datagrams = IntCounterVec::new(
            Opts::new(
                "bauta_http_datagrams_total",
                "HTTP datagrams of CONNECT-UDP flows by leg (client; gateway in sidecar mode), direction (upstream is toward the target) and carriage (quic: QUIC DATAGRAM frames; capsule: DATAGRAM capsules).",
            ),
            &["leg", "direction", "carriage"],
        )?;
        let udp_drops = IntCounterVec::new(
            Opts::new(
                "bauta_udp_drops_total",
                "CONNECT-UDP datagrams dropped (unknown_context, unknown_stream, too_large, queue_full, send_failed, malformed).",
            ),
            &["reason"],
        )?;
        let reverse_requests = IntCounterVec::new(
            Opts::new(
                "bauta_reverse_requests_total",
                "Reverse-proxied requests, by response status class.",
            ),
            &["protocol", "status_class"],
        )?;
        let reverse_upstream_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "bauta_reverse_upstream_seconds",
                "Time from sending a reverse-proxied request upstream to its response head.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        let secondary_certs_sent = IntCounterVec::new(
            Opts::new(
                "bauta_secondary_certs_sent_total",
                "SERVER_CERTIFICATE frames sent.",
            ),
            &["protocol", "mode"],
        )?;
        let secondary_cert_errors = IntCounterVec::new(
            Opts::new(
                "bauta_secondary_cert_errors_total",
                "Secondary-certificate errors (client violations, unsendable authenticators).",
            ),
            &["protocol", "kind"],
        )?;
        let protocol_floods = IntCounterVec::new(
            Opts::new(
                "bauta_protocol_floods_total",
                "Client connections closed (GOAWAY ENHANCE_YOUR_CALM) for flooding control frames.",
            ),
            &["front", "frame"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "bauta_config_reloads_total",
                "Configuration reloads (SIGHUP), by outcome.",
            ),
            &["outcome"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "bauta_auth_failures_total",
                "Clients refused for their credentials: method basic or mtls, by reason.",
            ),
            &["method", "reason"],
        )?;
        let limit_rejections = IntCounterVec::new(
            Opts::new(
                "bauta_limit_rejections_total",
                "Tunnels refused (429) by a per-client limit, by limit.",
            ),
            &["limit"],
        )?;
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "bauta_policy_reloads_total",
                "Reloads of the policy and credentials (SIGHUP or a file change), by outcome.",
            ),
            &["outcome"],
        )?;
        let policy_generation = IntGauge::new(
            "bauta_policy_generation",
            "The policy in force: 1 at start, plus one per successful reload.",
        )?;
        registry.register(Box::new(auth_failures.clone()))?;
        let overload_shed = IntCounterVec::new(
            Opts::new(
                "bauta_overload_shed_total",
                "New tunnels and requests refused (503) by a process-wide watermark, by reason.",
            ),
            &["reason"],
        )?;
        let overloaded = IntGauge::new(
            "bauta_overloaded",
            "1 while resident memory is over the watermark and new work is shed, else 0.",
        )?;
        registry.register(Box::new(limit_rejections.clone()))?;
        registry.register(Box::new(overload_shed.clone()))?;
        registry.register(Box::new(overloaded.clone()))?;
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "bauta_certificate_expiry_timestamp_seconds",
                "notAfter of each served certificate, Unix seconds, by kind (listener, origin) and name.",
            ),
            &["kind", "name"],
        )?;
        registry.register(Box::new(certificate_expiry.clone()))?;
        let splice_pipes_pooled = IntGauge::new(
            "bauta_splice_pipes_pooled",
            "Empty splice(2) pipe pairs kept for reuse by plain TCP tunnels (two descriptors each).",
        )?;
        registry.register(Box::new(splice_pipes_pooled.clone()))?;
        registry.register(Box::new(policy_reloads.clone()))?;
        registry.register(Box::new(policy_generation.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(reverse_requests.clone()))?;
        registry.register(Box::new(reverse_upstream_seconds.clone()))?;
        registry.register(Box::new(secondary_certs_sent.clone()))?;
        registry.register(Box::new(secondary_cert_errors.clone()))?;
        registry.register(Box::new(protocol_floods.clone()))?;
        registry.register(Box::new(udp_datagrams.clone()))?;
        registry.register(Box::new(http_datagrams.clone()))?;
        registry.register(Box::new(udp_drops.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(quic_retries.clone()))?;
        registry.register(Box::new(quic_handshakes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(tunnels_active.clone()))?;
        registry.register(Box::new(tunnel_bytes.clone()))?;
        registry.register(Box::new(policy_decisions.clone()))?;
        registry.register(Box::new(dns_lookups.clone()))?;
        registry.register(Box::new(upstream_connect_seconds.clone()))?;
        let gateway_connections = IntGaugeVec::new(
            Opts::new(
                "bauta_gateway_connections",
                "Connections to the [gateway] by protocol and state.",
            ),
            &["protocol", "state"],
        )?;
        let gateway_streams_active = IntGaugeVec::new(
            Opts::new(
                "bauta_gateway_streams_active",
                "Streams open on gateway connections by kind.",
            ),
            &["kind"],
        )?;
        let gateway_connect_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "bauta_gateway_connect_seconds",
                "Time to open a connection to the gateway (TCP, TLS, HTTP/2 setup).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let gateway_errors = IntCounterVec::new(
            Opts::new("bauta_gateway_errors_total", "Gateway failures by reason."),
            &["reason"],
        )?;
        let originated_requests = IntCounterVec::new(
            Opts::new(
                "bauta_originated_requests_total",
                "http:// requests sent as https:// through the gateway, by outcome.",
            ),
            &["outcome"],
        )?;
        let secondary_certs_validated = IntCounterVec::new(
            Opts::new(
                "bauta_secondary_certs_validated_total",
                "The gateway's SERVER_CERTIFICATE authenticators checked here, by outcome.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(originated_requests.clone()))?;
        registry.register(Box::new(secondary_certs_validated.clone()))?;
        registry.register(Box::new(gateway_connections.clone()))?;
        registry.register(Box::new(gateway_streams_active.clone()))?;
        registry.register(Box::new(gateway_connect_seconds.clone()))?;
        registry.register(Box::new(gateway_errors.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            connections,
            connections_refused,
            quic_retries,
            quic_handshakes,
            requests,
            tunnels_active,
            tunnel_bytes,
            policy_decisions,
            dns_lookups,
            upstream_connect_seconds,
            udp_datagrams,
            http_datagrams,
            udp_drops,
            reverse_requests,
            reverse_upstream_seconds,
            secondary_certs_sent,
            secondary_cert_errors,
            protocol_floods,
            config_reloads,
            auth_failures,
            limit_rejections,
            policy_reloads,
            policy_generation,
            overload_shed,
            overloaded,
            certificate_expiry,
            splice_pipes_pooled,
            gateway_connections,
            gateway_streams_active,
            gateway_connect_seconds,
            gateway_errors,
            originated_requests,
            secondary_certs_validated,
        })
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> Result<(String, String), prometheus::Error> {
        let pooled = SPLICE_PIPES_POOLED.load(std::sync::atomic::Ordering::Relaxed);
        self.splice_pipes_pooled
            .set(i64::try_from(pooled).unwrap_or(i64::MAX));
        let encoder = TextEncoder::new();
        let mut buf = Vec::with_capacity(8 * 1024);
        encoder.encode(&self.registry.gather(), &mut buf)?;
        Ok((
            encoder.format_type().to_string(),
            String::from_utf8_lossy(&buf).into_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_all_families_once_used() {
        let m = Metrics::new(Registry::new()).expect("metrics");
        m.connections.with_label_values(&["plain", "http1"]).inc();
        m.requests
            .with_label_values(&["plain", "http1", "connect", "ok"])
            .inc();
        m.tunnels_active.with_label_values(&["connect"]).inc();
        m.tunnel_bytes
            .with_label_values(&["connect", "upstream"])
            .inc_by(3);
        m.policy_decisions
            .with_label_values(&["allow", "default"])
            .inc();
        m.dns_lookups.with_label_values(&["ok"]).inc();
        m.upstream_connect_seconds.observe(0.01);
        let (ty, text) = m.render().expect("render");
        assert!(ty.starts_with("text/plain"));
        for name in [
            "bauta_connections_total",
            "bauta_requests_total",
            "bauta_tunnels_active",
            "bauta_tunnel_bytes_total",
            "bauta_policy_decisions_total",
            "bauta_dns_lookups_total",
            "bauta_upstream_connect_seconds_bucket",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }
}

//! The one map from "what went wrong" to "how we answer": HTTP status,
//! `Proxy-Status` (RFC 9209) error type and parameters, the stream reset
//! that follows on HTTP/2 and HTTP/3, and the metric outcome label. Mirrors
//! the situation table of `spec/masque.md` §2.4. Every front answers from
//! this table, so the three protocols answer one situation alike.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::upstream::dial::DialError;
use crate::upstream::UpstreamError;
use crate::wire::h2_frame::ErrorCode as H2ErrorCode;
use crate::wire::h3_error::H3ErrorCode;

/// Everything that ends an exchange without the service it asked for.
#[derive(Debug)]
pub enum ProxyError {
    /// The request is invalid (400).
    BadRequest(&'static str),
    /// The request is malformed in the sense of RFC 9113 §8.1.1 / RFC 9114
    /// §4.1.2: 400, then the stream is reset (HTTP/2 `PROTOCOL_ERROR`,
    /// HTTP/3 `H3_MESSAGE_ERROR`); HTTP/1.1 closes the connection.
    Malformed(&'static str),
    /// Understood but not something this proxy does (501).
    NotImplemented(&'static str),
    /// Nothing here answers this path (404).
    NotFound(&'static str),
    /// A local failure unrelated to the destination (500).
    Internal(&'static str),
    /// An https request for an authority this connection does not cover (421).
    Misdirected,
    /// A request that is not addressed to a proxy (e.g. origin-form to us).
    NotProxyRequest,
    /// Policy, DNS or TCP connect to the next hop failed.
    Dial(DialError),
    /// The next hop misbehaved after we connected.
    Upstream(UpstreamError),
    /// No acceptable proxy credential (407, with this `Proxy-Authenticate`
    /// challenge).
    AuthRequired {
        failure: crate::auth::Failure,
        challenge: HeaderValue,
    },
    /// A per-client limit is reached (429).
    Limited(crate::core::limits::Exceeded),
    /// More header fields than `[limits] max_headers` (431).
    TooManyHeaders,
    /// A request target longer than `[limits] max_uri_bytes` (414).
    UriTooLong,
    /// The process is over a watermark and sheds new work (503).
    Overloaded(crate::core::overload::Shed),
    /// The `[gateway]` (at `next_hop`, `host:port`) could not carry the
    /// request.
    Gateway {
        error: crate::gateway::GatewayError,
        next_hop: std::sync::Arc<str>,
    },
}

/// Every `outcome` label value of `bauta_requests_total`: "ok" and each
/// error's (checked against the table by a test).
pub const OUTCOMES: &[&str] = &[
    "ok",
    "bad_request",
    "not_implemented",
    "not_found",
    "internal_error",
    "misdirected",
    "auth_required",
    "limited",
    "overloaded",
    "address_prohibited",
    "denied",
    "dns_error",
    "dns_timeout",
    "connection_refused",
    "connection_timeout",
    "unreachable",
    "upstream_error",
    "gateway_error",
    "gateway_refused",
];

/// How one error is answered.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    /// RFC 9209 error type token.
    pub error: &'static str,
    /// Extra Proxy-Status parameters, already serialised (`rcode="NXDOMAIN"`).
    pub params: Option<String>,
    /// Free text for `details` and the body. Never internal topology.
    pub details: String,
    /// Metric outcome label.
    pub outcome: &'static str,
    /// After the response, reset the stream: HTTP/2 with this code …
    pub h2_reset: Option<H2ErrorCode>,
    /// … and HTTP/3 with this one (HTTP/1.1 answers the 400 alone).
    pub h3_reset: Option<H3ErrorCode>,
    /// How loud the diagnostic line is: the client's mistakes and policy
    /// refusals are DEBUG, the destination's failures INFO, ours WARN.
    pub level: tracing::Level,
    /// `Proxy-Authenticate` (a 407 only).
    pub challenge: Option<HeaderValue>,
}

// === impl ProxyError ===

impl ProxyError {
    pub fn answer(&self) -> Answer {
        use DialError as D;
        let a = |status: StatusCode, error, outcome, details: String| Answer {
            status,
            error,
            params: None,
            details,
            outcome,
            h2_reset: None,
            h3_reset: None,
            challenge: None,
            level: match status.as_u16() {
                500 => tracing::Level::WARN,
                502..=504 => tracing::Level::INFO,
                _ => tracing::Level::DEBUG,
            },
        };
        match self {
            ProxyError::BadRequest(why) => a(
                StatusCode::BAD_REQUEST,
                "proxy_internal_response",
                "bad_request",
                (*why).to_string(),
            ),
            ProxyError::Malformed(why) => Answer {
                h2_reset: Some(H2ErrorCode::PROTOCOL_ERROR),
                h3_reset: Some(H3ErrorCode::MESSAGE_ERROR),
                ..a(
                    StatusCode::BAD_REQUEST,
                    "proxy_internal_response",
                    "bad_request",
                    (*why).to_string(),
                )
            },
            ProxyError::NotImplemented(why) => a(
                StatusCode::NOT_IMPLEMENTED,
                "proxy_internal_response",
                "not_implemented",
                (*why).to_string(),
            ),
            ProxyError::NotFound(why) => a(
                StatusCode::NOT_FOUND,
                "proxy_internal_response",
                "not_found",
                (*why).to_string(),
            ),
            ProxyError::Internal(why) => a(
                StatusCode::INTERNAL_SERVER_ERROR,
                "proxy_internal_error",
                "internal_error",
                (*why).to_string(),
            ),
            ProxyError::Misdirected => a(
                StatusCode::MISDIRECTED_REQUEST,
                "proxy_internal_response",
                "misdirected",
                "this connection is not authoritative for that origin".into(),
            ),
            ProxyError::AuthRequired { failure, challenge } => Answer {
                challenge: Some(challenge.clone()),
                ..a(
                    StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                    "http_request_denied",
                    "auth_required",
                    failure.details().to_string(),
                )
            },
            // RFC 9209 §2.3.16: the client's request is what is refused.
            ProxyError::Limited(exceeded) => a(
                StatusCode::TOO_MANY_REQUESTS,
                "http_request_error",
                "limited",
                exceeded.details().to_string(),
            ),
            // RFC 9209 §2.3.9 for the counts; memory is our own state.
            ProxyError::Overloaded(shed) => a(
                StatusCode::SERVICE_UNAVAILABLE,
                match shed {
                    crate::core::overload::Shed::Memory => "proxy_internal_error",
                    _ => "connection_limit_reached",
                },
                "overloaded",
                shed.details().to_string(),
            ),
            ProxyError::TooManyHeaders => a(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "http_request_error",
                "bad_request",
                "more header fields than limits.max_headers".into(),
            ),
            ProxyError::UriTooLong => a(
                StatusCode::URI_TOO_LONG,
                "http_request_error",
                "bad_request",
                "request target longer than limits.max_uri_bytes".into(),
            ),
            ProxyError::NotProxyRequest => a(
                StatusCode::BAD_REQUEST,
                "proxy_internal_response",
                "bad_request",
                "this is a proxy: send CONNECT or an absolute-form http:// request".into(),
            ),
            ProxyError::Dial(dial) | ProxyError::Upstream(UpstreamError::Dial(dial)) => {
                match dial {
                    D::Denied(d) if d.reason.is_address_prohibited() => a(
                        StatusCode::BAD_GATEWAY,
                        "destination_ip_prohibited",
                        "address_prohibited",
                        d.reason.as_str().to_string(),
                    ),
                    D::Denied(d) => a(
                        StatusCode::FORBIDDEN,
                        "http_request_denied",
                        "denied",
                        d.reason.as_str().to_string(),
                    ),
                    D::Dns { rcode } => Answer {
                        params: rcode.as_ref().map(|r| format!("rcode={}", sf_string(r))),
                        ..a(
                            StatusCode::BAD_GATEWAY,
                            "dns_error",
                            "dns_error",
                            "DNS lookup of the destination failed".into(),
                        )
                    },
                    D::DnsTimeout => a(
                        StatusCode::GATEWAY_TIMEOUT,
                        "dns_timeout",
                        "dns_timeout",
                        "DNS lookup of the destination timed out".into(),
                    ),
                    D::Refused => a(
                        StatusCode::BAD_GATEWAY,
                        "connection_refused",
                        "connection_refused",
                        "the destination refused the connection".into(),
                    ),
                    D::Timeout => a(
                        StatusCode::GATEWAY_TIMEOUT,
                        "connection_timeout",
                        "connection_timeout",
                        "connecting to the destination timed out".into(),
                    ),
                    D::Unreachable => a(
                        StatusCode::BAD_GATEWAY,
                        "destination_ip_unroutable",
                        "unreachable",
                        "no route to the destination".into(),
                    ),
                    D::Io(_) => a(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "proxy_internal_error",
                        "internal_error",
                        "could not open a connection".into(),
                    ),
                }
            }
            ProxyError::Upstream(UpstreamError::InvalidTarget(why)) => a(
                StatusCode::BAD_REQUEST,
                "proxy_internal_response",
                "bad_request",
                (*why).to_string(),
            ),
            ProxyError::Upstream(UpstreamError::Terminated) => a(
                StatusCode::BAD_GATEWAY,
                "connection_terminated",
                "upstream_error",
                "the destination closed the connection before responding".into(),
            ),
            // RFC 9209 `http_response_timeout`: no response from the next hop in time.
            ProxyError::Upstream(UpstreamError::ResponseTimeout) => a(
                StatusCode::GATEWAY_TIMEOUT,
                "http_response_timeout",
                "upstream_error",
                "the destination did not answer in time".into(),
            ),
            ProxyError::Upstream(UpstreamError::TlsHandshake) => a(
                StatusCode::BAD_GATEWAY,
                "tls_protocol_error",
                "upstream_error",
                "TLS with the upstream failed".into(),
            ),
            ProxyError::Upstream(UpstreamError::TlsCertificate) => a(
                StatusCode::BAD_GATEWAY,
                "tls_certificate_error",
                "upstream_error",
                "the upstream's certificate did not verify".into(),
            ),
            ProxyError::Upstream(UpstreamError::RequestBody) => a(
                StatusCode::BAD_REQUEST,
                "http_request_error",
                "bad_request",
                "the request body is malformed or ended early".into(),
            ),
            ProxyError::Upstream(UpstreamError::MalformedBody) => Answer {
                h2_reset: Some(H2ErrorCode::PROTOCOL_ERROR),
                h3_reset: Some(H3ErrorCode::MESSAGE_ERROR),
                ..a(
                    StatusCode::BAD_REQUEST,
                    "http_request_error",
                    "bad_request",
                    "the request body does not match its content-length".into(),
                )
            },
            ProxyError::Gateway { error, next_hop } => gateway_answer(error, next_hop, a),
            ProxyError::Upstream(UpstreamError::Protocol) => a(
                StatusCode::BAD_GATEWAY,
                "http_protocol_error",
                "upstream_error",
                "the destination sent an invalid HTTP response".into(),
            ),
        }
    }

    /// The response head and body text, for fronts that send them separately.
    pub fn head_and_body(&self, proxy_name: &str) -> (Response<()>, Bytes) {
        self.answer().head_and_body(proxy_name)
    }
}

/// The gateway's failures (RFC 9209 with `next-hop` naming the gateway):
/// connecting to it fails like connecting to a destination; while the
/// breaker is open or every connection is full, 503 at once.
fn gateway_answer(
    error: &crate::gateway::GatewayError,
    next_hop: &str,
    a: impl Fn(StatusCode, &'static str, &'static str, String) -> Answer,
) -> Answer {
    use crate::gateway::GatewayError as G;
    let (status, token) = match error {
        G::Dns(_) => (StatusCode::BAD_GATEWAY, "dns_error"),
        G::Refused => (StatusCode::BAD_GATEWAY, "connection_refused"),
        G::ConnectTimeout => (StatusCode::GATEWAY_TIMEOUT, "connection_timeout"),
        G::Tls(_) => (StatusCode::BAD_GATEWAY, "tls_protocol_error"),
        G::Protocol(_) => (StatusCode::BAD_GATEWAY, "http_protocol_error"),
        G::CircuitOpen { .. } => (StatusCode::SERVICE_UNAVAILABLE, "destination_unavailable"),
        G::Saturated => (StatusCode::SERVICE_UNAVAILABLE, "connection_limit_reached"),
        G::GoingAway | G::StreamReset | G::ConnectionLost => {
            (StatusCode::BAD_GATEWAY, "connection_terminated")
        }
        G::ResponseTimeout => (StatusCode::GATEWAY_TIMEOUT, "http_response_timeout"),
        // Never sent in the clear, nor to an origin the gateway did not prove.
        G::NotAuthoritative(_) => (StatusCode::BAD_GATEWAY, "tls_certificate_error"),
    };
    // The reason, without addresses or certificate details from the TLS stack.
    let details = match error {
        G::Dns(_) => "the gateway's name did not resolve".to_string(),
        G::Tls(_) => "TLS with the gateway failed".to_string(),
        G::Protocol(_) => "HTTP/2 with the gateway failed".to_string(),
        other => other.to_string(),
    };
    Answer {
        params: Some(format!("next-hop={}", sf_string(next_hop))),
        ..a(status, token, "gateway_error", details)
    }
}

// === impl Answer ===

impl Answer {
    /// The response head (status, `Proxy-Status`) and body text.
    pub fn head_and_body(&self, proxy_name: &str) -> (Response<()>, Bytes) {
        let mut value = format!("{proxy_name}; error={}", self.error);
        if let Some(p) = &self.params {
            value.push_str("; ");
            value.push_str(p);
        }
        value.push_str("; details=");
        value.push_str(&sf_string(&self.details));
        let text = Bytes::from(format!("{}\n", self.details));
        let mut resp = Response::new(());
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert("proxy-status", v);
        }
        if let Some(c) = &self.challenge {
            h.insert(header::PROXY_AUTHENTICATE, c.clone());
        }
        (resp, text)
    }
}

impl From<DialError> for ProxyError {
    fn from(e: DialError) -> Self {
        ProxyError::Dial(e)
    }
}

impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Dial(d) => ProxyError::Dial(d),
            other => ProxyError::Upstream(other),
        }
    }
}

/// RFC 8941 §3.3.3 sf-string: printable ASCII, `"` and `\` escaped; anything
/// else is replaced so the field always parses.
pub fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Failure;
    use crate::core::limits::Exceeded;
    use crate::core::overload::Shed;
    use bauta_policy::{AddrClass, Decision, Reason, Verdict};

    fn denied(reason: Reason) -> ProxyError {
        ProxyError::Dial(DialError::Denied(Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason,
        }))
    }

    /// One row per situation (spec/masque.md §2.4): every `ProxyError`
    /// variant, with its status, Proxy-Status token, outcome label, the
    /// HTTP/2 and HTTP/3 resets and the log level.
    #[test]
    fn situation_table() {
        use tracing::Level;
        let h2p = Some(H2ErrorCode::PROTOCOL_ERROR);
        let h3m = Some(H3ErrorCode::MESSAGE_ERROR);
        type Row = (
            ProxyError,
            u16,
            &'static str,
            &'static str,
            Option<H2ErrorCode>,
            Option<H3ErrorCode>,
            Level,
        );
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            (ProxyError::BadRequest("x"), 400, "proxy_internal_response", "bad_request", None, None, Level::DEBUG),
            (ProxyError::Malformed("x"), 400, "proxy_internal_response", "bad_request", h2p, h3m, Level::DEBUG),
            (ProxyError::NotImplemented("x"), 501, "proxy_internal_response", "not_implemented", None, None, Level::DEBUG),
            (ProxyError::NotFound("x"), 404, "proxy_internal_response", "not_found", None, None, Level::DEBUG),
            (ProxyError::Internal("x"), 500, "proxy_internal_error", "internal_error", None, None, Level::WARN),
            (ProxyError::Misdirected, 421, "proxy_internal_response", "misdirected", None, None, Level::DEBUG),
            (ProxyError::NotProxyRequest, 400, "proxy_internal_response", "bad_request", None, None, Level::DEBUG),
            (denied(Reason::DefaultDeny), 403, "http_request_denied", "denied", None, None, Level::DEBUG),
            (denied(Reason::RuleDeny), 403, "http_request_denied", "denied", None, None, Level::DEBUG),
            (denied(Reason::AddressProhibited(AddrClass::Loopback)), 502, "destination_ip_prohibited", "address_prohibited", None, None, Level::INFO),
            (ProxyError::Dial(DialError::Dns { rcode: Some("NXDOMAIN".into()) }), 502, "dns_error", "dns_error", None, None, Level::INFO),
            (ProxyError::Dial(DialError::DnsTimeout), 504, "dns_timeout", "dns_timeout", None, None, Level::INFO),
            (ProxyError::Dial(DialError::Refused), 502, "connection_refused", "connection_refused", None, None, Level::INFO),
            (ProxyError::Dial(DialError::Timeout), 504, "connection_timeout", "connection_timeout", None, None, Level::INFO),
            (ProxyError::Dial(DialError::Unreachable), 502, "destination_ip_unroutable", "unreachable", None, None, Level::INFO),
            (ProxyError::Dial(DialError::Io(std::io::Error::other("x"))), 500, "proxy_internal_error", "internal_error", None, None, Level::WARN),
            (ProxyError::Upstream(UpstreamError::Dial(DialError::Refused)), 502, "connection_refused", "connection_refused", None, None, Level::INFO),
            (ProxyError::Upstream(UpstreamError::InvalidTarget("x")), 400, "proxy_internal_response", "bad_request", None, None, Level::DEBUG),
            (ProxyError::Upstream(UpstreamError::Terminated), 502, "connection_terminated", "upstream_error", None, None, Level::INFO),
            (ProxyError::Upstream(UpstreamError::ResponseTimeout), 504, "http_response_timeout", "upstream_error", None, None, Level::INFO),
            (ProxyError::Upstream(UpstreamError::Protocol), 502, "http_protocol_error", "upstream_error", None, None, Level::INFO),
            (ProxyError::Upstream(UpstreamError::TlsHandshake), 502, "tls_protocol_error", "upstream_error", None, None, Level::INFO),
            (ProxyError::Upstream(UpstreamError::TlsCertificate), 502, "tls_certificate_error", "upstream_error", None, None, Level::INFO),
            (ProxyError::Upstream(UpstreamError::RequestBody), 400, "http_request_error", "bad_request", None, None, Level::DEBUG),
            (ProxyError::Upstream(UpstreamError::MalformedBody), 400, "http_request_error", "bad_request", h2p, h3m, Level::DEBUG),
            (auth_required(Failure::Missing), 407, "http_request_denied", "auth_required", None, None, Level::DEBUG),
            (auth_required(Failure::WrongPassword), 407, "http_request_denied", "auth_required", None, None, Level::DEBUG),
            (ProxyError::Limited(Exceeded::Tunnels), 429, "http_request_error", "limited", None, None, Level::DEBUG),
            (ProxyError::Limited(Exceeded::NewPerSecond), 429, "http_request_error", "limited", None, None, Level::DEBUG),
            (ProxyError::Limited(Exceeded::ConnectionUdpFlows), 429, "http_request_error", "limited", None, None, Level::DEBUG),
            (ProxyError::TooManyHeaders, 431, "http_request_error", "bad_request", None, None, Level::DEBUG),
            (ProxyError::UriTooLong, 414, "http_request_error", "bad_request", None, None, Level::DEBUG),
            (ProxyError::Overloaded(Shed::Memory), 503, "proxy_internal_error", "overloaded", None, None, Level::INFO),
            (ProxyError::Overloaded(Shed::Tunnels), 503, "connection_limit_reached", "overloaded", None, None, Level::INFO),
            (ProxyError::Overloaded(Shed::UdpFlows), 503, "connection_limit_reached", "overloaded", None, None, Level::INFO),
            (gw(G::Dns("x".into())), 502, "dns_error", "gateway_error", None, None, Level::INFO),
            (gw(G::Refused), 502, "connection_refused", "gateway_error", None, None, Level::INFO),
            (gw(G::ConnectTimeout), 504, "connection_timeout", "gateway_error", None, None, Level::INFO),
            (gw(G::Tls("x".into())), 502, "tls_protocol_error", "gateway_error", None, None, Level::INFO),
            (gw(G::Protocol("x".into())), 502, "http_protocol_error", "gateway_error", None, None, Level::INFO),
            (gw(G::CircuitOpen { retry_in: std::time::Duration::from_millis(5) }), 503, "destination_unavailable", "gateway_error", None, None, Level::INFO),
            (gw(G::Saturated), 503, "connection_limit_reached", "gateway_error", None, None, Level::INFO),
            (gw(G::GoingAway), 502, "connection_terminated", "gateway_error", None, None, Level::INFO),
            (gw(G::StreamReset), 502, "connection_terminated", "gateway_error", None, None, Level::INFO),
            (gw(G::ConnectionLost), 502, "connection_terminated", "gateway_error", None, None, Level::INFO),
            (gw(G::ResponseTimeout), 504, "http_response_timeout", "gateway_error", None, None, Level::INFO),
            (gw(G::NotAuthoritative("api.corp".into())), 502, "tls_certificate_error", "gateway_error", None, None, Level::INFO),
        ];
        for (err, status, token, outcome, h2, h3, level) in rows {
            let ans = err.answer();
            assert!(
                OUTCOMES.contains(&ans.outcome),
                "{err:?}: outcome {}",
                ans.outcome
            );
            assert_eq!(ans.status.as_u16(), status, "{err:?}");
            assert_eq!(ans.error, token, "{err:?}");
            assert_eq!(ans.outcome, outcome, "{err:?}");
            assert_eq!(ans.h2_reset, h2, "{err:?}");
            assert_eq!(ans.h3_reset, h3, "{err:?}");
            assert_eq!(ans.level, level, "{err:?}");
            let (resp, _) = err.head_and_body("bauta");
            let ps = resp.headers()["proxy-status"].to_str().expect("ascii");
            assert!(ps.starts_with(&format!("bauta; error={token}")), "{ps}");
        }
    }

    use crate::gateway::GatewayError as G;

    fn gw(error: G) -> ProxyError {
        ProxyError::Gateway {
            error,
            next_hop: std::sync::Arc::from("gw.test:8443"),
        }
    }

    /// A gateway failure names the gateway as the next hop, and no
    /// internal detail of the failure.
    #[test]
    fn gateway_errors_name_the_next_hop() {
        let (resp, _) = gw(G::Tls("unknown issuer CN=corp-ca".into())).head_and_body("sidecar");
        let ps = resp.headers()["proxy-status"].to_str().expect("ascii");
        assert_eq!(
            ps,
            "sidecar; error=tls_protocol_error; next-hop=\"gw.test:8443\"; details=\"TLS with the gateway failed\""
        );
    }

    fn auth_required(failure: Failure) -> ProxyError {
        ProxyError::AuthRequired {
            failure,
            challenge: HeaderValue::from_static("Basic realm=\"bauta\", charset=\"UTF-8\""),
        }
    }

    /// A 407 carries its challenge; an unknown user and a wrong password
    /// read the same to the client.
    #[test]
    fn auth_required_challenges() {
        let (resp, text) = auth_required(Failure::UnknownUser).head_and_body("bauta");
        assert_eq!(
            resp.headers()["proxy-authenticate"],
            "Basic realm=\"bauta\", charset=\"UTF-8\""
        );
        let (_, wrong) = auth_required(Failure::WrongPassword).head_and_body("bauta");
        assert_eq!(text, wrong);
        let (other, _) = ProxyError::Misdirected.head_and_body("bauta");
        assert!(other.headers().get("proxy-authenticate").is_none());
    }

    /// Upstream dial errors are answered as dial errors, whichever path
    /// they came through.
    #[test]
    fn upstream_dial_errors_flatten() {
        let e: ProxyError = UpstreamError::Dial(DialError::Timeout).into();
        assert!(matches!(e, ProxyError::Dial(DialError::Timeout)));
        let e: ProxyError = UpstreamError::Protocol.into();
        assert!(matches!(e, ProxyError::Upstream(UpstreamError::Protocol)));
    }

    #[test]
    fn dns_error_carries_rcode() {
        let resp = ProxyError::Dial(DialError::Dns {
            rcode: Some("NXDOMAIN".into()),
        })
        .head_and_body("bauta")
        .0;
        let ps = resp.headers()["proxy-status"].to_str().expect("ascii");
        assert!(ps.contains("; rcode=\"NXDOMAIN\""), "{ps}");
    }

    #[test]
    fn sf_string_escapes() {
        assert_eq!(sf_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(sf_string("é\n"), "\"??\"");
    }
}

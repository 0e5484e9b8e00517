//! Why the gateway did not carry a request. Says what happened;
//! `core::respond` decides how to answer.

use std::time::Duration;

/// Every `reason` label value of `bauta_gateway_errors_total`.
pub const REASONS: &[&str] = &[
    "dns",
    "connect_refused",
    "connect_timeout",
    "tls",
    "protocol",
    "circuit_open",
    "saturated",
    "goaway",
    "stream_reset",
    "connection_lost",
    "response_timeout",
    "not_authoritative",
];

#[derive(Debug)]
pub enum GatewayError {
    /// The gateway's name did not resolve.
    Dns(String),
    /// The gateway refused the TCP connection (or was unreachable).
    Refused,
    /// No connection within `[gateway] connect_timeout_ms`.
    ConnectTimeout,
    /// The TLS handshake failed (a certificate we do not trust, our client
    /// certificate refused, no `h2` in ALPN).
    Tls(String),
    /// The gateway broke HTTP/2 while the connection was set up.
    Protocol(String),
    /// An earlier attempt failed; the next is allowed after this long.
    CircuitOpen { retry_in: Duration },
    /// Every connection is full and `[gateway] max_connections` are open.
    Saturated,
    /// The connection was going away when the stream was opened.
    GoingAway,
    /// The gateway reset the stream.
    StreamReset,
    /// The connection ended under the stream.
    ConnectionLost,
    /// No response head within `[limits] response_timeout_s`.
    ResponseTimeout,
    /// Origination: the gateway has not proven this host with a secondary
    /// certificate this proxy validated and accepts.
    NotAuthoritative(String),
}

impl GatewayError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::Dns(_) => "dns",
            GatewayError::Refused => "connect_refused",
            GatewayError::ConnectTimeout => "connect_timeout",
            GatewayError::Tls(_) => "tls",
            GatewayError::Protocol(_) => "protocol",
            GatewayError::CircuitOpen { .. } => "circuit_open",
            GatewayError::Saturated => "saturated",
            GatewayError::GoingAway => "goaway",
            GatewayError::StreamReset => "stream_reset",
            GatewayError::ConnectionLost => "connection_lost",
            GatewayError::ResponseTimeout => "response_timeout",
            GatewayError::NotAuthoritative(_) => "not_authoritative",
        }
    }

    /// A failure to open a connection (the circuit breaker counts these).
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            GatewayError::Dns(_)
                | GatewayError::Refused
                | GatewayError::ConnectTimeout
                | GatewayError::Tls(_)
                | GatewayError::Protocol(_)
        )
    }

    /// The exchange failed from an HTTP/2 error on a stream.
    pub(super) fn from_hyper(e: &hyper::Error) -> GatewayError {
        use std::error::Error as _;
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(h2) = s.downcast_ref::<h2::Error>() {
                if h2.is_go_away() {
                    return GatewayError::GoingAway;
                }
                if h2.is_reset() {
                    return if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                        GatewayError::GoingAway
                    } else {
                        GatewayError::StreamReset
                    };
                }
            }
            source = s.source();
        }
        if e.is_canceled() {
            GatewayError::GoingAway
        } else {
            GatewayError::ConnectionLost
        }
    }

    /// Nothing reached the gateway: another connection may take the request.
    pub fn may_retry(&self) -> bool {
        matches!(self, GatewayError::GoingAway)
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GatewayError::Dns(e) => write!(f, "the gateway's name did not resolve: {e}"),
            GatewayError::Refused => f.write_str("the gateway refused the connection"),
            GatewayError::ConnectTimeout => f.write_str("no connection to the gateway in time"),
            GatewayError::Tls(e) => write!(f, "TLS with the gateway failed: {e}"),
            GatewayError::Protocol(e) => write!(f, "HTTP/2 with the gateway failed: {e}"),
            GatewayError::CircuitOpen { retry_in } => write!(
                f,
                "the gateway is unavailable; next attempt in {} ms",
                retry_in.as_millis()
            ),
            GatewayError::Saturated => f.write_str("every gateway connection is full"),
            GatewayError::GoingAway => f.write_str("the gateway connection is going away"),
            GatewayError::StreamReset => f.write_str("the gateway reset the stream"),
            GatewayError::ConnectionLost => f.write_str("the gateway connection was lost"),
            GatewayError::ResponseTimeout => f.write_str("the gateway did not answer in time"),
            GatewayError::NotAuthoritative(host) => {
                write!(f, "gateway is not authoritative for {host}")
            }
        }
    }
}

//! One request's identity and bookkeeping, whatever front it came from:
//! which listener and protocol, what it asked for, and how it ended — counted
//! in `bauta_requests_total` and written as one access-log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bauta_policy::Decision;
use http::Method;

use crate::config::Config;
use crate::core::respond::{Answer, ProxyError};
use crate::ops::access_log::{self, Entry};
use crate::ops::metrics::Metrics;
use crate::seccert::advertiser::Advertiser;
use crate::seccert::coverage::Coverage;
use crate::upstream::dial::{Asker, DialError};

/// The protocol a client spoke to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    Http1,
    Http2,
    Http3,
}

impl Front {
    pub const ALL: [Front; 3] = [Front::Http1, Front::Http2, Front::Http3];

    pub fn as_str(self) -> &'static str {
        match self {
            Front::Http1 => "http1",
            Front::Http2 => "h2",
            Front::Http3 => "h3",
        }
    }
}

/// What we know about the client connection a request arrived on.
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub front: Front,
    /// TLS-terminated: requests without a scheme are `https` requests to us.
    pub tls: bool,
    /// Who is asking, from a verified client certificate; `None`: anonymous.
    pub identity: Option<Arc<str>>,
    /// Origins this connection may be served directly for.
    pub coverage: Arc<Coverage>,
    /// Sends secondary certificates on this connection (HTTP/2, HTTP/3).
    pub advertiser: Option<Arc<Advertiser>>,
    /// CONNECT-UDP flows open on this connection (`[limits]
    /// max_udp_flows_per_connection`).
    pub udp_flows: Arc<std::sync::atomic::AtomicUsize>,
}

/// What kind of service a request asks for (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Connect,
    ConnectUdp,
    Forward,
    Reverse,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Connect,
        Kind::ConnectUdp,
        Kind::Forward,
        Kind::Reverse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::ConnectUdp => "connect-udp",
            Kind::Forward => "forward",
            Kind::Reverse => "reverse",
        }
    }
}

/// One request's bookkeeping, carried from arrival to the log line.
#[derive(Clone)]
pub struct Exchange {
    pub conn: Arc<ConnInfo>,
    /// The configuration snapshot this request is served under, start to end.
    pub config: Arc<Config>,
    pub method: Method,
    pub kind: Kind,
    pub target: String,
    pub started: Instant,
    /// Who asks: the connection's verified certificate, else the user a
    /// `Proxy-Authorization` credential proved; `None`: anonymous.
    pub identity: Option<Arc<str>>,
    /// How the request leaves this proxy (the access log's `via`).
    pub via: Via,
}

/// Dialled here, sent through the `[gateway]`, or sent through it as
/// `https://` (TLS origination).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Direct,
    Gateway,
    Originated,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Gateway => "gateway",
            Via::Originated => "originated",
        }
    }
}

/// An error together with the policy decision, when one was made.
pub type Failure = (ProxyError, Option<Decision>);

/// A dial error as a [`Failure`], keeping the decision of a denial.
pub fn dial_failure(e: DialError) -> Failure {
    let decision = match &e {
        DialError::Denied(d) => Some(d.clone()),
        _ => None,
    };
    (ProxyError::Dial(e), decision)
}

// === impl ConnInfo ===

impl ConnInfo {
    /// The same connection, speaking `front` (a sniffed plaintext
    /// connection learns its protocol from the first request).
    pub fn with_front(&self, front: Front) -> ConnInfo {
        ConnInfo {
            listener: Arc::clone(&self.listener),
            client: self.client,
            front,
            tls: self.tls,
            identity: self.identity.clone(),
            coverage: Arc::clone(&self.coverage),
            advertiser: self.advertiser.clone(),
            udp_flows: Arc::clone(&self.udp_flows),
        }
    }
}

// === impl Exchange ===

impl Exchange {
    pub fn new(
        conn: Arc<ConnInfo>,
        config: Arc<Config>,
        method: Method,
        kind: Kind,
        target: String,
    ) -> Exchange {
        Exchange {
            identity: conn.identity.clone(),
            conn,
            config,
            method,
            kind,
            target,
            started: Instant::now(),
            via: Via::Direct,
        }
    }

    /// Who asks, for the policy.
    pub fn asker(&self) -> Asker<'_> {
        Asker {
            client: self.conn.client.ip(),
            identity: self.identity.as_deref(),
        }
    }

    /// Count the request in `bauta_requests_total`.
    pub fn count(&self, metrics: &Metrics, outcome: &str) {
        metrics
            .requests
            .with_label_values(&[
                &self.conn.listener,
                self.conn.front.as_str(),
                self.kind.as_str(),
                outcome,
            ])
            .inc();
    }

    /// Write the access-log line.
    pub fn log(&self, decision: Option<&Decision>, status: u16, outcome: &str, up: u64, down: u64) {
        access_log::write(&Entry {
            listener: &self.conn.listener,
            client: self.conn.client,
            identity: self.identity.as_deref(),
            protocol: self.conn.front.as_str(),
            method: self.method.as_str(),
            kind: self.kind.as_str(),
            target: &self.target,
            decision,
            status,
            outcome,
            bytes_up: up,
            bytes_down: down,
            duration: self.started.elapsed(),
            via: self.via.as_str(),
        });
    }

    /// Count and log a failed exchange, answered with `answer`.
    pub fn fail(&self, metrics: &Metrics, answer: &Answer, decision: Option<&Decision>) {
        let status = answer.status.as_u16();
        self.count(metrics, answer.outcome);
        self.log(decision, status, answer.outcome, 0, 0);
        macro_rules! refused {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    client = %self.conn.client,
                    kind = self.kind.as_str(),
                    status,
                    error = answer.error,
                    details = %answer.details,
                    "request refused"
                )
            };
        }
        match answer.level {
            tracing::Level::WARN => refused!(tracing::Level::WARN),
            tracing::Level::INFO => refused!(tracing::Level::INFO),
            _ => refused!(tracing::Level::DEBUG),
        }
    }
}

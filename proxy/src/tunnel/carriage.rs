//! How HTTP datagrams (RFC 9297) travel on each leg of a CONNECT-UDP flow:
//! as QUIC DATAGRAM frames or as DATAGRAM capsules on the request stream.
//! Counted into `bauta_http_datagrams_total{leg, direction, carriage}` so
//! that an operator sees which path a flow really took (a chain that fell
//! back to capsules costs head-of-line blocking and retransmission).

use prometheus::IntCounter;

use crate::ops::metrics::Metrics;

/// The `leg` label values.
pub const LEGS: &[&str] = &["client", "gateway"];
/// The `carriage` label values.
pub const CARRIAGES: &[&str] = &["quic", "capsule"];

/// Which side of this proxy a leg is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// This proxy's client.
    Client,
    /// The parent gateway (sidecar mode).
    Gateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriage {
    Quic,
    Capsule,
}

/// The counters of one leg, looked up once per flow.
pub struct LegCounters {
    /// Indexed by [`Carriage`].
    received: [IntCounter; 2],
    sent: [IntCounter; 2],
}

impl LegCounters {
    pub fn new(m: &Metrics, leg: Leg) -> LegCounters {
        // What arrives from the client goes toward the target (upstream);
        // what arrives from the gateway comes back from it (downstream).
        let (leg, received, sent) = match leg {
            Leg::Client => ("client", "upstream", "downstream"),
            Leg::Gateway => ("gateway", "downstream", "upstream"),
        };
        let c = |direction: &str, carriage: &str| {
            m.http_datagrams
                .with_label_values(&[leg, direction, carriage])
        };
        LegCounters {
            received: [c(received, "quic"), c(received, "capsule")],
            sent: [c(sent, "quic"), c(sent, "capsule")],
        }
    }

    /// One datagram arrived on this leg.
    pub fn received(&self, carriage: Carriage) {
        self.received[carriage as usize].inc();
    }

    /// One datagram left on this leg.
    pub fn sent(&self, carriage: Carriage) {
        self.sent[carriage as usize].inc();
    }
}

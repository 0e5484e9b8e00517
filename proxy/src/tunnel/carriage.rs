//! How HTTP datagrams (RFC 9297) travel on each leg of a CONNECT-UDP flow:
//! as QUIC DATAGRAM frames or as DATAGRAM capsules on the request stream.
//! Counted into `bauta_http_datagrams_total{leg, direction, carriage}` so
//! that an operator sees which path a flow really took (a chain that fell
//! back to capsules costs head-of-line blocking and retransmission).

use prometheus::IntCounter;

use crate::ops::metrics::Metrics;

/// Which side of this proxy a leg is on (the `leg` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// This proxy's client.
    Client,
    /// The parent gateway (sidecar mode).
    Gateway,
}

impl Leg {
    pub const fn as_str(self) -> &'static str {
        match self {
            Leg::Client => "client",
            Leg::Gateway => "gateway",
        }
    }
}

/// How a datagram travelled (the `carriage` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriage {
    Quic,
    Capsule,
}

impl Carriage {
    /// In the order of [`LegCounters`]' arrays.
    pub const ALL: [Carriage; 2] = [Carriage::Quic, Carriage::Capsule];

    pub const fn as_str(self) -> &'static str {
        match self {
            Carriage::Quic => "quic",
            Carriage::Capsule => "capsule",
        }
    }
}

/// The counters of one leg, looked up once per flow.
pub struct LegCounters {
    /// Indexed by [`Carriage`] (the order of [`Carriage::ALL`]).
    received: [IntCounter; 2],
    sent: [IntCounter; 2],
}

impl LegCounters {
    pub fn new(m: &Metrics, leg: Leg) -> LegCounters {
        // What arrives from the client goes toward the target (upstream);
        // what arrives from the gateway comes back from it (downstream).
        let (received, sent) = match leg {
            Leg::Client => ("upstream", "downstream"),
            Leg::Gateway => ("downstream", "upstream"),
        };
        let counters = |direction: &str| {
            Carriage::ALL.map(|c| {
                m.http_datagrams
                    .with_label_values(&[leg.as_str(), direction, c.as_str()])
            })
        };
        LegCounters {
            received: counters(received),
            sent: counters(sent),
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

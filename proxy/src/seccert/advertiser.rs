//! What to send when (spec `secondary-certs.md` §3, §8): `eager` sends every
//! configured origin once the client's SETTINGS shows the feature;
//! `on-connect` sends an origin's certificate when a CONNECT to it arrives,
//! at most once per connection, before the CONNECT is answered. Sent origins
//! join the connection's [`Coverage`], which makes later requests for them
//! reverse-proxied instead of misdirected.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::config::origin::{Advertise, Origins};
use crate::ops::metrics::Metrics;
use crate::seccert::coverage::Coverage;
use crate::seccert::h2_shim::H2Control;
use crate::seccert::h3_shim::H3Control;
use crate::seccert::negotiation::{Negotiation, SendError};
use crate::seccert::ServerAuthenticator;
use crate::wire::target::Target;

/// The connection's SERVER_CERTIFICATE carrier.
#[derive(Clone, Debug)]
pub enum Channel {
    H2(H2Control),
    H3(H3Control),
}

impl Channel {
    fn protocol(&self) -> &'static str {
        match self {
            Channel::H2(_) => "h2",
            Channel::H3(_) => "h3",
        }
    }

    pub fn negotiation(&self) -> Negotiation {
        match self {
            Channel::H2(c) => c.negotiation(),
            Channel::H3(c) => c.negotiation(),
        }
    }

    pub async fn negotiated(&self) -> Negotiation {
        match self {
            Channel::H2(c) => c.negotiated().await,
            Channel::H3(c) => c.negotiated().await,
        }
    }

    fn send(&self, authenticator: Bytes) -> Result<(), SendError> {
        match self {
            Channel::H2(c) => c.send_server_certificate(authenticator),
            Channel::H3(c) => c.send_server_certificate(authenticator),
        }
    }
}

/// One connection's advertiser.
pub struct Advertiser {
    channel: Channel,
    mode: Advertise,
    /// `None` when this connection cannot carry authenticators (no TLS 1.3
    /// exporter, no captured ClientHello): nothing is ever sent.
    authenticator: Option<Mutex<ServerAuthenticator>>,
    origins: Arc<Origins>,
    coverage: Arc<Coverage>,
    metrics: Arc<Metrics>,
}

// === impl Advertiser ===

impl Advertiser {
    pub fn new(
        channel: Channel,
        mode: Advertise,
        authenticator: Option<ServerAuthenticator>,
        origins: Arc<Origins>,
        coverage: Arc<Coverage>,
        metrics: Arc<Metrics>,
    ) -> Arc<Advertiser> {
        Arc::new(Advertiser {
            channel,
            mode,
            authenticator: authenticator.map(Mutex::new),
            origins,
            coverage,
            metrics,
        })
    }

    /// The advertiser of a new connection under `config`, already started
    /// (`eager` begins as soon as the client's SETTINGS allows).
    pub fn for_connection(
        channel: Channel,
        config: &crate::config::Config,
        authenticator: Option<ServerAuthenticator>,
        coverage: Arc<Coverage>,
        metrics: Arc<Metrics>,
    ) -> Arc<Advertiser> {
        let a = Advertiser::new(
            channel,
            config.secondary.advertise,
            authenticator,
            Arc::clone(&config.origins),
            coverage,
            metrics,
        );
        a.start();
        a
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// `eager`: wait for the client's SETTINGS, then send every origin.
    pub fn start(self: &Arc<Self>) {
        if self.mode != Advertise::Eager || self.authenticator.is_none() || self.origins.is_empty()
        {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if this.channel.negotiated().await == Negotiation::Enabled {
                for i in 0..this.origins.len() {
                    this.send(i);
                }
            }
        });
    }

    /// `on-connect`: a CONNECT to `target` arrived. If it names a configured
    /// origin not yet sent on this connection, send its certificate now — or,
    /// if the client's SETTINGS has not been seen yet (HTTP/3), as soon as it
    /// is. Never delays the CONNECT beyond building the authenticator.
    pub fn on_connect(self: &Arc<Self>, target: &Target) {
        if self.mode != Advertise::OnConnect || self.authenticator.is_none() {
            return;
        }
        let bauta_policy::Host::Name(host) = &target.host else {
            return;
        };
        let Some((index, _)) = self.origins.find(host, target.port) else {
            return;
        };
        if self.coverage.was_sent(index) {
            return;
        }
        match self.channel.negotiation() {
            Negotiation::Enabled => self.send(index),
            Negotiation::Pending => {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    if this.channel.negotiated().await == Negotiation::Enabled {
                        this.send(index);
                    }
                });
            }
            Negotiation::Disabled | Negotiation::Closed => {}
        }
    }

    /// Build and queue the authenticator for origin `index`, once.
    fn send(&self, index: usize) {
        let Some(origin) = self.origins.list.get(index) else {
            return;
        };
        let Some(auth) = &self.authenticator else {
            return;
        };
        if self.coverage.was_sent(index) {
            return;
        }
        let protocol = self.channel.protocol();
        let bytes = {
            let Ok(mut auth) = auth.lock() else {
                return;
            };
            let rng = crate::tls::provider().secure_random;
            match auth.authenticator(&origin.cert, rng) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(origin = %origin.host, error = %e, "cannot build an authenticator");
                    self.count_error(protocol, "authenticator");
                    return;
                }
            }
        };
        match self.channel.send(bytes) {
            Ok(()) => {
                self.coverage.mark_sent(index);
                self.metrics
                    .secondary_certs_sent
                    .with_label_values(&[protocol, self.mode.as_str()])
                    .inc();
            }
            Err(SendError::TooLarge { len, max }) => {
                // Project rule (spec §4.3): one authenticator per frame, or none.
                tracing::warn!(origin = %origin.host, len, max, "authenticator exceeds the client's frame size; keeps being tunnelled");
                self.count_error(protocol, "too_large");
            }
            Err(e) => {
                tracing::debug!(origin = %origin.host, error = %e, "SERVER_CERTIFICATE not sent");
            }
        }
    }

    fn count_error(&self, protocol: &str, kind: &str) {
        self.metrics
            .secondary_cert_errors
            .with_label_values(&[protocol, kind])
            .inc();
    }
}

//! What to send when (spec `secondary-certs.md` §3, §8): `eager` sends every
//! configured origin once the client's SETTINGS shows the feature;
//! `on-connect` sends an origin's certificate when a CONNECT to it arrives,
//! at most once per connection, before the CONNECT is answered. Sent origins
//! join the connection's [`Coverage`], which makes later requests for them
//! reverse-proxied instead of misdirected.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::ops::metrics::Metrics;
use crate::seccert::coverage::Coverage;
use crate::seccert::h2_shim::H2Control;
use crate::seccert::h3_shim::H3Control;
use crate::seccert::negotiation::{Negotiation, SendError};
use crate::seccert::{OriginCert, ServerAuthenticator};
use crate::wire::target::Target;

/// How certificates are advertised on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Advertise {
    /// Every configured origin right after the client's SETTINGS.
    Eager,
    /// An origin's certificate when a CONNECT to it arrives.
    OnConnect,
    /// Never.
    Off,
}

impl Advertise {
    pub fn as_str(self) -> &'static str {
        match self {
            Advertise::Eager => "eager",
            Advertise::OnConnect => "on-connect",
            Advertise::Off => "off",
        }
    }
}

/// The origins a connection may prove: each one's authority and
/// certificate, in configuration order.
pub type Provable = Arc<[(Target, Arc<OriginCert>)]>;

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
    origins: Provable,
    coverage: Arc<Coverage>,
    metrics: Arc<Metrics>,
}

// === impl Advertiser ===

impl Advertiser {
    pub fn new(
        channel: Channel,
        mode: Advertise,
        authenticator: Option<ServerAuthenticator>,
        origins: Provable,
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
            if this.channel.negotiated().await != Negotiation::Enabled {
                return;
            }
            for (authority, cert) in this.origins.iter() {
                // Each new authenticator costs a signature: let the
                // connection's requests run between them, and stop signing
                // for a connection that is gone.
                if this.channel.negotiation() != Negotiation::Enabled {
                    return;
                }
                if this.send(authority, cert) {
                    tokio::task::yield_now().await;
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
        let Some((authority, cert)) = self.origins.iter().find(|(a, _)| a == target) else {
            return;
        };
        if self.coverage.was_sent(authority) {
            return;
        }
        match self.channel.negotiation() {
            Negotiation::Enabled => {
                self.send(authority, cert);
            }
            Negotiation::Pending => {
                let this = Arc::clone(self);
                let (authority, cert) = (authority.clone(), Arc::clone(cert));
                tokio::spawn(async move {
                    if this.channel.negotiated().await == Negotiation::Enabled {
                        this.send(&authority, &cert);
                    }
                });
            }
            Negotiation::Disabled | Negotiation::Closed => {}
        }
    }

    /// Build and queue the authenticator for one origin, once. An origin
    /// whose certificate already went out on this connection (one
    /// certificate for several origins) is covered without another frame.
    /// The connection's authenticator stays locked from the check to the
    /// send, so two CONNECTs at once cannot send one authenticator twice.
    /// Returns false when there was nothing to build (already covered).
    fn send(&self, authority: &Target, cert: &Arc<OriginCert>) -> bool {
        let Some(auth) = &self.authenticator else {
            return false;
        };
        let Ok(mut auth) = auth.lock() else {
            return false;
        };
        if self.coverage.was_sent(authority) {
            return false;
        }
        if auth.was_sent(cert) {
            self.coverage.mark_sent(authority);
            return false;
        }
        let protocol = self.channel.protocol();
        let rng = crate::tls::provider().secure_random;
        let bytes = match auth.authenticator(cert, rng) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(origin = %authority, error = %e, "cannot build an authenticator");
                self.count_error(protocol, "authenticator");
                return true;
            }
        };
        match self.channel.send(bytes) {
            Ok(()) => {
                auth.mark_sent(cert);
                self.coverage.mark_sent(authority);
                self.metrics
                    .secondary_certs_sent
                    .with_label_values(&[protocol, self.mode.as_str()])
                    .inc();
            }
            Err(SendError::TooLarge { len, max }) => {
                // Project rule (spec §4.3): one authenticator per frame, or none.
                tracing::warn!(origin = %authority, len, max, "authenticator exceeds the client's frame size; keeps being tunnelled");
                self.count_error(protocol, "too_large");
            }
            Err(e) => {
                tracing::debug!(origin = %authority, error = %e, "SERVER_CERTIFICATE not sent");
            }
        }
        true
    }

    fn count_error(&self, protocol: &str, kind: &str) {
        self.metrics
            .secondary_cert_errors
            .with_label_values(&[protocol, kind])
            .inc();
    }
}

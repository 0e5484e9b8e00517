//! TCP listeners: accept, optional TLS with ALPN, and — for every connection
//! that may speak HTTP/2 — the HTTP/2 shim (the control-frame flood guard,
//! and on TLS 1.3 with origins to prove the secondary-certificate extension
//! with its advertiser); then the HTTP/1.1 + HTTP/2 front serves the
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::{Config, ListenerSpec};
use crate::core::context::Services;
use crate::core::exchange::{ConnInfo, Front};
use crate::front::hyper_front;
use crate::listen::admission::Admission;
use crate::listen::connections::{Connections, Watcher};
use crate::seccert::advertiser::{Advertise, Advertiser, Channel};
use crate::seccert::coverage::Coverage;
use crate::seccert::h2_shim::{self, FloodLimits, H2Control, H2ShimConfig};
use crate::seccert::{CapturingResolver, Exporter, ServerAuthenticator};
use crate::tls::identity::client_identity;

/// Accept until `shutdown` flips to true; each connection is watched by
/// `graceful` and holds a place in `admission` (over a cap it is closed at
/// once, before a byte is read or written).
pub async fn accept_loop(
    listener: TcpListener,
    spec: ListenerSpec,
    services: Arc<Services>,
    graceful: Connections,
    admission: Arc<Admission>,
    mut shutdown: watch::Receiver<bool>,
    alt_svc: Option<http::HeaderValue>,
) {
    let spec = Arc::new(spec);
    loop {
        let (stream, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %spec.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // The connection's snapshot, taken once: its listener (certificates
        // reload on SIGHUP; the socket stays) and everything else.
        let config = services.snapshot();
        let slot = match admission.admit(client.ip(), &config.limits) {
            Ok(slot) => slot,
            Err(refused) => {
                tracing::debug!(listener = %spec.name, %client, cap = refused.as_str(), "connection cap reached; closing");
                services
                    .metrics
                    .connections_refused
                    .with_label_values(&[&spec.name, refused.as_str()])
                    .inc();
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let spec = match config.listener(&spec.name) {
            Some(current) => Arc::new(current.clone()),
            None => Arc::clone(&spec),
        };
        let services = Arc::clone(&services);
        let watcher = graceful.watcher();
        let alt_svc = alt_svc.clone();
        tokio::spawn(async move {
            serve_connection(stream, client, spec, config, services, watcher, alt_svc).await;
            drop(slot);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    spec: Arc<ListenerSpec>,
    config: Arc<Config>,
    services: Arc<Services>,
    watcher: Watcher,
    alt_svc: Option<http::HeaderValue>,
) {
    let coverage = Arc::new(Coverage::new(Arc::clone(&spec.handshake_covers)));
    let Some(tls) = &spec.tls else {
        let front = if spec.http1 { None } else { Some(Front::Http2) };
        let info = conn_info(
            &spec,
            client,
            front.unwrap_or(Front::Http1),
            coverage,
            None,
            None,
        );
        if !spec.h2 {
            return serve_http(stream, info, &spec, &config, services, watcher, front, None).await;
        }
        // h2c by prior knowledge, or sniffed: without the HTTP/2 preface the
        // shim passes HTTP/1.1 through untouched.
        let (io, control) = h2_shim::wrap(stream, shim_config(&config, false));
        serve_http(
            io,
            info,
            &spec,
            &config,
            Arc::clone(&services),
            watcher,
            front,
            None,
        )
        .await;
        count_flood(&services, &control);
        return;
    };
    // Secondary certificates need the ClientHello's signature schemes.
    let secondary =
        spec.h2 && config.secondary.advertise != Advertise::Off && !config.origins.is_empty();
    let (tls_config, hello) = if secondary {
        let (c, slot) = CapturingResolver::config_for_connection(tls);
        (c, Some(slot))
    } else {
        (Arc::clone(tls), None)
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    let handshake_timeout = config
        .limits
        .handshake_timeout
        .min(config.limits.client_idle_timeout);
    let tls_stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%client, error = %e, "TLS handshake failed");
            if let Some(reason) = crate::tls::mtls_failure_io(&e) {
                services
                    .metrics
                    .auth_failures
                    .with_label_values(&["mtls", reason])
                    .inc();
            }
            return;
        }
        Err(_) => {
            tracing::debug!(%client, "TLS handshake timed out");
            return;
        }
    };
    let session = tls_stream.get_ref().1;
    // Verified by the handshake (client_ca); who the certificate names.
    let identity = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| client_identity(leaf, &spec.identity_from));
    let front = match session.alpn_protocol() {
        Some(b"h2") => Front::Http2,
        _ => Front::Http1,
    };
    // The handshake is complete here (client Finished verified); only on
    // TLS 1.3 do we offer the extension (spec §2).
    let tls13 = session.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    if front != Front::Http2 {
        let info = conn_info(&spec, client, front, coverage, None, identity);
        return serve_http(
            tls_stream,
            info,
            &spec,
            &config,
            services,
            watcher,
            Some(front),
            alt_svc,
        )
        .await;
    }
    // Every HTTP/2 connection goes through the shim (the flood guard); the
    // secondary-certificate extension only on TLS 1.3 with origins to prove.
    let secondary = secondary && tls13;
    let authenticator = match (Exporter::from_rustls(session), hello.and_then(|h| h.get())) {
        (Ok(exporter), Some(hello)) if secondary => {
            Some(ServerAuthenticator::new(exporter, &hello.signature_schemes))
        }
        _ => None,
    };
    let (io, control) = h2_shim::wrap(tls_stream, shim_config(&config, authenticator.is_some()));
    let advertiser = secondary.then(|| {
        let advertiser = Advertiser::new(
            Channel::H2(control.clone()),
            config.secondary.advertise,
            authenticator,
            config.origins.provable(),
            Arc::clone(&coverage),
            Arc::clone(&services.metrics),
        );
        advertiser.start();
        advertiser
    });
    let metrics = Arc::clone(&services.metrics);
    let info = conn_info(&spec, client, front, coverage, advertiser, identity);
    serve_http(
        io,
        info,
        &spec,
        &config,
        Arc::clone(&services),
        watcher,
        Some(front),
        alt_svc,
    )
    .await;
    count_flood(&services, &control);
    if let Some(v) = control.violation() {
        tracing::debug!(%client, violation = %v, "client broke the secondary-certificate rules");
        metrics
            .secondary_cert_errors
            .with_label_values(&["h2", v.as_str()])
            .inc();
    }
}

fn shim_config(config: &Config, secondary: bool) -> H2ShimConfig {
    H2ShimConfig {
        codepoints: config.secondary.codepoints,
        enabled: secondary,
        flood: FloodLimits {
            per_s: config.limits.h2_control_frames_per_s,
            burst: config.limits.h2_control_frames_burst,
        },
        // An encoded block is no larger than the list it decodes to, but
        // a block over the limit still moves h2's HPACK table: room for it.
        max_header_block: config.limits.max_header_list_size as usize + 16 * 1024,
    }
}

/// A connection the shim closed for a control-frame flood is counted.
fn count_flood(services: &Services, control: &H2Control) {
    if let Some(kind) = control.flood() {
        services
            .metrics
            .protocol_floods
            .with_label_values(&["h2", kind.as_str()])
            .inc();
    }
}

fn conn_info(
    spec: &ListenerSpec,
    client: SocketAddr,
    front: Front,
    coverage: Arc<Coverage>,
    advertiser: Option<Arc<Advertiser>>,
    identity: Option<Arc<str>>,
) -> ConnInfo {
    ConnInfo {
        listener: Arc::clone(&spec.name),
        client,
        front,
        tls: spec.tls.is_some(),
        identity,
        coverage,
        advertiser,
        udp_flows: Default::default(),
    }
}

/// Count the connection and hand it to the HTTP/1.1 + HTTP/2 front.
#[allow(clippy::too_many_arguments)]
async fn serve_http<IO>(
    io: IO,
    info: ConnInfo,
    spec: &ListenerSpec,
    config: &Config,
    services: Arc<Services>,
    mut watcher: Watcher,
    front: Option<Front>,
    alt_svc: Option<http::HeaderValue>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    services
        .metrics
        .connections
        .with_label_values(&[&spec.name, info.front.as_str()])
        .inc();
    hyper_front::serve_connection(
        io,
        info,
        services,
        watcher.stopping(),
        front,
        spec.h2,
        alt_svc,
        &config.limits,
    )
    .await;
}

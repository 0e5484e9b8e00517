//! TCP listeners: accept, optional TLS with ALPN, then HTTP/1.1 or HTTP/2
//! (hyper) with every request going to `serve::handle`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::origin::Advertise;
use crate::config::ListenerSpec;
use crate::core::context::Shared;
use crate::core::exchange::{ConnInfo, Front};
use crate::core::serve;
use crate::seccert::advertiser::{Advertiser, Channel};
use crate::seccert::coverage::Coverage;
use crate::seccert::h2_shim::{self, H2ShimConfig};
use crate::seccert::{CapturingResolver, Exporter, ServerAuthenticator};

/// A TLS handshake that takes longer than this is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Slowloris guard: the request header section must arrive within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accept until `shutdown` flips to true; each connection is watched by `graceful`.
pub async fn accept_loop(
    listener: TcpListener,
    spec: ListenerSpec,
    shared: Arc<Shared>,
    graceful: crate::server::shutdown::Tracker,
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
        let _ = stream.set_nodelay(true);
        // The listener as the current configuration has it (certificates
        // reload on SIGHUP; the socket stays).
        let spec = match shared.config().listener(&spec.name) {
            Some(current) => Arc::new(current.clone()),
            None => Arc::clone(&spec),
        };
        let shared = Arc::clone(&shared);
        let watcher = graceful.watcher();
        let alt_svc = alt_svc.clone();
        tokio::spawn(async move {
            serve_connection(stream, client, spec, shared, watcher, alt_svc).await;
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    spec: Arc<ListenerSpec>,
    shared: Arc<Shared>,
    watcher: Watcher,
    alt_svc: Option<http::HeaderValue>,
) {
    let coverage = Arc::new(Coverage::new(Arc::clone(&spec.handshake_covers)));
    let Some(tls) = &spec.tls else {
        let front = if spec.http1 { None } else { Some(Front::Http2) };
        let conn = Conn {
            client,
            coverage,
            advertiser: None,
        };
        return serve_http(stream, conn, &spec, shared, watcher, front, None).await;
    };
    let config = shared.config();
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
    let tls_stream =
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%client, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%client, "TLS handshake timed out");
                return;
            }
        };
    let session = tls_stream.get_ref().1;
    let front = match session.alpn_protocol() {
        Some(b"h2") => Front::Http2,
        _ => Front::Http1,
    };
    // The handshake is complete here (client Finished verified); only on
    // TLS 1.3 do we offer the extension (spec §2).
    let tls13 = session.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    if !(secondary && front == Front::Http2 && tls13) {
        let conn = Conn {
            client,
            coverage,
            advertiser: None,
        };
        return serve_http(
            tls_stream,
            conn,
            &spec,
            shared,
            watcher,
            Some(front),
            alt_svc,
        )
        .await;
    }
    let authenticator = match (Exporter::from_rustls(session), hello.and_then(|h| h.get())) {
        (Ok(exporter), Some(hello)) => {
            Some(ServerAuthenticator::new(exporter, &hello.signature_schemes))
        }
        _ => None,
    };
    let (io, control) = h2_shim::wrap(
        tls_stream,
        H2ShimConfig {
            codepoints: config.secondary.codepoints,
            enabled: authenticator.is_some(),
        },
    );
    let advertiser = Advertiser::for_connection(
        Channel::H2(control.clone()),
        &config,
        authenticator,
        Arc::clone(&coverage),
        Arc::clone(&shared.metrics),
    );
    let metrics = Arc::clone(&shared.metrics);
    let conn = Conn {
        client,
        coverage,
        advertiser: Some(advertiser),
    };
    serve_http(io, conn, &spec, shared, watcher, Some(front), alt_svc).await;
    if let Some(v) = control.violation() {
        tracing::debug!(%client, violation = %v, "client broke the secondary-certificate rules");
        metrics
            .secondary_cert_errors
            .with_label_values(&["h2", v.as_str()])
            .inc();
    }
}

/// Per-connection state handed to the HTTP server.
struct Conn {
    client: SocketAddr,
    coverage: Arc<Coverage>,
    advertiser: Option<Arc<Advertiser>>,
}

/// `front = None`: plaintext with both protocols enabled; sniff the preface.
async fn serve_http<IO>(
    io: IO,
    conn: Conn,
    spec: &ListenerSpec,
    shared: Arc<Shared>,
    watcher: Watcher,
    front: Option<Front>,
    alt_svc: Option<http::HeaderValue>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .preserve_header_case(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        // RFC 8441: lets clients use extended CONNECT (connect-udp).
        .enable_connect_protocol();
    let builder = match front {
        Some(Front::Http2) => builder.http2_only(),
        Some(_) => builder.http1_only(),
        None if spec.h2 => builder,
        None => builder.http1_only(),
    };
    // For a sniffed plaintext connection the protocol is only known per request.
    let conn_front = front.unwrap_or(Front::Http1);
    shared
        .metrics
        .connections
        .with_label_values(&[&spec.name, conn_front.as_str()])
        .inc();
    let client = conn.client;
    let info = Arc::new(ConnInfo {
        listener: Arc::clone(&spec.name),
        client,
        front: conn_front,
        tls: spec.tls.is_some(),
        coverage: conn.coverage,
        advertiser: conn.advertiser,
    });
    let svc = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let mut info = Arc::clone(&info);
        if req.version() == http::Version::HTTP_2 && info.front != Front::Http2 {
            info = Arc::new(ConnInfo {
                listener: Arc::clone(&info.listener),
                client: info.client,
                front: Front::Http2,
                tls: info.tls,
                coverage: Arc::clone(&info.coverage),
                advertiser: info.advertiser.clone(),
            });
        }
        let alt_svc = alt_svc.clone();
        async move {
            let mut resp = serve::handle(shared, info, req).await?;
            if let Some(v) = alt_svc {
                resp.headers_mut().insert(http::header::ALT_SVC, v);
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%client, error = %e, "connection ended with an error");
    }
}

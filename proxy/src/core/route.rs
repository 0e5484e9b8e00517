//! What a request asks for, decided once for every front: [`classify`]
//! names the kind (a metric label even when the request is refused), and
//! [`route`] checks the request's form and picks what serves it. Both are
//! pure: no I/O, no policy (the policy runs while dialling, on the
//! resolved addresses).

use std::sync::Arc;

use bauta_policy::Host;
use http::{header, Method};

use crate::config::origin::Origin;
use crate::config::udp_template::{self, MatchError, UdpHost};
use crate::config::Config;
use crate::core::exchange::Kind;
use crate::core::request::RequestHead;
use crate::core::respond::ProxyError;
use crate::seccert::coverage::Coverage;
use crate::wire::target::Target;

/// What serves a request.
#[derive(Debug)]
pub enum Route {
    /// CONNECT: a TCP tunnel to the target.
    Tunnel(Target),
    /// CONNECT-UDP: a UDP flow to the target.
    UdpTunnel(Target),
    /// An `http://` request forwarded to the target.
    Forward(Target),
    /// An https request for an origin this connection covers: served from
    /// the origin's upstream.
    Reverse(Arc<Origin>),
}

/// CONNECT with `:protocol connect-udp` is CONNECT-UDP, any other CONNECT a
/// tunnel; an `https` request (or, on TLS, one without a scheme) is for us
/// as an origin; anything else is forwarding.
pub fn classify(head: &RequestHead, tls: bool) -> Kind {
    if head.method == Method::CONNECT {
        return match head.protocol.as_deref() {
            Some("connect-udp") => Kind::ConnectUdp,
            _ => Kind::Connect,
        };
    }
    match head.uri.scheme_str() {
        Some("https") => Kind::Reverse,
        None if tls => Kind::Reverse,
        _ => Kind::Forward,
    }
}

/// Check the request's form for its kind and decide what serves it.
pub fn route(
    kind: Kind,
    head: &RequestHead,
    config: &Config,
    coverage: &Coverage,
) -> Result<Route, ProxyError> {
    if let Some(why) = head.malformed {
        return Err(ProxyError::Malformed(why));
    }
    if let Some(why) = head.defect {
        return Err(ProxyError::BadRequest(why));
    }
    match kind {
        Kind::Connect => connect(head).map(Route::Tunnel),
        Kind::ConnectUdp => connect_udp(head, config).map(Route::UdpTunnel),
        Kind::Forward => forward(head).map(Route::Forward),
        Kind::Reverse => reverse(head, config, coverage).map(Route::Reverse),
    }
}

/// CONNECT (RFC 9110 §9.3.6; RFC 9113 §8.5 and RFC 9114 §4.4: only
/// `:authority`, as `host:port`).
fn connect(head: &RequestHead) -> Result<Target, ProxyError> {
    if head.protocol.is_some() {
        return Err(ProxyError::NotImplemented(
            "extended CONNECT protocol is not supported",
        ));
    }
    let uri = &head.uri;
    if uri.scheme().is_some() || uri.path_and_query().is_some() {
        return Err(ProxyError::Malformed(
            "CONNECT needs an authority-form target (host:port) without :scheme or :path",
        ));
    }
    let authority = uri
        .authority()
        .ok_or(ProxyError::Malformed("CONNECT needs host:port"))?;
    // RFC 9114 §4.4 / RFC 9113 §8.5: `:authority` is the host and port;
    // anything else makes the request malformed.
    Target::parse_authority(authority.as_str(), None).map_err(|_| {
        ProxyError::Malformed("CONNECT target must be host:port with a valid host and port")
    })
}

/// CONNECT-UDP (RFC 9298 §3; spec/masque.md §5.6), in the extended CONNECT
/// form every front translates to.
fn connect_udp(head: &RequestHead, config: &Config) -> Result<Target, ProxyError> {
    // RFC 9297 §3.2: a message using the Capsule Protocol carries no content;
    // Content-Length / Content-Type / Transfer-Encoding make it malformed.
    let h = &head.headers;
    if h.contains_key(header::CONTENT_LENGTH)
        || h.contains_key(header::CONTENT_TYPE)
        || h.contains_key(header::TRANSFER_ENCODING)
    {
        return Err(ProxyError::Malformed(
            "CONNECT-UDP requests carry no content (Content-Length, Content-Type, Transfer-Encoding)",
        ));
    }
    // RFC 8441 §4 / RFC 9220: :scheme, :authority and a non-empty :path.
    let uri = &head.uri;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(ProxyError::Malformed(
            "extended CONNECT needs :scheme, :authority and :path",
        ));
    }
    if uri.path().is_empty() {
        return Err(ProxyError::Malformed(
            "extended CONNECT needs a non-empty :path",
        ));
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let raw = config
        .connect_udp
        .template
        .match_path(path)
        .map_err(|e| match e {
            MatchError::NoMatch => {
                ProxyError::NotFound("no CONNECT-UDP URI template matches this path")
            }
            MatchError::BadTarget(why) => ProxyError::BadRequest(why),
        })?;
    let (host, port) =
        udp_template::parse_udp_target(&raw.host, &raw.port).map_err(|e| match e {
            MatchError::NoMatch => ProxyError::BadRequest("bad CONNECT-UDP target"),
            MatchError::BadTarget(why) => ProxyError::BadRequest(why),
        })?;
    let host = match host {
        UdpHost::Ip(ip) => Host::Ip(ip),
        UdpHost::Name(n) => Host::parse(&n)
            .map_err(|_| ProxyError::BadRequest("target_host is not a valid host name"))?,
    };
    Ok(Target { host, port })
}

/// Absolute-form `http://` (HTTP/1.1) or `:scheme http` (HTTP/2, HTTP/3).
fn forward(head: &RequestHead) -> Result<Target, ProxyError> {
    let uri = &head.uri;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => {
            return Err(ProxyError::BadRequest(
                "only http:// targets can be forwarded",
            ))
        }
        None => return Err(ProxyError::NotProxyRequest),
    }
    let authority = uri.authority().ok_or(ProxyError::BadRequest(
        "absolute-form target needs an authority",
    ))?;
    Target::parse_authority(authority.as_str(), Some(80))
        .map_err(|_| ProxyError::BadRequest("request target has an invalid host or port"))
}

/// An https request to us: the origin it names, if this connection covers it
/// (its handshake certificate, or a secondary certificate sent on it);
/// otherwise 421 (RFC 9110 §15.5.20).
fn reverse(
    head: &RequestHead,
    config: &Config,
    coverage: &Coverage,
) -> Result<Arc<Origin>, ProxyError> {
    let authority = head
        .authority()
        .ok_or(ProxyError::BadRequest("request has no authority"))?;
    let target = Target::parse_authority(authority, Some(443))
        .map_err(|_| ProxyError::BadRequest("request authority is invalid"))?;
    if matches!(target.host, Host::Ip(_)) {
        return Err(ProxyError::Misdirected);
    }
    let origin = config
        .origins
        .find(&target)
        .ok_or(ProxyError::Misdirected)?;
    if !coverage.covers(&origin.authority) {
        return Err(ProxyError::Misdirected);
    }
    Ok(Arc::clone(origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Uri, Version};

    fn head(method: Method, uri: &str) -> RequestHead {
        RequestHead::new(
            method,
            uri.parse::<Uri>().expect("uri"),
            Version::HTTP_2,
            HeaderMap::new(),
        )
    }

    fn config() -> Config {
        let text =
            "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n";
        Config::parse(text, "test.toml", std::path::Path::new(".")).expect("minimal config")
    }

    fn routed(h: &RequestHead, tls: bool) -> Result<Route, ProxyError> {
        route(classify(h, tls), h, &config(), &Coverage::default())
    }

    #[test]
    fn classifies_every_kind() {
        let mut udp = head(Method::CONNECT, "https://p/.well-known/masque/udp/h/53/");
        udp.protocol = Some("connect-udp".into());
        assert_eq!(classify(&udp, true), Kind::ConnectUdp);
        assert_eq!(
            classify(&head(Method::CONNECT, "h:1"), false),
            Kind::Connect
        );
        assert_eq!(
            classify(&head(Method::GET, "http://h/"), true),
            Kind::Forward
        );
        assert_eq!(
            classify(&head(Method::GET, "https://h/"), false),
            Kind::Reverse
        );
        assert_eq!(classify(&head(Method::GET, "/x"), true), Kind::Reverse);
        assert_eq!(classify(&head(Method::GET, "/x"), false), Kind::Forward);
    }

    #[test]
    fn connect_forms() {
        assert!(matches!(
            routed(&head(Method::CONNECT, "h.test:443"), false),
            Ok(Route::Tunnel(t)) if t.port == 443
        ));
        assert!(matches!(
            routed(&head(Method::CONNECT, "h.test"), false),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            routed(&head(Method::CONNECT, "https://h.test:443/"), false),
            Err(ProxyError::Malformed(_))
        ));
        let mut ws = head(Method::CONNECT, "https://h.test/chat");
        ws.protocol = Some("websocket".into());
        assert!(matches!(
            routed(&ws, true),
            Err(ProxyError::NotImplemented(_))
        ));
    }

    #[test]
    fn connect_udp_forms() {
        let mut ok = head(
            Method::CONNECT,
            "https://p/.well-known/masque/udp/192.0.2.1/53/",
        );
        ok.protocol = Some("connect-udp".into());
        assert!(matches!(routed(&ok, true), Ok(Route::UdpTunnel(t)) if t.port == 53));

        let mut miss = head(Method::CONNECT, "https://p/elsewhere");
        miss.protocol = Some("connect-udp".into());
        assert!(matches!(routed(&miss, true), Err(ProxyError::NotFound(_))));

        let mut port0 = head(Method::CONNECT, "https://p/.well-known/masque/udp/h/0/");
        port0.protocol = Some("connect-udp".into());
        assert!(matches!(
            routed(&port0, true),
            Err(ProxyError::BadRequest(_))
        ));

        let mut body = head(Method::CONNECT, "https://p/.well-known/masque/udp/h/53/");
        body.protocol = Some("connect-udp".into());
        body.headers
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
        assert!(matches!(routed(&body, true), Err(ProxyError::Malformed(_))));
    }

    #[test]
    fn forward_and_reverse_forms() {
        assert!(matches!(
            routed(&head(Method::GET, "http://h.test/x"), false),
            Ok(Route::Forward(t)) if t.port == 80
        ));
        assert!(matches!(
            routed(&head(Method::GET, "/x"), false),
            Err(ProxyError::NotProxyRequest)
        ));
        assert!(matches!(
            routed(&head(Method::GET, "ftp://h.test/x"), false),
            Err(ProxyError::BadRequest(_))
        ));
        // No origins configured: every https authority is misdirected.
        assert!(matches!(
            routed(&head(Method::GET, "https://h.test/x"), true),
            Err(ProxyError::Misdirected)
        ));
        assert!(matches!(
            routed(&head(Method::GET, "https://192.0.2.1/x"), true),
            Err(ProxyError::Misdirected)
        ));
    }

    #[test]
    fn a_front_defect_is_a_bad_request() {
        let mut h = head(Method::GET, "http://h.test/");
        h.defect = Some("an HTTP/1.1 request needs exactly one Host header");
        assert!(matches!(routed(&h, false), Err(ProxyError::BadRequest(_))));
        h.malformed = Some("connection-specific header field");
        assert!(matches!(routed(&h, false), Err(ProxyError::Malformed(_))));
    }
}

//! Header hygiene between hops: hop-by-hop fields removed (RFC 9110
//! §7.6.1) and `Via` added (RFC 9110 §7.6.3).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// Headers that describe one hop and never travel further (RFC 9110 §7.6.1),
/// plus the de-facto `Proxy-Connection` and `Keep-Alive`.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Remove hop-by-hop fields, including every field the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP.iter() {
        headers.remove(n);
    }
    // Transfer-Encoding is framing of the incoming hop; hyper re-frames.
    headers.remove(header::TRANSFER_ENCODING);
}

/// `Via: 1.1 bauta` (RFC 9110 §7.6.3), with the protocol the request came in on.
pub fn via_value(version: Version, proxy_name: &str) -> HeaderValue {
    let proto = match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    HeaderValue::from_str(&format!("{proto} {proxy_name}"))
        .unwrap_or_else(|_| HeaderValue::from_static("1.1 bauta"))
}

pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    headers.append(header::VIA, via.clone());
}

/// A request head for the next hop: hop-by-hop fields removed, our `Via`
/// appended. Where the authority goes (`Host`, `:authority`) is the
/// caller's.
pub fn onward_request(parts: &mut http::request::Parts, via: &HeaderValue) {
    strip_hop_by_hop(&mut parts.headers);
    append_via(&mut parts.headers, via);
}

/// A response head passed back to our client: our own HTTP version (RFC
/// 9110 §6.2: an HTTP/1.0 upstream must not make us answer 1.0; the
/// client's connection re-frames it anyway), hop-by-hop fields removed,
/// our `Via` appended.
pub fn onward_response(parts: &mut http::response::Parts, via: &HeaderValue) {
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    append_via(&mut parts.headers, via);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn via_names_the_incoming_protocol() {
        assert_eq!(via_value(Version::HTTP_11, "bauta"), "1.1 bauta");
        assert_eq!(via_value(Version::HTTP_2, "edge"), "2 edge");
        assert_eq!(via_value(Version::HTTP_10, "bauta"), "1.0 bauta");
    }
}

//! A request as the core sees it: the fronts translate their protocol's
//! request into a [`RequestHead`] (and a body) and never hand the core a
//! hyper, h2 or h3 type.

use http::{HeaderMap, Method, Uri, Version};

/// The head of one request, protocol-neutral.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    /// `:scheme` / `:authority` / `:path` as they arrived (HTTP/1.1: the
    /// request target).
    pub uri: Uri,
    /// The version the client spoke (for `Via`).
    pub version: Version,
    pub headers: HeaderMap,
    /// The extended CONNECT `:protocol` (RFC 8441, RFC 9220), lower-case.
    /// HTTP/1.1's `Upgrade: connect-udp` arrives here as `connect-udp`.
    pub protocol: Option<Box<str>>,
    /// A framing rule of the front's own protocol that this request broke
    /// (e.g. HTTP/1.1's "exactly one Host"); the core refuses it with 400.
    pub defect: Option<&'static str>,
    /// A message rule of HTTP/2 or HTTP/3 that this request broke and that
    /// the protocol library left to us (RFC 9113 §8.1.1, RFC 9114 §4.1.2):
    /// the core refuses it as malformed (400, then the stream is reset).
    pub malformed: Option<&'static str>,
}

// === impl RequestHead ===

impl RequestHead {
    pub fn new(method: Method, uri: Uri, version: Version, headers: HeaderMap) -> RequestHead {
        RequestHead {
            method,
            uri,
            version,
            headers,
            protocol: None,
            defect: None,
            malformed: None,
        }
    }

    /// Bytes of the request target as received (scheme, authority, path
    /// and query), without building the string.
    pub fn target_len(&self) -> usize {
        let u = &self.uri;
        u.scheme_str().map_or(0, |s| s.len() + 3)
            + u.authority().map_or(0, |a| a.as_str().len())
            + u.path_and_query().map_or(0, |p| p.as_str().len())
    }

    /// The request's authority: the URI's, else the Host field's.
    pub fn authority(&self) -> Option<&str> {
        self.uri.authority().map(|a| a.as_str()).or_else(|| {
            self.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
    }
}

//! What can go wrong on the far side of a forwarded or reverse-proxied
//! request. Says what happened; `core::respond` decides how to answer.

use super::dial::DialError;

#[derive(Debug)]
pub enum UpstreamError {
    /// Policy, DNS or the TCP connect to the next hop failed.
    Dial(DialError),
    /// The request cannot be re-addressed to the next hop (invalid path or authority).
    InvalidTarget(&'static str),
    /// The connection closed before a complete response header arrived.
    Terminated,
    /// No response header arrived within `[limits] response_timeout_s`.
    ResponseTimeout,
    /// The next hop's response was not valid HTTP.
    Protocol,
    /// TLS with the next hop failed.
    TlsHandshake,
    /// The next hop's certificate did not verify.
    TlsCertificate,
    /// The client's request body broke off or was malformed (an invalid
    /// chunk size, a body shorter than its Content-Length) while it was
    /// being sent on: the client's fault, not the next hop's.
    RequestBody,
    /// The client's request body disagreed with its `content-length`
    /// (HTTP/2, HTTP/3): a malformed message (RFC 9113 §8.1.1, RFC 9114
    /// §4.1.2), never sent on complete.
    MalformedBody,
}

impl UpstreamError {
    /// What a failed hyper client exchange means: the request body (ours to
    /// send, read from the client) failing is the client's error; an
    /// unparsable response the next hop's; anything else a terminated
    /// connection.
    pub fn from_exchange(e: &hyper::Error) -> UpstreamError {
        let mismatch = std::error::Error::source(e).is_some_and(crate::body::is_malformed);
        if mismatch {
            UpstreamError::MalformedBody
        } else if e.is_user() {
            UpstreamError::RequestBody
        } else if e.is_parse() || e.is_parse_status() {
            UpstreamError::Protocol
        } else {
            UpstreamError::Terminated
        }
    }
}

impl From<DialError> for UpstreamError {
    fn from(e: DialError) -> Self {
        UpstreamError::Dial(e)
    }
}

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
    /// The next hop's response was not valid HTTP.
    Protocol,
    /// TLS with the next hop failed.
    TlsHandshake,
    /// The next hop's certificate did not verify.
    TlsCertificate,
}

impl From<DialError> for UpstreamError {
    fn from(e: DialError) -> Self {
        UpstreamError::Dial(e)
    }
}

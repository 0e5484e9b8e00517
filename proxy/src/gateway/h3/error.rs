//! What can go wrong on the gateway connection, said once: the caller (the
//! sidecar) decides from the variant whether to retry on a new connection
//! ([`H3Error::is_retryable`]), to answer its own client with a 502, or to
//! give up on one stream only.

use std::io;

use crate::wire::h3_error::H3ErrorCode;

/// RFC 9114 §8.1 codes the client uses that `wire::h3_error` does not name.
pub(super) mod codes {
    use crate::wire::h3_error::H3ErrorCode;

    pub const STREAM_CREATION_ERROR: H3ErrorCode = H3ErrorCode(0x0103);
    pub const CLOSED_CRITICAL_STREAM: H3ErrorCode = H3ErrorCode(0x0104);
    pub const EXCESSIVE_LOAD: H3ErrorCode = H3ErrorCode(0x0107);
    pub const ID_ERROR: H3ErrorCode = H3ErrorCode(0x0108);
    pub const MISSING_SETTINGS: H3ErrorCode = H3ErrorCode(0x010a);
    pub const REQUEST_REJECTED: H3ErrorCode = H3ErrorCode(0x010b);
}

/// Why a gateway connection or one of its streams failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum H3Error {
    /// The caller's options cannot work (TLS config, server name).
    #[error("gateway client configuration: {0}")]
    Config(String),
    /// No QUIC handshake (or no SETTINGS from the peer) within
    /// `connect_timeout`.
    #[error("connecting to the gateway timed out")]
    ConnectTimeout,
    /// The QUIC/TLS handshake failed (certificate refused, ALPN, version).
    #[error("QUIC/TLS handshake with the gateway failed: {0}")]
    Handshake(String),
    /// The connection is gone; the reason as quinn reports it.
    #[error("gateway connection lost: {0}")]
    ConnectionLost(String),
    /// The peer reset our request stream (or stopped reading it).
    #[error("gateway reset the stream with {code:?}")]
    StreamReset { code: H3ErrorCode },
    /// The peer sent GOAWAY (RFC 9114 §5.2) before it took this request, or
    /// rejected it with H3_REQUEST_REJECTED: it was not processed, retry on
    /// a new connection.
    #[error("gateway is going away; the request was not processed")]
    GoAway,
    /// The response broke HTTP/3 framing or field rules (RFC 9114 §4.1.2).
    #[error("malformed response from the gateway: {0}")]
    Malformed(&'static str),
    /// Our request cannot be sent as asked (a field the peer's
    /// SETTINGS_MAX_FIELD_SECTION_SIZE forbids, an invalid pseudo-header).
    #[error("request cannot be sent: {0}")]
    Request(&'static str),
}

impl H3Error {
    /// The request never reached the gateway's application: sending it
    /// again on another connection is safe, whatever its method.
    pub fn is_retryable(&self) -> bool {
        matches!(self, H3Error::GoAway)
    }

    pub(super) fn lost(e: &quinn::ConnectionError) -> H3Error {
        H3Error::ConnectionLost(e.to_string())
    }

    pub(super) fn from_read(e: quinn::ReadError) -> H3Error {
        match e {
            quinn::ReadError::Reset(code) => reset(code.into_inner()),
            quinn::ReadError::ConnectionLost(e) => H3Error::lost(&e),
            other => H3Error::ConnectionLost(other.to_string()),
        }
    }

    pub(super) fn from_write(e: quinn::WriteError) -> H3Error {
        match e {
            quinn::WriteError::Stopped(code) => reset(code.into_inner()),
            quinn::WriteError::ConnectionLost(e) => H3Error::lost(&e),
            other => H3Error::ConnectionLost(other.to_string()),
        }
    }

    /// As an `io::Error` for `AsyncRead`/`AsyncWrite`, the `H3Error` kept
    /// inside (`io::Error::get_ref` finds it).
    pub(super) fn into_io(self) -> io::Error {
        let kind = match &self {
            H3Error::StreamReset { .. } | H3Error::GoAway => io::ErrorKind::ConnectionReset,
            H3Error::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
            H3Error::Malformed(_) => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

/// A reset with H3_REQUEST_REJECTED means "not processed" (RFC 9114 §4.1.1).
fn reset(code: u64) -> H3Error {
    let code = H3ErrorCode(code);
    if code == codes::REQUEST_REJECTED {
        H3Error::GoAway
    } else {
        H3Error::StreamReset { code }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_streams_are_retryable_other_resets_are_not() {
        assert!(reset(0x010b).is_retryable());
        let e = reset(0x010c);
        assert!(!e.is_retryable());
        assert!(
            matches!(e, H3Error::StreamReset { code } if code == H3ErrorCode::REQUEST_CANCELLED)
        );
        let io = H3Error::Malformed("x").into_io();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert!(io.get_ref().is_some_and(|e| e.is::<H3Error>()));
    }
}

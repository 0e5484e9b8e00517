//! The vocabulary of secondary certificates on a connection
//! (draft-ietf-httpbis-secondary-server-certs): the codepoints, where the
//! `SETTINGS_HTTP_SERVER_CERT_AUTH` negotiation stands, and the rules a
//! client can break, and the one map from a broken rule to the HTTP/2 and
//! HTTP/3 error codes (spec §6). The frame layout is in
//! `wire::server_certificate`; the shims (`h2_shim`, `h3_shim`) carry the
//! frames; the advertiser decides what to send when.

use std::fmt;

use crate::wire::h2_frame::ErrorCode;
use crate::wire::h3_error::H3ErrorCode;

/// The codepoints in use; they live with the frame layout in
/// `wire::server_certificate`.
pub use crate::wire::server_certificate::Codepoints;

/// Where the `SETTINGS_HTTP_SERVER_CERT_AUTH` negotiation stands on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// The client's SETTINGS has not been seen yet.
    Pending,
    /// Both sides sent 1: certificates may be sent.
    Enabled,
    /// The client sent 0 or omitted the setting (or the feature is off here).
    Disabled,
    /// The connection is closed or failed.
    Closed,
}

/// Every `kind` label value of `bauta_secondary_cert_errors_total`: the
/// client's violations, and authenticators we could not send (`too_large`)
/// or build (`authenticator`).
pub const ERROR_KINDS: &[&str] = &[
    "client_sent_certificate",
    "wrong_stream",
    "bad_setting_value",
    "setting_withdrawn",
    "malformed_frame",
    "too_large",
    "authenticator",
];

/// A rule the client broke; each closes the connection (spec §2, §3, §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A client sent SERVER_CERTIFICATE (any stream).
    ClientSentCertificate,
    /// SERVER_CERTIFICATE on a stream other than 0 / the control stream.
    WrongStream,
    /// The setting's value was neither 0 nor 1.
    BadSettingValue,
    /// The client switched the setting from 1 back to 0.
    SettingWithdrawn,
    /// A frame of the extension could not be parsed.
    MalformedFrame,
}

impl Violation {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Violation::ClientSentCertificate => "client_sent_certificate",
            Violation::WrongStream => "wrong_stream",
            Violation::BadSettingValue => "bad_setting_value",
            Violation::SettingWithdrawn => "setting_withdrawn",
            Violation::MalformedFrame => "malformed_frame",
        }
    }
}

// === impl Violation ===

impl Violation {
    /// The HTTP/2 GOAWAY code (spec §6 table): the draft names none for these
    /// rules; the project uses `PROTOCOL_ERROR`.
    pub fn h2_code(self) -> ErrorCode {
        match self {
            Violation::ClientSentCertificate
            | Violation::WrongStream
            | Violation::BadSettingValue
            | Violation::SettingWithdrawn
            | Violation::MalformedFrame => ErrorCode::PROTOCOL_ERROR,
        }
    }

    /// The HTTP/3 CONNECTION_CLOSE code (spec §6 table): a setting value
    /// that is not 0/1 is `H3_SETTINGS_ERROR` (as RFC 9297 §2.1.1 treats its
    /// own 0/1 setting); a frame where it may not be is
    /// `H3_FRAME_UNEXPECTED` (RFC 9114 §7.2.4's code for frames on the wrong
    /// stream); a frame that does not parse is `H3_FRAME_ERROR` (RFC 9114
    /// §7.1).
    pub fn h3_code(self) -> H3ErrorCode {
        match self {
            Violation::BadSettingValue | Violation::SettingWithdrawn => H3ErrorCode::SETTINGS_ERROR,
            Violation::ClientSentCertificate | Violation::WrongStream => {
                H3ErrorCode::FRAME_UNEXPECTED
            }
            Violation::MalformedFrame => H3ErrorCode::FRAME_ERROR,
        }
    }

    /// A short reason for the peer (GOAWAY debug data, CONNECTION_CLOSE
    /// reason phrase).
    pub fn reason(self) -> &'static str {
        match self {
            Violation::ClientSentCertificate => "SERVER_CERTIFICATE from client",
            Violation::WrongStream => "SERVER_CERTIFICATE on the wrong stream",
            Violation::BadSettingValue => "SETTINGS_HTTP_SERVER_CERT_AUTH not 0 or 1",
            Violation::SettingWithdrawn => "SETTINGS_HTTP_SERVER_CERT_AUTH changed from 1 to 0",
            Violation::MalformedFrame => "malformed SERVER_CERTIFICATE",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a SERVER_CERTIFICATE could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the setting is not negotiated on this connection")]
    NotNegotiated,
    #[error("the authenticator ({len} bytes) exceeds the peer's maximum frame size ({max})")]
    TooLarge { len: usize, max: usize },
    #[error("the connection is closed")]
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §6, row by row.
    #[test]
    fn violations_map_to_the_spec_codes() {
        let rows = [
            (Violation::ClientSentCertificate, 0x01, 0x0105),
            (Violation::WrongStream, 0x01, 0x0105),
            (Violation::BadSettingValue, 0x01, 0x0109),
            (Violation::SettingWithdrawn, 0x01, 0x0109),
            (Violation::MalformedFrame, 0x01, 0x0106),
        ];
        for (v, h2, h3) in rows {
            assert_eq!(v.h2_code(), ErrorCode(h2), "{v}");
            assert_eq!(v.h3_code(), H3ErrorCode(h3), "{v}");
            assert!(ERROR_KINDS.contains(&v.as_str()));
        }
    }
}

//! The vocabulary of secondary certificates on a connection
//! (draft-ietf-httpbis-secondary-server-certs): the codepoints, where the
//! `SETTINGS_HTTP_SERVER_CERT_AUTH` negotiation stands, and the rules a
//! client can break. The shims (`h2_shim`, `h3_shim`) carry the frames; the
//! advertiser decides what to send when.

use std::fmt;

/// The codepoints in use (spec `secondary-certs.md` §9: experimental,
/// configurable, changed together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codepoints {
    pub h2_frame_type: u8,
    pub h2_setting: u16,
    pub h2_error_invalid: u32,
    pub h3_frame_type: u64,
    pub h3_setting: u64,
    pub h3_error_invalid: u64,
}

impl Default for Codepoints {
    fn default() -> Self {
        Codepoints {
            h2_frame_type: 0xCE,
            h2_setting: 0x5ECC,
            h2_error_invalid: 0x005E_CC03,
            h3_frame_type: 0x5E_CC01,
            h3_setting: 0x5E_CC02,
            h3_error_invalid: 0x5E_CC03,
        }
    }
}

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

//! HTTP/3 error codes (RFC 9114 §8.1, RFC 9297 §5.2) as an open newtype:
//! unknown values survive, known ones print their names.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct H3ErrorCode(pub u64);

// === impl H3ErrorCode ===

impl H3ErrorCode {
    pub const DATAGRAM_ERROR: H3ErrorCode = H3ErrorCode(0x33);
    pub const NO_ERROR: H3ErrorCode = H3ErrorCode(0x0100);
    pub const GENERAL_PROTOCOL_ERROR: H3ErrorCode = H3ErrorCode(0x0101);
    pub const INTERNAL_ERROR: H3ErrorCode = H3ErrorCode(0x0102);
    pub const FRAME_UNEXPECTED: H3ErrorCode = H3ErrorCode(0x0105);
    pub const FRAME_ERROR: H3ErrorCode = H3ErrorCode(0x0106);
    pub const SETTINGS_ERROR: H3ErrorCode = H3ErrorCode(0x0109);
    pub const REQUEST_CANCELLED: H3ErrorCode = H3ErrorCode(0x010c);
    pub const MESSAGE_ERROR: H3ErrorCode = H3ErrorCode(0x010e);
    pub const CONNECT_ERROR: H3ErrorCode = H3ErrorCode(0x010f);

    /// The registered name, if known here.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            H3ErrorCode::DATAGRAM_ERROR => "H3_DATAGRAM_ERROR",
            H3ErrorCode::NO_ERROR => "H3_NO_ERROR",
            H3ErrorCode::GENERAL_PROTOCOL_ERROR => "H3_GENERAL_PROTOCOL_ERROR",
            H3ErrorCode::INTERNAL_ERROR => "H3_INTERNAL_ERROR",
            H3ErrorCode::FRAME_UNEXPECTED => "H3_FRAME_UNEXPECTED",
            H3ErrorCode::FRAME_ERROR => "H3_FRAME_ERROR",
            H3ErrorCode::SETTINGS_ERROR => "H3_SETTINGS_ERROR",
            H3ErrorCode::REQUEST_CANCELLED => "H3_REQUEST_CANCELLED",
            H3ErrorCode::MESSAGE_ERROR => "H3_MESSAGE_ERROR",
            H3ErrorCode::CONNECT_ERROR => "H3_CONNECT_ERROR",
            _ => return None,
        })
    }
}

impl fmt::Debug for H3ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "H3ErrorCode({:#x})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_unknown_values() {
        assert_eq!(format!("{:?}", H3ErrorCode(0x010e)), "H3_MESSAGE_ERROR");
        assert_eq!(format!("{:?}", H3ErrorCode(0x33)), "H3_DATAGRAM_ERROR");
        assert_eq!(
            format!("{:?}", H3ErrorCode(0x5e_cc03)),
            "H3ErrorCode(0x5ecc03)"
        );
    }
}

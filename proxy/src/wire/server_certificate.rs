//! The wire form of secondary certificates
//! (draft-ietf-httpbis-secondary-server-certs-02; spec `secondary-certs.md`
//! §2, §4, §9): the `SERVER_CERTIFICATE` frame and the
//! `SETTINGS_HTTP_SERVER_CERT_AUTH` setting, for HTTP/2 and HTTP/3, in one
//! place. The draft is in WG Last Call and an editor's copy changes the
//! framing (spec §12): a layout change is a change to this file.
//!
//! ```text
//! HTTP/2 (§5.1)                               HTTP/3 (§5.2)
//! +-----------------------------------+       SERVER_CERTIFICATE Frame {
//! | Length (24) = authenticator bytes |         Type (i) = TBD,
//! | Type (8) = TBD | Flags (8) = 0    |         Length (i),
//! |R| Stream Identifier (31) = 0      |         Authenticator (..),
//! | Authenticator (Length octets) ... |       }
//! +-----------------------------------+
//! ```
//!
//! The payload is one whole RFC 9261 authenticator (spec §4.3: one
//! authenticator per frame). The codepoints are not registered yet and are
//! configurable ([`Codepoints`]), so every function takes them.

use bytes::{BufMut, Bytes};

use super::h2_frame::{self, ErrorCode, FrameHeader, FrameType, SettingId};
use super::h3_error::H3ErrorCode;
use super::h3_frame;
use super::varint::{self, VarIntError};

/// The codepoints in use (spec §9: experimental, configurable, changed
/// together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codepoints {
    pub h2_frame_type: u8,
    pub h2_setting: u16,
    pub h2_error_invalid: u32,
    pub h3_frame_type: u64,
    pub h3_setting: u64,
    pub h3_error_invalid: u64,
}

/// A `SERVER_CERTIFICATE` frame: one authenticator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCertificate {
    pub authenticator: Bytes,
}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Spec §4.3 (project rule): an authenticator larger than the peer's
    /// maximum frame size is not sent.
    #[error("the authenticator ({len} bytes) exceeds the maximum frame size ({max})")]
    TooLarge { len: usize, max: usize },
    /// A configured codepoint does not fit a varint.
    #[error("codepoint {0:#x} does not fit in a QUIC varint")]
    Codepoint(u64),
}

/// Why a received frame or setting breaks the draft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// §5.1: "A SERVER_CERTIFICATE frame received on any stream other than
    /// stream 0 MUST be treated as a connection error".
    #[error("SERVER_CERTIFICATE on stream {0}, not stream 0")]
    WrongStream(u32),
    /// Spec §4.4 (project): larger than the local cap is invalid.
    #[error("SERVER_CERTIFICATE of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// §4: the setting's value "MUST be 0 or 1".
    #[error("SETTINGS_HTTP_SERVER_CERT_AUTH = {0}, not 0 or 1")]
    BadSettingValue(u64),
}

// === impl Codepoints ===

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

impl Codepoints {
    pub fn h2_frame(&self) -> FrameType {
        FrameType(self.h2_frame_type)
    }

    pub fn h2_setting(&self) -> SettingId {
        SettingId(self.h2_setting)
    }

    /// `SERVER_CERTIFICATE_INVALID` in HTTP/2.
    pub fn h2_invalid(&self) -> ErrorCode {
        ErrorCode(self.h2_error_invalid)
    }

    pub fn h3_frame(&self) -> h3_frame::FrameType {
        h3_frame::FrameType(self.h3_frame_type)
    }

    pub fn h3_setting(&self) -> h3_frame::SettingId {
        h3_frame::SettingId(self.h3_setting)
    }

    /// `SERVER_CERTIFICATE_INVALID` in HTTP/3.
    pub fn h3_invalid(&self) -> H3ErrorCode {
        H3ErrorCode(self.h3_error_invalid)
    }

    /// The HTTP/3 codepoints fit in varints (the HTTP/2 ones fit by type).
    pub fn h3_fits(&self) -> bool {
        [self.h3_frame_type, self.h3_setting, self.h3_error_invalid]
            .iter()
            .all(|&v| v <= varint::MAX)
    }
}

// === the setting ===

/// Decodes the setting's value: `true` for 1, `false` for 0.
///
/// §4: "The value of the parameter MUST be 0 or 1"; the draft names no
/// reaction, the project closes the connection (spec §2).
pub fn decode_setting_value(value: u64) -> Result<bool, DecodeError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::BadSettingValue(v)),
    }
}

/// The HTTP/2 SETTINGS entry `SETTINGS_HTTP_SERVER_CERT_AUTH = 1`.
pub fn encode_h2_setting(cp: &Codepoints, on: bool) -> [u8; h2_frame::SETTING_LEN] {
    h2_frame::encode_setting(cp.h2_setting(), u32::from(on))
}

/// The HTTP/3 SETTINGS entry `SETTINGS_HTTP_SERVER_CERT_AUTH = 0/1`.
pub fn encode_h3_setting(
    cp: &Codepoints,
    on: bool,
    out: &mut impl BufMut,
) -> Result<(), EncodeError> {
    h3_frame::encode_setting(cp.h3_setting(), u64::from(on), out)
        .map_err(|_| EncodeError::Codepoint(cp.h3_setting))
}

/// Appends `SETTINGS_HTTP_SERVER_CERT_AUTH = 1` to one whole HTTP/2 SETTINGS
/// frame (spec §2: an endpoint that supports the feature "MUST send the
/// setting with value 1"). `None` if `frame` is not exactly one non-ACK
/// SETTINGS frame on stream 0.
pub fn advertise_h2(cp: &Codepoints, frame: &[u8]) -> Option<Vec<u8>> {
    h2_frame::append_setting(frame, cp.h2_setting(), 1)
}

/// The same for one whole HTTP/3 SETTINGS frame. `None` if `frame` is not
/// exactly one SETTINGS frame or already carries the setting.
pub fn advertise_h3(cp: &Codepoints, frame: &[u8]) -> Option<bytes::BytesMut> {
    h3_frame::append_setting(frame, cp.h3_setting(), 1)
}

// === impl ServerCertificate ===

impl ServerCertificate {
    pub fn new(authenticator: Bytes) -> ServerCertificate {
        ServerCertificate { authenticator }
    }

    /// The HTTP/2 frame: stream 0, flags 0 (§5.1; "senders set unused flags
    /// to 0", RFC 9113 §4.1). `max_frame_size` is the peer's
    /// `SETTINGS_MAX_FRAME_SIZE` (RFC 9113 §4.2).
    pub fn encode_h2(
        &self,
        cp: &Codepoints,
        max_frame_size: usize,
        out: &mut impl BufMut,
    ) -> Result<(), EncodeError> {
        let len = self.authenticator.len();
        let too_large = EncodeError::TooLarge {
            len,
            max: max_frame_size,
        };
        if len > max_frame_size {
            return Err(too_large);
        }
        let header = FrameHeader::new(cp.h2_frame(), 0, 0, len).ok_or(too_large)?;
        out.put_slice(&header.encode());
        out.put_slice(&self.authenticator);
        Ok(())
    }

    /// The HTTP/3 frame header (`Type (i) || Length (i)`) for an
    /// authenticator of `len` bytes, so that the payload can be written
    /// after it without a copy.
    pub fn encode_h3_header(
        cp: &Codepoints,
        len: usize,
        out: &mut impl BufMut,
    ) -> Result<(), EncodeError> {
        let too_large = EncodeError::TooLarge {
            len,
            max: usize::try_from(varint::MAX).unwrap_or(usize::MAX),
        };
        let len = u64::try_from(len).map_err(|_| too_large)?;
        if cp.h3_frame_type > varint::MAX {
            return Err(EncodeError::Codepoint(cp.h3_frame_type));
        }
        let header = h3_frame::FrameHeader {
            ty: cp.h3_frame(),
            len,
        };
        header.encode(out).map_err(|e| match e {
            VarIntError::TooLarge(_) | VarIntError::BufferFull { .. } => too_large,
        })
    }

    /// The whole HTTP/3 frame (§5.2).
    pub fn encode_h3(&self, cp: &Codepoints, out: &mut impl BufMut) -> Result<(), EncodeError> {
        ServerCertificate::encode_h3_header(cp, self.authenticator.len(), out)?;
        out.put_slice(&self.authenticator);
        Ok(())
    }

    /// Whether an HTTP/2 frame is a SERVER_CERTIFICATE.
    pub fn is_h2(cp: &Codepoints, header: &FrameHeader) -> bool {
        header.kind == cp.h2_frame()
    }

    /// Whether an HTTP/3 frame type is SERVER_CERTIFICATE.
    pub fn is_h3(cp: &Codepoints, ty: h3_frame::FrameType) -> bool {
        ty == cp.h3_frame()
    }

    /// Decodes a whole HTTP/2 SERVER_CERTIFICATE frame (`header` was checked
    /// with [`is_h2`](Self::is_h2)); `max` is the local cap (spec §4.4).
    /// Flags are ignored (RFC 9113 §4.1).
    pub fn decode_h2(
        header: &FrameHeader,
        payload: Bytes,
        max: usize,
    ) -> Result<ServerCertificate, DecodeError> {
        if header.stream_id != 0 {
            return Err(DecodeError::WrongStream(header.stream_id));
        }
        ServerCertificate::decode_payload(payload, max)
    }

    /// Decodes the payload of an HTTP/3 SERVER_CERTIFICATE frame received on
    /// the control stream (the caller knows the stream; §5.2 makes any other
    /// stream a connection error).
    pub fn decode_h3(payload: Bytes, max: usize) -> Result<ServerCertificate, DecodeError> {
        ServerCertificate::decode_payload(payload, max)
    }

    fn decode_payload(payload: Bytes, max: usize) -> Result<ServerCertificate, DecodeError> {
        if payload.len() > max {
            return Err(DecodeError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(ServerCertificate {
            authenticator: payload,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_wire_forms_match_the_spec() {
        // Spec §9's table.
        let cp = Codepoints::default();
        assert_eq!(encode_h2_setting(&cp, true), [0x5e, 0xcc, 0, 0, 0, 1]);
        let mut s = Vec::new();
        encode_h3_setting(&cp, true, &mut s).unwrap();
        assert_eq!(s, [0x80, 0x5e, 0xcc, 0x02, 0x01]);
        assert_eq!(cp.h2_invalid().0.to_be_bytes(), [0x00, 0x5e, 0xcc, 0x03]);
        let mut e = Vec::new();
        varint::encode(cp.h3_invalid().0, &mut e).unwrap();
        assert_eq!(e, [0x80, 0x5e, 0xcc, 0x03]);

        let sc = ServerCertificate::new(Bytes::from_static(b"auth"));
        let mut h2 = Vec::new();
        sc.encode_h2(&cp, 16_384, &mut h2).unwrap();
        assert_eq!(h2, [0, 0, 4, 0xce, 0, 0, 0, 0, 0, b'a', b'u', b't', b'h']);
        let mut h3 = Vec::new();
        sc.encode_h3(&cp, &mut h3).unwrap();
        assert_eq!(h3, [0x80, 0x5e, 0xcc, 0x01, 0x04, b'a', b'u', b't', b'h']);
    }

    #[test]
    fn limits_and_errors() {
        let cp = Codepoints::default();
        let sc = ServerCertificate::new(Bytes::from(vec![0; 100]));
        assert_eq!(
            sc.encode_h2(&cp, 99, &mut Vec::new()),
            Err(EncodeError::TooLarge { len: 100, max: 99 })
        );
        let bad = Codepoints {
            h3_frame_type: u64::MAX,
            ..cp
        };
        assert!(!bad.h3_fits());
        assert_eq!(
            sc.encode_h3(&bad, &mut Vec::new()),
            Err(EncodeError::Codepoint(u64::MAX))
        );
        let header = FrameHeader::new(cp.h2_frame(), 0, 3, 1).unwrap();
        assert_eq!(
            ServerCertificate::decode_h2(&header, Bytes::from_static(b"x"), 10),
            Err(DecodeError::WrongStream(3))
        );
        assert_eq!(
            ServerCertificate::decode_h3(Bytes::from(vec![0; 11]), 10),
            Err(DecodeError::TooLarge { len: 11, max: 10 })
        );
        assert_eq!(decode_setting_value(0), Ok(false));
        assert_eq!(decode_setting_value(1), Ok(true));
        assert_eq!(
            decode_setting_value(2),
            Err(DecodeError::BadSettingValue(2))
        );
    }

    #[test]
    fn advertising_appends_the_setting() {
        let cp = Codepoints::default();
        let plain = [0, 0, 0, 4, 0, 0, 0, 0, 0];
        let out = advertise_h2(&cp, &plain).unwrap();
        assert_eq!(out, [0, 0, 6, 4, 0, 0, 0, 0, 0, 0x5e, 0xcc, 0, 0, 0, 1]);
        let out = advertise_h3(&cp, &[0x04, 0x00]).unwrap();
        assert_eq!(&out[..], &[0x04, 0x05, 0x80, 0x5e, 0xcc, 0x02, 0x01]);
    }

    proptest! {
        #[test]
        fn frames_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..3000),
                             h2_type in any::<u8>(), h3_type in 0..=varint::MAX) {
            let cp = Codepoints { h2_frame_type: h2_type, h3_frame_type: h3_type, ..Codepoints::default() };
            let sc = ServerCertificate::new(Bytes::from(payload));

            let mut h2 = Vec::new();
            sc.encode_h2(&cp, 16_384, &mut h2).unwrap();
            let (head, body) = h2.split_first_chunk::<{ h2_frame::HEADER_LEN }>().unwrap();
            let header = FrameHeader::decode(head);
            prop_assert!(ServerCertificate::is_h2(&cp, &header));
            prop_assert_eq!(
                ServerCertificate::decode_h2(&header, Bytes::copy_from_slice(body), 64 * 1024),
                Ok(sc.clone())
            );

            let mut h3 = Vec::new();
            sc.encode_h3(&cp, &mut h3).unwrap();
            let (header, n) = h3_frame::FrameHeader::decode(&h3).unwrap();
            prop_assert!(ServerCertificate::is_h3(&cp, header.ty));
            prop_assert_eq!(header.len as usize, h3.len() - n);
            prop_assert_eq!(
                ServerCertificate::decode_h3(Bytes::copy_from_slice(&h3[n..]), 64 * 1024),
                Ok(sc)
            );
        }
    }
}

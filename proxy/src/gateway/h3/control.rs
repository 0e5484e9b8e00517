//! The gateway's control stream (RFC 9114 §6.2.1), read sans-IO: its
//! SETTINGS (what the gateway allows us: datagrams, extended CONNECT,
//! field-section size, secondary certificates), GOAWAY (stop opening
//! streams), and SERVER_CERTIFICATE frames (secondary certificates,
//! draft-ietf-httpbis-secondary-server-certs; codepoints from the options).
//! Every rule the RFC makes a connection error is one here, with its code;
//! the task that reads the stream (`uni_streams.rs`) closes the connection
//! with it.

use bytes::{Bytes, BytesMut};

use crate::seccert::negotiation::Codepoints;
use crate::wire::h3_error::H3ErrorCode;
use crate::wire::h3_frame::{Frame, FrameDecoder, FrameType, SettingId, Settings};
use crate::wire::server_certificate::{self as sc, ServerCertificate};
use crate::wire::varint;

use super::error::codes;

/// Largest control frame read whole (a SERVER_CERTIFICATE carries a
/// certificate chain; spec §4.4 bounds it at 64 KiB).
pub(super) const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// What the gateway's SETTINGS frame said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSettings {
    /// SETTINGS_H3_DATAGRAM = 1 (RFC 9297 §2.1.1).
    pub h3_datagram: bool,
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 9220 §3).
    pub extended_connect: bool,
    /// The secondary-certificate setting = 1: it may send
    /// SERVER_CERTIFICATE frames.
    pub offers_certs: bool,
    /// SETTINGS_MAX_FIELD_SECTION_SIZE, if sent (RFC 9114 §4.2.2).
    pub max_field_section: Option<u64>,
}

/// One thing the control stream said, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ControlEvent {
    Settings(PeerSettings),
    /// GOAWAY: requests on streams with this ID or above were not
    /// processed (RFC 9114 §5.2).
    GoAway(u64),
    /// A SERVER_CERTIFICATE frame's authenticator.
    Certificate(Bytes),
}

/// A connection error: the code to close with and why.
pub(super) type ControlError = (H3ErrorCode, &'static str);

/// The gateway's control stream after its stream type byte.
pub(super) struct ControlStream {
    cp: Codepoints,
    frames: FrameDecoder,
    buf: BytesMut,
    settings_seen: bool,
    last_goaway: Option<u64>,
}

impl ControlStream {
    pub(super) fn new(cp: Codepoints) -> ControlStream {
        ControlStream {
            cp,
            frames: FrameDecoder::new(MAX_CONTROL_FRAME),
            buf: BytesMut::new(),
            settings_seen: false,
            last_goaway: None,
        }
    }

    /// The next bytes of the stream; events are appended to `out`.
    pub(super) fn feed(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<ControlEvent>,
    ) -> Result<(), ControlError> {
        self.buf.extend_from_slice(bytes);
        while let Some(frame) = self.frames.decode(&mut self.buf) {
            match frame {
                Frame::Whole { ty, payload } => self.frame(ty, payload, out)?,
                Frame::Skipped(h) => {
                    // Too big to read whole: only an unknown frame (or a
                    // certificate beyond the spec's bound) may be passed over.
                    self.check_order(h.ty)?;
                    if matches!(h.ty, FrameType::SETTINGS | FrameType::GOAWAY) {
                        return Err((codes::EXCESSIVE_LOAD, "oversized control frame"));
                    }
                }
            }
        }
        Ok(())
    }

    /// RFC 9114 §6.2.1: "each side MUST initiate a single control stream
    /// ... and send its SETTINGS frame as the first frame"; a frame other
    /// than SETTINGS first is H3_MISSING_SETTINGS, a second SETTINGS is
    /// H3_FRAME_UNEXPECTED (§7.2.4).
    fn check_order(&mut self, ty: FrameType) -> Result<(), ControlError> {
        if !self.settings_seen {
            if ty != FrameType::SETTINGS {
                return Err((
                    codes::MISSING_SETTINGS,
                    "first control frame is not SETTINGS",
                ));
            }
            self.settings_seen = true;
            return Ok(());
        }
        match ty {
            FrameType::SETTINGS => Err((H3ErrorCode::FRAME_UNEXPECTED, "second SETTINGS frame")),
            // §7.2.1, §7.2.2, §7.2.5: request-stream frames; §7.2.7: only a
            // client sends MAX_PUSH_ID; §7.2.8: HTTP/2 types are reserved.
            FrameType::DATA
            | FrameType::HEADERS
            | FrameType::PUSH_PROMISE
            | FrameType::MAX_PUSH_ID => Err((
                H3ErrorCode::FRAME_UNEXPECTED,
                "frame not allowed on the control stream",
            )),
            t if t.is_reserved_http2() => Err((
                H3ErrorCode::FRAME_UNEXPECTED,
                "reserved HTTP/2 frame type on the control stream",
            )),
            _ => Ok(()),
        }
    }

    fn frame(
        &mut self,
        ty: FrameType,
        payload: Bytes,
        out: &mut Vec<ControlEvent>,
    ) -> Result<(), ControlError> {
        self.check_order(ty)?;
        if ty == FrameType::SETTINGS {
            out.push(ControlEvent::Settings(self.settings(&payload)?));
        } else if ty == FrameType::GOAWAY {
            let id = goaway_id(&payload)?;
            // RFC 9114 §5.2: "An endpoint MAY send multiple GOAWAY frames
            // ... the identifier MUST NOT be greater than in any previous
            // frame"; a client receiving a non-request stream ID, or a
            // larger one, treats it as H3_ID_ERROR.
            if !id.is_multiple_of(4) || self.last_goaway.is_some_and(|last| id > last) {
                return Err((codes::ID_ERROR, "GOAWAY with an invalid stream ID"));
            }
            self.last_goaway = Some(id);
            out.push(ControlEvent::GoAway(id));
        } else if ServerCertificate::is_h3(&self.cp, ty) {
            match ServerCertificate::decode_h3(payload, MAX_CONTROL_FRAME) {
                Ok(cert) => out.push(ControlEvent::Certificate(cert.authenticator)),
                Err(_) => {
                    return Err((self.cp.h3_invalid(), "malformed SERVER_CERTIFICATE frame"));
                }
            }
        }
        // CANCEL_PUSH (we allowed no push) and unknown types: ignored
        // (RFC 9114 §9).
        Ok(())
    }

    fn settings(&self, payload: &[u8]) -> Result<PeerSettings, ControlError> {
        const ERR: H3ErrorCode = H3ErrorCode::SETTINGS_ERROR;
        let mut s = PeerSettings::default();
        let mut seen: Vec<SettingId> = Vec::new();
        for entry in Settings::new(payload) {
            let (id, value) =
                entry.map_err(|_| (H3ErrorCode::FRAME_ERROR, "SETTINGS cut short"))?;
            // RFC 9114 §7.2.4: "The same setting identifier MUST NOT occur
            // more than once"; §7.2.4.1: HTTP/2 identifiers are reserved.
            if seen.contains(&id) {
                return Err((ERR, "duplicate setting"));
            }
            seen.push(id);
            if id.is_reserved_http2() {
                return Err((ERR, "reserved HTTP/2 setting"));
            }
            if id == SettingId::H3_DATAGRAM {
                // RFC 9297 §2.1.1: values other than 0 and 1 are errors.
                s.h3_datagram = match value {
                    0 => false,
                    1 => true,
                    _ => return Err((ERR, "SETTINGS_H3_DATAGRAM other than 0 or 1")),
                };
            } else if id == SettingId::ENABLE_CONNECT_PROTOCOL {
                s.extended_connect = match value {
                    0 => false,
                    1 => true,
                    _ => return Err((ERR, "SETTINGS_ENABLE_CONNECT_PROTOCOL other than 0 or 1")),
                };
            } else if id == SettingId::MAX_FIELD_SECTION_SIZE {
                s.max_field_section = Some(value);
            } else if id == self.cp.h3_setting() {
                s.offers_certs = sc::decode_setting_value(value)
                    .map_err(|_| (ERR, "invalid secondary-certificate setting"))?;
            }
        }
        Ok(s)
    }
}

/// A GOAWAY payload: exactly one varint.
fn goaway_id(payload: &[u8]) -> Result<u64, ControlError> {
    match varint::decode(payload) {
        Ok((id, n)) if n == payload.len() => Ok(id),
        _ => Err((H3ErrorCode::FRAME_ERROR, "malformed GOAWAY")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::h3_frame::{encode_frame, encode_setting};

    fn frame(ty: FrameType, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(ty, payload, &mut out).unwrap();
        out
    }

    fn settings(pairs: &[(SettingId, u64)]) -> Vec<u8> {
        let mut p = Vec::new();
        for &(id, v) in pairs {
            encode_setting(id, v, &mut p).unwrap();
        }
        frame(FrameType::SETTINGS, &p)
    }

    fn run(wire: &[u8]) -> Result<Vec<ControlEvent>, ControlError> {
        let mut c = ControlStream::new(Codepoints::default());
        let mut out = Vec::new();
        for b in wire {
            c.feed(std::slice::from_ref(b), &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn settings_goaway_and_certificates_in_order() {
        let cp = Codepoints::default();
        let mut wire = settings(&[
            (SettingId::H3_DATAGRAM, 1),
            (SettingId::ENABLE_CONNECT_PROTOCOL, 1),
            (SettingId::MAX_FIELD_SECTION_SIZE, 9000),
            (cp.h3_setting(), 1),
            (SettingId(0x21), 7),
        ]);
        wire.extend(frame(FrameType(0x21), b"grease"));
        let mut cert = Vec::new();
        ServerCertificate::new(Bytes::from_static(b"auth"))
            .encode_h3(&cp, &mut cert)
            .unwrap();
        wire.extend(cert);
        wire.extend(frame(FrameType::GOAWAY, &[0x08]));
        wire.extend(frame(FrameType::GOAWAY, &[0x04]));
        assert_eq!(
            run(&wire).unwrap(),
            vec![
                ControlEvent::Settings(PeerSettings {
                    h3_datagram: true,
                    extended_connect: true,
                    offers_certs: true,
                    max_field_section: Some(9000),
                }),
                ControlEvent::Certificate(Bytes::from_static(b"auth")),
                ControlEvent::GoAway(8),
                ControlEvent::GoAway(4),
            ]
        );
    }

    proptest::proptest! {
        /// A control stream of any bytes: events or a connection error.
        #[test]
        fn garbage_never_panics(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut wire = settings(&[]);
            wire.extend(tail);
            let _ = run(&wire);
        }
    }

    #[test]
    fn connection_errors_carry_their_codes() {
        let ok = settings(&[]);
        let with = |more: Vec<u8>| {
            let mut w = ok.clone();
            w.extend(more);
            run(&w).unwrap_err().0
        };
        assert_eq!(
            run(&frame(FrameType::GOAWAY, &[0])).unwrap_err().0,
            codes::MISSING_SETTINGS
        );
        assert_eq!(with(settings(&[])), H3ErrorCode::FRAME_UNEXPECTED);
        assert_eq!(
            with(frame(FrameType::DATA, b"")),
            H3ErrorCode::FRAME_UNEXPECTED
        );
        assert_eq!(
            with(frame(FrameType(0x06), b"")),
            H3ErrorCode::FRAME_UNEXPECTED
        );
        assert_eq!(with(frame(FrameType::GOAWAY, &[0x05])), codes::ID_ERROR);
        assert_eq!(
            with(frame(FrameType::GOAWAY, &[0x04, 0x00])),
            H3ErrorCode::FRAME_ERROR
        );
        let mut up = frame(FrameType::GOAWAY, &[0x04]);
        up.extend(frame(FrameType::GOAWAY, &[0x08]));
        assert_eq!(with(up), codes::ID_ERROR);
        let dup = settings(&[(SettingId::H3_DATAGRAM, 1), (SettingId::H3_DATAGRAM, 1)]);
        assert_eq!(run(&dup).unwrap_err().0, H3ErrorCode::SETTINGS_ERROR);
        let two = settings(&[(SettingId::H3_DATAGRAM, 2)]);
        assert_eq!(run(&two).unwrap_err().0, H3ErrorCode::SETTINGS_ERROR);
        let h2 = settings(&[(SettingId(0x04), 1)]);
        assert_eq!(run(&h2).unwrap_err().0, H3ErrorCode::SETTINGS_ERROR);
    }
}

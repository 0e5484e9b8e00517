//! The three TLS 1.3 handshake messages an authenticator is made of
//! (RFC 9261 §5.2, structures from RFC 8446 §4, §4.4.2–§4.4.4): pure codecs
//! over byte slices. Decoding borrows from the input; every length is checked
//! against what is left before anything is taken or allocated.
//!
//! ```text
//! 0b LL LL LL  cc <context> NN NN NN { DD DD DD <DER> EE EE <extensions> }+   Certificate
//! 0f LL LL LL  SS SS GG GG <signature>                                      CertificateVerify
//! 14 00 00 LL  <verify_data>                                                Finished
//! ```

use std::fmt;

use bytes::BufMut;
use rustls::SignatureScheme;

/// A handshake message type (RFC 8446 §4): an open newtype, unknown values
/// survive.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandshakeType(pub u8);

/// Which field a decode or encode error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    HandshakeHeader,
    HandshakeBody,
    CertificateRequestContext,
    CertificateList,
    CertData,
    Extensions,
    Extension,
    SignatureScheme,
    Signature,
}

/// Why bytes do not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A length, or the value it announces, runs past the end of its
    /// enclosing field.
    #[error("{0:?} is truncated")]
    Truncated(Field),
    /// Bytes are left over inside a field whose length should cover exactly
    /// its contents.
    #[error("{count} trailing bytes inside {within:?}")]
    Trailing { within: Field, count: usize },
    /// `opaque cert_data<1..2^24-1>` was empty.
    #[error("a CertificateEntry has empty cert_data")]
    EmptyCertData,
    /// "There MUST NOT be more than one extension of the same type in a given
    /// extension block." (RFC 8446 §4.2)
    #[error("extension {0} appears twice in one CertificateEntry")]
    DuplicateExtension(u16),
}

/// Why a message cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The value is longer than its length prefix can say.
    #[error("{field:?} is {len} bytes, more than its length field allows")]
    TooLong { field: Field, len: usize },
    /// `opaque cert_data<1..2^24-1>` may not be empty.
    #[error("a certificate is empty")]
    EmptyCertData,
}

/// A checked reader over a byte slice (in the manner of rustls
/// `msgs::codec::Reader`): every take says what it was reading.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

/// One handshake message: its type, its body and the whole encoding (header
/// included), which is what the transcript hashes cover (RFC 9261 §5.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake<'a> {
    pub typ: HandshakeType,
    pub body: &'a [u8],
    pub encoded: &'a [u8],
}

/// A handshake header read without its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeHeader {
    pub typ: HandshakeType,
    pub len: usize,
}

/// `Extension` (RFC 8446 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extension<'a> {
    pub typ: u16,
    pub data: &'a [u8],
}

/// `CertificateEntry` for X.509 (RFC 8446 §4.4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateEntry<'a> {
    pub cert_data: &'a [u8],
    pub extensions: Vec<Extension<'a>>,
}

/// The body of a `Certificate` message (RFC 8446 §4.4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate<'a> {
    pub context: &'a [u8],
    pub entries: Vec<CertificateEntry<'a>>,
}

/// The body of a `CertificateVerify` message (RFC 8446 §4.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertificateVerify<'a> {
    pub scheme: SignatureScheme,
    pub signature: &'a [u8],
}

const U8_MAX: usize = 0xff;
const U16_MAX: usize = 0xffff;
const U24_MAX: usize = 0xff_ffff;

/// Bytes per CertificateEntry besides the DER: 3-byte length, 2-byte
/// extensions length.
const ENTRY_OVERHEAD: usize = 5;

// === impl HandshakeType ===

impl HandshakeType {
    pub const CERTIFICATE: HandshakeType = HandshakeType(11);
    pub const CERTIFICATE_REQUEST: HandshakeType = HandshakeType(13);
    pub const CERTIFICATE_VERIFY: HandshakeType = HandshakeType(15);
    pub const CLIENT_CERTIFICATE_REQUEST: HandshakeType = HandshakeType(17);
    pub const FINISHED: HandshakeType = HandshakeType(20);

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::CERTIFICATE => "certificate",
            Self::CERTIFICATE_REQUEST => "certificate_request",
            Self::CERTIFICATE_VERIFY => "certificate_verify",
            Self::CLIENT_CERTIFICATE_REQUEST => "client_certificate_request",
            Self::FINISHED => "finished",
            _ => return None,
        })
    }
}

impl fmt::Debug for HandshakeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "HandshakeType({})", self.0),
        }
    }
}

impl fmt::Display for HandshakeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

// === impl Reader ===

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// What is left, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub fn take(&mut self, n: usize, what: Field) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated(what))?;
        self.rest = tail;
        Ok(head)
    }

    pub fn u8(&mut self, what: Field) -> Result<u8, DecodeError> {
        let (&b, tail) = self
            .rest
            .split_first()
            .ok_or(DecodeError::Truncated(what))?;
        self.rest = tail;
        Ok(b)
    }

    pub fn u16(&mut self, what: Field) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(b.iter().fold(0u16, |acc, &x| (acc << 8) | u16::from(x)))
    }

    pub fn u24(&mut self, what: Field) -> Result<usize, DecodeError> {
        let b = self.take(3, what)?;
        Ok(b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
    }

    /// A vector with a 1-byte length.
    pub fn vec8(&mut self, what: Field) -> Result<&'a [u8], DecodeError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    /// A vector with a 2-byte length.
    pub fn vec16(&mut self, what: Field) -> Result<&'a [u8], DecodeError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    /// A vector with a 3-byte length.
    pub fn vec24(&mut self, what: Field) -> Result<&'a [u8], DecodeError> {
        let n = self.u24(what)?;
        self.take(n, what)
    }

    /// Fails when bytes are left: the enclosing length must cover its
    /// contents exactly.
    pub fn expect_end(&self, within: Field) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            count => Err(DecodeError::Trailing { within, count }),
        }
    }
}

// === impl HandshakeHeader ===

impl HandshakeHeader {
    pub const LEN: usize = 4;

    pub fn decode(r: &mut Reader<'_>) -> Result<HandshakeHeader, DecodeError> {
        let typ = HandshakeType(r.u8(Field::HandshakeHeader)?);
        let len = r.u24(Field::HandshakeHeader)?;
        Ok(HandshakeHeader { typ, len })
    }
}

// === impl Handshake ===

impl<'a> Handshake<'a> {
    /// A header and the body it announces.
    pub fn decode(r: &mut Reader<'a>) -> Result<Handshake<'a>, DecodeError> {
        let start = r.rest();
        let header = HandshakeHeader::decode(r)?;
        let body = r.take(header.len, Field::HandshakeBody)?;
        // The header and body were both taken from `start`, so this cannot
        // fail; the checked form keeps the function free of panics anyway.
        let encoded = start
            .get(..HandshakeHeader::LEN + header.len)
            .ok_or(DecodeError::Truncated(Field::HandshakeBody))?;
        Ok(Handshake {
            typ: header.typ,
            body,
            encoded,
        })
    }

    /// Write a header and `body`.
    pub fn encode(
        typ: HandshakeType,
        body: &[u8],
        out: &mut impl BufMut,
    ) -> Result<(), EncodeError> {
        out.put_u8(typ.0);
        put_u24(out, body.len(), Field::HandshakeBody)?;
        out.put_slice(body);
        Ok(())
    }
}

// === impl Extension ===

impl<'a> Extension<'a> {
    /// `Extension extensions<0..2^16-1>`: a well-formed block, no type twice.
    pub fn decode_block(r: &mut Reader<'a>) -> Result<Vec<Extension<'a>>, DecodeError> {
        let block = r.vec16(Field::Extensions)?;
        let mut r = Reader::new(block);
        let mut out: Vec<Extension<'a>> = Vec::new();
        while !r.is_empty() {
            let typ = r.u16(Field::Extension)?;
            let data = r.vec16(Field::Extension)?;
            if out.iter().any(|e| e.typ == typ) {
                return Err(DecodeError::DuplicateExtension(typ));
            }
            out.push(Extension { typ, data });
        }
        Ok(out)
    }
}

// === impl Certificate ===

impl<'a> Certificate<'a> {
    /// Decode a Certificate body; the body must hold nothing else.
    pub fn decode(body: &'a [u8]) -> Result<Certificate<'a>, DecodeError> {
        let mut r = Reader::new(body);
        let context = r.vec8(Field::CertificateRequestContext)?;
        let list = r.vec24(Field::CertificateList)?;
        r.expect_end(Field::HandshakeBody)?;
        let mut lr = Reader::new(list);
        let mut entries = Vec::new();
        while !lr.is_empty() {
            let cert_data = lr.vec24(Field::CertData)?;
            if cert_data.is_empty() {
                return Err(DecodeError::EmptyCertData);
            }
            let extensions = Extension::decode_block(&mut lr)?;
            entries.push(CertificateEntry {
                cert_data,
                extensions,
            });
        }
        Ok(Certificate { context, entries })
    }

    /// Encode a whole Certificate handshake message from a context and an
    /// already encoded `certificate_list` (3-byte length included; see
    /// [`encode_certificate_list`]).
    pub fn encode_message(
        context: &[u8],
        certificate_list: &[u8],
        out: &mut impl BufMut,
    ) -> Result<(), EncodeError> {
        if context.len() > U8_MAX {
            return Err(EncodeError::TooLong {
                field: Field::CertificateRequestContext,
                len: context.len(),
            });
        }
        let body_len = 1 + context.len() + certificate_list.len();
        out.put_u8(HandshakeType::CERTIFICATE.0);
        put_u24(out, body_len, Field::HandshakeBody)?;
        // Checked above: fits in one byte.
        out.put_u8(context.len() as u8);
        out.put_slice(context);
        out.put_slice(certificate_list);
        Ok(())
    }
}

/// `CertificateEntry certificate_list<0..2^24-1>` for DER certificates, each
/// with an empty extensions block (RFC 9261 §5.2.1; project default), length
/// prefix included.
pub fn encode_certificate_list<C: AsRef<[u8]>>(certs: &[C]) -> Result<Vec<u8>, EncodeError> {
    let mut total = 0usize;
    for c in certs {
        let der = c.as_ref();
        if der.is_empty() {
            return Err(EncodeError::EmptyCertData);
        }
        if der.len() > U24_MAX {
            return Err(EncodeError::TooLong {
                field: Field::CertData,
                len: der.len(),
            });
        }
        total = total.saturating_add(der.len() + ENTRY_OVERHEAD);
    }
    if total > U24_MAX {
        return Err(EncodeError::TooLong {
            field: Field::CertificateList,
            len: total,
        });
    }
    let mut out = Vec::with_capacity(3 + total);
    put_u24(&mut out, total, Field::CertificateList)?;
    for c in certs {
        let der = c.as_ref();
        put_u24(&mut out, der.len(), Field::CertData)?;
        out.put_slice(der);
        out.put_u16(0);
    }
    Ok(out)
}

// === impl CertificateVerify ===

impl<'a> CertificateVerify<'a> {
    pub fn decode(body: &'a [u8]) -> Result<CertificateVerify<'a>, DecodeError> {
        let mut r = Reader::new(body);
        let scheme = SignatureScheme::from(r.u16(Field::SignatureScheme)?);
        let signature = r.vec16(Field::Signature)?;
        r.expect_end(Field::HandshakeBody)?;
        Ok(CertificateVerify { scheme, signature })
    }

    /// The whole CertificateVerify handshake message.
    pub fn encode_message(&self, out: &mut impl BufMut) -> Result<(), EncodeError> {
        if self.signature.len() > U16_MAX {
            return Err(EncodeError::TooLong {
                field: Field::Signature,
                len: self.signature.len(),
            });
        }
        out.put_u8(HandshakeType::CERTIFICATE_VERIFY.0);
        put_u24(out, 4 + self.signature.len(), Field::HandshakeBody)?;
        out.put_u16(u16::from(self.scheme));
        // Checked above: fits in two bytes.
        out.put_u16(self.signature.len() as u16);
        out.put_slice(self.signature);
        Ok(())
    }
}

fn put_u24(out: &mut impl BufMut, n: usize, field: Field) -> Result<(), EncodeError> {
    if n > U24_MAX {
        return Err(EncodeError::TooLong { field, len: n });
    }
    // Checked above: n < 2^24, so the top byte of the u32 is zero.
    let b = (n as u32).to_be_bytes();
    out.put_slice(&b[1..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_bytes(der: &[u8], exts: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_u24(&mut v, der.len(), Field::CertData).unwrap();
        v.extend_from_slice(der);
        v.put_u16(exts.len() as u16);
        v.extend_from_slice(exts);
        v
    }

    fn cert_body(ctx: &[u8], entries: &[u8]) -> Vec<u8> {
        let mut v = vec![ctx.len() as u8];
        v.extend_from_slice(ctx);
        put_u24(&mut v, entries.len(), Field::CertificateList).unwrap();
        v.extend_from_slice(entries);
        v
    }

    #[test]
    fn certificate_round_trip() {
        let list = encode_certificate_list(&[&b"\x30\x01\x00"[..], &b"\x30\x00"[..]]).unwrap();
        let mut msg = Vec::new();
        Certificate::encode_message(b"ctx", &list, &mut msg).unwrap();
        let mut r = Reader::new(&msg);
        let hs = Handshake::decode(&mut r).unwrap();
        assert!(r.is_empty());
        assert_eq!(hs.typ, HandshakeType::CERTIFICATE);
        assert_eq!(hs.encoded, &msg[..]);
        let c = Certificate::decode(hs.body).unwrap();
        assert_eq!(c.context, b"ctx");
        assert_eq!(c.entries.len(), 2);
        assert_eq!(c.entries[0].cert_data, b"\x30\x01\x00");
        assert!(c.entries[1].extensions.is_empty());
    }

    #[test]
    fn exact_bytes_of_a_small_certificate_message() {
        let list = encode_certificate_list(&[[0xAAu8]]).unwrap();
        let mut msg = Vec::new();
        Certificate::encode_message(&[0x01, 0x02], &list, &mut msg).unwrap();
        assert_eq!(
            msg,
            [
                0x0b, 0x00, 0x00, 0x0c, // header
                0x02, 0x01, 0x02, // context
                0x00, 0x00, 0x06, // list length
                0x00, 0x00, 0x01, 0xAA, // cert_data
                0x00, 0x00 // extensions
            ]
        );
    }

    #[test]
    fn certificate_verify_round_trip() {
        let cv = CertificateVerify {
            scheme: SignatureScheme::ED25519,
            signature: &[7u8; 64],
        };
        let mut msg = Vec::new();
        cv.encode_message(&mut msg).unwrap();
        assert_eq!(&msg[..8], &[0x0f, 0x00, 0x00, 0x44, 0x08, 0x07, 0x00, 0x40]);
        let mut r = Reader::new(&msg);
        let hs = Handshake::decode(&mut r).unwrap();
        assert_eq!(CertificateVerify::decode(hs.body).unwrap(), cv);
    }

    #[test]
    fn truncated_header_and_body() {
        assert_eq!(
            Handshake::decode(&mut Reader::new(&[0x0b, 0x00, 0x00])),
            Err(DecodeError::Truncated(Field::HandshakeHeader))
        );
        assert_eq!(
            Handshake::decode(&mut Reader::new(&[0x0b, 0x00, 0x00, 0x02, 0x00])),
            Err(DecodeError::Truncated(Field::HandshakeBody))
        );
    }

    #[test]
    fn certificate_body_errors() {
        // Context length past the end.
        assert_eq!(
            Certificate::decode(&[0x05, 0x01]),
            Err(DecodeError::Truncated(Field::CertificateRequestContext))
        );
        // Byte after the list.
        let mut b = cert_body(b"", &entry_bytes(b"\x30", b""));
        b.push(0);
        assert_eq!(
            Certificate::decode(&b),
            Err(DecodeError::Trailing {
                within: Field::HandshakeBody,
                count: 1
            })
        );
        // The list ends inside an entry: in its DER, then in its extensions.
        let mut e = entry_bytes(b"\x30\x00", b"");
        e.truncate(4);
        assert_eq!(
            Certificate::decode(&cert_body(b"", &e)),
            Err(DecodeError::Truncated(Field::CertData))
        );
        let mut e = entry_bytes(b"\x30\x00", b"");
        e.truncate(6);
        assert_eq!(
            Certificate::decode(&cert_body(b"", &e)),
            Err(DecodeError::Truncated(Field::Extensions))
        );
        // Empty cert_data.
        assert_eq!(
            Certificate::decode(&cert_body(b"", &entry_bytes(b"", b""))),
            Err(DecodeError::EmptyCertData)
        );
        // Extension block with a short extension.
        assert_eq!(
            Certificate::decode(&cert_body(b"", &entry_bytes(b"\x30", &[0x00, 0x05, 0x00]))),
            Err(DecodeError::Truncated(Field::Extension))
        );
        // Same extension twice.
        let exts = [0x00, 0x12, 0x00, 0x00, 0x00, 0x12, 0x00, 0x00];
        assert_eq!(
            Certificate::decode(&cert_body(b"", &entry_bytes(b"\x30", &exts))),
            Err(DecodeError::DuplicateExtension(18))
        );
        // An empty list decodes (the validator rejects it, not the codec).
        assert_eq!(
            Certificate::decode(&cert_body(b"", b"")).map(|c| c.entries.len()),
            Ok(0)
        );
    }

    #[test]
    fn certificate_verify_errors() {
        assert_eq!(
            CertificateVerify::decode(&[0x08]),
            Err(DecodeError::Truncated(Field::SignatureScheme))
        );
        assert_eq!(
            CertificateVerify::decode(&[0x08, 0x07, 0x00, 0x02, 0x01]),
            Err(DecodeError::Truncated(Field::Signature))
        );
        assert_eq!(
            CertificateVerify::decode(&[0x08, 0x07, 0x00, 0x01, 0x01, 0x02]),
            Err(DecodeError::Trailing {
                within: Field::HandshakeBody,
                count: 1
            })
        );
    }

    #[test]
    fn encode_limits() {
        let mut out = Vec::new();
        assert!(matches!(
            Certificate::encode_message(&[0u8; 256], &[0, 0, 0], &mut out),
            Err(EncodeError::TooLong {
                field: Field::CertificateRequestContext,
                ..
            })
        ));
        assert_eq!(
            encode_certificate_list(&[&b""[..]]),
            Err(EncodeError::EmptyCertData)
        );
        let big = vec![0u8; U24_MAX];
        assert!(matches!(
            encode_certificate_list(&[&big[..]]),
            Err(EncodeError::TooLong {
                field: Field::CertificateList,
                ..
            })
        ));
        let sig = vec![0u8; U16_MAX + 1];
        let cv = CertificateVerify {
            scheme: SignatureScheme::ED25519,
            signature: &sig,
        };
        assert!(cv.encode_message(&mut out).is_err());
    }

    #[test]
    fn handshake_type_debug_names() {
        assert_eq!(format!("{:?}", HandshakeType::FINISHED), "finished(20)");
        assert_eq!(format!("{:?}", HandshakeType(99)), "HandshakeType(99)");
    }
}

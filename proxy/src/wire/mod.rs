//! Pure wire codecs for MASQUE: bytes in, values out, and back.
//!
//! Nothing here does I/O or knows about tokio; callers pump bytes in and write
//! the encoded bytes out themselves. Every decoder takes untrusted peer input
//! and must never panic on it (style guide (b) 3 and 8).
//!
//! * [`varint`]: QUIC variable-length integers (RFC 9000 §16).
//! * [`capsule`]: the Capsule Protocol and the DATAGRAM capsule (RFC 9297 §3).
//! * [`datagram`]: HTTP/3 Datagrams in QUIC DATAGRAM frames (RFC 9297 §2.1)
//!   carrying CONNECT-UDP payloads (RFC 9298 §5).
//! * [`h2_frame`]: the HTTP/2 frame layer (RFC 9113 §4.1): frame headers,
//!   SETTINGS entries, GOAWAY, and scanners that follow frame boundaries.
//! * [`h2_blocks`]: a client's HTTP/2 header blocks reassembled from its
//!   frames, header sections told from trailer sections.
//! * [`h2_flood`]: which HTTP/2 control frames count toward a flood, and the
//!   token bucket over them (time passed in).
//! * [`h3_frame`]: the HTTP/3 frame layer (RFC 9114 §7): frame headers,
//!   SETTINGS entries, stream types, and incremental decoders.
//! * [`h3_error`]: HTTP/3 error codes.
//! * [`huffman`]: the HPACK/QPACK Huffman code, decoding (RFC 7541 §5.2).
//! * [`hpack`]: the field names of HTTP/2 header blocks, with the dynamic
//!   table's names and sizes followed (RFC 7541), for the pseudo-header rules.
//! * [`pseudo`]: pseudo-header field names and where they may stand.
//! * [`qpack`]: QPACK field sections without a dynamic table: prefixed
//!   integers, string literals, and which pseudo-header fields a section
//!   carries, and where (RFC 9114 §4.3), without decoding it.
//! * [`server_certificate`]: the secondary-certificate frame and setting
//!   (draft-ietf-httpbis-secondary-server-certs) for HTTP/2 and HTTP/3, and
//!   their configurable codepoints.
//! * [`target`]: a request's destination authority, normalised once.

pub mod capsule;
pub mod datagram;
pub mod h2_blocks;
pub mod h2_flood;
pub mod h2_frame;
pub mod h3_error;
pub mod h3_frame;
pub mod hpack;
pub mod huffman;
pub mod pseudo;
pub mod qpack;
pub mod server_certificate;
pub mod target;
pub mod varint;

//! The fronts: each speaks one family of protocols to clients, turns every
//! request into the core's `RequestHead` + body, and sends the core's
//! `Reply` back in its own terms. Nothing else knows hyper, h2, h3 or quinn
//! request types.
//!
//! * [`hyper_front`]: HTTP/1.1 and HTTP/2 (hyper), plaintext or TLS.
//! * [`http3`]: HTTP/3 (h3 + quinn), with [`h3_io`] (a request stream as
//!   `AsyncRead + AsyncWrite`), [`h3_body`] (bodies) and [`h3_datagrams`]
//!   (QUIC datagrams as a `DatagramChannel`).
//! * [`fields`]: the HTTP/2 and HTTP/3 field rules (connection-specific
//!   fields, one numeric `content-length`) the libraries leave to us.
//! * [`idle`]: is a connection carrying a request or tunnel (the client
//!   idle timeout).

use std::time::Duration;

/// Before a refused stream is reset (HTTP/2 RST_STREAM, HTTP/3
/// RESET_STREAM), its 400 and Proxy-Status get this long to leave: both
/// protocols' stacks discard what is still queued when the reset goes out.
pub(crate) const REFUSAL_LINGER: Duration = Duration::from_millis(25);

pub mod fields;
pub mod h3_body;
pub mod h3_datagrams;
pub mod h3_io;
pub mod http3;
pub mod hyper_front;
pub mod idle;

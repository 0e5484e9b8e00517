//! A raw HTTP/3 client connection to a parent ("gateway") Bauta, over which
//! the sidecar multiplexes CONNECT tunnels, CONNECT-UDP flows and forwarded
//! requests on one QUIC connection.
//!
//! Raw, on quinn, rather than the h3 crate's client: h3's client sends
//! `:scheme`/`:path` on plain CONNECT (our gateway rejects that, RFC 9114
//! §4.4), h3-datagram 0.0.2 writes the wrong Quarter Stream ID, and h3 has
//! no way to read SERVER_CERTIFICATE frames off the control stream. The
//! codecs are the shared, pure ones in `wire/`.
//!
//! * [`connect`] → [`H3Connection`] (`connection.rs`): handshake, our
//!   control stream, the gateway's (`uni_streams.rs`, `control.rs`),
//!   datagram routing (`datagrams.rs`).
//! * [`H3Connection::open`] (`request.rs`): one request, its response head,
//!   and an [`H3Stream`] (`stream.rs`, over `frames.rs`), which is
//!   `AsyncRead + AsyncWrite` for tunnels and a body source/sink
//!   (`body.rs`) for forwarded requests.
//! * Field sections without a dynamic table (`section.rs`,
//!   `static_table.rs`).

mod body;
mod connection;
mod control;
mod datagrams;
mod error;
mod frames;
mod request;
mod section;
mod static_table;
mod stream;
mod uni_streams;

pub use body::send_body;
pub use connection::{connect, H3Connection, H3Options};
pub use control::PeerSettings;
pub use datagrams::FlowDatagrams;
pub use error::H3Error;
pub use request::PendingResponse;
pub use section::{read_response_head, H3Request};
pub use stream::{H3RecvStream, H3SendStream, H3Stream};

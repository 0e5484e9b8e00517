//! The far side: resolving and dialling destinations under the policy
//! (`dial`), forwarding `http://` requests (`forward`) and reverse-proxying
//! origins to their upstreams (`reverse`), with a keep-alive pool (`pool`)
//! and header hygiene between hops (`headers`).

pub mod dial;
pub mod error;
pub mod forward;
pub mod headers;
pub mod pool;
pub mod reverse;

pub use error::UpstreamError;

/// The most an HTTP/1.1 upstream connection reads at once (its response
/// head must fit): a client that stops reading holds about twice this per
/// forwarded or reverse-proxied request (the buffer and the chunk on its way
/// to the client), not hyper's ≈ 400 KB default.
pub const UPSTREAM_READ_BUFFER: usize = 32 * 1024;

/// An HTTP/2 upstream's receive windows: what it may send us ahead of our
/// client reading it, per stream and per connection.
pub const UPSTREAM_H2_STREAM_WINDOW: u32 = 256 * 1024;
pub const UPSTREAM_H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

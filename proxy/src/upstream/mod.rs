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

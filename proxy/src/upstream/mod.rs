//! The far side: resolving and dialling destinations under the policy
//! (`dial`), forwarding `http://` requests (`forward`) and reverse-proxying
//! origins to their upstreams (`reverse`), with keep-alive pools.

pub mod dial;
pub mod error;
pub mod forward;
pub mod reverse;

pub use error::UpstreamError;

//! The protocol-agnostic core: one `Exchange` per request, whatever front it
//! came from; the data path (`serve`); the one map from errors to answers
//! (`respond`); the state every connection shares (`context`).

pub mod context;
pub mod exchange;
pub mod respond;
pub mod serve;

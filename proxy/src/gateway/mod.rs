//! The sidecar's side of a parent ("gateway") Bauta: the connections it keeps to it.

pub mod h3;

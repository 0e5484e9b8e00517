//! Sockets: accepting connections and handing them to the fronts.

pub mod admission;
pub mod connections;
pub mod quic;
pub mod quic_admission;
pub mod tcp;

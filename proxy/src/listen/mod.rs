//! Sockets: accepting connections and handing them to the fronts.

pub mod tcp;

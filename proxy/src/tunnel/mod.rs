//! Tunnels: byte relays between a client-side stream and a target.

pub mod carriage;
pub mod copy;
pub mod prefixed;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod tcp;
pub mod udp;
pub mod udp_chain;
pub mod udp_flow;

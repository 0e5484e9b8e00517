//! Bauta: a MASQUE forward proxy.
//!
//! The data path: accept (`listen`) → speak HTTP/1.1 or HTTP/2 (hyper) →
//! `serve::handle` → policy and dial (`dial`, over `bauta_policy`) → tunnel
//! (`tunnel`) or forward (`forward`) → count (`metrics`) and log
//! (`access_log`). Errors map to answers in one place (`respond`).

pub mod access_log;
pub mod admin;
pub mod body;
pub mod config;
pub mod default_config;
pub mod dial;
pub mod exchange;
pub mod forward;
pub mod front;
pub mod listen;
pub mod logging;
pub mod metered_body;
pub mod metrics;
pub mod origin;
pub mod probe;
pub mod reload;
pub mod respond;
pub mod reverse;
pub mod seccert;
pub mod secondary;
pub mod serve;
pub mod server;
pub mod shared;
pub mod shutdown;
pub mod target;
pub mod tls;
pub mod tunnel;
pub mod udp_target;
pub mod wire;

pub use config::Config;
pub use server::{start, Running};

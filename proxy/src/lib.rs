//! Bauta: a MASQUE hybrid forward/reverse proxy.
//!
//! The data path, one sentence: a listener accepts (`listen`) → a front
//! speaks HTTP/1.1, HTTP/2 or HTTP/3 (`front`) and hands one request to the
//! core → `core::serve` classifies and routes it (`core::route`), asks the
//! who asks (`auth`, for clients without a certificate), asks the
//! policy while dialling (`upstream::dial`), and serves it as a TCP tunnel,
//! a UDP tunnel (`tunnel`), a forwarded or a reverse-proxied request
//! (`upstream`) → counted (`ops::metrics`) and logged (`ops::access_log`).
//! Errors become answers in one place (`core::respond`). See ARCHITECTURE.md.

pub mod auth;
pub mod body;
pub mod config;
pub mod core;
pub mod front;
pub mod gateway;
pub mod listen;
pub mod ops;
pub mod policy_tool;
pub mod probe;
pub mod seccert;
pub mod server;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod wire;

pub use config::Config;
pub use server::{start, Running};

//! Operations: metrics, the access log, diagnostics logging, the admin endpoint.

pub mod access_log;
pub mod admin;
pub mod logging;
pub mod metrics;

//! Operations: metrics, the access log, diagnostics logging, the admin
//! endpoint, and what the process can learn about itself (`process`).

pub mod access_log;
pub mod admin;
pub mod line_sink;
pub mod logging;
pub mod metrics;
pub mod process;

//! The embedded default: what `bauta` with no arguments runs. A local proxy
//! that allows public destinations and nothing else (SSRF-safe), with a
//! self-signed certificate generated on first start.

use std::path::Path;

use crate::config::{Config, ConfigError};

const TEMPLATE: &str = r#"
[admin]
listen = "127.0.0.1:9090"

[[listener]]
name = "plain"
listen = "127.0.0.1:8080"
protocols = ["http1"]

[[listener]]
name = "secure"
listen = "127.0.0.1:8443"
protocols = ["http1", "h2", "h3"]
tls_cert = @CERT@
tls_key = @KEY@

[policy]
# No rules: every public destination is allowed; loopback, private,
# link-local, CGNAT, metadata and other special addresses are denied.
default = "allow"
"#;

/// The default configuration with the given certificate and key paths.
pub fn build(cert: &Path, key: &Path) -> Result<Config, ConfigError> {
    let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let text = TEMPLATE
        .replace("@CERT@", &quote(cert))
        .replace("@KEY@", &quote(key));
    Config::parse(&text, "<embedded default>", Path::new("/"))
}

/// The template text, for `bauta --print-default`-style documentation.
pub fn template() -> &'static str {
    TEMPLATE
}

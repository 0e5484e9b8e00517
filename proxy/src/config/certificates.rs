//! The certificates a configuration serves (listener leaves, origin
//! leaves) and when each expires: for the expiry gauge
//! (`bauta_certificate_expiry_timestamp_seconds`) and for the warnings of
//! `bauta check`, start and reload about one that expires soon.

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Config;

/// Warn about certificates that expire within this many days.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// One served certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedCertificate {
    /// `listener` or `origin`.
    pub kind: &'static str,
    /// The listener's name, or the origin's `host:port`.
    pub name: String,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
}

/// notAfter of a DER certificate, in Unix seconds.
pub fn not_after(der: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Every listener and origin certificate of `config` with its expiry.
pub fn served(config: &Config) -> Vec<ServedCertificate> {
    let listeners = config.listeners.iter().filter_map(|l| {
        Some(ServedCertificate {
            kind: "listener",
            name: l.name.to_string(),
            not_after: not_after(l.leaf.as_ref()?)?,
        })
    });
    let origins = config.origins.list.iter().filter_map(|o| {
        Some(ServedCertificate {
            kind: "origin",
            name: o.authority.to_string(),
            not_after: not_after(o.chain.first()?)?,
        })
    });
    listeners.chain(origins).collect()
}

/// Log a warning for each certificate of `config` that expires within
/// [`EXPIRY_WARNING_DAYS`] of `now` (Unix seconds), or has expired.
pub fn warn_expiring(config: &Config, now: i64) {
    for c in served(config) {
        let days = (c.not_after - now).div_euclid(86_400);
        if days < EXPIRY_WARNING_DAYS {
            tracing::warn!(
                kind = c.kind,
                name = %c.name,
                days_left = days,
                "certificate expires in less than {EXPIRY_WARNING_DAYS} days: renew it (a reload picks up the new files)"
            );
        }
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

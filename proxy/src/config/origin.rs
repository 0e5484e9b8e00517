//! Reverse-proxied origins: the `[[origin]]` tables compiled into what the
//! proxy needs at run time — the origin's name, its certificate chain and
//! signing key (for secondary certificates), and how to reach its upstream.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

use crate::seccert::advertiser::Provable;
use crate::tls;
use crate::wire::target::Target;

/// One origin the proxy serves itself.
pub struct Origin {
    /// Lower-case host name, as clients put it in `:authority`.
    pub host: String,
    pub port: u16,
    /// `host:port` as a [`Target`]: the origin's stable identity, the same
    /// across reloads (coverage and advertising are keyed by it).
    pub authority: Target,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<dyn rustls::sign::SigningKey>,
    /// The chain and key ready for authenticators (Certificate message cached).
    pub cert: Arc<crate::seccert::OriginCert>,
    pub upstream: Upstream,
    /// When set, the client's verified identity goes upstream in this
    /// header, and any copy the client sent is removed first.
    pub identity_header: Option<http::HeaderName>,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("upstream", &self.upstream)
            .finish()
    }
}

/// Where requests for an origin go.
#[derive(Clone)]
pub struct Upstream {
    pub host: bauta_policy::Host,
    pub port: u16,
    /// TLS to the upstream (ALPN h2 and http/1.1), or plain HTTP/1.1.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// The upstream as written, for logs.
    pub display: String,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// All configured origins, indexed by authority.
#[derive(Default, Debug)]
pub struct Origins {
    pub list: Vec<Arc<Origin>>,
    by_authority: HashMap<Target, usize>,
    /// Built once per configuration, shared by every connection's advertiser.
    provable: Provable,
}

impl Origins {
    pub fn new(list: Vec<Arc<Origin>>) -> Origins {
        let by_authority = list
            .iter()
            .enumerate()
            .map(|(i, o)| (o.authority.clone(), i))
            .collect();
        let provable = list
            .iter()
            .map(|o| (o.authority.clone(), Arc::clone(&o.cert)))
            .collect();
        Origins {
            list,
            by_authority,
            provable,
        }
    }

    /// The origin for an authority (`Target` hosts are already lower-case,
    /// without a trailing dot).
    pub fn find(&self, authority: &Target) -> Option<&Arc<Origin>> {
        let i = *self.by_authority.get(authority)?;
        self.list.get(i)
    }

    /// What the secondary-certificate advertiser may prove, in configuration order.
    pub fn provable(&self) -> Provable {
        Arc::clone(&self.provable)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }
}

/// The origins whose host a certificate (a listener's leaf) covers.
pub fn covered_by(
    leaf: &CertificateDer<'static>,
    origins: &Origins,
) -> std::collections::HashSet<Target> {
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return Default::default();
    };
    origins
        .list
        .iter()
        .filter(|o| {
            ServerName::try_from(o.host.clone())
                .map(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
                .unwrap_or(false)
        })
        .map(|o| o.authority.clone())
        .collect()
}

/// Load an origin's chain and key, and check that the chain's leaf covers
/// `host` (so no certificate is ever advertised for a name it does not prove).
pub fn load_identity(
    host: &str,
    cert: &Path,
    key: &Path,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        Arc<dyn rustls::sign::SigningKey>,
    ),
    String,
> {
    let key_path = key;
    let chain = tls::load_certs(cert)?;
    let key_der = tls::load_key(key_path)?;
    let key = tls::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: unusable private key: {e}", key_path.display()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("{}: empty chain", cert.display()))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid server name"))?;
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("{}: cannot parse the leaf certificate: {e}", cert.display()))?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("{}: the certificate does not cover {host}", cert.display()))?;
    // The key must belong to the leaf.
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), Arc::clone(&key));
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(format!(
                "{} and {} do not belong together (the key does not match the leaf certificate)",
                cert.display(),
                key_path.display()
            ))
        }
    }
    Ok((chain, key))
}

/// Parse `https://host:port` or `http://host:port` (no path) into an upstream.
pub fn parse_upstream(url: &str, ca: Option<&Path>) -> Result<Upstream, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?}: expected http://host:port or https://host:port"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(format!("{url:?}: an upstream has no path"));
    }
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return Err(format!("{url:?}: scheme must be http or https")),
    };
    let target = crate::wire::target::Target::parse_authority(rest, Some(default_port))
        .map_err(|e| format!("{url:?}: {e}"))?;
    let tls = if scheme == "https" {
        let server_name = tls::server_name(&target.host).map_err(|e| format!("{url:?}: {e}"))?;
        Some((upstream_client_config(ca)?, server_name))
    } else {
        if ca.is_some() {
            return Err(format!(
                "{url:?}: upstream_ca only applies to https upstreams"
            ));
        }
        None
    };
    Ok(Upstream {
        host: target.host,
        port: target.port,
        tls,
        display: url.to_string(),
    })
}

/// TLS client config for upstreams: trust `ca` if given, else the system's roots.
fn upstream_client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = tls::root_store(ca)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("upstream TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

//! `[auth]`: Basic credentials for clients that present no verified
//! certificate.
//!
//! ```toml
//! [auth]
//! basic_file = "users.txt"   # `bauta passwd users.txt alice`
//! realm = "corp egress"      # Proxy-Authenticate: Basic realm="corp egress"
//! required = true            # false: no credential = anonymous (policy decides)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::HeaderValue;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};
use crate::auth::credentials::Credentials;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthSection {
    basic_file: Option<Spanned<String>>,
    realm: Option<Spanned<String>>,
    required: Option<Spanned<bool>>,
}

/// Basic authentication, ready to check.
#[derive(Clone, Debug)]
pub struct AuthSpec {
    pub credentials: Arc<Credentials>,
    /// The credentials file (reloaded with the configuration).
    pub file: PathBuf,
    /// `Basic realm="…", charset="UTF-8"` for `Proxy-Authenticate`.
    pub challenge: HeaderValue,
    /// Without a credential: 407 (`true`) or anonymous (`false`).
    pub required: bool,
}

pub(super) fn compile_auth(
    a: &AuthSection,
    src: &Source<'_>,
    base: &Path,
) -> Result<Option<AuthSpec>, ConfigError> {
    let Some(file) = &a.basic_file else {
        for (present, key) in [
            (a.realm.as_ref().map(|r| r.span()), "auth.realm"),
            (a.required.as_ref().map(|r| r.span()), "auth.required"),
        ] {
            if let Some(span) = present {
                return Err(src.err(span, key, "needs auth.basic_file"));
            }
        }
        return Ok(None);
    };
    let realm = match &a.realm {
        Some(r) => {
            let text = r.get_ref();
            // A quoted-string that every client parses: printable ASCII, no
            // quote or backslash to escape.
            if text.is_empty()
                || !text
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
            {
                return Err(src.err(
                    r.span(),
                    "auth.realm",
                    "must be non-empty printable ASCII without '\"' or '\\'",
                ));
            }
            text.as_str()
        }
        None => "bauta",
    };
    let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
        .map_err(|e| src.err(file.span(), "auth.realm", e.to_string()))?;
    let path = src.path(base, file.get_ref());
    crate::tls::secret_file::warn_if_exposed(&path, "credentials file");
    // A line of the credentials file is named in that file; an unreadable
    // file at the key that names it.
    let credentials = Credentials::load(&path).map_err(|e| match e.line {
        0 => src.err(file.span(), "auth.basic_file", e.message),
        line => ConfigError {
            file: path.display().to_string(),
            line: Some(line),
            key: String::new(),
            message: e.message,
        },
    })?;
    Ok(Some(AuthSpec {
        credentials: Arc::new(credentials),
        file: path,
        challenge,
        required: a.required.as_ref().is_none_or(|r| *r.get_ref()),
    }))
}

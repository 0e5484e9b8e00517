//! `Proxy-Authorization: Basic` (RFC 7617, RFC 9110 §11.7.2): the header
//! value in, a user-id and password out. Pure; nothing here is logged.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{HeaderMap, PROXY_AUTHORIZATION};

use super::Failure;

/// The user-id and password of one `Basic` credential. `Debug` hides the
/// password.
pub struct BasicCredential {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredential")
            .field("user", &self.user)
            .field("password", &"…")
            .finish()
    }
}

/// The request's `Basic` credential: `Missing` without a
/// `Proxy-Authorization` field, `Malformed` for anything that is not exactly
/// one well-formed `Basic` credential (another scheme included: this proxy
/// offers only Basic).
pub fn credential(headers: &HeaderMap) -> Result<BasicCredential, Failure> {
    let mut values = headers.get_all(PROXY_AUTHORIZATION).iter();
    let value = values.next().ok_or(Failure::Missing)?;
    if values.next().is_some() {
        return Err(Failure::Malformed);
    }
    parse(value.as_bytes()).ok_or(Failure::Malformed)
}

/// `Basic <token68>`: the scheme is case-insensitive (RFC 9110 §11.1), the
/// token is standard base64 of `user-id ":" password` in UTF-8 (RFC 7617 §2.1;
/// the user-id cannot contain a colon).
fn parse(value: &[u8]) -> Option<BasicCredential> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(token.trim_start_matches(' ')).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    if user.is_empty() || user.chars().any(char::is_control) {
        return None;
    }
    Some(BasicCredential {
        user: user.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                PROXY_AUTHORIZATION,
                HeaderValue::from_str(v).expect("test value"),
            );
        }
        h
    }

    fn encoded(s: &str) -> String {
        format!("Basic {}", STANDARD.encode(s))
    }

    #[test]
    fn well_formed_credentials() {
        // RFC 7617 §2's example: Aladdin / open sesame.
        let c = credential(&with(&["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="])).expect("parses");
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("Aladdin", "open sesame")
        );
        // Scheme in any case, extra spaces, colons and UTF-8 in the password.
        let c = credential(&with(&[&format!(
            "bAsIc   {}",
            STANDARD.encode("zoë:a:b:ç")
        )]))
        .expect("parses");
        assert_eq!((c.user.as_str(), c.password.as_str()), ("zoë", "a:b:ç"));
        let c = credential(&with(&[&encoded("u:")])).expect("empty password");
        assert_eq!(c.password, "");
    }

    #[test]
    fn missing_and_malformed() {
        assert!(matches!(
            credential(&HeaderMap::new()),
            Err(Failure::Missing)
        ));
        for bad in [
            "Basic",
            "Basic ",
            "Bearer abc",
            "Digest username=\"a\"",
            "Basic !!!notbase64",
            &encoded("no-colon"),
            &encoded(":password-without-user"),
            &format!("Basic {}", STANDARD.encode([0xff, b':', b'x'])),
            &encoded("a\u{7}b:x"),
        ] {
            assert!(
                matches!(credential(&with(&[bad])), Err(Failure::Malformed)),
                "{bad:?}"
            );
        }
        let two = with(&[&encoded("a:b"), &encoded("a:b")]);
        assert!(matches!(credential(&two), Err(Failure::Malformed)));
    }

    #[test]
    fn debug_hides_the_password() {
        let c = credential(&with(&[&encoded("alice:hunter2")])).expect("parses");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}

//! Who is asking, when the connection does not say (no verified client
//! certificate): `Proxy-Authorization: Basic` checked against a credentials
//! file of argon2id hashes.
//!
//! `basic` parses the header (pure); `credentials` is the loaded file and the
//! check; `passwd` writes an entry for `bauta passwd`.

pub mod basic;
pub mod credentials;
pub mod passwd;

/// Random bytes from the crypto provider the whole process uses (aws-lc-rs).
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // aws-lc-rs's RNG does not fail on a working system; if it ever did,
    // the zeroes would only weaken a salt or a cache key, never a check.
    let _ = rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes);
    bytes
}

/// Why a request's credential was not accepted: the `reason` label of
/// `bauta_auth_failures_total{method="basic"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No `Proxy-Authorization` field.
    Missing,
    /// Not exactly one well-formed `Basic` credential.
    Malformed,
    /// No such user in the credentials file.
    UnknownUser,
    /// The user exists; the password is not theirs.
    WrongPassword,
}

impl Failure {
    pub const ALL: [Failure; 4] = [
        Failure::Missing,
        Failure::Malformed,
        Failure::UnknownUser,
        Failure::WrongPassword,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Malformed => "malformed",
            Failure::UnknownUser => "unknown_user",
            Failure::WrongPassword => "wrong_password",
        }
    }

    /// What the client is told (the same for an unknown user and a wrong
    /// password, so the answer does not say which users exist).
    pub fn details(self) -> &'static str {
        match self {
            Failure::Missing => "proxy authentication required",
            Failure::Malformed => "Proxy-Authorization is not one valid Basic credential",
            Failure::UnknownUser | Failure::WrongPassword => "invalid proxy credentials",
        }
    }
}

//! The credentials file (`[auth] basic_file`): one `user:PHC-hash` line per
//! user (argon2id, as `bauta passwd` writes it), `#` comments and blank lines
//! ignored; and the check of one `Basic` credential against it.
//!
//! An argon2id check costs tens of milliseconds of CPU and ~19 MiB on
//! purpose, which a proxy cannot pay on every CONNECT. So a credential that
//! passed is remembered under a keyed SHA-256 digest of user and password
//! (the key is random per load, so the digests say nothing outside this
//! process and a reload forgets them all), and checks that must run argon2
//! go through a small gate of blocking threads: a flood of wrong passwords
//! costs at most that many cores and never delays a remembered client.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::{Argon2, Params};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::basic::BasicCredential;
use super::Failure;

/// At most this many argon2 checks run at once.
const PARALLEL_CHECKS: usize = 2;
/// Remembered credentials; past this the memory starts over (a client whose
/// entry went simply pays one more check).
const MAX_REMEMBERED: usize = 4096;
/// Hash parameters a file may ask for (argon2's own bounds are far larger):
/// a line with `m=4194304` would make every check allocate 4 GiB.
const MAX_MEMORY_KIB: u32 = 256 * 1024;
const MAX_TIME_COST: u32 = 16;
const MAX_LANES: u32 = 8;

/// A loaded credentials file.
pub struct Credentials {
    /// User → its PHC string (checked to parse at load).
    users: HashMap<Box<str>, Box<str>>,
    /// Digests of credentials that passed.
    remembered: Mutex<HashMap<[u8; 32], Arc<str>>>,
    key: [u8; 32],
    gate: Arc<Semaphore>,
}

/// A line of the file that is not an entry.
#[derive(Debug, PartialEq, Eq)]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} users)", self.users.len())
    }
}

// === impl Credentials ===

impl Credentials {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<Credentials, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            line: 0,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Credentials::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Credentials, FileError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let entry = raw.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let err = |message: String| FileError { line, message };
            let (user, hash) = entry
                .split_once(':')
                .ok_or_else(|| err("expected `user:hash` (see `bauta passwd`)".into()))?;
            check_user(user).map_err(|m| err(m.into()))?;
            check_hash(hash).map_err(err)?;
            if users.insert(user.into(), hash.into()).is_some() {
                return Err(err(format!("user {user:?} appears twice")));
            }
        }
        Ok(Credentials {
            users,
            remembered: Mutex::new(HashMap::new()),
            key: super::random(),
            gate: Arc::new(Semaphore::new(PARALLEL_CHECKS)),
        })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user, if `cred` is one of this file's credentials. An unknown user
    /// costs the same argon2 check as a known one (against a dummy hash), so
    /// timing does not tell which users exist; argon2 compares its output in
    /// constant time.
    pub async fn check(&self, cred: &BasicCredential) -> Result<Arc<str>, Failure> {
        let digest = self.digest(cred);
        if let Some(user) = self.remembered().get(&digest) {
            return Ok(Arc::clone(user));
        }
        let known = self.users.get(cred.user.as_str());
        let hash: Option<Box<str>> = known.cloned();
        let password = cred.password.clone().into_bytes();
        let permit = Arc::clone(&self.gate)
            .acquire_owned()
            .await
            .map_err(|_| Failure::WrongPassword)?;
        let matched = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // The dummy hash is made on first use, an argon2 hash itself:
            // here, off the async threads.
            let hash = hash.as_deref().unwrap_or(DUMMY_HASH.as_str());
            verify(hash, &password)
        })
        .await
        .unwrap_or(false);
        match (known, matched) {
            (None, _) => Err(Failure::UnknownUser),
            (Some(_), false) => Err(Failure::WrongPassword),
            (Some(_), true) => {
                let user: Arc<str> = Arc::from(cred.user.as_str());
                let mut remembered = self.remembered();
                if remembered.len() >= MAX_REMEMBERED {
                    remembered.clear();
                }
                remembered.insert(digest, Arc::clone(&user));
                Ok(user)
            }
        }
    }

    fn digest(&self, cred: &BasicCredential) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        h.update((cred.user.len() as u64).to_be_bytes());
        h.update(cred.user.as_bytes());
        h.update(cred.password.as_bytes());
        h.finalize().into()
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<str>>> {
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A user-id as RFC 7617 allows it and a file line can hold it.
pub fn check_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        return Err("the user name is empty");
    }
    if user.contains(':') {
        return Err("a user name cannot contain ':' (RFC 7617 §2)");
    }
    if user.chars().any(|c| c.is_control()) || user.trim() != user {
        return Err("a user name cannot contain control characters or start or end with a space");
    }
    if user.starts_with('#') {
        return Err("a user name cannot start with '#' (a comment in the file)");
    }
    Ok(())
}

/// A PHC string of argon2 with parameters within our bounds.
fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash)
        .map_err(|e| format!("not a PHC hash string ({e}); write entries with `bauta passwd`"))?;
    if !matches!(
        parsed.algorithm.as_str(),
        "argon2id" | "argon2i" | "argon2d"
    ) {
        return Err(format!(
            "hash algorithm {:?} is not supported; use argon2id (`bauta passwd`)",
            parsed.algorithm.as_str()
        ));
    }
    let params = Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if params.m_cost() > MAX_MEMORY_KIB
        || params.t_cost() > MAX_TIME_COST
        || params.p_cost() > MAX_LANES
    {
        return Err(format!(
            "argon2 parameters m={} t={} p={} exceed the limits m≤{MAX_MEMORY_KIB} t≤{MAX_TIME_COST} p≤{MAX_LANES}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("the hash string has no salt or no hash".into());
    }
    Ok(())
}

/// Whether `password` matches `hash` (parsed again here: it was checked at load).
fn verify(hash: &str, password: &[u8]) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// What an unknown user is checked against: a hash of a random password with
/// the default parameters, which no password matches in practice.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| super::passwd::hash(&super::random::<32>()).unwrap_or_default());

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(user: &str, password: &str) -> BasicCredential {
        BasicCredential {
            user: user.into(),
            password: password.into(),
        }
    }

    fn file(entries: &[(&str, &str)]) -> String {
        let mut text = String::from("# users\n\n");
        for (user, password) in entries {
            let hash = super::super::passwd::hash(password.as_bytes()).expect("hash");
            text.push_str(&format!("{user}:{hash}\n"));
        }
        text
    }

    #[tokio::test]
    async fn right_wrong_and_unknown() {
        let creds =
            Credentials::parse(&file(&[("alice", "s3cret"), ("bob", "other")])).expect("parses");
        assert_eq!(creds.len(), 2);
        assert_eq!(
            &*creds.check(&cred("alice", "s3cret")).await.expect("ok"),
            "alice"
        );
        // Remembered: the second check is a digest lookup.
        assert_eq!(creds.remembered().len(), 1);
        assert_eq!(
            &*creds.check(&cred("alice", "s3cret")).await.expect("ok"),
            "alice"
        );
        assert_eq!(
            creds.check(&cred("alice", "S3cret")).await.err(),
            Some(Failure::WrongPassword)
        );
        assert_eq!(
            creds.check(&cred("alice", "other")).await.err(),
            Some(Failure::WrongPassword),
            "bob's password is not alice's"
        );
        assert_eq!(
            creds.check(&cred("carol", "s3cret")).await.err(),
            Some(Failure::UnknownUser)
        );
        assert_eq!(creds.remembered().len(), 1, "failures are not remembered");
    }

    #[test]
    fn bad_lines_name_their_line() {
        let good = file(&[("alice", "x")]);
        let cases = [
            ("no colon here\n", 1, "user:hash"),
            ("alice:plaintext\n", 1, "PHC"),
            // The user ends at the first ':', so the rest is no hash.
            (
                "a:b:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA\n",
                1,
                "PHC",
            ),
            (
                "x:$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\n",
                1,
                "exceed",
            ),
            (
                "x:$scrypt$ln=16,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\n",
                1,
                "not supported",
            ),
        ];
        for (text, line, needle) in cases {
            let e = Credentials::parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text}");
            assert!(e.message.contains(needle), "{text}: {}", e.message);
        }
        let twice = format!("{good}{}", good.lines().last().unwrap_or_default());
        let e = Credentials::parse(&twice).expect_err("duplicate");
        assert!(e.message.contains("twice"), "{}", e.message);
        assert_eq!(e.line, 4);
    }
}

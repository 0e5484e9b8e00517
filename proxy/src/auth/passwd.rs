//! `bauta passwd FILE USER`: add or replace one user's entry in a
//! credentials file. The password comes from the terminal (asked twice,
//! not echoed) or from one line of standard input — never from the command
//! line, where `ps` and shell history would show it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;

use super::credentials::check_user;

/// What `set` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Added,
    Replaced,
}

/// An argon2id PHC string of `password` with a fresh random salt and the
/// argon2 crate's default parameters (m=19 MiB, t=2, p=1: OWASP's minimum).
pub fn hash(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::encode_b64(&super::random::<16>())
        .map_err(|e| format!("cannot make a salt: {e}"))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Set `user`'s password in the file at `path` (created, mode 0600, if
/// missing). Other lines, comments included, are kept as they are; the file
/// is replaced atomically (a new file renamed over it), so a proxy watching
/// it never reads half of it.
pub fn set(path: &Path, user: &str, password: &str) -> Result<Change, String> {
    check_user(user)?;
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let entry = format!("{user}:{}", hash(password.as_bytes())?);
    let (text, change) = with_entry(&old, user, &entry);
    write_atomically(path, &text)?;
    Ok(change)
}

/// `old` with `user`'s line replaced by `entry`, or `entry` appended.
fn with_entry(old: &str, user: &str, entry: &str) -> (String, Change) {
    let mut change = Change::Added;
    let mut out = String::with_capacity(old.len() + entry.len() + 1);
    for line in old.lines() {
        let is_user = line
            .trim()
            .split_once(':')
            .is_some_and(|(u, _)| u == user && !line.trim().starts_with('#'));
        if is_user {
            if change == Change::Added {
                out.push_str(entry);
                out.push('\n');
                change = Change::Replaced;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if change == Change::Added {
        out.push_str(entry);
        out.push('\n');
    }
    (out, change)
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", tmp.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Keep the file's mode if it exists; a new file is the owner's only.
        let mode = std::fs::metadata(path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o600);
        options.mode(mode);
    }
    let mut file = options.open(&tmp).map_err(|e| fail("create", e))?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fail("write", e));
    if let Err(e) = written.and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
    }) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// The new password: asked twice on a terminal, else the first line of
/// standard input (without its line ending).
pub fn read_password(user: &str) -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("New password for {user}: "))
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let again = rpassword::prompt_password("Again: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    Ok(password.strip_suffix('\r').unwrap_or(password).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_added_and_replaced_in_place() {
        let old = "# team\nalice:OLD\n\nbob:B\n";
        let (text, change) = with_entry(old, "alice", "alice:NEW");
        assert_eq!(change, Change::Replaced);
        assert_eq!(text, "# team\nalice:NEW\n\nbob:B\n");
        let (text, change) = with_entry(&text, "carol", "carol:C");
        assert_eq!(change, Change::Added);
        assert_eq!(text, "# team\nalice:NEW\n\nbob:B\ncarol:C\n");
        // A comment that looks like an entry is left alone.
        let (text, change) = with_entry("#alice:x\n", "alice", "alice:Y");
        assert_eq!(
            (text.as_str(), change),
            ("#alice:x\nalice:Y\n", Change::Added)
        );
    }

    #[test]
    fn set_writes_a_checkable_private_file() {
        let dir = std::env::temp_dir().join(format!("bauta-passwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("users.txt");
        let _ = std::fs::remove_file(&path);
        // Passwords with characters outside the hashes' base64 alphabet: a
        // random salt or digest cannot contain them by chance (with "pw1",
        // a salt holding "pw" failed the check about once in 40 runs).
        let passwords = ["pw-1!", "pw-2!", "pw-3!"];
        assert_eq!(set(&path, "alice", passwords[0]), Ok(Change::Added));
        assert_eq!(set(&path, "bob", passwords[1]), Ok(Change::Added));
        assert_eq!(set(&path, "alice", passwords[2]), Ok(Change::Replaced));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains("pw-"), "no password in clear: {text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(set(&path, "a:b", "x").is_err());
        assert!(set(&path, "alice", "").is_err());
        let creds = super::super::credentials::Credentials::load(&path).expect("loads");
        assert_eq!(creds.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

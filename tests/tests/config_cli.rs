//! Configuration errors through the library (`Config::parse`) and the CLI
//! (`bauta check`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bauta_tests::*;

const GOOD: &str = r#"[proxy]
name = "bauta"

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocols = ["http1"]

[policy]
default = "deny"

[[policy.rule]]
name = "lab"
action = "allow"
protocols = ["connect", "http"]
hosts = ["*.example.com", "localhost"]
ports = [443, "8000-9000"]
cidrs = ["127.0.0.0/8", "::1/128"]
"#;

fn check(path: &Path) -> std::process::Output {
    let mut cmd = Command::new(bauta_bin());
    cmd.arg("check").arg("--config").arg(path);
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

fn parse_err(text: &str) -> bauta::config::ConfigError {
    init();
    match bauta::Config::parse(text, "test.toml", Path::new("/tmp")) {
        Ok(_) => panic!("config accepted but should not be:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn cli_check_good_config_exits_0_with_summary() {
    let dir = TempDir::new("cli-good");
    let path = dir.write("good.toml", GOOD);
    let out = check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stdout:?}");
    assert!(
        lines[0].starts_with(&format!("{}: ok:", path.display())),
        "summary line: {stdout:?}"
    );
}

#[test]
fn cli_check_tls_config_with_relative_paths() {
    let certs = make_certs();
    // Relative paths resolve against the config file's directory.
    let text = format!(
        "{GOOD}\n[[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\", \"h2\"]\n\
         tls_cert = \"proxy.pem\"\ntls_key = \"proxy.key\"\n"
    );
    let path = certs.dir.write("tls.toml", &text);
    let out = check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok:"), "{stdout}");
    assert!(
        stdout.contains("tls://"),
        "summary names the TLS listener: {stdout}"
    );
}

#[test]
fn cli_check_warns_about_secret_files_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let certs = make_certs();
    let users = certs.dir.write(
        "users.txt",
        "alice:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$2lqmM4Sx7Rz0c2wYAnY8W2AEzDqNvZ4cmPbJxJfYzLk\n",
    );
    let text = format!(
        "{GOOD}\n[auth]\nbasic_file = \"users.txt\"\n\n[[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\n\
         protocols = [\"http1\"]\ntls_cert = \"proxy.pem\"\ntls_key = \"proxy.key\"\n"
    );
    let path = certs.dir.write("perm.toml", &text);
    let key = certs.dir.path().join("proxy.key");
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    set(&key, 0o644);
    set(&users, 0o604);
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "still loads: {stderr}");
    assert!(
        stderr.contains("private key file is readable by every user")
            && stderr.contains("proxy.key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("credentials file is readable by every user")
            && stderr.contains("users.txt"),
        "{stderr}"
    );
    set(&key, 0o600);
    set(&users, 0o600);
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("readable by"),
        "owner-only files: no warning: {stderr}"
    );
}

#[test]
fn cli_check_bad_listen_address_exits_2_naming_file_line_key() {
    let dir = TempDir::new("cli-bad");
    let path = dir.write(
        "bad.toml",
        "[[listener]]\nname = \"plain\"\nlisten = \"nonsense\"\nprotocols = [\"http1\"]\n",
    );
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("bad.toml:3: listener.listen"),
        "names file, line and key: {stderr}"
    );
    assert!(
        stderr.contains("nonsense"),
        "quotes the bad value: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn cli_check_bad_policy_rule_exits_2() {
    let dir = TempDir::new("cli-bad-rule");
    let text =
        "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
                [[policy.rule]]\nname = \"x\"\naction = \"allow\"\nports = [\"9-1\"]\n";
    let path = dir.write("rule.toml", text);
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("rule.toml:"), "{stderr}");
    assert!(stderr.contains("policy.rule"), "{stderr}");
}

#[test]
fn cli_check_missing_file_exits_2() {
    let dir = TempDir::new("cli-missing");
    let path = dir.path().join("absent.toml");
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

#[test]
fn parse_listen_error_names_line_and_key() {
    let e = parse_err(
        "[[listener]]\nname = \"plain\"\nlisten = \"nonsense\"\nprotocols = [\"http1\"]\n",
    );
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key, "listener.listen");
    assert!(
        e.to_string().starts_with("test.toml:3: listener.listen:"),
        "{e}"
    );
}

#[test]
fn parse_unknown_key_is_an_error() {
    let e = parse_err(&format!("{GOOD}\n[limits]\nconect_timeout_ms = 5\n"));
    let shown = e.to_string();
    assert!(
        shown.contains("conect_timeout_ms"),
        "names the unknown key: {shown}"
    );
    assert!(shown.starts_with("test.toml:"), "{shown}");
    assert!(e.line.is_some(), "{shown}");
}

#[test]
fn parse_unknown_top_level_section_is_an_error() {
    let e = parse_err(&format!("{GOOD}\n[proxxy]\nname = \"x\"\n"));
    assert!(e.to_string().contains("proxxy"), "{e}");
}

#[test]
fn parse_bad_port_range_in_rule_is_an_error() {
    let text = format!(
        "{}\n[[policy.rule]]\nname = \"inverted\"\naction = \"allow\"\nports = [\"9-1\"]\n",
        GOOD
    );
    let e = parse_err(&text);
    assert_eq!(e.key, "policy.rule", "{e}");
    // The offending rule starts after GOOD (line count of GOOD + 2).
    let rule_line = GOOD.lines().count() + 2;
    assert!(
        e.line.is_some_and(|l| l >= rule_line),
        "points at the inverted rule (≥ line {rule_line}): {e}"
    );
}

#[test]
fn parse_bad_cidr_and_host_pattern_are_errors() {
    for (what, rule) in [
        ("cidr", "cidrs = [\"127.0.0.0/33\"]"),
        ("host", "hosts = [\"exa mple.com\"]"),
        ("protocol", "protocols = [\"gopher\"]"),
        ("action", "action = \"maybe\""),
    ] {
        let action = if what == "action" {
            ""
        } else {
            "action = \"allow\"\n"
        };
        let text = format!("{GOOD}\n[[policy.rule]]\nname = \"bad-{what}\"\n{action}{rule}\n");
        let e = parse_err(&text);
        assert!(e.to_string().starts_with("test.toml:"), "{what}: {e}");
    }
}

#[test]
fn parse_tls_cert_without_key_is_an_error() {
    let certs = make_certs();
    let text = format!(
        "[[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"h2\"]\ntls_cert = '{}'\n",
        certs.cert_pem.display()
    );
    let e = parse_err(&text);
    assert_eq!(e.key, "listener.tls_key", "{e}");
    assert_eq!(e.line, Some(5), "{e}");
}

#[test]
fn parse_unreadable_cert_is_an_error() {
    let e = parse_err(
        "[[listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"h2\"]\n\
         tls_cert = 'does-not-exist.pem'\ntls_key = 'does-not-exist.key'\n",
    );
    assert_eq!(e.key, "listener.tls_cert", "{e}");
    assert!(e.to_string().contains("does-not-exist.pem"), "{e}");
}

#[test]
fn parse_zero_timeout_and_no_listener_are_errors() {
    let e = parse_err(&format!("{GOOD}\n[limits]\nconnect_timeout_ms = 0\n"));
    assert_eq!(e.key, "limits.connect_timeout_ms", "{e}");
    let e = parse_err("[policy]\ndefault = \"deny\"\n");
    assert!(e.to_string().contains("listener"), "{e}");
}

#[test]
fn parse_good_config_round_trips_summary() {
    init();
    let cfg = bauta::Config::parse(GOOD, "good.toml", Path::new("/tmp")).expect("valid config");
    let s = cfg.summary();
    assert!(s.starts_with("ok:"), "{s}");
    assert!(s.contains("1 rule"), "{s}");
}

#[test]
fn cli_check_warns_about_a_certificate_that_expires_soon() {
    let pki = bauta_tests::seccert_env::Pki::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let soon = pki.origin_until(
        "origin.test",
        bauta_tests::seccert_env::KeyKind::EcdsaP256,
        "soon",
        Some(now + 3 * 86_400),
    );
    let text = format!(
        "{GOOD}\n[[origin]]\nhost = \"origin.test\"\nport = 443\ncert = '{}'\nkey = '{}'\n\
         upstream = \"http://127.0.0.1:8080\"\n",
        soon.cert_pem.display(),
        soon.key_pem.display()
    );
    let path = pki.certs.dir.write("soon.toml", &text);
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning, not an error: {stderr}"
    );
    assert!(
        stderr.contains("certificate expires in less than 14 days") && stderr.contains("origin"),
        "{stderr}"
    );
    assert!(stderr.contains("origin.test:443"), "{stderr}");
}

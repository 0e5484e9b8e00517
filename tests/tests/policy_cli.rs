//! `bauta policy explain` and `bauta policy test`: the configured policy,
//! asked offline (given addresses; literals need no lookup), with the exit
//! codes the README names.

use std::process::Command;
use std::time::Duration;

use bauta_tests::*;

const CONFIG: &str = r#"
[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocols = ["http1"]

[policy]
default = "allow"

[[policy.rule]]
name = "no-books"
action = "deny"
hosts = ["bücher.example"]

[[policy.rule]]
name = "lab"
action = "allow"
cidrs = ["10.0.0.0/8"]
clients = ["127.0.0.1/32"]

[[policy.rule]]
name = "rollout"
action = "report"
hosts = ["*.rollout.example"]
"#;

fn bauta(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(bauta_bin());
    cmd.args(args);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn explain_json(config: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["policy", "explain", "--config", config, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = bauta(&args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v)
}

#[test]
fn explain_names_the_verdict_rule_and_each_address() {
    let dir = TempDir::new("policy-explain");
    let config = dir.write("bauta.toml", CONFIG);
    let config = config.to_str().expect("utf-8 path");

    // An odd loopback spelling under a default allow: the SSRF guard, before DNS.
    let (code, v) = explain_json(config, &["--target", "0x7f.1:80"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["verdict"], "deny");
    assert_eq!(v["precheck"], "deny");
    assert_eq!(v["target"], "127.0.0.1:80");
    assert_eq!(
        v["reason"],
        "destination address is loopback and no matching rule's cidrs names it"
    );

    // A name whose addresses are private: the `lab` rule names them only for
    // its clients.
    let (code, v) = explain_json(
        config,
        &[
            "--target",
            "db.internal:5432",
            "--addr",
            "10.1.2.3",
            "--client-ip",
            "127.0.0.1",
        ],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        (v["verdict"].as_str(), v["rule"].as_str()),
        (Some("allow"), Some("lab"))
    );
    assert_eq!(v["addresses_from"], "given");
    assert_eq!(v["addresses"][0]["class"], "private");
    assert_eq!(v["addresses"][0]["named"], true);
    assert_eq!(v["addresses"][0]["prohibited"], false);

    // Another client: `lab` does not apply, the default allows, the guard refuses.
    let (code, v) = explain_json(
        config,
        &[
            "--target",
            "db.internal:5432",
            "--addr",
            "10.1.2.3",
            "--client-ip",
            "192.0.2.9",
        ],
    );
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(
        (v["verdict"].as_str(), v["rule"].as_str()),
        (Some("deny"), Some("default"))
    );
    assert_eq!(v["addresses"][0]["prohibited"], true);

    // Report: allowed (exit 0), and says so.
    let (code, v) = explain_json(
        config,
        &[
            "--target",
            "a.rollout.example:443",
            "--addr",
            "93.184.216.34",
        ],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        (v["verdict"].as_str(), v["rule"].as_str()),
        (Some("report"), Some("rollout"))
    );
    assert_eq!(v["reason"], "rule reports; allowed");

    // IDNA: the Unicode rule host matches the A-label target, before DNS.
    let (code, v) = explain_json(config, &["--target", "xn--bcher-kva.example:443"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(
        (v["rule"].as_str(), v["precheck"].as_str()),
        (Some("no-books"), Some("deny"))
    );

    // Text output names the same things.
    let (code, out, _) = bauta(&[
        "policy",
        "explain",
        "--config",
        config,
        "--target",
        "db.internal:5432",
        "--addr",
        "127.0.0.1",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("verdict:   deny"), "{out}");
    assert!(out.contains("refused by the SSRF guard"), "{out}");
}

/// The special-purpose ranges the guard once let through, asked through the
/// binary without dialling (`--addr`): each is refused under a default
/// allow, with its class; a public address beside them is not.
#[test]
fn explain_refuses_every_special_purpose_gap() {
    let dir = TempDir::new("policy-special");
    let config = dir.write("bauta.toml", CONFIG);
    let config = config.to_str().expect("utf-8 path");
    for (addr, class) in [
        ("::ffff:0:127.0.0.1", "mapped_v4"), // RFC 2765 IPv4-translated
        ("::ffff:0:169.254.169.254", "mapped_v4"), // … of the metadata address
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved"), // Teredo
        ("fec0::1", "reserved"),             // site-local
        ("2001:20::1", "reserved"),          // ORCHIDv2
        ("2001:10::1", "reserved"),          // ORCHID
        ("3fff::1", "reserved"),             // documentation, RFC 9637
        ("5f00::1", "reserved"),             // SRv6 SIDs
        ("192.88.99.1", "reserved"),         // 6to4 relay anycast
    ] {
        let (code, v) = explain_json(config, &["--target", "gap.example:443", "--addr", addr]);
        assert_eq!(code, 1, "{addr}: {v:#}");
        assert_eq!(v["addresses"][0]["class"], class, "{addr}: {v:#}");
        assert_eq!(v["addresses"][0]["prohibited"], true, "{addr}: {v:#}");
    }
    let (code, v) = explain_json(
        config,
        &["--target", "gap.example:443", "--addr", "2620:4f:8000::1"],
    );
    assert_eq!(code, 0, "AS112 direct delegation is public: {v:#}");
}

#[test]
fn explain_errors_exit_2() {
    let dir = TempDir::new("policy-explain-err");
    let config = dir.write("bauta.toml", CONFIG);
    let config = config.to_str().expect("utf-8 path");
    for args in [
        vec![
            "policy", "explain", "--config", config, "--target", "no-port",
        ],
        vec![
            "policy",
            "explain",
            "--config",
            "/nonexistent.toml",
            "--target",
            "a.example:1",
        ],
    ] {
        let (code, _, err) = bauta(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    let (code, _, err) = bauta(&[
        "policy",
        "explain",
        "--config",
        config,
        "--target",
        "a.example:1",
        "--protocol",
        "ftp",
    ]);
    assert_eq!(code, 2, "clap usage error: {err}");
}

#[test]
fn policy_test_reports_each_mismatch_and_exits_1() {
    let dir = TempDir::new("policy-test");
    dir.write("bauta.toml", CONFIG);
    let passing = dir.write(
        "pass.toml",
        r#"
config = "bauta.toml"

[[case]]
target = "xn--bcher-kva.example:443"
expect = "deny"
rule = "no-books"

[[case]]
name = "lab from this host"
target = "db.internal:5432"
client = "127.0.0.1"
addrs = ["10.1.2.3"]
expect = "allow"
rule = "lab"

[[case]]
target = "a.rollout.example:443"
addrs = ["93.184.216.34"]
expect = "report"

[[case]]
target = "127.0.0.1:22"
protocol = "connect-udp"
expect = "deny"
rule = "default"
"#,
    );
    let (code, out, err) = bauta(&["policy", "test", passing.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "policy test: 4 cases, 0 failed");

    let failing = dir.write(
        "fail.toml",
        r#"
config = "bauta.toml"

[[case]]
name = "wrong on purpose"
target = "db.internal:5432"
client = "127.0.0.1"
addrs = ["10.1.2.3"]
expect = "deny"

[[case]]
target = "example.com:443"
addrs = ["93.184.216.34"]
expect = "allow"
rule = "lab"
"#,
    );
    let (code, out, _) = bauta(&["policy", "test", failing.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "FAIL case 1 (wrong on purpose): connect db.internal:5432: expected deny, \
             got allow by rule lab (rule allows)",
            "FAIL case 2: connect example.com:443: expected allow by rule lab, \
             got allow by rule default (no rule matched; default allow)",
            "policy test: 2 cases, 2 failed",
        ]
    );

    let broken = dir.write(
        "broken.toml",
        "config = \"bauta.toml\"\n[[case]]\ntarget = 1\n",
    );
    let (code, _, err) = bauta(&["policy", "test", broken.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
}

/// `[groups]` in a separate policy file and inline (`[policy.groups]`), as
/// `bauta policy explain` sees them with `--identity`.
#[test]
fn groups_decide_by_identity() {
    let dir = TempDir::new("policy-groups");
    dir.write(
        "policy.toml",
        r#"
default = "deny"

[groups]
payments = ["spiffe://corp/payments/*", "alice"]

[[rule]]
name = "psp"
action = "allow"
groups = ["payments"]
hosts = ["psp.example"]
"#,
    );
    let from_file = dir.write(
        "file.toml",
        "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n[policy]\nfile = \"policy.toml\"\n",
    );
    let inline = dir.write(
        "inline.toml",
        "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
         [policy]\ndefault = \"deny\"\n\n[policy.groups]\npayments = [\"spiffe://corp/payments/*\"]\n\n\
         [[policy.rule]]\nname = \"psp\"\naction = \"allow\"\ngroups = [\"payments\"]\nhosts = [\"psp.example\"]\n",
    );
    for config in [&from_file, &inline] {
        let config = config.to_str().expect("utf-8");
        let ask = |identity: Option<&str>| {
            let mut extra = vec!["--target", "psp.example:443", "--addr", "93.184.216.34"];
            if let Some(id) = identity {
                extra.extend(["--identity", id]);
            }
            let (code, v) = explain_json(config, &extra);
            (code, v["rule"].as_str().unwrap_or_default().to_string())
        };
        assert_eq!(
            ask(Some("spiffe://corp/payments/api")),
            (0, "psp".into()),
            "{config}"
        );
        assert_eq!(
            ask(Some("spiffe://corp/web")),
            (1, "default".into()),
            "{config}"
        );
        assert_eq!(ask(None), (1, "default".into()), "{config}: anonymous");
    }
    let (code, _, err) = bauta(&[
        "check",
        "--config",
        dir.write(
            "bad.toml",
            "[[listener]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
             [[policy.rule]]\nname = \"r\"\naction = \"allow\"\ngroups = [\"nobody\"]\n",
        )
        .to_str()
        .expect("utf-8"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("groups: \"nobody\" is not defined"), "{err}");
}

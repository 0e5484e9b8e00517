//! SECURITY.md maps every threat to the tests that cover it: each test file
//! and test function it names must exist, so the map cannot drift from the
//! suite.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `…` span of the document.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn find_file(name: &str) -> bool {
    let dirs = ["tests/tests", "proxy/src", "policy/src", "tests/src"];
    fn walk(dir: &Path, name: &str) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p, name)
            } else {
                p.ends_with(name)
            }
        })
    }
    dirs.iter().any(|d| walk(&root().join(d), name))
}

#[test]
fn every_test_security_md_names_exists() {
    let doc = std::fs::read_to_string(root().join("SECURITY.md")).expect("read SECURITY.md");
    let mut missing = Vec::new();
    let mut named = 0;
    for span in code_spans(&doc) {
        // `tests/tests/conn_limits.rs`, `overload.rs`, `policy/src/addr.rs`
        if let Some(file) = span.split_whitespace().find(|w| w.ends_with(".rs")) {
            named += 1;
            let name = file.rsplit('/').next().unwrap_or(file);
            if !find_file(name) {
                missing.push(file.to_string());
            }
        }
        // `tls::tests::listener_configs_refuse_0rtt_and_old_versions`
        if let Some(func) = span.strip_prefix("tls::tests::") {
            named += 1;
            let src = std::fs::read_to_string(root().join("proxy/src/tls/mod.rs")).expect("tls");
            if !src.contains(&format!("fn {func}(")) {
                missing.push(span.to_string());
            }
        }
    }
    // `cli_check_warns_…` style function names in parentheses.
    for span in code_spans(&doc)
        .iter()
        .filter(|s| s.starts_with("cli_check_"))
    {
        named += 1;
        let src = std::fs::read_to_string(root().join("tests/tests/config_cli.rs")).expect("read");
        if !src.contains(&format!("fn {span}(")) {
            missing.push((*span).to_string());
        }
    }
    assert!(named > 30, "SECURITY.md names only {named} tests");
    assert!(
        missing.is_empty(),
        "SECURITY.md names tests that do not exist: {missing:?}"
    );
}

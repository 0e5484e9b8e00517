//! `[policy]`: inline rules or `file = "…"` (a separate policy file with
//! `default`, `[[rule]]` and `[groups]`), compiled into a [`Policy`]; a
//! compile error points at the rule it is about.

use std::path::Path;

use bauta_policy::{CompileError, Policy, PolicyConfig, RuleConfig, Verdict};
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicySection {
    pub(super) file: Option<Spanned<String>>,
    default: Option<Spanned<Verdict>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RuleConfig>>,
    #[serde(default)]
    groups: std::collections::BTreeMap<String, Vec<String>>,
}

/// The content of a separate policy file (`[policy] file = "…"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    default: Option<Spanned<Verdict>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RuleConfig>>,
    #[serde(default)]
    groups: std::collections::BTreeMap<String, Vec<String>>,
}

pub(super) fn compile_policy(
    p: &PolicySection,
    src: &Source<'_>,
    base: &Path,
) -> Result<Policy, ConfigError> {
    if let Some(file) = &p.file {
        if p.default.is_some() || !p.rules.is_empty() || !p.groups.is_empty() {
            return Err(src.err(
                file.span(),
                "policy.file",
                "give either `file` or inline `default`/`[[policy.rule]]`/`[policy.groups]`, not both",
            ));
        }
        let path = src.path(base, file.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            src.err(
                file.span(),
                "policy.file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        return compile_policy_text(&text, &path);
    }
    build_policy(p.default.as_ref(), &p.rules, &p.groups, src, "policy.")
}

/// A policy file's text (`default`, `[[rule]]`, `[groups]`), compiled;
/// errors name `path` and the line.
fn compile_policy_text(text: &str, path: &Path) -> Result<Policy, ConfigError> {
    let psrc = Source {
        name: path.display().to_string(),
        text,
        root: None,
    };
    let pf: PolicyFile = toml::from_str(text).map_err(|e| psrc.toml_err(e))?;
    build_policy(pf.default.as_ref(), &pf.rules, &pf.groups, &psrc, "")
}

/// `bauta policy check FILE`: read and compile a policy file on its own.
pub fn load_policy_file(path: &Path) -> Result<Policy, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: None,
        key: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    compile_policy_text(&text, path)
}

fn build_policy(
    default: Option<&Spanned<Verdict>>,
    rules: &[Spanned<RuleConfig>],
    groups: &std::collections::BTreeMap<String, Vec<String>>,
    src: &Source<'_>,
    prefix: &str,
) -> Result<Policy, ConfigError> {
    let cfg = PolicyConfig {
        default: default.map(|d| *d.get_ref()).unwrap_or(Verdict::Deny),
        rules: rules.iter().map(|r| r.get_ref().clone()).collect(),
        groups: groups.clone(),
    };
    Policy::compile(&cfg).map_err(|e| {
        // Point at the offending rule when the error names one.
        // CompileError numbers rules from 1.
        let span = rule_index(&e)
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| rules.get(i))
            .map(|r| r.span())
            .or_else(|| default.map(|d| d.span()));
        let key = format!("{prefix}rule");
        match span {
            Some(span) => src.err(span, &key, e.to_string()),
            None => ConfigError {
                file: src.name.clone(),
                line: None,
                key,
                message: e.to_string(),
            },
        }
    })
}

/// The rule a policy compile error is about.
fn rule_index(e: &CompileError) -> Option<usize> {
    use CompileError as E;
    match e {
        E::EmptyName { index }
        | E::ReservedName { index, .. }
        | E::DuplicateName { index, .. }
        | E::EmptyList { index, .. }
        | E::Host { index, .. }
        | E::Port { index, .. }
        | E::Cidr { index, .. }
        | E::Clients { index, .. }
        | E::Identity { index, .. }
        | E::UnknownGroup { index, .. } => Some(*index),
    }
}

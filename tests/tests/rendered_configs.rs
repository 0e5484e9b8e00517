//! The shipped Helm chart and kustomize overlays, rendered by the real tools
//! (`helm template`, `kubectl kustomize`; tests/run.sh installs both with
//! `tests/peers/k8s_tools.py`), then checked as a pod would see them:
//!
//! * every container (native sidecars too) that runs `bauta run --config
//!   PATH` has its volumes
//!   staged at their mount paths — a ConfigMap's keys as files, a Secret as
//!   a test certificate, key and CA (`tls.crt`, `tls.key`, `ca.crt`) — and `bauta check --config STAGE/PATH
//!   --root STAGE` passes, so the configuration and the Deployment's mounts
//!   agree;
//! * every policy file in a rendered ConfigMap passes `bauta policy check`;
//! * `helm lint --strict` passes.
//!
//! YAML is read by PyYAML in the test venv (to JSON), not by hand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bauta_tests::*;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `helm` or `kubectl`: beside the venv's Python (where tests/run.sh puts
/// them), or a failure that says how to get them.
fn tool(name: &str) -> PathBuf {
    let python = PathBuf::from(std::env::var("BAUTA_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("BAUTA_TEST_PYTHON is not set: run tests/run.sh (it sets up target/venv)")
    }));
    let p = python.parent().map(|d| d.join(name)).unwrap_or_default();
    assert!(
        p.exists(),
        "{} not found: run `python3 tests/peers/k8s_tools.py {}` (tests/run.sh does)",
        p.display(),
        python
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );
    p
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every document of a YAML stream, as JSON.
fn yaml_docs(yaml: &str) -> Vec<Value> {
    let dir = TempDir::new("yaml");
    let file = dir.write("in.yaml", yaml);
    let python = std::env::var("BAUTA_TEST_PYTHON").expect("BAUTA_TEST_PYTHON");
    let (ok, out, err) = run(Command::new(python)
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\n\
         json.dump(docs, sys.stdout)",
        )
        .arg(&file));
    assert!(ok, "PyYAML: {err}");
    match serde_json::from_str(&out) {
        Ok(Value::Array(docs)) => docs,
        other => panic!("not a list of documents: {other:?}"),
    }
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn list<'a>(v: &'a Value, path: &[&str]) -> Vec<&'a Value> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn bauta(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let (ok, out, err) = run(Command::new(bauta_bin()).args(args));
    (ok, format!("{out}{err}"))
}

fn is_policy_file(text: &str) -> bool {
    !text.contains("[[listener]]") && (text.contains("[[rule]]") || text.contains("default"))
}

/// What one rendering was checked for.
#[derive(Debug, Default)]
struct Checked {
    /// `container: --config path`, each checked with its pod's mounts.
    containers: Vec<String>,
    /// Policy files, checked with `bauta policy check`.
    policies: Vec<String>,
    /// Configurations in a ConfigMap that no container here runs.
    unused: Vec<String>,
}

/// Stage every pod's volumes and check what runs in it, then every
/// ConfigMap key on its own.
fn check_rendered(what: &str, yaml: &str) -> Checked {
    let docs = yaml_docs(yaml);
    let kind = |d: &Value| str_of(d, &["kind"]).unwrap_or_default().to_string();
    let configmaps: Vec<&Value> = docs.iter().filter(|d| kind(d) == "ConfigMap").collect();
    let configmap = |name: &str| {
        configmaps
            .iter()
            .find(|c| str_of(c, &["metadata", "name"]) == Some(name))
            .copied()
    };
    let certs = make_certs();
    let mut checked = Checked::default();

    for d in docs.iter().filter(|d| kind(d) == "Deployment") {
        let pod = &d["spec"]["template"]["spec"];
        // Kubernetes' native sidecars are init containers that keep running.
        let mut containers = list(pod, &["initContainers"]);
        containers.extend(list(pod, &["containers"]));
        for c in containers {
            let args: Vec<&str> = list(c, &["args"])
                .iter()
                .filter_map(|a| a.as_str())
                .collect();
            let Some(at) = args.iter().position(|a| *a == "--config") else {
                continue;
            };
            let config = args
                .get(at + 1)
                .unwrap_or_else(|| panic!("{what}: --config without a path"));
            let stage = TempDir::new("rendered");
            for m in list(c, &["volumeMounts"]) {
                let (Some(vname), Some(mount)) = (str_of(m, &["name"]), str_of(m, &["mountPath"]))
                else {
                    continue;
                };
                let dir = stage.path().join(mount.trim_start_matches('/'));
                std::fs::create_dir_all(&dir).expect("mount dir");
                let volume = list(pod, &["volumes"])
                    .into_iter()
                    .find(|v| str_of(v, &["name"]) == Some(vname))
                    .unwrap_or_else(|| panic!("{what}: mount {vname} has no volume"));
                if let Some(cm) = str_of(volume, &["configMap", "name"]) {
                    let cm = configmap(cm)
                        .unwrap_or_else(|| panic!("{what}: ConfigMap {cm} is not rendered"));
                    for (key, text) in cm["data"].as_object().into_iter().flatten() {
                        std::fs::write(dir.join(key), text.as_str().unwrap_or_default())
                            .expect("stage key");
                    }
                } else if volume.get("secret").is_some() {
                    std::fs::copy(&certs.cert_pem, dir.join("tls.crt")).expect("tls.crt");
                    std::fs::copy(&certs.key_pem, dir.join("tls.key")).expect("tls.key");
                    std::fs::copy(&certs.ca_pem, dir.join("ca.crt")).expect("ca.crt");
                }
            }
            let staged = stage.path().join(config.trim_start_matches('/'));
            assert!(
                staged.exists(),
                "{what}: {config} is not in any mounted volume"
            );
            let (ok, out) = bauta(&[
                "check".as_ref(),
                "--config".as_ref(),
                staged.as_os_str(),
                "--root".as_ref(),
                stage.path().as_os_str(),
            ]);
            let name = str_of(c, &["name"]).unwrap_or("?");
            assert!(
                ok && out.contains(": ok:"),
                "{what}: container {name} ({config}):\n{out}"
            );
            checked.containers.push(format!("{name}: {config}"));
        }
    }
    // Policy files on their own; a configuration no container runs here is
    // named (it is checked where it runs, and from deploy/config itself).
    for cm in &configmaps {
        for (key, text) in cm["data"].as_object().into_iter().flatten() {
            let text = text.as_str().unwrap_or_default();
            if !key.ends_with(".toml") {
                continue;
            }
            if is_policy_file(text) {
                let dir = TempDir::new("rendered-policy");
                let file = dir.write(key, text);
                let (ok, out) = bauta(&["policy".as_ref(), "check".as_ref(), file.as_os_str()]);
                assert!(
                    ok && out.contains(": ok:"),
                    "{what}: ConfigMap key {key}:\n{out}"
                );
                checked.policies.push(key.clone());
            } else if !checked
                .containers
                .iter()
                .any(|c| c.ends_with(&format!("/{key}")))
            {
                checked.unused.push(key.clone());
            }
        }
    }
    assert!(
        !checked.containers.is_empty(),
        "{what}: no container runs bauta with --config"
    );
    checked
}

#[test]
fn helm_chart_lints_and_its_rendered_config_passes_bauta_check() {
    let chart = repo().join("deploy/helm/bauta");
    let (ok, out, err) = run(Command::new(tool("helm"))
        .args(["lint", "--strict"])
        .arg(&chart));
    assert!(ok, "helm lint --strict:\n{out}{err}");
    let (ok, yaml, err) = run(Command::new(tool("helm"))
        .args(["template", "bauta"])
        .arg(&chart));
    assert!(ok, "helm template: {err}");
    let checked = check_rendered("helm template", &yaml);
    assert_eq!(
        checked.containers,
        ["bauta: /etc/bauta/config/bauta.toml"],
        "{checked:?}"
    );
    eprintln!("helm: {checked:?}");
}

#[test]
fn kustomize_overlays_render_configs_that_pass_bauta_check() {
    for overlay in ["egress", "sidecar"] {
        let dir = repo().join("deploy/kubernetes/overlays").join(overlay);
        let (ok, yaml, err) = run(Command::new(tool("kubectl")).arg("kustomize").arg(&dir));
        assert!(ok, "kubectl kustomize {overlay}: {err}");
        let checked = check_rendered(&format!("kustomize {overlay}"), &yaml);
        let runs = format!("bauta: /etc/bauta/config/{overlay}.toml");
        assert_eq!(checked.containers, [runs], "{overlay}: {checked:?}");
        assert_eq!(checked.policies, ["policy.toml"], "{overlay}: {checked:?}");
        eprintln!("{overlay}: {checked:?}");
    }
}

//! Every configuration and policy file shipped under `deploy/` passes
//! `bauta check` (configurations, with `--root` standing in for the
//! directories they are mounted at: `/etc/bauta/...`) or `bauta policy
//! check` (policy files). A file added to `deploy/` is checked without
//! touching this test; a path it names that the staging tree below lacks
//! fails with that path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bauta_tests::*;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every `.toml` file under `dir`, recursively.
fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

/// A policy file has rules or a default and no listener.
fn is_policy_file(text: &str) -> bool {
    !text.contains("[[listener]]") && (text.contains("[[rule]]") || text.contains("default"))
}

fn bauta(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let mut cmd = std::process::Command::new(bauta_bin());
    cmd.args(args);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_shipped_toml_passes_bauta_check() {
    let mut files = Vec::new();
    toml_files(&deploy_dir(), &mut files);
    files.sort();
    assert!(
        files.len() >= 4,
        "deploy/ has its configurations: {files:?}"
    );

    // What the deployments mount: the TLS secret and the policy ConfigMap.
    let stage = TempDir::new("shipped-configs");
    let certs = make_certs();
    let etc = stage.path().join("etc/bauta");
    std::fs::create_dir_all(etc.join("tls")).expect("staging dirs");
    std::fs::copy(&certs.cert_pem, etc.join("tls/tls.crt")).expect("stage tls.crt");
    std::fs::copy(&certs.key_pem, etc.join("tls/tls.key")).expect("stage tls.key");
    std::fs::copy(&certs.ca_pem, etc.join("tls/ca.crt")).expect("stage ca.crt");
    // The sidecar's pod identity Secret (cert-manager's three keys).
    std::fs::create_dir_all(etc.join("identity")).expect("staging dirs");
    for (from, to) in [
        (&certs.cert_pem, "tls.crt"),
        (&certs.key_pem, "tls.key"),
        (&certs.ca_pem, "ca.crt"),
    ] {
        std::fs::copy(from, etc.join("identity").join(to)).expect("stage the identity");
    }
    std::fs::copy(
        deploy_dir().join("config/policy.toml"),
        etc.join("policy.toml"),
    )
    .expect("stage policy.toml");

    let mut checked = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let (ok, out) = if is_policy_file(&text) {
            bauta(&["policy".as_ref(), "check".as_ref(), f.as_os_str()])
        } else {
            bauta(&[
                "check".as_ref(),
                "--config".as_ref(),
                f.as_os_str(),
                "--root".as_ref(),
                stage.path().as_os_str(),
            ])
        };
        assert!(ok, "{} does not pass:\n{out}", f.display());
        assert!(out.contains(": ok:"), "{}: {out}", f.display());
        checked.push(f.file_name().map(|n| n.to_string_lossy().into_owned()));
    }
    eprintln!("checked {checked:?}");
}

/// `--root` reads only absolute paths under the root, and `bauta policy
/// check` names a bad policy's file and line.
#[test]
fn root_and_policy_check_report_what_is_wrong() {
    let dir = TempDir::new("check-root");
    let cfg = dir.write(
        "bauta.toml",
        "[[listener]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\
         tls_cert = \"/etc/bauta/missing.crt\"\ntls_key = \"/etc/bauta/missing.key\"\n",
    );
    let (ok, out) = bauta(&[
        "check".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
        "--root".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert!(!ok);
    let staged = dir.path().join("etc/bauta/missing.crt");
    assert!(out.contains(&staged.display().to_string()), "{out}");
    let bad = dir.write(
        "policy.toml",
        "default = \"deny\"\n\n[[rule]]\nname = \"x\"\nports = \"no\"\n",
    );
    let (ok, out) = bauta(&["policy".as_ref(), "check".as_ref(), bad.as_os_str()]);
    assert!(!ok);
    assert!(out.contains("policy.toml:5"), "{out}");
}

/// The first `key = N` / `key: N` number in `text`.
fn number(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix(key)?.trim_start();
        let rest = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':'))?;
        rest.trim().parse().ok()
    })
}

/// Kubernetes kills the pod `terminationGracePeriodSeconds` after SIGTERM:
/// the drain delay and the tunnels' grace must fit in it, with a margin, in
/// every shipped deployment (kustomize base with egress.toml, the sidecar
/// overlay with sidecar.toml, the Helm chart's values).
#[test]
fn shipped_drain_timings_fit_the_termination_grace_period() {
    let read = |p: &str| std::fs::read_to_string(deploy_dir().join(p)).expect(p);
    let base = read("kubernetes/base/deployment.yaml");
    let egress = read("config/egress.toml");
    let sidecar_pod = read("kubernetes/overlays/sidecar/bauta-sidecar.yaml");
    let sidecar = read("config/sidecar.toml");
    let values = read("helm/bauta/values.yaml");
    let cases = [
        (
            "kustomize base + egress.toml",
            number(&base, "terminationGracePeriodSeconds"),
            number(&egress, "drain_delay_s"),
            number(&egress, "shutdown_grace_s"),
        ),
        (
            "sidecar overlay + sidecar.toml",
            // Kubernetes' default when the pod does not set it.
            number(&sidecar_pod, "terminationGracePeriodSeconds").or(Some(30)),
            number(&sidecar, "drain_delay_s"),
            number(&sidecar, "shutdown_grace_s"),
        ),
        (
            "Helm values",
            number(&values, "terminationGracePeriodSeconds"),
            number(&values, "drainDelayS"),
            number(&values, "shutdownGraceS"),
        ),
    ];
    for (what, pod, drain, grace) in cases {
        let (Some(pod), Some(drain), Some(grace)) = (pod, drain, grace) else {
            panic!("{what}: missing a value: pod {pod:?}, drain {drain:?}, grace {grace:?}");
        };
        assert!(
            drain > 0,
            "{what}: a drain delay lets endpoints drop the pod first"
        );
        assert!(
            drain + grace + 5 <= pod,
            "{what}: drain {drain} s + grace {grace} s + 5 s margin > terminationGracePeriodSeconds {pod}"
        );
    }
    for (what, text) in [
        ("kustomize base", &base),
        ("Helm chart", &read("helm/bauta/templates/deployment.yaml")),
    ] {
        assert!(
            !text.contains("preStop:"),
            "{what}: the drain delay is in-process; a preStop sleep would add to it"
        );
    }
}

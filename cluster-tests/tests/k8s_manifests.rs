//! The Kubernetes manifests under `k8s/` render, pass strict schema validation and agree with
//! the node's settings: this runs `scripts/k8s-validate.sh` as CI and a developer would.
//! Each negative case breaks one thing in a copy of `k8s/` and checks that the validator
//! fails and names the problem, so a passing run means the checks actually look.
//!
//! Needs python3 and pip (the script installs PyPI `kubernetes-validate` if missing); the
//! script fails rather than skips when they are absent, and so does this test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    // Invariant: cluster-tests is a direct member folder of the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cluster-tests has a parent directory")
        .to_path_buf()
}

/// Runs the validator on `k8s_dir` (the repository's own when `None`): (success, stdout+stderr).
fn validate(k8s_dir: Option<&Path>) -> (bool, String) {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/k8s-validate.sh"))
        .args(k8s_dir)
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A copy of `k8s/` with `from` replaced by `to` (once) in `file`, then validated.
fn validate_broken(file: &str, from: &str, to: &str) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let k8s = tmp.path().join("k8s");
    copy_dir(&repo_root().join("k8s"), &k8s);
    let path = k8s.join(file);
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(from),
        "{file} no longer contains {from:?}: update this test to the manifest"
    );
    fs::write(&path, text.replacen(from, to, 1)).unwrap();
    validate(Some(&k8s))
}

fn assert_fails_with(result: (bool, String), expected: &str) {
    let (ok, out) = result;
    assert!(!ok, "the validator accepted a broken manifest:\n{out}");
    assert!(
        out.contains(expected),
        "the validator failed, but not for the expected reason {expected:?}:\n{out}"
    );
}

#[test]
fn manifests_validate() {
    let (ok, out) = validate(None);
    assert!(ok, "scripts/k8s-validate.sh failed:\n{out}");
    assert!(out.contains("k8s-validate: OK"), "{out}");
    assert!(
        out.contains("schemas (strict)"),
        "schema validation did not run:\n{out}"
    );
    assert!(
        out.contains("4 targets consistent"),
        "k8s/, base and every overlay must be checked:\n{out}"
    );
}

#[test]
fn wrong_probe_port_fails() {
    assert_fails_with(
        validate_broken(
            "base/statefulset.yaml",
            "path: /health\n              port: http",
            "path: /health\n              port: 8080",
        ),
        "port 8080 resolves to 8080, but the node serves HTTP on 7480",
    );
}

#[test]
fn wrong_probe_path_fails() {
    assert_fails_with(
        validate_broken("base/statefulset.yaml", "path: /ready", "path: /readyz"),
        "readinessProbe path is /readyz, the node serves /ready",
    );
}

#[test]
fn grace_period_shorter_than_leave_timeout_fails() {
    assert_fails_with(
        validate_broken(
            "base/configmap.yaml",
            "leave_timeout = \"15s\"",
            "leave_timeout = \"1m\"",
        ),
        "terminationGracePeriodSeconds 30 must exceed the node's leave timeout 60s",
    );
}

#[test]
fn seed_that_is_not_the_headless_service_fails() {
    assert_fails_with(
        validate_broken("base/configmap.yaml", "cortex-headless:7401", "cortex:7401"),
        "is not the headless Service cortex-headless",
    );
}

#[test]
fn service_port_that_misses_the_node_fails() {
    assert_fails_with(
        validate_broken(
            "base/service-headless.yaml",
            "targetPort: gossip",
            "targetPort: 7402",
        ),
        "Service cortex-headless port gossip targets 7402/UDP, but the node binds 7401/UDP",
    );
}

#[test]
fn config_key_the_node_refuses_fails() {
    assert_fails_with(
        validate_broken("base/configmap.yaml", "settle_time =", "settle_timeout ="),
        "keys cortex-node refuses at start: ['settle_timeout']",
    );
}

#[test]
fn schema_violation_fails() {
    assert_fails_with(
        validate_broken(
            "base/pdb.yaml",
            "maxUnavailable: 1",
            "maxUnavailable: 1\n  maxSurge: 1",
        ),
        "'maxSurge' was unexpected",
    );
}

#[test]
fn kustomize_feature_the_renderer_lacks_fails() {
    assert_fails_with(
        validate_broken(
            "overlays/scale-5/kustomization.yaml",
            "replicas:",
            "commonLabels:\n  tier: x\nreplicas:",
        ),
        "fields ['commonLabels'] are not supported",
    );
}

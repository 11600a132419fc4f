//! `cortex-node certs init|issue` writes a CA, node and client certificates that parse as
//! PEM, with private keys and the cluster secret readable by the owner only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const BIN: &str = env!("CARGO_BIN_EXE_cortex-node");

fn certs(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("certs")
        .args(args)
        .output()
        .expect("the cortex-node binary runs")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn assert_pair(dir: &Path, stem: &str) {
    let crt = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    CertificateDer::from_pem_file(&crt).unwrap_or_else(|e| panic!("{}: {e}", crt.display()));
    PrivateKeyDer::from_pem_file(&key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    assert_eq!(mode(&key), 0o600, "{} mode", key.display());
}

#[test]
fn init_then_issue_node_and_client() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let d = dir.to_str().unwrap();

    let out = certs(&["init", "--dir", d, "--cluster", "prod"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ca.crt"));
    assert_pair(&dir, "ca");
    let secret = dir.join("cluster.secret");
    assert_eq!(mode(&secret), 0o600);
    assert!(std::fs::read_to_string(&secret).unwrap().trim().len() >= 32);

    let out = certs(&[
        "issue",
        "cortex-0",
        "--dir",
        d,
        "--san",
        "cortex-0.cortex.svc",
        "--san",
        "10.0.0.9",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_pair(&dir, "cortex-0");

    let out = certs(&["issue", "app", "--client", "--dir", d]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_pair(&dir, "app");

    // The files are what a node's --tls-dir expects.
    let env = std::collections::HashMap::from([("CORTEX_TLS_DIR".to_string(), d.to_string())]);
    let cfg = cortex_node::config::load_from(["x", "--node-name", "cortex-0"], &env).unwrap();
    assert!(cfg.tls.cert.exists() && cfg.tls.key.exists() && cfg.tls.ca.exists());

    // A second init would orphan every certificate: refused unless --force.
    let before = std::fs::read(dir.join("ca.crt")).unwrap();
    let out = certs(&["init", "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), before);
    let out = certs(&["init", "--dir", d, "--force"]);
    assert_eq!(out.status.code(), Some(0));
    assert_ne!(std::fs::read(dir.join("ca.crt")).unwrap(), before);
}

#[test]
fn issue_without_a_ca_or_with_a_bad_name_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let out = certs(&["issue", "n1", "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certs init"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    assert_eq!(certs(&["init", "--dir", d]).status.code(), Some(0));
    for bad in ["ca", "bad name", "a/b"] {
        let out = certs(&["issue", bad, "--dir", d]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

//! A cluster CA made with the node's own `certs` subcommand.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::HarnessError;

/// A CA directory written by `cortex-node certs init`: `ca.crt`, `ca.key`,
/// `cluster.secret`, plus one `NAME.crt`/`NAME.key` pair per [`CertAuthority::issue`].
#[derive(Debug, Clone)]
pub struct CertAuthority {
    dir: PathBuf,
    binary: PathBuf,
}

impl CertAuthority {
    /// Makes a new CA and cluster secret in `dir` with `binary certs init`.
    ///
    /// # Errors
    /// [`HarnessError::Command`] if the command fails.
    pub fn init(binary: &Path, dir: &Path, cluster: &str) -> Result<Self, HarnessError> {
        let dir_s = dir.display().to_string();
        run(
            binary,
            &["certs", "init", "--dir", &dir_s, "--cluster", cluster],
        )?;
        Ok(CertAuthority {
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
        })
    }

    /// Issues (or re-issues) a node certificate for `name`.
    ///
    /// # Errors
    /// [`HarnessError::Command`] if the command fails.
    pub fn issue(&self, name: &str) -> Result<(), HarnessError> {
        let dir_s = self.dir.display().to_string();
        run(&self.binary, &["certs", "issue", name, "--dir", &dir_s])
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `NAME.crt` (after [`CertAuthority::issue`]).
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    /// `NAME.key` (after [`CertAuthority::issue`]).
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// `cluster.secret`.
    pub fn secret_file(&self) -> PathBuf {
        self.dir.join("cluster.secret")
    }
}

fn run(binary: &Path, args: &[&str]) -> Result<(), HarnessError> {
    let command = format!("{} {}", binary.display(), args.join(" "));
    let out = Command::new(binary)
        .args(args)
        .output()
        .map_err(|e| HarnessError::io(format!("running {command}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Command {
            command,
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

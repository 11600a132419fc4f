//! `cortex-node certs init|issue`: a cluster CA, node and client certificates, and the
//! cluster secret, as files a node's `--tls-dir` points at.
//!
//! `init` writes `ca.crt`, `ca.key` and `cluster.secret`; `issue NAME` writes `NAME.crt`
//! and `NAME.key` signed by that CA. Keys and the secret are written with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use cortex_transport::TlsError;
use cortex_transport::certs::{CertRole, CertifiedKey, generate_ca, issue, write_pem_files};

use crate::config::CLUSTER_SECRET_FILE;

/// Default directory of `cortex-node certs`.
pub const DEFAULT_CERTS_DIR: &str = ".cortex/certs";

/// The `certs` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
#[non_exhaustive]
pub enum CertsCommand {
    /// Make a cluster CA (ca.crt, ca.key) and a cluster secret (cluster.secret) in DIR.
    Init {
        /// Directory to write to (created if missing).
        #[arg(long, default_value = DEFAULT_CERTS_DIR)]
        dir: PathBuf,
        /// Cluster name written into the CA certificate.
        #[arg(long, default_value = crate::config::DEFAULT_CLUSTER_NAME)]
        cluster: String,
        /// Replace an existing CA: every certificate it issued stops being trusted.
        #[arg(long)]
        force: bool,
    },
    /// Issue NAME.crt and NAME.key signed by the CA in DIR (a node certificate unless
    /// --client). Issuing again replaces them.
    Issue {
        /// Node name (as given to `run --node-name`) or client name.
        name: String,
        /// Issue a client certificate (client auth only) instead of a node certificate.
        #[arg(long)]
        client: bool,
        /// Extra subject alternative name (DNS name or IP address); repeat for more.
        #[arg(long = "san", value_name = "NAME_OR_IP")]
        sans: Vec<String>,
        /// Directory holding the CA; the new files are written there too.
        #[arg(long, default_value = DEFAULT_CERTS_DIR)]
        dir: PathBuf,
    },
}

/// Why a `certs` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    /// `init` would replace an existing CA.
    #[error("{} already exists; pass --force to replace the CA (every certificate it issued stops being trusted)", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// `issue` found no CA.
    #[error("no CA in {}: run `cortex-node certs init --dir {}` first", dir.display(), dir.display())]
    NoCa {
        /// The directory searched.
        dir: PathBuf,
    },
    /// The name is not usable.
    #[error("invalid name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Generating, reading or writing failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl CertsError {
    /// The process exit code: 2 for a usage mistake, 1 for a failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CertsError::Exists { .. } | CertsError::NoCa { .. } | CertsError::BadName { .. } => 2,
            CertsError::Tls(TlsError::InvalidName { .. }) => 2,
            CertsError::Tls(_) => 1,
        }
    }
}

/// Runs a `certs` subcommand and returns the files written, in order.
///
/// # Errors
/// [`CertsError`] saying what to do.
///
/// # Examples
/// ```
/// use cortex_node::certs_cmd::{run, CertsCommand};
/// let dir = tempfile::tempdir().unwrap();
/// let d = dir.path().to_path_buf();
/// run(&CertsCommand::Init { dir: d.clone(), cluster: "demo".into(), force: false }).unwrap();
/// let files = run(&CertsCommand::Issue { name: "n1".into(), client: false, sans: vec![], dir: d }).unwrap();
/// assert!(files[0].ends_with("n1.crt"));
/// ```
pub fn run(cmd: &CertsCommand) -> Result<Vec<PathBuf>, CertsError> {
    match cmd {
        CertsCommand::Init {
            dir,
            cluster,
            force,
        } => init(dir, cluster, *force),
        CertsCommand::Issue {
            name,
            client,
            sans,
            dir,
        } => {
            let role = if *client {
                CertRole::Client
            } else {
                CertRole::Node
            };
            issue_to(dir, name, role, sans)
        }
    }
}

/// Makes the CA and the cluster secret in `dir` (the secret is kept if it exists).
///
/// # Errors
/// [`CertsError::Exists`] if a CA is there and not `force`.
pub fn init(dir: &Path, cluster: &str, force: bool) -> Result<Vec<PathBuf>, CertsError> {
    cortex_protocol::NodeId::new(cluster, 0).map_err(|e| CertsError::BadName {
        name: cluster.to_string(),
        reason: e.to_string(),
    })?;
    let ca_key = dir.join("ca.key");
    if ca_key.exists() && !force {
        return Err(CertsError::Exists { path: ca_key });
    }
    let ca = generate_ca(cluster)?;
    let (crt, key) = write_pem_files(dir, "ca", &ca)?;
    let mut files = vec![crt, key];
    let secret = dir.join(CLUSTER_SECRET_FILE);
    if !secret.exists() {
        write_secret_file(&secret)?;
        files.push(secret);
    }
    Ok(files)
}

/// Issues `name` with `role` from the CA in `dir`, writing `dir/name.{crt,key}`.
///
/// # Errors
/// [`CertsError::NoCa`] if `dir` holds no CA; [`CertsError::BadName`] for an unusable name.
pub fn issue_to(
    dir: &Path,
    name: &str,
    role: CertRole,
    sans: &[String],
) -> Result<Vec<PathBuf>, CertsError> {
    if name == "ca" {
        return Err(CertsError::BadName {
            name: name.into(),
            reason: "it would overwrite the CA files; choose another name".into(),
        });
    }
    cortex_protocol::NodeId::new(name, 0).map_err(|e| CertsError::BadName {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    let ca = load_ca(dir)?;
    let ck = issue(&ca, name, role, sans)?;
    let (crt, key) = write_pem_files(dir, name, &ck)?;
    Ok(vec![crt, key])
}

/// Reads `dir/ca.crt` and `dir/ca.key`.
///
/// # Errors
/// [`CertsError::NoCa`] if either is missing.
pub fn load_ca(dir: &Path) -> Result<CertifiedKey, CertsError> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                CertsError::NoCa {
                    dir: dir.to_path_buf(),
                }
            } else {
                CertsError::Tls(TlsError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        })
    };
    Ok(CertifiedKey {
        cert_pem: read("ca.crt")?,
        key_pem: read("ca.key")?,
    })
}

/// Writes 32 random bytes, hex encoded, with mode 0600.
fn write_secret_file(path: &Path) -> Result<(), CertsError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TlsError::Generate("the system random generator failed".into()))?;
    let io = |source| TlsError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    writeln!(f, "{}", hex::encode(bytes)).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

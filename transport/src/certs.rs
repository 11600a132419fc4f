//! Certificates for a cluster: a CA, node certificates and client certificates (rcgen).
//!
//! Nodes present their certificate both as servers and as clients (mutual TLS), so a node
//! certificate carries both the server-auth and the client-auth usages; it names the node
//! (CN and SAN) plus `localhost`, `127.0.0.1` and `::1` so local clusters work out of the box.
//!
//! ```
//! use cortex_transport::certs::{generate_ca, issue, CertRole};
//! let ca = generate_ca("demo").unwrap();
//! let node = issue(&ca, "cortex-0", CertRole::Node, &["cortex-0.cortex.svc".into()]).unwrap();
//! assert!(node.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! ```

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::error::TlsError;

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM). Keep it secret.
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is secret: keep it out of logs.
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertRole {
    /// A cluster member: server and client auth, SANs for the name and loopback.
    Node,
    /// An SDK client: client auth only.
    Client,
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// Makes a self-signed CA for the cluster `cluster`.
///
/// # Errors
/// [`TlsError::Generate`] if rcgen fails (it should not for valid input).
pub fn generate_ca(cluster: &str) -> Result<CertifiedKey, TlsError> {
    let key = KeyPair::generate().map_err(gen_err)?;
    let params = ca_params(cluster);
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn ca_params(cluster: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Cortex cluster CA ({cluster})"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Cortex");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn san(value: &str) -> Result<SanType, TlsError> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let name = value
        .try_into()
        .map_err(|e: rcgen::Error| TlsError::InvalidName {
            name: value.to_string(),
            reason: e.to_string(),
        })?;
    Ok(SanType::DnsName(name))
}

/// Issues a certificate signed by `ca`.
///
/// A node certificate names `name`, `localhost`, `127.0.0.1`, `::1` and every entry of
/// `extra_sans` (DNS names or IP addresses as strings). A client certificate names `name`
/// (CN and SAN) and `extra_sans`, with the client-auth usage only.
///
/// # Errors
/// [`TlsError::Pem`] if `ca` does not parse, [`TlsError::InvalidName`] for a name that cannot
/// go into a certificate, [`TlsError::Generate`] if signing fails.
pub fn issue(
    ca: &CertifiedKey,
    name: &str,
    role: CertRole,
    extra_sans: &[String],
) -> Result<CertifiedKey, TlsError> {
    if name.is_empty() {
        return Err(TlsError::InvalidName {
            name: name.into(),
            reason: "empty".into(),
        });
    }
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| TlsError::Pem {
        what: "the CA key".into(),
        expected: "private key",
        detail: e.to_string(),
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(|e| TlsError::Pem {
        what: "the CA certificate".into(),
        expected: "certificate",
        detail: e.to_string(),
    })?;

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let mut sans = vec![name.to_string()];
    match role {
        CertRole::Node => {
            sans.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        CertRole::Client => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    sans.extend(extra_sans.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    for s in sans {
        if seen.insert(s.clone()) {
            params.subject_alt_names.push(san(&s)?);
        }
    }
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key` (the key with mode 0600 on Unix),
/// creating `dir` if needed. Returns the two paths.
///
/// # Errors
/// [`TlsError::Io`] naming the file that could not be written.
pub fn write_pem_files(
    dir: &Path,
    stem: &str,
    ck: &CertifiedKey,
) -> Result<(PathBuf, PathBuf), TlsError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io {
            action,
            path,
            source,
        }
    };
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    fs::write(&cert_path, &ck.cert_pem).map_err(io("write", &cert_path))?;
    write_secret(&key_path, ck.key_pem.as_bytes()).map_err(io("write", &key_path))?;
    Ok((cert_path, key_path))
}

fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    // An existing file keeps its old mode through open(): tighten it explicitly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_node_and_client() {
        let ca = generate_ca("t").unwrap();
        let n = issue(
            &ca,
            "n1",
            CertRole::Node,
            &["10.0.0.7".into(), "n1.svc".into()],
        )
        .unwrap();
        let names = crate::tls::cert_names_pem(&n.cert_pem).unwrap();
        for want in ["n1", "localhost", "127.0.0.1", "::1", "10.0.0.7", "n1.svc"] {
            assert!(
                names.iter().any(|x| x == want),
                "{want} missing from {names:?}"
            );
        }
        let c = issue(&ca, "app", CertRole::Client, &[]).unwrap();
        let names = crate::tls::cert_names_pem(&c.cert_pem).unwrap();
        assert!(names.iter().any(|x| x == "app"));
        assert!(!names.iter().any(|x| x == "localhost"));
        assert!(format!("{c:?}").contains("elided"));
    }

    #[test]
    fn bad_ca_is_typed() {
        let bad = CertifiedKey {
            cert_pem: "nope".into(),
            key_pem: "nope".into(),
        };
        assert!(matches!(
            issue(&bad, "x", CertRole::Node, &[]),
            Err(TlsError::Pem { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca("t").unwrap();
        let (c, k) = write_pem_files(dir.path(), "ca", &ca).unwrap();
        assert_eq!(std::fs::read_to_string(c).unwrap(), ca.cert_pem);
        let mode = std::fs::metadata(k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

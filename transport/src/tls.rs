//! TLS material and the rustls configurations built from it: TLS 1.3 only, ALPN `cortex/1`,
//! mutual TLS against the cluster CA, ring as the only crypto provider.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::certs::CertifiedKey;
use crate::error::TlsError;

/// The ALPN protocol every Cortex connection negotiates.
pub const ALPN: &[u8] = b"cortex/1";

/// The cluster CA plus this process's own certificate and key, all PEM.
///
/// An SDK client may have no certificate of its own: leave `cert_pem` and `key_pem` empty
/// (see [`TlsMaterial::ca_only`]) and authenticate with a token instead.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The cluster CA certificate (PEM). Peers must present certificates it signed.
    pub ca_pem: String,
    /// This side's certificate chain (PEM), or empty for a certificate-less client.
    pub cert_pem: String,
    /// This side's private key (PEM), or empty for a certificate-less client.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem.len())
            .field("cert_pem", &self.cert_pem.len())
            .field("key_pem", &"[elided]")
            .finish()
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

impl TlsMaterial {
    /// Reads the CA certificate, this side's certificate and its key from PEM files and
    /// checks that each parses.
    ///
    /// # Errors
    /// [`TlsError::Io`] for an unreadable file, [`TlsError::Pem`] for one that holds no
    /// certificate (or key).
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let m = Self {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        };
        parse_certs(&m.ca_pem, &ca.display().to_string())?;
        parse_certs(&m.cert_pem, &cert.display().to_string())?;
        parse_key(&m.key_pem, &key.display().to_string())?;
        Ok(m)
    }

    /// Reads only the CA certificate: for a client that authenticates with a token.
    ///
    /// # Errors
    /// As [`TlsMaterial::load`].
    pub fn load_ca_only(ca: &Path) -> Result<Self, TlsError> {
        let ca_pem = read(ca)?;
        parse_certs(&ca_pem, &ca.display().to_string())?;
        Ok(Self::ca_only(ca_pem))
    }

    /// Material with the CA only (no client certificate).
    pub fn ca_only(ca_pem: String) -> Self {
        Self {
            ca_pem,
            cert_pem: String::new(),
            key_pem: String::new(),
        }
    }

    /// Material from a CA and an issued certificate, as [`crate::certs`] makes them.
    pub fn from_certified(ca: &CertifiedKey, own: &CertifiedKey) -> Self {
        Self {
            ca_pem: ca.cert_pem.clone(),
            cert_pem: own.cert_pem.clone(),
            key_pem: own.key_pem.clone(),
        }
    }

    /// True when this side has a certificate of its own.
    pub fn has_identity(&self) -> bool {
        !self.cert_pem.trim().is_empty()
    }
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.into(),
            expected: "certificate",
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            expected: "certificate",
            detail: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: what.into(),
        expected: "private key",
        detail: e.to_string(),
    })
}

/// Installs ring as the process-wide rustls provider (a no-op if one is installed already).
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(m: &TlsMaterial) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in parse_certs(&m.ca_pem, "the CA certificate")? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("CA certificate rejected: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn cfg_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The rustls server configuration a node uses: TLS 1.3, ALPN `cortex/1`, client
/// certificates required and verified against the CA, unless `allow_certless` (tokens
/// configured), in which case a certificate-less client gets through TLS and must present a
/// token in its Hello. Public so that other listeners (and benchmarks) share the same setup.
///
/// # Errors
/// [`TlsError`] for unusable material.
pub fn server_config(
    m: &TlsMaterial,
    allow_certless: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    if !m.has_identity() {
        return Err(TlsError::Config(
            "a node needs its own certificate and key to accept connections".into(),
        ));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(roots(m)?, provider());
    let builder = if allow_certless {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    let verifier = builder.build().map_err(cfg_err)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            parse_certs(&m.cert_pem, "the certificate")?,
            parse_key(&m.key_pem, "the key")?,
        )
        .map_err(cfg_err)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The rustls client configuration: TLS 1.3, ALPN `cortex/1`, the server verified against
/// the CA, our certificate presented when we have one.
///
/// # Errors
/// [`TlsError`] for unusable material.
pub fn client_config(m: &TlsMaterial) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg_err)?
        .with_root_certificates(roots(m)?);
    let mut cfg = if m.has_identity() {
        builder
            .with_client_auth_cert(
                parse_certs(&m.cert_pem, "the certificate")?,
                parse_key(&m.key_pem, "the key")?,
            )
            .map_err(cfg_err)?
    } else {
        builder.with_no_client_auth()
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The names a certificate carries: its subject CN(s) and its DNS and IP SANs.
pub(crate) fn cert_names(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_string()),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

/// [`cert_names`] of the first certificate in a PEM string.
#[cfg(test)]
pub(crate) fn cert_names_pem(pem: &str) -> Result<Vec<String>, String> {
    let certs = parse_certs(pem, "pem").map_err(|e| e.to_string())?;
    cert_names(&certs[0])
}

/// The end-entity certificate the peer presented on a quinn connection, if any.
pub(crate) fn peer_cert(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let any = conn.peer_identity()?;
    let chain = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CertRole, generate_ca, issue, write_pem_files};

    #[test]
    fn load_and_build() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca("t").unwrap();
        let n = issue(&ca, "n", CertRole::Node, &[]).unwrap();
        let (ca_crt, _) = write_pem_files(dir.path(), "ca", &ca).unwrap();
        let (crt, key) = write_pem_files(dir.path(), "n", &n).unwrap();
        let m = TlsMaterial::load(&ca_crt, &crt, &key).unwrap();
        assert!(server_config(&m, false).is_ok());
        assert!(client_config(&m).is_ok());
        let c = TlsMaterial::load_ca_only(&ca_crt).unwrap();
        assert!(!c.has_identity());
        assert!(client_config(&c).is_ok());
        assert!(server_config(&c, true).is_err());
        let err = TlsMaterial::load(&ca_crt, &key, &key).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        let err = TlsMaterial::load(&dir.path().join("missing"), &crt, &key).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}

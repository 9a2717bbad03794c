//! Mutual TLS between sites: every site holds a certificate signed by the mesh's CA, whose DNS
//! name is derived from the site's name, so that a connection proves which site is at the other
//! end. Also makes a CA and site certificates (`cheops certs`, `issue.rs`) and reads how long
//! certificates are valid (`validity.rs`).
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

mod issue;
mod validity;

pub use issue::{generate, issue, CA_KEY_FILE};
use rustls::{server::WebPkiClientVerifier, ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
pub use validity::{files_validity, CertificateValidity};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}: {cause}")]
    Read {
        what: &'static str,
        path: PathBuf,
        cause: rustls_pki_types::pem::Error,
    },
    #[error("the {what} {path} holds no certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the TLS credentials are refused: {0}")]
    Refused(#[from] rustls::Error),
    #[error("the CA cannot verify peers: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("site name '{0}' has no letter or digit to put in a certificate name")]
    Unnameable(String),
    #[error("the certificate {path} cannot be read as X.509: {why}")]
    Unparsable { path: PathBuf, why: String },
    #[error("reading the CA key {path}: {cause}")]
    CaKey {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// PEM files: the CA that signs every site's certificate, and this site's certificate and key.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `cheops check` warns of a certificate that expires within this long.
    #[serde(default = "default_expiry_margin", with = "humantime_serde")]
    pub expiry_margin: Duration,
}

/// A month: time to renew a certificate, and for a site cut off for a while to come back.
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);

fn default_expiry_margin() -> Duration {
    DEFAULT_EXPIRY_MARGIN
}

/// The TLS settings of this site's peer API (server) and of its connections to peers (client).
pub struct SiteTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

/// The DNS name in the certificate of `site`: its letters and digits, lower case, with `-` for
/// anything else, under `.cheops` (certificate names cannot hold spaces or most punctuation).
pub fn site_dns_name(site: &str) -> Result<String, TlsError> {
    let label: String = site
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        return Err(TlsError::Unnameable(site.to_owned()));
    }
    Ok(format!("{label}.cheops"))
}

/// The name under which a client checks the certificate of `site`.
pub fn server_name(site: &str) -> Result<ServerName<'static>, TlsError> {
    let name = site_dns_name(site)?;
    ServerName::try_from(name).map_err(|_| TlsError::Unnameable(site.to_owned()))
}

/// Which of `sites` the (already CA-verified) `certificate` belongs to.
pub fn certificate_site<'a>(
    certificate: &CertificateDer<'_>,
    mut sites: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let certificate = webpki::EndEntityCert::try_from(certificate).ok()?;
    sites.find(|site| {
        server_name(site)
            .is_ok_and(|name| certificate.verify_is_valid_for_subject_name(&name).is_ok())
    })
}

pub fn load(files: &TlsFiles) -> Result<SiteTls, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in read_certificates("CA certificate", &files.ca)? {
        roots.add(ca)?;
    }
    let roots = Arc::new(roots);
    let chain = read_certificates("site certificate", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|cause| TlsError::Read {
        what: "site key",
        path: files.key.clone(),
        cause,
    })?;
    // Only certificates of our CA get past the handshake; which site it is, is checked after.
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(SiteTls {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

pub(crate) fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |cause| TlsError::Read {
        what,
        path: path.to_owned(),
        cause,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

/// The CA's certificate in a directory that `generate` wrote.
pub const CA_FILE: &str = "ca.pem";

/// The names of `site`'s certificate and key files in a directory that `generate` wrote:
/// `<name>.pem` and `<name>.key`, where `<name>` is the site's certificate label
/// (`site_dns_name` without `.cheops`).
pub fn site_files(site: &str) -> Result<(String, String), TlsError> {
    let dns_name = site_dns_name(site)?;
    let label = dns_name.trim_end_matches(".cheops");
    Ok((format!("{label}.pem"), format!("{label}.key")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names_become_certificate_names() {
        assert_eq!(site_dns_name("New York").unwrap(), "new-york.cheops");
        assert_eq!(site_dns_name("Site #1").unwrap(), "site--1.cheops");
        assert!(matches!(site_dns_name("##"), Err(TlsError::Unnameable(_))));
    }

    #[test]
    fn generated_certificates_load_and_name_their_site() {
        let dir = std::env::temp_dir().join(format!("cheops-tls-test-{}", std::process::id()));
        let sites = vec!["Paris".to_owned(), "Nantes".to_owned()];
        generate(&dir, &sites, None).unwrap();
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("paris.pem"),
            key: dir.join("paris.key"),
            expiry_margin: DEFAULT_EXPIRY_MARGIN,
        };
        assert!(load(&files).is_ok());
        let certificate = read_certificates("site certificate", &files.cert).unwrap();
        let found = certificate_site(&certificate[0], ["Nantes", "Paris"].into_iter());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, Some("Paris"));
    }
}

//! Mutual TLS between sites: every site holds a certificate signed by the mesh's CA, whose DNS
//! name is derived from the site's name, so that a connection proves which site is at the other
//! end. Also generates a test CA and site certificates (`cheops certs`).
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::{server::WebPkiClientVerifier, ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};

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

fn read_certificates(
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

/// Writes into `out` a new CA (`CA_FILE`) and, per site, its `site_files`.
pub fn generate(out: &Path, sites: &[String]) -> Result<Vec<PathBuf>, TlsError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Cheops test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut written = vec![write(out, CA_FILE, &ca.pem())?];
    for site in sites {
        let dns_name = site_dns_name(site)?;
        let mut params = CertificateParams::new(vec![dns_name.clone()])?;
        params.distinguished_name.push(DnType::CommonName, site);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &ca)?;
        let (cert_file, key_file) = site_files(site)?;
        written.push(write(out, &cert_file, &certificate.pem())?);
        written.push(write(out, &key_file, &key.serialize_pem())?);
    }
    Ok(written)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, TlsError> {
    let path = dir.join(name);
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|cause| TlsError::Write {
            path: path.clone(),
            cause,
        })?;
    Ok(path)
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
        generate(&dir, &sites).unwrap();
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("paris.pem"),
            key: dir.join("paris.key"),
        };
        assert!(load(&files).is_ok());
        let certificate = read_certificates("site certificate", &files.cert).unwrap();
        let found = certificate_site(&certificate[0], ["Nantes", "Paris"].into_iter());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, Some("Paris"));
    }
}

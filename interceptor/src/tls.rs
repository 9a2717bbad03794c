//! Mutual TLS between sites: every site holds a certificate signed by the mesh's CA, whose DNS
//! name is derived from the site's name, so that a connection proves which site is at the other
//! end. The material in use is reloaded without a restart (`reload.rs`: SIGHUP, and when its
//! files change), each generation built and checked whole (`material.rs`); a peer certificate
//! out of its validity is refused naming its dates (`dated.rs`). Also makes a CA and site
//! certificates (`cheops certs`, `issue.rs`) and reads how long certificates are valid
//! (`validity.rs`).
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

mod dated;
mod issue;
mod material;
mod reload;
#[cfg(test)]
mod tests;
mod validity;

pub use dated::{out_of_validity, OutOfValidity};
pub use issue::{generate, issue, Validity, CA_KEY_FILE};
pub use material::{Generation, Material};
pub use reload::SiteTls;
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
pub use validity::{files_validity, CertificateValidity};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}: {cause}")]
    Read {
        what: &'static str,
        path: PathBuf,
        cause: rustls_pki_types::pem::Error,
    },
    #[error("cannot read the {what} {path}: {cause}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the site key {key} is not the key of the certificate {cert} (is one of them still being written?)")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
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

pub(crate) fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|cause| TlsError::ReadFile {
        what,
        path: path.to_owned(),
        cause,
    })?;
    certificates_in(what, path, &bytes)
}

/// The certificates in `bytes`, the PEM text of `path`; a file cut short is refused.
pub(crate) fn certificates_in(
    what: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|cause| TlsError::Read {
            what,
            path: path.to_owned(),
            cause,
        })?;
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

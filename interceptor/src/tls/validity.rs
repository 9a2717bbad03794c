//! How long certificates are valid: read from the PEM files this site uses, for `cheops check`,
//! `cheops status` and the `cheops_certificate_expiry_seconds` metric.
use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::{read_certificates, TlsError, TlsFiles};

/// One certificate's subject and validity, in seconds since the Unix epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateValidity {
    /// `ca` or `site`.
    pub role: String,
    pub path: std::path::PathBuf,
    pub subject: String,
    /// Its serial number, as `openssl x509 -serial` shows it.
    #[serde(default)]
    pub serial: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl CertificateValidity {
    /// How long until it expires; `None` once expired.
    pub fn remaining(&self) -> Option<Duration> {
        let after = UNIX_EPOCH + Duration::from_secs(self.not_after_unix.max(0) as u64);
        after.duration_since(SystemTime::now()).ok()
    }

    /// Whether its validity has begun.
    pub fn has_begun(&self) -> bool {
        let before = UNIX_EPOCH + Duration::from_secs(self.not_before_unix.max(0) as u64);
        SystemTime::now() >= before
    }

    /// Its validity, as a person reads it.
    pub fn dates(&self) -> String {
        dates(self.not_before_unix, self.not_after_unix)
    }
}

/// A validity from `not_before` to `not_after` (Unix times), as a person reads it.
pub fn dates(not_before: i64, not_after: i64) -> String {
    let date = |unix: i64| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
    };
    format!(
        "valid from {} (notBefore) to {} (notAfter)",
        date(not_before),
        date(not_after)
    )
}

/// The validity of the CA certificate and of this site's certificate (the first of its chain).
pub fn files_validity(files: &TlsFiles) -> Result<Vec<CertificateValidity>, TlsError> {
    Ok(vec![
        validity("ca", "CA certificate", &files.ca)?,
        validity("site", "site certificate", &files.cert)?,
    ])
}

fn validity(role: &str, what: &'static str, path: &Path) -> Result<CertificateValidity, TlsError> {
    validity_of(role, path, &read_certificates(what, path)?[0])
}

/// The validity of `certificate`, read from `path` for `role`.
pub fn validity_of(
    role: &str,
    path: &Path,
    certificate: &CertificateDer<'_>,
) -> Result<CertificateValidity, TlsError> {
    let unparsable = |why: String| TlsError::Unparsable {
        path: path.to_owned(),
        why,
    };
    let (_, certificate) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|err| unparsable(err.to_string()))?;
    let validity = certificate.validity();
    Ok(CertificateValidity {
        role: role.to_owned(),
        path: path.to_owned(),
        subject: certificate.subject().to_string(),
        serial: openssl_serial(certificate.raw_serial()),
        not_before_unix: validity.not_before.timestamp(),
        not_after_unix: validity.not_after.timestamp(),
    })
}

/// A serial number's bytes as `openssl x509 -serial` prints them: upper-case hex, a byte at a
/// time, without the leading zero bytes that keep DER integers positive.
fn openssl_serial(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].iter().map(|b| format!("{b:02X}")).collect()
}

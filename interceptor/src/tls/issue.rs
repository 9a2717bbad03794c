//! Certificates for a mesh: a new CA with its sites' certificates, or more site certificates
//! from the CA a mesh already has, so that adding a site never means a new CA.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::{site_dns_name, site_files, TlsError, CA_FILE};

/// The CA's key in a directory that `generate` wrote (mode 0600): what `issue` signs with.
pub const CA_KEY_FILE: &str = "ca.key";

/// When a site certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From now (a minute back: clocks of the sites differ a little) for `valid_for`.
    pub fn from_now(valid_for: Duration) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(60),
            not_after: now + valid_for,
        }
    }
}

/// Writes into `out` a new CA (`CA_FILE`, `CA_KEY_FILE`) and, per site, its `site_files`;
/// `validity`: when the site certificates are valid (rcgen's default otherwise).
pub fn generate(
    out: &Path,
    sites: &[String],
    validity: Option<Validity>,
) -> Result<Vec<PathBuf>, TlsError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Cheops test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let key_pem = key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca, key)?;
    let mut written = vec![
        write(out, CA_FILE, &ca.pem())?,
        write_secret(out, CA_KEY_FILE, &key_pem)?,
    ];
    for site in sites {
        written.extend(site_certificate(out, site, &ca, validity)?);
    }
    Ok(written)
}

/// Writes into `out` the `site_files` of each of `sites`, signed by the existing CA whose
/// certificate and key are `ca` and `ca_key`.
pub fn issue(
    out: &Path,
    ca: &Path,
    ca_key: &Path,
    sites: &[String],
    validity: Option<Validity>,
) -> Result<Vec<PathBuf>, TlsError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|cause| TlsError::CaKey {
            path: path.to_owned(),
            cause,
        })
    };
    let key = KeyPair::from_pem(&read(ca_key)?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(ca)?, key)?;
    let mut written = Vec::new();
    for site in sites {
        written.extend(site_certificate(out, site, &issuer, validity)?);
    }
    Ok(written)
}

/// Writes `site`'s certificate, signed by `issuer`, and its key.
fn site_certificate(
    out: &Path,
    site: &str,
    issuer: &Issuer<'_, KeyPair>,
    validity: Option<Validity>,
) -> Result<[PathBuf; 2], TlsError> {
    let dns_name = site_dns_name(site)?;
    let mut params = CertificateParams::new(vec![dns_name])?;
    params.distinguished_name.push(DnType::CommonName, site);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if let Some(validity) = validity {
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
    }
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, issuer)?;
    let (cert_file, key_file) = site_files(site)?;
    Ok([
        write(out, &cert_file, &certificate.pem())?,
        write_secret(out, &key_file, &key.serialize_pem())?,
    ])
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

/// A key: readable by its owner only.
fn write_secret(dir: &Path, name: &str, text: &str) -> Result<PathBuf, TlsError> {
    let path = write(dir, name, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|cause| {
        TlsError::Write {
            path: path.clone(),
            cause,
        }
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{files_validity, SiteTls, TlsFiles, DEFAULT_EXPIRY_MARGIN};

    #[test]
    fn a_site_issued_later_from_the_same_ca_is_trusted_and_valid_as_long_as_asked() {
        let dir = tempfile_dir("issue");
        generate(&dir, &["Paris".to_owned()], None).unwrap();
        let later = dir.join("later");
        let two_days = Duration::from_secs(2 * 24 * 3600);
        issue(
            &later,
            &dir.join(CA_FILE),
            &dir.join(CA_KEY_FILE),
            &["Lyon".to_owned()],
            Some(Validity::from_now(two_days)),
        )
        .unwrap();
        let files = TlsFiles {
            ca: dir.join(CA_FILE),
            cert: later.join("lyon.pem"),
            key: later.join("lyon.key"),
            expiry_margin: DEFAULT_EXPIRY_MARGIN,
        };
        assert!(SiteTls::load(&files).is_ok());
        let site = &files_validity(&files).unwrap()[1];
        let left = site.not_after_unix - now_unix();
        assert!(
            (2 * 24 * 3600 - 120..=2 * 24 * 3600).contains(&left),
            "{left}"
        );
        assert!(site.subject.contains("Lyon"), "{site:?}");
        let mode = std::fs::metadata(later.join("lyon.key"))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn now_unix() -> i64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.unwrap().as_secs() as i64
    }

    fn tempfile_dir(what: &str) -> PathBuf {
        std::env::temp_dir().join(format!("cheops-tls-{what}-{}", std::process::id()))
    }
}

//! One generation of this site's TLS material: the CA, the site's certificate and its key, read
//! together, checked against each other, and made into the peer API's server settings and the
//! peer links' client settings. A generation never changes; a reload makes the next one.
use std::{path::Path, sync::Arc, time::SystemTime};

use rustls::{
    crypto::CryptoProvider, server::WebPkiClientVerifier, ClientConfig, RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::{
    certificates_in,
    dated::{DatedClientVerifier, DatedServerVerifier},
    validity::{validity_of, CertificateValidity},
    TlsError, TlsFiles,
};

/// Which material a site uses: the site certificate it presents, and when it was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// 1 for the material loaded at start, one more at each reload that changed it.
    pub number: u64,
    /// The site certificate's serial number, as `openssl x509 -serial` shows it.
    pub serial: String,
    /// The SHA-256 of the site certificate, as `openssl x509 -fingerprint -sha256` shows it.
    pub fingerprint: String,
    pub loaded_unix: i64,
}

pub struct Material {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    pub generation: Generation,
    /// The CA's and the site certificate's validity.
    pub certificates: Vec<CertificateValidity>,
    /// The SHA-256 of the three files' bytes: a reload that reads the same makes no generation.
    pub(super) digest: Vec<u8>,
}

/// The three files' bytes, read one after the other.
pub struct FileBytes {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl FileBytes {
    pub fn read(files: &TlsFiles) -> Result<FileBytes, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|cause| TlsError::ReadFile {
                what,
                path: path.to_owned(),
                cause,
            })
        };
        Ok(FileBytes {
            ca: read("CA certificate", &files.ca)?,
            cert: read("site certificate", &files.cert)?,
            key: read("site key", &files.key)?,
        })
    }

    pub fn digest(&self) -> Vec<u8> {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        for bytes in [&self.ca, &self.cert, &self.key] {
            context.update(&(bytes.len() as u64).to_be_bytes());
            context.update(bytes);
        }
        context.finish().as_ref().to_vec()
    }
}

/// Makes generation `number` of `files` from `bytes`; refuses a file cut short (being
/// written), a key that is not the certificate's, or a CA that cannot verify.
pub fn build(files: &TlsFiles, bytes: &FileBytes, number: u64) -> Result<Material, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = certificates_in("CA certificate", &files.ca, &bytes.ca)?;
    let chain = certificates_in("site certificate", &files.cert, &bytes.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes.key).map_err(|cause| TlsError::Read {
        what: "site key",
        path: files.key.clone(),
        cause,
    })?;
    let mut roots = RootCertStore::empty();
    for certificate in &ca {
        roots.add(certificate.clone())?;
    }
    let roots = Arc::new(roots);
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
        |err| match err {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                key: files.key.clone(),
                cert: files.cert.clone(),
            },
            other => TlsError::Refused(other),
        },
    )?;
    let (server, client) = configs(&provider, roots, chain.clone(), key)?;
    let certificates = vec![
        validity_of("ca", &files.ca, &ca[0])?,
        validity_of("site", &files.cert, &chain[0])?,
    ];
    Ok(Material {
        server,
        client,
        generation: Generation {
            number,
            serial: certificates[1].serial.clone(),
            fingerprint: fingerprint(&chain[0]),
            loaded_unix: unix_seconds(SystemTime::now()),
        },
        certificates,
        digest: bytes.digest(),
    })
}

/// The peer API's settings (a certificate of the CA required of clients) and the peer links'.
fn configs(
    provider: &Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TlsError> {
    // Only certificates of our CA, valid now, get past the handshake; which site it is, is
    // checked after.
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(TlsError::Verifier)?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(DatedClientVerifier(client_verifier)))
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DatedServerVerifier(server_verifier)))
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(server), Arc::new(client)))
}

/// Upper-case hex bytes joined by `:`, as openssl prints fingerprints.
fn fingerprint(certificate: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, certificate);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

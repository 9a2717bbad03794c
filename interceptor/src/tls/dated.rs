//! Peer certificates out of their validity (expired, or not valid yet) are refused by rustls's
//! own verifiers; these wrappers only make the refusal say the certificate's dates, so that the
//! log line of a refused peer tells which certificate to renew, and where its clock stands.
use std::sync::Arc;

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use super::validity::dates;

/// A peer's certificate refused because now is outside its validity.
#[derive(Debug, Clone, thiserror::Error)]
#[error("its certificate ({subject}) has {state}: {}", dates(*.not_before_unix, *.not_after_unix))]
pub struct OutOfValidity {
    pub subject: String,
    /// `expired` or `not begun`.
    pub state: &'static str,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// The certificate, to tell which site it names.
    pub certificate: CertificateDer<'static>,
}

/// The dates of the certificate whose handshake failed with `error`, when that is why.
pub fn out_of_validity(error: &std::io::Error) -> Option<&OutOfValidity> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) => {
            other.downcast_ref::<OutOfValidity>()
        }
        _ => None,
    }
}

/// `error` from a verifier, told with `end_entity`'s dates when its time is the matter.
fn with_dates(error: rustls::Error, end_entity: &CertificateDer<'_>) -> rustls::Error {
    let rustls::Error::InvalidCertificate(
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. },
    ) = &error
    else {
        return error;
    };
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(end_entity) else {
        return error;
    };
    let validity = certificate.validity();
    // An expired CA fails the same way; then the end entity's own dates explain nothing.
    let state = match validity.time_to_expiration() {
        None => "expired",
        Some(_) if x509_parser::time::ASN1Time::now() < validity.not_before => "not begun",
        Some(_) => return error,
    };
    let dated = OutOfValidity {
        subject: certificate.subject().to_string(),
        state,
        not_before_unix: validity.not_before.timestamp(),
        not_after_unix: validity.not_after.timestamp(),
        certificate: end_entity.clone().into_owned(),
    };
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(dated))))
}

/// The peer API's check of the certificates that connecting sites present.
#[derive(Debug)]
pub struct DatedClientVerifier(pub Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for DatedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|error| with_dates(error, end_entity))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The peer links' check of the certificates that peers' APIs present.
#[derive(Debug)]
pub struct DatedServerVerifier(pub Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for DatedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|error| with_dates(error, end_entity))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

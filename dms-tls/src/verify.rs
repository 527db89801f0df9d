//! Certificate verifiers: the chain against our CA roots, plus a DMS service path.

use std::fmt;
use std::sync::Arc;

use dms_core::AuthError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError};
use rustls::{RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::san::certified_path;

/// A certificate that verified but names no valid DMS service path (carried in
/// [`CertificateError::Other`], so that [`crate::auth_error`] can name it; rustls sends
/// the alert `certificate_unknown` for it).
#[derive(Debug)]
pub(crate) struct NoServicePathError(pub(crate) AuthError);

impl fmt::Display for NoServicePathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for NoServicePathError {}

/// Refuses a (verified) leaf certificate that does not name a DMS service path.
fn require_service_path(end_entity: &CertificateDer<'_>) -> Result<(), Error> {
    match certified_path(end_entity) {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::debug!(%error, "refusing a peer certificate without a DMS service path");
            Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(NoServicePathError(error))),
            )))
        }
    }
}

/// The client's check of the server certificate: WebPKI path validation against our
/// roots (chain, validity period, signatures, `serverAuth` key usage) **without** the DNS
/// name check, then a DMS service path in the leaf.
///
/// The only success path is through [`verify_server_cert_signed_by_trust_anchor`]
/// returning `Ok`: nothing is mapped from an error to success.
pub(crate) struct DmsServerCertVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl DmsServerCertVerifier {
    pub(crate) fn new(roots: Arc<RootCertStore>, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { roots, algorithms }
    }
}

impl fmt::Debug for DmsServerCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmsServerCertVerifier")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for DmsServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        // DMS nodes are named by service path: the certified path becomes the link's
        // identity, and the caller that dialled (the DMS kernel) checks it is the
        // instance it meant.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        require_service_path(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server's check of client certificates: rustls' `WebPkiClientVerifier` (client
/// certificate required), then a DMS service path in the leaf.
#[derive(Debug)]
pub(crate) struct DmsClientCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl DmsClientCertVerifier {
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self { inner }
    }
}

impl ClientCertVerifier for DmsClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        require_service_path(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

//! [`TlsIdentity`]: our certificate, key, trusted CAs and certified service path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dms_core::AuthError;
use dms_core::path::ServicePath;
use rustls::crypto::CryptoProvider;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::san::certified_path;
use crate::verify::{DmsClientCertVerifier, DmsServerCertVerifier};

/// Why a [`TlsIdentity`] or a TLS configuration could not be built. Each variant names
/// the input it is about (a file path, or `"certificate PEM"`/`"key PEM"`/`"CA PEM"` for
/// in-memory input).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An input is not valid PEM (or holds an invalid PEM section).
    #[error("{input}: invalid PEM ({what}): {source}")]
    Pem {
        /// Which input.
        input: String,
        /// What was being read from it (`"certificate"`, `"private key"`, `"CA certificate"`).
        what: &'static str,
        /// The PEM error.
        source: pem::Error,
    },
    /// The certificate input holds no `CERTIFICATE` section.
    #[error("{input}: no certificate found")]
    NoCertificate {
        /// Which input.
        input: String,
    },
    /// The key input holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("{input}: no private key found")]
    NoKey {
        /// Which input.
        input: String,
    },
    /// The private key is not usable (unsupported algorithm, or it does not match our
    /// certificate).
    #[error("{input}: unusable private key: {source}")]
    Key {
        /// Which input.
        input: String,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// The CA input holds no `CERTIFICATE` section: we would trust nobody.
    #[error("{input}: no CA certificate found")]
    NoCa {
        /// Which input.
        input: String,
    },
    /// A CA certificate is not a usable trust anchor.
    #[error("{input}: invalid CA certificate: {source}")]
    Ca {
        /// Which input.
        input: String,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// Our own certificate does not certify a DMS service path (exactly one `dms:` URI
    /// SAN holding a valid [`ServicePath`] is required).
    #[error("{input}: our own certificate is unusable for DMS: {source}")]
    OwnServicePath {
        /// Which input.
        input: String,
        /// What is wrong with its SAN ([`AuthError::NoServicePath`]).
        source: AuthError,
    },
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    /// rustls refused the configuration.
    #[error("rustls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Our side of mutual TLS: our certificate chain and private key, the CA roots we trust
/// for peers, and the [`ServicePath`] our certificate certifies.
///
/// Build it from PEM ([`from_pem_files`](Self::from_pem_files),
/// [`from_pem`](Self::from_pem)) or, for development only, with
/// [`TlsIdentity::dev`]; then make the rustls configurations of both roles with
/// [`server_config`](Self::server_config) and [`client_config`](Self::client_config).
///
/// ```
/// use dms_tls::{dev::DevCa, TlsIdentity};
///
/// let ca = DevCa::generate()?; // development only, never in production
/// let path = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
/// let issued = ca.issue(&path)?;
/// let identity = TlsIdentity::from_pem(
///     issued.cert_pem.as_bytes(),
///     issued.key_pem.as_bytes(),
///     ca.ca_pem().as_bytes(),
/// )?;
/// assert_eq!(identity.path().as_str(), "/demo/cn/android/w1/g1/Battle/battle-1");
///
/// // Our own certificate must name a DMS service path:
/// let other = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
/// let err = TlsIdentity::from_pem(
///     other.cert.pem().as_bytes(),
///     other.signing_key.serialize_pem().as_bytes(),
///     ca.ca_pem().as_bytes(),
/// );
/// assert!(matches!(err, Err(dms_tls::TlsConfigError::OwnServicePath { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    path: ServicePath,
    provider: Arc<CryptoProvider>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: Arc::clone(&self.roots),
            path: self.path.clone(),
            provider: Arc::clone(&self.provider),
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("path", &self.path)
            .field("chain_len", &self.chain.len())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

impl TlsIdentity {
    /// Loads our certificate chain (`cert`, leaf first), our private key (`key`) and the
    /// CA certificates we trust (`ca`) from PEM files.
    ///
    /// Checks that the chain is not empty and its leaf certifies a DMS service path, that
    /// the key parses and matches the leaf, and that `ca` holds at least one usable CA.
    /// Errors name the file at fault.
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsConfigError> {
        let (cert_pem, key_pem, ca_pem) = (read(cert)?, read(key)?, read(ca)?);
        Self::parse(
            &cert_pem,
            &key_pem,
            &ca_pem,
            [
                cert.display().to_string(),
                key.display().to_string(),
                ca.display().to_string(),
            ],
        )
    }

    /// [`from_pem_files`](Self::from_pem_files) from PEM bytes in memory.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, TlsConfigError> {
        Self::parse(
            cert,
            key,
            ca,
            [
                "certificate PEM".to_owned(),
                "key PEM".to_owned(),
                "CA PEM".to_owned(),
            ],
        )
    }

    fn parse(
        cert: &[u8],
        key: &[u8],
        ca: &[u8],
        [cert_input, key_input, ca_input]: [String; 3],
    ) -> Result<Self, TlsConfigError> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsConfigError::Pem {
                input: cert_input.clone(),
                what: "certificate",
                source,
            })?;
        let Some(leaf) = chain.first() else {
            return Err(TlsConfigError::NoCertificate { input: cert_input });
        };
        let path = certified_path(leaf).map_err(|source| TlsConfigError::OwnServicePath {
            input: cert_input.clone(),
            source,
        })?;

        let key = match PrivateKeyDer::from_pem_slice(key) {
            Ok(key) => key,
            Err(pem::Error::NoItemsFound) => {
                return Err(TlsConfigError::NoKey { input: key_input });
            }
            Err(source) => {
                return Err(TlsConfigError::Pem {
                    input: key_input,
                    what: "private key",
                    source,
                });
            }
        };

        let mut roots = RootCertStore::empty();
        for ca_cert in CertificateDer::pem_slice_iter(ca) {
            let ca_cert = ca_cert.map_err(|source| TlsConfigError::Pem {
                input: ca_input.clone(),
                what: "CA certificate",
                source,
            })?;
            roots.add(ca_cert).map_err(|source| TlsConfigError::Ca {
                input: ca_input.clone(),
                source,
            })?;
        }
        if roots.is_empty() {
            return Err(TlsConfigError::NoCa { input: ca_input });
        }

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(|source| {
            TlsConfigError::Key {
                input: key_input,
                source,
            }
        })?;

        Ok(Self {
            chain,
            key,
            roots: Arc::new(roots),
            path,
            provider,
        })
    }

    /// The service path our certificate certifies.
    pub fn path(&self) -> &ServicePath {
        &self.path
    }

    /// Our certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The CA roots we verify peers against.
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// The rustls configuration of the accepting side: TLS 1.3 only (ring), our
    /// certificate, and a client certificate **required** and verified against our CA
    /// roots (rustls' `WebPkiClientVerifier`), whose leaf must certify a DMS service path.
    /// `alpn` lists the protocols we accept, in order of preference.
    ///
    /// ```
    /// # use dms_tls::{dev::DevCa, TlsIdentity};
    /// # let ca = DevCa::generate()?;
    /// # let issued = ca.issue(&"/demo/cn/android/w1/g1/Battle/battle-1".parse()?)?;
    /// # let identity = TlsIdentity::from_pem(
    /// #     issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), ca.ca_pem().as_bytes())?;
    /// let config = identity.server_config(&[b"dms/1"])?;
    /// assert_eq!(config.alpn_protocols, vec![b"dms/1".to_vec()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<ServerConfig, TlsConfigError> {
        let webpki = WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&self.roots),
            Arc::clone(&self.provider),
        )
        .build()?;
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(DmsClientCertVerifier::new(webpki)))
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The rustls configuration of the dialling side: TLS 1.3 only (ring), our
    /// certificate presented to the server, `alpn` offered, and the server's certificate
    /// verified against our CA roots (chain, validity period, signatures, `serverAuth`
    /// usage, exactly as WebPKI does) **except for the DNS name**: its leaf must instead
    /// certify a DMS service path, which becomes the link's identity (the kernel checks it
    /// is the instance it dialled; see [`certified_path`](crate::certified_path)). Any valid server name
    /// (`"localhost"`) may be given to the connection.
    ///
    /// ```
    /// # use dms_tls::{dev::DevCa, TlsIdentity};
    /// # let ca = DevCa::generate()?;
    /// # let issued = ca.issue(&"/demo/cn/android/w1/g1/Battle/battle-1".parse()?)?;
    /// # let identity = TlsIdentity::from_pem(
    /// #     issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), ca.ca_pem().as_bytes())?;
    /// let config = identity.client_config(&[b"dms/1"])?;
    /// assert!(config.client_auth_cert_resolver.has_certs());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<ClientConfig, TlsConfigError> {
        let mut config = self
            .client_builder()?
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// FOR TESTS ONLY: [`client_config`](Self::client_config) presenting **no** client
    /// certificate (to test that servers refuse it).
    #[doc(hidden)]
    pub fn client_config_without_certificate_for_tests(
        &self,
        alpn: &[&[u8]],
    ) -> Result<ClientConfig, TlsConfigError> {
        let mut config = self.client_builder()?.with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    fn client_builder(
        &self,
    ) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsConfigError>
    {
        let verifier = DmsServerCertVerifier::new(
            Arc::clone(&self.roots),
            self.provider.signature_verification_algorithms,
        );
        Ok(
            ClientConfig::builder_with_provider(Arc::clone(&self.provider))
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier)),
        )
    }
}

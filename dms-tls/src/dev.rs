//! Development certificates: **development only, never in production.**
//!
//! [`DevCa`] is a throw-away certificate authority that issues DMS node certificates
//! (a `dms:` URI SAN with the node's service path, and the DNS SAN `localhost`) so that
//! mutual TLS works out of the box on a developer's machine and in tests.
//! [`TlsIdentity::dev`] is the one-call version: it keeps the CA and the node
//! certificates in a directory and reuses them while they are valid.
//!
//! Its keys are written to disk unencrypted and every development CA is trusted by every
//! node using the same directory: **never use any of this in production**. Every entry
//! point logs a `tracing` warning saying so.
//!
//! ```
//! use dms_tls::dev::DevCa;
//!
//! let ca = DevCa::generate()?; // development only, never in production
//! let issued = ca.issue(&"/demo/cn/android/w1/g1/Battle/battle-1".parse()?)?;
//! assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use dms_core::path::ServicePath;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::server::ParsedCertificate;
use rustls_pki_types::UnixTime;

use crate::identity::{TlsConfigError, TlsIdentity};
use crate::san::san_uri;

/// The common name of every development CA (each also has a random organizational unit,
/// so that two development CAs never share a distinguished name).
pub const DEV_CA_COMMON_NAME: &str = "DMS development CA (dev-only)";
/// File name of the development CA certificate in [`DevCa::load_or_create`]'s directory.
pub const DEV_CA_CERT_FILE: &str = "dev-ca.pem";
/// File name of the development CA private key (mode 0600 on Unix).
pub const DEV_CA_KEY_FILE: &str = "dev-ca.key";
/// Validity of an issued development certificate: 30 days.
pub const DEV_CERT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Validity of a development CA: 10 years.
const DEV_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Back-dating of certificates, for clock skew between development machines.
const BACKDATE: Duration = Duration::from_secs(3600);
/// A reused development certificate must stay valid at least this long.
const REUSE_MARGIN: Duration = Duration::from_secs(24 * 3600);

fn warn_dev(what: &str) {
    tracing::warn!(
        "dms-tls: {what} with DEVELOPMENT certificates: development only, never in production"
    );
}

/// Why a development certificate operation failed (development only, never in
/// production).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevCertError {
    /// rcgen could not generate a key or a certificate.
    #[error("generating a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A development CA file exists but is not usable (and is left as it is).
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `not_before` is not before `not_after`.
    #[error("invalid validity period: not_before must be before not_after")]
    Validity,
    /// The issued certificate could not be loaded as a [`TlsIdentity`].
    #[error(transparent)]
    Config(#[from] TlsConfigError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DevCertError + '_ {
    move |source| DevCertError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A development certificate authority: **development only, never in production.**
///
/// Its key is kept in memory (and, with [`load_or_create`](Self::load_or_create), on disk
/// unencrypted).
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// A certificate issued by a [`DevCa`], with its private key, both PEM-encoded
/// (development only, never in production).
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// Its private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// The files of one node written by [`DevCa::write_node`] (development only, never in
/// production): pass them to [`TlsIdentity::from_pem_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    /// The node certificate, `<name>.pem`.
    pub cert: PathBuf,
    /// The node private key, `<name>.key` (mode 0600 on Unix).
    pub key: PathBuf,
    /// The CA certificate, `dev-ca.pem`.
    pub ca: PathBuf,
}

impl DevCa {
    /// Generates a new development CA (ECDSA P-256, common name
    /// [`DEV_CA_COMMON_NAME`], valid 10 years). Development only, never in production.
    pub fn generate() -> Result<Self, DevCertError> {
        warn_dev("generating a CA");
        let key = KeyPair::generate()?;
        // A random organizational unit: webpki finds issuers by name, so two development
        // CAs with the same name would make a foreign chain fail as a bad signature
        // rather than as an unknown issuer.
        let unique: String = key
            .public_key_raw()
            .iter()
            .skip(1)
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, DEV_CA_COMMON_NAME);
        name.push(DnType::OrganizationalUnitName, format!("dev-ca-{unique}"));
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + DEV_CA_VALIDITY).into();
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the development CA kept in `dir` (`dev-ca.pem`, `dev-ca.key`), or generates
    /// one and writes it there (the key with mode 0600 on Unix). Safe against concurrent
    /// callers on the same directory: exactly one CA wins, the others load it.
    /// Development only, never in production.
    pub fn load_or_create(dir: &Path) -> Result<Self, DevCertError> {
        warn_dev("loading or creating a CA");
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let cert_path = dir.join(DEV_CA_CERT_FILE);
        let key_path = dir.join(DEV_CA_KEY_FILE);
        // The key is published first (atomically, by hard link), the certificate second
        // (atomically, by rename): a key without its certificate is a CA being written.
        for _ in 0..200 {
            match (cert_path.exists(), key_path.exists()) {
                (true, true) => return Self::load(&cert_path, &key_path),
                (true, false) => {
                    return Err(DevCertError::Invalid {
                        path: key_path,
                        reason: format!("missing, but {DEV_CA_CERT_FILE} exists"),
                    });
                }
                (false, true) => std::thread::sleep(Duration::from_millis(10)),
                (false, false) => {
                    let ca = Self::generate()?;
                    let tmp_key = temp_name(&key_path);
                    write_new(&tmp_key, ca.key_pem.as_bytes(), true)?;
                    let linked = fs::hard_link(&tmp_key, &key_path);
                    let _ = fs::remove_file(&tmp_key);
                    match linked {
                        Ok(()) => {
                            write_replace(&cert_path, ca.cert_pem.as_bytes(), false)?;
                            return Ok(ca);
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io_error(&key_path)(e)),
                    }
                }
            }
        }
        Err(DevCertError::Invalid {
            path: cert_path,
            reason: format!("missing, but {DEV_CA_KEY_FILE} exists (a crashed writer?)"),
        })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, DevCertError> {
        let cert_pem = fs::read_to_string(cert_path).map_err(io_error(cert_path))?;
        let key_pem = fs::read_to_string(key_path).map_err(io_error(key_path))?;
        let invalid = |path: &Path, reason: String| DevCertError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(key_path, e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| invalid(cert_path, e.to_string()))?;
        Ok(Self {
            issuer,
            cert_pem,
            key_pem,
        })
    }

    /// The CA certificate, PEM: what nodes trust. Development only, never in production.
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a node certificate for `path`, valid for 30 days from now (back-dated one
    /// hour for clock skew): URI SAN `dms:<path>`, DNS SAN `localhost`, usable for both
    /// TLS client and server authentication. Development only, never in production.
    pub fn issue(&self, path: &ServicePath) -> Result<IssuedCert, DevCertError> {
        let now = SystemTime::now();
        self.issue_with_validity(path, now - BACKDATE, now + DEV_CERT_VALIDITY)
    }

    /// [`issue`](Self::issue) with the given validity period (for tests of expired or
    /// not-yet-valid certificates). Development only, never in production.
    pub fn issue_with_validity(
        &self,
        path: &ServicePath,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, DevCertError> {
        warn_dev("issuing a node certificate");
        if not_before >= not_after {
            return Err(DevCertError::Validity);
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::URI(san_uri(path).try_into()?));
        let mut name = DistinguishedName::new();
        // X.520 bounds a common name to 64 characters: the instance name always fits.
        name.push(DnType::CommonName, path.instance());
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `path` and writes it to `dir` as `<name>.pem` and
    /// `<name>.key` (mode 0600 on Unix), where `<name>` is the path's segments joined by
    /// `+` (`demo+cn+android+w1+g1+Battle+battle-1`; `+` never occurs in a segment, so
    /// distinct paths get distinct files). Also writes the CA certificate as `dev-ca.pem`
    /// if `dir` has none (and refuses a `dir` whose `dev-ca.pem` is another CA).
    /// Development only, never in production.
    pub fn write_node(&self, dir: &Path, path: &ServicePath) -> Result<NodeFiles, DevCertError> {
        self.write_node_issued(dir, path).map(|(files, _)| files)
    }

    fn write_node_issued(
        &self,
        dir: &Path,
        path: &ServicePath,
    ) -> Result<(NodeFiles, IssuedCert), DevCertError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let files = node_files(dir, path);
        match fs::read_to_string(&files.ca) {
            Ok(existing) if existing == self.cert_pem => {}
            Ok(_) => {
                return Err(DevCertError::Invalid {
                    path: files.ca,
                    reason: "holds another development CA".into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_replace(&files.ca, self.cert_pem.as_bytes(), false)?;
            }
            Err(e) => return Err(io_error(&files.ca)(e)),
        }
        let issued = self.issue(path)?;
        write_replace(&files.key, issued.key_pem.as_bytes(), true)?;
        write_replace(&files.cert, issued.cert_pem.as_bytes(), false)?;
        Ok((files, issued))
    }
}

impl TlsIdentity {
    /// A development identity for `path`: **development only, never in production.**
    ///
    /// Loads or creates the development CA in `dir` ([`DevCa::load_or_create`]), reuses
    /// the node certificate for `path` in `dir` if it is for `path`, signed by that CA and
    /// valid for at least another day, and otherwise issues and writes a new one
    /// ([`DevCa::write_node`]). The identity trusts the development CA only.
    ///
    /// ```
    /// use dms_tls::TlsIdentity;
    ///
    /// let dir = std::env::temp_dir().join(format!("dms-tls-doc-{}", std::process::id()));
    /// let path = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
    /// let first = TlsIdentity::dev(&dir, &path)?; // development only, never in production
    /// let again = TlsIdentity::dev(&dir, &path)?; // reuses the certificate
    /// assert_eq!(first.cert_chain(), again.cert_chain());
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dev(dir: &Path, path: &ServicePath) -> Result<Self, DevCertError> {
        warn_dev("building a TLS identity");
        let ca = DevCa::load_or_create(dir)?;
        let files = node_files(dir, path);
        if files.cert.exists()
            && files.key.exists()
            && let Ok(identity) = Self::from_pem_files(&files.cert, &files.key, &files.ca)
            && identity.path() == path
            && still_valid(&identity)
        {
            return Ok(identity);
        }
        let (_, issued) = ca.write_node_issued(dir, path)?;
        // From memory, not from the files: a concurrent writer may have replaced them.
        Ok(Self::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            ca.ca_pem().as_bytes(),
        )?)
    }
}

/// Whether `identity`'s leaf chains to its own roots and stays valid for [`REUSE_MARGIN`].
fn still_valid(identity: &TlsIdentity) -> bool {
    let Some(leaf) = identity.cert_chain().first() else {
        return false;
    };
    let Ok(parsed) = ParsedCertificate::try_from(leaf) else {
        return false;
    };
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let soon = UnixTime::since_unix_epoch(
        (SystemTime::now() + REUSE_MARGIN)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        identity.roots(),
        &identity.cert_chain()[1..],
        soon,
        algorithms.all,
    )
    .is_ok()
}

fn node_files(dir: &Path, path: &ServicePath) -> NodeFiles {
    let name = path.as_str().trim_start_matches('/').replace('/', "+");
    NodeFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join(DEV_CA_CERT_FILE),
    }
}

/// A fresh temporary name next to `path` (unique per process and call).
fn temp_name(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
    path.with_file_name(format!(
        ".{}.{}.{n}.tmp",
        file.unwrap_or_default(),
        std::process::id()
    ))
}

/// Creates `path` (which must not exist) with `contents`; `secret` files are 0600 on Unix.
fn write_new(path: &Path, contents: &[u8], secret: bool) -> Result<(), DevCertError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Replaces `path` atomically with `contents` (write a temporary file, rename it).
fn write_replace(path: &Path, contents: &[u8], secret: bool) -> Result<(), DevCertError> {
    let tmp = temp_name(path);
    write_new(&tmp, contents, secret)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error(path)(e)
    })
}

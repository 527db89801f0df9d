//! The service path in a certificate: a `dms:` URI subject alternative name.

use dms_core::AuthError;
use dms_core::path::ServicePath;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The scheme prefix of the URI SAN that carries a node's service path.
pub const SAN_PREFIX: &str = "dms:";

/// The URI subject alternative name that certifies `path`: [`SAN_PREFIX`] followed by the
/// path as written.
///
/// ```
/// use dms_core::path::ServicePath;
///
/// let path: ServicePath = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
/// assert_eq!(dms_tls::san_uri(&path), "dms:/demo/cn/android/w1/g1/Battle/battle-1");
/// # Ok::<(), dms_core::path::PathError>(())
/// ```
pub fn san_uri(path: &ServicePath) -> String {
    format!("{SAN_PREFIX}{}", path.as_str())
}

/// The service path a certificate is for.
///
/// The certificate must carry exactly one URI subject alternative name starting with
/// [`SAN_PREFIX`], and the rest of it must be a valid [`ServicePath`]. Other SANs (DNS
/// names, other URI schemes) are ignored. Anything else (no such SAN, two of them, an
/// invalid path, a certificate that does not parse) is
/// [`AuthError::NoServicePath`] with the reason. The input may be hostile: this never
/// panics.
///
/// This reads the certificate only: it does not verify it (the TLS handshake does).
///
/// ```
/// use dms_core::{AuthError, path::ServicePath};
/// use dms_tls::{certified_path, CertificateDer};
///
/// let garbage = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02]);
/// assert!(matches!(certified_path(&garbage), Err(AuthError::NoServicePath(_))));
/// ```
pub fn certified_path(cert: &CertificateDer<'_>) -> Result<ServicePath, AuthError> {
    let (rest, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
        .map_err(|e| AuthError::NoServicePath(format!("the certificate does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(AuthError::NoServicePath(format!(
            "the certificate is followed by {} bytes of trailing data",
            rest.len()
        )));
    }
    let san = parsed.subject_alternative_name().map_err(|e| {
        AuthError::NoServicePath(format!("the subject alternative names do not parse: {e}"))
    })?;
    let Some(san) = san else {
        return Err(AuthError::NoServicePath(
            "the certificate has no subject alternative names".into(),
        ));
    };
    let mut found: Option<&str> = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && let Some(rest) = uri.strip_prefix(SAN_PREFIX)
        {
            if found.is_some() {
                return Err(AuthError::NoServicePath(format!(
                    "the certificate has more than one {SAN_PREFIX} URI SAN"
                )));
            }
            found = Some(rest);
        }
    }
    let Some(path) = found else {
        return Err(AuthError::NoServicePath(format!(
            "the certificate has no {SAN_PREFIX} URI SAN"
        )));
    };
    path.parse::<ServicePath>().map_err(|e| {
        AuthError::NoServicePath(format!(
            "the {SAN_PREFIX} URI SAN is not a valid service path: {e}"
        ))
    })
}

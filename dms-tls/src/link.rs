//! What every TLS link transport (QUIC, TCP+TLS) agrees on: the ALPN protocol, the server
//! name a dialler sends, and the link identity a peer's certificate proves.

use dms_core::{AuthError, PeerId};
use rustls_pki_types::CertificateDer;

use crate::san::certified_path;

/// The ALPN protocol of a DMS link over TLS, version 1: the same on QUIC (`quic://`) and
/// on TCP with TLS (`tcp+tls://`), since both carry the same ZMTP 3.1 bytes. A peer that
/// offers no common protocol is refused with TLS alert 120 (`no_application_protocol`).
///
/// ```
/// assert_eq!(dms_tls::ALPN, b"dms/1");
/// ```
pub const ALPN: &[u8] = b"dms/1";

/// The TLS server name (SNI) a DMS dialler sends. It is not checked: DMS nodes are named
/// by the service path in their certificate (see [`certified_peer`]), not by DNS names.
pub const SERVER_NAME: &str = "dms";

/// The link identity a peer's certificate chain (leaf first, as rustls reports it after
/// the handshake) proves: the [`PeerId`] of the leaf's certified service path. The
/// identity the peer announces in its ZMTP READY must equal it.
///
/// No chain, or an empty one, is [`AuthError::MissingCertificate`]; a leaf without a
/// valid `dms:` SAN is [`AuthError::NoServicePath`] (see [`certified_path`]).
///
/// ```
/// use dms_core::AuthError;
/// use dms_tls::{certified_peer, dev::DevCa, ServicePath, TlsIdentity};
///
/// let path: ServicePath = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
/// let ca = DevCa::generate()?; // development only, never in production
/// let issued = ca.issue(&path)?;
/// let identity = TlsIdentity::from_pem(
///     issued.cert_pem.as_bytes(),
///     issued.key_pem.as_bytes(),
///     ca.ca_pem().as_bytes(),
/// )?;
/// assert_eq!(certified_peer(Some(identity.cert_chain()))?, path.peer_id());
/// assert_eq!(certified_peer(None), Err(AuthError::MissingCertificate));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn certified_peer(chain: Option<&[CertificateDer<'_>]>) -> Result<PeerId, AuthError> {
    let leaf = chain
        .and_then(<[CertificateDer<'_>]>::first)
        .ok_or(AuthError::MissingCertificate)?;
    Ok(certified_path(leaf)?.peer_id())
}

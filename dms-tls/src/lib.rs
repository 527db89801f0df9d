//! Mutual TLS for DMS links, shared by the QUIC transport and TCP+TLS.
//!
//! Every DMS node holds a certificate whose subject alternative names carry its
//! [`ServicePath`] as a URI, `dms:/AppID/Area/Platform/WorldID/GroupID/Cluster/Instance`
//! (see [`san_uri`]). Both ends of a link present a certificate and verify the other's
//! against the CA roots they trust ([`TlsIdentity::server_config`],
//! [`TlsIdentity::client_config`]); after the handshake the transport reads the peer's
//! certified path with [`certified_path`] and compares it with the identity the peer
//! announces.
//!
//! DMS nodes are named by service path, not by DNS name: the client does **not** check
//! the server name it dialled against the certificate (it checks the chain, the validity
//! period, the signatures and the presence of a DMS service path, exactly as strictly as
//! WebPKI does otherwise). Any syntactically valid server name (`"localhost"`) may be
//! passed to the TLS client.
//!
//! TLS failures become the transport-neutral [`AuthError`]: [`auth_error`] for a
//! [`rustls::Error`], [`auth_error_from_alert`] for a bare TLS alert number (what QUIC
//! reports in a `CRYPTO_ERROR` close code, `0x100 + alert`).
//!
//! [`dev`] makes development certificates (**development only, never in production**).
//!
//! ```
//! use dms_core::path::ServicePath;
//! use dms_tls::{certified_path, dev::DevCa, TlsIdentity};
//!
//! let path: ServicePath = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
//! let ca = DevCa::generate()?; // development only, never in production
//! let issued = ca.issue(&path)?;
//! let identity = TlsIdentity::from_pem(
//!     issued.cert_pem.as_bytes(),
//!     issued.key_pem.as_bytes(),
//!     ca.ca_pem().as_bytes(),
//! )?;
//! assert_eq!(identity.path(), &path);
//! assert_eq!(certified_path(&identity.cert_chain()[0])?, path);
//! let _server = identity.server_config(&[b"dms/1"])?;
//! let _client = identity.client_config(&[b"dms/1"])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod alerts;
pub mod dev;
mod identity;
mod link;
mod san;
mod verify;

pub use alerts::{alert, auth_error, auth_error_from_alert, auth_error_of_io};
pub use identity::{TlsConfigError, TlsIdentity};
pub use link::{ALPN, SERVER_NAME, certified_peer};
pub use san::{SAN_PREFIX, certified_path, san_uri};

pub use dms_core::path::ServicePath;
pub use dms_core::{AuthError, PeerId, Rejection};
pub use rustls_pki_types::CertificateDer;

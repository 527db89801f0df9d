//! [`AuthError`]: why a peer could not be authenticated, the same on every secured
//! transport (QUIC, TCP with TLS).
//!
//! Each failure is named on both sides of the link: the side that checks a certificate
//! sees what is wrong with it ([`AuthError::UnknownIssuer`], [`AuthError::Expired`],
//! [`AuthError::MissingCertificate`], [`AuthError::PathMismatch`]), the side whose
//! certificate was refused sees the same cause as a [`Rejection`] in
//! [`AuthError::RejectedByPeer`].

/// Why a peer's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The peer's certificate does not chain to a CA we trust.
    #[error("the peer's certificate is not signed by a trusted CA")]
    UnknownIssuer,
    /// The peer's certificate has expired (or is not valid yet).
    #[error("the peer's certificate has expired or is not valid yet")]
    Expired,
    /// The peer presented no certificate (mutual TLS requires one on both sides).
    #[error("the peer presented no certificate")]
    MissingCertificate,
    /// The peer's certificate names no DMS service path (exactly one `dms:` URI SAN is
    /// required), or names one that is not a valid service path.
    #[error("the peer's certificate names no valid service path: {0}")]
    NoServicePath(String),
    /// The peer announced another identity than the service path its certificate is for.
    #[error("the peer's certificate is for {certified}, but it announced {announced}")]
    PathMismatch {
        /// The service path in the certificate.
        certified: String,
        /// The identity the peer announced in READY.
        announced: String,
    },
    /// The peer refused our credentials, and said why.
    #[error("the peer refused our credentials: {0}")]
    RejectedByPeer(Rejection),
    /// Another TLS failure (a protocol error, no common ALPN, a bad local configuration).
    #[error("tls: {0}")]
    Tls(String),
    /// The peer does not speak TLS where TLS is required: a plaintext connection to a
    /// TLS listener (a ZMTP greeting where a TLS ClientHello belongs), or a plaintext
    /// server answering a TLS dialler. Nothing of the peer's is delivered.
    #[error("the peer does not speak TLS: {0}")]
    NotTls(String),
}

/// Why the peer refused our credentials (from its TLS alert or close code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Our certificate is not signed by a CA the peer trusts (TLS alert `unknown_ca`).
    #[error("our certificate is not signed by a CA it trusts")]
    UnknownIssuer,
    /// Our certificate has expired (TLS alert `certificate_expired`).
    #[error("our certificate has expired")]
    Expired,
    /// We presented no certificate (TLS alert `certificate_required`).
    #[error("we presented no certificate")]
    MissingCertificate,
    /// Our certificate is for another service path than the identity we announced.
    #[error("our certificate is for another service path than we announced")]
    PathMismatch,
    /// Something else (the alert or close reason as the peer gave it).
    #[error("{0}")]
    Other(String),
}

//! TLS failures as [`AuthError`]s.

use dms_core::{AuthError, Rejection};
use rustls::{CertificateError, Error};

use crate::verify::NoServicePathError;

/// TLS alert numbers (RFC 8446 §6) that DMS maps to typed errors.
///
/// QUIC carries a TLS alert in its `CRYPTO_ERROR` transport error code: `0x100 + alert`.
pub mod alert {
    /// `handshake_failure`: no acceptable set of parameters.
    pub const HANDSHAKE_FAILURE: u8 = 40;
    /// `bad_certificate`: a certificate was corrupt or named the wrong peer.
    pub const BAD_CERTIFICATE: u8 = 42;
    /// `unsupported_certificate`: a certificate of an unsupported type or purpose.
    pub const UNSUPPORTED_CERTIFICATE: u8 = 43;
    /// `certificate_revoked`.
    pub const CERTIFICATE_REVOKED: u8 = 44;
    /// `certificate_expired`: expired or not valid yet. rustls sends it for both.
    pub const CERTIFICATE_EXPIRED: u8 = 45;
    /// `certificate_unknown`: another certificate problem. The DMS verifiers send it when
    /// a certificate names no valid DMS service path.
    pub const CERTIFICATE_UNKNOWN: u8 = 46;
    /// `unknown_ca`: the certificate does not chain to a trusted CA.
    pub const UNKNOWN_CA: u8 = 48;
    /// `access_denied`.
    pub const ACCESS_DENIED: u8 = 49;
    /// `decrypt_error`: a signature did not verify. rustls sends it for a certificate
    /// whose issuer *name* matches a trusted CA but whose signature does not (another CA
    /// with the same name), and for a bad handshake signature.
    pub const DECRYPT_ERROR: u8 = 51;
    /// `certificate_required`: the client presented no certificate.
    pub const CERTIFICATE_REQUIRED: u8 = 116;
    /// `no_application_protocol`: no common ALPN protocol.
    pub const NO_APPLICATION_PROTOCOL: u8 = 120;

    /// The RFC 8446 name of an alert (`"unknown_ca"`), or `None` for one DMS does not name.
    pub fn name(alert: u8) -> Option<&'static str> {
        Some(match alert {
            0 => "close_notify",
            10 => "unexpected_message",
            20 => "bad_record_mac",
            22 => "record_overflow",
            HANDSHAKE_FAILURE => "handshake_failure",
            BAD_CERTIFICATE => "bad_certificate",
            UNSUPPORTED_CERTIFICATE => "unsupported_certificate",
            CERTIFICATE_REVOKED => "certificate_revoked",
            CERTIFICATE_EXPIRED => "certificate_expired",
            CERTIFICATE_UNKNOWN => "certificate_unknown",
            47 => "illegal_parameter",
            UNKNOWN_CA => "unknown_ca",
            ACCESS_DENIED => "access_denied",
            50 => "decode_error",
            DECRYPT_ERROR => "decrypt_error",
            70 => "protocol_version",
            71 => "insufficient_security",
            80 => "internal_error",
            86 => "inappropriate_fallback",
            90 => "user_canceled",
            109 => "missing_extension",
            110 => "unsupported_extension",
            112 => "unrecognized_name",
            113 => "bad_certificate_status_response",
            115 => "unknown_psk_identity",
            CERTIFICATE_REQUIRED => "certificate_required",
            NO_APPLICATION_PROTOCOL => "no_application_protocol",
            _ => return None,
        })
    }

    /// Whether `alert` says a certificate was refused (as opposed to a protocol or
    /// negotiation failure).
    pub(crate) fn is_certificate_alert(alert: u8) -> bool {
        matches!(
            alert,
            BAD_CERTIFICATE
                | UNSUPPORTED_CERTIFICATE
                | CERTIFICATE_REVOKED
                | CERTIFICATE_EXPIRED
                | CERTIFICATE_UNKNOWN
                | UNKNOWN_CA
                | ACCESS_DENIED
                | DECRYPT_ERROR
                | CERTIFICATE_REQUIRED
        )
    }

    /// `"unknown_ca (48)"`.
    pub(crate) fn describe(alert: u8) -> String {
        match name(alert) {
            Some(name) => format!("{name} ({alert})"),
            None => format!("alert {alert}"),
        }
    }
}

/// The [`AuthError`] for a failed TLS handshake, as rustls reports it on either side.
///
/// - our verification of the peer's certificate failed: [`AuthError::UnknownIssuer`]
///   (not signed by a CA we trust, or a signature that does not verify),
///   [`AuthError::Expired`] (expired or not valid yet), [`AuthError::MissingCertificate`]
///   (the client sent none), [`AuthError::NoServicePath`] (no valid `dms:` SAN);
/// - the peer refused our certificate: [`AuthError::RejectedByPeer`] with the cause its
///   alert names (see [`auth_error_from_alert`]);
/// - anything else: [`AuthError::Tls`] with rustls' message.
///
/// ```
/// use dms_core::{AuthError, Rejection};
/// use rustls::{AlertDescription, CertificateError, Error};
///
/// let local = Error::InvalidCertificate(CertificateError::UnknownIssuer);
/// assert_eq!(dms_tls::auth_error(&local), AuthError::UnknownIssuer);
/// let remote = Error::AlertReceived(AlertDescription::CertificateRequired);
/// assert_eq!(
///     dms_tls::auth_error(&remote),
///     AuthError::RejectedByPeer(Rejection::MissingCertificate)
/// );
/// ```
pub fn auth_error(error: &Error) -> AuthError {
    match error {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                AuthError::UnknownIssuer
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => AuthError::Expired,
            CertificateError::Other(other) => match other.0.downcast_ref::<NoServicePathError>() {
                Some(NoServicePathError(AuthError::NoServicePath(reason))) => {
                    AuthError::NoServicePath(reason.clone())
                }
                _ => AuthError::Tls(error.to_string()),
            },
            _ => AuthError::Tls(error.to_string()),
        },
        Error::NoCertificatesPresented => AuthError::MissingCertificate,
        Error::AlertReceived(alert) => auth_error_from_alert(u8::from(*alert), true),
        _ => AuthError::Tls(error.to_string()),
    }
}

/// The [`AuthError`] for a TLS alert number, for transports that only see the alert
/// (QUIC closes a connection with `CRYPTO_ERROR` = `0x100 + alert`).
///
/// `sent_by_peer == false`: we sent the alert because our check of the peer failed.
/// [`alert::UNKNOWN_CA`] is [`AuthError::UnknownIssuer`], [`alert::CERTIFICATE_EXPIRED`]
/// [`AuthError::Expired`], [`alert::CERTIFICATE_REQUIRED`]
/// [`AuthError::MissingCertificate`]; any other alert is [`AuthError::Tls`] (prefer
/// [`auth_error`] on the local [`rustls::Error`] when you have it: it is more precise).
///
/// `sent_by_peer == true`: the peer refused us. The same three alerts are
/// [`AuthError::RejectedByPeer`] with [`Rejection::UnknownIssuer`],
/// [`Rejection::Expired`], [`Rejection::MissingCertificate`]; another certificate alert
/// (`bad_certificate`, `certificate_unknown`, `decrypt_error`, …) is
/// [`Rejection::Other`] with the alert's name; a non-certificate alert
/// (`handshake_failure`, `no_application_protocol`, …) is [`AuthError::Tls`].
///
/// ```
/// use dms_core::{AuthError, Rejection};
/// use dms_tls::{alert, auth_error_from_alert};
///
/// assert_eq!(auth_error_from_alert(alert::UNKNOWN_CA, false), AuthError::UnknownIssuer);
/// assert_eq!(
///     auth_error_from_alert(alert::CERTIFICATE_EXPIRED, true),
///     AuthError::RejectedByPeer(Rejection::Expired)
/// );
/// ```
pub fn auth_error_from_alert(alert: u8, sent_by_peer: bool) -> AuthError {
    match (alert, sent_by_peer) {
        (alert::UNKNOWN_CA, false) => AuthError::UnknownIssuer,
        (alert::CERTIFICATE_EXPIRED, false) => AuthError::Expired,
        (alert::CERTIFICATE_REQUIRED, false) => AuthError::MissingCertificate,
        (other, false) => AuthError::Tls(format!(
            "we refused the handshake with alert {}",
            alert::describe(other)
        )),
        (alert::UNKNOWN_CA, true) => AuthError::RejectedByPeer(Rejection::UnknownIssuer),
        (alert::CERTIFICATE_EXPIRED, true) => AuthError::RejectedByPeer(Rejection::Expired),
        (alert::CERTIFICATE_REQUIRED, true) => {
            AuthError::RejectedByPeer(Rejection::MissingCertificate)
        }
        (other, true) if alert::is_certificate_alert(other) => {
            AuthError::RejectedByPeer(Rejection::Other(alert::describe(other)))
        }
        (other, true) => AuthError::Tls(format!(
            "the peer refused the handshake with alert {}",
            alert::describe(other)
        )),
    }
}

/// The [`AuthError`] of a TLS failure reported as an I/O error, as a TLS stream over a
/// byte stream (tokio-rustls) reports it: the [`rustls::Error`] it carries, through
/// [`auth_error`]; `None` when the I/O error carries none (a reset, an EOF, a timeout:
/// not a TLS verdict).
///
/// ```
/// use dms_core::AuthError;
/// use rustls::{CertificateError, Error};
///
/// let io = std::io::Error::new(
///     std::io::ErrorKind::InvalidData,
///     Error::InvalidCertificate(CertificateError::Expired),
/// );
/// assert_eq!(dms_tls::auth_error_of_io(&io), Some(AuthError::Expired));
/// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert_eq!(dms_tls::auth_error_of_io(&reset), None);
/// ```
pub fn auth_error_of_io(error: &std::io::Error) -> Option<AuthError> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .map(auth_error)
}

//! Why a QUIC connection closes: the application close codes DMS sends, and how quinn's
//! connection errors become [`MiddlewareError`]s (TLS failures as typed [`AuthError`]s on
//! both sides).

use dms_core::wire::HandshakeError;
use dms_core::{AuthError, LinkDownCause, MiddlewareError, Rejection};
use quinn::{ConnectionError, VarInt};

/// Application close codes (QUIC `CONNECTION_CLOSE` of type 0x1d), documented in
/// `docs/PROTOCOL.md`.
pub mod codes {
    /// The link ended normally (disconnect, shutdown, peer closed its stream).
    pub const DONE: u32 = 0;
    /// The peer broke the wire protocol on the link's stream.
    pub const PROTOCOL: u32 = 1;
    /// The identity announced in READY is not the certificate's service path.
    pub const PATH_MISMATCH: u32 = 2;
    /// The certificate names no valid DMS service path.
    pub const NO_SERVICE_PATH: u32 = 3;
    /// Refused: duplicate identity, peer limit, or a ZMTP handshake error (reason text in
    /// the close frame).
    pub const REFUSED: u32 = 4;
}

/// The code and reason to close a connection with after `error` on our side.
pub(crate) fn close_for(error: &MiddlewareError) -> (VarInt, String) {
    let code = match error {
        MiddlewareError::Auth(AuthError::PathMismatch { .. }) => codes::PATH_MISMATCH,
        MiddlewareError::Auth(AuthError::NoServicePath(_)) => codes::NO_SERVICE_PATH,
        MiddlewareError::Handshake(_)
        | MiddlewareError::DuplicateIdentity(_)
        | MiddlewareError::PeerLimit { .. } => codes::REFUSED,
        _ => codes::PROTOCOL,
    };
    // The text may carry what the peer sent (its identity, its ERROR reason): cut at a
    // character boundary, never inside one.
    let mut reason = error.to_string();
    let mut end = reason.len().min(200);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    (VarInt::from_u32(code), reason)
}

/// The code to close a connection with once its link is down for `cause`.
pub(crate) fn close_for_cause(cause: Option<&LinkDownCause>) -> VarInt {
    match cause {
        Some(LinkDownCause::Protocol(_)) => VarInt::from_u32(codes::PROTOCOL),
        _ => VarInt::from_u32(codes::DONE),
    }
}

/// A quinn connection error as a middleware error: TLS alerts we sent (our check of the
/// peer's certificate failed) and alerts the peer sent (it refused ours) become distinct
/// [`AuthError`]s; DMS close codes become what they mean.
pub(crate) fn from_connection(error: &ConnectionError) -> MiddlewareError {
    match error {
        ConnectionError::TransportError(e) => match crypto_alert(u64::from(e.code)) {
            // Our own verifiers send 46 for a certificate without a DMS path and 51 for a
            // forged issuer: the same typed errors as `dms_tls::auth_error` gives.
            Some(dms_tls::alert::CERTIFICATE_UNKNOWN) => {
                MiddlewareError::Auth(AuthError::NoServicePath(e.reason.clone()))
            }
            Some(dms_tls::alert::DECRYPT_ERROR) => MiddlewareError::Auth(AuthError::UnknownIssuer),
            Some(alert) => MiddlewareError::Auth(tls_detail(
                dms_tls::auth_error_from_alert(alert, false),
                &e.reason,
            )),
            None => io(error),
        },
        ConnectionError::ConnectionClosed(close) => {
            match crypto_alert(u64::from(close.error_code)) {
                Some(alert) => MiddlewareError::Auth(dms_tls::auth_error_from_alert(alert, true)),
                None => io(error),
            }
        }
        ConnectionError::ApplicationClosed(close) => {
            let reason = dms_core::text::printable_lossy(&close.reason);
            match u32::try_from(close.error_code.into_inner()) {
                Ok(codes::PATH_MISMATCH) => {
                    MiddlewareError::Auth(AuthError::RejectedByPeer(Rejection::PathMismatch))
                }
                Ok(codes::NO_SERVICE_PATH) => {
                    MiddlewareError::Auth(AuthError::RejectedByPeer(Rejection::Other(reason)))
                }
                Ok(codes::REFUSED) => {
                    MiddlewareError::Handshake(HandshakeError::Refused { reason })
                }
                _ => io(error),
            }
        }
        ConnectionError::TimedOut => MiddlewareError::Io(std::io::ErrorKind::TimedOut.into()),
        _ => io(error),
    }
}

/// The TLS alert of a QUIC `CRYPTO_ERROR` code (0x100 + alert).
fn crypto_alert(code: u64) -> Option<u8> {
    code.checked_sub(0x100).and_then(|a| u8::try_from(a).ok())
}

/// Keeps rustls' wording for failures that have no typed variant.
fn tls_detail(error: AuthError, reason: &str) -> AuthError {
    match error {
        AuthError::Tls(_) if !reason.is_empty() => AuthError::Tls(reason.to_owned()),
        other => other,
    }
}

fn io(error: &ConnectionError) -> MiddlewareError {
    MiddlewareError::Io(std::io::Error::other(error.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_reason_is_cut_at_a_character_boundary() {
        let announced: String = std::iter::repeat_n('é', 120).collect(); // 240 bytes
        let error = MiddlewareError::Auth(AuthError::PathMismatch {
            certified: "/a/b/c/d/e/F/f".into(),
            announced,
        });
        let (_, reason) = close_for(&error);
        assert!(reason.len() <= 200 && !reason.is_empty());
    }

    #[test]
    fn crypto_codes_carry_alerts() {
        assert_eq!(crypto_alert(0x100 + 48), Some(48));
        assert_eq!(crypto_alert(0x1ff), Some(255));
        assert_eq!(crypto_alert(0x0a), None);
        assert_eq!(crypto_alert(0x200), None);
    }

    #[test]
    fn our_refusals_have_their_codes() {
        let mismatch = MiddlewareError::Auth(AuthError::PathMismatch {
            certified: "/a/b/c/d/e/F/f".into(),
            announced: "/a/b/c/d/e/F/g".into(),
        });
        assert_eq!(
            close_for(&mismatch).0,
            VarInt::from_u32(codes::PATH_MISMATCH)
        );
        let refused = MiddlewareError::PeerLimit { max: 1 };
        assert_eq!(close_for(&refused).0, VarInt::from_u32(codes::REFUSED));
    }
}

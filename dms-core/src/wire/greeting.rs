//! The fixed 64-byte ZMTP 3 greeting.

use bytes::Bytes;

use super::HandshakeError;

/// Length of a ZMTP 3 greeting.
pub const GREETING_LEN: usize = 64;

/// The mechanism field of the NULL mechanism: `NULL` padded with zeros to 20 bytes.
const NULL_MECHANISM: [u8; 20] = *b"NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// A peer's greeting: its version and mechanism.
///
/// Layout: `0xFF | 8 padding bytes | 0x7F | major | minor | mechanism (20) | as-server (1) |
/// filler (31)`. The padding is not checked (libzmq writes its identity length there).
///
/// ```
/// use dms_core::wire::{GREETING_LEN, Greeting};
///
/// let ours = Greeting::encode_null();
/// assert_eq!(ours.len(), GREETING_LEN);
/// let parsed = Greeting::parse(&ours).unwrap();
/// assert_eq!((parsed.major, parsed.minor), (3, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    /// Major version (3).
    pub major: u8,
    /// Minor version (0 for ZMTP 3.0, 1 for 3.1).
    pub minor: u8,
}

impl Greeting {
    /// Our greeting: ZMTP 3.1, NULL mechanism, as-server 0.
    pub fn encode_null() -> [u8; GREETING_LEN] {
        let mut out = [0u8; GREETING_LEN];
        out[0] = 0xFF;
        out[9] = 0x7F;
        out[10] = 3;
        out[11] = 1;
        out[12..32].copy_from_slice(&NULL_MECHANISM);
        out
    }

    /// Checks the bytes received so far (a prefix of a greeting): fails as soon as they
    /// cannot be a ZMTP 3 NULL greeting, so a stranger is dropped after a few bytes.
    pub fn check_prefix(prefix: &[u8]) -> Result<(), HandshakeError> {
        if let Some(&byte) = prefix.first() {
            if byte != 0xFF {
                return Err(HandshakeError::BadSignature { offset: 0, byte });
            }
        }
        if let Some(&byte) = prefix.get(9) {
            if byte & 0x01 == 0 {
                return Err(HandshakeError::BadSignature { offset: 9, byte });
            }
        }
        if let Some(&major) = prefix.get(10) {
            if major != 3 {
                return Err(HandshakeError::UnsupportedVersion {
                    major,
                    minor: prefix.get(11).copied().unwrap_or(0),
                });
            }
        }
        if prefix.len() >= 32 && prefix[12..32] != NULL_MECHANISM {
            let name = &prefix[12..32];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            return Err(HandshakeError::UnsupportedMechanism {
                mechanism: Bytes::copy_from_slice(&name[..end]),
            });
        }
        Ok(())
    }

    /// Parses a whole greeting. ZMTP 3.0 and 3.1 are accepted (later 3.x minors are
    /// spoken to as 3.1, as the spec asks); other majors and mechanisms are refused.
    pub fn parse(bytes: &[u8; GREETING_LEN]) -> Result<Self, HandshakeError> {
        Self::check_prefix(bytes)?;
        Ok(Self {
            major: bytes[10],
            minor: bytes[11],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libzmq_padding_is_accepted() {
        let mut g = Greeting::encode_null();
        g[8] = 1; // libzmq: routing id length + 1
        assert!(Greeting::parse(&g).is_ok());
    }

    #[test]
    fn zmtp_3_0_is_accepted() {
        let mut g = Greeting::encode_null();
        g[11] = 0;
        assert_eq!(Greeting::parse(&g).unwrap().minor, 0);
    }

    #[test]
    fn wrong_greetings_are_typed() {
        let mut g = Greeting::encode_null();
        g[10] = 2;
        assert_eq!(
            Greeting::parse(&g),
            Err(HandshakeError::UnsupportedVersion { major: 2, minor: 1 })
        );
        let mut g = Greeting::encode_null();
        g[12..17].copy_from_slice(b"CURVE");
        assert!(matches!(
            Greeting::parse(&g),
            Err(HandshakeError::UnsupportedMechanism { mechanism }) if &mechanism[..] == b"CURVE"
        ));
        assert_eq!(
            Greeting::check_prefix(b"GET / HTTP/1.1"),
            Err(HandshakeError::BadSignature {
                offset: 0,
                byte: b'G'
            })
        );
        let mut g = Greeting::encode_null();
        g[9] = 0x7E;
        assert!(matches!(
            Greeting::parse(&g),
            Err(HandshakeError::BadSignature { offset: 9, .. })
        ));
    }
}

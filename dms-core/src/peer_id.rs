//! [`PeerId`]: the routing identity of an adjacent peer.

use bytes::Bytes;

/// The identity an adjacent peer is known by on a link: ZMTP's `Identity` property, the
/// first frame of every message on a ROUTER socket.
///
/// It is 1 to 255 bytes long. Identities that start with a zero byte are reserved for ids
/// a middleware generates itself for peers that announce none (as libzmq does).
///
/// ```
/// use dms_core::PeerId;
///
/// let id = PeerId::new("lobby-1").unwrap();
/// assert_eq!(id.to_string(), "lobby-1");
/// assert!(PeerId::new("").is_err());
/// assert_eq!(PeerId::generated(7).to_string(), "0x0000000007");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(Bytes);

/// Why bytes are not a valid [`PeerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdError {
    /// An identity has at least one byte.
    #[error("peer id is empty")]
    Empty,
    /// ZMTP caps identities at 255 bytes.
    #[error("peer id is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Length given.
        len: usize,
        /// The maximum, 255.
        max: usize,
    },
}

impl PeerId {
    /// Longest identity ZMTP can carry.
    pub const MAX_LEN: usize = 255;

    /// Wraps bytes as an identity, checking its length.
    pub fn new(bytes: impl Into<Bytes>) -> Result<Self, PeerIdError> {
        let bytes = bytes.into();
        match bytes.len() {
            0 => Err(PeerIdError::Empty),
            len if len > Self::MAX_LEN => Err(PeerIdError::TooLong {
                len,
                max: Self::MAX_LEN,
            }),
            _ => Ok(Self(bytes)),
        }
    }

    /// The id a middleware gives a peer that announced no identity: a zero byte then
    /// `counter` in big-endian (libzmq's scheme, so such ids never collide with
    /// identities peers choose).
    pub fn generated(counter: u32) -> Self {
        let mut id = [0u8; 5];
        id[1..].copy_from_slice(&counter.to_be_bytes());
        Self(Bytes::copy_from_slice(&id))
    }

    /// Whether this id was generated locally rather than announced by the peer.
    pub fn is_generated(&self) -> bool {
        self.0.first() == Some(&0)
    }

    /// The identity bytes (cheap clone of the frame).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The identity as a frame to put in front of a message.
    pub fn to_frame(&self) -> Bytes {
        self.0.clone()
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) if !self.is_generated() && !text.chars().any(char::is_control) => {
                f.write_str(text)
            }
            _ => {
                f.write_str("0x")?;
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

impl std::fmt::Debug for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// Lets maps keyed by `PeerId` be searched with a frame's bytes (hashing is the same: a
/// `PeerId` hashes exactly as its byte slice).
impl std::borrow::Borrow<[u8]> for PeerId {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<Bytes> for PeerId {
    type Error = PeerIdError;

    fn try_from(bytes: Bytes) -> Result<Self, PeerIdError> {
        Self::new(bytes)
    }
}

impl TryFrom<&str> for PeerId {
    type Error = PeerIdError;

    fn try_from(text: &str) -> Result<Self, PeerIdError> {
        Self::new(Bytes::copy_from_slice(text.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_rules() {
        assert_eq!(
            PeerId::new(vec![b'a'; 255]).map(|id| id.as_bytes().len()),
            Ok(255)
        );
        assert_eq!(
            PeerId::new(vec![b'a'; 256]),
            Err(PeerIdError::TooLong { len: 256, max: 255 })
        );
        assert_eq!(PeerId::new(Bytes::new()), Err(PeerIdError::Empty));
    }

    #[test]
    fn generated_ids_are_marked_and_printed_in_hex() {
        let id = PeerId::generated(0x0102_0304);
        assert!(id.is_generated());
        assert_eq!(id.as_bytes().as_ref(), &[0, 1, 2, 3, 4]);
        assert_eq!(id.to_string(), "0x0001020304");
        assert!(!PeerId::try_from("x").unwrap().is_generated());
    }
}

//! Errors of the wire layer. All are caused by the peer's bytes (or by a message too large
//! to send) and close only the link they came from.

use bytes::Bytes;

/// The peer's byte stream broke a framing rule or a [`Limits`](super::Limits) bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Flag bits 3..7 must be zero (ZMTP 3.1 "Framing").
    #[error("frame flags {flags:#04x} set reserved bits")]
    ReservedFlags {
        /// The flags byte.
        flags: u8,
    },
    /// A frame declared a body longer than `max_frame_len`.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A message would grow beyond `max_message_len`.
    #[error("message of at least {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Length the message would reach.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A message would have more than `max_frames_per_message` frames.
    #[error("message has more than {max} frames")]
    TooManyFrames {
        /// The limit.
        max: usize,
    },
    /// Command frames cannot have the MORE flag.
    #[error("command frame has the MORE flag")]
    CommandWithMore,
    /// A command frame arrived between the frames of a message.
    #[error("command frame inside a multipart message")]
    CommandInsideMessage,
    /// A command frame's body is not `name-len | name | data`, or a known command's data
    /// is malformed.
    #[error("malformed {command} command: {reason}")]
    MalformedCommand {
        /// Name of the command, as far as it could be read.
        command: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// An empty message (no frame) cannot be encoded.
    #[error("cannot encode a message without frames")]
    EmptyMessage,
}

/// The ZMTP handshake failed. The connection is closed; nothing reached the application.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The first bytes are not a ZMTP 3 signature (`0xFF`, padding, `0x7F`): the peer does
    /// not speak ZMTP 3 (random bytes, HTTP, TLS, ZMTP 1.0).
    #[error("peer sent no ZMTP signature (byte {offset} is {byte:#04x})")]
    BadSignature {
        /// Offset of the offending byte.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// Only ZMTP 3.x is spoken (3.0 and 3.1, later 3.x minors as 3.1).
    #[error("unsupported ZMTP version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version announced.
        major: u8,
        /// Minor version announced.
        minor: u8,
    },
    /// Only the NULL mechanism is spoken.
    #[error("unsupported security mechanism {mechanism:?}")]
    UnsupportedMechanism {
        /// The mechanism name, NUL padding removed.
        mechanism: Bytes,
    },
    /// Something other than READY (or ERROR) arrived during the handshake.
    #[error("unexpected {0} during the handshake")]
    Unexpected(&'static str),
    /// The peer's READY lacks `Socket-Type`.
    #[error("READY has no Socket-Type property")]
    MissingSocketType,
    /// The peer's socket type cannot talk to a ROUTER (only ROUTER, DEALER and REQ can).
    #[error("socket type {0:?} is not compatible with ROUTER")]
    IncompatibleSocketType(Bytes),
    /// The peer's `Identity` is longer than 255 bytes.
    #[error("identity of {0} bytes is longer than 255")]
    IdentityTooLong(usize),
    /// A property appears twice in READY.
    #[error("READY repeats property {0:?}")]
    DuplicateProperty(Bytes),
    /// The peer refused the connection with an ERROR command.
    #[error("peer refused the handshake: {reason}")]
    Refused {
        /// The ERROR command's reason, lossily decoded.
        reason: String,
    },
    /// A framing error during the handshake.
    #[error(transparent)]
    Wire(#[from] WireError),
}

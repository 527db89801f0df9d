//! [`Limits`]: what a peer may make us accept.

use std::time::Duration;

/// Bounds on what a peer may send. Every declared length is checked against them
/// **before** any buffer grows, so a hostile header costs nothing.
///
/// Defaults (see `RELIABILITY.md`, P10): frames up to 4 MiB, messages up to 16 MiB and
/// 64 frames, handshake within 5 s.
///
/// ```
/// use std::time::Duration;
/// use dms_core::wire::Limits;
///
/// let limits = Limits::builder()
///     .max_frame_len(1 << 20)
///     .max_frames_per_message(8)
///     .handshake_timeout(Duration::from_secs(2))
///     .build();
/// assert_eq!(limits.max_frame_len(), 1 << 20);
/// assert_eq!(limits.max_message_len(), Limits::default().max_message_len());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_frame_len: u64,
    max_frames_per_message: usize,
    max_message_len: u64,
    handshake_timeout: Duration,
}

impl Limits {
    /// Default largest frame body: 4 MiB.
    pub const DEFAULT_MAX_FRAME_LEN: u64 = 4 << 20;
    /// Default largest number of frames in one message: 64.
    pub const DEFAULT_MAX_FRAMES_PER_MESSAGE: usize = 64;
    /// Default largest message (sum of frame bodies): 16 MiB.
    pub const DEFAULT_MAX_MESSAGE_LEN: u64 = 16 << 20;
    /// Default time a peer has to complete the handshake: 5 s.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

    /// Largest frame a peer may send before its handshake is done (its READY): 64 KiB.
    /// A READY holds a socket type, an identity of at most 255 bytes and a few properties;
    /// a peer that has not proved anything yet must not make us buffer `max_frame_len`.
    pub const MAX_HANDSHAKE_FRAME_LEN: u64 = 64 << 10;

    /// A builder starting from the defaults.
    pub fn builder() -> LimitsBuilder {
        LimitsBuilder(Self::default())
    }

    /// Largest frame body accepted, in bytes.
    pub fn max_frame_len(&self) -> u64 {
        self.max_frame_len
    }

    /// These limits during a handshake: frames up to
    /// [`MAX_HANDSHAKE_FRAME_LEN`](Self::MAX_HANDSHAKE_FRAME_LEN) at most.
    pub fn for_handshake(&self) -> Self {
        Self {
            max_frame_len: self.max_frame_len.min(Self::MAX_HANDSHAKE_FRAME_LEN),
            ..*self
        }
    }

    /// Largest number of frames in one message.
    pub fn max_frames_per_message(&self) -> usize {
        self.max_frames_per_message
    }

    /// Largest message accepted (sum of its frame bodies), in bytes.
    pub fn max_message_len(&self) -> u64 {
        self.max_message_len
    }

    /// Time a peer has to complete the greeting and READY exchange. Enforced by the
    /// transport (the core reads no clock).
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: Self::DEFAULT_MAX_FRAME_LEN,
            max_frames_per_message: Self::DEFAULT_MAX_FRAMES_PER_MESSAGE,
            max_message_len: Self::DEFAULT_MAX_MESSAGE_LEN,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Builds [`Limits`]; see [`Limits::builder`]. Values of zero are raised to one so that a
/// misconfiguration cannot make every message an error.
#[derive(Debug, Clone, Copy)]
pub struct LimitsBuilder(Limits);

impl LimitsBuilder {
    /// Largest frame body, in bytes.
    pub fn max_frame_len(mut self, bytes: u64) -> Self {
        self.0.max_frame_len = bytes.max(1);
        self
    }

    /// Largest number of frames in one message.
    pub fn max_frames_per_message(mut self, frames: usize) -> Self {
        self.0.max_frames_per_message = frames.max(1);
        self
    }

    /// Largest message (sum of frame bodies), in bytes.
    pub fn max_message_len(mut self, bytes: u64) -> Self {
        self.0.max_message_len = bytes.max(1);
        self
    }

    /// Time a peer has to complete the handshake.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.0.handshake_timeout = timeout;
        self
    }

    /// The limits.
    pub fn build(self) -> Limits {
        self.0
    }
}

//! One ZMTP frame: `flags (1) | size (1 or 8, big-endian) | body`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Limits, WireError};

/// The flags byte of a frame (ZMTP 3.1 "Framing").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FrameFlags(u8);

impl FrameFlags {
    /// More frames of the same message follow.
    pub const MORE: Self = Self(0x01);
    /// The size field is 8 bytes (body over 255 bytes).
    pub const LONG: Self = Self(0x02);
    /// The frame is a command, not message data.
    pub const COMMAND: Self = Self(0x04);
    /// Bits that must be zero.
    const RESERVED: u8 = 0xF8;

    /// Flags from a byte, rejecting reserved bits.
    pub fn from_byte(byte: u8) -> Result<Self, WireError> {
        if byte & Self::RESERVED != 0 {
            return Err(WireError::ReservedFlags { flags: byte });
        }
        Ok(Self(byte))
    }

    /// The byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for FrameFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A decoded frame: its flags and its body (a zero-copy slice of the read buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// MORE, LONG, COMMAND.
    pub flags: FrameFlags,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// Whether more frames of the same message follow.
    pub fn more(&self) -> bool {
        self.flags.contains(FrameFlags::MORE)
    }

    /// Whether this is a command frame.
    pub fn is_command(&self) -> bool {
        self.flags.contains(FrameFlags::COMMAND)
    }
}

/// Bytes the header of a frame with a `len`-byte body takes.
pub fn header_len(len: usize) -> usize {
    if len > usize::from(u8::MAX) { 9 } else { 2 }
}

/// Appends the header of a frame with a `len`-byte body: short form up to 255 bytes
/// (as libzmq does), long form above.
pub fn encode_header(more: bool, command: bool, len: usize, dst: &mut BytesMut) {
    let mut flags = 0u8;
    if more {
        flags |= FrameFlags::MORE.0;
    }
    if command {
        flags |= FrameFlags::COMMAND.0;
    }
    match u8::try_from(len) {
        Ok(short) => {
            dst.put_u8(flags);
            dst.put_u8(short);
        }
        Err(_) => {
            dst.put_u8(flags | FrameFlags::LONG.0);
            dst.put_u64(len as u64);
        }
    }
}

/// Appends a whole frame.
pub fn encode_frame(more: bool, command: bool, body: &[u8], dst: &mut BytesMut) {
    dst.reserve(header_len(body.len()) + body.len());
    encode_header(more, command, body.len(), dst);
    dst.extend_from_slice(body);
}

/// Where a [`FrameCodec`] is between calls.
#[derive(Debug, Clone, Copy)]
enum DecodeState {
    /// Waiting for a flags byte and a size.
    Head,
    /// Header read; waiting for `len` body bytes.
    Body { flags: FrameFlags, len: usize },
}

/// Decodes frames one at a time, tokio-util `Decoder` style.
///
/// ```
/// use bytes::BytesMut;
/// use dms_core::wire::{FrameCodec, Limits};
///
/// let mut codec = FrameCodec::new(Limits::default());
/// let mut buf = BytesMut::from(&[0x01, 0x02, b'h', b'i', 0x00][..]);
/// let frame = codec.decode(&mut buf)?.expect("a whole frame");
/// assert!(frame.more());
/// assert_eq!(&frame.body[..], b"hi");
/// assert!(codec.decode(&mut buf)?.is_none()); // the next one is incomplete
/// # Ok::<(), dms_core::wire::WireError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    limits: Limits,
    state: DecodeState,
}

impl FrameCodec {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: DecodeState::Head,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes the next frame from `src`: `Ok(None)` if more bytes are needed.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        self.decode_within(src, u64::MAX)
    }

    /// As [`decode`](Self::decode), but a data frame's body must also fit in
    /// `message_budget` bytes (what is left of the message length limit). The check is made
    /// on the declared length, before any byte of the body is buffered.
    pub fn decode_within(
        &mut self,
        src: &mut BytesMut,
        message_budget: u64,
    ) -> Result<Option<Frame>, WireError> {
        if let DecodeState::Head = self.state {
            let Some(&first) = src.first() else {
                return Ok(None);
            };
            let flags = FrameFlags::from_byte(first)?;
            let (header, declared) = if flags.contains(FrameFlags::LONG) {
                let Some(size) = src.get(1..9) else {
                    return Ok(None);
                };
                let mut size_bytes = [0u8; 8];
                size_bytes.copy_from_slice(size);
                (9, u64::from_be_bytes(size_bytes))
            } else {
                let Some(&size) = src.get(1) else {
                    return Ok(None);
                };
                (2, u64::from(size))
            };
            let max = self.limits.max_frame_len();
            if declared > max {
                return Err(WireError::FrameTooLarge { len: declared, max });
            }
            let command = flags.contains(FrameFlags::COMMAND);
            if command && flags.contains(FrameFlags::MORE) {
                return Err(WireError::CommandWithMore);
            }
            if !command && declared > message_budget {
                let max = self.limits.max_message_len();
                return Err(WireError::MessageTooLarge {
                    len: max.saturating_sub(message_budget).saturating_add(declared),
                    max,
                });
            }
            // `declared <= max_frame_len`, which the caller chose to fit in memory.
            let len = usize::try_from(declared)
                .map_err(|_| WireError::FrameTooLarge { len: declared, max })?;
            // No reservation for the declared body here: a peer that sends a header and
            // trickles (or withholds) the body would make every link hold up to
            // `max_frame_len`. The reader grows its buffer as bytes arrive
            // (see `body_missing`).
            src.advance(header);
            self.state = DecodeState::Body { flags, len };
        }
        let DecodeState::Body { flags, len } = self.state else {
            return Ok(None);
        };
        if src.len() < len {
            return Ok(None);
        }
        self.state = DecodeState::Head;
        Ok(Some(Frame {
            flags,
            body: src.split_to(len).freeze(),
        }))
    }

    /// Whether the decoder is between frames (no header or body half read).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, DecodeState::Head)
    }

    /// Bytes of the current frame's body not yet among the `buffered` bytes (0 between
    /// frames): a reader can make room for them at once instead of growing its buffer
    /// read by read. Declared by the peer: cap what you reserve on its word.
    pub fn body_missing(&self, buffered: usize) -> usize {
        match self.state {
            DecodeState::Body { len, .. } => len.saturating_sub(buffered),
            DecodeState::Head => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, WireError> {
        let mut codec = FrameCodec::new(Limits::default());
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(frame) = codec.decode(&mut buf)? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn short_and_long_headers() {
        let mut buf = BytesMut::new();
        encode_frame(true, false, &[7; 255], &mut buf);
        encode_frame(false, false, &[8; 256], &mut buf);
        assert_eq!(buf[0], 0x01);
        assert_eq!(buf[1], 255);
        assert_eq!(buf[257], 0x02);
        assert_eq!(&buf[258..266], &256u64.to_be_bytes());
        let frames = decode_all(&buf).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(frames[0].more());
        assert_eq!(frames[1].body.len(), 256);
    }

    #[test]
    fn long_form_accepted_for_small_bodies() {
        let mut bytes = vec![0x02];
        bytes.extend_from_slice(&3u64.to_be_bytes());
        bytes.extend_from_slice(b"abc");
        assert_eq!(&decode_all(&bytes).unwrap()[0].body[..], b"abc");
    }

    #[test]
    fn gigabyte_long_header_rejected_before_allocation() {
        let mut bytes = vec![0x02];
        bytes.extend_from_slice(&(1u64 << 30).to_be_bytes());
        let mut buf = BytesMut::from(&bytes[..]);
        let capacity = buf.capacity();
        let err = FrameCodec::new(Limits::default())
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(
            err,
            WireError::FrameTooLarge {
                len: 1 << 30,
                max: Limits::DEFAULT_MAX_FRAME_LEN
            }
        );
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn maximal_long_header_rejected() {
        let mut bytes = vec![0x03];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            decode_all(&bytes),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn reserved_bits_rejected() {
        assert_eq!(
            decode_all(&[0x08, 0]),
            Err(WireError::ReservedFlags { flags: 0x08 })
        );
    }

    #[test]
    fn command_with_more_rejected() {
        assert_eq!(decode_all(&[0x05, 0]), Err(WireError::CommandWithMore));
    }

    #[test]
    fn message_budget_checked_on_the_header() {
        let mut codec = FrameCodec::new(Limits::default());
        let mut buf = BytesMut::from(&[0x00, 10][..]);
        assert!(matches!(
            codec.decode_within(&mut buf, 9),
            Err(WireError::MessageTooLarge { .. })
        ));
    }
}

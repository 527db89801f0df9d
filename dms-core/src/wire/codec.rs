//! [`MessageCodec`]: frames assembled into messages and commands.

use bytes::{Bytes, BytesMut};

use super::{Command, FrameCodec, Limits, WireError, frame};
use crate::Multipart;

/// What a [`MessageCodec`] decodes: a whole message or a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A complete multipart message (with the codec's prefix frame, if one is set).
    Message(Multipart),
    /// A command frame (PING, PONG, ERROR, ...).
    Command(Command),
}

/// Decodes whole messages and commands and encodes messages, tokio-util style: `decode`
/// returns `Ok(None)` until a whole message is buffered, `encode` appends to a buffer.
///
/// Limits are enforced on declared lengths, before the buffer grows: frame length,
/// message length (sum of frame bodies) and frames per message.
///
/// A *prefix* frame can be set (a transport sets the sending peer's id): it is put in
/// front of every decoded message without copying and does not count against the limits.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use dms_core::{Multipart, wire::{Inbound, Limits, MessageCodec}};
///
/// let mut codec = MessageCodec::new(Limits::default());
/// codec.set_prefix(Some(Bytes::from_static(b"peer-7")));
/// let mut buf = BytesMut::new();
/// codec.encode(&Multipart::from_frames(["", "body"]), &mut buf)?;
/// assert_eq!(&buf[..], b"\x01\x00\x00\x04body");
/// assert_eq!(
///     codec.decode(&mut buf)?,
///     Some(Inbound::Message(Multipart::from_frames(["peer-7", "", "body"])))
/// );
/// # Ok::<(), dms_core::wire::WireError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MessageCodec {
    frames: FrameCodec,
    prefix: Option<Bytes>,
    partial: Multipart,
    partial_frames: usize,
    partial_len: u64,
}

impl MessageCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            frames: FrameCodec::new(limits),
            prefix: None,
            partial: Multipart::new(),
            partial_frames: 0,
            partial_len: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        self.frames.limits()
    }

    /// Sets the frame put in front of every decoded message from now on.
    pub fn set_prefix(&mut self, prefix: Option<Bytes>) {
        self.prefix = prefix;
    }

    /// Whether a message or frame is half decoded (bytes would be lost if the stream ended).
    pub fn has_partial(&self) -> bool {
        self.partial_frames > 0 || !self.frames.is_idle()
    }

    /// Bytes of the current frame's body not yet among the `buffered` bytes (0 between
    /// frames); see [`FrameCodec::body_missing`].
    pub fn body_missing(&self, buffered: usize) -> usize {
        self.frames.body_missing(buffered)
    }

    /// Decodes the next message or command from `src`; `Ok(None)` if more bytes are needed.
    ///
    /// After an error the stream is unusable and must be closed.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, WireError> {
        let limits = *self.frames.limits();
        loop {
            let budget = limits.max_message_len().saturating_sub(self.partial_len);
            let Some(frame) = self.frames.decode_within(src, budget)? else {
                return Ok(None);
            };
            if frame.is_command() {
                if self.partial_frames > 0 {
                    return Err(WireError::CommandInsideMessage);
                }
                return Command::parse(frame.body).map(|cmd| Some(Inbound::Command(cmd)));
            }
            if self.partial_frames == limits.max_frames_per_message() {
                return Err(WireError::TooManyFrames {
                    max: limits.max_frames_per_message(),
                });
            }
            if self.partial_frames == 0 {
                if let Some(prefix) = &self.prefix {
                    self.partial.push(prefix.clone());
                }
            }
            self.partial_frames += 1;
            self.partial_len += frame.body.len() as u64;
            let more = frame.more();
            self.partial.push(frame.body);
            if !more {
                self.partial_frames = 0;
                self.partial_len = 0;
                return Ok(Some(Inbound::Message(std::mem::take(&mut self.partial))));
            }
        }
    }

    /// Appends `msg` as frames, MORE set on all but the last.
    ///
    /// Refuses a message the peer's limits (assumed equal to ours) would reject, so that a
    /// local mistake does not close the link.
    pub fn encode(&mut self, msg: &Multipart, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encode_frames(msg.frames(), dst)
    }

    /// As [`encode`](Self::encode), over a slice of frames (a transport passes the frames
    /// after the peer id without building a new message).
    pub fn encode_frames(&self, frames: &[Bytes], dst: &mut BytesMut) -> Result<(), WireError> {
        let encoded = self.check_outbound(frames)?;
        dst.reserve(encoded);
        let last = frames.len() - 1;
        for (i, body) in frames.iter().enumerate() {
            frame::encode_header(i != last, false, body.len(), dst);
            dst.extend_from_slice(body);
        }
        Ok(())
    }

    /// As [`encode_frames`](Self::encode_frames), except that a body of at least
    /// `splice_from` bytes is not copied: only its header goes into `dst`, and `splice`
    /// gets the body with the length of `dst` at that point, where the body belongs in
    /// the stream (a writer sends it from there with a vectored write: no copy of a big
    /// payload). Returns the encoded length, spliced bodies included.
    pub fn encode_frames_spliced(
        &self,
        frames: &[Bytes],
        dst: &mut BytesMut,
        splice_from: usize,
        mut splice: impl FnMut(usize, Bytes),
    ) -> Result<usize, WireError> {
        let encoded = self.check_outbound(frames)?;
        let in_place: usize = frames
            .iter()
            .map(|body| {
                frame::header_len(body.len()) + body.len() * usize::from(body.len() < splice_from)
            })
            .sum();
        dst.reserve(in_place);
        let last = frames.len() - 1;
        for (i, body) in frames.iter().enumerate() {
            frame::encode_header(i != last, false, body.len(), dst);
            if body.len() >= splice_from {
                splice(dst.len(), body.clone());
            } else {
                dst.extend_from_slice(body);
            }
        }
        Ok(encoded)
    }

    /// Checks `frames` against the limits; returns the encoded length.
    pub fn check_outbound(&self, frames: &[Bytes]) -> Result<usize, WireError> {
        let limits = self.frames.limits();
        if frames.is_empty() {
            return Err(WireError::EmptyMessage);
        }
        if frames.len() > limits.max_frames_per_message() {
            return Err(WireError::TooManyFrames {
                max: limits.max_frames_per_message(),
            });
        }
        let mut payload = 0u64;
        let mut encoded = 0usize;
        for body in frames {
            let len = body.len() as u64;
            if len > limits.max_frame_len() {
                return Err(WireError::FrameTooLarge {
                    len,
                    max: limits.max_frame_len(),
                });
            }
            payload += len;
            encoded += frame::header_len(body.len()) + body.len();
        }
        if payload > limits.max_message_len() {
            return Err(WireError::MessageTooLarge {
                len: payload,
                max: limits.max_message_len(),
            });
        }
        Ok(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(msgs: &[Multipart]) -> BytesMut {
        let mut codec = MessageCodec::new(Limits::default());
        let mut buf = BytesMut::new();
        for msg in msgs {
            codec.encode(msg, &mut buf).unwrap();
        }
        buf
    }

    fn decode_all(codec: &mut MessageCodec, buf: &mut BytesMut) -> Vec<Inbound> {
        let mut out = Vec::new();
        while let Some(item) = codec.decode(buf).unwrap() {
            out.push(item);
        }
        out
    }

    fn sample() -> Vec<Multipart> {
        vec![
            Multipart::from_frames([""]),
            Multipart::from_frames(["", "", ""]),
            Multipart::from_frames([vec![1u8; 255], vec![2u8; 256]]),
            Multipart::from_frames([vec![3u8; 70_000]]),
            Multipart::from_frames(["a", "bb", "ccc"]),
        ]
    }

    #[test]
    fn every_split_point_decodes_the_same() {
        let msgs = sample();
        let wire = encode(&msgs);
        let expected: Vec<_> = msgs.iter().cloned().map(Inbound::Message).collect();
        for split in 0..=wire.len() {
            let mut codec = MessageCodec::new(Limits::default());
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = decode_all(&mut codec, &mut buf);
            buf.extend_from_slice(&wire[split..]);
            got.extend(decode_all(&mut codec, &mut buf));
            assert_eq!(got, expected, "split at {split}");
            assert!(buf.is_empty());
            assert!(!codec.has_partial());
        }
    }

    #[test]
    fn byte_at_a_time_decodes_the_same() {
        let msgs = sample();
        let wire = encode(&msgs);
        let mut codec = MessageCodec::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire.iter() {
            buf.extend_from_slice(&[*byte]);
            got.extend(decode_all(&mut codec, &mut buf));
        }
        assert_eq!(got.len(), msgs.len());
    }

    #[test]
    fn frame_count_over_limit_is_rejected() {
        let limits = Limits::builder().max_frames_per_message(3).build();
        let mut wire = BytesMut::new();
        MessageCodec::new(Limits::default())
            .encode(&Multipart::from_frames(["1", "2", "3", "4"]), &mut wire)
            .unwrap();
        let mut codec = MessageCodec::new(limits);
        assert_eq!(
            codec.decode(&mut wire),
            Err(WireError::TooManyFrames { max: 3 })
        );
    }

    #[test]
    fn message_length_over_limit_is_rejected_on_the_header() {
        let limits = Limits::builder().max_message_len(100).build();
        let mut wire = BytesMut::new();
        MessageCodec::new(Limits::default())
            .encode(
                &Multipart::from_frames([vec![0u8; 60], vec![0u8; 60]]),
                &mut wire,
            )
            .unwrap();
        wire.truncate(62 + 2); // the second frame's header only
        let mut codec = MessageCodec::new(limits);
        assert_eq!(
            codec.decode(&mut wire),
            Err(WireError::MessageTooLarge { len: 120, max: 100 })
        );
    }

    #[test]
    fn command_inside_message_is_rejected() {
        let mut wire = BytesMut::from(&[0x01, 0x00][..]);
        Command::Pong {
            context: Bytes::new(),
        }
        .encode(&mut wire);
        let mut codec = MessageCodec::new(Limits::default());
        assert_eq!(
            codec.decode(&mut wire),
            Err(WireError::CommandInsideMessage)
        );
    }

    #[test]
    fn outbound_limits_are_checked() {
        let codec = MessageCodec::new(Limits::builder().max_frame_len(4).build());
        let mut buf = BytesMut::new();
        assert_eq!(
            codec.encode_frames(&[Bytes::from_static(b"12345")], &mut buf),
            Err(WireError::FrameTooLarge { len: 5, max: 4 })
        );
        assert_eq!(
            codec.encode_frames(&[], &mut buf),
            Err(WireError::EmptyMessage)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn prefix_is_added_without_counting() {
        let limits = Limits::builder().max_frames_per_message(1).build();
        let mut codec = MessageCodec::new(limits);
        codec.set_prefix(Some(Bytes::from_static(b"id")));
        let mut wire = encode(&[Multipart::from_frames(["x"])]);
        assert_eq!(
            codec.decode(&mut wire).unwrap(),
            Some(Inbound::Message(Multipart::from_frames(["id", "x"])))
        );
    }

    fn arb_message() -> impl Strategy<Value = Multipart> {
        prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..8),
                prop::collection::vec(any::<u8>(), 250..300),
            ],
            1..6,
        )
        .prop_map(Multipart::from_frames)
    }

    proptest! {
        #[test]
        fn roundtrip_in_random_chunks(
            msgs in prop::collection::vec(arb_message(), 1..8),
            chunk in 1usize..64,
        ) {
            let wire = encode(&msgs);
            let mut codec = MessageCodec::new(Limits::default());
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                got.extend(decode_all(&mut codec, &mut buf));
            }
            let expected: Vec<_> = msgs.into_iter().map(Inbound::Message).collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = MessageCodec::new(Limits::default());
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }
}

//! [`Multipart`]: one message made of frames.

use bytes::Bytes;
use smallvec::SmallVec;

/// Frames a message keeps inline before it spills to the heap.
const INLINE_FRAMES: usize = 3;

/// A message of one or more frames, each a zero-copy [`Bytes`].
///
/// Messages are atomic on the wire: all frames arrive or none. Up to three frames (peer, control, payload: a DMS envelope) live
/// inline (no allocation besides the frames' own buffers). On a
/// [`MessageMiddleware`](crate::MessageMiddleware) the first frame names the adjacent
/// peer, as on a ZeroMQ ROUTER socket.
///
/// ```
/// use dms_core::Multipart;
///
/// let mut msg = Multipart::from_frames(["peer-1", "payload"]);
/// msg.push("more");
/// assert_eq!(msg.len(), 3);
/// assert_eq!(msg.payload_len(), 6 + 7 + 4);
/// assert_eq!(&msg[1][..], b"payload");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Multipart {
    frames: SmallVec<[Bytes; INLINE_FRAMES]>,
}

impl Multipart {
    /// An empty message (no frames).
    pub fn new() -> Self {
        Self::default()
    }

    /// A message of the given frames.
    pub fn from_frames<I, B>(frames: I) -> Self
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        Self {
            frames: frames.into_iter().map(Into::into).collect(),
        }
    }

    /// Appends a frame.
    pub fn push(&mut self, frame: impl Into<Bytes>) {
        self.frames.push(frame.into());
    }

    /// Inserts a frame in front of the others (as a ROUTER adds the peer id).
    pub fn push_front(&mut self, frame: impl Into<Bytes>) {
        self.frames.insert(0, frame.into());
    }

    /// Removes and returns the first frame.
    pub fn pop_front(&mut self) -> Option<Bytes> {
        if self.frames.is_empty() {
            None
        } else {
            Some(self.frames.remove(0))
        }
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the message has no frame at all.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Sum of the frame lengths in bytes (framing overhead not counted).
    pub fn payload_len(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[Bytes] {
        &self.frames
    }

    /// Iterates over the frames.
    pub fn iter(&self) -> std::slice::Iter<'_, Bytes> {
        self.frames.iter()
    }

    /// The first frame, if any.
    pub fn first(&self) -> Option<&Bytes> {
        self.frames.first()
    }

    /// Removes every frame, keeping the inline storage.
    pub fn clear(&mut self) {
        self.frames.clear();
    }
}

impl std::ops::Index<usize> for Multipart {
    type Output = Bytes;

    fn index(&self, index: usize) -> &Bytes {
        &self.frames[index]
    }
}

impl std::fmt::Debug for Multipart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 32;
        let mut list = f.debug_list();
        for frame in &self.frames {
            if frame.len() <= SHOWN {
                list.entry(frame);
            } else {
                list.entry(&format_args!("<{} bytes>", frame.len()));
            }
        }
        list.finish()
    }
}

impl<B: Into<Bytes>> FromIterator<B> for Multipart {
    fn from_iter<I: IntoIterator<Item = B>>(iter: I) -> Self {
        Self::from_frames(iter)
    }
}

impl<B: Into<Bytes>> Extend<B> for Multipart {
    fn extend<I: IntoIterator<Item = B>>(&mut self, iter: I) {
        self.frames.extend(iter.into_iter().map(Into::into));
    }
}

impl IntoIterator for Multipart {
    type Item = Bytes;
    type IntoIter = smallvec::IntoIter<[Bytes; INLINE_FRAMES]>;

    fn into_iter(self) -> Self::IntoIter {
        self.frames.into_iter()
    }
}

impl<'a> IntoIterator for &'a Multipart {
    type Item = &'a Bytes;
    type IntoIter = std::slice::Iter<'a, Bytes>;

    fn into_iter(self) -> Self::IntoIter {
        self.frames.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_operations_keep_order() {
        let mut msg = Multipart::from_frames(["b", "c"]);
        msg.push_front("a");
        assert_eq!(msg, Multipart::from_frames(["a", "b", "c"]));
        assert_eq!(msg.pop_front(), Some(Bytes::from_static(b"a")));
        assert_eq!(msg.len(), 2);
        msg.clear();
        assert!(msg.pop_front().is_none());
    }

    #[test]
    fn debug_elides_large_frames() {
        let msg = Multipart::from_frames([vec![0u8; 100]]);
        assert_eq!(format!("{msg:?}"), "[<100 bytes>]");
    }
}

//! ZMTP command frames: `name-len (1) | name | data`.

use bytes::{BufMut, Bytes, BytesMut};

use super::{WireError, frame};

/// Longest PING context a peer may make us echo (ZMTP 3.1: 16 bytes; longer contexts are
/// truncated in the PONG, as libzmq does).
pub const MAX_PING_CONTEXT: usize = 16;

/// READY metadata: `name-len (1) | name | value-len (4, big-endian) | value`, repeated.
///
/// ```
/// use dms_core::wire::Metadata;
///
/// let mut meta = Metadata::default();
/// meta.push("Socket-Type", "ROUTER");
/// meta.push("Identity", "");
/// let parsed = Metadata::parse(meta.encode().into()).unwrap();
/// assert_eq!(parsed.get("Socket-Type").unwrap().as_ref(), b"ROUTER");
/// assert_eq!(parsed.get("socket-type").unwrap().as_ref(), b"ROUTER"); // names ignore case
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    properties: Vec<(Bytes, Bytes)>,
}

impl Metadata {
    /// Adds a property. Names are 1..=255 bytes; longer names are cut to 255 bytes.
    pub fn push(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let mut name = name.into();
        name.truncate(255);
        self.properties.push((name, value.into()));
    }

    /// The first value of property `name` (compared case-insensitively, as the spec says).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.properties
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// All properties, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.properties.iter().map(|(n, v)| (n, v))
    }

    /// Properties a READY may carry at most: each costs two [`Bytes`] in memory (64
    /// bytes) for as little as 6 bytes on the wire.
    pub const MAX_PROPERTIES: usize = 256;

    /// Parses metadata, rejecting empty names, truncated properties, trailing bytes and
    /// more than [`MAX_PROPERTIES`](Self::MAX_PROPERTIES) properties.
    pub fn parse(mut data: Bytes) -> Result<Self, WireError> {
        const fn malformed(reason: &'static str) -> WireError {
            WireError::MalformedCommand {
                command: "READY",
                reason,
            }
        }
        let mut properties = Vec::new();
        while !data.is_empty() {
            if properties.len() == Self::MAX_PROPERTIES {
                return Err(malformed("more than 256 properties"));
            }
            let name_len = usize::from(data[0]);
            if name_len == 0 {
                return Err(malformed("property with an empty name"));
            }
            if data.len() < 1 + name_len + 4 {
                return Err(malformed("truncated property"));
            }
            let name = data.slice(1..1 + name_len);
            let mut len = [0u8; 4];
            len.copy_from_slice(&data[1 + name_len..1 + name_len + 4]);
            let value_len = u32::from_be_bytes(len) as usize;
            let start = 1 + name_len + 4;
            let end = start
                .checked_add(value_len)
                .filter(|&end| end <= data.len())
                .ok_or(malformed("property value overruns the command"))?;
            properties.push((name, data.slice(start..end)));
            data = data.slice(end..);
        }
        Ok(Self { properties })
    }

    /// Encodes the properties.
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        for (name, value) in &self.properties {
            out.put_u8(name.len() as u8);
            out.extend_from_slice(name);
            out.put_u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
            out.extend_from_slice(value);
        }
        out
    }

    fn encoded_len(&self) -> usize {
        self.properties
            .iter()
            .map(|(n, v)| 1 + n.len() + 4 + v.len())
            .sum()
    }
}

/// A command frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// End of the handshake, with the sender's metadata.
    Ready(Metadata),
    /// Fatal error; the sender closes the connection.
    Error {
        /// Human-readable reason (at most 255 bytes).
        reason: Bytes,
    },
    /// ZMTP 3.1 heartbeat request.
    Ping {
        /// Time to live in tenths of a second (0: none).
        ttl_deciseconds: u16,
        /// Opaque context to echo in the PONG (at most 16 bytes kept).
        context: Bytes,
    },
    /// ZMTP 3.1 heartbeat answer.
    Pong {
        /// The echoed context.
        context: Bytes,
    },
    /// A command this implementation does not know (ignored after the handshake, as libzmq
    /// does).
    Other {
        /// Command name.
        name: Bytes,
        /// Command data.
        data: Bytes,
    },
}

impl Command {
    /// Parses a command frame's body.
    pub fn parse(body: Bytes) -> Result<Self, WireError> {
        let Some(&name_len) = body.first() else {
            return Err(WireError::MalformedCommand {
                command: "command",
                reason: "empty command frame",
            });
        };
        let name_len = usize::from(name_len);
        if name_len == 0 || body.len() < 1 + name_len {
            return Err(WireError::MalformedCommand {
                command: "command",
                reason: "command name missing or truncated",
            });
        }
        let name = body.slice(1..1 + name_len);
        let data = body.slice(1 + name_len..);
        Ok(match &name[..] {
            b"READY" => Self::Ready(Metadata::parse(data)?),
            b"ERROR" => {
                let Some(&len) = data.first() else {
                    return Err(WireError::MalformedCommand {
                        command: "ERROR",
                        reason: "missing reason length",
                    });
                };
                let end = 1 + usize::from(len);
                if data.len() < end {
                    return Err(WireError::MalformedCommand {
                        command: "ERROR",
                        reason: "reason overruns the command",
                    });
                }
                Self::Error {
                    reason: data.slice(1..end),
                }
            }
            b"PING" => {
                if data.len() < 2 {
                    return Err(WireError::MalformedCommand {
                        command: "PING",
                        reason: "missing TTL",
                    });
                }
                let ttl_deciseconds = u16::from_be_bytes([data[0], data[1]]);
                let context = data.slice(2..data.len().min(2 + MAX_PING_CONTEXT));
                Self::Ping {
                    ttl_deciseconds,
                    context,
                }
            }
            b"PONG" => Self::Pong {
                context: data.slice(..data.len().min(MAX_PING_CONTEXT)),
            },
            _ => Self::Other { name, data },
        })
    }

    /// Appends the command as a command frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut body = BytesMut::new();
        let mut put_name = |name: &[u8]| {
            body.put_u8(name.len() as u8);
            body.extend_from_slice(name);
        };
        match self {
            Self::Ready(meta) => {
                put_name(b"READY");
                body.extend_from_slice(&meta.encode());
            }
            Self::Error { reason } => {
                put_name(b"ERROR");
                let reason = &reason[..reason.len().min(255)];
                body.put_u8(reason.len() as u8);
                body.extend_from_slice(reason);
            }
            Self::Ping {
                ttl_deciseconds,
                context,
            } => {
                put_name(b"PING");
                body.put_u16(*ttl_deciseconds);
                body.extend_from_slice(&context[..context.len().min(MAX_PING_CONTEXT)]);
            }
            Self::Pong { context } => {
                put_name(b"PONG");
                body.extend_from_slice(&context[..context.len().min(MAX_PING_CONTEXT)]);
            }
            Self::Other { name, data } => {
                put_name(&name[..name.len().min(255)]);
                body.extend_from_slice(data);
            }
        }
        frame::encode_frame(false, true, &body, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(cmd: &Command) -> Command {
        let mut buf = BytesMut::new();
        cmd.encode(&mut buf);
        let mut codec = super::super::FrameCodec::new(super::super::Limits::default());
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert!(frame.is_command());
        Command::parse(frame.body).unwrap()
    }

    #[test]
    fn rfc23_worked_example_ready() {
        // 04 29 | 05 READY | 0B Socket-Type | 00 00 00 06 DEALER | 08 Identity | 00 00 00 00
        let mut meta = Metadata::default();
        meta.push("Socket-Type", "DEALER");
        meta.push("Identity", "");
        let mut buf = BytesMut::new();
        Command::Ready(meta).encode(&mut buf);
        let mut expected = vec![0x04, 0x29, 5];
        expected.extend_from_slice(b"READY");
        expected.push(11);
        expected.extend_from_slice(b"Socket-Type");
        expected.extend_from_slice(&[0, 0, 0, 6]);
        expected.extend_from_slice(b"DEALER");
        expected.push(8);
        expected.extend_from_slice(b"Identity");
        expected.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(&buf[..], &expected[..]);
    }

    #[test]
    fn commands_roundtrip() {
        for cmd in [
            Command::Error {
                reason: Bytes::from_static(b"duplicate identity"),
            },
            Command::Ping {
                ttl_deciseconds: 30,
                context: Bytes::from_static(b"ctx"),
            },
            Command::Pong {
                context: Bytes::new(),
            },
            Command::Other {
                name: Bytes::from_static(b"SUBSCRIBE"),
                data: Bytes::from_static(b"topic"),
            },
        ] {
            assert_eq!(roundtrip(&cmd), cmd);
        }
    }

    #[test]
    fn long_ping_context_is_truncated() {
        let mut body = vec![4];
        body.extend_from_slice(b"PING");
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&[9; 40]);
        let Command::Ping { context, .. } = Command::parse(body.into()).unwrap() else {
            panic!("not a PING");
        };
        assert_eq!(context.len(), MAX_PING_CONTEXT);
    }

    #[test]
    fn malformed_commands_are_typed_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x00",
            b"\x09READY",
            b"\x04PING\x00",
            b"\x05ERROR",
            b"\x05ERROR\x05abc",
            b"\x05READY\x00",
            b"\x05READY\x04name\x00\x00",
            b"\x05READY\x04name\x00\x00\x00\x09abc",
            b"\x05READY\x04name\xff\xff\xff\xff",
        ];
        for case in cases {
            assert!(
                matches!(
                    Command::parse(Bytes::from_static(case)),
                    Err(WireError::MalformedCommand { .. })
                ),
                "{case:?}"
            );
        }
    }
}

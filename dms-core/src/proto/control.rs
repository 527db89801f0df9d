//! The DMS control frame: the second frame of every DMS message, a fixed, versioned binary
//! layout documented byte by byte in `docs/PROTOCOL.md`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::path::ServicePath;
use crate::trace::{TRACEPARENT_LEN, TraceContext};

/// The only control frame version this implementation speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 30;
/// Default hop limit of a new message.
pub const DEFAULT_HOP_LIMIT: u8 = 16;

/// A DMS command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CommandCode {
    /// Announces a service path; opens a session (probe and its answer).
    Ready = 1,
    /// Heartbeat from the requester.
    Ping = 2,
    /// Heartbeat answer.
    Pong = 3,
    /// Ends the session; nothing follows on the link.
    Disconnect = 4,
    /// A request (`EXPECT_REPLY`) or a notification.
    Req = 5,
    /// The reply to a request.
    Rep = 6,
}

impl CommandCode {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Ready,
            2 => Self::Ping,
            3 => Self::Pong,
            4 => Self::Disconnect,
            5 => Self::Req,
            6 => Self::Rep,
            _ => return None,
        })
    }
}

/// Flag bits of byte 2.
pub mod flags {
    /// REQ: the sender waits for a REP with the same id.
    pub const EXPECT_REPLY: u8 = 0x01;
    /// REQ: sent to every live instance of the cluster.
    pub const BROADCAST: u8 = 0x02;
    /// REP: the request failed; the body carries an error code and detail.
    pub const ERROR: u8 = 0x04;
}

/// Capability bits of READY.
pub mod capabilities {
    /// The sender forwards messages for others (a broker, docs/PROTOCOL.md §3.5): a REQ it
    /// sends may carry an origin other than its own path.
    pub const FORWARDS: u32 = 0x0000_0001;
}

/// Entry types of the extension block of REQ and REP (docs/PROTOCOL.md §3.4): entries
/// `type (1) | len (1) | value (len bytes)` after the command's listed fields. Types 2 and 3
/// carry the forwarding fields of a routed REQ (§3.5), 128–255 are for applications; a
/// receiver skips the types it does not know.
pub mod ext {
    /// A W3C `traceparent` (55 ASCII bytes): the request's trace context.
    pub const TRACEPARENT: u8 = 1;
    /// The origin's service path (a routed REQ, docs/PROTOCOL.md §3.5).
    pub const ORIGIN: u8 = 2;
    /// The final destination's service path (a routed REQ).
    pub const DESTINATION: u8 = 3;
    /// The first type free for applications.
    pub const APPLICATION: u8 = 128;
}

/// Why a session ends (DISCONNECT) or a request failed (REP with `ERROR`): a code and a
/// human-readable detail (at most 255 bytes of UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The code; see [`codes`].
    pub code: u16,
    /// Detail for people.
    pub detail: String,
}

/// Reason codes.
pub mod codes {
    /// The peer is shutting down (DISCONNECT).
    pub const SHUTDOWN: u16 = 1;
    /// The ACL refuses an operation: `connect` (DISCONNECT at READY) or `request` (REP
    /// error). The detail reads `denied OP from PRINCIPAL to SERVICE`.
    pub const ACCESS_DENIED: u16 = 2;
    /// The peer broke the protocol (DISCONNECT).
    pub const PROTOCOL_VIOLATION: u16 = 3;
    /// No sign of life within the liveness timeout (DISCONNECT).
    pub const TIMEOUT: u16 = 4;
    /// Unsupported control frame version (DISCONNECT).
    pub const VERSION_MISMATCH: u16 = 5;
    /// The peer exceeded a rate limit, e.g. flooded PINGs (DISCONNECT).
    pub const RATE_LIMITED: u16 = 6;
    /// No handler took the request (REP error).
    pub const NO_HANDLER: u16 = 16;
    /// The responder is overloaded (REP error).
    pub const OVERLOADED: u16 = 17;
    /// The handler failed (REP error).
    pub const HANDLER_FAILED: u16 = 18;
    /// The request's payload could not be decoded by the responder (REP error): a typed
    /// request of another type or codec than the handler's.
    pub const BAD_REQUEST: u16 = 19;
    /// The handler's reply broke the wire limits of the link back to the requester, so it
    /// was not sent (REP error; the detail says which limit).
    pub const REPLY_TOO_LARGE: u16 = 20;
    /// A routed request used up its hop limit before reaching its destination (REP error
    /// from the hop that would have exceeded it).
    pub const HOP_LIMIT_EXCEEDED: u16 = 21;
    /// A hop has no route to the request's destination, or the next hop would send it
    /// back where it came from, or the hop does not forward (REP error).
    pub const UNREACHABLE: u16 = 22;
    /// A forwarding hop lost its link onward, or got no reply from it within its forward
    /// timeout, before the reply came (REP error: the request may or may not have been
    /// handled).
    pub const NEXT_HOP_FAILED: u16 = 23;
}

/// The forwarding fields of a routed REQ (docs/PROTOCOL.md §3.5): the instance that sent
/// it first and the one it is for. Encoded as the extension entries [`ext::ORIGIN`] and
/// [`ext::DESTINATION`], with their FNV-1a 64 hashes in the header's `source` and
/// `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Who sent the request first.
    pub origin: ServicePath,
    /// Whom it is for.
    pub destination: ServicePath,
}

/// Command-specific fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// READY: the sender's service path, the liveness timeout the receiver should apply to
    /// the sender (0 from a responder), and capability bits (none defined yet).
    Ready {
        /// Sender's service path (UTF-8).
        path: String,
        /// Milliseconds of silence after which the receiver may declare the sender dead.
        liveness_timeout_ms: u32,
        /// Capability bits.
        capabilities: u32,
    },
    /// DISCONNECT or REP with `ERROR`.
    Reason(Reason),
    /// Nothing (PING, PONG, REQ, plain REP).
    Empty,
}

/// A decoded control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The command.
    pub command: CommandCode,
    /// Flag bits ([`flags`]).
    pub flags: u8,
    /// Hops left (forwarding).
    pub hop_limit: u8,
    /// REQ/REP: request id; PING/PONG: sequence number.
    pub id: u64,
    /// FNV-1a 64 of the origin's service path.
    pub source: u64,
    /// FNV-1a 64 of the final destination's service path (0: the adjacent peer).
    pub destination: u64,
    /// Command-specific fields.
    pub body: Body,
    /// REQ and REP: the W3C trace context, sent as the extension entry
    /// [`ext::TRACEPARENT`] (docs/PROTOCOL.md §3.4). Ignored when encoding other commands;
    /// decoded as `None` when absent or invalid.
    pub trace: Option<TraceContext>,
    /// REQ: the forwarding fields of a routed request (docs/PROTOCOL.md §3.5); `None` for
    /// a request to the adjacent peer. When set, encoding writes `source` and
    /// `destination` from it.
    pub route: Option<Route>,
}

/// A control frame that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Shorter than the fixed header or than its declared body.
    #[error("control frame truncated: {len} bytes, {needed} needed")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// A version other than [`VERSION`].
    #[error("control frame version {0} is not supported (this side speaks {VERSION})")]
    Version(u8),
    /// Unknown command byte.
    #[error("unknown command {0}")]
    UnknownCommand(u8),
    /// A READY path or reason detail is not UTF-8.
    #[error("text field is not UTF-8")]
    NotUtf8,
    /// The message has no control frame.
    #[error("message has no control frame")]
    Missing,
    /// A REQ whose header names a destination (a routed request) without valid forwarding
    /// fields: entries missing, not service paths, or not matching the header's hashes.
    #[error("routed request with bad forwarding fields: {0}")]
    BadRoute(&'static str),
    /// Bytes after the declared body: the frame is longer than `30 + N`.
    #[error("control frame of {len} bytes, its header declares {declared}")]
    TrailingBytes {
        /// Bytes present.
        len: usize,
        /// Bytes the header declares (`30 + N`).
        declared: usize,
    },
}

impl Control {
    /// A control frame for `command` with id and flags, no forwarding fields.
    pub fn new(command: CommandCode, flags: u8, id: u64, body: Body) -> Self {
        Self {
            command,
            flags,
            hop_limit: DEFAULT_HOP_LIMIT,
            id,
            source: 0,
            destination: 0,
            body,
            trace: None,
            route: None,
        }
    }

    /// The same frame with the forwarding fields `route` (REQ).
    ///
    /// ```
    /// use dms_core::proto::control::{Body, CommandCode, Control, Route, flags};
    ///
    /// let route = Route {
    ///     origin: "/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?,
    ///     destination: "/demo/cn/android/w1/g1/Trade/trade-1".parse()?,
    /// };
    /// let req = Control::new(CommandCode::Req, flags::EXPECT_REPLY, 7, Body::Empty).with_route(Some(route.clone()));
    /// let bytes = req.encode();
    /// // The header carries the two hashes; the block carries the two paths.
    /// assert_eq!(&bytes[12..20], &route.origin.hash64().to_be_bytes());
    /// assert_eq!(&bytes[20..28], &route.destination.hash64().to_be_bytes());
    /// assert_eq!(Control::decode(&bytes)?.route, Some(route));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_route(mut self, route: Option<Route>) -> Self {
        if let Some(route) = &route {
            self.source = route.origin.hash64();
            self.destination = route.destination.hash64();
        }
        self.route = route;
        self
    }

    /// The same frame with the trace context `trace` (REQ and REP).
    ///
    /// ```
    /// use dms_core::proto::control::{Body, CommandCode, Control, flags};
    /// use dms_core::trace::TraceContext;
    ///
    /// let trace = TraceContext::new(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 0x00f0_67aa_0ba9_02b7, 1);
    /// let req = Control::new(CommandCode::Req, flags::EXPECT_REPLY, 7, Body::Empty).with_trace(trace);
    /// let bytes = req.encode();
    /// // The 30-byte header, then the extension entry: type 1, length 55, the traceparent.
    /// assert_eq!(bytes.len(), 30 + 2 + 55);
    /// assert_eq!(&bytes[30..35], b"\x01\x3700-");
    /// assert_eq!(Control::decode(&bytes)?.trace, trace);
    /// # Ok::<(), dms_core::proto::control::ControlError>(())
    /// ```
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    /// Encodes the frame.
    ///
    /// ```
    /// use dms_core::proto::control::{Body, CommandCode, Control};
    ///
    /// let ping = Control::new(CommandCode::Ping, 0, 7, Body::Empty);
    /// let bytes = ping.encode();
    /// assert_eq!(bytes.len(), 30);
    /// assert_eq!(&bytes[..4], &[1, 2, 0, 16]);
    /// assert_eq!(Control::decode(&bytes), Ok(ping));
    /// ```
    pub fn encode(&self) -> Bytes {
        let mut body = BytesMut::new();
        match &self.body {
            Body::Ready {
                path,
                liveness_timeout_ms,
                capabilities,
            } => {
                body.put_u32(*liveness_timeout_ms);
                body.put_u32(*capabilities);
                let path = truncate_utf8(path, 255);
                body.put_u8(path.len() as u8);
                body.extend_from_slice(path.as_bytes());
            }
            Body::Reason(Reason { code, detail }) => {
                body.put_u16(*code);
                let detail = truncate_utf8(detail, 255);
                body.put_u8(detail.len() as u8);
                body.extend_from_slice(detail.as_bytes());
            }
            Body::Empty => {}
        }
        if let (Some(trace), CommandCode::Req | CommandCode::Rep) = (&self.trace, self.command) {
            body.put_u8(ext::TRACEPARENT);
            body.put_u8(TRACEPARENT_LEN as u8);
            body.extend_from_slice(&trace.to_bytes());
        }
        let (mut source, mut destination) = (self.source, self.destination);
        if let (Some(route), CommandCode::Req) = (&self.route, self.command) {
            // Service paths are at most 255 bytes (seven segments of at most 32), so each
            // fits one entry.
            for (kind, path) in [
                (ext::ORIGIN, &route.origin),
                (ext::DESTINATION, &route.destination),
            ] {
                let path = truncate_utf8(path.as_str(), 255);
                body.put_u8(kind);
                body.put_u8(path.len() as u8);
                body.extend_from_slice(path.as_bytes());
            }
            source = route.origin.hash64();
            destination = route.destination.hash64();
        }
        let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
        out.put_u8(VERSION);
        out.put_u8(self.command as u8);
        out.put_u8(self.flags);
        out.put_u8(self.hop_limit);
        out.put_u64(self.id);
        out.put_u64(source);
        out.put_u64(destination);
        out.put_u16(body.len() as u16);
        out.extend_from_slice(&body);
        out.freeze()
    }

    /// The command of an encoded control frame, read from its header alone (`None` if
    /// the frame is too short or of another version). For a node's own outbound
    /// messages; peers' frames go through [`decode`](Self::decode).
    pub fn peek_command(frame: &[u8]) -> Option<CommandCode> {
        match frame {
            [VERSION, command, ..] if frame.len() >= HEADER_LEN => CommandCode::from_byte(*command),
            _ => None,
        }
    }

    /// Decodes a control frame. Bytes after the known fields of the body are ignored (room
    /// for later minor additions), except that REQ and REP read them as an extension block
    /// ([`ext`]; a malformed block is ignored from its first bad entry on, never an
    /// error); everything declared must be present, and nothing may follow the declared
    /// body (the frame is exactly `30 + N` bytes).
    pub fn decode(frame: &[u8]) -> Result<Self, ControlError> {
        if frame.len() < HEADER_LEN {
            if let Some(&version) = frame.first() {
                if version != VERSION {
                    return Err(ControlError::Version(version));
                }
            }
            return Err(ControlError::Truncated {
                len: frame.len(),
                needed: HEADER_LEN,
            });
        }
        let mut buf = frame;
        let version = buf.get_u8();
        if version != VERSION {
            return Err(ControlError::Version(version));
        }
        let command_byte = buf.get_u8();
        let command = CommandCode::from_byte(command_byte)
            .ok_or(ControlError::UnknownCommand(command_byte))?;
        let flags = buf.get_u8();
        let hop_limit = buf.get_u8();
        let id = buf.get_u64();
        let source = buf.get_u64();
        let destination = buf.get_u64();
        let body_len = usize::from(buf.get_u16());
        if buf.len() < body_len {
            return Err(ControlError::Truncated {
                len: frame.len(),
                needed: HEADER_LEN + body_len,
            });
        }
        if buf.len() > body_len {
            return Err(ControlError::TrailingBytes {
                len: frame.len(),
                declared: HEADER_LEN + body_len,
            });
        }
        let body = buf;
        let mut extensions = Extensions::default();
        let body = match command {
            CommandCode::Ready => decode_ready(body)?,
            CommandCode::Disconnect => Body::Reason(decode_reason(body, frame.len())?.0),
            CommandCode::Rep if flags & flags::ERROR != 0 => {
                let (reason, block) = decode_reason(body, frame.len())?;
                extensions = read_extensions(block);
                Body::Reason(reason)
            }
            CommandCode::Req | CommandCode::Rep => {
                extensions = read_extensions(body);
                Body::Empty
            }
            _ => Body::Empty,
        };
        let route = match command {
            CommandCode::Req if destination != 0 => Some(extensions.route(source, destination)?),
            _ => None,
        };
        let trace = extensions.trace.and_then(TraceContext::parse);
        Ok(Self {
            command,
            flags,
            hop_limit,
            id,
            source,
            destination,
            body,
            trace,
            route,
        })
    }
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn decode_ready(mut body: &[u8]) -> Result<Body, ControlError> {
    const FIXED: usize = 9;
    if body.len() < FIXED {
        return Err(ControlError::Truncated {
            len: HEADER_LEN + body.len(),
            needed: HEADER_LEN + FIXED,
        });
    }
    let liveness_timeout_ms = body.get_u32();
    let capabilities = body.get_u32();
    let len = usize::from(body.get_u8());
    let path = body.get(..len).ok_or(ControlError::Truncated {
        len: HEADER_LEN + FIXED + body.len(),
        needed: HEADER_LEN + FIXED + len,
    })?;
    let path = std::str::from_utf8(path).map_err(|_| ControlError::NotUtf8)?;
    Ok(Body::Ready {
        path: path.to_owned(),
        liveness_timeout_ms,
        capabilities,
    })
}

/// The known entries of an extension block, the first of each type.
#[derive(Default)]
struct Extensions<'a> {
    trace: Option<&'a [u8]>,
    origin: Option<&'a [u8]>,
    destination: Option<&'a [u8]>,
}

impl Extensions<'_> {
    /// The forwarding fields of a routed REQ whose header hashes are `source` and
    /// `destination`: both entries present, service paths, hashing to the header's values.
    fn route(&self, source: u64, destination: u64) -> Result<Route, ControlError> {
        let path = |entry: Option<&[u8]>, hash: u64, what: &'static str| {
            let text = std::str::from_utf8(entry.ok_or(ControlError::BadRoute(what))?)
                .map_err(|_| ControlError::BadRoute("forwarding path is not UTF-8"))?;
            let path: ServicePath = text
                .parse()
                .map_err(|_| ControlError::BadRoute("forwarding path is not a service path"))?;
            if path.hash64() == hash {
                Ok(path)
            } else {
                Err(ControlError::BadRoute(
                    "forwarding path does not match its header hash",
                ))
            }
        };
        Ok(Route {
            origin: path(
                self.origin,
                source,
                "routed request without an origin entry",
            )?,
            destination: path(
                self.destination,
                destination,
                "routed request without a destination entry",
            )?,
        })
    }
}

/// The entries of an extension block (docs/PROTOCOL.md §3.4): `type (1) | len (1) | value
/// (len)`, read until the block ends or an entry does not fit in it (the rest is then
/// ignored). Unknown types are skipped; the first entry of each known type decides (a
/// traceparent that is not valid means no trace context).
fn read_extensions(mut block: &[u8]) -> Extensions<'_> {
    let mut found = Extensions::default();
    while let [kind, len, rest @ ..] = block {
        let len = usize::from(*len);
        let Some(value) = rest.get(..len) else {
            break; // truncated: ignored
        };
        let slot = match *kind {
            ext::TRACEPARENT => &mut found.trace,
            ext::ORIGIN => &mut found.origin,
            ext::DESTINATION => &mut found.destination,
            _ => {
                block = &rest[len..];
                continue;
            }
        };
        if slot.is_none() {
            *slot = Some(value);
        }
        block = &rest[len..];
    }
    found
}

/// A reason's fields and the bytes after them (its extension block).
fn decode_reason(mut body: &[u8], frame_len: usize) -> Result<(Reason, &[u8]), ControlError> {
    if body.len() < 3 {
        return Err(ControlError::Truncated {
            len: frame_len,
            needed: HEADER_LEN + 3,
        });
    }
    let code = body.get_u16();
    let len = usize::from(body.get_u8());
    let detail = body.get(..len).ok_or(ControlError::Truncated {
        len: frame_len,
        needed: HEADER_LEN + 3 + len,
    })?;
    let detail = std::str::from_utf8(detail).map_err(|_| ControlError::NotUtf8)?;
    Ok((
        Reason {
            code,
            detail: detail.to_owned(),
        },
        &body[len..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ready_golden_bytes() {
        let ready = Control::new(
            CommandCode::Ready,
            0,
            0,
            Body::Ready {
                path: "/a/b/c/d/e/f/g".into(),
                liveness_timeout_ms: 3000,
                capabilities: 0,
            },
        );
        let bytes = ready.encode();
        let mut expected = vec![1, 1, 0, 16];
        expected.extend_from_slice(&[0; 24]);
        expected.extend_from_slice(&[0, 23]);
        expected.extend_from_slice(&[0, 0, 0x0b, 0xb8, 0, 0, 0, 0, 14]);
        expected.extend_from_slice(b"/a/b/c/d/e/f/g");
        assert_eq!(&bytes[..], &expected[..]);
        assert_eq!(Control::decode(&bytes), Ok(ready));
    }

    #[test]
    fn malformed_frames_are_typed() {
        assert_eq!(Control::decode(&[2]), Err(ControlError::Version(2)));
        assert!(matches!(
            Control::decode(&[1; 10]),
            Err(ControlError::Truncated { .. })
        ));
        let mut bad = Control::new(CommandCode::Ping, 0, 0, Body::Empty)
            .encode()
            .to_vec();
        bad[1] = 99;
        assert_eq!(Control::decode(&bad), Err(ControlError::UnknownCommand(99)));
        let mut short = Control::new(
            CommandCode::Disconnect,
            0,
            0,
            Body::Reason(Reason {
                code: 1,
                detail: "bye".into(),
            }),
        )
        .encode()
        .to_vec();
        short.truncate(short.len() - 1);
        assert!(matches!(
            Control::decode(&short),
            Err(ControlError::Truncated { .. })
        ));
    }

    #[test]
    fn long_text_is_truncated_on_a_char_boundary() {
        let detail = "é".repeat(200);
        let frame = Control::new(
            CommandCode::Disconnect,
            0,
            0,
            Body::Reason(Reason { code: 1, detail }),
        )
        .encode();
        let Body::Reason(reason) = Control::decode(&frame).unwrap().body else {
            panic!("reason")
        };
        assert_eq!(reason.detail.len(), 254);
    }

    const TRACEPARENT: &[u8; 55] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn sample_trace() -> Option<TraceContext> {
        TraceContext::parse(TRACEPARENT)
    }

    /// A REQ whose body (`N` bytes) is `body`.
    fn req_with_body(body: &[u8]) -> Vec<u8> {
        let mut frame = Control::new(CommandCode::Req, flags::EXPECT_REPLY, 7, Body::Empty)
            .encode()
            .to_vec();
        frame[28..30].copy_from_slice(&(body.len() as u16).to_be_bytes());
        frame.extend_from_slice(body);
        frame
    }

    fn entry(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, value.len() as u8];
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn trace_context_rides_in_the_extension_block() {
        for control in [
            Control::new(CommandCode::Req, flags::EXPECT_REPLY, 7, Body::Empty),
            Control::new(CommandCode::Req, 0, 0, Body::Empty),
            Control::new(CommandCode::Rep, 0, 7, Body::Empty),
            Control::new(
                CommandCode::Rep,
                flags::ERROR,
                7,
                Body::Reason(Reason {
                    code: 16,
                    detail: "no handler".into(),
                }),
            ),
        ] {
            let plain = control.encode();
            let traced = control.clone().with_trace(sample_trace());
            let bytes = traced.encode();
            assert_eq!(bytes.len(), plain.len() + 57, "{control:?}");
            assert_eq!(&bytes[..28], &plain[..28]);
            assert_eq!(&bytes[plain.len()..plain.len() + 2], &[1, 55]);
            assert_eq!(&bytes[plain.len() + 2..], TRACEPARENT);
            assert_eq!(Control::decode(&bytes), Ok(traced));
        }
        // Other commands have no extension block: the trace context is not sent.
        let ping = Control::new(CommandCode::Ping, 0, 1, Body::Empty).with_trace(sample_trace());
        assert_eq!(ping.encode().len(), HEADER_LEN);
    }

    #[test]
    fn extension_entries_are_skipped_or_ignored_never_an_error() {
        let traced = |body: &[u8]| Control::decode(&req_with_body(body)).map(|c| c.trace);
        let tp = entry(1, TRACEPARENT);
        // Unknown types before it are skipped, whatever follows it is not read.
        let mut body = entry(2, b"/a/b/c/d/e/f/g");
        body.extend(entry(200, b""));
        body.extend(&tp);
        body.extend(entry(1, &[b'x'; 55]));
        body.extend([9, 200]);
        assert_eq!(traced(&body), Ok(sample_trace()));
        // The first traceparent entry decides: an invalid one is no trace context.
        let mut bad = entry(1, &TRACEPARENT.to_ascii_uppercase());
        bad.extend(&tp);
        assert_eq!(traced(&bad), Ok(None));
        assert_eq!(traced(&entry(1, &TRACEPARENT[..54])), Ok(None));
        assert_eq!(traced(&entry(1, b"")), Ok(None));
        // A truncated entry: the rest of the block is ignored.
        let mut cut = tp.clone();
        cut.pop();
        assert_eq!(traced(&cut), Ok(None));
        assert_eq!(traced(&[1]), Ok(None));
        assert_eq!(traced(&[9; 5]), Ok(None));
        let mut after_cut = entry(7, b"x");
        after_cut.extend([7, 250, 0]);
        after_cut.extend(&tp);
        assert_eq!(traced(&after_cut), Ok(None));
    }

    proptest! {
        #[test]
        fn extension_blocks_never_fail_a_req(body in prop::collection::vec(any::<u8>(), 0..120)) {
            prop_assert!(Control::decode(&req_with_body(&body)).is_ok());
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = Control::decode(&bytes);
        }

        #[test]
        fn roundtrip(id in any::<u64>(), src in any::<u64>(), code in any::<u16>(), detail in "[a-z ]{0,40}") {
            let mut c = Control::new(CommandCode::Rep, flags::ERROR, id, Body::Reason(Reason { code, detail }));
            c.source = src;
            prop_assert_eq!(Control::decode(&c.encode()), Ok(c));
        }
    }
}

//! The ZMTP 3 NULL-mechanism handshake as a sans-IO state machine.

use bytes::{Bytes, BytesMut};

use super::{Command, FrameCodec, GREETING_LEN, Greeting, HandshakeError, Limits, Metadata};

/// ZeroMQ socket types DMS announces or meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketType {
    /// What every DMS middleware is.
    Router,
    /// A libzmq DEALER.
    Dealer,
    /// A libzmq REQ.
    Req,
}

impl SocketType {
    /// The name in the `Socket-Type` property.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Router => "ROUTER",
            Self::Dealer => "DEALER",
            Self::Req => "REQ",
        }
    }

    /// Whether a socket of this type accepts a peer announcing `peer` (ZMTP's table).
    pub fn accepts(self, peer: &[u8]) -> bool {
        let ok: &[&[u8]] = match self {
            Self::Router => &[b"ROUTER", b"DEALER", b"REQ"],
            Self::Dealer => &[b"ROUTER", b"DEALER", b"REP"],
            Self::Req => &[b"ROUTER", b"REP"],
        };
        ok.contains(&peer)
    }
}

/// What we announce in the handshake.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Our socket type.
    pub socket_type: SocketType,
    /// Our identity (empty: let the peer name us).
    pub identity: Bytes,
    /// Limits on the peer's frames.
    pub limits: Limits,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            socket_type: SocketType::Router,
            identity: Bytes::new(),
            limits: Limits::default(),
        }
    }
}

/// What the handshake learnt of the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's minor ZMTP version (0 or 1; higher minors are reported as they came).
    pub minor_version: u8,
    /// The `Socket-Type` it announced.
    pub socket_type: Bytes,
    /// The `Identity` it announced (empty if none).
    pub identity: Bytes,
    /// All of its READY properties.
    pub metadata: Metadata,
}

#[derive(Debug, Clone)]
enum State {
    /// Reading the peer's 64-byte greeting.
    Greeting,
    /// Greeting read; reading the peer's READY.
    Ready,
    /// Done or failed: no more input is taken.
    Finished,
}

/// The NULL handshake, both roles (it is symmetric): send greeting and READY at once,
/// read the peer's greeting, then its READY.
///
/// Calling convention: call [`poll_transmit`](Self::poll_transmit) once and write what it
/// produced; then feed every received byte to [`handle_bytes`](Self::handle_bytes) until it
/// returns `Ok(Some(info))`. Bytes after the peer's READY stay in the buffer: they are the
/// first frames of the connection. The caller enforces [`Limits::handshake_timeout`].
///
/// ```
/// use bytes::BytesMut;
/// use dms_core::wire::{Handshake, HandshakeConfig};
///
/// let mut a = Handshake::new(HandshakeConfig::default());
/// let mut b = Handshake::new(HandshakeConfig { identity: "b".into(), ..Default::default() });
/// let (mut a_to_b, mut b_to_a) = (BytesMut::new(), BytesMut::new());
/// a.poll_transmit(&mut a_to_b);
/// b.poll_transmit(&mut b_to_a);
/// let b_seen_by_a = a.handle_bytes(&mut b_to_a).unwrap().unwrap();
/// let a_seen_by_b = b.handle_bytes(&mut a_to_b).unwrap().unwrap();
/// assert_eq!(&b_seen_by_a.identity[..], b"b");
/// assert_eq!(&a_seen_by_b.socket_type[..], b"ROUTER");
/// ```
#[derive(Debug, Clone)]
pub struct Handshake {
    config: HandshakeConfig,
    state: State,
    transmitted: bool,
    minor_version: u8,
    frames: FrameCodec,
}

impl Handshake {
    /// A handshake announcing `config`.
    pub fn new(config: HandshakeConfig) -> Self {
        let frames = FrameCodec::new(config.limits.for_handshake());
        Self {
            config,
            state: State::Greeting,
            transmitted: false,
            minor_version: 0,
            frames,
        }
    }

    /// Appends our greeting and READY to `dst` the first time; does nothing afterwards.
    /// Returns whether it wrote anything.
    pub fn poll_transmit(&mut self, dst: &mut BytesMut) -> bool {
        if self.transmitted {
            return false;
        }
        self.transmitted = true;
        dst.extend_from_slice(&Greeting::encode_null());
        let mut meta = Metadata::default();
        meta.push("Socket-Type", self.config.socket_type.as_str());
        meta.push("Identity", self.config.identity.clone());
        Command::Ready(meta).encode(dst);
        true
    }

    /// Consumes handshake bytes from `src`. `Ok(None)`: more bytes needed. `Ok(Some)`:
    /// done; what is left in `src` is connection data. After an error the connection must
    /// be closed (sending [`Command::Error`] first is polite).
    pub fn handle_bytes(&mut self, src: &mut BytesMut) -> Result<Option<PeerInfo>, HandshakeError> {
        let result = self.step(src);
        if !matches!(result, Ok(None)) {
            self.state = State::Finished;
        }
        result
    }

    fn step(&mut self, src: &mut BytesMut) -> Result<Option<PeerInfo>, HandshakeError> {
        if let State::Greeting = self.state {
            Greeting::check_prefix(&src[..src.len().min(GREETING_LEN)])?;
            let Some(bytes) = src.get(..GREETING_LEN) else {
                return Ok(None);
            };
            let mut greeting = [0u8; GREETING_LEN];
            greeting.copy_from_slice(bytes);
            self.minor_version = Greeting::parse(&greeting)?.minor;
            let _ = src.split_to(GREETING_LEN);
            self.state = State::Ready;
        }
        match self.state {
            State::Ready => {}
            State::Greeting | State::Finished => {
                return Err(HandshakeError::Unexpected(
                    "input after the handshake ended",
                ));
            }
        }
        let Some(frame) = self.frames.decode(src)? else {
            return Ok(None);
        };
        if !frame.is_command() {
            return Err(HandshakeError::Unexpected("message frame"));
        }
        match Command::parse(frame.body)? {
            Command::Ready(metadata) => self.accept_ready(metadata).map(Some),
            Command::Error { reason } => Err(HandshakeError::Refused {
                reason: crate::text::printable_lossy(&reason),
            }),
            Command::Ping { .. } => Err(HandshakeError::Unexpected("PING")),
            Command::Pong { .. } => Err(HandshakeError::Unexpected("PONG")),
            _ => Err(HandshakeError::Unexpected("command")),
        }
    }

    fn accept_ready(&self, metadata: Metadata) -> Result<PeerInfo, HandshakeError> {
        let mut socket_type = None;
        let mut identity = None;
        for (name, value) in metadata.iter() {
            let slot = if name.eq_ignore_ascii_case(b"Socket-Type") {
                &mut socket_type
            } else if name.eq_ignore_ascii_case(b"Identity") {
                &mut identity
            } else {
                continue;
            };
            if slot.replace(value.clone()).is_some() {
                return Err(HandshakeError::DuplicateProperty(name.clone()));
            }
        }
        let socket_type = socket_type.ok_or(HandshakeError::MissingSocketType)?;
        if !self.config.socket_type.accepts(&socket_type) {
            return Err(HandshakeError::IncompatibleSocketType(socket_type));
        }
        let identity = identity.unwrap_or_default();
        if identity.len() > 255 {
            return Err(HandshakeError::IdentityTooLong(identity.len()));
        }
        Ok(PeerInfo {
            minor_version: self.minor_version,
            socket_type,
            identity,
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WireError;

    fn ready(props: &[(&str, &[u8])]) -> BytesMut {
        let mut buf = BytesMut::from(&Greeting::encode_null()[..]);
        let mut meta = Metadata::default();
        for (n, v) in props {
            meta.push(n.to_string(), Bytes::copy_from_slice(v));
        }
        Command::Ready(meta).encode(&mut buf);
        buf
    }

    fn run(mut input: BytesMut) -> Result<Option<PeerInfo>, HandshakeError> {
        Handshake::new(HandshakeConfig::default()).handle_bytes(&mut input)
    }

    #[test]
    fn dealer_with_identity_then_data() {
        let mut input = ready(&[("Socket-Type", b"DEALER"), ("Identity", b"player-9")]);
        input.extend_from_slice(&[0x00, 0x01, b'x']);
        let mut hs = Handshake::new(HandshakeConfig::default());
        let info = hs.handle_bytes(&mut input).unwrap().unwrap();
        assert_eq!(&info.identity[..], b"player-9");
        assert_eq!(info.minor_version, 1);
        assert_eq!(&input[..], &[0x00, 0x01, b'x']);
    }

    #[test]
    fn a_ready_over_the_handshake_frame_limit_is_refused_before_it_is_buffered() {
        let big = vec![b'x'; Limits::MAX_HANDSHAKE_FRAME_LEN as usize];
        let input = ready(&[("Socket-Type", b"DEALER"), ("X-Padding", &big)]);
        // Only the greeting and the READY header are needed to refuse it.
        let header = BytesMut::from(&input[..GREETING_LEN + 9]);
        assert!(matches!(
            run(header),
            Err(HandshakeError::Wire(WireError::FrameTooLarge { .. }))
        ));
    }

    #[test]
    fn a_ready_of_too_many_properties_is_refused() {
        let names: Vec<String> = (0..=Metadata::MAX_PROPERTIES)
            .map(|i| format!("p{i}"))
            .collect();
        let mut props: Vec<(&str, &[u8])> = vec![("Socket-Type", b"DEALER")];
        props.extend(names.iter().map(|n| (n.as_str(), &b""[..])));
        assert!(matches!(
            run(ready(&props)),
            Err(HandshakeError::Wire(WireError::MalformedCommand { .. }))
        ));
        props.truncate(Metadata::MAX_PROPERTIES);
        assert!(
            run(ready(&props)).unwrap().is_some(),
            "256 properties are fine"
        );
    }

    #[test]
    fn every_split_point_completes() {
        let whole = ready(&[("Socket-Type", b"ROUTER"), ("Identity", b"")]);
        for split in 0..whole.len() {
            let mut hs = Handshake::new(HandshakeConfig::default());
            let mut buf = BytesMut::from(&whole[..split]);
            assert_eq!(hs.handle_bytes(&mut buf), Ok(None), "split {split}");
            buf.extend_from_slice(&whole[split..]);
            assert!(
                hs.handle_bytes(&mut buf).unwrap().is_some(),
                "split {split}"
            );
        }
    }

    #[test]
    fn bad_peers_are_refused_with_typed_errors() {
        assert_eq!(
            run(ready(&[("Socket-Type", b"PUB")])),
            Err(HandshakeError::IncompatibleSocketType(Bytes::from_static(
                b"PUB"
            )))
        );
        assert_eq!(
            run(ready(&[("Identity", b"x")])),
            Err(HandshakeError::MissingSocketType)
        );
        assert!(matches!(
            run(ready(&[
                ("Socket-Type", b"DEALER"),
                ("socket-type", b"DEALER")
            ])),
            Err(HandshakeError::DuplicateProperty(_))
        ));
        let mut data_first = BytesMut::from(&Greeting::encode_null()[..]);
        data_first.extend_from_slice(&[0x00, 0x00]);
        assert_eq!(
            run(data_first),
            Err(HandshakeError::Unexpected("message frame"))
        );
        let mut refused = BytesMut::from(&Greeting::encode_null()[..]);
        Command::Error {
            reason: Bytes::from_static(b"go away"),
        }
        .encode(&mut refused);
        assert_eq!(
            run(refused),
            Err(HandshakeError::Refused {
                reason: "go away".into()
            })
        );
        let mut huge = BytesMut::from(&Greeting::encode_null()[..]);
        huge.extend_from_slice(&[0x06]);
        huge.extend_from_slice(&(1u64 << 30).to_be_bytes());
        assert!(matches!(
            run(huge),
            Err(HandshakeError::Wire(WireError::FrameTooLarge { .. }))
        ));
    }

    #[test]
    fn random_bytes_fail_on_the_first_byte() {
        assert_eq!(
            run(BytesMut::from(&b"\x16\x03\x01"[..])),
            Err(HandshakeError::BadSignature {
                offset: 0,
                byte: 0x16
            })
        );
    }

    #[test]
    fn transmit_happens_once() {
        let mut hs = Handshake::new(HandshakeConfig::default());
        let mut out = BytesMut::new();
        assert!(hs.poll_transmit(&mut out));
        assert!(!hs.poll_transmit(&mut out));
        assert_eq!(&out[..GREETING_LEN], &Greeting::encode_null()[..]);
    }
}

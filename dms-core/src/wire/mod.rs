//! ZMTP 3.1 on the wire, without I/O.
//!
//! - [`frame`]: one frame (`flags | size | body`) and [`FrameCodec`];
//! - [`codec`]: [`MessageCodec`], frames assembled into [`Multipart`](crate::Multipart)
//!   messages and commands, with every [`Limits`] enforced before allocation;
//! - [`command`]: command frames (READY, ERROR, PING, PONG) and READY metadata;
//! - [`greeting`]: the fixed 64-byte greeting;
//! - [`handshake`]: the NULL-mechanism handshake as a sans-IO state machine.
//!
//! The codecs follow tokio-util's `Decoder`/`Encoder` contract: `decode` consumes what it
//! can from a `BytesMut` and returns `Ok(None)` when more input is needed; `encode`
//! appends to a `BytesMut`. Transport crates drive them from their own buffers.

pub mod codec;
pub mod command;
pub mod error;
pub mod frame;
pub mod greeting;
pub mod handshake;
pub mod limits;

pub use codec::{Inbound, MessageCodec};
pub use command::{Command, Metadata};
pub use error::{HandshakeError, WireError};
pub use frame::{Frame, FrameCodec, FrameFlags};
pub use greeting::{GREETING_LEN, Greeting};
pub use handshake::{Handshake, HandshakeConfig, PeerInfo, SocketType};
pub use limits::{Limits, LimitsBuilder};

//! The sans-IO core of DMS.
//!
//! Nothing in this crate touches a socket, spawns a task or reads the clock. It holds:
//!
//! - [`wire`]: ZMTP 3.1 framing, the greeting and the NULL-mechanism handshake, and the
//!   frame and message codecs (the same `decode`/`encode` contract as tokio-util's
//!   `Decoder`/`Encoder`, without depending on tokio);
//! - [`Multipart`]: a message of zero-copy [`bytes::Bytes`] frames;
//! - [`MessageMiddleware`]: the one trait every transport (TCP, QUIC, shared memory)
//!   implements, with ZeroMQ ROUTER semantics, and the types it speaks in
//!   ([`Endpoint`], [`PeerId`], [`Incoming`] and their errors);
//! - [`route`]: the routing table of multi-hop forwarding (published links, Dijkstra).
//! - [`acl`]: access-control policies (principals × services × operations, deny first,
//!   default deny) and their text format.
//! - [`trace`]: the W3C trace context (`traceparent`) a request carries.
//!
//! ```
//! use bytes::BytesMut;
//! use dms_core::{Multipart, wire::{Inbound, Limits, MessageCodec}};
//!
//! let mut codec = MessageCodec::new(Limits::default());
//! let mut buf = BytesMut::new();
//! codec.encode(&Multipart::from_frames(["hello", "world"]), &mut buf)?;
//! let Some(Inbound::Message(msg)) = codec.decode(&mut buf)? else { unreachable!() };
//! assert_eq!(msg, Multipart::from_frames(["hello", "world"]));
//! # Ok::<(), dms_core::wire::WireError>(())
//! ```
#![forbid(unsafe_code)]

pub mod acl;
pub mod auth;
pub mod backoff;
pub mod dispatch;
pub mod endpoint;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod middleware;
pub mod multipart;
pub mod path;
pub mod peer_id;
pub mod proto;
pub mod route;
pub mod text;
pub mod trace;
pub mod wire;

pub use auth::{AuthError, Rejection};
pub use backoff::Backoff;
pub use endpoint::{Endpoint, EndpointError};
pub use middleware::{
    Incoming, LinkDownCause, LinkId, MessageMiddleware, MiddlewareError, Role, SendError,
};
pub use multipart::Multipart;
pub use peer_id::PeerId;
pub use route::{RouteError, RoutingTable};

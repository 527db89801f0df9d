//! DMS link commons: the transport-neutral engine of the stream transports.
//!
//! A stream transport (TCP, QUIC, ...) turns connections into byte streams; this crate
//! turns byte streams into ZMTP 3.1 links (NULL mechanism, `Socket-Type: ROUTER`) and
//! does everything a [`MessageMiddleware`](dms_core::MessageMiddleware) does with them:
//! the handshake and identity rule, the registry of live links by peer id, peer slots,
//! the outbox with its urgent lane, the reader and writer tasks, the inbox `recv` takes
//! from, and the counters. It is the pattern of zenoh's `zenoh-link-commons`.
//!
//! A transport keeps what is specific to it: listening and accepting, dialling (and
//! its timeout), socket options, TLS and stream opening, address parsing, and a
//! reconnect supervisor if it has one. Its
//! [`MessageMiddleware`](dms_core::MessageMiddleware) impl forwards to a [`LinkSet`]:
//!
//! * a listener takes a [`HandshakePermit`] ([`LinkSet::begin_handshake`]) for each
//!   connection it accepts, and gives the handshake up when the permit is evicted (too
//!   many handshakes in progress: the oldest gives way);
//! * a listener or dialler takes a [`Slot`] ([`LinkSet::take_slot`]), opens a connection
//!   and hands its two directions to [`LinkSet::establish`], which returns a
//!   [`LinkHandle`] (a failed incoming connection is reported with
//!   [`LinkSet::emit_refused`]); accept loops stop on [`LinkSet::closed`];
//! * `try_send`, `try_send_urgent`, `send`, `recv`, `recv_many` and `pause_reading` are
//!   forwards to the methods of the same name, written once by [`forward_to_links!`];
//!   `disconnect` and `close` usually are too;
//! * the transport closes the set when its last handle goes.
//!
//! The reader and writer are generic over [`tokio::io::AsyncRead`] and
//! [`tokio::io::AsyncWrite`] (a TCP socket's halves, a QUIC stream's two sides, an
//! in-memory pipe). A TLS transport passes the identity its peer's certificate is for as
//! `certified`: a peer announcing anything else is refused with
//! [`AuthError::PathMismatch`](dms_core::AuthError::PathMismatch) here; the refused peer
//! gets a ZMTP ERROR, which a transport may turn into something more telling (QUIC closes
//! the connection with a code that the peer reads as
//! [`Rejection::PathMismatch`](dms_core::Rejection::PathMismatch)).
//!
//! # Hot path
//!
//! A round trip costs what a raw tokio socket's does: per message one `epoll_wait`, one
//! read, one write, and one task poll (the caller's), no hand-over between tasks:
//!
//! * **Receive in the caller's task.** A caller waiting in [`recv`](LinkSet::recv) /
//!   [`recv_many`](LinkSet::recv_many) while nothing is queued reads the link it last
//!   heard from itself: the stream's readiness wakes the caller directly and what it
//!   decodes is returned without passing through the inbox (a `block_on` future woken
//!   by another task would cost the runtime an extra `epoll_wait`; on a multi-thread
//!   runtime the hand-over could wake another thread). Meanwhile that link's reader task
//!   stands down; when the caller's `recv` ends the stream is handed back to it,
//!   re-registered with its waker, without running it. Every other link, and the hot one
//!   whenever nobody waits, is read by its reader task, which decodes every complete
//!   frame of each read (zero-copy slices of the read buffer) and hands a read's worth of
//!   messages to `recv` under one lock and one wake-up. Order is kept per link, `LinkDown`
//!   is always a link's last item.
//! * **Send from the caller's task.** A send encodes the message into the link's output
//!   buffer under a short lock (the link is found under the registry's read lock, in a
//!   foldhash map). If the link is idle (nothing queued, the stream free) and *armed* (a
//!   message arrived on it, or its writer went idle, since the last direct write), the
//!   sender writes the message itself, without waiting: whatever the stream does not take
//!   at once goes to the writer task. A direct write disarms the link, so a burst costs
//!   one extra write at most and then batches: the writer task writes everything queued
//!   since its last round in chunks of at least 256 KiB ending at message boundaries (one
//!   write call per chunk, one flush per round). Heartbeats
//!   ([`try_send_urgent`](LinkSet::try_send_urgent)) go out first and between chunks, so
//!   they wait behind one chunk at most, never behind the whole queue.
//! * **Big messages.** Frame bodies of 16 KiB or more are not copied into the output
//!   buffer: the writer sends them from where they are with vectored writes. On receive,
//!   a frame of at least half a read gets room of exactly its size and is read to its
//!   end, so it is not copied when the buffer grows (about one allocation per 64 KiB
//!   message, sending and receiving together).
//!
//! # Identity rule
//!
//! A peer that announces a non-empty `Identity` in READY is known by it. A peer that
//! announces none gets a generated id (a zero byte and a counter, as libzmq does); a link
//! we connected keeps its generated id across reconnects (the `assigned` argument of
//! [`establish`](LinkSet::establish)). **One live link per identity**: a second
//! connection claiming an identity that has a live link is refused with a ZMTP ERROR
//! command (`duplicate identity`) and closed; the live link is untouched. A peer that
//! restarts with its old identity is accepted as soon as its old link is down.
//!
//! # Example
//!
//! Two sets linked by an in-memory pipe:
//!
//! ```
//! use dms_core::{Endpoint, Incoming, Multipart, Role};
//! use dms_link::{LinkConfig, LinkSet};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = LinkSet::new(LinkConfig::builder().identity("server").build()?);
//! let client = LinkSet::new(LinkConfig::default());
//! let (client_end, server_end) = tokio::io::duplex(64 << 10);
//! let (client_read, client_write) = tokio::io::split(client_end);
//! let (server_read, server_write) = tokio::io::split(server_end);
//! let endpoint: Endpoint = "mem://pipe".parse()?;
//! let (to_server, to_client) = tokio::join!(
//!     client.establish(
//!         client_read, client_write, endpoint.clone(), Role::Connector,
//!         client.take_slot()?, None, None,
//!     ),
//!     server.establish(
//!         server_read, server_write, endpoint, Role::Acceptor,
//!         server.take_slot()?, None, None,
//!     ),
//! );
//! let (to_server, to_client) = (to_server?, to_client?);
//! assert_eq!(to_server.peer().to_string(), "server");
//! assert!(to_client.peer().is_generated()); // the client announced no identity
//!
//! client.send(Multipart::from_frames([to_server.peer().to_frame(), "ping".into()])).await?;
//! loop {
//!     match server.recv().await? {
//!         Incoming::LinkUp { peer, .. } => assert_eq!(&peer, to_client.peer()),
//!         Incoming::Message(msg) => {
//!             assert_eq!(&msg[1][..], b"ping"); // msg[0] is the client's id
//!             break;
//!         }
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! client.close();
//! server.close();
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod config;
mod forward;
mod handshake;
mod handshakes;
mod inbox;
mod link;
mod reader;
mod registry;
mod stats;
mod writer;

pub use config::{ConfigError, LinkConfig, LinkConfigBuilder};
pub use handshakes::HandshakePermit;
pub use registry::{LinkHandle, LinkSet, Slot};
pub use stats::LinkStats;

/// The core crate, for [`forward_to_links!`]'s expansion.
#[doc(hidden)]
pub use dms_core as __dms_core;

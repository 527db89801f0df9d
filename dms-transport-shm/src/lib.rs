//! DMS [`MessageMiddleware`](dms_core::MessageMiddleware) over shared memory between
//! processes on one Linux host.
//!
//! # Mapping
//!
//! A link is two single-producer single-consumer byte rings, one per direction, in one
//! sealed memfd that both processes map ([`ring`](crate) layout below), carrying exactly
//! what a TCP connection carries: the ZMTP 3.1 greeting, the NULL handshake (READY with
//! `Socket-Type: ROUTER` and the `Identity`), then frames, through the same link engine
//! as TCP and QUIC ([`dms_link`]): identity rules, limits, outbox with its urgent lane,
//! backpressure. A message larger than a ring is carried in pieces, under the same
//! limits as on TCP.
//!
//! * **Rendezvous.** A listener on `shm://NAME` listens on the Unix socket `@dms-shm/NAME`
//!   in the abstract namespace: nothing is created in any file system, and the name is
//!   free again as soon as its process dies. Both sides check the other's uid
//!   (`SO_PEERCRED`; by default only the same user). The dialler passes the memfd and a
//!   second socket (`SCM_RIGHTS`); see [`Status`] and the wire layout in the
//!   `rendezvous` module docs.
//! * **Wake-ups.** The reader spins briefly (adaptive, [`ShmConfigBuilder::spin`]) and
//!   then parks on a doorbell socket that the writer rings only when the reader is
//!   parked: idle links burn no CPU, busy links make no syscall per message.
//! * **Death.** The doorbell sockets are the peer's process: when it dies its kernel
//!   closes them and our reader sees the end at once (no heartbeat wait). What it
//!   committed before is read first.
//! * **The other process is hostile.** Every ring position read from shared memory is
//!   checked ([`Corrupt`]); offsets are taken modulo the ring size; the memfd must be
//!   sealed against shrinking before it is mapped (no `SIGBUS`); descriptors are checked
//!   for their type; the bytes are decoded by the bounded ZMTP decoder. A peer that
//!   breaks any of it costs its link only.
//!
//! # Endpoints and hosts
//!
//! Bind `shm://NAME`; the endpoint bound, which a node publishes, is
//! `shm://NAME?host=KEY` where `KEY` names this host's boot and network namespace
//! ([`host_key`]). [`is_local`] tells whether an endpoint is on this host: the kernel
//! dials only those, so a shared-memory endpoint of another host is never dialled.
//!
//! # Example
//!
//! ```
//! use dms_core::{Incoming, MessageMiddleware, Multipart};
//! use dms_transport_shm::{ShmConfig, ShmMiddleware};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let name = format!("doc-{}", std::process::id());
//! let server = ShmMiddleware::new(ShmConfig::builder().identity("battle-1").build()?);
//! let endpoint = server.bind(&format!("shm://{name}").parse()?).await?;
//! assert!(dms_transport_shm::is_local(&endpoint));
//! let client = ShmMiddleware::new(ShmConfig::default());
//! let server_id = client.connect(&endpoint).await?;
//! assert_eq!(server_id.to_string(), "battle-1");
//!
//! client.send(Multipart::from_frames([server_id.to_frame(), "ping".into()])).await?;
//! loop {
//!     if let Incoming::Message(msg) = server.recv().await? {
//!         assert_eq!(&msg[1][..], b"ping"); // msg[0] is the client's (generated) id
//!         break;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![cfg(target_os = "linux")]
// A loom build holds the ring for its model checks only: outside them nothing uses it.
#![cfg_attr(dms_loom, allow(dead_code))]

// Under `--cfg dms_loom` (the ring's model checks) only the ring and its atomics are
// built: there is no shared memory, socket or runtime inside a loom model.
#[cfg(not(dms_loom))]
mod address;
#[cfg(not(dms_loom))]
mod bells;
#[cfg(not(dms_loom))]
mod config;
#[cfg(not(dms_loom))]
mod middleware;
#[cfg(not(dms_loom))]
mod region;
#[cfg(not(dms_loom))]
mod rendezvous;
mod ring;
#[cfg(not(dms_loom))]
mod stream;
mod sync;

#[cfg(not(dms_loom))]
pub use address::{MAX_NAME_LEN, host_key, is_local};
#[cfg(not(dms_loom))]
pub use config::{ShmConfig, ShmConfigBuilder, ShmConfigError};
#[cfg(not(dms_loom))]
pub use middleware::{ShmMiddleware, ShmStats};
#[cfg(not(dms_loom))]
pub use region::RegionError;
#[cfg(not(dms_loom))]
pub use rendezvous::{SetupError, Status};
pub use ring::Corrupt;

/// The URL scheme served.
pub const SCHEME: &str = "shm";

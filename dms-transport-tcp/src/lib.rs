//! DMS [`MessageMiddleware`](dms_core::MessageMiddleware) over TCP.
//!
//! Links speak ZMTP 3.1 with the NULL mechanism and announce `Socket-Type: ROUTER`, so
//! libzmq DEALER, REQ and ROUTER sockets can connect to a DMS endpoint, and DMS can connect
//! to a libzmq ROUTER.
//!
//! # Hot path
//!
//! A send encodes the message straight into the link's output buffer under a short lock;
//! there is no per-message channel hop. The link's writer task is woken only when the
//! buffer goes from empty to non-empty, and then writes everything queued since, in
//! chunks of at least 256 KiB ending at message boundaries (one syscall per chunk, or per
//! buffer when less is queued): an idle link costs one wake-up of a task on the same
//! worker thread, a busy link batches many messages per write. Heartbeats
//! ([`try_send_urgent`](dms_core::MessageMiddleware::try_send_urgent)) go out first and
//! between chunks, so they wait behind one chunk at most, never behind the whole queue.
//! The reader decodes every complete frame of each read, handing out zero-copy slices of
//! the read buffer, and hands a read's worth of messages to `recv` under one lock and one
//! wake-up ([`recv_many`](dms_core::MessageMiddleware::recv_many) takes them the same way).
//!
//! # Identity rule
//!
//! A peer that announces a non-empty `Identity` in READY is known by it. A peer that
//! announces none gets a generated id (a zero byte and a counter, as libzmq does); a link
//! we connected keeps its generated id across reconnects. **One live link per identity**:
//! a second connection claiming an identity that has a live link is refused with a ZMTP
//! ERROR command (`duplicate identity`) and closed; the live link is untouched. A peer that
//! restarts with its old identity is accepted as soon as its old link is down.
//!
//! # Example
//!
//! ```
//! use dms_core::{Incoming, MessageMiddleware, Multipart};
//! use dms_transport_tcp::{TcpConfig, TcpMiddleware};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TcpMiddleware::new(TcpConfig::builder().identity("server").build()?);
//! let endpoint = server.bind(&"tcp://127.0.0.1:0".parse()?).await?;
//! let client = TcpMiddleware::new(TcpConfig::default());
//! let server_id = client.connect(&endpoint).await?;
//! assert_eq!(server_id.to_string(), "server");
//!
//! client.send(Multipart::from_frames([server_id.to_frame(), "ping".into()])).await?;
//! loop {
//!     if let Incoming::Message(msg) = server.recv().await? {
//!         assert_eq!(&msg[1][..], b"ping"); // msg[0] is the client's id
//!         break;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod address;
mod config;
mod connection;
mod inbox;
mod link;
mod middleware;
mod stats;

pub use config::{ConfigError, TcpConfig, TcpConfigBuilder};
pub use middleware::TcpMiddleware;
pub use stats::TcpStats;

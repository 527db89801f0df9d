//! DMS [`MessageMiddleware`](dms_core::MessageMiddleware) over TCP.
//!
//! Links speak ZMTP 3.1 with the NULL mechanism and announce `Socket-Type: ROUTER`, so
//! libzmq DEALER, REQ and ROUTER sockets can connect to a DMS endpoint, and DMS can connect
//! to a libzmq ROUTER.
//!
//! # Hot path
//!
//! The link engine is [`dms_link`], shared with the other stream transports: this crate
//! keeps the listener, dialling (bounded by the handshake timeout), `TCP_NODELAY`,
//! address parsing and the reconnect supervisor, and hands each connection's two halves
//! to [`dms_link::LinkSet::establish`]. A send encodes straight into the link's output
//! buffer, with no per-message channel hop; the writer batches what is queued into
//! chunked writes with heartbeats between chunks, and the reader hands a read's worth of
//! messages to `recv` at once. The [`dms_link` crate docs](dms_link#hot-path) describe
//! it in full.
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
mod middleware;
mod state;

pub use config::{TcpConfig, TcpConfigBuilder};
pub use dms_link::ConfigError;
pub use middleware::TcpMiddleware;

/// Counters of what a [`TcpMiddleware`] refused or lost, so that no drop is silent (the
/// link engine's [`LinkStats`](dms_link::LinkStats)).
pub type TcpStats = dms_link::LinkStats;

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
//! # TLS (`tcp+tls://`, feature `tls`)
//!
//! A middleware configured with [`TcpConfigBuilder::tls`] serves the scheme `tcp+tls`
//! instead: each connection runs a TLS 1.3 handshake first (rustls, mutual: both sides
//! present a certificate their peer's CA signed, ALPN `dms/1`), then exactly the ZMTP
//! greeting, handshake and frames of plain TCP inside it. The certificates carry the
//! service path as a `dms:` URI SAN, and the identity a peer announces in READY must be
//! its certificate's path, the same rule as QUIC's ([`dms_tls`] holds the shared code):
//! otherwise the link is refused with
//! [`AuthError::PathMismatch`](dms_core::AuthError::PathMismatch) (and
//! [`Rejection::PathMismatch`](dms_core::Rejection::PathMismatch) on the other side). The
//! acceptor checks the dialler's READY before it sends its own greeting; on a refusal it
//! sends its greeting and a ZMTP `ERROR`, never a READY.
//!
//! A `tcp+tls` listener never accepts plaintext: a connection that does not start with a
//! TLS handshake record (a ZMTP greeting, say) is closed before anything is read, and
//! reported as [`Incoming::Refused`](dms_core::Incoming::Refused) with
//! [`AuthError::NotTls`](dms_core::AuthError::NotTls) and counted
//! ([`TlsStats::plaintext_refused`]); a TLS dialler meeting a plaintext server fails with
//! `NotTls` too. The handshake timeout covers TLS and ZMTP together. A plain `tcp`
//! middleware is untouched by the feature: its streams are the TCP socket's halves.
//!
//! [`TlsConfig`] has an example (built with the feature only).
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
#[cfg(feature = "tls")]
mod tls;

pub use config::{TcpConfig, TcpConfigBuilder};
pub use dms_link::ConfigError;
pub use middleware::TcpMiddleware;
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsStats};

/// Counters of what a [`TcpMiddleware`] refused or lost, so that no drop is silent (the
/// link engine's [`LinkStats`](dms_link::LinkStats)).
pub type TcpStats = dms_link::LinkStats;

//! DMS [`MessageMiddleware`](dms_core::MessageMiddleware) over QUIC (quinn), with mutual
//! TLS 1.3 and the link identity bound to the certificate.
//!
//! # Mapping
//!
//! One QUIC connection per link, and in it **one bidirectional stream**, opened by the
//! dialler, that carries exactly what a TCP connection carries: the ZMTP 3.1 greeting,
//! the NULL handshake (READY with `Socket-Type: ROUTER` and the `Identity`), then frames.
//! One ordered stream keeps every message of a link in order, as on TCP; a lost packet
//! delays that link only, never another link (each is its own connection). Heartbeats
//! take the link's urgent lane ([`dms_link`]): they go out before queued data, between
//! chunks of at most 256 KiB. The dialler may open one bidirectional stream and no
//! unidirectional ones; the acceptor may open none (transport parameters), so a peer
//! cannot make us hold streams.
//!
//! # Identity
//!
//! Both sides present a certificate signed by the CA they share; it carries the node's
//! service path as a URI SAN (`dms:/App/Area/...`, see [`dms_tls`]). The identity a peer
//! announces in READY must be that path, or the link is refused
//! ([`AuthError::PathMismatch`](dms_core::AuthError::PathMismatch) here,
//! [`Rejection::PathMismatch`](dms_core::Rejection::PathMismatch) on the peer, from the
//! application close code [`codes::PATH_MISMATCH`]). The acceptor checks the dialler's
//! READY before it sends its own, so a dialler refused for its identity never sees its
//! link up. The DNS name is not checked: a node is named by its path. ALPN is `dms/1`.
//!
//! # Bounds
//!
//! Receive windows (2 MiB per stream and per connection by default), one stream per
//! connection, at most `max_handshakes` unfinished handshakes (default 256; more are
//! refused at once), a Retry round trip for unvalidated clients above `retry_above`
//! handshakes in progress (default 32), 64 KiB buffered per incoming connection before it
//! is accepted, and the link bounds of [`dms_link::LinkConfig`] (peers, queues, frame and
//! message sizes). The idle timeout follows the DMS heartbeat
//! ([`QuicConfigBuilder::liveness`]), so QUIC and DMS agree on when a peer is dead.
//!
//! # Example
//!
//! ```
//! use dms_core::{Incoming, MessageMiddleware, Multipart};
//! use dms_transport_quic::{QuicConfig, QuicMiddleware};
//! use dms_tls::TlsIdentity;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("dms-doc-quic-{}", std::process::id()));
//! // Development certificates (never in production): a CA in `dir`, one leaf per path.
//! let server_tls = TlsIdentity::dev(&dir, &"/demo/cn/android/w1/g1/Battle/battle-1".parse()?)?;
//! let client_tls = TlsIdentity::dev(&dir, &"/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)?;
//! let server = QuicMiddleware::new(QuicConfig::builder(server_tls).build()?)?;
//! let endpoint = server.bind(&"quic://127.0.0.1:0".parse()?).await?;
//! let client = QuicMiddleware::new(QuicConfig::builder(client_tls).build()?)?;
//! let server_id = client.connect(&endpoint).await?;
//! assert_eq!(server_id.to_string(), "/demo/cn/android/w1/g1/Battle/battle-1");
//!
//! client.send(Multipart::from_frames([server_id.to_frame(), "ping".into()])).await?;
//! loop {
//!     if let Incoming::Message(msg) = server.recv().await? {
//!         assert_eq!(&msg[1][..], b"ping"); // msg[0] is the client's certified path
//!         break;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod close;
mod config;
mod middleware;

pub use close::codes;
pub use config::{QuicConfig, QuicConfigBuilder, QuicConfigError};
pub use middleware::{QuicMiddleware, QuicStats};

/// The URL scheme served.
pub const SCHEME: &str = "quic";

/// The ALPN protocol of DMS over QUIC, version 1 ([`dms_tls::ALPN`], shared with
/// TCP+TLS).
pub const ALPN: &[u8] = dms_tls::ALPN;

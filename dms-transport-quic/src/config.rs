//! [`QuicConfig`]: credentials, bounds and liveness of a QUIC middleware.

use std::sync::Arc;
use std::time::Duration;

use dms_core::PeerId;
use dms_core::wire::Limits;
use dms_link::{LinkConfig, LinkConfigBuilder};
use dms_tls::TlsIdentity;

/// Configuration of a [`QuicMiddleware`](crate::QuicMiddleware). Every bound has a safe
/// default; quinn's own defaults (100 concurrent streams, 65,536 unfinished handshakes,
/// 10 MiB buffered per incoming connection, a 30 s idle timeout) are replaced by bounds
/// sized for a hostile peer.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use dms_transport_quic::QuicConfig;
/// # let dir = std::env::temp_dir().join(format!("dms-doc-quic-config-{}", std::process::id()));
/// let path = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
/// let tls = dms_tls::TlsIdentity::dev(&dir, &path)?; // development only
/// let config = QuicConfig::builder(tls)
///     .max_peers(256)
///     .liveness(Duration::from_millis(200), 3) // DMS heartbeats: 200 ms x 3
///     .build()?;
/// assert_eq!(config.idle_timeout(), Duration::from_millis(700));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct QuicConfig {
    pub(crate) link: LinkConfig,
    pub(crate) tls: Arc<TlsIdentity>,
    pub(crate) idle_timeout: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) stream_window: u32,
    pub(crate) connection_window: u32,
    pub(crate) send_window: u64,
    pub(crate) max_handshakes: usize,
    pub(crate) retry_above: usize,
    pub(crate) incoming_buffer: u64,
}

/// A QUIC configuration value is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicConfigError {
    /// A link setting (identity, limits) is invalid.
    #[error(transparent)]
    Link(#[from] dms_link::ConfigError),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] dms_tls::TlsConfigError),
    /// quinn refused the TLS configuration (it needs TLS 1.3).
    #[error("quinn refused the TLS configuration: {0}")]
    Quinn(String),
}

impl QuicConfig {
    /// Default idle timeout when no liveness is set: 3 s (DMS's default heartbeat 1 s × 3).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
    /// Default per-stream receive window: 2 MiB.
    pub const DEFAULT_STREAM_WINDOW: u32 = 2 << 20;
    /// Default unfinished handshakes at once: 256 (beyond, new connections are refused).
    pub const DEFAULT_MAX_HANDSHAKES: usize = 256;
    /// Default count of unfinished handshakes above which a client must prove its address
    /// with a Retry round trip first: 32.
    pub const DEFAULT_RETRY_ABOVE: usize = 32;

    /// A builder starting from the defaults, with our TLS identity (certificate, key, CA).
    /// The link identity announced to peers is the certificate's service path.
    pub fn builder(tls: TlsIdentity) -> QuicConfigBuilder {
        QuicConfigBuilder {
            link: LinkConfig::builder(),
            identity: None,
            tls,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            keep_alive: None,
            stream_window: Self::DEFAULT_STREAM_WINDOW,
            max_handshakes: Self::DEFAULT_MAX_HANDSHAKES,
            retry_above: Self::DEFAULT_RETRY_ABOVE,
            incoming_buffer: 64 << 10,
        }
    }

    /// The link settings (identity, limits, queues).
    pub fn link(&self) -> &LinkConfig {
        &self.link
    }

    /// Our TLS identity.
    pub fn tls(&self) -> &TlsIdentity {
        &self.tls
    }

    /// How long a connection may stay silent before QUIC closes it.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// How often QUIC sends a keep-alive on a connection that has nothing else to send.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }
}

/// Builds a [`QuicConfig`].
#[derive(Debug, Clone)]
pub struct QuicConfigBuilder {
    link: LinkConfigBuilder,
    identity: Option<PeerId>,
    tls: TlsIdentity,
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    stream_window: u32,
    max_handshakes: usize,
    retry_above: usize,
    incoming_buffer: u64,
}

impl QuicConfigBuilder {
    /// The identity announced in READY (default: the certificate's service path). Peers
    /// refuse a link whose announced identity is not the certificate's path
    /// ([`AuthError::PathMismatch`](dms_core::AuthError::PathMismatch)); set it only to
    /// test that.
    pub fn identity(mut self, identity: PeerId) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Wire limits (frame, message, frame count, handshake timeout).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.link = self.link.limits(limits);
        self
    }

    /// Most links at once, handshaking ones included (default 10,000).
    pub fn max_peers(mut self, max: usize) -> Self {
        self.link = self.link.max_peers(max);
        self
    }

    /// Bytes a link queues before sends are pushed back (default 8 MiB).
    pub fn link_queue_bytes(mut self, bytes: usize) -> Self {
        self.link = self.link.link_queue_bytes(bytes);
        self
    }

    /// Messages and events waiting for `recv` before readers stop reading (default 4,096).
    pub fn inbound_queue(mut self, items: usize) -> Self {
        self.link = self.link.inbound_queue(items);
        self
    }

    /// Longest `disconnect` waits for a link to flush (default 5 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.link = self.link.drain_timeout(timeout);
        self
    }

    /// Derives QUIC's liveness from DMS heartbeats of `interval` × `missed`: the idle
    /// timeout is `interval × missed + interval / 2` (DMS's verdict comes first on the
    /// side that pings; QUIC closes a dead peer's connection half an interval later on the
    /// side that only answers), and keep-alives go out every `interval`, so a live but
    /// quiet connection never idles out, whatever heartbeat the peer uses.
    pub fn liveness(mut self, interval: Duration, missed: u32) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        self.idle_timeout = interval
            .saturating_mul(missed.max(1))
            .saturating_add(interval / 2);
        self.keep_alive = Some(interval);
        self
    }

    /// QUIC idle timeout (default 3 s); keep-alives default to a third of it.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// Receive window of the link's stream (default 2 MiB; the connection's is the same,
    /// the send window twice it). Bounds what a peer can make us buffer.
    pub fn receive_window(mut self, bytes: u32) -> Self {
        self.stream_window = bytes.max(16 << 10);
        self
    }

    /// Most unfinished handshakes at once (default 256); beyond, new connections are
    /// refused at once.
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// Unfinished handshakes above which a client that has not proven its address gets a
    /// Retry first (default 32): under a flood of spoofed Initials the server spends one
    /// stateless packet each, not a connection state.
    pub fn retry_above(mut self, handshakes: usize) -> Self {
        self.retry_above = handshakes;
        self
    }

    /// The configuration.
    pub fn build(self) -> Result<QuicConfig, QuicConfigError> {
        let identity = self.identity.unwrap_or_else(|| self.tls.path().peer_id());
        let link = self.link.identity(identity.to_frame()).build()?;
        let keep_alive = self.keep_alive.unwrap_or(self.idle_timeout / 3);
        Ok(QuicConfig {
            link,
            tls: Arc::new(self.tls),
            idle_timeout: self.idle_timeout,
            keep_alive: keep_alive.min(self.idle_timeout / 2),
            stream_window: self.stream_window,
            connection_window: self.stream_window,
            send_window: u64::from(self.stream_window) * 2,
            max_handshakes: self.max_handshakes,
            retry_above: self.retry_above.min(self.max_handshakes),
            incoming_buffer: self.incoming_buffer,
        })
    }
}

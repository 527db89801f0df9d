//! [`TcpConfig`]: limits, queues and reconnect policy of a TCP middleware.

use std::time::Duration;

use dms_core::PeerId;
use dms_core::wire::Limits;
use dms_link::{ConfigError, LinkConfig, LinkConfigBuilder};

/// Configuration of a [`TcpMiddleware`](crate::TcpMiddleware). Every bound has a safe
/// default. It is a [`LinkConfig`] (what the link engine needs) plus the TCP-only
/// reconnect policy.
///
/// ```
/// use std::time::Duration;
/// use dms_core::wire::Limits;
/// use dms_transport_tcp::TcpConfig;
///
/// let config = TcpConfig::builder()
///     .identity("battle-3")
///     .max_peers(64)
///     .max_handshakes(32)
///     .link_queue_bytes(1 << 20)
///     .limits(Limits::builder().max_frame_len(1 << 20).build())
///     .reconnect(Duration::from_millis(50), Duration::from_secs(2))
///     .build()?;
/// assert_eq!(config.max_peers(), 64);
/// # Ok::<(), dms_transport_tcp::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub(crate) link: LinkConfig,
    pub(crate) reconnect_initial: Duration,
    pub(crate) reconnect_cap: Duration,
    pub(crate) redial: bool,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::TlsConfig>,
}

impl TcpConfig {
    /// Default peer limit: 10,000 links (handshaking ones included).
    pub const DEFAULT_MAX_PEERS: usize = LinkConfig::DEFAULT_MAX_PEERS;
    /// Default accepted connections handshaking at once: 256 (beyond, a new connection
    /// is closed as soon as it is accepted).
    pub const DEFAULT_MAX_HANDSHAKES: usize = LinkConfig::DEFAULT_MAX_HANDSHAKES;
    /// Default bytes queued per link before sends see `Full`: 8 MiB.
    pub const DEFAULT_LINK_QUEUE_BYTES: usize = LinkConfig::DEFAULT_LINK_QUEUE_BYTES;
    /// Default inbound queue (messages and events waiting for `recv`): 4,096.
    pub const DEFAULT_INBOUND_QUEUE: usize = LinkConfig::DEFAULT_INBOUND_QUEUE;
    /// Default read size: 64 KiB.
    pub const DEFAULT_READ_BUFFER: usize = LinkConfig::DEFAULT_READ_BUFFER;

    /// A builder starting from the defaults.
    pub fn builder() -> TcpConfigBuilder {
        let defaults = Self::default();
        TcpConfigBuilder {
            link: LinkConfig::builder(),
            reconnect_initial: defaults.reconnect_initial,
            reconnect_cap: defaults.reconnect_cap,
            redial: defaults.redial,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            identity_set: false,
        }
    }

    /// Our identity, announced in READY (`None`: peers name us themselves).
    pub fn identity(&self) -> Option<&PeerId> {
        self.link.identity()
    }

    /// Limits on what peers send (and on what we send them).
    pub fn limits(&self) -> &Limits {
        self.link.limits()
    }

    /// Most links at once, handshaking ones included.
    pub fn max_peers(&self) -> usize {
        self.link.max_peers()
    }

    /// Most accepted connections whose handshake (TLS and ZMTP) is unfinished at once.
    pub fn max_handshakes(&self) -> usize {
        self.link.max_handshakes()
    }

    /// Bytes a link queues before `try_send` returns `Full` and `send` waits.
    pub fn link_queue_bytes(&self) -> usize {
        self.link.link_queue_bytes()
    }

    /// Whether connected links are dialled again when they drop.
    pub fn redials(&self) -> bool {
        self.redial
    }

    /// The link engine's part of the configuration.
    pub fn link(&self) -> &LinkConfig {
        &self.link
    }

    /// The URL scheme a middleware with this configuration serves: `tcp`, or `tcp+tls`
    /// when [`TcpConfigBuilder::tls`] was set (such a middleware binds and dials
    /// `tcp+tls://` endpoints only, and never speaks plaintext).
    pub fn scheme(&self) -> &'static str {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return crate::address::SCHEME_TLS;
        }
        crate::address::SCHEME
    }

    /// The TLS settings, when this is a `tcp+tls` configuration (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&crate::TlsConfig> {
        self.tls.as_ref()
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            link: LinkConfig::default(),
            reconnect_initial: Duration::from_millis(100),
            reconnect_cap: Duration::from_secs(5),
            redial: true,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Builds a [`TcpConfig`].
#[derive(Debug, Clone)]
pub struct TcpConfigBuilder {
    link: LinkConfigBuilder,
    reconnect_initial: Duration,
    reconnect_cap: Duration,
    redial: bool,
    #[cfg(feature = "tls")]
    tls: Option<crate::TlsConfig>,
    #[cfg(feature = "tls")]
    identity_set: bool,
}

impl TcpConfigBuilder {
    /// Our identity (1..=255 bytes, not starting with a zero byte). With
    /// [`tls`](Self::tls) it defaults to the certificate's service path, and peers refuse
    /// any other ([`AuthError::PathMismatch`](dms_core::AuthError::PathMismatch)): set it
    /// then only to test that.
    pub fn identity(mut self, identity: impl Into<bytes::Bytes>) -> Self {
        self.link = self.link.identity(identity);
        #[cfg(feature = "tls")]
        {
            self.identity_set = true;
        }
        self
    }

    /// Turns this into a `tcp+tls` configuration (feature `tls`): mutual TLS 1.3 on every
    /// link, the ZMTP handshake inside it, the link identity bound to the certificate's
    /// service path (see [`TlsConfig`](crate::TlsConfig)). The middleware then serves the
    /// scheme `tcp+tls` only: its listeners refuse plaintext, its dials speak TLS.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use dms_transport_tcp::{TcpConfig, TlsConfig};
    /// # let dir = std::env::temp_dir().join(format!("dms-doc-tcp-tls-config-{}", std::process::id()));
    /// let path = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
    /// let tls = dms_tls::TlsIdentity::dev(&dir, &path)?; // development only
    /// let config = TcpConfig::builder().tls(TlsConfig::new(tls)?).build()?;
    /// assert_eq!(config.scheme(), "tcp+tls");
    /// assert_eq!(config.identity().map(ToString::to_string).as_deref(), Some(path.as_str()));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Wire limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.link = self.link.limits(limits);
        self
    }

    /// Most links at once, handshaking ones included (default 10,000; at least 1). A
    /// connection accepted beyond it is closed at once and reported as
    /// [`Incoming::Refused`](dms_core::Incoming::Refused) with
    /// [`PeerLimit`](dms_core::MiddlewareError::PeerLimit) (counted in
    /// [`peer_limit_refusals`](crate::TcpStats::peer_limit_refusals)).
    pub fn max_peers(mut self, max: usize) -> Self {
        self.link = self.link.max_peers(max);
        self
    }

    /// Most accepted connections whose handshake (TLS and ZMTP) is unfinished at once
    /// (default 256; at least 1). Beyond it the oldest unfinished handshake is closed to
    /// make room for the newcomer, and counted in
    /// [`handshakes_evicted`](crate::TcpStats::handshakes_evicted); the handshakes in
    /// progress are [`pending_handshakes`](crate::TcpStats::pending_handshakes). Each
    /// handshake ends within the handshake timeout
    /// ([`Limits::handshake_timeout`], default 5 s) however its peer dribbles bytes, so
    /// a slowloris holds a place that long at most.
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.link = self.link.max_handshakes(max);
        self
    }

    /// Bytes a link queues before sends are pushed back (at least 1).
    pub fn link_queue_bytes(mut self, bytes: usize) -> Self {
        self.link = self.link.link_queue_bytes(bytes);
        self
    }

    /// Messages and events waiting for `recv` before readers stop reading (at least 1).
    pub fn inbound_queue(mut self, items: usize) -> Self {
        self.link = self.link.inbound_queue(items);
        self
    }

    /// Bytes read per syscall (at least 4 KiB).
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.link = self.link.read_buffer(bytes);
        self
    }

    /// Reconnect backoff of connected links: first delay ceiling and cap.
    pub fn reconnect(mut self, initial: Duration, cap: Duration) -> Self {
        self.reconnect_initial = initial;
        self.reconnect_cap = cap.max(initial);
        self
    }

    /// Whether a link opened by [`connect`](dms_core::MessageMiddleware::connect) is
    /// dialled again when it drops (default: yes, as libzmq does). A caller that owns
    /// redialling, like the DMS kernel, turns it off: one reconnect policy, not two.
    pub fn redial(mut self, redial: bool) -> Self {
        self.redial = redial;
        self
    }

    /// Longest `disconnect` waits for a link to flush (5 s): a peer that does not read
    /// cannot hold a link, its slot and its identity forever; what is left is dropped and
    /// counted.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.link = self.link.drain_timeout(timeout);
        self
    }

    /// The configuration.
    pub fn build(self) -> Result<TcpConfig, ConfigError> {
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut link = self.link;
        #[cfg(feature = "tls")]
        if let (Some(tls), false) = (&self.tls, self.identity_set) {
            link = link.identity(tls.identity().path().peer_id().to_frame());
        }
        Ok(TcpConfig {
            link: link.build()?,
            reconnect_initial: self.reconnect_initial,
            reconnect_cap: self.reconnect_cap,
            redial: self.redial,
            #[cfg(feature = "tls")]
            tls: self.tls,
        })
    }
}

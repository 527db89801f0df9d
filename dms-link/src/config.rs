//! [`LinkConfig`]: identity, limits and queues of a [`LinkSet`](crate::LinkSet).

use std::time::Duration;

use dms_core::PeerId;
use dms_core::peer_id::PeerIdError;
use dms_core::wire::Limits;
use tokio::sync::Semaphore;

/// Configuration of a [`LinkSet`](crate::LinkSet): what every stream transport shares
/// (a transport's own configuration, such as `TcpConfig`, holds one of these plus its
/// own fields). Every bound has a safe default.
///
/// ```
/// use dms_core::wire::Limits;
/// use dms_link::LinkConfig;
///
/// let config = LinkConfig::builder()
///     .identity("battle-3")
///     .max_peers(64)
///     .max_handshakes(32)
///     .link_queue_bytes(1 << 20)
///     .limits(Limits::builder().max_frame_len(1 << 20).build())
///     .build()?;
/// assert_eq!(config.max_peers(), 64);
/// assert_eq!(config.max_handshakes(), 32);
/// # Ok::<(), dms_link::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub(crate) identity: Option<PeerId>,
    pub(crate) limits: Limits,
    pub(crate) max_peers: usize,
    pub(crate) max_handshakes: usize,
    pub(crate) link_queue_bytes: usize,
    pub(crate) inbound_queue: usize,
    pub(crate) read_buffer: usize,
    pub(crate) drain_timeout: Duration,
}

/// A configuration value is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The identity is not a valid peer id.
    #[error("invalid identity: {0}")]
    Identity(#[from] PeerIdError),
    /// Generated ids start with a zero byte; a configured identity must not.
    #[error("a configured identity must not start with a zero byte")]
    ReservedIdentity,
}

impl LinkConfig {
    /// Default peer limit: 10,000 links (handshaking ones included).
    pub const DEFAULT_MAX_PEERS: usize = 10_000;
    /// Default incoming connections handshaking at once: 256 (beyond, a new connection is
    /// closed as soon as it is accepted; see [`LinkConfigBuilder::max_handshakes`]).
    pub const DEFAULT_MAX_HANDSHAKES: usize = 256;
    /// Default bytes queued per link before sends see `Full`: 8 MiB.
    pub const DEFAULT_LINK_QUEUE_BYTES: usize = 8 << 20;
    /// Default inbound queue (messages and events waiting for `recv`): 4,096.
    pub const DEFAULT_INBOUND_QUEUE: usize = 4096;
    /// Default largest read size: 64 KiB.
    pub const DEFAULT_READ_BUFFER: usize = 64 << 10;
    /// Default longest wait of `disconnect` for a link to flush: 5 s.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

    /// A builder starting from the defaults.
    pub fn builder() -> LinkConfigBuilder {
        LinkConfigBuilder {
            config: Self::default(),
            identity: None,
        }
    }

    /// Our identity, announced in READY (`None`: peers name us themselves).
    pub fn identity(&self) -> Option<&PeerId> {
        self.identity.as_ref()
    }

    /// Limits on what peers send (and on what we send them).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Most links at once, handshaking ones included.
    pub fn max_peers(&self) -> usize {
        self.max_peers
    }

    /// Most incoming connections whose handshake is unfinished at once.
    pub fn max_handshakes(&self) -> usize {
        self.max_handshakes
    }

    /// Bytes a link queues before `try_send` returns `Full` and `send` waits.
    pub fn link_queue_bytes(&self) -> usize {
        self.link_queue_bytes
    }

    /// Messages and events waiting for `recv` before readers stop reading.
    pub fn inbound_queue(&self) -> usize {
        self.inbound_queue
    }

    /// Bytes read per read call at most: a link's reads start at this size, shrink to
    /// 8 KiB (or this, if smaller) while the link is quiet and grow back while reads
    /// come back full.
    pub fn read_buffer(&self) -> usize {
        self.read_buffer
    }

    /// Longest `disconnect` waits for a link to flush.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            identity: None,
            limits: Limits::default(),
            max_peers: Self::DEFAULT_MAX_PEERS,
            max_handshakes: Self::DEFAULT_MAX_HANDSHAKES,
            link_queue_bytes: Self::DEFAULT_LINK_QUEUE_BYTES,
            inbound_queue: Self::DEFAULT_INBOUND_QUEUE,
            read_buffer: Self::DEFAULT_READ_BUFFER,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Builds a [`LinkConfig`].
#[derive(Debug, Clone)]
pub struct LinkConfigBuilder {
    config: LinkConfig,
    identity: Option<bytes::Bytes>,
}

impl LinkConfigBuilder {
    /// Our identity (1..=255 bytes, not starting with a zero byte).
    pub fn identity(mut self, identity: impl Into<bytes::Bytes>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// Wire limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Most links at once, handshaking ones included (default 10,000; at least 1, at
    /// most [`Semaphore::MAX_PERMITS`]).
    pub fn max_peers(mut self, max: usize) -> Self {
        self.config.max_peers = max.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Most incoming connections whose handshake is unfinished at once (default 256; at
    /// least 1, at most [`Semaphore::MAX_PERMITS`]). A transport's listener takes a place
    /// with [`LinkSet::begin_handshake`](crate::LinkSet::begin_handshake) for each
    /// accepted connection; beyond the bound the oldest unfinished handshake is closed to
    /// make room, and counted
    /// ([`handshakes_evicted`](crate::LinkStats::handshakes_evicted)). A peer that
    /// dribbles its greeting holds its place for the handshake timeout at most, and less
    /// while newer connections keep coming. Links we dial are not counted (they are
    /// bounded by [`max_peers`](Self::max_peers)).
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.config.max_handshakes = max.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Bytes a link queues before sends are pushed back (at least 1).
    pub fn link_queue_bytes(mut self, bytes: usize) -> Self {
        self.config.link_queue_bytes = bytes.max(1);
        self
    }

    /// Messages and events waiting for `recv` before readers stop reading (at least 1).
    pub fn inbound_queue(mut self, items: usize) -> Self {
        self.config.inbound_queue = items.max(1);
        self
    }

    /// Bytes read per syscall at most (at least 4 KiB): a busy link reads this much, a
    /// quiet link's reads shrink to 8 KiB, so a quiet link keeps 8 KiB of buffer
    /// touched, not this much.
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.config.read_buffer = bytes.max(4096);
        self
    }

    /// Longest `disconnect` waits for a link to flush (5 s): a peer that does not read
    /// cannot hold a link, its slot and its identity forever; what is left is dropped and
    /// counted.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// The configuration.
    pub fn build(mut self) -> Result<LinkConfig, ConfigError> {
        if let Some(identity) = self.identity.take() {
            let id = PeerId::new(identity)?;
            if id.is_generated() {
                return Err(ConfigError::ReservedIdentity);
            }
            self.config.identity = Some(id);
        }
        Ok(self.config)
    }
}

//! [`ShmConfig`]: the link bounds shared with every stream transport, plus the rings'
//! sizes, the reader's spin and who may connect.

use std::time::Duration;

use dms_core::wire::Limits;
use dms_link::{ConfigError, LinkConfig, LinkConfigBuilder};

use crate::region::MIN_RING;

/// Configuration of a [`ShmMiddleware`](crate::ShmMiddleware). Every bound has a safe
/// default.
///
/// ```
/// use std::time::Duration;
/// use dms_transport_shm::ShmConfig;
///
/// let config = ShmConfig::builder()
///     .identity("battle-3")
///     .ring_bytes(4 << 20)
///     .spin(Duration::ZERO) // park at once: no CPU spent waiting
///     .build()?;
/// assert_eq!(config.ring_bytes(), 4 << 20);
/// # Ok::<(), dms_transport_shm::ShmConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ShmConfig {
    pub(crate) link: LinkConfig,
    pub(crate) ring_bytes: usize,
    pub(crate) max_ring_bytes: usize,
    pub(crate) spin: Duration,
    pub(crate) allow_uids: Vec<u32>,
}

/// A configuration value is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShmConfigError {
    /// A link setting is invalid.
    #[error(transparent)]
    Link(#[from] ConfigError),
    /// A ring size is not a power of two from 4 KiB to the largest ring accepted.
    #[error("ring size {bytes} is not a power of two from 4096 to {max}")]
    RingBytes {
        /// The size asked for.
        bytes: usize,
        /// The largest ring accepted.
        max: usize,
    },
}

impl ShmConfig {
    /// Default bytes of each of a link's two rings: 1 MiB.
    pub const DEFAULT_RING_BYTES: usize = 1 << 20;
    /// Default largest ring a dialler may ask for: 16 MiB. A link holds at most its
    /// outbox ([`ShmConfigBuilder::link_queue_bytes`]) and its outgoing ring of our
    /// memory, so this bounds what a peer that never reads can make us hold.
    pub const DEFAULT_MAX_RING_BYTES: usize = 16 << 20;
    /// Default longest spin of a reader before it parks: 20 µs (adaptive, see
    /// [`ShmConfigBuilder::spin`]).
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

    /// A builder starting from the defaults.
    pub fn builder() -> ShmConfigBuilder {
        ShmConfigBuilder {
            link: LinkConfig::builder(),
            ring_bytes: Self::DEFAULT_RING_BYTES,
            max_ring_bytes: Self::DEFAULT_MAX_RING_BYTES,
            spin: Self::DEFAULT_SPIN,
            allow_uids: Vec::new(),
        }
    }

    /// The link settings.
    pub fn link(&self) -> &LinkConfig {
        &self.link
    }

    /// The wire limits.
    pub fn limits(&self) -> &Limits {
        self.link.limits()
    }

    /// Bytes of each ring of a link this side dials.
    pub fn ring_bytes(&self) -> usize {
        self.ring_bytes
    }

    /// The largest ring a dialler may ask this side to map.
    pub fn max_ring_bytes(&self) -> usize {
        self.max_ring_bytes
    }

    /// The reader's longest spin before it parks.
    pub fn spin(&self) -> Duration {
        self.spin
    }
}

impl Default for ShmConfig {
    fn default() -> Self {
        Self {
            link: LinkConfig::default(),
            ring_bytes: Self::DEFAULT_RING_BYTES,
            max_ring_bytes: Self::DEFAULT_MAX_RING_BYTES,
            spin: Self::DEFAULT_SPIN,
            allow_uids: Vec::new(),
        }
    }
}

/// Builds a [`ShmConfig`].
#[derive(Debug, Clone)]
pub struct ShmConfigBuilder {
    link: LinkConfigBuilder,
    ring_bytes: usize,
    max_ring_bytes: usize,
    spin: Duration,
    allow_uids: Vec<u32>,
}

impl ShmConfigBuilder {
    /// Our identity (1..=255 bytes, not starting with a zero byte).
    pub fn identity(mut self, identity: impl Into<bytes::Bytes>) -> Self {
        self.link = self.link.identity(identity);
        self
    }

    /// Wire limits (the same as on TCP by default: a message larger than a ring is
    /// carried in pieces, under these limits).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.link = self.link.limits(limits);
        self
    }

    /// Most links at once (see [`LinkConfigBuilder::max_peers`]). Each link maps two
    /// rings: the memory a listener can be made to map is `max_peers` × twice the largest
    /// ring.
    pub fn max_peers(mut self, max: usize) -> Self {
        self.link = self.link.max_peers(max);
        self
    }

    /// Most unfinished handshakes at once (see [`LinkConfigBuilder::max_handshakes`]).
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.link = self.link.max_handshakes(max);
        self
    }

    /// Bytes a link queues before sends see `Full` (see
    /// [`LinkConfigBuilder::link_queue_bytes`]).
    pub fn link_queue_bytes(mut self, bytes: usize) -> Self {
        self.link = self.link.link_queue_bytes(bytes);
        self
    }

    /// Items waiting for `recv` before readers stop (see
    /// [`LinkConfigBuilder::inbound_queue`]).
    pub fn inbound_queue(mut self, items: usize) -> Self {
        self.link = self.link.inbound_queue(items);
        self
    }

    /// Bytes copied out of a ring per read (see [`LinkConfigBuilder::read_buffer`]).
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.link = self.link.read_buffer(bytes);
        self
    }

    /// Longest `disconnect` waits for a link to flush.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.link = self.link.drain_timeout(timeout);
        self
    }

    /// Bytes of each ring of a link this side dials (default 1 MiB; a power of two from
    /// 4 KiB to [`max_ring_bytes`](Self::max_ring_bytes)).
    pub fn ring_bytes(mut self, bytes: usize) -> Self {
        self.ring_bytes = bytes;
        self
    }

    /// The largest ring a dialler may make this side map (default 16 MiB).
    pub fn max_ring_bytes(mut self, bytes: usize) -> Self {
        self.max_ring_bytes = bytes;
        self
    }

    /// The reader's longest spin before it parks on its doorbell (default 20 µs). The
    /// spin adapts: it halves each time it finds nothing (so an idle link parks at once
    /// and burns no CPU) and comes back when the link is busy again. `Duration::ZERO`
    /// never spins (every wait parks: fewest CPU cycles, one wake-up per idle period).
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Lets processes of `uid` connect, besides this process's own user (the default:
    /// only the same user).
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.allow_uids.push(uid);
        self
    }

    /// The configuration.
    pub fn build(self) -> Result<ShmConfig, ShmConfigError> {
        let max = self.max_ring_bytes;
        for bytes in [self.ring_bytes, self.max_ring_bytes] {
            if !bytes.is_power_of_two() || bytes < MIN_RING || bytes > max {
                return Err(ShmConfigError::RingBytes { bytes, max });
            }
        }
        Ok(ShmConfig {
            link: self.link.build()?,
            ring_bytes: self.ring_bytes,
            max_ring_bytes: self.max_ring_bytes,
            spin: self.spin,
            allow_uids: self.allow_uids,
        })
    }
}

//! Service discovery for DMS: how services find each other.
//!
//! [`Discovery`] is the contract every backend implements: a hierarchical key-value store
//! with a global [`Revision`] counter, ephemeral keys owned by a [`Lease`], and ordered
//! watches that resume from a revision and never skip an event silently (a gap is
//! reported as [`DiscoveryError::Compacted`]).
//!
//! [`memory::MemoryDiscovery`] is the embedded backend, shared by every node of one
//! process. With the cargo feature `etcd`, `etcd::EtcdDiscovery` is a client of an etcd v3
//! cluster (building it needs `protoc` and the protobuf well-known types, Debian's
//! `protobuf-compiler` and `libprotobuf-dev`). Every backend passes the same conformance
//! suite (`dms-test-support`'s `discovery` module).
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use dms_discovery::{Discovery, Key, WatchEvent, memory::MemoryDiscovery, next_event};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let discovery = MemoryDiscovery::new();
//! let cluster = Key::new("/chat/eu/lobby")?;
//! let mut watch = discovery.watch(&cluster, None).await?;
//!
//! // Register an instance for as long as `lease` lives.
//! let lease = discovery.lease(Duration::from_secs(10)).await?;
//! let me = cluster.child("i-1")?;
//! discovery.create(&me, Bytes::from_static(b"tcp://127.0.0.1:5555"), Some(&lease)).await?;
//! assert_eq!(discovery.get(&cluster).await?.children.len(), 1);
//!
//! let Some(Ok(WatchEvent::Put(entry))) = next_event(&mut watch).await else { panic!() };
//! assert_eq!(entry.key, me);
//!
//! // The owner goes away: its keys go with it, and watchers are told.
//! drop(lease);
//! let Some(Ok(WatchEvent::Delete { key, .. })) = next_event(&mut watch).await else { panic!() };
//! assert_eq!(key, me);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "etcd")]
pub mod etcd;
mod key;
pub mod memory;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;

pub use key::{Key, KeyError};

/// A store revision: a global counter bumped by every write. The first write of a store
/// has revision 1; 0 means "before any write".
pub type Revision = u64;

/// A key with its value, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Key,
    /// The value (opaque to discovery).
    pub value: Bytes,
    /// Revision of the write that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
}

/// The result of [`Discovery::get`]: a key's own entry and its direct children, read at
/// one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The key's own entry, if the key exists.
    pub entry: Option<Entry>,
    /// Existing keys with exactly one more segment than the key, sorted by key. Keys are
    /// independent: `/a/b/c` may exist without `/a/b`, and is then no child of `/a`.
    pub children: Vec<Entry>,
    /// The store revision the read was made at. Watching from it (`watch(prefix,
    /// Some(revision))`) continues exactly where this snapshot ends.
    pub revision: Revision,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or overwritten; the entry is its new state.
    Put(Entry),
    /// The key was deleted (by `delete` or because its lease ended).
    Delete {
        /// The deleted key.
        key: Key,
        /// Revision of the deletion.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &Key {
        match self {
            Self::Put(entry) => &entry.key,
            Self::Delete { key, .. } => key,
        }
    }

    /// The revision of the write the event reports.
    pub fn revision(&self) -> Revision {
        match self {
            Self::Put(entry) => entry.mod_revision,
            Self::Delete { revision, .. } => *revision,
        }
    }
}

/// Why a discovery operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// `create` found the key already there. Read it with `get`, or `set` to overwrite.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: Key,
    },
    /// The backend is closed (memory: the store was dropped while a watch was open).
    /// Nothing more will come from this handle.
    #[error("discovery is closed")]
    Closed,
    /// A watch cannot continue without a gap: the events after `requested` are no longer
    /// all available to it (the history was compacted, or — memory backend — the watch
    /// fell behind and overflowed its queue). Resync: read the current state with `get`,
    /// then watch again from the `revision` that `get` returned.
    ///
    /// `oldest` is the oldest revision a new watch could start from (`from: Some(oldest)`
    /// or later) when the error was raised; a watch asked for an older one gets this
    /// error.
    #[error("history after revision {requested} is no longer available (oldest: {oldest})")]
    Compacted {
        /// The revision after which events were needed.
        requested: Revision,
        /// The oldest revision a watch could resume from.
        oldest: Revision,
    },
    /// `replace` found the key written since the revision it expected (or deleted):
    /// someone else changed it first. Read it again before deciding.
    #[error("key {key} changed since the revision expected")]
    Conflict {
        /// The key.
        key: Key,
    },
    /// The key is not a valid [`Key`].
    #[error("invalid key: {0}")]
    InvalidKey(#[from] KeyError),
    /// The lease given is no longer valid for this store (revoked, expired, or from
    /// another store). Take a new lease and register again.
    #[error("lease expired or unknown")]
    LeaseExpired,
    /// A key the operation needs does not exist.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: Key,
    },
    /// The backend cannot be reached (network, server down). Retry later; keep serving
    /// from the last known view meanwhile.
    #[error("discovery unavailable: {0}")]
    Unavailable(String),
}

/// The owner of ephemeral keys.
///
/// Every key created or set with a lease is deleted when the lease ends: when it is
/// dropped, or when its owner dies (a backend with a server expires it after
/// [`Lease::ttl`] without keep-alive). Watchers see a [`WatchEvent::Delete`] for each key.
pub trait Lease: Send + Sync + 'static {
    /// The lease's id, unique within its store while it lives.
    fn id(&self) -> u64;
    /// How long the lease outlives a silent owner (the backend may round it up).
    fn ttl(&self) -> Duration;

    /// Resolves when the lease is lost while its owner still holds it (a backend with a
    /// server: keep-alives failed past the TTL, the server expired it); the owner's keys
    /// are gone and it must take a new lease and register again. Never resolves for a
    /// lease that cannot be lost while held (the in-memory backend's).
    fn expired(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// A discovery backend: a handle to a hierarchical key-value store with leases and
/// ordered watches. Clones share the same store and session.
pub trait Discovery: Clone + Send + Sync + 'static {
    /// The backend's lease.
    type Lease: Lease;
    /// The backend's watch stream.
    type Watch: Stream<Item = Result<WatchEvent, DiscoveryError>> + Send + Unpin + 'static;

    /// Takes a new lease; keys created or set with it live as long as it does.
    fn lease(
        &self,
        ttl: Duration,
    ) -> impl Future<Output = Result<Self::Lease, DiscoveryError>> + Send;

    /// Creates `key` (attached to `lease` if given) and returns the revision of the
    /// write. Fails with [`DiscoveryError::AlreadyExists`] if the key exists.
    fn create(
        &self,
        key: &Key,
        value: Bytes,
        lease: Option<&Self::Lease>,
    ) -> impl Future<Output = Result<Revision, DiscoveryError>> + Send;

    /// Creates or overwrites `key` and returns the revision of the write. The key is
    /// attached to `lease` if given, and detached from any lease otherwise (as etcd's put).
    fn set(
        &self,
        key: &Key,
        value: Bytes,
        lease: Option<&Self::Lease>,
    ) -> impl Future<Output = Result<Revision, DiscoveryError>> + Send;

    /// Overwrites `key` only if its last write is revision `expected` (compare-and-swap
    /// on [`Entry::mod_revision`]), attached to `lease` if given; returns the revision of
    /// the write. Fails with [`DiscoveryError::Conflict`] if the key was written since, or
    /// does not exist: of two processes replacing the same entry, exactly one wins.
    fn replace(
        &self,
        key: &Key,
        expected: Revision,
        value: Bytes,
        lease: Option<&Self::Lease>,
    ) -> impl Future<Output = Result<Revision, DiscoveryError>> + Send;

    /// Deletes `key` (not its children) and returns the revision of the deletion;
    /// `Ok(None)` if the key did not exist.
    fn delete(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<Revision>, DiscoveryError>> + Send;

    /// The key's entry and its direct children, read at one revision. A key that does
    /// not exist gives `entry: None` (and the children it has, if any).
    fn get(&self, key: &Key) -> impl Future<Output = Result<Node, DiscoveryError>> + Send;

    /// Every entry `prefix` covers (the key itself and all keys below it, at any depth),
    /// sorted by key, read at one revision (returned with them). For tools (`dms ls`);
    /// the kernel reads clusters with [`get`](Self::get).
    fn list(
        &self,
        prefix: &Key,
    ) -> impl Future<Output = Result<(Vec<Entry>, Revision), DiscoveryError>> + Send {
        let _ = prefix;
        async {
            Err(DiscoveryError::Unavailable(
                "this backend cannot list".into(),
            ))
        }
    }

    /// Ordered events for the keys `prefix` covers (see [`Key::covers`]) with a revision
    /// greater than `from` (`None`: from now on).
    ///
    /// Never skips silently: when the history needed is no longer available, either this
    /// call fails or the stream yields, as its first item, [`DiscoveryError::Compacted`].
    /// Whenever the stream yields an error, it ends after it.
    fn watch(
        &self,
        prefix: &Key,
        from: Option<Revision>,
    ) -> impl Future<Output = Result<Self::Watch, DiscoveryError>> + Send;
}

/// The next item of a watch (or any stream), for callers without `futures-util`.
///
/// `None` once the stream has ended.
///
/// ```
/// use dms_discovery::{Discovery, Key, memory::MemoryDiscovery, next_event};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dms_discovery::DiscoveryError> {
/// let discovery = MemoryDiscovery::new();
/// let key = Key::new("/a")?;
/// let mut watch = discovery.watch(&key, None).await?;
/// let revision = discovery.set(&key, "v".into(), None).await?;
/// let event = next_event(&mut watch).await.expect("open")?;
/// assert_eq!((event.key(), event.revision()), (&key, revision));
/// # Ok(())
/// # }
/// ```
pub async fn next_event<W>(watch: &mut W) -> Option<Result<WatchEvent, DiscoveryError>>
where
    W: Stream<Item = Result<WatchEvent, DiscoveryError>> + Unpin + ?Sized,
{
    std::future::poll_fn(|cx| Pin::new(&mut *watch).poll_next(cx)).await
}

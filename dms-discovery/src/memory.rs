//! [`MemoryDiscovery`]: the embedded discovery store, shared by every node of a process.
//!
//! It behaves like a single etcd server without the network: a global revision counter,
//! a sorted key space, a bounded event history (so a watch can resume from a past
//! revision, or is told with [`DiscoveryError::Compacted`] that it cannot), and leases
//! that own ephemeral keys. Its owner being in-process, a [`MemoryLease`] ends when it is
//! dropped or [revoked](MemoryLease::revoke), never by time.
//!
//! Every operation completes without waiting: the store is a `std` mutex held only for
//! the duration of one operation (never across an `.await`), and watchers are fed with
//! `try_send` into bounded queues. A watcher that does not keep up is dropped with an
//! error instead of blocking writers or growing without bound.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::mpsc;
use tracing::debug;

use crate::{Discovery, DiscoveryError, Entry, Key, Lease, Node, Revision, WatchEvent};

/// Sizes of a [`MemoryDiscovery`]'s bounded buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Events kept for watches that resume from a past revision. A watch asking for
    /// older history gets [`DiscoveryError::Compacted`]. Default 10,000.
    pub history: usize,
    /// Events queued per watcher that its consumer has not read yet. A watcher that
    /// falls further behind is dropped: its stream yields the queued events, then
    /// [`DiscoveryError::Compacted`], then ends. At least 1 (0 is treated as 1).
    /// Default 1024.
    pub watch_queue: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            history: 10_000,
            watch_queue: 1024,
        }
    }
}

/// The in-memory [`Discovery`] backend. Clones share the same store.
///
/// ```
/// use dms_discovery::{Discovery, Key, memory::{MemoryConfig, MemoryDiscovery}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dms_discovery::DiscoveryError> {
/// let store = MemoryDiscovery::with_config(MemoryConfig { history: 100, ..MemoryConfig::default() });
/// let other_node = store.clone();
/// let key = Key::new("/svc/a")?;
/// let revision = store.set(&key, "v1".into(), None).await?;
/// assert_eq!(revision, 1);
/// let node = other_node.get(&key).await?;
/// assert_eq!(node.entry.map(|e| e.value), Some("v1".into()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryDiscovery {
    shared: Arc<Shared>,
}

/// A lease of a [`MemoryDiscovery`]: dropping it (or calling
/// [`revoke`](MemoryLease::revoke)) deletes every key attached to it, one revision per
/// key, in key order.
pub struct MemoryLease {
    id: u64,
    ttl: Duration,
    shared: Arc<Shared>,
}

/// A watch on a [`MemoryDiscovery`]: replayed history first, then live events.
///
/// After an error item the stream ends. It yields [`DiscoveryError::Closed`] if every
/// handle to the store (discoveries and leases) was dropped.
pub struct MemoryWatch {
    replay: VecDeque<WatchEvent>,
    rx: mpsc::Receiver<Result<WatchEvent, DiscoveryError>>,
    finished: bool,
    prefix: Key,
    id: u64,
    shared: Weak<Shared>,
}

struct Shared {
    config: MemoryConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Revision of the last write.
    revision: Revision,
    entries: BTreeMap<Key, Stored>,
    /// Events with revisions `compacted + 1 ..= revision`, oldest first.
    history: VecDeque<WatchEvent>,
    /// Events up to this revision are gone from `history`.
    compacted: Revision,
    /// Live leases and the keys attached to each.
    leases: HashMap<u64, BTreeSet<Key>>,
    last_lease: u64,
    /// Watchers by prefix.
    watchers: HashMap<Key, Vec<Watcher>>,
    last_watch: u64,
}

struct Stored {
    value: Bytes,
    create_revision: Revision,
    mod_revision: Revision,
    lease: Option<u64>,
}

struct Watcher {
    id: u64,
    /// Events up to this revision are not wanted (already replayed, or before `from`).
    after: Revision,
    tx: mpsc::Sender<Result<WatchEvent, DiscoveryError>>,
}

impl Stored {
    fn entry(&self, key: &Key) -> Entry {
        Entry {
            key: key.clone(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

impl Shared {
    /// The state, even if a panic poisoned the mutex: every operation leaves the state
    /// consistent before anything that can panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryDiscovery {
    /// An empty store with the default [`MemoryConfig`].
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// An empty store.
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config: MemoryConfig {
                    watch_queue: config.watch_queue.max(1),
                    ..config
                },
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The store's configuration.
    pub fn config(&self) -> MemoryConfig {
        self.shared.config
    }

    /// The revision of the last write (0 before the first).
    pub fn revision(&self) -> Revision {
        self.shared.lock().revision
    }

    /// Drops the event history up to `revision` (capped at the current revision): a
    /// watch from an older revision then gets [`DiscoveryError::Compacted`]. Live
    /// watchers are not affected.
    pub fn compact(&self, revision: Revision) {
        let mut state = self.shared.lock();
        let revision = revision.min(state.revision);
        if revision <= state.compacted {
            return;
        }
        while state
            .history
            .front()
            .is_some_and(|e| e.revision() <= revision)
        {
            state.history.pop_front();
        }
        state.compacted = revision;
        debug!(revision, "discovery history compacted");
    }

    fn lease_id(
        &self,
        state: &State,
        lease: Option<&MemoryLease>,
    ) -> Result<Option<u64>, DiscoveryError> {
        match lease {
            None => Ok(None),
            Some(lease)
                if Arc::ptr_eq(&lease.shared, &self.shared)
                    && state.leases.contains_key(&lease.id) =>
            {
                Ok(Some(lease.id))
            }
            Some(lease) => {
                debug!(lease = lease.id, "discovery: lease unknown to this store");
                Err(DiscoveryError::LeaseExpired)
            }
        }
    }

    fn write(
        &self,
        key: &Key,
        value: Bytes,
        lease: Option<&MemoryLease>,
        condition: Condition,
    ) -> Result<Revision, DiscoveryError> {
        let mut state = self.shared.lock();
        let lease = self.lease_id(&state, lease)?;
        let current = state
            .entries
            .get(key)
            .map(|stored| stored.entry(key).mod_revision);
        match (condition, current) {
            (Condition::Absent, Some(_)) => {
                debug!(%key, "discovery create: key already exists");
                return Err(DiscoveryError::AlreadyExists { key: key.clone() });
            }
            (Condition::Revision(expected), current) if current != Some(expected) => {
                debug!(%key, expected, ?current, "discovery replace: key changed");
                return Err(DiscoveryError::Conflict { key: key.clone() });
            }
            _ => {}
        }
        Ok(state.put(&self.shared.config, key, value, lease))
    }
}

/// When a write may happen.
#[derive(Debug, Clone, Copy)]
enum Condition {
    /// Always (`set`).
    Any,
    /// Only if the key does not exist (`create`).
    Absent,
    /// Only if the key's last write is this revision (`replace`).
    Revision(Revision),
}

impl Default for MemoryDiscovery {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("MemoryDiscovery")
            .field("revision", &state.revision)
            .field("keys", &state.entries.len())
            .field("compacted", &state.compacted)
            .field("leases", &state.leases.len())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl State {
    fn put(
        &mut self,
        config: &MemoryConfig,
        key: &Key,
        value: Bytes,
        lease: Option<u64>,
    ) -> Revision {
        self.revision += 1;
        let revision = self.revision;
        let previous = self.entries.get(key).map(|s| (s.create_revision, s.lease));
        let create_revision = previous.map_or(revision, |(created, _)| created);
        let old_lease = previous.and_then(|(_, lease)| lease);
        if old_lease != lease {
            if let Some(keys) = old_lease.and_then(|id| self.leases.get_mut(&id)) {
                keys.remove(key);
            }
            if let Some(keys) = lease.and_then(|id| self.leases.get_mut(&id)) {
                keys.insert(key.clone());
            }
        }
        let stored = Stored {
            value,
            create_revision,
            mod_revision: revision,
            lease,
        };
        let entry = stored.entry(key);
        self.entries.insert(key.clone(), stored);
        self.record(config, WatchEvent::Put(entry));
        revision
    }

    /// Deletes `key` if it exists, returning the revision of the deletion.
    fn remove(&mut self, config: &MemoryConfig, key: &Key) -> Option<Revision> {
        let stored = self.entries.remove(key)?;
        if let Some(keys) = stored.lease.and_then(|id| self.leases.get_mut(&id)) {
            keys.remove(key);
        }
        self.revision += 1;
        let revision = self.revision;
        self.record(
            config,
            WatchEvent::Delete {
                key: key.clone(),
                revision,
            },
        );
        Some(revision)
    }

    /// Appends `event` to the history and hands it to the watchers of every prefix
    /// covering its key.
    fn record(&mut self, config: &MemoryConfig, event: WatchEvent) {
        if config.history == 0 {
            self.compacted = event.revision();
        } else {
            if self.history.len() >= config.history {
                if let Some(oldest) = self.history.pop_front() {
                    self.compacted = oldest.revision();
                }
            }
            self.history.push_back(event.clone());
        }
        if self.watchers.is_empty() {
            return;
        }
        let key = event.key().clone();
        let key = key.as_str();
        // The key itself and each of its ancestors, as prefixes.
        let prefixes = key
            .match_indices('/')
            .skip(1)
            .map(|(at, _)| &key[..at])
            .chain([key]);
        for prefix in prefixes {
            let Some(watchers) = self.watchers.get_mut(prefix) else {
                continue;
            };
            watchers.retain_mut(|w| w.offer(&event, self.compacted));
            if watchers.is_empty() {
                self.watchers.remove(prefix);
            }
        }
    }

    fn children(&self, key: &Key) -> Vec<Entry> {
        let base = key.as_str().len() + 1;
        let end = format!("{key}0"); // '0' follows '/': [key/, key0) holds what is under key
        let mut start = format!("{key}/");
        let mut children = Vec::new();
        loop {
            let mut skip_to = None;
            let range = (
                Bound::Included(start.as_str()),
                Bound::Excluded(end.as_str()),
            );
            for (child, stored) in self.entries.range::<str, _>(range) {
                match child.as_str()[base..].find('/') {
                    None => children.push(stored.entry(child)),
                    Some(at) => {
                        // A grandchild: skip the whole subtree of its ancestor child.
                        skip_to = Some(format!("{}0", &child.as_str()[..base + at]));
                        break;
                    }
                }
            }
            match skip_to {
                Some(next) => start = next,
                None => return children,
            }
        }
    }
}

impl Watcher {
    /// Queues `event` if wanted; false if this watcher is done (consumer gone, or queue
    /// overflowed and the error queued instead).
    fn offer(&mut self, event: &WatchEvent, compacted: Revision) -> bool {
        if event.revision() <= self.after {
            return true;
        }
        // The last slot of the queue is kept for the overflow error.
        if self.tx.capacity() > 1 {
            return self.tx.try_send(Ok(event.clone())).is_ok();
        }
        let error = DiscoveryError::Compacted {
            requested: event.revision() - 1,
            oldest: compacted,
        };
        debug!(watch = self.id, %error, "discovery watcher fell behind; dropping it");
        let _ = self.tx.try_send(Err(error));
        false
    }
}

impl Discovery for MemoryDiscovery {
    type Lease = MemoryLease;
    type Watch = MemoryWatch;

    async fn lease(&self, ttl: Duration) -> Result<MemoryLease, DiscoveryError> {
        let mut state = self.shared.lock();
        state.last_lease += 1;
        let id = state.last_lease;
        state.leases.insert(id, BTreeSet::new());
        Ok(MemoryLease {
            id,
            ttl,
            shared: Arc::clone(&self.shared),
        })
    }

    async fn create(
        &self,
        key: &Key,
        value: Bytes,
        lease: Option<&MemoryLease>,
    ) -> Result<Revision, DiscoveryError> {
        self.write(key, value, lease, Condition::Absent)
    }

    async fn set(
        &self,
        key: &Key,
        value: Bytes,
        lease: Option<&MemoryLease>,
    ) -> Result<Revision, DiscoveryError> {
        self.write(key, value, lease, Condition::Any)
    }

    async fn replace(
        &self,
        key: &Key,
        expected: Revision,
        value: Bytes,
        lease: Option<&MemoryLease>,
    ) -> Result<Revision, DiscoveryError> {
        self.write(key, value, lease, Condition::Revision(expected))
    }

    async fn delete(&self, key: &Key) -> Result<Option<Revision>, DiscoveryError> {
        Ok(self.shared.lock().remove(&self.shared.config, key))
    }

    async fn get(&self, key: &Key) -> Result<Node, DiscoveryError> {
        let state = self.shared.lock();
        Ok(Node {
            entry: state.entries.get(key).map(|stored| stored.entry(key)),
            children: state.children(key),
            revision: state.revision,
        })
    }

    async fn list(&self, prefix: &Key) -> Result<(Vec<Entry>, Revision), DiscoveryError> {
        let state = self.shared.lock();
        let entries = state
            .entries
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(|(key, _)| key.as_str().starts_with(prefix.as_str()))
            .filter(|(key, _)| prefix.covers(key))
            .map(|(key, stored)| stored.entry(key))
            .collect();
        Ok((entries, state.revision))
    }

    async fn watch(
        &self,
        prefix: &Key,
        from: Option<Revision>,
    ) -> Result<MemoryWatch, DiscoveryError> {
        let mut state = self.shared.lock();
        let (after, replay) = match from {
            None => (state.revision, VecDeque::new()),
            Some(from) if from < state.compacted => {
                let error = DiscoveryError::Compacted {
                    requested: from,
                    oldest: state.compacted,
                };
                debug!(%prefix, %error, "discovery watch");
                return Err(error);
            }
            Some(from) => {
                let start = state.history.partition_point(|e| e.revision() <= from);
                let replay = state
                    .history
                    .range(start..)
                    .filter(|e| prefix.covers(e.key()))
                    .cloned()
                    .collect();
                (from.max(state.revision), replay)
            }
        };
        let (tx, rx) = mpsc::channel(self.shared.config.watch_queue + 1);
        state.last_watch += 1;
        let id = state.last_watch;
        state
            .watchers
            .entry(prefix.clone())
            .or_default()
            .push(Watcher { id, after, tx });
        Ok(MemoryWatch {
            replay,
            rx,
            finished: false,
            prefix: prefix.clone(),
            id,
            shared: Arc::downgrade(&self.shared),
        })
    }
}

impl MemoryLease {
    /// Ends the lease now: deletes its keys (watchers see the deletions). Same as
    /// dropping it.
    pub async fn revoke(self) {
        drop(self);
    }
}

impl Lease for MemoryLease {
    fn id(&self) -> u64 {
        self.id
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let keys = state.leases.remove(&self.id).unwrap_or_default();
        for key in &keys {
            state.remove(&self.shared.config, key);
        }
        debug!(
            lease = self.id,
            keys = keys.len(),
            "discovery lease revoked"
        );
    }
}

impl fmt::Debug for MemoryLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLease")
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Stream for MemoryWatch {
    type Item = Result<WatchEvent, DiscoveryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(event) = self.replay.pop_front() {
            return Poll::Ready(Some(Ok(event)));
        }
        let item = match ready!(self.rx.poll_recv(cx)) {
            Some(Ok(event)) => return Poll::Ready(Some(Ok(event))),
            Some(Err(error)) => error,
            // Only a dropped store drops the sender without queueing an error first.
            None => DiscoveryError::Closed,
        };
        self.finished = true;
        Poll::Ready(Some(Err(item)))
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        if let Some(watchers) = state.watchers.get_mut(&self.prefix) {
            watchers.retain(|w| w.id != self.id);
            if watchers.is_empty() {
                state.watchers.remove(&self.prefix);
            }
        }
    }
}

impl fmt::Debug for MemoryWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryWatch")
            .field("prefix", &self.prefix)
            .field("id", &self.id)
            .field("replay", &self.replay.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Key {
        Key::new(k).unwrap()
    }

    fn watchers(d: &MemoryDiscovery) -> usize {
        d.shared.lock().watchers.values().map(Vec::len).sum()
    }

    #[tokio::test]
    async fn dropped_watches_are_unregistered() {
        let d = MemoryDiscovery::new();
        let a = d.watch(&key("/a"), None).await.unwrap();
        let b = d.watch(&key("/a"), None).await.unwrap();
        let c = d.watch(&key("/never/written"), None).await.unwrap();
        assert_eq!(watchers(&d), 3);
        drop(a);
        drop(c);
        assert_eq!(watchers(&d), 1);
        drop(b);
        assert_eq!(watchers(&d), 0);
        assert!(d.shared.lock().watchers.is_empty());
    }

    #[tokio::test]
    async fn overflowed_watcher_is_unregistered() {
        let d = MemoryDiscovery::with_config(MemoryConfig {
            watch_queue: 2,
            ..MemoryConfig::default()
        });
        let _w = d.watch(&key("/a"), None).await.unwrap();
        for n in 0..3 {
            d.set(&key("/a"), Bytes::from(vec![n]), None).await.unwrap();
        }
        assert_eq!(watchers(&d), 0);
    }

    #[tokio::test]
    async fn leases_track_their_keys() {
        let d = MemoryDiscovery::new();
        let lease = d.lease(Duration::from_secs(1)).await.unwrap();
        d.create(&key("/x"), Bytes::new(), Some(&lease))
            .await
            .unwrap();
        d.set(&key("/y"), Bytes::new(), Some(&lease)).await.unwrap();
        // Overwriting without the lease detaches the key; deleting forgets it.
        d.set(&key("/y"), Bytes::new(), None).await.unwrap();
        d.create(&key("/z"), Bytes::new(), Some(&lease))
            .await
            .unwrap();
        d.delete(&key("/z")).await.unwrap();
        let attached: Vec<_> = d.shared.lock().leases[&lease.id()]
            .iter()
            .cloned()
            .collect();
        assert_eq!(attached, [key("/x")]);
        lease.revoke().await;
        assert!(d.shared.lock().leases.is_empty());
        assert!(d.get(&key("/x")).await.unwrap().entry.is_none());
        assert!(d.get(&key("/y")).await.unwrap().entry.is_some());
    }

    #[tokio::test]
    async fn history_is_bounded() {
        let d = MemoryDiscovery::with_config(MemoryConfig {
            history: 3,
            ..MemoryConfig::default()
        });
        for _ in 0..10 {
            d.set(&key("/a"), Bytes::new(), None).await.unwrap();
        }
        let state = d.shared.lock();
        assert_eq!(state.history.len(), 3);
        assert_eq!(state.compacted, 7);
        assert_eq!(state.history.front().map(WatchEvent::revision), Some(8));
    }

    #[tokio::test]
    async fn list_covers_every_depth_and_nothing_else() {
        let d = MemoryDiscovery::new();
        for k in ["/p", "/p/a", "/p/a/1/x", "/p!", "/p0", "/pa", "/q"] {
            d.set(&key(k), Bytes::new(), None).await.unwrap();
        }
        let (entries, revision) = d.list(&key("/p")).await.unwrap();
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["/p", "/p/a", "/p/a/1/x"]);
        assert_eq!(revision, 7);
    }

    #[tokio::test]
    async fn children_skip_deep_subtrees() {
        let d = MemoryDiscovery::new();
        for k in [
            "/p", "/p/a", "/p/a/1", "/p/a/2/x", "/p/a!", "/p/b", "/p/c/d/e", "/p/c0", "/p0", "/p!",
            "/q",
        ] {
            d.set(&key(k), Bytes::new(), None).await.unwrap();
        }
        let children: Vec<_> = d.shared.lock().children(&key("/p"));
        let names: Vec<_> = children.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(names, ["/p/a", "/p/a!", "/p/b", "/p/c0"]);
    }
}

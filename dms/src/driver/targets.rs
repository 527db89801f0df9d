//! Targets: the clusters this node sends to, followed in discovery (a snapshot, then
//! changes), and the view of their instances.

use super::*;

/// A change of a target cluster seen in discovery.
#[derive(Debug)]
pub(crate) enum WatchItem {
    /// The whole cluster as read at one revision (start, or resync after compaction).
    Snapshot(ClusterPath, Vec<(ServicePath, Registration)>),
    Put(ServicePath, Registration),
    Delete(ServicePath),
}

/// Follows one target cluster in discovery: a snapshot, then its changes; a new snapshot
/// whenever the history cannot be replayed (compaction) or the watch breaks. While
/// discovery is unreachable the node keeps its last view.
///
/// Ends as soon as the node is gone (`out` closed), whatever it is waiting for: a stopped
/// node leaves no task and no discovery watch behind (the L9 soak found one per target
/// cluster, kept until that cluster next changed).
pub(crate) async fn watch_cluster<D: Discovery>(
    discovery: D,
    cluster: ClusterPath,
    out: mpsc::Sender<WatchItem>,
) {
    let closed = out.clone();
    tokio::select! {
        () = follow_cluster(discovery, cluster, out) => {}
        () = closed.closed() => {}
    }
}

pub(super) async fn follow_cluster<D: Discovery>(
    discovery: D,
    cluster: ClusterPath,
    out: mpsc::Sender<WatchItem>,
) {
    let Ok(key) = cluster_key(&cluster) else {
        return;
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let snapshot = match discovery.get(&key).await {
            Ok(node) => node,
            Err(error) => {
                warn!(%cluster, %error, "discovery unreachable; keeping the last view");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let instances = snapshot
            .children
            .iter()
            .filter_map(|entry| instance_of(&cluster, entry.key.as_str(), &entry.value))
            .collect();
        if out
            .send(WatchItem::Snapshot(cluster.clone(), instances))
            .await
            .is_err()
        {
            return;
        }
        let mut watch = match discovery.watch(&key, Some(snapshot.revision)).await {
            Ok(watch) => watch,
            Err(error) => {
                warn!(%cluster, %error, "watch failed; resyncing");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        loop {
            let item = match dms_discovery::next_event(&mut watch).await {
                Some(Ok(WatchEvent::Put(entry))) => {
                    match instance_of(&cluster, entry.key.as_str(), &entry.value) {
                        Some((path, reg)) => WatchItem::Put(path, reg),
                        None => continue,
                    }
                }
                Some(Ok(WatchEvent::Delete { key, .. })) => {
                    match key.as_str().parse::<ServicePath>() {
                        Ok(path) if path.cluster() == cluster => WatchItem::Delete(path),
                        _ => continue,
                    }
                }
                Some(Err(DiscoveryError::Compacted { .. })) | None => break,
                Some(Err(error)) => {
                    warn!(%cluster, %error, "watch error; resyncing");
                    break;
                }
            };
            if out.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// An instance registration from a discovery entry; `None` (and a log line) for anything
/// that is not a well-formed instance of `cluster`.
pub(super) fn instance_of(
    cluster: &ClusterPath,
    key: &str,
    value: &[u8],
) -> Option<(ServicePath, Registration)> {
    let path: ServicePath = key.parse().ok()?;
    if path.cluster() != *cluster {
        return None;
    }
    match Registration::decode(value) {
        Some(registration) => Some((path, registration)),
        None => {
            warn!(%path, "unreadable registration ignored");
            None
        }
    }
}

impl Driver {
    pub(super) fn on_watch(&mut self, item: WatchItem, connected_tx: &mpsc::Sender<Connected>) {
        match item {
            WatchItem::Snapshot(cluster, instances) => {
                self.state.synced.insert(cluster.clone());
                let fresh: HashMap<_, _> = instances.into_iter().collect();
                let gone: Vec<ServicePath> = self
                    .targets
                    .get(&cluster)
                    .map(|old| {
                        old.keys()
                            .filter(|p| !fresh.contains_key(*p))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for path in gone {
                    self.on_watch(WatchItem::Delete(path), connected_tx);
                }
                for (path, registration) in fresh {
                    self.on_watch(WatchItem::Put(path, registration), connected_tx);
                }
            }
            WatchItem::Put(path, registration) => {
                let cluster = path.cluster();
                let Some(instances) = self.targets.get_mut(&cluster) else {
                    return;
                };
                let fresh = instances.insert(path.clone(), registration).is_none();
                self.state.deregistered.remove(&path);
                if fresh {
                    info!(node = %self.local, instance = %path, "discovered");
                    self.state.denied.remove(&path);
                    self.state.retry_at.remove(&path);
                    self.state.backoff.remove(&path);
                }
                self.maybe_connect(&path, connected_tx);
            }
            WatchItem::Delete(path) => {
                let peer = path.peer_id();
                if self.state.ready.contains_key(&peer) {
                    if self.state.deregistered.insert(path.clone()) {
                        info!(node = %self.local, instance = %path, "deregistered but live: kept until its session ends");
                    }
                    return;
                }
                self.forget(&path);
                if self.proto.session_state(&peer).is_some() {
                    self.close_link(peer);
                }
            }
        }
    }

    /// Drops an instance from its cluster's view.
    pub(super) fn forget(&mut self, path: &ServicePath) {
        if let Some(instances) = self.targets.get_mut(&path.cluster()) {
            if instances.remove(path).is_some() {
                info!(node = %self.local, instance = %path, "deregistered");
            }
        }
        self.state.deregistered.remove(path);
        self.state.retry_at.remove(path);
        self.state.backoff.remove(path);
        self.state.denied.remove(path);
    }

    pub(super) fn registration(&self, path: &ServicePath) -> Option<&Registration> {
        self.targets.get(&path.cluster())?.get(path)
    }
}

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

/// One target cluster, as [`follow`](crate::follow::follow)ed: its instances.
pub(crate) struct TargetCluster {
    cluster: ClusterPath,
    key: dms_discovery::Key,
    /// Entries of the cluster that are no well-formed instance registration.
    rejected: metrics::Counter,
}

impl TargetCluster {
    /// `None` when the cluster's path makes no discovery key.
    pub(crate) fn new(cluster: ClusterPath, rejected: metrics::Counter) -> Option<Self> {
        let key = cluster_key(&cluster).ok()?;
        Some(Self {
            cluster,
            key,
            rejected,
        })
    }

    /// An instance registration from a discovery entry; `None` for anything that is not
    /// a well-formed instance of the cluster. A child of the cluster's key that is not
    /// one (an unreadable value, a name that is no instance name) is logged and counted;
    /// an entry of another cluster whose name the prefix also matches (`Battle2` under
    /// `Battle`), or deeper than the cluster's children, is not.
    fn instance(&self, key: &str, value: &[u8]) -> Option<(ServicePath, Registration)> {
        let path = match key.parse::<ServicePath>() {
            Ok(path) if path.cluster() == self.cluster => path,
            _ => {
                let child = key
                    .strip_prefix(self.cluster.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|name| !name.contains('/'));
                if child {
                    warn!(key = %dms_core::text::printable(key), "an entry under a target cluster that is no instance path of it ignored");
                    self.rejected.increment(1);
                }
                return None;
            }
        };
        match Registration::decode(value) {
            Some(registration) => Some((path, registration)),
            None => {
                warn!(%path, bytes = value.len(), "unreadable registration ignored");
                self.rejected.increment(1);
                None
            }
        }
    }
}

impl crate::follow::Followed for TargetCluster {
    type Item = WatchItem;

    fn key(&self) -> &dms_discovery::Key {
        &self.key
    }

    async fn snapshot<D: Discovery>(
        &self,
        discovery: &D,
    ) -> Result<(WatchItem, dms_discovery::Revision), DiscoveryError> {
        let node = discovery.get(&self.key).await?;
        let instances = node
            .children
            .iter()
            .filter_map(|entry| self.instance(entry.key.as_str(), &entry.value))
            .collect();
        Ok((
            WatchItem::Snapshot(self.cluster.clone(), instances),
            node.revision,
        ))
    }

    fn change(&self, event: WatchEvent) -> Option<WatchItem> {
        match event {
            WatchEvent::Put(entry) => {
                let (path, reg) = self.instance(entry.key.as_str(), &entry.value)?;
                Some(WatchItem::Put(path, reg))
            }
            WatchEvent::Delete { key, .. } => {
                let path = key.as_str().parse::<ServicePath>().ok()?;
                (path.cluster() == self.cluster).then_some(WatchItem::Delete(path))
            }
        }
    }
}

/// Follows one target cluster in discovery until `out` closes (see
/// [`follow`](crate::follow::follow)).
pub(crate) async fn watch_cluster<D: Discovery>(
    discovery: D,
    cluster: ClusterPath,
    out: mpsc::Sender<WatchItem>,
    resyncs: metrics::Counter,
    rejected: metrics::Counter,
) {
    if let Some(target) = TargetCluster::new(cluster, rejected) {
        crate::follow::follow(discovery, target, out, resyncs).await;
    }
}

impl Driver {
    pub(super) fn on_watch(&mut self, item: WatchItem, connected_tx: &mpsc::Sender<Connected>) {
        self.reachability_changed();
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
        self.reachability_changed();
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

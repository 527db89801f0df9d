//! Following the routing table in discovery (see [`follow`](crate::follow::follow)).

use dms_core::path::ServicePath;
use dms_discovery::{Discovery, DiscoveryError, Key, Revision, WatchEvent};
use tokio::sync::mpsc;
use tracing::warn;

use super::record::{LinkRecord, instance_of_links_key};

/// A change of the routing table seen in discovery.
#[derive(Debug)]
pub(crate) enum RouteItem {
    /// Every readable record, as read at one revision (start, or resync).
    Snapshot(Vec<(ServicePath, LinkRecord)>),
    /// An instance's record was written.
    Put(ServicePath, LinkRecord),
    /// An instance's record is gone (deleted, its lease expired, or it became unreadable:
    /// an unreadable record counts as no links).
    Delete(ServicePath),
}

/// The routing table under one prefix, as followed; unreadable records count in
/// `rejected`.
struct Table {
    key: Key,
    rejected: metrics::Counter,
}

impl crate::follow::Followed for Table {
    type Item = RouteItem;

    fn key(&self) -> &Key {
        &self.key
    }

    async fn snapshot<D: Discovery>(
        &self,
        discovery: &D,
    ) -> Result<(RouteItem, Revision), DiscoveryError> {
        let snapshot = super::read_table(discovery, &self.key).await?;
        for (key, error) in &snapshot.refused {
            warn!(%key, %error, "unreadable link record ignored");
            self.rejected.increment(1);
        }
        Ok((RouteItem::Snapshot(snapshot.records), snapshot.revision))
    }

    fn change(&self, event: WatchEvent) -> Option<RouteItem> {
        match event {
            WatchEvent::Put(entry) => {
                let path = instance_of_links_key(&self.key, &entry.key)?;
                Some(match LinkRecord::decode(&entry.value) {
                    Ok(record) => RouteItem::Put(path, record),
                    Err(error) => {
                        warn!(key = %entry.key, %error, "unreadable link record: its links are ignored");
                        self.rejected.increment(1);
                        RouteItem::Delete(path)
                    }
                })
            }
            WatchEvent::Delete { key, .. } => {
                instance_of_links_key(&self.key, &key).map(RouteItem::Delete)
            }
        }
    }
}

/// Follows the table under `table` into `out` until `out` closes; unreadable records
/// count in `rejected`.
pub(crate) async fn follow_table<D: Discovery>(
    discovery: D,
    table: Key,
    out: mpsc::Sender<RouteItem>,
    resyncs: metrics::Counter,
    rejected: metrics::Counter,
) {
    let table = Table {
        key: table,
        rejected,
    };
    crate::follow::follow(discovery, table, out, resyncs).await;
}

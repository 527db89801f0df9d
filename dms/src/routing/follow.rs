//! Following the routing table in discovery: a snapshot, then its changes.

use std::time::Duration;

use dms_core::Backoff;
use dms_core::path::ServicePath;
use dms_discovery::{Discovery, DiscoveryError, Key, WatchEvent};
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

/// Follows the table under `table` into `out` until `out` closes: a snapshot, then its
/// changes, and a new snapshot whenever the watch breaks or its history is compacted.
/// While discovery is unreachable the node keeps its last view.
pub(crate) async fn follow_table<D: Discovery>(
    discovery: D,
    table: Key,
    out: mpsc::Sender<RouteItem>,
) {
    let closed = out.clone();
    tokio::select! {
        () = follow(discovery, table, out) => {}
        () = closed.closed() => {}
    }
}

async fn follow<D: Discovery>(discovery: D, table: Key, out: mpsc::Sender<RouteItem>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let snapshot = match super::read_table(&discovery, &table).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                warn!(%table, %error, "routing table unreadable; keeping the last view");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        for (key, error) in &snapshot.refused {
            warn!(%key, %error, "unreadable link record ignored");
        }
        let revision = snapshot.revision;
        if out
            .send(RouteItem::Snapshot(snapshot.records))
            .await
            .is_err()
        {
            return;
        }
        let mut watch = match discovery.watch(&table, Some(revision)).await {
            Ok(watch) => watch,
            Err(error) => {
                warn!(%table, %error, "routing table watch failed; resyncing");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        loop {
            let item = match dms_discovery::next_event(&mut watch).await {
                Some(Ok(WatchEvent::Put(entry))) => {
                    let Some(path) = instance_of_links_key(&table, &entry.key) else {
                        continue;
                    };
                    match LinkRecord::decode(&entry.value) {
                        Ok(record) => RouteItem::Put(path, record),
                        Err(error) => {
                            warn!(key = %entry.key, %error, "unreadable link record: its links are ignored");
                            RouteItem::Delete(path)
                        }
                    }
                }
                Some(Ok(WatchEvent::Delete { key, .. })) => {
                    match instance_of_links_key(&table, &key) {
                        Some(path) => RouteItem::Delete(path),
                        None => continue,
                    }
                }
                Some(Err(DiscoveryError::Compacted { .. })) | None => break,
                Some(Err(error)) => {
                    warn!(%table, %error, "routing table watch error; resyncing");
                    break;
                }
            };
            if out.send(item).await.is_err() {
                return;
            }
        }
    }
}

//! Following a part of discovery: a snapshot, then its changes, and a new snapshot
//! whenever the history cannot be replayed (compaction) or the watch breaks. What the
//! kernel follows this way: its target clusters and the routing table.

use std::future::Future;
use std::time::Duration;

use dms_core::Backoff;
use dms_discovery::{Discovery, DiscoveryError, Key, Revision, WatchEvent};
use metrics::Counter;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// A part of discovery a node follows, and how its entries become items for the driver.
pub(crate) trait Followed: Send + Sync + 'static {
    /// What the driver gets: a snapshot or one change.
    type Item: Send + 'static;

    /// The prefix watched.
    fn key(&self) -> &Key;

    /// Reads the whole part at one revision: the snapshot item and that revision.
    fn snapshot<D: Discovery>(
        &self,
        discovery: &D,
    ) -> impl Future<Output = Result<(Self::Item, Revision), DiscoveryError>> + Send;

    /// The item a watch event makes, if any (events for other keys, or unreadable
    /// values the implementation chooses to skip, make none).
    fn change(&self, event: WatchEvent) -> Option<Self::Item>;
}

/// Follows `followed` into `out` until `out` closes. While discovery is unreachable the
/// node keeps its last view. Every snapshot after the first (the history was compacted
/// under the watch, or the watch broke) counts in `resyncs`.
///
/// Ends as soon as the node is gone (`out` closed), whatever it is waiting for: a stopped
/// node leaves no task and no discovery watch behind (the L9 soak found one per target
/// cluster, kept until that cluster next changed).
pub(crate) async fn follow<D: Discovery, F: Followed>(
    discovery: D,
    followed: F,
    out: mpsc::Sender<F::Item>,
    resyncs: Counter,
) {
    let closed = out.clone();
    tokio::select! {
        () = run(discovery, followed, out, resyncs) => {}
        () = closed.closed() => {}
    }
}

async fn run<D: Discovery, F: Followed>(
    discovery: D,
    followed: F,
    out: mpsc::Sender<F::Item>,
    resyncs: Counter,
) {
    let key = followed.key().clone();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut first = true;
    loop {
        let (snapshot, revision) = match followed.snapshot(&discovery).await {
            Ok(read) => read,
            Err(error) => {
                warn!(%key, %error, "discovery unreachable; keeping the last view");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if !std::mem::take(&mut first) {
            resyncs.increment(1);
        }
        if out.send(snapshot).await.is_err() {
            return;
        }
        let mut watch = match discovery.watch(&key, Some(revision)).await {
            Ok(watch) => watch,
            Err(error) => {
                warn!(%key, %error, "watch failed; resyncing");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        loop {
            let event = match dms_discovery::next_event(&mut watch).await {
                Some(Ok(event)) => event,
                Some(Err(DiscoveryError::Compacted { .. })) | None => {
                    debug!(%key, "watch history compacted or watch ended; reading a new snapshot");
                    break;
                }
                Some(Err(error)) => {
                    warn!(%key, %error, "watch error; resyncing");
                    break;
                }
            };
            let Some(item) = followed.change(event) else {
                continue;
            };
            if out.send(item).await.is_err() {
                return;
            }
        }
    }
}

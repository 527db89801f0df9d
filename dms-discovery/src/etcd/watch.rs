//! [`EtcdWatch`]: an etcd watch that resumes after a broken connection.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{EventType, WatchClient, WatchOptions, WatchResponse, WatchStream};
use futures_core::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use super::{EtcdDiscovery, Retry, describe, etcd_revision, revision, to_entry, to_key};
use crate::{DiscoveryError, Key, Revision, WatchEvent};

/// A watch on an [`EtcdDiscovery`]: the events of the keys its prefix
/// [covers](Key::covers), in revision order.
///
/// A background task reads etcd's watch stream into a bounded buffer. If the connection
/// breaks (etcd restarted, a member died), the task reopens the etcd watch from the
/// revision after the last one it delivered, for up to
/// [`EtcdOptions::watch_reconnect`](super::EtcdOptions::watch_reconnect): no event is
/// skipped or repeated. When it cannot resume, the stream yields
/// [`DiscoveryError::Compacted`] (the history it needs was compacted meanwhile) or
/// [`DiscoveryError::Unavailable`] (etcd unreachable for too long), then ends. Dropping
/// the stream cancels the etcd watch.
pub struct EtcdWatch {
    events: mpsc::Receiver<Result<WatchEvent, DiscoveryError>>,
    finished: bool,
    prefix: Key,
    task: JoinHandle<()>,
}

impl EtcdWatch {
    pub(super) async fn open(
        discovery: &EtcdDiscovery,
        prefix: &Key,
        from: Option<Revision>,
    ) -> Result<Self, DiscoveryError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            DiscoveryError::Unavailable("the etcd backend needs a tokio runtime".into())
        })?;
        let after = match from {
            Some(from) => from,
            // "From now on": pin "now" to a revision, so that a resumed watch knows where
            // it started.
            None => discovery.revision().await?,
        };
        let (events_tx, events) = mpsc::channel(discovery.options().watch_buffer);
        let task = WatchTask {
            discovery: discovery.clone(),
            prefix: prefix.clone(),
            range_end: format!("{prefix}0"),
            after,
            events: events_tx,
        };
        let (opened, member) = discovery
            .request_on(
                "watch",
                Retry::Always,
                discovery.options().request_timeout,
                |client| task.create(client.watch_client()),
            )
            .await?;
        let (stream, first) = match opened {
            Opened::Ok(opened) => *opened,
            Opened::Compacted(oldest) => {
                let error = DiscoveryError::Compacted {
                    requested: after,
                    oldest,
                };
                debug!(%prefix, %error, "etcd watch");
                return Err(error);
            }
        };
        debug!(%prefix, after, endpoint = discovery.endpoint(member), "etcd watch opened");
        let task = runtime.spawn(task.run(stream, first, member));
        Ok(Self {
            events,
            finished: false,
            prefix: prefix.clone(),
            task,
        })
    }
}

impl Stream for EtcdWatch {
    type Item = Result<WatchEvent, DiscoveryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let error = match self.events.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(event))) => return Poll::Ready(Some(Ok(event))),
            Poll::Ready(Some(Err(error))) => error,
            // The task ends only after queueing an error, unless its runtime shut down.
            Poll::Ready(None) => DiscoveryError::Closed,
        };
        self.finished = true;
        Poll::Ready(Some(Err(error)))
    }
}

impl Drop for EtcdWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for EtcdWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdWatch")
            .field("prefix", &self.prefix)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The result of creating an etcd watch (a cancel for another reason than compaction is
/// an error: the member may have lost its leader, another may do).
enum Opened {
    /// Created: the stream and its first response.
    Ok(Box<(WatchStream, WatchResponse)>),
    /// The revision asked for is compacted; the oldest one left.
    Compacted(Revision),
}

/// Whether the task goes on after a response.
enum Flow {
    Continue,
    /// The consumer is gone, or was handed the final error.
    Stop,
    /// The etcd stream is no good any more: resume on a new one.
    Broken(String),
}

/// The task feeding one [`EtcdWatch`].
struct WatchTask {
    discovery: EtcdDiscovery,
    prefix: Key,
    /// The end of the etcd range watched, `[prefix, prefix + "0")`: the prefix, its
    /// subtree (`/` sorts just before `0`) and a few string-prefix siblings, filtered out.
    range_end: String,
    /// Every event up to this revision was delivered (or is not wanted).
    after: Revision,
    events: mpsc::Sender<Result<WatchEvent, DiscoveryError>>,
}

impl WatchTask {
    /// Creates an etcd watch for the events after `self.after` through `client`, and
    /// waits for etcd's first response.
    async fn create(&self, mut client: WatchClient) -> Result<Opened, etcd_client::Error> {
        // Ask from `after` itself (not `after + 1`) and drop that revision's events: etcd
        // accepts a start at its compaction revision, whose deletions it may no longer
        // have, but refuses an older one. So this is refused exactly when some event
        // after `after` may be missing.
        let start = etcd_revision(self.after.max(1));
        let options = WatchOptions::new()
            .with_range(self.range_end.as_str())
            .with_start_revision(start);
        let mut stream = client.watch(self.prefix.as_str(), Some(options)).await?;
        let Some(first) = stream.message().await? else {
            return Err(etcd_client::Error::WatchError(
                "etcd closed the watch stream before confirming the watch".into(),
            ));
        };
        if first.canceled() {
            return match first.compact_revision() {
                0 => Err(etcd_client::Error::WatchError(format!(
                    "etcd canceled the watch: {}",
                    first.cancel_reason()
                ))),
                oldest => Ok(Opened::Compacted(revision(oldest))),
            };
        }
        Ok(Opened::Ok(Box::new((stream, first))))
    }

    /// Feeds the consumer from `stream` (on member `member`), whose first response is
    /// `first`, resuming elsewhere when it breaks.
    async fn run(mut self, mut stream: WatchStream, first: WatchResponse, mut member: usize) {
        let mut flow = self.handle(first).await;
        loop {
            match flow {
                Flow::Continue => {}
                Flow::Stop => return,
                Flow::Broken(reason) => {
                    self.discovery.fail_over(member, &reason);
                    match self.resume(&reason).await {
                        Some((resumed, first, on)) => {
                            stream = resumed;
                            member = on;
                            flow = self.handle(first).await;
                            continue;
                        }
                        None => return,
                    }
                }
            }
            let message = tokio::select! {
                () = self.events.closed() => return,
                message = stream.message() => message,
            };
            flow = match message {
                Ok(Some(response)) => self.handle(response).await,
                Ok(None) => Flow::Broken("etcd closed the watch stream".into()),
                Err(error) => Flow::Broken(describe(&error)),
            };
        }
    }

    /// Delivers the events of one response.
    async fn handle(&mut self, response: WatchResponse) -> Flow {
        if response.canceled() {
            let compacted = response.compact_revision();
            if compacted > 0 {
                let error = DiscoveryError::Compacted {
                    requested: self.after,
                    oldest: revision(compacted),
                };
                debug!(prefix = %self.prefix, %error, "etcd watch compacted");
                let _ = self.events.send(Err(error)).await;
                return Flow::Stop;
            }
            return Flow::Broken(format!(
                "etcd canceled the watch: {}",
                response.cancel_reason()
            ));
        }
        // A response holds every event of the revisions it covers (etcd does not split a
        // revision without fragmenting, which is not asked for): `after` moves past them
        // only once all were delivered.
        let mut last = self.after;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let at = revision(kv.mod_revision());
            if at <= self.after {
                continue; // already delivered, or the start revision itself
            }
            last = last.max(at);
            let Some(key) = to_key(kv.key()) else {
                continue;
            };
            if !self.prefix.covers(&key) {
                continue; // a string-prefix sibling: `/svc/ab` for `/svc/a`
            }
            let event = match event.event_type() {
                EventType::Put => match to_entry(kv) {
                    Some(entry) => WatchEvent::Put(entry),
                    None => continue,
                },
                EventType::Delete => WatchEvent::Delete { key, revision: at },
            };
            if self.events.send(Ok(event)).await.is_err() {
                return Flow::Stop;
            }
        }
        self.after = last;
        Flow::Continue
    }

    /// Reopens the etcd watch after `reason` broke it, on the current endpoint and then
    /// the next ones, with backoff: the stream, its first response and its member; `None`
    /// once the consumer is gone or was handed the final error.
    async fn resume(&self, reason: &str) -> Option<(WatchStream, WatchResponse, usize)> {
        let options = self.discovery.options();
        let deadline = Instant::now() + options.watch_reconnect;
        let mut backoff = Duration::from_millis(50);
        debug!(prefix = %self.prefix, after = self.after, reason, "etcd watch broken; resuming");
        loop {
            let budget = options
                .request_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            let attempt =
                self.discovery
                    .request_on("watch resume", Retry::Always, budget, |client| {
                        self.create(client.watch_client())
                    });
            let attempt = tokio::select! {
                () = self.events.closed() => return None,
                attempt = attempt => attempt,
            };
            let failure = match attempt {
                Ok((Opened::Ok(opened), member)) => {
                    debug!(
                        prefix = %self.prefix,
                        after = self.after,
                        endpoint = self.discovery.endpoint(member),
                        "etcd watch resumed"
                    );
                    let (stream, first) = *opened;
                    return Some((stream, first, member));
                }
                Ok((Opened::Compacted(oldest), _)) => {
                    let error = DiscoveryError::Compacted {
                        requested: self.after,
                        oldest,
                    };
                    debug!(prefix = %self.prefix, %error, "etcd watch cannot resume");
                    let _ = self.events.send(Err(error)).await;
                    return None;
                }
                Err(error) => error.to_string(),
            };
            if Instant::now() + backoff >= deadline {
                let error = DiscoveryError::Unavailable(format!(
                    "the etcd watch on {} broke ({reason}) and could not resume after revision \
                     {} within {:?}: {failure}",
                    self.prefix, self.after, options.watch_reconnect
                ));
                debug!(%error, "etcd watch gives up");
                let _ = self.events.send(Err(error)).await;
                return None;
            }
            debug!(prefix = %self.prefix, %failure, ?backoff, "etcd watch not resumed yet");
            tokio::select! {
                () = self.events.closed() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

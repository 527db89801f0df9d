//! [`EtcdLease`]: an etcd lease kept alive by a background task while its owner holds it.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

use super::{EtcdDiscovery, Retry, describe};
use crate::{DiscoveryError, Lease};

/// The first pause before retrying a failed keep-alive, doubled up to a third of the TTL.
const RETRY_MIN: Duration = Duration::from_millis(50);

/// A lease of an [`EtcdDiscovery`]: keys created or set with it are deleted by etcd when
/// it ends.
///
/// While it lives, a background task sends etcd a keep-alive every third of its
/// [TTL](Lease::ttl). It ends:
///
/// - when it is dropped: the task revokes it (in the background; use
///   [`revoke`](Self::revoke) to wait for it), and etcd deletes its keys at once;
/// - when its owner dies: without keep-alives etcd expires it after the TTL;
/// - when etcd lets it expire anyway (unreachable for longer than the TTL, or revoked
///   by someone else): [`is_expired`](Self::is_expired) turns true and
///   [`Lease::expired`] resolves. Its keys are gone (or about to go); take a new lease
///   and register again.
pub struct EtcdLease {
    id: i64,
    ttl: Duration,
    discovery: EtcdDiscovery,
    expired: watch::Receiver<bool>,
    /// Tells the keep-alive task to stop; dropped (or sent `Revoke`) when the lease is.
    stop: Option<oneshot::Sender<Stop>>,
}

/// Why the keep-alive task stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The lease was dropped: revoke it.
    Revoke,
    /// The owner revokes it itself.
    Quiet,
}

impl EtcdLease {
    /// Grants a lease of at least `ttl` (rounded up to whole seconds) and starts its
    /// keep-alive task.
    pub(super) async fn grant(
        discovery: &EtcdDiscovery,
        ttl: Duration,
    ) -> Result<Self, DiscoveryError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            DiscoveryError::Unavailable("the etcd backend needs a tokio runtime".into())
        })?;
        let seconds = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0))
            .max(1);
        let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
        // A repeated grant only leaves an unused lease behind, which expires.
        let response = discovery
            .request(
                "lease grant",
                Retry::Always,
                discovery.options().request_timeout,
                |client| {
                    let mut leases = client.lease_client();
                    async move { leases.grant(seconds, None).await }
                },
            )
            .await?;
        if !response.error().is_empty() {
            return Err(DiscoveryError::Unavailable(format!(
                "etcd lease grant: {}",
                response.error()
            )));
        }
        let id = response.id();
        let granted = Duration::from_secs(u64::try_from(response.ttl()).unwrap_or(0));
        let (expired_tx, expired) = watch::channel(false);
        let (stop_tx, stop) = oneshot::channel();
        let keeper = KeepAlive {
            discovery: discovery.clone(),
            id,
            ttl: granted,
            expired: expired_tx,
        };
        runtime.spawn(keeper.run(stop));
        debug!(lease = id, ?ttl, ?granted, "etcd lease granted");
        Ok(Self {
            id,
            ttl: granted,
            discovery: discovery.clone(),
            expired,
            stop: Some(stop_tx),
        })
    }

    pub(super) fn etcd_id(&self) -> i64 {
        self.id
    }

    /// Whether the lease is known to be lost: etcd reported it gone, or no keep-alive
    /// got through for a whole TTL. Its keys are then gone or about to go.
    pub fn is_expired(&self) -> bool {
        // A keep-alive task that ended without the owner asking keeps nothing alive.
        *self.expired.borrow() || self.expired.has_changed().is_err()
    }

    /// Revokes the lease now and waits for etcd to confirm: its keys are deleted
    /// (watchers see the deletions) when this returns `Ok`. Dropping the lease does the
    /// same in the background. A lease that had already expired revokes fine.
    pub async fn revoke(mut self) -> Result<(), DiscoveryError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Quiet);
        }
        revoke(&self.discovery, self.id).await
    }
}

/// Revokes lease `id`; a lease that had already expired counts as revoked.
async fn revoke(discovery: &EtcdDiscovery, id: i64) -> Result<(), DiscoveryError> {
    let timeout = discovery.options().request_timeout;
    let result = discovery
        .request("lease revoke", Retry::Always, timeout, |client| {
            let mut leases = client.lease_client();
            async move { leases.revoke(id).await }
        })
        .await;
    match result {
        Ok(_) | Err(DiscoveryError::LeaseExpired) => {
            debug!(lease = id, "etcd lease revoked");
            Ok(())
        }
        Err(error) => Err(error),
    }
}

impl Lease for EtcdLease {
    fn id(&self) -> u64 {
        u64::try_from(self.id).unwrap_or(0)
    }

    /// The TTL etcd granted: at least the one asked for, rounded up to whole seconds and
    /// to etcd's minimum.
    fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Resolves once the lease is lost (see [`is_expired`](Self::is_expired)); never
    /// while it is kept alive. Cancel-safe: select on it next to the owner's work.
    fn expired(&self) -> impl Future<Output = ()> + Send {
        let mut expired = self.expired.clone();
        async move {
            // An error means the keep-alive task is gone: nobody keeps the lease alive.
            let _ = expired.wait_for(|expired| *expired).await;
        }
    }
}

impl Drop for EtcdLease {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // If the task is gone (runtime shut down) nobody keeps the lease alive: it
            // expires after its TTL.
            let _ = stop.send(Stop::Revoke);
        }
    }
}

impl fmt::Debug for EtcdLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLease")
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .field("expired", &self.is_expired())
            .finish_non_exhaustive()
    }
}

/// The keep-alive task of one lease.
struct KeepAlive {
    discovery: EtcdDiscovery,
    id: i64,
    ttl: Duration,
    expired: watch::Sender<bool>,
}

/// An open keep-alive stream, on one member.
struct Stream {
    keeper: LeaseKeeper,
    responses: LeaseKeepAliveStream,
    /// The member it is on (index in the discovery's members).
    member: usize,
}

impl Stream {
    /// One keep-alive round trip: the TTL etcd reports (0 or less: the lease is gone).
    async fn round_trip(&mut self) -> Result<i64, etcd_client::Error> {
        self.keeper.keep_alive().await?;
        match self.responses.message().await? {
            Some(response) => Ok(response.ttl()),
            None => Err(etcd_client::Error::LeaseKeepAliveError(
                "keep-alive stream closed by etcd".into(),
            )),
        }
    }
}

impl KeepAlive {
    async fn run(self, mut stop: oneshot::Receiver<Stop>) {
        let period = (self.ttl / 3).max(Duration::from_millis(100));
        // The grant itself counts as the last renewal.
        let mut renewed = Instant::now();
        let mut next = renewed + period;
        let mut backoff = RETRY_MIN;
        let mut stream: Option<Stream> = None;
        loop {
            let round = async {
                self.wait(&mut stream, next).await;
                self.renew(&mut stream, period).await
            };
            let outcome = tokio::select! {
                how = &mut stop => {
                    // A dropped sender is a dropped lease.
                    if how.unwrap_or(Stop::Revoke) == Stop::Revoke {
                        self.revoke().await;
                    }
                    return;
                }
                outcome = round => outcome,
            };
            match outcome {
                Ok(remaining) if remaining > 0 => {
                    renewed = Instant::now();
                    next = renewed + period;
                    backoff = RETRY_MIN;
                }
                Ok(_) | Err(DiscoveryError::LeaseExpired) => {
                    debug!(
                        lease = self.id,
                        "etcd lease expired (etcd no longer knows it)"
                    );
                    self.lost();
                    return;
                }
                Err(error) => {
                    // Try again soon (on the next endpoint), not a whole period later.
                    debug!(lease = self.id, %error, ?backoff, "etcd lease keep-alive failed");
                    next = Instant::now() + backoff;
                    backoff = (backoff * 2).min(period);
                }
            }
            if renewed.elapsed() >= self.ttl {
                debug!(lease = self.id, ttl = ?self.ttl, "etcd lease lost: no keep-alive got through for a TTL");
                self.lost();
                // Best effort: if etcd is back, do not let the keys linger.
                self.revoke().await;
                return;
            }
        }
    }

    /// Waits until `next`, or until the open stream breaks (its member died...): then
    /// it is dropped, and the next keep-alive goes at once to the next endpoint.
    async fn wait(&self, stream: &mut Option<Stream>, next: Instant) {
        let Some(open) = stream.as_mut() else {
            tokio::time::sleep_until(next).await;
            return;
        };
        let reason = tokio::select! {
            () = tokio::time::sleep_until(next) => return,
            // Nothing is asked between keep-alives: anything here ends the stream.
            message = open.responses.message() => match message {
                Ok(Some(_)) => "unexpected keep-alive answer".to_owned(),
                Ok(None) => "closed by etcd".to_owned(),
                Err(error) => describe(&error),
            },
        };
        let member = open.member;
        *stream = None;
        debug!(
            lease = self.id,
            endpoint = self.discovery.endpoint(member),
            reason,
            "etcd lease keep-alive stream broken; reopening"
        );
        self.discovery.fail_over(member, &reason);
    }

    /// One keep-alive, within `budget`: on the open stream if there is one and it works,
    /// else on a new stream on the current endpoint (moving past the stream's member if
    /// it failed). The TTL etcd reports (0 or less: the lease is gone).
    async fn renew(
        &self,
        stream: &mut Option<Stream>,
        budget: Duration,
    ) -> Result<i64, DiscoveryError> {
        let deadline = Instant::now() + budget;
        if let Some(open) = stream.as_mut() {
            let reason = match tokio::time::timeout_at(deadline, open.round_trip()).await {
                Ok(Ok(ttl)) => return Ok(ttl),
                Ok(Err(error)) => describe(&error),
                Err(_) => format!("no keep-alive answer within {budget:?}"),
            };
            let member = open.member;
            *stream = None;
            debug!(
                lease = self.id,
                endpoint = self.discovery.endpoint(member),
                reason,
                "etcd lease keep-alive stream broken; reopening"
            );
            self.discovery.fail_over(member, &reason);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(DiscoveryError::Unavailable(format!(
                "etcd lease keep-alive: no answer within {budget:?}"
            )));
        }
        // Opening the stream sends a first keep-alive and waits for its answer (an error
        // if etcd no longer knows the lease).
        let id = self.id;
        let ((keeper, responses), member) = self
            .discovery
            .request_on("lease keep-alive", Retry::Always, remaining, |client| {
                let mut leases = client.lease_client();
                async move { leases.keep_alive(id).await }
            })
            .await?;
        debug!(
            lease = id,
            endpoint = self.discovery.endpoint(member),
            "etcd lease keep-alive stream opened"
        );
        *stream = Some(Stream {
            keeper,
            responses,
            member,
        });
        Ok(1)
    }

    fn lost(&self) {
        self.expired.send_replace(true);
    }

    async fn revoke(&self) {
        if let Err(error) = revoke(&self.discovery, self.id).await {
            debug!(lease = self.id, %error, "etcd lease revoke failed");
        }
    }
}

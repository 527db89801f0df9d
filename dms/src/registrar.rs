//! Keeping an instance registered: the lease, the bucket claim and the registration, and
//! registering again (with a new lease) when the lease is lost.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dms_core::Backoff;
use dms_core::path::{ClusterPath, ServicePath};
use dms_discovery::{Discovery, DiscoveryError, Lease};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::StartError;
use crate::registration::{Registration, bucket_key, instance_key};
use crate::routing::LinkRecord;
use crate::telemetry::NodeMetrics;

/// Most dispatch buckets a cluster can have.
const MAX_BUCKETS: u32 = 4096;

/// What an instance registers.
#[derive(Debug, Clone)]
pub(crate) struct Registrant {
    pub(crate) path: ServicePath,
    pub(crate) endpoints: Vec<String>,
    pub(crate) targets: Vec<ClusterPath>,
    /// Principal patterns allowed to connect, as published (`None`: no ACL).
    pub(crate) acl: Option<Vec<String>>,
    pub(crate) lease_ttl: Duration,
}

/// What a probe of a registration's endpoints found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// An endpoint answered as this very path: another live process holds it.
    Alive,
    /// Every endpoint refused the connection or answered as another instance: the
    /// process that registered is gone (a crash within its lease).
    Dead,
    /// No endpoint answered either way (a frozen process, a lost network): the
    /// registration may still be live.
    Unknown,
}

/// Longest a start waits for a registration it cannot probe to expire, beyond the lease
/// TTL of this instance (the old one's may differ).
const STALE_WAIT_MARGIN: Duration = Duration::from_secs(5);

/// A registration found under our path at start.
struct Found {
    mod_revision: dms_discovery::Revision,
    registration: Option<Registration>,
}

impl Registrant {
    /// Takes a lease, claims a bucket and creates the registration, all attached to the
    /// lease.
    ///
    /// If the path is registered already, `probe` decides: a live holder is refused
    /// ([`StartError::AlreadyRegistered`]: never two live processes on one path); a dead
    /// one (a crash restarted within its lease) is replaced atomically — compare-and-swap
    /// on the registration's revision, so of two restarts racing exactly one wins — and
    /// its bucket claim moves to our lease, so the instance gets its keys back at once;
    /// one that cannot be probed either way is waited out (its lease expires) while a
    /// warning says so.
    pub(crate) async fn register<D, P, F>(
        &self,
        discovery: &D,
        probe: P,
    ) -> Result<(D::Lease, u32), StartError>
    where
        D: Discovery,
        P: Fn(Vec<String>) -> F,
        F: Future<Output = Liveness>,
    {
        let lease = discovery.lease(self.lease_ttl).await?;
        let key = instance_key(&self.path)?;
        let mut takeover = None;
        for _attempt in 0..2 {
            let Some(found) = self.found(discovery, &key).await? else {
                break;
            };
            let endpoints = found
                .registration
                .as_ref()
                .map(|r| r.endpoints.clone())
                .unwrap_or_default();
            match probe(endpoints).await {
                Liveness::Alive => return Err(StartError::AlreadyRegistered(self.path.clone())),
                Liveness::Dead => {
                    info!(node = %self.path, "registered by a process that is gone: taking the registration over");
                    takeover = Some(found);
                    break;
                }
                Liveness::Unknown => self.wait_out(discovery, &key, found.mod_revision).await?,
            }
        }
        let cluster = self.path.cluster();
        let owner = Bytes::copy_from_slice(self.path.as_str().as_bytes());
        let previous = takeover
            .as_ref()
            .and_then(|found| found.registration.as_ref())
            .map(|r| r.bucket);
        let bucket = match previous {
            Some(bucket) => {
                self.claim(discovery, &cluster, bucket, &owner, &lease)
                    .await?
            }
            None => {
                self.claim_lowest(discovery, &cluster, &owner, &lease)
                    .await?
            }
        };
        let registration = Registration::new(
            self.endpoints.clone(),
            bucket,
            &self.targets,
            self.acl.as_deref(),
        );
        let written = match &takeover {
            Some(found) => {
                discovery
                    .replace(
                        &key,
                        found.mod_revision,
                        registration.encode(),
                        Some(&lease),
                    )
                    .await
            }
            None => {
                discovery
                    .create(&key, registration.encode(), Some(&lease))
                    .await
            }
        };
        match written {
            Ok(_) => {}
            Err(DiscoveryError::AlreadyExists { .. } | DiscoveryError::Conflict { .. }) => {
                return Err(StartError::AlreadyRegistered(self.path.clone()));
            }
            Err(error) => return Err(error.into()),
        }
        info!(node = %self.path, bucket, endpoints = ?registration.endpoints, "registered");
        Ok((lease, bucket))
    }

    /// The registration under `key`, if there is one.
    async fn found<D: Discovery>(
        &self,
        discovery: &D,
        key: &dms_discovery::Key,
    ) -> Result<Option<Found>, StartError> {
        Ok(discovery.get(key).await?.entry.map(|entry| Found {
            mod_revision: entry.mod_revision,
            registration: Registration::decode(&entry.value),
        }))
    }

    /// Waits until the registration written at `revision` is gone (its lease expired),
    /// at most our lease TTL and a margin.
    async fn wait_out<D: Discovery>(
        &self,
        discovery: &D,
        key: &dms_discovery::Key,
        revision: dms_discovery::Revision,
    ) -> Result<(), StartError> {
        warn!(node = %self.path, "registered by a process that does not answer: waiting for its lease to expire");
        let limit = self.lease_ttl + STALE_WAIT_MARGIN;
        let gone = async {
            let mut watch = discovery.watch(key, Some(revision)).await?;
            // The first change after the registration seen decides: a deletion (its lease
            // expired) frees the path; a write means its holder is live after all.
            match dms_discovery::next_event(&mut watch).await {
                Some(Ok(dms_discovery::WatchEvent::Delete { .. })) => Ok(()),
                Some(Ok(_)) => Err(StartError::AlreadyRegistered(self.path.clone())),
                Some(Err(error)) => Err(error.into()),
                None => Err(StartError::Discovery(DiscoveryError::Closed)),
            }
        };
        match tokio::time::timeout(limit, gone).await {
            Ok(result) => result,
            Err(_) => Err(StartError::AlreadyRegistered(self.path.clone())),
        }
    }

    /// Claims `bucket` if it is free or ours (a claim left by our previous process moves
    /// to `lease`), else the lowest free one.
    async fn claim<D: Discovery>(
        &self,
        discovery: &D,
        cluster: &ClusterPath,
        bucket: u32,
        owner: &Bytes,
        lease: &D::Lease,
    ) -> Result<u32, StartError> {
        let claim = bucket_key(cluster, bucket)?;
        let taken = match discovery.get(&claim).await?.entry {
            Some(entry) if entry.value == *owner => {
                discovery
                    .replace(&claim, entry.mod_revision, owner.clone(), Some(lease))
                    .await
            }
            None => discovery.create(&claim, owner.clone(), Some(lease)).await,
            Some(_) => return self.claim_lowest(discovery, cluster, owner, lease).await,
        };
        match taken {
            Ok(_) => Ok(bucket),
            // Someone took it between the read and the write: another bucket.
            Err(DiscoveryError::Conflict { .. } | DiscoveryError::AlreadyExists { .. }) => {
                self.claim_lowest(discovery, cluster, owner, lease).await
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl Registrant {
    /// After a lost lease: takes a new one and moves the registration and the bucket claim
    /// onto it in place (overwriting, so watchers see an update, not a deregistration),
    /// keeping `bucket` if the claim is still ours or free.
    async fn reregister<D: Discovery>(
        &self,
        discovery: &D,
        bucket: u32,
    ) -> Result<(D::Lease, u32), StartError> {
        let lease = discovery.lease(self.lease_ttl).await?;
        let cluster = self.path.cluster();
        let owner = Bytes::copy_from_slice(self.path.as_str().as_bytes());
        let bucket = self
            .claim(discovery, &cluster, bucket, &owner, &lease)
            .await?;
        let key = instance_key(&self.path)?;
        let registration = Registration::new(
            self.endpoints.clone(),
            bucket,
            &self.targets,
            self.acl.as_deref(),
        );
        if let Some(entry) = discovery.get(&key).await?.entry {
            let theirs =
                Registration::decode(&entry.value).is_none_or(|r| r.endpoints != self.endpoints);
            if theirs {
                return Err(StartError::AlreadyRegistered(self.path.clone()));
            }
        }
        discovery
            .set(&key, registration.encode(), Some(&lease))
            .await?;
        info!(node = %self.path, bucket, "registered again");
        Ok((lease, bucket))
    }

    /// Deletes the link record, the registration and the bucket claim.
    async fn delete_keys<D: Discovery>(&self, discovery: &D, bucket: u32) {
        if let Ok(key) = crate::routing::links_key(&self.path) {
            let _ = discovery.delete(&key).await;
        }
        if let Ok(key) = instance_key(&self.path) {
            let _ = discovery.delete(&key).await;
        }
        if let Ok(key) = bucket_key(&self.path.cluster(), bucket) {
            let _ = discovery.delete(&key).await;
        }
    }

    /// Claims the lowest free bucket of `cluster` with `lease`.
    async fn claim_lowest<D: Discovery>(
        &self,
        discovery: &D,
        cluster: &ClusterPath,
        owner: &Bytes,
        lease: &D::Lease,
    ) -> Result<u32, StartError> {
        for candidate in 0..MAX_BUCKETS {
            match discovery
                .create(&bucket_key(cluster, candidate)?, owner.clone(), Some(lease))
                .await
            {
                Ok(_) => return Ok(candidate),
                Err(DiscoveryError::AlreadyExists { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StartError::NoBucket(cluster.clone()))
    }
}

/// How the registration ends.
#[derive(Debug)]
pub(crate) struct Release {
    /// Told once the registration is gone.
    pub(crate) done: oneshot::Sender<()>,
    /// Delete the keys and wait for it (a shutdown), or only drop the lease (a crash: the
    /// backend revokes it, or lets it expire).
    pub(crate) graceful: bool,
}

/// Longest a graceful release waits for discovery to delete the keys.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Holds the lease until `stop` fires (see [`Release`]) or is dropped (the lease goes):
/// with the lease goes the registration. When the lease is lost, registers again with
/// capped backoff, keeping the same bucket if it is still free.
///
/// Also the routing Updater's writer: the latest of `links` is written under the
/// instance's [`links_key`](crate::routing::links_key) with the same lease (changes made
/// while a write is under way coalesce into the next one; a failed write is retried).
pub(crate) async fn keep_registered<D: Discovery>(
    discovery: D,
    registrant: Registrant,
    mut lease: D::Lease,
    mut bucket: u32,
    mut stop: oneshot::Receiver<Release>,
    mut links: watch::Receiver<LinkRecord>,
    metrics: Arc<NodeMetrics>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let links_key = crate::routing::links_key(&registrant.path).ok();
    // When the record is next written: after a change at once, after a failed write
    // with backoff; `None` while discovery holds the latest one.
    let mut write_in: Option<Duration> = None;
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut driver_gone = false;
    loop {
        tokio::select! {
            changed = links.changed(), if write_in.is_none() && !driver_gone => {
                match changed {
                    // A moment's wait gathers the links that come up together (a broker
                    // its clients' reconnects) into one write.
                    Ok(()) => write_in = Some(LINK_WRITE_DELAY),
                    // The driver is gone; the release follows.
                    Err(_) => driver_gone = true,
                }
                continue;
            }
            () = sleep_or_now(write_in), if write_in.is_some() => {
                let record = links.borrow_and_update().encode();
                write_in = None;
                if let Some(key) = &links_key {
                    if let Err(error) = discovery.set(key, record, Some(&lease)).await {
                        warn!(node = %registrant.path, %error, "link record not written; retrying");
                        write_in = Some(retry.next_delay());
                    } else {
                        retry.reset();
                    }
                }
                continue;
            }
            () = lease.expired() => {}
            released = &mut stop => {
                if let Ok(Release { done, graceful }) = released {
                    if graceful {
                        // Delete the keys before the process may exit: a lease revoked in
                        // the background could outlive it, leaving the instance listed
                        // until its TTL.
                        let _ = tokio::time::timeout(RELEASE_TIMEOUT, registrant.delete_keys(&discovery, bucket)).await;
                    }
                    drop(lease);
                    let _ = done.send(());
                }
                return;
            }
        }
        warn!(node = %registrant.path, "registration lease lost; registering again");
        metrics.leases_lost.increment(1);
        loop {
            tokio::select! {
                result = registrant.reregister(&discovery, bucket) => match result {
                    Ok((renewed, claimed)) => {
                        // The keys now hang on the new lease: dropping the old one (and
                        // revoking it, if the server still has it) deletes none of them.
                        drop(std::mem::replace(&mut lease, renewed));
                        bucket = claimed;
                        backoff.reset();
                        metrics.reregistrations.increment(1);
                        info!(node = %registrant.path, bucket, "registered again under a new lease");
                        // The old record went with the old lease.
                        write_in = Some(Duration::ZERO);
                        break;
                    }
                    Err(error) => warn!(node = %registrant.path, %error, "registering again failed"),
                },
                _ = &mut stop => return,
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                _ = &mut stop => return,
            }
        }
    }
}

/// How long a change of this node's links waits for others before its record is written.
const LINK_WRITE_DELAY: Duration = Duration::from_millis(20);

/// Sleeps `delay`, or not at all without one.
async fn sleep_or_now(delay: Option<Duration>) {
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
}

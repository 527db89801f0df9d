//! Keeping an instance registered: the lease, the bucket claim and the registration, and
//! registering again (with a new lease) when the lease is lost.

use std::time::Duration;

use bytes::Bytes;
use dms_core::Backoff;
use dms_core::path::{ClusterPath, ServicePath};
use dms_discovery::{Discovery, DiscoveryError, Lease};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::StartError;
use crate::registration::{Registration, bucket_key, instance_key};

/// Most dispatch buckets a cluster can have.
const MAX_BUCKETS: u32 = 4096;

/// What an instance registers.
#[derive(Debug, Clone)]
pub(crate) struct Registrant {
    pub(crate) path: ServicePath,
    pub(crate) endpoints: Vec<String>,
    pub(crate) targets: Vec<ClusterPath>,
    pub(crate) acl: Option<Vec<ClusterPath>>,
    pub(crate) lease_ttl: Duration,
}

impl Registrant {
    /// Takes a lease, claims the lowest free bucket and creates the registration, all
    /// attached to the lease.
    pub(crate) async fn register<D: Discovery>(
        &self,
        discovery: &D,
    ) -> Result<(D::Lease, u32), StartError> {
        let lease = discovery.lease(self.lease_ttl).await?;
        let cluster = self.path.cluster();
        let owner = Bytes::copy_from_slice(self.path.as_str().as_bytes());
        let bucket = self
            .claim_lowest(discovery, &cluster, &owner, &lease)
            .await?;
        let registration = Registration::new(
            self.endpoints.clone(),
            bucket,
            &self.targets,
            self.acl.as_deref(),
        );
        match discovery
            .create(
                &instance_key(&self.path)?,
                registration.encode(),
                Some(&lease),
            )
            .await
        {
            Ok(_) => {}
            Err(DiscoveryError::AlreadyExists { .. }) => {
                return Err(StartError::AlreadyRegistered(self.path.clone()));
            }
            Err(error) => return Err(error.into()),
        }
        info!(node = %self.path, bucket, endpoints = ?registration.endpoints, "registered");
        Ok((lease, bucket))
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
        let claim = bucket_key(&cluster, bucket)?;
        let bucket = match discovery.get(&claim).await?.entry {
            Some(entry) if entry.value == owner => {
                discovery.set(&claim, owner.clone(), Some(&lease)).await?;
                bucket
            }
            None if discovery
                .create(&claim, owner.clone(), Some(&lease))
                .await
                .is_ok() =>
            {
                bucket
            }
            _ => {
                self.claim_lowest(discovery, &cluster, &owner, &lease)
                    .await?
            }
        };
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

    /// Deletes the registration and the bucket claim.
    async fn delete_keys<D: Discovery>(&self, discovery: &D, bucket: u32) {
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
pub(crate) async fn keep_registered<D: Discovery>(
    discovery: D,
    registrant: Registrant,
    mut lease: D::Lease,
    mut bucket: u32,
    mut stop: oneshot::Receiver<Release>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        tokio::select! {
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
        loop {
            tokio::select! {
                result = registrant.reregister(&discovery, bucket) => match result {
                    Ok((renewed, claimed)) => {
                        // The keys now hang on the new lease: dropping the old one (and
                        // revoking it, if the server still has it) deletes none of them.
                        drop(std::mem::replace(&mut lease, renewed));
                        bucket = claimed;
                        backoff.reset();
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

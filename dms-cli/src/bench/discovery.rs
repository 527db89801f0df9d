//! The `discovery` scenario: registration churn on a discovery backend (the embedded one,
//! or etcd with `--discovery etcd://...`).
//!
//! One cycle registers an instance as the kernel does (a lease, a bucket claim and the
//! registration, both attached to the lease) and deregisters it as a graceful shutdown
//! does (both keys deleted, then the lease dropped). Two runs, one cycle at a time:
//!
//! - churn alone: cycles per second (`registrations_per_s`) and how long a registration
//!   takes (`register_*_us`);
//! - with a watcher of the cluster, as every node targeting it has: how long from the
//!   `create` of the registration until the watcher's task has the event
//!   (`watch_latency_*_us`; same process, same clock). Each cycle waits for its event, so
//!   the watcher never lags behind.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dms::registration::{Registration, bucket_key, cluster_key, instance_key};
use dms::{ClusterPath, Discovery, ServicePath};
use dms_discovery::{Key, WatchEvent, next_event};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use super::Line;
use super::report::{REGISTER, WATCH, latency_lines};
use crate::failure::Failure;

const WORLD: &str = "/bench/cn/linux/w1/g1";
const PATTERN: &str = "discovery-churn";
/// Lease time-to-live of a registration (only matters if the bench dies mid-cycle).
const LEASE_TTL: Duration = Duration::from_secs(10);
/// Longest wait for the watcher to see a registration before the run is declared broken.
const LOST: Duration = Duration::from_secs(10);

fn fail(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure::Other(format!("bench discovery {what}: {error}"))
}

/// The keys and value of one instance's registration.
struct Instance {
    key: Key,
    claim: Key,
    owner: Bytes,
    value: Bytes,
}

/// Registers and deregisters instances of one cluster.
struct Churn<D: Discovery> {
    discovery: D,
    cluster: ClusterPath,
    value: Bytes,
    cycles: u64,
}

impl<D: Discovery> Churn<D> {
    fn new(discovery: D) -> Result<Self, Failure> {
        // A cluster of its own, so that runs against a shared etcd never collide (and
        // leftovers of a killed run, which expire with their leases, stay out of the way).
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let cluster: ClusterPath = format!("{WORLD}/Churn-{}-{stamp}", std::process::id())
            .parse()
            .map_err(|e| fail("path", e))?;
        let value = Registration::new(vec!["tcp://127.0.0.1:40000".into()], 0, &[], None).encode();
        Ok(Self {
            discovery,
            cluster,
            value,
            cycles: 0,
        })
    }

    /// The next instance to register (a new name each cycle, bucket 0: the previous
    /// instance released it).
    fn next_instance(&mut self) -> Result<Instance, Failure> {
        self.cycles += 1;
        let path: ServicePath = self
            .cluster
            .instance(&format!("churn-{}", self.cycles))
            .map_err(|e| fail("path", e))?;
        Ok(Instance {
            key: instance_key(&path).map_err(|e| fail("key", e))?,
            claim: bucket_key(&self.cluster, 0).map_err(|e| fail("key", e))?,
            owner: Bytes::copy_from_slice(path.as_str().as_bytes()),
            value: self.value.clone(),
        })
    }

    /// Takes a lease and claims the bucket; returns the lease (the registration itself
    /// is created by [`create`](Self::create)).
    async fn claim(&self, instance: &Instance) -> Result<D::Lease, Failure> {
        let lease = self
            .discovery
            .lease(LEASE_TTL)
            .await
            .map_err(|e| fail("lease", e))?;
        self.discovery
            .create(&instance.claim, instance.owner.clone(), Some(&lease))
            .await
            .map_err(|e| fail("bucket claim", e))?;
        Ok(lease)
    }

    async fn create(&self, instance: &Instance, lease: &D::Lease) -> Result<(), Failure> {
        self.discovery
            .create(&instance.key, instance.value.clone(), Some(lease))
            .await
            .map_err(|e| fail("register", e))?;
        Ok(())
    }

    /// Deletes the registration and the claim, then drops the lease.
    async fn deregister(&self, instance: Instance, lease: D::Lease) -> Result<(), Failure> {
        for key in [&instance.key, &instance.claim] {
            self.discovery
                .delete(key)
                .await
                .map_err(|e| fail("deregister", e))?;
        }
        drop(lease);
        Ok(())
    }

    /// Cycles for `window`; returns the cycles, their time and the registrations' times.
    async fn alone(
        &mut self,
        window: Duration,
    ) -> Result<(u64, Duration, Histogram<u64>), Failure> {
        let mut register = Histogram::<u64>::new(3).map_err(|e| fail("histogram", e))?;
        let mut cycles = 0u64;
        let start = Instant::now();
        while start.elapsed() < window {
            let instance = self.next_instance()?;
            let begun = Instant::now();
            let lease = self.claim(&instance).await?;
            self.create(&instance, &lease).await?;
            let _ = register.record(begun.elapsed().as_nanos() as u64);
            self.deregister(instance, lease).await?;
            cycles += 1;
        }
        Ok((cycles, start.elapsed(), register))
    }

    /// Cycles for `window` under a watcher of the cluster; returns the watch latencies.
    async fn watched(&mut self, window: Duration) -> Result<Histogram<u64>, Failure> {
        let cluster = cluster_key(&self.cluster).map_err(|e| fail("key", e))?;
        let mut watch = self
            .discovery
            .watch(&cluster, None)
            .await
            .map_err(|e| fail("watch", e))?;
        let (seen_tx, mut seen) = mpsc::channel::<Result<(Key, Instant), String>>(64);
        let watcher = tokio::spawn(async move {
            while let Some(event) = next_event(&mut watch).await {
                let item = match event {
                    Ok(WatchEvent::Put(entry)) => Ok((entry.key, Instant::now())),
                    Ok(WatchEvent::Delete { .. }) => continue,
                    Err(error) => Err(error.to_string()),
                };
                if seen_tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        let result = async {
            let mut latency = Histogram::<u64>::new(3).map_err(|e| fail("histogram", e))?;
            let start = Instant::now();
            while start.elapsed() < window {
                let instance = self.next_instance()?;
                let lease = self.claim(&instance).await?;
                let created = Instant::now();
                self.create(&instance, &lease).await?;
                loop {
                    let item = tokio::time::timeout(LOST, seen.recv())
                        .await
                        .map_err(|_| fail("watch", format!("no event within {LOST:?}")))?
                        .ok_or_else(|| fail("watch", "the watch ended"))?
                        .map_err(|e| fail("watch", e))?;
                    if item.0 == instance.key {
                        let _ = latency.record(item.1.duration_since(created).as_nanos() as u64);
                        break;
                    }
                }
                self.deregister(instance, lease).await?;
            }
            Ok(latency)
        }
        .await;
        watcher.abort();
        result
    }
}

/// Runs the scenario on `discovery` (named `backend` in the lines) and emits its lines.
pub(crate) async fn run<D: Discovery>(
    discovery: D,
    backend: &'static str,
    window: Duration,
    emit: &mut impl FnMut(Line),
) -> Result<(), Failure> {
    eprintln!("discovery: registration churn on {backend} ...");
    let mut churn = Churn::new(discovery)?;
    let size = churn.value.len();
    // Warm-up: connections, allocations, and etcd's first writes.
    churn.alone(Duration::from_millis(20)).await?;

    let (cycles, elapsed, register) = churn.alone(window).await?;
    if cycles > 0 {
        emit(Line {
            peer: "dms",
            transport: backend,
            pattern: PATTERN.to_owned(),
            metric: "registrations_per_s",
            msg_size: size,
            value: cycles as f64 / elapsed.as_secs_f64().max(1e-9),
            n: cycles,
            frames: 1,
            histogram: None,
        });
    }
    for line in latency_lines(&REGISTER, backend, PATTERN, size, &register) {
        emit(line);
    }
    let watch = churn.watched(window).await?;
    for line in latency_lines(&WATCH, backend, PATTERN, size, &watch) {
        emit(line);
    }
    Ok(())
}

//! What discovery's faults cost a node (F7, F8, F9 of docs/RELIABILITY.md):
//! - F7: a node whose registration lease is lost (etcd unreachable for longer than the
//!   lease's TTL) registers again under a new lease, keeps its bucket, is listed once, and
//!   costs its linked peers no request meanwhile; a node started after the heal finds it.
//! - F8: a node whose watch of a target cluster loses its history (compacted under it)
//!   reads the cluster again and converges on what discovery holds.
//! - F9: a frozen etcd (SIGSTOP) costs linked nodes no request, and reads end by their
//!   deadline.
//! - B9: hostile entries in etcd (garbage registrations and link records, keys that are
//!   no instance path) are ignored and counted, and cost no request.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use dms::registration::Registration;
use dms::{ClusterPath, MemoryDiscovery, Multipart, Node, ServicePath};
use dms_discovery::memory::MemoryConfig;
use dms_discovery::{Discovery, Key};
use dms_test_support::metrics::recorder;
use dms_test_support::wait::within;

fn hi() -> Multipart {
    Multipart::from_frames([b"hi".to_vec()])
}

/// Sends requests one after another until `until` resolves; every one must be answered.
async fn requests_until(lobby: &Node, cluster: &ClusterPath, until: impl Future<Output = ()>) {
    tokio::pin!(until);
    let mut sent = 0u32;
    loop {
        tokio::select! {
            biased;
            () = &mut until => return,
            reply = lobby.request(cluster, 7, hi()) => {
                sent += 1;
                if let Err(error) = reply {
                    panic!("request {sent} failed: {error}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Starts `builder` (a node targeting `cluster`) and waits until one instance of
/// `cluster` is ready at it.
async fn linked<D: Discovery>(builder: dms::NodeBuilder<D>, cluster: &ClusterPath) -> Node {
    let node = builder.start().await.unwrap();
    node.wait_for_instances(cluster, 1, Duration::from_secs(10))
        .await
        .unwrap();
    node
}

/// Waits until the node's counter `name` is at least 1.
async fn counted(name: &str, node: &ServicePath) {
    while recorder().counter(name, &[("node", node.as_str())]) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(all(feature = "etcd", feature = "tcp"))]
mod etcd {
    use super::*;
    use dms::InstanceState;
    use dms_discovery::etcd::{EtcdDiscovery, EtcdOptions};
    use dms_test_support::etcd::EtcdServer;
    use std::time::Instant;

    const CLUSTER: &str = "/rereg/cn/linux/w1/g1/Battle";
    const TTL: Duration = Duration::from_secs(2);

    async fn client(etcd: &EtcdServer) -> EtcdDiscovery {
        EtcdDiscovery::connect(&[etcd.endpoint()], EtcdOptions::default())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_lease_is_replaced_the_bucket_kept_and_no_request_lost() {
        recorder();
        let mut etcd = EtcdServer::start();
        let cluster: ClusterPath = CLUSTER.parse().unwrap();
        let battle_path: ServicePath = format!("{CLUSTER}/battle-1").parse().unwrap();
        let battle = Node::builder(battle_path.clone())
            .discovery(client(&etcd).await)
            .lease_ttl(TTL)
            .heartbeat(Duration::from_millis(100), 3)
            .start()
            .await
            .unwrap();
        let bucket = battle.bucket();
        support::serve_echo(&battle);
        let lobby = linked(
            Node::builder("/rereg/cn/linux/w1/g1/Lobby/lobby-1".parse().unwrap())
                .discovery(client(&etcd).await)
                .lease_ttl(TTL)
                .heartbeat(Duration::from_millis(100), 3)
                .target(cluster.clone()),
            &cluster,
        )
        .await;

        // etcd away for longer than the lease: the node's lease is reported lost.
        etcd.kill();
        let killed = Instant::now();
        within(
            "battle-1's lease to be reported lost",
            requests_until(
                &lobby,
                &cluster,
                counted("dms_leases_lost_total", &battle_path),
            ),
        )
        .await;
        assert!(
            killed.elapsed() >= TTL / 2,
            "lost after {:?}",
            killed.elapsed()
        );
        tokio::task::block_in_place(|| etcd.restart());
        let restarted = Instant::now();
        within(
            "battle-1 to register again",
            requests_until(
                &lobby,
                &cluster,
                counted("dms_reregistrations_total", &battle_path),
            ),
        )
        .await;
        // etcd restores the old lease with its TTL and nobody keeps it alive: it lapses
        // within 2 TTL of the restart. Keys left on it would go with it.
        let lapsed = restarted + 2 * TTL + Duration::from_millis(500);
        within(
            "the old lease's lifetime",
            requests_until(&lobby, &cluster, tokio::time::sleep_until(lapsed.into())),
        )
        .await;

        // Listed once, under its bucket, on a new lease.
        let fresh = client(&etcd).await;
        let (entries, _) = fresh.list(&Key::new(CLUSTER).unwrap()).await.unwrap();
        let listed: Vec<_> = entries
            .iter()
            .filter(|e| e.key.as_str() == battle_path.as_str())
            .collect();
        assert_eq!(listed.len(), 1, "{entries:?}");
        let bucket_key = Key::new(format!("/@dms/buckets{CLUSTER}/{bucket}")).unwrap();
        assert!(
            fresh.get(&bucket_key).await.unwrap().entry.is_some(),
            "bucket {bucket} still claimed"
        );

        // A node that starts now finds it and is answered.
        let rookie = linked(
            Node::builder("/rereg/cn/linux/w1/g1/Lobby/lobby-2".parse().unwrap())
                .discovery(fresh)
                .target(cluster.clone()),
            &cluster,
        )
        .await;
        let found = rookie.instances(&cluster).await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, battle_path);
        assert_eq!(found[0].bucket, bucket);
        assert_eq!(found[0].state, InstanceState::Ready);
        rookie.request(&cluster, 7, hi()).await.unwrap();
        assert_eq!(
            recorder().counter(
                "dms_reregistrations_total",
                &[("node", battle_path.as_str())]
            ),
            1
        );
    }

    /// F9: etcd frozen (SIGSTOP: its sockets stay open, nothing answers) for 3 s, well
    /// within the nodes' 10 s leases. Linked nodes keep answering each other (every
    /// request of the freeze answered); a discovery read ends by its deadline with
    /// `Unavailable` instead of hanging; no lease is reported lost; once etcd resumes,
    /// reads answer again and a node started then finds the instance and is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_etcd_costs_linked_nodes_nothing_and_reads_end_by_their_deadline() {
        const CLUSTER: &str = "/frozen/cn/linux/w1/g1/Battle";
        const LEASE: Duration = Duration::from_secs(10);
        const FREEZE: Duration = Duration::from_secs(3);
        recorder();
        let mut etcd = EtcdServer::start();
        let cluster: ClusterPath = CLUSTER.parse().unwrap();
        let battle_path: ServicePath = format!("{CLUSTER}/battle-1").parse().unwrap();
        let battle = Node::builder(battle_path.clone())
            .discovery(client(&etcd).await)
            .lease_ttl(LEASE)
            .heartbeat(Duration::from_millis(100), 3)
            .start()
            .await
            .unwrap();
        support::serve_echo(&battle);
        let lobby_path: ServicePath = "/frozen/cn/linux/w1/g1/Lobby/lobby-1".parse().unwrap();
        let lobby = linked(
            Node::builder(lobby_path.clone())
                .discovery(client(&etcd).await)
                .lease_ttl(LEASE)
                .heartbeat(Duration::from_millis(100), 3)
                .target(cluster.clone()),
            &cluster,
        )
        .await;
        let deadline = Duration::from_secs(1);
        let reader = EtcdDiscovery::connect(
            &[etcd.endpoint()],
            EtcdOptions {
                request_timeout: deadline,
                attempt_timeout: Duration::from_millis(300),
                ..EtcdOptions::default()
            },
        )
        .await
        .unwrap();
        let key = Key::new(CLUSTER).unwrap();

        etcd.freeze();
        let frozen = Instant::now();
        let read = reader.list(&key).await;
        let took = frozen.elapsed();
        eprintln!("F9: a read of a frozen etcd ended after {took:?}: {read:?}");
        assert!(
            matches!(read, Err(dms_discovery::DiscoveryError::Unavailable(_))),
            "{read:?}"
        );
        assert!(took < deadline * 2, "the read took {took:?}");
        within(
            "the freeze's requests",
            requests_until(
                &lobby,
                &cluster,
                tokio::time::sleep_until((frozen + FREEZE).into()),
            ),
        )
        .await;
        etcd.thaw();

        within("a read after the thaw", async {
            while reader.list(&key).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        for node in [&battle_path, &lobby_path] {
            let lost = recorder().counter("dms_leases_lost_total", &[("node", node.as_str())]);
            assert_eq!(lost, 0, "{node} lost its lease");
        }
        let rookie = linked(
            Node::builder("/frozen/cn/linux/w1/g1/Lobby/lobby-2".parse().unwrap())
                .discovery(client(&etcd).await)
                .target(cluster.clone()),
            &cluster,
        )
        .await;
        rookie.request(&cluster, 7, hi()).await.unwrap();
    }

    /// B9: what discovery holds is untrusted. Entries written straight into etcd under
    /// a target cluster (1.4 MiB of garbage, three bytes of garbage, a key that is no
    /// instance name) and under the routing table (a garbage link record), before the
    /// lobby starts (its snapshots read them) and after (its watches do), are ignored
    /// and counted by kind in `dms_discovery_rejected_total`; the lobby keeps answering
    /// through the one real instance, and sees only it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_entries_in_discovery_are_ignored_and_counted() {
        use bytes::Bytes;
        use dms::registration::instance_key;
        use dms::routing::links_key;

        recorder();
        let etcd = EtcdServer::start();
        let cluster: ClusterPath = "/b9/cn/linux/w1/g1/Battle".parse().unwrap();
        let battle_path: ServicePath = format!("{cluster}/battle-1").parse().unwrap();
        let battle = Node::builder(battle_path.clone())
            .discovery(client(&etcd).await)
            .start()
            .await
            .unwrap();
        support::serve_echo(&battle);
        let raw = client(&etcd).await;
        let garbage = |len: usize, seed: u64| {
            let mut rng = fastrand::Rng::with_seed(seed);
            Bytes::from((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>())
        };
        // Written under `round`'s names: before the lobby starts, then after.
        let write_hostile = async |round: &str| {
            let instance = |name: &str| -> ServicePath {
                format!("{cluster}/{round}-{name}").parse().unwrap()
            };
            let entries = [
                (
                    instance_key(&instance("huge")).unwrap(),
                    garbage(1_400 << 10, 1),
                ),
                (
                    instance_key(&instance("junk")).unwrap(),
                    Bytes::from_static(b"\xff\xff\xff"),
                ),
                (
                    Key::new(format!("{cluster}/{round} is no instance name!")).unwrap(),
                    garbage(100, 2),
                ),
                (links_key(&instance("links")).unwrap(), garbage(4 << 10, 3)),
            ];
            for (key, value) in entries {
                raw.set(&key, value, None).await.unwrap();
            }
        };
        write_hostile("early").await;

        let lobby_path: ServicePath = "/b9/cn/linux/w1/g1/Lobby/lobby-1".parse().unwrap();
        let lobby = linked(
            Node::builder(lobby_path.clone())
                .discovery(client(&etcd).await)
                .target(cluster.clone()),
            &cluster,
        )
        .await;
        let rejected = |kind: &str| {
            recorder().counter(
                "dms_discovery_rejected_total",
                &[("node", lobby_path.as_str()), ("kind", kind)],
            )
        };
        let all_counted = |registrations: u64, records: u64| async move {
            while rejected("registration") < registrations || rejected("link_record") < records {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        within(
            "the snapshots' hostile entries counted",
            requests_until(&lobby, &cluster, all_counted(3, 1)),
        )
        .await;
        write_hostile("late").await;
        within(
            "the watches' hostile entries counted",
            requests_until(&lobby, &cluster, all_counted(6, 2)),
        )
        .await;
        let seen: Vec<ServicePath> = lobby
            .instances(&cluster)
            .await
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert_eq!(seen, std::slice::from_ref(&battle_path));
        let reply = lobby.request(&cluster, 7, hi()).await.unwrap();
        assert_eq!(reply.from, battle_path);
    }
}

/// F8: the watch of a target cluster loses its history (its queue overflows under a burst
/// of changes, as a compacted etcd history would make it resume too late): the node reads
/// the cluster again, says so (`dms_discovery_resyncs_total`), and its view converges on
/// what discovery holds (diff = ∅); the live instance stays reachable throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_watch_is_read_again_and_the_view_converges() {
    recorder();
    const CLUSTER: &str = "/relist/cn/linux/w1/g1/Battle";
    let cluster: ClusterPath = CLUSTER.parse().unwrap();
    // One queued event per watcher: a burst drops the watch, which then reports Compacted.
    let discovery = MemoryDiscovery::with_config(MemoryConfig {
        watch_queue: 1,
        ..MemoryConfig::default()
    });
    let battle_path: ServicePath = format!("{CLUSTER}/battle-1").parse().unwrap();
    let battle = support::node_builder(battle_path.clone())
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    support::serve_echo(&battle);
    let lobby_path: ServicePath = "/relist/cn/linux/w1/g1/Lobby/lobby-1".parse().unwrap();
    let lobby = linked(
        support::node_builder(lobby_path.clone())
            .discovery(discovery.clone())
            .target(cluster.clone()),
        &cluster,
    )
    .await;

    // A burst: 60 registrations of instances that are not running (nothing listens on
    // port 1), then 45 of them deleted, faster than any watch consumer reads.
    let ghost = |i: u32| Key::new(format!("{CLUSTER}/ghost-{i}")).unwrap();
    let value = |i: u32| {
        Registration::new(vec!["tcp://127.0.0.1:1".to_owned()], 1000 + i, &[], None).encode()
    };
    for i in 0..60 {
        discovery.set(&ghost(i), value(i), None).await.unwrap();
    }
    for i in 0..45 {
        discovery.delete(&ghost(i)).await.unwrap();
    }
    let (entries, _) = discovery.list(&Key::new(CLUSTER).unwrap()).await.unwrap();
    let held: BTreeSet<String> = entries.iter().map(|e| e.key.as_str().to_owned()).collect();
    assert_eq!(held.len(), 1 + 15);

    within(
        "the lobby to read the cluster again",
        requests_until(
            &lobby,
            &cluster,
            counted("dms_discovery_resyncs_total", &lobby_path),
        ),
    )
    .await;
    within("the lobby's view to converge", async {
        loop {
            let seen: BTreeSet<String> = lobby
                .instances(&cluster)
                .await
                .iter()
                .map(|i| i.path.to_string())
                .collect();
            if seen == held {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The live instance is still the one answering.
    let reply = lobby.request_instance(&battle_path, hi()).await.unwrap();
    assert_eq!(reply.from, battle_path);
}

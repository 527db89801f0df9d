//! F7: a node whose registration lease is lost (etcd unreachable for longer than the
//! lease's TTL) registers again under a new lease, keeps its bucket, is listed once, and
//! costs its linked peers no request meanwhile; a node started after the heal finds it.
#![cfg(all(feature = "etcd", feature = "tcp"))]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use dms::{ClusterPath, InstanceState, Multipart, Node, ServicePath};
use dms_discovery::etcd::{EtcdDiscovery, EtcdOptions};
use dms_discovery::{Discovery, Key};
use dms_test_support::etcd::EtcdServer;
use dms_test_support::metrics::recorder;
use dms_test_support::wait::within;

const CLUSTER: &str = "/rereg/cn/linux/w1/g1/Battle";
const TTL: Duration = Duration::from_secs(2);

async fn client(etcd: &EtcdServer) -> EtcdDiscovery {
    EtcdDiscovery::connect(&[etcd.endpoint()], EtcdOptions::default())
        .await
        .unwrap()
}

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

/// Waits until the node's counter `name` is at least 1.
async fn counted(name: &str, node: &ServicePath) {
    while recorder().counter(name, &[("node", node.as_str())]) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let server = battle.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let body = request.body().clone();
            let _ = request.reply(body).await;
        }
    });
    let lobby = Node::builder("/rereg/cn/linux/w1/g1/Lobby/lobby-1".parse().unwrap())
        .discovery(client(&etcd).await)
        .lease_ttl(TTL)
        .heartbeat(Duration::from_millis(100), 3)
        .target(cluster.clone())
        .start()
        .await
        .unwrap();
    lobby
        .wait_for_instances(&cluster, 1, Duration::from_secs(10))
        .await
        .unwrap();

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
    let rookie = Node::builder("/rereg/cn/linux/w1/g1/Lobby/lobby-2".parse().unwrap())
        .discovery(fresh)
        .target(cluster.clone())
        .start()
        .await
        .unwrap();
    rookie
        .wait_for_instances(&cluster, 1, Duration::from_secs(10))
        .await
        .unwrap();
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

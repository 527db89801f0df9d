//! Failure handling of real processes on a real etcd (run with
//! `cargo bench -p dms-cli --features etcd --bench failover`):
//!
//! - SIGKILL of a node process → its removal from a requester's routing (the link breaks:
//!   the kernel closes the dead process's sockets), and → its removal from discovery (the
//!   lease path: its lease expires);
//! - SIGSTOP of a node process (it hangs; sockets stay open) → removal from routing by
//!   heartbeats (the bound is 3 × 200 ms);
//! - discovery churn: register + deregister cycles per second (lease, create, revoke), on
//!   the embedded store and on the local etcd.
#![allow(missing_docs, clippy::print_stdout, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dms::{ClusterPath, Discovery, MemoryDiscovery, Node, NodeEvent};
use dms_discovery::etcd::{EtcdDiscovery, EtcdOptions};
use dms_discovery::{Key, WatchEvent, next_event};
use dms_test_support::etcd::EtcdServer;

const CLUSTER: &str = "/bench/cn/linux/w1/g1/Battle";
const HEARTBEAT: Duration = Duration::from_millis(200);

fn node_process(etcd: &str, name: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dms"))
        .args([
            "node",
            "--discovery",
            &format!("etcd://{etcd}"),
            "--service",
        ])
        .arg(format!("{CLUSTER}/{name}"))
        .args(["--echo", "--heartbeat-ms", "200", "--lease-ttl-s", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("bucket ") {
            break;
        }
    }
    child
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}

async fn peer_down(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>, name: &str) {
    loop {
        if let Ok(NodeEvent::PeerDown { path, .. }) = events.recv().await {
            if path.instance() == name {
                return;
            }
        }
    }
}

async fn failover(etcd: &EtcdServer) {
    let discovery = EtcdDiscovery::connect(&[etcd.endpoint()], EtcdOptions::default())
        .await
        .unwrap();
    let mut killed = node_process(&etcd.endpoint(), "battle-1");
    let mut hung = node_process(&etcd.endpoint(), "battle-2");
    let cluster: ClusterPath = CLUSTER.parse().unwrap();
    let requester = Node::builder("/bench/cn/linux/w1/g1/Lobby/lobby-1".parse().unwrap())
        .discovery(discovery.clone())
        .target(cluster.clone())
        .heartbeat(HEARTBEAT, 3)
        .start()
        .await
        .unwrap();
    requester
        .wait_for_instances(&cluster, 2, Duration::from_secs(10))
        .await
        .unwrap();
    let mut events = requester.events();
    let mut watch = discovery
        .watch(&Key::new(CLUSTER).unwrap(), None)
        .await
        .unwrap();

    let start = Instant::now();
    signal(&killed, "-KILL");
    peer_down(&mut events, "battle-1").await;
    let routing = start.elapsed();
    loop {
        if let Some(Ok(WatchEvent::Delete { key, .. })) = next_event(&mut watch).await {
            if key.as_str().ends_with("battle-1") {
                break;
            }
        }
    }
    let lease = start.elapsed();
    println!(
        "SIGKILL -> removed from routing (link closed): {:.1} ms",
        routing.as_secs_f64() * 1e3
    );
    println!(
        "SIGKILL -> removed from discovery (lease, TTL 2 s): {:.0} ms",
        lease.as_secs_f64() * 1e3
    );

    let start = Instant::now();
    signal(&hung, "-STOP");
    peer_down(&mut events, "battle-2").await;
    let heartbeat = start.elapsed();
    println!(
        "SIGSTOP -> removed from routing (heartbeats, bound 600 ms): {:.0} ms",
        heartbeat.as_secs_f64() * 1e3
    );
    signal(&hung, "-KILL");
    let _ = hung.wait();
    let _ = killed.wait();
    requester.shutdown().await;
}

async fn churn<D: Discovery>(name: &str, discovery: D, window: Duration) {
    let key = Key::new(format!("{CLUSTER}/churn")).unwrap();
    let start = Instant::now();
    let mut cycles = 0u64;
    while start.elapsed() < window {
        let lease = discovery.lease(Duration::from_secs(10)).await.unwrap();
        discovery
            .create(&key, Bytes::from_static(b"x"), Some(&lease))
            .await
            .unwrap();
        discovery.delete(&key).await.unwrap();
        drop(lease);
        cycles += 1;
    }
    let rate = cycles as f64 / start.elapsed().as_secs_f64();
    println!("discovery churn on {name}: {rate:.0} register+deregister cycles/s ({cycles} cycles)");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let etcd = EtcdServer::start();
    runtime.block_on(async {
        failover(&etcd).await;
        churn("memory", MemoryDiscovery::new(), Duration::from_secs(2)).await;
        let discovery = EtcdDiscovery::connect(&[etcd.endpoint()], EtcdOptions::default())
            .await
            .unwrap();
        churn(
            "etcd (1 member, loopback)",
            discovery,
            Duration::from_secs(3),
        )
        .await;
    });
}

//! The ACL over real loopback links (TCP; QUIC with development certificates in a build
//! without TCP) on the in-memory discovery: a refused request fails at once with
//! `Denied`, a refused notification or broadcast is never delivered and is counted, what
//! the policy allows works, and a policy file that cannot be used stops the start.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use dms::{
    AclFileError, MemoryDiscovery, Multipart, Node, Operation, RequestError, ServicePath,
    StartError,
};
use dms_test_support::wait::within;
use support::{cluster, instance};
use tokio::sync::mpsc;

/// The medium of this build ([`support::node_builder`]), heartbeats of 100 ms × 3 over TCP.
fn node_builder(path: ServicePath) -> dms::NodeBuilder {
    let builder = support::node_builder(path);
    #[cfg(feature = "tcp")]
    let builder = builder.heartbeat(Duration::from_millis(100), 3);
    builder
}

const BATTLE_POLICY: &str = "
# Every Lobby may connect and request; only lobby-1 may notify and broadcast.
allow connect, request from /demo/cn/android/w1/g1/Lobby
allow notify, broadcast from /demo/cn/android/w1/g1/Lobby/lobby-1
# lobby-2 may not request (deny overrides the allow above).
deny request from /demo/cn/android/w1/g1/Lobby/lobby-2
";

/// A Battle instance with the policy above: echoes requests, reports notifications.
async fn battle(discovery: &MemoryDiscovery) -> (Node, mpsc::Receiver<String>) {
    let node = node_builder(instance("Battle", "battle-1"))
        .acl_policy(BATTLE_POLICY.parse().unwrap())
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let (notes_tx, notes) = mpsc::channel(64);
    let server = node.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            if request.expects_reply() {
                let body = request.body().clone();
                let _ = request.reply(body).await;
            } else {
                let body = String::from_utf8_lossy(&request.body()[0]).into_owned();
                let _ = notes_tx
                    .send(format!("{} {body}", request.from().instance()))
                    .await;
            }
        }
    });
    (node, notes)
}

async fn lobby(discovery: &MemoryDiscovery, name: &str) -> Node {
    let lobby = node_builder(instance("Lobby", name))
        .target(cluster("Battle"))
        .request_timeout(Duration::from_secs(10))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    within(
        "battle ready",
        lobby.wait_for_instances(&cluster("Battle"), 1, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    lobby
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_requests_fail_fast_denied_notifications_are_dropped_and_counted() {
    let discovery = MemoryDiscovery::new();
    let (battle, mut notes) = battle(&discovery).await;
    let allowed = lobby(&discovery, "lobby-1").await;
    let refused = lobby(&discovery, "lobby-2").await;
    let battles = cluster("Battle");

    // Allowed: a request is answered, a notification and a broadcast are delivered.
    let reply = allowed
        .request(&battles, "p", Multipart::from_frames(["hi"]))
        .await
        .unwrap();
    assert_eq!(&reply.body[0][..], b"hi");
    allowed
        .notify(&battles, "p", Multipart::from_frames(["note"]))
        .await
        .unwrap();
    allowed
        .broadcast(&battles, Multipart::from_frames(["all"]))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(within("delivered", notes.recv()).await.unwrap());
    }
    got.sort();
    assert_eq!(got, ["lobby-1 all", "lobby-1 note"]);

    // Refused request: a typed error within one round trip, not the 10 s timeout.
    let started = Instant::now();
    let denied = refused
        .request(&battles, "p", Multipart::from_frames(["hi"]))
        .await;
    let took = started.elapsed();
    match &denied {
        Err(RequestError::Denied { service, op, .. }) => {
            assert_eq!(service, &instance("Battle", "battle-1"));
            assert_eq!(*op, Operation::Request);
        }
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        denied.unwrap_err().outcome(),
        dms::Outcome::NotSent,
        "a denied request was not processed"
    );
    assert_eq!(battle.protocol_stats().acl_denied_requests, 1);

    // Refused notification and broadcast: sent, never delivered, counted.
    refused
        .notify(&battles, "p", Multipart::from_frames(["sneaky"]))
        .await
        .unwrap();
    refused
        .broadcast(&battles, Multipart::from_frames(["sneaky-all"]))
        .await
        .unwrap();
    within("counted", async {
        while battle.protocol_stats().acl_denied_notifications < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // An allowed notification sent after them arrives, and is the only one.
    allowed
        .notify(&battles, "p", Multipart::from_frames(["after"]))
        .await
        .unwrap();
    assert_eq!(
        within("delivered", notes.recv()).await.unwrap(),
        "lobby-1 after"
    );
    assert!(notes.try_recv().is_err());
    let stats = battle.protocol_stats();
    assert_eq!(stats.acl_denied, 3);
    assert_eq!(stats.acl_denied_connects, 0);
    // The refused sender keeps its session (refusals are per message).
    let status = refused.instances(&battles).await;
    assert!(
        status.iter().all(|s| s.state == dms::InstanceState::Ready),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_connect_is_refused_at_ready() {
    let discovery = MemoryDiscovery::new();
    let (battle, _notes) = battle(&discovery).await;
    let club = node_builder(instance("Club", "club-1"))
        .target(cluster("Battle"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let denied = within("refusal", async {
        loop {
            match club
                .request(&cluster("Battle"), "p", Multipart::from_frames(["x"]))
                .await
            {
                Err(RequestError::NoInstance(_)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => return other,
            }
        }
    })
    .await;
    assert!(
        matches!(
            &denied,
            Err(RequestError::Denied {
                op: Operation::Connect,
                ..
            })
        ),
        "{denied:?}"
    );
    assert_eq!(battle.protocol_stats().acl_denied_connects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_that_cannot_be_used_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("dms-acl-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let discovery = MemoryDiscovery::new();
    let start = |file: std::path::PathBuf| {
        node_builder(instance("Battle", "battle-9"))
            .acl_file(file)
            .discovery(discovery.clone())
            .start()
    };
    match start(dir.join("missing.acl")).await {
        Err(StartError::Acl(AclFileError::Read { .. })) => {}
        other => panic!("{other:?}"),
    }
    let bad = dir.join("bad.acl");
    std::fs::write(&bad, "allow request from *\nallow requets from *\n").unwrap();
    match start(bad).await {
        Err(StartError::Acl(error @ AclFileError::Parse { .. })) => {
            let text = error.to_string();
            assert!(text.contains("line 2, operations"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing was registered by the failed starts.
    let good = dir.join("good.acl");
    std::fs::write(&good, "allow * from /demo\n").unwrap();
    let node = start(good).await.unwrap();
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

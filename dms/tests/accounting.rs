//! The accounting identity under load (RELIABILITY P2, L2, L4 and L5 smokes): every message
//! sent is delivered (a request answered), refused with a typed error, or counted as
//! dropped, and the sender's and the receiver's figures agree. Real TCP on loopback, in-memory discovery.
#![cfg(feature = "tcp")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use dms::{ClusterPath, MemoryDiscovery, Multipart, Node, RequestError, ServicePath};
use dms_core::proto::control::codes;
use dms_test_support::metrics::recorder;
use dms_test_support::wait::within;
use support::{cluster, counter, instance};
use tokio::sync::Semaphore;

/// A server answering every request after `delay`, with room for `queue` waiting ones.
async fn server(
    discovery: &MemoryDiscovery,
    path: &ServicePath,
    queue: usize,
    delay: Duration,
) -> Node {
    let node = Node::builder(path.clone())
        .incoming_queue(queue, queue)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let responder = node.clone();
    tokio::spawn(async move {
        while let Some(request) = responder.next_request().await {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let body = request.body().clone();
            let _ = request.reply(body).await;
        }
    });
    node
}

/// Sends `n` requests, `in_flight` at a time; returns (answered, refused OVERLOADED).
async fn load(client: &Node, to: &ClusterPath, n: usize, in_flight: usize) -> (u64, u64) {
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (client, to) = (client.clone(), to.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let body = Multipart::from_frames([(i as u64).to_be_bytes().to_vec()]);
            match client.request(&to, i as u64, body).await {
                Ok(reply) => {
                    assert_eq!(&reply.body[0][..], &(i as u64).to_be_bytes(), "wrong reply");
                    (1, 0)
                }
                Err(RequestError::Remote { code, .. }) if code == codes::OVERLOADED => (0, 1),
                Err(other) => panic!("request {i}: {other}"),
            }
        });
    }
    let mut totals = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (ok, refused) = done.unwrap();
        totals.0 += ok;
        totals.1 += refused;
    }
    totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_answered_or_refused_and_both_sides_count_the_same() {
    recorder();
    let discovery = MemoryDiscovery::new();
    let fast = instance("AccountFast", "fast-1");
    let slow = instance("AccountSlow", "slow-1");
    let _fast = server(&discovery, &fast, 1024, Duration::ZERO).await;
    // Room for 8 waiting requests and a slow handler: a burst of 64 in flight overflows.
    let _slow = server(&discovery, &slow, 8, Duration::from_millis(2)).await;
    let client_path = instance("AccountLobby", "lobby-1");
    let client = Node::builder(client_path.clone())
        .target(cluster("AccountFast"))
        .target(cluster("AccountSlow"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    for c in ["AccountFast", "AccountSlow"] {
        within(
            "the server instances",
            client.wait_for_instances(&cluster(c), 1, Duration::from_secs(10)),
        )
        .await
        .unwrap();
    }

    // L2 smoke: 5,000 requests, 32 in flight, to a server with room: all answered.
    let (answered, refused) = within(
        "5,000 requests",
        load(&client, &cluster("AccountFast"), 5_000, 32),
    )
    .await;
    assert_eq!((answered, refused), (5_000, 0));
    let received = counter("dms_requests_received_total", &fast, &[("kind", "request")]);
    assert_eq!(received, 5_000);

    // L4 smoke: 2,000 requests, 64 in flight, to a slow server with little room: each is
    // answered or refused OVERLOADED, none lost, and the server's figures say the same.
    let (answered, refused) = within(
        "2,000 requests to the slow server",
        load(&client, &cluster("AccountSlow"), 2_000, 64),
    )
    .await;
    assert_eq!(answered + refused, 2_000);
    assert!(refused > 0, "the slow server's queue never overflowed");
    let received = counter("dms_requests_received_total", &slow, &[("kind", "request")]);
    let overloaded = counter("dms_overloaded_total", &slow, &[]);
    assert_eq!((received, overloaded), (answered, refused));
    // The sender's side of the identity: sent = ok + remote errors, nothing else.
    let ok = counter("dms_requests_total", &client_path, &[("outcome", "ok")]);
    let remote = counter("dms_requests_total", &client_path, &[("outcome", "remote")]);
    let all = counter("dms_requests_total", &client_path, &[]);
    assert_eq!((ok, remote, all), (5_000 + answered, refused, 7_000));
    let dropped =
        counter("dms_dropped_total", &slow, &[]) + counter("dms_dropped_total", &fast, &[]);
    assert_eq!(dropped, 0);
}

/// L5 smoke: a broadcast cluster of 50 instances, one of them slow (it never takes its
/// notifications and has room for 16). 200 broadcasts: each reaches the 50 instances;
/// every other instance gets all 200, in order; the slow one's figures account for every
/// copy (handed over + dropped `incoming_full` = 200), so nothing is lost silently, and
/// it costs the others nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_to_50_reaches_each_and_a_slow_receiver_counts_its_drops() {
    const ROUNDS: u64 = 200;
    recorder();
    let discovery = MemoryDiscovery::new();
    let slow = instance("L5Club", "club-0");
    let slow_node = Node::builder(slow.clone())
        .incoming_queue(16, 16)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let mut fast = tokio::task::JoinSet::new();
    let mut nodes = vec![slow_node];
    for i in 1..50 {
        let node = Node::builder(instance("L5Club", &format!("club-{i}")))
            .discovery(discovery.clone())
            .start()
            .await
            .unwrap();
        let receiver = node.clone();
        fast.spawn(async move {
            for round in 0..ROUNDS {
                let note = receiver.next_request().await.unwrap();
                assert!(note.is_broadcast());
                assert_eq!(&note.body()[0][..], &round.to_be_bytes(), "out of order");
            }
        });
        nodes.push(node);
    }
    let lobby = Node::builder(instance("L5Lobby", "lobby-1"))
        .target(cluster("L5Club"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    within(
        "50 clubs",
        lobby.wait_for_instances(&cluster("L5Club"), 50, Duration::from_secs(20)),
    )
    .await
    .unwrap();
    for round in 0..ROUNDS {
        let body = Multipart::from_frames([round.to_be_bytes().to_vec()]);
        let reached = lobby.broadcast(&cluster("L5Club"), body).await.unwrap();
        assert_eq!(reached.len(), 50, "round {round}");
    }
    within("every fast club's 200 broadcasts", async {
        while let Some(done) = fast.join_next().await {
            done.unwrap();
        }
    })
    .await;
    let received = || {
        counter(
            "dms_requests_received_total",
            &slow,
            &[("kind", "broadcast")],
        )
    };
    let dropped = || counter("dms_dropped_total", &slow, &[("reason", "incoming_full")]);
    within("the slow club's account of every copy", async {
        while received() + dropped() < ROUNDS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(received(), 16, "its queue's room");
    assert_eq!(dropped(), ROUNDS - 16);
    drop(nodes);
}

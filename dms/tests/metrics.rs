//! Each failure path moves its counter: the figures a node records through the `metrics`
//! facade, read back with the test recorder. Real TCP on loopback, in-memory discovery.
#![cfg(feature = "tcp")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use dms::{MemoryDiscovery, Multipart, Node, RequestError, ServicePath};
use dms_test_support::metrics::recorder;
use dms_test_support::wait::within;
use support::{cluster, counter, instance};

/// Waits (with a deadline) until `name{node, labels}` reaches `at_least`.
async fn reaches(name: &str, node: &ServicePath, labels: &[(&str, &str)], at_least: u64) {
    within(
        &format!("{name} {labels:?} of {node} to reach {at_least}"),
        async {
            while counter(name, node, labels) < at_least {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
}

async fn start(
    discovery: &MemoryDiscovery,
    path: &ServicePath,
    configure: impl FnOnce(dms::NodeBuilder) -> dms::NodeBuilder,
) -> Node {
    recorder();
    let builder = Node::builder(path.clone()).heartbeat(Duration::from_millis(100), 3);
    configure(builder)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap()
}

/// A client of `server_cluster`, waiting until it sees one instance.
async fn client_of(discovery: &MemoryDiscovery, path: &ServicePath, server_cluster: &str) -> Node {
    let client = start(discovery, path, |b| b.target(cluster(server_cluster))).await;
    within(
        "the server instance",
        client.wait_for_instances(&cluster(server_cluster), 1, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_requests_and_timeouts_are_counted_by_outcome() {
    let discovery = MemoryDiscovery::new();
    let server_path = instance("MetricsA", "a-1");
    let server = start(&discovery, &server_path, |b| b).await;
    let held = server.clone();
    // Answers the first request, keeps the second unanswered (its requester times out).
    let responder = tokio::spawn(async move {
        let first = held.next_request().await.unwrap();
        let body = first.body().clone();
        first.reply(body).await.unwrap();
        let second = held.next_request().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(second);
    });
    let client_path = instance("MetricsLobby", "lobby-a");
    let client = client_of(&discovery, &client_path, "MetricsA").await;
    let body = || Multipart::from_frames([b"x".to_vec()]);
    client
        .request(&cluster("MetricsA"), "k", body())
        .await
        .unwrap();
    let late = client
        .request_timeout(
            &cluster("MetricsA"),
            "k",
            body(),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(late.unwrap_err(), RequestError::Timeout);
    let not_a_target = client.request(&cluster("Nowhere"), "k", body()).await;
    assert!(matches!(not_a_target, Err(RequestError::NotATarget(_))));

    let requests = "dms_requests_total";
    assert_eq!(counter(requests, &client_path, &[("outcome", "ok")]), 1);
    assert_eq!(
        counter(requests, &client_path, &[("outcome", "timeout")]),
        1
    );
    assert_eq!(
        counter(requests, &client_path, &[("outcome", "not_a_target")]),
        1
    );
    let received = "dms_requests_received_total";
    assert_eq!(counter(received, &server_path, &[("kind", "request")]), 2);
    assert_eq!(
        counter("dms_peers_up_total", &client_path, &[("role", "connector")]),
        1
    );
    assert_eq!(
        counter("dms_peers_up_total", &server_path, &[("role", "acceptor")]),
        1
    );
    // The links' counters reach the recorder within the export interval.
    reaches(
        "dms_links_up_total",
        &client_path,
        &[("transport", "tcp")],
        1,
    )
    .await;
    responder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_full_incoming_queue_refuses_is_counted() {
    let discovery = MemoryDiscovery::new();
    let server_path = instance("MetricsB", "b-1");
    // Room for one waiting item; nobody takes it.
    let _server = start(&discovery, &server_path, |b| b.incoming_queue(1, 1)).await;
    let client_path = instance("MetricsLobby", "lobby-b");
    let client = client_of(&discovery, &client_path, "MetricsB").await;
    let body = || Multipart::from_frames([b"x".to_vec()]);
    for _ in 0..3 {
        client
            .notify(&cluster("MetricsB"), "k", body())
            .await
            .unwrap();
    }
    let refused = client.request(&cluster("MetricsB"), "k", body()).await;
    assert!(
        matches!(refused, Err(RequestError::Remote { code, .. }) if code == dms_core::proto::control::codes::OVERLOADED),
        "{refused:?}"
    );
    assert_eq!(counter("dms_overloaded_total", &server_path, &[]), 1);
    // Notifications are one-way: the node drops what it cannot queue, and says so.
    reaches(
        "dms_dropped_total",
        &server_path,
        &[("reason", "incoming_full")],
        2,
    )
    .await;
    assert_eq!(
        counter(
            "dms_requests_received_total",
            &server_path,
            &[("kind", "notification")]
        ),
        1
    );
    assert_eq!(
        counter("dms_requests_total", &client_path, &[("outcome", "remote")]),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_peers_and_refused_sessions_are_counted_by_reason() {
    let discovery = MemoryDiscovery::new();
    let server_path = instance("MetricsC", "c-1");
    let server = start(&discovery, &server_path, |b| b).await;
    let client_path = instance("MetricsLobby", "lobby-c");
    let client = client_of(&discovery, &client_path, "MetricsC").await;
    server.shutdown().await;
    reaches(
        "dms_peers_lost_total",
        &client_path,
        &[("reason", "disconnected")],
        1,
    )
    .await;
    reaches(
        "dms_links_down_total",
        &client_path,
        &[("transport", "tcp")],
        1,
    )
    .await;

    // A node that lets only Guild in refuses the lobby at READY.
    let guarded_path = instance("MetricsD", "d-1");
    let _guarded = start(&discovery, &guarded_path, |b| b.allow(cluster("Guild"))).await;
    let refused_path = instance("MetricsLobby", "lobby-d");
    let _refused = start(&discovery, &refused_path, |b| b.target(cluster("MetricsD"))).await;
    reaches(
        "dms_acl_denied_total",
        &guarded_path,
        &[("op", "connect")],
        1,
    )
    .await;
    reaches(
        "dms_peers_lost_total",
        &refused_path,
        &[("reason", "denied")],
        1,
    )
    .await;
    drop(client);
}

//! The kernel over `shm://`: a node that binds only a shared-memory endpoint serves
//! requests from a node of the same host, which dials it without being told how; a
//! shared-memory endpoint published with another host's key is never dialled.
#![cfg(feature = "shm")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use dms::{MemoryDiscovery, Multipart, Node, RequestError};
use dms_test_support::wait::within;
use support::{cluster, instance};

fn name(tag: &str) -> String {
    format!("kernel-{tag}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_big_replies_cross_shared_memory() {
    let discovery = MemoryDiscovery::new();
    let battle = Node::builder(instance("Battle", "battle-shm-1"))
        .bind(format!("shm://{}", name("battle")).parse().unwrap())
        .heartbeat(Duration::from_millis(100), 3)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let published = battle.endpoints();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].scheme(), "shm");
    assert!(dms::shm::is_local(&published[0]), "{}", published[0]);
    let server = battle.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let mut body = request.body().clone();
            body.push(server.path().to_string());
            let _ = request.reply(body).await;
        }
    });
    // The lobby binds TCP only (the default) and still reaches the shm-only instance.
    let lobby = Node::builder(instance("Lobby", "lobby-shm-1"))
        .target(cluster("Battle"))
        .heartbeat(Duration::from_millis(100), 3)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    for key in ["player-1", "player-2", "player-3"] {
        let reply = within(
            "a reply over shm",
            lobby.request(&cluster("Battle"), key, Multipart::from_frames([key])),
        )
        .await
        .unwrap();
        assert_eq!(&reply.body[0][..], key.as_bytes());
        assert_eq!(reply.from, instance("Battle", "battle-shm-1"));
    }
    // A big message (larger than the 1 MiB ring) crosses in pieces.
    let big = vec![7u8; 3 << 20];
    let reply = within(
        "a 3 MiB reply over shm",
        lobby.request(
            &cluster("Battle"),
            "player-1",
            Multipart::from_frames([big.clone()]),
        ),
    )
    .await
    .unwrap();
    assert_eq!(&reply.body[0][..], &big[..]);
    battle.shutdown().await;
    lobby.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_memory_endpoint_of_another_host_is_never_dialled() {
    let discovery = MemoryDiscovery::new();
    let own = name("elsewhere");
    // Bound here, but published as if on another host (another boot id).
    let battle = Node::builder(instance("Battle", "battle-far-1"))
        .bind(format!("shm://{own}").parse().unwrap())
        .advertise(
            format!("shm://{own}?host=00000000000000000000000000000000-1")
                .parse()
                .unwrap(),
        )
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let lobby = Node::builder(instance("Lobby", "lobby-far-1"))
        .target(cluster("Battle"))
        .request_timeout(Duration::from_millis(500))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let refused = within(
        "a request to an instance of another host",
        lobby.request(
            &cluster("Battle"),
            "player-1",
            Multipart::from_frames(["x"]),
        ),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(RequestError::NoInstance(_) | RequestError::Timeout)
        ),
        "{refused:?}"
    );
    battle.shutdown().await;
    lobby.shutdown().await;
}

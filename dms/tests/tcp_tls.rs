//! The kernel over `tcp+tls://`: two nodes with TLS credentials (development
//! certificates) and only a TCP+TLS endpoint exchange requests and replies; a node
//! without credentials cannot reach a TLS-only instance and says so.
#![cfg(feature = "tcp-tls")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use dms::{ClusterPath, MemoryDiscovery, Multipart, Node, RequestError, ServicePath};
use dms_test_support::wait::within;

const WORLD: &str = "/tcptls/t/tcp/w1/g1";

fn path(cluster: &str, name: &str) -> ServicePath {
    format!("{WORLD}/{cluster}/{name}").parse().unwrap()
}

fn cluster(name: &str) -> ClusterPath {
    format!("{WORLD}/{name}").parse().unwrap()
}

/// The development CA directory of this test process (development only).
fn dev_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("dms-tcp-tls-tests-{}", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_reply_between_two_nodes_over_tcp_tls() {
    let discovery = MemoryDiscovery::new();
    let battle = Node::builder(path("Battle", "battle-1"))
        .quic_dev_certificates(dev_dir())
        .bind("tcp+tls://127.0.0.1:0".parse().unwrap())
        .heartbeat(Duration::from_millis(100), 3)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    assert_eq!(battle.endpoints().len(), 1);
    assert_eq!(battle.endpoints()[0].scheme(), "tcp+tls");
    let server = battle.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let mut body = request.body().clone();
            body.push(server.path().to_string());
            let _ = request.reply(body).await;
        }
    });
    let lobby = Node::builder(path("Lobby", "lobby-1"))
        .quic_dev_certificates(dev_dir())
        .target(cluster("Battle"))
        .heartbeat(Duration::from_millis(100), 3)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    for key in ["player-1", "player-2", "player-3"] {
        let reply = within(
            "a reply over tcp+tls",
            lobby.request(&cluster("Battle"), key, Multipart::from_frames([key])),
        )
        .await
        .unwrap();
        assert_eq!(&reply.body[0][..], key.as_bytes());
        assert_eq!(reply.from, path("Battle", "battle-1"));
        assert_eq!(
            &reply.body[1][..],
            path("Battle", "battle-1").as_str().as_bytes()
        );
    }

    // A node without credentials cannot dial a TLS-only instance: no plaintext fallback,
    // the request fails typed instead of waiting forever.
    let plain = Node::builder(path("Lobby", "lobby-2"))
        .target(cluster("Battle"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let refused = within(
        "a request without credentials",
        plain.request_timeout(
            &cluster("Battle"),
            "player-1",
            Multipart::from_frames(["x"]),
            Duration::from_millis(500),
        ),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(RequestError::Timeout | RequestError::NoInstance(_))
        ),
        "{refused:?}"
    );
    plain.shutdown().await;
    lobby.shutdown().await;
    battle.shutdown().await;
}

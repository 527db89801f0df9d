//! Connected links come back after the peer restarts; accepted links are not redialled.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dms_core::{Endpoint, LinkDownCause, MessageMiddleware, Multipart, Role};
use dms_test_support::wait::{link_down, link_up, message, within};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};
use std::time::Duration;

fn server() -> TcpMiddleware {
    TcpMiddleware::new(TcpConfig::builder().identity("srv").build().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_reconnects_after_the_peer_restarts() {
    let first = server();
    let endpoint: Endpoint = first
        .bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = TcpMiddleware::new(
        TcpConfig::builder()
            .reconnect(Duration::from_millis(20), Duration::from_millis(200))
            .build()
            .unwrap(),
    );
    let srv = client.connect(&endpoint).await.unwrap();
    link_up(&client).await;
    link_up(&first).await;

    first.close();
    drop(first);
    let (peer, cause) = link_down(&client).await;
    assert_eq!(peer, srv);
    assert!(
        matches!(cause, LinkDownCause::ClosedByPeer | LinkDownCause::Io(_)),
        "{cause:?}"
    );

    // The closed middleware's listener is released by its accept task shortly after
    // `close`: bind again as soon as the port is free (deadline in `within`).
    let second = server();
    let bound = within("the old port to be free", async {
        loop {
            match second.bind(&endpoint).await {
                Ok(bound) => return bound,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    assert_eq!(bound, endpoint);
    let (peer, role) = link_up(&client).await;
    assert_eq!((peer, role), (srv.clone(), Role::Connector));
    link_up(&second).await;
    client
        .send(Multipart::from_frames([
            srv.to_frame(),
            "after restart".into(),
        ]))
        .await
        .unwrap();
    assert_eq!(&message(&second).await[1][..], b"after restart");
    assert!(client.stats().reconnect_attempts >= 1);

    client.disconnect(&srv).await.unwrap();
    assert!(matches!(
        link_down(&client).await.1,
        LinkDownCause::Disconnected
    ));
}

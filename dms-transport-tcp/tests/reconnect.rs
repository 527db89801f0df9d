//! Connected links come back after the peer restarts; accepted links are not redialled.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dms_core::{Endpoint, LinkDownCause, MessageMiddleware, Multipart, Role};
use dms_test_support::wait::{link_down, link_up, message, within};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};
use std::time::Duration;

fn server() -> TcpMiddleware {
    TcpMiddleware::new(TcpConfig::builder().identity("srv").build().unwrap())
}

/// A client that redials what it connected, quickly.
fn redialling_client() -> TcpMiddleware {
    TcpMiddleware::new(
        TcpConfig::builder()
            .reconnect(Duration::from_millis(20), Duration::from_millis(200))
            .build()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_reconnects_after_the_peer_restarts() {
    let first = server();
    let endpoint: Endpoint = first
        .bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = redialling_client();
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

/// A connected link that fails (here: its peer sends a frame over the size limit) closes
/// its connection at once, although its reconnect supervisor keeps the dead link's handle
/// while it redials (the redials go nowhere: the fake peer answers none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_link_closes_its_connection_while_its_supervisor_redials() {
    use bytes::BytesMut;
    use dms_core::wire::{Command, Greeting, Metadata};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint: Endpoint = format!("tcp://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let client = redialling_client();
    let (dialled, accepted) = tokio::join!(client.connect(&endpoint), async {
        let (mut raw, _) = listener.accept().await.unwrap();
        let mut hello = BytesMut::from(&Greeting::encode_null()[..]);
        let mut meta = Metadata::default();
        meta.push("Socket-Type", "ROUTER");
        meta.push("Identity", "fake");
        Command::Ready(meta).encode(&mut hello);
        raw.write_all(&hello).await.unwrap();
        raw
    });
    dialled.unwrap();
    let mut raw = accepted;
    link_up(&client).await;
    // A frame header announcing a gigabyte: a protocol error, the link goes down.
    let mut bad = vec![0x02];
    bad.extend_from_slice(&(1u64 << 30).to_be_bytes());
    raw.write_all(&bad).await.unwrap();
    let (_, cause) = link_down(&client).await;
    assert!(matches!(cause, LinkDownCause::Protocol(_)), "{cause:?}");
    // The old connection reaches its end (the client's greeting and READY, then EOF)
    // while the supervisor redials.
    let mut rest = Vec::new();
    let read = within(
        "the failed link's connection to close",
        raw.read_to_end(&mut rest),
    )
    .await;
    if let Err(err) = read {
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    }
}

//! A reply over the limits of the link back to its requester is not sent; the requester
//! gets `REPLY_TOO_LARGE` at once instead of waiting for its timeout, and the responder
//! counts it.
#![cfg(feature = "tcp")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use dms::tcp::TcpConfig;
use dms::{MemoryDiscovery, Multipart, Node, RequestError};
use dms_core::proto::control::codes;
use dms_core::wire::Limits;
use dms_test_support::wait::within;
use support::{cluster, instance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_reply_comes_back_as_an_error_not_a_timeout() {
    let discovery = MemoryDiscovery::new();
    let limits = Limits::builder().max_message_len(64 << 10).build();
    let battle = Node::builder(instance("Battle", "battle-big-1"))
        .tcp(TcpConfig::builder().limits(limits))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let server = battle.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let size = if &request.body()[0][..] == b"big" {
                1 << 20
            } else {
                8
            };
            let _ = request
                .reply(Multipart::from_frames([vec![1u8; size]]))
                .await;
        }
    });
    let lobby = Node::builder(instance("Lobby", "lobby-big-1"))
        .target(cluster("Battle"))
        // Far longer than the deadline below: a timeout would fail the test.
        .request_timeout(Duration::from_secs(60))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let small = within(
        "a small reply",
        lobby.request(&cluster("Battle"), "k", Multipart::from_frames(["small"])),
    )
    .await
    .unwrap();
    assert_eq!(small.body[0].len(), 8);
    let big = within(
        "the error reply for an oversized one",
        lobby.request(&cluster("Battle"), "k", Multipart::from_frames(["big"])),
    )
    .await;
    match big {
        Err(RequestError::Remote {
            code, ref detail, ..
        }) => {
            assert_eq!(code, codes::REPLY_TOO_LARGE, "{detail}");
            assert!(detail.contains("at most"), "{detail}");
        }
        other => panic!("expected REPLY_TOO_LARGE, got {other:?}"),
    }
    battle.shutdown().await;
    lobby.shutdown().await;
}

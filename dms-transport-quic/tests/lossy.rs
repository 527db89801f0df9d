//! A link through a lossy, reordering path: QUIC recovers every loss, and the link
//! delivers every message exactly once, in order, intact, both ways.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use bytes::Bytes;
use dms_core::wire::Limits;
use dms_core::{Incoming, MessageMiddleware, Multipart};
use dms_test_support::udp_proxy::{Faults, UdpProxy};
use dms_test_support::wait::link_up;
use support::{Rand, checksum, endpoint, server};

const MESSAGES: u64 = 2_000;
/// The whole exchange must finish within this (it takes a few seconds).
const DEADLINE: Duration = Duration::from_secs(120);

/// Payload size of message `seq`: mostly 64 B and 1 KiB, one in 40 of 64 KiB.
fn size(seq: u64) -> usize {
    match seq {
        s if s % 40 == 7 => 64 << 10,
        s if s % 2 == 0 => 1 << 10,
        _ => 64,
    }
}

/// Message `seq`: a header (sequence number, payload length, FNV-1a of the payload) and
/// the payload, seeded by `seq` so the checker could rebuild it.
fn make(seq: u64) -> (Bytes, Bytes) {
    let payload = Rand::new(seq ^ 0xd1ce).bytes(size(seq));
    let mut header = Vec::with_capacity(20);
    header.extend_from_slice(&seq.to_be_bytes());
    header.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    header.extend_from_slice(&checksum(&payload).to_be_bytes());
    (header.into(), payload.into())
}

/// Checks that `msg` (peer frame, header, payload) is message `expected`, intact.
fn check(msg: &Multipart, expected: u64, side: &str) {
    assert_eq!(
        msg.len(),
        3,
        "{side}: message {expected} has {} frames",
        msg.len()
    );
    let header = &msg[1];
    assert_eq!(header.len(), 20, "{side}: bad header");
    let seq = u64::from_be_bytes(header[..8].try_into().unwrap());
    assert_eq!(
        seq, expected,
        "{side}: got message {seq} where {expected} was due (lost, duplicated or reordered)"
    );
    let len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
    let sum = u64::from_be_bytes(header[12..20].try_into().unwrap());
    assert_eq!(msg[2].len(), len, "{side}: message {seq} truncated");
    assert_eq!(len, size(seq), "{side}: message {seq} has a wrong length");
    assert_eq!(checksum(&msg[2]), sum, "{side}: message {seq} corrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_once_in_order_through_loss_and_reordering() {
    let dir = tempfile::tempdir().unwrap();
    // Generous handshakes: Initials can be lost too, and each loss costs a PTO.
    let limits = Limits::builder()
        .handshake_timeout(Duration::from_secs(20))
        .build();
    let (server, server_endpoint) = server(dir.path(), "echo", |b| b.limits(limits)).await;
    let faults = Faults {
        drop: 0.05,
        reorder: 0.05,
        seed: Faults::seed_from_env(),
    };
    eprintln!(
        "lossy: proxy {faults:?} (replay with DMS_PROXY_SEED={})",
        faults.seed
    );
    let proxy = UdpProxy::start(support::addr(&server_endpoint), faults);
    let client = support::node(dir.path(), "sender", |b| b.limits(limits));

    let exchange = async {
        let server_id = client.connect(&endpoint(proxy.local_addr())).await.unwrap();
        link_up(&client).await;

        // The server checks what it gets and echoes it, then echoes the end marker.
        let echo = {
            let server = server.clone();
            tokio::spawn(async move {
                let mut expected = 0;
                loop {
                    match server.recv().await.unwrap() {
                        Incoming::Message(msg) if msg.len() == 2 => {
                            assert_eq!(&msg[1][..], b"end", "server: unexpected message");
                            assert_eq!(expected, MESSAGES, "server: end before every message");
                            server.send(msg).await.unwrap();
                            return;
                        }
                        Incoming::Message(msg) => {
                            check(&msg, expected, "server");
                            expected += 1;
                            server.send(msg).await.unwrap();
                        }
                        Incoming::LinkDown { peer, cause, .. } => {
                            panic!("server: link of {peer} down: {cause}")
                        }
                        _ => {}
                    }
                }
            })
        };

        // The client sends while it receives the echoes.
        let send = {
            let client = client.clone();
            let server_id = server_id.clone();
            tokio::spawn(async move {
                for seq in 0..MESSAGES {
                    let (header, payload) = make(seq);
                    let msg = Multipart::from_frames([server_id.to_frame(), header, payload]);
                    client.send(msg).await.unwrap();
                }
                let end = Multipart::from_frames([server_id.to_frame(), "end".into()]);
                client.send(end).await.unwrap();
            })
        };

        let mut expected = 0;
        loop {
            match client.recv().await.unwrap() {
                Incoming::Message(msg) if msg.len() == 2 => {
                    assert_eq!(&msg[1][..], b"end", "client: unexpected message");
                    break;
                }
                Incoming::Message(msg) => {
                    assert_eq!(&msg[0][..], &server_id.to_frame()[..]);
                    check(&msg, expected, "client");
                    expected += 1;
                }
                Incoming::LinkDown { peer, cause, .. } => {
                    panic!("client: link of {peer} down: {cause}")
                }
                _ => {}
            }
        }
        assert_eq!(
            expected, MESSAGES,
            "client: echoes missing before the end marker"
        );
        send.await.unwrap();
        echo.await.unwrap();
    };
    let started = std::time::Instant::now();
    if tokio::time::timeout(DEADLINE, exchange).await.is_err() {
        panic!(
            "the exchange did not finish within {DEADLINE:?}: {:?}",
            proxy.stats()
        );
    }
    let stats = proxy.stats();
    eprintln!("lossy: done in {:?}; proxy {stats:?}", started.elapsed());
    // Not vacuous: the path really lost and reordered datagrams, both ways.
    assert!(stats.to_target.dropped > 0, "{stats:?}");
    assert!(stats.to_client.dropped > 0, "{stats:?}");
    assert!(stats.to_target.reordered > 0, "{stats:?}");
    assert!(stats.to_client.reordered > 0, "{stats:?}");
}

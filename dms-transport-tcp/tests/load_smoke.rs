//! Load smokes of the PR tier (RELIABILITY L1, L10), asserting bounds, not speed: a burst
//! arrives whole, in order and without duplicates, every message accounted for; a churn
//! of connections leaves no link, file descriptor or memory behind. Real TCP on loopback.
//! The tests take turns (one lock): descriptors and RSS are the process's.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use dms_core::{Incoming, MessageMiddleware, Multipart, PeerId};
use dms_test_support::wait::{link_up, within};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};

/// One test at a time (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn server() -> (TcpMiddleware, dms_core::Endpoint) {
    let server = TcpMiddleware::new(TcpConfig::builder().identity("server").build().unwrap());
    let endpoint = server
        .bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (server, endpoint)
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_a_burst_arrives_whole_in_order_and_without_duplicates() {
    let _serial = SERIAL.lock().await;
    let (server, endpoint) = server().await;
    let client = TcpMiddleware::new(TcpConfig::default());
    let peer = client.connect(&endpoint).await.unwrap();
    link_up(&server).await;
    // 64 B and 1 KiB messages, and 3-frame multiparts (RELIABILITY L1's sizes but
    // 16 KiB), each carrying its sequence number.
    const COUNT: u64 = 60_000;
    let sender = tokio::spawn(async move {
        for seq in 0..COUNT {
            let size = match seq % 3 {
                0 => 64,
                1 => 1024,
                _ => 32,
            };
            let mut body = vec![0u8; size];
            body[..8].copy_from_slice(&seq.to_be_bytes());
            let mut msg = Multipart::from_frames([peer.to_frame(), body.into()]);
            if seq % 3 == 2 {
                msg.push(vec![7u8; 32]);
            }
            client.send(msg).await.unwrap();
        }
        client
    });
    let mut next = 0u64;
    let mut items = Vec::new();
    within("the whole burst", async {
        while next < COUNT {
            items.clear();
            server.recv_many(&mut items, 256).await.unwrap();
            for item in items.drain(..) {
                let Incoming::Message(msg) = item else {
                    continue;
                };
                let seq = u64::from_be_bytes(msg.frames()[1][..8].try_into().unwrap());
                assert_eq!(seq, next, "out of order or duplicated");
                let expected_frames = if seq % 3 == 2 { 3 } else { 2 };
                assert_eq!(msg.len(), expected_frames);
                next += 1;
            }
        }
    })
    .await;
    let client = sender.await.unwrap();
    // Accounting: everything sent was delivered; nothing was dropped anywhere.
    assert_eq!(next, COUNT);
    for stats in [server.stats(), client.stats()] {
        assert_eq!(stats.bytes_dropped_on_link_down, 0);
        assert_eq!(stats.events_dropped, 0);
        assert_eq!(stats.protocol_errors, 0);
    }
}

/// One connect → handshake → one message → disconnect cycle; `client` is fresh (a new
/// identity) or reused (the same identity again).
async fn cycle(server: &TcpMiddleware, endpoint: &dms_core::Endpoint, client: &TcpMiddleware) {
    let peer: PeerId = client.connect(endpoint).await.unwrap();
    client
        .send(Multipart::from_frames([peer.to_frame(), "one".into()]))
        .await
        .unwrap();
    // Up, the message, then down when the client disconnects.
    let mut got_message = false;
    loop {
        match server.recv().await.unwrap() {
            Incoming::Message(_) => {
                got_message = true;
                client.disconnect(&peer).await.unwrap();
            }
            Incoming::LinkDown { .. } => break,
            _ => {}
        }
    }
    assert!(got_message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l10_connection_churn_leaves_nothing_behind() {
    let _serial = SERIAL.lock().await;
    let (server, endpoint) = server().await;
    let reused = TcpMiddleware::new(TcpConfig::builder().redial(false).build().unwrap());
    // Its link events are read (a middleware whose events nobody reads holds its links'
    // teardown once its bounded inbound queue is full).
    let events = {
        let reused = reused.clone();
        tokio::spawn(async move { while reused.recv().await.is_ok() {} })
    };
    let fresh = || TcpMiddleware::new(TcpConfig::builder().redial(false).build().unwrap());
    // Warm-up: the allocator's and the runtime's caches fill.
    for _ in 0..100 {
        cycle(&server, &endpoint, &reused).await;
        cycle(&server, &endpoint, &fresh()).await;
    }
    let (fds, memory) = (open_fds(), rss());
    const CYCLES: usize = 500;
    within("the churn", async {
        for _ in 0..CYCLES {
            cycle(&server, &endpoint, &reused).await;
            cycle(&server, &endpoint, &fresh()).await;
        }
    })
    .await;
    // Every link is gone from the server's map (a link is unregistered just after its
    // `LinkDown` is queued) and counted both ways.
    within("the server's map empty", async {
        while !server.peers().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let stats = server.stats();
    assert_eq!(stats.links_up, stats.links_down);
    assert_eq!(stats.links_up, 2 * (100 + CYCLES) as u64);
    // Closed connections leave no descriptor (a few may still be closing: allow a
    // handful, far below the 1,000 connections made), and memory stays flat.
    let settled = within("descriptors back to the baseline", async {
        loop {
            let now = open_fds();
            if now <= fds + 4 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let grown = rss().saturating_sub(memory);
    eprintln!(
        "churn of {} connections: fds {fds} -> {settled}, RSS grew {grown} B",
        2 * CYCLES
    );
    assert!(grown <= 2 << 20, "RSS grew {grown} B over the churn");
    events.abort();
}

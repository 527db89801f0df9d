//! A greedy peer pays for itself: a peer that sends requests as fast as it can and never
//! reads the replies is throttled (its link is no longer read while its replies cannot
//! leave), its requests do not crowd out a well-behaved peer's (the node's incoming
//! queue takes turns between peers), and what is refused or dropped for it is counted.
//! Real TCP on loopback; the greedy peer speaks the protocol itself from `dms-core`.
#![cfg(feature = "tcp")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dms::tcp::{TcpConfig, TcpMiddleware};
use dms::{MemoryDiscovery, Multipart, Node};
use dms_core::proto::{Event, ProtoConfig, Protocol};
use dms_core::{Incoming, MessageMiddleware, PeerId, Role};
use dms_test_support::metrics;
use dms_test_support::wait::within;
use support::{cluster, counter, instance};

/// Sends 16 KiB requests to `target` as fast as the link takes them and never reads the
/// replies; counts what it sent in `sent`.
async fn greedy_peer(target: dms::Endpoint, sent: &AtomicU64) {
    let me = instance("Hog", "hog-1");
    let tcp = TcpMiddleware::new(
        TcpConfig::builder()
            .identity(me.peer_id().as_bytes().clone())
            .redial(false)
            .build()
            .unwrap(),
    );
    let peer: PeerId = tcp.connect(&target).await.unwrap();
    let mut proto = Protocol::new(ProtoConfig::new(me));
    proto.handle_link_up(Instant::now(), peer.clone(), Role::Connector);
    // READY both ways, then never a read again.
    'ready: loop {
        while let Some(transmit) = proto.poll_transmit() {
            tcp.send(transmit.msg).await.unwrap();
        }
        while let Some(event) = proto.poll_event() {
            if matches!(event, Event::PeerReady { .. }) {
                break 'ready;
            }
        }
        if let Incoming::Message(msg) = tcp.recv().await.unwrap() {
            proto.handle_message(Instant::now(), peer.clone(), msg);
        }
    }
    let body = Multipart::from_frames([vec![7u8; 16 << 10]]);
    loop {
        if proto
            .request(
                Instant::now(),
                &peer,
                body.clone(),
                Duration::from_secs(3600),
            )
            .is_err()
        {
            return;
        }
        while let Some(transmit) = proto.poll_transmit() {
            if tcp.send(transmit.msg).await.is_err() {
                return;
            }
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Round trips of `n` sequential requests from `client`, sorted.
async fn round_trips(client: &Node, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let reply = client
            .request_timeout(
                &cluster("Battle"),
                i as u64,
                Multipart::from_frames([b"ping".to_vec()]),
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_else(|e| panic!("request {i} failed while the greedy peer ran: {e}"));
        times.push(start.elapsed());
        assert_eq!(&reply.body[0][..], b"ping");
    }
    times.sort();
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_its_replies_is_throttled_and_others_are_served() {
    metrics::recorder();
    let discovery = MemoryDiscovery::new();
    let battle = instance("Battle", "battle-1");
    let server = Node::builder(battle.clone())
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let responder = server.clone();
    tokio::spawn(async move {
        while let Some(request) = responder.next_request().await {
            let body = request.body().clone();
            let _ = request.reply(body).await;
        }
    });
    let client = Node::builder(instance("Lobby", "lobby-1"))
        .target(cluster("Battle"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    within(
        "the battle instance",
        client.wait_for_instances(&cluster("Battle"), 1, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let baseline = round_trips(&client, 200).await;

    static SENT: AtomicU64 = AtomicU64::new(0);
    let target = server.endpoints()[0].clone();
    let hog = tokio::spawn(async move { greedy_peer(target, &SENT).await });
    within("the greedy peer throttled", async {
        while counter("dms_throttled_total", &battle, &[]) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // Throttled: its sends meet TCP's flow control, so it stops sending...
    let stalled = within("the greedy peer's sends to stall", async {
        let mut last = SENT.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = SENT.load(Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await;
    // ...while the well-behaved peer's requests are all answered.
    let during = round_trips(&client, 200).await;
    assert!(
        SENT.load(Ordering::Relaxed) <= stalled + 1,
        "the greedy peer kept sending while throttled"
    );
    // Every request of the greedy peer that the node did not queue is accounted for.
    let received = counter("dms_requests_received_total", &battle, &[]);
    let refused = counter("dms_overloaded_total", &battle, &[]);
    // Besides the well-behaved peer's 400, the greedy peer's requests reached the node:
    // queued for the handler or refused OVERLOADED, each one counted.
    assert!(
        received + refused > 400,
        "{received} queued, {refused} refused"
    );
    eprintln!(
        "well-behaved p50/p99: {:?}/{:?} alone, {:?}/{:?} beside a throttled greedy peer; \
         greedy peer sent {stalled} requests ({received} queued in all, {refused} refused)",
        baseline[100], baseline[198], during[100], during[198],
    );
    hog.abort();
}

//! A request the node cannot send fails at once, as not sent: the link to an instance
//! that stopped reading fills, then the node's backlog for it (1,024 messages), and the
//! next request ends with `RequestError::LinkFull` (`Outcome::NotSent`) long before its
//! timeout, counted as dropped (`backlog_full`) and by outcome (`link_full`). Real TCP on
//! loopback; the stalled instance speaks the protocol itself from `dms-core`.
#![cfg(feature = "tcp")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use dms::registration::Registration;
use dms::tcp::{TcpConfig, TcpMiddleware};
use dms::{Discovery, MemoryDiscovery, Multipart, Node, Outcome, RequestError};
use dms_core::proto::{ProtoConfig, Protocol};
use dms_core::{Incoming, MessageMiddleware};
use dms_discovery::Key;
use dms_test_support::metrics;
use dms_test_support::wait::within;
use support::{cluster, counter, instance};
use tokio::sync::oneshot;

/// An instance of `Stalled` that answers READY and PINGs until `stop`, then never reads
/// its link again (its process stuck, its socket open).
async fn stalling_instance(
    discovery: &MemoryDiscovery,
    stop: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let me = instance("Stalled", "stalled-1");
    let tcp = TcpMiddleware::new(
        TcpConfig::builder()
            .identity(me.peer_id().as_bytes().clone())
            .build()
            .unwrap(),
    );
    let endpoint = tcp
        .bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let registration = Registration::new(vec![endpoint.to_string()], 0, &[], None);
    discovery
        .set(&Key::new(me.as_str()).unwrap(), registration.encode(), None)
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut proto = Protocol::new(ProtoConfig::new(me));
        tokio::pin!(stop);
        let mut linked = None;
        loop {
            while let Some(transmit) = proto.poll_transmit() {
                let _ = tcp.try_send(transmit.msg);
            }
            while proto.poll_event().is_some() {}
            tokio::select! {
                _ = &mut stop => break,
                incoming = tcp.recv() => match incoming.unwrap() {
                    Incoming::LinkUp { peer, role, .. } => {
                        proto.handle_link_up(Instant::now(), peer.clone(), role);
                        linked = Some(peer);
                    }
                    Incoming::Message(msg) => {
                        if let Some(peer) = &linked {
                            proto.handle_message(Instant::now(), peer.clone(), msg);
                        }
                    }
                    _ => {}
                },
            }
        }
        if let Some(peer) = &linked {
            tcp.pause_reading(peer, true);
        }
        // Stuck, with the socket open, until the test ends.
        std::future::pending::<()>().await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_a_full_links_backlog_fails_at_once_as_not_sent() {
    metrics::recorder();
    let discovery = MemoryDiscovery::new();
    let (stop, stopped) = oneshot::channel();
    let stalled = stalling_instance(&discovery, stopped).await;
    let path = instance("Lobby", "backlog-1");
    let lobby = Node::builder(path.clone())
        .discovery(discovery.clone())
        .target(cluster("Stalled"))
        // A small link queue: the backlog is reached after a few MiB of socket buffers.
        .tcp(TcpConfig::builder().link_queue_bytes(64 << 10))
        // Long enough that the stall is not declared a death while the test runs.
        .heartbeat(Duration::from_secs(5), 6)
        .request_timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    lobby
        .wait_for_instances(&cluster("Stalled"), 1, Duration::from_secs(10))
        .await
        .unwrap();
    stop.send(()).unwrap();

    // 16 KiB requests until one cannot be sent: the socket buffers, the 64 KiB link
    // queue, then 1,024 parked messages take them; the next one fails.
    let started = Instant::now();
    let body = Multipart::from_frames([vec![1u8; 16 << 10]]);
    let mut requests = tokio::task::JoinSet::new();
    let refused = within("a request to fail as not sent", async {
        loop {
            for _ in 0..64 {
                let (lobby, body) = (lobby.clone(), body.clone());
                requests.spawn(async move { lobby.request(&cluster("Stalled"), 1, body).await });
            }
            while let Some(done) = requests.try_join_next() {
                if let Err(error) = done.unwrap() {
                    return error;
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(matches!(refused, RequestError::LinkFull(_)), "{refused:?}");
    assert_eq!(refused.outcome(), Outcome::NotSent);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failed at once, not by the 60 s timeout: {:?}",
        started.elapsed()
    );
    assert!(counter("dms_dropped_total", &path, &[("reason", "backlog_full")]) >= 1);
    assert!(counter("dms_requests_total", &path, &[("outcome", "link_full")]) >= 1);
    // Nothing else failed meanwhile: every other request is still waiting or answered.
    assert!(counter("dms_requests_total", &path, &[("outcome", "timeout")]) == 0);
    requests.abort_all();
    stalled.abort();
}

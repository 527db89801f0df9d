//! Stress between two real processes: a `shm-peer` streams numbered messages of random
//! sizes (1 B to 256 KiB, each with its checksum) and this process checks every one:
//! order, checksum, count. Zero torn or lost messages.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // run times are reported

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use dms_core::{Incoming, MessageMiddleware, Multipart};
use dms_transport_shm::{ShmConfig, ShmMiddleware};
use support::{Peer, numbered};

/// Messages streamed: 200k optimised; fewer unoptimised (override: `DMS_SHM_STRESS`).
fn count() -> u64 {
    std::env::var("DMS_SHM_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            15_000
        } else {
            200_000
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_messages_of_random_sizes_arrive_whole_in_order_and_all() {
    let count = count();
    let name = support::unique("stress");
    let shm = ShmMiddleware::new(ShmConfig::builder().identity("sink").build().unwrap());
    let endpoint = shm
        .bind(&format!("shm://{name}").parse().unwrap())
        .await
        .unwrap();
    let start = Instant::now();
    let mut sender = Peer::spawn(&[
        "send",
        &endpoint.to_string(),
        &count.to_string(),
        "7",
        "1",
        &(256 << 10).to_string(),
    ]);
    let (mut next, mut bytes) = (0u64, 0u64);
    let mut items = Vec::new();
    let deadline = Duration::from_secs(120);
    let end = support::within(deadline, "the whole stream", async {
        loop {
            items.clear();
            shm.recv_many(&mut items, 256).await.unwrap();
            for item in items.drain(..) {
                let msg = match item {
                    Incoming::Message(msg) => msg,
                    Incoming::LinkUp { .. } => continue,
                    other => panic!("after {next} messages: {other:?}"),
                };
                let frames = msg.frames();
                if let Some(end) = numbered::end_count(&frames[1..]) {
                    return (frames[0].clone(), end);
                }
                let seq = numbered::verify(&frames[1..]).unwrap_or_else(|why| panic!("{why}"));
                assert_eq!(seq, next, "message out of order");
                bytes += (msg.payload_len() - frames[0].len()) as u64;
                next += 1;
            }
        }
    })
    .await;
    let elapsed = start.elapsed();
    let (peer, announced) = end;
    assert_eq!(announced, count, "the sender's count");
    assert_eq!(next, count, "messages received");
    shm.send(Multipart::from_frames([
        peer,
        Bytes::from_static(numbered::ACK),
    ]))
    .await
    .unwrap();
    sender.expect("ACKED", Duration::from_secs(10)).await;
    assert_eq!(sender.wait(Duration::from_secs(10)).await, Some(0));
    let stats = shm.stats();
    assert_eq!(stats.corrupt_rings, 0);
    assert_eq!(stats.links.protocol_errors, 0);
    println!(
        "{count} messages, {} MiB in {elapsed:?} ({:.0} msg/s, {:.0} MiB/s); {} parks, {} doorbells",
        bytes >> 20,
        count as f64 / elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / f64::from(1 << 20),
        stats.parks,
        stats.doorbells,
    );
}

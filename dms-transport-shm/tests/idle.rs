//! An idle shared-memory link burns no CPU: once nothing comes, its readers stop spinning
//! and park on their doorbells (the adaptive spin decays to nothing).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use dms_core::{Incoming, MessageMiddleware, Multipart};
use dms_test_support::wait::within;
use dms_transport_shm::{ShmConfig, ShmMiddleware};

/// CPU time this process has used, all threads (user + system).
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_link_parks_and_burns_no_cpu() {
    let server = ShmMiddleware::new(
        ShmConfig::builder()
            .identity("idle-server")
            // A long spin, to show that it decays when nothing comes.
            .spin(Duration::from_millis(1))
            .build()
            .unwrap(),
    );
    let endpoint = server
        .bind(
            &format!("shm://idle-{}", std::process::id())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    let client = ShmMiddleware::new(
        ShmConfig::builder()
            .spin(Duration::from_millis(1))
            .build()
            .unwrap(),
    );
    let peer = client.connect(&endpoint).await.unwrap();
    client
        .send(Multipart::from_frames([peer.to_frame(), "hello".into()]))
        .await
        .unwrap();
    within("the message", async {
        loop {
            if let Incoming::Message(_) = server.recv().await.unwrap() {
                return;
            }
        }
    })
    .await;
    // Both readers end up parked: the spin ran out of budget (halving each time).
    within("both readers parked", async {
        while server.stats().parks == 0 || client.stats().parks == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let before = cpu_time();
    let parks = (server.stats().parks, client.stats().parks);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = cpu_time() - before;
    // Half a second of idleness: a spinning reader would burn ~500 ms per link end.
    assert!(
        used < Duration::from_millis(50),
        "idle link used {used:?} of CPU"
    );
    // And they stayed parked (a stale wake-up may cost one more park, no more).
    let after = (server.stats().parks, client.stats().parks);
    assert!(
        after.0 <= parks.0 + 1 && after.1 <= parks.1 + 1,
        "{parks:?} -> {after:?}"
    );
}

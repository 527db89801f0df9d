//! Kernel measurements (run with `cargo bench -p dms --bench kernel`):
//!
//! - request/reply round trip between two nodes on TCP loopback (1 in flight): p50, p99,
//!   p99.9, max over 20,000 requests after 2,000 warm-up requests;
//! - heartbeat failure detection: time from a responder hanging (`Node::suspend`) to the
//!   requester's `PeerDown`, over 10 trials, with a 100 ms × 3 heartbeat.
#![allow(missing_docs, clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dms::{MemoryDiscovery, Multipart, Node, NodeEvent};

const WORLD: &str = "/bench/cn/linux/w1/g1";

async fn echo_node(discovery: &MemoryDiscovery, name: &str, heartbeat: Duration) -> Node {
    let node = Node::builder(format!("{WORLD}/Battle/{name}").parse().unwrap())
        .discovery(discovery.clone())
        .heartbeat(heartbeat, 3)
        .start()
        .await
        .unwrap();
    let server = node.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let body = request.body().clone();
            let _ = request.reply(body).await;
        }
    });
    node
}

async fn requester(discovery: &MemoryDiscovery, name: &str, heartbeat: Duration) -> Node {
    let node = Node::builder(format!("{WORLD}/Lobby/{name}").parse().unwrap())
        .discovery(discovery.clone())
        .heartbeat(heartbeat, 3)
        .target(format!("{WORLD}/Battle").parse().unwrap())
        .start()
        .await
        .unwrap();
    node.wait_for_instances(
        &format!("{WORLD}/Battle").parse().unwrap(),
        1,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    node
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn round_trips() {
    let discovery = MemoryDiscovery::new();
    let _battle = echo_node(&discovery, "battle-1", Duration::from_secs(1)).await;
    let lobby = requester(&discovery, "lobby-1", Duration::from_secs(1)).await;
    let cluster = format!("{WORLD}/Battle").parse().unwrap();
    let payload = Multipart::from_frames([vec![0u8; 64]]);
    for _ in 0..2_000 {
        lobby
            .request(&cluster, 1u64, payload.clone())
            .await
            .unwrap();
    }
    let mut rtts = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let start = Instant::now();
        lobby
            .request(&cluster, 1u64, payload.clone())
            .await
            .unwrap();
        rtts.push(start.elapsed());
    }
    rtts.sort();
    println!(
        "kernel request/reply, 64 B, 1 in flight, n={}: p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us",
        rtts.len(),
        us(pct(&rtts, 0.5)),
        us(pct(&rtts, 0.99)),
        us(pct(&rtts, 0.999)),
        us(pct(&rtts, 1.0))
    );
}

async fn detection() {
    let heartbeat = Duration::from_millis(100);
    let mut times = Vec::new();
    for trial in 0..10 {
        let discovery = MemoryDiscovery::new();
        let battle = echo_node(&discovery, &format!("battle-{trial}"), heartbeat).await;
        let lobby = requester(&discovery, &format!("lobby-{trial}"), heartbeat).await;
        let mut events = lobby.events();
        let start = Instant::now();
        battle.suspend().await;
        loop {
            if let Ok(NodeEvent::PeerDown { .. }) = events.recv().await {
                break;
            }
        }
        times.push(start.elapsed());
        battle.kill().await;
        lobby.shutdown().await;
    }
    times.sort();
    println!(
        "heartbeat detection (100 ms x 3 = 300 ms bound), n={}: min {:.0} ms  median {:.0} ms  max {:.0} ms",
        times.len(),
        times[0].as_secs_f64() * 1e3,
        pct(&times, 0.5).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of benches: there are none to list.
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        round_trips().await;
        detection().await;
    });
}

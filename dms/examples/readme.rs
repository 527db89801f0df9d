//! The README's kernel example as a new user runs it: `#[tokio::main]` (the multi-thread
//! runtime, one worker per core), two nodes in one process on the embedded discovery,
//! then sequential requests timed from `main`, then from a spawned task.
//!
//! `cargo run --release -p dms --example readme [REQUESTS]` (default 2,000) prints the
//! mean, p50 and p99 per request, for each.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use dms::{ClusterPath, MemoryDiscovery, Multipart, Node};

/// Mean, p50 and p99 of `requests` sequential requests, as text.
async fn sequential(
    lobby: &Node,
    battles: &ClusterPath,
    requests: usize,
) -> Result<String, dms::RequestError> {
    let mut took = Vec::with_capacity(requests);
    let start = Instant::now();
    for _ in 0..requests {
        let sent = Instant::now();
        lobby
            .request(battles, "player-42", Multipart::from_frames(["join"]))
            .await?;
        took.push(sent.elapsed());
    }
    let total = start.elapsed();
    took.sort();
    let at = |q: f64| {
        let i = (took.len().saturating_sub(1) as f64 * q) as usize;
        took.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Ok(format!(
        "mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs",
        total.as_secs_f64() * 1e6 / requests.max(1) as f64,
        at(0.5),
        at(0.99),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2_000);
    let discovery = MemoryDiscovery::new(); // shared by the nodes of this process
    let battle = Node::builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
        .discovery(discovery.clone())
        .start()
        .await?;
    tokio::spawn(async move {
        while let Some(request) = battle.next_request().await {
            let body = request.body().clone();
            let _ = request.reply(body).await;
        }
    });
    let battles: ClusterPath = "/demo/cn/android/w1/g1/Battle".parse()?;
    let lobby = Node::builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
        .discovery(discovery.clone())
        .target(battles.clone())
        .heartbeat(Duration::from_millis(200), 3)
        .start()
        .await?;
    // From `main` (the `block_on` future: every wake-up of it is a hop from a worker
    // thread), then from a spawned task (it runs on the workers, beside the nodes' tasks).
    let from_main = sequential(&lobby, &battles, requests).await?;
    let in_task = {
        let (lobby, battles) = (lobby.clone(), battles.clone());
        tokio::spawn(async move { sequential(&lobby, &battles, requests).await }).await??
    };
    println!("{requests} sequential requests from main:          {from_main}");
    println!("{requests} sequential requests from a spawned task: {in_task}");
    Ok(())
}

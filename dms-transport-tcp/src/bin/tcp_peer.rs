//! `tcp-peer`: the generator process of the fan-in test (RELIABILITY L3), built only with
//! the `test-peer` feature. It reports on stdout, one line per step, and takes its cue
//! to go on from a line on stdin, so the test can measure the server between steps.
//!
//! ```text
//! tcp-peer fan-in ENDPOINT PEERS RATE SIZE SECONDS
//!     links PEERS middlewares (identities peer-0 .. peer-{PEERS-1}) to ENDPOINT and
//!     prints `linked PEERS`; on the line `go`, each sends RATE messages a second of SIZE
//!     bytes (the first 8: a sequence number from 0, little-endian) for SECONDS, closes
//!     every link after what it queued was written, prints `sent TOTAL FULL` (FULL: sends
//!     refused by a full link, not counted in TOTAL) and exits
//! ```
#![allow(clippy::print_stdout)] // its stdout is its report to the test
#![allow(clippy::unwrap_used)] // a test helper: a failed unwrap fails the test that runs it

use std::process::ExitCode;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use dms_core::{Endpoint, MessageMiddleware, Multipart, PeerId, SendError};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Dials in flight at once while linking.
const DIALS: usize = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ["fan-in", endpoint, peers, rate, size, seconds] = args[..] else {
        println!("USAGE tcp-peer fan-in ENDPOINT PEERS RATE SIZE SECONDS; got {args:?}");
        return ExitCode::from(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(fan_in(
        endpoint.parse().unwrap(),
        peers.parse().unwrap(),
        rate.parse().unwrap(),
        size.parse().unwrap(),
        Duration::from_secs(seconds.parse().unwrap()),
    ));
    ExitCode::SUCCESS
}

async fn fan_in(endpoint: Endpoint, peers: usize, rate: u32, size: usize, run_for: Duration) {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut links: Vec<(TcpMiddleware, PeerId)> = Vec::with_capacity(peers);
    for first in (0..peers).step_by(DIALS) {
        let mut dials = tokio::task::JoinSet::new();
        for i in first..peers.min(first + DIALS) {
            let config = TcpConfig::builder()
                .identity(format!("peer-{i}"))
                .redial(false)
                .build()
                .unwrap();
            let middleware = TcpMiddleware::new(config);
            let endpoint = endpoint.clone();
            dials.spawn(async move {
                let server = middleware.connect(&endpoint).await.unwrap();
                (middleware, server)
            });
        }
        links.extend(dials.join_all().await);
    }
    println!("linked {peers}");
    if stdin.next_line().await.unwrap().as_deref() != Some("go") {
        return;
    }
    let ticks = u64::from(rate) * run_for.as_secs();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let (mut sent, mut full) = (0u64, 0u64);
    let mut next = vec![0u64; peers];
    for _ in 0..ticks {
        tick.tick().await;
        for ((middleware, server), seq) in links.iter().zip(next.iter_mut()) {
            let mut payload = BytesMut::with_capacity(size.max(8));
            payload.put_u64_le(*seq);
            payload.resize(size.max(8), 0x5a);
            let msg = Multipart::from_frames([server.to_frame(), payload.freeze()]);
            match middleware.try_send(msg) {
                Ok(()) => {
                    sent += 1;
                    *seq += 1;
                }
                Err(SendError::Full { .. }) => full += 1,
                Err(error) => panic!("send: {error}"),
            }
        }
    }
    // Each link is closed after what it queued was written: the server gets it all.
    for (middleware, server) in &links {
        let _ = middleware.disconnect(server).await;
    }
    println!("sent {sent} {full}");
}

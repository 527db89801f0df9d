//! The `request` scenario: kernel request/reply between two nodes (TCP loopback, the
//! embedded discovery): latency with one request in flight, throughput with 1, 16 and 256.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dms::{ClusterPath, MemoryDiscovery, Multipart, Node};
use hdrhistogram::Histogram;

use super::Line;
use super::report::rtt_lines;
use crate::failure::Failure;

const WORLD: &str = "/bench/cn/linux/w1/g1";

fn fail(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure::Other(format!("bench {what}: {error}"))
}

fn parse<T: std::str::FromStr>(text: &str) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| fail("path", e))
}

pub(crate) async fn run(window: Duration, emit: &mut impl FnMut(Line)) -> Result<(), Failure> {
    eprintln!("request: two nodes, TCP loopback ...");
    let discovery = MemoryDiscovery::new();
    let responder = Node::builder(parse(&format!("{WORLD}/Battle/battle-1"))?)
        .discovery(discovery.clone())
        .start()
        .await
        .map_err(|e| fail("start", e))?;
    let server = responder.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let body = request.body().clone();
            let _ = request.reply(body).await;
        }
    });
    let cluster: ClusterPath = parse(&format!("{WORLD}/Battle"))?;
    let requester = Node::builder(parse(&format!("{WORLD}/Lobby/lobby-1"))?)
        .discovery(discovery)
        .target(cluster.clone())
        .start()
        .await
        .map_err(|e| fail("start", e))?;
    requester
        .wait_for_instances(&cluster, 1, Duration::from_secs(10))
        .await
        .map_err(|e| fail("discovery", e))?;
    let body = Multipart::from_frames([vec![0x5a_u8; 64]]);

    for _ in 0..1000 {
        requester
            .request(&cluster, 1u64, body.clone())
            .await
            .map_err(|e| fail("request", e))?;
    }
    let mut histogram = Histogram::<u64>::new(3).map_err(|e| fail("histogram", e))?;
    let start = Instant::now();
    while start.elapsed() < window {
        let sent = Instant::now();
        requester
            .request(&cluster, 1u64, body.clone())
            .await
            .map_err(|e| fail("request", e))?;
        let _ = histogram.record(sent.elapsed().as_nanos() as u64);
    }
    for line in rtt_lines("tcp", "request-reply", 64, &histogram) {
        emit(line);
    }

    for in_flight in [1u64, 16, 256] {
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for key in 0..in_flight {
            let (requester, cluster, body, done) = (
                requester.clone(),
                cluster.clone(),
                body.clone(),
                done.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < window {
                    if requester.request(&cluster, key, body.clone()).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.map_err(|e| fail("request task", e))?;
        }
        let n = done.load(Ordering::Relaxed);
        emit(Line {
            peer: "dms",
            transport: "tcp",
            pattern: format!("request-reply-in-flight-{in_flight}"),
            metric: "throughput_msgs_per_s",
            msg_size: 64,
            value: n as f64 / start.elapsed().as_secs_f64(),
            n,
            frames: 1,
        });
    }
    requester.shutdown().await;
    responder.shutdown().await;
    Ok(())
}

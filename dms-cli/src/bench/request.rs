//! The `request` scenario: kernel request/reply between two nodes (TCP loopback, the
//! embedded discovery): latency with one request in flight, throughput with 1, 16 and 256.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dms::{ClusterPath, MemoryDiscovery, Multipart, Node};
use hdrhistogram::Histogram;

use super::report::rtt_lines;
use super::worker::{WorkerPeer, spawn};
use super::{Line, fail};
use crate::failure::Failure;
use dms::Discovery;

const WORLD: &str = "/bench/cn/linux/w1/g1";

fn parse<T: std::str::FromStr>(text: &str) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| fail("path", e))
}

/// Starts the responder: an echoing node on `discovery`.
async fn start_responder(discovery: MemoryDiscovery) -> Result<Node, Failure> {
    let responder = Node::builder(parse(&format!("{WORLD}/Battle/battle-1"))?)
        .discovery(discovery)
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
    Ok(responder)
}

/// `dms bench-worker --peer dms-node`: an echoing node on its own in-process discovery;
/// prints that discovery's entries (`entry <key> <hex value>`), which the bench copies
/// into its own, then `endpoint <its endpoint>`, and serves until the bench leaves.
pub(crate) async fn worker_process() -> Result<(), Failure> {
    let discovery = MemoryDiscovery::new();
    let responder = start_responder(discovery.clone()).await?;
    let world = dms_discovery::Key::new(WORLD).map_err(|e| fail("key", e))?;
    let (entries, _) = discovery.list(&world).await.map_err(|e| fail("list", e))?;
    for entry in entries {
        let hex: String = entry.value.iter().map(|b| format!("{b:02x}")).collect();
        crate::print_line(&format!("entry {} {hex}", entry.key));
    }
    let endpoint = responder
        .endpoints()
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    crate::print_line(&format!("endpoint {endpoint}"));
    std::future::pending::<()>().await;
    Ok(())
}

/// Copies an `entry <key> <hex value>` line of the worker into `discovery`.
async fn copy_entry(discovery: &MemoryDiscovery, line: &str) -> Result<(), Failure> {
    let mut fields = line.strip_prefix("entry ").unwrap_or_default().split(' ');
    let (Some(key), Some(hex)) = (fields.next(), fields.next()) else {
        return Err(fail("worker", format!("bad entry line {line:?}")));
    };
    let value = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| fail("worker", format!("bad hex in {line:?}")))
        })
        .collect::<Result<Vec<u8>, Failure>>()?;
    let key = dms_discovery::Key::new(key).map_err(|e| fail("key", e))?;
    discovery
        .set(&key, value.into(), None)
        .await
        .map_err(|e| fail("discovery", e))?;
    Ok(())
}

/// Kernel request/reply: the responder in a second process (default; its registration is
/// copied into this process's discovery, so both sides speak over real TCP between
/// processes, as the transport scenario does) or in this one.
pub(crate) async fn run(
    window: Duration,
    in_process: bool,
    emit: &mut impl FnMut(Line),
) -> Result<(), Failure> {
    let discovery = MemoryDiscovery::new();
    let (responder, _worker) = if in_process {
        eprintln!("request: two nodes in one process, TCP loopback ...");
        (Some(start_responder(discovery.clone()).await?), None)
    } else {
        eprintln!("request: two nodes in two processes, TCP loopback ...");
        let worker = spawn(WorkerPeer::DmsNode).await?;
        for line in &worker.preamble {
            copy_entry(&discovery, line).await?;
        }
        (None, Some(worker))
    };
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
    if let Some(responder) = responder {
        responder.shutdown().await;
    }
    Ok(())
}
